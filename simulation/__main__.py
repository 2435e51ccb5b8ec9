"""Entry point of `python -m simulation`."""

from __future__ import annotations

import sys

from simulation.cli import main

sys.exit(main())

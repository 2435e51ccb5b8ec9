"""Entry point of `python -m topology`."""

from __future__ import annotations

import sys

from topology.cli import main

sys.exit(main())

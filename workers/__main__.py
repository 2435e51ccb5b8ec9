"""Entry point of `python -m workers`."""

from __future__ import annotations

import sys

from workers.process.cli import main

sys.exit(main())

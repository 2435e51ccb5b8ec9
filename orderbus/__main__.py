"""Entry point of `python -m orderbus`."""

from __future__ import annotations

import sys

from orderbus.cli import main

sys.exit(main())

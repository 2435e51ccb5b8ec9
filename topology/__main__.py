"""Entry point of `python -m topology`: composes the topology's and the operations' commands."""

from __future__ import annotations

import sys

from operations.cli import main

sys.exit(main())

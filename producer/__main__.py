"""Entry point of `python -m producer`."""

from __future__ import annotations

import sys

from producer.cli import main

sys.exit(main())

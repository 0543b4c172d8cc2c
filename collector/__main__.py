"""``python -m collector``."""

from __future__ import annotations

import sys

from collector import cli

if __name__ == "__main__":
    sys.exit(cli.main())

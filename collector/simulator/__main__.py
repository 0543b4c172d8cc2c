"""``python -m collector.simulator`` (same as ``python -m collector simulate``)."""

from __future__ import annotations

import sys

from collector.simulator import cli

if __name__ == "__main__":
    sys.exit(cli.main(sys.argv[1:]))

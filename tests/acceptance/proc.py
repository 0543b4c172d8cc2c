"""Running the real ``python -m collector`` as a subprocess, and reading what it prints."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


async def spawn(*args: str, env: Mapping[str, str] | None = None) -> asyncio.subprocess.Process:
    """``python -m collector ARGS`` with stdout and stderr in one pipe; no ``COLLECTOR_*``
    variables leak in from the test environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collector",
        *args,
        cwd=ROOT,
        env=base | dict(env or {}),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )


class Output:
    """Collects a subprocess's output lines while it runs."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.lines: list[str] = []
        self.task = asyncio.create_task(self._read(proc))

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def text(self) -> str:
        return "".join(self.lines)

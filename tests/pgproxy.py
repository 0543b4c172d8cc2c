"""A TCP proxy in front of PostgreSQL that a test can cut and restore (a database outage)."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse


class PgProxy:
    """Forwards 127.0.0.1:<port> to the real server; ``cut()`` drops and refuses connections."""

    def __init__(self, target_dsn: str) -> None:
        parts = urllib.parse.urlsplit(target_dsn)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self._dsn_parts = parts
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        netloc = f"{self._dsn_parts.username or 'postgres'}@127.0.0.1:{self.port}"
        return urllib.parse.urlunsplit(self._dsn_parts._replace(netloc=netloc))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        tasks = {
            asyncio.create_task(self._pipe(reader, up_writer)),
            asyncio.create_task(self._pipe(up_reader, writer)),
        }
        self._tasks |= tasks
        await asyncio.wait(tasks)
        self._tasks -= tasks
        self._writers -= {writer, up_writer}

    async def cut(self) -> None:
        """Stop listening and kill every open connection (what a crashed server looks like)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for w in list(self._writers):
            w.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.sleep(0)

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()

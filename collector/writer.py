"""The write buffer between the runner and the store: batches rows, spools them when
PostgreSQL is away, and replays the spool in order when it is back.

While the spool holds anything, new batches go to the spool too, so rows reach the database in
the order they were collected. Rows buffered in memory (at most ``flush_interval``) are the only
ones a SIGKILL can take; the jobs that produced them are due again after a restart because due
times are derived from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from collector import errors, models, spool
from collector import store as store_mod


class Writer:
    """Buffered, spool-backed writes."""

    def __init__(
        self,
        store: store_mod.Store,
        spool_: spool.Spool,
        *,
        flush_rows: int = 2000,
        flush_interval: float = 1.0,
        retry_interval: float = 5.0,
        telemetry: Any = None,
        log: Any = None,
    ) -> None:
        self.store = store
        self.spool = spool_
        self.flush_rows = flush_rows
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.log = log or structlog.get_logger()
        #: ``telemetry.Telemetry`` or None
        self.telemetry = telemetry
        self.db_up = True
        self.rows_written = 0
        self.batches_spooled = 0
        #: batches in the spool now (set from the file at start, reset by a replay)
        self.spooled_batches = 0
        self._pending = models.Batch()
        self._lock = asyncio.Lock()

    @property
    def backpressure(self) -> bool:
        """The spool is full: only urgent work should produce more rows."""
        return self.spool.full

    @property
    def pending_rows(self) -> int:
        return len(self._pending)

    async def write(self, batch: models.Batch) -> None:
        """Buffer a batch; flush when the buffer is large."""
        self._pending.extend(batch)
        if len(self._pending) >= self.flush_rows:
            await self.flush()

    async def flush(self) -> None:
        """Write the buffer to the database, or to the spool when that fails or is not empty."""
        async with self._lock:
            batch, self._pending = self._pending, models.Batch()
            if not len(batch):
                return
            if self.spool.size or not self.db_up:
                self._spool(batch)
                return
            try:
                await self.store.write(batch)
            except errors.StoreError as exc:
                self.db_up = False
                self.log.warning(
                    "database_write_failed",
                    error=type(exc).__name__,
                    message=str(exc)[:300],
                    rows=len(batch),
                )
                self._spool(batch)
                return
            self._written(batch)

    def _written(self, batch: models.Batch) -> None:
        self.rows_written += len(batch)
        if self.telemetry is not None:
            for part in ("profiles", "media", "media_metrics", "media_polls", "account_metrics"):
                rows = len(getattr(batch, part))
                if rows:
                    self.telemetry.rows_written(part, rows)

    def _spool(self, batch: models.Batch) -> None:
        size = self.spool.append(batch)
        self.batches_spooled += 1
        self.spooled_batches += 1
        self.log.info("batch_spooled", rows=len(batch), spool_bytes=size)

    def spool_pending(self) -> None:
        """Put the buffer straight into the spool (a hurried exit: no database round trip)."""
        batch, self._pending = self._pending, models.Batch()
        if len(batch):
            self._spool(batch)

    async def replay(self) -> bool:
        """Write the spooled batches in order; True when the spool is empty afterwards."""
        async with self._lock:
            if not self.spool.size:
                return True
            try:
                await self.store.ping()
            except errors.StoreError:
                self.db_up = False
                return False
            replayed = 0
            for batch in self.spool.batches():
                try:
                    await self.store.write(batch)
                except errors.DatabaseUnavailable:
                    # replayed batches stay in the file: writing them again changes nothing
                    self.db_up = False
                    return False
                except errors.StoreError as exc:
                    path = self.spool.quarantine(batch, str(exc)[:500])
                    self.log.error(
                        "spool_batch_rejected", message=str(exc)[:300], kept_in=str(path)
                    )
                    continue
                replayed += 1
                self._written(batch)
            self.spool.clear()
            self.spooled_batches = 0
            self.db_up = True
            self.log.info("spool_replayed", batches=replayed)
            return True

    async def run(self, stop: asyncio.Event) -> None:
        """Flush periodically and replay the spool when the database is back, until ``stop``."""
        since_retry = self.retry_interval
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_interval)
            since_retry += self.flush_interval
            if self.spool.size and since_retry >= self.retry_interval:
                since_retry = 0.0
                await self.replay()
            await self.flush()

    async def close(self) -> None:
        """Final flush (to the database when it is up, else to the spool)."""
        if self.spool.size:
            await self.replay()
        await self.flush()

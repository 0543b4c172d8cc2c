"""The write buffer between the jobs and the store: batches rows, spools them when PostgreSQL is
away, replays the spool in order when it is back, and never drops a batch it was handed.

- A batch is sealed into the delivery queue before any ``await``, and leaves it only once it is
  in PostgreSQL or in the spool; an exception or a cancellation in between (the drain at
  shutdown, a webhook handler's timeout) leaves it at the head of the queue for the next flush.
- While the spool holds anything, new batches go to the spool too, so rows reach the database in
  the order they were collected.
- A batch PostgreSQL refuses (not an outage: a record it cannot take) is split until the
  offending record is alone; that record is kept aside in ``rejected.jsonl`` in the state
  directory with the error, and the rest lands.
- When neither PostgreSQL nor the spool takes rows (the database is down and the disk is full),
  they wait in memory up to ``memory_max_rows``; the writer reports itself degraded meanwhile.
  Past that bound the oldest are dropped, counted and logged: never silently.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from collector import errors, models, records, spool
from collector import store as store_mod
from collector import telemetry as telemetry_mod

#: records kept in memory while neither the database nor the spool takes them
MEMORY_MAX_ROWS = 500_000


class Writer:
    """Buffered, spool-backed writes that are never dropped."""

    def __init__(
        self,
        store: store_mod.Store,
        spool_: spool.Spool,
        *,
        flush_rows: int = 2000,
        flush_interval: float = 1.0,
        retry_interval: float = 5.0,
        memory_max_rows: int = MEMORY_MAX_ROWS,
        telemetry: telemetry_mod.Telemetry | None = None,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.store = store
        self.spool = spool_
        self.flush_rows = flush_rows
        self.flush_interval = flush_interval
        self.retry_interval = retry_interval
        self.memory_max_rows = memory_max_rows
        self.log: structlog.stdlib.BoundLogger = log or structlog.get_logger()
        self.telemetry = telemetry
        self.db_up = True
        #: the spool refused the last batch (full or failing disk): rows wait in memory
        self.degraded = False
        self.rows_written = 0
        self.batches_spooled = 0
        #: batches in the spool now (set from the file at start, reset by a replay)
        self.spooled_batches = 0
        self.rows_quarantined = 0
        self.rows_dropped = 0
        self._pending = models.Batch()
        self._queue: collections.deque[models.Batch] = collections.deque()
        self._lock = asyncio.Lock()
        self.rejected_path: Path = spool_.refused_path

    # ------------------------------------------------------------------ state

    @property
    def backpressure(self) -> bool:
        """The spool is full or refuses rows: only urgent work should produce more."""
        return self.degraded or self.spool.full

    @property
    def pending_rows(self) -> int:
        """Records handed over and not yet in PostgreSQL or the spool."""
        return len(self._pending) + sum(len(b) for b in self._queue)

    @property
    def spooled(self) -> bool:
        """Rows wait in the spool (the database was unreachable)."""
        return self.spool.size > 0

    # ------------------------------------------------------------------ taking rows

    def add(self, batch: models.Batch) -> None:
        """Take a batch without waiting (safe in ``finally`` blocks and cancelled tasks)."""
        self._pending.extend(batch)

    async def write(self, batch: models.Batch) -> None:
        """Take a batch; flush when the buffer is large."""
        self._pending.extend(batch)
        if len(self._pending) >= self.flush_rows:
            await self.flush()

    def _seal(self) -> None:
        if len(self._pending):
            self._queue.append(self._pending)
            self._pending = models.Batch()

    # ------------------------------------------------------------------ delivery

    async def flush(self) -> None:
        """Deliver everything taken so far to the database, or to the spool when that fails or
        is not empty; what neither takes stays queued in memory."""
        async with self._lock:
            self._seal()
            while self._queue:
                if not await self._deliver(self._queue[0]):
                    break
                self._queue.popleft()
            self._bound_memory()

    async def _deliver(self, batch: models.Batch) -> bool:
        """One batch to the database or the spool; False: neither took it."""
        if self.db_up and not self.spool.size:
            try:
                await self._store(batch)
            except errors.DatabaseUnavailable as exc:
                self.db_up = False
                self.log.warning(
                    "database_write_failed",
                    error=type(exc).__name__,
                    message=str(exc)[:300],
                    rows=len(batch),
                )
            else:
                return True
        return self._spool(batch)

    async def _store(self, batch: models.Batch) -> None:
        """Write a batch; a refused one is split so that only the bad record stays out."""
        try:
            await self.store.write(batch)
        except errors.DatabaseUnavailable:
            raise
        except errors.StoreError as exc:
            await self._split(batch, exc)
        else:
            self._written(batch)

    async def _split(self, batch: models.Batch, exc: errors.StoreError) -> None:
        entries = list(records.items(batch))
        if len(entries) <= 1:
            for kind, record in entries:
                self._quarantine(kind, record, exc)
            return
        middle = len(entries) // 2
        # halves in order: a record's dependencies (its account, its media row) come first
        for half in (entries[:middle], entries[middle:]):
            await self._store(records.batch_of(half))

    def _spool(self, batch: models.Batch) -> bool:
        try:
            size = self.spool.append(batch)
        except errors.StoreError as exc:
            if not self.degraded:
                self.log.error(
                    "spool_write_failed",
                    message=str(exc)[:300],
                    rows_in_memory=self.pending_rows,
                    memory_max_rows=self.memory_max_rows,
                )
            self.degraded = True
            return False
        if self.degraded:
            self.degraded = False
            self.log.info("spool_write_recovered", spool_bytes=size)
        self.batches_spooled += 1
        self.spooled_batches += 1
        self.log.info("batch_spooled", rows=len(batch), spool_bytes=size)
        return True

    def _bound_memory(self) -> None:
        held = self.pending_rows
        while held > self.memory_max_rows and self._queue:
            oldest = self._queue.popleft()
            held -= len(oldest)
            self.rows_dropped += len(oldest)
            if self.telemetry is not None:
                self.telemetry.rows_lost(len(oldest))
            self.log.error(
                "rows_dropped",
                rows=len(oldest),
                kinds=records.counts(oldest),
                reason="the database and the spool are both unavailable and "
                f"{self.memory_max_rows} rows already wait in memory",
            )

    def _written(self, batch: models.Batch) -> None:
        self.rows_written += len(batch)
        if self.telemetry is not None:
            for part, n in records.counts(batch).items():
                self.telemetry.rows_written(part, n)

    def _quarantine(self, kind: records.Kind, record: Any, exc: errors.StoreError) -> None:
        """Keep a record PostgreSQL refuses where an operator can read it, and go on."""
        self.rows_quarantined += 1
        if self.telemetry is not None:
            self.telemetry.rows_refused(kind.part, 1)
        line = json.dumps(
            {
                "at": datetime.now(UTC).isoformat(),
                "kind": kind.part,
                "error": str(exc)[:1000],
                "record": records.encode(record),
            },
            separators=(",", ":"),
        ).encode()
        kept_in: str | None = str(self.rejected_path)
        try:
            self.spool.refuse(line)
        except errors.SpoolError as write_exc:
            kept_in = None
            self.log.error("rejected_record_not_kept", message=str(write_exc)[:200])
        self.log.error("record_rejected", kind=kind.part, message=str(exc)[:300], kept_in=kept_in)

    # ------------------------------------------------------------------ the spool

    async def replay(self) -> bool:
        """Write the spooled batches in order; True when the spool is empty afterwards (and the
        database answers)."""
        async with self._lock:
            try:
                await self.store.ping()
            except errors.StoreError:
                self.db_up = False
                return False
            if not self.spool.size:
                self.db_up = True
                return True
            replayed = 0
            for batch in self.spool.batches():
                try:
                    await self._store(batch)
                except errors.DatabaseUnavailable:
                    # replayed batches stay in the file: writing them again changes nothing
                    self.db_up = False
                    return False
                replayed += 1
            self.spool.clear()
            self.spooled_batches = 0
            self.db_up = True
            self.log.info("spool_replayed", batches=replayed)
            return True

    def spool_pending(self) -> None:
        """Put everything in memory straight into the spool (a hurried exit: no database
        round trip)."""
        self._seal()
        while self._queue and self._spool(self._queue[0]):
            self._queue.popleft()
        self._report_lost()

    async def run(self, stop: asyncio.Event) -> None:
        """Flush periodically and replay the spool when the database is back, until ``stop``."""
        since_retry = self.retry_interval
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.flush_interval)
            since_retry += self.flush_interval
            if (self.spool.size or not self.db_up) and since_retry >= self.retry_interval:
                since_retry = 0.0
                await self.replay()
            await self.flush()

    async def close(self) -> None:
        """Final flush (to the database when it is up, else to the spool)."""
        if self.spool.size or not self.db_up:
            await self.replay()
        await self.flush()
        self._report_lost()

    def _report_lost(self) -> None:
        left = self.pending_rows
        if left:
            self.rows_dropped += left
            if self.telemetry is not None:
                self.telemetry.rows_lost(left)
            self.log.error(
                "rows_lost_at_exit",
                rows=left,
                reason="neither the database nor the spool could take them",
            )

"""An append-only file of batches, kept while PostgreSQL is away and replayed in order.

Each record is one JSON document on one line, framed as ``<length> <crc32> <json>\\n`` and
fsync'd before :meth:`Spool.append` returns, so a batch that was spooled survives a crash or a
SIGKILL. A torn last record (the process died mid-write) fails its length or checksum and is
dropped on read: it was never acknowledged, so its rows are still in memory or lost with the
process that never got to write them; every earlier record is intact.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collector import errors, models, records

FILENAME = "spool.log"


def dump(batch: models.Batch) -> bytes:
    """A batch as one JSON document (exact: datetimes with offsets, decimals as text).

    ASCII-only, so text the API sent that is not valid Unicode (a lone surrogate) can neither
    break the spool nor be altered by it.
    """
    doc: dict[str, list[dict[str, Any]]] = {}
    for kind in records.KINDS:
        found = getattr(batch, kind.part)
        if found:
            doc[kind.part] = [records.encode(r) for r in found]
    return json.dumps(doc, separators=(",", ":")).encode()


def load(raw: bytes) -> models.Batch:
    doc = json.loads(raw)
    batch = models.Batch()
    for kind in records.KINDS:
        getattr(batch, kind.part).extend(
            records.decode(kind, item) for item in doc.get(kind.part, ())
        )
    return batch


class Spool:
    """The spool file in the state directory."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.path = directory / FILENAME
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    @property
    def full(self) -> bool:
        return self.size >= self.max_bytes

    def append(self, batch: models.Batch) -> int:
        """Write one batch durably; returns the spool's size after it."""
        payload = dump(batch)
        record = b"%d %08x " % (len(payload), zlib.crc32(payload)) + payload + b"\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, record)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise errors.SpoolError(f"cannot append to the spool {self.path}: {exc}") from exc
        return self.size

    def batches(self) -> Iterator[models.Batch]:
        """Every intact batch, oldest first (a torn last record is skipped)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos < len(data):
            header_end = data.find(b" ", data.find(b" ", pos) + 1)
            if header_end < 0:
                return
            try:
                length_s, crc_s = data[pos:header_end].split(b" ")
                length, crc = int(length_s), int(crc_s, 16)
            except ValueError:
                return
            payload = data[header_end + 1 : header_end + 1 + length]
            if len(payload) != length or zlib.crc32(payload) != crc:
                return
            yield load(payload)
            pos = header_end + 1 + length + 1

    def count(self) -> int:
        return sum(1 for _ in self.batches())

    def quarantine(self, batch: models.Batch, reason: str) -> Path:
        """Keep a batch the database refuses (not an outage) aside, so replay can go on."""
        path = self.path.with_name("spool.rejected")
        payload = dump(batch)
        with path.open("ab") as f:
            f.write(json.dumps({"reason": reason}).encode() + b"\n" + payload + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return path

    def clear(self) -> None:
        """Forget every record (after all were written to the database)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

"""An append-only file of batches, kept while PostgreSQL is away and replayed in order.

Each record is one JSON document on one line, framed as ``<length> <crc32> <json>\\n`` and
fsync'd before :meth:`Spool.append` returns, so a batch that was spooled survives a crash or a
SIGKILL. A torn last record (the process died mid-write) fails its length or checksum and is
dropped on read: it was never acknowledged, so its rows are still in memory or lost with the
process that never got to write them; every earlier record is intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
import zlib
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from collector import errors, models

FILENAME = "spool.log"

#: Batch field -> record class (the order in which replay writes them does not matter: one
#: transaction per batch, and the store orders parts itself)
_PARTS: dict[str, type[Any]] = {
    "profiles": models.ProfileSnapshot,
    "media": models.Media,
    "media_metrics": models.MediaMetric,
    "media_polls": models.MediaPoll,
    "account_metrics": models.AccountMetric,
    "errors": models.CollectionError,
    "verdicts": models.MetricVerdict,
    "statuses": models.AccountStatusChange,
    "successes": models.AccountSuccess,
    "token_checks": models.TokenCheck,
    "usages": models.AccountUsage,
}


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$t" in value:
            return datetime.fromisoformat(value["$t"])
        if "$d" in value:
            return Decimal(value["$d"])
    return value


def dump(batch: models.Batch) -> bytes:
    """A batch as one JSON document (exact: datetimes with offsets, decimals as text)."""
    doc: dict[str, list[dict[str, Any]]] = {}
    for part in _PARTS:
        records = getattr(batch, part)
        if records:
            doc[part] = [
                {f.name: _encode(getattr(r, f.name)) for f in dataclasses.fields(r)}
                for r in records
            ]
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def load(raw: bytes) -> models.Batch:
    doc = json.loads(raw)
    batch = models.Batch()
    for part, cls in _PARTS.items():
        for item in doc.get(part, ()):
            fields = {k: _decode(v) for k, v in item.items()}
            if cls is models.MediaPoll:
                fields["status"] = models.InsightsStatus(fields["status"])
            elif cls is models.AccountStatusChange:
                fields["status"] = models.AccountStatus(fields["status"])
            elif cls is models.MetricVerdict:
                fields["object_kind"] = models.ObjectKind(fields["object_kind"])
            elif cls is models.TokenCheck:
                fields["scopes"] = tuple(fields["scopes"])
            getattr(batch, part).append(cls(**fields))
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
            raise errors.StoreError(f"cannot append to the spool {self.path}: {exc}") from exc
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

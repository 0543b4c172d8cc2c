"""An append-only file of batches, kept while PostgreSQL is away and replayed in order.

Each record is one JSON document on one line, framed as ``<length> <crc32> <json>\\n`` (JSON
text never holds a raw newline, so the newline frames a record even when its header is
damaged). A record is all or nothing: :meth:`Spool.append` writes it whole (short writes are
continued), fsyncs it, and only then returns; on any failure it cuts the file back to its
previous length and raises :class:`errors.SpoolError`, so nothing is acknowledged that is not on
the disk. Hence only the last record can be torn (the process died mid-write, never
acknowledged): :meth:`Spool.recover` cuts it at start, and every append makes sure it is cut
before writing after it. A damaged record elsewhere (a flipped bit, a torn record an older
version appended after) is counted, logged and set aside in ``spool.rejected``; reading goes
on at the next record, and :meth:`Spool.clear` forgets only what a reading has handed on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import structlog

from collector import errors, models, records

FILENAME = "spool.log"
REJECTED = "spool.rejected"
#: records PostgreSQL refused, one JSON line each (the writer's splitting sets them aside)
REFUSED = "rejected.jsonl"


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


def frame(payload: bytes) -> bytes:
    """One record as it is written to the file."""
    return b"%d %08x " % (len(payload), zlib.crc32(payload)) + payload + b"\n"


def load(raw: bytes) -> models.Batch:
    doc = json.loads(raw)
    batch = models.Batch()
    for kind in records.KINDS:
        getattr(batch, kind.part).extend(
            records.decode(kind, item) for item in doc.get(kind.part, ())
        )
    return batch


#: ``<length> <crc32> `` at the start of a record; JSON payloads always start with ``{``
_HEADER = re.compile(rb"(\d{1,15}) ([0-9a-f]{8}) ")
#: a header is never longer than this (15 digits, 8 hex digits, two spaces)
_HEADER_MAX = 25
#: where a record may start inside a damaged stretch of the file (a lookahead, so that a start
#: right after the digits of the damaged part is tried too)
_CANDIDATE = re.compile(rb"(?=\d{1,15} [0-9a-f]{8} \{)")
_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True, slots=True)
class _Record:
    """One stretch of the file: a record, a damaged record, or a torn tail."""

    start: int
    end: int
    payload: bytes | None = None
    problem: str = ""
    #: no newline before the end of the file: a write that never finished
    torn: bool = False


def _parse_at(data: bytes, pos: int) -> bytes | None:
    """The payload of an intact record starting at ``data[pos]`` and ending ``data``; else None."""
    match = _HEADER.match(data, pos)
    if match is None:
        return None
    length, crc = int(match.group(1)), int(match.group(2), 16)
    if match.end() + length + 1 != len(data) or data[-1:] != b"\n":
        return None
    payload = data[match.end() : match.end() + length]
    return payload if zlib.crc32(payload) == crc else None


def _next_newline(f: IO[bytes], pos: int) -> int | None:
    """The offset just after the first newline at or after ``pos``; None at end of file."""
    f.seek(pos)
    while chunk := f.read(_CHUNK):
        at = chunk.find(b"\n")
        if at >= 0:
            return pos + at + 1
        pos += len(chunk)
    return None


def _scan(f: IO[bytes], size: int) -> Iterator[_Record]:
    """Every stretch of the file in order: records, damaged records, a torn tail."""
    pos = 0
    while pos < size:
        f.seek(pos)
        head = f.read(_HEADER_MAX)
        match = _HEADER.match(head)
        problem = "unreadable record header"
        if match is not None:
            length, crc = int(match.group(1)), int(match.group(2), 16)
            body = pos + match.end()
            if body + length + 1 <= size:  # never read past the file on a damaged length
                f.seek(body)
                payload = f.read(length)
                if f.read(1) == b"\n" and zlib.crc32(payload) == crc:
                    yield _Record(pos, body + length + 1, payload)
                    pos = body + length + 1
                    continue
                problem = "checksum or length mismatch"
            else:
                problem = "record shorter than its length"
        end = _next_newline(f, pos)
        if end is None:
            yield _Record(pos, size, problem=problem, torn=True)
            return
        yield from _salvage(f, pos, end, problem)
        pos = end


def _salvage(f: IO[bytes], start: int, end: int, problem: str) -> Iterator[_Record]:
    """A damaged line may end with an intact record (appended after a torn one by a version
    that did not cut torn tails): find it, so only the damaged part is lost."""
    f.seek(start)
    data = f.read(end - start)
    for match in _CANDIDATE.finditer(data, 1):
        payload = _parse_at(data[match.start() :], 0)
        if payload is not None:
            yield _Record(start, start + match.start(), problem=problem)
            yield _Record(start + match.start(), end, payload)
            return
    yield _Record(start, end, problem=problem)


def _write_whole(fd: int, data: bytes, start: int) -> None:
    """Write and fsync all of ``data`` at the end of ``fd`` (at ``start``), continuing short
    writes; on any failure cut the file back to ``start`` (best effort) and raise."""
    view = memoryview(data)
    written = 0
    try:
        while written < len(data):
            n = os.write(fd, view[written:])
            if n <= 0:
                break
            written += n
        if written == len(data):
            # a failed fsync may have dropped the dirty pages: the bytes cannot be trusted
            os.fsync(fd)
            return
        failure = OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)")
    except OSError as exc:
        failure = exc
    with contextlib.suppress(OSError):
        os.ftruncate(fd, start)
        os.fsync(fd)
    raise failure


def _append_whole(path: Path, data: bytes, what: str) -> None:
    """Append all of ``data`` to ``path`` durably (0600), or raise ``SpoolError``."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            _write_whole(fd, data, os.fstat(fd).st_size)
        finally:
            os.close(fd)
    except OSError as exc:
        raise errors.SpoolError(
            f"cannot set {what} aside in {path}: {_describe(exc)}", errno=exc.errno
        ) from exc


def _size(fd: int) -> int | None:
    try:
        return os.fstat(fd).st_size
    except OSError:
        return None


def _describe(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class Spool:
    """The spool file in the state directory.

    One process writes it (the daemon); others may read it (``batches()``, ``count()``) while it
    does. Nothing here raises but :class:`errors.SpoolError` from ``append``, ``clear`` and
    ``quarantine``; reading problems are logged, counted and kept in :attr:`last_error`.
    """

    def __init__(self, directory: Path, *, max_bytes: int, log: Any = None) -> None:
        self.path = directory / FILENAME
        self.max_bytes = max_bytes
        self.log = log if log is not None else structlog.get_logger()
        #: the last failure to write or read the spool (None: the last write worked)
        self.last_error: str | None = None
        #: damaged records met by :meth:`batches` (set aside by :meth:`clear`)
        self.bad_records = 0
        #: bytes of torn tails cut by :meth:`recover`
        self.torn_bytes_cut = 0
        # where the last intact record ends, once recover() has looked (None: not yet)
        self._end: int | None = None
        # how far the last batches() reading has handed records on, and the damaged stretches
        # it met: clear() forgets exactly these
        self._consumed = 0
        self._damaged: list[_Record] = []
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.last_error = f"cannot create the state directory {directory}: {_describe(exc)}"
            self.log.error("spool_unavailable", path=str(self.path), error=self.last_error)

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    @property
    def full(self) -> bool:
        """At or past ``max_bytes``: only urgent work should add to it."""
        return self.size >= self.max_bytes

    @property
    def healthy(self) -> bool:
        """The last append (or the creation of the spool) worked."""
        return self.last_error is None

    # ------------------------------------------------------------------ writing

    def recover(self) -> int:
        """Cut a torn tail (a record whose writer died); returns the bytes cut. Never raises:
        a failure is logged and kept in :attr:`last_error`, and the next append retries."""
        try:
            return self._recover()
        except errors.SpoolError as exc:
            self.last_error = str(exc)
            self.log.error("spool_unavailable", path=str(self.path), error=str(exc))
            return 0

    def _recover(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            self._end = 0
            return 0
        except OSError as exc:
            raise errors.SpoolError(
                f"cannot open the spool {self.path}: {_describe(exc)}", errno=exc.errno
            ) from exc
        try:
            return self._cut_tail(fd)
        except OSError as exc:
            raise errors.SpoolError(
                f"cannot recover the spool {self.path}: {_describe(exc)}", errno=exc.errno
            ) from exc
        finally:
            os.close(fd)

    def _cut_tail(self, fd: int) -> int:
        """Truncate ``fd`` after its last intact record; sets ``_end``."""
        size = os.fstat(fd).st_size
        end = 0
        with open(fd, "rb", closefd=False) as f:
            for record in _scan(f, size):
                if record.payload is not None:
                    end = record.end
        cut = size - end
        if cut:
            os.ftruncate(fd, end)
            os.fsync(fd)
            self.torn_bytes_cut += cut
            self.log.warning("spool_tail_cut", path=str(self.path), bytes=cut, kept_bytes=end)
        self._end = end
        return cut

    def append(self, batch: models.Batch) -> int:
        """Write one batch durably; returns the spool's size after it.

        Raises :class:`errors.SpoolError` (the file as it was before) when the batch could not
        be written and fsync'd whole: the caller still holds the only copy of its rows.
        """
        record = frame(dump(batch))
        if self._end is None:
            try:
                self._recover()
            except errors.SpoolError as exc:
                self.last_error = str(exc)
                raise
        expected = self._end or 0
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise self._failed(f"cannot open the spool {self.path}", exc, len(record)) from exc
        try:
            start = os.fstat(fd).st_size
            if start != expected:
                # bytes past the last intact record (a cut that failed earlier, or a file that
                # changed under us): never write after something unreadable
                self._cut_tail(fd)
                start = self._end or 0
            _write_whole(fd, record, start)
        except OSError as exc:
            if _size(fd) != start:
                self._end = None  # the torn bytes stay for now; the next append cuts them first
            raise self._failed(f"cannot append to the spool {self.path}", exc, len(record)) from exc
        finally:
            os.close(fd)
        if start == 0:
            self._sync_directory()  # the file may be new: make its name durable too
        self._end = start + len(record)
        self.last_error = None
        return self._end

    def _failed(self, what: str, exc: OSError, size: int) -> errors.SpoolError:
        message = f"{what}: {_describe(exc)} ({size} bytes not written)"
        self.last_error = message
        self.log.error("spool_append_failed", path=str(self.path), error=_describe(exc), bytes=size)
        return errors.SpoolError(message, errno=exc.errno)

    def _sync_directory(self) -> None:
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            self.log.warning("spool_dir_sync_failed", path=str(self.path), error=_describe(exc))

    # ------------------------------------------------------------------ reading

    def _records(self) -> Iterator[_Record]:
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            return
        except OSError as exc:
            self.last_error = f"cannot read the spool {self.path}: {_describe(exc)}"
            self.log.error("spool_unreadable", path=str(self.path), error=self.last_error)
            return
        with f:
            yield from _scan(f, os.fstat(f.fileno()).st_size)

    def batches(self) -> Iterator[models.Batch]:
        """Every readable batch, oldest first, as the file was when reading began.

        A damaged record is logged (``spool_record_unreadable``), counted in
        :attr:`bad_records` and skipped; a torn last record is not read (it is being written,
        or was never acknowledged). A record counts as handed on once the consumer asks for the
        next one, so a replay that stops early leaves its last batch to the next reading.
        """
        self._consumed = 0
        self._damaged = []
        for record in self._records():
            if record.torn:
                return
            problem = record.problem
            if record.payload is not None:
                try:
                    batch = load(record.payload)
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
                    problem = f"checksum fine but not a batch ({type(exc).__name__})"
                else:
                    yield batch
                    self._consumed = record.end
                    continue
            self.bad_records += 1
            self._damaged.append(dataclasses.replace(record, problem=problem))
            self._consumed = record.end
            self.log.error(
                "spool_record_unreadable",
                path=str(self.path),
                offset=record.start,
                bytes=record.end - record.start,
                problem=problem,
            )

    def count(self) -> int:
        """Intact records in the file (checksums only: nothing is decoded)."""
        return sum(1 for r in self._records() if r.payload is not None)

    def quarantine(self, batch: models.Batch, reason: str) -> Path:
        """Keep a batch the database refuses (not an outage) aside, so replay can go on."""
        return self._set_aside(dump(batch) + b"\n", reason)

    def _set_aside(self, raw: bytes, reason: str) -> Path:
        path = self.path.with_name(REJECTED)
        _append_whole(path, json.dumps({"reason": reason}).encode() + b"\n" + raw, "a batch")
        return path

    @property
    def refused_path(self) -> Path:
        return self.path.with_name(REFUSED)

    def refuse(self, line: bytes) -> Path:
        """Keep one record PostgreSQL refused (a JSON line) where an operator can read it."""
        _append_whole(self.refused_path, line + b"\n", "a refused record")
        return self.refused_path

    def clear(self) -> None:
        """Forget the records the last :meth:`batches` reading handed on (all of them, after a
        full replay); damaged ones are first set aside in ``spool.rejected``. Records written
        since that reading began, or never read, stay."""
        upto, damaged = self._consumed, self._damaged
        if upto == 0:
            return
        if self._end is None:
            self._recover()
        end = self._end or 0
        try:
            for record in damaged:
                with self.path.open("rb") as f:
                    f.seek(record.start)
                    raw = f.read(record.end - record.start)
                reason = f"unreadable spool record at byte {record.start}: {record.problem}"
                self._set_aside(raw, reason)
            if upto >= end:
                self.path.unlink(missing_ok=True)
                rest = 0
            else:
                rest = self._keep_from(upto, end)
        except OSError as exc:
            raise errors.SpoolError(
                f"cannot clear the spool {self.path}: {_describe(exc)}", errno=exc.errno
            ) from exc
        self._sync_directory()
        self._consumed, self._damaged, self._end = 0, [], rest

    def _keep_from(self, upto: int, end: int) -> int:
        """Replace the file by its records from ``upto`` to ``end``; returns the new size."""
        tmp = self.path.with_name(FILENAME + ".tmp")
        with self.path.open("rb") as src:
            src.seek(upto)
            rest = src.read(end - upto)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            _write_whole(fd, rest, 0)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        return len(rest)

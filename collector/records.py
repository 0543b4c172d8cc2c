"""The one list of record kinds a batch carries, and how each is stored.

Everything that handles batches is derived from :data:`KINDS`: the fields of ``models.Batch``
(checked at import), the staging tables and statements of ``Store.write`` (in this order), the
spool's encoding, the writer's counts and the splitting of a refused batch.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from collector import models


def number(value: models.Number) -> Decimal | int:
    """A metric value as PostgreSQL ``numeric`` takes it, exactly."""
    # Decimal(0.1) would store 0.1000000000000000055…; repr gives the shortest exact spelling.
    if isinstance(value, float):
        return Decimal(repr(value))
    return value


def text_number(value: models.Number) -> str:
    """A metric value as text PostgreSQL casts to ``numeric`` exactly (``repr``: the shortest
    spelling that reads back as the same float)."""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _optional_number(value: models.Number | None) -> Decimal | int | None:
    return None if value is None else number(value)


@dataclasses.dataclass(frozen=True, slots=True)
class Kind:
    """One kind of record: its ``Batch`` attribute, class and how the store writes it."""

    part: str
    record: type[Any]
    #: the staging table COPY fills, then ``statements`` run; None: ``statements[0]`` runs
    #: once per record (``executemany``), for the handful of account bookkeeping rows
    stage: str | None
    statements: tuple[str, ...]
    row: Callable[[Any], tuple[Any, ...]]
    #: the account a record belongs to (its row must exist first), if it names one
    account: Callable[[Any], str] | None = None


def _uid(record: Any) -> str:
    return str(record.ig_user_id)


KINDS: tuple[Kind, ...] = (
    Kind(
        "profiles",
        models.ProfileSnapshot,
        "stage_profile",
        ("insert_account_snapshots", "update_account_usernames"),
        lambda p: (
            p.ig_user_id,
            p.captured_at,
            p.username,
            p.followers_count,
            p.follows_count,
            p.media_count,
        ),
        _uid,
    ),
    Kind(
        "media",
        models.Media,
        "stage_media",
        ("upsert_media",),
        lambda m: (
            m.media_id,
            m.ig_user_id,
            m.media_type,
            m.media_product_type,
            m.posted_at,
            m.permalink,
            m.caption,
            m.expires_at,
            m.seen_at,
        ),
        _uid,
    ),
    Kind(
        "media_metrics",
        models.MediaMetric,
        "stage_media_metric",
        ("insert_media_metrics",),
        lambda v: (
            v.media_id,
            v.metric,
            v.breakdown,
            v.dimension,
            text_number(v.value),
            v.captured_at,
            v.is_final,
        ),
    ),
    Kind(
        "media_polls",
        models.MediaPoll,
        "stage_media_poll",
        ("apply_media_polls",),
        lambda p: (p.media_id, p.polled_at, str(p.status), p.is_final, p.reason, p.source),
    ),
    Kind(
        "misses",
        models.StoryMiss,
        None,
        ("record_story_miss",),
        lambda m: (m.media_id, m.at, str(m.reason), m.detail),
    ),
    Kind(
        "account_metrics",
        models.AccountMetric,
        "stage_account_metric",
        ("upsert_account_metrics",),
        lambda v: (
            v.ig_user_id,
            v.metric,
            v.period,
            v.breakdown,
            v.dimension,
            v.end_time,
            number(v.value),
            v.captured_at,
        ),
        _uid,
    ),
    Kind(
        "errors",
        models.CollectionError,
        "stage_error",
        ("insert_collection_errors", "update_account_last_error"),
        lambda e: (
            e.ig_user_id,
            e.occurred_at,
            e.job,
            e.object_id,
            e.error_class,
            e.code,
            e.subcode,
            e.message,
            e.fbtrace_id,
        ),
        _uid,
    ),
    Kind(
        "verdicts",
        models.MetricVerdict,
        "stage_verdict",
        ("upsert_metric_support",),
        lambda v: (
            str(v.object_kind),
            v.metric,
            v.api_version,
            v.supported,
            v.reason,
            v.learned_at,
        ),
    ),
    # Account bookkeeping rides in the batch so that it is spooled and replayed in order with
    # the data when the database is away; a handful of rows per batch.
    Kind(
        "token_checks",
        models.TokenCheck,
        None,
        ("set_token_info",),
        lambda t: (
            t.ig_user_id,
            t.valid,
            t.expires_at,
            t.data_access_expires_at,
            list(t.scopes),
            t.checked_at,
        ),
        _uid,
    ),
    Kind(
        "successes",
        models.AccountSuccess,
        None,
        ("record_success",),
        lambda c: (c.ig_user_id, c.at),
        _uid,
    ),
    Kind(
        "usages",
        models.AccountUsage,
        None,
        ("set_account_usage",),
        lambda u: (
            u.ig_user_id,
            _optional_number(u.percent),
            u.at,
            u.paused_until,
            u.throttle_events,
        ),
        _uid,
    ),
    # last: a status decided after the data it concerns
    Kind(
        "statuses",
        models.AccountStatusChange,
        None,
        ("set_account_status",),
        lambda c: (c.ig_user_id, str(c.status), c.reason, c.at),
        _uid,
    ),
)

BY_PART: dict[str, Kind] = {k.part: k for k in KINDS}

#: account bookkeeping a holder decides (a verdict, a success, a token check, a usage reading):
#: in cluster mode it carries the lease epoch and is refused when that epoch is stale, so a
#: process that lost an account while frozen cannot overwrite its successor's verdicts (the
#: data kinds are snapshots: idempotent, and an older capture never wins)
FENCED: tuple[str, ...] = ("token_checks", "successes", "usages", "statuses")


def fenced(batch: models.Batch) -> dict[str, set[int]]:
    """{account: epochs} of the fenced records of a batch that carry an epoch."""
    found: dict[str, set[int]] = {}
    for part in FENCED:
        for record in getattr(batch, part):
            if record.epoch is not None:
                found.setdefault(str(record.ig_user_id), set()).add(record.epoch)
    return found


def without_stale(batch: models.Batch, current: dict[str, int]) -> tuple[models.Batch, int]:
    """The batch less the fenced records whose epoch is not ``current[account]``; and how many
    were left out."""
    kept = models.Batch()
    dropped = 0
    for kind, record in items(batch):
        if (
            kind.part in FENCED
            and record.epoch is not None
            and current.get(str(record.ig_user_id)) != record.epoch
        ):
            dropped += 1
            continue
        getattr(kept, kind.part).append(record)
    return kept, dropped


_batch_parts = tuple(f.name for f in dataclasses.fields(models.Batch))
if set(_batch_parts) != set(BY_PART):  # pragma: no cover  (a programming error, caught at import)
    raise RuntimeError(f"models.Batch fields {_batch_parts} differ from records.KINDS")


def items(batch: models.Batch) -> Iterator[tuple[Kind, Any]]:
    """Every record of a batch with its kind, in write order."""
    for kind in KINDS:
        for record in getattr(batch, kind.part):
            yield kind, record


def batch_of(entries: list[tuple[Kind, Any]]) -> models.Batch:
    batch = models.Batch()
    for kind, record in entries:
        getattr(batch, kind.part).append(record)
    return batch


def counts(batch: models.Batch) -> dict[str, int]:
    """Records per kind (kinds with none left out)."""
    return {k.part: n for k in KINDS if (n := len(getattr(batch, k.part)))}


def account_ids(batch: models.Batch) -> list[str]:
    """The accounts a batch names (their rows must exist before the data)."""
    return sorted(
        {
            kind.account(record)
            for kind in KINDS
            if kind.account is not None
            for record in getattr(batch, kind.part)
        }
    )


# --------------------------------------------------------------------------- JSON form


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$t": value.isoformat()}
    if isinstance(value, Decimal):
        return {"$d": str(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def encode(record: Any) -> dict[str, Any]:
    """A record as a JSON object (exact: datetimes with offsets, decimals as text)."""
    return {f.name: _encode(getattr(record, f.name)) for f in dataclasses.fields(record)}


_HINTS: dict[type[Any], dict[str, Any]] = {
    k.record: typing.get_type_hints(k.record, vars(models)) for k in KINDS
}


def _decode(value: Any, hint: Any) -> Any:
    if isinstance(value, dict):
        if "$t" in value:
            return datetime.fromisoformat(value["$t"])
        if "$d" in value:
            return Decimal(value["$d"])
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and value is not None:
        return hint(value)
    if typing.get_origin(hint) is tuple and isinstance(value, list):
        return tuple(value)
    return value


def decode(kind: Kind, doc: dict[str, Any]) -> Any:
    """The record :func:`encode` made (``ValueError``/``TypeError`` for a foreign document)."""
    hints = _HINTS[kind.record]
    return kind.record(**{name: _decode(value, hints.get(name)) for name, value in doc.items()})

"""Plain records passed between the Graph client, the collection logic and the store."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from decimal import Decimal
from typing import NewType

IgUserId = NewType("IgUserId", str)
MediaId = NewType("MediaId", str)

#: a metric value: Meta sends ints, and floats for rates (``reels_skip_rate``)
Number = int | float | Decimal


class ObjectKind(enum.StrEnum):
    """What a metric set applies to; the key of ``metric_support`` and of metric-set overrides."""

    ACCOUNT = "account"
    FEED_IMAGE = "feed_image"
    FEED_VIDEO = "feed_video"
    FEED_CAROUSEL = "feed_carousel"
    REELS = "reels"
    STORY = "story"

    @classmethod
    def of_media(cls, media_type: str | None, product_type: str | None) -> ObjectKind:
        """The kind of a media object from its ``media_type`` and ``media_product_type``."""
        if product_type == "STORY":
            return cls.STORY
        if product_type == "REELS":
            return cls.REELS
        if media_type == "CAROUSEL_ALBUM":
            return cls.FEED_CAROUSEL
        if media_type == "VIDEO":
            return cls.FEED_VIDEO
        return cls.FEED_IMAGE


class AccountStatus(enum.StrEnum):
    OK = "ok"
    UNHEALTHY = "unhealthy"  # token invalid, permission missing: needs an operator
    THROTTLED = "throttled"  # paused by a rate limit; resumes by itself
    FAILING = "failing"  # transient errors outlasted the retries
    DISABLED = "disabled"  # enabled = false in the config
    REMOVED = "removed"  # no longer in the config (data kept)


class InsightsStatus(enum.StrEnum):
    """Why a media object has (or has no) insights at its last poll."""

    OK = "ok"
    BELOW_THRESHOLD = "below_threshold"  # (#10) Not enough viewers
    BEFORE_CONVERSION = "before_conversion"  # 100/2108006
    GONE = "gone"  # 100/33, or a story past its expiry
    UNAVAILABLE = "unavailable"  # every metric of its kind was rejected


@dataclasses.dataclass(frozen=True, slots=True)
class AccountRow:
    """An account as configured (upserted at start and on reload)."""

    ig_user_id: IgUserId
    name: str
    enabled: bool
    #: "facebook" or "instagram": which API serves the account
    login: str = "facebook"
    #: the ``[[sources]]`` entry that discovered the account; None: configured by hand
    source: str | None = None
    #: the Facebook Page a source found it through (not a secret; its token is never stored)
    page_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class SealedToken:
    """A renewed Instagram Login token as the database keeps it: sealed (``vault``)."""

    ig_user_id: str
    seed_sha256: str
    sealed: bytes = dataclasses.field(repr=False)
    expires_at: datetime
    refreshed_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class ProfileSnapshot:
    ig_user_id: IgUserId
    captured_at: datetime
    username: str | None
    followers_count: int | None
    follows_count: int | None
    media_count: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class Media:
    """A media object or story as listed by ``/media`` or ``/stories``."""

    media_id: MediaId
    ig_user_id: IgUserId
    media_type: str | None
    media_product_type: str | None
    posted_at: datetime | None
    permalink: str | None
    caption: str | None
    expires_at: datetime | None  # stories only: posted_at + 24 h
    seen_at: datetime

    @property
    def kind(self) -> ObjectKind:
        return ObjectKind.of_media(self.media_type, self.media_product_type)


@dataclasses.dataclass(frozen=True, slots=True)
class MediaMetric:
    """One value of one media metric at one capture; append-only history.

    ``breakdown``/``dimension`` are ``""`` for the total; a breakdown row carries the breakdown
    name (``story_navigation_action_type``) and the lower-cased dimension value (``tap_forward``).
    Fields such as ``like_count`` are recorded here too, with their field name as metric.
    """

    media_id: MediaId
    metric: str
    breakdown: str
    dimension: str
    value: Number
    captured_at: datetime
    is_final: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class AccountMetric:
    """One account metric for one period bucket; upserted (Meta revises the last 48 h).

    ``period`` is ``day`` or ``lifetime``; ``end_time`` is the exclusive end of the bucket (for
    demographics: the end of the Pacific day on which they were captured).
    """

    ig_user_id: IgUserId
    metric: str
    period: str
    breakdown: str
    dimension: str
    end_time: datetime
    value: Number
    captured_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class MediaPoll:
    """The outcome of polling one media object's insights (updates the ``media`` row)."""

    media_id: MediaId
    polled_at: datetime
    status: InsightsStatus
    is_final: bool = False
    reason: str | None = None
    #: where a final capture came from: "poll" (the collector's own call) or "webhook"
    source: str = "poll"


class MissReason(enum.StrEnum):
    """Why a story expired without its final snapshot."""

    BELOW_THRESHOLD = "below_threshold"  # under 5 viewers at the end: Meta shows no insights
    TOKEN_PARKED = "token_parked"  # noqa: S105  (a reason, not a password)
    THROTTLED = "throttled"  # the account or the app was paused by a rate limit
    PROCESS_DOWN = "process_down"  # no collector was running through its final window
    RETRIES_EXHAUSTED = "retries_exhausted"  # every final poll in the window failed
    GONE = "gone"  # deleted before it expired
    NOT_POLLED = "not_polled"  # found too late, or held back (a full spool)


@dataclasses.dataclass(frozen=True, slots=True)
class StoryMiss:
    """A story expired without its final snapshot, and why (updates the ``media`` row)."""

    media_id: MediaId
    at: datetime
    reason: MissReason
    detail: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CollectionError:
    """An error worth keeping: what failed, for which account and object, and why."""

    ig_user_id: IgUserId
    occurred_at: datetime
    job: str
    object_id: str | None
    error_class: str
    code: int | None
    subcode: int | None
    message: str
    fbtrace_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class MetricVerdict:
    """What the API told us about one metric for one object kind and API version."""

    object_kind: ObjectKind
    metric: str
    api_version: str
    supported: bool
    reason: str
    learned_at: datetime


@dataclasses.dataclass(frozen=True, slots=True)
class AccountStatusChange:
    """The collector's verdict on an account (ok, throttled, unhealthy, …) from a moment on."""

    ig_user_id: IgUserId
    status: AccountStatus
    reason: str | None
    at: datetime
    #: the lease epoch it was decided under (cluster mode; None: one process)
    epoch: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AccountSuccess:
    """A job of the account succeeded at ``at``."""

    ig_user_id: IgUserId
    at: datetime
    #: the lease epoch it was decided under (cluster mode; None: one process)
    epoch: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TokenCheck:
    """What ``debug_token`` said about an account's token."""

    ig_user_id: IgUserId
    valid: bool
    expires_at: datetime | None
    data_access_expires_at: datetime | None
    scopes: tuple[str, ...]
    checked_at: datetime
    #: the lease epoch it was decided under (cluster mode; None: one process)
    epoch: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class AccountUsage:
    """The rate-limit state of an account: Meta's last usage reading and our pause."""

    ig_user_id: IgUserId
    percent: float | None
    paused_until: datetime | None
    throttle_events: int
    at: datetime
    #: the lease epoch it was decided under (cluster mode; None: one process)
    epoch: int | None = None


@dataclasses.dataclass(slots=True)
class Batch:
    """Everything one unit of work produced, written in one transaction.

    Each field is one kind of record; ``collector.records.KINDS`` says how each is stored.
    """

    profiles: list[ProfileSnapshot] = dataclasses.field(default_factory=list)
    media: list[Media] = dataclasses.field(default_factory=list)
    media_metrics: list[MediaMetric] = dataclasses.field(default_factory=list)
    media_polls: list[MediaPoll] = dataclasses.field(default_factory=list)
    account_metrics: list[AccountMetric] = dataclasses.field(default_factory=list)
    errors: list[CollectionError] = dataclasses.field(default_factory=list)
    verdicts: list[MetricVerdict] = dataclasses.field(default_factory=list)
    statuses: list[AccountStatusChange] = dataclasses.field(default_factory=list)
    successes: list[AccountSuccess] = dataclasses.field(default_factory=list)
    token_checks: list[TokenCheck] = dataclasses.field(default_factory=list)
    usages: list[AccountUsage] = dataclasses.field(default_factory=list)
    misses: list[StoryMiss] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(getattr(self, field.name)) for field in dataclasses.fields(self))

    def extend(self, other: Batch) -> None:
        for field in dataclasses.fields(self):
            getattr(self, field.name).extend(getattr(other, field.name))


@dataclasses.dataclass(frozen=True, slots=True)
class AccountState:
    """An account as the database knows it: configuration, collector status and token."""

    ig_user_id: IgUserId
    name: str
    username: str | None
    enabled: bool
    status: str  # an AccountStatus value, or "unknown" before the first collection
    status_reason: str | None
    status_changed_at: datetime | None
    last_success_at: datetime | None
    last_error_at: datetime | None
    last_error: str | None
    token_valid: bool | None
    token_expires_at: datetime | None
    data_access_expires_at: datetime | None
    token_checked_at: datetime | None
    removed_at: datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class MediaSchedule:
    """What the scheduler needs to know about one media object or story to plan its next poll."""

    media_id: MediaId
    ig_user_id: IgUserId
    media_type: str | None
    media_product_type: str | None
    posted_at: datetime | None
    expires_at: datetime | None  # stories only
    last_polled_at: datetime | None
    final_captured_at: datetime | None
    insights_status: InsightsStatus | None

"""Everything a collection pass needs from the settings, built in one place.

The runner, the scheduler rules and the jobs read their cadences, tiers, leads, page size and
limits from one frozen :class:`Plan`; a reload builds a new plan and the runner applies it to the
scheduler and to every account's job context at once, so no part keeps a stale copy.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collector import config

#: rows buffered by the writer before a transaction (1,000-5,000 per COPY is the sweet spot)
FLUSH_ROWS = 2000


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """Cadences, tiers, leads and limits of collection (defaults = the settings' defaults)."""

    profile: timedelta = timedelta(hours=1)
    account_insights: timedelta = timedelta(hours=6)
    demographics: timedelta = timedelta(days=1)
    media_discovery: timedelta = timedelta(hours=1)
    story_discovery: timedelta = timedelta(minutes=10)
    story_poll: timedelta = timedelta(hours=2)
    story_final_lead: timedelta = timedelta(minutes=25)
    story_lifetime: timedelta = timedelta(hours=24)
    token_check: timedelta = timedelta(days=1)
    token_expiry_warning: timedelta = timedelta(days=7)
    #: (max_age, every), youngest first, already cut at ``media_max_age``
    media_tiers: tuple[tuple[timedelta, timedelta], ...] = (
        (timedelta(days=2), timedelta(hours=1)),
        (timedelta(days=14), timedelta(hours=6)),
        (timedelta(days=90), timedelta(days=1)),
        (timedelta(days=730), timedelta(days=7)),
    )
    media_max_age: timedelta = timedelta(days=730)
    backfill_days: int = 90
    repoll_days: int = 3
    demographics_timeframe: str = "this_month"
    page_size: int = 50
    max_in_flight: int = 8
    per_account_in_flight: int = 1
    flush_rows: int = FLUSH_ROWS

    @classmethod
    def from_settings(cls, settings: config.Settings) -> Plan:
        s = settings.schedule
        return cls(
            profile=s.profile_every,
            account_insights=s.account_insights_every,
            demographics=s.demographics_every,
            media_discovery=s.media_discovery_every,
            story_discovery=s.story_discovery_every,
            story_poll=s.story_poll_every,
            story_final_lead=s.story_final_lead,
            story_lifetime=s.story_lifetime,
            token_check=s.token_check_every,
            token_expiry_warning=s.token_expiry_warning,
            media_tiers=cut_tiers(
                tuple((t.max_age, t.every) for t in s.media_tiers), s.media_insights_max_age
            ),
            media_max_age=s.media_insights_max_age,
            backfill_days=s.account_insights_backfill_days,
            repoll_days=s.account_insights_repoll_days,
            demographics_timeframe=s.demographics_timeframe,
            page_size=settings.graph.page_size,
            max_in_flight=settings.limits.max_in_flight,
            per_account_in_flight=settings.limits.per_account_in_flight,
        )


def cut_tiers(
    tiers: tuple[tuple[timedelta, timedelta], ...], max_age: timedelta
) -> tuple[tuple[timedelta, timedelta], ...]:
    """The tiers with no media polled at ``max_age`` or older (``media_insights_max_age``)."""
    kept: list[tuple[timedelta, timedelta]] = []
    for tier_age, every in tiers:
        kept.append((min(tier_age, max_age), every))
        if tier_age >= max_age:
            break
    return tuple(kept)

"""The rules of a story's life, in one place: when its final window opens, when it is over.

A story lives ``story_lifetime`` (24 h) from its ``timestamp``; its final snapshot is taken inside
``[expires_at - lead, expires_at)``. Once that window has closed the story is finished: nothing
is asked of the API for it any more and it leaves the runner's memory.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def final_start(expires_at: datetime, lead: timedelta) -> datetime:
    """When the final window of a story expiring at ``expires_at`` opens."""
    return expires_at - lead


def in_final_window(now: datetime, expires_at: datetime | None, lead: timedelta) -> bool:
    """``now`` falls inside ``[expires_at - lead, expires_at)``."""
    return expires_at is not None and final_start(expires_at, lead) <= now < expires_at


def past_final_start(now: datetime, expires_at: datetime | None, lead: timedelta) -> bool:
    """The final window has opened (and may have closed): a poll now is a final one or none."""
    return expires_at is not None and now >= final_start(expires_at, lead)


def expired(now: datetime, expires_at: datetime | None) -> bool:
    """The story is gone from the API (its final window has closed)."""
    return expires_at is not None and now >= expires_at

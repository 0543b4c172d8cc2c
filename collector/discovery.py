"""Accounts found from one token: ``[[sources]]`` listed, filtered and merged with ``[[accounts]]``.

A ``facebook`` source lists ``/me/accounts`` (cursor-paged) with each Page's
``instagram_business_account{id,username}`` and the Page's own token; an ``instagram`` source is
its one account (``GET /me`` on the instagram host). Every listed account is read once with the
token it would be collected with, so an account that token cannot read is skipped (``no
permission``) instead of parking later. Each skipped Page or account is logged once per process
with why. A source whose listing fails keeps what it found last, and is reported so its
accounts are not marked removed for a network blip.

In cluster mode only the member holding the sources lease lists (``Discoverer.permit``), and
it reads again only accounts new to the database (``known``): the others may be collected by
another member right now, and one account never has two callers at once.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from collector import errors, graph

if TYPE_CHECKING:
    from collector import config

PAGE_FIELDS = "id,name,access_token,instagram_business_account{id,username}"
ME_FIELDS = "user_id,username"

#: why a Page or account was not adopted
NO_INSTAGRAM_ACCOUNT = "no_instagram_account"
DENIED = "denied"
NOT_ALLOWED = "not_allowed"
NO_PERMISSION = "no_permission"
DUPLICATE = "configured"


@dataclasses.dataclass(frozen=True, slots=True)
class Found:
    """One account a source hands over, with the token it is to be collected with."""

    ig_user_id: str
    username: str
    source: str
    login: str
    token: str = dataclasses.field(repr=False)
    page_id: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Skipped:
    """One Page or account a source listed but the collector does not collect, and why."""

    source: str
    reason: str
    page_id: str | None = None
    ig_user_id: str | None = None
    username: str | None = None
    detail: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.page_id or self.ig_user_id or "", self.reason)


@dataclasses.dataclass
class Listing:
    """What one source listed at ``listed_at``."""

    source: str
    listed_at: datetime
    found: list[Found] = dataclasses.field(default_factory=list)
    skipped: list[Skipped] = dataclasses.field(default_factory=list)


def _matches(patterns: Iterable[str], ig_user_id: str, username: str) -> bool:
    for pattern in patterns:
        if pattern.isdigit():
            if pattern == ig_user_id:
                return True
        elif fnmatch.fnmatchcase(username.lower(), pattern.lower()):
            # Instagram usernames are case-insensitive (shown lower case)
            return True
    return False


def admission(source: config.Source, ig_user_id: str, username: str) -> str | None:
    """Why ``source``'s allow/deny lists keep this account out, or None when it is admitted."""
    if _matches(source.deny, ig_user_id, username):
        return DENIED
    if source.allow and not _matches(source.allow, ig_user_id, username):
        return NOT_ALLOWED
    return None


async def list_source(
    source: config.Source,
    client: graph.GraphClient,
    *,
    now: datetime,
    page_size: int = 50,
    known: Collection[str] | None = None,
) -> Listing:
    """List one source through ``client`` (the host of its login); raises ``GraphError``
    when the listing itself fails (the source token is bad, the API is down).

    ``known`` (cluster mode): accounts already adopted, not read again; the others are read
    outside any account's lease (no member collects an account that is not listed yet)."""
    token = source.token.get_secret_value()
    listing = Listing(source.name, now)
    if source.login == "instagram":
        resp = await client.get("me", {"fields": ME_FIELDS}, token=token, account=None)
        body = resp.body if isinstance(resp.body, dict) else {}
        ig_user_id = _id(body.get("user_id")) or _id(body.get("id"))
        username = body.get("username")
        if ig_user_id is None or not isinstance(username, str) or not username:
            raise errors.MalformedResponse("GET me: no user_id and username")
        _admit(listing, source, ig_user_id, username, token, None)
        return listing
    params: dict[str, graph.ParamValue] = {"fields": PAGE_FIELDS, "limit": page_size}
    candidates: list[tuple[str, str, str, str]] = []
    async for page in client.pages("me/accounts", params, token=token, account=None):
        for item in page:
            page_id = _id(item.get("id")) or "?"
            linked = item.get("instagram_business_account")
            ig_user_id = _id(linked.get("id")) if isinstance(linked, dict) else None
            if ig_user_id is None or not isinstance(linked, dict):
                name = item.get("name")
                listing.skipped.append(
                    Skipped(
                        source.name,
                        NO_INSTAGRAM_ACCOUNT,
                        page_id=page_id,
                        detail=name[:100] if isinstance(name, str) else "",
                    )
                )
                continue
            username = linked.get("username")
            page_token = item.get("access_token")
            # the Page token where the listing gives one (it carries the Page's role), else ours
            use = page_token if isinstance(page_token, str) and page_token else token
            candidates.append(
                (ig_user_id, username if isinstance(username, str) else "", use, page_id)
            )
    for ig_user_id, username, use, page_id in candidates:
        why = admission(source, ig_user_id, username)
        if why is not None:
            listing.skipped.append(
                Skipped(source.name, why, page_id=page_id, ig_user_id=ig_user_id, username=username)
            )
            continue
        if known is not None and ig_user_id in known:
            listing.found.append(
                Found(
                    ig_user_id,
                    username or ig_user_id,
                    source.name,
                    source.login,
                    use,
                    page_id,
                )
            )
            continue
        try:
            resp = await client.get(
                ig_user_id,
                {"fields": "id,username"},
                token=use,
                account=ig_user_id if known is None else None,
            )
        except errors.AccountError as exc:
            listing.skipped.append(
                Skipped(
                    source.name,
                    NO_PERMISSION,
                    page_id=page_id,
                    ig_user_id=ig_user_id,
                    username=username,
                    detail=f"{type(exc).__name__} (#{exc.code})",
                )
            )
            continue
        except errors.ObjectError as exc:
            # the listing names an account the token cannot see at all
            listing.skipped.append(
                Skipped(
                    source.name,
                    NO_PERMISSION,
                    page_id=page_id,
                    ig_user_id=ig_user_id,
                    username=username,
                    detail=f"{type(exc).__name__} (#{exc.code})",
                )
            )
            continue
        body = resp.body if isinstance(resp.body, dict) else {}
        read = body.get("username")
        listing.found.append(
            Found(
                ig_user_id,
                read if isinstance(read, str) and read else username or ig_user_id,
                source.name,
                source.login,
                use,
                page_id,
            )
        )
    return listing


def _admit(
    listing: Listing,
    source: config.Source,
    ig_user_id: str,
    username: str,
    token: str,
    page_id: str | None,
) -> None:
    why = admission(source, ig_user_id, username)
    if why is not None:
        listing.skipped.append(
            Skipped(source.name, why, page_id=page_id, ig_user_id=ig_user_id, username=username)
        )
    else:
        listing.found.append(Found(ig_user_id, username, source.name, source.login, token, page_id))


def _id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value if isinstance(value, str) and value.isdigit() and value.isascii() else None


class Discoverer:
    """Lists every source when it is due, logs each skip once, keeps the last good listings."""

    def __init__(
        self,
        clients: Mapping[str, graph.GraphClient],
        *,
        page_size: int = 50,
        log: Any = None,
    ) -> None:
        #: "facebook" and "instagram": the client of each host
        self.clients = clients
        self.page_size = page_size
        self.log = log or structlog.get_logger()
        self.listings: dict[str, Listing] = {}
        #: sources whose last listing failed (their accounts are kept, not marked removed)
        self.failed: dict[str, str] = {}
        self._logged: set[tuple[str, str, str]] = set()
        #: cluster mode: asked before each listing (this member still holds the sources lease)
        self.permit: Callable[[], bool] | None = None
        #: cluster mode: the accounts the database already has (see :func:`list_source`)
        self.known: Collection[str] | None = None

    def due(self, source: config.Source, now: datetime) -> bool:
        last = self.listings.get(source.name)
        return last is None or source.name in self.failed or now >= last.listed_at + source.every

    def next_due(self, sources: Sequence[config.Source]) -> datetime | None:
        """When the next source is due (None: a source has never been listed: now)."""
        times = []
        for source in sources:
            last = self.listings.get(source.name)
            if last is None:
                return None
            times.append(last.listed_at + source.every)
        return min(times, default=None)

    async def refresh(
        self, sources: Sequence[config.Source], now: datetime, *, force: bool = False
    ) -> bool:
        """List the sources that are due (all with ``force``); True when any listing changed."""
        changed = False
        names = {s.name for s in sources}
        for gone in [n for n in self.listings if n not in names]:
            del self.listings[gone]
            self.failed.pop(gone, None)
            changed = True
        for source in sources:
            if not force and not self.due(source, now):
                continue
            if self.permit is not None and not self.permit():
                break  # the sources lease is gone (or going): its next holder lists
            try:
                listing = await list_source(
                    source,
                    self.clients[source.login],
                    now=now,
                    page_size=self.page_size,
                    known=self.known,
                )
            except errors.GraphError as exc:
                self.failed[source.name] = exc.describe()[:300]
                self.log.warning(
                    "source_listing_failed",
                    source=source.name,
                    login=source.login,
                    error=type(exc).__name__,
                    code=exc.code,
                    message=str(exc)[:300],
                    kept=len(self.listings[source.name].found)
                    if source.name in self.listings
                    else 0,
                )
                continue
            self.failed.pop(source.name, None)
            before = self.listings.get(source.name)
            self.listings[source.name] = listing
            if before is None or {f.ig_user_id: f.token for f in before.found} != {
                f.ig_user_id: f.token for f in listing.found
            }:
                changed = True
            for skip in listing.skipped:
                self._log_skip(skip)
            self.log.info(
                "source_listed",
                source=source.name,
                login=source.login,
                accounts=len(listing.found),
                skipped=len(listing.skipped),
            )
        return changed

    def _log_skip(self, skip: Skipped) -> None:
        if skip.key in self._logged:
            return
        self._logged.add(skip.key)
        self.log.info(
            "account_skipped",
            source=skip.source,
            reason=skip.reason,
            page_id=skip.page_id,
            ig_user_id=skip.ig_user_id,
            username=skip.username,
            detail=skip.detail or None,
        )

    def accounts(
        self, configured: Iterable[str], listed: Mapping[str, Sequence[Found]] | None = None
    ) -> list[Found]:
        """Every discovered account to collect: configured ids win, the first source wins
        (``listed``: what each source found, when not this discoverer's own listings)."""
        taken = set(configured)
        out: list[Found] = []
        if listed is None:
            listed = {name: listing.found for name, listing in self.listings.items()}
        for name, founds in listed.items():
            for found in founds:
                if found.ig_user_id in taken:
                    self._log_skip(
                        Skipped(
                            name,
                            DUPLICATE,
                            page_id=found.page_id,
                            ig_user_id=found.ig_user_id,
                            username=found.username,
                            detail="configured in [[accounts]] or found by an earlier source",
                        )
                    )
                    continue
                taken.add(found.ig_user_id)
                out.append(found)
        return out

    def tokens(self) -> list[str]:
        """Every token a listing handed over (for the log redaction)."""
        return [f.token for listing in self.listings.values() for f in listing.found]

    def forget(self) -> None:
        """Drop every listing (cluster mode: the sources lease went to another member, whose
        listings reach this one through the database)."""
        self.listings.clear()
        self.failed.clear()


async def discover(
    settings: config.Settings,
    clients: Mapping[str, graph.GraphClient],
    *,
    now: datetime,
    log: Any = None,
) -> tuple[list[Found], Discoverer]:
    """List every source once (``run --once``, ``check``): the accounts to collect."""
    discoverer = Discoverer(clients, page_size=settings.graph.page_size, log=log)
    await discoverer.refresh(settings.sources, now, force=True)
    return discoverer.accounts(a.ig_user_id for a in settings.accounts), discoverer

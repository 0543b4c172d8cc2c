"""The roster: which accounts to collect, with which token, on which API.

It joins the configured ``[[accounts]]``, what the ``[[sources]]`` listed (``discovery``), and the
renewed Instagram Login tokens (``tokens``), and hands the runner its targets and the store its
account rows. The daemon and ``run --once`` call the same three entry points: :meth:`Roster.update`
(list due sources, renew due tokens), :meth:`Roster.targets` and :meth:`Roster.rows`.

Cluster mode (:meth:`Roster.join`): only the member holding the sources lease lists the
``[[sources]]`` and writes what they found to the account table (fenced by that lease's epoch;
``rows`` then carries every account, else the configured ones only). Every member reads the
discovered accounts back from the database (:meth:`Roster.load_shared`) and wants their leases
like any other. The Page tokens those accounts are collected with never enter the database:
a member that gains such an account without having listed it asks for that one Page's token
with the source's own token, which every member has from the configuration
(``GET /{page-id}?fields=access_token``, one cheap call per account gained), before the
account's first call (:meth:`Roster.prepare_held`). That keeps the database free of the one
kind of secret that cannot be renewed or revoked from here, and needs no key for Facebook Login
sources; the renewed Instagram Login tokens, which cannot be asked for again, travel sealed
instead (``tokens.TokenShare``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from collector import cluster, discovery, errors, jobs, log, models, tokens
from collector import store as store_mod

if TYPE_CHECKING:
    from collector import config

Overrides = dict[str, Sequence[str]] | None


@dataclasses.dataclass(frozen=True, slots=True)
class Update:
    """What one :meth:`Roster.update` changed."""

    #: the targets changed (a listing, or a renewed token): hand them to the runner again
    changed: bool
    #: accounts to park now, with why (a token that could not be renewed before its expiry)
    park: Mapping[str, str]


class Roster:
    """Configured and discovered accounts, their current tokens, their origin."""

    def __init__(
        self,
        settings: config.Settings,
        logins: Mapping[str, jobs.Login],
        *,
        logger: Any = None,
    ) -> None:
        self.logins = logins
        self.log = logger or structlog.get_logger()
        self.settings = settings
        self.discoverer = discovery.Discoverer(
            {name: login.client for name, login in logins.items()},
            page_size=settings.graph.page_size,
            log=self.log,
        )
        self.keeper = tokens.TokenKeeper(
            settings.state.directory / "tokens",
            refresh_before=settings.tokens.refresh_before,
            park_before=settings.tokens.park_before,
            logger=self.log,
        )
        #: parked by the keeper, until a renewal succeeds or the seed changes
        self.parked: dict[str, str] = {}
        #: cluster mode: this process's leases (None: one process, which lists and holds all)
        self.member: cluster.Membership | None = None
        #: cluster mode: the discovered accounts as the database has them
        self.shared: list[models.AccountRow] = []
        #: cluster mode: Page tokens asked for accounts gained unlisted, by account:
        #: (page id, token)
        self._page_tokens: dict[str, tuple[str, str]] = {}

    def join(self, member: cluster.Membership, share: tokens.TokenShare | None) -> None:
        """Cluster mode: list only while holding the sources lease, collect and renew only what
        ``member`` holds, share renewed tokens through ``share``."""
        self.member = member
        self.discoverer.permit = member.lists_sources
        self.keeper.may_renew = member.holds
        self.keeper.share = share

    def lists(self) -> bool:
        """This process lists the sources (one process, or the sources lease holder)."""
        return self.member is None or self.member.lists_sources()

    def stop_listing(self) -> None:
        """The sources lease is gone: the listings of its next holder come through the
        database from now on."""
        if self.discoverer.listings:
            self.log.info("sources_listing_handed_over", sources=len(self.discoverer.listings))
        self.discoverer.forget()

    async def load_shared(self, st: store_mod.Store) -> bool:
        """Read the discovered accounts back from the database; True when they changed."""
        rows = await st.discovered_accounts()
        changed = rows != self.shared
        self.shared = rows
        return changed

    def reconfigure(self, settings: config.Settings) -> None:
        """A reloaded configuration: new sources are listed at the next update."""
        self.settings = settings
        self.keeper.refresh_before = settings.tokens.refresh_before
        self.keeper.park_before = settings.tokens.park_before

    # ------------------------------------------------------------------ updates

    def next_due(self) -> datetime | None:
        """When a source listing or a token renewal next falls due (None: nothing to do)."""
        times = []
        if self.settings.sources and self.lists():
            listing = self.discoverer.next_due(self.settings.sources)
            # None: a source never listed (a new one after a reload): due now
            times.append(listing if listing is not None else datetime.min.replace(tzinfo=UTC))
        renewal = self.keeper.next_due()
        if renewal is not None:
            times.append(renewal)
        return min(times, default=None)

    async def update(self, now: datetime, *, force: bool = False) -> Update:
        """List the sources that are due (all with ``force``), then renew the due tokens."""
        changed = False
        if self.lists():
            if self.member is not None:
                configured = {a.ig_user_id for a in self.settings.accounts}
                self.discoverer.known = configured | {r.ig_user_id for r in self.shared}
            changed = await self.discoverer.refresh(self.settings.sources, now, force=force)
        log.add_secrets(self.discoverer.tokens())
        # a token is adopted (kept file or seed) before it can be renewed
        self.targets()
        await self.keeper.share_pending()
        park: dict[str, str] = {}
        client = self.logins.get("instagram")
        if client is not None:
            for outcome in await self.keeper.refresh_all_due(client.client, now):
                if outcome.renewed:
                    changed = True
                    if self.parked.pop(outcome.ig_user_id, None) is not None:
                        self.log.info("account_unparked", ig_user_id=outcome.ig_user_id)
                elif outcome.park_reason is not None:
                    park[outcome.ig_user_id] = outcome.park_reason
                    self.parked[outcome.ig_user_id] = outcome.park_reason
        return Update(changed=changed, park=park)

    # ------------------------------------------------------------------ what to collect

    def _discovered(self) -> list[discovery.Found]:
        configured = (a.ig_user_id for a in self.settings.accounts)
        if self.member is None:
            return self.discoverer.accounts(configured)
        # a source this member listed: its listing; any other: as the database has it
        listed: dict[str, Sequence[discovery.Found]] = {}
        own = self.discoverer.listings if self.lists() else {}
        for source in self.settings.sources:
            if source.name in own:
                listed[source.name] = own[source.name].found
            else:
                listed[source.name] = [
                    self._found_of(row, source) for row in self.shared if row.source == source.name
                ]
        return self.discoverer.accounts(configured, listed)

    def _found_of(self, row: models.AccountRow, source: config.Source) -> discovery.Found:
        """A discovered account as the database has it, with the token known here ("" until
        :meth:`prepare_held` asked for its Page's)."""
        token = ""
        if source.login == "instagram" or row.page_id is None or not row.page_id.isdigit():
            # the source's own account, or a Page listed without a token or id of its own
            token = source.token.get_secret_value()
        elif (kept := self._page_tokens.get(row.ig_user_id)) and kept[0] == row.page_id:
            token = kept[1]
        return discovery.Found(
            row.ig_user_id, row.name, source.name, source.login, token, row.page_id
        )

    def ids(self) -> list[str]:
        """Every enabled account to collect, configured and discovered (cluster mode: whether
        its token is known here yet or not: the leases to share)."""
        out = [a.ig_user_id for a in self.settings.enabled_accounts()]
        return out + [f.ig_user_id for f in self._discovered()]

    async def prepare_held(self, gained: Collection[str]) -> bool:
        """Cluster mode, before the first call for accounts held: the Page token of each held
        discovered account this member did not list, and, for each account just ``gained``,
        the newest renewed token another member sealed. True when a token changed."""
        member = self.member
        if member is None:
            return False
        held = member.accounts()
        sources = {s.name: s for s in self.settings.sources}
        changed = False
        for uid in [u for u in self._page_tokens if u not in held]:
            # asked again if it comes back: a Page token may have been replaced meanwhile
            del self._page_tokens[uid]
        for found in self._discovered():
            source = sources.get(found.source)
            if found.token or found.ig_user_id not in held or source is None:
                continue
            if found.page_id is None:
                continue
            token = await self._ask_page_token(found, source)
            if token is not None:
                self._page_tokens[found.ig_user_id] = (found.page_id, token)
                changed = True
        self.targets()  # adopt the gained Instagram Login accounts' seeds or kept tokens
        # every one taken in charge since the last look (gained now, or a look that failed)
        instagram = sorted({*gained, *self.keeper.unconfirmed()} & held)
        if instagram:
            try:
                changed |= bool(await self.keeper.take_over(instagram))
            except errors.StoreError as exc:
                self.log.warning(
                    "token_take_over_failed",
                    accounts=len(instagram),
                    message=str(exc)[:200],
                    action="the tokens held here are used",
                )
        return changed

    async def _ask_page_token(self, found: discovery.Found, source: config.Source) -> str | None:
        """One ``GET /{page-id}?fields=access_token`` with the source's token; None (logged,
        asked again at the next heartbeat) when it fails."""
        assert found.page_id is not None
        client = self.logins[found.login].client
        try:
            resp = await client.get(
                found.page_id,
                {"fields": "access_token"},
                token=source.token.get_secret_value(),
                account=found.ig_user_id,
            )
        except (errors.GraphError, errors.LeaseLost) as exc:
            self.log.warning(
                "page_token_failed",
                source=source.name,
                ig_user_id=found.ig_user_id,
                page_id=found.page_id,
                error=type(exc).__name__,
                code=getattr(exc, "code", None),
                action="asked again at the next heartbeat",
            )
            return None
        body = resp.body if isinstance(resp.body, dict) else {}
        token = body.get("access_token")
        if not isinstance(token, str) or not token or len(token) > 4096:
            # as the listing does for a Page without a token of its own: the source's
            token = source.token.get_secret_value()
        log.add_secrets([token])
        self.log.info(
            "page_token_fetched",
            source=source.name,
            ig_user_id=found.ig_user_id,
            page_id=found.page_id,
        )
        return token

    def targets(self) -> list[tuple[jobs.Target, Overrides]]:
        """Every enabled account to collect, with its current token and metric overrides
        (cluster mode: those whose lease this process holds and whose token it knows)."""
        held = self.member.accounts() if self.member is not None else None
        out: list[tuple[jobs.Target, Overrides]] = []
        for account in self.settings.enabled_accounts():
            if held is not None and account.ig_user_id not in held:
                continue
            out.append(
                (
                    self._target(
                        account.ig_user_id,
                        account.name,
                        account.token.get_secret_value(),
                        account.login,
                        None,
                    ),
                    {str(k): list(v) for k, v in account.metrics.items()}
                    if account.metrics
                    else None,
                )
            )
        for found in self._discovered():
            if held is not None and (found.ig_user_id not in held or not found.token):
                continue
            out.append(
                (
                    self._target(
                        found.ig_user_id, found.username, found.token, found.login, found.source
                    ),
                    None,
                )
            )
        self.keeper.forget({t.ig_user_id for t, _ in out if t.login == "instagram"})
        return out

    def _target(
        self, ig_user_id: str, name: str, token: str, login: str, source: str | None
    ) -> jobs.Target:
        expires = None
        if login == "instagram":
            token = self.keeper.adopt(ig_user_id, name, token)
            expires = self.keeper.expires_at(ig_user_id)
        return jobs.Target(
            ig_user_id=models.IgUserId(ig_user_id),
            name=name,
            token=token,
            login=login,
            source=source,
            token_expires_at=expires,
        )

    def rows(self, *, listing: bool = True) -> list[models.AccountRow]:
        """The account table as it should be: configured (enabled or not) and discovered
        (cluster mode: discovered only as listed by this member, the sources lease holder;
        ``listing=False``: as if it were not)."""
        rows = [
            models.AccountRow(
                models.IgUserId(a.ig_user_id), a.name, a.enabled, login=a.login, source=None
            )
            for a in self.settings.accounts
        ]
        if self.member is not None and not (listing and self.lists()):
            return rows
        rows += [
            models.AccountRow(
                models.IgUserId(f.ig_user_id),
                f.username,
                True,
                login=f.login,
                source=f.source,
                page_id=f.page_id,
            )
            for f in self._discovered()
        ]
        return rows

    @property
    def keep_sources(self) -> list[str]:
        """Sources whose accounts are not marked removed: those whose last listing failed
        (cluster mode, not listing: every source; its lease holder decides)."""
        if self.member is not None and not self.lists():
            return self.all_sources
        if self.member is not None:
            # a source not listed yet since this member took the lease: as the database has it
            unlisted = {s.name for s in self.settings.sources} - set(self.discoverer.listings)
            return sorted(set(self.discoverer.failed) | unlisted)
        return sorted(self.discoverer.failed)

    @property
    def all_sources(self) -> list[str]:
        return sorted(s.name for s in self.settings.sources)

    def sync_fence(self) -> tuple[str, int] | None:
        """Cluster mode, listing: (member, sources lease epoch) the account rows are fenced by."""
        if self.member is None or not self.lists():
            return None
        epoch = self.member.sources_epoch()
        return None if epoch is None else (self.member.name, epoch)

    def origin(self, ig_user_id: str) -> str:
        """How an account was found: "configured" or its source's name."""
        if any(a.ig_user_id == ig_user_id for a in self.settings.accounts):
            return "configured"
        for found in self._discovered():
            if found.ig_user_id == ig_user_id:
                return found.source
        return "unknown"

    def secrets(self) -> list[str]:
        """Tokens learned while running (Page tokens, renewed tokens), for the redaction."""
        return [
            *self.discoverer.tokens(),
            *self.keeper.tokens(),
            *(token for _, token in self._page_tokens.values()),
        ]


def park_error(reason: str) -> errors.TokenInvalid:
    """The error an account parked by the keeper carries (its reason is the message)."""
    return errors.TokenInvalid(reason)

"""The roster: which accounts to collect, with which token, on which API.

It joins the configured ``[[accounts]]``, what the ``[[sources]]`` listed (``discovery``), and the
renewed Instagram Login tokens (``tokens``), and hands the runner its targets and the store its
account rows. The daemon and ``run --once`` call the same three entry points: :meth:`Roster.update`
(list due sources, renew due tokens), :meth:`Roster.targets` and :meth:`Roster.rows`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from collector import discovery, errors, jobs, log, models, tokens

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

    def reconfigure(self, settings: config.Settings) -> None:
        """A reloaded configuration: new sources are listed at the next update."""
        self.settings = settings
        self.keeper.refresh_before = settings.tokens.refresh_before
        self.keeper.park_before = settings.tokens.park_before

    # ------------------------------------------------------------------ updates

    def next_due(self) -> datetime | None:
        """When a source listing or a token renewal next falls due (None: nothing to do)."""
        times = []
        if self.settings.sources:
            listing = self.discoverer.next_due(self.settings.sources)
            # None: a source never listed (a new one after a reload): due now
            times.append(listing if listing is not None else datetime.min.replace(tzinfo=UTC))
        renewal = self.keeper.next_due()
        if renewal is not None:
            times.append(renewal)
        return min(times, default=None)

    async def update(self, now: datetime, *, force: bool = False) -> Update:
        """List the sources that are due (all with ``force``), then renew the due tokens."""
        changed = await self.discoverer.refresh(self.settings.sources, now, force=force)
        log.add_secrets(self.discoverer.tokens())
        # a token is adopted (kept file or seed) before it can be renewed
        self.targets()
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
        return self.discoverer.accounts(a.ig_user_id for a in self.settings.accounts)

    def targets(self) -> list[tuple[jobs.Target, Overrides]]:
        """Every enabled account to collect, with its current token and metric overrides."""
        out: list[tuple[jobs.Target, Overrides]] = []
        for account in self.settings.enabled_accounts():
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

    def rows(self) -> list[models.AccountRow]:
        """The account table as it should be: configured (enabled or not) and discovered."""
        rows = [
            models.AccountRow(
                models.IgUserId(a.ig_user_id), a.name, a.enabled, login=a.login, source=None
            )
            for a in self.settings.accounts
        ]
        rows += [
            models.AccountRow(
                models.IgUserId(f.ig_user_id), f.username, True, login=f.login, source=f.source
            )
            for f in self._discovered()
        ]
        return rows

    @property
    def keep_sources(self) -> list[str]:
        """Sources whose last listing failed: their accounts are not marked removed."""
        return sorted(self.discoverer.failed)

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
        return [*self.discoverer.tokens(), *self.keeper.tokens()]


def park_error(reason: str) -> errors.TokenInvalid:
    """The error an account parked by the keeper carries (its reason is the message)."""
    return errors.TokenInvalid(reason)

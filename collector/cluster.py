"""Several collector processes share the accounts through leases in PostgreSQL (``[cluster]``).

Each process (a *member*) renews the leases it holds by heartbeat, claims free or expired ones
up to its fair share (accounts / live members, rounded up; the accounts with the soonest story
waiting for its final snapshot first), and gives back what it holds beyond that share, so a
member that joins gets accounts within a few heartbeats and the leases of a member that died
are taken over once its TTL ran out.

Never two at once: a lease is valid for this process only until ``renewal start + TTL - margin``
on its own monotonic clock, which keeps running while the process is frozen (SIGSTOP, a long
pause, a VM migration). Past that instant the Graph client refuses to call for the account
(:meth:`Membership.permit`) and the runner hands no row of it to the writer; the lease row may
have been claimed by another member meanwhile, under a higher epoch, and the account
bookkeeping this process still had in flight is refused at write time (``store.fence_holder``).

The ``[[sources]]`` are listed by one member at a time: the one holding the ``sources`` lease
(claimed, renewed, expired and taken over like an account's, outside the fair share). Only it
lists and writes the discovered accounts (fenced by that lease's epoch); the others read them
from the account table and collect the ones whose leases they hold (``roster``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

import structlog

from collector import errors
from collector import store as store_mod

PREFIX = "account:"
#: the resource of the discovery sources (one member at a time runs them)
SOURCES = "sources"


def resource(ig_user_id: str) -> str:
    return f"{PREFIX}{ig_user_id}"


def account_of(name: str) -> str | None:
    return name.removeprefix(PREFIX) if name.startswith(PREFIX) else None


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """What one heartbeat changed for this member (account ids)."""

    gained: dict[str, int]
    lost: set[str]
    #: held beyond the fair share: the runner stops them, then :meth:`Membership.release`
    surplus: set[str]
    members: int
    #: the sources lease: claimed by this heartbeat, or lost since the last one
    sources_gained: bool = False
    sources_lost: bool = False


class Membership:
    """This process's leases and the gate every call for an account passes."""

    def __init__(
        self,
        store: store_mod.Store,
        *,
        name: str,
        ttl: timedelta,
        heartbeat: timedelta,
        monotonic: Callable[[], float] = time.monotonic,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.ttl = ttl
        self.heartbeat = heartbeat
        self._monotonic = monotonic
        self.log: structlog.stdlib.BoundLogger = log or structlog.get_logger()
        #: resource -> epoch of every lease held
        self.held: dict[str, int] = {}
        self.members = 1
        #: the live members' names at the last heartbeat
        self.live: list[str] = [name]
        self._valid_until = 0.0
        self._ensured: frozenset[str] = frozenset()
        self._margin = min(ttl.total_seconds() / 10, 2.0)

    # ------------------------------------------------------------------ the gate

    def valid(self) -> bool:
        """The leases renewed last are surely still ours (no other member can have them)."""
        return self._monotonic() < self._valid_until

    def holds(self, ig_user_id: str) -> bool:
        return resource(ig_user_id) in self.held and self.valid()

    def epoch(self, ig_user_id: str) -> int | None:
        return self.held.get(resource(ig_user_id))

    def permit(self, account: str | None) -> None:
        """The Graph client asks before every call for an account."""
        if account is not None and not self.holds(account):
            raise errors.LeaseLost(f"this process no longer holds account {account}")

    def lists_sources(self) -> bool:
        """This member holds the sources lease: it alone lists the ``[[sources]]``."""
        return SOURCES in self.held and self.valid()

    def sources_epoch(self) -> int | None:
        return self.held.get(SOURCES)

    def leads(self) -> bool:
        """This member does the cluster's housekeeping (the first live name)."""
        return min(self.live, default=self.name) == self.name

    def accounts(self) -> set[str]:
        return {uid for r in self.held if (uid := account_of(r)) is not None}

    # ------------------------------------------------------------------ heartbeat

    async def beat(self, wanted: Sequence[str], *, sources: bool = False) -> Change:
        """Renew, balance, claim (the sources lease too, with ``sources``: the configuration
        has ``[[sources]]``). ``DatabaseUnavailable`` when the database does not answer: the
        leases then stay valid only until their margin runs out."""
        started = self._monotonic()
        resources = sorted({resource(uid) for uid in wanted})
        wanted_set = frozenset(resources + ([SOURCES] if sources else []))
        if not wanted_set <= self._ensured:
            await self.store.lease_ensure(sorted(wanted_set))
            self._ensured = wanted_set
        live = await self.store.cluster_heartbeat(self.name, len(self.held), self.ttl)
        self.members = max(1, len(live))
        self.live = live
        before = dict(self.held)
        renewed = await self.store.lease_renew(self.name, before, self.ttl)
        lost = {r for r in before if r not in renewed}
        self.held = {r: e for r, e in renewed.items() if r in wanted_set}
        unwanted = [r for r in renewed if r not in wanted_set]
        if unwanted:
            await self.store.lease_release(self.name, unwanted)
        share = math.ceil(len(resources) / self.members) if resources else 0
        gained: dict[str, int] = {}
        held_accounts = [r for r in self.held if r != SOURCES]
        if len(held_accounts) < share:
            candidates = [r for r in resources if r not in self.held]
            gained = await self.store.lease_claim(
                self.name, candidates, share - len(held_accounts), self.ttl
            )
            self.held.update(gained)
        if sources and SOURCES not in self.held:
            # outside the fair share: whoever finds it free (its holder stopped or died)
            took = await self.store.lease_claim(self.name, [SOURCES], 1, self.ttl)
            self.held.update(took)
            gained.update(took)
        # every lease held now was renewed or claimed after ``started``: none can expire in
        # the database before started + TTL
        self._valid_until = started + self.ttl.total_seconds() - self._margin
        surplus: set[str] = set()
        held_accounts = [r for r in self.held if r != SOURCES]
        if len(held_accounts) > share:
            # the leases claimed last are the least urgent to keep
            surplus = set(
                sorted(held_accounts, key=lambda r: self.held[r])[: len(held_accounts) - share]
            )
        change = Change(
            gained={uid: e for r, e in gained.items() if (uid := account_of(r)) is not None},
            lost={uid for r in lost if (uid := account_of(r)) is not None},
            surplus={uid for r in surplus if (uid := account_of(r)) is not None},
            members=self.members,
            sources_gained=SOURCES in gained,
            sources_lost=SOURCES in lost or (SOURCES in before and SOURCES not in self.held),
        )
        if change.sources_gained or change.sources_lost:
            self.log.info(
                "sources_lease_changed",
                member=self.name,
                holds=SOURCES in self.held,
                epoch=self.held.get(SOURCES),
            )
        if change.gained or change.lost or change.surplus:
            self.log.info(
                "leases_changed",
                member=self.name,
                members=self.members,
                share=share,
                held=len(self.held),
                gained=len(change.gained),
                lost=len(change.lost),
                surplus=len(change.surplus),
            )
        return change

    def lapse(self) -> set[str]:
        """The database did not answer past the margin: every lease counts as lost."""
        lost = self.accounts()
        if lost:
            self.log.warning(
                "leases_lapsed",
                member=self.name,
                accounts=len(lost),
                reason="no renewal within the lease TTL: another member may hold them now",
            )
        self.held.clear()
        return lost

    async def release(self, accounts: Sequence[str]) -> None:
        """Give leases back (their accounts are stopped in this process first)."""
        names = [resource(uid) for uid in accounts if resource(uid) in self.held]
        for name in names:
            del self.held[name]
        await self.store.lease_release(self.name, names)

    async def leave(self) -> None:
        """A clean stop: every lease back at once, and out of the member list."""
        names = list(self.held)
        self.held.clear()
        self._valid_until = 0.0
        await self.store.lease_release(self.name, names)
        await self.store.cluster_leave(self.name)

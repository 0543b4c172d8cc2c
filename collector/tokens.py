"""Instagram Login tokens that renew themselves, kept in the state directory.

An Instagram Login long-lived token lives 60 days and can be refreshed once it is 24 hours old
(``GET graph.instagram.com/refresh_access_token?grant_type=ig_refresh_token``); the answer is a
new 60-day token. The configured token is only the seed: a renewed token is written to
``<state>/tokens/<ig_user_id>.json`` (mode 0600, written atomically) and used from then on, also
after a restart. The file records the seed's SHA-256 fingerprint, never the seed itself: when
the operator puts a new token in the configuration, the fingerprints differ and the new seed
wins over the kept token. A refresh that fails is retried with capped exponential backoff; once
the token is within ``park_before`` of its expiry the caller is told to park the account, with
the reason, before the token dies.

Cluster mode (:class:`TokenShare`): only the account's lease holder renews (``may_renew``: a
member whose lease validity ran out while it was frozen starts no renewal), and the renewed
token also goes to the ``sealed_token`` table, sealed with AES-256-GCM (``vault``) under the
``[cluster] secret_file`` key, written only while the lease is held at its epoch. A member that
takes an account over opens the newest sealed token grown from the seed it is configured with,
before its first call (:meth:`TokenKeeper.take_over`), so it neither starts from a token Meta
has replaced nor renews again. The state file stays as each member's own copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from collector import errors, graph, log, models, vault
from collector import store as store_mod

#: first retry after a failed refresh, doubled each time up to RETRY_MAX
RETRY_BASE = timedelta(minutes=10)
RETRY_MAX = timedelta(hours=6)
#: largest token file read (a real one is a few hundred bytes)
MAX_FILE = 64 * 1024


def fingerprint(token: str) -> str:
    """SHA-256 of a token: recognises the seed without keeping it."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclasses.dataclass
class Kept:
    """One account's token as the keeper holds it."""

    ig_user_id: str
    name: str
    seed_fingerprint: str
    token: str = dataclasses.field(repr=False)
    #: None while only the seed is known (its expiry is not reported by Instagram Login)
    expires_at: datetime | None = None
    refreshed_at: datetime | None = None
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    #: renewed, but not yet in the database (cluster mode; it was away)
    unshared: bool = False
    #: cluster mode: the database was asked for a newer sealed token since this member took
    #: the account (until then it is neither used for a renewal nor renewed)
    confirmed: bool = True


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one refresh attempt did."""

    ig_user_id: str
    renewed: bool
    #: the account must stop: its token expires within park_before and was not renewed
    park_reason: str | None = None
    error: str | None = None


class TokenShare:
    """Renewed tokens handed between cluster members through the database, sealed."""

    def __init__(
        self,
        store: store_mod.Store,
        sealer: vault.Vault,
        *,
        holder: str,
        epoch_of: Callable[[str], int | None],
    ) -> None:
        self.store = store
        self.vault = sealer
        self.holder = holder
        self.epoch_of = epoch_of

    async def put(self, held: Kept) -> bool:
        """Seal and keep a renewed token; False when this member no longer holds the account
        (nothing written). Raises ``StoreError``."""
        epoch = self.epoch_of(held.ig_user_id)
        if epoch is None or held.expires_at is None or held.refreshed_at is None:
            return False
        sealed = models.SealedToken(
            held.ig_user_id,
            held.seed_fingerprint,
            self.vault.seal(
                held.token, ig_user_id=held.ig_user_id, seed_sha256=held.seed_fingerprint
            ),
            held.expires_at,
            held.refreshed_at,
        )
        return await self.store.put_sealed_token(sealed, holder=self.holder, epoch=epoch)

    def open(self, row: models.SealedToken) -> str:
        """The token a row seals (``SealBroken`` when it does not open)."""
        return self.vault.open(row.sealed, ig_user_id=row.ig_user_id, seed_sha256=row.seed_sha256)


class TokenKeeper:
    """Holds, renews and keeps the Instagram Login tokens of the accounts given to ``adopt``."""

    def __init__(
        self,
        directory: Path,
        *,
        refresh_before: timedelta,
        park_before: timedelta,
        logger: Any = None,
    ) -> None:
        self.directory = directory
        self.refresh_before = refresh_before
        self.park_before = park_before
        self.log = logger or structlog.get_logger()
        self._kept: dict[str, Kept] = {}
        #: cluster mode: renewed tokens are shared sealed through the database
        self.share: TokenShare | None = None
        #: cluster mode: this member holds the account's lease now (None: one process)
        self.may_renew: Callable[[str], bool] | None = None

    # ------------------------------------------------------------------ accounts

    def _path(self, ig_user_id: str) -> Path:
        return self.directory / f"{ig_user_id}.json"

    def adopt(self, ig_user_id: str, name: str, seed: str) -> str:
        """Take charge of an account's token: the kept one if it grew from this seed, else the
        seed (a new account, or a token the operator replaced). Returns the token to use."""
        print_ = fingerprint(seed)
        held = self._kept.get(ig_user_id)
        if held is not None and held.seed_fingerprint == print_:
            held.name = name
            return held.token
        kept = self._load(ig_user_id)
        if kept is not None and kept.seed_fingerprint == print_:
            kept.name = name
            kept.confirmed = self.share is None
            self._kept[ig_user_id] = kept
            self.log.info(
                "token_kept_used",
                account=name,
                ig_user_id=ig_user_id,
                expires_at=kept.expires_at.isoformat() if kept.expires_at else None,
            )
            return kept.token
        if kept is not None:
            self.log.info(
                "token_seed_changed",
                account=name,
                ig_user_id=ig_user_id,
                reason="the configured token changed: it replaces the kept one",
            )
            with contextlib.suppress(FileNotFoundError):
                self._path(ig_user_id).unlink()
        self._kept[ig_user_id] = Kept(ig_user_id, name, print_, seed, confirmed=self.share is None)
        return seed

    def forget(self, keep: set[str]) -> None:
        """Stop holding accounts no longer collected (their files stay, for a comeback)."""
        for uid in [u for u in self._kept if u not in keep]:
            del self._kept[uid]

    def current(self, ig_user_id: str) -> str:
        return self._kept[ig_user_id].token

    def expires_at(self, ig_user_id: str) -> datetime | None:
        held = self._kept.get(ig_user_id)
        return held.expires_at if held is not None else None

    def tokens(self) -> list[str]:
        """Every token held (for the log redaction)."""
        return [k.token for k in self._kept.values()]

    def accounts(self) -> list[Kept]:
        return list(self._kept.values())

    # ------------------------------------------------------------------ renewal

    def refresh_due(self, now: datetime) -> list[str]:
        """Accounts whose token should be renewed now: inside the refresh window (or of unknown
        expiry: a seed), and not waiting for a retry."""
        due = []
        for uid, held in self._kept.items():
            if not held.confirmed or (self.may_renew is not None and not self.may_renew(uid)):
                continue
            if held.retry_at is not None and now < held.retry_at:
                continue
            if held.expires_at is None or now >= held.expires_at - self.refresh_before:
                due.append(uid)
        return due

    def next_due(self) -> datetime | None:
        """When the next refresh falls due (None: nothing held)."""
        times = []
        for uid, held in self._kept.items():
            if not held.confirmed or (self.may_renew is not None and not self.may_renew(uid)):
                continue  # its holder renews it (this member is told when it gains it)
            if held.retry_at is not None:
                times.append(held.retry_at)
            elif held.expires_at is None:
                return datetime.min.replace(tzinfo=UTC)
            else:
                times.append(held.expires_at - self.refresh_before)
        return min(times, default=None)

    async def refresh(self, ig_user_id: str, client: graph.GraphClient, now: datetime) -> Outcome:
        """One ``refresh_access_token`` call for the account, through the instagram host."""
        held = self._kept[ig_user_id]
        try:
            resp = await client.get(
                "refresh_access_token",
                {"grant_type": "ig_refresh_token"},
                token=held.token,
                account=ig_user_id,
                versioned=False,
            )
            token, lifetime = _parse(resp.body)
        except errors.GraphError as exc:
            return self._failed(held, now, exc)
        except errors.LeaseLost:
            # cluster mode: the lease ran out between the check and the call; its next holder
            # renews it
            return Outcome(ig_user_id, renewed=False)
        held.token = token
        held.expires_at = now + lifetime
        held.refreshed_at = now
        held.failures = 0
        held.retry_at = None
        held.last_error = None
        log.add_secrets([token])
        self._write(held)
        self.log.info(
            "token_refreshed",
            account=held.name,
            ig_user_id=ig_user_id,
            expires_at=held.expires_at.isoformat(),
        )
        held.unshared = self.share is not None
        await self._share(held)
        return Outcome(ig_user_id, renewed=True)

    async def _share(self, held: Kept) -> None:
        """Hand a renewed token to the next holder (cluster mode), sealed in the database."""
        if self.share is None or not held.unshared:
            return
        try:
            kept = await self.share.put(held)
        except errors.StoreError as exc:
            self.log.warning(
                "token_share_deferred",
                account=held.name,
                ig_user_id=held.ig_user_id,
                message=str(exc)[:200],
                action="written to the database at the next update",
            )
            return
        held.unshared = False
        if not kept:
            # the lease moved on while the renewal ran: the new holder's token wins
            self.log.warning(
                "token_share_refused",
                account=held.name,
                ig_user_id=held.ig_user_id,
                reason="this process no longer holds the account's lease",
            )

    async def share_pending(self) -> None:
        """Write the renewed tokens the database missed (it was away) while still held."""
        for held in list(self._kept.values()):
            if held.unshared and (self.may_renew is None or self.may_renew(held.ig_user_id)):
                await self._share(held)

    def unconfirmed(self) -> list[str]:
        """Accounts taken in charge whose sealed token was not looked for yet (cluster mode)."""
        return [uid for uid, held in self._kept.items() if not held.confirmed]

    async def take_over(self, ig_user_ids: Sequence[str]) -> list[str]:
        """Before the first call for accounts this member just gained: the newest sealed token
        grown from the configured seed replaces an older one held here. Returns the accounts
        whose token changed. Raises ``StoreError`` (the accounts stay unconfirmed)."""
        if self.share is None:
            return []
        wanted = [uid for uid in ig_user_ids if uid in self._kept]
        changed: list[str] = []
        rows = await self.share.store.sealed_tokens(wanted)
        for uid in wanted:
            self._kept[uid].confirmed = True
        for row in rows:
            held = self._kept.get(row.ig_user_id)
            if held is None or row.seed_sha256 != held.seed_fingerprint:
                continue  # renewed from a seed the configuration no longer names
            if held.expires_at is not None and held.expires_at >= row.expires_at:
                continue
            try:
                token = self.share.open(row)
            except errors.SealBroken as exc:
                self.log.warning(
                    "sealed_token_unreadable",
                    account=held.name,
                    ig_user_id=row.ig_user_id,
                    reason=str(exc),
                    action="the token held here is used",
                )
                continue
            log.add_secrets([token])
            held.token = token
            held.expires_at = row.expires_at
            held.refreshed_at = row.refreshed_at
            held.failures = 0
            held.retry_at = None
            held.unshared = False
            self._write(held)
            changed.append(row.ig_user_id)
            self.log.info(
                "token_taken_over",
                account=held.name,
                ig_user_id=row.ig_user_id,
                expires_at=row.expires_at.isoformat(),
            )
        return changed

    def _failed(self, held: Kept, now: datetime, exc: errors.GraphError) -> Outcome:
        held.failures += 1
        delay = min(RETRY_MAX, RETRY_BASE * 2 ** (held.failures - 1))
        held.retry_at = now + delay
        held.last_error = exc.describe()[:300]
        park = None
        if held.expires_at is not None and held.expires_at - now <= self.park_before:
            park = (
                f"the Instagram Login token expires at {held.expires_at.isoformat()} and could "
                f"not be renewed ({held.failures} attempts): {held.last_error}; put a new token "
                "in the configuration"
            )
        self.log.warning(
            "token_refresh_failed",
            account=held.name,
            ig_user_id=held.ig_user_id,
            error=type(exc).__name__,
            code=exc.code,
            message=str(exc)[:300],
            attempts=held.failures,
            retry_at=held.retry_at.isoformat(),
            expires_at=held.expires_at.isoformat() if held.expires_at else None,
            parks=park is not None,
        )
        return Outcome(held.ig_user_id, renewed=False, park_reason=park, error=held.last_error)

    async def refresh_all_due(self, client: graph.GraphClient, now: datetime) -> list[Outcome]:
        return [await self.refresh(uid, client, now) for uid in self.refresh_due(now)]

    # ------------------------------------------------------------------ the files

    def _write(self, held: Kept) -> None:
        """Atomically replace the account's token file (0600 from its creation on)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        path = self._path(held.ig_user_id)
        data = {
            "ig_user_id": held.ig_user_id,
            "seed_sha256": held.seed_fingerprint,
            "token": held.token,
            "expires_at": held.expires_at.isoformat() if held.expires_at else None,
            "refreshed_at": held.refreshed_at.isoformat() if held.refreshed_at else None,
        }
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _load(self, ig_user_id: str) -> Kept | None:
        """The kept token of an account, or None (no file, or one we cannot trust: logged)."""
        path = self._path(ig_user_id)
        try:
            raw = path.read_bytes()[: MAX_FILE + 1]
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.log.warning("token_file_unreadable", path=str(path), error=exc.strerror)
            return None
        try:
            return _kept_from(ig_user_id, raw)
        except (ValueError, UnicodeDecodeError) as exc:
            # never the content in the message: it may hold a token
            self.log.warning(
                "token_file_ignored", path=str(path), reason=str(exc)[:100], fix="the seed is used"
            )
            return None


def _kept_from(ig_user_id: str, raw: bytes) -> Kept:
    """A token file's content, checked (ValueError says what is wrong, never the content)."""
    if len(raw) > MAX_FILE:
        raise ValueError("too large")
    data = json.loads(raw)
    if not isinstance(data, dict) or data.get("ig_user_id") != ig_user_id:
        raise ValueError("not this account's token file")
    token, seed = data.get("token"), data.get("seed_sha256")
    if not isinstance(token, str) or not token or not isinstance(seed, str):
        raise ValueError("no token or seed fingerprint")
    return Kept(
        ig_user_id,
        ig_user_id,
        seed,
        token,
        expires_at=_time(data.get("expires_at")),
        refreshed_at=_time(data.get("refreshed_at")),
    )


def _parse(body: Any) -> tuple[str, timedelta]:
    if not isinstance(body, dict):
        raise errors.MalformedResponse("GET refresh_access_token: not a JSON object")
    token, expires_in = body.get("access_token"), body.get("expires_in")
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise errors.MalformedResponse("GET refresh_access_token: no access_token")
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 0 < expires_in <= 10 * 365 * 86400
    ):
        raise errors.MalformedResponse("GET refresh_access_token: expires_in is not a lifetime")
    return token, timedelta(seconds=expires_in)


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None

"""``python -m collector check``: config, database, schema and tokens, as a readable table."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from collector import clock as clock_mod
from collector import errors, graph, jobs, metrics_catalog, parse, roster, wiring
from collector import log as log_mod
from collector import store as store_mod

if TYPE_CHECKING:
    from collector import config

REQUIRED_SCOPES = ("instagram_basic", "instagram_manage_insights", "pages_read_engagement")


@dataclasses.dataclass(frozen=True, slots=True)
class Line:
    what: str
    ok: bool
    detail: str


def _table(lines: list[Line]) -> str:
    width = max(len(line.what) for line in lines)
    return "\n".join(
        f"{'ok  ' if line.ok else 'FAIL'}  {line.what.ljust(width)}  {line.detail}"
        for line in lines
    )


async def _database(settings: config.Settings) -> list[Line]:
    try:
        dsn = wiring.require_dsn(settings)
    except errors.ConfigError as exc:
        return [Line("database", False, str(exc))]
    where = store_mod.describe_dsn(dsn)
    try:
        st = await wiring.open_store(settings)
    except errors.StoreError as exc:
        return [Line("database", False, f"{where}: {exc}")]
    try:
        lines = [Line("database", True, f"connected to {where}")]
        try:
            await st.check_schema()
        except errors.SchemaError as exc:
            lines.append(Line("schema", False, str(exc)))
        else:
            lines.append(Line("schema", True, "up to date"))
    finally:
        await st.close()
    return lines


#: what each login needs to collect an account (Instagram Login reports no scopes to us)
NEEDED_SCOPES = {
    "facebook": REQUIRED_SCOPES,
    "instagram": ("instagram_business_basic", "instagram_business_manage_insights"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class AccountLine:
    """One row of the account table: can this account be collected, and why not."""

    name: str
    found: str
    login: str
    token: str
    reads: str
    scopes: str
    expiry: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


HEADER = ("", "account", "found", "login", "token", "reads account", "scopes", "expiry")


def _account_table(rows: list[AccountLine]) -> str:
    cells = [HEADER] + [
        (
            "ok  " if r.ok else "FAIL",
            r.name,
            r.found,
            r.login,
            r.token,
            r.reads,
            r.scopes,
            r.expiry + ("" if r.ok else f"  <- {'; '.join(r.problems)}"),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in cells
    ).rstrip()


async def _reads(client: graph.GraphClient, target: jobs.Target) -> tuple[str, str | None, bool]:
    """Whether the token reads the account it is for: (column text, problem, token refused)."""
    try:
        path = "me" if target.login == "instagram" else target.ig_user_id
        resp = await client.get(
            path, {"fields": "id,username"}, token=target.token, account=target.ig_user_id
        )
    except errors.AccountUnreadable as exc:
        return "no", str(exc)[:300], False
    except errors.GraphError as exc:
        refused = isinstance(exc, errors.TokenInvalid)
        return "no", f"cannot read the account: {exc.describe()[:150]}", refused
    body = resp.body if isinstance(resp.body, dict) else {}
    got = parse.object_id(body.get("id"))
    username = parse.text(body.get("username"), 200)
    if target.login != "instagram" and got != target.ig_user_id:
        return (
            "no",
            f"ig_user_id is {target.ig_user_id} but the token reads account "
            f"{got or 'without an id'}{f' (@{username})' if username else ''}: fix "
            "ig_user_id or give this account's token",
            False,
        )
    return (f"yes (@{username})" if username else "yes"), None, False


async def _account(
    client: graph.GraphClient,
    target: jobs.Target,
    found: str,
    now_clock: clock_mod.Clock,
    warn: timedelta,
) -> AccountLine:
    problems: list[str] = []
    validity = "valid"
    scopes = "-"
    expires_at = None
    data_access = None
    if target.login == "instagram":
        # no debug_token on graph.instagram.com: /me answering as the account is the check
        scopes = "not reported by Instagram Login"
        expires_at = target.token_expires_at
    else:
        try:
            info = await client.debug_token(target.token)
        except errors.GraphError as exc:
            info = None
            validity = "unknown"
            problems.append(f"debug_token: {exc.describe()[:150]}")
        if info is not None:
            if not info.is_valid:
                validity = "INVALID"
                problems.append(f"token invalid: {info.error or 'no reason given'}")
            needed = NEEDED_SCOPES["facebook"]
            missing = [x for x in needed if x not in info.scopes]
            scopes = f"{len(needed) - len(missing)}/{len(needed)} needed"
            if missing:
                scopes += f" (missing {', '.join(missing)})"
                problems.append(f"missing scopes {', '.join(missing)}")
            expires_at, data_access = info.expires_at, info.data_access_expires_at
    reads, problem, refused = await _reads(client, target)
    if problem is not None:
        problems.append(problem)
    if refused:
        validity = "INVALID"
    now = now_clock.now()
    if expires_at is None:
        expiry = (
            "until the first renewal: unknown" if target.login == "instagram" else "never expires"
        )
    else:
        left = expires_at - now
        expiry = f"{expires_at:%Y-%m-%d} ({left.days} days)"
        if target.login == "instagram":
            expiry += ", renewed by the collector"
        elif left <= warn:
            problems.append(f"expires within {warn.days} days ({expires_at:%Y-%m-%d})")
    if data_access is not None and data_access - now <= warn:
        problems.append(f"data access expires {data_access:%Y-%m-%d}")
    return AccountLine(
        target.name, found, target.login, validity, reads, scopes, expiry, tuple(problems)
    )


async def run(
    settings: config.Settings, *, out: TextIO, clock: clock_mod.Clock | None = None
) -> int:
    """Print the check table; 0 when everything is fine, 1 otherwise."""
    lines = [
        Line(
            "config",
            True,
            f"{settings.source_path or '(no file)'}: {len(settings.accounts)} account(s), "
            f"{len(settings.enabled_accounts())} enabled",
        )
    ]
    lines.extend(Line("config warning", True, w) for w in settings.warnings)
    lines.extend(await _database(settings))
    clock = clock or clock_mod.SystemClock()
    warn = settings.schedule.token_expiry_warning
    limiter = wiring.build_limiter(settings)
    facebook = wiring.build_client(settings, clock, limiter)
    instagram = wiring.build_client(settings, clock, limiter, login="instagram")
    async with facebook, instagram:
        facebook.max_retries = min(facebook.max_retries, 1)
        instagram.max_retries = min(instagram.max_retries, 1)
        version = settings.graph.api_version
        logins = {
            "facebook": jobs.Login(facebook, metrics_catalog.Catalog(version)),
            "instagram": jobs.Login(
                instagram, metrics_catalog.Catalog(version, login="instagram"), batching=False
            ),
        }
        names = roster.Roster(settings, logins)
        # the sources are listed, but nothing is renewed: check changes nothing
        await names.discoverer.refresh(settings.sources, clock.now(), force=True)
        log_mod.add_secrets(names.discoverer.tokens())
        for source in settings.sources:
            listing = names.discoverer.listings.get(source.name)
            if source.name in names.discoverer.failed:
                lines.append(
                    Line(f"source {source.name}", False, names.discoverer.failed[source.name])
                )
            elif listing is not None:
                lines.append(
                    Line(
                        f"source {source.name}",
                        True,
                        f"{source.login} login: {len(listing.found)} account(s), "
                        f"{len(listing.skipped)} skipped",
                    )
                )
        targets = [t for t, _ in names.targets()]
        rows = await asyncio.gather(
            *(
                _account(logins[t.login].client, t, t.source or "configured", clock, warn)
                for t in targets
            )
        )
    print(_table(lines), file=out)
    if rows:
        print("", file=out)
        print(_account_table(list(rows)), file=out)
    else:
        print("\nno account to collect", file=out)
    return 0 if all(line.ok for line in lines) and rows and all(r.ok for r in rows) else 1

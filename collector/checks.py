"""``python -m collector check``: config, database, schema, tokens and the account each token
reads, as a readable table."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from collector import clock as clock_mod
from collector import errors, graph, parse, wiring
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


async def _token(
    client: graph.GraphClient, name: str, token: str, now_clock: clock_mod.Clock, warn: timedelta
) -> Line:
    what = f"token {name}"
    try:
        info = await client.debug_token(token)
    except errors.GraphError as exc:
        return Line(what, False, exc.describe()[:200])
    if not info.is_valid:
        return Line(what, False, f"invalid: {info.error or 'no reason given'}")
    missing = [s for s in REQUIRED_SCOPES if s not in info.scopes]
    problems = []
    if missing:
        problems.append(f"missing scopes {', '.join(missing)}")
    now = now_clock.now()
    expiry = "never expires"
    if info.expires_at is not None:
        left = info.expires_at - now
        expiry = f"expires {info.expires_at:%Y-%m-%d} ({left.days} days)"
        if left <= warn:
            problems.append(f"expires within {warn.days} days ({info.expires_at:%Y-%m-%d})")
    if info.data_access_expires_at is not None and info.data_access_expires_at - now <= warn:
        problems.append(f"data access expires {info.data_access_expires_at:%Y-%m-%d}")
    if problems:
        return Line(what, False, "; ".join(problems))
    return Line(what, True, f"valid, {len(info.scopes)} scopes, {expiry}")


async def _account(client: graph.GraphClient, ig_user_id: str, name: str, token: str) -> Line:
    """Whether the token reads the account it is configured for (``GET /{ig-user-id}``)."""
    what = f"account {name}"
    try:
        resp = await client.get(
            ig_user_id, {"fields": "id,username"}, token=token, account=ig_user_id
        )
    except errors.AccountUnreadable as exc:
        return Line(what, False, str(exc)[:300])
    except errors.GraphError as exc:
        return Line(what, False, f"cannot read account {ig_user_id}: {exc.describe()[:200]}")
    got = parse.object_id(resp.body.get("id"))
    username = parse.text(resp.body.get("username"), 200)
    if got != ig_user_id:
        return Line(
            what,
            False,
            f"ig_user_id is {ig_user_id} but the token reads account {got or 'without an id'}"
            f"{f' (@{username})' if username else ''}: fix ig_user_id or give this account's "
            "token",
        )
    return Line(what, True, f"{ig_user_id} is @{username or '?'}")


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
    async with wiring.build_client(settings, clock, wiring.build_limiter(settings)) as client:
        client.max_retries = min(client.max_retries, 1)
        token_lines = await asyncio.gather(
            *(
                _token(
                    client,
                    a.name,
                    a.token.get_secret_value(),
                    clock,
                    settings.schedule.token_expiry_warning,
                )
                for a in settings.enabled_accounts()
            )
        )
        account_lines = await asyncio.gather(
            *(
                _account(client, a.ig_user_id, a.name, a.token.get_secret_value())
                for a in settings.enabled_accounts()
            )
        )
    for token_line, account_line in zip(token_lines, account_lines, strict=True):
        lines.extend((token_line, account_line))
    print(_table(lines), file=out)
    return 0 if all(line.ok for line in lines) else 1

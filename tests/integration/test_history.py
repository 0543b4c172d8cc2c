"""The compact history (migrations 0007 and 0009): data written by each previous schema survives
the migration with every answer unchanged; one row per capture, late captures, retention."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from collector import clock, config, daemon, models, schema
from collector import store as store_mod

from .conftest import write_config

#: sql/queries.sql as it was before the history migration (main at ed7a2cc): "today's code"
OLD_QUERIES = Path(__file__).parent / "data" / "queries_before_history.sql"
#: the first migration of the compact history
HISTORY = 7
#: sql/queries.sql of the change-only history (main at 0e440af, migrations up to 0008)
CHANGE_ONLY_QUERIES = Path(__file__).parent / "data" / "queries_at_0008.sql"
#: the migration to one row per capture
CAPTURES = 9

Rows = list[tuple[Any, ...]]

#: the answers analysts read, as the old tables and views gave them
ANSWERS = {
    "media_metric": "select media_id, metric, breakdown, dimension, value, captured_at, is_final"
    " from media_metric",
    "media_metric_latest": "select media_id, ig_user_id, account_name, username, media_type,"
    " media_product_type, is_story, posted_at, permalink, metric, breakdown, dimension, value,"
    " captured_at, is_final from media_metric_latest",
    "story_final_metrics": "select * from story_final_metrics",
    "account_metric": "select * from account_metric",
    "account_metric_daily": "select * from account_metric_daily",
    "account_health": "select * from account_health",
}

#: "value at t" over the old table: the latest capture at or before t of every series
OLD_VALUE_AT = """
select distinct on (media_id, metric, breakdown, dimension)
       media_id, metric, breakdown, dimension, value, captured_at as confirmed_at, is_final
from media_metric
where captured_at <= $1
order by media_id, metric, breakdown, dimension, captured_at desc
"""
NEW_VALUE_AT = """
select media_id, metric, breakdown, dimension, value, confirmed_at, is_final
from media_metric_at($1)
"""


async def answers(conn: asyncpg.Connection) -> dict[str, Rows]:
    out = {}
    for name, sql in ANSWERS.items():
        out[name] = sorted(tuple(r) for r in await conn.fetch(sql))
    return out


async def values_at(conn: asyncpg.Connection, sql: str, times: list[datetime]) -> list[Rows]:
    return [sorted(tuple(r) for r in await conn.fetch(sql, t)) for t in times]


def probe_times(captures: list[datetime]) -> list[datetime]:
    """Every capture instant, a moment after each, and one before anything."""
    found = sorted(set(captures))
    return [found[0] - timedelta(days=1), *found, *(t + timedelta(minutes=1) for t in found)]


@pytest.fixture
def old_schema(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make migrations and the store those of the schema before the history; returns the undo."""
    real_migrations = schema.migrations
    old = schema.parse_named(OLD_QUERIES.read_text(encoding="utf-8"))
    monkeypatch.setattr(
        schema,
        "migrations",
        lambda folder=None: [m for m in real_migrations(folder) if m.version < HISTORY],
    )
    monkeypatch.setattr(store_mod, "_q", lambda name: old[name])

    async def no_partitions(self: store_mod.Store, batch: models.Batch) -> None:
        pass  # the previous schema had none

    async def no_maintenance(self: store_mod.Store, *args: Any, **kwargs: Any) -> list[Any]:
        return []

    monkeypatch.setattr(store_mod.Store, "_ensure_partitions", no_partitions)
    monkeypatch.setattr(store_mod.Store, "maintain", no_maintenance)
    return monkeypatch.undo


@pytest.fixture
async def old_conn(empty_db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def _run_once(settings: config.Settings, fake: clock.FakeClock) -> None:
    assert await daemon.run_once(settings, clock=fake, out=io.StringIO()) == 0


async def _fill_with_three_passes(
    sim_factory: Any, dsn: str, fake: clock.FakeClock, tmp_path: Path
) -> config.Settings:
    """A database filled as in the issue: three passes over 3 accounts, the second an hour
    after the first, the third the next day; the settings, for passes after a migration."""
    sim = await sim_factory(accounts=3, media_per_account=12, stories_per_account=2)
    path = write_config(
        tmp_path / "collector.toml",
        sim,
        dsn,
        sections={"schedule": {"account_insights_backfill_days": 4}},
    )
    settings = config.load(path, environ={})
    for step in (0, 3600, 86400):
        fake.advance(step)
        await _run_once(settings, fake)
    return settings


async def test_migration_keeps_every_answer_of_a_database_filled_by_the_previous_code(
    old_schema: Callable[[], None],
    old_conn: asyncpg.Connection,
    empty_db_dsn: str,
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
) -> None:
    await schema.migrate(old_conn)
    assert await old_conn.fetchval("select max(version) from schema_migration") == HISTORY - 1
    settings = await _fill_with_three_passes(sim_factory, empty_db_dsn, fake_clock, tmp_path)
    before = await answers(old_conn)
    captures = [r[0] for r in await old_conn.fetch("select captured_at from media_metric")]
    times = probe_times(captures)
    old_at = await values_at(old_conn, OLD_VALUE_AT, times)
    polled = len(before["media_metric"])
    assert polled > 500
    assert before["account_metric"]
    assert before["story_final_metrics"]

    old_schema()  # the current code from here on
    # the history migration alone first: every answer stays as it was
    real_migrations = schema.migrations
    with pytest.MonkeyPatch.context() as only:
        only.setattr(
            schema,
            "migrations",
            lambda folder=None: [m for m in real_migrations(folder) if m.version <= HISTORY],
        )
        applied = await schema.migrate(old_conn)
    assert [m.name for m in applied] == ["0007_history"]

    after = await answers(old_conn)
    for name in ANSWERS:
        assert after[name] == before[name], name
    assert await values_at(old_conn, NEW_VALUE_AT, times) == old_at
    # the same history in fewer rows: repeated values are not stored again
    stored = await old_conn.fetchval("select count(*) from media_metric_value")
    assert stored < polled
    assert await old_conn.fetchval("select count(*) from media_capture") < polled / 3
    await schema.migrate(old_conn)  # and the migrations after it

    # the current code goes on writing into the migrated history: old answers stay, new
    # captures add to them
    fake_clock.advance(7 * 3600)
    await _run_once(settings, fake_clock)
    grown = await answers(old_conn)
    assert set(before["media_metric"]) < set(grown["media_metric"])
    assert await values_at(old_conn, NEW_VALUE_AT, times) == old_at


@pytest.fixture
def change_only_schema(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Make migrations and the store those of the change-only history (up to 0008)."""
    real_migrations = schema.migrations
    old = schema.parse_named(CHANGE_ONLY_QUERIES.read_text(encoding="utf-8"))
    monkeypatch.setattr(
        schema,
        "migrations",
        lambda folder=None: [m for m in real_migrations(folder) if m.version < CAPTURES],
    )
    monkeypatch.setattr(store_mod, "_q", lambda name: old[name])

    async def partitions_then(self: store_mod.Store, batch: models.Batch) -> None:
        # that schema's three partitioned tables, every month the batch reaches
        months = {(v.captured_at.year, v.captured_at.month) for v in batch.media_metrics}
        months |= {(a.end_time.year, a.end_time.month) for a in batch.account_metrics}
        async with self._conn("old partitions") as conn:
            for year, month in sorted(months):
                at = datetime(year, month, 1, tzinfo=UTC)
                for parent in ("media_capture", "media_metric_value", "account_metric_value"):
                    await conn.fetch(old["ensure_partitions"], parent, at, at)

    monkeypatch.setattr(store_mod.Store, "_ensure_partitions", partitions_then)
    return monkeypatch.undo


#: what the change-only history answered, compared across its migration
CHANGE_ONLY_ANSWERS = {
    # media_metric_latest without changed_at, a column of the change-only layout only
    **ANSWERS,
    "media_metric_history": "select media_id, metric, breakdown, dimension, value, valid_from,"
    " valid_until, series_last_captured_at from media_metric_history",
}


async def test_migration_to_captures_keeps_every_answer_of_the_change_only_history(
    change_only_schema: Callable[[], None],
    old_conn: asyncpg.Connection,
    empty_db_dsn: str,
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
) -> None:
    await schema.migrate(old_conn)
    assert await old_conn.fetchval("select max(version) from schema_migration") == CAPTURES - 1
    settings = await _fill_with_three_passes(sim_factory, empty_db_dsn, fake_clock, tmp_path)
    before = {
        name: sorted(tuple(r) for r in await old_conn.fetch(sql))
        for name, sql in CHANGE_ONLY_ANSWERS.items()
    }
    captures = [r[0] for r in await old_conn.fetch("select captured_at from media_capture")]
    times = probe_times(captures)
    old_at = await values_at(old_conn, NEW_VALUE_AT, times)
    polled = len(before["media_metric"])
    assert polled > 500
    assert before["story_final_metrics"]
    assert await old_conn.fetchval("select count(*) from media_metric_value") < polled

    change_only_schema()  # the current code from here on
    applied = await schema.migrate(old_conn)
    assert [m.name for m in applied if m.version <= CAPTURES] == ["0009_history_captures"]
    after = {
        name: sorted(tuple(r) for r in await old_conn.fetch(sql))
        for name, sql in CHANGE_ONLY_ANSWERS.items()
    }
    for name in CHANGE_ONLY_ANSWERS:
        assert after[name] == before[name], name
    assert await values_at(old_conn, NEW_VALUE_AT, times) == old_at
    assert await old_conn.fetchval("select sum(cardinality(vals)) from media_capture") == polled
    assert await old_conn.fetchval("select to_regclass('media_metric_value')") is None

    # the current code goes on writing into the migrated history
    fake_clock.advance(7 * 3600)
    await _run_once(settings, fake_clock)
    grown = sorted(tuple(r) for r in await old_conn.fetch(ANSWERS["media_metric"]))
    assert set(before["media_metric"]) < set(grown)
    assert await values_at(old_conn, NEW_VALUE_AT, times) == old_at


def expected_changes(
    polls: list[asyncpg.Record], since: datetime | None, until: datetime | None
) -> Rows:
    """media_metric_changes (or, with no bounds, media_metric_history) computed in Python from
    every polled value."""
    by_series: dict[tuple[Any, ...], list[tuple[datetime, Any]]] = {}
    for r in polls:
        key = (r["media_id"], r["metric"], r["breakdown"], r["dimension"])
        by_series.setdefault(key, []).append((r["captured_at"], r["value"]))
    out: Rows = []
    for key, values in by_series.items():
        values.sort()
        before = [v for at, v in values if since is not None and at <= since]
        previous: Any = before[-1] if before else None
        seen = bool(before)
        changes = []
        for at, value in values:
            if (since is not None and at <= since) or (until is not None and at > until):
                continue
            if not seen or value != previous:
                changes.append((at, value, previous if seen else None))
            previous, seen = value, True
        for i, (at, value, prev) in enumerate(changes):
            nxt = changes[i + 1][0] if i + 1 < len(changes) else None
            out.append((*key, value, at, nxt, prev))
    return sorted(out)


async def test_history_and_range_reads_match_every_polled_value(
    db_dsn: str,
    sim_factory: Any,
    fake_clock: clock.FakeClock,
    tmp_path: Path,
) -> None:
    sim = await sim_factory(accounts=2, media_per_account=8, stories_per_account=2)
    path = write_config(tmp_path / "collector.toml", sim, db_dsn)
    settings = config.load(path, environ={})
    for step in (0, 3600, 7200, 86400):
        fake_clock.advance(step)
        await _run_once(settings, fake_clock)
    conn = await asyncpg.connect(db_dsn)
    try:
        polls = await conn.fetch(
            "select media_id, metric, breakdown, dimension, value, captured_at from media_metric"
        )
        assert len(polls) > 300
        history = await conn.fetch(
            "select media_id, metric, breakdown, dimension, value, valid_from, valid_until"
            " from media_metric_history"
        )
        assert sorted(tuple(r) for r in history) == [
            row[:-1] for row in expected_changes(polls, None, None)
        ]
        times = sorted({r["captured_at"] for r in polls})
        for since, until in [
            (times[0] - timedelta(hours=1), times[-1]),
            (times[len(times) // 3], times[-1]),
            (times[len(times) // 3] + timedelta(seconds=1), times[2 * len(times) // 3]),
        ]:
            got = await conn.fetch(
                "select media_id, metric, breakdown, dimension, value, valid_from, valid_until,"
                " previous_value from media_metric_changes($1, $2)",
                since,
                until,
            )
            want = expected_changes(polls, since, until)
            assert want, (since, until)
            assert sorted(tuple(r) for r in got) == want
            reach = await conn.fetch(
                "select media_id, metric, breakdown, dimension, value, valid_from, valid_until,"
                " previous_value from media_metric_changes($1, $2, array['reach'])",
                since,
                until,
            )
            assert sorted(tuple(r) for r in reach) == [w for w in want if w[1] == "reach"]
    finally:
        await conn.close()


# --------------------------------------------------------------------------- write path

T0 = datetime(2026, 11, 3, 14, 0, tzinfo=UTC)
BRAND = models.IgUserId("17841405822304914")
POST = models.MediaId("18027310153508651")


def post() -> models.Media:
    return models.Media(
        media_id=POST,
        ig_user_id=BRAND,
        media_type="IMAGE",
        media_product_type="FEED",
        posted_at=T0 - timedelta(days=1),
        permalink=None,
        caption=None,
        expires_at=None,
        seen_at=T0 - timedelta(days=1),
    )


def capture(hours: float, **values: float) -> list[models.MediaMetric]:
    at = T0 + timedelta(hours=hours)
    return [models.MediaMetric(POST, name, "", "", v, at) for name, v in values.items()]


@pytest.fixture
async def synced(store: store_mod.Store) -> store_mod.Store:
    await store.sync_accounts([models.AccountRow(BRAND, "northwind", True)], T0)
    await store.write(models.Batch(media=[post()]))
    return store


async def series(conn: asyncpg.Connection, metric: str) -> list[tuple[datetime, Any]]:
    rows = await conn.fetch(
        "select captured_at, value from media_metric where metric = $1 order by captured_at",
        metric,
    )
    return [(r["captured_at"], r["value"]) for r in rows]


async def test_every_capture_is_one_row_and_answers_every_question(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    for hours, reach, saved in [(0, 10, 1), (1, 10, 1), (2, 12, 1), (3, 12, 1), (4, 12, 2)]:
        await synced.write(models.Batch(media_metrics=capture(hours, reach=reach, saved=saved)))
    assert await series(db_conn, "reach") == [
        (T0 + timedelta(hours=h), v) for h, v in [(0, 10), (1, 10), (2, 12), (3, 12), (4, 12)]
    ]
    # one row per capture, its values in the key set's order
    rows = await db_conn.fetch(
        "select c.vals, c.wide, array(select k.metric from unnest(ks.key_ids) with ordinality"
        " u (key_id, o) join metric_key k using (key_id) order by o) as metrics"
        " from media_capture c join metric_key_set ks using (key_set_id) order by captured_at"
    )
    assert [(dict(zip(r["metrics"], r["vals"], strict=True)), r["wide"]) for r in rows] == [
        ({"reach": v, "saved": s}, None) for v, s in [(10, 1), (10, 1), (12, 1), (12, 1), (12, 2)]
    ]
    changes = await db_conn.fetch(
        "select metric, value, valid_from, valid_until, series_last_captured_at"
        " from media_metric_history order by metric, valid_from"
    )
    last = T0 + timedelta(hours=4)
    assert [tuple(r) for r in changes] == [
        ("reach", 10, T0, T0 + timedelta(hours=2), last),
        ("reach", 12, T0 + timedelta(hours=2), None, last),
        ("saved", 1, T0, T0 + timedelta(hours=4), last),
        ("saved", 2, T0 + timedelta(hours=4), None, last),
    ]
    # a range: the value at its start, then each change in it
    in_range = await db_conn.fetch(
        "select metric, value, valid_from, valid_until, previous_value"
        " from media_metric_changes($1, $2) order by metric, valid_from",
        T0 + timedelta(minutes=30),
        T0 + timedelta(hours=3),
    )
    assert [tuple(r) for r in in_range] == [("reach", 12, T0 + timedelta(hours=2), None, 10)]
    latest = await db_conn.fetchrow(
        "select value, captured_at, is_final from media_metric_latest where metric = 'reach'"
    )
    assert tuple(latest) == (12, T0 + timedelta(hours=4), False)
    at = await db_conn.fetch(
        "select metric, value, confirmed_at from media_metric_at($1) order by metric",
        T0 + timedelta(hours=1, minutes=30),
    )
    assert [tuple(r) for r in at] == [
        ("reach", 10, T0 + timedelta(hours=1)),
        ("saved", 1, T0 + timedelta(hours=1)),
    ]
    assert await db_conn.fetch("select * from media_metric_at($1)", T0 - timedelta(hours=1)) == []
    only = await db_conn.fetch(
        "select metric, value from media_metric_at($1, array['saved'])", T0 + timedelta(hours=4)
    )
    assert [tuple(r) for r in only] == [("saved", 2)]
    assert (await synced.counts())["media_metric"] == 10


async def test_a_late_capture_is_stored_and_leaves_the_latest_alone(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    for hours, reach in [(0, 10), (2, 10), (4, 15)]:
        await synced.write(models.Batch(media_metrics=capture(hours, reach=reach)))
    # a capture taken at 1 h arrives last (a spooled batch, a webhook) with another value
    await synced.write(models.Batch(media_metrics=capture(1, reach=11)))
    assert await series(db_conn, "reach") == [
        (T0 + timedelta(hours=h), v) for h, v in [(0, 10), (1, 11), (2, 10), (4, 15)]
    ]
    latest = await db_conn.fetchrow(
        "select value, captured_at from media_metric_latest where metric = 'reach'"
    )
    assert tuple(latest) == (15, T0 + timedelta(hours=4))
    at = await db_conn.fetchval(
        "select value from media_metric_at($1) where metric = 'reach'",
        T0 + timedelta(hours=1, minutes=1),
    )
    assert at == 11
    # a late part of an existing capture (a batch split around a refused record) is kept
    # beside it: its own key set, the same instant
    await synced.write(models.Batch(media_metrics=capture(2, saved=3)))
    assert await series(db_conn, "saved") == [(T0 + timedelta(hours=2), 3)]
    assert await db_conn.fetchval("select count(*) from media_capture") == 5
    at_2h = await db_conn.fetch(
        "select metric, value, confirmed_at from media_metric_at($1) order by metric",
        T0 + timedelta(hours=2),
    )
    assert [tuple(r) for r in at_2h] == [
        ("reach", 10, T0 + timedelta(hours=2)),
        ("saved", 3, T0 + timedelta(hours=2)),
    ]
    # and a replay of all of it writes nothing
    before = await db_conn.fetch("select * from media_capture order by 1, 2, 3")
    current = await db_conn.fetch("select * from media_metric_current order by 1, 2")
    for hours, reach in [(0, 10), (2, 10), (4, 15), (1, 11)]:
        await synced.write(models.Batch(media_metrics=capture(hours, reach=reach)))
    await synced.write(models.Batch(media_metrics=capture(2, saved=3)))
    assert await db_conn.fetch("select * from media_capture order by 1, 2, 3") == before
    assert await db_conn.fetch("select * from media_metric_current order by 1, 2") == current


async def test_a_story_final_with_more_keys_is_the_latest_of_each_series(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await synced.write(models.Batch(media_metrics=capture(0, reach=5, views=8)))
    final_at = T0 + timedelta(hours=1)
    final = [
        models.MediaMetric(POST, "reach", "", "", 7, final_at, is_final=True),
        models.MediaMetric(POST, "views", "", "", 9, final_at, is_final=True),
        models.MediaMetric(
            POST,
            "navigation",
            "story_navigation_action_type",
            "tap_forward",
            4,
            final_at,
            is_final=True,
        ),
    ]
    await synced.write(models.Batch(media_metrics=final))
    # a later webhook-like capture with fewer keys: reach and views are newer there
    await synced.write(models.Batch(media_metrics=capture(2, reach=8, views=10)))
    latest = await db_conn.fetch(
        "select metric, dimension, value, captured_at, is_final from media_metric_latest"
        " order by metric, dimension"
    )
    assert [tuple(r) for r in latest] == [
        ("navigation", "tap_forward", 4, final_at, True),
        ("reach", "", 8, T0 + timedelta(hours=2), False),
        ("views", "", 10, T0 + timedelta(hours=2), False),
    ]
    at = await db_conn.fetch(
        "select metric, value, is_final from media_metric_at($1) order by metric",
        final_at + timedelta(minutes=5),
    )
    assert [tuple(r) for r in at] == [
        ("navigation", 4, True),
        ("reach", 7, True),
        ("views", 9, True),
    ]


async def test_a_range_starting_between_the_last_poll_and_the_final_compares_across_key_sets(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await synced.write(models.Batch(media_metrics=capture(0, reach=5, views=8)))
    await synced.write(models.Batch(media_metrics=capture(0.5, reach=7, views=8)))
    final_at = T0 + timedelta(hours=1)
    final = [
        models.MediaMetric(POST, "reach", "", "", 7, final_at, is_final=True),
        models.MediaMetric(POST, "views", "", "", 9, final_at, is_final=True),
        models.MediaMetric(
            POST,
            "navigation",
            "story_navigation_action_type",
            "tap_forward",
            4,
            final_at,
            is_final=True,
        ),
    ]
    await synced.write(models.Batch(media_metrics=final))
    # the final (a key set of its own) is compared with the last poll before the range, whose
    # key set has no capture in the range: an unchanged reach is no change
    changes = await db_conn.fetch(
        "select metric, dimension, value, previous_value from media_metric_changes($1, $2)"
        " order by metric, dimension",
        T0 + timedelta(minutes=45),
        final_at,
    )
    assert [tuple(r) for r in changes] == [
        ("navigation", "tap_forward", 4, None),
        ("views", "", 9, 8),
    ]


async def test_changes_by_capture_and_by_value_agree_with_every_polled_value(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    """media_metric_changes reads a media whose key sets share no key capture by capture (array
    to array) and one whose key sets share a key value by value: both give, for every range,
    what a Python pass over every polled value gives."""
    other = models.MediaId("18027310153508652")
    second = dataclasses.replace(post(), media_id=other)
    await synced.write(models.Batch(media=[second]))

    def at(hours: float, media: models.MediaId, **values: float) -> models.Batch:
        when = T0 + timedelta(hours=hours)
        return models.Batch(
            media_metrics=[models.MediaMetric(media, k, "", "", v, when) for k, v in values.items()]
        )

    # POST: a metric retired between captures (key sets {plays, reach, views}, then {reach,
    # views}: shared keys); OTHER: insights and listing fields (disjoint key sets), rates and a
    # count past 2^31, values that come back after a change
    for batch in (
        at(0, POST, views=8, reach=5, plays=3),
        at(0, other, views=2, reach=1),
        at(0.5, other, like_count=4, comments_count=0),
        at(1, POST, views=8, reach=6, plays=3),
        at(1, other, views=2, reach=1.5),
        at(2, POST, views=9, reach=6),
        at(2.5, other, like_count=4, comments_count=1),
        at(3, POST, views=9, reach=6),
        at(3, other, views=3_000_000_000, reach=1.5),
        at(4, POST, views=9.25, reach=7),
        at(4, other, views=3_000_000_000, reach=1),
        at(5, other, like_count=5, comments_count=1),
        at(6, POST, views=9.25, reach=7),
        at(6, other, views=3_000_000_001, reach=1),
    ):
        await synced.write(batch)
    polls = await db_conn.fetch(
        "select media_id, metric, breakdown, dimension, value, captured_at from media_metric"
    )
    assert len(polls) == 30
    # the two paths: POST's key sets overlap, OTHER's do not
    overlap = await db_conn.fetch(
        "select m.media_id, bool_or(s1.key_ids && s2.key_ids) as shares"
        " from media_metric_current c1"
        " join media_metric_current c2 on c2.media_id = c1.media_id"
        "  and c2.key_set_id > c1.key_set_id"
        " join metric_key_set s1 on s1.key_set_id = c1.key_set_id"
        " join metric_key_set s2 on s2.key_set_id = c2.key_set_id"
        " join media m on m.media_id_num = c1.media_id"
        " group by m.media_id order by m.media_id"
    )
    assert [tuple(r) for r in overlap] == [(POST, True), (other, False)]
    times = sorted({r["captured_at"] for r in polls})
    bounds = [times[0] - timedelta(hours=1), *times, *(t + timedelta(minutes=1) for t in times)]
    checked = 0
    for since in bounds:
        for until in bounds:
            if until <= since:
                continue
            want = expected_changes(polls, since, until)
            got = await db_conn.fetch(
                "select media_id, metric, breakdown, dimension, value, valid_from, valid_until,"
                " previous_value from media_metric_changes($1, $2)",
                since,
                until,
            )
            assert sorted(tuple(r) for r in got) == want, (since, until)
            views = await db_conn.fetch(
                "select media_id, metric, breakdown, dimension, value, valid_from, valid_until,"
                " previous_value from media_metric_changes($1, $2, array['views', 'like_count'])",
                since,
                until,
            )
            assert sorted(tuple(r) for r in views) == [
                w for w in want if w[1] in ("views", "like_count")
            ], (since, until)
            checked += bool(want)
    assert checked > 100


async def test_values_keep_their_exact_type(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    await synced.write(
        models.Batch(media_metrics=capture(0, reach=3_000_000_000, skip=0.3125, views=7))
    )
    stored = await db_conn.fetch(
        "select k.metric, u.v, u.w from media_capture c"
        " join metric_key_set ks using (key_set_id)"
        " cross join unnest(ks.key_ids, c.vals, c.wide) u (key_id, v, w)"
        " join metric_key k using (key_id) order by k.metric"
    )
    # integer where the value fits, else numeric, exactly
    assert [tuple(r) for r in stored] == [
        ("reach", None, 3_000_000_000),
        ("skip", None, pytest.approx(0.3125)),
        ("views", 7, None),
    ]
    assert {r["metric"]: r["value"] for r in await db_conn.fetch("select * from media_metric")} == {
        "reach": 3_000_000_000,
        "skip": pytest.approx(0.3125),
        "views": 7,
    }
    latest = await db_conn.fetch("select metric, value from media_metric_latest order by metric")
    assert [tuple(r) for r in latest] == [
        ("reach", 3_000_000_000),
        ("skip", pytest.approx(0.3125)),
        ("views", 7),
    ]


# --------------------------------------------------------------------------- partitions


async def _partitions(conn: asyncpg.Connection, parent: str) -> list[str]:
    rows = await conn.fetch(
        "select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid "
        "where i.inhparent = $1::regclass order by 1",
        parent,
    )
    return [r["relname"] for r in rows]


async def test_writes_create_the_months_they_need(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    far = T0 + timedelta(days=400)  # no partition was made that far ahead
    await synced.write(
        models.Batch(media_metrics=[models.MediaMetric(POST, "reach", "", "", 5, far)])
    )
    assert "media_capture_2027_12" in await _partitions(db_conn, "media_capture")
    assert await series(db_conn, "reach") == [(far, 5)]


async def test_maintain_creates_ahead_and_drops_whole_months_past_retention(
    synced: store_mod.Store, db_conn: asyncpg.Connection
) -> None:
    # reach changes in September and November; saved is set once, in September
    jan = datetime(2026, 9, 10, tzinfo=UTC)
    await synced.write(
        models.Batch(
            media_metrics=[
                models.MediaMetric(POST, "reach", "", "", 10, jan),
                models.MediaMetric(POST, "saved", "", "", 1, jan),
                models.MediaMetric(POST, "reach", "", "", 10, jan + timedelta(days=30)),
                models.MediaMetric(POST, "saved", "", "", 1, jan + timedelta(days=30)),
                models.MediaMetric(POST, "reach", "", "", 20, T0),
                models.MediaMetric(POST, "saved", "", "", 1, T0),
            ],
            account_metrics=[
                models.AccountMetric(BRAND, "reach", "day", "", "", jan, 5, jan),
                models.AccountMetric(BRAND, "reach", "day", "", "", T0, 6, T0),
            ],
        )
    )
    now = datetime(2026, 11, 20, tzinfo=UTC)
    done = await synced.maintain(now, media_metric=timedelta(days=40), account_metric=None)
    # September ended more than 40 days before now; October did not
    assert ("dropped", "media_capture_2026_09") in done
    assert not any(p.startswith("account_metric_value") for _, p in done if _ == "dropped")
    assert "media_capture_2027_01" in await _partitions(db_conn, "media_capture")
    assert "media_capture_2026_10" in await _partitions(db_conn, "media_capture")
    assert await series(db_conn, "reach") == [(jan + timedelta(days=30), 10), (T0, 20)]
    assert await series(db_conn, "saved") == [(jan + timedelta(days=30), 1), (T0, 1)]
    oct_1 = datetime(2026, 10, 1, tzinfo=UTC)
    at = await db_conn.fetch(
        "select metric, value, confirmed_at from media_metric_at($1) order by metric",
        oct_1 + timedelta(days=15),
    )
    assert [tuple(r) for r in at] == [
        ("reach", 10, jan + timedelta(days=30)),
        ("saved", 1, jan + timedelta(days=30)),
    ]
    assert (
        await db_conn.fetchval(
            "select horizon from history_retention where relation = 'media_capture'"
        )
        == oct_1
    )
    # dropping October too: its last capture is carried, so the kept history still answers
    # "value at t" for t between the horizon and the next capture
    later = datetime(2026, 12, 20, tzinfo=UTC)
    done = await synced.maintain(later, media_metric=timedelta(days=40))
    assert ("dropped", "media_capture_2026_10") in done
    assert await series(db_conn, "reach") == [(T0, 20)]
    nov_1 = datetime(2026, 11, 1, tzinfo=UTC)
    at = await db_conn.fetch(
        "select metric, value, confirmed_at from media_metric_at($1) order by metric",
        nov_1 + timedelta(days=1),
    )
    assert [tuple(r) for r in at] == [
        ("reach", 10, jan + timedelta(days=30)),
        ("saved", 1, jan + timedelta(days=30)),
    ]
    history = await db_conn.fetch(
        "select metric, value, valid_from from media_metric_history where metric = 'reach'"
        " order by valid_from"
    )
    assert [tuple(r) for r in history] == [
        ("reach", 10, jan + timedelta(days=30)),
        ("reach", 20, T0),
    ]
    # a late replay from a dropped month is not written again (nor its month recreated)
    await synced.write(
        models.Batch(media_metrics=[models.MediaMetric(POST, "reach", "", "", 10, jan)])
    )
    assert "media_capture_2026_09" not in await _partitions(db_conn, "media_capture")
    assert await series(db_conn, "reach") == [(T0, 20)]
    # account history is kept forever here
    assert await db_conn.fetchval("select count(*) from account_metric") == 2
    # maintaining again changes nothing
    assert await synced.maintain(later, media_metric=timedelta(days=40)) == []


def test_retention_settings(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    base = '[[accounts]]\nname = "a"\nig_user_id = "1"\ntoken = "t"\n'
    path.write_text(base)
    settings = config.load(path, environ={})
    assert (settings.retention.media_metric, settings.retention.account_metric) == (None, None)
    path.write_text('[retention]\nmedia_metric = "400d"\naccount_metric = "0"\n' + base)
    settings = config.load(path, environ={})
    assert settings.retention.media_metric == timedelta(days=400)
    assert settings.retention.account_metric is None
    path.write_text('[retention]\nmedia_metric = "soon"\n' + base)
    with pytest.raises(Exception, match=r"retention\.media_metric.*keep forever"):
        config.load(path, environ={})

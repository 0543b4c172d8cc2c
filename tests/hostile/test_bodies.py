"""Hostile Graph answers beside healthy accounts: the pass lives, the healthy accounts' values
land exactly once, and the bad data is reported (findings 1, 2, 6, 7 and 10 of issue 10)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from collector.simulator import server as sim_server

from . import server
from .conftest import Run, assert_ground_truth, errors_of, statuses


def _ids(sim: sim_server.Simulator) -> tuple[str, list[str]]:
    accounts = [a.ig_user_id for a in sim.world.accounts]
    return accounts[0], accounts[1:]


async def test_lone_surrogate_caption_is_stored_replaced(
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, _ = _ids(sim)
    victim = next(m for m in sim.world.media_of(bad) if not m.is_story)

    def poison(doc: Any) -> None:
        for item in doc["data"]:
            if item["id"] == victim.id:
                # sent as the JSON escape "\ud800": valid JSON, but no UTF-8 can hold it
                item["caption"] = "before \ud800 after \x00 end"

    hostile.on(rf"/{bad}/media\?", server.rewrite(poison))
    rc, summary = await run_once()
    assert rc == 0, summary
    # every account's values, the one with the bad caption included, exactly once
    await assert_ground_truth(sim, db_conn, [a.ig_user_id for a in sim.world.accounts])
    caption = await db_conn.fetchval("select caption from media where media_id = $1", victim.id)
    assert caption == "before \ufffd after \ufffd end"
    reported = [e for e in await errors_of(db_conn, bad) if e["error_class"] == "BadData"]
    assert reported
    assert "text_replaced:caption" in reported[0]["message"]


async def test_lone_surrogate_in_an_error_message_is_stored_replaced(
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, healthy = _ids(sim)
    error = {"error": {"message": "bad \ud800 request", "code": 100, "fbtrace_id": "\udfff"}}
    hostile.on(rf"/{bad}\?", server.serve(error, status=400))
    rc, _ = await run_once()
    assert rc == 1
    await assert_ground_truth(sim, db_conn, healthy)
    messages = [e["message"] for e in await errors_of(db_conn, bad)]
    assert "bad \ufffd request" in messages


@pytest.mark.parametrize(
    "responder",
    [
        pytest.param(server.deep_nesting(), id="deep-nesting"),
        pytest.param(server.serve(b"\xff\xfe{not utf-8"), id="not-utf8"),
        pytest.param(server.serve(b'{"data": [1' + b"0" * 5000 + b"]}"), id="5000-digit-int"),
        pytest.param(server.serve([1, 2, 3]), id="array-top-level"),
        pytest.param(server.serve("just a string"), id="string-top-level"),
        pytest.param(server.serve(None), id="null-top-level"),
        pytest.param(server.serve(b""), id="empty"),
    ],
)
async def test_undecodable_body_is_a_malformed_answer_retried(
    responder: server.Responder,
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, healthy = _ids(sim)
    hostile.on(rf"/{bad}/media\?", responder)
    rc, summary = await run_once()
    assert rc == 1, summary  # the bad account failed its pass; the process did not
    # retried like any malformed body: once plus max_retries (2)
    assert len(hostile.requests_to(rf"/{bad}/media\?")) == 3
    await assert_ground_truth(sim, db_conn, healthy)
    status, reason = (await statuses(db_conn))[bad]
    assert status == "failing"
    assert reason is not None
    assert "MalformedResponse" not in reason
    assert "GET {id}/media" in reason
    for uid in healthy:
        assert (await statuses(db_conn))[uid][0] == "ok"


async def test_deep_nesting_inside_a_batch_costs_that_operation_only(
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    deep = "[" * 100_000 + "]" * 100_000

    async def respond(ex: server.Exchange) -> web.StreamResponse:
        status, headers, data = await ex.upstream()
        doc = json.loads(data)
        doc[0]["body"] = deep  # the first operation's answer of every batch
        headers.pop("Content-Type", None)
        return web.Response(status=status, body=json.dumps(doc), headers=headers)

    rule = hostile.on(r"^/v25\.0/?$", respond, token=sim.world.accounts[0].token)
    rc, summary = await run_once()
    assert rc == 0, summary
    assert rule.hits > 0
    bad, healthy = _ids(sim)
    await assert_ground_truth(sim, db_conn, healthy)
    # the poisoned operations were asked again and landed, each value once
    await assert_ground_truth(sim, db_conn, [bad], served_again=True)


async def test_huge_body_is_cut_at_the_cap_without_reading_it(
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, healthy = _ids(sim)
    total = 50 * 1024 * 1024
    hostile.on(rf"/{bad}/media\?", server.huge(total))
    hostile.on(rf"/{bad}/stories\?", server.huge(total, declare_length=True))
    rc, summary = await run_once({"max_body_bytes": "64KiB"})
    assert rc == 1, summary
    await assert_ground_truth(sim, db_conn, healthy)
    # the collector stopped reading at the cap: far from the 50 MB were ever sent
    sent = hostile.bytes_sent.get(f"/v25.0/{bad}/media", 0)
    assert 0 < sent < total // 5, sent
    status, reason = (await statuses(db_conn))[bad]
    assert status == "failing"
    assert reason is not None
    assert "65536-byte cap" in reason


async def test_slow_drip_times_out_and_costs_only_that_account(
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, healthy = _ids(sim)
    hostile.on(rf"/{bad}\?", server.drip(b'{"id": "1", "username": "slow"}' * 100, every=0.05))
    rc, summary = await run_once({"timeout": "1s", "max_retries": 1})
    assert rc == 1, summary
    await assert_ground_truth(sim, db_conn, healthy)
    status, reason = (await statuses(db_conn))[bad]
    assert status == "failing"
    assert reason is not None
    assert "timed out" in reason


@pytest.mark.parametrize(
    ("cursors", "expected_pages"),
    [
        pytest.param(server.numbered, 5, id="endless"),
        pytest.param(server.cycle_of(3), 4, id="cycle"),
    ],
)
async def test_pagination_is_capped_and_cycles_end(
    cursors: Any,
    expected_pages: int,
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, healthy = _ids(sim)
    hostile.on(rf"/{bad}/media\?", server.endless_pages(cursors))
    rc, summary = await run_once({"max_pages": 5})
    assert rc == 0, summary
    assert len(hostile.requests_to(rf"/{bad}/media\?")) == expected_pages
    await assert_ground_truth(sim, db_conn, healthy)
    # the same page served again and again: what it held landed once, the rest too
    await assert_ground_truth(sim, db_conn, [bad], served_again=True)
    cut = [e for e in await errors_of(db_conn, bad) if e["error_class"] == "ListingTruncated"]
    assert len(cut) == 1
    assert "max_pages" in cut[0]["message"] or "cycle" in cut[0]["message"]
    # what the listing read before the cut stays
    assert await db_conn.fetchval(
        "select count(*) from media where ig_user_id = $1 and not is_story", bad
    ) == len([m for m in sim.world.media_of(bad) if not m.is_story])


async def test_absurd_metric_values_are_skipped_and_reported(
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, healthy = _ids(sim)
    absurd = iter([-11, 2**70, float("nan"), float("inf"), True, "12", 1e300, -0.5] * 1000)
    replaced: list[str] = []

    def poison(doc: Any) -> None:
        for item in server.walk(doc):
            if "name" in item and isinstance(item.get("values"), list):
                for point in item["values"]:
                    if isinstance(point, dict) and "value" in point:
                        point["value"] = next(absurd)
                        replaced.append(item["name"])
            if "like_count" in item:
                item["like_count"] = -3

    token = sim.world.accounts[0].token
    hostile.on(r"/insights", server.rewrite(poison), token=token)
    hostile.on(r"^/v25\.0/?$", server.rewrite(poison), token=token)
    hostile.on(rf"/{bad}/media\?", server.rewrite(poison))
    rc, summary = await run_once()
    assert rc == 0, summary
    assert replaced
    await assert_ground_truth(sim, db_conn, healthy)
    extremes = await db_conn.fetchval(
        "select count(*) from media_metric where value < 0 or value > 9223372036854775807"
    )
    assert extremes == 0
    assert (
        await db_conn.fetchval(
            "select count(*) from account_metric where value < 0 or value > 9223372036854775807"
        )
        == 0
    )
    reported = " ".join(
        e["message"] for e in await errors_of(db_conn, bad) if e["error_class"] == "BadData"
    )
    assert "bad_value" in reported


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"data": "not a list"}, id="data-string"),
        pytest.param({"data": [1, "a", None, [], {"id": {"x": 1}}]}, id="items-not-objects"),
        pytest.param({"data": [{"caption": "no id"}, {"id": -5}, {"id": True}]}, id="bad-ids"),
        pytest.param({"data": [], "paging": []}, id="paging-array"),
        pytest.param({"data": [], "paging": {"cursors": "x", "next": 1}}, id="paging-wrong-types"),
        pytest.param(
            {"data": [], "paging": {"cursors": {"after": "c" * 10_000}, "next": "n"}},
            id="cursor-huge",
        ),
        pytest.param(
            {"data": [{"id": "1", "timestamp": 5, "media_type": 7, "permalink": ["x"]}]},
            id="fields-wrong-types",
        ),
    ],
)
async def test_wrong_shapes_of_a_listing(
    body: Any,
    sim: sim_server.Simulator,
    hostile: server.Hostile,
    run_once: Run,
    db_conn: asyncpg.Connection,
) -> None:
    bad, healthy = _ids(sim)
    hostile.on(rf"/{bad}/(media|stories)\?", server.serve(body))
    rc, summary = await run_once()
    await assert_ground_truth(sim, db_conn, healthy)
    status, _ = (await statuses(db_conn))[bad]
    # a listing without a data list is malformed (the account fails after the retries);
    # any other shape is judged item by item and the pass goes on
    if body.get("data") == "not a list":
        assert (rc, status) == (1, "failing")
    else:
        assert (rc, status) == (0, "ok"), summary

"""The collector beside airbyte-source-instagram 4.1.0 and tap-instagram 0.4.6, same world.

Usage: ``.venv/bin/python bench/peers.py [--accounts 10 --media 30 --stories 3
--latency-ms 100] [--cache ~/.cache/collector-bench]``.

Each peer is installed from PyPI into its own virtualenv under the cache directory
(tap-instagram needs Python < 3.11: pyenv's 3.10) and run through ``bench/peer_runner.py``,
which points it at the simulator and refuses any non-loopback connection. One simulator
process serves all three in turn; its counters are read between runs. A peer that cannot be
installed or run is reported with its error, and the others still run. Optional in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import common
import cycle

from collector import clock as clock_mod
from collector.simulator import world

RUNNER = common.ROOT / "bench" / "peer_runner.py"
PY310 = "/root/.pyenv/versions/3.10.13/bin/python"
PEERS = {
    "airbyte": ("airbyte-source-instagram==4.1.0", sys.executable),
    "tap": ("tap-instagram==0.4.6", PY310),
}
DB = "bench_peers"


def ensure_venv(cache: Path, name: str) -> tuple[Path | None, str | None]:
    """The peer's interpreter, installing it first if needed; or why it could not be."""
    requirement, base_python = PEERS[name]
    venv = cache / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if marker.exists() and marker.read_text() == requirement:
        return python, None
    if not Path(base_python).exists():
        return None, f"no base interpreter {base_python}"
    steps = [
        [base_python, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "-q", requirement],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            lines = [
                line for line in done.stderr.splitlines() if "is ignored: it is neither" not in line
            ]
            return None, f"{' '.join(step[-3:])} failed: " + " | ".join(lines[-8:])
    marker.write_text(requirement)
    return python, None


def singer_counts(stdout: str) -> dict[str, Any]:
    """Records per stream of a Singer tap, and the metric values in its insights streams."""
    records: collections.Counter[str] = collections.Counter()
    values = 0
    story_ids: set[str] = set()
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg.get("type") != "RECORD":
            continue
        stream = msg["stream"]
        records[stream] += 1
        rec = msg["record"]
        if "insights" in stream.lower() and rec.get("value") is not None:
            values += 1
        if stream == "story_insights" and rec.get("media_id"):
            story_ids.add(str(rec["media_id"]))
    return {"records": dict(records), "metric_values": values, "stories_with_insights": story_ids}


def airbyte_counts(stdout: str) -> dict[str, Any]:
    """Records per stream of an Airbyte source, and the metric values in its insights streams."""
    records: collections.Counter[str] = collections.Counter()
    values = 0
    story_ids: set[str] = set()
    errors: list[str] = []
    skip = {"id", "page_id", "business_account_id", "date", "end_time", "period", "breakdown"}
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        msg = json.loads(line)
        if msg.get("type") == "TRACE" and msg["trace"].get("type") == "ERROR":
            errors.append(msg["trace"]["error"].get("message", "")[:300])
        if msg.get("type") != "RECORD":
            continue
        stream = msg["record"]["stream"]
        records[stream] += 1
        data = msg["record"]["data"]
        if "insights" in stream:
            values += sum(
                1
                for k, v in data.items()
                if k not in skip and isinstance(v, int | float) and not isinstance(v, bool)
            )
        if stream == "story_insights" and data.get("id"):
            story_ids.add(str(data["id"]))
    return {
        "records": dict(records),
        "metric_values": values,
        "stories_with_insights": story_ids,
        "errors": errors,
    }


def run_tap(
    python: Path, sim: common.Simulator, token: str, tmp: Path, version: str
) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(days=cycle.ACCOUNT_BACKFILL_DAYS)
    cfg = tmp / "tap.json"
    cfg.write_text(
        json.dumps(
            {
                "access_token": token,
                "ig_user_ids": [int(a["ig_user_id"]) for a in sim.accounts],
                "start_date": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "media_insights_lookback_days": 730,
            }
        )
    )
    base = [str(python), str(RUNNER), "tap", sim.base_url, "--", "--config", str(cfg)]
    # tap-instagram writes tap.log into its working directory: keep it in the temporary one.
    disc = common.run_measured([*base, "--discover"], cwd=tmp)
    try:
        catalog = json.loads(disc.stdout)
    except ValueError:
        return {"run": disc, "error": "--discover gave no catalog: " + disc.stderr[-500:]}
    for entry in catalog["streams"]:
        # The simulator has no /{media-id}/children edge (carousel children): the tap would stop
        # at the first carousel, so that one stream is left out; every other stream is selected.
        selected = entry["tap_stream_id"] != "media_children"
        for meta in entry["metadata"]:
            if meta["breadcrumb"] == []:
                meta["metadata"]["selected"] = selected
    path = tmp / "tap-catalog.json"
    path.write_text(json.dumps(catalog))
    env = {**os.environ, "BENCH_TAP_API_VERSION": version}
    run = common.run_measured([*base, "--catalog", str(path)], env=env, cwd=tmp)
    return {"run": run, **singer_counts(run.stdout)}


def run_airbyte(python: Path, sim: common.Simulator, token: str, tmp: Path) -> dict[str, Any]:
    since = datetime.now(UTC) - timedelta(days=cycle.ACCOUNT_BACKFILL_DAYS)
    cfg = tmp / "airbyte.json"
    cfg.write_text(
        json.dumps({"access_token": token, "start_date": since.strftime("%Y-%m-%dT00:00:00Z")})
    )
    base = [str(python), str(RUNNER), "airbyte", sim.base_url, "--"]
    disc = common.run_measured([*base, "discover", "--config", str(cfg)])
    streams = []
    for line in disc.stdout.splitlines():
        if line.startswith("{") and '"CATALOG"' in line:
            streams = json.loads(line)["catalog"]["streams"]
    if not streams:
        return {"run": disc, "error": "discover gave no catalog: " + disc.stderr[-500:]}
    catalog = tmp / "catalog.json"
    catalog.write_text(
        json.dumps(
            {
                "streams": [
                    {
                        "stream": s,
                        "sync_mode": "full_refresh"
                        if "full_refresh" in s["supported_sync_modes"]
                        else "incremental",
                        "destination_sync_mode": "append",
                    }
                    for s in streams
                ]
            }
        )
    )
    run = common.run_measured(
        [*base, "read", "--config", str(cfg), "--catalog", str(catalog)], env=dict(os.environ)
    )
    return {"run": run, **airbyte_counts(run.stdout)}


def run_collector(sim: common.Simulator, tmp: Path, max_in_flight: int) -> dict[str, Any]:
    dsn = asyncio.run(common.fresh_database(DB))
    cfg = cycle.write_config(tmp, sim, dsn, max_in_flight, 1)
    py = sys.executable
    mig = common.run_measured([py, "-m", "collector", "migrate", "-c", str(cfg)])
    if mig.returncode != 0:
        raise RuntimeError(f"migrate failed: {mig.stderr[-2000:]}")
    run = common.run_measured([py, "-m", "collector", "run", "--once", "-c", str(cfg)])

    async def rows() -> dict[str, Any]:
        conn = await asyncpg.connect(dsn)
        try:
            values = await conn.fetchval(
                "select count(*) from media_metric mm join media m using (media_id) "
                "where mm.metric not in ('like_count', 'comments_count')"
            )
            stories = await conn.fetch(
                "select distinct mm.media_id from media_metric mm join media m using (media_id)"
                " where m.media_product_type = 'STORY' and m.expires_at > mm.captured_at"
            )
            account = await conn.fetchval("select count(*) from account_metric")
        finally:
            await conn.close()
        return {
            "metric_values": int(values) + int(account),
            "stories_with_insights": {r["media_id"] for r in stories},
        }

    counted = asyncio.run(rows())
    asyncio.run(common.drop_database(DB))
    return {"run": run, **counted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--media", type=int, default=30)
    parser.add_argument("--stories", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "collector-bench")
    parser.add_argument("--only", default="collector,airbyte,tap,tap@v21.0")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    only = args.only.split(",")
    print(f"# {common.machine()}; commit {common.git_commit()}", flush=True)
    print(
        f"# world {args.accounts} accounts x {args.media} media x {args.stories} stories, "
        f"latency {args.latency_ms:g} ms",
        flush=True,
    )
    pythons: dict[str, Path] = {}
    for name in ("airbyte", "tap"):
        if not any(o.startswith(name) for o in only):
            continue
        python, problem = ensure_venv(args.cache, name)
        if python is None:
            print(f"{name}: NOT INSTALLED: {problem}", flush=True)
        else:
            pythons[name] = python
    # Every account token and the user token depend only on the seed (1, the CLI default).
    token = world.World(world.WorldConfig(accounts=1), clock_mod.SystemClock()).user_token
    sim = common.start_simulator(
        accounts=args.accounts,
        media=args.media,
        stories=args.stories,
        latency_ms=args.latency_ms,
    )
    live_stories = args.accounts * args.stories
    rows = []
    try:
        for name in only:
            before = sim.stats()
            with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
                if name == "collector":
                    out = run_collector(sim, Path(tmp), args.max_in_flight)
                elif name.startswith("tap") and "tap" in pythons:
                    # The tap sends no version (Meta: the app's default): "tap" is v25.0, the
                    # collector's; "tap@v21.0" the version Airbyte 4.1.0 pins.
                    version = name.partition("@")[2] or "v25.0"
                    out = run_tap(pythons["tap"], sim, token, Path(tmp), version)
                elif name == "airbyte" and name in pythons:
                    out = run_airbyte(pythons[name], sim, token, Path(tmp))
                else:
                    continue
            after = sim.stats()
            counts = cycle.diff(after, before)
            run: common.Measured = out["run"]
            row = {
                "tool": name,
                "rc": run.returncode,
                "wall": run.wall,
                "cpu": run.cpu,
                "maxrss_mb": run.maxrss_mb,
                "calls": counts["total_requests"],
                "trips": counts["round_trips"],
                "calls_by_kind": counts["calls_by_kind"],
                "batches": counts["batches_by_content"],
                "batch_ops": counts["batch_ops_by_content"],
                "errors_by_class": counts["errors_by_class"],
                "metric_values": out.get("metric_values"),
                "records": out.get("records"),
                "stories": len(out.get("stories_with_insights", ())),
                "error": out.get("error") or (out.get("errors") or [None])[0],
            }
            rows.append(row)
            print(
                f"{name}: rc {row['rc']}, {row['wall']:.1f} s wall, {row['cpu']:.1f} s CPU, "
                f"RSS {row['maxrss_mb']:.0f} MB, {row['calls']} API calls {row['calls_by_kind']}, "
                f"{row['trips']} round trips (batches by content {row['batches']}, their "
                f"operations {row['batch_ops']}), "
                f"errors {row['errors_by_class']}, metric values {row['metric_values']}, "
                f"stories with insights {row['stories']}/{live_stories}, records "
                f"{row['records']}",
                flush=True,
            )
            if row["error"] or row["rc"]:
                print(f"  {name} error: {row['error']}; stderr tail: {run.stderr[-1500:]}")
    finally:
        sim.stop()
    print()
    print(
        common.table(
            [
                "tool",
                "wall s",
                "CPU s",
                "RSS MB",
                "API calls",
                "round trips",
                "metric values",
                "stories",
            ],
            [
                [
                    r["tool"],
                    f"{r['wall']:.1f}",
                    f"{r['cpu']:.1f}",
                    f"{r['maxrss_mb']:.0f}",
                    str(r["calls"]),
                    str(r["trips"]),
                    str(r["metric_values"]),
                    f"{r['stories']}/{live_stories}",
                ]
                for r in rows
            ],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

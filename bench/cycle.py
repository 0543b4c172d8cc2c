"""One full collection cycle (``python -m collector run --once``) against the simulator.

Usage: ``.venv/bin/python bench/cycle.py [--quick] [--sizes 100x100x5,1000x50x3]
[--latencies 0,100,300] [--max-in-flight 64] [--passes 2]``.

For each size (accounts x media x stories) and latency: the simulator in its own process
(``bench/simhost.py``, the ``simulate`` CLI plus counters), a fresh database ``bench_cycle``
migrated with ``python -m collector migrate``, then ``python -m collector run --once`` as a
separate process, ``--passes`` times (pass 1 discovers everything; pass 2 is the steady
state: media discovery stops at known media, account insights re-poll 3 days). Measured per
pass: wall time, API calls (what Meta meters: a batch counts once plus once per operation)
and HTTP round trips (what latency costs: a batch is one), both on the simulator side by
endpoint kind and cross-checked with the collector's ``pass_done`` line (``api_calls``,
``round_trips``, ``peak_in_flight``), peak requests in flight inside the simulator, the
collector process's CPU seconds and peak RSS (``wait4``). The lower bound is ``round trips x
latency / max_in_flight``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import common

ACCOUNT_BACKFILL_DAYS = 3
DB = "bench_cycle"
STARTUP = "import collector.cli, collector.daemon, collector.store, collector.graph, asyncpg"


def write_config(
    directory: Path, sim: common.Simulator, dsn: str, max_in_flight: int, per_account: int
) -> Path:
    path = directory / "collector.toml"
    path.write_text(
        sim.config_toml
        + f"""
[database]
dsn = {json.dumps(dsn)}
pool_max_size = 10

[limits]
max_in_flight = {max_in_flight}
per_account_in_flight = {per_account}

[schedule]
account_insights_backfill_days = {ACCOUNT_BACKFILL_DAYS}

[state]
directory = {json.dumps(str(directory / "state"))}

[log]
format = "json"
level = "info"
""",
        encoding="utf-8",
    )
    return path


def diff(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
    """Counters of one pass from two cumulative simulator snapshots."""

    def sub(key: str) -> dict[str, int]:
        a, b = after.get(key, {}), before.get(key, {})
        return {k: a[k] - b.get(k, 0) for k in a if a[k] - b.get(k, 0)}

    return {
        "total_requests": after["total_requests"] - before["total_requests"],
        "round_trips": after["round_trips"] - before["round_trips"],
        "batch_ops": after["batch_ops"] - before["batch_ops"],
        "batch_ops_by_kind": sub("batch_ops_by_kind"),
        "batches_by_content": sub("batches_by_content"),
        "batch_ops_by_content": sub("batch_ops_by_content"),
        # cumulative: the largest batch of each content up to this pass
        "batch_max_by_content": after.get("batch_max_by_content", {}),
        "calls_by_kind": sub("calls_by_kind"),
        "insights_calls_by_object": sub("insights_calls_by_object"),
        "errors_by_class": sub("errors_by_class"),
        "peak_in_flight": after["peak_in_flight"],
        "sim_cpu": after["cpu_seconds"] - before["cpu_seconds"],
    }


def collector_python(collector: Path | None) -> str:
    """The interpreter that runs the collector: this one's, or another checkout's own virtualenv
    (run from that checkout's directory, against this checkout's simulator and harness, for
    before and after figures on the same machine)."""
    return str(collector / ".venv/bin/python") if collector else sys.executable


def run_case(
    accounts: int,
    media: int,
    stories: int,
    latency_ms: float,
    *,
    max_in_flight: int,
    per_account: int,
    passes: int,
    account_budget: int = common.HUGE_BUDGET,
    collector: Path | None = None,
) -> list[dict[str, Any]]:
    sim = common.start_simulator(
        accounts=accounts,
        media=media,
        stories=stories,
        latency_ms=latency_ms,
        account_budget=account_budget,
    )
    results = []
    try:
        dsn = asyncio.run(common.fresh_database(DB))
        with tempfile.TemporaryDirectory(prefix="bench-cycle-") as tmp:
            cfg = write_config(Path(tmp), sim, dsn, max_in_flight, per_account)
            py = collector_python(collector)
            mig = common.run_measured(
                [py, "-m", "collector", "migrate", "-c", str(cfg)], cwd=collector
            )
            if mig.returncode != 0:
                raise RuntimeError(f"migrate failed: {mig.stderr[-2000:]}")
            before = sim.stats()
            for n in range(1, passes + 1):
                run = common.run_measured(
                    [py, "-m", "collector", "run", "--once", "-c", str(cfg)], cwd=collector
                )
                after = sim.stats()
                counts = diff(after, before)
                before = after
                done = common.log_events(run.stdout, "pass_done")
                failed = common.log_events(run.stdout, "account_failed")
                calls = counts["total_requests"]
                trips = counts["round_trips"]
                # Latency is paid per HTTP round trip, not per metered call (a batch of 50
                # operations is one round trip).
                bound = trips * latency_ms / 1000 / max_in_flight
                # One request per account at a time: an account's round trips are a serial chain.
                chain = trips / accounts * latency_ms / 1000 / per_account
                result = {
                    "size": f"{accounts}x{media}x{stories}",
                    "accounts": accounts,
                    "media": media,
                    "stories": stories,
                    "latency_ms": latency_ms,
                    "pass": n,
                    "rc": run.returncode,
                    "wall": run.wall,
                    "bound": bound,
                    "chain": chain,
                    "calls": calls,
                    "trips": trips,
                    "collector_calls": done[0]["api_calls"] if done else None,
                    "collector_trips": done[0].get("round_trips") if done else None,
                    "collector_peak": done[0].get("peak_in_flight") if done else None,
                    "retries": done[0]["retries"] if done else None,
                    "failed_accounts": len(failed),
                    "cpu": run.cpu,
                    "user": run.user,
                    "system": run.system,
                    "maxrss_mb": run.maxrss_mb,
                    **counts,
                }
                results.append(result)
                print(summary_line(result, max_in_flight), flush=True)
                if run.returncode != 0 and not done:
                    print(run.stdout[-3000:], run.stderr[-3000:], file=sys.stderr)
                    break
    finally:
        sim.stop()
        asyncio.run(common.drop_database(DB))
    return results


def summary_line(r: dict[str, Any], max_in_flight: int) -> str:
    ratio = f"{r['wall'] / r['bound']:.2f}x bound" if r["bound"] else "no bound at 0 ms"
    return (
        f"{r['size']:>11} {r['latency_ms']:>4g} ms pass {r['pass']}: "
        f"{r['wall']:7.1f} s wall ({ratio}, bound {r['bound']:.1f} s, "
        f"per-account chain {r['chain']:.1f} s), "
        f"{r['calls']} API calls (collector says {r['collector_calls']}, "
        f"retries {r['retries']}), {r['trips']} round trips (collector says "
        f"{r['collector_trips']}), peak {r['peak_in_flight']}/{max_in_flight} in flight "
        f"(simulator; collector says {r['collector_peak']}), "
        f"CPU {r['cpu']:.1f} s = {1000 * r['cpu'] / max(r['calls'], 1):.2f} ms/call, "
        f"{1000 * r['cpu'] / max(r['trips'], 1):.2f} ms/round trip, "
        f"RSS {r['maxrss_mb']:.0f} MB, rc {r['rc']}, failed accounts {r['failed_accounts']}"
    )


def per_unit(r: dict[str, Any]) -> str:
    """API calls and round trips per media and per story for the pass, by endpoint kind."""
    kinds = r["calls_by_kind"]
    objs = r["insights_calls_by_object"]
    media_total = r["accounts"] * r["media"]
    story_total = r["accounts"] * r["stories"]
    parts = [f"{k}={v}" for k, v in sorted(kinds.items())]
    batched = [f"{k}={v}" for k, v in sorted(r["batch_ops_by_kind"].items())]
    media_calls = objs.get("media", 0)
    contents = r.get("batches_by_content", {})
    ops = r.get("batch_ops_by_content", {})
    # Round trips that carried post insights: the batches holding media-insights operations
    # plus post-insights calls made on their own (older simhost: every batch).
    media_batches = sum(n for c, n in contents.items() if "media_insights" in c.split("+"))
    if not contents:
        media_batches = kinds.get("batch", 0)
    media_trips = media_batches + media_calls - objs.get("media_in_batch", 0)
    account_ops = r["batch_ops_by_kind"].get("user_insights", 0)
    account_calls = kinds.get("user_insights", 0)
    account_batches = sum(n for c, n in contents.items() if "user_insights" in c.split("+"))
    account_trips = account_batches + account_calls - account_ops
    story_calls = objs.get("story", 0)
    listings = kinds.get("ig_stories", 0)
    sizes = [
        f"{c}: {n} batches, {ops.get(c, 0) / n:.1f} operations on average, largest "
        f"{r.get('batch_max_by_content', {}).get(c, 0)}"
        for c, n in sorted(contents.items())
    ]
    return (
        f"{r['size']} {r['latency_ms']:g} ms pass {r['pass']}: "
        f"post insights {media_calls / max(media_total, 1):.2f} API calls and "
        f"{media_trips / max(media_total, 1):.3f} round trips per media; "
        f"account insights {account_calls / r['accounts']:.2f} API calls "
        f"({account_ops / r['accounts']:.2f} inside batches) and "
        f"{account_trips / r['accounts']:.2f} round trips per account; "
        f"per-story insights calls {story_calls / max(story_total, 1):.2f} per story, "
        f"{story_calls / r['accounts']:.2f} per account, plus "
        f"{listings / r['accounts']:.2f} /stories listings per account (which carry the "
        f"insights; target <= 1 call per account); "
        f"{r['calls'] / r['accounts']:.1f} API calls and {r['trips'] / r['accounts']:.1f} round "
        f"trips per account; API calls by kind: {', '.join(parts)}; in batches: "
        f"{', '.join(batched) or 'none'}; batches by what they carried: "
        f"{'; '.join(sizes) or 'none'}"
    )


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    out = []
    for item in text.split(","):
        a, m, s = (int(x) for x in item.lower().split("x"))
        out.append((a, m, s))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x20x2 at 0 and 50 ms, one pass")
    parser.add_argument("--sizes", default="100x100x5,1000x50x3")
    parser.add_argument("--latencies", default="0,100,300", help="milliseconds")
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--per-account-in-flight", type=int, default=1)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument(
        "--account-budget",
        type=int,
        default=common.HUGE_BUDGET,
        help="calls per account per window (default: never reached; the collector sizes its "
        "batches from the usage it sees move, so with usage stuck at 0 %% they stay at 10 "
        "operations; 4800 is the simulator's default)",
    )
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument(
        "--collector",
        type=Path,
        help="run the collector of this other checkout (its .venv) instead of this one's",
    )
    args = parser.parse_args()
    if args.quick:
        sizes, latencies, passes = [(10, 20, 2)], [0.0, 50.0], 1
    else:
        sizes = parse_sizes(args.sizes)
        latencies = [float(x) for x in args.latencies.split(",")]
        passes = args.passes
    print(f"# {common.machine()}; commit {common.git_commit()}", flush=True)
    print(
        f"# max_in_flight={args.max_in_flight}, per_account_in_flight="
        f"{args.per_account_in_flight}, account_insights_backfill_days={ACCOUNT_BACKFILL_DAYS}, "
        f"account budget {args.account_budget} calls per window",
        flush=True,
    )
    collector = args.collector.resolve() if args.collector else None
    if collector:
        print(f"# collector: {collector} at {common.git_commit(collector)}", flush=True)
    startup = common.run_measured([collector_python(collector), "-c", STARTUP], cwd=collector)
    print(
        f"# interpreter start + collector imports: {startup.cpu:.2f} s CPU, "
        f"{startup.maxrss_mb:.0f} MB RSS (included in every pass below)",
        flush=True,
    )
    results: list[dict[str, Any]] = []
    for accounts, media, stories in sizes:
        for latency in latencies:
            results += run_case(
                accounts,
                media,
                stories,
                latency,
                max_in_flight=args.max_in_flight,
                per_account=args.per_account_in_flight,
                passes=passes,
                account_budget=args.account_budget,
                collector=collector,
            )
    print("\n# calls per unit of data")
    for r in results:
        print(per_unit(r))
    if args.json:
        existing = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.write_text(json.dumps(existing + results, indent=1))
    return 0 if all(r["rc"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

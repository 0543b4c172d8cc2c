"""Requests per second the Graph API simulator serves with zero latency.

Usage: ``.venv/bin/python bench/simulator_throughput.py [--seconds 5] [--concurrency 32]``.
The simulator runs in its own process (one core); this process drives it with aiohttp over a
mix of calls a collector makes (account fields, media list, media insights, account insights).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import subprocess
import sys
import time
import tomllib

import aiohttp


async def _read_config(proc: asyncio.subprocess.Process) -> tuple[str, list[dict[str, str]]]:
    assert proc.stdout is not None
    lines: list[str] = []
    while True:
        raw = await asyncio.wait_for(proc.stdout.readline(), 30)
        if not raw:
            raise RuntimeError("simulator exited before printing its config")
        line = raw.decode()
        lines.append(line)
        if line.startswith("token = "):
            # The config ends after the last account; the world has a known account count.
            cfg = tomllib.loads("".join(lines))
            if len(cfg.get("accounts", [])) == ACCOUNTS:
                return cfg["graph"]["base_url"], cfg["accounts"]


ACCOUNTS = 5


async def drive(base: str, accounts: list[dict[str, str]], seconds: float, workers: int) -> None:
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=workers), base_url=base
    ) as session:
        media: dict[str, list[str]] = {}
        for acct in accounts:
            async with session.get(
                f"/v25.0/{acct['ig_user_id']}/media",
                params={"access_token": acct["token"], "limit": "50"},
            ) as resp:
                body = await resp.json()
            media[acct["ig_user_id"]] = [m["id"] for m in body["data"]]
        plans: list[tuple[str, dict[str, str]]] = []
        for acct in accounts:
            ig, token = acct["ig_user_id"], acct["token"]
            plans.append(
                (
                    f"/v25.0/{ig}",
                    {"fields": "id,username,followers_count,media_count", "access_token": token},
                )
            )
            plans.append(
                (f"/v25.0/{ig}/media", {"fields": "id,timestamp,like_count", "access_token": token})
            )
            plans.append(
                (
                    f"/v25.0/{ig}/insights",
                    {
                        "metric": "reach,views",
                        "period": "day",
                        "metric_type": "total_value",
                        "access_token": token,
                    },
                )
            )
            for mid in media[ig][:5]:
                plans.append(
                    (f"/v25.0/{mid}/insights", {"metric": "reach,saved", "access_token": token})
                )
        cycle = itertools.cycle(plans)
        done = 0
        statuses: dict[int, int] = {}
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                path, params = next(cycle)
                async with session.get(path, params=params) as resp:
                    await resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = time.perf_counter() - start
        print(
            f"{done} requests in {elapsed:.2f} s with {workers} connections: "
            f"{done / elapsed:,.0f} requests/s (statuses {statuses})"
        )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "collector.simulator",
        "--port",
        "0",
        "--accounts",
        str(ACCOUNTS),
        "--media",
        "40",
        # A generous budget so the benchmark measures serving, not throttling.
        "--account-budget",
        str(10**9),
        stdout=subprocess.PIPE,
    )
    try:
        base, accounts = await _read_config(proc)
        print(f"simulator at {base} (pid {proc.pid}); driving for {args.seconds:g} s")
        await drive(base, accounts, args.seconds, args.concurrency)
    finally:
        proc.terminate()
        await proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

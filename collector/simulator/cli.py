"""``python -m collector simulate``: serve a simulated Graph API and print a collector config."""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
from datetime import timedelta

from collector import clock as clock_mod
from collector.simulator import faults, metrics, server, world

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
MAX_DURATION = timedelta(days=3650)


def parse_duration(text: str) -> timedelta:
    """``90``, ``30s``, ``10m``, ``1h30m``, ``2d`` → timedelta (positive, at most 10 years)."""
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    if re.fullmatch(r"\d+(?:\.\d+)?", raw):
        seconds = float(raw)
    else:
        pos = 0
        seconds = 0.0
        for match in _DURATION_RE.finditer(raw):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(raw):
            raise ValueError(f"{text!r} is not a duration (examples: 90, 30s, 10m, 1h30m, 2d)")
    value = timedelta(seconds=seconds)
    if value <= timedelta(0) or value > MAX_DURATION:
        raise ValueError(f"{text!r} must be positive and at most {MAX_DURATION.days} days")
    return value


def parse_faults(text: str) -> dict[str, float]:
    """``http500=0.01,reset=0.005`` → {kind: rate}."""
    out: dict[str, float] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        kind, sep, rate_text = item.partition("=")
        kind = kind.strip()
        if kind not in faults.KINDS:
            raise ValueError(f"unknown fault kind {kind!r} (known: {', '.join(faults.KINDS)})")
        if not sep:
            raise ValueError(f"{item!r}: expected kind=rate, e.g. http500=0.01")
        try:
            rate = float(rate_text)
        except ValueError:
            raise ValueError(f"{item!r}: the rate must be a number between 0 and 1") from None
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{item!r}: the rate must be between 0 and 1")
        out[kind] = rate
    if sum(r for k, r in out.items() if k not in faults.BATCH_KINDS) > 1.0:
        raise ValueError("the fault rates add up to more than 1")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collector simulate",
        description="Serve a simulated Instagram Graph API and print a ready-to-use collector "
        "configuration for it. Stops on SIGINT/SIGTERM.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8999, help="0 picks a free port")
    parser.add_argument("--accounts", type=int, default=5, help="number of IG accounts")
    parser.add_argument("--media", type=int, default=40, help="media per account")
    parser.add_argument("--stories", type=int, default=3, help="live stories per account")
    parser.add_argument("--story-lifetime", default="24h", help="e.g. 24h, 10m, 90s")
    parser.add_argument("--stories-per-day", type=float, default=None)
    parser.add_argument("--media-per-day", type=float, default=0.0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--latency-jitter-ms", type=float, default=0.0)
    parser.add_argument("--faults", default="", help="e.g. http500=0.01,reset=0.005")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--app-secret", default=None)
    parser.add_argument("--account-budget", type=int, default=4800, help="calls per window")
    parser.add_argument("--account-window", default="24h")
    parser.add_argument("--app-budget", type=int, default=None, help="calls per app window")
    parser.add_argument("--app-window", default="1h")
    parser.add_argument("--webhook-url", default=None, help="POST story_insights webhooks here")
    parser.add_argument(
        "--api-version", default="v25.0", help="version written into the printed config"
    )
    return parser


def config_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> world.WorldConfig:
    """Validate the arguments (``parser.error`` names the flag) and build the world config."""

    def fail(flag: str, message: str) -> None:
        parser.error(f"{flag}: {message}")

    limits = (
        ("--accounts", args.accounts, 1, world.MAX_ACCOUNTS),
        ("--media", args.media, 0, world.MAX_MEDIA),
        ("--stories", args.stories, 0, world.MAX_STORIES),
        ("--port", args.port, 0, 65535),
        ("--account-budget", args.account_budget, 1, 10**12),
    )
    for flag, value, low, high in limits:
        if not low <= value <= high:
            fail(flag, f"must be between {low} and {high}, got {value}")
    if args.app_budget is not None and not 1 <= args.app_budget <= 10**12:
        fail("--app-budget", f"must be between 1 and {10**12}, got {args.app_budget}")
    for flag, value in (
        ("--latency-ms", args.latency_ms),
        ("--latency-jitter-ms", args.latency_jitter_ms),
    ):
        if not 0 <= value <= 600_000:
            fail(flag, f"must be between 0 and 600000 ms, got {value:g}")
    for flag, value in (
        ("--stories-per-day", args.stories_per_day),
        ("--media-per-day", args.media_per_day),
    ):
        if value is not None and not 0 <= value <= 100_000:
            fail(flag, f"must be between 0 and 100000, got {value:g}")
    durations: dict[str, timedelta] = {}
    for flag, text in (
        ("--story-lifetime", args.story_lifetime),
        ("--account-window", args.account_window),
        ("--app-window", args.app_window),
    ):
        try:
            durations[flag] = parse_duration(text)
        except ValueError as exc:
            fail(flag, str(exc))
    try:
        rates = parse_faults(args.faults)
    except ValueError as exc:
        fail("--faults", str(exc))
    if args.api_version not in metrics.VERSIONS:
        fail(
            "--api-version",
            f"must be one of {', '.join(metrics.VERSIONS)}, got {args.api_version!r}",
        )
    return world.WorldConfig(
        seed=args.seed,
        accounts=args.accounts,
        media_per_account=args.media,
        stories_per_account=args.stories,
        story_lifetime=durations["--story-lifetime"],
        stories_per_day=args.stories_per_day,
        media_per_day=args.media_per_day,
        latency=args.latency_ms / 1000,
        latency_jitter=args.latency_jitter_ms / 1000,
        fault_rates=rates,
        app_secret=args.app_secret,
        account_budget=args.account_budget,
        account_window=durations["--account-window"],
        app_budget=args.app_budget,
        app_window=durations["--app-window"],
        webhook_url=args.webhook_url,
    )


async def serve(
    config: world.WorldConfig, host: str, port: int, api_version: str, stop: asyncio.Event
) -> int:
    """Serve until ``stop`` is set; prints the URL and the collector config first."""
    try:
        sim = await server.start(config, clock=clock_mod.SystemClock(), host=host, port=port)
    except OSError as exc:
        print(f"simulate: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"# Graph API simulator listening on {sim.base_url}", flush=True)
        print("# collector config for this world:")
        print(sim.config_toml(api_version), flush=True)
        await stop.wait()
    finally:
        await sim.close()
    return 0


def main(argv: list[str]) -> int:
    """Entry point; returns the exit code (2 for bad arguments)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        config = config_from_args(parser, args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        return await serve(config, args.host, args.port, args.api_version, stop)

    return asyncio.run(run())

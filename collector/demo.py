"""``python -m collector demo``: the real daemon against a simulated Graph API, into an embedded
PostgreSQL, for a couple of minutes; then a summary read back from the analyst views.

Stories live three minutes in the simulated world (24 hours on Instagram), so within two minutes
several are discovered, polled and given their final snapshot shortly before they expire.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import asyncpg

from collector import clock as clock_mod
from collector import config, daemon, embedded, errors, log, schema, wiring
from collector import store as store_mod
from collector.simulator import server, world

KEEP_DIR = Path(".collector-demo")
DATABASE = "collector"
#: error classes the simulator answers when a caller is throttled (account, app)
THROTTLES = ("80002", "4", "17", "32", "613")
SEED = 20260615
STORY_LIFETIME = timedelta(minutes=3)
STORY_EVERY = timedelta(seconds=60)
SCHEDULE = {
    "story_lifetime": "3m",
    "story_final_lead": "45s",
    "story_discovery_every": "20s",
    "story_poll_every": "60s",
    "profile_every": "30s",
    "media_discovery_every": "5m",
    "account_insights_backfill_days": 7,
}

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_config(state_dir: Path, sim: server.Simulator, dsn: str, run: int = 1) -> Path:
    """The collector's config for the simulated world; tokens go to files beside it."""
    tokens = state_dir / "tokens"
    tokens.mkdir(mode=0o700, exist_ok=True)
    sections: dict[str, dict[str, object]] = {
        "database": {"dsn": dsn},
        "graph": {"base_url": sim.base_url, "retry_base": "0.2s", "retry_max": "2s"},
        "schedule": SCHEDULE,
        "state": {"directory": str(state_dir)},
        "web": {"enabled": False},  # nothing to scrape in a demo; keeps port 9108 free
        "log": {"format": "json"},
    }
    if sim.world.app_secret is not None:
        sections["graph"]["app_secret"] = sim.world.app_secret
    lines = ["# Written by `python -m collector demo` for its simulated Graph API.", ""]
    for name, values in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in values.items())
        lines.append("")
    for acct in sim.world.accounts:
        token = tokens / f"{acct.username}.token"
        token.write_text(acct.token + "\n")
        token.chmod(0o600)
        name = acct.username if run == 1 else f"{acct.username}-run{run}"
        lines += [
            "[[accounts]]",
            f"name = {_toml(name)}",
            f"ig_user_id = {_toml(acct.ig_user_id)}",
            f"token_file = {_toml(str(token))}",
            "",
        ]
    path = state_dir / "collector.toml"
    path.write_text("\n".join(lines))
    return path


def world_config(accounts: int, run: int = 1) -> world.WorldConfig:
    """A small world whose stories live minutes, so several expire during the demo.

    Each run over a kept state directory gets a world of its own (new account and media ids):
    the same seed again would re-serve the earlier run's story ids with new expiry times.
    """
    return world.WorldConfig(
        seed=SEED + run - 1,
        accounts=accounts,
        media_per_account=6,
        stories_per_account=3,
        story_lifetime=STORY_LIFETIME,
        stories_per_day=timedelta(days=1) / STORY_EVERY,
        webhook_poll_interval=None,
    )


class Display:
    """One updating line on a terminal; a plain line every ``every`` seconds otherwise."""

    def __init__(self, out: TextIO, every: float = 10.0) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every = every
        self._last = -every
        self._shown = False

    def show(self, elapsed: float, text: str, *, force: bool = False) -> None:
        if self.tty:
            # a line longer than the terminal wraps, and \r then rewrites only its last part
            width = shutil.get_terminal_size().columns - 1
            self.out.write(f"\r{text[:width]}\x1b[K")
            self._shown = True
        elif force or elapsed - self._last >= self.every:
            self.out.write(text + "\n")
            self._last = elapsed
        self.out.flush()

    def done(self) -> None:
        if self.tty and self._shown:
            self.out.write("\n")
            self.out.flush()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _fmt_lead(value: timedelta | None) -> str:
    return "-" if value is None else f"{value.total_seconds():.1f} s"


def _fmt_time(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone().strftime("%H:%M:%S")


class Progress:
    """What the demo reads while the daemon runs: simulator counters and database rows."""

    def __init__(self, sim: server.Simulator, st: store_mod.Store, conn: Any) -> None:
        self.sim = sim
        self.ids = [a.ig_user_id for a in sim.world.accounts]
        self.store = st
        self.conn = conn
        self.rows = 0
        self.stories = 0
        self.finalised = 0

    def throttled(self) -> int:
        errors_by_class = self.sim.stats.errors_by_class
        return sum(errors_by_class[c] for c in THROTTLES)

    async def refresh(self) -> None:
        counts = await self.store.counts()
        self.rows = sum(counts.values())
        row = await self.conn.fetchrow(schema.named_queries("demo.sql")["progress"], self.ids)
        self.stories, self.finalised = int(row["stories"]), int(row["finalised"])

    def line(self, elapsed: float, duration: float) -> str:
        return (
            f"[{elapsed:4.0f}/{duration:.0f} s] accounts {len(self.sim.world.accounts)}"
            f" | API calls {self.sim.stats.total_requests:,}"
            f" | rows written {self.rows:,}"
            f" | stories {self.stories} seen, {self.finalised} finalised"
            f" | throttled {self.throttled()}"
        )


async def _watch(
    progress: Progress,
    display: Display,
    daemon_task: asyncio.Task[int],
    stop: asyncio.Event,
    duration: float,
) -> bool:
    """Refresh the progress line until the duration is over, a signal stopped the daemon (then
    True), or the daemon ended by itself."""
    began = time.monotonic()
    while True:
        elapsed = time.monotonic() - began
        with contextlib.suppress(errors.StoreError):
            await progress.refresh()  # a slow count only skips one refresh
        display.show(elapsed, progress.line(elapsed, duration))
        remaining = duration - elapsed
        if remaining <= 0 or stop.is_set() or daemon_task.done():
            display.show(elapsed, progress.line(elapsed, duration), force=True)
            display.done()
            return stop.is_set()
        waiter = asyncio.create_task(stop.wait(), name="demo-stop-wait")
        await asyncio.wait({waiter, daemon_task}, timeout=min(1.0, remaining))
        waiter.cancel()


async def summary(conn: Any, sim: server.Simulator, out: TextIO) -> int:
    """Print per-account and per-story results from the database; the stories finalised."""
    queries = schema.named_queries("demo.sql")
    ids = [a.ig_user_id for a in sim.world.accounts]
    accounts = await conn.fetch(queries["accounts"], ids)
    stories = await conn.fetch(queries["stories"], ids)
    now = datetime.now(UTC)
    by_account: dict[str, list[Any]] = {}
    for story in stories:
        by_account.setdefault(story["ig_user_id"], []).append(story)
    calls = sim.stats.calls_by_account
    finalised_total = 0
    print("\nPer account (from the database):", file=out)
    for acct in accounts:
        first, last = acct["followers_first"], acct["followers_last"]
        followers = (
            "no profile snapshot yet"
            if first is None
            else f"{first:,} → {last:,} followers ({_plural(acct['snapshots'], 'snapshot')}, "
            f"{_fmt_time(acct['followers_first_at'])} → {_fmt_time(acct['followers_last_at'])})"
        )
        print(
            f"  {acct['name']} ({acct['status']}): {followers}; {acct['media']} media, "
            f"{acct['stories']} stories, {acct['metric_rows']:,} metric values; "
            f"{calls.get(acct['ig_user_id'], 0):,} API calls",
            file=out,
        )
        for story in by_account.get(acct["ig_user_id"], []):
            if story["final_captured_at"] is not None:
                finalised_total += 1
                state = (
                    f"final snapshot {_fmt_lead(story['lead_before_expiry'])} before expiry"
                    f" by {story['final_source'] or 'poll'}"
                    f" (reach {story['reach'] if story['reach'] is not None else '-'},"
                    f" views {story['views'] if story['views'] is not None else '-'})"
                )
            elif story["expires_at"] > now:
                status = story["insights_status"]
                state = "not due yet (final snapshot comes shortly before expiry)" + (
                    f"; last poll: {status}" if status not in (None, "ok") else ""
                )
            elif story["missed_reason"] is not None:
                state = f"missed: {story['missed_reason']}"
            elif story["insights_status"] not in (None, "ok"):
                state = f"no final snapshot: {story['insights_status']}"
            else:
                state = "expired without a final snapshot (missed, reason not recorded yet)"
            print(
                f"    story {story['media_id']} expires {_fmt_time(story['expires_at'])}: {state}",
                file=out,
            )
    throttled = {c: sim.stats.errors_by_class[c] for c in THROTTLES if sim.stats.errors_by_class[c]}
    print(
        f"\nAPI calls: {sim.stats.total_requests:,}; throttled answers: "
        + (", ".join(f"{n} × code {c}" for c, n in throttled.items()) if throttled else "none")
        + f"; stories finalised: {finalised_total}",
        file=out,
    )
    return finalised_total


def explore_hint(pg: embedded.EmbeddedPostgres, state_dir: Path, out: TextIO) -> None:
    """How to query the kept data: the running server's psql command and example queries."""
    examples = schema.named_queries("examples.sql")
    print(
        f"\nThe data is kept in {state_dir}, and its PostgreSQL keeps running so that you can "
        f"explore it:\n  {pg.psql_command(DATABASE)}\n"
        f"Stop it with\n  {pg.stop_command()}\n"
        "(the next `python -m collector demo --keep` with this state directory adds to the data)."
        "\nThree queries to start with (more in sql/examples.sql, views described in the README):",
        file=out,
    )
    for name in ("story_capture_report", "top_media_last_30_days", "accounts_needing_attention"):
        print(f"\n-- {name}\n{examples[name]}", file=out)


@contextlib.asynccontextmanager
async def _state(state_dir: Path | None, keep: bool) -> AsyncIterator[tuple[Path, bool]]:
    """The state directory and whether it is kept; a temporary one is removed afterwards."""
    if state_dir is not None or keep:
        path = (state_dir or KEEP_DIR).absolute()
        path.mkdir(parents=True, exist_ok=True)
        yield path, True
        return
    path = Path(tempfile.mkdtemp(prefix="collector-demo-"))
    # mkdtemp makes it 0700; as root, PostgreSQL runs as another user that must traverse it
    path.chmod(0o711)
    try:
        yield path, False
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def run(
    *,
    duration: float = 120,
    keep: bool = False,
    state_dir: Path | None = None,
    accounts: int = 4,
    out: TextIO = sys.stdout,
) -> int:
    """Run the demo; 0 when the daemon ran and finalised at least one story."""
    async with _state(state_dir, keep) as (directory, kept):
        log_path = directory / "collector.log"
        with log_path.open("a", encoding="utf-8") as log_file:
            log.configure("info", "json", stream=log_file)
            print(f"State directory: {directory} (collector log: {log_path})", file=out)
            code = await _run(directory, kept, duration, accounts, out)
        if not kept:
            print(
                f"\nThe demo data was removed with {directory} (use --keep to keep it).", file=out
            )
        return code


def _next_run(directory: Path) -> int:
    """Count the demo runs in this state directory (1 for the first)."""
    path = directory / "demo-runs"
    try:
        previous = int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        previous = 0
    path.write_text(f"{previous + 1}\n")
    return previous + 1


async def _run(directory: Path, kept: bool, duration: float, accounts: int, out: TextIO) -> int:
    run_no = _next_run(directory)
    pg = embedded.EmbeddedPostgres(directory / "postgres")
    began = time.monotonic()
    print("Starting the embedded PostgreSQL …", file=out, flush=True)
    await asyncio.to_thread(pg.start)
    leave_running = False
    try:
        dsn = await asyncio.to_thread(pg.create_database, DATABASE)
        # PostgreSQL refuses to run as root; say which user it runs as instead
        user = f", running as user {pg.run_as}" if os.geteuid() == 0 else ""
        print(
            f"PostgreSQL {embedded.MAJOR} ready in {time.monotonic() - began:.1f} s{user} "
            f"(server log: {pg.log_file})",
            file=out,
        )
        world_cfg = world_config(accounts, run_no)
        async with server.running(world_cfg, clock=clock_mod.SystemClock()) as sim:
            path = write_config(directory, sim, dsn, run_no)
            settings = config.load(path, environ={})
            applied = await wiring.migrate(settings)
            if run_no > 1:
                print(
                    f"Run {run_no} in this state directory: a new simulated world joins the "
                    "data of the earlier runs.",
                    file=out,
                )
            print(
                f"Schema: {len(applied)} migration(s) applied. Simulated Graph API at "
                f"{sim.base_url} with {accounts} accounts; stories live "
                f"{STORY_LIFETIME.total_seconds() / 60:g} minutes (24 h on Instagram).",
                file=out,
            )
            print(f"Running the collector daemon for {duration:g} s (Ctrl-C stops it) …", file=out)
            code = await _collect(settings, sim, dsn, duration, out)
        if kept:
            explore_hint(pg, directory, out)
            leave_running = True
        return code
    finally:
        if not leave_running:
            await asyncio.to_thread(pg.stop)


async def _collect(
    settings: config.Settings,
    sim: server.Simulator,
    dsn: str,
    duration: float,
    out: TextIO,
) -> int:
    stop = asyncio.Event()
    st = await store_mod.Store.open(dsn, min_size=1, max_size=2)
    conn = await asyncpg.connect(dsn)
    try:
        daemon_task = asyncio.create_task(daemon.run_forever(settings, stop=stop), name="daemon")
        try:
            progress = Progress(sim, st, conn)
            interrupted = await _watch(progress, Display(out), daemon_task, stop, duration)
        finally:
            stop.set()
            await asyncio.wait({daemon_task})
        rc = daemon_task.result()
        finalised = await summary(conn, sim, out)
    finally:
        await conn.close()
        await st.close()
    if rc != 0:
        print(f"\nerror: the daemon exited with {rc} (see the collector log)", file=out)
        return EXIT_FAILED
    if interrupted:
        return EXIT_INTERRUPTED
    if finalised == 0:
        print(
            f"\nerror: no story was finalised in {duration:g} s: run it longer "
            "(--duration 120), or see the collector log",
            file=out,
        )
        return EXIT_FAILED
    print(f"\nDemo done: the daemon ran and finalised {finalised} stories.", file=out)
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collector demo",
        description=(
            "Run the collector daemon against a simulated Graph API into an embedded "
            "PostgreSQL for a while, then summarise what it collected."
        ),
    )
    parser.add_argument(
        "--duration", type=float, default=120, help="seconds to collect (default: 120)"
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help=f"keep the data (in --state-dir, default ./{KEEP_DIR}) and show how to query it",
    )
    parser.add_argument("--accounts", type=int, default=4, help="simulated accounts (default: 4)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        help="where the embedded PostgreSQL, the config and the log go (kept); "
        "default: a temporary directory, removed afterwards",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m collector demo [--duration 120] [--keep] [--accounts 4] [--state-dir DIR]``."""
    args = _parser().parse_args(argv)
    if args.duration <= 0 or not 1 <= args.accounts <= 50:
        print("error: --duration must be positive and --accounts 1 to 50", file=sys.stderr)
        return 2
    try:
        return asyncio.run(
            run(
                duration=args.duration,
                keep=args.keep,
                state_dir=args.state_dir,
                accounts=args.accounts,
            )
        )
    except errors.CollectorError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())

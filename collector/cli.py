"""``python -m collector COMMAND``: the only place settings are loaded and logging configured."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

import structlog

from collector import __version__, config, daemon, errors, log, wiring

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m collector",
        description="Collect Instagram insights from Meta's Graph API into PostgreSQL.",
    )
    parser.add_argument("--version", action="version", version=f"collector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            type=Path,
            help="the TOML config file (default: $COLLECTOR_CONFIG)",
        )

    run = sub.add_parser(
        "run", help="collect until stopped (SIGTERM); SIGHUP re-reads the config file"
    )
    with_config(run)
    run.add_argument(
        "--once",
        action="store_true",
        help="collect every enabled account once and exit (non-zero if any account failed)",
    )
    mig = sub.add_parser("migrate", help="apply pending database migrations")
    with_config(mig)
    chk = sub.add_parser(
        "check", help="validate the config, the database, the schema and every token"
    )
    with_config(chk)
    sub.add_parser(
        "demo",
        help="embedded PostgreSQL + simulator + the daemon for a while, then a summary",
        add_help=False,
    )
    sub.add_parser(
        "simulate",
        help="serve a simulated Graph API (see `python -m collector simulate --help`)",
        add_help=False,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["simulate"]:
        from collector.simulator import cli as simulator_cli  # noqa: PLC0415

        return simulator_cli.main(args_list[1:])
    if args_list[:1] == ["demo"]:
        from collector import demo  # noqa: PLC0415

        return demo.main(args_list[1:])
    args = _parser().parse_args(args_list)
    try:
        settings = config.load(args.config)
    except errors.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log.configure(settings.log.level, settings.log.format, secrets=settings.secrets())
    logger = structlog.get_logger()
    for warning in settings.warnings:
        logger.warning("config_warning", message=warning)
    try:
        if args.command == "migrate":
            applied = asyncio.run(wiring.with_database(settings, wiring.migrate))
            logger.info("migrations_applied", applied=applied, count=len(applied))
            print(
                f"applied {len(applied)} migration(s): {', '.join(applied)}"
                if applied
                else "the schema is up to date",
                file=sys.stderr,
            )
            return EXIT_OK
        if args.command == "check":
            from collector import checks  # noqa: PLC0415

            return asyncio.run(
                wiring.with_database(settings, lambda s: checks.run(s, out=sys.stdout))
            )
        if args.command == "run":
            if args.once:
                return asyncio.run(wiring.with_database(settings, daemon.run_once))
            return asyncio.run(wiring.with_database(settings, daemon.run_forever))
    except errors.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except errors.CollectorError as exc:
        logger.error(
            "command_failed", command=args.command, error=type(exc).__name__, message=str(exc)
        )
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command}")  # pragma: no cover

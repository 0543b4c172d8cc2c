"""``python -m collector simulate``: argument validation, output, signal handling."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import tomllib
from datetime import timedelta

import aiohttp
import pytest

from collector.simulator import cli


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90", timedelta(seconds=90)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("250ms", timedelta(milliseconds=250)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert cli.parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "0", "-5m", "10x", "m", "5m3", "99999d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"."):
        cli.parse_duration(text)


def test_parse_faults() -> None:
    assert cli.parse_faults("http500=0.01, reset=0.005") == {"http500": 0.01, "reset": 0.005}
    for bad in ("boom=0.1", "http500", "http500=x", "http500=2", "http500=0.6,code2=0.6"):
        with pytest.raises(ValueError, match=r"."):
            cli.parse_faults(bad)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--accounts", "0"], "--accounts"),
        (["--accounts", "1000000"], "--accounts"),
        (["--media", "-1"], "--media"),
        (["--stories", "100000"], "--stories"),
        (["--story-lifetime", "soon"], "--story-lifetime"),
        (["--faults", "boom=0.1"], "--faults"),
        (["--latency-ms", "-3"], "--latency-ms"),
        (["--api-version", "v99.0"], "--api-version"),
        (["--port", "70000"], "--port"),
        (["--app-budget", "0"], "--app-budget"),
        (["--unknown-flag"], "--unknown-flag"),
        (["--accounts", "many"], "--accounts"),
    ],
)
def test_bad_arguments_exit_2_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    assert flag in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "--story-lifetime" in capsys.readouterr().out


async def test_serves_prints_config_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "collector.simulator", "--port", "0", "--accounts", "2",
        "--story-lifetime", "10m", "--app-secret", "s3cret",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while (
            not any(line.startswith("token") for line in lines[-1:])
            or len([x for x in lines if x.startswith("token")]) < 2
        ):
            raw = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert raw, "simulator exited early"
            lines.append(raw.decode())
        assert lines[0].startswith("# Graph API simulator listening on http://127.0.0.1:")
        config = tomllib.loads("".join(lines))
        assert config["graph"]["api_version"] == "v25.0"
        assert config["graph"]["app_secret"] == "s3cret"
        assert [a["name"] for a in config["accounts"]] == ["sim_acct_1", "sim_acct_2"]
        acct = config["accounts"][0]
        url = f"{config['graph']['base_url']}/v25.0/{acct['ig_user_id']}"
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, params={"access_token": acct["token"]}) as resp,
        ):
            assert resp.status == 400  # no appsecret_proof
    finally:
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 20)
    assert code == 0

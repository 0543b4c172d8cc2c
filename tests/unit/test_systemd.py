"""sd_notify against real AF_UNIX datagram sockets, in a directory and in the abstract namespace."""

from __future__ import annotations

import os
import secrets
import socket
import struct
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
import structlog

from collector import config, systemd


class Listener:
    """What systemd does: a bound datagram socket reading notifications."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name  # the NOTIFY_SOCKET value

    def fields(self) -> dict[str, str]:
        data = self.sock.recv(4096)
        return dict(line.split("=", 1) for line in data.decode().split("\n"))

    def empty(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(5)
        return False


def _bind(address: str, name: str) -> Iterator[Listener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    # the datagram is queued before sendto returns: a timeout only guards against a test bug
    sock.settimeout(5)
    try:
        yield Listener(sock, name)
    finally:
        sock.close()


Make = Callable[[Mapping[str, str]], systemd.Notifier]


@pytest.fixture
def make() -> Iterator[Make]:
    """``Notifier.from_environ``, closing every notifier (and its socket) after the test."""
    made: list[systemd.Notifier] = []

    def build(env: Mapping[str, str]) -> systemd.Notifier:
        made.append(systemd.Notifier.from_environ(env))
        return made[-1]

    yield build
    for notifier in made:
        notifier.close()


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    path = str(tmp_path / "notify.sock")
    yield from _bind(path, path)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"collector-test-{os.getpid()}-{secrets.token_hex(4)}"
    yield from _bind("\0" + name, "@" + name)


def test_ready_to_a_socket_in_a_directory(listener: Listener, make: Make) -> None:
    notifier = make({"NOTIFY_SOCKET": listener.name})
    assert notifier.enabled
    assert notifier.ready()
    assert listener.fields() == {"READY": "1"}


def test_abstract_namespace(abstract_listener: Listener, make: Make) -> None:
    notifier = make({"NOTIFY_SOCKET": abstract_listener.name})
    assert notifier.ready(status="collecting 3 accounts")
    assert abstract_listener.fields() == {"READY": "1", "STATUS": "collecting 3 accounts"}
    assert notifier.stopping()
    assert abstract_listener.fields() == {"STOPPING": "1"}


def test_reloading_carries_the_monotonic_clock(listener: Listener, make: Make) -> None:
    notifier = make({"NOTIFY_SOCKET": listener.name})
    before = systemd.monotonic_usec()
    assert notifier.reloading()
    after = systemd.monotonic_usec()
    fields = listener.fields()
    assert fields["RELOADING"] == "1"
    assert before <= int(fields["MONOTONIC_USEC"]) <= after
    assert notifier.ready()
    assert listener.fields() == {"READY": "1"}


def test_status_is_one_line(listener: Listener, make: Make) -> None:
    notifier = make({"NOTIFY_SOCKET": listener.name})
    assert notifier.status("2 accounts\nthrottled\n")
    # a newline would have injected a field of its own
    assert listener.fields() == {"STATUS": "2 accounts throttled"}


def test_watchdog_interval_is_half_the_timeout(listener: Listener, make: Make) -> None:
    notifier = make({"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "60000000"})
    assert notifier.watchdog_interval() == 30.0
    assert notifier.watchdog()
    assert listener.fields() == {"WATCHDOG": "1"}


def test_watchdog_for_this_process_only(listener: Listener, make: Make) -> None:
    ours = make(
        {
            "NOTIFY_SOCKET": listener.name,
            "WATCHDOG_USEC": "10000000",
            "WATCHDOG_PID": str(os.getpid()),
        }
    )
    assert ours.watchdog_interval() == 5.0
    # inherited from a parent: the watchdog is the parent's business
    inherited = make(
        {"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}
    )
    assert inherited.watchdog_interval() is None
    assert not inherited.watchdog()
    assert listener.empty()


@pytest.mark.parametrize("usec", ["", "0", "-5", "abc", "1.5"])
def test_no_watchdog_without_a_valid_timeout(listener: Listener, make: Make, usec: str) -> None:
    notifier = make({"NOTIFY_SOCKET": listener.name, "WATCHDOG_USEC": usec})
    assert notifier.watchdog_interval() is None
    assert not notifier.watchdog()


def test_without_a_socket_everything_is_a_no_op(make: Make) -> None:
    notifier = make({"WATCHDOG_USEC": "60000000"})
    assert not notifier.enabled
    assert not notifier.ready()
    assert not notifier.reloading()
    assert not notifier.stopping()
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert notifier.watchdog_interval() is None
    assert not make({"NOTIFY_SOCKET": ""}).enabled


def test_a_send_failure_is_logged_once_and_never_raises(tmp_path: Path, make: Make) -> None:
    notifier = make({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with structlog.testing.capture_logs() as logs:
        assert not notifier.ready()
        assert not notifier.watchdog()
        assert not notifier.status("still here")
    failures = [entry for entry in logs if entry["event"] == "sd_notify_failed"]
    assert len(failures) == 1
    assert "FileNotFoundError" in failures[0]["error"]


def test_config_load_keeps_the_systemd_variables(make: Make) -> None:
    environ = {
        "NOTIFY_SOCKET": "@sd-notify",
        "WATCHDOG_USEC": "60000000",
        "WATCHDOG_PID": "42",
        "HOME": "/root",
    }
    settings = config.load(environ=environ)
    assert dict(settings.systemd_env) == {
        "NOTIFY_SOCKET": "@sd-notify",
        "WATCHDOG_USEC": "60000000",
        "WATCHDOG_PID": "42",
    }
    assert dict(config.load(environ={}).systemd_env) == {}
    notifier = make(settings.systemd_env)
    assert notifier.socket_path == "@sd-notify"
    # not a [section] of the file: it can't be set from TOML, and describe() doesn't list it
    assert "systemd_env" not in config.describe(settings)


def test_the_sender_is_this_process(listener: Listener, make: Make) -> None:
    # NotifyAccess=main: systemd drops messages whose SCM_CREDENTIALS pid is not the main pid
    listener.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    notifier = make({"NOTIFY_SOCKET": listener.name})
    assert notifier.ready()
    data, ancillary, _, _ = listener.sock.recvmsg(4096, socket.CMSG_SPACE(12))
    assert data == b"READY=1"
    [(level, kind, creds)] = ancillary
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_CREDENTIALS)
    assert struct.unpack("iII", creds)[0] == os.getpid()


def test_a_full_queue_drops_instead_of_blocking(listener: Listener, make: Make) -> None:
    notifier = make({"NOTIFY_SOCKET": listener.name})
    with structlog.testing.capture_logs() as logs:
        # nobody reads: the kernel queue fills up (net.unix.max_dgram_qlen), then sends fail
        results = [notifier.status("x" * 1000) for _ in range(5000)]
    assert results[0]
    assert not results[-1]
    assert [e["event"] for e in logs] == ["sd_notify_failed"]
    assert "BlockingIOError" in logs[0]["error"]

"""sd_notify with the standard library: READY, RELOADING, STOPPING, STATUS and WATCHDOG.

The protocol is one datagram of ``KEY=VALUE`` lines to the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace). Without that variable
(not started by systemd, or ``Type=simple``) every call is a no-op returning ``False``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import Any

import structlog


def _address(name: str) -> str:
    # "@name" is an abstract socket: its address starts with a NUL byte instead of "@"
    return "\0" + name[1:] if name.startswith("@") else name


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd expects in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends state changes to systemd; every method returns whether the message was sent."""

    def __init__(
        self,
        socket_path: str | None,
        *,
        watchdog_usec: int | None = None,
        log: Any = None,
    ) -> None:
        self.socket_path = socket_path or None
        self._watchdog_usec = watchdog_usec
        self._sock: socket.socket | None = None
        self._failed = False
        self._log = log if log is not None else structlog.get_logger()

    @classmethod
    def from_environ(cls, env: Mapping[str, str], *, log: Any = None) -> Notifier:
        """Build from ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID``.

        The watchdog is ignored when ``WATCHDOG_PID`` names another process (the variable was
        inherited from a parent), or when ``WATCHDOG_USEC`` is not a positive integer.
        """
        watchdog: int | None = None
        usec = env.get("WATCHDOG_USEC", "").strip()
        pid = env.get("WATCHDOG_PID", "").strip()
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            watchdog = int(usec)
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=watchdog, log=log)

    @property
    def enabled(self) -> bool:
        """A notify socket is configured."""
        return self.socket_path is not None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; never raises."""
        if self.socket_path is None:
            return False
        data = "\n".join(fields).encode()
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # a full receive queue must not stall the event loop: drop and say so instead
                sock.setblocking(False)
                self._sock = sock
            self._sock.sendto(data, _address(self.socket_path))
        except OSError as exc:
            if not self._failed:
                # once: a socket that is gone stays gone, and the watchdog pings every few seconds
                self._failed = True
                self._log.warning(
                    "sd_notify_failed",
                    socket=self.socket_path,
                    error=f"{type(exc).__name__}: {exc}",
                )
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={_one_line(status)}")
        return self.notify(*fields)

    def reloading(self) -> bool:
        """A reload started; follow with :meth:`ready` when it is done."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}")

    def stopping(self) -> bool:
        """Shutdown started."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """Free-form status shown by ``systemctl status``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def watchdog(self) -> bool:
        """Keep-alive ping; only sent when systemd asked for one (``WatchdogSec=``)."""
        if self._watchdog_usec is None:
            return False
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the watchdog timeout, as systemd advises), or ``None``."""
        if self._watchdog_usec is None or self.socket_path is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(text: str) -> str:
    # a newline would start a new KEY=VALUE field
    return " ".join(text.split())

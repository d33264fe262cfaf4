"""A private PostgreSQL server for the tests, on loopback only.

:func:`pg_server` is a session-scoped pytest fixture: the first test that asks
for it runs Debian's ``initdb`` and ``pg_ctl`` (from
``/usr/lib/postgresql/*/bin``) in a fresh directory under the system temp
directory, on a free port of 127.0.0.1 and a unix socket in that directory;
the server is stopped and the directory removed when the session ends. As
root the server runs as the ``postgres`` system user (``runuser -u postgres
--``), because initdb refuses to run as root.

The superuser ``postgres`` logs in with a password over TCP
(scram-sha-256) and without one over the unix socket (trust).

Several test modules may import the fixture: they share one server
(reference counted).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ports import free_port

PASSWORD = "hato-pg-secret"


def _pg_bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"),
                   key=lambda p: [int(x) if x.isdigit() else 0 for x in p.split("/")[4].split(".")])
    if not found:
        path = shutil.which(tool)
        if path:
            return path
        pytest.fail(f"{tool} is missing: install the Debian package postgresql "
                    f"(tools/run-tests installs every tool the tests use)")
    return found[-1]


def _free_port() -> int:
    return free_port()


class PgServer:
    """One PostgreSQL cluster in a temporary directory."""

    host = "127.0.0.1"
    user = "postgres"
    password = PASSWORD

    def __init__(self) -> None:
        self.initdb = _pg_bin("initdb")
        self.pg_ctl = _pg_bin("pg_ctl")
        self.base = Path(tempfile.mkdtemp(prefix="hato-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.logfile = self.base / "server.log"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        self._owner: tuple[int, int] | None = None
        if self.as_root:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("the postgres system user is missing: install the Debian "
                            "package postgresql")
            self._owner = (pw.pw_uid, pw.pw_gid)

    # -- running the tools ----------------------------------------------------

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self.as_root else []

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = subprocess.run([*self._prefix(), *args], capture_output=True, text=True,
                              env=env, timeout=120, cwd=str(self.base), check=False)
        if check and proc.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-3000:] if self.logfile.exists() else ""
            pytest.fail(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                        f"{proc.stderr}\n{log}")
        return proc

    def _chown(self, path: Path) -> None:
        if self._owner:
            os.chown(path, *self._owner)

    # -- life cycle ---------------------------------------------------------------

    def create(self) -> None:
        self.socket_dir.mkdir()
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        os.chmod(self.base, 0o755)
        for path in (self.base, self.socket_dir, pwfile):
            self._chown(path)
        self._run(self.initdb, "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                  "--no-locale", "--no-sync")
        pwfile.unlink()

    def start(self) -> None:
        options = (f"-c listen_addresses={self.host} -p {self.port} "
                   f"-c unix_socket_directories={self.socket_dir} -c fsync=off "
                   f"-c full_page_writes=off -c synchronous_commit=off "
                   f"-c shared_buffers=16MB -c max_connections=60")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.logfile), "-w",
                  "-t", "60", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop",
                  check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        proc = self._run(self.pg_ctl, "-D", str(self.data), "status", check=False)
        return proc.returncode == 0

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    # -- using it -----------------------------------------------------------------

    def connect(self, dbname: str = "postgres"):  # -> psycopg.Connection
        import psycopg

        return psycopg.connect(host=self.host, port=self.port, user=self.user,
                               password=self.password, dbname=dbname, autocommit=True,
                               connect_timeout=10)

    def create_database(self, name: str) -> str:
        """A fresh database (dropped first if it exists)."""
        with self.connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
        return name

    def execute(self, dbname: str, sql: str, rows: list[tuple] | None = None) -> None:
        with self.connect(dbname) as conn:
            if rows is None:
                conn.execute(sql)
            else:
                with conn.cursor() as cur:
                    cur.executemany(sql, rows)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect():
                    return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


_lock = threading.Lock()
_server: PgServer | None = None
_users = 0


def acquire() -> PgServer:
    global _server, _users
    with _lock:
        if _server is None:
            server = PgServer()
            try:
                server.create()
                server.start()
                server.wait_ready()
            except BaseException:
                server.stop("immediate")
                server.remove()
                raise
            _server = server
        _users += 1
        return _server


def release() -> None:
    global _server, _users
    with _lock:
        _users -= 1
        if _users <= 0 and _server is not None:
            _server.stop("immediate")
            _server.remove()
            _server = None
            _users = 0


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    server = acquire()
    try:
        yield server
    finally:
        release()

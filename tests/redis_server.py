"""A private Redis server for the tests, on loopback only.

:class:`RedisServer` runs Debian's ``redis-server`` (package redis-server) in
a fresh directory under the system temp directory, on a free port of
127.0.0.1 and a unix socket in that directory, without persistence
(``--save '' --appendonly no``). It never touches a system Redis. The test
can :meth:`~RedisServer.stop` it and :meth:`~RedisServer.start` it again on
the same port and socket (:meth:`~RedisServer.restart`), or freeze it with
SIGSTOP (:meth:`~RedisServer.pause`) to play a server that accepts but does
not answer.

:func:`redis_server` is a pytest fixture (one server per test, removed
after it); :func:`running_redis` is the same as a context manager for
tests that want more than one server or extra arguments::

    with running_redis("--requirepass", "secret") as server:
        ...

:meth:`~RedisServer.command` speaks RESP over a plain socket, so the helper
needs no client library.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.ports import free_port


def _free_port() -> int:
    return free_port()


class RedisError(Exception):
    """An error reply (``-ERR …``) to :meth:`RedisServer.command`."""


def _encode(args: tuple) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def _read_reply(f):
    line = f.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode(errors="replace")
    if kind == b"*":
        n = int(rest)
        if n < 0:
            return None
        return [_read_reply(f) for _ in range(n)]
    raise RedisError(f"unexpected reply {line!r}")


class RedisServer:
    """One redis-server in a temporary directory."""

    host = "127.0.0.1"

    def __init__(self, *extra_args: str, password: str | None = None,
                 tls: tuple[Path, Path, Path] | None = None) -> None:
        """*tls* = (certificate, key, CA) adds a TLS port (:attr:`tls_url`)
        beside the plain one."""
        self.binary = require_tool("redis-server", "redis-server")
        self.base = Path(tempfile.mkdtemp(prefix="hato-redis-"))
        self.socket_path = self.base / "redis.sock"
        self.logfile = self.base / "redis.log"
        self.port = _free_port()
        self.password = password
        self.extra_args = list(extra_args)
        if password is not None:
            self.extra_args += ["--requirepass", password]
        self.tls_port: int | None = None
        if tls is not None:
            self.tls_port = _free_port()
            cert, key, ca = tls
            self.extra_args += ["--tls-port", str(self.tls_port), "--tls-cert-file", str(cert),
                                "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                                "--tls-auth-clients", "no"]
        self.proc: subprocess.Popen | None = None
        self.paused = False

    # -- addresses ------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (with the password when there is one)."""
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def tls_url(self) -> str:
        """``rediss://127.0.0.1:TLSPORT/0`` (add ``?ssl_ca_certs=CA``)."""
        assert self.tls_port is not None
        auth = f":{self.password}@" if self.password is not None else ""
        return f"rediss://{auth}{self.host}:{self.tls_port}/0"

    @property
    def unix_url(self) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    # -- life cycle -----------------------------------------------------------

    def _argv(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", self.host,
                "--protected-mode", "yes", "--dir", str(self.base),
                "--save", "", "--appendonly", "no", "--daemonize", "no",
                "--logfile", str(self.logfile),
                "--unixsocket", str(self.socket_path), "--unixsocketperm", "700",
                *self.extra_args]

    def start(self, timeout: float = 15.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(self._argv(), cwd=str(self.base),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.paused = False
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"redis-server exited with status {self.proc.returncode}: "
                            f"{self.log()[-2000:]}")
            try:
                if self.command("PING", timeout=1.0) == "PONG":
                    return
            except (OSError, ConnectionError):
                pass
            except RedisError as err:  # LOADING, or NOAUTH without a password
                if "NOAUTH" in str(err):
                    return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not answer on port {self.port}: "
                            f"{self.log()[-2000:]}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the server (its data is gone: nothing is persisted)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            if self.paused:
                proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.proc = None
        self.paused = False

    def restart(self) -> None:
        """Stop and start again on the same port and socket, empty."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections are accepted by the kernel but never answered."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")
        except OSError:
            return ""

    # -- using it -------------------------------------------------------------

    def command(self, *args, timeout: float = 5.0):
        """Send one command over a fresh TCP connection; the decoded reply."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            f = s.makefile("rb")
            if self.password is not None:
                s.sendall(_encode(("AUTH", self.password)))
                _read_reply(f)
            s.sendall(_encode(args))
            return _read_reply(f)


@contextmanager
def running_redis(*extra_args: str, password: str | None = None,
                  tls: tuple[Path, Path, Path] | None = None) -> Iterator[RedisServer]:
    server = RedisServer(*extra_args, password=password, tls=tls)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


__all__ = ["RedisError", "RedisServer", "redis_server", "running_redis"]

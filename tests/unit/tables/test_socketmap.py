"""socketmap: tables against a small netstring server this test starts on
127.0.0.1 (and on a unix socket): found, not found, TEMP/TIMEOUT/PERM
replies, a server that closes the connection, a server that is down, a
server that never answers, malformed and oversized replies.

:class:`SocketmapServer` is also used by tests/differential/test_tables_sql_socketmap.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from hato.tables.base import TableError, TableRetry
from hato.tables.registry import open_table
from hato.tables.socketmap import SocketmapTable
from tests.ports import close_listener, free_port

# -- the server ------------------------------------------------------------------

CLOSE = object()  # close the connection without a reply
SILENT = object()  # never reply



@dataclass(frozen=True)
class Raw:
    data: bytes


Handler = Callable[[str, str], object]


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class SocketmapServer:
    def __init__(self, handler: Handler, unix_path: str | None = None,
                 close_after_reply: bool = False):
        self.handler = handler
        self.close_after_reply = close_after_reply
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._clients: list[socket.socket] = []
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            self.endpoint = f"unix:{unix_path}"
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind(("127.0.0.1", 0))
            self.endpoint = f"inet:127.0.0.1:{self.sock.getsockname()[1]}"
        self.unix_path = unix_path
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def spec(self, name: str) -> str:
        return f"{self.endpoint}:{name}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
                self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        conn.settimeout(30)
        try:
            while not self._stop.is_set():
                colon = buf.find(b":")
                if colon < 0 or len(buf) < colon + 1 + int(buf[:colon] or b"0") + 1:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                    continue
                length = int(buf[:colon])
                payload = buf[colon + 1:colon + 1 + length]
                assert buf[colon + 1 + length:colon + 2 + length] == b","
                buf = buf[colon + 2 + length:]
                name, _, key = payload.decode("utf-8").partition(" ")
                with self._lock:
                    self.requests.append((name, key))
                reply = self.handler(name, key)
                if reply is CLOSE:
                    return
                if reply is SILENT:
                    self._stop.wait(60)
                    return
                if isinstance(reply, Raw):
                    conn.sendall(reply.data)
                else:
                    assert isinstance(reply, bytes)
                    conn.sendall(netstring(reply))
                if self.close_after_reply:
                    return
        except OSError:
            return
        finally:
            conn.close()

    def close(self) -> None:
        self._stop.set()
        close_listener(self.sock)
        with self._lock:
            for conn in self._clients:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
        self._thread.join(5)
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)


# -- the tests -------------------------------------------------------------------------

DATA = {"alice@example.com": "alice@mail.example.com", "Bob": "bob-upper", "bob": "bob-lower",
        "empty": "", "ünï": "cödé", "sp ace": "value with spaces"}


def answer(name: str, key: str) -> object:
    if name != "virtual":
        return b"PERM unknown map " + name.encode()
    if key in DATA:
        return b"OK " + DATA[key].encode()
    if key == "temp":
        return b"TEMP database is down"
    if key == "timeout":
        return b"TIMEOUT backend too slow"
    if key == "perm":
        return b"PERM  no such thing"
    if key == "weird":
        return b"MAYBE tomorrow"
    if key == "ok-without-blank":
        return b"OK"
    if key == "notfound-bare":
        return b"NOTFOUND"
    if key == "close":
        return CLOSE
    if key == "silent":
        return SILENT
    if key == "garbage":
        return Raw(b"abc:def,")
    if key == "no-comma":
        return Raw(b"5:OK ab;")
    if key == "huge":
        return b"OK " + b"x" * 100001
    if key == "big":
        return b"OK " + b"y" * 99997
    if key == "latin1":
        return b"OK caf\xe9"
    return b"NOTFOUND "


@pytest.fixture
def server() -> Iterator[SocketmapServer]:
    srv = SocketmapServer(answer)
    yield srv
    srv.close()


@pytest.fixture
def table(server: SocketmapServer) -> Iterator[SocketmapTable]:
    t = open_table("socketmap:" + server.spec("virtual"))
    assert isinstance(t, SocketmapTable)
    t.timeout = 2.0
    yield t
    t.close()


def test_found_and_not_found(table: SocketmapTable, server: SocketmapServer) -> None:
    assert table.get("alice@example.com") == "alice@mail.example.com"
    assert table.get("nobody@example.com") is None
    assert table.get("sp ace") == "value with spaces"
    assert table.get("empty") == ""
    assert table.get("ünï") == "cödé"
    assert table.get("notfound-bare") is None
    assert table.get("ok-without-blank") is None  # Postfix: no value, not found
    assert table.get("big") == "y" * 99997
    assert ("virtual", "alice@example.com") in server.requests
    assert table.pattern_table


def test_keys_are_sent_as_they_come(table: SocketmapTable, server: SocketmapServer) -> None:
    assert table.get("Bob") == "bob-upper"
    assert table.get("bob") == "bob-lower"
    assert server.requests[-2:] == [("virtual", "Bob"), ("virtual", "bob")]


def test_one_connection_for_many_lookups(table: SocketmapTable,
                                         server: SocketmapServer) -> None:
    for _ in range(20):
        assert table.get("bob") == "bob-lower"
    assert server.connections == 1


@pytest.mark.parametrize("key, words", [
    ("temp", "temporary error: database is down"),
    ("timeout", "timeout error: backend too slow"),
    ("perm", "permanent error: no such thing"),
    ("weird", "unknown error: tomorrow"),
])
def test_error_replies_are_retries(table: SocketmapTable, key: str, words: str) -> None:
    with pytest.raises(TableRetry) as info:
        table.get(key)
    assert words in str(info.value)
    # the connection is still good
    assert table.get("bob") == "bob-lower"


def test_unknown_map_name_is_the_servers_business(server: SocketmapServer) -> None:
    t = open_table("socketmap:" + server.spec("other"))
    try:
        with pytest.raises(TableRetry, match="permanent error: unknown map other"):
            t.get("bob")
    finally:
        t.close()


def test_server_closing_between_lookups_is_transparent() -> None:
    srv = SocketmapServer(answer, close_after_reply=True)
    t = open_table("socketmap:" + srv.spec("virtual"))
    try:
        for _ in range(5):
            assert t.get("bob") == "bob-lower"
        assert srv.connections == 5
    finally:
        t.close()
        srv.close()


def test_server_closing_without_reply_is_a_retry(table: SocketmapTable,
                                                 server: SocketmapServer) -> None:
    with pytest.raises(TableRetry, match="lookup error"):
        table.get("close")
    # tried twice (the first close might have been an old connection), then gave up
    assert server.requests.count(("virtual", "close")) == 2
    assert table.get("bob") == "bob-lower"


def test_server_restart_is_transparent() -> None:
    srv = SocketmapServer(answer)
    port = int(srv.endpoint.rsplit(":", 1)[1])
    t = open_table(f"socketmap:inet:127.0.0.1:{port}:virtual")
    try:
        assert t.get("bob") == "bob-lower"
        srv.close()
        with pytest.raises(TableRetry):
            t.get("bob")
        srv2 = _server_on_port(port)
        try:
            assert t.get("bob") == "bob-lower"
        finally:
            srv2.close()
    finally:
        t.close()


def _server_on_port(port: int) -> SocketmapServer:
    srv = SocketmapServer.__new__(SocketmapServer)
    srv.handler = answer
    srv.close_after_reply = False
    srv.connections = 0
    srv.requests = []
    srv._lock = threading.Lock()
    srv._stop = threading.Event()
    srv._clients = []
    srv.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.sock.bind(("127.0.0.1", port))
    srv.endpoint = f"inet:127.0.0.1:{port}"
    srv.unix_path = None
    srv.sock.listen(16)
    srv.sock.settimeout(0.2)
    srv._thread = threading.Thread(target=srv._accept_loop, daemon=True)
    srv._thread.start()
    return srv


def test_server_down_is_a_retry() -> None:
    port = free_port()  # nobody listens there
    t = open_table(f"socketmap:inet:127.0.0.1:{port}:virtual")
    try:
        with pytest.raises(TableRetry, match="lookup error"):
            t.get("bob")
    finally:
        t.close()


def test_silent_server_times_out(table: SocketmapTable) -> None:
    table.timeout = 0.5
    started = time.monotonic()
    with pytest.raises(TableRetry, match="timeout"):
        table.get("silent")
    assert time.monotonic() - started < 10
    table.timeout = 2.0
    assert table.get("bob") == "bob-lower"


@pytest.mark.parametrize("key", ["garbage", "no-comma", "huge"])
def test_bad_replies_are_retries(table: SocketmapTable, key: str) -> None:
    with pytest.raises(TableRetry, match="netstring"):
        table.get(key)
    assert table.get("bob") == "bob-lower"


def test_non_utf8_value_is_a_retry(table: SocketmapTable) -> None:
    with pytest.raises(TableRetry, match="non-UTF-8"):
        table.get("latin1")


def test_idle_connection_is_replaced(table: SocketmapTable, server: SocketmapServer) -> None:
    table.max_idle = 0.2
    assert table.get("bob") == "bob-lower"
    time.sleep(0.4)
    assert table.get("bob") == "bob-lower"
    assert server.connections == 2


def test_unix_socket(tmp_path) -> None:
    path = str(tmp_path / "sockmap.sock")
    srv = SocketmapServer(answer, unix_path=path)
    t = open_table(f"socketmap:unix:{path}:virtual")
    try:
        assert t.get("alice@example.com") == "alice@mail.example.com"
        assert t.get("nobody") is None
    finally:
        t.close()
        srv.close()


def test_concurrent_lookups(table: SocketmapTable) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(50):
            key, want = (("bob", "bob-lower") if (n + i) % 2 else ("Bob", "bob-upper"))
            got = table.get(key)
            if got != want:
                errors.append(f"{key}: {got}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


@pytest.mark.parametrize("spec", [
    "socketmap:", "socketmap:name", "socketmap:tcp:127.0.0.1:99:name",
    "socketmap:inet:127.0.0.1:name", "socketmap:inet:127.0.0.1:nosuchservice:name",
    "socketmap:unix::name",
])
def test_bad_endpoints(spec: str) -> None:
    with pytest.raises(TableError):
        open_table(spec)


def test_ipv6_endpoint_is_parsed() -> None:
    t = open_table("socketmap:inet:[::1]:9999:virtual")
    assert isinstance(t, SocketmapTable)
    assert t.address == ("::1", 9999) and t.family == socket.AF_INET6
    assert t.mapname == "virtual"

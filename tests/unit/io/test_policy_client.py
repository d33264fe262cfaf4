"""The policy delegation client (io.policy_client) against a scripted policy
server on a real socket: answers, connection reuse across callers and
threads, request_limit, max_idle, max_ttl, and every kind of trouble with
Postfix's warnings, tries and retry delay."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import pytest

from hato.io.policy_client import PolicyClient
from hato.policy.smtpd_policy import PolicyService
from tests.policy_peer import CLOSE, HANG, PolicyPeer
from tests.ports import free_port

ATTRS = [("request", "smtpd_access_policy"), ("protocol_state", "RCPT"),
         ("sender", "a@example.org")]


@pytest.fixture
def server_factory():
    servers: list[PolicyPeer] = []

    def make(behave=None, **kw) -> PolicyPeer:
        s = PolicyPeer(behave or (lambda c, r, a: b"action=DUNNO\n\n"), **kw)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service(port: int, **kw) -> PolicyService:
    endpoint = f"inet:127.0.0.1:{port}"
    return PolicyService(endpoint if not kw else endpoint + ", x", endpoint, **kw)


def client(**kw) -> tuple[PolicyClient, list[float]]:
    sleeps: list[float] = []
    c = PolicyClient(kw.pop("queue_directory", "/nonexistent"), sleep=sleeps.append, **kw)
    return c, sleeps


def test_answer_and_reuse_across_requests(server_factory) -> None:
    srv = server_factory(lambda c, r, a: f"action=DEFER_IF_PERMIT try {r}\n\n".encode())
    c, sleeps = client()
    svc = service(srv.port)
    for i in range(3):
        answer = c(svc, ATTRS)
        assert (answer.action, answer.warnings) == (f"DEFER_IF_PERMIT try {i}", [])
    assert srv.connections == 1 and c.connections_made(svc) == 1
    assert srv.requests[0] == ATTRS
    assert sleeps == []


def test_concurrent_callers_get_their_own_connections_then_share(server_factory) -> None:
    gate = threading.Barrier(4)

    def behave(c, r, a):
        if r == 0:
            gate.wait(5)  # four requests in flight at once
        return f"action=OK {a['sender']}\n\n".encode()
    srv = server_factory(behave)
    c, _ = client()
    svc = service(srv.port)
    results: dict[int, str | None] = {}

    def ask(i: int) -> None:
        results[i] = c(svc, [("sender", f"s{i}")]).action
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == {i: f"OK s{i}" for i in range(4)}
    assert srv.connections == 4
    for i in range(8):
        assert c(svc, [("sender", "again")]).action == "OK again"
    assert srv.connections == 4  # the idle ones are reused


def test_pool_size_bounds_the_idle_connections(server_factory) -> None:
    gate = threading.Barrier(3)

    def behave(c, r, a):
        if r == 0:
            gate.wait(5)
        return b"action=DUNNO\n\n"
    srv = server_factory(behave)
    c, _ = client(pool_size=1)
    svc = service(srv.port)
    threads = [threading.Thread(target=c, args=(svc, ATTRS)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    srv.wait(lambda: srv.closed_by_client == 2)
    assert len(c.pool(svc).idle) == 1


def test_request_limit(server_factory) -> None:
    srv = server_factory()
    c, _ = client()
    svc = service(srv.port, request_limit=2)
    for _ in range(5):
        assert c(svc, ATTRS).action == "DUNNO"
    assert srv.connections == 3
    srv.wait(lambda: srv.closed_by_client == 2)


def test_max_idle(server_factory) -> None:
    srv = server_factory()
    clock = Clock()
    c, _ = client(clock=clock)
    svc = service(srv.port, max_idle=10, max_ttl=1000)
    c(svc, ATTRS)
    clock.now += 9
    c(svc, ATTRS)
    assert srv.connections == 1
    clock.now += 10  # idle 10 s since the last use
    c(svc, ATTRS)
    assert srv.connections == 2
    srv.wait(lambda: srv.closed_by_client == 1)


def test_max_ttl(server_factory) -> None:
    srv = server_factory()
    clock = Clock()
    c, _ = client(clock=clock)
    svc = service(srv.port, max_idle=100, max_ttl=30)
    for _ in range(4):
        c(svc, ATTRS)
        clock.now += 9
    assert srv.connections == 1  # used at 0, 9, 18, 27
    c(svc, ATTRS)  # at 36: too old
    assert srv.connections == 2


def test_idle_connections_are_swept(server_factory) -> None:
    srv = server_factory()
    other = server_factory()
    clock = Clock()
    c, _ = client(clock=clock)
    c(service(srv.port, max_idle=5), ATTRS)
    clock.now += 6
    c(service(other.port), ATTRS)  # any request closes what is past max_idle
    srv.wait(lambda: srv.closed_by_client == 1)


def test_connection_closed_by_the_server_while_idle(server_factory) -> None:
    srv = server_factory(lambda c, r, a: b"action=DUNNO\n\n" if r == 0 else CLOSE)
    c, sleeps = client()
    svc = service(srv.port)
    assert c(svc, ATTRS).action == "DUNNO"
    # the server ends the connection after its answer; the client finds out
    # before the next request and connects again without a failed attempt
    srv.drop()
    time.sleep(0.05)
    answer = c(svc, ATTRS)
    assert (answer.action, answer.warnings, sleeps) == ("DUNNO", [], [])
    assert srv.connections == 2


def test_not_listening() -> None:
    port = free_port()  # nobody listens there
    c, sleeps = client()
    answer = c(service(port, retry_delay=3), ATTRS)
    server = f"127.0.0.1:{port}"
    assert answer.action is None
    assert answer.warnings == [f"connect to {server}: Connection refused",
                               f"problem talking to server {server}: Connection refused"] * 2
    assert sleeps == [3]


def test_hanging_server_times_out(server_factory) -> None:
    srv = server_factory(lambda c, r, a: HANG)
    c, sleeps = client()
    started = time.monotonic()
    answer = c(service(srv.port, timeout=1), ATTRS)
    assert time.monotonic() - started < 5
    server = f"127.0.0.1:{srv.port}"
    assert answer.action is None
    assert answer.warnings == [
        f"timeout on {server} while reading input attribute name",
        f"problem talking to server {server}: Connection timed out"] * 2
    assert sleeps == [1] and srv.connections == 2


def test_hanging_mid_value(server_factory) -> None:
    def behave(c, r, a):
        return b"action=DUN"  # and nothing more
    srv = server_factory(behave)
    c, _ = client()
    answer = c(service(srv.port, timeout=1, try_limit=1), ATTRS)
    assert answer.warnings == [
        f"timeout on 127.0.0.1:{srv.port} while reading input attribute value",
        f"problem talking to server 127.0.0.1:{srv.port}: Connection timed out"]


def test_close_mid_reply(server_factory) -> None:
    srv = server_factory(lambda c, r, a: CLOSE)
    c, sleeps = client()
    answer = c(service(srv.port), ATTRS)
    server = f"127.0.0.1:{srv.port}"
    assert answer.action is None
    assert answer.warnings == [
        f"premature end-of-input on {server} while reading input attribute name",
        f"premature end-of-input on {server} while reading input attribute name",
        f"problem talking to server {server}: Success"]
    assert sleeps == [1]


def test_close_inside_the_action(server_factory) -> None:
    srv = server_factory(lambda c, r, a: b"action=DEF")
    # the server thread sends, then the test closes the connection under it
    c, _ = client()
    svc = service(srv.port, try_limit=1, timeout=5)
    result = {}
    t = threading.Thread(target=lambda: result.update(a=c(svc, ATTRS)))
    t.start()
    srv.wait(lambda: srv.requests)
    time.sleep(0.1)
    srv.drop()
    t.join(10)
    assert result["a"].warnings == [
        f"premature end-of-input on 127.0.0.1:{srv.port} while reading input attribute value",
        f"problem talking to server 127.0.0.1:{srv.port}: Success"]


def test_garbage(server_factory) -> None:
    srv = server_factory(lambda c, r, a: b"HTTP/1.0 400 Bad Request\n\n")
    c, _ = client()
    answer = c(service(srv.port), ATTRS)
    server = f"127.0.0.1:{srv.port}"
    assert answer.action is None
    assert answer.warnings == [f"missing attribute action in input from {server}"] * 2 + \
        [f"problem talking to server {server}: Success"]
    assert srv.connections == 2  # a connection that talked garbage is not used again


def test_over_long_reply(server_factory) -> None:
    srv = server_factory(lambda c, r, a: b"action=" + b"x" * 5000)
    c, _ = client(max_line=1024)
    answer = c(service(srv.port, try_limit=1), ATTRS)
    assert answer.warnings[0] == (f"string length > 1024 characters from 127.0.0.1:{srv.port}"
                                  " while reading input attribute value")
    assert answer.action is None


def test_retry_then_answer(server_factory) -> None:
    srv = server_factory(lambda c, r, a: CLOSE if c == 0 else b"action=OK\n\n")
    c, sleeps = client()
    answer = c(service(srv.port, retry_delay=2), ATTRS)
    assert answer.action == "OK"
    assert answer.warnings == [(f"premature end-of-input on 127.0.0.1:{srv.port} while "
                                "reading input attribute name")]
    assert sleeps == [2]


def test_try_limit(server_factory) -> None:
    srv = server_factory(lambda c, r, a: CLOSE)
    c, sleeps = client()
    c(service(srv.port, try_limit=4), ATTRS)
    assert srv.connections == 4 and sleeps == [1, 1, 1]
    c2, sleeps2 = client()
    c2(service(srv.port, try_limit=1), ATTRS)
    assert srv.connections == 5 and sleeps2 == []


def test_trailing_bytes_end_the_connection(server_factory) -> None:
    srv = server_factory(lambda c, r, a: b"action=OK\n\naction=REJECT\n\n")
    c, _ = client()
    svc = service(srv.port)
    assert c(svc, ATTRS).action == "OK"
    assert c(svc, ATTRS).action == "OK"
    assert srv.connections == 2


def test_extra_attributes_are_ignored(server_factory) -> None:
    srv = server_factory(lambda c, r, a: b"x=1\naction=REJECT go away\nlog=yes\n\n")
    c, _ = client()
    assert c(service(srv.port), ATTRS).action == "REJECT go away"


def test_unix_socket_relative_to_the_queue_directory(server_factory) -> None:
    with tempfile.TemporaryDirectory() as queue:
        os.mkdir(os.path.join(queue, "private"))
        srv = server_factory(path=os.path.join(queue, "private", "policy"))
        c, _ = client(queue_directory=queue)
        svc = PolicyService("unix:private/policy", "unix:private/policy")
        assert c(svc, ATTRS).action == "DUNNO"
        local = PolicyService("local:private/policy", "local:private/policy")
        assert c(local, ATTRS).action == "DUNNO"
        absolute = PolicyService("x", f"unix:{queue}/private/policy")
        assert c(absolute, ATTRS).action == "DUNNO"
        assert srv.connections == 3
        missing = PolicyService("unix:private/nothing", "unix:private/nothing")
        answer = c(missing, ATTRS)
        # ENOENT is one of the errors Postfix warns about only at the last try
        assert answer.warnings == [
            "connect to private/nothing: No such file or directory",
            "connect to private/nothing: No such file or directory",
            "problem talking to server private/nothing: No such file or directory"]


def test_close_ends_idle_connections(server_factory) -> None:
    srv = server_factory()
    c, _ = client()
    c(service(srv.port), ATTRS)
    c.close()
    srv.wait(lambda: srv.closed_by_client == 1)


def test_new_settings_for_the_same_name_get_a_new_pool(server_factory) -> None:
    srv = server_factory()
    c, _ = client()
    a = PolicyService("n", f"inet:127.0.0.1:{srv.port}", timeout=5)
    b = PolicyService("n", f"inet:127.0.0.1:{srv.port}", timeout=6)
    c(a, ATTRS)
    c(b, ATTRS)
    assert c.pool(b).service == b and srv.connections == 2


def test_from_settings() -> None:
    from tests.unit.policy.conftest import make_settings

    c = PolicyClient.from_settings(make_settings("queue_directory = /q\n"
                                                 "line_length_limit = 1000\n"))
    assert (c.queue_directory, c.max_line) == ("/q", 4000)

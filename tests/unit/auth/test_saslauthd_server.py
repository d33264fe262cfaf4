"""hato's saslauthd served in-process on a socket in a temp dir: answers,
robustness (short data, long fields, silence, garbage, 1,000 clients), the
worker pool, the credential cache, the log (never a password)."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading

import pytest

from hato.auth.pwcheck import OK, WRONG, Verdict
from hato.auth.saslauthd_server import (
    CredentialCache,
    PidFile,
    SaslauthdServer,
    StartupError,
    bind_socket,
    printable,
)
from hato.proto.saslauthd import encode_request, parse_reply

USERS = {"alice": "wonder land", "bob": "builder"}
SECRET = "wonder land"


class FakeMech:
    """Checks USERS; counts calls; "slow" blocks until *release* is set."""

    def __init__(self):
        self.calls = 0
        self.release = threading.Event()
        self.seen: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, login, password, service, realm):
        with self.lock:
            self.calls += 1
            self.seen.append((login, service, realm))
        if login == "slow":
            assert self.release.wait(30), "the fast request was never answered"
            return OK
        if login == "boom":
            raise RuntimeError("bug")
        if USERS.get(login) == password:
            return OK
        return WRONG if login in USERS else Verdict(False, "Unknown user")


async def _roundtrip(path: str, data: bytes, *, close_write: bool = True,
                     timeout: float = 20) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(data)
        await writer.drain()
        if close_write:
            writer.write_eof()
    except OSError:
        pass  # the server answered (or gave up) before we finished: read what it sent
    reply = await asyncio.wait_for(reader.read(), timeout)
    writer.close()
    return reply


def run_server(tmp_path, coro_fn, *, mech=None, **kwargs):
    mech = mech or FakeMech()
    path = str(tmp_path / "mux")
    server = SaslauthdServer(mech, "fake", **kwargs)

    async def main():
        sock = bind_socket(path)
        await server.start(sock)
        try:
            return await coro_fn(path, server, mech)
        finally:
            await server.stop()
            sock.close()

    return asyncio.run(main())


def ask(path, *fields):
    return _roundtrip(path, encode_request(*fields))


def test_ok_and_no(tmp_path):
    async def body(path, server, mech):
        good = await ask(path, "alice", SECRET, "smtp", "")
        bad = await ask(path, "alice", "nope", "smtp", "")
        unknown = await ask(path, "mallory", "x", "smtp", "")
        return good, bad, unknown

    good, bad, unknown = run_server(tmp_path, body)
    assert good == b"\x00\x02OK"
    assert parse_reply(bad) == (False, "Incorrect password")
    assert parse_reply(unknown)[0] is False


def test_socket_mode_and_stale_socket_replaced(tmp_path):
    path = str(tmp_path / "mux")
    s1 = bind_socket(path)
    s1.close()  # leaves a stale socket file
    s2 = bind_socket(path)
    try:
        assert os.stat(path).st_mode & 0o777 == 0o777
    finally:
        s2.close()
    (tmp_path / "file").write_text("x")
    with pytest.raises(StartupError):
        bind_socket(str(tmp_path / "file"))


def test_realm_join_and_service(tmp_path):
    async def body(path, server, mech):
        await ask(path, "bob", "builder", "imap", "example.org")
        return mech.seen

    seen = run_server(tmp_path, body, realm_join=True)
    assert seen == [("bob@example.org", "imap", "example.org")]
    seen = run_server(tmp_path, body)
    assert seen == [("bob", "imap", "example.org")]


def test_length_larger_than_data_then_close(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, "hato")

    async def body(path, server, mech):
        return await _roundtrip(path, struct.pack(">H", 100) + b"alice")

    assert run_server(tmp_path, body) == b""
    assert "connection closed while reading login" in caplog.text


def test_length_larger_than_data_then_silence_times_out(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, "hato")

    async def body(path, server, mech):
        silent = await _roundtrip(path, struct.pack(">H", 100) + b"alice", close_write=False)
        nothing = await _roundtrip(path, b"", close_write=False)
        good = await ask(path, "alice", SECRET, "smtp", "")  # others are still served
        return silent, nothing, good, server.stats.timeouts

    silent, nothing, good, timeouts = run_server(tmp_path, body, read_timeout=0.3)
    assert silent == b"" and nothing == b""
    assert good == b"\x00\x02OK"
    assert timeouts == 2
    assert "no complete request within 0.3s" in caplog.text


@pytest.mark.parametrize("field", range(4))
def test_field_over_limit_is_no(tmp_path, caplog, field):
    caplog.set_level(logging.DEBUG, "hato")
    values = [b"alice", SECRET.encode(), b"smtp", b""]

    async def body(path, server, mech):
        data = b""
        for i, v in enumerate(values):
            if i == field:
                v = b"A" * 257
            data += struct.pack(">H", len(v)) + v
        return await _roundtrip(path, data), mech.calls

    reply, calls = run_server(tmp_path, body)
    assert reply == b"\x00\x03NO "
    assert calls == 0
    assert "exceeded MAX_REQ_LEN: 256" in caplog.text


def test_field_at_limit_is_checked(tmp_path):
    async def body(path, server, mech):
        return await ask(path, "alice", "p" * 256, "s" * 256, "r" * 256), mech.calls

    reply, calls = run_server(tmp_path, body)
    assert parse_reply(reply)[0] is False and calls == 1


def test_empty_login_and_password(tmp_path):
    async def body(path, server, mech):
        a = await _roundtrip(path, b"\x00\x00\x00\x01x\x00\x04smtp\x00\x00")
        b = await _roundtrip(path, b"\x00\x05alice\x00\x00\x00\x04smtp\x00\x00")
        return a, b, mech.calls

    a, b, calls = run_server(tmp_path, body)
    assert a == b"\x00\x16NO NULL login received"
    assert b == b"\x00\x19NO NULL password received"
    assert calls == 0


def test_binary_garbage(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, "hato")
    import random

    rng = random.Random(7)
    blobs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000)))
             for _ in range(60)]
    blobs += [b"\x00\x05al\x00ce\x00\x01x\x00\x00\x00\x00", b"\xff\xff" + b"\x00" * 10]

    async def body(path, server, mech):
        replies = await asyncio.gather(*(_roundtrip(path, b) for b in blobs))
        good = await ask(path, "alice", SECRET, "smtp", "")
        return replies, good

    replies, good = run_server(tmp_path, body)
    for reply in replies:
        assert reply == b"" or parse_reply(reply)[0] is False
    assert good == b"\x00\x02OK"
    assert "bad request" in caplog.text


def test_mechanism_bug_is_no(tmp_path, caplog):
    async def body(path, server, mech):
        return await ask(path, "boom", "x", "smtp", "")

    assert parse_reply(run_server(tmp_path, body)) == (False, "internal error")
    assert "Traceback" in caplog.text


def test_thousand_concurrent_connections(tmp_path):
    async def body(path, server, mech):
        tasks = []
        for i in range(1000):
            user = ("alice", "bob", "carol")[i % 3]
            pw = USERS.get(user, "x") if i % 2 else "wrong"
            tasks.append((user, pw, ask(path, user, pw, "smtp", "")))
        replies = await asyncio.gather(*(t[2] for t in tasks))
        return [(u, p, r) for (u, p, _), r in zip(tasks, replies)]

    results = run_server(tmp_path, body, workers=8)
    assert len(results) == 1000
    for user, pw, reply in results:
        assert parse_reply(reply)[0] == (USERS.get(user) == pw), (user, reply)


def test_slow_check_does_not_block_others(tmp_path):
    """A check that blocks (PAM's failure delay) holds one worker: another
    client is answered meanwhile, after which the slow one is released."""

    async def body(path, server, mech):
        slow = asyncio.ensure_future(ask(path, "slow", "x", "smtp", ""))
        await asyncio.sleep(0)
        fast = await ask(path, "alice", SECRET, "smtp", "")
        mech.release.set()
        return fast, await slow

    fast, slow = run_server(tmp_path, body, workers=2)
    assert fast == b"\x00\x02OK" and slow == b"\x00\x02OK"


def test_password_never_logged(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, "hato")

    async def body(path, server, mech):
        await ask(path, "alice", SECRET, "smtp", "")
        await ask(path, "alice", "Hunter2-secret", "smtp", "")
        await _roundtrip(path, encode_request("alice", "Hunter2-secret", "s")[:-3])

    run_server(tmp_path, body)
    assert "auth success: [user=alice] [service=smtp]" in caplog.text
    assert "auth failure: [user=alice]" in caplog.text
    assert SECRET not in caplog.text and "Hunter2" not in caplog.text


def test_printable_escapes():
    assert printable(b"a\x00b\n]") == "a\\x00b\\x0a\\x5d"
    assert printable("x" * 100).endswith("...")


# -- cache -------------------------------------------------------------------------------

def test_cache_hits_skip_the_mechanism(tmp_path):
    async def body(path, server, mech):
        for _ in range(3):
            assert await ask(path, "alice", SECRET, "smtp", "") == b"\x00\x02OK"
        calls_after_good = mech.calls
        # a wrong password goes to the mechanism and flushes the entry
        assert parse_reply(await ask(path, "alice", "bad", "smtp", ""))[0] is False
        await ask(path, "alice", SECRET, "smtp", "")
        # another service is another entry
        await ask(path, "alice", SECRET, "imap", "")
        return calls_after_good, mech.calls, server.cache

    calls_after_good, calls, cache = run_server(tmp_path, body, cache=CredentialCache(60))
    assert calls_after_good == 1
    assert calls == 4
    assert len(cache) == 2


def test_cache_stores_salted_hashes_only():
    cache = CredentialCache(60)
    ident = (b"alice", b"", b"smtp")
    cache.store(ident, SECRET.encode())
    cache.store((b"bob", b"", b"smtp"), SECRET.encode())
    (s1, d1, _), (s2, d2, _) = cache.values()
    assert s1 != s2 and d1 != d2  # same password, different salts
    for blob in (s1, d1, s2, d2):
        assert SECRET.encode() not in blob
    assert cache.lookup(ident, SECRET.encode())
    assert not cache.lookup(ident, b"other")


def test_cache_expires_and_flushes():
    now = [1000.0]
    cache = CredentialCache(10, clock=lambda: now[0])
    ident = (b"alice", b"", b"smtp")
    cache.store(ident, b"pw")
    now[0] += 9.9
    assert cache.lookup(ident, b"pw")
    now[0] += 0.2
    assert not cache.lookup(ident, b"pw")
    assert len(cache) == 0
    cache.store(ident, b"pw")
    cache.flush(ident)
    assert not cache.lookup(ident, b"pw")


def test_cache_size_bound():
    cache = CredentialCache(60, max_entries=3)
    for i in range(5):
        cache.store((str(i).encode(), b"", b"smtp"), b"pw")
    assert len(cache) == 3
    assert not cache.lookup((b"0", b"", b"smtp"), b"pw")
    assert cache.lookup((b"4", b"", b"smtp"), b"pw")


# -- pid file ----------------------------------------------------------------------------

def test_pid_file_lock_refuses_a_second_process(tmp_path):
    pf = PidFile(str(tmp_path))
    pf.acquire()
    try:
        assert (tmp_path / "saslauthd.pid").read_text() == f"{os.getpid()}\n"
        assert (tmp_path / "saslauthd.pid.lock").exists()
        pid = os.fork()
        if pid == 0:  # fcntl locks are per process: try from another one
            try:
                PidFile(str(tmp_path)).acquire()
            except StartupError:
                os._exit(7)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 7
    finally:
        pf.release()
    assert not (tmp_path / "saslauthd.pid").exists()
    assert not (tmp_path / "saslauthd.pid.lock").exists()

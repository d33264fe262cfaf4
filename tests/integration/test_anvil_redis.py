"""anvil's shared counters (hato.io.anvil_redis) against a real redis-server.

Every test starts its own ``redis-server`` on loopback in a temp dir
(tests/redis_server.py), never the system one, and removes it afterwards.

* Postfix's fixed windows: rates grow within ``rate_time_unit`` and all of
  them restart at 0 with the first event after it (rate_time_unit 1–2 s).
* Two instances (two RedisCounters with different ids) share every rate and
  sum their connection counts; disconnect never goes below 0.
* A crashed instance's counts are replaced by its resync; an instance that
  stopped living (its live key expired) stops counting.
* Every key carries an expiry.
* Redis stopped → RedisUnavailable at once; Redis frozen (SIGSTOP) →
  RedisUnavailable within the timeout; both work again afterwards (the
  scripts are loaded again after NOSCRIPT).
* 200 concurrent events through a pool of 8 count exactly 200, every
  intermediate answer once.
* URL forms: ``redis:redis://…``, ``unix://``, a password, an ACL user with
  only the rights docs/scale-out.md lists.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from hato.io.anvil_redis import RedisCounters, RedisUnavailable, backend_url, display_url
from tests.certs import TestCA
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

IDENT = "smtp:192.0.2.1"


@pytest.fixture
def server() -> Iterator[RedisServer]:
    """A redis-server of this test's own, removed after it."""
    with running_redis() as s:
        yield s


def counters(url: str, instance: str = "a", **kw) -> RedisCounters:
    kw.setdefault("rate_time_unit", 60)
    return RedisCounters(url, instance=instance, **kw)


def run(coro):
    return asyncio.run(coro)


# -- windows -------------------------------------------------------------------------------


def test_rates_count_within_the_window_and_restart_after_it(server: RedisServer):
    async def go():
        c = counters(server.url, rate_time_unit=1)
        try:
            assert await c.event("connect", IDENT) == (1, 1)
            assert await c.event("connect", IDENT) == (2, 2)
            assert await c.event("message", IDENT) == (0, 1)
            assert await c.event("message", IDENT) == (0, 2)
            assert await c.event("recipient", IDENT) == (0, 1)
            assert await c.event("newtls", IDENT) == (0, 1)
            assert await c.event("auth", IDENT) == (0, 1)
            assert await c.lookup(IDENT) == {"count": 2, "rate": 2, "message": 2,
                                             "recipient": 1, "newtls": 1, "auth": 1}
            await asyncio.sleep(2.2)  # whole seconds: start + 1 < now for sure
            # a window that is over reads as 0, the connections stay
            assert await c.lookup(IDENT) == {"count": 2, "rate": 0, "message": 0,
                                             "recipient": 0, "newtls": 0, "auth": 0}
            # the next event restarts the window: every rate from 0
            assert await c.event("message", IDENT) == (0, 1)
            assert await c.lookup(IDENT) == {"count": 2, "rate": 0, "message": 1,
                                             "recipient": 0, "newtls": 0, "auth": 0}
            assert await c.event("connect", IDENT) == (3, 1)
        finally:
            await c.close()
    run(go())


def test_window_is_fixed_from_the_first_event(server: RedisServer):
    async def go():
        c = counters(server.url, rate_time_unit=2)
        try:
            t0 = time.monotonic()
            assert await c.event("connect", IDENT) == (1, 1)
            await asyncio.sleep(0.9)
            assert time.monotonic() - t0 < 2.0
            assert (await c.event("connect", IDENT))[1] == 2  # same window
            await asyncio.sleep(2.3)  # > 3 s after the first event: start + 2 < now
            assert (await c.event("connect", IDENT))[1] == 1
            # other idents have windows of their own
            assert await c.event("connect", "smtp:192.0.2.2") == (1, 1)
            assert await c.event("connect", "submission:192.0.2.1") == (1, 1)
        finally:
            await c.close()
    run(go())


def test_window_uses_redis_time(server: RedisServer):
    async def go():
        c = counters(server.url, rate_time_unit=60)
        try:
            await c.event("connect", IDENT)
            start = int(server.command("HGET", c.rate_key(IDENT), "start"))
            server_now = int(server.command("TIME")[0])
            assert 0 <= server_now - start <= 2
        finally:
            await c.close()
    run(go())


# -- instances -----------------------------------------------------------------------------


def test_two_instances_share_rates_and_sum_counts(server: RedisServer):
    async def go():
        a = counters(server.url, "mx1")
        b = counters(server.url, "mx2")
        try:
            assert await a.event("connect", IDENT) == (1, 1)
            assert await b.event("connect", IDENT) == (2, 2)
            assert await b.event("connect", IDENT) == (3, 3)
            assert await a.event("message", IDENT) == (0, 1)
            assert await b.event("message", IDENT) == (0, 2)
            assert await a.event("recipient", IDENT) == (0, 1)
            assert await b.event("recipient", IDENT) == (0, 2)
            assert (await a.lookup(IDENT))["count"] == 3
            assert sorted(server.command("HGETALL", a.count_key(IDENT))) == \
                sorted(["mx1", "1", "mx2", "2"])

            await b.disconnect(IDENT)
            assert await a.lookup(IDENT) == {"count": 2, "rate": 3, "message": 2,
                                             "recipient": 2, "newtls": 0, "auth": 0}
            await a.disconnect(IDENT)
            await a.disconnect(IDENT)  # one too many: A's count stays at 0
            await a.disconnect(IDENT)
            assert (await b.lookup(IDENT))["count"] == 1
            await b.disconnect(IDENT)
            assert (await b.lookup(IDENT))["count"] == 0
            assert server.command("EXISTS", a.count_key(IDENT)) == 0
            # A's set of idents no longer names it
            assert server.command("SMEMBERS", "hato:anvil:instance:mx1:idents") == []
            # the count starts again from 0, not from below
            assert await b.event("connect", IDENT) == (1, 4)
        finally:
            await a.close()
            await b.close()
    run(go())


def test_disconnect_of_an_unknown_ident(server: RedisServer):
    async def go():
        c = counters(server.url)
        try:
            with pytest.raises(ValueError):
                await c.event("lookup", "smtp:198.51.100.9")
            await c.disconnect("smtp:198.51.100.9")
            assert await c.lookup("smtp:198.51.100.9") == {
                "count": 0, "rate": 0, "message": 0, "recipient": 0, "newtls": 0, "auth": 0}
            assert server.command("EXISTS", c.count_key("smtp:198.51.100.9")) == 0
        finally:
            await c.close()
    run(go())


def test_resync_replaces_the_counts_of_a_crashed_instance(server: RedisServer):
    async def go():
        a = counters(server.url, "mx1")
        b = counters(server.url, "mx2")
        other = "smtp:192.0.2.7"
        try:
            for _ in range(3):
                await a.event("connect", IDENT)
            await a.event("connect", other)
            await b.event("connect", IDENT)
            assert (await b.lookup(IDENT))["count"] == 4
            # mx1 dies without a disconnect; a new process with the same id starts
            await a.close()
            a = counters(server.url, "mx1")
            await a.resync({})
            assert (await b.lookup(IDENT))["count"] == 1
            assert (await b.lookup(other))["count"] == 0
            assert server.command("EXISTS", a.count_key(other)) == 0
            # rates are not counts: they stay
            assert (await b.lookup(IDENT))["rate"] == 4

            # after an outage: what mx1 holds now replaces what Redis had for it
            await a.event("connect", other)
            await a.resync({IDENT: 5, "smtp:192.0.2.8": 2, "smtp:192.0.2.9": 0})
            assert (await b.lookup(IDENT))["count"] == 6
            assert (await b.lookup("smtp:192.0.2.8"))["count"] == 2
            assert (await b.lookup(other))["count"] == 0
            assert (await b.lookup("smtp:192.0.2.9"))["count"] == 0
            assert sorted(server.command("SMEMBERS", "hato:anvil:instance:mx1:idents")) \
                == [IDENT, "smtp:192.0.2.8"]
            # and it goes on from there
            for _ in range(5):
                await a.disconnect(IDENT)
            assert (await b.lookup(IDENT))["count"] == 1
            # resync of one instance leaves the other alone
            await b.resync({})
            assert (await a.lookup(IDENT))["count"] == 0
            assert (await a.lookup("smtp:192.0.2.8"))["count"] == 2
        finally:
            await a.close()
            await b.close()
    run(go())


def test_an_instance_that_stopped_living_stops_counting(server: RedisServer):
    async def go():
        a = counters(server.url, "mx1")
        b = counters(server.url, "mx2", live_ttl=1)
        try:
            await b.event("connect", IDENT)
            await b.event("connect", IDENT)
            assert await a.event("connect", IDENT) == (3, 3)
            await asyncio.sleep(2.2)  # mx2 does nothing: its live key expires
            assert await a.event("connect", IDENT) == (2, 4)
            assert server.command("HKEYS", a.count_key(IDENT)) == ["mx1"]
            # a heartbeat keeps an idle instance counted
            await b.event("connect", IDENT)
            for _ in range(3):
                await asyncio.sleep(0.5)
                assert await b.ping()
            assert (await a.lookup(IDENT))["count"] == 3
        finally:
            await a.close()
            await b.close()
    run(go())


# -- expiry --------------------------------------------------------------------------------


def test_every_key_expires(server: RedisServer):
    async def go():
        c = counters(server.url, "mx1", rate_time_unit=1)
        long = counters(server.url, "mx2", rate_time_unit=300, prefix="other:")
        try:
            await c.event("connect", IDENT)
            await c.event("message", IDENT)
            await long.event("connect", IDENT)
            keys = sorted(server.command("KEYS", "*"))
            assert keys == sorted([
                "hato:anvil:rate:" + IDENT, "hato:anvil:count:" + IDENT,
                "hato:anvil:instance:mx1:idents", "hato:anvil:instance:mx1:live",
                "other:rate:" + IDENT, "other:count:" + IDENT,
                "other:instance:mx2:idents", "other:instance:mx2:live"])
            ttl = {k: server.command("TTL", k) for k in keys}
            assert all(t > 0 for t in ttl.values()), ttl
            assert 55 <= ttl["hato:anvil:rate:" + IDENT] <= 60  # max(2 × 1 s, 60 s)
            assert 590 <= ttl["other:rate:" + IDENT] <= 600  # 2 × 300 s
            assert 3590 <= ttl["hato:anvil:count:" + IDENT] <= 3600
            assert 3590 <= ttl["hato:anvil:instance:mx1:idents"] <= 3600
            assert 590 <= ttl["hato:anvil:instance:mx1:live"] <= 600
            # a rate key of an ident that only sent mail expires as well
            await c.event("auth", "smtp:192.0.2.50")
            assert server.command("TTL", "hato:anvil:rate:smtp:192.0.2.50") > 0
            assert server.command("EXISTS", "hato:anvil:count:smtp:192.0.2.50") == 0
            # events refresh the expiry
            server.command("EXPIRE", "hato:anvil:count:" + IDENT, 5)
            server.command("EXPIRE", "hato:anvil:rate:" + IDENT, 5)
            await c.event("recipient", IDENT)
            assert server.command("TTL", "hato:anvil:count:" + IDENT) > 3500
            assert server.command("TTL", "hato:anvil:rate:" + IDENT) > 50
            # resync and disconnect leave nothing without an expiry
            await c.resync({IDENT: 2, "smtp:192.0.2.60": 1})
            await c.disconnect(IDENT)
            for k in server.command("KEYS", "*"):
                assert server.command("TTL", k) > 0, k
        finally:
            await c.close()
            await long.close()
    run(go())


def test_keys_really_vanish(server: RedisServer):
    async def go():
        c = counters(server.url, "mx1", rate_time_unit=1, session_ttl=1, live_ttl=1)
        try:
            await c.event("connect", IDENT)
            await c.event("message", IDENT)
            # the rate key lives at least 60 s: shorten it to see Redis drop it
            server.command("EXPIRE", c.rate_key(IDENT), 1)
            await asyncio.sleep(2.5)
            assert server.command("KEYS", "*") == []
            # an idle count vanishes: the limit fails open
            assert await c.lookup(IDENT) == {"count": 0, "rate": 0, "message": 0,
                                             "recipient": 0, "newtls": 0, "auth": 0}
        finally:
            await c.close()
    run(go())


# -- Redis away ----------------------------------------------------------------------------


def test_unavailable_when_stopped_and_back_after_restart(server: RedisServer):
    async def go():
        c = counters(server.url, "mx1", timeout=0.5)
        try:
            assert await c.ping()
            assert await c.event("connect", IDENT) == (1, 1)
            server.stop()
            for call in (lambda: c.event("connect", IDENT), lambda: c.event("message", IDENT),
                         lambda: c.disconnect(IDENT), lambda: c.lookup(IDENT),
                         lambda: c.resync({IDENT: 1})):
                t0 = time.monotonic()
                with pytest.raises(RedisUnavailable) as info:
                    await call()
                assert time.monotonic() - t0 < 0.5 + 1.0
                assert str(info.value)
            t0 = time.monotonic()
            assert await c.ping() is False
            assert time.monotonic() - t0 < 1.5

            server.start()  # same port, empty, no scripts loaded
            assert await c.ping()
            await c.resync({IDENT: 1})  # what the anvil service does when Redis is back
            assert await c.event("connect", IDENT) == (2, 1)
            assert await c.lookup(IDENT) == {"count": 2, "rate": 1, "message": 0,
                                             "recipient": 0, "newtls": 0, "auth": 0}
        finally:
            await c.close()
    run(go())


def test_unavailable_within_the_timeout_when_redis_hangs(server: RedisServer):
    async def go():
        c = counters(server.url, "mx1", timeout=0.5)
        try:
            assert await c.event("connect", IDENT) == (1, 1)
            server.pause()
            try:
                for call in (lambda: c.event("connect", IDENT), lambda: c.lookup(IDENT)):
                    t0 = time.monotonic()
                    with pytest.raises(RedisUnavailable):
                        await call()
                    assert time.monotonic() - t0 < 0.5 + 1.0
                # many at once: none waits longer than the timeout for a connection
                t0 = time.monotonic()
                got = await asyncio.gather(*(c.event("message", IDENT) for _ in range(30)),
                                           return_exceptions=True)
                assert all(isinstance(g, RedisUnavailable) for g in got), got
                assert time.monotonic() - t0 < 0.5 + 1.0
            finally:
                server.resume()
            # the script of the interrupted call may still have run: count >= 1
            count, rate = await c.event("connect", IDENT)
            assert count >= 2 and rate >= 2
        finally:
            await c.close()
    run(go())


def test_unavailable_when_nothing_listens():
    async def go():
        server = RedisServer()  # never started: a free port where nothing listens
        try:
            c = counters(server.url, timeout=0.5)
            t0 = time.monotonic()
            with pytest.raises(RedisUnavailable):
                await c.event("connect", IDENT)
            assert time.monotonic() - t0 < 1.5
            assert await c.ping() is False
            await c.close()
        finally:
            server.remove()
    run(go())


# -- concurrency ---------------------------------------------------------------------------


def test_200_concurrent_events_count_exactly_200(server: RedisServer):
    async def go():
        c = counters(server.url, "mx1", pool_size=8)
        try:
            got = await asyncio.gather(*(c.event("connect", IDENT) for _ in range(200)))
            assert sorted(count for count, _ in got) == list(range(1, 201))
            assert sorted(rate for _, rate in got) == list(range(1, 201))
            rates = await asyncio.gather(*(c.event("message", IDENT) for _ in range(200)))
            assert sorted(r for _, r in rates) == list(range(1, 201))
            assert await c.lookup(IDENT) == {"count": 200, "rate": 200, "message": 200,
                                             "recipient": 0, "newtls": 0, "auth": 0}
            await asyncio.gather(*(c.disconnect(IDENT) for _ in range(200)))
            assert (await c.lookup(IDENT))["count"] == 0
            # the pool held no more than its 8 connections (+1: this question)
            info = server.command("INFO", "clients")
            connected = int(info.split("connected_clients:")[1].split()[0])
            assert connected <= 8 + 1
        finally:
            await c.close()
    run(go())


def test_two_instances_concurrently(server: RedisServer):
    async def go():
        a = counters(server.url, "mx1", pool_size=2)
        b = counters(server.url, "mx2", pool_size=2)
        try:
            got = await asyncio.gather(*(x.event("connect", IDENT)
                                         for _ in range(100) for x in (a, b)))
            assert sorted(count for count, _ in got) == list(range(1, 201))
            assert (await a.lookup(IDENT))["count"] == 200
            assert sorted(server.command("HGETALL", a.count_key(IDENT))) == \
                sorted(["mx1", "100", "mx2", "100"])
        finally:
            await a.close()
            await b.close()
    run(go())


# -- URLs ----------------------------------------------------------------------------------


def test_url_forms(server: RedisServer):
    assert backend_url("redis:redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert backend_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert backend_url("redis:rediss://h:6380/1") == "rediss://h:6380/1"
    assert backend_url("redis:unix:///run/redis.sock") == "unix:///run/redis.sock"
    assert display_url("rediss://hato:s3cret@h:6380/0") == "rediss://hato:***@h:6380/0"
    assert display_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(ValueError):
        counters("http://127.0.0.1:6379/0")
    with pytest.raises(ValueError):
        counters(server.url + "?no_such_option=1")

    async def go():
        for url in ("redis:" + server.url, server.url, server.unix_url,
                    "redis:" + server.unix_url):
            c = counters(url, url)
            try:
                assert await c.ping()
                await c.event("connect", IDENT)
            finally:
                await c.close()
        c = counters(server.url.replace("/0", "/3"), "db3")
        try:
            assert await c.event("connect", IDENT) == (1, 1)
        finally:
            await c.close()
        c = counters(server.url, "x")
        try:
            assert (await c.lookup(IDENT))["count"] == 4
        finally:
            await c.close()
    run(go())


def test_password_and_acl_user():
    # the ACL of docs/scale-out.md: only the anvil keys, only the commands used
    acl = ("hato on >anvil-secret resetkeys ~hato:anvil:* resetchannels -@all "
           "+evalsha +script|load +time +hget +hmget +hset +hincrby +hdel "
           "+hgetall +del +expire +exists +set +sadd +srem +smembers")

    async def go(url: str, bad: str):
        c = counters(url, "mx1")
        try:
            assert await c.ping()
            assert await c.event("connect", IDENT) == (1, 1)
            assert await c.event("message", IDENT) == (0, 1)
            await c.disconnect(IDENT)
            await c.resync({IDENT: 1})
            assert (await c.lookup(IDENT))["count"] == 1
        finally:
            await c.close()
        c = counters(bad, "mx1", timeout=0.5)
        try:
            with pytest.raises(RedisUnavailable):
                await c.event("connect", IDENT)
            assert "secret" not in c.display_url
        finally:
            await c.close()

    with running_redis(password="s3cret") as server:
        run(go(server.url, server.url.replace("s3cret", "wrong")))
    with running_redis("--user", *acl.split(), "--user", "default", "off") as server:
        url = f"redis://hato:anvil-secret@127.0.0.1:{server.port}/0"
        run(go(url, url.replace("anvil-secret", "wrong")))


def test_tls(tmp_path):
    ca = TestCA(tmp_path / "ca")
    issued = ca.issue("redis.test")

    async def go(server: RedisServer):
        c = counters(f"redis:{server.tls_url}?ssl_ca_certs={ca.path}", "mx1")
        try:
            assert await c.event("connect", IDENT) == (1, 1)
            assert await c.event("connect", IDENT) == (2, 2)
        finally:
            await c.close()
        # a certificate the client cannot verify: unavailable, not a hang
        c = counters(server.tls_url, "mx1", timeout=0.5)
        try:
            with pytest.raises(RedisUnavailable, match="(?i)certificate"):
                await c.event("connect", IDENT)
        finally:
            await c.close()

    with running_redis(tls=(issued.cert, issued.key, ca.path)) as server:
        run(go(server))

"""The smtp client's connection cache: keys, limits, expiry."""

from __future__ import annotations

from hato.io.smtp_conncache import CachedSession, ConnectionCache


class Conn:
    def __init__(self, messages: int = 1):
        self.messages = messages


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(**kw):
    clock = Clock()
    closed: list[CachedSession] = []
    cache = ConnectionCache(close=closed.append, clock=clock, **kw)
    return cache, clock, closed


def session(clock, uses: int = 1, name: str = "s") -> CachedSession:
    return CachedSession(sock=name, conn=Conn(uses), cand=None, opened=clock())


def test_take_by_either_key_removes_from_both():
    cache, clock, closed = make()
    s = session(clock)
    assert cache.save(s, ("dest:example.org", "addr:192.0.2.1:25"))
    assert cache.take("addr:192.0.2.2:25") is None
    assert cache.take("addr:192.0.2.1:25") is s
    assert cache.take("dest:example.org") is None
    assert len(cache) == 0 and not closed
    assert cache.stats() == {"cached": 0, "saved": 1, "reused": 1, "expired": 0}


def test_most_recent_first():
    cache, clock, _ = make()
    a, b = session(clock, name="a"), session(clock, name="b")
    cache.save(a, ("dest:x",))
    clock.now += 0.5
    cache.save(b, ("dest:x",))
    assert cache.take("dest:x") is b
    assert cache.take("dest:x") is a


def test_idle_limit_expires_and_closes():
    cache, clock, closed = make(idle_limit=2.0)
    s = session(clock)
    cache.save(s, ("dest:x",))
    clock.now += 2.0
    assert cache.take("dest:x") is None
    assert closed == [s] and cache.stats()["expired"] == 1


def test_sweep_closes_idle_sessions_only():
    cache, clock, closed = make(idle_limit=2.0)
    old, new = session(clock, name="old"), None
    cache.save(old, ("dest:x",))
    clock.now += 1.5
    new = session(clock, name="new")
    cache.save(new, ("dest:y",))
    clock.now += 1.0
    assert cache.sweep() == 1
    assert closed == [old] and cache.take("dest:y") is new


def test_reuse_time_limit():
    cache, clock, closed = make(idle_limit=10.0, reuse_time_limit=300.0)
    s = session(clock)
    clock.now += 299.0
    assert cache.save(s, ("dest:x",))
    clock.now += 1.0
    assert cache.take("dest:x") is None and closed == [s]
    late = CachedSession("late", Conn(), None, opened=clock.now - 400)
    assert not cache.save(late, ("dest:x",))  # the caller ends it


def test_reuse_count_limit():
    cache, clock, _ = make(reuse_count_limit=3)
    assert cache.save(session(clock, uses=2), ("dest:x",))
    assert not cache.save(session(clock, uses=3), ("dest:x",))
    unlimited, clock2, _ = make(reuse_count_limit=0)
    assert unlimited.save(session(clock2, uses=10_000), ("dest:x",))


def test_close_all():
    cache, clock, closed = make()
    a, b = session(clock, name="a"), session(clock, name="b")
    cache.save(a, ("dest:x",))
    cache.save(b, ("dest:y",))
    cache.close_all()
    assert set(map(id, closed)) == {id(a), id(b)} and len(cache) == 0

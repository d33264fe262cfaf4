"""anvil's counters and request protocol (hato.proto.anvil)."""

from __future__ import annotations

from collections import Counter

from hato.proto import anvil as A
from hato.proto.attr import Attrs

T0 = 1_000_000.0


def req(request: str, ident: str | None = "smtp:192.0.2.1") -> Attrs:
    return Attrs.of(request=request, ident=ident)


def test_connect_counts_and_rate():
    t = A.AnvilTable(60)
    assert t.connect("smtp:a", T0) == (1, 1)
    assert t.connect("smtp:a", T0 + 1) == (2, 2)
    t.disconnect("smtp:a", T0 + 2)
    assert t.connect("smtp:a", T0 + 3) == (2, 3)
    assert t.connect("submission:a", T0 + 3) == (1, 1)  # per service


def test_fixed_window_as_postfix():
    """The window starts at the first event; the first event after
    start + unit restarts every rate (the count stays)."""
    t = A.AnvilTable(60)
    t.connect("i", T0)
    for _ in range(4):
        t.event("message", "i", T0 + 10)
    assert t.event("message", "i", T0 + 60) == 5  # start + unit is still inside
    assert t.event("message", "i", T0 + 60.5) == 1
    assert t.connect("i", T0 + 61) == (2, 1)
    assert t.event("recipient", "i", T0 + 61) == 1


def test_each_rate_is_its_own():
    t = A.AnvilTable(60)
    for request in ("message", "recipient", "newtls", "auth"):
        assert t.event(request, "i", T0) == 1
    assert t.event("auth", "i", T0) == 2
    r = t.peek("i", T0)
    assert (r.rate, r.mail, r.rcpt, r.newtls, r.auth, r.count) == (0, 1, 1, 1, 2, 0)


def test_entries_expire_a_unit_after_the_last_connection():
    t = A.AnvilTable(60)
    t.connect("i", T0)
    t.event("message", "j", T0)  # never connected: forgotten a unit after its first event
    assert t.expire(T0 + 61) == 1 and len(t) == 1  # i is still connected
    t.disconnect("i", T0 + 100)
    assert t.expire(T0 + 159) == 0
    assert t.expire(T0 + 160.5) == 1 and len(t) == 0


def test_reconnect_cancels_expiry():
    t = A.AnvilTable(10)
    t.connect("i", T0)
    t.disconnect("i", T0 + 1)
    t.connect("i", T0 + 5)
    assert t.expire(T0 + 100) == 0 and len(t) == 1


def test_flood_of_distinct_clients_stays_bounded():
    t = A.AnvilTable(2)
    for n in range(5000):
        ident = f"smtp:10.0.{n // 256}.{n % 256}"
        t.connect(ident, T0 + n / 1000)
        t.disconnect(ident, T0 + n / 1000)
    assert len(t) == 5000
    t.expire(T0 + 10)
    assert len(t) == 0 and len(t._expiry) == 0


def test_disconnect_never_goes_below_zero():
    t = A.AnvilTable(60)
    t.disconnect("nobody", T0)
    t.connect("i", T0)
    t.disconnect("i", T0)
    t.disconnect("i", T0)
    assert t.connect("i", T0) == (1, 2)


def test_protocol_replies():
    t = A.AnvilTable(60)
    held: Counter = Counter()
    assert A.handle(t, req("connect"), T0, held)[0] == Attrs.of(status=0, count=1, rate=1)
    assert A.handle(t, req("message"), T0, held)[0] == Attrs.of(status=0, rate=1)
    assert A.handle(t, req("recipient"), T0, held)[0] == Attrs.of(status=0, rate=1)
    assert A.handle(t, req("newtls"), T0, held)[0] == Attrs.of(status=0, rate=1)
    assert A.handle(t, req("newtls_report"), T0, held)[0] == Attrs.of(status=0, rate=1)
    assert A.handle(t, req("auth"), T0, held)[0] == Attrs.of(status=0, rate=1)
    assert A.handle(t, req("lookup"), T0, held)[0] == Attrs.of(
        status=0, count=1, rate=1, mail=1, rcpt=1, newtls=1, auth=1)
    assert A.handle(t, req("lookup", "smtp:unknown"), T0, held)[0] == Attrs.of(
        status=0, count=0, rate=0, mail=0, rcpt=0, newtls=0, auth=0)
    assert held == Counter({"smtp:192.0.2.1": 1})
    assert A.handle(t, req("disconnect"), T0, held)[0] == Attrs.of(status=0)
    assert not held
    assert A.handle(t, Attrs.of(request="status"), T0)[0] == Attrs.of(status=0, size=1)


def test_malformed_requests_change_nothing():
    t = A.AnvilTable(60)
    t.connect("smtp:192.0.2.1", T0)
    before = A.lookup_reply(t.peek("smtp:192.0.2.1", T0))
    for bad in (Attrs.of(request="explode", ident="smtp:192.0.2.1"), Attrs.of(ident="x"),
                req("connect", None), req("message", ""), req("connect", "x" * 600)):
        reply, warning = A.handle(t, bad, T0, Counter())
        assert reply == Attrs.of(status=A.STATUS_FAIL) and warning
    assert A.lookup_reply(t.peek("smtp:192.0.2.1", T0)) == before
    assert len(t) == 1


def test_disconnect_only_what_the_requester_holds():
    """A requester that reconnected cannot take away another's connections."""
    t = A.AnvilTable(60)
    first, second = Counter(), Counter()
    A.handle(t, req("connect"), T0, first)
    A.handle(t, req("disconnect"), T0, second)
    assert t.peek("smtp:192.0.2.1", T0).count == 1


def test_statistics_lines_in_postfix_order():
    t = A.AnvilTable(60)
    t.connect("smtp:192.0.2.1", T0)
    t.connect("smtp:192.0.2.1", T0)
    t.event("message", "smtp:192.0.2.1", T0)
    t.event("auth", "smtp:192.0.2.9", T0)
    lines = t.stats.report(60, lambda when: "Nov 29 12:59:36")
    assert lines == [
        "statistics: max connection rate 2/60s for (smtp:192.0.2.1) at Nov 29 12:59:36",
        "statistics: max connection count 2 for (smtp:192.0.2.1) at Nov 29 12:59:36",
        "statistics: max message rate 1/60s for (smtp:192.0.2.1) at Nov 29 12:59:36",
        "statistics: max auth rate 1/60s for (smtp:192.0.2.9) at Nov 29 12:59:36",
        "statistics: max cache size 2 at Nov 29 12:59:36",
    ]
    assert t.stats.report(60, str) == []  # the peaks start again

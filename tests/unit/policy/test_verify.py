"""Address verification rules (policy.verify): the cache entry, Postfix's
query/update/clean-up decisions of verify.c, and the probe sender."""

from __future__ import annotations

from hato.policy import verify as V
from hato.policy.verify import CacheEntry, Freshness

RULES = Freshness(positive_expire=1000 * 60, positive_refresh=500 * 60,
                  negative_expire=300 * 60, negative_refresh=100 * 60, negative_cache=True)
NOW = 10_000_000


def test_entry_format_and_parse() -> None:
    e = CacheEntry(V.BOUNCE, 0, 123, "host x said: 550 5.1.1 no: such user (in reply to RCPT TO)")
    assert e.format() == "2:0:123:host x said: 550 5.1.1 no: such user (in reply to RCPT TO)"
    assert CacheEntry.parse(e.format()) == e
    for bad in (None, "", "2:0:123", "x:0:1:t", "4:0:1:t", "0:0:0:t", "0:-1:5:t"):
        assert CacheEntry.parse(bad) is None, bad


def test_unknown_address_is_probed_and_in_progress() -> None:
    out = V.query(None, NOW, RULES)
    assert (out.status, out.text, out.probe) == (V.TODO, "Address verification in progress",
                                                 True)
    assert out.store == CacheEntry(V.TODO, NOW, 0, V.IN_PROGRESS)
    assert not out.delete


def test_probe_in_flight_is_not_repeated() -> None:
    entry = CacheEntry(V.TODO, NOW - 10, 0, V.IN_PROGRESS)
    out = V.query(entry, NOW, RULES)
    assert (out.status, out.probe, out.store) == (V.TODO, False, None)
    # a probe without an answer for PROBE_TTL seconds counts as lost
    out = V.query(CacheEntry(V.TODO, NOW - V.PROBE_TTL - 1, 0, V.IN_PROGRESS), NOW, RULES)
    assert out.probe and out.store == CacheEntry(V.TODO, NOW, 0, V.IN_PROGRESS)


def test_fresh_results_answer_without_probe() -> None:
    ok = CacheEntry(V.OK, 0, NOW - 60, "250 2.1.5 Ok")
    out = V.query(ok, NOW, RULES)
    assert (out.status, out.text, out.probe, out.store) == (V.OK, "250 2.1.5 Ok", False, None)
    bad = CacheEntry(V.BOUNCE, 0, NOW - 60, "said 550")
    out = V.query(bad, NOW, RULES)
    assert (out.status, out.probe) == (V.BOUNCE, False)


def test_refresh_keeps_the_answer_and_probes_again() -> None:
    ok = CacheEntry(V.OK, 0, NOW - 501 * 60, "250 Ok")
    out = V.query(ok, NOW, RULES)
    assert (out.status, out.probe) == (V.OK, True)
    assert out.store == CacheEntry(V.OK, NOW, NOW - 501 * 60, "250 Ok")
    bad = CacheEntry(V.DEFER, 0, NOW - 101 * 60, "timeout")
    out = V.query(bad, NOW, RULES)
    assert (out.status, out.text, out.probe) == (V.DEFER, "timeout", True)


def test_expired_results_are_unknown_again() -> None:
    out = V.query(CacheEntry(V.OK, 0, NOW - 1001 * 60, "250 Ok"), NOW, RULES)
    assert (out.status, out.text, out.probe) == (V.TODO, V.IN_PROGRESS, True)
    out = V.query(CacheEntry(V.BOUNCE, 0, NOW - 301 * 60, "550"), NOW, RULES)
    assert out.status == V.TODO


def test_without_negative_cache() -> None:
    rules = Freshness(RULES.positive_expire, RULES.positive_refresh, RULES.negative_expire,
                      RULES.negative_refresh, negative_cache=False)
    out = V.query(None, NOW, rules)
    assert out.probe and out.store is None and not out.delete
    out = V.query(CacheEntry(V.BOUNCE, 0, NOW - 301 * 60, "550"), NOW, rules)
    assert out.probe and out.store is None and out.delete
    # a malformed value is deleted too
    assert V.query(None, NOW, rules, present=True).delete


def test_update_never_replaces_a_deliverable_result_with_a_failure() -> None:
    ok = CacheEntry(V.OK, 0, NOW - 600, "250 Ok")
    assert V.update(ok, V.BOUNCE, "550 no", NOW) is None
    assert V.update(ok, V.OK, "250 again", NOW) == CacheEntry(V.OK, 0, NOW, "250 again")
    todo = CacheEntry(V.TODO, NOW - 5, 0, V.IN_PROGRESS)
    assert V.update(todo, V.DEFER, "timeout", NOW) == CacheEntry(V.DEFER, 0, NOW, "timeout")
    assert V.update(None, V.BOUNCE, "550", NOW) == CacheEntry(V.BOUNCE, 0, NOW, "550")


def test_retain() -> None:
    assert V.retain(CacheEntry(V.TODO, NOW - 10, 0, V.IN_PROGRESS), NOW, RULES)
    assert not V.retain(CacheEntry(V.TODO, NOW - 2000, 0, V.IN_PROGRESS), NOW, RULES)
    assert V.retain(CacheEntry(V.OK, 0, NOW - 999 * 60, "ok"), NOW, RULES)
    assert not V.retain(CacheEntry(V.OK, 0, NOW - 1001 * 60, "ok"), NOW, RULES)
    assert not V.retain(None, NOW, RULES)


def test_status_names_and_keys() -> None:
    assert [V.status_name(s) for s in (V.OK, V.DEFER, V.BOUNCE, V.TODO)] == \
        ["deliverable", "undeliverable", "undeliverable", None]
    assert V.cache_key("u@[IPv6:2001:db8::1]") == "u@[IPv6_2001_db8__1]"


def test_probe_sender() -> None:
    assert V.probe_sender("", 0, NOW) == ""
    assert V.probe_sender("<>", 3600, NOW) == ""
    assert V.probe_sender("double-bounce", 0, NOW) == "double-bounce"
    # base 31 with Postfix's vowel-free digits, big-endian
    assert V.safe_ultostr(31 * 31 + 10 * 31 + 30) == "1BZ"
    epoch = NOW // 3600
    stamp = V.safe_ultostr(epoch)
    assert V.probe_sender("postmaster@example.com", 3600, NOW) == \
        f"postmaster{stamp}@example.com"
    assert V.probe_sender("double-bounce", 3600, NOW) == f"double-bounce{stamp}"
    for bad in ("@example.com", "user@"):
        try:
            V.probe_sender(bad, 0, NOW)
        except ValueError as err:
            assert "address_verify_sender" in str(err)
        else:
            raise AssertionError(bad)

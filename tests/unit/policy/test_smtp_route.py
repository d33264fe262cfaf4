"""Routing for the SMTP/LMTP clients (hato.policy.smtp_route) over a fake DNS:
next-hop parsing, MX order, equal-preference spread, address limits and
preferences, implicit and null MX, lookup failures, mail loops, fallback
relays, and the final status of a delivery whose every hop failed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from hato.config.errors import ConfigError
from hato.policy.smtp_route import (
    Candidate,
    DnsAnswer,
    DnsStatus,
    NativeAnswer,
    NextHopError,
    RouteFailure,
    RoutePolicy,
    Router,
    parse_known_tcp_ports,
    parse_nexthop,
    split_nexthops,
)

from .conftest import make_settings

OK = DnsStatus.OK
NXDOMAIN = DnsStatus.NOTFOUND
NODATA = DnsStatus.NODATA
RETRY = DnsStatus.RETRY


class FakeDns:
    """{(name, type): [records] | DnsStatus}; unknown names are NXDOMAIN,
    a known name without the type is NODATA. native: {host: [addrs] |
    NativeAnswer}."""

    def __init__(self, records=None, native=None):
        self.records = {(n.lower(), t): v for (n, t), v in (records or {}).items()}
        self.native_map = native or {}
        self.asked: list[tuple[str, str]] = []

    def lookup(self, name, rtype):
        self.asked.append((name, rtype))
        value = self.records.get((name.lower(), rtype))
        if value is None:
            known = any(n == name.lower() for n, _ in self.records)
            return DnsAnswer(NODATA if known else NXDOMAIN)
        if isinstance(value, DnsStatus):
            return DnsAnswer(value)
        return DnsAnswer(OK, tuple(value))

    def native(self, host):
        self.asked.append((host, "native"))
        value = self.native_map.get(host)
        if value is None:
            return NativeAnswer(error="Name or service not known", nohost=True)
        if isinstance(value, NativeAnswer):
            return value
        return NativeAnswer(tuple(value))


def router(records=None, *, native=None, seed=1, **policy) -> tuple[Router, FakeDns]:
    dns = FakeDns(records, native)
    policy.setdefault("myhostname", "mx1.hato.test")
    return Router(RoutePolicy(**policy), dns, rng=random.Random(seed)), dns


def addrs(hop) -> list[str]:
    return [c.addr for c in hop.candidates]


# -- next hops ------------------------------------------------------------------------


@pytest.mark.parametrize("text, host, port, literal", [
    ("example.com", "example.com", 25, False),
    ("example.com:2525", "example.com", 2525, False),
    ("example.com:submission", "example.com", 587, False),
    ("example.com:", "example.com", 25, False),
    ("[relay.example.com]", "relay.example.com", 25, True),
    ("[relay.example.com]:587", "relay.example.com", 587, True),
    ("[relay.example.com]:", "relay.example.com", 25, True),
    ("[192.0.2.1]", "192.0.2.1", 25, True),
    ("[192.0.2.1]:lmtp", "192.0.2.1", 24, True),
    ("[2001:db8::1]:2525", "2001:db8::1", 2525, True),
    ("[ipv6:2001:db8::1]", "2001:db8::1", 25, True),
    ("[IPv6:2001:db8::1]:smtps", "2001:db8::1", 465, True),
    ("192.0.2.1:26", "192.0.2.1", 26, False),
])
def test_parse_nexthop(text, host, port, literal):
    nh = parse_nexthop(text)
    assert (nh.host, nh.port, nh.literal, nh.path) == (host, port, literal, None)
    assert nh.text == text


def test_parse_nexthop_services_callable_and_default_service():
    services = {"smtp-alt": 2526}.get
    assert parse_nexthop("h.example:smtp-alt", services=services).port == 2526
    assert parse_nexthop("h.example", default_service="2525").port == 2525
    assert parse_nexthop("h.example", default_service="submission").port == 587
    with pytest.raises(NextHopError, match=r"^unknown service: nosuch/tcp$"):
        parse_nexthop("h.example:nosuch", services=services)
    with pytest.raises(NextHopError, match="unknown service: imap/tcp"):
        parse_nexthop("h.example:imap")  # no services database given


@pytest.mark.parametrize("text, error", [
    ("[relay.example.com", 'missing "]" in server description: [relay.example.com'),
    ("[relay.example.com]x", 'garbage after "]" in server description: [relay.example.com]x'),
    ("[ipv6:192.0.2.1]", "malformed IPv6 address in server description: [ipv6:192.0.2.1]"),
    (":25", "missing host information in server description: :25"),
    ("bad_host!", "valid hostname or network address required in server description: bad_host!"),
    ("2001:db8::1", "valid hostname or network address required in server description: 2001:db8::1"),
    ("host.example:25x", "garbage after numerical service in server description: host.example:25x"),
    ("host.example:0", "bad network port: 0 for destination: host.example:0"),
    ("host.example:65536", "bad network port: 65536 for destination: host.example:65536"),
])
def test_parse_nexthop_errors(text, error):
    with pytest.raises(NextHopError) as info:
        parse_nexthop(text)
    assert str(info.value) == error


def test_parse_lmtp_nexthops():
    nh = parse_nexthop("unix:/var/run/dovecot/lmtp", lmtp=True)
    assert nh.unix and nh.path == "/var/run/dovecot/lmtp" and nh.port == 0
    nh = parse_nexthop("unix:private/dovecot-lmtp", lmtp=True, queue_directory="/var/spool/hato")
    assert nh.path == "/var/spool/hato/private/dovecot-lmtp"
    nh = parse_nexthop("inet:mail.example.com:2424", lmtp=True, default_service="24")
    assert (nh.host, nh.port, nh.unix) == ("mail.example.com", 2424, False)
    nh = parse_nexthop("inet:[192.0.2.5]", lmtp=True, default_service="24")
    assert (nh.host, nh.port, nh.literal) == ("192.0.2.5", 24, True)
    nh = parse_nexthop("inet:[192.0.2.5]:lmtp", lmtp=True, default_service="24")
    assert nh.port == 24
    with pytest.raises(NextHopError):
        parse_nexthop("unix:", lmtp=True)
    # smtp(8) has no unix:/inet: prefixes: "unix" is a host name there
    assert parse_nexthop("unix:2525").host == "unix"


def test_split_nexthops_and_known_ports():
    assert split_nexthops("[a.example]:587, b.example\tc.example,,") == \
        ["[a.example]:587", "b.example", "c.example"]
    assert parse_known_tcp_ports("lmtp=24, smtp=25, smtps=submissions=465, submission=587") == \
        {"lmtp": 24, "smtp": 25, "smtps": 465, "submissions": 465, "submission": 587}
    ports = parse_known_tcp_ports("smtp=2525")
    assert parse_nexthop("h.example", known_ports=ports).port == 2525


def test_destinations_list_and_fallback():
    r, _ = router(fallback_relay=("[backup.example]:2525",))
    dests = r.destinations("[a.example]:587, b.example")
    assert [(d.nexthop.text, d.fallback, d.index) for d in dests] == [
        ("[a.example]:587", False, 0), ("b.example", False, 1),
        ("[backup.example]:2525", True, 2)]
    with pytest.raises(NextHopError, match="null destination"):
        r.destinations(" , ")
    with pytest.raises(NextHopError, match="in server description"):
        r.destinations("ok.example, [bad")


# -- MX order -------------------------------------------------------------------------

MX3 = {
    ("example.com", "MX"): ["20 mx2.example.com", "10 mx1.example.com", "30 mx3.example.com"],
    ("mx1.example.com", "A"): ["192.0.2.1"],
    ("mx2.example.com", "A"): ["192.0.2.2"],
    ("mx3.example.com", "A"): ["192.0.2.3"],
}


def test_mx_sorted_by_preference():
    r, _ = router(MX3)
    (hop,) = r.route("example.com")
    assert [(c.host, c.addr, c.port, c.pref) for c in hop.candidates] == [
        ("mx1.example.com", "192.0.2.1", 25, 10),
        ("mx2.example.com", "192.0.2.2", 25, 20),
        ("mx3.example.com", "192.0.2.3", 25, 30)]
    assert hop.error is None and hop.mx_lookup and hop.best_pref == 10 and hop.final
    assert hop.session_limit == 2
    assert str(hop.candidates[0]) == "mx1.example.com[192.0.2.1]:25"


def equal_pref_records(n=4):
    recs = {("spread.example", "MX"): [f"10 mx{i}.spread.example" for i in range(n)]
            + ["5 best.spread.example", "20 last.spread.example"]}
    for i in range(n):
        recs[(f"mx{i}.spread.example", "A")] = [f"192.0.2.{10 + i}"]
    recs[("best.spread.example", "A")] = ["192.0.2.1"]
    recs[("last.spread.example", "A")] = ["192.0.2.99"]
    return recs


def test_equal_preference_spread_is_a_permutation():
    recs = equal_pref_records()
    middle = {f"192.0.2.{10 + i}" for i in range(4)}
    seen = Counter()
    for seed in range(200):
        r, _ = router(recs, seed=seed, mx_address_limit=0)
        got = addrs(r.route("spread.example")[0])
        assert got[0] == "192.0.2.1" and got[-1] == "192.0.2.99"
        assert sorted(got[1:-1]) == sorted(middle)  # a permutation, nothing lost
        seen[tuple(got[1:-1])] += 1
        seen[("first", got[1])] += 1
    # spread: every equal-preference host comes first some of the time
    assert all(seen[("first", a)] > 20 for a in middle)
    assert len([k for k in seen if k[0] != "first"]) > 10
    # a seeded RNG repeats itself
    a = addrs(router(recs, seed=7, mx_address_limit=0)[0].route("spread.example")[0])
    b = addrs(router(recs, seed=7, mx_address_limit=0)[0].route("spread.example")[0])
    assert a == b


def test_randomize_off_keeps_dns_order():
    recs = equal_pref_records()
    for seed in range(5):
        r, _ = router(recs, seed=seed, mx_address_limit=0, randomize_addresses=False)
        assert addrs(r.route("spread.example")[0]) == [
            "192.0.2.1", "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.99"]


def test_address_limit():
    recs = equal_pref_records(6)  # 8 addresses
    r, _ = router(recs)
    assert len(r.route("spread.example")[0].candidates) == 5  # the default
    r, _ = router(recs, mx_address_limit=2)
    hop = r.route("spread.example")[0]
    assert len(hop.candidates) == 2 and hop.candidates[0].addr == "192.0.2.1"
    r, _ = router(recs, mx_address_limit=0)
    assert len(r.route("spread.example")[0].candidates) == 8


DUAL = {
    ("dual.example", "MX"): ["10 a.dual.example", "20 b.dual.example"],
    ("a.dual.example", "A"): ["192.0.2.1", "192.0.2.2"],
    ("a.dual.example", "AAAA"): ["2001:db8::1", "2001:db8::2"],
    ("b.dual.example", "A"): ["192.0.2.3"],
    ("b.dual.example", "AAAA"): ["2001:db8::3"],
}


def test_address_preference_ipv6_and_ipv4():
    r, _ = router(DUAL, address_preference="ipv6", mx_address_limit=0)
    got = [(c.pref, c.family) for c in r.route("dual.example")[0].candidates]
    assert got == [(10, 6), (10, 6), (10, 4), (10, 4), (20, 6), (20, 4)]
    r, _ = router(DUAL, address_preference="ipv4", mx_address_limit=0)
    got = [(c.pref, c.family) for c in r.route("dual.example")[0].candidates]
    assert got == [(10, 4), (10, 4), (10, 6), (10, 6), (20, 4), (20, 6)]


def test_address_preference_any_mixes_families():
    firsts = Counter()
    for seed in range(100):
        r, _ = router(DUAL, address_preference="any", mx_address_limit=0, seed=seed)
        cands = r.route("dual.example")[0].candidates
        assert [c.pref for c in cands] == [10, 10, 10, 10, 20, 20]
        firsts[cands[0].family] += 1
    assert firsts[4] > 20 and firsts[6] > 20


def test_inet_protocols_limit_the_families_asked():
    r, dns = router(DUAL, inet_protocols=frozenset({4}), mx_address_limit=0)
    assert {c.family for c in r.route("dual.example")[0].candidates} == {4}
    assert not [q for q in dns.asked if q[1] == "AAAA"]
    r, dns = router(DUAL, inet_protocols=frozenset({6}), mx_address_limit=0)
    assert {c.family for c in r.route("dual.example")[0].candidates} == {6}
    assert not [q for q in dns.asked if q[1] == "A"]


def test_balance_inet_protocols():
    recs = {("v6heavy.example", "MX"): ["10 mx.v6heavy.example"],
            ("mx.v6heavy.example", "AAAA"): [f"2001:db8::{i}" for i in range(1, 7)],
            ("mx.v6heavy.example", "A"): ["192.0.2.1"]}
    r, _ = router(recs, address_preference="ipv6", mx_address_limit=3)
    fams = [c.family for c in r.route("v6heavy.example")[0].candidates]
    assert fams == [6, 6, 4]  # IPv4 is not crowded out
    r, _ = router(recs, address_preference="ipv6", mx_address_limit=3,
                  balance_inet_protocols=False)
    assert [c.family for c in r.route("v6heavy.example")[0].candidates] == [6, 6, 6]


# -- no MX, null MX, failures ------------------------------------------------------------


def test_implicit_mx():
    recs = {("plain.example", "A"): ["192.0.2.7"], ("plain.example", "AAAA"): ["2001:db8::7"]}
    r, dns = router(recs, address_preference="ipv4")
    (hop,) = r.route("plain.example")
    assert [(c.host, c.addr, c.pref) for c in hop.candidates] == [
        ("plain.example", "192.0.2.7", 0), ("plain.example", "2001:db8::7", 0)]
    assert dns.asked[0] == ("plain.example", "MX")


def test_null_mx():
    for mx in (["0 "], ["0 ."], ["0 .", "10 mx.example.com"]):
        r, dns = router({("nullmx.example", "MX"): mx, ("nullmx.example", "A"): ["192.0.2.1"]})
        (hop,) = r.route("nullmx.example")
        assert hop.candidates == ()
        assert hop.error == RouteFailure("5.1.0", "Domain nullmx.example does not accept mail (nullMX)")
        assert hop.error.permanent
        assert ("nullmx.example", "A") not in dns.asked


def test_nxdomain_is_permanent():
    r, dns = router({})
    (hop,) = r.route("nx.example")
    assert hop.error == RouteFailure(
        "5.4.4", "Host or domain name not found. Name service error for "
        "name=nx.example type=AAAA: Host not found")
    assert dns.asked == [("nx.example", "MX"), ("nx.example", "A"), ("nx.example", "AAAA")]
    r, _ = router({}, inet_protocols=frozenset({4}))
    assert r.route("nx.example")[0].error.text.endswith("type=A: Host not found")


def test_no_address_records():
    r, _ = router({("empty.example", "TXT"): ["x"]})
    assert r.route("empty.example")[0].error == RouteFailure(
        "5.4.4", "Host or domain name not found. Name service error for name=empty.example "
        "type=AAAA: Host found but no data record of requested type")


def test_servfail_is_temporary():
    r, dns = router({("broken.example", "MX"): RETRY, ("broken.example", "A"): ["192.0.2.1"]})
    (hop,) = r.route("broken.example")
    assert hop.candidates == ()
    assert hop.error == RouteFailure(
        "4.4.3", "Host or domain name not found. Name service error for "
        "name=broken.example type=MX: Host not found, try again")
    assert hop.error.temporary
    assert ("broken.example", "A") not in dns.asked
    # ignore_mx_lookup_error = yes: the name's own addresses instead
    r, _ = router({("broken.example", "MX"): RETRY, ("broken.example", "A"): ["192.0.2.1"]},
                  ignore_mx_lookup_error=True)
    (hop,) = r.route("broken.example")
    assert addrs(hop) == ["192.0.2.1"] and hop.error is None


def test_address_lookup_failure_of_one_mx_host_is_ignored():
    recs = {("half.example", "MX"): ["10 dead.half.example", "20 live.half.example"],
            ("dead.half.example", "A"): RETRY, ("dead.half.example", "AAAA"): RETRY,
            ("live.half.example", "A"): ["192.0.2.20"]}
    (hop,) = router(recs)[0].route("half.example")
    assert addrs(hop) == ["192.0.2.20"] and hop.error is None and hop.best_pref == 20


def test_temporary_host_error_dominates():
    recs = {("mixed.example", "MX"): ["10 tmp.mixed.example", "20 gone.mixed.example"],
            ("tmp.mixed.example", "A"): RETRY, ("tmp.mixed.example", "AAAA"): RETRY}
    (hop,) = router(recs)[0].route("mixed.example")
    # the last text, a soft status: nothing is bounced while a lookup may recover
    assert hop.error == RouteFailure(
        "4.4.4", "Host or domain name not found. Name service error for "
        "name=gone.mixed.example type=AAAA: Host not found")
    # A temporary, AAAA not found: the temporary failure is what dns_lookup_v reports
    recs = {("one.example", "MX"): ["10 h.one.example"], ("h.one.example", "A"): RETRY}
    (hop,) = router(recs)[0].route("one.example")
    assert hop.error == RouteFailure(
        "4.4.3", "Host or domain name not found. Name service error for "
        "name=h.one.example type=A: Host not found, try again")


def test_defer_if_no_mx_address_found():
    recs = {("nomxaddr.example", "MX"): ["10 gone.nomxaddr.example"]}
    assert router(recs)[0].route("nomxaddr.example")[0].error.dsn == "5.4.4"
    r, _ = router(recs, defer_if_no_mx_address_found=True)
    assert r.route("nomxaddr.example")[0].error.dsn == "4.4.4"


def test_numeric_mx_host():
    recs = {("num.example", "MX"): ["10 192.0.2.44"]}
    (hop,) = router(recs)[0].route("num.example")
    assert [(c.host, c.addr) for c in hop.candidates] == [("192.0.2.44", "192.0.2.44")]


# -- mail loops ------------------------------------------------------------------------------


def test_mx_pointing_to_myself_loops():
    recs = {("loop.example", "MX"): ["10 me.loop.example"], ("me.loop.example", "A"): ["192.0.2.10"]}
    r, _ = router(recs, own_addresses=frozenset({"192.0.2.10"}),
                  fallback_relay=("[backup.example]",))
    hops = r.route("loop.example")
    assert len(hops) == 1  # no fallback relay after a loop
    assert hops[0].error == RouteFailure("5.4.6", "mail for loop.example loops back to myself")
    assert hops[0].error.loop and hops[0].final and hops[0].i_am_mx


def test_mx_named_myhostname_loops():
    recs = {("byname.example", "MX"): ["10 MX1.hato.test"], ("mx1.hato.test", "A"): ["203.0.113.9"]}
    r, _ = router(recs)
    assert r.route("byname.example")[0].error.text == "mail for byname.example loops back to myself"
    r, _ = router(recs, match_myhostname=False)  # Postfix's own rule: addresses only
    assert addrs(r.route("byname.example")[0]) == ["203.0.113.9"]


def test_backup_mx_delivers_to_better_mx_only():
    recs = {("backup.example", "MX"): ["10 primary.backup.example", "20 me.backup.example",
                                       "30 worse.backup.example"],
            ("primary.backup.example", "A"): ["192.0.2.1"],
            ("me.backup.example", "A"): ["192.0.2.10"],
            ("worse.backup.example", "A"): ["192.0.2.30"]}
    r, _ = router(recs, own_addresses=frozenset({"192.0.2.10"}), fallback_relay=("[fb.example]",))
    hops = r.route("backup.example")
    assert len(hops) == 1 and hops[0].i_am_mx and hops[0].final
    assert addrs(hops[0]) == ["192.0.2.1"]


def test_backup_mx_without_reachable_primary():
    recs = {("backup.example", "MX"): ["10 primary.backup.example", "20 me.backup.example"],
            ("me.backup.example", "A"): ["192.0.2.10"]}
    r, _ = router(recs, own_addresses=frozenset({"192.0.2.10"}))
    assert r.route("backup.example")[0].error == RouteFailure(
        "4.4.4", "unable to find primary relay for backup.example")


def test_implicit_mx_to_myself_and_literal():
    recs = {("self.example", "A"): ["192.0.2.10"]}
    r, _ = router(recs, own_addresses=frozenset({"192.0.2.10"}))
    assert r.route("self.example")[0].error.text == "mail for self.example loops back to myself"
    assert r.route("[192.0.2.10]")[0].error.text == "mail for 192.0.2.10 loops back to myself"
    # loop detection is for port 25 only: a content filter on 10025 is fine
    assert addrs(r.route("[192.0.2.10]:10025")[0]) == ["192.0.2.10"]


# -- relayhost, fallback relays, literals ----------------------------------------------------------


def test_bracketed_relayhost_skips_mx_lookup():
    recs = {("relay.example", "MX"): ["10 other.example"], ("relay.example", "A"): ["192.0.2.50"],
            ("other.example", "A"): ["192.0.2.51"]}
    r, dns = router(recs, relayhost="[relay.example]:587")
    (hop,) = r.route("[relay.example]:587")
    assert [str(c) for c in hop.candidates] == ["relay.example[192.0.2.50]:587"]
    assert not hop.mx_lookup and ("relay.example", "MX") not in dns.asked
    # without brackets the relayhost's MX records count
    (hop,) = r.route("relay.example")
    assert addrs(hop) == ["192.0.2.51"]


def test_literal_address_no_dns():
    r, dns = router({})
    (hop,) = r.route("[192.0.2.9]:2525")
    assert [str(c) for c in hop.candidates] == ["192.0.2.9[192.0.2.9]:2525"]
    assert dns.asked == []
    (hop,) = r.route("[ipv6:2001:db8::9]")
    assert addrs(hop) == ["2001:db8::9"]
    r, _ = router({}, inet_protocols=frozenset({4}))
    assert r.route("[ipv6:2001:db8::9]")[0].error.dsn == "5.4.4"


def test_multiple_relayhosts_and_fallback_after_failure():
    recs = {("r2.example", "A"): ["192.0.2.62"], ("fb.example", "A"): ["192.0.2.70"]}
    r, _ = router(recs, relayhost="[r1.example], [r2.example]", fallback_relay=("[fb.example]",))
    hops = r.route("[r1.example], [r2.example]")
    assert [h.nexthop.text for h in hops] == ["[r1.example]", "[r2.example]", "[fb.example]"]
    assert hops[0].error.dsn == "5.4.4" and not hops[0].final
    assert addrs(hops[1]) == ["192.0.2.62"]
    assert hops[2].destination.fallback and addrs(hops[2]) == ["192.0.2.70"] and hops[2].final
    # the agent stops asking once the mail is delivered: lazy lookups
    gen = r.hops("[r1.example], [r2.example]")
    next(gen)
    next(gen)  # delivered at r2: fb.example is never looked up


def test_fallback_relay_after_nxdomain():
    r, _ = router({("fb.example", "A"): ["192.0.2.70"]}, fallback_relay=("fb.example:2525",))
    hops = r.route("nx.example")
    assert hops[0].error.dsn == "5.4.4"
    assert [str(c) for c in hops[1].candidates] == ["fb.example[192.0.2.70]:2525"]


def test_final_failure():
    r, _ = router({}, relayhost="[relay.example]", fallback_relay=("[fb.example]",),
                  best_mx_transport="local")
    hops = r.route("nx.example")
    last = hops[-1]
    assert last.destination.fallback
    # a fallback relay that fails for good is a configuration problem: defer
    assert r.failure(last, last.error) == RouteFailure("4.3.5", last.error.text)
    # temporary failures stay as they are; nothing said → 4.3.0
    soft = RouteFailure("4.4.1", "connect to fb.example[192.0.2.70]:25: Connection refused")
    assert r.failure(last, soft) == soft
    assert r.failure(last, None) == RouteFailure(
        "4.3.0", "server unavailable or unable to receive mail")
    # relayhost failing for good: 4.3.5 too
    r, _ = router({}, relayhost="[relay.example]")
    (hop,) = r.route("[relay.example]")
    assert r.failure(hop, hop.error).dsn == "4.3.5"
    # a recipient domain failing for good bounces
    (hop,) = r.route("nx.example")
    assert r.failure(hop, hop.error) == hop.error
    # mail loops with best_mx_transport: passed to it
    recs = {("loop.example", "A"): ["192.0.2.10"]}
    r, _ = router(recs, own_addresses=frozenset({"192.0.2.10"}), best_mx_transport="local")
    (hop,) = r.route("loop.example")
    assert r.failure(hop, hop.error).pass_to == "local"


# -- native lookups, DNS disabled, LMTP ---------------------------------------------------------


def test_native_host_lookup():
    native = {"hosts.example": ["192.0.2.80", "2001:db8::80", "192.0.2.80"]}
    r, dns = router({}, native=native, host_lookup=frozenset({"native"}),
                    address_preference="ipv4")
    (hop,) = r.route("[hosts.example]")
    assert addrs(hop)[:1] == ["192.0.2.80"] and "2001:db8::80" in addrs(hop)
    assert ("hosts.example", "A") not in dns.asked
    # dns, native: DNS first, the system's resolver when DNS knows nothing
    r, dns = router({}, native=native, host_lookup=frozenset({"dns", "native"}))
    assert "192.0.2.80" in addrs(r.route("[hosts.example]")[0])
    assert dns.asked[:2] == [("hosts.example", "A"), ("hosts.example", "AAAA")]
    (hop,) = r.route("[unknown.example]")
    assert hop.error == RouteFailure(
        "5.4.4", "unable to look up host unknown.example: Name or service not known")
    native = {"again.example": NativeAnswer(error="Temporary failure in name resolution",
                                            temporary=True, nohost=True)}
    r, _ = router({}, native=native, host_lookup=frozenset({"native"}))
    assert r.route("[again.example]")[0].error.dsn == "4.4.4"


def test_dns_disabled_uses_native_without_mx():
    r, dns = router({("example.com", "MX"): ["10 mx.example.com"]},
                    native={"example.com": ["192.0.2.90"]},
                    dns_enabled=False, host_lookup=frozenset({"native"}))
    (hop,) = r.route("example.com")
    assert addrs(hop) == ["192.0.2.90"] and not hop.mx_lookup
    assert dns.asked == [("example.com", "native")]


def test_lmtp_routes():
    r, dns = router({("store.example", "MX"): ["10 other.example"],
                     ("store.example", "A"): ["192.0.2.24"]},
                    lmtp=True, default_service="24", fallback_relay=("[fb.example]",),
                    queue_directory="/var/spool/hato")
    (hop,) = r.route("unix:private/dovecot-lmtp")
    assert hop.candidates == (Candidate("mx1.hato.test", "/var/spool/hato/private/dovecot-lmtp",
                                        0, 0, path="/var/spool/hato/private/dovecot-lmtp"),)
    assert hop.final and hop.candidates[0].family == 0
    hops = r.route("inet:store.example")
    assert [str(c) for c in hops[0].candidates] == ["store.example[192.0.2.24]:24"]
    assert ("store.example", "MX") not in dns.asked  # LMTP: no MX lookup, no loop check


# -- settings ------------------------------------------------------------------------------------


def test_policy_from_settings():
    s = make_settings("""
        smtp_address_preference = ipv6
        smtp_mx_address_limit = 3
        smtp_fallback_relay = [fb1.example], fb2.example:2525
        inet_protocols = ipv4
        relayhost = [relay.example]
        inet_interfaces = 192.0.2.10, 127.0.0.1
        lmtp_tcp_port = 2424
    """)
    p = RoutePolicy.from_settings(s)
    assert p.address_preference == "ipv6" and p.mx_address_limit == 3 and p.mx_session_limit == 2
    assert p.fallback_relay == ("[fb1.example]", "fb2.example:2525")
    assert p.inet_protocols == frozenset({4}) and p.relayhost == "[relay.example]"
    assert p.own_addresses == frozenset({"192.0.2.10", "127.0.0.1"})
    assert p.host_lookup == frozenset({"dns"}) and p.dns_enabled
    assert p.myhostname == "mx1.example.com" and p.known_ports["submission"] == 587
    lm = RoutePolicy.from_settings(s, lmtp=True)
    assert lm.lmtp and lm.default_service == "2424" and lm.fallback_relay == ()
    off = RoutePolicy.from_settings(make_settings("disable_dns_lookups = yes"))
    assert not off.dns_enabled and off.host_lookup == frozenset({"native"})
    both = RoutePolicy.from_settings(make_settings("smtp_host_lookup = dns, native\n"
                                                   "inet_interfaces = all"))
    assert both.host_lookup == frozenset({"dns", "native"})
    assert {"192.0.2.10", "127.0.0.1", "::1"} <= both.own_addresses  # the host's interfaces
    with pytest.raises(ConfigError, match="bad smtp_address_preference value: ipv5"):
        RoutePolicy.from_settings(make_settings("smtp_address_preference = ipv5"))
    assert issubclass(NextHopError, ConfigError)

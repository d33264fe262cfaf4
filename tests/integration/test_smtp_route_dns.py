"""MX routing of the SMTP/LMTP clients against the test DNS server.

hato.io.smtp_route.router_from_settings with ``hato_dns_servers`` pointing at
tests/dnsserver.py: preference order, equal-preference spread, no MX → A/AAAA,
null MX, NXDOMAIN → bounce, SERVFAIL and timeouts → defer, an MX host that is
this host, fallback relays, and Postfix's texts for each. Each test runs
twice: with the resolver's cache (answers with TTLs) and without (TTL 0, so
NXDOMAIN vs NODATA is asked of the server again).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator

import pytest

from hato.io.dns import Resolver
from hato.io.smtp_route import ResolverRouteDns, router_from_settings
from hato.policy.smtp_route import DnsStatus, RouteFailure
from tests.dnsserver import DnsServer

pytestmark = pytest.mark.integration

ZONES = {
    "example.test": {"MX": ["20 mx2.example.test.", "10 mx1.example.test.",
                            "30 mx3.example.test."]},
    "mx1.example.test": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "mx2.example.test": {"A": ["192.0.2.2"]},
    "mx3.example.test": {"AAAA": ["2001:db8::3"]},
    "spread.test": {"MX": [f"10 mx{i}.spread.test." for i in range(4)]},
    **{f"mx{i}.spread.test": {"A": [f"198.51.100.{10 + i}"]} for i in range(4)},
    "plain.test": {"A": ["192.0.2.50"], "AAAA": ["2001:db8::50"]},
    "alias.test": {"CNAME": ["plain.test."]},
    "nullmx.test": {"MX": ["0 ."], "A": ["192.0.2.99"]},
    "noaddr.test": {"TXT": ["v=spf1 -all"]},
    "broken.test": "SERVFAIL",
    "refused.test": "REFUSED",
    "slow.test": "TIMEOUT",
    "brokenmx.test": {"MX": ["10 broken.test.", "20 mx2.example.test."]},
    "loop.test": {"MX": ["10 me.loop.test."]},
    "me.loop.test": {"A": ["127.0.0.1"]},
    "backup.test": {"MX": ["5 mx1.example.test.", "10 me.loop.test.", "20 mx2.example.test."]},
    "relay.test": {"MX": ["10 mx2.example.test."], "A": ["192.0.2.60"]},
    "fallback.test": {"A": ["192.0.2.70"]},
}


@pytest.fixture(scope="module", params=["cached", "ttl0"])
def dns(request) -> Iterator[DnsServer]:
    kwargs = {} if request.param == "cached" else {"ttl": 0, "negative_ttl": 0}
    with DnsServer(ZONES, **kwargs) as server:
        yield server


def make_router(dns: DnsServer, *, seed: int = 1, timeout: float = 5.0, **params: str):
    settings = {"hato_dns_servers": dns.spec, "inet_interfaces": "loopback-only",
                "myhostname": "mail.hato.test", **params}
    resolver = Resolver.from_settings(settings, smtp_client=True, timeout=timeout)
    return router_from_settings(settings, resolver=resolver, rng=random.Random(seed))


def pairs(hop) -> list[tuple[str, str, int]]:
    return [(c.host, c.addr, c.pref) for c in hop.candidates]


def test_preference_order(dns):
    r = make_router(dns, smtp_address_preference="ipv6", smtp_mx_address_limit="0")
    (hop,) = r.route("example.test")
    assert hop.error is None
    assert pairs(hop) == [("mx1.example.test", "2001:db8::1", 10),
                          ("mx1.example.test", "192.0.2.1", 10),
                          ("mx2.example.test", "192.0.2.2", 20),
                          ("mx3.example.test", "2001:db8::3", 30)]
    assert {c.port for c in hop.candidates} == {25}
    r = make_router(dns, inet_protocols="ipv4")
    assert pairs(r.route("example.test")[0]) == [("mx1.example.test", "192.0.2.1", 10),
                                                 ("mx2.example.test", "192.0.2.2", 20)]


def test_address_limit(dns):
    r = make_router(dns, smtp_mx_address_limit="2", smtp_address_preference="ipv4")
    assert [c.addr for c in r.route("example.test")[0].candidates] == ["192.0.2.1", "2001:db8::1"]


def test_equal_preference_spread(dns):
    want = {f"198.51.100.{10 + i}" for i in range(4)}
    firsts = Counter()
    for seed in range(40):
        r = make_router(dns, seed=seed)
        got = [c.addr for c in r.route("spread.test")[0].candidates]
        assert sorted(got) == sorted(want)
        firsts[got[0]] += 1
    assert set(firsts) == want  # each equal-preference host leads sometimes


def test_no_mx_uses_the_hosts_addresses(dns):
    r = make_router(dns, smtp_address_preference="ipv4")
    (hop,) = r.route("plain.test")
    assert pairs(hop) == [("plain.test", "192.0.2.50", 0), ("plain.test", "2001:db8::50", 0)]
    (hop,) = r.route("alias.test")  # a CNAME is followed
    assert [c.addr for c in hop.candidates] == ["192.0.2.50", "2001:db8::50"]


def test_null_mx_bounces(dns):
    (hop,) = make_router(dns).route("nullmx.test")
    assert hop.candidates == ()
    assert hop.error == RouteFailure("5.1.0", "Domain nullmx.test does not accept mail (nullMX)")


def test_nxdomain_bounces(dns):
    (hop,) = make_router(dns).route("nosuch.test")
    assert hop.error == RouteFailure(
        "5.4.4", "Host or domain name not found. Name service error for "
        "name=nosuch.test type=AAAA: Host not found")
    (hop,) = make_router(dns, inet_protocols="ipv4").route("nosuch.test")
    assert hop.error.text.endswith("name=nosuch.test type=A: Host not found")


def test_nodata_bounces(dns):
    (hop,) = make_router(dns).route("noaddr.test")
    assert hop.error == RouteFailure(
        "5.4.4", "Host or domain name not found. Name service error for name=noaddr.test "
        "type=AAAA: Host found but no data record of requested type")


def test_servfail_defers(dns):
    (hop,) = make_router(dns).route("broken.test")
    assert hop.error == RouteFailure(
        "4.4.3", "Host or domain name not found. Name service error for "
        "name=broken.test type=MX: Host not found, try again")
    assert make_router(dns).route("refused.test")[0].error.dsn == "4.4.3"


def test_timeout_defers(dns):
    (hop,) = make_router(dns, timeout=0.5).route("slow.test")
    assert hop.error.dsn == "4.4.3" and hop.error.text.endswith("Host not found, try again")


def test_one_mx_host_failing(dns):
    (hop,) = make_router(dns).route("brokenmx.test")
    assert hop.error is None
    assert [c.addr for c in hop.candidates] == ["192.0.2.2"]


def test_mx_pointing_here_loops(dns):
    r = make_router(dns, smtp_fallback_relay="[fallback.test]")
    hops = r.route("loop.test")
    assert len(hops) == 1  # the fallback relay is not tried
    assert hops[0].error == RouteFailure("5.4.6", "mail for loop.test loops back to myself")
    # this host as a backup MX: only the better MX hosts remain
    hops = r.route("backup.test")
    assert len(hops) == 1 and hops[0].i_am_mx
    assert {c.host for c in hops[0].candidates} == {"mx1.example.test"}


def test_relayhost_brackets_and_fallback_relay(dns):
    r = make_router(dns, relayhost="[relay.test]:587", smtp_fallback_relay="fallback.test:2525")
    dns.reset_counts()
    hops = r.route("[relay.test]:587")
    assert dns.count("relay.test", "MX") == 0 and dns.count("relay.test", "A") == 1
    assert [str(c) for c in hops[0].candidates] == ["relay.test[192.0.2.60]:587"]
    assert [str(c) for c in hops[1].candidates] == ["fallback.test[192.0.2.70]:2525"]
    assert hops[1].destination.fallback and hops[1].final
    # without brackets the relay's MX records count
    assert [c.host for c in r.route("relay.test")[0].candidates] == ["mx2.example.test"]
    # a domain that does not exist still tries the fallback relay
    hops = r.route("nosuch.test")
    assert hops[0].error.dsn == "5.4.4" and hops[1].candidates


def test_failure_statuses(dns):
    r = make_router(dns, relayhost="[nosuch.test]")
    (hop,) = r.route("[nosuch.test]")
    assert r.failure(hop, hop.error).dsn == "4.3.5"  # relayhost configuration problem
    (hop,) = r.route("nullmx.test")
    assert r.failure(hop, hop.error).dsn == "5.1.0"


def test_lmtp_inet_and_unix(dns):
    settings = {"hato_dns_servers": dns.spec, "lmtp_tcp_port": "24",
                "inet_interfaces": "loopback-only", "queue_directory": "/var/spool/hato"}
    r = router_from_settings(settings, lmtp=True, rng=random.Random(1),
                             resolver=Resolver.from_settings(settings, timeout=5.0))
    dns.reset_counts()
    (hop,) = r.route("inet:relay.test")
    assert dns.count("relay.test", "MX") == 0  # LMTP: no MX lookup
    assert [str(c) for c in hop.candidates] == ["relay.test[192.0.2.60]:24"]
    (hop,) = r.route("unix:private/dovecot-lmtp")
    assert hop.candidates[0].path == "/var/spool/hato/private/dovecot-lmtp"


def test_adapter_classifies_answers(dns):
    adapter = ResolverRouteDns(Resolver([dns.address], timeout=3.0))
    assert adapter.lookup("mx2.example.test", "A").records == ("192.0.2.2",)
    assert adapter.lookup("nosuch.test", "A").status is DnsStatus.NOTFOUND
    assert adapter.lookup("mx2.example.test", "AAAA").status is DnsStatus.NODATA
    assert adapter.lookup("broken.test", "MX").status is DnsStatus.RETRY
    assert adapter.lookup("nullmx.test", "MX").records == ("0 ",)
    native = adapter.native("localhost")
    assert "127.0.0.1" in native.addresses or "::1" in native.addresses


def test_native_lookup_through_the_system_resolver(dns):
    r = make_router(dns, smtp_host_lookup="native")
    (hop,) = r.route("[localhost]:2525")
    assert hop.candidates and {c.addr for c in hop.candidates} <= {"127.0.0.1", "::1"}
    # port 25 to ourselves is a loop
    assert make_router(dns, smtp_host_lookup="native").route("[localhost]")[0].error.loop

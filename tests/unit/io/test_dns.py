"""hato.io.dns.Resolver against the test DNS server (tests/dnsserver.py)."""

from __future__ import annotations

import logging
import threading

import pytest

from hato.config.defaults import HostFacts
from hato.config.errors import ConfigError
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config, Settings
from hato.io.dns import (
    PEER_CODE_FORGED,
    PEER_CODE_OK,
    PEER_CODE_PERM,
    PEER_CODE_TEMP,
    Resolver,
    parse_dns_servers,
)
from hato.policy.dnsquery import DnsTempFail
from tests.dnsserver import DnsServer, dns_server  # noqa: F401  (dns_server: a fixture)

ZONES = {
    "example.com": {
        "A": ["192.0.2.1", "192.0.2.2"],
        "AAAA": ["2001:db8::1"],
        "MX": ["20 mx2.example.com.", "10 mx1.example.com"],
        "TXT": ["v=spf1 -all", "x" * 300],
        "NS": ["ns1.example.com.", "ns2.example.com."],
    },
    "www.example.com": {"CNAME": ["example.com."]},
    "alias.example": {"CNAME": ["host.example.com."]},
    "dangling.example": {"CNAME": ["gone.example."]},
    "nullmx.example": {"MX": ["0 ."]},
    "1.2.0.192.in-addr.arpa": {"PTR": ["host.example.com."]},
    "host.example.com": {"A": ["192.0.2.1"], "AAAA": ["2001:db8::1"]},
    "slow.example": "TIMEOUT",
    "broken.example": "SERVFAIL",
    "refused.example": "REFUSED",
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server(dns_server: DnsServer) -> DnsServer:  # noqa: F811
    for name, value in ZONES.items():
        dns_server.load_name(name, value)  # type: ignore[arg-type]
    return dns_server


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def resolver(server: DnsServer, clock: Clock) -> Resolver:
    return Resolver([server.address], timeout=0.5, clock=clock)


def settings(main: str) -> Settings:
    facts = HostFacts("mx1", (("127.0.0.1", 8),), (("::1", 128),))
    config = Config("/etc/hato", MainCf.parse("myhostname = mx1.example.com\n" + main,
                                              "/etc/hato/main.cf"),
                    MasterCf.parse("", "/etc/hato/master.cf"), facts)
    return config.settings()


# -- record types -------------------------------------------------------------

def test_a_and_aaaa(resolver: Resolver) -> None:
    assert sorted(resolver.query("example.com", "A")) == ["192.0.2.1", "192.0.2.2"]
    assert resolver.query("EXAMPLE.COM.", "aaaa") == ["2001:db8::1"]


def test_mx_sorted_without_dots(resolver: Resolver) -> None:
    assert resolver.mx("example.com") == [(10, "mx1.example.com"), (20, "mx2.example.com")]
    assert sorted(resolver.query("example.com", "MX")) == ["10 mx1.example.com",
                                                           "20 mx2.example.com"]


def test_null_mx_is_an_empty_host(resolver: Resolver) -> None:
    assert resolver.mx("nullmx.example") == [(0, "")]


def test_txt_strings_are_joined_per_record(resolver: Resolver) -> None:
    assert sorted(resolver.query("example.com", "TXT")) == ["v=spf1 -all", "x" * 300]


def test_ns(resolver: Resolver) -> None:
    assert sorted(resolver.query("example.com", "NS")) == ["ns1.example.com",
                                                           "ns2.example.com"]


def test_cname(resolver: Resolver) -> None:
    assert resolver.query("www.example.com", "CNAME") == ["example.com"]
    assert sorted(resolver.query("www.example.com", "A")) == ["192.0.2.1", "192.0.2.2"]


def test_ptr_of_an_address_or_a_reverse_name(resolver: Resolver, server: DnsServer) -> None:
    assert resolver.query("192.0.2.1", "PTR") == ["host.example.com"]
    assert resolver.query("1.2.0.192.in-addr.arpa", "PTR") == ["host.example.com"]
    server.set("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
               "PTR", ["v6.example.com."])
    assert resolver.query("2001:db8::1", "PTR") == ["v6.example.com"]


def test_nxdomain_and_nodata_are_empty(resolver: Resolver) -> None:
    assert resolver.query("nonexistent.example", "A") == []
    assert resolver.mx("nonexistent.example") == []
    assert resolver.query("alias.example", "MX") == []  # CNAME to a name without MX
    assert resolver.query("alias.example", "A") == ["192.0.2.1"]
    assert resolver.query("dangling.example", "A") == []  # CNAME to a name that is not
    assert resolver.query("host.example.com", "MX") == []
    assert resolver.query("192.0.2.99", "PTR") == []


def test_unusable_names_are_empty(resolver: Resolver, server: DnsServer) -> None:
    assert resolver.query("", "A") == []
    assert resolver.query("a..b", "A") == []
    assert resolver.query("x" * 64 + ".example", "A") == []
    assert server.count() == 0


def test_truncated_udp_answer_is_retried_over_tcp(resolver: Resolver,
                                                  server: DnsServer) -> None:
    server.udp_truncate = True
    assert resolver.query("example.com", "AAAA") == ["2001:db8::1"]
    assert [t for n, _, t in server.queries if n == "example.com"] == ["udp", "tcp"]


# -- temporary failures ---------------------------------------------------------

@pytest.mark.parametrize("name", ["broken.example", "refused.example", "slow.example"])
def test_servfail_refused_and_timeout_are_temporary(resolver: Resolver, name: str) -> None:
    with pytest.raises(DnsTempFail):
        resolver.query(name, "A")
    with pytest.raises(DnsTempFail):
        resolver.mx(name)


def test_no_server_listening_is_temporary() -> None:
    with DnsServer() as gone:
        address = gone.address
    with pytest.raises(DnsTempFail):
        Resolver([address], timeout=0.5).query("example.com", "A")


def test_no_server_listening_is_known_at_once(server: DnsServer) -> None:
    """Connected UDP sockets: the kernel's "port unreachable" ends the
    question (ECONNREFUSED) instead of a wait for the whole lifetime; a
    second server that answers is then asked."""
    with DnsServer() as gone:
        address = gone.address
    with pytest.raises(DnsTempFail, match="Connection refused"):
        Resolver([address], timeout=30).query("example.com", "A")
    both = Resolver([address, server.address], timeout=30)
    assert sorted(both.query("example.com", "A")) == ["192.0.2.1", "192.0.2.2"]


def test_temporary_failures_are_not_cached(resolver: Resolver, server: DnsServer) -> None:
    with pytest.raises(DnsTempFail):
        resolver.query("broken.example", "A")
    server.load_name("broken.example", {"A": ["192.0.2.7"]})
    assert resolver.query("broken.example", "A") == ["192.0.2.7"]


# -- the cache ------------------------------------------------------------------

def test_answers_are_cached_for_their_ttl(resolver: Resolver, server: DnsServer,
                                          clock: Clock) -> None:
    server.load_name("ttl.example", {"A": ["192.0.2.5"], "TTL": 60})
    assert resolver.query("ttl.example", "A") == ["192.0.2.5"]
    server.set("ttl.example", "A", ["192.0.2.6"])
    assert resolver.query("TTL.example.", "A") == ["192.0.2.5"]
    assert server.count("ttl.example", "A") == 1
    clock.now += 61
    assert resolver.query("ttl.example", "A") == ["192.0.2.6"]
    assert server.count("ttl.example", "A") == 2


def test_ttl_zero_is_not_cached(resolver: Resolver, server: DnsServer) -> None:
    server.load_name("zero.example", {"A": ["192.0.2.5"], "TTL": 0})
    resolver.query("zero.example", "A")
    resolver.query("zero.example", "A")
    assert server.count("zero.example", "A") == 2


def test_ptr_by_address_is_cached(resolver: Resolver, server: DnsServer) -> None:
    resolver.query("192.0.2.1", "PTR")
    resolver.query("1.2.0.192.in-addr.arpa", "PTR")
    assert server.count("1.2.0.192.in-addr.arpa", "PTR") == 1


def test_nxdomain_is_cached_briefly_for_every_type(server: DnsServer, clock: Clock) -> None:
    resolver = Resolver([server.address], timeout=0.5, clock=clock, negative_ttl=30)
    assert resolver.query("new.example", "A") == []
    server.set("new.example", "A", ["192.0.2.9"])
    assert resolver.query("new.example", "A") == []
    assert resolver.query("new.example", "MX") == []
    assert server.count("new.example") == 1
    clock.now += 31  # negative_ttl caps the SOA's 300 s
    assert resolver.query("new.example", "A") == ["192.0.2.9"]
    assert server.count("new.example") == 2


def test_negative_ttl_follows_a_shorter_soa(server: DnsServer, clock: Clock) -> None:
    server.negative_ttl = 5
    resolver = Resolver([server.address], timeout=0.5, clock=clock, negative_ttl=60)
    assert resolver.query("later.example", "A") == []
    server.set("later.example", "A", ["192.0.2.9"])
    clock.now += 6
    assert resolver.query("later.example", "A") == ["192.0.2.9"]


def test_nodata_is_cached_per_type(resolver: Resolver, server: DnsServer) -> None:
    assert resolver.query("host.example.com", "TXT") == []
    assert resolver.query("host.example.com", "TXT") == []
    assert server.count("host.example.com", "TXT") == 1
    assert resolver.query("host.example.com", "A") == ["192.0.2.1"]


def test_cache_is_bounded(server: DnsServer) -> None:
    resolver = Resolver([server.address], timeout=0.5, cache_size=2)
    for name in ("a.example", "b.example", "c.example"):
        server.set(name, "A", ["192.0.2.1"])
    resolver.query("a.example", "A")
    resolver.query("b.example", "A")
    resolver.query("a.example", "A")  # a is now the most recently used
    resolver.query("c.example", "A")  # evicts b
    assert len(resolver.cache) == 2
    resolver.query("a.example", "A")
    resolver.query("b.example", "A")
    assert server.count("a.example") == 1
    assert server.count("b.example") == 2


def test_threads_share_one_resolver(resolver: Resolver, server: DnsServer) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results.append(resolver.query(f"t{i % 4}.example", "A"))
            results.append(resolver.query("example.com", "AAAA"))
        except Exception as exc:  # noqa: BLE001  reported below
            errors.append(exc)

    for i in range(4):
        server.set(f"t{i}.example", "A", [f"192.0.2.{i + 10}"])
    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 32
    assert all(r in ([f"192.0.2.{i + 10}"] for i in range(4)) or r == ["2001:db8::1"]
               for r in results)


# -- the client's name (smtpd_peer.c) ----------------------------------------------

def test_client_hostname_forward_confirmed(resolver: Resolver) -> None:
    assert resolver.client_hostname("192.0.2.1") == (
        "host.example.com", PEER_CODE_OK, "host.example.com", PEER_CODE_OK)


def test_client_hostname_ipv6_and_v4_mapped(resolver: Resolver, server: DnsServer) -> None:
    server.set("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
               "PTR", ["host.example.com."])
    assert resolver.client_hostname("2001:db8::1") == (
        "host.example.com", 2, "host.example.com", 2)
    assert resolver.client_hostname("::ffff:192.0.2.1")[0] == "host.example.com"


def test_client_hostname_not_confirmed(resolver: Resolver, server: DnsServer,
                                       caplog: pytest.LogCaptureFixture) -> None:
    server.set("2.2.0.192.in-addr.arpa", "PTR", ["host.example.com."])
    with caplog.at_level(logging.WARNING, logger="hato.dns"):
        assert resolver.client_hostname("192.0.2.2") == (
            "unknown", PEER_CODE_FORGED, "host.example.com", PEER_CODE_OK)
    assert "hostname host.example.com does not resolve to address 192.0.2.2" in caplog.text


def test_client_hostname_forward_name_missing(resolver: Resolver, server: DnsServer) -> None:
    server.set("3.2.0.192.in-addr.arpa", "PTR", ["nowhere.example."])
    assert resolver.client_hostname("192.0.2.3") == (
        "unknown", PEER_CODE_FORGED, "nowhere.example", PEER_CODE_OK)


def test_client_hostname_forward_tempfail(resolver: Resolver, server: DnsServer) -> None:
    server.set("4.2.0.192.in-addr.arpa", "PTR", ["broken.example."])
    assert resolver.client_hostname("192.0.2.4") == (
        "unknown", PEER_CODE_TEMP, "broken.example", PEER_CODE_OK)


def test_client_hostname_reverse_tempfail(resolver: Resolver, server: DnsServer) -> None:
    server.set("5.2.0.192.in-addr.arpa", "SERVFAIL", "SERVFAIL")
    assert resolver.client_hostname("192.0.2.5") == (
        "unknown", PEER_CODE_TEMP, "unknown", PEER_CODE_TEMP)


def test_client_hostname_without_ptr(resolver: Resolver) -> None:
    assert resolver.client_hostname("192.0.2.77") == (
        "unknown", PEER_CODE_PERM, "unknown", PEER_CODE_PERM)


@pytest.mark.parametrize("ptr", ["192.0.2.6.", "1234.", "bad_-.example.", "-x.example.",
                                 "under score.example."])
def test_client_hostname_numeric_or_invalid_ptr(resolver: Resolver, server: DnsServer,
                                                ptr: str) -> None:
    server.set("6.2.0.192.in-addr.arpa", "PTR", [ptr.replace(" ", "\\032")])
    server.set(ptr, "A", ["192.0.2.6"])
    assert resolver.client_hostname("192.0.2.6") == (
        "unknown", PEER_CODE_PERM, "unknown", PEER_CODE_PERM)


def test_client_hostname_of_garbage() -> None:
    assert Resolver([("127.0.0.1", 9)], timeout=0.1).client_hostname("not-an-ip") == (
        "unknown", 5, "unknown", 5)


# -- configuration ----------------------------------------------------------------

def test_parse_dns_servers() -> None:
    assert parse_dns_servers(["127.0.0.1:5353", "192.0.2.53", "[::1]:5300", "[::1]",
                              "2001:db8::53"]) == [
        ("127.0.0.1", 5353), ("192.0.2.53", 53), ("::1", 5300), ("::1", 53),
        ("2001:db8::53", 53)]
    assert ("127.0.0.1", 53) in parse_dns_servers(["localhost"])


@pytest.mark.parametrize("item", ["127.0.0.1:", "127.0.0.1:0", "127.0.0.1:99999",
                                  "127.0.0.1:x", "[::1", "[::1]x", "[nohost]:53",
                                  "2001:db8::zz", ":53", "bad_host!"])
def test_parse_dns_servers_rejects(item: str) -> None:
    with pytest.raises(ConfigError):
        parse_dns_servers([item])


def test_hato_dns_servers_parameter() -> None:
    s = settings("hato_dns_servers = 127.0.0.1:5353, [::1]:5300\n")
    assert Resolver.from_settings(s).servers == [("127.0.0.1", 5353), ("::1", 5300)]
    assert settings("").list("hato_dns_servers") == []


def test_from_settings_asks_the_configured_server(server: DnsServer) -> None:
    resolver = Resolver.from_settings(settings(f"hato_dns_servers = {server.spec}\n"),
                                      timeout=0.5)
    assert resolver.query("host.example.com", "A") == ["192.0.2.1"]


def test_empty_setting_reads_resolv_conf(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.1\n")
    resolver = Resolver(None, resolv_conf=str(conf))
    assert resolver.servers == []
    assert [str(ns) for ns in resolver._resolver.nameservers] == ["127.0.0.1"]


def test_disable_dns_lookups_is_for_the_smtp_client(server: DnsServer) -> None:
    s = settings(f"hato_dns_servers = {server.spec}\ndisable_dns_lookups = yes\n")
    smtpd = Resolver.from_settings(s, timeout=0.5)
    assert smtpd.mx("example.com") == [(10, "mx1.example.com"), (20, "mx2.example.com")]
    server.reset_counts()
    smtp = Resolver.from_settings(s, smtp_client=True, timeout=0.5)
    assert smtp.mx("example.com") == []
    assert smtp.query("example.com", "TXT") == []
    assert "127.0.0.1" in smtp.query("localhost", "A")  # getaddrinfo: /etc/hosts
    assert server.count() == 0

"""postscreen's weighted DNSBL/DNSWL scoring against a real DNS server.

The test DNS server (tests/dnsserver.py) on loopback serves the reference
setup's lists — ``all.rbl.jp=127.0.0.[2;4]``,
``zen.spamhaus.org=127.0.0.[2..7;10;11]*2`` — plus an allowlist
``list.dnswl.test=127.0.[0..255].1*-3``, with several A records per name and
per-name TTLs. hato.io.postscreen_dnsbl.DnsblScorer asks them through
hato.io.dns.Resolver (no TTLs: results kept for postscreen_dnsbl_min_ttl)
and through TtlResolver (the answers' TTLs, clamped to min/max), each zone
once, all at once, within postscreen_dnsbl_timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from hato.io.dns import Resolver
from hato.io.postscreen_dnsbl import DnsblScorer, TtlResolver
from hato.policy.dnsquery import DnsTempFail
from hato.policy.postscreen_dnsbl import (
    ALLOW,
    DENY,
    PASS,
    dnsbl_reply,
    parse_sites,
    reply_zone,
    verdict,
)
from tests.dnsserver import DnsServer

pytestmark = pytest.mark.integration

SITES = parse_sites(["all.rbl.jp=127.0.0.[2;4]", "zen.spamhaus.org=127.0.0.[2..7;10;11]*2",
                     "list.dnswl.test=127.0.[0..255].1*-3"])
NEGATIVE_TTL = 90
MIN_TTL, MAX_TTL = 60, 3600
REV6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"

ZONES = {
    # 192.0.2.10: listed by both deny lists (several records each) → 1 + 2 = 3
    "10.2.0.192.all.rbl.jp": {"A": ["127.0.0.2", "127.0.0.3", "127.0.0.4"], "TTL": 300},
    "10.2.0.192.zen.spamhaus.org": {"A": ["127.0.0.4", "127.0.0.10", "127.0.0.20"],
                                    "TTL": 120},
    # 192.0.2.20: listed, but no record passes the filters → 0
    "20.2.0.192.all.rbl.jp": {"A": ["127.0.0.3", "127.0.0.5"], "TTL": 300},
    "20.2.0.192.zen.spamhaus.org": {"A": ["127.0.0.8", "127.0.0.9"], "TTL": 300},
    # 192.0.2.30: zen (2) and the allowlist (-3) → -1
    "30.2.0.192.zen.spamhaus.org": {"A": ["127.0.0.2"], "TTL": 1000},
    "30.2.0.192.list.dnswl.test": {"A": ["127.0.9.1", "127.0.9.2"], "TTL": 200},
    # 192.0.2.40: all.rbl.jp only (1); zen fails (SERVFAIL)
    "40.2.0.192.all.rbl.jp": {"A": ["127.0.0.4"], "TTL": 300},
    "40.2.0.192.zen.spamhaus.org": "SERVFAIL",
    # 192.0.2.50: all.rbl.jp only (1); zen never answers
    "50.2.0.192.all.rbl.jp": {"A": ["127.0.0.2"], "TTL": 300},
    "50.2.0.192.zen.spamhaus.org": "TIMEOUT",
    # 2001:db8::1: zen (2) over IPv6 nibbles
    f"{REV6}.zen.spamhaus.org": {"A": ["127.0.0.11", "127.0.0.99"], "TTL": 7200},
    # 192.0.2.60: allowlisted only, TTL below min_ttl → -3
    "60.2.0.192.list.dnswl.test": {"A": ["127.0.2.1"], "TTL": 5},
}


@pytest.fixture(scope="module")
def dns() -> Iterator[DnsServer]:
    with DnsServer(ZONES, negative_ttl=NEGATIVE_TTL) as server:
        yield server


def score(dns_server: DnsServer, addr: str, *, ttl: bool = True, timeout: float = 3.0,
          resolver_timeout: float = 10.0, warn: list[str] | None = None):
    servers = [dns_server.address]
    lookup = (TtlResolver(servers, timeout=resolver_timeout) if ttl
              else Resolver(servers, timeout=resolver_timeout, cache_size=0))
    scorer = DnsblScorer(SITES, lookup, min_ttl=MIN_TTL, max_ttl=MAX_TTL, timeout=timeout,
                         info=lambda _line: None,
                         warn=(warn.append if warn is not None else lambda _line: None))
    try:
        return asyncio.run(scorer.score(addr))
    finally:
        scorer.close()


def test_listed_by_both_deny_lists(dns):
    dns.reset_counts()
    result = score(dns, "192.0.2.10")
    assert result.score == 3
    assert result.complete
    assert result.dnsbl_name == "zen.spamhaus.org"
    assert result.ttl == 120  # the smallest TTL of the listings
    assert [h.site.domain for h in result.hits] == ["all.rbl.jp", "zen.spamhaus.org"]
    # Each zone asked once, for A records only.
    for zone in ("all.rbl.jp", "zen.spamhaus.org", "list.dnswl.test"):
        assert dns.count(f"10.2.0.192.{zone}", "A") == 1
    assert dns.count() == 3
    # Each edge of the threshold.
    assert verdict(result.score, 3, 0) == DENY
    assert verdict(result.score, 4, 0) == PASS
    assert verdict(result.score, 2, -1) == DENY
    assert dnsbl_reply("192.0.2.10", reply_zone(result.dnsbl_name, None)) == (
        "550 5.7.1 Service unavailable; client [192.0.2.10] blocked using zen.spamhaus.org")


def test_plain_resolver_without_ttls(dns):
    result = score(dns, "192.0.2.10", ttl=False)
    assert result.score == 3
    assert result.ttl == MIN_TTL


def test_filters_that_do_not_match(dns):
    result = score(dns, "192.0.2.20")
    assert (result.score, result.hits, result.dnsbl_name) == (0, (), None)
    assert result.complete
    # Pass TTL: the smallest of the unmatched answers (300) and the negative
    # answer's SOA (90).
    assert result.ttl == NEGATIVE_TTL
    assert verdict(result.score, 1, -1) == PASS


def test_unlisted_everywhere(dns):
    result = score(dns, "192.0.2.99")
    assert (result.score, result.ttl) == (0, NEGATIVE_TTL)
    assert verdict(result.score, 1, 0) == PASS


def test_allowlist_negative_weight(dns):
    result = score(dns, "192.0.2.30")
    assert result.score == -1
    assert result.ttl == NEGATIVE_TTL  # pass TTL: min(200 allowlist, 90 all.rbl.jp NXDOMAIN)
    assert verdict(result.score, 1, -1) == ALLOW
    assert verdict(result.score, 1, -2) == PASS
    assert verdict(result.score, 1, 0) == PASS
    only_allow = score(dns, "192.0.2.60")
    assert only_allow.score == -3
    assert only_allow.ttl == MIN_TTL  # 5 s clamped up
    assert verdict(only_allow.score, 1, -3) == ALLOW


def test_servfail_counts_zero(dns):
    warn: list[str] = []
    result = score(dns, "192.0.2.40", warn=warn)
    assert result.score == 1
    assert [zone for zone, _ in result.errors] == ["zen.spamhaus.org"]
    assert result.ttl == MIN_TTL
    assert any("lookup error for DNS query 40.2.0.192.zen.spamhaus.org" in w for w in warn)


def test_timeout_counts_zero_within_the_time_limit(dns):
    warn: list[str] = []
    started = time.monotonic()
    result = score(dns, "192.0.2.50", timeout=1.0, resolver_timeout=10.0, warn=warn)
    assert time.monotonic() - started < 3
    assert result.score == 1
    assert dict(result.errors) == {"zen.spamhaus.org": "timed out"}
    assert "dnsblog reply timeout 1s for zen.spamhaus.org" in warn
    # The resolver's own time limit gives the same result.
    result = score(dns, "192.0.2.50", timeout=5.0, resolver_timeout=0.5)
    assert result.score == 1
    assert [zone for zone, _ in result.errors] == ["zen.spamhaus.org"]


def test_ipv6_client(dns):
    dns.reset_counts()
    result = score(dns, "2001:db8::1")
    assert result.score == 2
    assert result.ttl == MAX_TTL  # 7200 clamped down
    assert dns.count(f"{REV6}.zen.spamhaus.org", "A") == 1


def test_reply_map_hides_the_zone(dns):
    result = score(dns, "192.0.2.10")
    table = {"zen.spamhaus.org": "a-public-name.example"}
    assert dnsbl_reply("192.0.2.10", reply_zone(result.dnsbl_name, table.get), 521) == (
        "521 5.7.1 Service unavailable; client [192.0.2.10] blocked using "
        "a-public-name.example")


def test_ttl_resolver_answers(dns):
    res = TtlResolver.from_settings({"hato_dns_servers": dns.spec}, timeout=3.0)
    records, ttl = res.query_ttl("10.2.0.192.zen.spamhaus.org", "A")
    assert (sorted(records), ttl) == (["127.0.0.10", "127.0.0.20", "127.0.0.4"], 120)
    assert res.query_ttl("no.such.name.test", "A") == ([], NEGATIVE_TTL)  # NXDOMAIN
    assert res.query_ttl("10.2.0.192.zen.spamhaus.org", "TXT") == ([], NEGATIVE_TTL)  # NODATA
    assert res.query("30.2.0.192.zen.spamhaus.org", "A") == ["127.0.0.2"]
    with pytest.raises(DnsTempFail):
        res.query_ttl("40.2.0.192.zen.spamhaus.org", "A")

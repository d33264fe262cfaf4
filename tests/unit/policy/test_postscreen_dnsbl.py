"""postscreen_dnsbl_sites parsing, weighted scoring, TTLs and verdicts
(hato.policy.postscreen_dnsbl), and the concurrent lookup driver
(hato.io.postscreen_dnsbl.DnsblScorer) with a fake DNS."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hato.io.postscreen_dnsbl import DnsblScorer
from hato.policy.dnsquery import DnsTempFail, StaticDns
from hato.policy.postscreen_dnsbl import (
    ALLOW,
    DENY,
    PASS,
    DnsblSiteError,
    ZoneAnswer,
    clamp_ttl,
    dnsbl_rank_log,
    dnsbl_reply,
    listed_log,
    parse_sites,
    query_name,
    reply_zone,
    score_answers,
    verdict,
    zones,
)

REFERENCE = ["all.rbl.jp=127.0.0.[2;4]", "zen.spamhaus.org=127.0.0.[2..7;10;11]*2",
             "list.dnswl.test=127.0.[0..255].1*-3"]


# -- parsing ----------------------------------------------------------------------------------


def test_parse_plain_domain_defaults():
    [site] = parse_sites(["zen.spamhaus.org"])
    assert (site.domain, site.filter, site.weight) == ("zen.spamhaus.org", None, 1)
    assert site.matches(["127.0.0.99"]) and not site.matches([])


@pytest.mark.parametrize("entry, matching, not_matching", [
    ("x.test=127.0.0.2", ["127.0.0.2"], ["127.0.0.3", "127.0.1.2"]),
    ("x.test=127.0.0.[2;4]", ["127.0.0.2", "127.0.0.4"], ["127.0.0.3", "127.0.0.5"]),
    ("x.test=127.0.0.[2..7;10;11]", ["127.0.0.2", "127.0.0.7", "127.0.0.10", "127.0.0.11"],
     ["127.0.0.1", "127.0.0.8", "127.0.0.9", "127.0.0.12"]),
    ("x.test=127.0.[0..255].1", ["127.0.0.1", "127.0.9.1", "127.0.255.1"],
     ["127.0.0.2", "127.1.0.1"]),
    ("x.test=[126..127].[0;1].0.[1..2;4]", ["126.1.0.4", "127.0.0.1"], ["127.2.0.1"]),
])
def test_parse_filter_forms(entry, matching, not_matching):
    [site] = parse_sites([entry])
    assert site.filter == entry.split("=", 1)[1]
    for a in matching:
        assert site.matches([a]), a
    for a in not_matching:
        assert not site.matches([a]), a
    assert site.matches(not_matching + matching[:1])  # any record may match


@pytest.mark.parametrize("entry, weight", [
    ("x.test*3", 3), ("x.test=127.0.0.2*3", 3), ("x.test*-3", -3),
    ("x.test=127.0.[0..255].1*-3", -3), ("x.test*+2", 2), ("x.test*0", 0),
])
def test_parse_weights(entry, weight):
    assert parse_sites([entry])[0].weight == weight


def test_parse_several_entries_per_item_and_separators():
    sites = parse_sites(["a.test, b.test*2\tc.test=127.0.0.2", "  ", "d.test"])
    assert [s.domain for s in sites] == ["a.test", "b.test", "c.test", "d.test"]
    assert parse_sites([]) == []


@pytest.mark.parametrize("entry, fragment", [
    ("x.test*", 'bad DNSBL weight factor "" in "x.test*"'),
    ("x.test*two", 'bad DNSBL weight factor "two"'),
    ("x.test*2x", 'bad DNSBL weight factor "2x"'),
    ("x.test*2*3", 'bad DNSBL weight factor "2*3"'),
    ("x.test*1.5", 'bad DNSBL weight factor "1.5"'),
    ("x.test=127.0.0", 'bad DNSBL filter syntax "127.0.0" in "x.test=127.0.0"'),
    ("x.test=127.0.0.256", "bad DNSBL filter syntax"),
    ("x.test=127.0.0.[2;4", "bad DNSBL filter syntax"),
    ("x.test=127.0.0.[7..2]", "bad DNSBL filter syntax"),
    ("x.test=127.0.0.[]", "bad DNSBL filter syntax"),
    ("x.test=127.0.0.2.5", "bad DNSBL filter syntax"),
    ("x.test=", "bad DNSBL filter syntax"),
    ("=127.0.0.2", 'bad DNSBL domain name "" in "=127.0.0.2"'),
    ("*3", 'bad DNSBL domain name ""'),
    ("bad_domain..test", 'bad DNSBL domain name "bad_domain..test"'),
    ("-x.test", "bad DNSBL domain name"),
    ("127.0.0.1", "bad DNSBL domain name"),
])
def test_parse_bad_entries(entry, fragment):
    with pytest.raises(DnsblSiteError) as info:
        parse_sites(["ok.test", entry])
    assert fragment in str(info.value)
    assert str(info.value).startswith("postscreen_dnsbl_sites: ")
    assert info.value.entry == entry
    assert isinstance(info.value, ValueError)


def test_zones_distinct_in_order():
    sites = parse_sites(["b.test", "a.test=127.0.0.2", "B.TEST*2", "a.test*-1", "c.test"])
    assert zones(sites) == ["b.test", "a.test", "c.test"]


# -- reversal ---------------------------------------------------------------------------------


def test_query_name_ipv4_ipv6():
    assert query_name("192.0.2.1", "zen.test") == "1.2.0.192.zen.test"
    assert query_name("::ffff:192.0.2.1", "zen.test") == "1.2.0.192.zen.test"
    assert query_name("2001:db8::1", "zen.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.test")
    assert query_name("2001:DB8:0:0:0:0:0:1", "z") == query_name("2001:db8::1", "z")
    assert query_name("not-an-address", "zen.test") is None


# -- scoring ----------------------------------------------------------------------------------


def answers(**by_zone):
    return {zone.replace("_", "."): value for zone, value in by_zone.items()}


def listed(*addrs, ttl=300):
    return ZoneAnswer(tuple(addrs), ttl)


def unlisted(ttl=300):
    return ZoneAnswer((), ttl)


def test_weight_counts_once_per_entry_even_with_many_matching_records():
    sites = parse_sites(["zen.test=127.0.0.[2..11]*2"])
    result = score_answers(sites, {"zen.test": listed("127.0.0.2", "127.0.0.4", "127.0.0.10")})
    assert result.score == 2
    assert [h.site.entry for h in result.hits] == ["zen.test=127.0.0.[2..11]*2"]
    assert result.hits[0].addrs == ("127.0.0.2", "127.0.0.4", "127.0.0.10")


def test_two_entries_for_one_zone_each_count_once():
    # postscreen_dnsbl_test.c: "zen.spamhaus.org*3, zen.spamhaus.org" scores 4,
    # "zen.spamhaus.org, zen.spamhaus.org" scores 2.
    reply = {"zen.spamhaus.org": listed("127.0.0.2", "127.0.0.4", "127.0.0.10")}
    assert score_answers(parse_sites(["zen.spamhaus.org*3", "zen.spamhaus.org"]),
                         reply).score == 4
    assert score_answers(parse_sites(["zen.spamhaus.org", "zen.spamhaus.org"]), reply).score == 2
    assert score_answers(parse_sites(["zen.spamhaus.org=127.0.0.10*3", "zen.spamhaus.org"]),
                         reply).score == 4


def test_filters_add_and_subtract():
    sites = parse_sites(["zen.test=127.0.0.[1..255]*3", "zen.test=127.0.0.3*-1"])
    assert score_answers(sites, {"zen.test": listed("127.0.0.3", "127.0.0.10")}).score == 2
    assert score_answers(sites, {"zen.test": listed("127.0.0.10")}).score == 3


def test_reference_sites():
    sites = parse_sites(REFERENCE)
    zl = answers(all_rbl_jp=listed("127.0.0.4", "127.0.0.3"),
                 zen_spamhaus_org=listed("127.0.0.10", "127.0.0.11"),
                 list_dnswl_test=unlisted())
    result = score_answers(sites, zl)
    assert result.score == 3
    assert result.dnsbl_name == "zen.spamhaus.org"  # the largest weight
    # Filters that do not match add nothing.
    zl["all.rbl.jp"] = listed("127.0.0.3")
    zl["zen.spamhaus.org"] = listed("127.0.0.8", "127.0.0.9")
    assert score_answers(sites, zl).score == 0
    # The allowlist subtracts.
    zl["list.dnswl.test"] = listed("127.0.5.1")
    zl["zen.spamhaus.org"] = listed("127.0.0.2")
    result = score_answers(sites, zl)
    assert result.score == -1
    assert [h.site.domain for h in result.hits] == ["zen.spamhaus.org", "list.dnswl.test"]


def test_dnsbl_name_largest_weight_first_on_tie():
    sites = parse_sites(["a.test*2", "b.test*5", "c.test*5", "w.test*-9"])
    zl = answers(a_test=listed("127.0.0.2"), b_test=listed("127.0.0.2"),
                 c_test=listed("127.0.0.2"), w_test=unlisted())
    assert score_answers(sites, zl).dnsbl_name == "b.test"
    assert score_answers(sites, answers(a_test=unlisted(), b_test=unlisted(),
                                        c_test=unlisted(), w_test=unlisted())).dnsbl_name is None
    # Postfix: the first match sets the name even when its weight is negative.
    only_allow = answers(a_test=unlisted(), b_test=unlisted(), c_test=unlisted(),
                         w_test=listed("127.0.0.2"))
    assert score_answers(sites, only_allow).dnsbl_name == "w.test"


def test_failed_zone_counts_zero_and_is_noted():
    sites = parse_sites(REFERENCE)
    zl = answers(all_rbl_jp=listed("127.0.0.2"),
                 zen_spamhaus_org=ZoneAnswer.failed("timed out"))
    result = score_answers(sites, zl, min_ttl=60, max_ttl=3600)
    assert result.score == 1
    assert dict(result.errors) == {"zen.spamhaus.org": "timed out",
                                   "list.dnswl.test": "no answer"}
    assert not result.complete
    assert result.ttl == 60  # an incomplete score is not kept long


# -- TTLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ttl, expected", [
    (None, 60), (-1, 60), (0, 60), (59, 60), (60, 60), (61, 61), (3599, 3599),
    (3600, 3600), (3601, 3600), (86400, 3600),
])
def test_clamp_ttl(ttl, expected):
    assert clamp_ttl(ttl, 60, 3600) == expected


def two(foo, zen):
    return {"foo.example.org": foo, "zen.spamhaus.org": zen}


@pytest.mark.parametrize("sites, foo, zen, want_score, want_ttl", [
    # postscreen_dnsbl_test.c, multi_dnsbl_tests (min_ttl 60, max_ttl 3600)
    ("zen.spamhaus.org, foo.example.org", listed("127.0.0.10", ttl=60),
     listed("127.0.0.10", ttl=60), 2, 60),
    ("zen.spamhaus.org, foo.example.org", unlisted(62), listed("127.0.0.10", ttl=61), 1, 61),
    ("zen.spamhaus.org, foo.example.org", listed("127.0.0.10", ttl=62), unlisted(61), 1, 62),
    ("zen.spamhaus.org, foo.example.org", unlisted(62), unlisted(61), 0, 61),
])
def test_ttl_rules_from_postfix_tests(sites, foo, zen, want_score, want_ttl):
    result = score_answers(parse_sites([sites]), two(foo, zen), min_ttl=60, max_ttl=3600)
    assert (result.score, result.ttl) == (want_score, want_ttl)


def test_ttl_allowlist_wins():
    sites = parse_sites(["list.dnswl.org=127.0.[0..255].[1..3]*-2, foo.example.org"])
    zl = {"foo.example.org": listed("127.0.0.10", ttl=62),
          "list.dnswl.org": listed("127.0.5.2", ttl=61)}
    result = score_answers(sites, zl, min_ttl=60, max_ttl=3600)
    assert (result.score, result.ttl) == (-1, 61)


def test_ttl_clamped_and_unknown():
    sites = parse_sites(["a.test", "b.test"])
    zl = answers(a_test=listed("127.0.0.2", ttl=5), b_test=unlisted(99999))
    assert score_answers(sites, zl, min_ttl=60, max_ttl=3600).ttl == 60
    zl = answers(a_test=listed("127.0.0.2", ttl=99999), b_test=unlisted(5))
    assert score_answers(sites, zl, min_ttl=60, max_ttl=3600).ttl == 3600
    zl = answers(a_test=unlisted(None), b_test=unlisted(None))
    assert score_answers(sites, zl, min_ttl=60, max_ttl=3600).ttl == 60
    # An unknown TTL among known ones is left out (dnsblog's -1).
    zl = answers(a_test=unlisted(None), b_test=unlisted(500))
    assert score_answers(sites, zl, min_ttl=60, max_ttl=3600).ttl == 500


# -- verdicts and texts -----------------------------------------------------------------------


@pytest.mark.parametrize("score, threshold, allow, expected", [
    (3, 3, 0, DENY), (4, 3, 0, DENY), (2, 3, 0, PASS), (1, 1, 0, DENY), (0, 1, 0, PASS),
    (-1, 1, 0, PASS),  # allowlisting is off at 0
    (-1, 1, -1, ALLOW), (-2, 1, -1, ALLOW), (0, 1, -1, PASS),
    (-2, 1, -3, PASS), (-3, 1, -3, ALLOW), (-4, 3, -3, ALLOW),
    (5, 3, 10, DENY),  # the threshold is tested first
])
def test_verdict_edges(score, threshold, allow, expected):
    assert verdict(score, threshold, allow) == expected


def test_texts():
    assert dnsbl_rank_log(3, "192.0.2.1", 54321) == "DNSBL rank 3 for [192.0.2.1]:54321"
    assert dnsbl_reply("192.0.2.1", "zen.spamhaus.org") == (
        "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org")
    assert dnsbl_reply("2001:db8::1", "z.test", 521).startswith("521 5.7.1 ")
    assert listed_log("192.0.2.1", "zen.test", "127.0.0.2") == (
        "addr 192.0.2.1 listed by domain zen.test as 127.0.0.2")


def test_reply_zone():
    table = {"secret123.zen.dq.spamhaus.net": "zen.spamhaus.org"}
    assert reply_zone("secret123.zen.dq.spamhaus.net", table.get) == "zen.spamhaus.org"
    assert reply_zone("all.rbl.jp", table.get) == "all.rbl.jp"
    assert reply_zone("all.rbl.jp", None) == "all.rbl.jp"

    def broken(_key):
        raise RuntimeError("table down")
    with pytest.raises(RuntimeError):
        reply_zone("secret.test", broken)


# -- the lookup driver ------------------------------------------------------------------------

ADDR = "192.0.2.1"
REV = "1.2.0.192"


def run(coro):
    return asyncio.run(coro)


def scorer(records, sites=REFERENCE, **kwargs):
    dns = StaticDns(records) if isinstance(records, dict) else records
    kwargs.setdefault("info", lambda _line: None)
    kwargs.setdefault("warn", lambda _line: None)
    return DnsblScorer(parse_sites(sites), dns, **kwargs)


def test_scorer_reference_setup():
    dns = StaticDns({(f"{REV}.all.rbl.jp", "A"): ["127.0.0.4", "127.0.0.3"],
                     (f"{REV}.zen.spamhaus.org", "A"): ["127.0.0.2", "127.0.0.10"]})
    info: list[str] = []
    s = scorer(dns, info=info.append)
    try:
        result = run(s.score(ADDR))
    finally:
        s.close()
    assert result.score == 3 and result.complete
    assert result.dnsbl_name == "zen.spamhaus.org"
    assert result.ttl == 60  # no TTLs from a plain DnsLookup: min_ttl
    assert sorted(dns.asked) == sorted([(f"{REV}.all.rbl.jp", "A"),
                                        (f"{REV}.zen.spamhaus.org", "A"),
                                        (f"{REV}.list.dnswl.test", "A")])
    assert f"addr {ADDR} listed by domain zen.spamhaus.org as 127.0.0.10" in info


def test_scorer_asks_each_zone_once():
    dns = StaticDns({(f"{REV}.zen.test", "A"): ["127.0.0.2", "127.0.0.3"]})
    s = scorer(dns, sites=["zen.test=127.0.0.2*2", "zen.test=127.0.0.3", "ZEN.test*-1"])
    result = run(s.score(ADDR))
    s.close()
    assert result.score == 2
    assert dns.asked == [(f"{REV}.zen.test", "A")]


def test_scorer_ipv6():
    rev6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2"
    dns = StaticDns({(f"{rev6}.zen.spamhaus.org", "A"): ["127.0.0.11"]})
    s = scorer(dns)
    result = run(s.score("2001:db8::1"))
    s.close()
    assert result.score == 2


def test_scorer_temporary_failure_counts_zero():
    dns = StaticDns({(f"{REV}.all.rbl.jp", "A"): ["127.0.0.2"],
                     (f"{REV}.zen.spamhaus.org", "A"): "TEMP"})
    warn: list[str] = []
    s = scorer(dns, warn=warn.append)
    result = run(s.score(ADDR))
    s.close()
    assert result.score == 1
    assert [zone for zone, _ in result.errors] == ["zen.spamhaus.org"]
    assert any("lookup error for DNS query 1.2.0.192.zen.spamhaus.org" in w for w in warn)


class SlowDns:
    """A DnsLookup whose chosen names block until released."""

    def __init__(self, records, slow, delay=5.0):
        self.static = StaticDns(records)
        self.slow = slow
        self.delay = delay
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def query(self, name, rtype):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if name in self.slow:
                self.release.wait(self.delay)
            else:
                time.sleep(0.05)
            return self.static.query(name, rtype)
        finally:
            with self.lock:
                self.active -= 1

    def mx(self, name):
        return []


def test_scorer_timeout_counts_zero():
    dns = SlowDns({(f"{REV}.all.rbl.jp", "A"): ["127.0.0.2"],
                   (f"{REV}.zen.spamhaus.org", "A"): ["127.0.0.2"]},
                  slow={f"{REV}.zen.spamhaus.org"})
    warn: list[str] = []
    s = scorer(dns, timeout=0.3, warn=warn.append)
    started = time.monotonic()
    try:
        result = run(s.score(ADDR))
    finally:
        dns.release.set()
        s.close()
    assert time.monotonic() - started < 2
    assert result.score == 1
    assert dict(result.errors) == {"zen.spamhaus.org": "timed out"}
    assert "dnsblog reply timeout 0.3s for zen.spamhaus.org" in warn
    assert result.ttl == 60


def test_scorer_lookups_run_concurrently():
    dns = SlowDns({}, slow=set())
    s = scorer(dns, sites=[f"z{i}.test" for i in range(6)])
    run(s.score(ADDR))
    s.close()
    assert dns.peak > 1


def test_scorer_shares_a_lookup_for_one_address():
    dns = SlowDns({(f"{REV}.zen.test", "A"): ["127.0.0.2"]}, slow=set())
    s = scorer(dns, sites=["zen.test"])

    async def both():
        return await asyncio.gather(s.score(ADDR), s.score(ADDR))
    first, second = run(both())
    s.close()
    assert first.score == second.score == 1
    assert dns.static.asked == [(f"{REV}.zen.test", "A")]


def test_scorer_uses_query_ttl():
    calls = []

    def query_ttl(name, rtype):
        calls.append((name, rtype))
        if name.endswith("zen.spamhaus.org"):
            return ["127.0.0.2"], 7200
        if name.endswith("all.rbl.jp"):
            raise DnsTempFail("SERVFAIL")
        return [], 120

    s = scorer(StaticDns({}), query_ttl=query_ttl, min_ttl=60, max_ttl=3600)
    result = run(s.score(ADDR))
    s.close()
    assert len(calls) == 3
    assert result.score == 2
    assert result.ttl == 60  # all.rbl.jp failed: incomplete
    ok = scorer(StaticDns({}), sites=REFERENCE[1:], query_ttl=query_ttl, max_ttl=3600)
    assert run(ok.score(ADDR)).ttl == 3600  # listed: 7200 clamped to max_ttl
    ok.close()


def test_scorer_finds_query_ttl_on_the_lookup_object():
    class TtlDns(StaticDns):
        def query_ttl(self, name, rtype):
            return self.query(name, rtype), 600

    dns = TtlDns({(f"{REV}.zen.test", "A"): ["127.0.0.2"]})
    s = scorer(dns, sites=["zen.test"], max_ttl=3600)
    assert run(s.score(ADDR)).ttl == 600
    s.close()


def test_scorer_no_sites_and_bad_address():
    s = scorer(StaticDns({}), sites=[])
    assert run(s.score(ADDR)).score == 0
    s2 = scorer(StaticDns({}))
    assert run(s2.score("garbage")).score == 0
    s.close()
    s2.close()


def test_scorer_internal_error_is_a_failed_zone():
    class Broken(StaticDns):
        def query(self, name, rtype):
            raise KeyError(name)

    s = scorer(Broken({}), sites=["zen.test"])
    result = run(s.score(ADDR))
    s.close()
    assert result.score == 0 and result.errors[0][0] == "zen.test"

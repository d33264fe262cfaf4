"""postscreen's weighted DNS allow/deny lists (Postfix's postscreen_dnsbl.c,
dnsblog.c and the DNSBL part of postscreen_early.c) — the pure part.

:func:`parse_sites` reads ``postscreen_dnsbl_sites`` entries
``domain[=filter][*weight]``; :func:`score_answers` turns the A records of
each DNSBL zone into a combined score, the zone named in the reply and the
time to cache the result; :func:`verdict` applies
``postscreen_dnsbl_threshold`` and ``postscreen_dnsbl_allowlist_threshold``;
:func:`reply_zone` applies ``postscreen_dnsbl_reply_map``. The DNS questions
themselves are asked by :class:`hato.io.postscreen_dnsbl.DnsblScorer`.

Postfix facts this follows:

* Each entry is parsed as Postfix's psc_dnsbl_add_site() does: the weight
  after the first ``*`` (an integer, 1 when omitted, negative to allowlist),
  the filter after the first ``=`` (ip_match syntax: four octets, each a
  number or ``[...]`` of ``;``-separated numbers and ``low..high`` ranges),
  then the domain, which must be a valid host name.
* Each distinct domain is asked once. Every entry for that domain whose
  filter matches any of the A records (or that has no filter) adds its
  weight once, however many records match; two entries for the same domain
  each count (postscreen_dnsbl_test.c: ``zen.spamhaus.org*3,
  zen.spamhaus.org`` scores 4).
* The zone named in the reply is the matching entry with the largest weight
  (the first one to match wins a tie).
* ``DNSBL rank N for [addr]:port`` is logged when the score reaches the
  threshold; the reply is ``550 5.7.1 Service unavailable; client [addr]
  blocked using ZONE`` (``enforce``) or ``521 ...`` (``drop``).
* The allowlist test (postscreen_early.c psc_whitelist_non_dnsbl) applies
  only when ``allowlist_threshold < 0``, the score is below the threshold
  and ``score <= allowlist_threshold``; the caller must also check that no
  other test failed in this session.

Time to live (Postfix 3.1+; dnsblog.c and postscreen_dnsbl_test.c): a
listed answer's TTL is the smallest TTL of its A records, an unlisted
answer's is the TTL of the SOA in the negative reply. A matching entry with
a positive weight contributes its answer's TTL to the "fail" TTL; every
other (entry, answer) — an allowlist hit, a filter that did not match, a
name that is not listed — to the "pass" TTL. A positive score keeps the
smallest fail TTL, any other score the smallest pass TTL. The result is
clamped to [postscreen_dnsbl_min_ttl, postscreen_dnsbl_max_ttl]. hato's
choices where Postfix gives no TTL: an unknown TTL (the lookup object gives
none, or the negative reply has no SOA) counts as postscreen_dnsbl_min_ttl,
and so does any result to which a failed or timed-out lookup contributed
nothing: an incomplete score is re-checked soon rather than trusted long.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..config.errors import ConfigError
from ..proto.hostname import valid_hostname
from .smtpd_access import IpPattern, ip_match, parse_ip_match

__all__ = [
    "ALLOW",
    "DENY",
    "PASS",
    "DnsblResult",
    "DnsblSiteError",
    "Site",
    "SiteHit",
    "ZoneAnswer",
    "clamp_ttl",
    "dnsbl_rank_log",
    "dnsbl_reply",
    "listed_log",
    "lookup_error_log",
    "parse_sites",
    "query_name",
    "reply_timeout_log",
    "reply_zone",
    "score_answers",
    "verdict",
    "zones",
]

PARAM = "postscreen_dnsbl_sites"
SEPARATORS = ", \t\r\n"

DENY: Literal["deny"] = "deny"
ALLOW: Literal["allow"] = "allow"
PASS: Literal["pass"] = "pass"
Verdict = Literal["deny", "allow", "pass"]

#: postscreen_early.c: logged when the score reaches postscreen_dnsbl_threshold.
DNSBL_RANK_FORMAT = "DNSBL rank {score} for [{addr}]:{port}"
#: postscreen_early.c PSC_DNSBL_FORMAT, without the CRLF: 550 (enforce) or 521 (drop).
DNSBL_REPLY_FORMAT = "{code} 5.7.1 Service unavailable; client [{addr}] blocked using {zone}"
#: dnsblog.c: one line per A record of a listed client.
LISTED_FORMAT = "addr {addr} listed by domain {zone} as {answer}"
#: dnsblog.c, on a DNS error (hato: a temporary failure of one zone).
LOOKUP_ERROR_FORMAT = "dnsblog_query: lookup error for DNS query {query}: {why}"
#: postscreen_dnsbl.c, when a zone does not answer within postscreen_dnsbl_timeout.
REPLY_TIMEOUT_FORMAT = "dnsblog reply timeout {timeout}s for {zone}"


def dnsbl_rank_log(score: int, addr: str, port: int | str) -> str:
    return DNSBL_RANK_FORMAT.format(score=score, addr=addr, port=port)


def dnsbl_reply(addr: str, zone: str, code: int = 550) -> str:
    """The reply for a client at or above the threshold: *code* 550 for
    ``postscreen_dnsbl_action = enforce``, 521 for ``drop``; *zone* already
    passed through :func:`reply_zone`. No CRLF."""
    return DNSBL_REPLY_FORMAT.format(code=code, addr=addr, zone=zone)


def listed_log(addr: str, zone: str, answer: str) -> str:
    return LISTED_FORMAT.format(addr=addr, zone=zone, answer=answer)


def lookup_error_log(query: str, why: str) -> str:
    return LOOKUP_ERROR_FORMAT.format(query=query, why=why)


def reply_timeout_log(timeout: float, zone: str) -> str:
    return REPLY_TIMEOUT_FORMAT.format(timeout=f"{timeout:g}", zone=zone)


# -- postscreen_dnsbl_sites -----------------------------------------------------------------


class DnsblSiteError(ValueError):
    """A bad postscreen_dnsbl_sites entry; ``entry`` is the entry as written."""

    def __init__(self, message: str, entry: str):
        super().__init__(f"{PARAM}: {message}")
        self.entry = entry


@dataclass(frozen=True)
class Site:
    """One postscreen_dnsbl_sites entry."""

    domain: str  # as written (for the reply and the reply map)
    filter: str | None  # the filter text, None: any A record matches
    pattern: IpPattern | None = field(repr=False, compare=False)
    weight: int = 1
    entry: str = ""  # the entry as written

    @property
    def zone(self) -> str:
        """The key that groups entries asking the same question."""
        return self.domain.lower()

    def matches(self, addrs: Iterable[str]) -> bool:
        """Does any of the A records *addrs* pass this entry's filter?"""
        if self.pattern is None:
            return any(True for _ in addrs)
        return any(ip_match(self.pattern, a) for a in addrs)


def _weight(text: str, entry: str) -> int:
    body = text[1:] if text[:1] in "+-" else text
    if not body.isascii() or not body.isdigit():
        raise DnsblSiteError(f'bad DNSBL weight factor "{text}" in "{entry}"', entry)
    return int(text)


def parse_site(entry: str) -> Site:
    """``domain[=filter][*weight]`` → Site; DnsblSiteError when bad."""
    rest, star, weight_text = entry.partition("*")
    weight = _weight(weight_text, entry) if star else 1
    domain, eq, filter_text = rest.partition("=")
    pattern: IpPattern | None = None
    if eq:
        try:
            pattern = parse_ip_match(filter_text)
        except ConfigError:
            raise DnsblSiteError(f'bad DNSBL filter syntax "{filter_text}" in "{entry}"',
                                 entry) from None
    if not valid_hostname(domain):
        raise DnsblSiteError(f'bad DNSBL domain name "{domain}" in "{entry}"', entry)
    return Site(domain, filter_text if eq else None, pattern, weight, entry)


def parse_sites(items: Iterable[str]) -> list[Site]:
    """The entries of postscreen_dnsbl_sites, in order. An item may itself
    hold several entries separated by commas or white space."""
    out: list[Site] = []
    for item in items:
        for entry in "".join(" " if c in SEPARATORS else c for c in item).split():
            out.append(parse_site(entry))
    return out


def zones(sites: Iterable[Site]) -> list[str]:
    """The distinct zones to ask, in the order of their first entry."""
    seen: dict[str, None] = {}
    for site in sites:
        seen.setdefault(site.zone, None)
    return list(seen)


def query_name(addr: str, zone: str) -> str | None:
    """The name to look up: IPv4 octets reversed (an IPv4-mapped IPv6
    address counts as IPv4), IPv6 as 32 reversed nibbles, then *zone*.
    None for something that is not an address."""
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 6:
        labels = reversed(ip.exploded.replace(":", ""))
    else:
        labels = reversed(str(ip).split("."))
    return ".".join([*labels, zone])


# -- scoring --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZoneAnswer:
    """What one zone said: its A records (empty: not listed) and their TTL
    (None when unknown), or an error (the lookup failed or timed out)."""

    addrs: tuple[str, ...] = ()
    ttl: int | None = None
    error: str | None = None

    @classmethod
    def failed(cls, why: str) -> ZoneAnswer:
        return cls((), None, why)


@dataclass(frozen=True)
class SiteHit:
    site: Site
    addrs: tuple[str, ...]  # the zone's A records


@dataclass(frozen=True)
class DnsblResult:
    score: int
    hits: tuple[SiteHit, ...]  # the entries that counted, in configuration order
    dnsbl_name: str | None  # the domain of the largest matching weight (before reply map)
    ttl: int  # seconds to keep this result
    errors: tuple[tuple[str, str], ...] = ()  # (zone, why) of failed lookups

    @property
    def complete(self) -> bool:
        return not self.errors


def clamp_ttl(ttl: int | None, min_ttl: int, max_ttl: int) -> int:
    """A DNS TTL bounded by postscreen_dnsbl_min_ttl and _max_ttl; an
    unknown TTL (None or negative) is min_ttl."""
    if ttl is None or ttl < 0:
        return min_ttl
    return max(min_ttl, min(ttl, max_ttl))


def _smaller(current: int | None, ttl: int | None) -> int | None:
    if ttl is None or ttl < 0:
        return current
    return ttl if current is None or ttl < current else current


def score_answers(sites: Sequence[Site], answers: Mapping[str, ZoneAnswer], *,
                  min_ttl: int = 60, max_ttl: int = 3600) -> DnsblResult:
    """Score *answers* (zone → ZoneAnswer, zones as :attr:`Site.zone`; a zone
    missing from it counts as failed) against *sites*."""
    score = 0
    hits: list[SiteHit] = []
    name: str | None = None
    best = 0
    fail_ttl: int | None = None
    pass_ttl: int | None = None
    errors: dict[str, str] = {}
    for site in sites:
        answer = answers.get(site.zone)
        if answer is None:
            errors.setdefault(site.zone, "no answer")
            continue
        if answer.error is not None:
            errors.setdefault(site.zone, answer.error)
            continue
        if answer.addrs and site.matches(answer.addrs):
            score += site.weight
            hits.append(SiteHit(site, answer.addrs))
            if name is None or best < site.weight:
                name, best = site.domain, site.weight
            if site.weight > 0:
                fail_ttl = _smaller(fail_ttl, answer.ttl)
                continue
        pass_ttl = _smaller(pass_ttl, answer.ttl)
    chosen = fail_ttl if score > 0 else pass_ttl
    ttl = clamp_ttl(None if errors else chosen, min_ttl, max_ttl)
    return DnsblResult(score, tuple(hits), name, ttl, tuple(errors.items()))


def verdict(score: int, threshold: int, allowlist_threshold: int) -> Verdict:
    """``deny`` when score >= postscreen_dnsbl_threshold; ``allow`` (skip the
    other tests: Postfix's DNSBL allowlisting) when the allowlist threshold
    is negative and the score is at or below it; ``pass`` otherwise."""
    if score >= threshold:
        return DENY
    if allowlist_threshold < 0 and score <= allowlist_threshold:
        return ALLOW
    return PASS


def reply_zone(zone: str, reply_map: Callable[[str], str | None] | None) -> str:
    """postscreen_dnsbl_reply_map: the name to show for *zone* (the map's
    value for it, else the zone). *reply_map* is a table lookup; its
    errors (TableRetry) propagate, since falling back would show the
    secret name the map exists to hide."""
    if reply_map is None:
        return zone
    value = reply_map(zone)
    return value if value else zone

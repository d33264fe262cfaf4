"""postscreen's DNSBL/DNSWL lookups: every zone asked at once, off the event loop.

Postfix's postscreen hands each question to a dnsblog(8) process; hato asks
in worker threads. :class:`DnsblScorer` takes the parsed
``postscreen_dnsbl_sites`` (:func:`hato.policy.postscreen_dnsbl.parse_sites`)
and a DNS lookup object, and its :meth:`DnsblScorer.score` coroutine

* asks each distinct zone once, all concurrently, for the A records of the
  client's reversed address (IPv4 octets or IPv6 nibbles) under the zone;
* waits at most ``timeout`` (postscreen_dnsbl_timeout) in all: a zone that
  has not answered by then, or that failed temporarily (DnsTempFail), adds
  nothing and is listed in :attr:`DnsblResult.errors` (and logged as
  dnsblog does: ``dnsblog reply timeout Ns for ZONE``, ``lookup error``);
* scores the answers with :func:`hato.policy.postscreen_dnsbl.score_answers`
  (weights once per entry, TTL rules: see that module);
* shares one lookup among concurrent requests for the same address, as
  Postfix shares a score among a client's parallel connections.

TTLs: the DnsLookup protocol (and :class:`hato.io.dns.Resolver`) gives no
TTLs. When the lookup object has a ``query_ttl(name, rtype) -> (records,
ttl)`` method, or one is passed as ``query_ttl``, the answers' TTLs are used
as Postfix uses them; otherwise every result is kept for
postscreen_dnsbl_min_ttl. :class:`TtlResolver` is such a lookup object
(dnspython, ``hato_dns_servers``), giving the A records' TTL and, for a
negative answer, the SOA's negative-caching TTL (dnsblog.c).

Parameters the caller passes in: postscreen_dnsbl_sites (parsed),
postscreen_dnsbl_timeout, postscreen_dnsbl_min_ttl, postscreen_dnsbl_max_ttl,
hato_dns_servers (for TtlResolver.from_settings).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor

import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from ..policy.dnsquery import DnsLookup, DnsTempFail
from ..policy.postscreen_dnsbl import (
    DnsblResult,
    Site,
    ZoneAnswer,
    listed_log,
    lookup_error_log,
    query_name,
    reply_timeout_log,
    score_answers,
    zones,
)
from .dns import parse_dns_servers

log = logging.getLogger("hato.postscreen")

__all__ = ["DnsblScorer", "QueryTtl", "TtlResolver"]

#: ``query_ttl(name, rtype) -> (records, ttl)``; ttl None when unknown.
QueryTtl = Callable[[str, str], tuple[list[str], int | None]]

DEFAULT_WORKERS = 32


class DnsblScorer:
    """Weighted DNSBL/DNSWL scores for client addresses; see the module doc.

    *executor*: where the blocking lookups run (by default a thread pool of
    *max_workers* owned by the scorer; :meth:`close` shuts it down).
    *info* / *warn* receive the log lines (``addr A listed by domain Z as
    R``; timeouts and lookup errors)."""

    def __init__(self, sites: Sequence[Site], dns: DnsLookup, *,
                 min_ttl: int = 60, max_ttl: int = 3600, timeout: float = 10.0,
                 query_ttl: QueryTtl | None = None, executor: Executor | None = None,
                 max_workers: int = DEFAULT_WORKERS,
                 info: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None):
        self.sites = list(sites)
        self.zones = zones(self.sites)
        self.dns = dns
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.timeout = timeout
        self.query_ttl: QueryTtl | None = (
            query_ttl if query_ttl is not None else getattr(dns, "query_ttl", None))
        self._executor = executor
        self._own_executor = executor is None
        self._max_workers = max_workers
        self.info = info or log.info
        self.warn = warn or log.warning
        self._inflight: dict[str, asyncio.Future[DnsblResult]] = {}

    def _pool(self) -> Executor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self._max_workers,
                                                thread_name_prefix="dnsbl")
        return self._executor

    def close(self) -> None:
        """Stop the scorer's own thread pool (lookups still running finish
        in the background; their answers are dropped)."""
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def score(self, addr: str) -> DnsblResult:
        """The combined score of *addr* over every site."""
        task = self._inflight.get(addr)
        if task is None:
            task = asyncio.ensure_future(self._score(addr))
            self._inflight[addr] = task
            task.add_done_callback(lambda _t: self._inflight.pop(addr, None))
        return await asyncio.shield(task)

    async def _score(self, addr: str) -> DnsblResult:
        names: dict[str, str] = {}
        for zone in self.zones:
            name = query_name(addr, zone)
            if name is None:  # not an address: nothing to ask
                return score_answers([], {}, min_ttl=self.min_ttl, max_ttl=self.max_ttl)
            names[zone] = name
        if not names:
            return score_answers([], {}, min_ttl=self.min_ttl, max_ttl=self.max_ttl)
        loop = asyncio.get_running_loop()
        pool = self._pool()
        futures = {zone: loop.run_in_executor(pool, self._ask, name)
                   for zone, name in names.items()}
        done, _pending = await asyncio.wait(futures.values(), timeout=self.timeout)
        answers: dict[str, ZoneAnswer] = {}
        for zone, future in futures.items():
            if future in done:
                answer = future.result()
                if answer.error is not None:
                    self.warn(lookup_error_log(names[zone], answer.error))
            else:
                future.cancel()
                answer = ZoneAnswer.failed("timed out")
                self.warn(reply_timeout_log(self.timeout, zone))
            answers[zone] = answer
            for record in answer.addrs:
                self.info(listed_log(addr, zone, record))
        return score_answers(self.sites, answers, min_ttl=self.min_ttl, max_ttl=self.max_ttl)

    def _ask(self, name: str) -> ZoneAnswer:
        """One zone's answer (in a worker thread)."""
        try:
            if self.query_ttl is not None:
                records, ttl = self.query_ttl(name, "A")
            else:
                records, ttl = self.dns.query(name, "A"), None
        except DnsTempFail as exc:
            return ZoneAnswer.failed(str(exc) or "temporary failure")
        except Exception as exc:  # a bug must not fail the whole score
            log.exception("DNSBL lookup of %s failed", name)
            return ZoneAnswer.failed(f"internal error: {type(exc).__name__}")
        return ZoneAnswer(tuple(records), ttl)


class TtlResolver:
    """A/TXT/... lookups with their TTL, for :class:`DnsblScorer`: satisfies
    DnsLookup and adds :meth:`query_ttl`. No cache (postscreen caches the
    scores). *servers*: (address, port) pairs; empty reads resolv.conf."""

    def __init__(self, servers: Sequence[tuple[str, int]] | None = None, *,
                 timeout: float = 10.0, resolv_conf: str = "/etc/resolv.conf"):
        if servers:
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = [dns.nameserver.Do53Nameserver(addr, port)
                               for addr, port in servers]
        else:
            try:
                res = dns.resolver.Resolver(filename=resolv_conf, configure=True)
            except dns.resolver.NoResolverConfiguration:
                res = dns.resolver.Resolver(configure=False)
                res.nameservers = []
        res.lifetime = timeout
        res.timeout = min(2.0, timeout)
        res.cache = None
        res.use_search_by_default = False
        self._resolver = res

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], *, timeout: float = 10.0
                      ) -> TtlResolver:
        """Servers from ``hato_dns_servers``; *timeout*: postscreen_dnsbl_timeout."""
        getter = getattr(settings, "list", None)
        if callable(getter):
            items = list(getter("hato_dns_servers"))
        else:
            items = (settings.get("hato_dns_servers", "") or "").replace(",", " ").split()
        return cls(parse_dns_servers(items), timeout=timeout)

    def query(self, name: str, rtype: str) -> list[str]:
        return self.query_ttl(name, rtype)[0]

    def mx(self, name: str) -> list[tuple[int, str]]:
        out = []
        for item in self.query(name, "MX"):
            pref, _, host = item.partition(" ")
            out.append((int(pref), host.rstrip(".")))
        return sorted(out)

    def query_ttl(self, name: str, rtype: str) -> tuple[list[str], int | None]:
        """(records, ttl): the answer's TTL, or for "no such name" / "no
        such record" the SOA's (min of its TTL and its minimum field); None
        when the reply has no SOA. DnsTempFail for timeouts and errors."""
        what = f"{name}/{rtype}"
        try:
            qname = dns.name.from_text(name if name.endswith(".") else name + ".")
            rdtype = dns.rdatatype.from_text(rtype.upper())
        except (dns.exception.DNSException, ValueError):
            return [], None
        try:
            answer = self._resolver.resolve(qname, rdtype, search=False,
                                            raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            ttl = None
            for response in exc.responses().values():
                ttl = _min(ttl, _soa_ttl(response))
            return [], ttl
        except dns.resolver.YXDOMAIN:
            return [], None
        except dns.resolver.LifetimeTimeout:
            raise DnsTempFail(f"{what}: timed out") from None
        except dns.exception.DNSException as exc:
            raise DnsTempFail(f"{what}: {exc}") from None
        except OSError as exc:
            raise DnsTempFail(f"{what}: {exc.strerror or exc}") from None
        if answer.rrset is None:
            return [], _soa_ttl(answer.response)
        values = [rdata.to_text() if rdata.rdtype != dns.rdatatype.A else str(rdata.address)
                  for rdata in answer.rrset]
        return values, int(answer.rrset.ttl)


def _min(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _soa_ttl(response: dns.message.Message) -> int | None:
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
            return int(min(rrset.ttl, rrset[0].minimum))
    return None

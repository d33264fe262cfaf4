"""DNS lookups for hato: the real :class:`~hato.policy.dnsquery.DnsLookup`.

:class:`Resolver` asks DNS servers through dnspython, synchronously (it is
called from worker threads, never from the event loop), with

* a time limit per question (``timeout``, the total lifetime of one lookup,
  retries and every server included; 10 s by default);
* an in-process cache that honours the answers' TTLs (capped at
  ``max_ttl``), bounded to ``cache_size`` entries and evicting the least
  recently used; NXDOMAIN and "no records of this type" are cached for at
  most ``negative_ttl`` seconds (less when the zone's SOA says so);
  temporary failures are never cached;
* thread safety: one Resolver is shared by every thread of a process.

Answers follow :mod:`hato.policy.dnsquery`: text, host names without the
trailing dot, ``[]`` for NXDOMAIN and NODATA, :class:`DnsTempFail` for a
timeout, SERVFAIL, REFUSED or no reachable server.

DNSSEC (``Resolver(..., dnssec=True)``, for the SMTP and LMTP clients with
``smtp_dns_support_level = dnssec``): every question carries the EDNS DO
and the AD flags, and :meth:`Resolver.reply` tells whether the answer came
with the AD bit set, that is whether the configured resolver validated it.
hato does not validate signatures itself: like Postfix, it trusts the AD
bit of its resolver (which should be a validating resolver on the same
host). Without ``dnssec`` every answer counts as not validated.

``query(addr, "PTR")`` accepts an IPv4 or IPv6 address and asks for its
reverse name. :meth:`Resolver.client_hostname` looks up an SMTP client's
name the way Postfix's smtpd does (smtpd_peer.c): reverse lookup, sanity
checks, then the forward confirmation.

Parameters (:meth:`Resolver.from_settings`):

``hato_dns_servers``
    The servers to ask: ``host``, ``host:port`` or ``[ipv6]:port`` (port 53
    when not given); empty means the servers in /etc/resolv.conf.
``disable_dns_lookups``
    As in Postfix this concerns only the SMTP and LMTP clients: a resolver
    made with ``from_settings(settings, smtp_client=True)`` then asks no DNS
    server: MX lookups find nothing and host addresses (A, AAAA) come from
    the system's name service (getaddrinfo, so /etc/hosts), like Postfix.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.inet
import dns.message
import dns.name
import dns.nameserver
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.reversename

from ..config.errors import ConfigError
from ..policy.address import valid_hostaddr, valid_hostname
from ..policy.dnsquery import DnsTempFail

log = logging.getLogger("hato.dns")

__all__ = [
    "CLIENT_NAME_UNKNOWN",
    "PEER_CODE_FORGED",
    "PEER_CODE_OK",
    "PEER_CODE_PERM",
    "PEER_CODE_TEMP",
    "DnsReply",
    "DnsTempFail",
    "Resolver",
    "parse_dns_servers",
]

#: smtpd's name_status / reverse_name_status values (Postfix's smtpd.h).
PEER_CODE_OK = 2  # the lookup succeeded (and, for the name, was forward-confirmed)
PEER_CODE_TEMP = 4  # a lookup failed temporarily
PEER_CODE_PERM = 5  # a lookup failed for good, or the name is malformed or numeric
PEER_CODE_FORGED = 6  # the name's addresses do not include the client's address
CLIENT_NAME_UNKNOWN = "unknown"

DEFAULT_TIMEOUT = 10.0
DEFAULT_CACHE_SIZE = 10000
DEFAULT_NEGATIVE_TTL = 60
DEFAULT_MAX_TTL = 86400
_TRY_TIMEOUT = 2.0  # one attempt at one server, within the lifetime

_NXDOMAIN = "*"  # the cache key's type for "this name does not exist"


class _Do53(dns.nameserver.Do53Nameserver):
    """A DNS server asked over a *connected* UDP socket, as the C library's
    resolver asks: when nothing listens there (a local resolver that is
    down) the ICMP "port unreachable" comes back as ECONNREFUSED, the
    server is dropped from this lookup at once, and the lookup fails
    temporarily in milliseconds instead of after the whole lifetime."""

    def query(self, request, timeout, source, source_port, max_size,
              one_rr_per_rrset=False, ignore_trailing=False):
        if max_size:  # TCP: a refused connection fails fast already
            return super().query(request, timeout, source, source_port, max_size,
                                 one_rr_per_rrset, ignore_trailing)
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            if source or source_port:
                sock.bind((source or ("::" if family == socket.AF_INET6 else "0.0.0.0"),
                           source_port))
            sock.connect((self.address, self.port))
            return dns.query.udp(request, self.address, timeout=timeout, port=self.port,
                                 sock=sock, raise_on_truncation=True,
                                 one_rr_per_rrset=one_rr_per_rrset,
                                 ignore_trailing=ignore_trailing,
                                 ignore_errors=True, ignore_unexpected=True)


def parse_dns_servers(items: Sequence[str], *, param: str = "hato_dns_servers"
                      ) -> list[tuple[str, int]]:
    """``host``, ``host:port``, ``[ipv6]`` or ``[ipv6]:port`` items as
    (address, port) pairs. A bare IPv6 address (``2001:db8::53``) is taken
    whole. Host names are resolved once, here, with the system's name
    service. Raises ConfigError for a malformed item."""
    out: list[tuple[str, int]] = []
    for item in items:
        host, port_text = _split_host_port(item, param)
        try:
            port = int(port_text) if port_text is not None else 53
        except ValueError:
            raise ConfigError(f"{param}: bad port in {item!r}") from None
        if not 0 < port < 65536 or (port_text is not None and not port_text.isdigit()):
            raise ConfigError(f"{param}: bad port in {item!r}")
        if dns.inet.is_address(host):
            out.append((host, port))
            continue
        if not valid_hostname(host):
            raise ConfigError(f"{param}: bad host in {item!r}")
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as exc:
            raise ConfigError(f"{param}: cannot resolve {host!r}: {exc.strerror}") from None
        seen = []
        for info in infos:
            addr = str(info[4][0]).split("%", 1)[0]
            if addr not in seen:
                seen.append(addr)
        out.extend((addr, port) for addr in seen)
    return out


def _split_host_port(item: str, param: str) -> tuple[str, str | None]:
    if item.startswith("["):
        end = item.find("]")
        if end < 0:
            raise ConfigError(f"{param}: missing ']' in {item!r}")
        host, rest = item[1:end], item[end + 1:]
        if rest and not rest.startswith(":"):
            raise ConfigError(f"{param}: bad server {item!r}")
        if not dns.inet.is_address(host):
            raise ConfigError(f"{param}: bad address in {item!r}")
        return host, (rest[1:] if rest else None)
    if item.count(":") > 1:  # a bare IPv6 address
        if not dns.inet.is_address(item):
            raise ConfigError(f"{param}: bad address in {item!r}")
        return item, None
    host, sep, port = item.partition(":")
    if not host:
        raise ConfigError(f"{param}: bad server {item!r}")
    return host, (port if sep else None)


@dataclass(frozen=True)
class DnsReply:
    """One answer with what the resolver said about it: *records* (text, as
    :meth:`Resolver.query` gives them; empty for NXDOMAIN and NODATA),
    *nxdomain*, *secure* (the AD bit: the resolver validated the answer with
    DNSSEC; always False without ``dnssec``) and *canonical* (the name the
    records belong to when the name asked is a CNAME, else "")."""

    records: tuple[str, ...] = ()
    nxdomain: bool = False
    secure: bool = False
    canonical: str = ""


class _Cache:
    """A bounded LRU of (name, type) → (expiry, answer); thread safe."""

    def __init__(self, size: int, clock: Callable[[], float]):
        self.size = size
        self.clock = clock
        self._data: OrderedDict[tuple[str, str], tuple[float, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[bool, object]:
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return False, None
            if entry[0] <= self.clock():
                del self._data[key]
                return False, None
            self._data.move_to_end(key)
            return True, entry[1]

    def put(self, key: tuple[str, str], ttl: float, value: object) -> None:
        if ttl <= 0 or self.size <= 0:
            return
        with self._lock:
            self._data[key] = (self.clock() + ttl, value)
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)


class Resolver:
    """A caching, thread-safe DNS resolver satisfying DnsLookup.

    *servers*: (address, port) pairs; empty or None reads /etc/resolv.conf.
    *timeout*: seconds one lookup may take in all. *disabled*: ask no DNS
    server (Postfix's disable_dns_lookups, for the SMTP/LMTP client).
    *dnssec*: ask with the DO and AD flags and report the AD bit of answers
    (:meth:`reply`), as Postfix with ``smtp_dns_support_level = dnssec``.
    """

    def __init__(self, servers: Sequence[tuple[str, int]] | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT, cache_size: int = DEFAULT_CACHE_SIZE,
                 negative_ttl: float = DEFAULT_NEGATIVE_TTL, max_ttl: float = DEFAULT_MAX_TTL,
                 disabled: bool = False, clock: Callable[[], float] = time.monotonic,
                 resolv_conf: str = "/etc/resolv.conf", dnssec: bool = False):
        self.servers = list(servers or ())
        self.timeout = timeout
        self.negative_ttl = negative_ttl
        self.max_ttl = max_ttl
        self.disabled = disabled
        self.dnssec = dnssec
        self.cache = _Cache(cache_size, clock)
        if self.servers:
            res = dns.resolver.Resolver(configure=False)
            res.nameservers = [_Do53(addr, port) for addr, port in self.servers]
        elif disabled:
            res = dns.resolver.Resolver(configure=False)
        else:
            try:
                res = dns.resolver.Resolver(filename=resolv_conf, configure=True)
            except dns.resolver.NoResolverConfiguration:
                # No usable resolv.conf: every question fails temporarily
                # (the administrator may fix it without a restart of ours).
                res = dns.resolver.Resolver(configure=False)
                res.nameservers = []
            res.nameservers = [_Do53(ns.address, ns.port) if isinstance(
                ns, dns.nameserver.Do53Nameserver) else ns for ns in res.nameservers]
        res.lifetime = timeout
        res.timeout = min(_TRY_TIMEOUT, timeout)
        res.cache = None
        res.use_search_by_default = False
        if dnssec:
            # A validating resolver sets AD only for a client that shows it
            # understands DNSSEC (RFC 6840 section 5.7): DO in EDNS, and AD.
            res.use_edns(0, dns.flags.DO, 1232)
            res.flags = dns.flags.RD | dns.flags.AD
        self._resolver = res

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], *, smtp_client: bool = False,
                      **kwargs: object) -> Resolver:
        """A Resolver configured from *settings* (``hato_dns_servers``, and
        ``disable_dns_lookups`` when *smtp_client*). Other keyword arguments
        go to the constructor (timeout, cache_size, ...)."""
        items = _list(settings, "hato_dns_servers")
        servers = parse_dns_servers(items)
        disabled = smtp_client and _bool(settings, "disable_dns_lookups")
        return cls(servers, disabled=disabled, **kwargs)  # type: ignore[arg-type]

    # -- DnsLookup ----------------------------------------------------------

    def query(self, name: str, rtype: str) -> list[str]:
        return self.lookup(name, rtype)[0]

    def lookup(self, name: str, rtype: str) -> tuple[list[str], bool]:
        """(records, nxdomain): an empty answer says whether the name does
        not exist at all (True) or has no record of the type (False).
        Raises DnsTempFail. A name that cannot exist counts as NXDOMAIN;
        with disable_dns_lookups, an empty answer does too."""
        got = self.reply(name, rtype)
        return list(got.records), got.nxdomain

    def reply(self, name: str, rtype: str) -> DnsReply:
        """:meth:`lookup` with the AD bit and the CNAME target: a
        :class:`DnsReply`. Raises DnsTempFail."""
        rtype = rtype.upper()
        qname = self._qname(name, rtype)
        if qname is None:
            return DnsReply(nxdomain=True)
        if self.disabled:
            found = self._system_lookup(qname, rtype)
            return DnsReply(tuple(found), not found)
        key_name = qname.to_text(omit_final_dot=True).lower()
        hit, value = self.cache.get((key_name, _NXDOMAIN))
        if hit:
            return value  # type: ignore[return-value]
        hit, value = self.cache.get((key_name, rtype))
        if hit:
            return value  # type: ignore[return-value]
        got, ttl = self._ask(qname, rtype)
        self.cache.put((key_name, _NXDOMAIN if got.nxdomain else rtype), ttl, got)
        return got

    def mx(self, name: str) -> list[tuple[int, str]]:
        out = []
        for item in self.query(name, "MX"):
            pref, _, host = item.partition(" ")
            out.append((int(pref), host))
        return sorted(out)

    # -- the SMTP client's name (smtpd_peer.c) --------------------------------

    def client_hostname(self, addr: str) -> tuple[str, int, str, int]:
        """(name, name_status, reverse_name, reverse_name_status) of the
        client at *addr*, as Postfix's smtpd finds them.

        reverse_name is the first PTR record of the address: "unknown" with
        status 4 when the lookup failed temporarily, 5 when there is none or
        it is numeric or not a valid host name. name is reverse_name when an
        A (IPv4 client) or AAAA (IPv6 client) lookup of it lists *addr*;
        otherwise "unknown" with status 4 (temporary failure) or 6 (the
        name does not resolve to the address)."""
        unknown = CLIENT_NAME_UNKNOWN
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return unknown, PEER_CODE_PERM, unknown, PEER_CODE_PERM
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        try:
            names = self._client_ptr(ip)
        except DnsTempFail:
            return unknown, PEER_CODE_TEMP, unknown, PEER_CODE_TEMP
        if not names:
            return unknown, PEER_CODE_PERM, unknown, PEER_CODE_PERM
        name = names[0]
        if valid_hostaddr(name):
            log.warning("numeric hostname: %s", name)
            return unknown, PEER_CODE_PERM, unknown, PEER_CODE_PERM
        if not valid_hostname(name):
            log.warning("invalid hostname: %s", name[:255])
            return unknown, PEER_CODE_PERM, unknown, PEER_CODE_PERM
        try:
            addrs = self._client_forward(name, ip.version)
        except DnsTempFail:
            log.warning("hostname %s does not resolve to address %s: "
                        "Temporary failure in name resolution", name, ip)
            return unknown, PEER_CODE_TEMP, name, PEER_CODE_OK
        if not addrs:
            log.warning("hostname %s does not resolve to address %s: "
                        "Name or service not known", name, ip)
            return unknown, PEER_CODE_FORGED, name, PEER_CODE_OK
        for a in addrs:
            try:
                if ipaddress.ip_address(a) == ip:
                    return name, PEER_CODE_OK, name, PEER_CODE_OK
            except ValueError:
                continue
        log.warning("hostname %s does not resolve to address %s", name, ip)
        return unknown, PEER_CODE_FORGED, name, PEER_CODE_OK

    def _client_ptr(self, ip) -> list[str]:
        """The client's PTR names. Without hato_dns_servers, from the host's
        resolver (getnameinfo: /etc/hosts, then DNS), as Postfix's smtpd."""
        if self.servers:
            return self.query(str(ip), "PTR")
        try:
            name, _ = socket.getnameinfo((str(ip), 0), socket.NI_NAMEREQD)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise DnsTempFail(f"{ip}/PTR: {exc.strerror}") from None
            return []
        return [name.rstrip(".")]

    def _client_forward(self, name: str, version: int) -> list[str]:
        if self.servers:
            return self.query(name, "A" if version == 4 else "AAAA")
        family = socket.AF_INET if version == 4 else socket.AF_INET6
        try:
            infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno == socket.EAI_AGAIN:
                raise DnsTempFail(f"{name}: {exc.strerror}") from None
            return []
        return [str(info[4][0]) for info in infos]

    def clear_cache(self) -> None:
        self.cache.clear()

    # -- inside ---------------------------------------------------------------

    @staticmethod
    def _qname(name: str, rtype: str) -> dns.name.Name | None:
        """The absolute name to ask for, or None when *name* cannot exist."""
        text = name.strip()
        if rtype == "PTR":
            try:
                ip = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                pass
            else:
                return dns.reversename.from_address(str(ip))
        if not text or text == ".":
            return None
        try:
            return dns.name.from_text(text if text.endswith(".") else text + ".")
        except (dns.exception.DNSException, UnicodeError, ValueError):
            return None

    def _ask(self, qname: dns.name.Name, rtype: str) -> tuple[DnsReply, float]:
        """(the reply, its ttl) from the servers; raises DnsTempFail."""
        what = f"{qname.to_text(omit_final_dot=True)}/{rtype}"
        try:
            rdtype = dns.rdatatype.from_text(rtype)
        except dns.exception.DNSException:
            raise ValueError(f"unknown DNS record type: {rtype}") from None
        try:
            answer = self._resolver.resolve(qname, rdtype, search=False,
                                            raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            secure = self.dnssec and any(
                bool(r.flags & dns.flags.AD) for r in exc.responses().values())
            return DnsReply(nxdomain=True, secure=secure), self._nxdomain_ttl(exc)
        except dns.resolver.YXDOMAIN:
            return DnsReply(), 0
        except dns.resolver.LifetimeTimeout:
            raise DnsTempFail(f"{what}: timed out") from None
        except dns.resolver.NoNameservers as exc:
            raise DnsTempFail(f"{what}: no server answered ({_short(exc)})") from None
        except dns.exception.DNSException as exc:
            raise DnsTempFail(f"{what}: {_short(exc)}") from None
        except OSError as exc:
            raise DnsTempFail(f"{what}: {exc.strerror or exc}") from None
        secure = self.dnssec and bool(answer.response.flags & dns.flags.AD)
        canonical = ""
        if answer.canonical_name != qname:
            canonical = _host(answer.canonical_name)
        if answer.rrset is None:
            ttl = min(float(answer.chaining_result.minimum_ttl), self.negative_ttl)
            return DnsReply(secure=secure, canonical=canonical), ttl
        values = tuple(_rdata_text(rdata) for rdata in answer.rrset)
        ttl = min(float(answer.chaining_result.minimum_ttl), self.max_ttl)
        return DnsReply(values, secure=secure, canonical=canonical), ttl

    def _nxdomain_ttl(self, exc: dns.resolver.NXDOMAIN) -> float:
        ttl = float(self.negative_ttl)
        try:
            for response in exc.responses().values():
                ttl = min(ttl, float(response.resolve_chaining().minimum_ttl))
        except (dns.exception.DNSException, KeyError, AttributeError):
            pass
        return ttl

    def _system_lookup(self, qname: dns.name.Name, rtype: str) -> list[str]:
        """disable_dns_lookups: host addresses from getaddrinfo, nothing else."""
        if rtype not in ("A", "AAAA"):
            return []
        family = socket.AF_INET if rtype == "A" else socket.AF_INET6
        host = qname.to_text(omit_final_dot=True)
        try:
            infos = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            if exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None)):
                raise DnsTempFail(f"{host}/{rtype}: {exc.strerror}") from None
            return []
        out: list[str] = []
        for info in infos:
            a = str(info[4][0]).split("%", 1)[0]
            if a not in out:
                out.append(a)
        return out


def _rdata_text(rdata: object) -> str:
    rdtype = rdata.rdtype  # type: ignore[attr-defined]
    if rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        return str(rdata.address)  # type: ignore[attr-defined]
    if rdtype in (dns.rdatatype.PTR, dns.rdatatype.NS, dns.rdatatype.CNAME,
                  dns.rdatatype.DNAME):
        return _host(rdata.target)  # type: ignore[attr-defined]
    if rdtype == dns.rdatatype.MX:
        return f"{rdata.preference} {_host(rdata.exchange)}"  # type: ignore[attr-defined]
    if rdtype in (dns.rdatatype.TXT, dns.rdatatype.SPF):
        return b"".join(rdata.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
    return rdata.to_text()  # type: ignore[attr-defined]


def _host(name: dns.name.Name) -> str:
    """A host name without the trailing dot; the root (null MX) is ""."""
    return name.to_text(omit_final_dot=True).rstrip(".")


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _list(settings: Mapping[str, str], name: str) -> list[str]:
    getter = getattr(settings, "list", None)
    if callable(getter):
        return list(getter(name))
    text = settings.get(name, "") or ""
    return [item for item in text.replace(",", " ").split() if item]


def _bool(settings: Mapping[str, str], name: str) -> bool:
    getter = getattr(settings, "bool", None)
    if callable(getter):
        return bool(getter(name))
    return (settings.get(name, "no") or "no").strip().lower() == "yes"

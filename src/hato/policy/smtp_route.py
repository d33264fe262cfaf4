"""Routing for the SMTP and LMTP clients: from a next hop to the servers to try.

This is what Postfix's smtp(8)/lmtp(8) do between receiving a delivery
request and opening a connection (smtp_connect.c, smtp_addr.c, host_port.c),
as pure decisions over DNS answers. The answers come from an object that
satisfies :class:`RouteDns`; the real one is
:class:`hato.io.smtp_route.ResolverRouteDns`.

Next hops (:func:`parse_nexthop`, :func:`split_nexthops`; in :mod:`hato.policy.nexthop`)
    What address resolution (qmgr) hands the agent: ``host`` or ``domain``
    (MX lookup), ``host:port``, ``[host]``, ``[host]:port``, ``[addr]``,
    ``[ipv6:addr]`` (brackets: no MX lookup), a comma/space list of those
    (relayhost may name several), and for LMTP ``unix:/path``,
    ``unix:private/dovecot-lmtp`` (relative to $queue_directory),
    ``inet:host:port``, ``inet:[addr]:port``. A service name becomes a port
    through ``known_tcp_ports`` first (smtp → 25, lmtp → 24, submission →
    587), then through a ``services`` callable (/etc/services style).
    Malformed input raises :class:`NextHopError` with Postfix's wording
    (``missing "]" in server description: ...``).

Servers (:class:`Router`)
    For each next hop, then each ``smtp_fallback_relay`` (relayhost and
    transport next hops are already in the next hop qmgr gives):

    * the domain's MX records, sorted by preference; null MX (``0 .``, RFC
      7505) → ``5.1.0 Domain X does not accept mail (nullMX)``; no MX → the
      name's own addresses at preference 0 (implicit MX); a failed MX
      lookup → 4.4.3 (temporary), 5.4.3/5.4.4, or the name's addresses with
      ``ignore_mx_lookup_error = yes``;
    * each MX host's A/AAAA records per ``inet_protocols``, through DNS
      and/or the system's resolver (``smtp_host_lookup = dns, native``);
      a host lookup failure is remembered (a temporary one dominates) but
      ignored when another MX host has addresses;
    * loop detection on port 25: an address of this host
      (``inet_interfaces``/``proxy_interfaces``) or, beyond Postfix, an MX
      host named ``$myhostname`` cuts the list at its preference; an empty
      rest is ``5.4.6 mail for X loops back to myself`` (or ``4.4.4 unable to
      find primary relay for X`` when better MX hosts did not resolve), and
      this host being an MX stops the fallback relays;
    * the addresses shuffled (``smtp_randomize_addresses``), stably sorted by
      MX preference and, within a preference, by ``smtp_address_preference``
      (ipv6 | ipv4 first; any: mixed at random), IPv4/IPv6 balanced within
      ``smtp_mx_address_limit`` (``smtp_balance_inet_protocols``), then cut
      to that limit (0: no limit). ``smtp_mx_session_limit`` counts
      delivered sessions; the agent applies it (:attr:`Hop.session_limit`).

Texts are Postfix's: ``Host or domain name not found. Name service error for
name=X type=A: Host not found`` (5.4.4; the last address type asked names
the type, as dns_lookup_v reports it), ``..., try again`` (4.4.3).
:meth:`Router.failure` gives the status of a delivery whose every hop failed:
4.3.0 when nothing said why, 4.3.5 for a relayhost or fallback relay that
fails for good ("configuration problem"), and best_mx_transport for loops.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Protocol

from ..config.errors import ConfigError
from ..config.values import split_list
from ..proto.hostname import valid_hostname
from .address import valid_hostaddr
from .nexthop import (DEFAULT_KNOWN_PORTS, NextHop, NextHopError, ServiceLookup,
                      parse_known_tcp_ports, parse_nexthop, split_nexthops)

log = logging.getLogger("hato.smtp_route")

__all__ = [
    "DEFAULT_KNOWN_PORTS",
    "Candidate",
    "Destination",
    "DnsAnswer",
    "DnsStatus",
    "Hop",
    "NativeAnswer",
    "NextHop",
    "NextHopError",
    "RouteDns",
    "RouteFailure",
    "RoutePolicy",
    "Router",
    "parse_known_tcp_ports",
    "parse_nexthop",
    "split_nexthops",
]

SMTP_PORT = 25


# -- what DNS says ----------------------------------------------------------------


class DnsStatus(Enum):
    """dns_lookup()'s results, by rank (a higher rank wins when several
    address types are asked)."""

    NOTFOUND = 0  # NXDOMAIN: "Host not found"
    NODATA = 1  # the name exists without records of the type
    FAIL = 2  # non-recoverable error (NO_RECOVERY)
    INVAL = 3  # a malformed name in the reply
    RETRY = 4  # SERVFAIL, timeout: "Host not found, try again"
    OK = 5

    @property
    def rank(self) -> int:
        # NXDOMAIN and NODATA are both DNS_NOTFOUND in Postfix: equal rank.
        return 0 if self is DnsStatus.NODATA else self.value


_H_ERRNO_TEXT = {
    DnsStatus.NOTFOUND: "Host not found",
    DnsStatus.NODATA: "Host found but no data record of requested type",
    DnsStatus.RETRY: "Host not found, try again",
    DnsStatus.FAIL: "Non-recoverable error",
}


@dataclass(frozen=True)
class DnsAnswer:
    """One DNS answer: A/AAAA give addresses, MX gives ``"pref host"`` with
    host ``""`` for a null MX. *secure*: the resolver validated it (the AD
    bit, with smtp_dns_support_level = dnssec); *canonical*: the CNAME
    target the records belong to ("" when the name is not a CNAME)."""

    status: DnsStatus
    records: tuple[str, ...] = ()
    secure: bool = False
    canonical: str = ""


@dataclass(frozen=True)
class NativeAnswer:
    """The system resolver's (getaddrinfo) answer for one host name."""

    addresses: tuple[str, ...] = ()
    error: str = ""  #: gai_strerror() text when the lookup failed
    temporary: bool = False  #: EAI_AGAIN, EAI_MEMORY, EAI_SYSTEM
    nohost: bool = True  #: EAI_AGAIN, EAI_NODATA, EAI_NONAME (the name is unknown)


class RouteDns(Protocol):
    def lookup(self, name: str, rtype: str) -> DnsAnswer:
        """MX, A or AAAA records of *name*."""

    def native(self, host: str) -> NativeAnswer:
        """The addresses of *host* from the system's resolver."""


# -- results ----------------------------------------------------------------------


@dataclass(frozen=True)
class RouteFailure:
    """Why a next hop gave no server: an enhanced status code and Postfix's
    text (the ``status=... (TEXT)`` of the log line and the DSN's
    Diagnostic-Code)."""

    dsn: str
    text: str
    #: deliver_pass to this transport instead of bouncing (best_mx_transport)
    pass_to: str = ""

    @property
    def temporary(self) -> bool:
        return self.dsn.startswith("4")

    @property
    def permanent(self) -> bool:
        return self.dsn.startswith("5")

    @property
    def loop(self) -> bool:
        """Postfix's SMTP_HAS_LOOP_DSN: mail for the destination loops."""
        return self.dsn[1:] == ".4.6"


@dataclass(frozen=True)
class Candidate:
    """One server to try: ``host[addr]:port`` at MX preference *pref*."""

    host: str
    addr: str
    port: int
    pref: int = 0
    path: str | None = None  #: LMTP unix-domain socket (addr is the path)
    #: the address records were DNSSEC-validated (DANE: TLSA lookups)
    dnssec: bool = False
    #: the host name's CNAME target, when it is a CNAME (DANE: TLSA base)
    canonical: str = ""
    #: the domain whose MX lookup named this host ("" without one)
    mx_domain: str = ""
    #: that MX lookup was DNSSEC-validated
    mx_dnssec: bool = False

    @property
    def family(self) -> int:
        """4 or 6 (0 for a unix-domain socket)."""
        if self.path is not None:
            return 0
        return 6 if ":" in self.addr else 4

    def __str__(self) -> str:
        if self.path is not None or not self.port:
            return f"{self.host}[{self.addr}]"
        return f"{self.host}[{self.addr}]:{self.port}"


@dataclass(frozen=True)
class Destination:
    """One item of the next-hop list, and its place in it."""

    nexthop: NextHop
    fallback: bool = False  #: from smtp_fallback_relay
    index: int = 0


@dataclass(frozen=True)
class Hop:
    """The servers of one destination, best first, or why there are none."""

    destination: Destination
    candidates: tuple[Candidate, ...] = ()
    error: RouteFailure | None = None
    #: try no later destination after this one (this host is an MX host for
    #: it, or mail for it loops back, or it is the last)
    final: bool = False
    i_am_mx: bool = False
    mx_lookup: bool = False
    #: the most preferred MX preference found (connection-cache "best MX")
    best_pref: int | None = None
    #: sessions that delivered, after which the agent stops (0: no limit)
    session_limit: int = 0

    @property
    def nexthop(self) -> NextHop:
        return self.destination.nexthop


# -- configuration ----------------------------------------------------------------


@dataclass(frozen=True)
class RoutePolicy:
    """The parameters routing reads; :meth:`from_settings` for smtp or lmtp."""

    lmtp: bool = False
    default_service: str = "smtp"
    known_ports: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_KNOWN_PORTS))
    inet_protocols: frozenset[int] = frozenset({4, 6})
    address_preference: str = "any"  # any | ipv4 | ipv6
    mx_address_limit: int = 5
    mx_session_limit: int = 2
    randomize_addresses: bool = True
    balance_inet_protocols: bool = True
    host_lookup: frozenset[str] = frozenset({"dns"})  # dns, native
    dns_enabled: bool = True
    fallback_relay: tuple[str, ...] = ()
    relayhost: str = ""
    ignore_mx_lookup_error: bool = False
    defer_if_no_mx_address_found: bool = False
    best_mx_transport: str = ""
    myhostname: str = ""
    own_addresses: frozenset[str] = frozenset()
    #: count an MX host named $myhostname as this host (Postfix looks at
    #: addresses only; RFC 5321 section 5.1 asks for both)
    match_myhostname: bool = True
    queue_directory: str = "/var/spool/hato"

    @property
    def prefix(self) -> str:
        return "lmtp" if self.lmtp else "smtp"

    @classmethod
    def from_settings(cls, settings: Mapping[str, str], *, lmtp: bool = False,
                      own_addresses: Sequence[str] | None = None) -> RoutePolicy:
        """The policy of the smtp (or lmtp) client from a Settings snapshot
        (master.cf -o overrides included). *own_addresses* defaults to the
        addresses of ``inet_interfaces`` and ``proxy_interfaces``."""
        p = "lmtp" if lmtp else "smtp"
        get = settings.get
        protocols = _inet_protocols(_items(settings, "inet_protocols") or ["all"])
        preference = (get(f"{p}_address_preference") or "any").strip().lower()
        if preference not in ("any", "ipv4", "ipv6"):
            raise ConfigError(f"bad {p}_address_preference value: {preference}")
        dns_level = (get(f"{p}_dns_support_level") or "").strip().lower()
        if dns_level == "":
            dns_enabled = not _yes(get("disable_dns_lookups"))
        elif dns_level in ("enabled", "dnssec"):
            dns_enabled = True
        elif dns_level == "disabled":
            dns_enabled = False
        else:
            raise ConfigError(f'invalid {p}_dns_support_level: "{dns_level}"')
        lookup = {i.lower() for i in _items(settings, f"{p}_host_lookup")} or {"dns"}
        bad = lookup - {"dns", "native"}
        if bad:
            raise ConfigError(f"bad {p}_host_lookup value: {min(bad)}")
        if not dns_enabled:
            lookup = {"native"}
        if own_addresses is None:
            own_addresses = _interface_addresses(settings)
        known_text = get("known_tcp_ports")
        known = (parse_known_tcp_ports(known_text) if known_text is not None
                 else dict(DEFAULT_KNOWN_PORTS))
        default_service = (get(f"{p}_tcp_port") or ("24" if lmtp else "smtp")).strip()
        return cls(
            lmtp=lmtp,
            default_service=default_service,
            known_ports=known,
            inet_protocols=protocols,
            address_preference=preference,
            mx_address_limit=_int(get(f"{p}_mx_address_limit"), 5),
            mx_session_limit=_int(get(f"{p}_mx_session_limit"), 2),
            randomize_addresses=_yes(get(f"{p}_randomize_addresses", "yes")),
            balance_inet_protocols=_yes(get(f"{p}_balance_inet_protocols", "yes")),
            host_lookup=frozenset(lookup),
            dns_enabled=dns_enabled,
            fallback_relay=tuple(split_nexthops(" ".join(_items(settings, f"{p}_fallback_relay")))),
            relayhost=(get("relayhost") or "").strip(),
            ignore_mx_lookup_error=_yes(get("ignore_mx_lookup_error")),
            defer_if_no_mx_address_found=_yes(get(f"{p}_defer_if_no_mx_address_found")),
            best_mx_transport=(get("best_mx_transport") or "").strip(),
            myhostname=(get("myhostname") or "").strip(),
            own_addresses=frozenset(_normal_addr(a) for a in own_addresses),
            queue_directory=(get("queue_directory") or "/var/spool/hato").strip(),
        )


def _items(settings: Mapping[str, str], name: str) -> list[str]:
    getter = getattr(settings, "list", None)
    if callable(getter):
        try:
            return list(getter(name))
        except ConfigError:  # not a parameter of this Settings: read it plainly
            return split_list(settings.get(name, "") or "")
    return split_list(settings.get(name, "") or "")


def _yes(value: str | None) -> bool:
    return (value or "").strip().lower() == "yes"


def _int(value: str | None, default: int) -> int:
    try:
        return int((value or "").strip())
    except ValueError:
        return default


def _inet_protocols(items: Sequence[str]) -> frozenset[int]:
    out: set[int] = set()
    for item in items:
        low = item.lower()
        if low == "all":
            out |= {4, 6}
        elif low == "ipv4":
            out.add(4)
        elif low == "ipv6":
            out.add(6)
        else:
            raise ConfigError(f'bad inet_protocols value: "{item}"')
    return frozenset(out)


def _interface_addresses(settings: Mapping[str, str]) -> list[str]:
    """Postfix's own_inet_addr_list() + proxy_inet_addr_list(), as far as
    the settings tell (addresses only; host names are not looked up)."""
    out: list[str] = []
    facts = getattr(getattr(settings, "config", None), "facts", None)
    for name in ("inet_interfaces", "proxy_interfaces"):
        for item in _items(settings, name):
            low = item.lower()
            if low == "all":
                if facts is not None:
                    out.extend(addr for addr, _ in facts.ipv4)
                    out.extend(addr for addr, _ in facts.ipv6)
                out.extend(["127.0.0.1", "::1"])
            elif low in ("loopback-only", "localhost"):
                out.extend(["127.0.0.1", "::1"])
            else:
                addr = item[1:-1] if item.startswith("[") and item.endswith("]") else item
                if valid_hostaddr(addr):
                    out.append(addr)
    return out


def _normal_addr(addr: str) -> str:
    try:
        ip = ipaddress.ip_address(addr.split("%", 1)[0])
    except ValueError:
        return addr
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


# -- the router -------------------------------------------------------------------


class _Why:
    """Postfix's DSN_BUF for one destination: the last lookup error, whose
    status stays temporary once a temporary one was seen."""

    def __init__(self) -> None:
        self.dsn = ""
        self.text = ""

    @property
    def soft(self) -> bool:
        return self.dsn.startswith("4")

    def set(self, dsn: str, text: str | None = None) -> None:
        self.dsn = dsn
        if text is not None:
            self.text = text

    def failure(self) -> RouteFailure | None:
        return RouteFailure(self.dsn, self.text) if self.dsn else None


@dataclass(frozen=True)
class _Addr:
    host: str
    addr: str
    pref: int
    family: int
    secure: bool = False
    canonical: str = ""


class Router:
    """Next hop → :class:`Hop` objects, for one smtp or lmtp service.

    *rng* shuffles equal-preference addresses (pass ``random.Random(seed)``
    in tests); *services* maps a service name to a port (/etc/services)."""

    def __init__(self, policy: RoutePolicy, dns: RouteDns, *,
                 rng: random.Random | None = None,
                 services: ServiceLookup | None = None):
        self.policy = policy
        self.dns = dns
        self.rng = rng or random.Random()
        self.services = services
        self._atypes = tuple(t for f, t in ((4, "A"), (6, "AAAA")) if f in policy.inet_protocols)

    # -- parsing ------------------------------------------------------------------

    def parse(self, text: str) -> NextHop:
        p = self.policy
        return parse_nexthop(text, lmtp=p.lmtp, default_service=p.default_service,
                             known_ports=p.known_ports, services=self.services,
                             queue_directory=p.queue_directory)

    def destinations(self, nexthop: str) -> list[Destination]:
        """The next-hop list of a delivery request, then the fallback relays
        (not for an LMTP unix-domain socket). NextHopError when an item does
        not parse."""
        text = nexthop.strip()
        if self.policy.lmtp and text.startswith("unix:"):
            if self.policy.fallback_relay:
                log.warning('ignoring "%s_fallback_relay = %s" setting for non-TCP connections',
                            self.policy.prefix, ", ".join(self.policy.fallback_relay))
            return [Destination(self.parse(text))]
        items = split_nexthops(text)
        if not items:
            raise NextHopError(f'null destination: "{nexthop}"')
        out = [Destination(self.parse(item), index=i) for i, item in enumerate(items)]
        for item in self.policy.fallback_relay:
            out.append(Destination(self.parse(item), fallback=True, index=len(out)))
        return out

    # -- resolving ----------------------------------------------------------------

    def hops(self, nexthop: str) -> Iterator[Hop]:
        """The destinations resolved one at a time, as the agent needs them;
        the last one yielded is ``final``. Stop iterating when every
        recipient is done."""
        dests = self.destinations(nexthop)
        for i, dest in enumerate(dests):
            hop = self.resolve(dest)
            if i == len(dests) - 1 and not hop.final:
                hop = replace(hop, final=True)
            yield hop
            if hop.final:
                return

    def route(self, nexthop: str) -> list[Hop]:
        """Every hop the agent would look at when no server accepts the
        mail (the eager form of :meth:`hops`)."""
        return list(self.hops(nexthop))

    def resolve(self, dest: Destination) -> Hop:
        """The servers of one destination (smtp_connect_inet()'s lookups)."""
        p = self.policy
        nh = dest.nexthop
        if nh.path is not None:
            host = p.myhostname or "localhost"
            cand = Candidate(host, nh.path, 0, 0, path=nh.path)
            return Hop(dest, (cand,), final=True, session_limit=p.mx_session_limit)
        if not self._atypes:
            return Hop(dest, error=RouteFailure("4.4.4", "all network protocols are disabled"))
        literal_or_nodns = nh.literal or not p.dns_enabled
        loop_detect = not p.lmtp and nh.port == SMTP_PORT
        lookup_mx = not p.lmtp and not literal_or_nodns
        why = _Why()
        i_am_mx = False
        mx_secure: bool | None = None
        if lookup_mx:
            addrs, i_am_mx, mx_secure = self._domain_addr(nh.host, why, loop_detect)
        else:
            addrs = self._host_addr(nh.host, why, loop_detect)
        error = why.failure() if not addrs else None
        if not addrs and error is None:  # cannot happen; never hide a failure
            error = RouteFailure("4.3.0", "server unavailable or unable to receive mail")
        final = i_am_mx or (error is not None and error.loop)
        limit = p.mx_address_limit
        if limit > 0:
            addrs = addrs[:limit]
        cands = tuple(Candidate(a.host, a.addr, nh.port, a.pref, dnssec=a.secure,
                                canonical=a.canonical,
                                mx_domain=nh.host if mx_secure is not None else "",
                                mx_dnssec=bool(mx_secure)) for a in addrs)
        return Hop(dest, cands, error, final=final, i_am_mx=i_am_mx, mx_lookup=lookup_mx,
                   best_pref=cands[0].pref if cands else None,
                   session_limit=p.mx_session_limit)

    def failure(self, hop: Hop, last: RouteFailure | None) -> RouteFailure:
        """What the recipients left after the last *hop* get (the end of
        smtp_connect_inet()): *last* is the last error seen, a lookup or a
        connection failure."""
        p = self.policy
        if last is None:
            return RouteFailure("4.3.0", "server unavailable or unable to receive mail")
        if last.temporary:
            return last
        if hop.destination.fallback:
            log.warning("%s_fallback_relay configuration problem", p.prefix)
            return replace(last, dsn="4.3.5")
        relay = split_nexthops(p.relayhost)
        if not p.lmtp and relay and hop.destination.index == 0 \
                and hop.nexthop.text == relay[0]:
            log.warning("relayhost configuration problem")
            return replace(last, dsn="4.3.5")
        if not p.lmtp and last.loop and p.best_mx_transport:
            return replace(last, pass_to=p.best_mx_transport)
        return last

    # -- smtp_addr.c --------------------------------------------------------------

    def _domain_addr(self, name: str, why: _Why, loop_detect: bool
                     ) -> tuple[list[_Addr], bool, bool | None]:
        """MX lookup and the MX hosts' addresses: (addresses, i_am_mx,
        whether the MX RRset was DNSSEC-validated, None without MX records)."""
        p = self.policy
        answer = self.dns.lookup(name, "MX")
        status = answer.status
        mx: list[tuple[int, str]] = []
        if status is DnsStatus.OK:
            for record in answer.records:
                pref_text, _, host = record.strip().partition(" ")
                host = host.strip().rstrip(".")
                if not host:  # a null MX anywhere in the RRset: the whole answer
                    mx = []
                    why.set("5.1.0", f"Domain {name} does not accept mail (nullMX)")
                    return [], False, None
                try:
                    mx.append((int(pref_text), host))
                except ValueError:
                    status = DnsStatus.RETRY
                    break
            if status is DnsStatus.OK and not mx:
                status = DnsStatus.NODATA
        if status in (DnsStatus.NOTFOUND, DnsStatus.NODATA):
            return self._host_addr(name, why, loop_detect), False, None
        if status is not DnsStatus.OK:
            dsn = {DnsStatus.RETRY: "4.4.3", DnsStatus.INVAL: "5.4.4",
                   DnsStatus.FAIL: "5.4.3"}[status]
            why.set(dsn, _dns_error_text(name, "MX", status))
            if p.ignore_mx_lookup_error:
                return self._host_addr(name, why, loop_detect), False, None
            return [], False, None
        mx.sort(key=lambda item: item[0])  # stable: DNS order within a preference
        best_pref = mx[0][0]
        addrs: list[_Addr] = []
        for pref, host in mx:
            addrs.extend(self._addr_one(host, pref, why))
        if not addrs:
            if p.defer_if_no_mx_address_found and why.dsn.startswith("5"):
                why.set("4" + why.dsn[1:])
            log.warning("no MX host for %s has a valid address record", name)
            return [], False, answer.secure
        best_found = addrs[0].pref
        i_am_mx = False
        if loop_detect:
            me = self._find_self(addrs)
            if me is not None:
                i_am_mx = True
                addrs = [a for a in addrs if a.pref < me.pref]
                if not addrs:
                    if best_pref != best_found:
                        why.set("4.4.4", f"unable to find primary relay for {name}")
                    else:
                        why.set("5.4.6", f"mail for {name} loops back to myself")
        if len(addrs) > 1:
            addrs = self._order(addrs, sort=True)
        return addrs, i_am_mx, answer.secure

    def _host_addr(self, host: str, why: _Why, loop_detect: bool) -> list[_Addr]:
        """A host's own addresses (implicit MX, [literal], LMTP), pref 0."""
        why.set("", "")  # dsb_reset(): an earlier MX lookup error is replaced
        addrs = self._addr_one(host, 0, why)
        if addrs and loop_detect and self._find_self(addrs) is not None:
            why.set("5.4.6", f"mail for {host} loops back to myself")
            return []
        if len(addrs) > 1:
            addrs = self._order(addrs, sort=len(self._atypes) > 1)
        return addrs

    def _addr_one(self, host: str, pref: int, why: _Why) -> list[_Addr]:
        """smtp_addr_one(): the addresses of one host name (or numeric
        address); a failure updates *why* (a temporary one dominates)."""
        p = self.policy
        numeric = valid_hostaddr(host)
        if numeric:
            fam = 6 if ":" in host else 4
            if fam in p.inet_protocols:
                return [_Addr(host, _normal_addr(host), pref, fam)]
        if "dns" in p.host_lookup:
            if numeric or not valid_hostname(host, utf8=True):
                status = DnsStatus.NOTFOUND
                text = f"Name service error for {host}: invalid host or domain name"
                records: list[tuple[str, bool, str]] = []
            else:
                status, text, records = self._lookup_addresses(host)
            if status is DnsStatus.OK:
                return [_Addr(host, _normal_addr(a), pref, 6 if ":" in a else 4, secure,
                              canonical) for a, secure, canonical in records]
            if status is DnsStatus.RETRY:
                why.set("4.4.3", text)
                return []
            if status is DnsStatus.FAIL:
                why.set("4.4.3" if why.soft else "5.4.3", text)
                return []
            if status is DnsStatus.INVAL:
                why.set("4.4.4" if why.soft else "5.4.4", text)
                return []
            why.set("4.4.4" if why.soft else "5.4.4", text)  # not found: maybe native
        if "native" in p.host_lookup:
            ans = self.dns.native(host)
            if ans.error:
                if why.soft or ans.temporary:
                    dsn = "4.4.4" if ans.nohost else "4.3.0"
                else:
                    dsn = "5.4.4" if ans.nohost else "5.3.0"
                why.set(dsn, f"unable to look up host {host}: {ans.error}")
                return []
            found = []
            for a in ans.addresses:
                fam = 6 if ":" in a else 4
                if fam not in p.inet_protocols:
                    log.info("skipping address family %d for host %s",
                             10 if fam == 6 else 2, host)
                    continue
                found.append(_Addr(host, _normal_addr(a), pref, fam))
            if not found:
                why.set("4.4.4" if why.soft else "5.4.4", f"{host}: host not found")
            return found
        return []

    def _lookup_addresses(self, host: str
                          ) -> tuple[DnsStatus, str, list[tuple[str, bool, str]]]:
        """dns_lookup_v() over A and/or AAAA: the best status (the last one
        of the best rank names the type in the text) and every address, with
        its answer's DNSSEC status and CNAME target."""
        best: tuple[DnsStatus, str] | None = None
        records: list[tuple[str, bool, str]] = []
        for rtype in self._atypes:
            ans = self.dns.lookup(host, rtype)
            if ans.status is DnsStatus.OK:
                records.extend((r, ans.secure, ans.canonical) for r in ans.records
                               if valid_hostaddr(r))
            text = "" if ans.status is DnsStatus.OK else _dns_error_text(host, rtype, ans.status)
            if best is None or ans.status.rank >= best[0].rank:
                best = (ans.status, text)
        assert best is not None
        status = best[0]
        if status is DnsStatus.OK and not records:
            status = DnsStatus.NODATA
        return status, best[1], records

    def _find_self(self, addrs: Sequence[_Addr]) -> _Addr | None:
        p = self.policy
        me = p.myhostname.lower().rstrip(".")
        for a in addrs:
            if a.addr in p.own_addresses:
                return a
            if p.match_myhostname and me and a.host.lower().rstrip(".") == me:
                return a
        return None

    def _order(self, addrs: list[_Addr], *, sort: bool) -> list[_Addr]:
        """Shuffle, sort by (preference, address family preference), balance."""
        p = self.policy
        out = list(addrs)
        if p.randomize_addresses:
            self.rng.shuffle(out)
        if sort:
            pref = p.address_preference
            first = 6 if pref == "ipv6" else 4 if pref == "ipv4" else 0

            def key(a: _Addr) -> tuple[int, int]:
                return (a.pref, 0 if not first or a.family == first else 1)

            out.sort(key=key)
        if p.mx_address_limit > 0 and p.balance_inet_protocols:
            out = _balance(out, p.mx_address_limit)
        return out


def _balance(addrs: list[_Addr], limit: int) -> list[_Addr]:
    """smtp_balance_inet_proto(): keep both address families within the
    address limit, in the same relative order."""
    v4 = sum(1 for a in addrs if a.family == 4)
    v6 = len(addrs) - v4
    if not (v4 and v6 and v4 + v6 > limit):
        return addrs
    if v6 <= limit // 2:
        t6 = v6
        t4 = limit - t6
    elif v4 <= limit // 2:
        t4 = v4
        t6 = limit - t4
    else:
        t4 = (limit + (addrs[0].family == 4)) // 2
        t6 = limit - t4
    out = []
    for a in addrs:
        if a.family == 4 and t4 > 0:
            out.append(a)
            t4 -= 1
        elif a.family == 6 and t6 > 0:
            out.append(a)
            t6 -= 1
    return out


def _dns_error_text(name: str, rtype: str, status: DnsStatus) -> str:
    if status is DnsStatus.INVAL:
        return (f"Name service error for name={name} type={rtype}: "
                "Malformed or unexpected name server reply")
    return (f"Host or domain name not found. Name service error for name={name} "
            f"type={rtype}: {_H_ERRNO_TEXT[status]}")

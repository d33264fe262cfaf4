"""The DNS side of the SMTP/LMTP clients' routing.

:class:`ResolverRouteDns` answers :class:`hato.policy.smtp_route.RouteDns`
questions with :class:`hato.io.dns.Resolver` (MX, A, AAAA through dnspython,
``hato_dns_servers`` in tests) and with the system's resolver
(``getaddrinfo``: /etc/hosts, NSS) for ``smtp_host_lookup = native``. It tells
NXDOMAIN ("Host not found") from NODATA ("Host found but no data record of
requested type") and a temporary failure (DnsTempFail: "Host not found, try
again"), as Postfix's messages do. With ``smtp_dns_support_level = dnssec``
each answer carries the resolver's AD bit (``DnsAnswer.secure``) and the
CNAME target, which the candidates keep for DANE (:mod:`hato.io.smtp_dane`).

:func:`router_from_settings` builds the :class:`~hato.policy.smtp_route.Router`
of an smtp or lmtp service from its Settings snapshot. The API is synchronous
(DNS questions block): the delivery agent calls it from a worker thread, e.g.
``await asyncio.to_thread(list, router.hops(nexthop))`` or one hop at a time.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Mapping, Sequence

from ..config.errors import ConfigError
from ..policy.dnsquery import DnsLookup, DnsTempFail
from ..policy.smtp_route import (
    DnsAnswer,
    DnsStatus,
    NativeAnswer,
    RoutePolicy,
    Router,
    ServiceLookup,
)
from .dns import Resolver

__all__ = ["DNS_SUPPORT_LEVELS", "ResolverRouteDns", "dns_support_level",
           "router_from_settings", "system_services"]

#: smtp_dns_support_level's values ("" keeps disable_dns_lookups' say).
DNS_SUPPORT_LEVELS = ("disabled", "enabled", "dnssec")

_TEMP_GAI = {socket.EAI_AGAIN, getattr(socket, "EAI_MEMORY", None),
             getattr(socket, "EAI_SYSTEM", None)} - {None}
_NOHOST_GAI = {socket.EAI_AGAIN, socket.EAI_NONAME,
               getattr(socket, "EAI_NODATA", None)} - {None}


def system_services(name: str) -> int | None:
    """The port of a TCP service in the services database (/etc/services)."""
    try:
        return socket.getservbyname(name, "tcp")
    except OSError:
        return None


class ResolverRouteDns:
    """RouteDns over a :class:`Resolver` (or any DnsLookup: then an empty
    answer counts as NXDOMAIN, as it cannot be told from NODATA)."""

    def __init__(self, resolver: Resolver | DnsLookup):
        self.resolver = resolver

    def lookup(self, name: str, rtype: str) -> DnsAnswer:
        res = self.resolver
        secure, canonical = False, ""
        try:
            if isinstance(res, Resolver):
                got = res.reply(name, rtype)
                records, nxdomain = list(got.records), got.nxdomain
                secure, canonical = got.secure, got.canonical
            else:  # any DnsLookup: an empty answer counts as "no such name"
                records = res.query(name, rtype)
                nxdomain = not records
        except DnsTempFail:
            return DnsAnswer(DnsStatus.RETRY)
        if records:
            return DnsAnswer(DnsStatus.OK, tuple(records), secure, canonical)
        return DnsAnswer(DnsStatus.NOTFOUND if nxdomain else DnsStatus.NODATA, (), secure,
                         canonical)

    def native(self, host: str) -> NativeAnswer:
        try:
            infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            code = exc.errno
            return NativeAnswer(error=exc.strerror or str(exc),
                                temporary=code in _TEMP_GAI,
                                nohost=code in _NOHOST_GAI)
        except (UnicodeError, OSError) as exc:
            return NativeAnswer(error=str(exc), temporary=True, nohost=False)
        out: list[str] = []
        for family, *_rest, sockaddr in infos:
            if family not in (socket.AF_INET, socket.AF_INET6):
                continue
            addr = str(sockaddr[0]).split("%", 1)[0]
            if addr not in out:
                out.append(addr)
        return NativeAnswer(tuple(out))


def dns_support_level(settings: Mapping[str, str], prefix: str = "smtp") -> str:
    """``{prefix}_dns_support_level`` as Postfix reads it: empty means
    ``disabled`` with disable_dns_lookups = yes, else ``enabled``.
    ConfigError for any other value (Postfix's smtp(8) stops with
    ``invalid smtp_dns_support_level: "x"``)."""
    name = f"{prefix}_dns_support_level"
    getter = getattr(settings, "str", None)
    value = (getter(name) if callable(getter) else settings.get(name, "") or "").strip().lower()
    if not value:
        getbool = getattr(settings, "bool", None)
        disabled = getbool("disable_dns_lookups") if callable(getbool) else \
            (settings.get("disable_dns_lookups", "no") or "no").strip().lower() == "yes"
        return "disabled" if disabled else "enabled"
    if value not in DNS_SUPPORT_LEVELS:
        raise ConfigError(f'invalid {name}: "{value}"')
    return value


def router_from_settings(settings: Mapping[str, str], *, lmtp: bool = False,
                         resolver: Resolver | DnsLookup | None = None,
                         rng: random.Random | None = None,
                         own_addresses: Sequence[str] | None = None,
                         services: ServiceLookup | None = system_services) -> Router:
    """The Router of an smtp (or lmtp) service: its RoutePolicy from
    *settings*, DNS from *resolver* (default: ``Resolver.from_settings(settings,
    smtp_client=True)``, which honours hato_dns_servers and
    disable_dns_lookups; with {smtp,lmtp}_dns_support_level = dnssec it asks
    for validated answers)."""
    policy = RoutePolicy.from_settings(settings, lmtp=lmtp, own_addresses=own_addresses)
    if resolver is None:
        level = dns_support_level(settings, "lmtp" if lmtp else "smtp")
        resolver = Resolver.from_settings(settings, smtp_client=True,
                                          dnssec=level == "dnssec")
    return Router(policy, ResolverRouteDns(resolver), rng=rng, services=services)

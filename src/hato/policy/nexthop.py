"""Next hops, as the SMTP and LMTP clients are given them (Postfix's
host_port.c and smtp_parse_destination()): ``host`` or ``domain``,
``host:port``, ``[host]``, ``[host]:port``, ``[addr]``, ``[ipv6:addr]``, a
comma/space list of those, and for LMTP ``unix:/path``,
``unix:private/name`` (relative to $queue_directory), ``inet:host:port``.
Part of :mod:`hato.policy.smtp_route` (which routes them, and exports these
names too)."""

from __future__ import annotations

import ipaddress
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..config.errors import ConfigError
from ..config.values import split_list
from ..proto.hostname import valid_hostname
from .address import valid_hostaddr

#: Postfix's CHARS_COMMA_SP: what separates the items of a next-hop list.
_COMMA_SP = ", \t\r\n"
#: known_tcp_ports' default (Postfix 3.6 and later).
DEFAULT_KNOWN_PORTS: Mapping[str, int] = {
    "lmtp": 24, "smtp": 25, "smtps": 465, "submissions": 465, "submission": 587}

ServiceLookup = Callable[[str], "int | None"]


class NextHopError(ConfigError, ValueError):
    """A next hop that does not parse; the text is Postfix's (smtp(8) stops
    with it as a fatal error: a configuration error)."""


# -- next hops --------------------------------------------------------------------


@dataclass(frozen=True)
class NextHop:
    """One parsed destination."""

    text: str  #: the item as written (without lmtp's inet: prefix)
    host: str  #: name or address, without brackets or IPv6: ("" for unix:)
    service: str  #: the service as written, or the default
    port: int  #: 0 for a unix-domain socket
    literal: bool = False  #: in [brackets]: no MX lookup
    path: str | None = None  #: LMTP unix-domain socket

    @property
    def unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        return self.text


def parse_known_tcp_ports(items: Sequence[str] | str) -> dict[str, int]:
    """``known_tcp_ports`` (``smtps=submissions=465``) as name → port."""
    if isinstance(items, str):
        items = split_list(items)
    out: dict[str, int] = {}
    for item in items:
        names = [p.strip() for p in item.split("=")]
        if len(names) < 2 or not names[-1].isdigit() or not all(names[:-1]):
            raise ConfigError(f"known_tcp_ports: bad entry: {item!r}")
        for name in names[:-1]:
            out[name] = int(names[-1])
    return out


def split_nexthops(text: str) -> list[str]:
    """The items of a next-hop list (relayhost = a, b; smtp_fallback_relay)."""
    out: list[str] = []
    item: list[str] = []
    for ch in text:
        if ch in _COMMA_SP:
            if item:
                out.append("".join(item))
                item = []
        else:
            item.append(ch)
    if item:
        out.append("".join(item))
    return out


def _host_port(text: str, default_service: str) -> tuple[str, str, bool]:
    """Postfix's host_port(): (host, service, bracketed), or NextHopError
    with its complaint."""
    literal = text.startswith("[")
    if literal:
        inner = text[1:]
        ipv6 = inner[:5].lower() == "ipv6:"
        if ipv6:
            inner = inner[5:]
        end = inner.find("]")
        if end < 0:
            raise NextHopError('missing "]"')
        host, rest = inner[:end], inner[end + 1:]
        if rest and not rest.startswith(":"):
            raise NextHopError('garbage after "]"')
        rest = rest[1:]
        if ipv6 and not _is_ipv6(host):
            raise NextHopError("malformed IPv6 address")
        service = rest or default_service
    else:
        host, sep, service = text.rpartition(":")
        if not sep:
            host, service = text, default_service
        elif not service:
            service = default_service
    if not host:
        raise NextHopError("missing host information")
    if not service:
        raise NextHopError("missing service information")
    if not valid_hostname(host, utf8=True) and not valid_hostaddr(host):
        raise NextHopError("valid hostname or network address required")
    if service != default_service and service[0].isdigit() and not service.isdigit():
        raise NextHopError("garbage after numerical service")
    return host, service, literal


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def service_port(service: str, destination: str, *,
                 known_ports: Mapping[str, int] = DEFAULT_KNOWN_PORTS,
                 services: ServiceLookup | None = None) -> int:
    """A service name or number as a TCP port, as smtp_parse_destination()
    finds it: known_tcp_ports, digits, then the services database."""
    name = str(known_ports[service]) if service in known_ports else service
    if name.isdigit():
        port = int(name)
        if not 0 < port < 65536:
            raise NextHopError(f"bad network port: {service} for destination: {destination}")
        return port
    port_found = services(name) if services is not None else None
    if not port_found:
        raise NextHopError(f"unknown service: {name}/tcp")
    return int(port_found)


def parse_nexthop(text: str, *, lmtp: bool = False, default_service: str = "smtp",
                  known_ports: Mapping[str, int] = DEFAULT_KNOWN_PORTS,
                  services: ServiceLookup | None = None,
                  queue_directory: str = "/var/spool/hato") -> NextHop:
    """One next-hop item as a :class:`NextHop`; NextHopError when it does
    not parse (``... in server description: TEXT``)."""
    item = text.strip()
    if lmtp and item.startswith("unix:"):
        path = item[5:]
        if not path:
            raise NextHopError(f"missing socket path in server description: {text}")
        if not path.startswith("/"):
            path = posixpath.join(queue_directory, path)
        return NextHop(item, "", "", 0, path=path)
    if lmtp and item.startswith("inet:"):
        item = item[5:]
    try:
        host, service, literal = _host_port(item, default_service)
    except NextHopError as exc:
        raise NextHopError(f"{exc} in server description: {text}") from None
    port = service_port(service, item, known_ports=known_ports, services=services)
    return NextHop(item, host, service, port, literal=literal)

"""Facts about this host that some parameter defaults are computed from:
the host name and the addresses of the network interfaces."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
from functools import lru_cache

from ..config.defaults import HostFacts

_SIOCGIFADDR = 0x8915
_SIOCGIFNETMASK = 0x891B


def _ipv4_interfaces() -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _index, name in socket.if_nameindex():
            req = struct.pack("256s", name.encode()[:15])
            try:
                addr = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, req)[20:24]
                mask = fcntl.ioctl(s.fileno(), _SIOCGIFNETMASK, req)[20:24]
            except OSError:
                continue
            prefix = bin(int.from_bytes(mask, "big")).count("1")
            found.append((socket.inet_ntoa(addr), prefix))
    return found


def _ipv6_interfaces() -> list[tuple[str, int]]:
    rows: list[tuple[int, int, str, int]] = []
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as f:
            for order, line in enumerate(f):
                parts = line.split()
                if len(parts) < 6:
                    continue
                addr = ipaddress.IPv6Address(bytes.fromhex(parts[0]))
                rows.append((int(parts[1], 16), order, str(addr), int(parts[2], 16)))
    except OSError:
        return []
    rows.sort()
    return [(addr, prefix) for _i, _o, addr, prefix in rows]


@lru_cache(maxsize=1)
def host_facts() -> HostFacts:
    return HostFacts(
        hostname=socket.gethostname(),
        ipv4=tuple(_ipv4_interfaces()),
        ipv6=tuple(_ipv6_interfaces()),
    )

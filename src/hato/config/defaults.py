"""Defaults that Postfix computes rather than writes down: myhostname,
mydomain and mynetworks. The host's facts come in as a HostFacts value (see
hato.io.hostinfo), so this module stays pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

DEF_MYDOMAIN = "localdomain"


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    ipv4: tuple[tuple[str, int], ...] = ()
    ipv6: tuple[tuple[str, int], ...] = ()


def default_myhostname(facts: HostFacts, mydomain: str | None) -> str:
    """The host name, made fully qualified with $mydomain (or localdomain)."""
    name = facts.hostname
    if "." not in name:
        name = f"{name}.{mydomain or DEF_MYDOMAIN}"
    return name


def default_mydomain(myhostname: str) -> str:
    dot = myhostname.find(".")
    if dot < 0 or not myhostname[dot + 1 :]:
        return DEF_MYDOMAIN
    return myhostname[dot + 1 :]


def default_mynetworks(facts: HostFacts, style: str, protocols: list[str]) -> str:
    """mynetworks as Postfix computes it from mynetworks_style."""
    style = style.strip().lower()
    protos = {p.lower() for p in protocols} or {"all"}
    want4 = bool(protos & {"all", "ipv4"})
    want6 = bool(protos & {"all", "ipv6"})
    out: list[str] = []
    if want4:
        for addr, prefix in facts.ipv4:
            if style == "host":
                out.append(f"{addr}/32")
            elif style == "class":
                first = int(addr.split(".")[0])
                bits = 8 if first < 128 else 16 if first < 192 else 24
                net = ipaddress.ip_network(f"{addr}/{bits}", strict=False)
                out.append(str(net))
            else:
                out.append(str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False)))
    if want6:
        for addr, prefix in facts.ipv6:
            if style == "host":
                out.append(f"[{addr}]/128")
            else:
                net = ipaddress.ip_network(f"{addr}/{prefix}", strict=False)
                out.append(f"[{net.network_address}]/{net.prefixlen}")
    seen: list[str] = []
    for item in out:
        if item not in seen:
            seen.append(item)
    return " ".join(seen)

"""What the policy layer asks of DNS, and nothing of how it is asked.

Restrictions (reject_rbl_client, reject_unknown_sender_domain,
check_sender_mx_access, ...) and the client's name lookup need DNS answers.
They receive an object that satisfies :class:`DnsLookup`; the real one is
:class:`hato.io.dns.Resolver` (dnspython, with a cache and a timeout), tests
may pass :class:`StaticDns`.

Answers are text: A/AAAA give addresses (``"192.0.2.1"``), PTR/NS/CNAME give
host names without the trailing dot, MX gives ``(preference, host)`` pairs
through :meth:`DnsLookup.mx`, TXT gives the strings joined per record.
"No such name" and "no records of this type" are both an empty list; a
temporary failure (timeout, SERVFAIL) raises :class:`DnsTempFail`, which
callers turn into a 4xx, never a 5xx.
"""

from __future__ import annotations

from typing import Protocol


class DnsTempFail(Exception):
    """The question could not be answered now (timeout, SERVFAIL, no server)."""


class DnsLookup(Protocol):
    def query(self, name: str, rtype: str) -> list[str]:
        """Records of *rtype* ("A", "AAAA", "PTR", "NS", "TXT", "CNAME")
        for *name*; [] when there are none."""

    def mx(self, name: str) -> list[tuple[int, str]]:
        """MX records of *name* as (preference, host), sorted by preference."""


class StaticDns:
    """A DnsLookup from a dict, for tests of pure code:
    ``{("example.com", "MX"): ["10 mx.example.com"], ("x", "A"): "TEMP"}``;
    the value "TEMP" raises DnsTempFail."""

    def __init__(self, records: dict[tuple[str, str], list[str] | str]):
        self.records = {(k[0].lower().rstrip("."), k[1].upper()): v for k, v in records.items()}
        self.asked: list[tuple[str, str]] = []

    def query(self, name: str, rtype: str) -> list[str]:
        key = (name.lower().rstrip("."), rtype.upper())
        self.asked.append(key)
        value = self.records.get(key, [])
        if value == "TEMP":
            raise DnsTempFail(f"{name}/{rtype}: temporary failure")
        return list(value)

    def mx(self, name: str) -> list[tuple[int, str]]:
        out = []
        for item in self.query(name, "MX"):
            pref, _, host = item.partition(" ")
            out.append((int(pref), host.rstrip(".")))
        return sorted(out)

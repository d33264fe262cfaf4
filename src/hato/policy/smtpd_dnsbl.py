"""DNS block and allow lists for smtpd restrictions (smtpd_check.c's DNSXL part).

:class:`DnsxlCache` asks the DNS (through a :class:`~hato.policy.dnsquery.DnsLookup`)
whether an address (``reject_rbl_client``, ``permit_dnswl_client``) or a
domain (``reject_rhsbl_*``, ``permit_rhswl_client``) is listed under a
zone, with the optional ``zone=127.0.0.[2;4]`` reply filter, and keeps the
answers for the session. :func:`expand_rbl_template` fills in
``default_rbl_reply`` / ``rbl_reply_maps`` templates (``$rbl_code``,
``$rbl_class``, ``$rbl_what``, ``$rbl_domain``, ``$rbl_reason``,
``${name?text}``, ``${name:text}`` and the client/sender/recipient names),
replacing characters outside ``smtpd_expansion_filter`` with ``_``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..config.errors import ConfigError
from ..tables.base import TableRetry
from . import address as A
from .dnsquery import DnsLookup, DnsTempFail
from .smtpd_access import (
    DUNNO,
    ERR_POLICY,
    NAME_CLIENT,
    NAME_HELO,
    NAME_RECIPIENT,
    NAME_REV_CLIENT,
    NAME_SENDER,
    OK,
    STAGE_RCPT,
    IpPattern,
    SessionState,
    dsn_split,
    ip_match,
    parse_ip_match,
    smtpd_dsn_fix,
)

RBL_TXT_LIMIT = 500


@dataclass(frozen=True)
class DnsxlHit:
    addresses: tuple[str, ...]
    txt: str | None


class DnsxlSoft:
    """The list could not be asked (a temporary DNS failure)."""


SOFT = DnsxlSoft()
DnsxlAnswer = DnsxlHit | DnsxlSoft | None  # None: not listed


def reverse_address(addr: str) -> str | None:
    """``1.2.3.4`` → ``4.3.2.1``; IPv6 as 32 reversed nibbles."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if ip.version == 6:
        return ".".join(reversed(ip.exploded.replace(":", "")))
    return ".".join(reversed(addr.split(".")))


class DnsxlCache:
    """DNSXL answers for one session; *warn* receives Postfix's warnings."""

    def __init__(self, dns: DnsLookup, warn: Callable[[str], None]):
        self.dns = dns
        self.warn = warn
        self.answers: dict[str, DnsxlAnswer] = {}
        self.patterns: dict[str, IpPattern] = {}

    def _query(self, query: str) -> DnsxlAnswer:
        if query in self.answers:
            return self.answers[query]
        answer: DnsxlAnswer
        try:
            addrs = self.dns.query(query, "A")
        except DnsTempFail as err:
            self.warn(f"{query}: RBL lookup error: {err}")
            answer = SOFT
        else:
            if not addrs:
                answer = None
            else:
                txt: str | None
                try:
                    records = self.dns.query(query, "TXT")
                except DnsTempFail:
                    records = []
                if records:
                    buf = ""
                    for i, rec in enumerate(records):
                        space = RBL_TXT_LIMIT - len(buf)
                        if space <= 0:
                            break
                        buf += rec[:space]
                        if i + 1 < len(records) and RBL_TXT_LIMIT - len(buf) > 3:
                            buf += " / "
                    txt = buf
                else:
                    txt = None
                answer = DnsxlHit(tuple(addrs), txt)
        self.answers[query] = answer
        return answer

    def _filtered(self, query: str, filter_text: str | None) -> DnsxlAnswer:
        answer = self._query(query)
        if isinstance(answer, DnsxlHit) and filter_text is not None:
            pattern = self.patterns.get(filter_text)
            if pattern is None:
                pattern = self.patterns[filter_text] = parse_ip_match(filter_text)
            if not any(ip_match(pattern, a) for a in answer.addresses):
                return None
        return answer

    def find_addr(self, zone: str, addr: str) -> DnsxlAnswer:
        """find_dnsxl_addr(): *zone* may carry ``=filter``."""
        rev = reverse_address(addr)
        if rev is None:
            return None
        domain, eq, filt = zone.partition("=")
        return self._filtered(f"{rev}.{domain}", filt if eq else None)

    def find_domain(self, zone: str, what: str) -> DnsxlAnswer:
        """find_dnsxl_domain(): the domain of an address or a host name;
        literals, invalid names and names ending in a numeric label are
        never asked."""
        at = what.rfind("@")
        domain = what[at + 1:] if at >= 0 else what
        if at >= 0 and domain.startswith("["):
            return None
        if not domain or not A.valid_hostname(domain):
            return None
        suffix = domain.rsplit(".", 1)[-1]
        if suffix.isdigit():
            return None
        zone_domain, eq, filt = zone.partition("=")
        return self._filtered(f"{domain}.{zone_domain}", filt if eq else None)


# -- reply templates (mac_expand) ---------------------------------------------------------------


class TemplateError(ValueError):
    pass


def unescape_filter(text: str) -> str:
    """Postfix's unescape(): ``\\t``, ``\\n``, ``\\\\``, ``\\ooo`` octal."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n:
            nxt = text[i + 1]
            simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t",
                      "v": "\v", "\\": "\\", '"': '"', "'": "'"}
            if nxt in simple:
                out.append(simple[nxt])
                i += 2
                continue
            if nxt in "01234567":
                j = i + 1
                while j < n and j < i + 4 and text[j] in "01234567":
                    j += 1
                out.append(chr(int(text[i + 1:j], 8)))
                i = j
                continue
            out.append(nxt)
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def expand_rbl_template(template: str, lookup: Callable[[str], str | None],
                        allowed: str) -> str:
    """mac_expand() for reply templates: ``$name``, ``${name}``,
    ``${name?text}`` (text when the value is non-empty), ``${name:text}``
    (when empty), ``$$``. An unknown name raises TemplateError. Values are
    filtered through *allowed*."""
    def value_of(name: str) -> str:
        value = lookup(name)
        if value is None:
            raise TemplateError(f"unknown macro name \"{name}\" in expansion request")
        return "".join(c if c in allowed else "_" for c in value)

    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        ch = template[i]
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if i + 1 < n and template[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if i + 1 < n and template[i + 1] in "{(":
            close_ch = "}" if template[i + 1] == "{" else ")"
            depth, j = 1, i + 2
            while j < n and depth:
                if template[j] == template[i + 1]:
                    depth += 1
                elif template[j] == close_ch:
                    depth -= 1
                j += 1
            if depth:
                raise TemplateError("unbalanced brace")
            inner = template[i + 2:j - 1]
            k = 0
            while k < len(inner) and (inner[k].isalnum() or inner[k] == "_"):
                k += 1
            name, rest = inner[:k], inner[k:]
            if not name:
                raise TemplateError("empty macro name")
            if not rest:
                out.append(value_of(name))
            elif rest[0] in "?:":
                value = lookup(name)
                if value is None:
                    raise TemplateError(f"unknown macro name \"{name}\"")
                if (rest[0] == "?") == bool(value):
                    out.append(expand_rbl_template(rest[1:], lookup, allowed))
            else:
                raise TemplateError(f"bad macro: {inner}")
            i = j
            continue
        j = i + 1
        while j < n and (template[j].isalnum() or template[j] == "_"):
            j += 1
        if j == i + 1:
            raise TemplateError("empty macro name")
        out.append(value_of(template[i + 1:j]))
        i = j
    return "".join(out)



# -- the DNSXL restrictions of SmtpdSession ----------------------------------------------------


class DnsxlChecks(SessionState):
    """reject_rbl_client & co. for SmtpdSession (a mixin)."""

    # -- DNS lists

    def _dnsxl(self, low: str, zone: str, reply_name: str, reply_class: str) -> int:
        f = self.facts
        if low in ("reject_rbl_client", "reject_rbl"):
            return self._reject_rbl_addr(zone, f.addr, NAME_CLIENT)
        if low == "permit_dnswl_client":
            if not self._dnswl_allowed():
                return DUNNO
            answer = self.dnsxl.find_addr(zone, f.addr)
            return self._dnswl_result(low, answer, f.addr, NAME_CLIENT)
        if low == "permit_rhswl_client":
            if f.name.lower() == "unknown" or not self._dnswl_allowed():
                return DUNNO
            answer = self.dnsxl.find_domain(zone, f.name)
            return self._dnswl_result(low, answer, f.name, NAME_CLIENT)
        target: str | None
        if low == "reject_rhsbl_client":
            target = f.name if f.name.lower() != "unknown" else None
            klass = NAME_CLIENT
        elif low == "reject_rhsbl_reverse_client":
            target = f.reverse_name if f.reverse_name.lower() != "unknown" else None
            klass = NAME_REV_CLIENT
        elif low == "reject_rhsbl_helo":
            target, klass = self._helo_name(), NAME_HELO
        elif low == "reject_rhsbl_sender":
            target, klass = self.sender or None, NAME_SENDER
        else:
            target, klass = self.recipient, NAME_RECIPIENT
        if target is None:
            return DUNNO
        answer = self.dnsxl.find_domain(zone, target)
        if not isinstance(answer, DnsxlHit):
            return DUNNO
        return self._rbl_reply(answer, zone, target, klass)

    def _dnswl_allowed(self) -> bool:
        """Safety: never allow-list an unauthorized recipient."""
        if self.where == STAGE_RCPT and self.recipient is not None:
            return self._permit_auth_destination(self.recipient) == OK
        return True

    def _dnswl_result(self, low: str, answer: object, what: str, klass: str) -> int:
        if answer is None:
            return DUNNO
        if isinstance(answer, DnsxlSoft):
            self._defer_if_reject_(450, "4.7.1", f"<{what}>: {klass} rejected: "
                                   "Service unavailable")
            return DUNNO
        return self._permit(low, NAME_CLIENT, self.namaddr)

    def _reject_rbl_addr(self, zone: str, addr: str, klass: str) -> int:
        answer = self.dnsxl.find_addr(zone, addr)
        if not isinstance(answer, DnsxlHit):
            return DUNNO
        return self._rbl_reply(answer, zone, addr, klass)

    def _rbl_reply(self, hit: DnsxlHit, zone: str, what: str, klass: str) -> int:
        c = self.checks
        template = None
        if c.rbl_reply_maps is not None:
            try:
                template = c.rbl_reply_maps.get(zone)
            except TableRetry:
                self._server_error()
        domain = zone.split("=", 1)[0]
        values = {"rbl_code": str(c.p["maps_rbl_reject_code"]), "rbl_domain": domain,
                  "rbl_reason": hit.txt or "", "rbl_txt": hit.txt or "", "rbl_what": what,
                  "rbl_class": klass}

        def lookup(name: str) -> str | None:
            if name in values:
                return values[name]
            return self._expand_lookup(name)

        while True:
            source = template if template is not None else c.default_rbl_reply
            try:
                why = expand_rbl_template(source, lookup, c.expansion_filter)
                break
            except TemplateError:
                if template is None:
                    raise ConfigError(f"rbl_reject_reply: bad default rbl reply template: "
                                      f"{c.default_rbl_reply}") from None
                self._warn(f"rbl_reject_reply: bad rbl reply template for domain {zone}: "
                           f"{template}")
                template = None
        if not re.match(r"^[45]\d\d ", why):
            self._warn(f"rbl response code configuration error: {why}")
            return self._reject(ERR_POLICY, 450, "4.7.1", "Service unavailable")
        dsn, text = dsn_split("4.7.1", why[4:])
        return self._reject(ERR_POLICY, int(why[:3]), smtpd_dsn_fix(dsn, klass),
                            text or "Service unavailable")

    def _expand_lookup(self, name: str) -> str | None:
        """smtpd_expand_lookup(): the session attributes a template may name."""
        f = self.facts
        simple = {"client": self.namaddr, "client_address": f.addr, "client_name": f.name,
                  "reverse_client_name": f.reverse_name,
                  "helo_name": self._helo_name() or ""}
        if name in simple:
            return simple[name]
        for prefix, addr in (("sender", self.sender), ("recipient", self.recipient)):
            if name.startswith(prefix):
                suffix = name[len(prefix):]
                if addr is None:
                    return "" if suffix in ("", "_name", "_domain") else None
                at = addr.rfind("@")
                if suffix == "":
                    return addr or "<>"
                if suffix == "_name":
                    return (addr[:at] if at >= 0 else addr) if addr else "<>"
                if suffix == "_domain":
                    return addr[at + 1:] if addr and at >= 0 else ""
                return None
        return None


__all__ = [
    "SOFT",
    "DnsxlCache",
    "DnsxlHit",
    "TemplateError",
    "expand_rbl_template",
    "reverse_address",
    "unescape_filter",
]

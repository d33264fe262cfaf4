"""Pieces of smtpd's access control that stand on their own.

* :class:`HostAddrList` — Postfix's namadr_list (``mynetworks``,
  ``permit_mx_backup_networks``): a client matches by host name (and
  parent domains) or by address, network (``192.0.2.0/24``,
  ``[2001:db8::]/32``), ``type:table`` (name, parents, then address),
  ``/file/name`` (more patterns), ``!pattern`` (negation); the first
  pattern that matches decides.
* :func:`parse_ip_match` / :func:`ip_match` — the ``=127.0.0.[2;4..6]``
  filters of the DNSBL restrictions (Postfix's ip_match.c).
* :func:`smtpd_dsn_fix` — sender and recipient enhanced status codes
  (smtpd_dsn_fix.c), and the reply class names smtpd_check.c uses.
* :func:`is_header` — the ``PREPEND`` sanity check (is_header.c).

Everything here is pure; table lookups may raise TableRetry.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ..config.errors import ConfigError
from ..config.values import split_list
from ..tables.base import OpenFlags, Table, TableError, TableRetry
from ..tables.search import strip_extension
from . import address as A
from .dnsquery import DnsTempFail
from .rewrite import UnavailableTable, match_list_items

log = logging.getLogger("hato.smtpd_check")

# Restriction results, error classes and stages shared by the smtpd_* modules.
DUNNO, OK, REJECT = 0, 1, 2

# Error classes (mail_error.h): configuration and resource errors are never
# turned into warnings by warn_if_reject.
ERR_POLICY, ERR_PROTOCOL, ERR_SOFTWARE, ERR_RESOURCE, ERR_BOUNCE, ERR_DATA = range(6)

SEPARATORS = ", \t\r\n"
MAX_RECURSION = 100

STAGE_CONNECT = "CONNECT"
STAGE_HELO = "HELO"
STAGE_EHLO = "EHLO"
STAGE_MAIL = "MAIL"
STAGE_RCPT = "RCPT"
STAGE_DATA = "DATA"
STAGE_EOD = "END-OF-MESSAGE"
STAGE_ETRN = "ETRN"
STAGE_VRFY = "VRFY"

DEFER_IF_PERMIT_ACT = 1

# smtpd_check_int.h: what is being rejected, as the reply text names it.
NAME_CLIENT = "Client host"
NAME_REV_CLIENT = "Unverified Client host"
NAME_CCERT = "Client certificate"
NAME_SASL_USER = "SASL login name"
NAME_HELO = "Helo command"
NAME_SENDER = "Sender address"
NAME_RECIPIENT = "Recipient address"
NAME_ETRN = "Etrn command"
NAME_DATA = "Data command"
NAME_EOD = "End-of-data"

SND_DSN = "4.1.0"

_DSN_MAP = {
    # micro code: (sender dsn, recipient dsn)
    "1": (SND_DSN, "4.1.1"),
    "2": ("4.1.8", "4.1.2"),
    "3": ("4.1.7", "4.1.3"),
    "4": (SND_DSN, "4.1.4"),
    "5": ("4.1.0", "4.1.5"),
    "6": (SND_DSN, "4.1.6"),
    "7": ("4.1.7", "4.1.3"),
    "8": ("4.1.8", "4.1.2"),
}

_DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:[ \t]+|$)")


def dsn_split(default: str, text: str) -> tuple[str, str]:
    """Postfix's dsn_split(): a leading ``X.Y.Z`` status (and the blanks
    after it) is taken off *text*; without one, *default*."""
    m = _DSN_RE.match(text)
    if m:
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}", text[m.end():]
    return default, text


def dsn_valid(dsn: str) -> bool:
    return bool(re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", dsn))


def smtpd_dsn_fix(status: str, reply_class: str) -> str:
    """An address-specific status (X.1.Y) made right for what is rejected:
    a recipient status turned into the sender one and back; for anything
    that is not an address, X.0.0. The first digit is fixed later."""
    if len(status) >= 5 and status[0].isdigit() and status[1:4] == ".1.":
        micro = status[4:]
        sender_dsn, rcpt_dsn = _DSN_MAP.get(micro, ("4.1.0", "4.1.0"))
        if reply_class == NAME_SENDER:
            return sender_dsn
        if reply_class == NAME_RECIPIENT:
            return rcpt_dsn
        return "4.0.0"
    return status


_HEADER_NAME = re.compile(r"^[\x21-\x39\x3b-\x7e]+[ \t]*:")


def is_header(text: str) -> bool:
    """Does *text* start with ``Name:``?"""
    return bool(_HEADER_NAME.match(text))


# -- DNSBL reply filters (ip_match.c) ---------------------------------------------------------

IpPattern = tuple[tuple[tuple[int, int], ...], ...]


def parse_ip_match(pattern: str) -> IpPattern:
    """``127.0.0.2`` or ``127.0.[0..3].[2;4;6..8]``: four octets, each a
    number or a bracketed ``;``-separated list of numbers and
    ``low..high`` ranges. ConfigError when it does not parse."""
    octets: list[tuple[tuple[int, int], ...]] = []
    i, n = 0, len(pattern)

    def number(j: int) -> tuple[int, int]:
        k = j
        while k < n and pattern[k].isdigit():
            k += 1
        if k == j or int(pattern[j:k]) > 255:
            raise ConfigError(f"bad address pattern: \"{pattern}\"")
        return int(pattern[j:k]), k

    while True:
        if i < n and pattern[i] == "[":
            i += 1
            ranges: list[tuple[int, int]] = []
            while True:
                lo, i = number(i)
                hi = lo
                if pattern.startswith("..", i):
                    hi, i = number(i + 2)
                    if hi < lo:
                        raise ConfigError(f"bad address pattern: \"{pattern}\"")
                ranges.append((lo, hi))
                if i < n and pattern[i] == ";":
                    i += 1
                    continue
                if i < n and pattern[i] == "]":
                    i += 1
                    break
                raise ConfigError(f"bad address pattern: \"{pattern}\"")
            octets.append(tuple(ranges))
        else:
            value, i = number(i)
            octets.append(((value, value),))
        if len(octets) == 4:
            break
        if i >= n or pattern[i] != ".":
            raise ConfigError(f"bad address pattern: \"{pattern}\"")
        i += 1
    if i != n:
        raise ConfigError(f"bad address pattern: \"{pattern}\"")
    return tuple(octets)


def ip_match(pattern: IpPattern, address: str) -> bool:
    parts = address.split(".")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return False
    return all(any(lo <= int(p) <= hi for lo, hi in ranges)
               for p, ranges in zip(parts, pattern))


# -- namadr_list ------------------------------------------------------------------------------

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1024)
def _ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """*addr* (a client address, ``fe80::1%eth0`` too) as an IP address,
    None when it is not one; kept, since every check of a session asks
    again for the same few clients."""
    try:
        return ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return None


class HostAddrList:
    """Postfix's namadr_list: match a client (name, address)."""

    def __init__(self, patterns: Iterable[str], *, title: str = "", parent: bool = True,
                 flags: OpenFlags | None = None):
        self.title = title
        self.parent = parent
        self.flags = flags or OpenFlags()
        self.items: list[tuple[bool, str, object]] = []  # (positive, kind, pattern)
        self._tables: list[Table] = []
        self._parse(list(patterns), True)

    def _parse(self, patterns: list[str], match: bool) -> None:
        for positive, item in match_list_items(patterns, self.title, match):
            if item[0] != "[" and ":" in item and not _looks_like_address(item):
                from ..tables.registry import open_table
                try:
                    table: Table = open_table(item, self.flags)
                except TableError as err:
                    table = UnavailableTable(item, err.message)
                self._tables.append(table)
                self.items.append((positive, "table", table))
                continue
            net = _parse_network(item)
            if net is not None:
                self.items.append((positive, "net", net))
                continue
            if item.startswith("[") or "/" in item:
                raise ConfigError(f"{self.title}: bad net/mask pattern: \"{item}\"")
            self.items.append((positive, "host", item.lower()))

    def match(self, name: str, addr: str) -> bool:
        """First matching pattern decides; TableRetry propagates."""
        name = name.lower()
        ip = _ip(addr)
        for positive, kind, pattern in self.items:
            if kind == "net":
                net: Any = pattern
                found = ip is not None and ip.version == net.version and ip in net
            elif kind == "host":
                found = self._match_host(pattern, name)  # type: ignore[arg-type]
            else:
                found = self._match_table(pattern, name, addr)  # type: ignore[arg-type]
            if found:
                return positive
        return False

    def _match_host(self, pattern: str, name: str) -> bool:
        if name == pattern:
            return True
        cut = len(name) - len(pattern)
        if cut <= 0 or not name.endswith(pattern):
            return False
        if pattern.startswith("."):
            return True
        return self.parent and name[cut - 1] == "."

    def _match_table(self, table: Table, name: str, addr: str) -> bool:
        if name and table.get(name) is not None:
            return True
        if name and not table.pattern_table:
            entry = name
            while True:
                dot = entry.find(".", 1)
                if dot < 0:
                    break
                entry = entry[dot + 1:] if self.parent else entry[dot:]
                if table.get(entry) is not None:
                    return True
        return bool(addr) and table.get(addr) is not None

    def close(self) -> None:
        for table in self._tables:
            table.close()


def _looks_like_address(item: str) -> bool:
    base = item.split("/", 1)[0]
    try:
        ipaddress.ip_address(base)
    except ValueError:
        return False
    return True


def _parse_network(item: str) -> _Net | None:
    text = item
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return None
        text = text[1:close] + text[close + 1:]
    base, _, mask = text.partition("/")
    try:
        ip = ipaddress.ip_address(base)
    except ValueError:
        return None
    if not mask:
        return ipaddress.ip_network(ip)
    if not mask.isdigit():
        raise ConfigError(f"bad net/mask pattern: \"{item}\"")
    net = ipaddress.ip_network(f"{ip}/{mask}", strict=False)
    if net.network_address != ip:
        # Postfix: "non-null host address bits in ..., perhaps you should use ... instead"
        raise ConfigError(f"non-null host address bits in \"{item}\", perhaps you should "
                          f"use \"{net}\" instead")
    return net


def client_name_valid(name: str) -> bool:
    return A.valid_hostname(name)



# -- access(5) tables in restrictions (check_access, check_table_result) ------------------------


class SessionState:
    """What the SmtpdSession mixins (AccessTableChecks, AddressChecks,
    DnsxlChecks) use of the session, declared for type checkers."""

    if TYPE_CHECKING:
        checks: Any
        facts: Any
        dnsxl: Any
        actions: Any
        sender: str | None
        recipient: str | None
        etrn_name: str | None
        where: str
        recursion: int
        warn_if_reject: int
        discard: bool
        rcpt_count: int
        sender_rcptmap_checked: bool
        recipient_rcptmap_checked: bool
        _resolved: dict[str, Any]
        _rewritten: dict[str, str]

        @property
        def namaddr(self) -> str: ...

        _reject: Callable[[int, int, str, str], int]
        _generic: Callable[[list[str], str, str, str | None], int]
        _permit: Callable[..., int]
        _log: Callable[[str, str], None]
        _warn: Callable[[str], None]
        _server_error: Callable[[], None]
        _dict_retry: Callable[[str], None]
        _defer_if_reject_: Callable[[int, str, str], int]
        _defer_if_permit_: Callable[[int, int, str, str], int]
        _helo_name: Callable[[], str | None]
        _resolve: Callable[[str], Any]
        _permit_auth_destination: Callable[[str], int]
        _check_addr: Callable[..., tuple[int, bool]]


class AccessTableChecks(SessionState):
    """The access table half of SmtpdSession (a mixin: it uses the
    session's state, _reject, _generic and friends)."""

    # -- access tables (check_access and friends)

    def _lookup(self, table: Table, key: str, partial: bool) -> str | None:
        if not key or (partial and table.pattern_table):
            return None
        try:
            return table.get(key)
        except TableRetry as err:
            log.debug("%s: %s", table.name, err)
            self._warn(f"{table.name}: table lookup problem")
            return "451 4.3.5 Server configuration error"

    def _check_access(self, spec: str, key: str, partial: bool, reply_name: str,
                      reply_class: str, def_acl: str | None) -> tuple[int, bool]:
        value = self._lookup(self.checks.tables[spec], key, partial)
        if value is None:
            return DUNNO, False
        return self._table_result(spec, value, key, reply_name, reply_class, def_acl), True

    def _check_domain(self, spec: str, domain: str, partial: bool, reply_name: str,
                      reply_class: str, def_acl: str | None) -> tuple[int, bool]:
        name = domain
        maybe_numerical = True
        while name:
            status, found = self._check_access(spec, name, partial, reply_name, reply_class,
                                               def_acl)
            if found:
                return status, True
            if maybe_numerical:
                maybe_numerical = A.valid_hostaddr(domain)
                if maybe_numerical:
                    break
            dot = name.find(".", 1)
            if dot < 0:
                break
            name = name[dot + 1:] if self.checks.access_parent else name[dot:]
            partial = True
        return DUNNO, False

    def _check_addr(self, spec: str, address: str, partial: bool, reply_name: str,
                    reply_class: str, def_acl: str | None) -> tuple[int, bool]:
        delim = ":" if ":" in address else "."
        addr = address
        while True:
            status, found = self._check_access(spec, addr, partial, reply_name, reply_class,
                                               def_acl)
            if found:
                return status, True
            partial = True
            cut = addr.rfind(delim)
            if cut < 0:
                return DUNNO, False
            addr = addr[:cut]

    def _check_namadr(self, spec: str, name: str, addr: str, reply_name: str,
                      reply_class: str, def_acl: str | None) -> int:
        status, found = self._check_domain(spec, name, False, reply_name, reply_class, def_acl)
        if status != DUNNO or found:
            return status
        status, found = self._check_addr(spec, addr, False, reply_name, reply_class, def_acl)
        return status

    def _check_mail_access(self, spec: str, addr: str, reply_name: str, reply_class: str,
                           def_acl: str | None) -> int:
        res = self._resolve(addr)
        recipient = res.recipient.lower()
        at = recipient.rfind("@")
        if at < 0:
            self._warn(f"check_mail_access: no @domain in address: {recipient}")
            return DUNNO
        domain = recipient[at + 1:]
        bare = None
        if self.checks.delimiter:
            stripped = strip_extension(addr, self.checks.delimiter,
                                       owner_request_special=self.checks.owner_request_special,
                                       double_bounce_sender=self.checks.double_bounce)
            bare = stripped[0] if stripped is not None else None
        suspicious = (not self.checks.allow_untrusted_routing and res.routed
                      and reply_class == NAME_RECIPIENT)

        def done(status: int) -> int:
            return DUNNO if status == OK and suspicious else status

        status, found = self._check_access(spec, recipient, False, reply_name, reply_class,
                                           def_acl)
        if status != DUNNO or found:
            return done(status)
        if bare is not None:
            status, found = self._check_access(spec, bare, True, reply_name, reply_class,
                                               def_acl)
            if status != DUNNO or found:
                return done(status)
        status, found = self._check_domain(spec, domain, True, reply_name, reply_class,
                                           def_acl)
        if status != DUNNO or found:
            return done(status)
        status, found = self._check_access(spec, recipient[:at + 1], True, reply_name,
                                           reply_class, def_acl)
        if status != DUNNO or found:
            return done(status)
        if bare is not None:
            bare_at = bare.rfind("@")
            status, found = self._check_access(spec, bare[:bare_at + 1] if bare_at >= 0
                                               else bare, True, reply_name, reply_class,
                                               def_acl)
            if status != DUNNO or found:
                return done(status)
        return DUNNO

    def _map_command(self, low: str, spec: str, reply_name: str, reply_class: str,
                     def_acl: str | None) -> int:
        f = self.facts
        if low == "check_client_access":
            return self._check_namadr(spec, f.name, f.addr, self.namaddr, NAME_CLIENT, def_acl)
        if low == "check_reverse_client_hostname_access":
            status = self._check_namadr(spec, f.reverse_name, f.addr, self.namaddr,
                                        NAME_REV_CLIENT, def_acl)
            self._forbid_allowlist(low, status, f.reverse_name)
            return status
        if low == "check_ccert_access":
            if f.tls_active and f.tls_ccert_fingerprint:
                for fprint in (f.tls_ccert_fingerprint, f.tls_ccert_pkey_fingerprint):
                    if not fprint:
                        continue
                    status, _ = self._check_access(spec, fprint, False,
                                                   f.tls_ccert_subject, NAME_CCERT, def_acl)
                    if status != DUNNO:
                        return status
            return DUNNO
        if low == "check_sasl_access":
            if not self.checks.sasl_enable:
                self._warn(f"restriction `{low}' ignored: no SASL support")
                return DUNNO
            if f.sasl_username:
                sane = "".join(ch if ch.isprintable() else "_" for ch in f.sasl_username)
                status, _ = self._check_access(spec, f.sasl_username, False, sane,
                                               NAME_SASL_USER, def_acl)
                return status
            return DUNNO
        if low == "check_helo_access":
            helo = self._helo_name()
            if helo is not None:
                return self._check_domain(spec, helo, False, helo, NAME_HELO, def_acl)[0]
            return DUNNO
        if low == "check_sender_access":
            if self.sender:
                return self._check_mail_access(spec, self.sender, self.sender, NAME_SENDER,
                                               def_acl)
            if self.sender == "":
                return self._check_access(spec, self.checks.null_key, False, "",
                                          NAME_SENDER, def_acl)[0]
            return DUNNO
        if low == "check_recipient_access":
            if self.recipient is not None:
                return self._check_mail_access(spec, self.recipient, self.recipient,
                                               NAME_RECIPIENT, def_acl)
            return DUNNO
        if low == "check_etrn_access":
            if self.etrn_name is not None:
                return self._check_domain(spec, self.etrn_name, False, self.etrn_name,
                                          NAME_ETRN, def_acl)[0]
            return DUNNO
        # check_{client,reverse_client,helo,sender,recipient}_{mx,ns}_access
        m = re.fullmatch(r"check_(client|reverse_client|helo|sender|recipient)_(mx|ns)_access",
                         low)
        if m is None:  # pragma: no cover - the name table and this code disagree
            self._server_error()
            return DUNNO
        what, rtype = m.group(1), m.group(2).upper()
        target: str | None
        if what == "client":
            target = f.name if f.name.lower() != "unknown" else None
            rname, rclass = self.namaddr, NAME_CLIENT
        elif what == "reverse_client":
            target = f.reverse_name if f.reverse_name.lower() != "unknown" else None
            rname, rclass = self.namaddr, NAME_REV_CLIENT
        elif what == "helo":
            target = self._helo_name()
            rname, rclass = target or "", NAME_HELO
        elif what == "sender":
            target = self.sender or None
            rname, rclass = target or "", NAME_SENDER
        else:
            target = self.recipient or None
            rname, rclass = target or "", NAME_RECIPIENT
        if target is None:
            return DUNNO
        status = self._check_server(spec, target, rtype, rname, rclass, def_acl)
        self._forbid_allowlist(low, status, target)
        return status

    def _forbid_allowlist(self, name: str, status: int, target: str) -> None:
        if status == OK:
            self._warn(f"restriction {name} returns OK for {target}")
            self._warn("this is not allowed for security reasons")
            self._warn("use DUNNO instead of OK if you want to make an exception")
            self._server_error()

    def _check_server(self, spec: str, name: str, rtype: str, reply_name: str,
                      reply_class: str, def_acl: str | None) -> int:
        """check_server_access(): the MX or NS hosts of a domain, by name then address."""
        at = name.rfind("@")
        domain = name[at + 1:] if at >= 0 else name
        if domain.startswith("["):
            if rtype != "MX" or not domain.endswith("]"):
                return DUNNO
            bare = A.mailhost_addr(domain)
            if bare is None:
                return DUNNO
            return self._check_addr(spec, bare, False, reply_name, reply_class, def_acl)[0]
        dns = self.checks.dns
        try:
            if rtype == "MX":
                servers = [host for _, host in dns.mx(domain)] or [domain]
            else:
                servers = dns.query(domain, "NS")
                parent = domain
                while not servers:
                    dot = parent.find(".")
                    if dot < 0 or not parent[dot + 1:]:
                        break
                    parent = parent[dot + 1:]
                    servers = dns.query(parent, "NS")
        except DnsTempFail as err:
            self._warn(f"Unable to look up {rtype} host for {domain}: {err}")
            return DUNNO
        if not servers:
            self._warn(f"Unable to look up {rtype} host for {domain}: Host not found")
            return DUNNO
        for server in servers:
            server = server.rstrip(".")
            if A.valid_hostaddr(server):
                status, found = self._check_addr(spec, server, False, reply_name, reply_class,
                                                 def_acl)
                if status != DUNNO or found:
                    return status
                continue
            status, found = self._check_domain(spec, server, False, reply_name, reply_class,
                                               def_acl)
            if status != DUNNO or found:
                return status
            try:
                addrs = dns.query(server, "A") + dns.query(server, "AAAA")
            except DnsTempFail as err:
                self._warn(f"Unable to look up {rtype} host {server} for {reply_class} "
                           f"{reply_name}: {err}")
                continue
            for addr in addrs:
                status, found = self._check_addr(spec, addr, False, reply_name, reply_class,
                                                 def_acl)
                if status != DUNNO or found:
                    return status
        return DUNNO

    # -- check_table_result: what an access(5) value means

    def _table_result(self, table: str, value: str, datum: str, reply_name: str,
                      reply_class: str, def_acl: str | None) -> int:
        c = self.checks
        cut = len(value)
        for j, ch in enumerate(value):
            if ch in " \t":
                cut = j
                break
        cmd = value[:cut]
        text = value[cut:].lstrip(" \t\r\n\f\v")
        up = cmd.upper()
        if up == "DUNNO":
            return DUNNO
        if up == "REJECT":
            dsn, text = dsn_split("5.7.1", text)
            return self._reject(ERR_POLICY, c.p["access_map_reject_code"],
                                smtpd_dsn_fix(dsn, reply_class),
                                f"<{reply_name}>: {reply_class} rejected: "
                                f"{text or 'Access denied'}")
        if up == "DEFER":
            dsn, text = dsn_split("4.7.1", text)
            return self._reject(ERR_POLICY, c.p["access_map_defer_code"],
                                smtpd_dsn_fix(dsn, reply_class),
                                f"<{reply_name}>: {reply_class} rejected: "
                                f"{text or 'Access denied'}")
        if up == "WARN":
            self._log("warn", text)
            return DUNNO
        if up == "INFO":
            self._log("info", text)
            return DUNNO
        if up == "FILTER":
            if not self._can_delegate(table, "FILTER"):
                return DUNNO
            if not text:
                self._warn(f"access table {table} entry \"{datum}\" has FILTER entry "
                           "without value")
                return DUNNO
            if ":" not in text:
                self._warn(f"access table {table} entry \"{datum}\" requires "
                           "transport:destination")
                return DUNNO
            self._log("filter", f"<{reply_name}>: {reply_class} triggers FILTER {text}")
            self.actions.filter = text
            return DUNNO
        if up == "HOLD":
            if not self._can_delegate(table, "HOLD") or self.actions.hold is not None:
                return DUNNO
            reason = f"<{reply_name}>: {reply_class} {text or 'triggers HOLD action'}"
            self._log("hold", reason)
            self.actions.hold = reason
            return DUNNO
        if up == "DISCARD":
            if not self._can_delegate(table, "DISCARD"):
                return DUNNO
            reason = f"<{reply_name}>: {reply_class} {text or 'triggers DISCARD action'}"
            self._log("discard", reason)
            self.actions.discard = reason
            self.discard = True
            return self._permit(cmd, reply_class, reply_name, f"from {table}")
        if up in ("REDIRECT", "BCC"):
            if not self._can_delegate(table, up):
                return DUNNO
            if "@" not in text:
                self._warn(f"access table {table} entry \"{datum}\" requires user@domain "
                           "target")
                return DUNNO
            self._log(up.lower(), f"<{reply_name}>: {reply_class} triggers {up} {text}")
            if up == "REDIRECT":
                self.actions.redirect = text
            else:
                self.actions.bcc.append(text)
            return DUNNO
        if up == "DEFER_IF_PERMIT":
            dsn, text = dsn_split("4.7.1", text)
            return self._defer_if_permit_(DEFER_IF_PERMIT_ACT, c.p["access_map_defer_code"],
                                          smtpd_dsn_fix(dsn, reply_class),
                                          f"<{reply_name}>: {reply_class} rejected: "
                                          f"{text or 'Service unavailable'}")
        if up == "DEFER_IF_REJECT":
            dsn, text = dsn_split("4.7.1", text)
            self._defer_if_reject_(c.p["access_map_defer_code"],
                                   smtpd_dsn_fix(dsn, reply_class),
                                   f"<{reply_name}>: {reply_class} rejected: "
                                   f"{text or 'Service unavailable'}")
            return DUNNO
        if up == "PREPEND":
            if self.sender is None:
                self._not_in_client_helo(table, "PREPEND")
                return DUNNO
            if self.where == STAGE_EOD:
                self._warn(f"access table {table}: action PREPEND must be used before "
                           "smtpd_end_of_data_restrictions")
                return DUNNO
            if not text or not is_header(text):
                self._warn(f"access table {table} entry \"{datum}\" requires header: text")
                return DUNNO
            self.actions.prepend.append(text)
            return DUNNO
        if value.isdigit() or not value:
            return self._permit(cmd, reply_class, reply_name, f"from {table}")
        if (len(cmd) == 3 and text and cmd[0] in "45" and cmd[1].isdigit()
                and cmd[2].isdigit()):
            dsn, text = dsn_split(cmd[0] + ".7.1", text)
            return self._reject(ERR_POLICY, int(cmd), smtpd_dsn_fix(dsn, reply_class),
                                f"<{reply_name}>: {reply_class} rejected: "
                                f"{text or 'Access denied'}")
        if up in ("OK", "RELAY"):
            return self._permit(cmd, reply_class, reply_name, f"from {table}")
        if ":" in value:
            self._warn(f"access table {table} has entry with lookup table: {value}")
            self._warn("do not specify lookup tables inside SMTPD access maps")
            self._warn("define a restriction class and specify its name instead.")
            self._server_error()
        if self.recursion > MAX_RECURSION:
            self._warn(f"access table {table} entry {value} causes unreasonable recursion")
            self._server_error()
        restrictions = split_list(value, SEPARATORS)
        if not restrictions:
            self._warn(f"access table {table} entry {value} has empty value")
            return OK
        return self._generic(restrictions, reply_name, reply_class, def_acl)

    def _not_in_client_helo(self, table: str, action: str) -> None:
        self._warn(f"access table {table}: with smtpd_delay_reject=no, action {action} is "
                   "always skipped in Client host or Helo command restrictions")

    def _can_delegate(self, table: str, action: str) -> bool:
        if self.where == STAGE_ETRN:
            self._warn(f"access table {table}: action {action} is unavailable in "
                       "smtpd_etrn_restrictions")
            return False
        if self.sender is None:
            self._not_in_client_helo(table, action)
            return False
        return True


__all__ = [
    "NAME_CCERT",
    "NAME_CLIENT",
    "NAME_DATA",
    "NAME_EOD",
    "NAME_ETRN",
    "NAME_HELO",
    "NAME_RECIPIENT",
    "NAME_REV_CLIENT",
    "NAME_SASL_USER",
    "NAME_SENDER",
    "HostAddrList",
    "dsn_split",
    "dsn_valid",
    "ip_match",
    "is_header",
    "parse_ip_match",
    "smtpd_dsn_fix",
]

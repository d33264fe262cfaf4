"""Address resolution: what Postfix's trivial-rewrite "resolve" does.

:meth:`Resolver.resolve` maps a recipient to a :class:`Resolution`
``(transport, nexthop, recipient, flags)``, exactly as ``resolve.c`` and
ADDRESS_CLASS_README describe:

1. The address is stripped of every local domain (``$mydestination``,
   ``[address literals]`` of ``$inet_interfaces``/``$proxy_interfaces``),
   rewritten in the local context after each strip, so that
   ``user%host@localhost``, ``host!user@localhost`` and
   ``@route:user@host`` reach their real destination; a quoted local part
   with ``@``, ``%`` or ``!`` inside is cracked open when
   ``resolve_dequoted_address = yes``; an empty local part becomes
   ``$empty_address_recipient``; a bare name gets ``@$myhostname``.
2. The domain picks the address class: local (``$local_transport``, next
   hop the domain), virtual alias (``error:5.1.1 User unknown in virtual
   alias table``: the address should have been expanded by cleanup), virtual
   mailbox (``$virtual_transport``), relay (``$relay_transport``), or
   default (``$default_transport``, or sender_dependent_default_transport_maps).
   For relay and default, the next hop is the sender-dependent relayhost,
   else ``$relayhost``, else the domain. ``transport:nexthop`` in a
   ``*_transport`` parameter sets the next hop.
3. ``transport_maps`` override (except for the virtual alias class): the
   full address, the address without extension, the domain and its parents
   (``example.com`` or ``.example.com`` per parent_domain_matches_subdomains),
   then ``*``. ``transport:nexthop`` replaces both; ``transport`` alone
   resets the next hop to the domain (``error`` without text: "Address is
   undeliverable"); ``:nexthop`` keeps the transport; ``:`` changes nothing.
4. ``relocated_maps``: ``error:5.1.6 User has moved to ...``. A recipient
   starting with ``-`` is an error unless ``allow_min_user``.

An invalid domain (not a valid host name or ``[address]``) sets
:attr:`ResolveFlag.ERROR`. Table failures raise
:class:`~hato.tables.base.TableRetry`; the caller defers.

:class:`RecipientValidator` gives smtpd the facts of Postfix's
check_rcpt_maps(): is a recipient known in ``local_recipient_maps``,
``virtual_mailbox_maps`` or ``relay_recipient_maps`` for its class, with the
reply Postfix gives when it is not.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from enum import IntFlag

from ..config.settings import Settings
from ..tables.search import TableList, strip_extension
from . import address as A
from .rewrite import (
    AddressFinder,
    LocalDomains,
    MatchList,
    RewriteContext,
    Rewriter,
    RewriteRules,
    match_parent_style,
    open_maps,
    rewrite_tree,
)

log = logging.getLogger("hato.resolve")


class ResolveFlag(IntFlag):
    """Postfix's RESOLVE_FLAG_* and RESOLVE_CLASS_* bits."""

    FINAL = 1 << 0
    ROUTED = 1 << 1  # routing operators in the local part
    ERROR = 1 << 2  # bad address syntax: bounce
    FAIL = 1 << 3  # temporary failure: try again
    CLASS_LOCAL = 1 << 8
    CLASS_ALIAS = 1 << 9
    CLASS_VIRTUAL = 1 << 10
    CLASS_RELAY = 1 << 11
    CLASS_DEFAULT = 1 << 12


CLASS_MASK = (ResolveFlag.CLASS_LOCAL | ResolveFlag.CLASS_ALIAS | ResolveFlag.CLASS_VIRTUAL
              | ResolveFlag.CLASS_RELAY | ResolveFlag.CLASS_DEFAULT)
_CLASS_NAMES = {ResolveFlag.CLASS_LOCAL: "local", ResolveFlag.CLASS_ALIAS: "alias",
                ResolveFlag.CLASS_VIRTUAL: "virtual", ResolveFlag.CLASS_RELAY: "relay",
                ResolveFlag.CLASS_DEFAULT: "default"}

ERROR_TRANSPORT = "error"
RETRY_TRANSPORT = "retry"


#: how long Resolver.resolve() keeps its last answer (Postfix's resolve_clnt: 30 s)
LAST_RESOLUTION_TTL = 30.0


@dataclass(frozen=True)
class Resolution:
    transport: str
    nexthop: str
    recipient: str  # the final recipient, internal form
    flags: ResolveFlag

    @property
    def address_class(self) -> str:
        """local, alias, virtual, relay, default; unknown after a failure."""
        return _CLASS_NAMES.get(ResolveFlag(self.flags & CLASS_MASK), "unknown")

    @property
    def error(self) -> bool:
        return bool(self.flags & ResolveFlag.ERROR)

    @property
    def failed(self) -> bool:
        return bool(self.flags & ResolveFlag.FAIL)

    @property
    def routed(self) -> bool:
        return bool(self.flags & ResolveFlag.ROUTED)

    @property
    def final(self) -> bool:
        """Delivered here: local or virtual mailbox class."""
        return bool(self.flags & (ResolveFlag.CLASS_LOCAL | ResolveFlag.CLASS_VIRTUAL))


@dataclass(frozen=True)
class _Transports:
    local: tuple[str, str]
    virtual: tuple[str, str]
    relay: tuple[str, str]
    default: tuple[str, str]
    relayhost: str
    transport_maps: str
    sender_transport_maps: str
    sender_relayhost_maps: str


_NORMAL = _Transports(("local_transport", "local_transport"),
                      ("virtual_transport", "virtual_transport"),
                      ("relay_transport", "relay_transport"),
                      ("default_transport", "default_transport"), "relayhost", "transport_maps",
                      "sender_dependent_default_transport_maps",
                      "sender_dependent_relayhost_maps")
_VERIFY = _Transports(("address_verify_local_transport", "address_verify_local_transport"),
                      ("address_verify_virtual_transport", "address_verify_virtual_transport"),
                      ("address_verify_relay_transport", "address_verify_relay_transport"),
                      ("address_verify_default_transport", "address_verify_default_transport"),
                      "address_verify_relayhost", "address_verify_transport_maps",
                      "address_verify_sender_dependent_default_transport_maps",
                      "address_verify_sender_dependent_relayhost_maps")


class Resolver:
    """trivial-rewrite's resolver for one service, tables opened once.
    With *verify*, the ``address_verify_*`` transports and maps are used (the
    resolver of address verification probes)."""

    def __init__(self, settings: Settings, *, local_domains: LocalDomains | None = None,
                 verify: bool = False):
        p = _VERIFY if verify else _NORMAL
        self.settings = settings
        self._last: tuple[str, str, float, Resolution] | None = None  # see resolve()
        self.rules = RewriteRules.from_settings(settings)
        self.local = RewriteContext("local", settings.str("myorigin"), settings.str("mydomain"))
        self.local_domains = local_domains or LocalDomains(settings)
        self.finder = AddressFinder(settings, self.local_domains)
        self.myhostname = settings.str("myhostname")
        self.empty_address_recipient = settings.str("empty_address_recipient")
        self.resolve_dequoted = settings.bool("resolve_dequoted_address")
        self.resolve_null_domain = settings.bool("resolve_null_domain")
        self.resolve_numeric_domain = settings.bool("resolve_numeric_domain")
        self.allow_min_user = settings.bool("allow_min_user")
        self.show_table = settings.bool("show_user_unknown_table_name")
        self.helpful_warnings = settings.bool("helpful_warnings")
        self.delimiter = settings.str("recipient_delimiter")
        self.utf8 = settings.bool("smtputf8_enable")
        self.transports = {name: (param, settings.str(param)) for name, (param, _) in
                           (("local", p.local), ("virtual", p.virtual), ("relay", p.relay),
                            ("default", p.default))}
        self.relayhost = settings.str(p.relayhost)
        self.virtual_alias_domains = self._list(settings, "virtual_alias_domains")
        self.virtual_mailbox_domains = self._list(settings, "virtual_mailbox_domains")
        self.relay_domains = self._list(settings, "relay_domains", hostname=True)
        self.transport_maps = open_maps(settings, p.transport_maps)
        self.transport_parent = match_parent_style(settings, "transport_maps")
        self.sender_transport_maps = open_maps(settings, p.sender_transport_maps)
        self.sender_relayhost_maps = open_maps(settings, p.sender_relayhost_maps)
        self.relocated_maps = open_maps(settings, "relocated_maps")
        self.null_transport_key = settings.str("empty_address_default_transport_maps_lookup_key")
        self.null_relayhost_key = settings.str("empty_address_relayhost_maps_lookup_key")

    @staticmethod
    def _list(settings: Settings, name: str, *, hostname: bool = False) -> MatchList | None:
        if not settings.list(name):
            return None
        return MatchList.from_settings(settings, name, hostname=hostname)

    # -- stage 1: find the destination ---------------------------------------------------

    def _strip_local(self, address: str) -> tuple[str, bool] | None:
        """The resolver loop; (recipient, remote) or None after too many
        iterations (Postfix gives up and fails the lookup)."""
        tree = A.scan_addr(A.quote_822_local(address))
        saved_domain: A.Tok | None = None
        domain: A.Tok | None = None
        loop_max = len(address) + 100
        loop_count = -1
        while True:
            loop_count += 1
            if loop_count > loop_max:
                log.warning("resolve_addr: <%s>: giving up after %d iterations",
                            address, loop_count)
                return None
            tail = tree.tail
            # Strip a trailing dot, but not dot-dot or at-dot.
            if (tail is not None and tail.type == ord(".")
                    and A.rfind_type(tail, ord("@")) is not None
                    and tail.prev is not None and tail.prev.type not in (ord("."), ord("@"))):
                A.tok_sub_keep_before(tree, tail)
            # Strip a trailing @.
            if self.resolve_null_domain and tree.tail is not None \
                    and tree.tail.type == ord("@"):
                A.tok_sub_keep_before(tree, tree.tail)
            # Strip (and save) @domain if local.
            domain = A.rfind_type(tree.tail, ord("@"))
            if domain is not None:
                if domain.next is not None \
                        and not self.local_domains.is_local(A.internalize(domain.next)):
                    break
                A.tok_sub_keep_before(tree, domain)
                saved_domain = domain
                domain = None
            # Routing operators left: rewrite to canonical form and retry.
            if (A.rfind_type(tree.tail, ord("@")) is not None
                    or (self.rules.swap_bangpath and A.rfind_type(tree.tail, ord("!")))
                    or (self.rules.percent_hack and A.rfind_type(tree.tail, ord("%")))):
                rewrite_tree(tree, self.local, self.rules)
                continue
            # Crack open a quoted local part that has routing operators.
            head = tree.head
            if (self.resolve_dequoted and head is not None and head is tree.tail
                    and head.type == A.QSTRING):
                local = head.value
                oper = local.rfind("@")
                if oper < 0 and self.rules.percent_hack:
                    oper = local.rfind("%")
                if oper < 0 and self.rules.swap_bangpath:
                    oper = local.rfind("!")
                if oper >= 0:
                    op = local[oper]
                    if op == "%":
                        local = local[:oper] + "@" + local[oper + 1:]
                        op = "@"
                    text = local
                    if op == "@":
                        text = A.quote_822_local(text)
                    tree.head = A.scan(text)
                    tree.tail = A.last(tree.head) if tree.head is not None else None
                    rewrite_tree(tree, self.local, self.rules)
                    continue
            # An empty local part becomes the local MAILER-DAEMON.
            if (head is not None and head is tree.tail and head.type == A.QSTRING
                    and not head.value):
                tree.head = None
            if tree.head is None:
                tree.head = A.scan(self.empty_address_recipient)
                tree.tail = A.last(tree.head) if tree.head is not None else None
                continue
            # A bare name: re-resolve with @$myhostname.
            if domain is None and saved_domain is None:
                A.tok_sub_append(tree, A.Tok(ord("@")))
                host = A.scan(self.myhostname)
                if host is not None:
                    A.tok_sub_append(tree, host)
                continue
            domain = None
            break
        if domain is None:
            if saved_domain is not None:
                A.tok_sub_append(tree, saved_domain)
            else:
                A.tok_sub_append(tree, A.Tok(ord("@")))
                host = A.scan(self.myhostname)
                if host is not None:
                    A.tok_sub_append(tree, host)
        return A.internalize(tree.head), domain is not None

    # -- the whole resolution ------------------------------------------------------------

    def resolve(self, address: str, sender: str = "") -> Resolution:
        """Resolve an internal-form recipient address. As Postfix's
        resolve_clnt, the last answer is kept for 30 seconds: the checks of
        one RCPT and the delivery of one message ask for the same address
        several times (a failed lookup is not kept)."""
        last = self._last
        now = time.monotonic()
        if last is not None and last[0] == address and last[1] == sender and now < last[2]:
            return last[3]
        res = self._resolve(address, sender)
        if not res.failed:
            self._last = (address, sender, now + LAST_RESOLUTION_TTL, res)
        return res

    def _resolve(self, address: str, sender: str) -> Resolution:
        stripped = self._strip_local(address)
        if stripped is None:
            return Resolution("", "", address, ResolveFlag.FAIL)
        nextrcpt, remote = stripped
        flags = ResolveFlag(0)
        at = nextrcpt.rfind("@")
        rcpt_domain = nextrcpt[at + 1:]
        if rcpt_domain.startswith("["):
            if not A.valid_mailhost_literal(rcpt_domain):
                flags |= ResolveFlag.ERROR
        elif not A.valid_hostname(rcpt_domain, utf8=self.utf8):
            if self.resolve_numeric_domain and A.valid_hostaddr(rcpt_domain):
                nextrcpt = f"{nextrcpt[:at]}@[{rcpt_domain}]"
                rcpt_domain = f"[{rcpt_domain}]"
                if self.local_domains.is_local(rcpt_domain):
                    remote = False
            else:
                flags |= ResolveFlag.ERROR
        if flags & ResolveFlag.ERROR:
            return Resolution("", "", nextrcpt, flags | ResolveFlag.CLASS_DEFAULT)

        # Routing operators in the local part, recognised even when ! and %
        # are not routing operators here.
        cut = min((i for i in (nextrcpt.find(c) for c in "@!%") if i >= 0), default=-1)
        if nextrcpt[cut + 1:] != rcpt_domain:
            flags |= ResolveFlag.ROUTED

        blame = ""
        if remote:
            if self.virtual_alias_domains is not None \
                    and self.virtual_alias_domains.match(rcpt_domain):
                self._nag(rcpt_domain, "virtual_alias_domains",
                          (self.virtual_mailbox_domains, "virtual_mailbox_domains"),
                          (self.relay_domains, "relay_domains"))
                channel = ERROR_TRANSPORT
                nexthop = "5.1.1 User unknown" + (" in virtual alias table"
                                                  if self.show_table else "")
                flags |= ResolveFlag.CLASS_ALIAS
            elif self.virtual_mailbox_domains is not None \
                    and self.virtual_mailbox_domains.match(rcpt_domain):
                self._nag(rcpt_domain, "virtual_mailbox_domains",
                          (self.relay_domains, "relay_domains"))
                blame, channel = self.transports["virtual"]
                nexthop = rcpt_domain
                flags |= ResolveFlag.CLASS_VIRTUAL
            else:
                if self.relay_domains is not None and self.relay_domains.match(rcpt_domain):
                    blame, channel = self.transports["relay"]
                    flags |= ResolveFlag.CLASS_RELAY
                else:
                    blame, channel = self.transports["default"]
                    if self.sender_transport_maps is not None:
                        key = sender or self.null_transport_key
                        found = self.finder.find(self.sender_transport_maps, key)
                        if found is not None:
                            xport = found.value or "DUNNO"
                            if xport.upper() != "DUNNO":
                                channel = xport
                            blame = self.sender_transport_maps.title
                    flags |= ResolveFlag.CLASS_DEFAULT
                nexthop = ""
                if self.sender_relayhost_maps is not None:
                    key = sender or self.null_relayhost_key
                    found = self.finder.find(self.sender_relayhost_maps, key)
                    if found is not None:
                        relay = found.value or "DUNNO"
                        nexthop = rcpt_domain if relay.upper() == "DUNNO" else relay
                if not nexthop:
                    nexthop = self.relayhost or rcpt_domain
        else:
            self._nag(rcpt_domain, "mydestination",
                      (self.virtual_alias_domains, "virtual_alias_domains"),
                      (self.virtual_mailbox_domains, "virtual_mailbox_domains"))
            blame, channel = self.transports["local"]
            nexthop = rcpt_domain
            flags |= ResolveFlag.CLASS_LOCAL

        # transport:nexthop in main.cf sets the next hop.
        channel, colon, destination = channel.partition(":")
        if colon and destination:
            nexthop = destination
        if not channel:
            log.warning("file %s/main.cf: parameter %s: null transport is not allowed",
                        self.settings.str("config_directory"), blame)
            return Resolution("", "", nextrcpt, flags | ResolveFlag.FAIL)

        if self.transport_maps is not None and not flags & ResolveFlag.CLASS_ALIAS:
            entry = self.transport_lookup(nextrcpt, rcpt_domain)
            if entry is not None:
                channel, nexthop = _update_entry(entry, rcpt_domain, channel, nexthop)

        if self.relocated_maps is not None:
            moved = self.finder.find(self.relocated_maps, nextrcpt)
            if moved is not None:
                channel = ERROR_TRANSPORT
                nexthop = f"5.1.6 User has moved to {moved.value}"

        if not self.allow_min_user and nextrcpt.startswith("-"):
            flags |= ResolveFlag.ERROR
        return Resolution(channel, nexthop, nextrcpt, flags)

    def _nag(self, domain: str, listed: str, *others: tuple[MatchList | None, str]) -> None:
        if not self.helpful_warnings:
            return
        for lst, name in others:
            if lst is not None and lst.match(domain):
                log.warning("do not list domain %s in BOTH %s and %s", domain, listed, name)

    def transport_lookup(self, address: str, rcpt_domain: str) -> str | None:
        """transport_lookup(): the transport_maps value for an address: the
        full address (the only key pattern tables see besides ``*``), the
        address without extension, the domain and its parents, ``*``."""
        maps = self.transport_maps
        if maps is None or not address:
            return None
        value = maps.get(address)
        if value is not None:
            return value
        stripped = strip_extension(address, self.delimiter)
        if stripped is not None:
            value = maps.get(stripped[0], partial=True)
            if value is not None:
                return value
        at = address.rfind("@")
        name = address[at + 1:]
        while name:
            value = maps.get(name, partial=True)
            if value is not None:
                return value
            dot = name.find(".", 1)
            if dot < 0:
                break
            name = name[dot + 1:] if self.transport_parent else name[dot:]
        return maps.get("*")

    def class_of(self, domain: str) -> str:
        """The address class of a domain alone: local, alias, virtual,
        relay or default (resolve_class())."""
        if self.local_domains.is_local(domain):
            return "local"
        if self.virtual_alias_domains is not None and self.virtual_alias_domains.match(domain):
            return "alias"
        if self.virtual_mailbox_domains is not None \
                and self.virtual_mailbox_domains.match(domain):
            return "virtual"
        if self.relay_domains is not None and self.relay_domains.match(domain):
            return "relay"
        return "default"

    def close(self) -> None:
        for maps in (self.transport_maps, self.sender_transport_maps,
                     self.sender_relayhost_maps, self.relocated_maps):
            if maps is not None:
                maps.close()
        for lst in (self.virtual_alias_domains, self.virtual_mailbox_domains,
                    self.relay_domains):
            if lst is not None:
                lst.close()


def _update_entry(value: str, rcpt_domain: str, channel: str, nexthop: str) -> tuple[str, str]:
    """update_entry(): apply one transport table value."""
    new_channel, _, new_nexthop = value.partition(":")
    if not new_channel:  # :[nexthop]
        if new_nexthop:
            nexthop = new_nexthop
        return channel, nexthop
    if new_nexthop:
        return new_channel, new_nexthop
    if new_channel != ERROR_TRANSPORT:
        return new_channel, rcpt_domain
    return new_channel, "Address is undeliverable"


def parse_transport(value: str, rcpt_domain: str = "") -> tuple[str, str]:
    """A transport table value as (transport, nexthop) on its own, the way
    ``*`` entries are read: ``smtp:[mx]:25`` → (smtp, [mx]:25), ``error:`` →
    (error, Address is undeliverable), ``:[relay]`` → ("", [relay])."""
    return _update_entry(value, rcpt_domain, "", "")


# -- recipient validation (smtpd_check.c check_rcpt_maps) -----------------------------------

_DSN = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s+|$)")


def dsn_split(default: str, text: str) -> tuple[str, str]:
    """Postfix's dsn_split(): a leading ``X.Y.Z`` status, else *default*."""
    m = _DSN.match(text)
    if m:
        return f"{m.group(1)}.{m.group(2)}.{m.group(3)}", text[m.end():]
    return default, text


@dataclass(frozen=True)
class RecipientCheck:
    """The verdict on one address: ``known`` or a reject with Postfix's
    code, enhanced status and text (``User unknown in local recipient
    table``)."""

    known: bool
    resolution: Resolution
    code: int = 0
    dsn: str = ""
    text: str = ""

    def reply(self, address: str, reply_class: str = "Recipient address") -> str:
        """``550 5.1.1 <u@example.com>: Recipient address rejected: ...``"""
        return f"{self.code} {self.dsn} <{address}>: {reply_class} rejected: {self.text}"


class RecipientValidator:
    """What smtpd needs to reject unknown recipients (and senders, with
    reject_unlisted_sender): Postfix's check_rcpt_maps().

    An address that canonical_maps, recipient_canonical_maps (or, for a
    sender, sender_canonical_maps) or virtual_alias_maps know is accepted.
    An address that resolves to the ``error`` or ``retry`` transport is
    rejected with that transport's text. Otherwise the table of its class
    decides: ``local_recipient_maps`` (postmaster, MAILER-DAEMON and the
    double-bounce address are always known), ``virtual_mailbox_maps``,
    ``relay_recipient_maps``; an empty table parameter accepts everything.
    Lookup failures raise TableRetry (smtpd: 451 4.3.0 Temporary lookup
    failure)."""

    def __init__(self, settings: Settings, *, resolver: Resolver | None = None,
                 rewriter: Rewriter | None = None):
        self.settings = settings
        self.resolver = resolver or Resolver(settings)
        self.rewriter = rewriter
        self.finder = self.resolver.finder
        self.local_recipient_maps = open_maps(settings, "local_recipient_maps")
        self.virtual_mailbox_maps = open_maps(settings, "virtual_mailbox_maps")
        self.relay_recipient_maps = open_maps(settings, "relay_recipient_maps")
        if rewriter is not None:
            self.canonical_maps = rewriter.canonical_maps
            self.sender_canonical_maps = rewriter.sender_canonical_maps
            self.recipient_canonical_maps = rewriter.recipient_canonical_maps
            self.virtual_alias_maps = rewriter.virtual_alias_maps
            self._own_maps: list[TableList] = []
        else:
            self.canonical_maps = open_maps(settings, "canonical_maps")
            self.sender_canonical_maps = open_maps(settings, "sender_canonical_maps")
            self.recipient_canonical_maps = open_maps(settings, "recipient_canonical_maps")
            self.virtual_alias_maps = open_maps(settings, "virtual_alias_maps")
            self._own_maps = [m for m in (self.canonical_maps, self.sender_canonical_maps,
                                          self.recipient_canonical_maps,
                                          self.virtual_alias_maps) if m is not None]
        self.double_bounce = settings.str("double_bounce_sender")
        self.show_table = settings.bool("show_user_unknown_table_name")
        self.codes = {name: settings.int(name) for name in (
            "unknown_local_recipient_reject_code", "unknown_virtual_mailbox_reject_code",
            "unknown_relay_recipient_reject_code", "unknown_virtual_alias_reject_code")}
        self.luser_relay = settings.str("luser_relay")

    def _match(self, maps: TableList | None, address: str) -> bool:
        return maps is not None and self.finder.find(maps, address) is not None

    def is_known_local(self, address: str) -> bool:
        """Is *address* (user or user@local-domain) a local recipient per
        local_recipient_maps? An empty local_recipient_maps knows everyone,
        and so do the postmaster, MAILER-DAEMON and double-bounce names."""
        if self.local_recipient_maps is None:
            return True
        if "@" not in address:
            address = f"{address}@{self.resolver.myhostname}"
        local = A.split_address(address)[0].lower()
        if local in (self.double_bounce.lower(), "postmaster", "mailer-daemon"):
            return True
        return self._match(self.local_recipient_maps, address)

    def check(self, address: str, sender: str = "", *,
              reply_class: str = "Recipient address") -> RecipientCheck:
        is_sender = reply_class.lower().startswith("sender")
        res = self.resolver.resolve(address, sender)
        rcpt = res.recipient
        if (self._match(self.recipient_canonical_maps, rcpt)
                or (is_sender and self._match(self.sender_canonical_maps, rcpt))
                or self._match(self.canonical_maps, rcpt)
                or self._match(self.virtual_alias_maps, rcpt)):
            return RecipientCheck(True, res)
        if res.transport == ERROR_TRANSPORT:
            dsn, text = dsn_split("5.1.0" if is_sender else "5.1.1", res.nexthop)
            code = (self.codes["unknown_virtual_alias_reject_code"]
                    if res.flags & ResolveFlag.CLASS_ALIAS else 550)
            return RecipientCheck(False, res, code, _dsn_fix(dsn, is_sender), text)
        if res.transport == RETRY_TRANSPORT:
            dsn, text = dsn_split("4.1.0" if is_sender else "4.1.1", res.nexthop)
            return RecipientCheck(False, res, 450, _dsn_fix(dsn, is_sender), text)
        unknown_dsn = "5.1.0" if is_sender else "5.1.1"
        klass = res.flags & CLASS_MASK
        if klass == ResolveFlag.CLASS_LOCAL:
            if not self.is_known_local(rcpt):
                return RecipientCheck(False, res, self.codes["unknown_local_recipient_reject_code"],
                                      unknown_dsn, self._unknown("local recipient table"))
        elif klass == ResolveFlag.CLASS_VIRTUAL:
            if self.virtual_mailbox_maps is not None \
                    and not self._match(self.virtual_mailbox_maps, rcpt):
                return RecipientCheck(False, res,
                                      self.codes["unknown_virtual_mailbox_reject_code"],
                                      unknown_dsn, self._unknown("virtual mailbox table"))
        elif (klass == ResolveFlag.CLASS_RELAY and self.relay_recipient_maps is not None
              and not self._match(self.relay_recipient_maps, rcpt)):
            return RecipientCheck(False, res,
                                  self.codes["unknown_relay_recipient_reject_code"],
                                  unknown_dsn, self._unknown("relay recipient table"))
        return RecipientCheck(True, res)

    def _unknown(self, table: str) -> str:
        return "User unknown" + (f" in {table}" if self.show_table else "")

    def luser_relay_for(self, address: str) -> str | None:
        """The ``luser_relay`` destination for an unknown local recipient
        (as local(8) uses it), with ``$user``, ``$extension``, ``$local``,
        ``$domain``, ``$recipient`` and ``$recipient_delimiter`` expanded;
        None when luser_relay is empty."""
        if not self.luser_relay:
            return None
        local, domain = A.split_address(address)
        user, ext = local, ""
        split = strip_extension(f"{local}@x", self.resolver.delimiter)
        if split is not None:
            user = split[0][:-2]
            ext = split[1][1:]
        attrs = {"user": user, "extension": ext, "local": local, "domain": domain,
                 "recipient": address,
                 "recipient_delimiter": split[1][:1] if split is not None else ""}
        return local_expand(self.luser_relay, attrs)

    def close(self) -> None:
        for maps in (self.local_recipient_maps, self.virtual_mailbox_maps,
                     self.relay_recipient_maps, *self._own_maps):
            if maps is not None:
                maps.close()


def _dsn_fix(dsn: str, is_sender: bool) -> str:
    """smtpd_dsn_fix(): X.1.1 (bad destination mailbox) reads X.1.0 for a
    sender, and the other way round."""
    if is_sender and dsn.endswith(".1.1"):
        return dsn[:-1] + "0"
    return dsn


_EXPAND = re.compile(r"\$(?:(\$)|\{([A-Za-z0-9_]+)(?:([?:])(\{[^}]*\}|[^}]*))?\}|([A-Za-z0-9_]+))")


def local_expand(text: str, attrs: dict[str, str]) -> str:
    """local(8)'s $name expansion: ``$name``, ``${name}``, ``${name?text}``
    (text when the attribute is non-empty), ``${name:text}`` (when empty)."""
    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name = m.group(2) or m.group(5)
        value = attrs.get(name, "")
        op = m.group(3)
        if not op:
            return value
        alt = m.group(4) or ""
        if alt.startswith("{") and alt.endswith("}"):
            alt = alt[1:-1]
        alt = local_expand(alt, attrs)
        return alt if (op == "?") == bool(value) else ""
    return _EXPAND.sub(sub, text)


__all__ = ["CLASS_MASK", "RecipientCheck", "RecipientValidator", "Resolution", "ResolveFlag",
           "Resolver", "dsn_split", "local_expand", "parse_transport"]

"""smtpd's access restrictions as pure decisions: Postfix's smtpd_check.c.

Usage::

    checks = SmtpdChecks(settings, dns)          # once per service: tables opened
    sess = checks.session(ClientFacts(name="mx.example.org", addr="192.0.2.1"))
    sess.connect()        # smtpd_client_restrictions (only with smtpd_delay_reject = no)
    sess.helo("mx.example.org")
    sess.mail("a@example.org", size=None)
    sess.rcpt("b@example.com")    # with smtpd_delay_reject = yes: client, helo, sender,
                                  # then relay and recipient restrictions
    sess.data(rcpt_count=1); sess.end_of_data(size=1234)
    sess.reset()                  # RSET / end of transaction

Each call returns a :class:`Decision`: ``reply`` is None when the command may
proceed, else the :class:`~hato.proto.smtpd.Reply` to send; ``logs`` are the
lines Postfix would log (``reject``, ``reject_warning``, ``warn``, ``hold``,
``discard``, ``filter``, ``redirect``, ``bcc``, ``info``, ``permit`` — logged as
``NOQUEUE: ACTION: STAGE from NAME[ADDR]: TEXT; from=<..> to=<..> proto=..
helo=<..>``, see :meth:`LogEntry.format` — and ``warning`` for smtpd's own
``warning: TEXT`` lines). HOLD, DISCARD, FILTER, REDIRECT, BCC and PREPEND
from access tables accumulate in :attr:`SmtpdSession.actions` for the current
message.

Semantics follow Postfix 3.7: the first restriction that permits or rejects
ends a list; ``permit`` ends only its own stage; ``warn_if_reject`` turns the
next restriction's reject into a ``reject_warning`` log; ``defer_if_permit``
and ``defer_if_reject`` (and DNS temporary failures) turn a later permit or
reject into a 4xx; the recipient stage runs smtpd_relay_restrictions, then
smtpd_recipient_restrictions (the other way round with
smtpd_relay_before_recipient_restrictions = no), then the implicit
reject_unlisted_recipient. Access table lookup failures answer
``451 4.3.5 <name>: Class rejected: Server configuration error`` and other
lookup failures ``451 4.3.0 <name>: Temporary lookup failure``, as Postfix.

DNS answers come from the injected :class:`~hato.policy.dnsquery.DnsLookup`;
``check_policy_service`` calls the injected ``policy(service, attrs) ->
PolicyAnswer`` (:mod:`hato.policy.smtpd_policy`; none given: the service's
default action applies);
``reject_unverified_sender`` and ``reject_unverified_recipient`` call the
injected ``verify(address) -> (request status, recipient status, text)``
(the verify service's answer after smtpd's polling,
:class:`hato.io.verify_client.VerifyQuery`; none given: the service counts
as failing).

With ``hato_mailbox_quota_rcpt_check = yes`` a recipient that every
restriction accepts is refused when its Maildir is already full: the
injected ``mailbox_quota(recipient, transport, nexthop, sender, size)``
(:class:`hato.io.mailbox_quota_client.MailboxQuotaQuery`) answers None or
``(dsn, text)``, and the reply is ``452 4.2.2 <rcpt>: Recipient address
rejected: TEXT`` (``552 5.2.2`` with ``hato_mailbox_quota_bounce = yes``),
TEXT being hato_mailbox_quota_message.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..config.settings import Settings
from ..config.values import split_list
from ..proto.smtpd import Reply
from ..tables.base import OpenFlags, Table, TableError, TableRetry
from . import address as A
from .dnsquery import DnsLookup
from .resolve import RecipientValidator, Resolution, Resolver
from .rewrite import LocalDomains, UnavailableTable, match_parent_style, open_maps
from .smtpd_access import (
    DEFER_IF_PERMIT_ACT,
    DUNNO,
    ERR_DATA,
    ERR_POLICY,
    ERR_RESOURCE,
    ERR_SOFTWARE,
    NAME_CLIENT,
    NAME_DATA,
    NAME_EOD,
    NAME_ETRN,
    NAME_HELO,
    NAME_RECIPIENT,
    NAME_SENDER,
    OK,
    REJECT,
    SEPARATORS,
    STAGE_CONNECT,
    STAGE_DATA,
    STAGE_EOD,
    STAGE_ETRN,
    STAGE_EHLO,
    STAGE_HELO,
    STAGE_MAIL,
    STAGE_RCPT,
    STAGE_VRFY,
    AccessTableChecks,
    HostAddrList,
    dsn_valid,
)
from .smtpd_address import AddressChecks
from .smtpd_dnsbl import DnsxlCache, DnsxlChecks, unescape_filter
from .smtpd_policy import PolicyChecks, PolicyQuery, PolicyService, parse_policy_service
from .smtpd_restrictions import (DNS_RESTRICTIONS, KNOWN_RESTRICTIONS, NETWORK_TABLE_TYPES,
                                  VERIFY_RESTRICTIONS, RestrictionChecks, VerifyAnswer)

log = logging.getLogger("hato.smtpd_check")

_RCPT_REQUIRED = ("reject_unauth_destination", "defer_unauth_destination", "reject", "defer",
                  "defer_if_permit", "check_relay_domains")

_TEMPFAIL_ACTIONS = {"defer": 0, "defer_if_permit": DEFER_IF_PERMIT_ACT}

#: The RCPT-time quota question: (recipient, transport, nexthop, sender,
#: size) -> None (room, or not known) or (dsn, text) for a full mailbox.
MailboxQuotaQuery = Callable[[str, str, str, str, int], "tuple[str, str] | None"]

# -- the data -----------------------------------------------------------------------------------


@dataclass
class ClientFacts:
    """What smtpd knows about the client; the service keeps it up to date."""

    name: str = "unknown"  # verified client name, "unknown" when none
    addr: str = ""
    reverse_name: str = ""  # the PTR name, verified or not ("unknown" when none)
    port: str = "unknown"
    name_status: int = 0  # 0 ok, 4 temporary failure, 5 permanent (client_name_status)
    reverse_name_status: int = -1  # -1: same as name_status
    helo_name: str | None = None
    protocol: str = "SMTP"
    sasl_username: str | None = None
    sasl_method: str | None = None
    sasl_sender: str | None = None
    tls_active: bool = False
    tls_protocol: str = ""
    tls_cipher: str = ""
    tls_cipher_bits: int = 0
    tls_ccert_verified: bool = False
    tls_ccert_fingerprint: str = ""
    tls_ccert_pkey_fingerprint: str = ""
    tls_ccert_subject: str = ""
    tls_ccert_issuer: str = ""
    pipelining_violation: bool = False
    stress: bool = False
    instance: str = ""
    queue_id: str = ""
    server_addr: str = ""
    server_port: str = ""

    def __post_init__(self) -> None:
        if not self.reverse_name:
            self.reverse_name = self.name
        if self.reverse_name_status < 0:
            self.reverse_name_status = self.name_status


@dataclass
class LogEntry:
    """One log line. *action* is Postfix's word (``reject``,
    ``reject_warning``, ``warn``, ...) or ``warning`` for a plain warning.
    *text* is what follows ``STAGE from NAME[ADDR]: ``."""

    action: str
    text: str
    sender: str | None = None
    recipient: str | None = None
    helo: str | None = None

    def format(self, stage: str, client: str, *, queue_id: str = "",
               protocol: str | None = None, external: bool = True) -> str:
        if self.action == "warning":
            return f"warning: {self.text}"
        line = f"{queue_id or 'NOQUEUE'}: {self.action}: {stage} from {client}: {self.text};"
        if self.sender is not None:
            line += f" from=<{A.log_form(self.sender, external)}>"
        if self.recipient is not None:
            line += f" to=<{A.log_form(self.recipient, external)}>"
        if protocol:
            line += f" proto={protocol}"
        if self.helo is not None:
            line += f" helo=<{self.helo}>"
        return line


@dataclass
class Decision:
    stage: str
    reply: Reply | None = None
    logs: list[LogEntry] = field(default_factory=list)
    delay: int = 0  # seconds the "sleep" restriction asks for, before replying

    @property
    def ok(self) -> bool:
        return self.reply is None

    def __str__(self) -> str:
        if self.reply is None:
            return "OK"
        return f"{self.reply.code} {self.reply.dsn} {self.reply.text}"


@dataclass
class MessageActions:
    hold: str | None = None  # the logged reason
    discard: str | None = None
    filter: str | None = None  # transport:destination
    redirect: str | None = None
    bcc: list[str] = field(default_factory=list)
    prepend: list[str] = field(default_factory=list)


@dataclass
class _Defer:
    active: bool = False
    error_class: int = ERR_POLICY
    code: int = 450
    dsn: str = "4.7.1"
    reason: str = ""


class _Abort(Exception):
    """Postfix's longjmp(): the stage ends with *status*."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


# -- the service-wide part ------------------------------------------------------------------


class SmtpdChecks:
    """Every restriction list and table of one smtpd service, opened once."""

    def __init__(self, settings: Settings, dns: DnsLookup, *,
                 policy: PolicyQuery | None = None,
                 resolver: Resolver | None = None,
                 validator: RecipientValidator | None = None,
                 local_domains: LocalDomains | None = None,
                 verify: Callable[[str], VerifyAnswer] | None = None,
                 mailbox_quota: MailboxQuotaQuery | None = None):
        self.settings = settings
        self.dns = dns
        self.policy = policy
        self.verify = verify
        s = settings
        # hato_mailbox_quota_rcpt_check: the delivery agent is asked
        self.mailbox_quota = mailbox_quota \
            if _bool(s, "hato_mailbox_quota_rcpt_check", False) else None
        self.quota_message = s.str("hato_mailbox_quota_message") or "Mailbox full"
        self.utf8 = _bool(s, "smtputf8_enable", False)
        self.flags = OpenFlags(fold_case=True, utf8=self.utf8)
        self.tables: dict[str, Table] = {}
        self.policy_services: dict[str, PolicyService] = {}
        self.lists = {
            "client": self._parse(s.str("smtpd_client_restrictions")),
            "helo": self._parse(s.str("smtpd_helo_restrictions")),
            "sender": self._parse(s.str("smtpd_sender_restrictions")),
            "relay": self._parse(s.str("smtpd_relay_restrictions")),
            "recipient": self._parse(s.str("smtpd_recipient_restrictions")),
            "etrn": self._parse(s.str("smtpd_etrn_restrictions")),
            "data": self._parse(s.str("smtpd_data_restrictions")),
            "eod": self._parse(s.str("smtpd_end_of_data_restrictions")),
        }
        self.classes: dict[str, list[str]] = {}
        for name in split_list(s.str("smtpd_restriction_classes"), SEPARATORS):
            value = _raw_main(s, name)
            if not value:
                raise ConfigError(f"restriction class `{name}' needs a definition")
            self.classes[name] = self._parse(value)
        self.classes.setdefault("reject_sender_login_mismatch",
                                ["reject_authenticated_sender_login_mismatch",
                                 "reject_unauthenticated_sender_login_mismatch"])
        if not (self._has_required(self.lists["recipient"])
                or self._has_required(self.lists["relay"])):
            example = ", ".join(_RCPT_REQUIRED[:-1]) + " or " + _RCPT_REQUIRED[-1]
            raise ConfigError("in parameter smtpd_relay_restrictions or "
                              "smtpd_recipient_restrictions, specify at least one "
                              f"working instance of: {example}")
        self.tempfail = {}
        for name in ("unknown_helo_hostname_tempfail_action",
                     "unknown_address_tempfail_action", "unverified_recipient_tempfail_action",
                     "unverified_sender_tempfail_action"):
            value = s.str(name)
            if value not in _TEMPFAIL_ACTIONS:
                raise ConfigError(f"bad configuration: {name} = {value}")
            self.tempfail[name] = _TEMPFAIL_ACTIONS[value]
        # Lists and tables.
        self.mynetworks = HostAddrList(s.list("mynetworks"), title="mynetworks",
                                       parent=match_parent_style(s, "mynetworks"),
                                       flags=self.flags)
        self.perm_mx_networks = HostAddrList(s.list("permit_mx_backup_networks"),
                                             title="permit_mx_backup_networks",
                                             parent=match_parent_style(
                                                 s, "permit_mx_backup_networks"),
                                             flags=self.flags)
        self.access_parent = match_parent_style(s, "smtpd_access_maps")
        self.relay_ccerts = open_maps(s, "relay_clientcerts")
        self.rbl_reply_maps = open_maps(s, "rbl_reply_maps")
        self.sender_login_maps = open_maps(s, "smtpd_sender_login_maps")
        self.local_domains = local_domains or LocalDomains(s)
        self.resolver = resolver or Resolver(s, local_domains=self.local_domains)
        self.validator = validator or RecipientValidator(s, resolver=self.resolver)
        self.perm_log = set(s.list("smtpd_log_access_permit_actions"))
        # Parameters.
        self.p = {name: s.int(name) for name in (
            "access_map_defer_code", "access_map_reject_code", "defer_code",
            "invalid_hostname_reject_code", "maps_rbl_reject_code",
            "multi_recipient_bounce_reject_code", "non_fqdn_reject_code",
            "plaintext_reject_code", "reject_code", "relay_domains_reject_code",
            "unknown_address_reject_code", "unknown_client_reject_code",
            "unknown_hostname_reject_code", "unverified_recipient_defer_code",
            "unverified_recipient_reject_code", "unverified_sender_defer_code",
            "unverified_sender_reject_code")}
        self.unverified_reason = {
            NAME_RECIPIENT: s.str("unverified_recipient_reject_reason"),
            NAME_SENDER: s.str("unverified_sender_reject_reason")}
        self.verify_service = s.str("address_verify_service_name")
        self.delay_reject = s.bool("smtpd_delay_reject")
        self.relay_first = s.bool("smtpd_relay_before_recipient_restrictions")
        self.reject_unlisted_recipient = s.bool("smtpd_reject_unlisted_recipient")
        self.reject_unlisted_sender = s.bool("smtpd_reject_unlisted_sender")
        self.allow_untrusted_routing = s.bool("allow_untrusted_routing")
        self.soft_bounce = s.bool("soft_bounce")
        self.null_key = s.str("smtpd_null_access_lookup_key")
        self.delimiter = s.str("recipient_delimiter")
        self.owner_request_special = s.bool("owner_request_special")
        self.double_bounce = s.str("double_bounce_sender")
        self.maps_rbl_domains = s.list("maps_rbl_domains")
        self.default_rbl_reply = s.str("default_rbl_reply")
        self.expansion_filter = unescape_filter(s.str("smtpd_expansion_filter"))
        self.port_logging = s.bool("smtpd_client_port_logging")
        self.sasl_enable = s.bool("smtpd_sasl_auth_enable")
        self.policy_context = s.str("smtpd_policy_service_policy_context")
        self.compatibility_level = s.str("compatibility_level")
        self.mail_version = s.str("mail_version")
        self.may_block = self._needs_dns() or self.mailbox_quota is not None

    # -- construction helpers

    def _parse(self, value: str) -> list[str]:
        """smtpd_check_parse(): split, and open each type:table once."""
        items = split_list(value, SEPARATORS)
        last = ""
        for item in items:
            if last.lower() == "check_policy_service":
                if item not in self.policy_services:
                    self.policy_services[item] = parse_policy_service(item, self.settings)
            elif ":" in item and item not in self.tables:
                self.tables[item] = self._open(item)
            last = item
        return items

    def _open(self, spec: str) -> Table:
        from ..tables.registry import open_table
        try:
            return open_table(spec, self.flags)
        except TableError as err:
            if _bool(self.settings, "daemon_table_open_error_is_fatal", False):
                raise
            log.warning("%s: table is unavailable: %s", spec, err.message)
            return UnavailableTable(spec, err.message)

    def _has_required(self, items: list[str], depth: int = 0) -> bool:
        i = 0
        while i < len(items):
            name = items[i].lower()
            if name == "warn_if_reject" and i + 1 < len(items):
                i += 2
                continue
            if name == "permit":
                return False
            if name in _RCPT_REQUIRED:
                return True
            if depth < 20 and items[i] in self.classes \
                    and self._has_required(self.classes[items[i]], depth + 1):
                return True
            i += 1
        return False

    def _needs_dns(self) -> bool:
        every = [*self.lists.values(), *self.classes.values()]
        for items in every:
            for item in items:
                if item.lower() in DNS_RESTRICTIONS or item.lower() in VERIFY_RESTRICTIONS:
                    return True
        for spec in self.tables:
            if spec.split(":", 1)[0].lower() in NETWORK_TABLE_TYPES:
                return True
        return False

    def session(self, facts: ClientFacts) -> SmtpdSession:
        return SmtpdSession(self, facts)

    def close(self) -> None:
        for table in self.tables.values():
            table.close()
        self.mynetworks.close()
        self.perm_mx_networks.close()
        for maps in (self.relay_ccerts, self.rbl_reply_maps, self.sender_login_maps):
            if maps is not None:
                maps.close()


def _bool(settings: Settings, name: str, default: bool) -> bool:
    try:
        return settings.bool(name)
    except ConfigError:
        return default


def _raw_main(settings: Settings, name: str) -> str | None:
    try:
        return settings.expanded(name)
    except ConfigError:
        return None


# -- the per-session part -------------------------------------------------------------------


class SmtpdSession(AccessTableChecks, AddressChecks, DnsxlChecks, PolicyChecks,
                   RestrictionChecks):
    """The restriction state of one SMTP session (Postfix's SMTPD_STATE)."""

    def __init__(self, checks: SmtpdChecks, facts: ClientFacts):
        self.checks = checks
        self.facts = facts
        self.sender: str | None = None  # None before MAIL FROM, "" for the null sender
        self.recipient: str | None = None
        self.etrn_name: str | None = None
        self.rcpt_count = 0
        self.msg_size = 0
        self.discard = False
        self.actions = MessageActions()
        self.access_denied: Reply | None = None  # connect() reject with delay_reject = no
        # Evaluation state.
        self.where = STAGE_CONNECT
        self.recursion = 0
        self.warn_if_reject = 0
        self.defer_if_permit = _Defer()
        self.defer_if_reject = _Defer()
        self.defer_if_permit_client = False
        self.defer_if_permit_helo = False
        self.defer_if_permit_sender = False
        self.sender_rcptmap_checked = False
        self.recipient_rcptmap_checked = False
        self.error_text = ""
        self._logs: list[LogEntry] = []
        self._delay = 0
        self._helo: str | None = None  # the HELO name being evaluated
        self._policy_nesting = 0  # check_policy_service default actions in progress
        self._resolved: dict[str, Resolution] = {}
        self._rewritten: dict[str, str] = {}  # address -> rewrite_internal() of it
        self.dnsxl = DnsxlCache(checks.dns, self._warn)

    # -- the public API

    @property
    def may_block(self) -> bool:
        return self.checks.may_block

    @property
    def namaddr(self) -> str:
        text = f"{self.facts.name}[{self.facts.addr}]"
        if self.checks.port_logging and self.facts.port:
            text += f":{self.facts.port}"
        return text

    def in_mynetworks(self) -> bool:
        """Does the client match $mynetworks? (local_header_rewrite_clients);
        a table failure counts as no match."""
        try:
            return self.checks.mynetworks.match(self.facts.name, self.facts.addr)
        except TableRetry:
            return False

    def in_inet_interfaces(self) -> bool:
        """Is the client one of our own addresses (permit_inet_interfaces)?"""
        try:
            return ipaddress.ip_address(self.facts.addr) in self.checks.local_domains.addresses
        except ValueError:
            return False

    def connect(self) -> Decision:
        self._begin(STAGE_CONNECT)
        if self.checks.delay_reject:
            return self._end(None)
        err = self._check_client()
        decision = self._end(err)
        self.access_denied = decision.reply
        return decision

    def helo(self, helo: str, ehlo: bool = False) -> Decision:
        self._begin(STAGE_EHLO if ehlo else STAGE_HELO)
        err = None if self.checks.delay_reject else self._check_helo(helo)
        decision = self._end(err)
        if decision.ok:
            self.facts.helo_name = helo
        return decision

    def mail(self, sender: str, size: int | None = None) -> Decision:
        self._begin(STAGE_MAIL)
        self.msg_size = size or 0
        err = None if self.checks.delay_reject else self._check_mail(sender)
        if err is not None:
            self.actions = MessageActions()  # XXX reset access map side effects
            self.discard = False
        else:
            self.sender = sender
        return self._end(err)

    def rcpt(self, recipient: str) -> Decision:
        self._begin(STAGE_RCPT)
        decision = self._end(self._check_rcpt(recipient))
        if decision.ok:
            self.rcpt_count += 1
            self.recipient = recipient
        return decision

    def vrfy(self, address: str) -> Decision:
        self._begin(STAGE_VRFY)
        return self._end(self._check_rcpt(address))

    def etrn(self, domain: str) -> Decision:
        self._begin(STAGE_ETRN)
        return self._end(self._check_etrn(domain))

    def data(self, rcpt_count: int | None = None) -> Decision:
        self._begin(STAGE_DATA)
        if rcpt_count is not None:
            self.rcpt_count = rcpt_count
        return self._end(self._check_data(self.checks.lists["data"], "DATA", NAME_DATA))

    def end_of_data(self, size: int | None = None) -> Decision:
        self._begin(STAGE_EOD)
        if size is not None:
            self.msg_size = size
        return self._end(self._check_data(self.checks.lists["eod"], STAGE_EOD, NAME_EOD))

    def reset(self) -> None:
        """RSET, or the end of a mail transaction."""
        self.sender = None
        self.recipient = None
        self.rcpt_count = 0
        self.msg_size = 0
        self.discard = False
        self.actions = MessageActions()
        self.sender_rcptmap_checked = False
        self.recipient_rcptmap_checked = False

    # -- decision plumbing

    def _begin(self, stage: str) -> None:
        self.where = stage
        self._logs = []
        self._delay = 0

    def _end(self, err: str | None) -> Decision:
        reply = None
        if err is not None:
            code, dsn, text = err[:3], err[4:].split(" ", 1)[0], err[4:].partition(" ")[2]
            reply = Reply(int(code), dsn, text)
        return Decision(self.where, reply, self._logs, self._delay)

    def _log(self, action: str, text: str) -> None:
        self._logs.append(LogEntry(action, text, self.sender, self.recipient,
                                   self._helo if self._helo is not None
                                   else self.facts.helo_name))

    def _warn(self, text: str) -> None:
        self._logs.append(LogEntry("warning", text))

    def _reset_eval(self) -> None:
        self.recursion = 0
        self.warn_if_reject = 0
        self.defer_if_reject = _Defer()

    def _run(self, items: list[str], reply_name: str, reply_class: str,
             def_acl: str | None) -> int:
        try:
            return self._generic(items, reply_name, reply_class, def_acl)
        except _Abort as abort:
            return abort.status

    # -- the stages (smtpd_check_client & co.)

    def _check_client(self) -> str | None:
        if not self.facts.addr:
            return None
        self.defer_if_permit.active = False
        self._reset_eval()
        status = DUNNO
        if self.checks.lists["client"]:
            status = self._run(self.checks.lists["client"], self.namaddr, NAME_CLIENT,
                               "check_client_access")
        self.defer_if_permit_client = self.defer_if_permit.active
        return self.error_text if status == REJECT else None

    def _check_helo(self, helo: str | None) -> str | None:
        if helo is None:
            return None
        saved, self._helo = self._helo, helo
        try:
            self.defer_if_permit.active = self.defer_if_permit_client
            self._reset_eval()
            status = DUNNO
            if self.checks.lists["helo"]:
                status = self._run(self.checks.lists["helo"], helo, NAME_HELO,
                                   "check_helo_access")
            self.defer_if_permit_helo = self.defer_if_permit.active
            return self.error_text if status == REJECT else None
        finally:
            self._helo = saved

    def _check_mail(self, sender: str | None) -> str | None:
        if sender is None:
            return None
        saved, self.sender = self.sender, sender
        try:
            self.defer_if_permit.active = self.defer_if_permit_client \
                or self.defer_if_permit_helo
            self.sender_rcptmap_checked = False
            self._reset_eval()
            status = DUNNO
            if self.checks.lists["sender"]:
                status = self._run(self.checks.lists["sender"], sender, NAME_SENDER,
                                   "check_sender_access")
            self.defer_if_permit_sender = self.defer_if_permit.active
            if (self.checks.reject_unlisted_sender and status != REJECT
                    and not self.sender_rcptmap_checked and not self.discard and sender):
                status = self._guard(lambda: self._sender_rcpt_maps(sender))
            return self.error_text if status == REJECT else None
        finally:
            self.sender = saved

    def _guard(self, fn: Callable[[], int]) -> int:
        try:
            return fn()
        except _Abort as abort:
            return abort.status

    def _check_rcpt(self, recipient: str) -> str | None:
        if recipient.lower() == "postmaster":
            return None
        saved, self.recipient = self.recipient, recipient
        try:
            self.recipient_rcptmap_checked = False
            if self.checks.delay_reject:
                err = (self._check_client() or self._check_helo(self.facts.helo_name)
                       or self._check_mail(self.sender))
                if err is not None:
                    return err
            self.defer_if_permit.active = self.defer_if_permit_sender
            self._reset_eval()
            lists = [self.checks.lists["relay"], self.checks.lists["recipient"]]
            if not self.checks.relay_first:
                lists.reverse()
            status = DUNNO
            for items in lists:
                status = DUNNO
                if items:
                    status = self._run(items, recipient, NAME_RECIPIENT,
                                       "check_recipient_access")
                if status == REJECT:
                    break
            status = self._defer_if_permit(status)
            if (self.checks.reject_unlisted_recipient and status != REJECT
                    and not self.recipient_rcptmap_checked and not self.discard):
                status = self._guard(lambda: self._recipient_rcpt_maps(recipient))
            if (self.checks.mailbox_quota is not None and status != REJECT
                    and self.where == STAGE_RCPT and not self.discard):
                status = self._guard(lambda: self._mailbox_quota(recipient))
            return self.error_text if status == REJECT else None
        finally:
            self.recipient = saved

    def _mailbox_quota(self, recipient: str) -> int:
        """hato_mailbox_quota_rcpt_check: refuse a recipient whose Maildir
        is already full, before the message is accepted."""
        res = self._resolve(recipient)
        if not res.final:
            return DUNNO
        answer = self.checks.mailbox_quota(res.recipient, res.transport,  # type: ignore[misc]
                                           res.nexthop, self.sender or "", self.msg_size)
        if answer is None:
            return DUNNO
        dsn = answer[0]
        code = 552 if dsn.startswith("5") else 452
        return self._reject(ERR_RESOURCE, code, dsn,
                            f"<{recipient}>: {NAME_RECIPIENT} rejected: "
                            f"{self.checks.quota_message}")

    def _defer_if_permit(self, status: int) -> int:
        if status != REJECT and self.defer_if_permit.active:
            d = self.defer_if_permit
            status = self._reject(d.error_class, d.code, d.dsn, d.reason)
        return status

    def _check_etrn(self, domain: str) -> str | None:
        saved, self.etrn_name = self.etrn_name, domain
        try:
            if self.checks.delay_reject:
                err = self._check_client() or self._check_helo(self.facts.helo_name)
                if err is not None:
                    return err
            self.defer_if_permit.active = self.defer_if_permit_client \
                or self.defer_if_permit_helo
            self._reset_eval()
            status = DUNNO
            if self.checks.lists["etrn"]:
                status = self._run(self.checks.lists["etrn"], domain, NAME_ETRN,
                                   "check_etrn_access")
            status = self._defer_if_permit(status)
            return self.error_text if status == REJECT else None
        finally:
            self.etrn_name = saved

    def _check_data(self, items: list[str], reply_name: str, reply_class: str) -> str | None:
        saved = self.recipient
        if self.rcpt_count > 1:
            self.recipient = None
        try:
            self.defer_if_permit.active = False
            self._reset_eval()
            status = DUNNO
            if items:
                status = self._run(items, reply_name, reply_class, None)
            status = self._defer_if_permit(status)
            return self.error_text if status == REJECT else None
        finally:
            self.recipient = saved

    # -- reject and defer (smtpd_check_reject, defer_if)

    def _reject(self, error_class: int, code: int, dsn: str, text: str) -> int:
        warn = bool(self.warn_if_reject) and error_class not in (ERR_SOFTWARE, ERR_RESOURCE)
        whatsup = "reject_warning" if warn else "reject"
        line = f"{code} {dsn} {text}"
        if code < 400 or code > 599:
            self._warn(f"SMTP reply code configuration error: {line}")
            line = "450 4.7.1 Service unavailable"
        elif not dsn_valid(dsn):
            self._warn(f"DSN detail code configuration error: {line}")
            line = "450 4.7.1 Service unavailable"
        line = "".join(c if c.isprintable() else " " for c in line[:510])
        if not warn and self.defer_if_reject.active and line[0] == "5":
            d = self.defer_if_reject
            self.warn_if_reject = 0
            d.active = False
            return self._reject(d.error_class, d.code, d.dsn, d.reason)
        if self.checks.soft_bounce and line[0] == "5":
            line = "4" + line[1:]
        line = line[:4] + line[0] + line[5:]
        self._log(whatsup, line)
        if warn:
            return DUNNO
        self.error_text = line
        return REJECT

    @staticmethod
    def _defer_if(defer: _Defer, error_class: int, code: int, dsn: str, text: str) -> int:
        if not defer.active:
            defer.active = True
            defer.error_class = error_class
            defer.code = code
            defer.dsn = dsn
            defer.reason = text
        return DUNNO

    def _defer_if_reject_(self, code: int, dsn: str, text: str) -> int:
        return self._defer_if(self.defer_if_reject, ERR_POLICY, code, dsn, text)

    def _defer_if_permit_(self, act: int, code: int, dsn: str, text: str) -> int:
        if self.warn_if_reject == 0 and act != 0:
            return self._defer_if(self.defer_if_permit, ERR_POLICY, code, dsn, text)
        return self._reject(ERR_POLICY, code, dsn, text)

    def _dict_retry(self, reply_name: str) -> None:
        raise _Abort(self._reject(ERR_DATA, 451, "4.3.0",
                                  f"<{reply_name}>: Temporary lookup failure"))

    def _server_error(self) -> None:
        raise _Abort(self._reject(ERR_SOFTWARE, 451, "4.3.5", "Server configuration error"))

    def _permit(self, action: str, reply_class: str, reply_name: str, extra: str = "") -> int:
        """smtpd_acl_permit(): OK, logged when smtpd_log_access_permit_actions says so."""
        perm_log = self.checks.perm_log
        if not self.defer_if_permit.active and (action in perm_log or "static:all" in perm_log):
            text = f"action={action} for {reply_class}={reply_name}"
            if extra:
                text += f" {extra}"
            self._log("permit", text)
        return OK

    # -- generic_checks

    def _generic(self, items: list[str], reply_name: str, reply_class: str,
                 def_acl: str | None) -> int:
        saved_recursion = self.recursion
        self.recursion += 1
        status = DUNNO
        try:
            i = 0
            while i < len(items):
                if self.discard:
                    break
                name = items[i]
                if name.lower() == "warn_if_reject":
                    if self.warn_if_reject == 0:
                        self.warn_if_reject = self.recursion
                    i += 1
                    continue
                if ":" in name:
                    if def_acl is None:
                        self._warn("specify one of (check_client_access, "
                                   "check_reverse_client_hostname_access, check_helo_access, "
                                   "check_sender_access, check_recipient_access, "
                                   f"check_etrn_access) before {reply_class} restriction "
                                   f"\"{name}\"")
                        self._server_error()
                    assert def_acl is not None
                    status, i = self._one(def_acl, items, i - 1, reply_name, reply_class,
                                          def_acl)
                else:
                    status, i = self._one(name, items, i, reply_name, reply_class, def_acl)
                if self.warn_if_reject >= self.recursion:
                    self.warn_if_reject = 0
                if status != DUNNO:
                    break
                if self.defer_if_permit.active and self.defer_if_reject.active:
                    break
                i += 1
        finally:
            self.recursion = saved_recursion
        if self.warn_if_reject >= self.recursion:
            self.warn_if_reject = 0
        return status

    def _helo_name(self) -> str | None:
        return self._helo if self._helo is not None else self.facts.helo_name

__all__ = [
    "KNOWN_RESTRICTIONS",
    "ClientFacts",
    "Decision",
    "LogEntry",
    "MessageActions",
    "SmtpdChecks",
    "SmtpdSession",
]

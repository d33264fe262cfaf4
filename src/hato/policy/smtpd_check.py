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
    ERR_PROTOCOL,
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
from .verify import BOUNCE, DEFER, OK as VRFY_OK, STAT_OK, TODO

log = logging.getLogger("hato.smtpd_check")

_RCPT_REQUIRED = ("reject_unauth_destination", "defer_unauth_destination", "reject", "defer",
                  "defer_if_permit", "check_relay_domains")

_TEMPFAIL_ACTIONS = {"defer": 0, "defer_if_permit": DEFER_IF_PERMIT_ACT}

#: Restrictions that ask the DNS (the service then runs checks in a thread).
DNS_RESTRICTIONS = frozenset({
    "reject_rbl_client", "reject_rbl", "reject_maps_rbl", "permit_dnswl_client",
    "reject_rhsbl_client", "permit_rhswl_client", "reject_rhsbl_reverse_client",
    "reject_rhsbl_helo", "reject_rhsbl_sender", "reject_rhsbl_recipient",
    "reject_unknown_helo_hostname", "reject_unknown_hostname",
    "reject_unknown_sender_domain", "reject_unknown_address",
    "reject_unknown_recipient_domain", "permit_mx_backup", "check_policy_service",
    "check_client_mx_access", "check_client_ns_access", "check_reverse_client_mx_access",
    "check_reverse_client_ns_access", "check_helo_mx_access", "check_helo_ns_access",
    "check_sender_mx_access", "check_sender_ns_access", "check_recipient_mx_access",
    "check_recipient_ns_access", "sleep",
})
NETWORK_TABLE_TYPES = frozenset({"mysql", "pgsql", "ldap", "socketmap", "tcp", "proxy",
                                 "memcache", "sqlite"})

#: Names smtpd knows but hato does not implement yet: a warning, then DUNNO.
NOT_SUPPORTED: frozenset[str] = frozenset()
#: Restrictions that wait for the verify service (run in a thread, as DNS ones).
VERIFY_RESTRICTIONS = frozenset({"reject_unverified_sender", "reject_unverified_recipient"})
#: The result of a verify query: (request status, recipient status, text).
VerifyAnswer = tuple[int, int, str]
#: The RCPT-time quota question: (recipient, transport, nexthop, sender,
#: size) -> None (room, or not known) or (dsn, text) for a full mailbox.
MailboxQuotaQuery = Callable[[str, str, str, str, int], "tuple[str, str] | None"]

#: Every restriction name smtpd_check.c knows (for `hato check`).
KNOWN_RESTRICTIONS = frozenset({
    "permit", "defer", "reject", "warn_if_reject", "defer_if_permit", "defer_if_reject",
    "reject_unauth_pipelining", "check_policy_service", "sleep", "reject_plaintext_session",
    "reject_unknown_client_hostname", "reject_unknown_client",
    "reject_unknown_reverse_client_hostname", "permit_inet_interfaces", "permit_mynetworks",
    "check_client_access", "check_reverse_client_hostname_access", "reject_maps_rbl",
    "reject_rbl_client", "reject_rbl", "permit_dnswl_client", "reject_rhsbl_client",
    "permit_rhswl_client", "reject_rhsbl_reverse_client", "check_ccert_access",
    "check_sasl_access", "check_client_ns_access", "check_client_mx_access",
    "check_reverse_client_ns_access", "check_reverse_client_mx_access", "check_helo_access",
    "reject_invalid_helo_hostname", "reject_invalid_hostname", "reject_unknown_helo_hostname",
    "reject_unknown_hostname", "permit_naked_ip_address", "check_helo_ns_access",
    "check_helo_mx_access", "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname",
    "reject_rhsbl_helo", "check_sender_access", "reject_unknown_address",
    "reject_unknown_sender_domain", "reject_unverified_sender", "reject_non_fqdn_sender",
    "reject_authenticated_sender_login_mismatch", "reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch", "reject_sender_login_mismatch",
    "check_sender_ns_access", "check_sender_mx_access", "reject_rhsbl_sender",
    "reject_unlisted_sender", "check_recipient_access", "permit_mx_backup",
    "permit_auth_destination", "reject_unauth_destination", "defer_unauth_destination",
    "check_relay_domains", "permit_sasl_authenticated", "permit_tls_all_clientcerts",
    "permit_tls_clientcerts", "reject_unknown_recipient_domain", "reject_non_fqdn_recipient",
    "check_recipient_ns_access", "check_recipient_mx_access", "reject_rhsbl_recipient",
    "check_recipient_maps", "reject_unlisted_recipient", "reject_multi_recipient_bounce",
    "reject_unverified_recipient", "check_etrn_access",
})

# check_xxx_access commands whose argument is a table.
_MAP_COMMANDS = frozenset(n for n in KNOWN_RESTRICTIONS
                          if n.startswith("check_") and n.endswith("_access"))
# Restrictions followed by one argument that is not a table.
_ARG_COMMANDS = frozenset({
    "check_policy_service", "sleep", "reject_rbl_client", "reject_rbl", "permit_dnswl_client",
    "reject_rhsbl_client", "permit_rhswl_client", "reject_rhsbl_reverse_client",
    "reject_rhsbl_helo", "reject_rhsbl_sender", "reject_rhsbl_recipient",
})


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


class SmtpdSession(AccessTableChecks, AddressChecks, DnsxlChecks, PolicyChecks):
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

    def _arg(self, items: list[str], i: int, name: str, *, table: bool) -> tuple[str | None, int]:
        """The argument after items[i]; for a map command it must be type:name."""
        if i + 1 >= len(items):
            if table:
                self._warn(f"restriction {name}: bad argument \"{name}\": "
                           "need maptype:mapname")
                self._server_error()
            return None, i
        arg = items[i + 1]
        if table and ":" not in arg:
            self._warn(f"restriction {name}: bad argument \"{arg}\": need maptype:mapname")
            self._server_error()
        return arg, i + 1

    def _one(self, name: str, items: list[str], i: int, reply_name: str, reply_class: str,
             def_acl: str | None) -> tuple[int, int]:
        """Evaluate the restriction *name* at items[i]; returns (status, last index used)."""
        low = name.lower()
        f = self.facts
        c = self.checks
        nxt = items[i + 1] if i + 1 < len(items) else None
        if low in _MAP_COMMANDS:
            table_spec, i = self._arg(items, i, low, table=True)
            assert table_spec is not None
            return self._map_command(low, table_spec, reply_name, reply_class, def_acl), i
        if low in _ARG_COMMANDS and low not in ("check_policy_service", "sleep"):
            if nxt is None:
                self._warn(f"restriction {low} requires domain name argument")
                return DUNNO, i
            return self._dnsxl(low, nxt, reply_name, reply_class), i + 1
        if low == "permit":
            status = self._permit(low, reply_class, reply_name)
            if nxt is not None:
                self._warn(f"restriction `{nxt}' after `permit' is ignored")
            return status, i
        if low == "defer":
            status = self._reject(ERR_POLICY, c.p["defer_code"], "4.3.2",
                                  f"<{reply_name}>: {reply_class} rejected: Try again later")
            if nxt is not None and not self.warn_if_reject:
                self._warn(f"restriction `{nxt}' after `defer' is ignored")
            return status, i
        if low == "reject":
            status = self._reject(ERR_POLICY, c.p["reject_code"], "5.7.1",
                                  f"<{reply_name}>: {reply_class} rejected: Access denied")
            if nxt is not None and not self.warn_if_reject:
                self._warn(f"restriction `{nxt}' after `reject' is ignored")
            return status, i
        if low == "reject_unauth_pipelining":
            if f.pipelining_violation:
                return self._reject(ERR_PROTOCOL, 503, "5.5.0",
                                    f"<{reply_name}>: {reply_class} rejected: Improper use "
                                    "of SMTP command pipelining"), i
            return DUNNO, i
        if low == "check_policy_service":
            if nxt is None or ":" not in nxt:
                self._warn("restriction check_policy_service must be followed by "
                           "transport:server")
                self._server_error()
            assert nxt is not None
            return self._policy(nxt, reply_name, reply_class, def_acl), i + 1
        if low == "defer_if_permit":
            return self._defer_if_permit_(DEFER_IF_PERMIT_ACT, 450, "4.7.0",
                                          f"<{reply_name}>: {reply_class} rejected: "
                                          "defer_if_permit requested"), i
        if low == "defer_if_reject":
            return self._defer_if_reject_(450, "4.7.0", f"<{reply_name}>: {reply_class} "
                                          "rejected: defer_if_reject requested"), i
        if low == "sleep":
            if nxt is None or not nxt.isdigit():
                self._warn("restriction sleep must be followed by number")
                self._server_error()
            assert nxt is not None
            self._delay += int(nxt)
            return DUNNO, i + 1
        if low == "reject_plaintext_session":
            if not f.tls_active:
                return self._reject(ERR_POLICY, c.p["plaintext_reject_code"], "4.7.1",
                                    "Session encryption is required"), i
            return DUNNO, i
        if low in NOT_SUPPORTED:
            self._warn(f"{low} is not supported yet")
            return DUNNO, i
        if low in ("reject_unknown_client_hostname", "reject_unknown_client"):
            if f.name_status != 0:
                code = c.p["unknown_client_reject_code"] if f.name_status >= 5 else 450
                # RFC 7372: Email Authentication Status Codes.
                return self._reject(ERR_POLICY, code, "4.7.25", "Client host rejected: cannot "
                                    f"find your hostname, [{f.addr}]"), i
            return DUNNO, i
        if low == "reject_unknown_reverse_client_hostname":
            if f.reverse_name_status != 0:
                code = c.p["unknown_client_reject_code"] if f.reverse_name_status == 5 else 450
                return self._reject(ERR_POLICY, code, "4.7.1", "Client host rejected: cannot "
                                    f"find your reverse hostname, [{f.addr}]"), i
            return DUNNO, i
        if low == "permit_inet_interfaces":
            try:
                own = ipaddress.ip_address(f.addr) in c.local_domains.addresses
            except ValueError:
                own = False
            return (self._permit(low, NAME_CLIENT, self.namaddr) if own else DUNNO), i
        if low == "permit_mynetworks":
            try:
                matched = c.mynetworks.match(f.name, f.addr)
            except TableRetry:
                self._dict_retry(reply_name)
            return (self._permit(low, NAME_CLIENT, self.namaddr) if matched else DUNNO), i
        if low == "reject_maps_rbl":
            self._warn("support for restriction \"reject_maps_rbl\" will be removed from "
                       "Postfix; use \"reject_rbl_client domain-name\" instead")
            for zone in c.maps_rbl_domains:
                status = self._reject_rbl_addr(zone, f.addr, NAME_CLIENT)
                if status != DUNNO:
                    return status, i
            return DUNNO, i
        # HELO
        if low in ("reject_invalid_helo_hostname", "reject_invalid_hostname"):
            helo = self._helo_name()
            if helo is None:
                return DUNNO, i
            if not helo.startswith("["):
                return self._invalid_hostname(helo), i
            return self._invalid_hostaddr(helo), i
        if low in ("reject_unknown_helo_hostname", "reject_unknown_hostname"):
            helo = self._helo_name()
            if helo is None:
                return DUNNO, i
            if not helo.startswith("["):
                return self._unknown_hostname(helo), i
            return self._invalid_hostaddr(helo), i
        if low in ("reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname"):
            helo = self._helo_name()
            if helo is None:
                return DUNNO, i
            if not helo.startswith("["):
                return self._non_fqdn_hostname(helo), i
            return self._invalid_hostaddr(helo), i
        if low == "permit_naked_ip_address":
            self._warn("restriction permit_naked_ip_address is deprecated. Use "
                       "permit_mynetworks or permit_sasl_authenticated instead")
            helo = self._helo_name()
            if helo is not None and helo and all(ch in "0123456789.:" for ch in helo):
                status = self._invalid_hostaddr(helo)
                if status == DUNNO:
                    return self._permit(low, NAME_HELO, helo), i
                return status, i
            return DUNNO, i
        # Sender
        sender = self.sender
        if low in ("reject_unknown_sender_domain", "reject_unknown_address"):
            if sender:
                return self._unknown_address(sender, sender, NAME_SENDER), i
            return DUNNO, i
        if low == "reject_non_fqdn_sender":
            if sender:
                return self._non_fqdn_address(sender, sender, NAME_SENDER), i
            return DUNNO, i
        if low in ("reject_authenticated_sender_login_mismatch",
                   "reject_known_sender_login_mismatch",
                   "reject_unauthenticated_sender_login_mismatch"):
            if not c.sasl_enable:
                self._warn(f"restriction `{low}' ignored: no SASL support")
                return DUNNO, i
            if not sender:
                return DUNNO, i
            if low == "reject_authenticated_sender_login_mismatch":
                return self._auth_login_mismatch(sender, allow_unknown=False), i
            if low == "reject_unauthenticated_sender_login_mismatch":
                return self._unauth_login_mismatch(sender), i
            if f.sasl_username:
                return self._auth_login_mismatch(sender, allow_unknown=True), i
            return self._unauth_login_mismatch(sender), i
        if low == "reject_unlisted_sender":
            if sender:
                return self._sender_rcpt_maps(sender), i
            return DUNNO, i
        if low == "reject_unverified_sender":
            if sender:
                return self._unverified_address(sender, NAME_SENDER), i
            return DUNNO, i
        # Recipient
        rcpt = self.recipient
        if low == "permit_mx_backup":
            if rcpt is not None:
                status = self._permit_mx_backup(rcpt, rcpt, NAME_RECIPIENT)
                if status == OK:
                    return self._permit(low, NAME_RECIPIENT, rcpt), i
            return DUNNO, i
        if low == "permit_auth_destination":
            if rcpt is not None and self._permit_auth_destination(rcpt) == OK:
                return self._permit(low, NAME_RECIPIENT, rcpt), i
            return DUNNO, i
        if low in ("reject_unauth_destination", "defer_unauth_destination"):
            if rcpt is None:
                return DUNNO, i
            if self._permit_auth_destination(rcpt) == OK:
                return DUNNO, i
            code, dsn = c.p["relay_domains_reject_code"], "5.7.1"
            if low == "defer_unauth_destination":
                code, dsn = code - 100, "4.7.1"
            return self._reject(ERR_POLICY, code, dsn, f"<{rcpt}>: Relay access denied"), i
        if low == "check_relay_domains":
            self._warn("support for restriction \"check_relay_domains\" will be removed "
                       "from Postfix; use \"reject_unauth_destination\" instead")
            status = DUNNO
            if rcpt is not None:
                relay = c.resolver.relay_domains
                try:
                    client_ok = relay is not None and relay.match(f.name)
                except TableRetry:
                    self._dict_retry(reply_name)
                if client_ok or self._permit_auth_destination(rcpt) == OK:
                    status = OK
                else:
                    status = self._reject(ERR_POLICY, c.p["relay_domains_reject_code"],
                                          "5.7.1", f"<{rcpt}>: {NAME_RECIPIENT} rejected: "
                                          "Relay access denied")
            if status == OK:
                status = self._permit(low, NAME_RECIPIENT, rcpt or "")
            return status, i
        if low == "permit_sasl_authenticated":
            if f.sasl_username:
                return self._permit(low, NAME_CLIENT, self.namaddr), i
            return DUNNO, i
        if low in ("permit_tls_all_clientcerts", "permit_tls_clientcerts"):
            status = self._tls_clientcerts(low == "permit_tls_all_clientcerts", reply_name)
            if status == OK:
                return self._permit(low, NAME_CLIENT, self.namaddr), i
            return status, i
        if low == "reject_unknown_recipient_domain":
            if rcpt is not None:
                return self._unknown_address(rcpt, rcpt, NAME_RECIPIENT), i
            return DUNNO, i
        if low == "reject_non_fqdn_recipient":
            if rcpt is not None:
                return self._non_fqdn_address(rcpt, rcpt, NAME_RECIPIENT), i
            return DUNNO, i
        if low in ("check_recipient_maps", "reject_unlisted_recipient"):
            if rcpt:
                return self._recipient_rcpt_maps(rcpt), i
            return DUNNO, i
        if low == "reject_unverified_recipient":
            if rcpt:
                return self._unverified_address(rcpt, NAME_RECIPIENT), i
            return DUNNO, i
        if low == "reject_multi_recipient_bounce":
            if sender == "" and self.rcpt_count > (1 if self.where == STAGE_DATA else 0):
                return self._reject(ERR_POLICY, c.p["multi_recipient_bounce_reject_code"],
                                    "5.5.3", f"<{reply_name}>: {reply_class} rejected: "
                                    "Multi-recipient bounce"), i
            return DUNNO, i
        # Restriction classes.
        if name in c.classes:
            return self._generic(c.classes[name], reply_name, reply_class, def_acl), i
        self._warn(f"unknown smtpd restriction: \"{name}\"")
        self._server_error()
        raise AssertionError("unreachable")

    def _helo_name(self) -> str | None:
        return self._helo if self._helo is not None else self.facts.helo_name

    # -- reject_unverified_sender, reject_unverified_recipient

    def _unverified_address(self, addr: str, reply_class: str) -> int:
        """reject_unverified_address(): what the verify service knows of
        *addr*. Deliverable: DUNNO. Undeliverable: the
        unverified_*_reject_code with ``undeliverable address`` (5xx) or
        ``unverified address`` (4xx); no result yet or a deferred probe:
        the unverified_*_defer_code; the service unreachable: 450
        ``address verification problem``. 4xx answers follow
        unverified_*_tempfail_action (defer_if_permit: only when nothing
        later rejects)."""
        c = self.checks
        which = "sender" if reply_class == NAME_SENDER else "recipient"
        dsn = "4.1.7" if reply_class == NAME_SENDER else "4.1.1"
        act = c.tempfail[f"unverified_{which}_tempfail_action"]
        answer: VerifyAnswer | None = None
        if c.verify is not None:
            try:
                answer = c.verify(addr)
            except Exception:  # noqa: BLE001 - any client failure is a service failure
                answer = None
        if answer is None or answer[0] != STAT_OK:
            self._warn(f"{c.verify_service} service failure")
            return self._defer_if_permit_(act, 450, dsn, f"<{addr}>: {reply_class} rejected: "
                                          "address verification problem")
        _, rcpt_status, why = answer
        code = 0
        if rcpt_status in (TODO, DEFER):
            code = c.p[f"unverified_{which}_defer_code"]
        elif rcpt_status == BOUNCE:
            code = c.p[f"unverified_{which}_reject_code"]
        elif rcpt_status != VRFY_OK:
            self._warn(f"unknown address verification status {rcpt_status}")
        if code >= 400 and c.unverified_reason[reply_class]:
            why = c.unverified_reason[reply_class]
        if code // 100 == 4:
            return self._defer_if_permit_(act, code, dsn, f"<{addr}>: {reply_class} rejected: "
                                          f"unverified address: {why[:250]}")
        if code // 100 not in (0, 2):
            return self._reject(ERR_POLICY, code, dsn, f"<{addr}>: {reply_class} rejected: "
                                f"undeliverable address: {why}")
        return DUNNO


__all__ = [
    "KNOWN_RESTRICTIONS",
    "ClientFacts",
    "Decision",
    "LogEntry",
    "MessageActions",
    "SmtpdChecks",
    "SmtpdSession",
]

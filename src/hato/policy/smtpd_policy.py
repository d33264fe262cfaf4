"""check_policy_service: smtpd's side of policy delegation (smtpd_check.c's
policy_client_register() and check_policy_service()), as pure decisions.

A restriction list names a policy server as ``check_policy_service
ENDPOINT`` or, with per-use settings, ``check_policy_service { ENDPOINT,
name=value, ... }`` (Postfix 3.0+; a value with blanks or commas is written
``{ name = value }``). The names are those of the main.cf parameters
without their ``smtpd_policy_service_`` prefix: ``timeout``, ``max_idle``,
``max_ttl``, ``retry_delay`` (times), ``request_limit``, ``try_limit``
(numbers), ``default_action`` and ``policy_context`` (text). Anything else
is a configuration error, as in Postfix. :func:`parse_policy_service`
turns one argument into a :class:`PolicyService`; SmtpdChecks does that
once for every ``check_policy_service`` of every list and class, when the
service starts.

The session asks the injected client ``policy(service, attributes) ->
PolicyAnswer`` (:class:`hato.io.policy_client.PolicyClient`); attributes are
the ``smtpd_access_policy`` request of :meth:`PolicyChecks.policy_attributes`,
in Postfix's order. The answer's warnings (``connect to ...``, ``problem
talking to server ...``) go to the log as ``warning:`` lines; its action is
an access(5) action, applied as Postfix applies a policy reply
(check_table_result with ``policy query``). No answer, or with
smtputf8_enable an action that is not UTF-8 (``malformed UTF-8 in policy
server SERVER response: "ACTION"``), applies the service's default_action;
a default action that itself ends up asking a failing policy service
applies Postfix's built-in ``451 4.3.5 Server configuration problem``
instead of recursing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config.errors import ConfigError
from ..config.settings import Settings
from ..config.values import TIME_UNITS, split_list
from ..proto.policy import xtext
from .smtpd_access import STAGE_DATA, STAGE_EOD, SessionState

#: Postfix's DEF_SMTPD_POLICY_DEF_ACTION, for a default action that recurses
BUILTIN_DEFAULT_ACTION = "451 4.3.5 Server configuration problem"
PREFIX = "smtpd_policy_service_"
TRANSPORTS = ("inet", "unix", "local")
_TIMES = ("timeout", "max_idle", "max_ttl", "retry_delay")
_INTS = {"request_limit": 0, "try_limit": 1}  # name: minimum
_STRS = {"default_action": 1, "policy_context": 0}  # name: minimum length


@dataclass(frozen=True)
class PolicyService:
    """One policy server as a restriction list names it, with its settings."""

    name: str  # the argument as written (without its braces): the key
    endpoint: str  # transport:server, e.g. inet:127.0.0.1:10023, unix:private/policy
    timeout: int = 100
    max_idle: int = 300
    max_ttl: int = 1000
    request_limit: int = 0
    try_limit: int = 2
    retry_delay: int = 1
    default_action: str = BUILTIN_DEFAULT_ACTION
    policy_context: str = ""

    @property
    def transport(self) -> str:
        return self.endpoint.split(":", 1)[0]

    @property
    def server(self) -> str:
        """The endpoint without its transport: the name in Postfix's warnings."""
        return self.endpoint.split(":", 1)[1]


@dataclass
class PolicyAnswer:
    """What the client got: the action (None: no usable reply) and the
    warnings to log, in order."""

    action: str | None
    warnings: list[str] = field(default_factory=list)


PolicyQuery = Callable[[PolicyService, list[tuple[str, str]]], PolicyAnswer]


def _time(key: str, value: str) -> int:
    v = value.strip()
    number = v.rstrip("".join(TIME_UNITS))
    unit = v[len(number):]
    if not number.isdigit() or len(unit) > 1:
        raise ConfigError(f"{key}: bad time value or unit: {value}")
    seconds = int(number) * TIME_UNITS[unit or "s"]
    if seconds < 1:
        raise ConfigError(f"invalid {key}: {seconds} (min 1)")
    return seconds


def parse_policy_service(name: str, settings: Settings) -> PolicyService:
    """The :class:`PolicyService` for ``check_policy_service NAME`` (NAME
    without its braces, as hato's list splitting leaves it)."""
    s = settings
    items = split_list(name)
    if not items:
        raise ConfigError(f'empty policy service: "{name}"')
    endpoint = items[0]
    transport, sep, server = endpoint.partition(":")
    if not sep or not transport or not server:
        raise ConfigError(f'need service transport:endpoint instead of "{endpoint}"')
    if transport not in TRANSPORTS:
        raise ConfigError(f"invalid transport name: {transport} in service: {endpoint}")
    values: dict[str, object] = {
        "timeout": s.time(PREFIX + "timeout"),
        "max_idle": s.time(PREFIX + "max_idle"),
        "max_ttl": s.time(PREFIX + "max_ttl"),
        "retry_delay": s.time(PREFIX + "retry_delay"),
        "request_limit": s.int(PREFIX + "request_limit"),
        "try_limit": s.int(PREFIX + "try_limit"),
        "default_action": s.str(PREFIX + "default_action"),
        "policy_context": s.str(PREFIX + "policy_context"),
    }
    for item in items[1:]:
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq:
            raise ConfigError(f"malformed option: missing '=' after attribute name: "
                              f"\"...{item}...\"")
        if not key:
            raise ConfigError(f"malformed option: missing attribute name: \"...{item}...\"")
        if key in _TIMES:
            values[key] = _time(key, value)
        elif key in _INTS:
            if not value.lstrip("-").isdigit():
                raise ConfigError(f"bad numerical configuration: {key} = {value}")
            number = int(value)
            if number < _INTS[key]:
                raise ConfigError(f"invalid {key} parameter value {number} < {_INTS[key]}")
            values[key] = number
        elif key in _STRS:
            if len(value) < _STRS[key]:
                raise ConfigError(f'bad parameter value: {key} = "{value}"')
            values[key] = value
        else:
            raise ConfigError(f'unknown option: "{key} = {value}"')
    return PolicyService(name, endpoint, **values)  # type: ignore[arg-type]


def policy_instance(seqno: int, now: float | None = None) -> str:
    """The ``instance`` attribute of a mail transaction, as Postfix makes it
    at MAIL FROM: ``pid.seconds.microseconds.seqno`` in hexadecimal."""
    now = time.time() if now is None else now
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    return f"{os.getpid():x}.{sec:x}.{usec:x}.{seqno:x}"


class PolicyChecks(SessionState):
    """check_policy_service, mixed into SmtpdSession."""

    if TYPE_CHECKING:
        msg_size: int
        _policy_nesting: int
        _table_result: Callable[..., int]

    def policy_attributes(self, service: PolicyService | None = None) -> list[tuple[str, str]]:
        """The smtpd_access_policy request, in Postfix 3.7's order, then the
        two attributes Postfix 3.8 added (compatibility_level, mail_version)."""
        f = self.facts
        c = self.checks
        in_data = self.where in (STAGE_DATA, STAGE_EOD)
        trusted = f.tls_active and f.tls_ccert_verified
        context = service.policy_context if service is not None else c.policy_context
        return [
            ("request", "smtpd_access_policy"),
            ("protocol_state", self.where),
            ("protocol_name", f.protocol),
            ("client_address", f.addr),
            ("client_name", f.name),
            ("client_port", f.port),
            ("reverse_client_name", f.reverse_name),
            ("server_address", f.server_addr),
            ("server_port", f.server_port),
            ("helo_name", self._helo_name() or ""),
            ("sender", self.sender or ""),
            ("recipient", self.recipient or ""),
            ("recipient_count", str(self.rcpt_count if in_data else 0)),
            ("queue_id", f.queue_id),
            ("instance", f.instance),
            ("size", str(self.msg_size)),
            ("etrn_domain", self.etrn_name or ""),
            ("stress", "yes" if f.stress else ""),
            ("sasl_method", f.sasl_method or ""),
            ("sasl_username", f.sasl_username or ""),
            ("sasl_sender", f.sasl_sender or ""),
            ("ccert_subject", xtext(f.tls_ccert_subject) if trusted else ""),
            ("ccert_issuer", xtext(f.tls_ccert_issuer) if trusted else ""),
            ("ccert_fingerprint", f.tls_ccert_fingerprint if f.tls_active else ""),
            ("ccert_pubkey_fingerprint",
             f.tls_ccert_pkey_fingerprint if f.tls_active else ""),
            ("encryption_protocol", f.tls_protocol if f.tls_active else ""),
            ("encryption_cipher", f.tls_cipher if f.tls_active else ""),
            ("encryption_keysize", str(f.tls_cipher_bits if f.tls_active else 0)),
            ("policy_context", context),
            ("compatibility_level", c.compatibility_level),
            ("mail_version", c.mail_version),
        ]

    def _policy(self, server: str, reply_name: str, reply_class: str,
                def_acl: str | None) -> int:
        c = self.checks
        service = c.policy_services.get(server)
        if service is None:  # not registered at start-up (a test's checks)
            service = parse_policy_service(server, c.settings)
            c.policy_services[server] = service
        action: str | None = None
        if c.policy is None:
            self._warn(f"check_policy_service {server}: no policy client is available")
        else:
            try:
                answer = c.policy(service, self.policy_attributes(service))
            except Exception as err:  # noqa: BLE001 - any client failure is a soft failure
                why = f"problem talking to server {service.server}: {err}"
                answer = PolicyAnswer(None, [why])
            for warning in answer.warnings:
                self._warn(warning)
            action = answer.action
            if action is not None and c.utf8:
                try:
                    action.encode("utf-8")
                except UnicodeEncodeError:
                    shown = action.encode("utf-8", "surrogateescape").decode("latin-1")
                    self._warn(f'malformed UTF-8 in policy server {server} response: '
                               f'"{shown}"')
                    action = None
        if action is not None:
            # XXX as Postfix: a malformed reply gives bogus error messages
            action = action.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            return self._table_result(server, action, "policy query", reply_name,
                                      reply_class, def_acl)
        # Safety against recursive use of the default action.
        self._policy_nesting += 1
        try:
            default = service.default_action if self._policy_nesting == 1 \
                else BUILTIN_DEFAULT_ACTION
            return self._table_result(server, default, "policy query", reply_name,
                                      reply_class, def_acl)
        finally:
            self._policy_nesting -= 1


__all__ = [
    "BUILTIN_DEFAULT_ACTION",
    "PolicyAnswer",
    "PolicyChecks",
    "PolicyQuery",
    "PolicyService",
    "parse_policy_service",
    "policy_instance",
]

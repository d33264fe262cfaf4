"""Build smtpd's :class:`~hato.auth.SaslServer` from its settings.

``smtpd_sasl_type``:

``cyrus`` (the default)
    Reads Cyrus' ``$smtpd_sasl_path.conf`` (see :mod:`hato.auth.cyrusconf`).
    ``pwcheck_method: saslauthd`` checks PLAIN and LOGIN passwords through
    saslauthd's socket (``saslauthd_path``); ``auxprop`` with
    ``auxprop_plugin: sasldb`` serves every mechanism from hato's sasldb
    (``sasldb_path``, else ``$config_directory/sasldb.lmdb``). Several
    methods are tried in order, as libsasl does. CRAM-MD5 and SCRAM need the
    secret itself, which saslauthd cannot give: with saslauthd alone they
    are not offered (a warning says so). ``mech_list`` restricts and orders
    the mechanisms; ones hato does not implement are named and left out.
    The service name is ``smtpd_sasl_service``, the realm
    ``smtpd_sasl_local_domain``.
``dovecot``
    Asks Dovecot's auth service at ``smtpd_sasl_path`` (see
    :mod:`hato.auth.dovecot`).

Either way ``mechanisms(tls_active=...)`` applies
``smtpd_sasl_security_options`` (default ``noanonymous``) or, under TLS,
``smtpd_sasl_tls_security_options``. Problems are ConfigErrors;
:func:`plan_sasl` does all the checking without connecting or opening
anything, for ``hato check``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..proto.sasl import (MECHANISM_PROPERTIES, SECURITY_OPTIONS, SERVER_MECHANISMS, AuthTempFail,
                          allowed, make_exchange)
from . import SaslExchange, SaslServer
from .cyrusconf import CyrusConf, load_cyrus_conf
from .dovecot import AUTH_TIMEOUT, DovecotAuthClient, DovecotSaslServer, resolve_auth_path
from .saslauthd import SaslauthdClient

PLAINTEXT_MECHANISMS = ("PLAIN", "LOGIN")
SASL_TYPES = ("cyrus", "dovecot")


def security_options(settings, name: str) -> frozenset[str]:
    """The option words of *name*; an unknown word is a ConfigError."""
    words = [w.lower() for w in settings.list(name)]
    for word in words:
        if word not in SECURITY_OPTIONS:
            raise ConfigError(f"{name}: unknown SASL security option \"{word}\"; "
                              f"known: {', '.join(SECURITY_OPTIONS)}")
    return frozenset(words)


# -- the plan: everything checked, nothing opened ----------------------------

@dataclass
class SaslPlan:
    """What :func:`sasl_server_from_settings` would build."""

    sasl_type: str
    service: str
    realm: str
    security_options: frozenset[str]
    tls_security_options: frozenset[str]
    # cyrus
    cyrus: CyrusConf | None = None
    mechanisms: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)  # pwcheck methods hato will use, in order
    saslauthd_path: str = ""
    sasldb_path: str = ""
    # dovecot
    dovecot_path: str = ""
    warnings: list[str] = field(default_factory=list)
    errors: list[ConfigError] = field(default_factory=list)

    def check(self) -> None:
        if self.errors:
            raise self.errors[0]


def plan_sasl(settings) -> SaslPlan:
    """Read and check the SASL configuration of one smtpd service. Settings
    problems raise ConfigError; smtpd.conf problems are collected in the
    plan's *errors* (each with file and line) and *warnings*."""
    sasl_type = settings.str("smtpd_sasl_type").strip().lower()
    if sasl_type not in SASL_TYPES:
        raise ConfigError(f"smtpd_sasl_type: unsupported SASL server implementation: "
                          f"{sasl_type or '(empty)'}; hato has {' and '.join(SASL_TYPES)}")
    sec = security_options(settings, "smtpd_sasl_security_options")
    tls_sec = security_options(settings, "smtpd_sasl_tls_security_options")
    plan = SaslPlan(sasl_type, settings.str("smtpd_sasl_service") or "smtp",
                    settings.str("smtpd_sasl_local_domain"), sec, tls_sec)
    path = settings.str("smtpd_sasl_path")
    if sasl_type == "dovecot":
        if not path:
            raise ConfigError("smtpd_sasl_path: empty; set it to Dovecot's auth socket "
                              "(e.g. private/auth)")
        plan.dovecot_path = resolve_auth_path(path, settings.str("queue_directory"))
        return plan
    _plan_cyrus(plan, settings, path or "smtpd")
    return plan


def _plan_cyrus(plan: SaslPlan, settings, app_name: str) -> None:
    from .sasldb import default_path

    conf = load_cyrus_conf(app_name, cyrus_sasl_config_path=settings.str("cyrus_sasl_config_path"),
                           config_directory=settings.str("config_directory"))
    plan.cyrus = conf
    plan.errors.extend(conf.errors)
    plan.warnings.extend(conf.warnings)
    plan.methods = [m for m in conf.pwcheck_methods if m in ("saslauthd", "auxprop")]
    if "saslauthd" in plan.methods:
        plan.saslauthd_path = conf.saslauthd_path
    if "auxprop" in plan.methods:
        plan.sasldb_path = conf.sasldb_path or default_path(
            settings.str("config_directory"))
    have_secrets = bool(plan.sasldb_path)
    usable = ([m for m in SERVER_MECHANISMS if have_secrets or m in PLAINTEXT_MECHANISMS]
              if plan.methods else [])
    wanted = conf.mech_list
    where = conf.where("mech_list")
    if wanted is None:
        plan.mechanisms = usable
    else:
        plan.mechanisms = []
        for mech in wanted:
            if mech in plan.mechanisms:
                continue
            if mech in usable:
                plan.mechanisms.append(mech)
            elif mech in SERVER_MECHANISMS and plan.methods:
                plan.warnings.append(
                    f"{where}: {mech} cannot work through saslauthd (saslauthd checks "
                    f"plaintext passwords only; {mech} needs the secret itself): not offered; "
                    f"use pwcheck_method: auxprop with hato's sasldb, or Dovecot")
            elif mech not in SERVER_MECHANISMS:
                known = "" if mech in MECHANISM_PROPERTIES else "unknown "
                plan.warnings.append(f"{where}: mech_list: {known}mechanism {mech} is not "
                                     f"supported by hato: not offered")
    if not plan.mechanisms and plan.methods:
        plan.errors.append(ConfigError("no SASL authentication mechanisms", conf.path,
                                       conf.line("mech_list")))


# -- the Cyrus-compatible server ----------------------------------------------

class ChainVerifier:
    """libsasl's pwcheck_method list: each backend in turn until one says
    yes. When none does and one of them could not answer, the answer is
    "try later" rather than "no"."""

    def __init__(self, backends: list[object]):
        self.backends = backends

    def check_password(self, user: str, password: str) -> bool:
        temp: AuthTempFail | None = None
        for backend in self.backends:
            try:
                if backend.check_password(user, password):  # type: ignore[attr-defined]
                    return True
            except AuthTempFail as err:
                temp = err
        if temp is not None:
            raise temp
        return False


class CyrusSaslServer:
    """Mechanisms from hato's sans-IO cores over saslauthd and/or sasldb."""

    def __init__(self, mechanisms: list[str], *, password_verifier: object | None,
                 secret_verifier: object | None, hostname: str,
                 security_options: Iterable[str] = ("noanonymous",),
                 tls_security_options: Iterable[str] | None = None,
                 clock: Callable[[], float] = time.time, closers: Iterable[object] = (),
                 warnings: Iterable[str] = ()):
        self._mechanisms = [m.upper() for m in mechanisms]
        self._password_verifier = password_verifier
        self._secret_verifier = secret_verifier
        self.hostname = hostname
        self.security_options = frozenset(security_options)
        self.tls_security_options = (self.security_options if tls_security_options is None
                                     else frozenset(tls_security_options))
        self._clock = clock
        self._closers = list(closers)
        self.warnings = list(warnings)

    def mechanisms(self, *, tls_active: bool) -> list[str]:
        opts = self.tls_security_options if tls_active else self.security_options
        return [m for m in self._mechanisms if allowed(m, opts)]

    def start(self, mechanism: str, *, tls_active: bool, client_addr: str = "",
              client_name: str = "", local_addr: str = "") -> SaslExchange | None:
        mech = mechanism.upper()
        if mech not in self.mechanisms(tls_active=tls_active):
            return None
        verifier = (self._password_verifier if mech in PLAINTEXT_MECHANISMS
                    else self._secret_verifier)
        if verifier is None:
            return None
        return make_exchange(mech, verifier, hostname=self.hostname, now=self._clock())

    def close(self) -> None:
        for obj in self._closers:
            close = getattr(obj, "close", None)
            if close is not None:
                close()
        self._closers = []


def server_from_plan(plan: SaslPlan, settings, *, saslauthd_timeout: float = 30.0,
                     dovecot_timeout: float = AUTH_TIMEOUT) -> SaslServer:
    plan.check()
    if plan.sasl_type == "dovecot":
        client = DovecotAuthClient(plan.dovecot_path, timeout=dovecot_timeout)
        server = DovecotSaslServer(client, service=plan.service,
                                   security_options=plan.security_options,
                                   tls_security_options=plan.tls_security_options)
        server.warnings = list(plan.warnings)
        return server
    from .sasldb import Sasldb

    backends: list[object] = []
    sasldb = None
    for method in plan.methods:
        if method == "saslauthd":
            backends.append(SaslauthdClient(plan.saslauthd_path, saslauthd_timeout,
                                            service=plan.service, realm=plan.realm))
        elif method == "auxprop" and sasldb is None:
            sasldb = Sasldb(plan.sasldb_path,
                            default_realm=plan.realm or settings.str("myhostname"))
            backends.append(sasldb)
    password_verifier = backends[0] if len(backends) == 1 else ChainVerifier(backends)
    return CyrusSaslServer(plan.mechanisms, password_verifier=password_verifier,
                           secret_verifier=sasldb, hostname=settings.str("myhostname"),
                           security_options=plan.security_options,
                           tls_security_options=plan.tls_security_options,
                           closers=backends, warnings=plan.warnings)


def sasl_server_from_settings(settings, **kwargs) -> SaslServer:
    """The SaslServer for one smtpd service (created once per worker; its
    ``close()`` releases sockets and files). Raises ConfigError."""
    return server_from_plan(plan_sasl(settings), settings, **kwargs)


__all__ = ["ChainVerifier", "CyrusSaslServer", "SaslPlan", "plan_sasl", "security_options",
           "sasl_server_from_settings", "server_from_plan"]

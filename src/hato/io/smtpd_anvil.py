"""smtpd's per-client limits, counted by anvil (:mod:`hato.services.anvil`).

Postfix's checks, texts and places:

=========================================  ==========  =========================================
limit                                      where       reply
=========================================  ==========  =========================================
smtpd_client_connection_count_limit        connect     ``421 4.7.0 HOST Error: too many connections from ADDR``
smtpd_client_connection_rate_limit         connect     ``421 4.7.0 HOST Error: too many connections from ADDR``
smtpd_client_message_rate_limit            MAIL        ``450 4.7.1 Error: too much mail from ADDR``
smtpd_client_recipient_rate_limit          RCPT        ``450 4.7.1 Error: too many recipients from ADDR``
smtpd_client_new_tls_session_rate_limit    STARTTLS    ``421 4.7.0 HOST Error: too many new TLS sessions from NAME[ADDR]``
smtpd_client_auth_rate_limit               AUTH        ``450 4.7.1 Error: too many AUTH commands from ADDR``
=========================================  ==========  =========================================

each with its warning (``Connection concurrency limit exceeded: 4 from
host[addr] for service smtp``, ``Connection rate limit exceeded``,
``Message delivery request rate limit exceeded``, ``Recipient address rate
limit exceeded``, ``New TLS session rate limit exceeded``, ``AUTH command
rate limit exceeded``). Counters are kept per master.cf service name (or
``hato_anvil_service_name``) and client address (ident ``smtp:192.0.2.1``). Clients in
smtpd_client_event_limit_exceptions and those allowed to use XCLIENT are
neither counted nor limited. A limit of 0 turns its check off; anvil is
asked about connections whenever any limit is on, so that its rate windows
see every session.
"""

from __future__ import annotations

import os

from ..policy.hostlist import host_list
from ..proto import smtpd as P
from ..tables.base import TableRetry
from .anvil_client import AnvilClient

_LIMITS = {
    "count": "smtpd_client_connection_count_limit",
    "rate": "smtpd_client_connection_rate_limit",
    "message": "smtpd_client_message_rate_limit",
    "recipient": "smtpd_client_recipient_rate_limit",
    "newtls": "smtpd_client_new_tls_session_rate_limit",
    "auth": "smtpd_client_auth_rate_limit",
}

_WARNINGS = {
    "count": "Connection concurrency limit exceeded",
    "rate": "Connection rate limit exceeded",
    "message": "Message delivery request rate limit exceeded",
    "recipient": "Recipient address rate limit exceeded",
    "newtls": "New TLS session rate limit exceeded",
    "auth": "AUTH command rate limit exceeded",
}


class ClientLimits:
    """What one smtpd worker shares: the limits and its anvil client."""

    def __init__(self, settings, log, service: str, client: AnvilClient | None = None):
        self.log = log
        # hato_anvil_service_name: machines that share counters through Redis
        # but name the service differently in master.cf (10.0.0.1:25, …)
        self.service = settings.str("hato_anvil_service_name") or service
        self.hostname = settings.str("myhostname")
        self.limits = {k: settings.int(p) for k, p in _LIMITS.items()}
        self.exceptions = host_list(settings, "smtpd_client_event_limit_exceptions")
        path = os.path.join(settings.str("queue_directory"), "private", "anvil")
        self.client = client if client is not None else AnvilClient(path, log)

    @property
    def active(self) -> bool:
        return any(self.limits.values())

    def exempt(self, name: str, addr: str) -> bool:
        try:
            return self.exceptions.match(name, addr)
        except TableRetry as err:
            self.log.warning(f"smtpd_client_event_limit_exceptions: {err}")
            return False

    def session(self, addr: str, client: str, exempt: bool) -> SessionLimits:
        return SessionLimits(self, addr, client, exempt or not self.active)


class SessionLimits:
    """One session's dealings with anvil."""

    def __init__(self, limits: ClientLimits, addr: str, client: str, off: bool):
        self.shared = limits
        self.addr = addr
        self.client = client  # host[addr], as the warnings name it
        self.off = off
        self.ident = f"{limits.service}:{addr}"
        self.connected = False

    def _exceeded(self, what: str, value: int) -> None:
        self.shared.log.warning(f"{_WARNINGS[what]}: {value} from {self.client} "
                                f"for service {self.shared.service}")

    async def connect(self) -> P.Reply | None:
        """The 421 that ends the session, or None."""
        if self.off:
            return None
        reply = await self.shared.client.request("connect", self.ident)
        if reply is None or reply.int("status", -1) != 0:
            return None
        self.connected = True
        limits = self.shared.limits
        for what, value in (("count", reply.int("count")), ("rate", reply.int("rate"))):
            if limits[what] and value > limits[what]:
                self._exceeded(what, value)
                return P.Reply(421, "4.7.0", f"{self.shared.hostname} Error: too many "
                                             f"connections from {self.addr}")
        return None

    async def _rate(self, what: str) -> int | None:
        """The rate when it is over the limit (and warned about), else None."""
        limit = self.shared.limits[what]
        if self.off or not limit:
            return None
        reply = await self.shared.client.request(what, self.ident)
        if reply is None or reply.int("status", -1) != 0:
            return None
        rate = reply.int("rate")
        if rate > limit:
            self._exceeded(what, rate)
            return rate
        return None

    async def message(self) -> P.Reply | None:
        if await self._rate("message") is None:
            return None
        return P.Reply(450, "4.7.1", f"Error: too much mail from {self.addr}")

    async def recipient(self) -> P.Reply | None:
        if await self._rate("recipient") is None:
            return None
        return P.Reply(450, "4.7.1", f"Error: too many recipients from {self.addr}")

    async def auth(self) -> P.Reply | None:
        if await self._rate("auth") is None:
            return None
        return P.Reply(450, "4.7.1", f"Error: too many AUTH commands from {self.addr}")

    async def newtls(self) -> P.Reply | None:
        """After a handshake that made a new (not resumed) TLS session."""
        if await self._rate("newtls") is None:
            return None
        return P.Reply(421, "4.7.0", f"{self.shared.hostname} Error: too many new TLS "
                                     f"sessions from {self.client}")

    def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            self.shared.client.notify("disconnect", self.ident)

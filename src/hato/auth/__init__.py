"""SASL on the server side: what smtpd asks when a client says AUTH.

smtpd holds one :class:`SaslServer` per service (built from its settings by
:func:`hato.auth.server.sasl_server_from_settings`: ``smtpd_sasl_type``
``cyrus`` reads Cyrus' ``smtpd.conf`` and checks passwords through
saslauthd or hato's sasldb; ``dovecot`` asks Dovecot's auth service). For
each AUTH command it starts a :class:`SaslExchange` and feeds it the
client's responses (raw bytes, already base64-decoded) until it answers
:class:`Success` or :class:`Failure`. smtpd does the SMTP side: base64,
``334`` challenges, ``*`` cancel, ``235``/``535`` replies, error counting,
the failure delay, logging.

``step`` may block (a socket to saslauthd or Dovecot, an argon2 hash):
smtpd calls it in a worker thread. A backend that cannot answer now raises
nothing: it returns ``Failure(..., temporary=True)`` and smtpd replies
``454 4.7.0 Temporary authentication failure``.
"""

from __future__ import annotations

from typing import Protocol

# The step results are defined with the mechanisms in the sans-IO layer
# (proto may not import auth) and are the same classes here.
from ..proto.sasl import Challenge, Failure, Step, Success


class SaslExchange(Protocol):
    def step(self, response: bytes | None) -> Step:
        """The client's next response (None: AUTH had no initial response)."""


class SaslServer(Protocol):
    def mechanisms(self, *, tls_active: bool) -> list[str]:
        """Mechanisms to advertise (upper case), after
        smtpd_sasl_security_options / smtpd_sasl_tls_security_options."""

    def start(self, mechanism: str, *, tls_active: bool, client_addr: str = "",
              client_name: str = "", local_addr: str = "") -> SaslExchange | None:
        """A new exchange, or None when *mechanism* is not offered."""

    def close(self) -> None:
        """Release sockets and files."""


__all__ = ["Challenge", "Failure", "SaslExchange", "SaslServer", "Step", "Success"]

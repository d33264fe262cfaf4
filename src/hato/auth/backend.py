"""What a password backend offers the SASL mechanisms.

The mechanisms (:mod:`hato.proto.sasl`) ask a *verifier* for what they need;
a backend implements the protocols for the mechanisms it can serve:

* :class:`PasswordVerifier` — ``check_password(user, password) -> bool``
  (PLAIN, LOGIN): hato's sasldb (argon2id), saslauthd.
* :class:`CramMd5Verifier` — ``cram_md5_secret(user) -> HmacMd5State | None``
  (CRAM-MD5): hato's sasldb (stored HMAC-MD5 states). A backend that holds a
  plaintext key returns ``HmacMd5State.from_key(key)``.
* :class:`ScramVerifier` — ``scram_keys(user, mechanism) -> ScramKeys | None``
  (SCRAM-SHA-1, SCRAM-SHA-256): hato's sasldb.

Any of them raises :class:`AuthTempFail` when it cannot answer now; the
exchange then fails with ``temporary=True`` (smtpd: 454 4.7.0). *user* is
the login name as the client sent it; the backend applies its realm rules
(see :func:`split_user`).

These names are defined in the sans-IO layer, where the mechanisms live,
and are the same objects here.
"""

from __future__ import annotations

from ..proto.md5state import HmacMd5State
from ..proto.sasl import (
    AuthTempFail,
    CramMd5Verifier,
    PasswordVerifier,
    ScramKeys,
    ScramVerifier,
)


def split_user(login: str, default_realm: str) -> tuple[str, str]:
    """(user, realm) as Cyrus' ``_plug_parseuser`` splits a login name: at
    the first ``@``; without one, the realm is *default_realm*
    (``smtpd_sasl_local_domain``, else the server's host name)."""
    user, sep, realm = login.partition("@")
    if sep:
        return user, realm
    return login, default_realm


__all__ = [
    "AuthTempFail", "CramMd5Verifier", "HmacMd5State", "PasswordVerifier", "ScramKeys",
    "ScramVerifier", "split_user",
]

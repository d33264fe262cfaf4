"""SASL decisions of the smtp/lmtp client, pure: which ``smtp_sasl_password_maps``
keys to try, in Postfix's order, and which of the server's AUTH mechanisms
to use.

Password lookup (Postfix's smtp_sasl_passwd_lookup()):

1. with ``smtp_sender_dependent_authentication = yes`` (smtp only, never
   lmtp) and a non-null sender: the sender as mail_addr_find() tries it —
   ``user+ext@domain``, ``user@domain`` (without the
   ``recipient_delimiter`` extension), ``user+ext`` and ``user`` when the
   domain is local, then ``@domain``;
2. the remote host name (``session->host``: the MX host or the relay
   host, without ``[]`` or port);
3. the next-hop destination exactly as written (``session->dest``:
   ``[mail.isp.example]:587``, ``mail.isp.example:587``, ``example.com``).

So ``[host]:port`` matches only when the destination was written that way,
as SASL_README warns. The table value is ``username:password`` (split at the
first ``:``; a value without ``:`` is a user name with an empty password).
A lookup failure (the *lookup* callable raises) stops the search, so the
caller defers: a temporary error never silently skips to a wider key.

Mechanism choice: the server's list is filtered by
``smtp_sasl_mechanism_filter`` (a match list; the caller passes its
``match``), then by the security options — ``smtp_sasl_security_options``
in plaintext, ``smtp_sasl_tls_security_options`` over TLS,
``smtp_sasl_tls_verified_security_options`` over TLS with a verified
server certificate — with the mechanism properties hato's server side uses
(:data:`hato.proto.sasl.MECHANISM_PROPERTIES`). The strongest remaining
mechanism the client implements wins: SCRAM-SHA-256, SCRAM-SHA-1, CRAM-MD5,
PLAIN, LOGIN.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..proto.sasl import allowed as _allowed
from ..proto.sasl_client import CLIENT_MECHANISMS


@dataclass(frozen=True)
class SaslCredentials:
    username: str
    password: str
    key: str  # the table key that matched

    def __repr__(self) -> str:  # never show the password
        return f"SaslCredentials(username={self.username!r}, key={self.key!r})"


def sender_keys(sender: str, *, recipient_delimiter: str = "",
                local_domain: bool = False) -> list[str]:
    """The keys mail_addr_find() tries for *sender*, in order."""
    if not sender:
        return []
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = sender, ""
    keys = [sender]
    base = local
    if recipient_delimiter and local:
        cut = min((i for i in (local.find(d) for d in recipient_delimiter) if i > 0),
                  default=-1)
        if cut > 0:
            base = local[:cut]
            if domain:
                keys.append(f"{base}@{domain}")
    if local_domain or not domain:
        keys.append(local)
        if base != local:
            keys.append(base)
    if domain:
        keys.append(f"@{domain}")
    out: list[str] = []
    for key in keys:
        if key and key not in out:
            out.append(key)
    return out


def password_keys(*, host: str, dest: str, sender: str = "",
                  sender_dependent: bool = False, lmtp: bool = False,
                  recipient_delimiter: str = "", local_domain: bool = False) -> list[str]:
    """smtp_sasl_password_maps keys in Postfix's order (see the module doc).
    *host* is the remote host name, *dest* the next-hop destination as
    written in relayhost / transport_maps (``[host]:port`` form kept)."""
    keys: list[str] = []
    if sender_dependent and not lmtp and sender:
        keys.extend(sender_keys(sender, recipient_delimiter=recipient_delimiter,
                                local_domain=local_domain))
    for key in (host, dest):
        if key and key not in keys:
            keys.append(key)
    return keys


def split_password(value: str) -> tuple[str, str]:
    """``user:password`` → (user, password), split at the first ``:``."""
    user, _, password = value.partition(":")
    return user, password


def find_credentials(lookup: Callable[[str], str | None],
                     keys: Iterable[str]) -> SaslCredentials | None:
    """The first key *lookup* answers; None when none does. Exceptions of
    *lookup* (a table that cannot answer now) propagate."""
    for key in keys:
        value = lookup(key)
        if value is not None:
            user, password = split_password(value.strip())
            return SaslCredentials(user, password, key)
    return None


def security_options_name(*, tls: bool, verified: bool = False, prefix: str = "smtp") -> str:
    """The parameter whose security options apply to this session."""
    if tls and verified:
        return f"{prefix}_sasl_tls_verified_security_options"
    if tls:
        return f"{prefix}_sasl_tls_security_options"
    return f"{prefix}_sasl_security_options"


def parse_auth_list(text: str | Iterable[str]) -> list[str]:
    """The mechanisms of an EHLO ``AUTH`` (or ``AUTH=``) line, upper case,
    duplicates dropped, in the server's order."""
    words = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    out: list[str] = []
    for word in words:
        w = word.strip().upper()
        if w and w not in out:
            out.append(w)
    return out


def filter_mechanisms(offered: str | Iterable[str], *,
                      mechanism_filter: Callable[[str], bool] | None = None,
                      security_options: Iterable[str] = ()) -> list[str]:
    """The server's mechanisms that pass smtp_sasl_mechanism_filter (None or
    an empty filter: all) and the security options (unknown option words
    raise ValueError). Server order kept."""
    options = [o for o in security_options if o.strip()]
    out = []
    for mech in parse_auth_list(offered):
        if mechanism_filter is not None and not mechanism_filter(mech):
            continue
        if not _allowed(mech, options):
            continue
        out.append(mech)
    return out


def choose_mechanism(offered: str | Iterable[str], *,
                     mechanism_filter: Callable[[str], bool] | None = None,
                     security_options: Iterable[str] = (),
                     supported: Iterable[str] = CLIENT_MECHANISMS) -> str | None:
    """The mechanism to use, strongest first by *supported*'s order; None
    when nothing is left (Postfix then defers: "SASL authentication failed;
    cannot authenticate to server ...: no mechanism available")."""
    usable = set(filter_mechanisms(offered, mechanism_filter=mechanism_filter,
                                   security_options=security_options))
    for mech in supported:
        if mech.upper() in usable:
            return mech.upper()
    return None


def pattern_filter(patterns: Iterable[str]) -> Callable[[str], bool] | None:
    """A mechanism filter from plain patterns (names and ``!name``; first
    match decides; no match: refused), for callers without tables; None
    when *patterns* is empty (no filtering). Table and file entries are
    MatchList's job."""
    items = []
    for pattern in patterns:
        positive = True
        while pattern.startswith("!"):
            positive = not positive
            pattern = pattern[1:]
        if pattern:
            items.append((positive, pattern.upper()))
    if not items:
        return None

    def match(mech: str) -> bool:
        mech = mech.upper()
        for positive, name in items:
            if name == mech:
                return positive
        return False

    return match


__all__ = [
    "SaslCredentials", "choose_mechanism", "filter_mechanisms", "find_credentials",
    "parse_auth_list", "password_keys", "pattern_filter", "security_options_name",
    "sender_keys", "split_password",
]

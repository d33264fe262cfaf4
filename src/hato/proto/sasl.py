"""Server-side SASL mechanisms, sans-IO: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1,
SCRAM-SHA-256.

Each mechanism is a small state machine with one method,
``step(response) -> Challenge | Success | Failure``: *response* is the
client's data, already base64-decoded (``None`` when AUTH came without an
initial response). The SMTP side (base64, ``334``, ``*``) is smtpd's.

Passwords and secrets come from a *verifier* object handed in by the caller
(hato's sasldb, saslauthd, ...), checked structurally:

* PLAIN, LOGIN: ``check_password(user, password) -> bool``
* CRAM-MD5: ``cram_md5_secret(user) -> HmacMd5State | None``
* SCRAM-*: ``scram_keys(user, mechanism) -> ScramKeys | None``

A verifier that cannot answer now raises :class:`AuthTempFail`; the exchange
then ends in ``Failure(..., temporary=True)``. Malformed client input ends
in ``Failure("malformed ...")``, never in an exception. *user* is the name as
the client sent it (``bob`` or ``bob@example.org``); realms are the
verifier's business. Passwords are ``str``: bytes that are not UTF-8 arrive
``surrogateescape``-decoded, so ``password.encode("utf-8",
"surrogateescape")`` gives back the client's exact bytes.

Authorization identities: as Cyrus does without a proxy policy, an authzid
that is non-empty and differs from the authentication identity is refused,
unless the caller passes ``authorize(authcid, authzid) -> bool``.

This module reads no clock and does no I/O: CRAM-MD5's timestamp and the
host name come in as arguments. The step result types live here (proto is
the lowest layer) and are re-exported by :mod:`hato.auth`.

:data:`MECHANISM_PROPERTIES` and :func:`allowed` implement
``smtpd_sasl_security_options`` filtering with Cyrus' security flags.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from .md5state import HmacMd5State

# --------------------------------------------------------------------------
# Results of a step (re-exported by hato.auth)


@dataclass(frozen=True)
class Challenge:
    """Send ``334 base64(data)`` and wait for the client's next line."""

    data: bytes


@dataclass(frozen=True)
class Success:
    """Authenticated as *username*. *data* is final server data to send in a
    last ``334`` before ``235`` (RFC 4954 §4: e.g. SCRAM's server-final
    message), or None."""

    username: str
    data: bytes | None = None


@dataclass(frozen=True)
class Failure:
    """Authentication failed. *reason* goes into the log line (never a
    password); *temporary* means the backend could not answer (4xx)."""

    reason: str
    temporary: bool = False


Step = Challenge | Success | Failure


# --------------------------------------------------------------------------
# Verifiers


class AuthTempFail(Exception):
    """The verifier cannot answer now (backend down, database unreadable)."""


class ScramKeys(NamedTuple):
    """What a SCRAM server stores (RFC 5802 §3): never the password."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


class PasswordVerifier(Protocol):
    def check_password(self, user: str, password: str) -> bool:
        """True when *password* is *user*'s. May raise AuthTempFail."""


class CramMd5Verifier(Protocol):
    def cram_md5_secret(self, user: str) -> HmacMd5State | None:
        """*user*'s HMAC-MD5 key states, or None (unknown user, or no
        CRAM-MD5 secret stored). May raise AuthTempFail."""


class ScramVerifier(Protocol):
    def scram_keys(self, user: str, mechanism: str) -> ScramKeys | None:
        """*user*'s keys for *mechanism* (``SCRAM-SHA-1``/``SCRAM-SHA-256``),
        or None. May raise AuthTempFail."""


Authorize = Callable[[str, str], bool]

AUTH_FAILURE = "authentication failure"


def _decode_name(raw: bytes, what: str) -> str | Failure:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Failure(f"malformed {what}: not UTF-8")
    if "\0" in name:
        return Failure(f"malformed {what}: contains NUL")
    return name


def _decode_password(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _authzid_ok(authcid: str, authzid: str, authorize: Authorize | None) -> bool:
    if not authzid or authzid == authcid:
        return True
    return authorize is not None and bool(authorize(authcid, authzid))


class _Exchange:
    mechanism = ""

    def __init__(self) -> None:
        self._done = False

    def _end(self, result: Step) -> Step:
        if not isinstance(result, Challenge):
            self._done = True
        return result

    def step(self, response: bytes | None) -> Step:
        if self._done:
            return Failure("malformed: the exchange is over")
        try:
            return self._end(self._step(response))
        except AuthTempFail as err:
            self._done = True
            detail = str(err)
            return Failure(f"temporary failure{': ' + detail if detail else ''}", temporary=True)

    def _step(self, response: bytes | None) -> Step:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------
# PLAIN (RFC 4616) and LOGIN


class Plain(_Exchange):
    """``[authzid] NUL authcid NUL passwd`` in one response."""

    mechanism = "PLAIN"

    def __init__(self, verifier: PasswordVerifier, *, authorize: Authorize | None = None):
        super().__init__()
        self.verifier = verifier
        self.authorize = authorize
        self._asked = False

    def _step(self, response: bytes | None) -> Step:
        if response is None:
            if self._asked:
                return Failure("malformed response: missing")
            self._asked = True
            return Challenge(b"")
        parts = response.split(b"\0")
        if len(parts) != 3:
            return Failure("malformed PLAIN response: want authzid NUL authcid NUL passwd")
        authzid = _decode_name(parts[0], "authorization identity")
        if isinstance(authzid, Failure):
            return authzid
        authcid = _decode_name(parts[1], "user name")
        if isinstance(authcid, Failure):
            return authcid
        if not authcid:
            return Failure("malformed PLAIN response: empty user name")
        if not parts[2]:
            return Failure("malformed PLAIN response: empty password")
        if not self.verifier.check_password(authcid, _decode_password(parts[2])):
            return Failure(AUTH_FAILURE)
        if not _authzid_ok(authcid, authzid, self.authorize):
            return Failure(f"user {authcid} is not authorized to act as {authzid}")
        return Success(authzid or authcid)


class Login(_Exchange):
    """The LOGIN mechanism: ``Username:`` then ``Password:`` challenges."""

    mechanism = "LOGIN"
    USERNAME = b"Username:"
    PASSWORD = b"Password:"

    def __init__(self, verifier: PasswordVerifier):
        super().__init__()
        self.verifier = verifier
        self._user: str | None = None
        self._asked_user = False

    def _step(self, response: bytes | None) -> Step:
        if self._user is None:
            if response is None:
                if self._asked_user:
                    return Failure("malformed response: missing")
                self._asked_user = True
                return Challenge(self.USERNAME)
            user = _decode_name(response, "user name")
            if isinstance(user, Failure):
                return user
            if not user:
                return Failure("malformed LOGIN response: empty user name")
            self._user = user
            return Challenge(self.PASSWORD)
        if response is None:
            return Failure("malformed response: missing")
        if not response:
            return Failure("malformed LOGIN response: empty password")
        if not self.verifier.check_password(self._user, _decode_password(response)):
            return Failure(AUTH_FAILURE)
        return Success(self._user)


# --------------------------------------------------------------------------
# CRAM-MD5 (RFC 2195)


class CramMd5(_Exchange):
    """Challenge ``<random.timestamp@hostname>``; response ``user hexdigest``."""

    mechanism = "CRAM-MD5"

    def __init__(self, verifier: CramMd5Verifier, *, hostname: str, now: float,
                 random: int | None = None):
        super().__init__()
        self.verifier = verifier
        if random is None:
            random = secrets.randbits(63)
        self.challenge = f"<{random}.{int(now)}@{hostname}>".encode("utf-8", "replace")
        self._sent = False

    def _step(self, response: bytes | None) -> Step:
        if not self._sent:
            if response:
                return Failure("malformed CRAM-MD5: the client may not send an "
                               "initial response")
            self._sent = True
            return Challenge(self.challenge)
        if response is None:
            return Failure("malformed response: missing")
        user_raw, sep, digest_raw = response.rpartition(b" ")
        if not sep or not user_raw:
            return Failure("malformed CRAM-MD5 response: want user SP digest")
        user = _decode_name(user_raw, "user name")
        if isinstance(user, Failure):
            return user
        digest = digest_raw.lower()
        if len(digest) != 32 or any(c not in b"0123456789abcdef" for c in digest):
            return Failure("malformed CRAM-MD5 response: the digest is not 32 hex digits")
        secret = self.verifier.cram_md5_secret(user)
        if secret is None:
            # The work is done anyway so that timing does not tell.
            HmacMd5State(b"\0" * 16, b"\0" * 16).hexdigest(self.challenge)
            return Failure("user not found or no CRAM-MD5 secret")
        expected = secret.hexdigest(self.challenge).encode("ascii")
        if not hmac.compare_digest(expected, digest):
            return Failure(AUTH_FAILURE)
        return Success(user)


# --------------------------------------------------------------------------
# SCRAM (RFC 5802, RFC 7677), without channel binding

SCRAM_HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
_MOCK_KEY = secrets.token_bytes(32)
_MOCK_ITERATIONS = 4096


def scram_keys_from_salted(hash_name: str, salted_password: bytes) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) from SaltedPassword."""
    client_key = hmac.digest(salted_password, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    server_key = hmac.digest(salted_password, b"Server Key", hash_name)
    return stored_key, server_key


def scram_keys_from_password(mechanism: str, password: bytes, salt: bytes,
                             iterations: int) -> ScramKeys:
    """What a server stores for *password* (already SASLprep'ed and UTF-8)."""
    hash_name = SCRAM_HASHES[mechanism]
    salted = hashlib.pbkdf2_hmac(hash_name, password, salt, iterations)
    stored_key, server_key = scram_keys_from_salted(hash_name, salted)
    return ScramKeys(salt, stored_key, server_key, iterations)


def _saslname(value: str) -> str | None:
    """Undo RFC 5802's ``=2C``/``=3D`` escapes; None when malformed."""
    out = []
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "=":
            code = value[i + 1:i + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                return None
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Scram(_Exchange):
    """SCRAM-SHA-1 / SCRAM-SHA-256 server, gs2 header ``n,,`` or ``y,,``
    (no channel binding; ``p=`` is refused)."""

    def __init__(self, verifier: ScramVerifier, mechanism: str = "SCRAM-SHA-256", *,
                 authorize: Authorize | None = None, nonce: str | None = None):
        super().__init__()
        if mechanism not in SCRAM_HASHES:
            raise ValueError(f"unknown SCRAM mechanism {mechanism}")
        self.mechanism = mechanism
        self.hash_name = SCRAM_HASHES[mechanism]
        self.verifier = verifier
        self.authorize = authorize
        self.server_nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
        self._stage = 0
        self._asked = False
        self._keys: ScramKeys | None = None
        self._known = False
        self._user = ""
        self._authzid = ""
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._nonce = ""

    def _step(self, response: bytes | None) -> Step:
        if self._stage == 0:
            if response is None:
                if self._asked:
                    return Failure("malformed response: missing")
                self._asked = True
                return Challenge(b"")
            return self._client_first(response)
        if response is None:
            return Failure("malformed response: missing")
        return self._client_final(response)

    def _client_first(self, response: bytes) -> Step:
        try:
            text = response.decode("utf-8")
        except UnicodeDecodeError:
            return Failure("malformed SCRAM client-first: not UTF-8")
        parts = text.split(",")
        if len(parts) < 4:
            return Failure("malformed SCRAM client-first message")
        flag, authz = parts[0], parts[1]
        if flag.startswith("p="):
            return Failure("malformed SCRAM client-first: channel binding is not supported")
        if flag not in ("n", "y"):
            return Failure("malformed SCRAM client-first: bad gs2 flag")
        if authz:
            if not authz.startswith("a="):
                return Failure("malformed SCRAM client-first: bad authzid")
            authzid = _saslname(authz[2:])
            if authzid is None or not authzid:
                return Failure("malformed SCRAM client-first: bad authzid")
            self._authzid = authzid
        bare = parts[2:]
        if bare[0].startswith("m="):
            return Failure("malformed SCRAM client-first: mandatory extension not supported")
        if not bare[0].startswith("n=") or not bare[1].startswith("r="):
            return Failure("malformed SCRAM client-first: want n=user,r=nonce")
        user = _saslname(bare[0][2:])
        if user is None or not user or "\0" in user:
            return Failure("malformed SCRAM client-first: bad user name")
        client_nonce = bare[1][2:]
        if not client_nonce or any(not (0x21 <= ord(c) <= 0x7E) for c in client_nonce):
            return Failure("malformed SCRAM client-first: bad nonce")
        self._user = user
        self._gs2_header = f"{flag},{authz},"
        self._client_first_bare = ",".join(bare)
        keys = self.verifier.scram_keys(user, self.mechanism)
        if keys is None:
            # Go on with made-up but stable keys: the client learns that the
            # user does not exist no sooner than that the password is wrong.
            salt = hmac.digest(_MOCK_KEY, f"{self.mechanism}\0{user}".encode(), "sha256")[:16]
            fake = hmac.digest(_MOCK_KEY, salt, self.hash_name)
            keys = ScramKeys(salt, fake, fake, _MOCK_ITERATIONS)
        else:
            self._known = True
        self._keys = keys
        self._nonce = client_nonce + self.server_nonce
        self._server_first = f"r={self._nonce},s={_b64(keys.salt)},i={int(keys.iterations)}"
        self._stage = 1
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, response: bytes) -> Step:
        try:
            text = response.decode("ascii")
        except UnicodeDecodeError:
            return Failure("malformed SCRAM client-final: not ASCII")
        without_proof, sep, proof_attr = text.rpartition(",")
        if not sep or not proof_attr.startswith("p="):
            return Failure("malformed SCRAM client-final: no proof")
        attrs = without_proof.split(",")
        if len(attrs) < 2 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
            return Failure("malformed SCRAM client-final: want c=...,r=...")
        try:
            cbind = base64.b64decode(attrs[0][2:], validate=True)
            proof = base64.b64decode(proof_attr[2:], validate=True)
        except (binascii.Error, ValueError):
            return Failure("malformed SCRAM client-final: bad base64")
        if cbind != self._gs2_header.encode("utf-8"):
            return Failure("malformed SCRAM client-final: channel binding data mismatch")
        if not hmac.compare_digest(attrs[1][2:].encode("ascii"), self._nonce.encode("ascii")):
            return Failure("malformed SCRAM client-final: nonce mismatch")
        keys = self._keys
        assert keys is not None
        if len(proof) != len(keys.stored_key):
            return Failure("malformed SCRAM client-final: bad proof length")
        auth_message = ",".join((self._client_first_bare, self._server_first,
                                 without_proof)).encode("utf-8")
        signature = hmac.digest(keys.stored_key, auth_message, self.hash_name)
        client_key = bytes(a ^ b for a, b in zip(proof, signature))
        computed = hashlib.new(self.hash_name, client_key).digest()
        if not hmac.compare_digest(computed, keys.stored_key) or not self._known:
            return Failure(AUTH_FAILURE if self._known else "user not found")
        if not _authzid_ok(self._user, self._authzid, self.authorize):
            return Failure(f"user {self._user} is not authorized to act as {self._authzid}")
        server_signature = hmac.digest(keys.server_key, auth_message, self.hash_name)
        return Success(self._authzid or self._user,
                       data=f"v={_b64(server_signature)}".encode("ascii"))


# --------------------------------------------------------------------------
# The catalogue and smtpd_sasl_security_options

#: The mechanisms this module implements, strongest first.
SERVER_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN")

#: Each mechanism's weaknesses and features, in Dovecot's words (what its auth
#: service announces in ``MECH`` lines), derived from Cyrus' security flags:
#: ``plaintext`` (lacks SASL_SEC_NOPLAINTEXT), ``active`` (lacks NOACTIVE),
#: ``dictionary`` (lacks NODICTIONARY), ``anonymous`` (lacks NOANONYMOUS),
#: ``mutual-auth`` and ``forward-secrecy`` (has them).
MECHANISM_PROPERTIES: dict[str, frozenset[str]] = {
    "PLAIN": frozenset({"plaintext", "active", "dictionary"}),
    "LOGIN": frozenset({"plaintext", "active", "dictionary"}),
    "CRAM-MD5": frozenset({"active", "dictionary"}),
    "DIGEST-MD5": frozenset({"active", "dictionary", "mutual-auth"}),
    "SCRAM-SHA-1": frozenset({"dictionary", "mutual-auth"}),
    "SCRAM-SHA-256": frozenset({"dictionary", "mutual-auth"}),
    "SCRAM-SHA-1-PLUS": frozenset({"dictionary", "mutual-auth"}),
    "SCRAM-SHA-256-PLUS": frozenset({"dictionary", "mutual-auth"}),
    "NTLM": frozenset({"active", "dictionary"}),
    "OTP": frozenset({"active", "dictionary", "forward-secrecy"}),
    "GSSAPI": frozenset({"dictionary", "mutual-auth"}),
    "GS2-KRB5": frozenset({"dictionary", "mutual-auth"}),
    "EXTERNAL": frozenset({"active"}),
    "ANONYMOUS": frozenset({"anonymous", "active", "dictionary"}),
}
_UNKNOWN = frozenset({"plaintext", "active", "dictionary", "anonymous"})

#: smtpd_sasl_security_options words: a weakness the mechanism may not have,
#: or a feature it must have.
SECURITY_OPTIONS = {
    "noplaintext": ("plaintext", False),
    "noactive": ("active", False),
    "nodictionary": ("dictionary", False),
    "noanonymous": ("anonymous", False),
    "mutual_auth": ("mutual-auth", True),
    "forward_secrecy": ("forward-secrecy", True),
}


def allowed_properties(properties: Iterable[str], options: Iterable[str]) -> bool:
    """Whether a mechanism with *properties* passes *options*
    (``smtpd_sasl_security_options`` words). Unknown words raise ValueError."""
    props = {p.lower() for p in properties}
    for option in options:
        word = option.strip().lower()
        if not word:
            continue
        try:
            prop, required = SECURITY_OPTIONS[word]
        except KeyError:
            raise ValueError(f"unknown SASL security option: {option}") from None
        if (prop in props) != required:
            return False
    return True


def allowed(mechanism: str, options: Iterable[str]) -> bool:
    """Whether *mechanism* passes ``smtpd_sasl_security_options`` *options*.
    A mechanism not in :data:`MECHANISM_PROPERTIES` counts as weak in every
    way. Unknown option words raise ValueError."""
    props = MECHANISM_PROPERTIES.get(mechanism.upper(), _UNKNOWN)
    return allowed_properties(props, options)


def make_exchange(mechanism: str, verifier: object, *, hostname: str, now: float,
                  authorize: Authorize | None = None) -> _Exchange | None:
    """A new exchange for *mechanism* (upper case) over *verifier*, or None
    when this module does not implement it."""
    mech = mechanism.upper()
    if mech == "PLAIN":
        return Plain(verifier, authorize=authorize)  # type: ignore[arg-type]
    if mech == "LOGIN":
        return Login(verifier)  # type: ignore[arg-type]
    if mech == "CRAM-MD5":
        return CramMd5(verifier, hostname=hostname, now=now)  # type: ignore[arg-type]
    if mech in SCRAM_HASHES:
        return Scram(verifier, mech, authorize=authorize)  # type: ignore[arg-type]
    return None


__all__ = [
    "AUTH_FAILURE", "AuthTempFail", "Authorize", "Challenge", "CramMd5", "CramMd5Verifier",
    "Failure", "HmacMd5State", "Login", "MECHANISM_PROPERTIES", "PasswordVerifier", "Plain",
    "SCRAM_HASHES", "SECURITY_OPTIONS", "SERVER_MECHANISMS", "Scram", "ScramKeys",
    "ScramVerifier", "Step", "Success", "allowed", "allowed_properties", "make_exchange",
    "scram_keys_from_password", "scram_keys_from_salted",
]

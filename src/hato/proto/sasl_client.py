"""Client-side SASL mechanisms, sans-IO: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1,
SCRAM-SHA-256 — what the smtp/lmtp delivery agents use to authenticate to a
relay (``smtp_sasl_auth_enable``).

Each mechanism is a small object:

* ``initial_response() -> bytes | None``: the data to send with the AUTH
  command (base64 by the caller; ``b""`` is sent as ``=``), or None when the
  mechanism waits for the server's first challenge;
* ``step(challenge) -> bytes``: the server's ``334`` data (already
  base64-decoded) in, the client's next response out. A challenge that makes
  no sense, or a SCRAM server signature that does not verify, raises
  :class:`SaslClientError` (the caller then sends ``*`` and defers, as
  Postfix: ``SASL authentication failed; cannot authenticate to server
  ...``).
* ``complete``: True once the mechanism has nothing more to say; for SCRAM
  it also means the server proved it knows the password (mutual auth).

The SMTP side (``AUTH``, ``334``, base64) is the client core's business.
SCRAM uses scramp's client (SASLprep of the user name and password);
scramp is imported when a SCRAM client is made. No I/O, no clock.
"""

from __future__ import annotations

import hashlib
import hmac

#: The mechanisms this module implements, strongest first (the order in
#: which :func:`hato.policy.smtp_sasl.choose_mechanism` prefers them).
CLIENT_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN")


class SaslClientError(Exception):
    """The server's challenge is malformed or fails verification."""


class ClientMechanism:
    name = ""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.password = password
        self.complete = False

    def initial_response(self) -> bytes | None:
        return None

    def step(self, challenge: bytes) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def _over(self) -> SaslClientError:
        return SaslClientError(f"{self.name}: unexpected challenge after the exchange ended")


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class PlainClient(ClientMechanism):
    """RFC 4616: ``authzid NUL authcid NUL passwd``, sent as the initial
    response (or after an empty ``334`` when the caller sent none)."""

    name = "PLAIN"

    def __init__(self, username: str, password: str, authzid: str = "") -> None:
        super().__init__(username, password)
        self.authzid = authzid

    def _message(self) -> bytes:
        self.complete = True
        return b"\0".join((_utf8(self.authzid), _utf8(self.username), _utf8(self.password)))

    def initial_response(self) -> bytes | None:
        return self._message()

    def step(self, challenge: bytes) -> bytes:
        if self.complete:
            raise self._over()
        if challenge:
            raise SaslClientError("PLAIN: the server's challenge is not empty")
        return self._message()


class LoginClient(ClientMechanism):
    """The LOGIN mechanism: the user name at the first challenge
    (``Username:``), the password at the second (``Password:``). The
    prompts' wording varies between servers, so only their count matters."""

    name = "LOGIN"

    def __init__(self, username: str, password: str) -> None:
        super().__init__(username, password)
        self._steps = 0

    def step(self, challenge: bytes) -> bytes:
        self._steps += 1
        if self._steps == 1:
            return _utf8(self.username)
        if self._steps == 2:
            self.complete = True
            return _utf8(self.password)
        raise self._over()


class CramMd5Client(ClientMechanism):
    """RFC 2195: the challenge ``<...@host>``; the response ``user
    hex(HMAC-MD5(password, challenge))``."""

    name = "CRAM-MD5"

    def step(self, challenge: bytes) -> bytes:
        if self.complete:
            raise self._over()
        if not challenge:
            raise SaslClientError("CRAM-MD5: empty challenge")
        digest = hmac.new(_utf8(self.password), challenge, hashlib.md5).hexdigest()
        self.complete = True
        return _utf8(self.username) + b" " + digest.encode("ascii")


class ScramClient(ClientMechanism):
    """RFC 5802 / RFC 7677 without channel binding (gs2 header ``n,,``).

    step 1: server-first in, client-final out; step 2: server-final
    (``v=...``) in, verified, ``b""`` out (the empty line RFC 4954 asks for
    before ``235``). A server-final ``e=...`` or a wrong signature raises."""

    def __init__(self, username: str, password: str, mechanism: str = "SCRAM-SHA-256", *,
                 nonce: str | None = None) -> None:
        super().__init__(username, password)
        mech = mechanism.upper()
        if mech not in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
            raise ValueError(f"unsupported SCRAM mechanism {mechanism}")
        self.name = mech
        import scramp

        self._exc = scramp.ScramException
        try:
            self._client = scramp.ScramClient([mech], username, password, c_nonce=nonce)
        except scramp.ScramException as err:
            raise SaslClientError(f"{mech}: {err}") from None
        self._stage = 0

    def initial_response(self) -> bytes | None:
        if self._stage != 0:
            raise SaslClientError(f"{self.name}: initial response asked twice")
        self._stage = 1
        return self._client.get_client_first().encode("utf-8")

    def step(self, challenge: bytes) -> bytes:
        if self._stage == 0:
            if challenge:
                raise SaslClientError(f"{self.name}: the server spoke first with data")
            return self.initial_response() or b""
        try:
            text = challenge.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslClientError(f"{self.name}: challenge is not UTF-8") from None
        if self._stage == 1:
            try:
                self._client.set_server_first(text)
                final = self._client.get_client_final()
            except (self._exc, ValueError, IndexError, KeyError) as err:
                raise SaslClientError(f"{self.name}: bad server-first message: {err}") from None
            self._stage = 2
            return final.encode("utf-8")
        if self._stage == 2:
            if text.startswith("e="):
                raise SaslClientError(f"{self.name}: server error: {text[2:]}")
            try:
                self._client.set_server_final(text)
            except (self._exc, ValueError, IndexError, KeyError) as err:
                raise SaslClientError(f"{self.name}: bad server signature: {err}") from None
            self._stage = 3
            self.complete = True
            return b""
        raise self._over()


def make_client(mechanism: str, username: str, password: str) -> ClientMechanism:
    """A client for *mechanism* (any case); ValueError when not implemented."""
    mech = mechanism.upper()
    if mech == "PLAIN":
        return PlainClient(username, password)
    if mech == "LOGIN":
        return LoginClient(username, password)
    if mech == "CRAM-MD5":
        return CramMd5Client(username, password)
    if mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        return ScramClient(username, password, mech)
    raise ValueError(f"unsupported SASL client mechanism: {mechanism}")


__all__ = [
    "CLIENT_MECHANISMS", "ClientMechanism", "CramMd5Client", "LoginClient", "PlainClient",
    "SaslClientError", "ScramClient", "make_client",
]

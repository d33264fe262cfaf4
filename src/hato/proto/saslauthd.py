"""The saslauthd socket protocol, sans-IO.

One request per connection over a UNIX stream socket. The client sends four
*counted strings* — login, password, service, realm — each a big-endian
``uint16`` length followed by that many bytes (no NUL). The server answers
with one counted string that starts ``OK`` or ``NO``, optionally followed by
a space and a text, and closes the connection.

Facts checked against Debian's saslauthd 2.1.28:

* each field may be at most ``MAX_REQ_LEN`` = 256 bytes
  (``saslauthd-main.h``); a longer one gets the reply ``NO `` (three bytes,
  with the space) as soon as its length has been read;
* an empty login or password gets ``NO NULL login received`` /
  ``NO NULL password received``;
* the reply carries no NUL: ``OK``, ``NO Incorrect password``;
* saslauthd keeps C strings: a password ``secret\\0junk`` is checked as
  ``secret``. :func:`encode_request` therefore refuses NUL in any field, and
  :class:`RequestReader` (for a saslauthd-compatible server) rejects it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MAX_REQ_LEN = 256
FIELDS = ("login", "password", "service", "realm")

# Replies saslauthd itself sends when a request is refused before any check.
REPLY_TOO_LONG = b"\x00\x03NO "


class SaslauthdProtocolError(ValueError):
    """A request or reply that does not follow the protocol."""


def _field(name: str, value: str | bytes, limit: int) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if b"\0" in data:
        raise SaslauthdProtocolError(f"saslauthd: NUL in {name}")
    if len(data) > limit:
        raise SaslauthdProtocolError(f"saslauthd: {name} longer than {limit} bytes")
    return struct.pack(">H", len(data)) + data


def encode_request(login: str | bytes, password: str | bytes, service: str | bytes,
                   realm: str | bytes = "", *, max_field: int = MAX_REQ_LEN) -> bytes:
    """The bytes of one request. Raises SaslauthdProtocolError for a field
    saslauthd would refuse or misread (longer than *max_field*, or with NUL)."""
    return b"".join(_field(name, value, max_field)
                    for name, value in zip(FIELDS, (login, password, service, realm)))


@dataclass(frozen=True)
class SaslauthdRequest:
    login: bytes
    password: bytes
    service: bytes
    realm: bytes

    def __repr__(self) -> str:  # never show the password
        return (f"SaslauthdRequest(login={self.login!r}, password=<{len(self.password)} bytes>, "
                f"service={self.service!r}, realm={self.realm!r})")


@dataclass(frozen=True)
class RequestError:
    """The request cannot be served. *field* names the offending field;
    *reply* is what saslauthd sends back for it (None: just close)."""

    field: str
    message: str
    reply: bytes | None


class RequestReader:
    """Reads one request. :meth:`feed` bytes as they arrive; it returns
    None while more bytes are needed, then a :class:`SaslauthdRequest` or a
    :class:`RequestError`, and the same result again for any later call.
    :meth:`eof` says what an early end of the stream means."""

    def __init__(self, max_field: int = MAX_REQ_LEN):
        self.max_field = max_field
        self._buf = bytearray()
        self._fields: list[bytes] = []
        self._need: int | None = None  # length of the field being read, None: reading its count
        self._result: SaslauthdRequest | RequestError | None = None

    @property
    def done(self) -> bool:
        return self._result is not None

    def feed(self, data: bytes) -> SaslauthdRequest | RequestError | None:
        if self._result is not None:
            return self._result
        self._buf += data
        while self._result is None:
            name = FIELDS[len(self._fields)]
            if self._need is None:
                if len(self._buf) < 2:
                    return None
                (count,) = struct.unpack(">H", bytes(self._buf[:2]))
                del self._buf[:2]
                if count > self.max_field:
                    self._result = RequestError(
                        name, f"{name} exceeded MAX_REQ_LEN: {self.max_field}", REPLY_TOO_LONG)
                    break
                self._need = count
            if len(self._buf) < self._need:
                return None
            value = bytes(self._buf[:self._need])
            del self._buf[:self._need]
            self._need = None
            if b"\0" in value:
                self._result = RequestError(name, f"NUL in {name}", encode_reply(False, ""))
                break
            self._fields.append(value)
            if len(self._fields) == 4:
                login, password, service, realm = self._fields
                if not login:
                    self._result = RequestError("login", "NULL login received",
                                                encode_reply(False, "NULL login received"))
                elif not password:
                    self._result = RequestError("password", "NULL password received",
                                                encode_reply(False, "NULL password received"))
                else:
                    self._result = SaslauthdRequest(login, password, service, realm)
        self._buf.clear()
        return self._result

    def eof(self) -> RequestError:
        """The peer closed before a whole request: saslauthd just closes."""
        if isinstance(self._result, RequestError):
            return self._result
        name = FIELDS[min(len(self._fields), 3)]
        return RequestError(name, f"connection closed while reading {name}", None)


def encode_reply(ok: bool, text: str = "") -> bytes:
    """``OK`` / ``NO`` with an optional text, as a counted string."""
    word = b"OK" if ok else b"NO"
    body = word + (b" " + text.encode("utf-8", "replace") if text else b"")
    body = body.replace(b"\0", b"")[:0xFFFF]
    return struct.pack(">H", len(body)) + body


def parse_reply(data: bytes) -> tuple[bool, str]:
    """The whole reply (count and body) → (ok, text). Libsasl's rule: the
    answer is OK exactly when the body starts with ``OK``; anything shorter
    than two bytes is a protocol error. A trailing NUL (older servers) and
    bytes beyond the count are ignored."""
    if len(data) < 2:
        raise SaslauthdProtocolError("saslauthd: short reply")
    (count,) = struct.unpack(">H", data[:2])
    body = data[2:2 + count]
    if count < 2 or len(body) < count:
        raise SaslauthdProtocolError("saslauthd: bad reply")
    body = body.split(b"\0", 1)[0]
    ok = body.startswith(b"OK")
    text = body[2:].lstrip(b" ").decode("utf-8", "replace")
    return ok, text


def reply_length(data: bytes) -> int | None:
    """How many bytes the whole reply takes, once its count has arrived."""
    if len(data) < 2:
        return None
    return 2 + struct.unpack(">H", data[:2])[0]


__all__ = ["MAX_REQ_LEN", "RequestError", "RequestReader", "SaslauthdProtocolError",
           "SaslauthdRequest", "encode_reply", "encode_request", "parse_reply", "reply_length"]

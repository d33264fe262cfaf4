"""Dovecot's authentication protocol, client side, sans-IO.

What Postfix's ``xsasl_dovecot_server.c`` speaks, checked against Debian's
Dovecot 2.3.19:

* Lines end in LF; fields are separated by TAB and TAB-escaped with
  ``\\001`` as the escape byte: ``\\001`` → ``\\0011``, TAB → ``\\001t``,
  CR → ``\\001r``, LF → ``\\001n`` (``str_tabescape`` in libdovecot; the
  unescaper maps any other ``\\001X`` to ``X`` and drops a trailing
  ``\\001``).
* Handshake: the client sends ``VERSION\\t1\\t0`` and ``CPID\\t<pid>``; the
  server answers ``VERSION\\t1\\t2``, one ``MECH\\t<name>\\t<props>…`` line
  per mechanism (2.3.19: ``PLAIN plaintext``, ``LOGIN plaintext``,
  ``CRAM-MD5 dictionary active``), ``SPID``, ``CUID``, ``COOKIE`` and
  ``DONE``. A major version other than 1 is fatal; ``SPID`` before any
  ``MECH`` means the socket is auth-master/auth-userdb, not auth-client.
  Unknown lines are ignored.
* ``AUTH\\t<id>\\t<MECH>\\tservice=smtp\\tnologin\\tlip=…\\trip=…[\\tsecured]
  [\\tresp=<base64>]`` starts an exchange (``resp=`` last); ``CONT\\t<id>\\t
  <base64>`` continues it. Replies: ``OK\\t<id>\\tuser=…``, ``CONT\\t<id>\\t
  <base64>``, ``FAIL\\t<id>[\\treason=…][\\ttemp]…``. Replies arrive in any
  order (Dovecot delays failures by ``auth_failure_delay``, 2s, and answers
  other requests meanwhile); the id says which exchange one belongs to.
* Dovecot 2.3.19 closes the connection when a client asks for a mechanism
  it did not list; an empty ``resp=`` counts as no initial response.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field

from .sasl import allowed_properties

AUTH_PROTOCOL_MAJOR_VERSION = 1
AUTH_PROTOCOL_MINOR_VERSION = 0  # what Postfix announces
MAX_LINE = 65536

_ESCAPES = {"\x01": "\x011", "\t": "\x01t", "\r": "\x01r", "\n": "\x01n"}
_UNESCAPES = {"1": "\x01", "t": "\t", "r": "\r", "n": "\n"}


class DovecotProtocolError(Exception):
    """The auth server broke the protocol (or is not an auth-client socket)."""


def tabescape(value: str) -> str:
    """Dovecot's ``str_tabescape``."""
    if not any(c in _ESCAPES for c in value):
        return value
    return "".join(_ESCAPES.get(c, c) for c in value)


def tabunescape(value: str) -> str:
    """Dovecot's ``str_tabunescape``: ``\\001X`` for an unknown X gives X; a
    ``\\001`` at the very end is dropped."""
    if "\x01" not in value:
        return value
    out: list[str] = []
    i = 0
    n = len(value)
    while i < n:
        c = value[i]
        if c != "\x01":
            out.append(c)
            i += 1
            continue
        if i + 1 < n:
            nxt = value[i + 1]
            out.append(_UNESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


# -- framing ------------------------------------------------------------------

class LineReader:
    """Splits the byte stream into lines (LF, an optional CR before it is
    kept as data, as Dovecot does). Raises DovecotProtocolError for a line
    longer than *max_line*."""

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines: list[str] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_line:
                    raise DovecotProtocolError("line too long from auth server")
                return lines
            if nl > self.max_line:
                raise DovecotProtocolError("line too long from auth server")
            raw = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            lines.append(raw.decode("utf-8", "surrogateescape"))

    @property
    def pending(self) -> int:
        return len(self._buf)


# -- handshake ----------------------------------------------------------------

def encode_handshake(pid: int) -> bytes:
    return (f"VERSION\t{AUTH_PROTOCOL_MAJOR_VERSION}\t{AUTH_PROTOCOL_MINOR_VERSION}\n"
            f"CPID\t{pid}\n").encode("ascii")


@dataclass(frozen=True)
class Mech:
    name: str
    props: frozenset[str] = frozenset()

    @property
    def private(self) -> bool:
        return "private" in self.props


@dataclass
class Handshake:
    """Feed the server's handshake lines one at a time; :meth:`feed_line`
    returns True at ``DONE``."""

    version: tuple[int, int] | None = None
    mechs: list[Mech] = field(default_factory=list)
    spid: str = ""
    cuid: str = ""
    cookie: str = ""
    done: bool = False
    _seen_mech: bool = False

    def feed_line(self, line: str) -> bool:
        if self.done:
            return True
        cmd, _, rest = line.partition("\t")
        args = rest.split("\t") if rest else []
        if cmd == "VERSION":
            try:
                major, minor = int(args[0]), int(args[1])
            except (IndexError, ValueError):
                raise DovecotProtocolError("SASL: Protocol version error") from None
            if major != AUTH_PROTOCOL_MAJOR_VERSION:
                raise DovecotProtocolError(
                    f"SASL: Protocol version mismatch ({major} vs. "
                    f"{AUTH_PROTOCOL_MAJOR_VERSION})")
            self.version = (major, minor)
        elif cmd == "MECH" and args and args[0]:
            self._seen_mech = True
            props = frozenset(p.lower() for p in args[1:] if p)
            self.mechs.append(Mech(tabunescape(args[0]).upper(), props))
        elif cmd == "SPID":
            if not self._seen_mech:
                raise DovecotProtocolError("SASL: Connected to wrong auth socket "
                                           "(auth-master instead of auth-client)")
            self.spid = args[0] if args else ""
        elif cmd == "CUID":
            self.cuid = args[0] if args else ""
        elif cmd == "COOKIE":
            self.cookie = args[0] if args else ""
        elif cmd == "DONE":
            if self.version is None:
                raise DovecotProtocolError("SASL: Protocol version error")
            self.done = True
        return self.done

    def offered(self) -> list[Mech]:
        """The mechanisms a client may use: Postfix drops ``private`` ones."""
        return [m for m in self.mechs if not m.private]


# -- security options ---------------------------------------------------------

def filter_mechanisms(mechs: Iterable[Mech], options: Iterable[str]) -> list[str]:
    """Postfix's ``xsasl_dovecot_server_mech_filter``: the names of the
    mechanisms whose announced properties pass *options*
    (``smtpd_sasl_security_options`` words: every ``no…`` property absent,
    every positive one present); ``private`` ones are never offered.
    Unknown option words raise ValueError."""
    opts = list(options)
    return [m.name for m in mechs if not m.private and allowed_properties(m.props, opts)]


# -- requests -----------------------------------------------------------------

def _check_word(what: str, value: str) -> None:
    if not value or any(c in value for c in "\t\n\r\x01 "):
        raise DovecotProtocolError(f"bad {what}: {value!r}")


def encode_auth(request_id: int, mechanism: str, service: str = "smtp", *,
                local_ip: str = "", remote_ip: str = "", secured: bool = False,
                initial_response: bytes | None = None, local_port: int | None = None,
                remote_port: int | None = None, valid_client_cert: bool = False) -> bytes:
    """An ``AUTH`` line as Postfix writes it (``resp=`` last). An address
    that is unknown (empty) is left out."""
    _check_word("mechanism", mechanism)
    parts = ["AUTH", str(request_id), mechanism.upper(), "service=" + tabescape(service),
             "nologin"]
    if local_ip:
        parts.append("lip=" + tabescape(local_ip))
    if remote_ip:
        parts.append("rip=" + tabescape(remote_ip))
    if local_port is not None:
        parts.append(f"lport={int(local_port)}")
    if remote_port is not None:
        parts.append(f"rport={int(remote_port)}")
    if secured:
        parts.append("secured")
    if valid_client_cert:
        parts.append("valid-client-cert")
    if initial_response is not None:
        parts.append("resp=" + base64.b64encode(initial_response).decode("ascii"))
    return ("\t".join(parts) + "\n").encode("utf-8")


def encode_cont(request_id: int, response: bytes) -> bytes:
    return f"CONT\t{request_id}\t{base64.b64encode(response).decode('ascii')}\n".encode("ascii")


# -- replies ------------------------------------------------------------------

@dataclass(frozen=True)
class AuthReply:
    """``OK``, ``CONT`` or ``FAIL`` for request *id*. *data* is the decoded
    challenge of a CONT (or the ``resp=`` of an OK); *params* the
    ``name=value`` fields (unescaped); *flags* the bare ones (``temp``,
    ``authz``, ``nologin``…)."""

    kind: str
    id: int
    data: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)
    flags: frozenset[str] = frozenset()

    @property
    def user(self) -> str | None:
        return self.params.get("user")

    @property
    def reason(self) -> str | None:
        return self.params.get("reason")

    @property
    def temporary(self) -> bool:
        return "temp" in self.flags or self.params.get("code") == "temp_fail"


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise DovecotProtocolError("invalid base64 from auth server") from None


def parse_reply(line: str) -> AuthReply | None:
    """One server line after the handshake: an :class:`AuthReply`, or None
    for a line that is not one (Postfix ignores those). Raises
    DovecotProtocolError for an OK/CONT/FAIL without a numeric id or a CONT
    without data or with bad base64."""
    cmd, _, rest = line.partition("\t")
    if cmd not in ("OK", "CONT", "FAIL"):
        return None
    args = rest.split("\t") if rest else []
    if not args or not (args[0].isascii() and args[0].isdigit()):
        raise DovecotProtocolError(f"SASL: Protocol error: {cmd} without an id")
    request_id = int(args[0])
    if cmd == "CONT":
        if len(args) < 2:
            raise DovecotProtocolError("missing Dovecot server CONT reply field")
        return AuthReply("CONT", request_id, _b64(args[1]))
    params: dict[str, str] = {}
    flags: set[str] = set()
    for arg in args[1:]:
        if not arg:
            continue
        name, eq, value = arg.partition("=")
        if eq:
            params.setdefault(name, tabunescape(value))
        else:
            flags.add(name)
    data = None
    if cmd == "OK" and "resp" in params:
        data = _b64(params["resp"])
    return AuthReply(cmd, request_id, data, params, frozenset(flags))


__all__ = ["AUTH_PROTOCOL_MAJOR_VERSION", "AUTH_PROTOCOL_MINOR_VERSION", "AuthReply",
           "DovecotProtocolError", "Handshake", "LineReader", "Mech", "encode_auth",
           "encode_cont", "encode_handshake", "filter_mechanisms", "parse_reply", "tabescape",
           "tabunescape"]

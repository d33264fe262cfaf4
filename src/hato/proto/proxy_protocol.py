"""The HAProxy PROXY protocol, versions 1 and 2, without I/O.

A proxy in front of postscreen (``postscreen_upstream_proxy_protocol =
haproxy``) or smtpd (``smtpd_upstream_proxy_protocol = haproxy``) opens each
connection with a header that names the real client and server endpoints,
before the SMTP client's first byte. :class:`ProxyReader` takes the
connection's first bytes, says when the header is complete, and hands back
whatever followed it (:meth:`ProxyReader.remaining`): nothing is read past
the header and lost, so the session (or a TLS wrapper-mode handshake)
starts from exactly the right byte.

Version 1 is one text line (HAProxy's ``doc/proxy-protocol.txt`` §2.1)::

    PROXY TCP4 192.0.2.1 198.51.100.25 56324 25\\r\\n
    PROXY TCP6 2001:db8::1 2001:db8::25 56324 25\\r\\n
    PROXY UNKNOWN[ anything]\\r\\n

at most 107 bytes with the CRLF, tokens separated by exactly one space,
addresses in their family's textual form (no leading zeros in IPv4, no IPv6
zone), ports decimal 0-65535 without leading zeros. A bare LF or CR is an
error: the spec forbids tolerating one (Postfix itself accepts a bare LF).

Version 2 is binary (§2.2): the 12-byte signature ``\\r\\n\\r\\n\\0\\r\\nQUIT\\n``,
a version/command byte (``0x21`` PROXY, ``0x20`` LOCAL), a family/transport
byte (``0x11`` TCP over IPv4, ``0x21`` TCP over IPv6, ``0x31`` UNIX stream,
``0x00`` unspecified), a 2-byte big-endian length of the rest, then the
address block (12, 36 or 216 bytes) and TLVs, which are skipped by that
length. UDP (``0x12``, ``0x22``, ``0x32``) is an error: SMTP does not run on
it. The header may be at most ``max_header`` bytes (536 by default: the
IPv4 minimum MSS, Postfix's ``HAPROXY_HEADER_MAX_LEN``).

What the caller gets (:class:`ProxyHeader`):

- ``command == "PROXY"``: the addresses in the header are the client's and
  the server's; use them instead of the connection's.
- ``command == "LOCAL"`` (v2 LOCAL, v1 ``UNKNOWN``, v2 PROXY with the
  unspecified family): use the real connection's addresses, as if there
  were no header; the address fields are ``None``.

An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) is given in IPv4 form,
as Postfix's ``normalize_v4mapped_addr`` does when IPv4 is enabled; the
``family`` field still tells what the header said.

Errors raise :class:`ProxyError` as soon as the bytes decide it: input that
starts like neither version fails on its first wrong byte, a v2 header with
a bad version, command or family fails on that byte, an oversized one on
its length field. ``str(error)`` is Postfix's reason text where Postfix has
one (``haproxy_srvr.c``), and ``error.data`` the bytes seen, so a service
logs Postfix's line::

    warning: haproxy read: {error}: {log_escape(error.data)}

The services time the header themselves (``postscreen_upstream_proxy_timeout``,
``smtpd_upstream_proxy_timeout``); Postfix then logs ``haproxy read: time
limit exceeded`` (postscreen) and ``haproxy read: EOF`` when the proxy hangs
up first (:data:`TIMEOUT_TEXT`, :data:`EOF_TEXT`).
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass

from .escape import escape

__all__ = [
    "EOF_TEXT", "HAPROXY_HEADER_MAX_LEN", "TIMEOUT_TEXT", "V1_MAX_LEN", "V2_SIGNATURE",
    "ProxyError", "ProxyHeader", "ProxyReader", "encode_v1", "encode_v2", "log_escape",
]

V1_PREFIX = b"PROXY "
#: The longest v1 line, CRLF included (``PROXY UNKNOWN`` with two full IPv6
#: addresses and two 5-digit ports).
V1_MAX_LEN = 107
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_FIXED_LEN = 16  # signature, ver/cmd, fam, len
#: Postfix's limit for a whole header (v2 with TLVs).
HAPROXY_HEADER_MAX_LEN = 536

#: What Postfix logs after ``haproxy read: `` when the header does not come
#: in time (postscreen) or the proxy closes first.
TIMEOUT_TEXT = "time limit exceeded"
EOF_TEXT = "EOF"

# Reasons, in Postfix's words (haproxy_srvr.c) where it has them.
E_UNRECOGNIZED = "unrecognized protocol header"
E_VERSION = "unrecognized protocol version"
E_COMMAND = "bad command in proxy header"
E_NETWORK = "unsupported network protocol"
E_SHORT_ADDR = "short address field"
E_TERMINATOR = "missing protocol header terminator"
E_PROTO_TYPE = "bad or missing protocol type"
E_CLIENT_ADDR = "bad or missing client address"
E_SERVER_ADDR = "bad or missing server address"
E_CLIENT_PORT = "bad or missing client port"
E_SERVER_PORT = "bad or missing server port"
# hato's own, where Postfix is more lenient than the spec or has no text.
E_BARE_NEWLINE = "bare <LF> or <CR> in protocol header"
E_TRAILING = "unexpected text after server port"
E_TOO_LONG = "protocol header too long"

_CMD_LOCAL, _CMD_PROXY = 0x0, 0x1
_ADDR_LEN = {0x1: 12, 0x2: 36, 0x3: 216}  # family nibble → address block
_FAMILY_NAME = {0x1: "tcp4", 0x2: "tcp6", 0x3: "unix"}
_FAMILY_BYTE = {"tcp4": 0x11, "tcp6": 0x21, "unix": 0x31}
_UNIX_PATH_LEN = 108
_PORT = re.compile(r"(?:0|[1-9][0-9]{0,4})\Z")


class ProxyError(ValueError):
    """A malformed PROXY header. ``str()`` is the reason for the log;
    ``data`` holds the header bytes seen so far."""

    def __init__(self, reason: str, data: bytes = b"") -> None:
        super().__init__(reason)
        self.reason = reason
        self.data = data


@dataclass(frozen=True)
class ProxyHeader:
    version: int                 # 1 or 2
    command: str                 # "PROXY" or "LOCAL" (use the real connection's addresses)
    family: str                  # "tcp4", "tcp6", "unix", "unknown"
    client_addr: str | None = None
    client_port: int | None = None
    server_addr: str | None = None
    server_port: int | None = None

    @classmethod
    def local(cls, version: int = 2) -> ProxyHeader:
        return cls(version, "LOCAL", "unknown")


class ProxyReader:
    """Reads one PROXY header (v1 or v2) from the start of a connection."""

    def __init__(self, max_header: int = HAPROXY_HEADER_MAX_LEN) -> None:
        if max_header < V1_MAX_LEN:
            raise ValueError(f"max_header must be at least {V1_MAX_LEN}")
        self._max = max_header
        self._buf = bytearray()
        self._version = 0        # 0 = undecided, 1 or 2
        self._scanned = 0        # v1: bytes already checked for CR/LF
        self._need = 0           # v2: the header's whole length, once known
        self._header: ProxyHeader | None = None
        self._rest = bytearray()
        self._error: ProxyError | None = None

    # -- public ------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._header is not None:
            self._rest += data
            return
        self._buf += data
        try:
            self._advance()
        except ProxyError as e:
            self._error = e
            self._buf.clear()
            raise

    def header(self) -> ProxyHeader | None:
        return self._header

    def remaining(self) -> bytes:
        return bytes(self._rest)

    # -- parsing -----------------------------------------------------------

    def _fail(self, reason: str, upto: int | None = None) -> ProxyError:
        if upto is None:                # a v1 line: up to its CRLF
            upto = self._scanned
        data = bytes(self._buf[:upto])
        return ProxyError(reason, data)

    def _advance(self) -> None:
        buf = self._buf
        if not self._version:
            n = min(len(buf), len(V2_SIGNATURE))
            if buf[:min(n, len(V1_PREFIX))] == V1_PREFIX[:n]:
                if len(buf) < len(V1_PREFIX):
                    return
                self._version = 1
            elif buf[:n] == V2_SIGNATURE[:n]:
                if n < len(V2_SIGNATURE):
                    return
                self._version = 2
            else:
                raise self._fail(E_UNRECOGNIZED, n)
        if self._version == 1:
            self._advance_v1()
        else:
            self._advance_v2()

    def _complete(self, header: ProxyHeader, length: int) -> None:
        self._header = header
        self._rest = bytearray(self._buf[length:])
        self._buf.clear()

    # v1

    def _advance_v1(self) -> None:
        buf = self._buf
        end = min(len(buf), V1_MAX_LEN)
        i = self._scanned
        while i < end:
            ch = buf[i]
            if ch == 0x0A:
                raise self._fail(E_BARE_NEWLINE, i + 1)
            if ch == 0x0D:
                if i + 2 > V1_MAX_LEN:
                    raise self._fail(E_TERMINATOR, V1_MAX_LEN)
                if i + 1 >= len(buf):
                    break               # the LF may be on its way
                if buf[i + 1] != 0x0A:
                    raise self._fail(E_BARE_NEWLINE, i + 2)
                self._scanned = i + 2
                self._complete(self._parse_v1(bytes(buf[:i])), i + 2)
                return
            i += 1
        self._scanned = i
        if i >= V1_MAX_LEN:
            raise self._fail(E_TERMINATOR, V1_MAX_LEN)

    def _parse_v1(self, line: bytes) -> ProxyHeader:
        fields = line.decode("latin-1").split(" ")
        # fields[0] == "PROXY": the prefix decided the version.
        proto = fields[1]
        if proto == "UNKNOWN":
            return ProxyHeader.local(version=1)   # the rest of the line is ignored
        if proto == "TCP4":
            family, version = "tcp4", 4
        elif proto == "TCP6":
            family, version = "tcp6", 6
        else:
            raise self._fail(E_PROTO_TYPE)
        fields += [""] * (6 - len(fields))
        client = _v1_addr(fields[2], version)
        if client is None:
            raise self._fail(E_CLIENT_ADDR)
        server = _v1_addr(fields[3], version)
        if server is None:
            raise self._fail(E_SERVER_ADDR)
        cport = _v1_port(fields[4])
        if cport is None:
            raise self._fail(E_CLIENT_PORT)
        sport = _v1_port(fields[5])
        if sport is None:
            raise self._fail(E_SERVER_PORT)
        if len(fields) > 6:
            raise self._fail(E_TRAILING)
        return ProxyHeader(1, "PROXY", family, client, cport, server, sport)

    # v2

    def _advance_v2(self) -> None:
        buf = self._buf
        if len(buf) > 12:
            ver_cmd = buf[12]
            if ver_cmd >> 4 != 2:
                raise self._fail(E_VERSION, 13)
            command = ver_cmd & 0x0F
            if command not in (_CMD_LOCAL, _CMD_PROXY):
                raise self._fail(E_COMMAND, 13)
        if len(buf) > 13 and buf[12] & 0x0F == _CMD_PROXY:
            fam = buf[13]
            if fam != 0x00 and (fam >> 4 not in _ADDR_LEN or fam & 0x0F != 0x1):
                raise self._fail(E_NETWORK, 14)
        if len(buf) < V2_FIXED_LEN:
            return
        if not self._need:
            (length,) = struct.unpack_from("!H", buf, 14)
            total = V2_FIXED_LEN + length
            if total > self._max:
                raise self._fail(f"{E_TOO_LONG}: {total} > {self._max} bytes", V2_FIXED_LEN)
            if buf[12] & 0x0F == _CMD_PROXY and length < _ADDR_LEN.get(buf[13] >> 4, 0):
                raise self._fail(E_SHORT_ADDR, V2_FIXED_LEN)
            self._need = total
        if len(buf) < self._need:
            return
        self._complete(self._parse_v2(bytes(buf[:self._need])), self._need)

    def _parse_v2(self, hdr: bytes) -> ProxyHeader:
        if hdr[12] & 0x0F == _CMD_LOCAL or hdr[13] == 0x00:
            return ProxyHeader.local(version=2)   # addresses and TLVs skipped
        fam = hdr[13] >> 4
        block = hdr[V2_FIXED_LEN:]
        if fam == 0x1:
            src, dst, sport, dport = struct.unpack_from("!4s4sHH", block)
            return ProxyHeader(2, "PROXY", "tcp4", _ip_text(ipaddress.IPv4Address(src)),
                               sport, _ip_text(ipaddress.IPv4Address(dst)), dport)
        if fam == 0x2:
            src, dst, sport, dport = struct.unpack_from("!16s16sHH", block)
            return ProxyHeader(2, "PROXY", "tcp6", _ip_text(ipaddress.IPv6Address(src)),
                               sport, _ip_text(ipaddress.IPv6Address(dst)), dport)
        src, dst = struct.unpack_from("!108s108s", block)
        return ProxyHeader(2, "PROXY", "unix", _unix_path(src), None, _unix_path(dst), None)


# -- helpers ------------------------------------------------------------------

def _ip_text(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def _v1_addr(text: str, version: int) -> str | None:
    if not text or "%" in text:       # no IPv6 zone: not an address on the wire
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version != version:
        return None
    return _ip_text(ip)


def _v1_port(text: str) -> int | None:
    if not _PORT.match(text):
        return None
    port = int(text)
    return port if port <= 65535 else None


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\0" and raw.strip(b"\0"):       # Linux abstract socket
        return "@" + raw[1:].rstrip(b"\0").decode("utf-8", "backslashreplace")
    return raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


log_escape = escape  # Postfix's escape(), as haproxy_srvr.c logs a bad header


# -- encoders -----------------------------------------------------------------

def _check_ip(addr: str | None, version: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if addr is None:
        raise ValueError("PROXY header without an address")
    ip = ipaddress.ip_address(addr)
    if ip.version != version:
        raise ValueError(f"{addr} is not an IPv{version} address")
    return ip


def _check_port(port: int | None) -> int:
    if port is None or not 0 <= port <= 65535:
        raise ValueError(f"bad port: {port!r}")
    return port


def encode_v1(header: ProxyHeader) -> bytes:
    """The v1 line for ``header`` (its ``version`` is not looked at).
    LOCAL or an unknown family gives ``PROXY UNKNOWN``; unix has no v1 form."""
    if header.command == "LOCAL" or header.family == "unknown":
        return b"PROXY UNKNOWN\r\n"
    if header.family not in ("tcp4", "tcp6"):
        raise ValueError(f"family {header.family} has no PROXY v1 form")
    version = 4 if header.family == "tcp4" else 6
    client = _check_ip(header.client_addr, version)
    server = _check_ip(header.server_addr, version)
    line = (f"PROXY TCP{version} {client} {server} "
            f"{_check_port(header.client_port)} {_check_port(header.server_port)}\r\n")
    return line.encode("ascii")


def encode_v2(header: ProxyHeader, tlvs: bytes = b"") -> bytes:
    """The v2 header for ``header`` (its ``version`` is not looked at),
    followed by ``tlvs`` (already encoded type-length-value records)."""
    if header.command == "LOCAL":
        ver_cmd, fam, block = 0x20, 0x00, b""
    elif header.command != "PROXY":
        raise ValueError(f"bad command: {header.command!r}")
    elif header.family == "unknown":
        ver_cmd, fam, block = 0x21, 0x00, b""
    elif header.family in ("tcp4", "tcp6"):
        version = 4 if header.family == "tcp4" else 6
        ver_cmd, fam = 0x21, _FAMILY_BYTE[header.family]
        block = (_check_ip(header.client_addr, version).packed
                 + _check_ip(header.server_addr, version).packed
                 + struct.pack("!HH", _check_port(header.client_port),
                               _check_port(header.server_port)))
    elif header.family == "unix":
        ver_cmd, fam = 0x21, _FAMILY_BYTE["unix"]
        paths = []
        for path in (header.client_addr, header.server_addr):
            raw = (path or "").encode("utf-8")
            if raw.startswith(b"@"):
                raw = b"\0" + raw[1:]
            if len(raw) > _UNIX_PATH_LEN:
                raise ValueError(f"unix path too long: {path!r}")
            paths.append(raw.ljust(_UNIX_PATH_LEN, b"\0"))
        block = b"".join(paths)
    else:
        raise ValueError(f"bad family: {header.family!r}")
    body = block + tlvs
    if len(body) > 0xFFFF:
        raise ValueError("PROXY v2 header too long")
    return V2_SIGNATURE + bytes((ver_cmd, fam)) + struct.pack("!H", len(body)) + body

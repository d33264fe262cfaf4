"""Pieces of the SMTP/LMTP client core (:mod:`hato.proto.smtp_client`) that
do not sequence anything: reading server replies, the EHLO keyword list,
xtext for DSN parameters, and the message body encoder (CRLF, dot-stuffing,
long lines).

Replies are read as Postfix's smtp_chat_resp() reads them: lines end at LF
(a CR before it is dropped); a line longer than the limit keeps its first
part and the rest up to the LF is skipped; ``NNN-`` continues a reply, ``NNN``
or ``NNN text`` ends it; anything else is a protocol error. The reply text
keeps every line with its code (``550-5.1.1 a`` / ``550 5.1.1 b``), and
:attr:`ServerReply.text` joins them with spaces, as Postfix's DSN and log
texts do (``said: 550-5.1.1 a 550 5.1.1 b``). The enhanced status code comes
from the last line when its class matches the reply code, else ``X.0.0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(rb"^([0-9]{3})([ -]|$)")
_DSN = re.compile(r"^([245])\.([0-9]{1,3})\.([0-9]{1,3})(?=$|[ \t])")
#: At most this many lines of one reply are kept (the rest is read and dropped).
MAX_REPLY_LINES = 100


class BadReply(Exception):
    """The server sent a line that is not an SMTP reply line."""

    def __init__(self, line: bytes):
        super().__init__(line[:100])
        self.line = line


@dataclass(frozen=True)
class ServerReply:
    code: int
    dsn: str  # enhanced status code, "X.0.0" when the server gave none
    lines: tuple[str, ...]  # every line as received, code included

    @property
    def text(self) -> str:
        """The lines joined with spaces (Postfix: translit(resp->str, "\\n", " "))."""
        return " ".join(self.lines)

    @property
    def message(self) -> str:
        """The last line without its code and enhanced status code."""
        rest = self.lines[-1][4:] if self.lines else ""
        m = _DSN.match(rest)
        return rest[m.end():].lstrip() if m else rest

    @property
    def is_positive(self) -> bool:
        return 200 <= self.code < 400


def fake_reply(dsn: str, text: str = "") -> ServerReply:
    """A reply made up by the client (Postfix's SMTP_RESP_FAKE)."""
    return ServerReply(0, dsn, (text,) if text else ())


def _printable(raw: bytes) -> str:
    # Postfix's printable(): control characters become "?". UTF-8 stays
    # (servers send it under SMTPUTF8); invalid bytes become U+FFFD.
    text = raw.decode("utf-8", "replace")
    if text.isprintable():  # the usual reply: nothing to replace
        return text
    return "".join(c if c >= " " and c != "\x7f" else "?" for c in text)


class ReplyReader:
    """Splits the server's bytes into :class:`ServerReply` objects."""

    def __init__(self, line_limit: int = 2048):
        self.line_limit = line_limit
        self._buf = bytearray()
        self._lines: list[str] = []
        self._skipping = False  # dropping the rest of an over-long line
        self._long: bytes | None = None

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        """Drop buffered input (after STARTTLS: nothing plaintext survives)."""
        self._buf.clear()
        self._lines.clear()
        self._skipping = False
        self._long = None

    @property
    def pending(self) -> bool:
        return bool(self._buf) or bool(self._lines) or self._long is not None

    def _line(self) -> bytes | None:
        if self._skipping:
            nl = self._buf.find(b"\n")
            if nl < 0:
                self._buf.clear()
                return None
            del self._buf[:nl + 1]
            self._skipping = False
            line, self._long = self._long or b"", None
            return line
        nl = self._buf.find(b"\n", 0, self.line_limit + 1)
        if nl < 0:
            if len(self._buf) > self.line_limit:
                self._long = bytes(self._buf[:self.line_limit])
                del self._buf[:self.line_limit]
                self._skipping = True
                return self._line()
            return None
        line = bytes(self._buf[:nl])
        del self._buf[:nl + 1]
        return line

    def next_reply(self) -> ServerReply | None:
        """The next complete reply, None when more input is needed.

        Raises :class:`BadReply` for a line that is not a reply line.
        """
        while True:
            line = self._line()
            if line is None:
                return None
            line = line.rstrip(b"\r")
            m = _LINE.match(line)
            if m is None:
                self._lines.clear()
                raise BadReply(line)
            if len(self._lines) < MAX_REPLY_LINES:
                self._lines.append(_printable(line))
            if m.group(2) == b"-":
                continue
            lines = tuple(self._lines)
            self._lines.clear()
            code = int(m.group(1))
            rest = line[4:].decode("ascii", "replace")
            d = _DSN.match(rest)
            dsn = d.group(0) if d and d.group(1) == str(code // 100) else f"{code // 100}.0.0"
            return ServerReply(code, dsn, lines)


def parse_ehlo(reply: ServerReply) -> tuple[str, dict[str, str]]:
    """The server's name (first word of the first line) and its keywords:
    upper-cased keyword → the rest of its line (``SIZE 1000`` → ``"1000"``).
    ``AUTH=LOGIN PLAIN`` (the old form) counts as AUTH."""
    lines = [line[4:] for line in reply.lines]
    words = lines[0].split() if lines else []
    name = words[0] if words else ""
    keywords: dict[str, str] = {}
    for line in lines[1:]:
        parts = line.split(None, 1)
        if not parts:
            continue
        key = parts[0].upper()
        arg = parts[1].strip() if len(parts) > 1 else ""
        if key.startswith("AUTH="):
            arg = (key[5:] + " " + arg).strip()
            key = "AUTH"
            if "AUTH" in keywords:
                arg = keywords["AUTH"] + " " + arg
        keywords[key] = arg
    return name, keywords


def xtext(text: str) -> str:
    """RFC 3461 xtext: "+", "=", controls, space and non-ASCII as ``+HH``."""
    out = []
    for b in text.encode("utf-8", "surrogateescape"):
        if 33 <= b <= 126 and b not in (0x2B, 0x3D):
            out.append(chr(b))
        else:
            out.append(f"+{b:02X}")
    return "".join(out)


class BodyEncoder:
    """Turns message content into wire form, chunk by chunk.

    Line ends become CRLF (a bare LF gets its CR; a bare CR stays content),
    a line longer than *line_limit* is broken with CRLF SPACE (Postfix's
    smtp_line_length_limit), and with *stuff* (DATA) a line that starts
    with ``.`` gets another one. :meth:`finish` ends an unfinished last line
    with CRLF. Works on whole lines with bytes methods, no per-byte loop.
    """

    #: Runs of lines that need no folding skip the per-line loop (tests turn
    #: this off to check that both give the same output).
    FAST = True

    def __init__(self, stuff: bool, line_limit: int = 0):
        self.stuff = stuff
        self.line_limit = line_limit
        self._carry = b""  # a CR at the end of the last chunk
        self._col = 0  # characters on the current output line
        self.size = 0  # bytes produced

    def encode(self, chunk: bytes) -> bytes:
        data = self._carry + chunk
        self._carry = b""
        if data.endswith(b"\r"):
            self._carry = b"\r"
            data = data[:-1]
        if not data:
            return b""
        pieces = data.replace(b"\r\n", b"\n").split(b"\n")
        out = bytearray()
        limit = self.line_limit
        if (self.FAST and len(pieces) > 2
                and (limit <= 0 or max(map(len, pieces)) <= limit - 1)):
            # No line to fold: the lines after the first go out joined, a
            # leading dot doubled by one replace (CRLF occurs only between
            # lines: each piece is free of LF).
            self._add(out, pieces[0])
            rest = b"\r\n" + b"\r\n".join(pieces[1:])
            if self.stuff:
                rest = rest.replace(b"\r\n.", b"\r\n..")
            out += rest
            self._col = len(pieces[-1])
            self.size += len(out)
            return bytes(out)
        for i, piece in enumerate(pieces):
            self._add(out, piece)
            if i < len(pieces) - 1:
                out += b"\r\n"
                self._col = 0
        self.size += len(out)
        return bytes(out)

    def _add(self, out: bytearray, piece: bytes) -> None:
        if not piece:
            return
        if self._col == 0 and self.stuff and piece[:1] == b".":
            out += b"."
        limit = self.line_limit
        if limit <= 0 or self._col + len(piece) <= limit:
            out += piece
            self._col += len(piece)
            return
        while piece:
            room = limit - self._col
            if room <= 0:
                out += b"\r\n "
                self._col = 1
                # a folded line carries at least one byte, even when the
                # limit leaves no room after the space (limit 1)
                room = max(limit - 1, 1)
            out += piece[:room]
            self._col += len(piece[:room])
            piece = piece[room:]

    def finish(self) -> bytes:
        out = bytearray()
        if self._carry:
            self._add(out, self._carry)
            self._carry = b""
        if self._col:
            out += b"\r\n"
            self._col = 0
        self.size += len(out)
        return bytes(out)

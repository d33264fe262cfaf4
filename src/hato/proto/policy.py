"""The Postfix SMTPD policy delegation protocol, sans-IO (SMTPD_POLICY_README).

A request is ``name=value`` lines, each ending with a newline, and an empty
line::

    request=smtpd_access_policy
    protocol_state=RCPT
    ...
    [empty line]

The reply is the same shape; smtpd needs only ``action=``, an access(5)
action (``action=DUNNO``, ``action=defer_if_permit Service unavailable``)::

    action=DUNNO
    [empty line]

:func:`encode_request` gives the bytes of one request; a name never
contains ``=``, NUL or newline and a value never contains NUL, CR or
newline: they become ``?`` (as Postfix's printable() does elsewhere; CR
too, because a policy server reading text lines in universal-newline
mode would split on it). :func:`xtext` is the encoding of the ``ccert_*``
values (RFC 3461, as Postfix's xtext_quote(): every byte outside ``!``..``~``
and ``+`` itself is ``+XX``).

:class:`ReplyReader` is fed the server's bytes and reads a reply as
Postfix's attr_scan_plain() does with the attribute list ``action``:
attributes before and after ``action`` are skipped, the first ``action``
wins, and the empty line ends the reply. Trouble raises
:class:`PolicyReplyError` whose :meth:`~PolicyReplyError.text` is
Postfix's warning for it, given the server's name:

- an empty line before any ``action``: ``missing attribute action in input
  from SERVER``;
- ``action`` without ``=``: ``missing value for string attribute action
  from SERVER``;
- a line longer than *max_line* (hato's guard; Postfix has the check but
  compiled out): ``string length > N characters from SERVER while reading
  input attribute value``;
- the end of input (:meth:`ReplyReader.eof`) or a timeout
  (:meth:`ReplyReader.timeout`) before the empty line: ``premature
  end-of-input on SERVER while reading input attribute name`` (or
  ``timeout on ...``; ``... value`` when inside a value).

Bytes after the empty line are kept (:attr:`ReplyReader.extra`): a server
that says more than one reply per request is out of step, and its
connection should not be used again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

#: a reply line longer than this is trouble (4 x Postfix's line_length_limit)
DEFAULT_MAX_LINE = 4 * 2048
#: a reply with more lines than this is trouble (Postfix: ATTR_HASH_LIMIT)
MAX_LINES = 1024

_NAME_BAD = str.maketrans({"=": "?", "\0": "?", "\n": "?", "\r": "?"})
_VALUE_BAD = str.maketrans({"\0": "?", "\n": "?", "\r": "?"})


def xtext(text: str) -> str:
    """RFC 3461 xtext, as Postfix's xtext_quote(text, ""): bytes of the
    UTF-8 form outside ``!``..``~``, and ``+``, become ``+XX``."""
    out: list[str] = []
    for byte in text.encode("utf-8", "surrogateescape"):
        if byte != 0x2B and 32 < byte < 127:
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def sanitize_name(name: str) -> str:
    return name.translate(_NAME_BAD)


def sanitize_value(value: str) -> str:
    return value.translate(_VALUE_BAD)


def encode_request(attrs: Mapping[str, str] | Iterable[tuple[str, str]]) -> bytes:
    """The bytes of one request: ``name=value`` lines and an empty line."""
    items = attrs.items() if isinstance(attrs, Mapping) else attrs
    lines = [f"{sanitize_name(name)}={sanitize_value(str(value))}\n" for name, value in items]
    lines.append("\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


class PolicyReplyError(Exception):
    """A reply that cannot be used; :meth:`text` names the server."""

    def __init__(self, template: str, timed_out: bool = False):
        super().__init__(template)
        self.template = template
        self.timed_out = timed_out

    def text(self, server: str) -> str:
        return self.template.replace("{server}", server)


@dataclass
class PolicyReply:
    action: str  # decoded UTF-8; bytes that are not UTF-8 are surrogate escapes
    attributes: list[tuple[str, str]] = field(default_factory=list)  # everything received

    @property
    def valid_utf8(self) -> bool:
        try:
            self.action.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True


class ReplyReader:
    """Feed with :meth:`receive_data`; :attr:`reply` is set when the reply
    is complete."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE, max_lines: int = MAX_LINES):
        self.max_line = max_line
        self.max_lines = max_lines
        self._buf = bytearray()
        self._action: str | None = None
        self._attributes: list[tuple[str, str]] = []
        self.reply: PolicyReply | None = None
        self.extra = b""

    @property
    def done(self) -> bool:
        return self.reply is not None

    def receive_data(self, data: bytes) -> PolicyReply | None:
        if self.reply is not None:
            self.extra += data
            return self.reply
        self._buf += data
        while self.reply is None:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.max_line:
                    raise PolicyReplyError(
                        f"string length > {self.max_line} characters from {{server}} "
                        f"while reading input attribute {self._context()}")
                return None
            if nl > self.max_line:
                raise PolicyReplyError(
                    f"string length > {self.max_line} characters from {{server}} "
                    f"while reading input attribute {self._context()}")
            line = bytes(self._buf[:nl]).decode("utf-8", "surrogateescape")
            del self._buf[: nl + 1]
            self._line(line)
        self.extra = bytes(self._buf)
        self._buf.clear()
        return self.reply

    def _line(self, line: str) -> None:
        if line == "":
            if self._action is None:
                raise PolicyReplyError("missing attribute action in input from {server}")
            self.reply = PolicyReply(self._action, self._attributes)
            return
        if len(self._attributes) >= self.max_lines:
            raise PolicyReplyError(f"attribute count exceeds limit {self.max_lines} "
                                   "in input from {server}")
        name, sep, value = line.partition("=")
        self._attributes.append((name, value))
        if self._action is None and name == "action":
            if not sep:
                raise PolicyReplyError("missing value for string attribute action "
                                       "from {server}")
            self._action = value

    def _context(self) -> str:
        """What a read cut short was reading, in Postfix's words: the value
        of ``action`` while in it, else the name of the next attribute
        (the rest of any other line is skipped unread)."""
        if self._action is None and self._buf.startswith(b"action="):
            return "value"
        return "name"

    def eof(self) -> None:
        """The server closed the connection; trouble unless the reply is complete."""
        if self.reply is None:
            raise PolicyReplyError("premature end-of-input on {server} while reading "
                                   f"input attribute {self._context()}")

    def timeout(self) -> PolicyReplyError:
        """The error for a read that timed out."""
        return PolicyReplyError(f"timeout on {{server}} while reading input attribute "
                                f"{self._context()}", timed_out=True)


__all__ = [
    "DEFAULT_MAX_LINE",
    "PolicyReply",
    "PolicyReplyError",
    "ReplyReader",
    "encode_request",
    "sanitize_name",
    "sanitize_value",
    "xtext",
]

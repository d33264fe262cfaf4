"""The internal request protocol between hato's services.

Like Postfix's attr_print_plain: a request or reply is a series of
``name=value`` lines ending with an empty line. Names are ``[a-z0-9_]``;
values are text with backslash escapes for backslash, newline, carriage
return and NUL (``\\\\``, ``\\n``, ``\\r``, ``\\0``), so any string travels.
A name may repeat (a list: ``rcpt=a``, ``rcpt=b``); :class:`Attrs` keeps the
order.

Sans-IO: :class:`AttrReader` is fed bytes and yields complete messages;
:func:`encode` gives the bytes of one message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

MAX_MESSAGE = 16 * 1024 * 1024
_ESC = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\0": "\\0"}
_UNESC = {"\\": "\\", "n": "\n", "r": "\r", "0": "\0"}


class AttrError(ValueError):
    """A malformed message."""


class Attrs:
    """An ordered multi-map of attributes."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()):
        self.items: list[tuple[str, str]] = list(items)

    @classmethod
    def of(cls, **kw: object) -> "Attrs":
        a = cls()
        for name, value in kw.items():
            if value is None:
                continue
            if isinstance(value, (list, tuple)):
                for v in value:
                    a.add(name, str(v))
            else:
                a.add(name, str(value))
        return a

    def add(self, name: str, value: str) -> "Attrs":
        self.items.append((name, value))
        return self

    def get(self, name: str, default: str | None = None) -> str | None:
        for n, v in self.items:
            if n == name:
                return v
        return default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return any(n == name for n, _ in self.items)

    def all(self, name: str) -> list[str]:
        return [v for n, v in self.items if n == name]

    def int(self, name: str, default: int = 0) -> int:
        value = self.get(name)
        return default if value is None or value == "" else int(value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Attrs) and self.items == other.items

    def __repr__(self) -> str:
        return f"Attrs({self.items!r})"


_ESC_TABLE = str.maketrans(_ESC)
_NEEDS_ESCAPE = re.compile(r"[\\\n\r\0]")


def _escape(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    return text.translate(_ESC_TABLE)


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt not in _UNESC:
                raise AttrError(f"bad escape \\{nxt}")
            out.append(_UNESC[nxt])
            i += 2
            continue
        if c == "\\":
            raise AttrError("dangling backslash")
        out.append(c)
        i += 1
    return "".join(out)


def encode(attrs: Attrs) -> bytes:
    lines = []
    for name, value in attrs.items:
        if not name or "=" in name or "\n" in name:
            raise AttrError(f"bad attribute name: {name!r}")
        lines.append(f"{name}={_escape(value)}\n")
    lines.append("\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


class AttrReader:
    """Feed bytes with :meth:`receive_data`; take messages with
    :meth:`next_message` (None until one is complete)."""

    def __init__(self, max_message: int = MAX_MESSAGE):
        self._buf = bytearray()
        self._max = max_message
        self._messages: list[Attrs] = []
        self._current: list[tuple[str, str]] = []
        self._size = 0

    def receive_data(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        end = buf.rfind(b"\n")
        if end < 0:
            if len(buf) > self._max:
                raise AttrError("attribute line too long")
            return
        # every complete line at once; the rest waits for more data
        lines = bytes(buf[:end]).decode("utf-8", "surrogateescape").split("\n")
        del buf[: end + 1]
        current = self._current
        for line in lines:
            if line == "":
                self._messages.append(Attrs(current))
                current = self._current = []
                self._size = 0
                continue
            self._size += len(line)
            if self._size > self._max:
                raise AttrError("attribute message too long")
            name, sep, value = line.partition("=")
            if not sep or not name:
                raise AttrError(f"malformed attribute line: {line[:60]!r}")
            current.append((name, _unescape(value) if "\\" in value else value))
        if len(buf) > self._max:
            raise AttrError("attribute line too long")

    def next_message(self) -> Attrs | None:
        return self._messages.pop(0) if self._messages else None

    def messages(self) -> Iterator[Attrs]:
        while self._messages:
            yield self._messages.pop(0)

"""aliases(5) files, and what ``postalias`` stores from them.

An aliases file holds ``name: value`` records::

    # comment
    postmaster: root
    root:   admin@example.com, "|/usr/bin/procmail -a x", /var/log/root.mbox,
            :include:/etc/mail/staff
    "a b":  x

Lines are read as for postmap (comments, blank lines, continuation lines
that start with whitespace); each logical line is cut into RFC 822 tokens
by Postfix's ``tok822_scan()`` rules (atoms, quoted strings, comments,
domain literals, and the operators ``|%!()<>@,;:\\".[]``). The name is
everything before the first ``:``; it must not be empty, hold a comma, or
hold ``@``/``%`` (the name must be local). The name is stored unquoted and
lower-cased (``"A b"`` → ``a b``); the value is stored in Postfix's quoted
external form, tokens re-joined with Postfix's spacing (``a,b`` →
``a, b``), so that what a lookup returns is byte for byte what Postfix's
postalias stores.

After the records, postalias stores the sendmail signature ``@`` → ``@``,
and the NIS keys ``YP_LAST_MODIFIED`` (ten-digit time) and
``YP_MASTER_NAME`` (``$myhostname``), those two without trailing NULs and
without case folding, as Debian's Postfix does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .textfile import Warn, logical_lines, printable, valid_utf8

OPCHARS = frozenset(b'|%!()<>@,;:\\".[]')
_STCL = frozenset(b" \t\r\n")

ATOM = "atom"
QSTRING = "qstring"
COMMENT = "comment"
DOMLIT = "domlit"
_NON_OPERATOR = frozenset({ATOM, QSTRING, COMMENT, DOMLIT})


@dataclass
class Token:
    kind: str | int  # ATOM, QSTRING, COMMENT, DOMLIT, or an operator byte
    text: bytes = b""


def _collect(s: bytes, i: int, stop: Callable[[int], bool]) -> tuple[bytes, int]:
    """Postfix's COLLECT(): bytes up to a stop byte; backslash takes the next
    byte literally; blanks become spaces."""
    out = bytearray()
    n = len(s)
    while i < n:
        c = s[i]
        if c == 0x5C:
            i += 1
            if i >= n:
                break
            c = s[i]
        elif stop(c):
            break
        out.append(0x20 if c in _STCL else c)
        i += 1
    return bytes(out), i


def scan(s: bytes) -> list[Token]:
    """tok822_scan(): a flat token list."""
    tokens: list[Token] = []
    n = len(s)
    i = 0
    while i < n:
        c = s[i]
        i += 1
        if c in _STCL:
            continue
        if c == 0x28:  # '(' comment, nesting, stored in external form
            out = bytearray(b"(")
            level = 1
            while i < n:
                ch = s[i]
                out.append(ch)
                i += 1
                if ch == 0x28:
                    level += 1
                elif ch == 0x29:
                    level -= 1
                    if level == 0:
                        break
                elif ch == 0x5C:
                    if i >= n:
                        break
                    out.append(s[i])
                    i += 1
            tokens.append(Token(COMMENT, bytes(out)))
        elif c == 0x5B:  # '['
            text, i = _collect(s, i, lambda ch: ch == 0x5D)
            if i < n:
                i += 1
            tokens.append(Token(DOMLIT, text))
        elif c == 0x22:  # '"'
            text, i = _collect(s, i, lambda ch: ch == 0x22)
            if i < n:
                i += 1
            tokens.append(Token(QSTRING, text))
        elif c != 0x5C and c in OPCHARS:
            tokens.append(Token(c))
        else:
            text, i = _collect(s, i - 1, lambda ch: ch in _STCL or ch in OPCHARS)
            kind = ATOM
            if any(b == 0x20 or b < 32 or b == 127 or b in OPCHARS for b in text):
                kind = QSTRING
            tokens.append(Token(kind, text))
    return tokens


def _space_after(tokens: list[Token], i: int) -> bool:
    if i + 1 >= len(tokens):
        return False
    tp, nx = tokens[i], tokens[i + 1]
    if tp.kind == 0x2C or nx.kind == 0x3C:  # ',' or next '<'
        return True
    return tp.kind in _NON_OPERATOR and nx.kind in _NON_OPERATOR


def _quote(text: bytes, specials: bytes) -> bytes:
    out = bytearray()
    for c in text:
        if c in specials:
            out.append(0x5C)
        out.append(c)
    return bytes(out)


def internalize(tokens: list[Token]) -> bytes:
    """tok822_internalize(): unquoted form."""
    out = bytearray()
    for i, tp in enumerate(tokens):
        if tp.kind in (ATOM, QSTRING, COMMENT):
            out += tp.text
        elif tp.kind == DOMLIT:
            out += b"[" + tp.text + b"]"
        else:
            out.append(tp.kind)  # type: ignore[arg-type]
        if _space_after(tokens, i):
            out.append(0x20)
    return bytes(out)


def externalize(tokens: list[Token]) -> bytes:
    """tok822_externalize(): quoted form, as stored in alias values."""
    out = bytearray()
    for i, tp in enumerate(tokens):
        if tp.kind in (ATOM, COMMENT):
            out += tp.text
        elif tp.kind == QSTRING:
            out += b'"' + _quote(tp.text, b'"\\\r\n') + b'"'
        elif tp.kind == DOMLIT:
            out += b"[" + _quote(tp.text, b"\\\r\n") + b"]"
        else:
            out.append(tp.kind)  # type: ignore[arg-type]
        if _space_after(tokens, i):
            out.append(0x20)
    return bytes(out)


@dataclass
class Alias:
    line: int
    name: bytes  # unquoted, not yet folded
    value: bytes  # external form


def parse_aliases(data: bytes, path: str, warn: Warn, *, utf8: bool = False) -> Iterator[Alias]:
    """The records of an aliases(5) file, with postalias's warnings for the
    lines it skips."""
    for lineno, line in logical_lines(data, path, warn):
        if utf8 and not valid_utf8(line):
            warn(f'{path}, line {lineno}: non-UTF-8 input "{printable(line)}"'
                 f" -- ignoring this line")
            continue
        tokens = scan(line)
        if not tokens:
            continue
        colon = next((i for i, t in enumerate(tokens) if t.kind == 0x3A), None)
        if (colon is None or colon == 0 or colon == len(tokens) - 1
                or any(t.kind == 0x2C for t in tokens[:colon])):
            warn(f"{path}, line {lineno}: need name:value pair")
            continue
        if any(t.kind in (0x40, 0x25) for t in tokens[:colon]):
            warn(f"{path}, line {lineno}: name must be local")
            continue
        yield Alias(lineno, internalize(tokens[:colon]), externalize(tokens[colon + 1:]))


def signature_records(myhostname: str, now: float | None = None) -> list[tuple[bytes, bytes, bool]]:
    """What postalias appends: (key, value, stored with NUL and folded?)."""
    stamp = b"%010d" % int(time.time() if now is None else now)
    return [
        (b"@", b"@", True),
        (b"YP_LAST_MODIFIED", stamp, False),
        (b"YP_MASTER_NAME", myhostname.encode("utf-8", "surrogateescape"), False),
    ]

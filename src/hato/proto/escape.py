"""Postfix's escape() (util/unescape.c): how hato logs bytes a client sent
(improper pipelining, non-SMTP commands, pre-greet text, bad PROXY
headers). Printable ASCII stays (a backslash is doubled), the C escapes
``\\a \\b \\f \\n \\r \\t \\v`` are used, and every other byte is a
backslash and three octal digits (``é`` in UTF-8 is ``\\303\\251``)."""

from __future__ import annotations

_NAMED = {7: "\\a", 8: "\\b", 12: "\\f", 10: "\\n", 13: "\\r", 9: "\\t", 11: "\\v"}


def escape(data: bytes) -> str:
    out = []
    for ch in data:
        if 32 <= ch < 127:
            out.append("\\\\" if ch == 92 else chr(ch))
        else:
            out.append(_NAMED.get(ch) or f"\\{ch:03o}")
    return "".join(out)

"""Host names as Postfix checks them (valid_hostname.c), shared by the SMTP
server's address syntax and the policy layer."""

from __future__ import annotations

import functools

VALID_LABEL_LEN = 63
VALID_HOSTNAME_LEN = 255


@functools.lru_cache(maxsize=4096)  # a pure function; the same names come again
def valid_hostname(name: str, *, utf8: bool = False) -> bool:
    """Postfix's valid_utf8_hostname(): letters, digits, ``-`` (not at a
    label's ends) and ``_``; labels of at most 63 characters, not all
    numeric, at most 255 long. With ``utf8`` a non-ASCII name is checked in
    its IDNA form; without, it is invalid."""
    if not name.isascii():
        if not utf8:
            return False
        try:
            name = name.encode("idna").decode("ascii")
        except (UnicodeError, ValueError):
            return False
    if not name:
        return False
    label_length = 0
    non_numeric = False
    n = len(name)
    for i, ch in enumerate(name):
        if ch.isalnum() or ch == "_":
            label_length += 1
            if label_length > VALID_LABEL_LEN:
                return False
            if not ch.isdigit():
                non_numeric = True
        elif ch == ".":
            if label_length == 0 or i + 1 >= n:
                return False
            label_length = 0
        elif ch == "-":
            non_numeric = True
            label_length += 1
            if label_length == 1 or i + 1 >= n or name[i + 1] == ".":
                return False
        else:
            return False
    return non_numeric and n <= VALID_HOSTNAME_LEN

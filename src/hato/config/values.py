"""Typed parameter values: booleans, integers, times, sizes and lists.

The parsers follow Postfix's rules: a time is a number with an optional unit
letter (s, m, h, d, w; the parameter's default unit when none is given), a
boolean is ``yes`` or ``no``, a list is split on commas and whitespace, and a
brace-quoted element ``{ text with spaces }`` stays whole.
"""

from __future__ import annotations

import re

from .errors import ConfigError

#: C's isspace() in the "C" locale, Postfix's ISSPACE(): what its readers
#: trim from lines and what starts a continuation line. Python's own
#: str.strip()/split()/isspace() also take \x1c-\x1f, \x85 and more, and
#: str.splitlines() also ends lines at \r, \v, \f and those.
C_SPACE = " \t\n\v\f\r"

TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TIME = re.compile(r"(\d+)([smhdw]?)\Z")
_INT = re.compile(r"-?\d+\Z")


def parse_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low == "yes":
        return True
    if low == "no":
        return False
    raise ConfigError(f'bad boolean configuration: {name} = {text}')


def parse_int(name: str, text: str, lo: int | None = None, hi: int | None = None) -> int:
    t = text.strip()
    if not _INT.match(t):
        raise ConfigError(f'bad numerical configuration: {name} = {text}')
    value = int(t)
    _bounds(name, value, text, lo, hi)
    return value


def parse_time(name: str, text: str, unit: str = "s", lo: int | None = None,
               hi: int | None = None) -> int:
    """Return seconds."""
    m = _TIME.match(text.strip())
    if not m:
        raise ConfigError(f'invalid time value: {name} = {text}')
    value = int(m.group(1)) * TIME_UNITS[m.group(2) or unit]
    _bounds(name, value, text, lo, hi)
    return value


def parse_size(name: str, text: str, lo: int | None = None, hi: int | None = None) -> int:
    return parse_int(name, text, lo, hi)


def _bounds(name: str, value: int, text: str, lo: int | None, hi: int | None) -> None:
    if lo is not None and value < lo:
        raise ConfigError(f"invalid {name} parameter value {text.strip()} < {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"invalid {name} parameter value {text.strip()} > {hi}")


def split_list(text: str, separators: str = ", \t\r\n") -> list[str]:
    """Split a Postfix list value; ``{ ... }`` groups stay one element
    (with the braces and surrounding blanks removed)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in separators:
            i += 1
        if i >= n:
            break
        if text[i] == "{":
            depth, j = 0, i
            while j < n:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if depth != 0:
                raise ConfigError(f'missing "}}" in "{text[i:]}"')
            out.append(text[i + 1 : j].strip())
            i = j + 1
            continue
        j = i
        while j < n and text[j] not in separators:
            if text[j] == "{":
                depth = 0
                while j < n:
                    if text[j] == "{":
                        depth += 1
                    elif text[j] == "}":
                        depth -= 1
                        if depth == 0:
                            break
                    j += 1
            j += 1
        out.append(text[i:j])
        i = j
    return out

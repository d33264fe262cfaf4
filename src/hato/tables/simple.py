"""Tables whose whole content is in their name, and the environment.

* ``inline:{ key=value, { key = value with spaces } }`` — an in-memory
  table. Elements are separated by commas or whitespace; an element in
  braces may hold spaces and commas. As in Postfix 3.7, the key may be
  double-quoted (the quotes stay part of the key), the value runs to the end
  of the element, a later duplicate replaces an earlier one, and keys are
  folded like any fixed-string table's.
* ``static:value`` and ``static:{ value with spaces }`` — every lookup finds
  the value.
* ``fail:name`` — every lookup is a temporary failure (:class:`TableRetry`).
* ``environ:name`` — looks up environment variables (the key is folded
  first, as in Postfix, so with folding on only lower-case names are found).

Syntax errors raise :class:`TableError` with Postfix's text, e.g.
``bad syntax: "inline:{}"; need "inline:{name=value...}"``.
"""

from __future__ import annotations

import os

from .base import OpenFlags, Table, TableError, TableRetry
from .patternfile import balpar, extpar, fold, split_braced, utf8_mode

#: Postfix's CHARS_COMMA_SP and ISSPACE() sets.
COMMA_SP = ", \t\r\n"
SPACE = " \t\n\v\f\r"


def require_name(type_name: str, spec: str) -> None:
    if not spec:
        raise TableError(f'open dictionary: expecting "type:name" form instead of '
                         f'"{type_name}:"')


def split_qnameval(text: str) -> tuple[str, str]:
    """``key = value`` with an optionally double-quoted key (Postfix's
    split_qnameval()); ValueError with Postfix's reason."""
    i, n = 0, len(text)
    while i < n and text[i] in SPACE:
        i += 1
    if i >= n:
        raise ValueError("no key found; expected format: key = value")
    start, quoted = i, False
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 1
            if i >= n:
                break
        elif ch in SPACE or ch == "=":
            if not quoted:
                break
        elif ch == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise ValueError("unbalanced '\"'")
    key = text[start:i]
    while i < n and text[i] in SPACE:
        i += 1
    if i >= n or text[i] != "=":
        raise ValueError("missing '=' after attribute name")
    return key, text[i + 1:].strip(SPACE)


def parse_inline(spec: str) -> list[tuple[str, str]]:
    """``{ k=v, { k = v w } }`` → [(key, value)]; TableError as Postfix."""
    need = f'"inline:{spec}"; need "inline:{{name=value...}}"'
    length = balpar(spec)
    if length == 0 or length != len(spec) or not spec[1:-1]:
        raise TableError(f"bad syntax: {need}")
    pairs = []
    for item in split_braced(spec[1:-1]):
        if item.startswith("{"):
            item, err = extpar(item)
            if err is not None:
                raise TableError(f"{err}: {need}")
        try:
            pairs.append(split_qnameval(item))
        except ValueError as err:
            raise TableError(f"{err}: {need}") from None
    if not pairs:
        raise TableError(f"empty table: {need}")
    return pairs


class InlineTable(Table):
    """``inline:{ key=value, ... }``."""

    type_name = "inline"

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        require_name(self.type_name, spec)
        self.utf8 = utf8_mode(flags)
        self.entries: dict[str, str] = {}
        for key, value in parse_inline(spec):
            if flags.fold_case:
                key = fold(key, self.utf8)
            self.entries[key] = value

    def get(self, key: str) -> str | None:
        if self.flags.fold_case:
            key = fold(key, self.utf8)
        return self.entries.get(key)


class StaticTable(Table):
    """``static:value`` or ``static:{ value }``: always found."""

    type_name = "static"

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        require_name(self.type_name, spec)
        value = spec
        if spec.startswith("{"):
            value, err = extpar(spec)
            if err is not None:
                raise TableError(f"bad static:name syntax: {err}")
        self.value = value

    def get(self, key: str) -> str | None:
        return self.value


class FailTable(Table):
    """``fail:name``: every lookup fails temporarily."""

    type_name = "fail"

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        require_name(self.type_name, spec)

    def get(self, key: str) -> str | None:
        raise TableRetry(self.name, "table lookup failed (fail: table)")


class EnvironTable(Table):
    """``environ:name``: the process environment (the name is ignored)."""

    type_name = "environ"

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        require_name(self.type_name, spec)
        self.utf8 = utf8_mode(flags)

    def get(self, key: str) -> str | None:
        if self.flags.fold_case:
            key = fold(key, self.utf8)
        if "\0" in key or "=" in key:
            return None
        return os.environ.get(key)


__all__ = ["EnvironTable", "FailTable", "InlineTable", "StaticTable", "extpar",
           "parse_inline", "split_braced"]

"""Tables made of other tables.

* ``unionmap:{type:name, type:name, ...}`` — the key is looked up in every
  table; all results are joined with commas, in table order. Not found when
  no table finds it; a temporary failure in any table fails the lookup.
* ``pipemap:{type:name, type:name, ...}`` — the key goes to the first table,
  each result is the key for the next one, the last result is the answer;
  not found as soon as one table finds nothing.
* ``proxy:type:name`` — Postfix's proxymap(8) client. hato resolves it in
  process: it opens ``type:name`` itself, with the same answers.

Members are separated by commas or whitespace; braces keep a member whole
(``unionmap:{inline:{a=1, b=2}, static:x}``). As in Postfix, the composite
matches like its first member (a ``pcre:`` first member makes the whole a
pattern table for the address search order). Members are opened through
:func:`hato.tables.registry.open_table` with the same flags.
"""

from __future__ import annotations

from .base import OpenFlags, Table, TableError
from .patternfile import balpar, split_braced
from .simple import require_name


def parse_members(type_name: str, spec: str) -> list[str]:
    """``{type:name, ...}`` → member specs; TableError as Postfix words it."""
    need = f'"{type_name}:{spec}"; need "{type_name}:{{type:name...}}"'
    length = balpar(spec)
    if length == 0 or length != len(spec) or not spec[1:-1]:
        raise TableError(f"bad syntax: {need}")
    members = split_braced(spec[1:-1])
    if not members or any(":" not in m for m in members):
        raise TableError(f"bad syntax: {need}")
    return members


def _open_all(specs: list[str], flags: OpenFlags) -> list[Table]:
    from .registry import open_table  # the registry imports table modules lazily

    tables: list[Table] = []
    try:
        for spec in specs:
            tables.append(open_table(spec, flags))
    except BaseException:
        for table in tables:
            table.close()
        raise
    return tables


class _Composite(Table):
    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        require_name(self.type_name, spec)
        self.tables = _open_all(parse_members(self.type_name, spec), flags)
        self.pattern_table = self.tables[0].pattern_table

    def close(self) -> None:
        for table in self.tables:
            table.close()

    def refresh(self) -> bool:
        changed = False
        for table in self.tables:
            changed = table.refresh() or changed
        return changed


class UnionTable(_Composite):
    """``unionmap:{...}``: every table's result, comma-joined."""

    type_name = "unionmap"

    def get(self, key: str) -> str | None:
        joined = ""
        for table in self.tables:
            value = table.get(key)
            if value is not None:
                joined = f"{joined},{value}" if joined else value
        return joined or None  # as Postfix: only empty results → not found


class PipeTable(_Composite):
    """``pipemap:{...}``: each result is the next table's key."""

    type_name = "pipemap"

    def get(self, key: str) -> str | None:
        value: str | None = key
        for table in self.tables:
            value = table.get(value)  # type: ignore[arg-type]
            if value is None:
                return None
        return value


class ProxyTable(Table):
    """``proxy:type:name``, resolved in process."""

    type_name = "proxy"

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        require_name(self.type_name, spec)
        self.inner = _open_all([spec], flags)[0]
        self.pattern_table = self.inner.pattern_table

    def get(self, key: str) -> str | None:
        return self.inner.get(key)

    def close(self) -> None:
        self.inner.close()

    def refresh(self) -> bool:
        return self.inner.refresh()


__all__ = ["PipeTable", "ProxyTable", "UnionTable", "parse_members"]

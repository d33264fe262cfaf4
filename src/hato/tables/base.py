"""The one lookup-table interface every table type implements.

A lookup has three outcomes, as in Postfix's dict(3):

* found — :meth:`Table.get` returns the value (a str);
* not found — it returns ``None``;
* a temporary failure (database down, file unreadable, bad regex found at
  run time) — it raises :class:`TableRetry`; callers turn that into a 4xx
  reply or a deferral, never a reject and never a crash.

Configuration mistakes found when a table is opened (unknown type, bad file
syntax) raise :class:`TableError` (a ConfigError) naming the table, the file
and the line.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.errors import ConfigError


class TableError(ConfigError):
    """A table that cannot be opened or is written wrongly."""


class TableRetry(Exception):
    """A temporary lookup failure: try again later (4xx, defer)."""

    def __init__(self, table: str, reason: str):
        super().__init__(f"{table}: {reason}")
        self.table = table
        self.reason = reason


@dataclass(frozen=True)
class OpenFlags:
    """How a table is opened, mirroring Postfix's dict open flags."""

    fold_case: bool = True  # lower-case the key before the lookup (DICT_FLAG_FOLD_FIX)
    writable: bool = False
    utf8: bool = False  # smtputf8_enable = yes: UTF-8 keys, Unicode case folding


class Table:
    """Base class. Subclasses set ``type_name`` and implement :meth:`get`."""

    type_name: str = ""
    #: the table matches whole strings (regexp, pcre, cidr...): callers must not
    #: apply the user@domain partial-key search to it.
    pattern_table: bool = False

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        self.spec = spec  # what follows "type:" in the configuration
        self.flags = flags

    @property
    def name(self) -> str:
        return f"{self.type_name}:{self.spec}"

    def get(self, key: str) -> str | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (connections, mappings)."""

    def refresh(self) -> bool:
        """Re-open the table if its file changed; True when it did."""
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

"""``texthash:`` tables: a postmap(1) source file read straight into memory.

``texthash:/etc/postfix/x`` reads ``/etc/postfix/x`` itself (no index, no
``postmap`` step) with the same parser as postmap, so the same lines are
accepted, warned about and ignored. Keys are folded to lower case unless the
table is opened without folding (``postmap -f``). A key that appears twice
keeps its first value with Postfix's warning "FILE, line N: duplicate entry"
(``-w``: silently; ``-r``: the last value wins). :meth:`refresh` re-reads the
file when it changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from .base import OpenFlags, TableError
from .textfile import (
    DupMode,
    IndexedTable,
    flag_dup,
    fold_key,
    log,
    parse_source,
    printable,
    read_source,
)


class TexthashTable(IndexedTable):
    """``texthash:/path``: the records of ``/path``, held in a dict."""

    type_name = "texthash"
    suffix = ""
    nul_lookup = False

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        self._data: dict[bytes, bytes] = {}
        super().__init__(spec, flags)

    def _missing_index(self, err: OSError) -> TableError:
        return TableError(f"open database {self.index_path}: {err.strerror}")

    def _check_stale(self, st: os.stat_result) -> None:
        pass  # the source is the table

    def _open_index(self) -> None:
        data = read_source(self.source_path)
        fold = self.flags.fold_case
        dup = flag_dup(self.flags)
        table: dict[bytes, bytes] = {}
        for entry in parse_source(data, self.source_path, log.warning, utf8=self.utf8):
            key = entry.key
            if fold:
                folded = fold_key(key, self.utf8)
                if folded is None:
                    continue
                key = folded
            if key in table:
                if dup == DupMode.REPLACE:
                    table[key] = entry.value
                elif dup == DupMode.WARN:
                    log.warning('%s, line %d: duplicate entry: "%s"', self.source_path,
                                entry.line, printable(entry.key, self.utf8))
                continue
            table[key] = entry.value
        self._data = table
        self._raw_get = table.get

    def _close_index(self) -> None:
        self._data = {}

    def _items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        yield from list(self._data.items())

"""``hash:`` and ``btree:`` tables, in hato's own index file.

Postfix keeps ``hash:`` and ``btree:`` tables in Berkeley DB files named
``<file>.db``. Berkeley DB has no maintained Python binding that builds on
current systems, and Postfix itself now steers ``hash:`` users to ``lmdb:``
and ``cdb:``; hato therefore does not read Postfix's ``.db`` files. It
accepts ``hash:`` and ``btree:`` in configurations unchanged and keeps their
contents in its own index, built by ``hato postmap hash:<file>`` (or
``btree:``, or ``hato postalias`` / ``hato newaliases`` for aliases):

    <file>.hato.db

The name leaves Postfix's ``<file>.db`` alone, so Postfix and hato can share
one configuration directory, each with its own index of the same source.
The file is an LMDB file laid out exactly as Postfix's ``lmdb:`` tables
(keys and values with a trailing NUL), so ``mdb_dump`` and the like read it;
``hash:`` and ``btree:`` share it: both are exact-key tables, and hato lists
both in key order.

When the hato index is missing but a Berkeley DB ``<file>.db`` is there,
opening the table fails with a message that says so and how to build the
index. A source newer than its index gives Postfix's warning "database X is
older than source file Y".
"""

from __future__ import annotations

from .base import TableError
from .lmdb_table import DEFAULT_MAP_SIZE, LmdbTable, LmdbWriter
from .textfile import BuildOptions

SUFFIX = ".hato.db"

# Berkeley DB magic numbers at offset 12 of the meta page.
_BDB_MAGICS = {0x00061561: "Hash", 0x00053162: "Btree", 0x00040988: "Queue"}


def berkeley_db_kind(path: str) -> str | None:
    """"Hash"/"Btree"/... when *path* is a Berkeley DB file, else None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return None
    if len(head) < 16:
        return None
    for order in ("little", "big"):
        kind = _BDB_MAGICS.get(int.from_bytes(head[12:16], order))
        if kind:
            return kind
    return None


class HashTable(LmdbTable):
    """``hash:/path``: hato's index ``/path.hato.db``."""

    type_name = "hash"
    suffix = SUFFIX

    def _missing_index(self, err: OSError) -> TableError:
        build = f"hato postmap {self.type_name}:{self.source_path}"
        bdb = self.source_path + ".db"
        kind = berkeley_db_kind(bdb)
        if kind and err.errno == 2:
            return TableError(
                f"open database {self.index_path}: No such file or directory: "
                f"{bdb} is a Berkeley DB ({kind}) file made by Postfix's postmap, "
                f"which hato does not read; build hato's index of {self.source_path} "
                f"with \"{build}\" (see docs/tables-indexed.md)")
        if err.errno == 2:
            return TableError(f"open database {self.index_path}: No such file or directory "
                              f"(build it with \"{build}\")")
        return TableError(f"open database {self.index_path}: {err.strerror}")


class BtreeTable(HashTable):
    """``btree:/path``: the same index as ``hash:/path``."""

    type_name = "btree"


class HashWriter(LmdbWriter):
    """Builds ``<file>.hato.db`` (``postmap hash:<file>`` / ``btree:``)."""

    type_name = "hash"

    def __init__(self, source: str, *, incremental: bool = False,
                 options: BuildOptions | None = None, map_size: int = DEFAULT_MAP_SIZE,
                 type_name: str = "hash"):
        self.type_name = type_name
        index = source + SUFFIX
        super().__init__(source, incremental=incremental, options=options,
                         map_size=map_size, index_path=index, label=index)

"""``lmdb:`` tables: OpenLDAP LMDB files, byte-compatible with Postfix's.

``postmap lmdb:/etc/postfix/x`` builds ``/etc/postfix/x.lmdb`` from the
source ``/etc/postfix/x``. The file is a plain LMDB environment in one file
(``MDB_NOSUBDIR``, no lock file, the unnamed database); as Postfix writes
it, every key and value carries a trailing NUL byte (``postmap -n`` leaves
it off, ``-N`` asks for it), and lookups try the key with and without the
NUL. Files written by Postfix's postmap are read here and files written here
answer Postfix's ``postmap -q``.

Readers open the file read-only and without LMDB's lock table: hato never
changes an index in place but writes a new file and renames it over the old
one (:class:`~hato.tables.textfile.IndexWriter`), so a reader holds either
the old file or the new one. :meth:`refresh` notices the rename.
"""

from __future__ import annotations

from collections.abc import Iterator

import lmdb

from .base import OpenFlags, TableError
from .textfile import BuildOptions, IndexedTable, IndexWriter, SourceError

#: LMDB's compiled-in key size limit (mdb_env_get_maxkeysize()).
MAX_KEY_SIZE = 511
#: Postfix's lmdb_map_size default: the initial size of the memory map.
DEFAULT_MAP_SIZE = 16 * 1024 * 1024


def open_env(path: str) -> lmdb.Environment:
    """Open an LMDB file for reading, as Postfix's dict_lmdb does."""
    return lmdb.open(path, subdir=False, readonly=True, lock=False, create=False,
                     max_dbs=0, readahead=False, map_size=DEFAULT_MAP_SIZE)


def read_all(path: str) -> Iterator[tuple[bytes, bytes]]:
    env = open_env(path)
    try:
        with env.begin(buffers=False) as txn:
            yield from txn.cursor()
    finally:
        env.close()


def write_file(path: str, records: dict[bytes, bytes], map_size: int = DEFAULT_MAP_SIZE) -> None:
    """Write *records* as a new LMDB file at *path* (which may exist empty)."""
    items = sorted(records.items())
    need = sum(len(k) + len(v) + 64 for k, v in items) * 2 + 1024 * 1024
    size = max(map_size, need)
    while True:
        env = lmdb.open(path, subdir=False, lock=False, map_size=size, max_dbs=0,
                        sync=False, metasync=False, readahead=False)
        try:
            with env.begin(write=True) as txn:
                cursor = txn.cursor()
                _consumed, added = cursor.putmulti(items, append=True)
                if added != len(items):
                    raise TableError(f"{path}: wrote {added} of {len(items)} records")
            env.sync(True)
            return
        except lmdb.MapFullError:
            size *= 2
        finally:
            env.close()
        # start over on an empty file
        with open(path, "wb"):
            pass


class LmdbTable(IndexedTable):
    """``lmdb:/path``: the index ``/path.lmdb``."""

    type_name = "lmdb"
    suffix = ".lmdb"
    # an empty key or one longer than 511 bytes cannot be stored: not found
    _soft_errors = (lmdb.BadValsizeError,)
    _hard_errors = (lmdb.Error,)

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        self._env: lmdb.Environment | None = None
        self._txn: lmdb.Transaction | None = None
        super().__init__(spec, flags)

    def _open_index(self) -> None:
        try:
            self._env = open_env(self.index_path)
            self._txn = self._env.begin(buffers=False)
        except lmdb.Error as err:
            raise TableError(f"open database {self.index_path}: not an LMDB file "
                             f"or unreadable: {err}") from None
        self._raw_get = self._txn.get

    def _close_index(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if self._env is not None:
            self._env.close()
            self._env = None

    def _items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        if self._env is None:
            return
        with self._env.begin(buffers=False) as txn:
            yield from txn.cursor()


class LmdbWriter(IndexWriter):
    """Builds ``<file>.lmdb`` (``postmap lmdb:<file>``)."""

    type_name = "lmdb"
    default_nul = True

    def __init__(self, source: str, *, incremental: bool = False,
                 options: BuildOptions | None = None, map_size: int = DEFAULT_MAP_SIZE,
                 index_path: str | None = None, label: str | None = None):
        self.map_size = map_size
        self.label = label if label is not None else f"lmdb:{source}"
        super().__init__(index_path or source + ".lmdb", incremental=incremental,
                         options=options)

    def _load(self) -> Iterator[tuple[bytes, bytes]]:
        try:
            yield from read_all(self.index_path)
        except lmdb.Error as err:
            raise TableError(f"open database {self.index_path}: {err}") from None

    def check_record(self, key: bytes, value: bytes, where: tuple[str, int] | None) -> None:
        if len(key) > MAX_KEY_SIZE:
            msg = (f"key is {len(key)} bytes long; {self.type_name}: keys are limited to "
                   f"{MAX_KEY_SIZE} bytes")
            if where:
                raise SourceError(msg, where[0], where[1])
            raise SourceError(msg)

    def _write(self, path: str) -> None:
        try:
            write_file(path, self.records, self.map_size)
        except lmdb.Error as err:
            raise TableError(f"error writing {self.index_path}: {err}") from None

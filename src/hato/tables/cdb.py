"""``cdb:`` tables: D. J. Bernstein's constant databases, as Postfix's.

``postmap cdb:/etc/postfix/x`` builds ``/etc/postfix/x.cdb``. Postfix stores
cdb keys and values *without* a trailing NUL byte (``postmap -N`` adds one);
lookups try both forms, as for every file table. The format is djb's:

* a 2048-byte header of 256 ``(position, slot count)`` pairs, little-endian
  32-bit, one per hash table;
* the records, each ``key length, value length, key, value``;
* the 256 hash tables, each of ``(hash, record position)`` slots, twice as
  many slots as records in that table, filled by linear probing from
  ``(hash >> 8) % slots``. The hash is ``h = ((h << 5) + h) ^ byte`` from
  5381, modulo 2**32; its low 8 bits choose the table.

The reader maps the file and walks the probe sequence; the writer keeps the
records in insertion order and lays the tables out as cdbmake does, so the
files are interchangeable with Postfix's (tinycdb) in both directions.
Unlike Postfix, ``postmap -s`` can list a cdb table here, and ``-i``/``-d``
rewrite it (Postfix refuses both for cdb).
"""

from __future__ import annotations

import mmap
import os
import struct
from collections.abc import Iterator

from .base import OpenFlags, TableError
from .textfile import BuildOptions, IndexedTable, IndexWriter, SourceError

HEADER_SIZE = 2048
MAX_FILE_SIZE = 0xFFFFFFFF
_PAIR = struct.Struct("<II")


def cdb_hash(data: bytes) -> int:
    h = 5381
    for c in data:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ c
    return h


class CdbFile:
    """A read-only cdb file."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < HEADER_SIZE:
                raise TableError(f"open database {path}: not a cdb file (too short)")
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = size
        self._header = [_PAIR.unpack_from(self._map, i * 8) for i in range(256)]

    def close(self) -> None:
        self._map.close()

    def get(self, key: bytes) -> bytes | None:
        h = cdb_hash(key)
        pos, slots = self._header[h & 0xFF]
        if not slots:
            return None
        m = self._map
        klen = len(key)
        slot = (h >> 8) % slots
        for _ in range(slots):
            spos = pos + slot * 8
            if spos + 8 > self.size:
                raise ValueError("hash table outside the file")
            shash, rpos = _PAIR.unpack_from(m, spos)
            if rpos == 0:
                return None
            if shash == h:
                rk, rv = _PAIR.unpack_from(m, rpos)
                if rk == klen and m[rpos + 8:rpos + 8 + rk] == key:
                    start = rpos + 8 + rk
                    if start + rv > self.size:
                        raise ValueError("record outside the file")
                    return m[start:start + rv]
            slot += 1
            if slot == slots:
                slot = 0
        return None

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every record in file order."""
        end = min((p for p, _ in self._header), default=HEADER_SIZE)
        m = self._map
        pos = HEADER_SIZE
        while pos + 8 <= end:
            rk, rv = _PAIR.unpack_from(m, pos)
            start = pos + 8
            if start + rk + rv > end:
                raise ValueError("record outside the data area")
            yield m[start:start + rk], m[start + rk:start + rk + rv]
            pos = start + rk + rv


def write_cdb(path: str, records: dict[bytes, bytes]) -> None:
    """Write *records* (in their order) as a cdb file at *path*."""
    tables: list[list[tuple[int, int]]] = [[] for _ in range(256)]
    with open(path, "wb") as fh:
        fh.write(b"\0" * HEADER_SIZE)
        pos = HEADER_SIZE
        chunks: list[bytes] = []
        for key, value in records.items():
            h = cdb_hash(key)
            tables[h & 0xFF].append((h, pos))
            rec = _PAIR.pack(len(key), len(value)) + key + value
            chunks.append(rec)
            pos += len(rec)
            if pos > MAX_FILE_SIZE:
                raise TableError(f"{path}: cdb files are limited to 4 GB")
            if len(chunks) >= 4096:
                fh.write(b"".join(chunks))
                chunks.clear()
        fh.write(b"".join(chunks))
        header = []
        for entries in tables:
            slots = len(entries) * 2
            header.append(_PAIR.pack(pos, slots))
            if not slots:
                continue
            table = [(0, 0)] * slots
            for h, rpos in entries:
                i = (h >> 8) % slots
                while table[i][1]:
                    i += 1
                    if i == slots:
                        i = 0
                table[i] = (h, rpos)
            fh.write(b"".join(_PAIR.pack(*t) for t in table))
            pos += slots * 8
            if pos > MAX_FILE_SIZE:
                raise TableError(f"{path}: cdb files are limited to 4 GB")
        fh.seek(0)
        fh.write(b"".join(header))
        fh.flush()


#: cdb files up to this size are read into a dict when opened (a dict
#: lookup is much faster than walking the hash table in Python); larger
#: ones are looked up in the mapped file.
IN_MEMORY_LIMIT = 64 * 1024 * 1024


class CdbTable(IndexedTable):
    """``cdb:/path``: the index ``/path.cdb``."""

    type_name = "cdb"
    suffix = ".cdb"
    _hard_errors = (ValueError, struct.error)

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        self._cdb: CdbFile | None = None
        self._records: dict[bytes, bytes] | None = None
        super().__init__(spec, flags)

    def _open_index(self) -> None:
        cdb = CdbFile(self.index_path)
        if cdb.size <= IN_MEMORY_LIMIT:
            try:
                records: dict[bytes, bytes] = {}
                for key, value in cdb.items():
                    records.setdefault(key, value)  # cdb_find() finds the first
            except (ValueError, struct.error) as err:
                cdb.close()
                raise TableError(f"open database {self.index_path}: corrupt cdb file: "
                                 f"{err}") from None
            self._records = records
            self._raw_get = records.get
            cdb.close()
            return
        self._records = None
        self._cdb = cdb
        self._raw_get = cdb.get

    def _close_index(self) -> None:
        self._records = None
        if self._cdb is not None:
            self._cdb.close()
            self._cdb = None

    def _items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        if self._records is not None:
            yield from list(self._records.items())
        elif self._cdb is not None:
            yield from self._cdb.items()


class CdbWriter(IndexWriter):
    """Builds ``<file>.cdb`` (``postmap cdb:<file>``)."""

    type_name = "cdb"
    default_nul = False

    def __init__(self, source: str, *, incremental: bool = False,
                 options: BuildOptions | None = None):
        self.label = source  # Postfix: "FILE: duplicate entry"
        super().__init__(source + ".cdb", incremental=incremental, options=options)

    def _load(self) -> Iterator[tuple[bytes, bytes]]:
        try:
            cdb = CdbFile(self.index_path)
        except OSError as err:
            raise TableError(f"open database {self.index_path}: {err.strerror}") from None
        try:
            for key, value in cdb.items():
                yield bytes(key), bytes(value)
        except (ValueError, struct.error) as err:
            raise TableError(f"{self.index_path}: corrupt cdb file: {err}") from None
        finally:
            cdb.close()

    def check_record(self, key: bytes, value: bytes, where: tuple[str, int] | None) -> None:
        if len(key) + len(value) > MAX_FILE_SIZE // 2:
            msg = "record too large for a cdb file"
            raise SourceError(msg, *(where or (None, None)))

    def _write(self, path: str) -> None:
        write_cdb(path, self.records)

"""Text table sources and the indexed files built from them.

This module owns what ``lmdb:``, ``hash:``, ``btree:``, ``cdb:``,
``texthash:`` and the aliases tables share:

* the postmap(1) source format: ``key whitespace value`` lines, ``#``
  comment lines, blank lines, and continuation lines that start with
  whitespace (Postfix's ``readllines()`` and the parse loop in
  ``postmap.c``, warning for warning);
* key folding, as Postfix's dict layer does it: ASCII lower-casing, or
  full Unicode case folding when ``smtputf8_enable = yes``;
* the trailing-NUL rules (``-N``/``-n``, and "try both" on lookup, sticky
  after the first hit, as ``DICT_FLAG_TRY1NULL``/``TRY0NULL``);
* :class:`IndexedTable`, the base of every table read from an index file:
  re-opening when the file was replaced (:meth:`IndexedTable.refresh`) and
  the "database X is older than source file Y" warning;
* :class:`IndexWriter`, the base of every index writer: records collected
  in memory, written to a temporary file in the same directory, synced and
  renamed over the old index, so that a reader sees the old table or the
  new one, never half of one, and a failed build leaves the old index as it
  was.

Keys and values are handled as bytes throughout, so that a table built from
Latin-1 or other non-UTF-8 text answers exactly what Postfix answers; the
:class:`~hato.tables.base.Table` interface speaks ``str``, mapped to bytes
with UTF-8 and ``surrogateescape``.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .base import OpenFlags, Table, TableError, TableRetry

log = logging.getLogger("hato.tables")

#: C's isspace() in the "C" locale, as Postfix's ISSPACE().
SPACE = b" \t\n\v\f\r"
_SPACE_SET = frozenset(SPACE)

#: Postfix warns when a source file is newer than its index, but only when
#: the source was last changed more than this many seconds ago (so that a
#: table being rebuilt right now does not trigger it).
STALE_GRACE = 100


class SourceError(TableError):
    """A table source that cannot be turned into a table (file and line)."""


# -- open flags -----------------------------------------------------------------


class NulMode:
    """How keys and values are stored: with a trailing NUL byte or not."""

    DEFAULT = ""  # the type's default when writing; try both when reading
    WITH = "with"  # postmap -N
    WITHOUT = "without"  # postmap -n


class DupMode:
    """What to do with a key that is already in the table being built."""

    WARN = "warn"  # keep the first, warn "duplicate entry" (Postfix's default)
    IGNORE = "ignore"  # keep the first silently (-w)
    REPLACE = "replace"  # keep the last silently (-r)


@dataclass(frozen=True)
class FileOpenFlags(OpenFlags):
    """OpenFlags plus what the file-based tables need from postmap's options
    and from main.cf (``smtputf8_enable``)."""

    nul: str = NulMode.DEFAULT
    dup: str = DupMode.WARN


def flag_utf8(flags: OpenFlags) -> bool:
    return flags.utf8


def flag_nul(flags: OpenFlags) -> str:
    return str(getattr(flags, "nul", NulMode.DEFAULT))


def flag_dup(flags: OpenFlags) -> str:
    return str(getattr(flags, "dup", DupMode.WARN))


# -- bytes and text -------------------------------------------------------------


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def to_text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def valid_utf8(data: bytes) -> bool:
    if data.isascii():
        return True
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def printable(data: bytes | str, utf8: bool = False) -> str:
    """Text for a log line: Postfix replaces unprintable bytes with '?'."""
    if isinstance(data, str):
        data = to_bytes(data)
    if utf8 and valid_utf8(data):
        text = data.decode("utf-8")
        return "".join(c if c.isprintable() or c in " \t" else "?" for c in text)
    return "".join(chr(b) if 32 <= b < 127 or b == 9 else "?" for b in data)


def fold_key(key: bytes, utf8: bool) -> bytes | None:
    """Fold a key as Postfix's dict layer does; None for a key that is not
    UTF-8 in UTF-8 mode (Postfix refuses those)."""
    if key.isascii():
        return key.lower()
    if not utf8:
        return key.lower()  # bytes.lower() folds ASCII letters only, as Postfix
    try:
        return key.decode("utf-8").casefold().encode("utf-8")
    except UnicodeDecodeError:
        return None


# -- the source format ----------------------------------------------------------

Warn = Callable[[str], None]


def read_source(path: str) -> bytes:
    """The bytes of a table source file; TableError "open PATH: reason"."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as err:
        raise SourceError(f"open {path}: {err.strerror}") from None


def logical_lines(data: bytes, path: str, warn: Warn) -> Iterator[tuple[int, bytes]]:
    """Postfix's readllines(): (first line number, logical line).

    Blank lines, whitespace-only lines and lines whose first non-blank
    character is ``#`` are dropped, and do not end a logical line; a line
    that starts with whitespace continues the previous one (its bytes are
    appended as they are, leading whitespace included). Text that continues
    nothing is dropped with Postfix's warning.
    """
    buf: bytes | None = None
    first = 0
    lineno = 0
    for raw in data.split(b"\n"):
        lineno += 1
        stripped = raw.lstrip(SPACE)
        if not stripped or stripped[0] == 0x23:  # '#'
            continue
        if raw[0] in _SPACE_SET:
            if buf is None:
                buf, first = raw, lineno
            else:
                buf += raw
            continue
        if buf is not None:
            yield from _emit(buf, first, path, warn)
        buf, first = raw, lineno
    if buf is not None:
        yield from _emit(buf, first, path, warn)


def _emit(buf: bytes, first: int, path: str, warn: Warn) -> Iterator[tuple[int, bytes]]:
    if buf[0] in _SPACE_SET:
        more = "..." if len(buf) > 30 else ""
        warn(f'{path}: logical line must not start with whitespace: '
             f'"{printable(buf[:30])}{more}"')
        return
    if 0 in buf:
        raise SourceError("NUL byte in input: this is not a text file "
                          "(Postfix would silently cut the line here)", path, first)
    yield first, buf


@dataclass
class Entry:
    """One ``key value`` record of a source file."""

    line: int
    key: bytes
    value: bytes


def split_entry(line: bytes) -> tuple[bytes, bytes, bool]:
    """postmap.c's parse loop: the key ends at the first unquoted blank
    (``"`` quotes, ``\\`` escapes one byte; both stay in the key); the value
    is the rest, blanks trimmed. The flag says the quotes were unbalanced."""
    n = len(line)
    i = 0
    in_quotes = False
    while i < n:
        c = line[i]
        if c == 0x5C:  # backslash
            i += 1
            if i >= n:
                break
        elif c in _SPACE_SET:
            if not in_quotes:
                break
        elif c == 0x22:  # '"'
            in_quotes = not in_quotes
        i += 1
    key = line[:i]
    value = line[i + 1:].strip(SPACE) if i < n else b""
    return key, value, in_quotes


def parse_source(data: bytes, path: str, warn: Warn, *, utf8: bool = False) -> Iterator[Entry]:
    """The records of a postmap(1) source, with Postfix's warnings for the
    lines it ignores."""
    for lineno, line in logical_lines(data, path, warn):
        if utf8 and not valid_utf8(line):
            warn(f'{path}, line {lineno}: non-UTF-8 input "{printable(line)}"'
                 f" -- ignoring this line")
            continue
        key, value, unbalanced = split_entry(line)
        if unbalanced:
            warn(f"{path}, line {lineno}: unbalanced '\"' in '{printable(line, utf8)}'"
                 f" -- ignoring this line")
            continue
        if not key or not value:
            warn(f"{path}, line {lineno}: expected format: key whitespace value")
            continue
        if key.endswith(b":"):
            warn(f'{path}, line {lineno}: record is in "key: value" format;'
                 f" is this an alias file?")
        yield Entry(lineno, key, value)


# -- reading index files ----------------------------------------------------------


def file_stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def strip_nul(data: bytes) -> bytes:
    return data[:-1] if data.endswith(b"\0") else data


class IndexedTable(Table):
    """A table read from an index file ``<spec><suffix>`` built from the
    source file ``<spec>``.

    Subclasses implement :meth:`_open_index` (raise OSError or TableError;
    set :attr:`_raw_get`, the function that looks a stored key up),
    :meth:`_close_index` and :meth:`_items_raw`; :attr:`_soft_errors` are
    exceptions of ``_raw_get`` that mean "no such key can be stored" (not
    found), :attr:`_hard_errors` those that mean a temporary failure.
    :meth:`refresh` re-opens the index when the file at its path is another
    file or was changed (device, inode, mtime, size), so that a service
    calling it at request boundaries sees a rebuilt table without a restart.

    Lookups follow Postfix's TRY1NULL/TRY0NULL rule: try the key with a
    trailing NUL and without; after the first hit, stick to the form that
    hit (until the table is re-opened).
    """

    suffix = ""
    #: False for tables that never store NULs (texthash)
    nul_lookup = True
    _soft_errors: tuple[type[BaseException], ...] = ()
    _hard_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        if not spec:
            raise TableError(f"{self.type_name}: missing file name")
        self.source_path = spec
        self.index_path = spec + self.suffix
        self.utf8 = flag_utf8(flags)
        self._fold = flags.fold_case
        self._nul_mode = flag_nul(flags)
        self._try1 = self._try0 = True
        self._raw_get: Callable[[bytes], bytes | None] = _closed
        self._fast = False
        self._stamp: tuple[int, int, int, int] | None = None
        self._open()

    # -- subclass hooks --
    def _open_index(self) -> None:
        raise NotImplementedError

    def _close_index(self) -> None:
        pass

    def _items_raw(self) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    def _missing_index(self, err: OSError) -> TableError:
        return TableError(f"open database {self.index_path}: {err.strerror}")

    # -- opening --
    def _open(self) -> None:
        try:
            st = os.stat(self.index_path)
            self._open_index()
        except OSError as err:
            raise self._missing_index(err) from None
        self._stamp = file_stamp(st)
        self._drop_fast_get()
        self._try1 = self.nul_lookup and self._nul_mode != NulMode.WITHOUT
        self._try0 = not self.nul_lookup or self._nul_mode != NulMode.WITH
        self._check_stale(st)

    def _check_stale(self, st: os.stat_result) -> None:
        try:
            src = os.stat(self.source_path)
        except OSError:
            return
        if src.st_mtime > st.st_mtime and src.st_mtime < time.time() - STALE_GRACE:
            log.warning("database %s is older than source file %s",
                        self.index_path, self.source_path)

    def refresh(self) -> bool:
        try:
            st = os.stat(self.index_path)
        except OSError:
            return False  # keep answering from the table we have
        if file_stamp(st) == self._stamp:
            return False
        self._close_index()
        self._raw_get = _closed
        self._drop_fast_get()
        self._open()
        return True

    def close(self) -> None:
        self._close_index()
        self._raw_get = _closed
        self._drop_fast_get()

    # -- lookups --
    def _bad_key(self, key: bytes) -> None:
        log.warning('%s: non-UTF-8 key "%s": malformed UTF-8 or invalid codepoint',
                    self.name, printable(key))

    def lookup_bytes(self, key: bytes) -> bytes | None:
        """The value stored under *key* (folded as the table says), or None."""
        if self._fold:
            if key.isascii():
                key = key.lower()
            else:
                folded = fold_key(key, self.utf8)
                if folded is None:
                    self._bad_key(key)
                    return None
                key = folded
        elif self.utf8 and not valid_utf8(key):
            self._bad_key(key)
            return None
        raw_get = self._raw_get
        try:
            if self._try1:
                value = raw_get(key + b"\0")
                if value is not None:
                    self._try0 = False
                    return value[:value.index(0)] if 0 in value else value
            if self._try0 and key:
                value = raw_get(key)
                if value is not None:
                    self._try1 = False
                    return value[:value.index(0)] if 0 in value else value
        except self._soft_errors:
            return None
        except self._hard_errors as err:
            raise TableRetry(self.name, f"{self.index_path}: {err}") from None
        return None

    def get(self, key: str) -> str | None:
        value = self.lookup_bytes(key.encode("utf-8", "surrogateescape"))
        if not self._fast and self._fold and self._try1 is not self._try0:
            self._install_fast_get()
        return None if value is None else value.decode("utf-8", "surrogateescape")

    def _install_fast_get(self) -> None:
        """Once the NUL form is settled, lookups of ASCII keys take a short
        path: an instance attribute ``get`` that shadows the method."""
        raw_get = self._raw_get
        soft, hard = self._soft_errors, self._hard_errors
        slow = self.lookup_bytes
        name, path = self.name, self.index_path

        def fail(err: BaseException) -> TableRetry:
            return TableRetry(name, f"{path}: {err}")

        def finish(value: bytes | None) -> str | None:
            if value is None:
                return None
            if 0 in value:
                value = value[:value.index(0)]
            return value.decode("utf-8", "surrogateescape")

        if self._try1:
            def get(key: str) -> str | None:
                kb = key.encode("utf-8", "surrogateescape")
                if not kb.isascii():
                    return finish(slow(kb))
                try:
                    value = raw_get(kb.lower() + b"\0")
                except soft:
                    return None
                except hard as err:
                    raise fail(err) from None
                if value is None:
                    return None
                if 0 in value:
                    value = value[:value.index(0)]
                return value.decode("utf-8", "surrogateescape")
        else:
            def get(key: str) -> str | None:
                kb = key.encode("utf-8", "surrogateescape")
                if not kb.isascii():
                    return finish(slow(kb))
                try:
                    value = raw_get(kb.lower())
                except soft:
                    return None
                except hard as err:
                    raise fail(err) from None
                if value is None:
                    return None
                if 0 in value:
                    value = value[:value.index(0)]
                return value.decode("utf-8", "surrogateescape")
        self._fast = True
        self.get = get  # type: ignore[method-assign]

    def _drop_fast_get(self) -> None:
        self._fast = False
        self.__dict__.pop("get", None)

    def items_bytes(self) -> Iterator[tuple[bytes, bytes]]:
        """Every record in database order, trailing NULs removed (postmap -s)."""
        try:
            for key, value in self._items_raw():
                yield strip_nul(key).partition(b"\0")[0], value.partition(b"\0")[0]
        except self._hard_errors as err:
            raise TableRetry(self.name, f"{self.index_path}: {err}") from None

    def items(self) -> Iterator[tuple[str, str]]:
        for key, value in self.items_bytes():
            yield to_text(key), to_text(value)


def _closed(key: bytes) -> bytes | None:
    raise TableRetry("table", "the table is closed")


# -- writing index files ----------------------------------------------------------


@dataclass
class BuildOptions:
    """How postmap builds: permissions and ownership (-p, -o)."""

    source_stat: os.stat_result | None = None  # None: stdin (-i)
    save_perm: bool = True
    as_owner: bool = True


class IndexWriter:
    """Collects the records of a new or updated index in memory and writes
    them atomically: temporary file in the same directory, fsync, rename,
    fsync of the directory.

    ``put``/``delete`` work on the key as stored (with a trailing NUL or
    not, as the caller decides). Subclasses implement :meth:`_load` (the
    existing records, for ``-i``/``-d``), :meth:`_write` (a complete file at
    a path) and may override :meth:`check_record`.
    """

    type_name = ""
    #: the name in "duplicate entry" warnings, as Postfix prints it
    label = ""
    default_nul = True

    def __init__(self, index_path: str, *, incremental: bool,
                 options: BuildOptions | None = None):
        self.index_path = index_path
        self.options = options or BuildOptions()
        self.records: dict[bytes, bytes] = {}
        self._existing: os.stat_result | None = None
        if incremental:
            try:
                self._existing = os.stat(index_path)
            except OSError as err:
                raise TableError(f"open database {index_path}: {err.strerror}") from None
            self.records = dict(self._load())

    def _load(self) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    def _write(self, path: str) -> None:
        raise NotImplementedError

    def check_record(self, key: bytes, value: bytes, where: tuple[str, int] | None) -> None:
        """Raise SourceError for a record the format cannot hold."""

    # -- records --
    def stored_key(self, key: bytes, nul: bool | None) -> bytes:
        if nul is None:
            nul = self.default_nul
        return key + b"\0" if nul else key

    def put(self, key: bytes, value: bytes, *, replace: bool, nul: bool | None = None,
            where: tuple[str, int] | None = None) -> bool:
        """Add a record; True when the key was there already (then the old
        value stays unless *replace*)."""
        if nul is None:
            nul = self.default_nul
        skey = key + b"\0" if nul else key
        svalue = value + b"\0" if nul else value
        self.check_record(skey, svalue, where)
        if skey in self.records:
            if replace:
                self.records[skey] = svalue
            return True
        self.records[skey] = svalue
        return False

    def delete(self, key: bytes, nul: str = NulMode.DEFAULT) -> bool:
        found = False
        if nul != NulMode.WITHOUT and self.records.pop(key + b"\0", None) is not None:
            found = True
        if not found and nul != NulMode.WITH and key and self.records.pop(key, None) is not None:
            found = True
        return found

    # -- the file --
    def _mode_and_owner(self) -> tuple[int, int, int]:
        if self._existing is not None:
            st = self._existing
            return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid
        mode = 0o644
        src = self.options.source_stat
        uid, gid = -1, -1
        if src is not None and stat.S_ISREG(src.st_mode):
            if self.options.save_perm:
                mode &= ~(0o022 | (~src.st_mode & 0o077))
            if self.options.as_owner and os.geteuid() == 0:
                uid, gid = src.st_uid, src.st_gid
        return mode, uid, gid

    def commit(self) -> None:
        directory = os.path.dirname(self.index_path) or "."
        base = os.path.basename(self.index_path)
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
        except OSError as err:
            raise TableError(f"cannot create a new {self.index_path} in {directory}: "
                             f"{err.strerror}") from None
        os.close(fd)
        try:
            self._write(tmp)
            mode, uid, gid = self._mode_and_owner()
            os.chmod(tmp, mode)
            if uid != -1 or gid != -1:
                try:
                    os.chown(tmp, uid, gid)
                except OSError:
                    pass
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.index_path)
        except OSError as err:
            _unlink(tmp)
            what = "write" if err.errno != errno.ENOENT else "create"
            raise TableError(f"{what} {self.index_path}: {err.strerror}") from None
        except BaseException:
            _unlink(tmp)
            raise
        try:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass

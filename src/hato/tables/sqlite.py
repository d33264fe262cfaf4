"""``sqlite:/path/file.cf`` — lookups in an SQLite database, sqlite_table(5).

The file names the database (``dbpath``, required) and the query; see
:mod:`hato.tables.sqlconf` for the parameters every SQL table shares. Keys are
SQL-quoted as Postfix quotes them (``sqlite3_mprintf("%q")``: single quotes
doubled), and only the first column of each result row is used, converted to
text as SQLite converts it (``sqlite3_column_text``).

Differences from Postfix: the database is opened read-only (Postfix opens it
read-write and creates a missing file); a missing or unreadable database is a
configuration error when the table is opened; an SQL error at lookup time
(bad query, locked or corrupt database) is a temporary failure rather than a
fatal error that stops the process; :meth:`SqliteTable.refresh` re-opens the
database when its file was replaced.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse

from .base import OpenFlags, TableError, TableRetry
from .sqlconf import DEFAULT_FLAGS, SqlTable

SQLITE_NOTADB = 26


def sqlite_quote(text: str) -> str:
    """sqlite3_mprintf("%q"): double every single quote."""
    return text.replace("'", "''")


def _text(data: bytes) -> str:
    # Kept byte-exact; SqlTable refuses results that are not UTF-8.
    return data.decode("utf-8", "surrogateescape")


class SqliteTable(SqlTable):
    type_name = "sqlite"
    #: seconds to wait for a writer's lock before the lookup fails (retry)
    busy_timeout = 1.0

    def __init__(self, spec: str, flags: OpenFlags = DEFAULT_FLAGS):
        super().__init__(spec, flags)
        self.dbpath = self.cf.get_str("dbpath", "", 1) or ""
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._ident: tuple[int, int] | None = None
        self._conn, self._ident = self._open()

    def _open(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        path = os.path.abspath(self.dbpath)
        line = self.cf.lines.get("dbpath")
        try:
            st = os.stat(path)
            with open(path, "rb"):
                pass
        except OSError as err:
            raise TableError(f"{self.name}: can't open database {self.dbpath}: "
                             f"{err.strerror}", self.cf.path, line) from None
        except ValueError:  # a NUL in the name: no file can have it
            raise TableError(f"{self.name}: can't open database {self.dbpath!r}: "
                             f"a file name cannot contain a null character",
                             self.cf.path, line) from None
        uri = "file:" + urllib.parse.quote(path) + "?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout,
                                   check_same_thread=False, isolation_level=None)
        except sqlite3.Error as err:
            raise TableError(f"{self.name}: can't open database {self.dbpath}: {err}",
                             self.cf.path, line) from None
        conn.text_factory = _text
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        except sqlite3.DatabaseError as err:
            if getattr(err, "sqlite_errorcode", None) == SQLITE_NOTADB:
                conn.close()
                raise TableError(f"{self.name}: {self.dbpath}: {err}", self.cf.path,
                                 line) from None
            # locked and the like: the lookups will tell.
        return conn, (st.st_dev, st.st_ino)

    def refresh(self) -> bool:
        try:
            st = os.stat(os.path.abspath(self.dbpath))
        except OSError:
            return False
        if (st.st_dev, st.st_ino) == self._ident:
            return False
        try:
            conn, ident = self._open()
        except TableError:
            return False
        with self._lock:
            old, self._conn, self._ident = self._conn, conn, ident
        if old is not None:
            old.close()
        return True

    def _column_text(self, conn: sqlite3.Connection, value: object) -> str | None:
        """What sqlite3_column_text() gives for a value (a C string)."""
        if value is None:
            return None
        if isinstance(value, str):
            text = value
        elif isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            # SQLite's own float formatting ("%!.15g"), from SQLite itself.
            text = conn.execute("SELECT CAST(? AS TEXT)", (value,)).fetchone()[0]
        elif isinstance(value, bytes):
            text = value.decode("utf-8", "surrogateescape")
        else:
            text = str(value)
        return text.split("\0", 1)[0]

    def fetch(self, key: str) -> list[str | None]:
        query = self.expand_query(key, sqlite_quote)
        if query is None:
            return []
        with self._lock:
            conn = self._conn
            if conn is None:
                raise TableRetry(self.name, "table is closed")
            try:
                cursor = conn.execute(query)
                return [self._column_text(conn, row[0]) for row in cursor if row]
            except (sqlite3.Error, sqlite3.Warning) as err:
                raise TableRetry(self.name, f"SQL query failed: {err}") from None

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
        super().close()

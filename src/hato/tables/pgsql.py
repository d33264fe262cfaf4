"""``pgsql:/path/file.cf`` — lookups in PostgreSQL, pgsql_table(5).

The file has the parameters every SQL table shares (:mod:`hato.tables.sqlconf`)
and these:

``hosts`` (default ``localhost``)
    Servers holding the same data, tried in the order listed: ``host``,
    ``host:port``, ``inet:host:port``, ``unix:/socket/directory`` (the
    directory that holds ``.s.PGSQL.<port>``; the port comes from
    ``$PGPORT`` or defaults to 5432), or a ``postgresql://`` URI (which then
    carries user, password and database itself).
``user``, ``password``, ``dbname``
    The login; empty means libpq's default (``$PGUSER``, ...).
``encoding`` (default ``UTF8``), ``retry_interval`` (default 60 s),
``idle_interval`` (default 60 s)
    As in Postfix 3.8 and later: the client encoding, how long a failed
    server is left alone, and how long an unused connection is kept.
    (Postfix 3.7 and older always use ``LATIN1``; write ``encoding = LATIN1``
    to get their behaviour with non-ASCII data.)
``hato_connect_timeout`` (default 10 s), ``hato_pool_size`` (default 4)
    hato's own: the connect timeout, and how many idle connections per
    server are kept for the next lookups.

Each key substitution is escaped with libpq's ``PQescapeStringConn`` on the
connection that runs the query, exactly as Postfix does, and the whole
query goes out with ``PQexec`` (through psycopg's libpq binding); every
column of every row is a result value. Like Postfix, the table passes bytes
through: the key's UTF-8 bytes go out as they are, whatever ``encoding``
tells the server, and a result that is not UTF-8 fails the lookup.

A server that refuses the connection, or a connection that breaks, makes
the table try the next server; the broken server is skipped for
``retry_interval`` seconds. A pooled connection that turns out broken (the
server was restarted) is replaced by a fresh one at once, so a restart costs
no failed lookup. When no server answers the lookup fails with
:class:`TableRetry` (a 4xx for the caller), never with another exception.

Differences from Postfix: servers are tried in the order listed rather than
in random order; an SQL error reported by a working server (say a cast that
fails for one key) fails that lookup with a retry without putting the
server aside for a minute; the main.cf form (``pgsql:name`` with
``name_hosts``...) is not supported.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .base import OpenFlags, TableError, TableRetry
from .sqlconf import DEFAULT_FLAGS, SqlTable

log = logging.getLogger("hato.tables")

try:
    import psycopg
    from psycopg import pq
    from psycopg.conninfo import make_conninfo
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(f"the pgsql table type needs psycopg 3 (pip install psycopg[binary]): "
                      f"{err}") from err

_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class _Host:
    label: str  # as written in hosts =
    conninfo: str
    idle: list[tuple[pq.abc.PGconn, float]] = field(default_factory=list)
    down_until: float = 0.0


class _Broken(Exception):
    """The connection is unusable (the server went away)."""


class PgsqlTable(SqlTable):
    type_name = "pgsql"
    select_function = True

    def __init__(self, spec: str, flags: OpenFlags = DEFAULT_FLAGS):
        super().__init__(spec, flags)
        cf = self.cf
        self.user = cf.get_str("user", "") or ""
        self.password = cf.get_str("password", "") or ""
        self.dbname = cf.get_str("dbname", "") or ""
        self.encoding = cf.get_str("encoding", "UTF8", 1) or "UTF8"
        self.retry_interval = cf.get_int("retry_interval", 60, 1)
        self.idle_interval = cf.get_int("idle_interval", 60, 1)
        self.connect_timeout = cf.get_int("hato_connect_timeout", 10, 1)
        self.pool_size = cf.get_int("hato_pool_size", 4, 0)
        names = [h for h in re.split(r"[, \t\r\n]+", cf.get_str("hosts", "") or "") if h]
        self.hosts = [self._host(h) for h in names or ["localhost"]]
        plain = [h.label for h in self.hosts if not _URI.match(h.label)]
        if plain and not self.dbname:
            raise TableError(f"{self.name}: host target '{plain[0]}' requires dbname setting",
                             cf.path)
        self._lock = threading.Lock()
        self._closed = False

    # -- hosts and connections -------------------------------------------------

    def _host(self, text: str) -> _Host:
        options: dict[str, str | int] = {"client_encoding": self.encoding,
                                      "connect_timeout": self.connect_timeout}
        if _URI.match(text):
            try:
                return _Host(text, make_conninfo(text, **options))
            except psycopg.ProgrammingError as err:
                raise self.cf.error("hosts", f"bad connection URI {text}: {err}") from None
        name = text[5:] if text.startswith(("unix:", "inet:")) else text
        port = ""
        if name and not name.startswith("/"):
            if name.startswith("[") and "]" in name:
                end = name.index("]")
                name, port = name[1:end], name[end + 1:].lstrip(":")
            elif ":" in name:
                name, _, port = name.rpartition(":")
        if name:
            options["host"] = name
        if port:
            options["port"] = port
        for key, value in (("dbname", self.dbname), ("user", self.user),
                           ("password", self.password)):
            if value:
                options[key] = value
        return _Host(text, make_conninfo("", **options))

    def _checkout(self, host: _Host) -> pq.abc.PGconn | None:
        """An idle pooled connection to ``host`` that is not too old."""
        now = time.monotonic()
        stale = []
        conn = None
        with self._lock:
            while host.idle:
                candidate, used = host.idle.pop()
                if now - used > self.idle_interval:
                    stale.append(candidate)
                    continue
                conn = candidate
                break
        for old in stale:
            old.finish()
        return conn

    def _checkin(self, host: _Host, conn: pq.abc.PGconn) -> None:
        if (conn.status == pq.ConnStatus.OK
                and conn.transaction_status == pq.TransactionStatus.IDLE):
            with self._lock:
                if not self._closed and len(host.idle) < self.pool_size:
                    host.idle.append((conn, time.monotonic()))
                    return
        conn.finish()

    def _connect(self, host: _Host) -> pq.abc.PGconn:
        try:
            conn = pq.PGconn.connect(host.conninfo.encode())
        except (psycopg.Error, MemoryError) as err:
            raise _Broken(str(err)) from None
        if conn.status != pq.ConnStatus.OK:
            message = _message(conn.error_message)
            conn.finish()
            raise _Broken(message)
        # Server notices (e.g. nonstandard_conforming_strings warnings) go to
        # the log, not to libpq's default of printing them on stderr.
        conn.notice_handler = _notice
        return conn

    def _mark_down(self, host: _Host, reason: str) -> None:
        log.warning("connect to pgsql server %s: %s", host.label, reason)
        with self._lock:
            host.down_until = time.monotonic() + self.retry_interval
            stale, host.idle = host.idle, []
        for old, _ in stale:
            old.finish()

    # -- one query ---------------------------------------------------------------

    def _run(self, conn: pq.abc.PGconn, key: str) -> list[str | None]:
        """Expand and run the query on ``conn``. Raise _Broken when the
        connection failed, TableRetry when the server rejected the query."""
        escaping = pq.Escaping(conn)

        def quote(text: str) -> str:
            # Bytes in, bytes out, as Postfix: the key's UTF-8 bytes are
            # escaped for the connection's client encoding.
            try:
                return escaping.escape_string(text.encode()).decode("utf-8", "surrogateescape")
            except psycopg.Error as err:
                raise TableRetry(self.name, f"cannot escape input string: {err}") from None

        query = self.expand_query(key, quote)
        if query is None:
            return []
        try:
            result = conn.exec_(query.encode("utf-8", "surrogateescape"))
        except psycopg.Error as err:
            raise _Broken(str(err)) from None
        status = result.status
        if status in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
            values: list[str | None] = []
            for row in range(result.ntuples):
                for col in range(result.nfields):
                    raw = result.get_value(row, col)
                    # PQgetvalue() gives "" for NULL: skipped, with a warning.
                    values.append(raw.decode("utf-8", "surrogateescape")
                                  if raw is not None else "")
            result.clear()
            return values
        message = _message(result.error_message) or f"status {pq.ExecStatus(status).name}"
        result.clear()
        if conn.status != pq.ConnStatus.OK:
            raise _Broken(message)
        raise TableRetry(self.name, f"pgsql query failed: {message}")

    def fetch(self, key: str) -> Iterable[str | None]:
        if self._closed:
            raise TableRetry(self.name, "table is closed")
        last = "no server is available"
        now = time.monotonic()
        for host in self.hosts:
            if host.down_until > now:
                continue
            conn = self._checkout(host)
            pooled = conn is not None
            while True:
                try:
                    if conn is None:
                        conn = self._connect(host)
                    values = self._run(conn, key)
                except _Broken as err:
                    if conn is not None:
                        conn.finish()
                        conn = None
                    if pooled:
                        pooled = False  # the server may have restarted: once more
                        continue
                    last = f"{host.label}: {err}"
                    self._mark_down(host, str(err))
                    break
                except TableRetry:
                    if conn is not None:
                        self._checkin(host, conn)
                    raise
                self._checkin(host, conn)
                return values
        raise TableRetry(self.name, f"no pgsql server answered ({last})")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [conn for host in self.hosts for conn, _ in host.idle]
            for host in self.hosts:
                host.idle = []
        for conn in idle:
            conn.finish()
        super().close()


def _notice(result: pq.abc.PGresult) -> None:
    log.debug("pgsql notice: %s", _message(result.error_message))


def _message(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.split())

"""The smtp/lmtp client's connection cache: idle sessions kept open for the
next delivery to the same destination, as Postfix's scache(8) with
``smtp_connection_cache_on_demand`` and ``smtp_connection_cache_destinations``.

hato's delivery agent is one process with many delivery threads, so the
cache lives in that process (Postfix keeps it in a separate scache
service because each of its smtp processes delivers one message at a
time). A session is saved under two kinds of key, as Postfix does:

* the destination (the request's next hop, ``example.com`` or
  ``[relay.example]:587``): the next delivery to that next hop takes it
  before it looks up any server;
* the server's endpoint with the next hop (``192.0.2.25:25/example.com``,
  the socket path for LMTP): the next delivery to that next hop takes it
  when it gets to that server in its list. Sessions are not shared between
  next hops: each next hop's TLS policy and credentials made its sessions.

Taking a session under one key takes it under every key. A session is
given up (QUIT, close) when it was idle longer than
``smtp_connection_cache_time_limit``, when it is older than
``smtp_connection_reuse_time_limit``, or once it has carried
``smtp_connection_reuse_count_limit`` transactions (0: no limit); the
delivery thread that takes a session checks it with RSET before use
(:meth:`hato.proto.smtp_client.ClientConnection.check`).

Counters (``stats()``): sessions saved, reused, expired.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class CachedSession:
    """An idle session: the socket, the client core at READY, the server it
    talks to; *opened* is when it connected (reuse time limit)."""

    sock: Any
    conn: Any  # hato.proto.smtp_client.ClientConnection
    cand: Any  # hato.policy.smtp_route.Candidate
    opened: float
    keys: tuple[str, ...] = ()
    idle_since: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def uses(self) -> int:
        return self.conn.messages


class ConnectionCache:
    def __init__(self, *, idle_limit: float = 2.0, reuse_time_limit: float = 300.0,
                 reuse_count_limit: int = 0, close: Callable[[CachedSession], None],
                 clock: Callable[[], float] = time.monotonic, sweep_interval: float = 1.0):
        self.idle_limit = idle_limit
        self.reuse_time_limit = reuse_time_limit
        self.reuse_count_limit = reuse_count_limit
        self._close = close
        self._clock = clock
        self._lock = threading.Lock()
        self._sessions: list[CachedSession] = []
        self.saved = self.reused = self.expired = 0
        self._sweep_interval = sweep_interval
        self._sweeper: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- policy ------------------------------------------------------------------------------

    def reusable(self, session: CachedSession) -> bool:
        """May *session* carry one more transaction?"""
        if self.reuse_count_limit and session.uses >= self.reuse_count_limit:
            return False
        return self._clock() - session.opened < self.reuse_time_limit

    def _expired(self, session: CachedSession, now: float) -> bool:
        return now - session.idle_since >= self.idle_limit or not self.reusable(session)

    # -- saving and taking --------------------------------------------------------------------

    def save(self, session: CachedSession, keys: tuple[str, ...]) -> bool:
        """Keep *session* idle under *keys*; False (the caller ends it) when
        it may not be reused."""
        if not keys or not self.reusable(session):
            return False
        session.keys = keys
        session.idle_since = self._clock()
        with self._lock:
            self._sessions.append(session)
            self.saved += 1
        self._start_sweeper()
        return True

    def take(self, key: str) -> CachedSession | None:
        """The most recently saved live session under *key*, removed from
        the cache; None when there is none."""
        now = self._clock()
        stale: list[CachedSession] = []
        found = None
        with self._lock:
            for session in reversed(self._sessions):
                if key not in session.keys:
                    continue
                if self._expired(session, now):
                    stale.append(session)
                    continue
                found = session
                break
            for session in stale + ([found] if found else []):
                self._sessions.remove(session)
            if found is not None:
                self.reused += 1
            self.expired += len(stale)
        for session in stale:
            self._close(session)
        return found

    def sweep(self) -> int:
        """End the sessions whose time is up; how many."""
        now = self._clock()
        with self._lock:
            stale = [s for s in self._sessions if self._expired(s, now)]
            for session in stale:
                self._sessions.remove(session)
            self.expired += len(stale)
        for session in stale:
            self._close(session)
        return len(stale)

    def close_all(self) -> None:
        self._stopping.set()
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            self._close(session)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"cached": len(self._sessions), "saved": self.saved, "reused": self.reused,
                    "expired": self.expired}

    # -- the sweeper ----------------------------------------------------------------------------

    def _start_sweeper(self) -> None:
        if self._sweeper is not None or self._stopping.is_set():
            return
        with self._lock:
            if self._sweeper is not None:
                return
            self._sweeper = threading.Thread(target=self._sweep_loop, name="smtp-conncache",
                                             daemon=True)
        self._sweeper.start()

    def _sweep_loop(self) -> None:
        while not self._stopping.wait(self._sweep_interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a close that fails must not stop the sweeper
                pass


class TlsSessionCache:
    """TLS sessions of earlier connections, offered again on the next
    handshake with the same server under the same policy (an abbreviated
    handshake), as Postfix's ``smtp_tls_session_cache_database``. The
    sessions stay in the agent process's memory (Python's ssl module cannot
    write them to a table) for ``smtp_tls_session_cache_timeout``."""

    def __init__(self, timeout: float, *, clock: Callable[[], float] = time.time,
                 limit: int = 10000):
        self.timeout = timeout
        self._clock = clock
        self._limit = limit
        self._lock = threading.Lock()
        self._sessions: dict[tuple, tuple[float, Any]] = {}
        self.offered = self.resumed = 0

    def get(self, key: tuple) -> Any | None:
        with self._lock:
            item = self._sessions.get(key)
            if item is None:
                return None
            stored, session = item
            if self._clock() - stored >= self.timeout:
                del self._sessions[key]
                return None
            self.offered += 1
            return session

    def put(self, key: tuple, session: Any) -> None:
        if session is None:
            return
        with self._lock:
            if len(self._sessions) >= self._limit and key not in self._sessions:
                oldest = min(self._sessions, key=lambda k: self._sessions[k][0])
                del self._sessions[oldest]
            self._sessions[key] = (self._clock(), session)

    def forget(self, key: tuple) -> None:
        with self._lock:
            self._sessions.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

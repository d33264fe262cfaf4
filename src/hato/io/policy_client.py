"""smtpd's policy delegation client (Postfix's attr_clnt/auto_clnt as
check_policy_service uses them), blocking and thread-safe.

One :class:`PolicyClient` serves every session of an smtpd worker: the
restrictions run in worker threads (``asyncio.to_thread``) and call it as
``client(service, attributes) -> PolicyAnswer``
(:mod:`hato.policy.smtpd_policy`). Per policy service (per
``check_policy_service`` argument, so per-use settings apply) it keeps a
small pool of open connections: a request takes an idle one or opens a new
one, and gives it back when the reply is complete, so connections are
reused across sessions, as a Postfix smtpd process reuses its one
connection. A connection is closed instead of being kept when

- it was idle for max_idle (checked for every service's idle connections on
  every request; Postfix closes it with a timer),
- it is max_ttl old,
- it served request_limit requests (when not 0),
- the server closed it or sent something while it was idle (found before it
  is used again: it is replaced without counting as a failed attempt, as
  Postfix's event loop would have closed it meanwhile),
- the reply had trailing bytes (the server is out of step),
- more than *pool_size* connections are already idle.

Endpoints: ``inet:host:port`` (host may be ``[ipv6]``; port a number or a
service name), ``unix:path`` and ``local:path``; a relative path is relative
to queue_directory (``unix:private/policy``), as Postfix's daemons run
there.

A request is tried up to try_limit times, retry_delay apart, as Postfix's
attr_clnt_request() does, and the warnings are Postfix's texts, returned
with the answer for the session to log:

- ``connect to SERVER: ERROR`` when the connection cannot be made;
- ``timeout on SERVER while reading input attribute name`` (or ``premature
  end-of-input on ...``, ``missing attribute action in input from
  SERVER``, ``missing value for string attribute action from SERVER``)
  for a reply that cannot be read;
- ``problem talking to server SERVER: ERROR`` after each failed attempt
  whose error is not EPIPE, ENOENT or ECONNRESET (nor none at all, which
  Postfix writes as ``Success``), and always after the last one.

SERVER is the endpoint without its transport (``127.0.0.1:10023``,
``private/policy``). One difference from Postfix: smtpd_policy_service_timeout
bounds the whole reply, not each read.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable

from ..policy.smtpd_policy import PolicyAnswer, PolicyService
from ..proto.policy import DEFAULT_MAX_LINE, PolicyReplyError, ReplyReader, encode_request

#: errors Postfix does not warn about before the last attempt
QUIET_ERRORS = frozenset({0, errno.EPIPE, errno.ENOENT, errno.ECONNRESET})
POOL_SIZE = 8
READ_SIZE = 4096


class _ConnectError(Exception):
    def __init__(self, err: int):
        super().__init__(err)
        self.errno = err


def _errno(err: OSError) -> int:
    if isinstance(err, (socket.timeout, TimeoutError)) and not err.errno:
        return errno.ETIMEDOUT
    return err.errno or errno.EIO


def _inet_address(server: str) -> tuple[str, int]:
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = server.rpartition(":")
    if not host or not port:
        raise _ConnectError(errno.EINVAL)
    if port.isdigit():
        return host, int(port)
    try:
        return host, socket.getservbyname(port, "tcp")
    except OSError:
        raise _ConnectError(errno.EINVAL) from None


class _Connection:
    def __init__(self, sock: socket.socket, now: float):
        self.sock = sock
        self.born = now
        self.used = now
        self.requests = 0

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def stale(self) -> bool:
        """Readable while idle: closed by the server, or it said something unasked."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)


class _Pool:
    """The idle connections of one policy service."""

    def __init__(self, service: PolicyService, queue_directory: str, pool_size: int):
        self.service = service
        self.queue_directory = queue_directory
        self.pool_size = pool_size
        self.lock = threading.Lock()
        self.idle: list[_Connection] = []
        self.opened = 0  # connections made, for tests and curiosity

    def expired(self, conn: _Connection, now: float) -> bool:
        s = self.service
        return (now - conn.used >= s.max_idle or now - conn.born >= s.max_ttl
                or (s.request_limit > 0 and conn.requests >= s.request_limit))

    def take(self, now: float) -> _Connection | None:
        """An idle connection still good to use, or None."""
        while True:
            with self.lock:
                if not self.idle:
                    return None
                conn = self.idle.pop()
            if self.expired(conn, now) or conn.stale():
                conn.close()
                continue
            return conn

    def give_back(self, conn: _Connection, now: float) -> None:
        conn.used = now
        if self.expired(conn, now):
            conn.close()
            return
        with self.lock:
            if len(self.idle) < self.pool_size:
                self.idle.append(conn)
                return
        conn.close()

    def sweep(self, now: float) -> None:
        """Close the idle connections past max_idle or max_ttl."""
        with self.lock:
            keep: list[_Connection] = []
            gone: list[_Connection] = []
            for conn in self.idle:
                (gone if self.expired(conn, now) else keep).append(conn)
            self.idle = keep
        for conn in gone:
            conn.close()

    def connect(self, now: float) -> _Connection:
        s = self.service
        transport, server = s.transport, s.server
        try:
            if transport == "inet":
                sock = socket.create_connection(_inet_address(server), timeout=s.timeout)
            else:
                path = server if os.path.isabs(server) \
                    else os.path.join(self.queue_directory, server)
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.settimeout(s.timeout)
                    sock.connect(path)
                except BaseException:
                    sock.close()
                    raise
        except OSError as err:
            raise _ConnectError(_errno(err)) from None
        with self.lock:
            self.opened += 1
        return _Connection(sock, now)

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class PolicyClient:
    """``client(service, attributes) -> PolicyAnswer``; see the module text."""

    def __init__(self, queue_directory: str, *, max_line: int = DEFAULT_MAX_LINE,
                 pool_size: int = POOL_SIZE,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.queue_directory = queue_directory
        self.max_line = max_line
        self.pool_size = pool_size
        self.clock = clock
        self.sleep = sleep
        self._pools: dict[str, _Pool] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings) -> PolicyClient:
        return cls(settings.str("queue_directory"),
                   max_line=4 * max(settings.int("line_length_limit"), 256))

    def pool(self, service: PolicyService) -> _Pool:
        with self._lock:
            old = pool = self._pools.get(service.name)
            if pool is None or pool.service != service:
                pool = self._pools[service.name] = _Pool(service, self.queue_directory,
                                                         self.pool_size)
        if old is not None and old is not pool:
            old.close()
        return pool

    def connections_made(self, service: PolicyService) -> int:
        return self.pool(service).opened

    def __call__(self, service: PolicyService,
                 attributes: Iterable[tuple[str, str]]) -> PolicyAnswer:
        pool = self.pool(service)
        now = self.clock()
        with self._lock:
            pools = list(self._pools.values())
        for each in pools:  # idle connections past max_idle or max_ttl, of every service
            each.sweep(now)
        request = encode_request(attributes)
        server = service.server
        warnings: list[str] = []
        tries = 0
        limit = max(1, service.try_limit)
        while True:
            err = 0
            conn = pool.take(self.clock())
            try:
                if conn is None:
                    conn = pool.connect(self.clock())
                reader = self._exchange(conn, request, service.timeout)
            except _ConnectError as e:
                err = e.errno
                warnings.append(f"connect to {server}: {os.strerror(err)}")
            except _ReadError as e:
                err = e.errno
                warnings.append(e.reply_error.text(server))
            except OSError as e:  # writing the request
                err = _errno(e)
            else:
                assert reader.reply is not None
                conn.requests += 1
                if reader.extra:
                    conn.close()
                else:
                    pool.give_back(conn, self.clock())
                return PolicyAnswer(reader.reply.action, warnings)
            if conn is not None:
                conn.close()
            tries += 1
            if tries >= limit or err not in QUIET_ERRORS:
                warnings.append(f"problem talking to server {server}: {os.strerror(err)}")
            if tries >= limit:
                return PolicyAnswer(None, warnings)
            self.sleep(service.retry_delay)

    def _exchange(self, conn: _Connection, request: bytes, timeout: float) -> ReplyReader:
        sock = conn.sock
        sock.settimeout(timeout)
        sock.sendall(request)
        reader = ReplyReader(max_line=self.max_line)
        deadline = self.clock() + timeout
        while not reader.done:
            left = deadline - self.clock()
            try:
                if left <= 0:
                    raise TimeoutError("timed out")
                sock.settimeout(left)
                data = sock.recv(READ_SIZE)
                if not data:
                    reader.eof()
                reader.receive_data(data)
            except PolicyReplyError as e:
                raise _ReadError(0, e) from None
            except OSError as e:
                code = _errno(e)
                why = reader.timeout() if code == errno.ETIMEDOUT else _premature(reader)
                raise _ReadError(code, why) from None
        return reader

    def close(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()


class _ReadError(Exception):
    def __init__(self, err: int, reply_error: PolicyReplyError):
        super().__init__(err)
        self.errno = err
        self.reply_error = reply_error


def _premature(reader: ReplyReader) -> PolicyReplyError:
    try:
        reader.eof()
    except PolicyReplyError as e:
        return e
    return PolicyReplyError("premature end-of-input on {server} while reading input "
                            "attribute name")


__all__ = ["POOL_SIZE", "PolicyClient"]

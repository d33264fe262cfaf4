"""SASL through Dovecot's auth service (``smtpd_sasl_type = dovecot``).

:class:`DovecotAuthClient` keeps one connection to the auth-client socket,
as a Postfix smtpd process does, and shares it between threads: each
exchange gets its own request id, a reader thread hands every reply to the
exchange whose id it carries, so a failure Dovecot delays (its
``auth_failure_delay``) never holds up another session. When a write
fails the client reconnects once, as Postfix does; an exchange whose
connection was lost fails temporarily.

:class:`DovecotSaslServer` is the :class:`~hato.auth.SaslServer` smtpd
uses: its mechanisms are Dovecot's ``MECH`` list (``private`` ones dropped)
filtered by ``smtpd_sasl_security_options`` /
``smtpd_sasl_tls_security_options`` against the properties Dovecot
announces; an exchange sends ``AUTH``/``CONT`` and maps ``OK`` → Success,
``CONT`` → Challenge, ``FAIL`` → Failure (temporary with ``temp``).

``smtpd_sasl_path`` names the socket: ``private/auth`` (relative to
``queue_directory``), an absolute path, ``unix:PATH`` or ``inet:host:port``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterable

from ..proto.dovecot_auth import (AuthReply, DovecotProtocolError, Handshake, LineReader, Mech,
                                  encode_auth, encode_cont, encode_handshake, filter_mechanisms,
                                  parse_reply)
from . import Challenge, Failure, Step, Success

AUTH_TIMEOUT = 10.0  # Postfix's AUTH_TIMEOUT

LOST = "Connection lost to authentication server"
CANNOT_CONNECT = "Can't connect to authentication server"
BACKEND_ERROR = "Authentication backend error"
#: offered by a worker that never reached Dovecot (announced as Dovecot does)
UNREACHED_MECHS = [Mech("PLAIN", frozenset({"plaintext"})),
                   Mech("LOGIN", frozenset({"plaintext"}))]


def resolve_auth_path(path: str, queue_directory: str) -> str:
    """``smtpd_sasl_path`` as a connectable address: ``inet:host:port`` kept,
    ``unix:`` stripped, a relative path made relative to the queue
    directory (where Postfix's smtpd runs)."""
    if path.startswith("inet:"):
        return path
    path = path.removeprefix("unix:")
    if not os.path.isabs(path):
        path = os.path.join(queue_directory, path)
    return path


def _inet_address(spec: str) -> tuple[str, int]:
    hostport = spec[5:]
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad Dovecot auth address: {spec}")
    return host, int(port)


class _Pending:
    __slots__ = ("event", "reply", "lost")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reply: AuthReply | None = None
        self.lost = False


class _Connection:
    """One connected, handshaken socket and the thread that reads it."""

    def __init__(self, sock: socket.socket, handshake: Handshake, reader: LineReader):
        self.sock = sock
        self.handshake = handshake
        self._reader = reader
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self.alive = True
        self._thread = threading.Thread(target=self._read_loop, name="dovecot-auth", daemon=True)

    def start(self, leftover: list[str]) -> None:
        for line in leftover:
            self._dispatch(line)
        self._thread.start()

    def register(self, request_id: int) -> _Pending:
        pending = _Pending()
        with self._lock:
            if not self.alive:
                pending.lost = True
                pending.event.set()
            self._pending[request_id] = pending
        return pending

    def forget(self, request_id: int) -> None:
        with self._lock:
            self._pending.pop(request_id, None)

    def send(self, data: bytes) -> None:
        with self._write_lock:
            self.sock.sendall(data)

    def _dispatch(self, line: str) -> None:
        try:
            reply = parse_reply(line)
        except DovecotProtocolError:
            return  # a malformed reply is ignored, as Postfix ignores one for another id
        if reply is None:
            return
        with self._lock:
            pending = self._pending.get(reply.id)
        if pending is not None and pending.reply is None:
            pending.reply = reply
            pending.event.set()

    def _read_loop(self) -> None:
        try:
            self.sock.settimeout(None)
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for line in self._reader.feed(data):
                    self._dispatch(line)
        except (OSError, DovecotProtocolError):
            pass
        self.shutdown()

    def shutdown(self) -> None:
        with self._lock:
            self.alive = False
            pendings = list(self._pending.values())
            self._pending.clear()
        for pending in pendings:
            if pending.reply is None:
                pending.lost = True
            pending.event.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if threading.current_thread() is self._thread:
            self.sock.close()

    def join(self) -> None:
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)
        self.sock.close()


class DovecotAuthClient:
    """A shared connection to Dovecot's auth-client socket."""

    def __init__(self, path: str, *, timeout: float = AUTH_TIMEOUT, pid: int | None = None):
        self.path = path
        self.timeout = timeout
        self.pid = os.getpid() if pid is None else pid
        self._lock = threading.Lock()
        self._conn: _Connection | None = None
        self._next_id = 0
        self._closed = False
        self.last_error = ""
        self._last_offered: list[Mech] | None = None

    # -- connection ---------------------------------------------------------

    def _connect(self) -> _Connection:
        if self.path.startswith("inet:"):
            host, port = _inet_address(self.path)
            sock = socket.create_connection((host, port), timeout=self.timeout)
        else:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
        try:
            sock.sendall(encode_handshake(self.pid))
            reader = LineReader()
            handshake = Handshake()
            leftover: list[str] = []
            while not handshake.done:
                data = sock.recv(65536)
                if not data:
                    raise DovecotProtocolError("auth server closed the connection in the "
                                               "handshake")
                for line in reader.feed(data):
                    if handshake.done:
                        leftover.append(line)
                    else:
                        handshake.feed_line(line)
        except BaseException:
            sock.close()
            raise
        conn = _Connection(sock, handshake, reader)
        conn.start(leftover)
        return conn

    def connection(self) -> _Connection | None:
        """The live connection, connecting when there is none; None (and
        :attr:`last_error` set) when the auth server cannot be reached."""
        with self._lock:
            if self._closed:
                self.last_error = "client closed"
                return None
            if self._conn is not None and self._conn.alive:
                return self._conn
            if self._conn is not None:
                self._conn.join()
                self._conn = None
            try:
                self._conn = self._connect()
            except (OSError, ValueError, DovecotProtocolError) as err:
                self.last_error = (f"SASL: Connect to Dovecot auth socket '{self.path}' failed: "
                                   f"{getattr(err, 'strerror', None) or err}")
                return None
            return self._conn

    def _drop(self, conn: _Connection) -> None:
        conn.shutdown()
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.join()

    def mechanisms(self) -> list[Mech]:
        """Dovecot's mechanisms (private ones dropped). While the auth
        server cannot be reached: the list it last offered, so that smtpd
        keeps offering AUTH and a client that tries gets a temporary
        failure (454), not "authentication not enabled" (503); when
        it was never reached: PLAIN and LOGIN, the usual ones of a Dovecot
        set up for SMTP AUTH, so a worker started while Dovecot is down
        answers the same 454 as one that saw it before (Postfix's smtpd
        exits instead)."""
        conn = self.connection()
        if conn is None:
            return self._last_offered if self._last_offered is not None else UNREACHED_MECHS
        self._last_offered = conn.handshake.offered()
        return self._last_offered

    def new_id(self) -> int:
        with self._lock:
            self._next_id += 1
            return self._next_id

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.shutdown()
            conn.join()

    # -- requests -----------------------------------------------------------

    def _wait(self, conn: _Connection, request_id: int, pending: _Pending) -> AuthReply | None:
        if not pending.event.wait(self.timeout):
            # A late reply finds no one waiting and is ignored; the
            # connection stays, other exchanges on it go on.
            conn.forget(request_id)
            self.last_error = "timed out waiting for the authentication server"
            return None
        conn.forget(request_id)
        return None if pending.lost else pending.reply

    def auth(self, mechanism: str, *, service: str, initial_response: bytes | None,
             local_ip: str = "", remote_ip: str = "", secured: bool = False
             ) -> tuple[_Connection | None, int, AuthReply | None]:
        """Send AUTH (reconnecting once when the write fails) and wait for
        the reply. (connection, id, reply); reply None: no answer (lost,
        timed out, could not connect)."""
        for attempt in range(2):
            conn = self.connection()
            if conn is None:
                return None, 0, None
            request_id = self.new_id()
            line = encode_auth(request_id, mechanism, service, local_ip=local_ip,
                               remote_ip=remote_ip, secured=secured,
                               initial_response=initial_response)
            pending = conn.register(request_id)
            try:
                conn.send(line)
            except OSError as err:
                conn.forget(request_id)
                self.last_error = f"SASL: write to Dovecot auth socket failed: {err}"
                self._drop(conn)
                if attempt == 1:
                    return None, 0, None
                continue
            return conn, request_id, self._wait(conn, request_id, pending)
        return None, 0, None

    def cont(self, conn: _Connection, request_id: int, response: bytes) -> AuthReply | None:
        if not conn.alive:
            return None
        pending = conn.register(request_id)
        try:
            conn.send(encode_cont(request_id, response))
        except OSError as err:
            conn.forget(request_id)
            self.last_error = f"SASL: write to Dovecot auth socket failed: {err}"
            self._drop(conn)
            return None
        return self._wait(conn, request_id, pending)


class DovecotExchange:
    """One AUTH exchange over the shared connection."""

    def __init__(self, client: DovecotAuthClient, mechanism: str, *, service: str,
                 secured: bool, local_ip: str, remote_ip: str):
        self._client = client
        self._mechanism = mechanism
        self._service = service
        self._secured = secured
        self._local_ip = local_ip
        self._remote_ip = remote_ip
        self._conn: _Connection | None = None
        self._id = 0
        self._finished: Step | None = None

    def step(self, response: bytes | None) -> Step:
        if self._finished is not None:
            return self._finished
        if self._conn is None:
            conn, request_id, reply = self._client.auth(
                self._mechanism, service=self._service, initial_response=response,
                local_ip=self._local_ip, remote_ip=self._remote_ip, secured=self._secured)
            if conn is None:
                return self._finish(Failure(f"{CANNOT_CONNECT}: {self._client.last_error}",
                                            temporary=True))
            self._conn, self._id = conn, request_id
        else:
            reply = self._client.cont(self._conn, self._id, response or b"")
        if reply is None:
            return self._finish(Failure(LOST, temporary=True))
        if reply.kind == "CONT":
            return Challenge(reply.data or b"")
        if reply.kind == "OK":
            user = reply.user
            if not user:
                return self._finish(Failure(f"{BACKEND_ERROR}: missing Dovecot server OK "
                                            f"username field"))
            return self._finish(Success(user, reply.data))
        reason = reply.reason or "authentication failed"
        return self._finish(Failure(reason, temporary=reply.temporary))

    def _finish(self, step: Step) -> Step:
        self._finished = step
        return step


class DovecotSaslServer:
    """smtpd's SaslServer over Dovecot. Connects lazily (on the first
    ``mechanisms`` or ``start``); while Dovecot cannot be reached the
    mechanisms it offered last (PLAIN and LOGIN if it never was) stay
    offered and an exchange fails temporarily (454)."""

    def __init__(self, client: DovecotAuthClient, *, service: str = "smtp",
                 security_options: Iterable[str] = ("noanonymous",),
                 tls_security_options: Iterable[str] | None = None):
        self.client = client
        self.service = service
        self.security_options = frozenset(security_options)
        self.tls_security_options = (self.security_options if tls_security_options is None
                                     else frozenset(tls_security_options))
        self.warnings: list[str] = []

    def mechanisms(self, *, tls_active: bool) -> list[str]:
        mechs = self.client.mechanisms()
        opts = self.tls_security_options if tls_active else self.security_options
        return filter_mechanisms(mechs, opts)

    def start(self, mechanism: str, *, tls_active: bool, client_addr: str = "",
              client_name: str = "", local_addr: str = "") -> DovecotExchange | None:
        mech = mechanism.upper()
        if mech not in self.mechanisms(tls_active=tls_active):
            return None
        return DovecotExchange(self.client, mech, service=self.service, secured=tls_active,
                               local_ip=local_addr, remote_ip=client_addr)

    def close(self) -> None:
        self.client.close()


__all__ = ["AUTH_TIMEOUT", "DovecotAuthClient", "DovecotExchange", "DovecotSaslServer",
           "resolve_auth_path"]

"""``socketmap:inet:host:port:name`` and ``socketmap:unix:/path:name`` —
the Sendmail socketmap protocol, socketmap_table(5).

One request, one reply, each a netstring (``LEN:DATA,``). The request is
``name key``; the reply is ``OK value``, ``NOTFOUND ``, or ``TEMP reason`` /
``TIMEOUT reason`` / ``PERM reason``. Found and not found are answers; every
failure is a :class:`TableRetry` (for ``PERM`` too: Postfix reports it as a
configuration error, which callers also answer with a 4xx).

As in Postfix: the connection is kept open between lookups and closed after
10 seconds unused or 100 seconds of age; a connection the server closed is
re-opened and the request sent again, once; connect, read and write time out
after 100 seconds; replies longer than 100,000 bytes are refused; keys are
sent as they come (the table is a pattern table: callers do not generate
partial keys and no case folding is applied).
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from .base import OpenFlags, Table, TableError, TableRetry

log = logging.getLogger("hato.tables")
DEFAULT_FLAGS = OpenFlags()


class _Eof(Exception):
    """The server closed the connection."""


class _ProtocolError(Exception):
    pass


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


class SocketmapTable(Table):
    type_name = "socketmap"
    pattern_table = True

    timeout = 100.0  # connect/read/write (DICT_SOCKMAP_DEF_TIMEOUT)
    max_reply = 100000  # DICT_SOCKMAP_DEF_MAX_REPLY
    max_idle = 10.0  # DICT_SOCKMAP_DEF_MAX_IDLE
    max_ttl = 100.0  # DICT_SOCKMAP_DEF_MAX_TTL

    def __init__(self, spec: str, flags: OpenFlags = DEFAULT_FLAGS):
        super().__init__(spec, flags)
        endpoint, sep, self.mapname = spec.rpartition(":")
        if not sep or not endpoint:
            raise TableError(f"{self.name}: socketmap requires server:socketmap argument "
                             f"(socketmap:inet:host:port:name or socketmap:unix:/path:name)")
        transport, sep, address = endpoint.partition(":")
        self.family: int
        self.address: str | tuple[str, int]
        if transport == "inet" and sep:
            host, sep, port = address.rpartition(":")
            if not sep or not port:
                raise TableError(f"{self.name}: bad inet endpoint: {address} (need host:port)")
            if host.startswith("[") and host.endswith("]"):
                host = host[1:-1]
            try:
                number = int(port) if port.isdigit() else socket.getservbyname(port, "tcp")
            except OSError:
                raise TableError(f"{self.name}: unknown service: {port}/tcp") from None
            self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.address = (host or "localhost", number)
        elif transport in ("unix", "local") and sep and address:
            self.family = socket.AF_UNIX
            self.address = address
        else:
            raise TableError(f"{self.name}: invalid transport name: {transport or endpoint} "
                             f"(use inet:host:port or unix:/path)")
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._born = 0.0
        self._used = 0.0

    # -- the connection ------------------------------------------------------------

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = None
        self._buffer = b""

    def _connection(self) -> socket.socket:
        now = time.monotonic()
        if self._sock is not None and (now - self._used > self.max_idle
                                       or now - self._born > self.max_ttl):
            self._disconnect()
        if self._sock is None:
            if self.family == socket.AF_UNIX:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(self.timeout)
                try:
                    sock.connect(self.address)
                except OSError:
                    sock.close()
                    raise
            else:
                assert isinstance(self.address, tuple)
                sock = socket.create_connection(self.address, timeout=self.timeout)
            self._sock, self._buffer, self._born = sock, b"", now
        self._used = now
        return self._sock

    def _recv(self, sock: socket.socket) -> None:
        data = sock.recv(65536)
        if not data:
            raise _Eof("unexpected end-of-file")
        self._buffer += data

    def _read_netstring(self, sock: socket.socket) -> bytes:
        # The length: decimal digits, then ':' (netstring_get_len()).
        while True:
            colon = self._buffer.find(b":")
            head = self._buffer if colon < 0 else self._buffer[:colon]
            if not head.isdigit() and head:
                raise _ProtocolError("netstring format error")
            if colon >= 0:
                break
            if len(head) > 12:
                raise _ProtocolError("netstring size error")
            self._recv(sock)
        if not head:
            raise _ProtocolError("netstring format error")
        length = int(head)
        if length > self.max_reply:
            raise _ProtocolError(f"netstring size error: reply of {length} bytes "
                                 f"exceeds the limit of {self.max_reply}")
        need = colon + 1 + length + 1
        while len(self._buffer) < need:
            self._recv(sock)
        payload = self._buffer[colon + 1:colon + 1 + length]
        if self._buffer[need - 1:need] != b",":
            raise _ProtocolError("netstring format error")
        self._buffer = self._buffer[need:]
        return payload

    def _exchange(self, request: bytes) -> bytes:
        for attempt in (0, 1):
            try:
                sock = self._connection()
            except OSError as err:
                self._disconnect()
                raise TableRetry(self.name, f"lookup error: {_strerror(err)}") from None
            try:
                sock.sendall(request)
                return self._read_netstring(sock)
            except TimeoutError:
                self._disconnect()
                raise TableRetry(self.name, "lookup error: timeout") from None
            except (_Eof, OSError) as err:
                self._disconnect()
                if attempt == 0:
                    continue  # the server closed an old connection: once more
                raise TableRetry(self.name, f"lookup error: {_strerror(err)}") from None
            except _ProtocolError as err:
                self._disconnect()
                raise TableRetry(self.name, f"lookup error: {err}") from None
        raise AssertionError("not reached")

    # -- the lookup ------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        if "\0" in key:
            return None
        try:
            request = netstring(f"{self.mapname} {key}".encode())
        except UnicodeEncodeError:
            return None  # Postfix skips keys that are not UTF-8
        with self._lock:
            reply = self._exchange(request)
        status, sep, payload = reply.partition(b" ")
        if status == b"OK":
            # "OK" without a blank has no value: Postfix reports not found.
            if not sep:
                return None
            try:
                return payload.decode("utf-8")
            except UnicodeDecodeError:
                # Postfix's UTF-8 check of table results: a lookup error.
                log.warning("%s: key \"%s\": non-UTF-8 value", self.name, key)
                raise TableRetry(self.name, f"non-UTF-8 value for key '{key}'") from None
        if status == b"NOTFOUND":
            return None
        kind = {b"TEMP": "temporary", b"TIMEOUT": "timeout",
                b"PERM": "permanent"}.get(status, "unknown")
        reason = payload.decode("utf-8", "replace").strip()[:200]
        message = f"socketmap server {kind} error" + (f": {reason}" if reason else "")
        log.warning("%s %s", self.name, message)
        raise TableRetry(self.name, message)

    def close(self) -> None:
        with self._lock:
            self._disconnect()


def _strerror(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__

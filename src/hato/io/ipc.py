"""Requests between hato's services over UNIX sockets, in the attribute
protocol of :mod:`hato.proto.attr`.

Servers: :func:`serve_requests` accepts connections on a listening socket
and calls ``handler(request) -> reply`` for every request on every
connection (connections persist, as Postfix's do). Clients:
:func:`request` (asyncio) and :func:`request_sync` (blocking, for commands
such as sendmail) send one request and wait for the reply; :func:`notify`
sends a one-way wake-up that may be lost without harm.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

from ..proto.attr import AttrError, AttrReader, Attrs, encode

Handler = Callable[[Attrs], Awaitable["Attrs | None"]]


async def attr_session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       handler: Handler, on_error: Callable[[str], None], *,
                       max_message: int | None = None) -> None:
    """Serve one connection: every request gets ``handler``'s reply, in
    order; a malformed message ends the connection (*on_error* says why)."""
    parser = AttrReader() if max_message is None else AttrReader(max_message=max_message)
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            try:
                parser.receive_data(data)
            except AttrError as err:
                on_error(f"malformed request: {err}")
                return
            for req in parser.messages():
                reply = await handler(req)
                if reply is not None:
                    writer.write(encode(reply))
                    await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        return
    finally:
        writer.close()


async def serve_requests(listener: socket.socket, handler: Handler,
                         stop: asyncio.Event,
                         on_error: Callable[[str], None] = lambda _t: None) -> None:
    """Serve until *stop* is set; sessions in progress finish their request."""
    server = await asyncio.start_unix_server(
        lambda r, w: attr_session(r, w, handler, on_error), sock=listener)
    async with server:
        await stop.wait()


async def serve_sessions(listeners, session, stop: asyncio.Event,
                         housekeeping: Callable[[asyncio.Event], Awaitable[None]] | None = None
                         ) -> None:
    """A service that handles whole connections itself: *session(reader,
    writer)* for every connection on *listeners*, *housekeeping(stop)*
    beside, until *stop* is set."""
    servers = [await asyncio.start_unix_server(session, sock=sock) for sock in listeners]
    keeper = asyncio.get_running_loop().create_task(housekeeping(stop)) \
        if housekeeping is not None else None
    try:
        await stop.wait()
    finally:
        for server in servers:
            server.close()
        if keeper is not None:
            keeper.cancel()


class Client:
    """A persistent asyncio connection to one service socket."""

    def __init__(self, path: str, timeout: float = 300.0):
        self.path = path
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = AttrReader()
        self._lock = asyncio.Lock()

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._parser = AttrReader()

    async def request(self, req: Attrs) -> Attrs:
        async with self._lock:
            for attempt in (1, 2):  # one reconnect, as Postfix's clients do
                try:
                    if self._writer is None:
                        await self._connect()
                    assert self._writer is not None and self._reader is not None
                    self._writer.write(encode(req))
                    async with asyncio.timeout(self.timeout):
                        await self._writer.drain()
                        while True:
                            msg = self._parser.next_message()
                            if msg is not None:
                                return msg
                            data = await self._reader.read(65536)
                            if not data:
                                raise ConnectionResetError("service closed the connection")
                            self._parser.receive_data(data)
                except (OSError, asyncio.TimeoutError, AttrError):
                    self.close()
                    if attempt == 2:
                        raise
        raise ConnectionError("unreachable")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


async def read_request(reader: asyncio.StreamReader, limit: int = 4096) -> Attrs | None:
    """One small attribute request; None when the client sends garbage or
    goes away."""
    parser = AttrReader(max_message=limit)
    while True:
        data = await reader.read(limit)
        if not data:
            return None
        try:
            parser.receive_data(data)
        except AttrError:
            return None
        msg = parser.next_message()
        if msg is not None:
            return msg


class ClientPool:
    """Up to *size* connections to one service socket, one request at a
    time on each (a service answers the requests of one connection in
    order): qmgr's deliveries to one transport run side by side, as
    Postfix's qmgr talks to many delivery agent processes at once."""

    def __init__(self, path: str, size: int, timeout: float = 300.0):
        self.path = path
        self.timeout = timeout
        self._slots = asyncio.Semaphore(max(1, size))
        self._idle: list[Client] = []
        self._all: set[Client] = set()

    async def request(self, req: Attrs) -> Attrs:
        async with self._slots:
            client = self._idle.pop() if self._idle else None
            if client is None:
                client = Client(self.path, timeout=self.timeout)
                self._all.add(client)
            try:
                reply = await client.request(req)
            except BaseException:
                client.close()
                self._all.discard(client)
                raise
            self._idle.append(client)
            return reply

    def close(self) -> None:
        for client in self._all:
            client.close()
        self._all.clear()
        self._idle.clear()


def request_sync(path: str, req: Attrs, timeout: float = 60.0) -> Attrs:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(encode(req))
        parser = AttrReader()
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionResetError("service closed the connection")
            parser.receive_data(data)
            msg = parser.next_message()
            if msg is not None:
                return msg


def notify(path: str, req: Attrs) -> bool:
    """Best-effort one-way wake-up (no reply is read). False when the
    service is not there; the periodic scan catches up."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            s.connect(path)
            s.sendall(encode(req))
        return True
    except OSError:
        return False

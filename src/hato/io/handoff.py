"""Handing a live client connection from postscreen to smtpd, as Postfix's
``pass`` service type does: the client never reconnects.

smtpd's master.cf entry of type ``pass`` (``smtpd pass - - n - - smtpd``)
listens on ``private/smtpd`` (``$queue_directory/private/$smtpd_service_name``).
postscreen connects there and sends one message: the attribute list of
:mod:`hato.proto.attr` with the client's addresses as postscreen saw them
(``client_addr``, ``client_port``, ``server_addr``, ``server_port`` — the
PROXY protocol's when there is an upstream proxy) and, as SCM_RIGHTS
ancillary data, the client's socket. smtpd answers ``status=0`` once it
owns the socket (then postscreen closes its copy) or ``status=-1``.
"""

from __future__ import annotations

import asyncio
import socket

from ..proto.attr import AttrError, AttrReader, Attrs, encode

TIMEOUT = 10.0
MAX_MESSAGE = 4096


class HandoffError(Exception):
    """The client could not be handed over (the text says why)."""


async def _readable(sock: socket.socket, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: fut.done() or fut.set_result(None))
    try:
        async with asyncio.timeout(timeout):
            await fut
    finally:
        loop.remove_reader(sock.fileno())


async def _connect(link: socket.socket, path: str, timeout: float) -> None:
    """Connect to smtpd's pass socket. A full listen queue answers EAGAIN
    (which asyncio's sock_connect would take for success): wait and try
    again, as a blocking connect would, for at most *timeout* seconds
    (TimeoutError). The usual connect succeeds at once and costs no timer."""
    deadline = None
    while True:
        try:
            link.connect(path)
            return
        except BlockingIOError:
            now = asyncio.get_running_loop().time()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                raise TimeoutError from None
            await asyncio.sleep(0.005)


async def pass_client(path: str, client: socket.socket, attrs: Attrs,
                      timeout: float = TIMEOUT) -> None:
    """Hand *client* to the smtpd listening on *path*. Raises HandoffError;
    on success the caller closes its own copy of the socket."""
    loop = asyncio.get_running_loop()
    link = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    link.setblocking(False)
    try:
        try:
            await _connect(link, path, timeout)
            socket.send_fds(link, [encode(attrs)], [client.fileno()])
        except OSError as err:  # TimeoutError included
            raise HandoffError(f"connect to {path}: "
                               f"{getattr(err, 'strerror', None) or str(err) or 'timeout'}"
                               ) from None
        parser = AttrReader(max_message=MAX_MESSAGE)
        while True:
            reply = parser.next_message()
            if reply is not None:
                break
            try:
                async with asyncio.timeout(timeout):
                    data = await loop.sock_recv(link, MAX_MESSAGE)
            except OSError as err:  # TimeoutError included
                raise HandoffError(f"{path}: {str(err) or 'no reply in time'}") from None
            if not data:
                raise HandoffError(f"{path}: connection closed without a reply")
            try:
                parser.receive_data(data)
            except AttrError as err:
                raise HandoffError(f"{path}: {err}") from None
        if reply.get("status") != "0":
            raise HandoffError(f"{path}: refused")
    finally:
        link.close()


async def receive_client(link: socket.socket,
                         timeout: float = TIMEOUT) -> tuple[socket.socket, Attrs]:
    """smtpd's side, on a connection accepted on the pass socket: the
    client's socket and its attributes. Acknowledges receipt."""
    link.setblocking(False)
    parser = AttrReader(max_message=MAX_MESSAGE)
    fds: list[int] = []
    try:
        while True:
            await _readable(link, timeout)
            data, got, _flags, _addr = socket.recv_fds(link, MAX_MESSAGE, 1)
            fds += got
            if not data:
                raise HandoffError("connection closed before the client was passed")
            parser.receive_data(data)
            attrs = parser.next_message()
            if attrs is not None:
                break
        if len(fds) != 1:
            raise HandoffError(f"expected one socket, received {len(fds)}")
        client = socket.socket(fileno=fds.pop())
        link.send(encode(Attrs.of(status=0)))
        return client, attrs
    except (OSError, AttrError, asyncio.TimeoutError) as err:
        raise HandoffError(str(err) or "timeout") from None
    finally:
        for fd in fds:
            try:
                socket.close(fd)
            except OSError:
                pass

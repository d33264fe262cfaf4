"""Handing a live client socket from postscreen to smtpd (hato.io.handoff)
over a real UNIX socket with SCM_RIGHTS."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hato.io.handoff import HandoffError, pass_client, receive_client
from hato.proto.attr import Attrs


def test_client_socket_and_attributes_arrive(tmp_path):
    path = str(tmp_path / "smtpd")

    async def main():
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(5)
        listener.setblocking(False)
        client, far = socket.socketpair()
        loop = asyncio.get_running_loop()

        async def smtpd_side():
            link, _ = await loop.sock_accept(listener)
            return await receive_client(link)

        got = loop.create_task(smtpd_side())
        await pass_client(path, client, Attrs.of(client_addr="192.0.2.1", client_port="4711",
                                                 server_addr="192.0.2.25", server_port="25"))
        client.close()  # postscreen's copy: the socket lives on in smtpd
        sock, attrs = await got
        sock.sendall(b"220 from smtpd\r\n")
        assert far.recv(100) == b"220 from smtpd\r\n"
        far.sendall(b"EHLO x\r\n")
        assert sock.recv(100) == b"EHLO x\r\n"
        assert attrs.get("client_addr") == "192.0.2.1" and attrs.get("client_port") == "4711"
        sock.close()
        far.close()
        listener.close()
    asyncio.run(main())


def test_no_smtpd_listening_is_an_error(tmp_path):
    async def main():
        a, b = socket.socketpair()
        with pytest.raises(HandoffError, match="connect to"):
            await pass_client(str(tmp_path / "nothing"), a, Attrs.of(client_addr="x"),
                              timeout=2)
        a.close()
        b.close()
    asyncio.run(main())


def test_a_message_without_a_socket_is_refused(tmp_path):
    async def main():
        link, other = socket.socketpair()
        other.sendall(b"client_addr=192.0.2.1\n\n")
        with pytest.raises(HandoffError, match="expected one socket"):
            await receive_client(link, timeout=2)
        other.close()
        link.close()
    asyncio.run(main())


def _full_listener(path: str) -> tuple[socket.socket, list[socket.socket]]:
    """A pass socket whose listen queue is full (connect answers EAGAIN)."""
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(0)
    fillers = []
    for _ in range(8):
        f = socket.socket(socket.AF_UNIX)
        f.setblocking(False)
        try:
            f.connect(path)
        except BlockingIOError:
            f.close()
            return listener, fillers
        fillers.append(f)
    raise AssertionError("the listen queue never filled up")


def test_a_full_listen_queue_is_waited_out(tmp_path):
    """smtpd busy: the pass socket's queue is full (EAGAIN on connect);
    postscreen waits for room instead of failing the client."""
    path = str(tmp_path / "smtpd")

    async def main():
        listener, fillers = _full_listener(path)
        client, far = socket.socketpair()
        loop = asyncio.get_running_loop()
        handing = loop.create_task(pass_client(path, client, Attrs.of(client_addr="x"),
                                               timeout=5))
        await asyncio.sleep(0.2)
        assert not handing.done()
        listener.setblocking(False)
        while True:  # smtpd frees up: the queued connections are taken
            link, _ = await loop.sock_accept(listener)
            try:
                sock, attrs = await receive_client(link, timeout=0.5)
            except Exception:
                link.close()
                continue
            break
        await handing
        assert attrs.get("client_addr") == "x"
        for s in (sock, client, far, listener, *fillers):
            s.close()
    asyncio.run(main())


def test_a_listen_queue_that_stays_full_times_out(tmp_path):
    path = str(tmp_path / "smtpd")

    async def main():
        listener, fillers = _full_listener(path)
        client, far = socket.socketpair()
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(HandoffError, match=f"connect to {path}: timeout"):
            await pass_client(path, client, Attrs.of(client_addr="x"), timeout=0.3)
        assert loop.time() - began >= 0.3
        for s in (client, far, listener, *fillers):
            s.close()
    asyncio.run(main())


def test_an_smtpd_that_never_answers_times_out(tmp_path):
    """The connection and the socket get through, but no status comes
    back: the hand-off fails after the timeout (postscreen then answers
    421 itself)."""
    path = str(tmp_path / "smtpd")

    async def main():
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(5)
        client, far = socket.socketpair()
        loop = asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(HandoffError, match="no reply in time"):
            await pass_client(path, client, Attrs.of(client_addr="x"), timeout=0.3)
        assert loop.time() - began >= 0.3
        link, _ = listener.accept()  # what the hand-off sent is there, unanswered
        data, fds, _flags, _addr = socket.recv_fds(link, 4096, 1)
        assert b"client_addr" in data and len(fds) == 1
        for fd in fds:
            socket.close(fd)
        for s in (link, client, far, listener):
            s.close()
    asyncio.run(main())


def test_receive_client_times_out_without_a_message(tmp_path):
    async def main():
        link, other = socket.socketpair()
        with pytest.raises(HandoffError, match="timeout"):
            await receive_client(link, timeout=0.2)
        other.close()
        link.close()
    asyncio.run(main())

"""``sendmail -bs``: one smtpd session on standard input and output."""

from __future__ import annotations

import asyncio
import os

from .smtpd_server import SessionServer
from .smtpd_tlsauth import READ_SIZE


class _FdWriter:
    """The writing half of a session on a file descriptor (sendmail -bs)."""

    def __init__(self, fd: int):
        self.fd = fd

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        return None


async def serve_stdio(server: SessionServer, rfd: int = 0, wfd: int = 1) -> None:
    """One session on standard input and output, as ``sendmail -bs``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_SIZE)

    async def pump() -> None:
        while True:
            data = await loop.run_in_executor(None, os.read, rfd, READ_SIZE)
            if not data:
                reader.feed_eof()
                return
            reader.feed_data(data)

    task = loop.create_task(pump())
    try:
        await server.serve_streams(reader, _FdWriter(wfd), "127.0.0.1", "")
    finally:
        task.cancel()

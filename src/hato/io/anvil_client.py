"""The client side of anvil (:mod:`hato.services.anvil`), for smtpd and
later postscreen: one persistent connection to ``private/anvil`` per
process, shared by all its sessions. Requests are pipelined: they are
written in order and anvil answers them in order, so each waits only for
its own reply.

When anvil cannot be reached (not running, socket missing, no reply in
time) a request answers None and the caller serves the client without
limits, as Postfix's smtpd does. The first failure is logged as a warning
(``warning: connect to private/anvil: …``); then the client waits
RETRY_AFTER seconds before it tries anvil again, so that a missing anvil
costs nothing per session.
"""

from __future__ import annotations

import asyncio
import collections
import time

from ..proto.attr import AttrError, AttrReader, Attrs, encode

RETRY_AFTER = 10.0
REPLY_TIMEOUT = 5.0


class AnvilClient:
    def __init__(self, path: str, log, *, label: str = "private/anvil",
                 timeout: float = REPLY_TIMEOUT):
        self.path = path
        self.label = label
        self.log = log
        self.timeout = timeout
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._connecting: asyncio.Future | None = None
        self._down_until = 0.0
        self._warned = False

    async def request(self, request: str, ident: str) -> Attrs | None:
        """The reply, or None when anvil is unavailable."""
        if self._writer is None:
            if time.monotonic() < self._down_until:
                return None
            if not await self._connect():
                return None
        assert self._writer is not None
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            self._writer.write(encode(Attrs.of(request=request, ident=ident)))
            return await asyncio.wait_for(asyncio.shield(fut), self.timeout)
        except asyncio.TimeoutError:
            self._fail("problem talking to server", f"{self.label}: no reply")
            return None
        except (OSError, ConnectionError) as err:
            self._fail("problem talking to server", f"{self.label}: {err}")
            return None

    def notify(self, request: str, ident: str) -> None:
        """Send a request whose reply nobody waits for (disconnect)."""
        if self._writer is None:
            return
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiting.append(fut)
        try:
            self._writer.write(encode(Attrs.of(request=request, ident=ident)))
        except (OSError, ConnectionError, RuntimeError) as err:
            self._fail("problem talking to server", f"{self.label}: {err}")

    async def _connect(self) -> bool:
        if self._connecting is not None:
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        ok = False
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.path), self.timeout)
        except (OSError, asyncio.TimeoutError) as err:
            self._fail(f"connect to {self.label}",
                       getattr(err, "strerror", None) or str(err) or "timeout")
        else:
            self._writer = writer
            self._reader_task = loop.create_task(self._read_replies(reader))
            if self._warned:
                self.log.info(f"{self.label}: service available again")
            self._warned = False
            ok = True
        self._connecting.set_result(ok)
        self._connecting = None
        return ok

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        parser = AttrReader(max_message=64 * 1024)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionResetError("connection closed by service")
                parser.receive_data(data)
                for msg in parser.messages():
                    if self._waiting:  # replies come in the order of the requests
                        fut = self._waiting.popleft()
                        if not fut.done():
                            fut.set_result(msg)
        except (OSError, ConnectionError, AttrError) as err:
            self._fail("problem talking to server", f"{self.label}: {err}")
        except asyncio.CancelledError:
            pass

    def _fail(self, what: str, detail: str) -> None:
        if not self._warned:
            self.log.warning(f"{what}: {detail}" if what.startswith("connect") else
                             f"{what} {detail}")
            self._warned = True
        self._down_until = time.monotonic() + RETRY_AFTER
        self.close()

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:
                pass
        task, self._reader_task = self._reader_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        while self._waiting:
            fut = self._waiting.popleft()
            if not fut.done():
                fut.set_result(None)

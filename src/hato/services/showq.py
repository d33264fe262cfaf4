"""showq: the queue listing for users who may not read the queue, as
Postfix's showq(8).

master.cf ``showq unix n - n - - showq`` (``public/showq``). hato's
postqueue reads the queue itself when it runs as root or ``mail_owner``;
anyone else asks this service, which runs as ``mail_owner``. The service
learns who is asking from the socket (SO_PEERCRED) and applies
``authorized_mailq_users`` itself, so a client cannot bypass the list.

Protocol: the client sends one attribute request ``request=list`` with
``format=p`` (mailq) or ``format=j`` (JSON lines); the answer is
``status=0`` followed by the listing as text until the connection closes,
or ``status=1`` with ``reason`` (the refusal, in Postfix's words).
"""

from __future__ import annotations

import asyncio
from itertools import islice

from ..io.ipc import read_request, serve_sessions
from ..io.useracl import peer_uid, refusal
from ..proto.attr import Attrs, encode
from ..queue.errors import QueueError
from ..queue.listing import list_queue
from ..queue.showq import json_line, queue_listing
from ..queue.store import QueueStore

BATCH = 200  # messages read per step of the worker thread


class Showq:
    def __init__(self, settings, log):
        self.s = settings
        self.log = log
        self.store = QueueStore.from_settings(settings)

    def chunks(self, fmt: str):
        s = self.s
        utf8 = s.bool("smtputf8_enable")
        empty = s.str("empty_address_recipient")
        messages = list_queue(self.store, warn=self.log.warning)
        if fmt == "j":
            return (json_line(m, empty=empty, utf8=utf8) for m in messages)
        return queue_listing(messages, long_ids=s.bool("enable_long_queue_ids"), empty=empty,
                             utf8=utf8)

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await read_request(reader)
            if req is None:
                return
            fmt = req.get("format") or "p"
            uid = peer_uid(writer.get_extra_info("socket"))
            why = refusal(self.s, "authorized_mailq_users", uid, "view the mail queue")
            if req.get("request") != "list" or fmt not in ("p", "j"):
                why = "bad request"
            if why:
                writer.write(encode(Attrs.of(status="1", reason=why)))
                await writer.drain()
                return
            writer.write(encode(Attrs.of(status="0")))
            it = iter(self.chunks(fmt))
            while True:
                try:
                    batch = await asyncio.to_thread(lambda: list(islice(it, BATCH)))
                except QueueError as err:
                    self.log.warning(f"queue report unavailable: {err}")
                    return
                if not batch:
                    break
                writer.write("".join(batch).encode("utf-8", "surrogateescape"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()


async def serve(ctx) -> int:
    showq = Showq(ctx.settings, ctx.log)
    await serve_sessions(ctx.listeners, showq.session, ctx.stop)
    return 0

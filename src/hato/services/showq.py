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

from ..io.ipc import serve_sessions
from ..io.useracl import guarded_session, reply_status
from ..proto.attr import Attrs
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

    async def answer(self, req: Attrs, writer: asyncio.StreamWriter) -> None:
        fmt = req.get("format") or "p"
        if req.get("request") != "list" or fmt not in ("p", "j"):
            await reply_status(writer, "bad request")
            return
        await reply_status(writer)
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


async def serve(ctx) -> int:
    showq = Showq(ctx.settings, ctx.log)
    session = guarded_session(ctx.settings, "authorized_mailq_users", "view the mail queue",
                              showq.answer)
    await serve_sessions(ctx.listeners, session, ctx.stop)
    return 0

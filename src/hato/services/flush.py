"""flush: deliveries on request for users who may not touch the queue, as
Postfix's flush(8) serves ``postqueue -i`` and ``postqueue -s``.

master.cf ``flush unix n - n 1000? 0 flush`` (``public/flush``). hato's
postqueue moves the mail itself when it runs as root or ``mail_owner``;
anyone else asks this service, which runs as ``mail_owner``, learns who is
asking from the socket (SO_PEERCRED) and applies ``authorized_flush_users``.

Requests (one attribute request per connection, answered ``status=0``, or
``status=1`` with ``reason``):

* ``request=flush_file queue_id=ID``: that deferred message goes back to
  incoming/, due now (nothing happens for a message that is not deferred);
* ``request=flush_site site=DOMAIN``: the same for every deferred message
  with a recipient still to deliver in DOMAIN, which must be in
  ``fast_flush_domains``.

The queue manager is woken when a message moved.
"""

from __future__ import annotations

import asyncio
import os
import time

from ..io.ipc import notify, serve_sessions
from ..io.useracl import guarded_session, reply_status
from ..proto.attr import Attrs
from ..queue.flushing import deferred_for_site, eligible_site, flush_one, valid_site
from ..queue.ids import is_queue_id
from ..queue.store import QueueStore


class Flush:
    def __init__(self, settings, log):
        self.s = settings
        self.log = log
        self.store = QueueStore.from_settings(settings)
        self.qmgr = os.path.join(settings.str("queue_directory"), "public", "qmgr")

    def flush(self, req: Attrs) -> str:
        """Do *req*; "" or why not."""
        kind = req.get("request")
        now = time.time()
        if kind == "flush_file":
            queue_id = req.get("queue_id") or ""
            if not is_queue_id(queue_id):
                return f'Cannot flush queue ID - invalid name: "{queue_id[:100]}"'
            moved = flush_one(self.store, queue_id, now)
        elif kind == "flush_site":
            site = req.get("site") or ""
            if not valid_site(site):
                return f'Cannot flush mail queue - invalid destination: "{site[:100]}"'
            if not eligible_site(self.s, site):
                return f'Flush service is not configured for destination "{site}"'
            moved = sum(flush_one(self.store, queue_id, now)
                        for queue_id in deferred_for_site(self.store, site))
        else:
            return "bad request"
        if moved:
            self.log.info(f"flush: {kind} {req.get('queue_id') or req.get('site')}: "
                          f"{moved} message(s) due now")
            notify(self.qmgr, Attrs.of(request="wakeup"))
        return ""

    async def answer(self, req: Attrs, writer: asyncio.StreamWriter) -> None:
        try:
            why = await asyncio.to_thread(self.flush, req)
        except OSError as err:
            why = f"Cannot flush mail queue: {err.strerror or err}"
        await reply_status(writer, why)


async def serve(ctx) -> int:
    flush = Flush(ctx.settings, ctx.log)
    session = guarded_session(ctx.settings, "authorized_flush_users", "flush the mail queue",
                              flush.answer)
    await serve_sessions(ctx.listeners, session, ctx.stop)
    return 0

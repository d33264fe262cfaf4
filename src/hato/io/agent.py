"""The serving loop every delivery agent shares: accept qmgr's requests
on the agent's socket, run the delivery (blocking work goes to a thread),
log Postfix's status line per recipient, and reply with the statuses.

A delivery that raises is a bug: every recipient is deferred with
``4.3.0 internal error`` and the traceback is logged with the queue id, so
nothing is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..delivery.dsn import DeliveryError
from ..delivery.request import (
    BOUNCED,
    DEFERRED,
    DeliveryRequest,
    RcptStatus,
    decode_statuses,
    encode_statuses,
    status_line,
)
from ..proto.attr import Attrs
from ..tables.base import TableRetry
from .ipc import serve_requests

# deliver(request, timing) -> statuses; timing["connected"] may be set by the
# agent when its "connection" (e.g. SMTP session) is up.
Deliver = Callable[[DeliveryRequest, dict], list[RcptStatus]]


def each_recipient(req: DeliveryRequest, deliver_one: Callable[[DeliveryRequest, object],
                   RcptStatus], relay: str) -> list[RcptStatus]:
    """Deliver to the request's recipients one by one; a table that fails
    temporarily defers the recipient (4.3.0), a DeliveryError defers or
    bounces it as its status says."""
    out = []
    for rcpt in req.recipients:
        try:
            out.append(deliver_one(req, rcpt))
        except TableRetry as err:
            out.append(RcptStatus(rcpt.index, DEFERRED, "4.3.0",
                                  f"table lookup failure: {err.reason}", relay=relay))
        except DeliveryError as err:
            out.append(RcptStatus(rcpt.index, DEFERRED if err.temporary else BOUNCED,
                                  err.dsn, err.text, relay=relay))
    return out


async def serve_agent(ctx, deliver: Deliver, *, concurrency: int = 20) -> int:
    log = ctx.log
    limit = asyncio.Semaphore(max(1, concurrency))
    external = ctx.settings.str("info_log_address_format").lower() != "internal"

    async def handle(msg: Attrs) -> Attrs:
        req = DeliveryRequest.decode(msg)
        async with limit:
            started = time.time()
            timing = {"connected": started}
            try:
                statuses = await asyncio.to_thread(deliver, req, timing)
            except Exception:
                log.exception(f"{req.queue_id}: delivery failed unexpectedly")
                statuses = [RcptStatus(r.index, DEFERRED, "4.3.0", "internal error")
                            for r in req.recipients]
            finished = time.time()
        by_index = {r.index: r for r in req.recipients}
        for st in statuses:
            rcpt = by_index.get(st.index)
            if rcpt is not None and not st.logged:
                log.info(status_line(req, rcpt, st, started=started,
                                     connected=timing.get("connected", started),
                                     finished=finished, external=external))
        return encode_statuses(statuses)

    await asyncio.gather(*(serve_requests(sock, handle, ctx.stop, log.warning)
                           for sock in ctx.listeners))
    return 0


__all__ = ["serve_agent", "decode_statuses"]

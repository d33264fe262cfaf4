"""The serving loop every delivery agent shares: accept qmgr's requests
on the agent's socket, run the delivery (blocking work goes to a thread),
log Postfix's status line per recipient, and reply with the statuses.

A delivery that raises is a bug: every recipient is deferred with
``4.3.0 internal error`` and the traceback is logged with the queue id, so
nothing is lost.

Address verification probes (request attribute ``probe=yes``) are never
delivered. Agents that know how to answer one without delivering
(:data:`PROBE_AWARE`: smtp and lmtp stop after RCPT TO, local and virtual
make their checks without writing, discard and error write nothing
anyway) get the request as usual; any other agent (pipe, ...) is not
called at all and the recipient counts as deliverable (``delivery via
TRANSPORT``), as far as hato can tell without running it. The status
line of a probe says what Postfix's verify_append() logs:
``status=deliverable`` for a sent recipient, ``status=undeliverable`` for
a deferred or bounced one (``undeliverable-but-not-cached`` with
``address_verify_negative_cache = no``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from ..delivery.dsn import DeliveryError
from ..delivery.request import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    RcptStatus,
    decode_statuses,
    encode_statuses,
    status_line,
)
from ..proto.attr import Attrs
from ..queue.errors import NoSuchMessage
from ..tables.base import TableRetry
from .ipc import serve_requests

# deliver(request, timing) -> statuses; timing["connected"] may be set by the
# agent when its "connection" (e.g. SMTP session) is up.
Deliver = Callable[[DeliveryRequest, dict], list[RcptStatus]]

#: master.cf commands whose delivery answers a probe without delivering
PROBE_AWARE = frozenset({"smtp", "lmtp", "local", "virtual", "discard", "error"})


def is_probe(req: DeliveryRequest) -> bool:
    """An address verification probe: to be checked, never delivered."""
    return req.attributes.get("probe") == "yes"


def probe_log_status(st: RcptStatus, negative_cache: bool = True) -> RcptStatus:
    """The status a probe's line shows instead of sent/deferred/bounced."""
    if st.status == SENT:
        word = "deliverable"
    else:
        word = "undeliverable" if negative_cache else "undeliverable-but-not-cached"
    return dataclasses.replace(st, status=word)


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


def log_statuses(log, req: DeliveryRequest, statuses: list[RcptStatus], *, started: float,
                 connected: float, finished: float, external: bool,
                 negative_cache: bool) -> None:
    """Postfix's status line for each recipient the delivery has not
    logged itself (a probe's says deliverable or undeliverable)."""
    probe = is_probe(req)
    by_index = {r.index: r for r in req.recipients}
    for st in statuses:
        rcpt = by_index.get(st.index)
        if rcpt is not None and not st.logged:
            if probe:
                st = probe_log_status(st, negative_cache)
            log.info(status_line(req, rcpt, st, started=started, connected=connected,
                                 finished=finished, external=external))


async def serve_agent(ctx, deliver: Deliver, *, concurrency: int = 20,
                      probe_aware: bool | None = None) -> int:
    """Serve qmgr's requests with *deliver*; *probe_aware* says whether it
    answers probes itself (default: by the service's command, PROBE_AWARE)."""
    log = ctx.log
    limit = asyncio.Semaphore(max(1, concurrency))
    external = ctx.settings.str("info_log_address_format").lower() != "internal"
    if probe_aware is None:
        probe_aware = ctx.service.command in PROBE_AWARE
    negative_cache = ctx.settings.bool("address_verify_negative_cache")

    async def handle(msg: Attrs) -> Attrs:
        req = DeliveryRequest.decode(msg)
        probe = is_probe(req)
        async with limit:
            started = time.time()
            timing = {"connected": started}
            try:
                if probe and not probe_aware:
                    statuses = [RcptStatus(r.index, SENT, "2.0.0",
                                           f"delivery via {req.transport}",
                                           relay=req.transport) for r in req.recipients]
                else:
                    statuses = await asyncio.to_thread(deliver, req, timing)
            except NoSuchMessage:
                # postsuper took it away before it could be opened: nothing
                # to log per recipient (qmgr notes where the message went)
                log.warning(f"{req.queue_id}: open {req.queue_name}/{req.queue_id}: "
                            f"No such file or directory")
                statuses = [RcptStatus(r.index, DEFERRED, "4.3.0", "mail system error",
                                       logged=True) for r in req.recipients]
            except Exception:
                log.exception(f"{req.queue_id}: delivery failed unexpectedly")
                statuses = [RcptStatus(r.index, DEFERRED, "4.3.0", "internal error")
                            for r in req.recipients]
            finished = time.time()
        log_statuses(log, req, statuses, started=started,
                     connected=timing.get("connected", started), finished=finished,
                     external=external, negative_cache=negative_cache)
        return encode_statuses(statuses)

    await asyncio.gather(*(serve_requests(sock, handle, ctx.stop, log.warning)
                           for sock in ctx.listeners))
    return 0


__all__ = ["decode_statuses", "log_statuses", "serve_agent"]

"""error / retry: the delivery agents that fail mail on purpose, as
error(8).

Run as the ``error`` service, every recipient bounces with the next hop as
the reason (``error:5.1.1 text`` in transport_maps gives ``dsn=5.1.1``;
without a code, 5.0.0); run as the ``retry`` service (master.cf
``retry unix - - n - - error``) every recipient is deferred (4.0.0 by
default). Parameters: none of its own.
"""

from __future__ import annotations

import re

from ..delivery.request import BOUNCED, DEFERRED, DeliveryRequest, RcptStatus
from ..io.agent import serve_agent

_DSN = re.compile(r"^([245])\.\d{1,3}\.\d{1,3}\s*")


def verdict(nexthop: str, retry: bool) -> tuple[str, str, str]:
    """(status, dsn, reason) for a next-hop text."""
    text = nexthop.strip()
    m = _DSN.match(text)
    klass = "4" if retry else "5"
    if m:
        dsn = m.group(0).strip()
        dsn = klass + dsn[1:]
        text = text[m.end():]
    else:
        dsn = f"{klass}.0.0"
    if not text:
        text = "delivery temporarily suspended" if retry else "mail delivery failed"
    return (DEFERRED if retry else BOUNCED), dsn, text


def make_deliver(retry: bool):
    def deliver(req: DeliveryRequest, timing: dict) -> list[RcptStatus]:
        status, dsn, reason = verdict(req.nexthop, retry)
        return [RcptStatus(r.index, status, dsn, reason, relay="none")
                for r in req.recipients]

    return deliver


async def serve(ctx) -> int:
    return await serve_agent(ctx, make_deliver(ctx.service.name == "retry"))

"""discard: the delivery agent that throws mail away, as discard(8).

Every recipient is reported delivered (``status=sent``) with the next hop
as the reason text, or "discarded" when there is none. Requests: qmgr's
delivery requests (hato.delivery.request). Parameters: none of its own.
"""

from __future__ import annotations

from ..delivery.request import SENT, DeliveryRequest, RcptStatus
from ..io.agent import serve_agent


def deliver(req: DeliveryRequest, timing: dict) -> list[RcptStatus]:
    reason = req.nexthop or "discarded"
    return [RcptStatus(r.index, SENT, "2.0.0", reason, relay="none") for r in req.recipients]


async def serve(ctx) -> int:
    return await serve_agent(ctx, deliver)

"""smtpd's RCPT-time Maildir++ quota question (``hato_mailbox_quota_rcpt_check``).

smtpd runs as the unprivileged mail_owner and cannot read users' Maildirs,
so it asks the delivery agent that would deliver the recipient: a delivery
request on ``private/<transport>`` with the attribute ``quota_query=yes``,
an empty queue name and queue id ``NOQUEUE``, the envelope sender, the
message size announced with ``MAIL FROM ... SIZE=`` (or 0) and the one
recipient. local(8) and virtual(8) answer it without delivering, writing or
logging anything (see their module documentation); the answer is a normal
status: ``4.2.2`` or ``5.2.2`` means the mailbox is full.

Only transports whose master.cf command is ``local`` or ``virtual`` are
asked; for any other transport, an agent that cannot be reached, or any
other answer, the recipient is accepted and the delivery decides, as
without the check.
"""

from __future__ import annotations

import os

from ..config.mastercf import MasterCf
from ..delivery.request import DeliveryRequest, RcptRequest, decode_statuses
from ..proto.attr import AttrError
from .ipc import request_sync

#: the agents that understand the question
QUOTA_AWARE = frozenset({"local", "virtual"})
FULL_CODES = frozenset({"4.2.2", "5.2.2"})
TIMEOUT = 10.0


class MailboxQuotaQuery:
    """``query(recipient, transport, nexthop, sender, size) -> None | (dsn, text)``:
    None when the mailbox has room or nothing is known, else the status
    and text of a full mailbox."""

    def __init__(self, queue_directory: str, agents: dict[str, str], *,
                 timeout: float = TIMEOUT):
        self.queue_directory = queue_directory
        self.agents = agents  # transport name -> master.cf command
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings) -> "MailboxQuotaQuery":
        master = MasterCf.read(os.path.join(settings.str("config_directory"), "master.cf"),
                               missing_ok=True)
        agents = {svc.name: svc.command for svc in master.services
                  if svc.type == "unix" and svc.command in QUOTA_AWARE}
        return cls(settings.str("queue_directory"), agents)

    def __call__(self, recipient: str, transport: str, nexthop: str, sender: str,
                 size: int) -> tuple[str, str] | None:
        if transport not in self.agents:
            return None
        req = DeliveryRequest("", "NOQUEUE", transport, nexthop, sender, 0.0, 0.0,
                              [RcptRequest(0, recipient, recipient)], size=max(0, size),
                              attributes={"quota_query": "yes"})
        path = os.path.join(self.queue_directory, "private", transport)
        try:
            statuses = decode_statuses(request_sync(path, req.encode(), timeout=self.timeout))
        except (OSError, ValueError, KeyError, AttrError):
            return None
        for st in statuses:
            if st.index == 0 and st.dsn in FULL_CODES and st.status != "sent":
                return st.dsn, st.reason
        return None


__all__ = ["MailboxQuotaQuery", "QUOTA_AWARE"]

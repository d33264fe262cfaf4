"""virtual: delivery to virtual mailboxes, as virtual(8).

For each recipient, ``virtual_mailbox_maps`` (searched as virtual(5):
``user+ext@domain``, ``user@domain``, ``@domain``) gives a path under
``virtual_mailbox_base``: a result ending in ``/`` is a Maildir, anything
else an mbox file (locked per ``virtual_mailbox_lock``). The files belong to
the uid and gid that ``virtual_uid_maps`` and ``virtual_gid_maps`` give
(``static:5000`` is the usual form); a uid below ``virtual_minimum_uid`` is
refused. Each delivered copy starts with ``Delivered-To:`` and
``Return-Path:`` (and ``X-Original-To:``). An unknown recipient bounces
with 5.1.1; a table or disk failure defers. An address verification
probe (``probe=yes``) gets the same checks and writes nothing: ``delivers
to maildir`` or ``delivers to mailbox``.

Maildir deliveries honour Maildir++ quotas (``maildirsize``, and the
hato_mailbox_quota_* parameters: hato.delivery.maildir_quota). smtpd's
RCPT-time question (``hato_mailbox_quota_rcpt_check``) arrives as a
delivery request with the attribute ``quota_query=yes`` and no queue file:
the recipient gets the same checks, and a Maildir recipient is answered
with its quota state (``sent``, or ``deferred``/``bounced`` with
4.2.2/5.2.2); nothing is written or logged.

Requests: qmgr's delivery requests. Parameters: virtual_mailbox_base,
virtual_mailbox_maps, virtual_uid_maps, virtual_gid_maps,
virtual_minimum_uid, virtual_mailbox_lock, virtual_mailbox_limit,
recipient_delimiter, myhostname, hato_mailbox_quota_maps,
hato_mailbox_quota_default, hato_mailbox_quota_create,
hato_mailbox_quota_bounce, hato_mailbox_quota_message.
"""

from __future__ import annotations

import dataclasses
import os

from ..delivery.dsn import DeliveryError
from ..delivery.maildir import deliver_maildir
from ..delivery.maildir_quota import MaildirsizeKeeper, QuotaSettings, quota_answer
from ..delivery.mbox import deliver_mbox, envelope_headers
from ..delivery.request import BOUNCED, DEFERRED, SENT, DeliveryRequest, RcptStatus
from ..io.agent import each_recipient, is_probe, serve_agent
from ..policy.rewrite import open_maps
from ..queue.store import QueueStore
from ..tables.base import TableRetry
from ..tables.search import TableList, find_address_mapping


class Virtual:
    def __init__(self, settings, log=None):
        s = settings
        self.log = log
        self.s = s
        self.base = s.str("virtual_mailbox_base")
        self.mailboxes = open_maps(s, "virtual_mailbox_maps") or TableList([])
        self.uids = open_maps(s, "virtual_uid_maps") or TableList([])
        self.gids = open_maps(s, "virtual_gid_maps") or TableList([])
        self.min_uid = s.int("virtual_minimum_uid")
        self.locks = tuple(m for m in s.list("virtual_mailbox_lock"))
        self.limit = s.size("virtual_mailbox_limit")
        self.delimiter = s.str("recipient_delimiter")
        self.hostname = s.str("myhostname")
        self.store = QueueStore.from_settings(s)
        self.quota = QuotaSettings.from_settings(
            s, open_maps(s, "hato_mailbox_quota_maps") or TableList([]))

    def _find(self, maps: TableList, address: str) -> str | None:
        found = find_address_mapping(maps, address, recipient_delimiter=self.delimiter)
        return found.value if found else None

    def deliver_one(self, req: DeliveryRequest, rcpt) -> RcptStatus:
        for maps in (self.mailboxes, self.uids, self.gids):
            maps.refresh()
        path = self._find(self.mailboxes, rcpt.address)
        if path is None:
            return RcptStatus(rcpt.index, BOUNCED, "5.1.1",
                              "user unknown in virtual mailbox table", relay="virtual")
        uid_text = self._find(self.uids, rcpt.address)
        gid_text = self._find(self.gids, rcpt.address)
        if uid_text is None or not uid_text.strip().isdigit():
            return RcptStatus(rcpt.index, DEFERRED, "4.3.0",
                              f"recipient {rcpt.address}: uid not found in virtual_uid_maps",
                              relay="virtual")
        if gid_text is None or not gid_text.strip().isdigit():
            return RcptStatus(rcpt.index, DEFERRED, "4.3.0",
                              f"recipient {rcpt.address}: gid not found in virtual_gid_maps",
                              relay="virtual")
        uid, gid = int(uid_text), int(gid_text)
        if uid < self.min_uid:
            return RcptStatus(rcpt.index, DEFERRED, "4.3.0",
                              f"recipient {rcpt.address}: bad uid {uid} in virtual_uid_maps",
                              relay="virtual")
        full = os.path.join(self.base, path)
        if req.attributes.get("quota_query") == "yes":
            answer = (SENT, "2.0.0", "not a maildir")
            if path.endswith("/"):
                answer = quota_answer(self._quota(req, rcpt, uid, gid), full, req.size)
            return RcptStatus(rcpt.index, *answer, relay="virtual", logged=True)
        if is_probe(req):
            return RcptStatus(rcpt.index, SENT, "2.0.0",
                              "delivers to maildir" if path.endswith("/")
                              else "delivers to mailbox", relay="virtual")
        headers = envelope_headers(sender=req.sender, original_recipient=rcpt.orig_address,
                                   delivered_to=rcpt.address)
        own = (uid, gid) if os.geteuid() == 0 else (None, None)
        qf = self.store.open(req.queue_name, req.queue_id, writable=False)
        try:
            if path.endswith("/"):
                deliver_maildir(full, qf.content(), prepend_headers=headers, uid=own[0],
                                gid=own[1], hostname=self.hostname, error_dsn="4.2.0",
                                quota=self._quota(req, rcpt, *own))
                reason = "delivered to maildir"
            else:
                deliver_mbox(full, qf.content(), sender=req.sender, arrival=None,
                             prepend_headers=headers, lock_methods=self.locks, uid=own[0],
                             gid=own[1], size_limit=self.limit, error_dsn="4.2.0")
                reason = "delivered to mailbox"
        finally:
            qf.close()
        return RcptStatus(rcpt.index, SENT, "2.0.0", reason, relay="virtual")

    def _quota(self, req: DeliveryRequest, rcpt, uid: int | None,
               gid: int | None) -> MaildirsizeKeeper:
        """The Maildir++ quota hook for one Maildir delivery."""
        def warn(text: str) -> None:
            if self.log is not None:
                self.log.warning(f"{req.queue_id}: {text}")

        policy = self.quota.policy_for(rcpt.address, warn=warn)
        return MaildirsizeKeeper(policy, uid=uid, gid=gid, warn=warn)

    def _quota_query(self, req: DeliveryRequest, rcpt) -> RcptStatus:
        try:
            return self.deliver_one(req, rcpt)
        except (DeliveryError, TableRetry) as err:
            # not known now: the delivery decides
            return RcptStatus(rcpt.index, SENT, "2.0.0", f"quota unknown: {err}",
                              relay="virtual", logged=True)

    def deliver(self, req: DeliveryRequest, timing: dict) -> list[RcptStatus]:
        self.quota.refresh()
        if req.attributes.get("quota_query") == "yes":
            return [dataclasses.replace(st, logged=True)
                    for st in each_recipient(req, self._quota_query, "virtual")]
        return each_recipient(req, self.deliver_one, "virtual")


async def serve(ctx) -> int:
    return await serve_agent(ctx, Virtual(ctx.settings, ctx.log).deliver)

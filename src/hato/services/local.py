"""local: delivery to local users, as local(8).

For each recipient in a local domain, hato.delivery.local plans what
Postfix's local(8) would do — aliases (``alias_maps``: lists, ``|command``,
``/file``, ``:include:``), ``.forward`` files (``forward_path``), then the
mailbox (``mailbox_command``, ``home_mailbox`` as a Maildir or file,
``mail_spool_directory``), ``luser_relay`` or a bounce for unknown users,
``Delivered-To:`` loop detection — and this service carries the plan out:
Maildir and mbox deliveries as the recipient (when started by root),
commands through pipe with ``default_privs`` or the user's rights, and
forwarding as a new message queued with a ``Delivered-To:`` header.

The recipient's status combines its actions: any temporary failure defers
it (parts already delivered may be delivered again: at least once), else
any bounce bounces it, else it is sent.

Maildir deliveries honour Maildir++ quotas (``maildirsize``, and the
hato_mailbox_quota_* parameters: hato.delivery.maildir_quota). smtpd's
RCPT-time question (``hato_mailbox_quota_rcpt_check``) arrives as a
delivery request with the attribute ``quota_query=yes`` and no queue file:
the recipient is planned as for a probe and, when its only action is a
Maildir, answered with that Maildir's quota state (``sent``, or
``deferred``/``bounced`` with 4.2.2/5.2.2); nothing is written or logged.

An address verification probe (``probe=yes``) is planned the same way but
nothing is written or run: each action answers what it would do, as
Postfix's local does for such requests (``delivers to mailbox``,
``delivers to maildir``, ``delivers to file: PATH``, ``delivers to
command: CMD``, ``forwards to ADDR, ...``); unknown users bounce and table
failures defer as usual, and mailbox_transport recipients are handed to
that agent, which answers the probe itself.

Requests: qmgr's delivery requests. Parameters: alias_maps, home_mailbox,
mail_spool_directory, mailbox_command, forward_path, allow_mail_to_commands,
allow_mail_to_files, luser_relay, default_privs, recipient_delimiter,
command_time_limit, local_command_shell, mailbox_size_limit, myhostname,
mydestination, myorigin, hato_mailbox_quota_maps, hato_mailbox_quota_default,
hato_mailbox_quota_create, hato_mailbox_quota_bounce, hato_mailbox_quota_message.
"""

from __future__ import annotations

import os

from ..delivery import local as L
from ..delivery.dsn import DeliveryError
from ..delivery.maildir import deliver_maildir
from ..delivery.maildir_quota import MaildirsizeKeeper, QuotaSettings, quota_answer
from ..delivery.mbox import deliver_mbox, envelope_headers
from ..delivery.pipe import LOCAL_COMMAND_FLAGS, command_argv, run_pipe
from ..delivery.request import BOUNCED, DEFERRED, SENT, DeliveryRequest, RcptStatus, \
    decode_statuses
from ..io.agent import each_recipient, is_probe, serve_agent
from ..io.ipc import notify, request_sync
from ..policy.rewrite import open_maps
from ..proto.attr import Attrs
from ..queue.envelope import Envelope, Recipient
from ..queue.store import INCOMING, QueueStore
from ..tables.base import TableRetry

RANK = {SENT: 0, BOUNCED: 1, DEFERRED: 2}


class Local:
    def __init__(self, ctx):
        s = ctx.settings
        self.s = s
        self.log = ctx.log
        self.store = QueueStore.from_settings(s)
        self.hostname = s.str("myhostname")
        self.settings = L.LocalSettings.from_settings(
            s, open_tables=lambda name, value: open_maps(s, name) or ())
        self.command_timeout = float(s.time("command_time_limit"))
        self.shell = s.str("local_command_shell")
        self.size_limit = s.size("mailbox_size_limit")
        self.root = os.geteuid() == 0
        self.queue_dir = s.str("queue_directory")
        self.qmgr = os.path.join(self.queue_dir, "public", "qmgr")
        self.quota = QuotaSettings.from_settings(
            s, open_maps(s, "hato_mailbox_quota_maps") or ())

    def _ids(self, action) -> tuple[int | None, int | None]:
        return (action.uid, action.gid) if self.root else (None, None)

    def _quota(self, req: DeliveryRequest, action) -> MaildirsizeKeeper:
        """The Maildir++ quota hook for one Maildir delivery."""
        def warn(text: str) -> None:
            self.log.warning(f"{req.queue_id}: {text}")

        uid, gid = self._ids(action)
        policy = self.quota.policy_for(action.recipient, local_domain=True, warn=warn)
        return MaildirsizeKeeper(policy, uid=uid, gid=gid, warn=warn)

    def _quota_query(self, req: DeliveryRequest, rcpt) -> RcptStatus:
        """smtpd's RCPT-time question: is the recipient's Maildir full?"""
        answer = (SENT, "2.0.0", "no single maildir")
        try:
            plan = L.plan_local_delivery(rcpt.address, settings=self.settings,
                                         delivered_to=set(), sender=req.sender)
            if len(plan.actions) == 1:
                action = plan.actions[0]
                if isinstance(action, L.Maildir) or (isinstance(action, L.File)
                                                     and action.is_maildir):
                    answer = quota_answer(self._quota(req, action), action.path, req.size)
        except (DeliveryError, TableRetry) as err:
            # not known now: the delivery decides
            answer = (SENT, "2.0.0", f"quota unknown: {err}")
        return RcptStatus(rcpt.index, *answer, relay="local", logged=True)

    def _content(self, req: DeliveryRequest):
        qf = self.store.open(req.queue_name, req.queue_id, writable=False)
        return qf

    def _forward(self, req: DeliveryRequest, action: L.Forward) -> str:
        """Queue a copy for the forwarding addresses; return its queue id."""
        qf = self._content(req)
        try:
            sender = action.sender if action.sender is not None else req.sender
            env = Envelope(sender=sender,
                           recipients=[Recipient(address=a, orig_address=a)
                                       for a in action.addresses],
                           attributes={"rewrite_context": "local", "forwarded_by":
                                       req.queue_id})
            with self.store.create(INCOMING) as w:
                w.write_envelope(env)
                w.write_content(b"Delivered-To: " + action.delivered_to.encode(
                    "utf-8", "surrogateescape") + b"\n")
                for chunk in qf.content():
                    w.write_content(chunk)
                return w.commit()
        finally:
            qf.close()

    def _pass(self, req: DeliveryRequest, rcpt, spec: str) -> RcptStatus:
        """mailbox_transport, fallback_transport (and their _maps): hand the
        recipient to that transport's agent, as Postfix's deliver_pass()
        does, and take its answer; that agent logs the delivery."""
        transport, _, nexthop = spec.partition(":")
        sub = DeliveryRequest(req.queue_name, req.queue_id, transport, nexthop, req.sender,
                              req.arrival, req.active_time, [rcpt], envid=req.envid,
                              ret=req.ret, size=req.size, attributes=dict(req.attributes))
        path = os.path.join(self.queue_dir, "private", transport)
        try:
            reply = request_sync(path, sub.encode(), timeout=3600)
            statuses = decode_statuses(reply)
        except (OSError, ValueError, KeyError) as err:
            return RcptStatus(rcpt.index, DEFERRED, "4.3.0",
                              f"mail transport unavailable: connect to private/{transport}: "
                              f"{getattr(err, 'strerror', None) or err}", relay="local")
        for st in statuses:
            if st.index == rcpt.index:
                st.logged = True
                return st
        return RcptStatus(rcpt.index, DEFERRED, "4.3.0",
                          f"no answer for the recipient from transport {transport}",
                          relay="local")

    @staticmethod
    def _would(action) -> tuple[str, str, str] | None:
        """What a probe answers for a delivering action (nothing written)."""
        if isinstance(action, L.Forward):
            return SENT, "2.0.0", "forwards to " + ", ".join(action.addresses)
        if isinstance(action, L.Maildir) or (isinstance(action, L.File) and action.is_maildir):
            return SENT, "2.0.0", ("delivers to maildir" if isinstance(action, L.Maildir)
                                   else f"delivers to file: {action.path}")
        if isinstance(action, L.Mbox):
            return SENT, "2.0.0", "delivers to mailbox"
        if isinstance(action, L.File):
            return SENT, "2.0.0", f"delivers to file: {action.path}"
        if isinstance(action, L.Command):
            return SENT, "2.0.0", f"delivers to command: {action.command}"
        return None

    def _do(self, req: DeliveryRequest, rcpt, action) -> tuple[str, str, str]:
        """Carry out one action: (status, dsn, reason); for a probe, only
        say what it would do."""
        if is_probe(req):
            would = self._would(action)
            if would is not None:
                return would
        if isinstance(action, L.Bounce):
            return BOUNCED, action.dsn, action.reason
        if isinstance(action, L.Defer):
            return DEFERRED, action.dsn, action.reason
        if isinstance(action, L.Discard):
            return SENT, "2.0.0", action.reason
        if isinstance(action, L.Transport):
            st = self._pass(req, rcpt, action.transport)
            return st.status, st.dsn, st.reason
        if isinstance(action, L.Forward):
            qid = self._forward(req, action)
            notify(self.qmgr, Attrs.of(request="wakeup"))
            return SENT, "2.0.0", f"forwarded as {qid}"
        sender = action.sender if action.sender is not None else req.sender
        headers = envelope_headers(sender=sender, original_recipient=rcpt.orig_address,
                                   delivered_to=action.delivered_to)
        qf = self._content(req)
        try:
            if isinstance(action, L.Maildir) or (isinstance(action, L.File)
                                                 and action.is_maildir):
                uid, gid = self._ids(action)
                deliver_maildir(action.path, qf.content(), prepend_headers=headers, uid=uid,
                                gid=gid, hostname=self.hostname,
                                quota=self._quota(req, action))
                return SENT, "2.0.0", ("delivered to maildir" if isinstance(action, L.Maildir)
                                       else f"delivered to file: {action.path}")
            if isinstance(action, (L.Mbox, L.File)):
                uid, gid = self._ids(action)
                deliver_mbox(action.path, qf.content(), sender=sender, arrival=None,
                             prepend_headers=headers, uid=uid, gid=gid,
                             kind="mailbox" if isinstance(action, L.Mbox) else "file",
                             spool=getattr(action, "spool", False), size_limit=self.size_limit)
                return SENT, "2.0.0", ("delivered to mailbox" if isinstance(action, L.Mbox)
                                       else f"delivered to file: {action.path}")
            if isinstance(action, L.Command):
                uid, gid = self._ids(action)
                env = dict(action.env)
                run_pipe(command_argv(action.command, shell=self.shell), qf.content(),
                         uid=uid, gid=gid, env=env, timeout=self.command_timeout,
                         cwd=action.cwd or self.queue_dir,
                         flags=LOCAL_COMMAND_FLAGS, sender=sender,
                         original_recipient=rcpt.orig_address,
                         delivered_to=action.delivered_to, command_text=action.command)
                return SENT, "2.0.0", ("delivered to command: " + action.command)
        finally:
            qf.close()
        return DEFERRED, "4.3.0", f"unknown local action {type(action).__name__}"

    def deliver_one(self, req: DeliveryRequest, rcpt) -> RcptStatus:
        qf = self._content(req)
        try:
            delivered_to = L.delivered_to_addresses(qf.content())
        finally:
            qf.close()
        plan = L.plan_local_delivery(rcpt.address, settings=self.settings,
                                     delivered_to=delivered_to, sender=req.sender)
        for warning in plan.warnings:
            self.log.warning(f"{req.queue_id}: {warning}")
        if not plan.actions:
            return RcptStatus(rcpt.index, SENT, "2.0.0", "discarded", relay="local")
        if len(plan.actions) == 1 and isinstance(plan.actions[0], L.Transport):
            return self._pass(req, rcpt, plan.actions[0].transport)
        worst = (SENT, "2.0.0", "")
        reasons = []
        for action in plan.actions:
            try:
                status, dsn, reason = self._do(req, rcpt, action)
            except DeliveryError as err:
                status, dsn, reason = (DEFERRED if err.temporary else BOUNCED), err.dsn, err.text
            reasons.append(reason)
            if RANK[status] > RANK[worst[0]]:
                worst = (status, dsn, reason)
        status, dsn, reason = worst
        if status == SENT:
            reason = reasons[0] if len(reasons) == 1 else "; ".join(dict.fromkeys(reasons))
        return RcptStatus(rcpt.index, status, dsn, reason, relay="local")

    def deliver(self, req: DeliveryRequest, timing: dict) -> list[RcptStatus]:
        if hasattr(self.settings.alias_maps, "refresh"):
            self.settings.alias_maps.refresh()  # a rebuilt alias table is seen at once
        self.quota.refresh()
        if req.attributes.get("quota_query") == "yes":
            return each_recipient(req, self._quota_query, "local")
        return each_recipient(req, self.deliver_one, "local")


async def serve(ctx) -> int:
    return await serve_agent(ctx, Local(ctx).deliver)

"""Delivery status notifications, as bounce(8) sends them: for failed
recipients, and the success and delay notices of RFC 3461, each an RFC 3464 report (hato.delivery.dsn) queued in incoming/
with the null sender, to the original sender.

Rules, as Postfix's: recipients whose DSN NOTIFY excludes FAILURE (or says
NEVER) get no notice; a bounce is never bounced: when the failed message
itself had the null sender, the notice goes to ``2bounce_notice_recipient``
(the postmaster) — once, since that notice's own failure is dropped; with
``notify_classes`` containing ``bounce``, ``bounce_notice_recipient`` gets a
copy with the headers only.
"""

from __future__ import annotations

import os
import time

from ..delivery.dsn import DsnRecipient, build_dsn
from .envelope import Envelope, Recipient
from .store import INCOMING, QueueStore

CHUNK = 64 * 1024
_SUCCESS_ACTIONS = ("delivered", "relayed", "expanded")


def dsn_recipient(e: dict, action: str) -> DsnRecipient:
    """One recipient of a notice from a defer/bounce log entry: the human
    reason, and the formal part when the entry has one (``mta_mname``,
    ``diag_type``/``diag_text``, Postfix's names): ``Remote-MTA: dns;
    host`` and ``Diagnostic-Code: smtp; 550 ...``, else the notice says
    ``X-<mail_name>; <reason>``."""
    dtext = e.get("diag_text", "")
    return DsnRecipient(address=e["recipient"], status=e.get("status", "5.0.0"),
                        reason=e.get("reason", ""), original=e.get("orig_rcpt", ""),
                        orcpt=e.get("orcpt", ""), action=action,
                        diagnostic_type=(e.get("diag_type") or "smtp") if dtext else "",
                        diagnostic_text=dtext, remote_mta=e.get("mta_mname", ""),
                        remote_mta_type=e.get("mta_type") or "dns")


def _queue_notice(store: QueueStore, to: str, data: bytes, attributes: dict[str, str]) -> str:
    env = Envelope(sender="", recipients=[Recipient(address=to, orig_address=to)],
                   attributes=attributes)
    with store.create(INCOMING) as writer:
        writer.write_envelope(env)
        for i in range(0, len(data), CHUNK):
            writer.write_content(data[i:i + CHUNK])
        return writer.commit()


def send_notice(kind: str, settings, store: QueueStore, env: Envelope, qf,
                entries: list[dict]) -> str | None:
    """A success or delay notice (RFC 3464) to the sender for *entries*;
    recipients must have asked for it (NOTIFY=SUCCESS), or, for delays, not
    have excluded it (an empty NOTIFY means FAILURE,DELAY). Never to the
    null sender. Returns the notice's queue id, or None."""
    word = {"success": "SUCCESS", "delay": "DELAY"}[kind]
    wanted = []
    for e in entries:
        notify = {n for n in (e.get("notify") or "").split(",") if n}
        if word in notify or (kind == "delay" and not notify):
            wanted.append(e)
    if not wanted or not env.sender:
        return None
    myhostname = settings.str("myhostname")
    if kind == "success":
        # what the agent said: delivered, or relayed (smtp), expanded
        recipients = [dsn_recipient({"status": "2.0.0", **e},
                                    e.get("action") if e.get("action") in _SUCCESS_ACTIONS
                                    else "delivered")
                      for e in wanted]
    else:
        recipients = [dsn_recipient({"status": "4.0.0", **e}, "delayed") for e in wanted]
    now = time.time()
    data = build_dsn(
        kind, queue_id=env.queue_id, arrival_date=env.arrival_time, sender=env.sender,
        recipients=recipients, myhostname=myhostname, mail_name=settings.str("mail_name"),
        ret=env.ret, envid=env.envid, original_message_chunks=qf.content(),
        message_size=env.size, to=env.sender,
        delay_warning_time=settings.time("delay_warning_time"),
        maximal_queue_lifetime=settings.time("maximal_queue_lifetime"),
        now=now, date=True,
        message_id=f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}."
                   f"{os.getpid()}.{kind[0]}.{env.queue_id}@{myhostname}>")
    return _queue_notice(store, env.sender, data, {"bounce_kind": kind,
                                                   "rewrite_context": "local"})


def send_verify_report(settings, store: QueueStore, env: Envelope, qf,
                       entries: list[dict]) -> str | None:
    """``sendmail -bv``: the Mail Delivery Status Report to the sender, one
    entry per recipient with action deliverable or undeliverable."""
    if not env.sender or not entries:
        return None
    myhostname = settings.str("myhostname")
    recipients = [DsnRecipient(address=e["recipient"], status=e.get("status", "2.0.0"),
                               reason=e.get("reason", ""), original=e.get("orig_rcpt", ""),
                               orcpt=e.get("orcpt", ""), action=e["action"])
                  for e in entries]
    now = time.time()
    data = build_dsn(
        "verify", queue_id=env.queue_id, arrival_date=env.arrival_time, sender=env.sender,
        recipients=recipients, myhostname=myhostname, mail_name=settings.str("mail_name"),
        ret="HDRS", envid=env.envid, original_message_chunks=qf.content(),
        message_size=env.size, to=env.sender, now=now, date=True,
        message_id=f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}."
                   f"{os.getpid()}.v.{env.queue_id}@{myhostname}>")
    return _queue_notice(store, env.sender, data, {"bounce_kind": "verify",
                                                   "rewrite_context": "local"})


def send_bounce(settings, store: QueueStore, env: Envelope, qf, entries: list[dict]) -> str | None:
    """Queue the notice for *entries* (bounce log entries of *env*); return
    its queue id, or None when nobody is to be told."""
    wanted = []
    for e in entries:
        notify = {n for n in (e.get("notify") or "").split(",") if n}
        if notify and ("NEVER" in notify or "FAILURE" not in notify):
            continue
        wanted.append(e)
    if not wanted:
        return None
    myhostname = settings.str("myhostname")
    double_bounce_sender = settings.str("double_bounce_sender")
    if not env.sender or env.sender.split("@")[0].lower() == double_bounce_sender.lower():
        if env.attributes.get("bounce_kind") == "2bounce":
            return None  # a notice about a notice: dropped, as Postfix does
        to = settings.str("2bounce_notice_recipient")
        kind = "2bounce"
    else:
        to = env.sender
        kind = "bounce"
    recipients = [dsn_recipient(e, "failed") for e in wanted]
    now = time.time()
    data = build_dsn(
        "failure", queue_id=env.queue_id, arrival_date=env.arrival_time, sender=env.sender,
        recipients=recipients, myhostname=myhostname, mail_name=settings.str("mail_name"),
        ret=env.ret, envid=env.envid, original_message_chunks=qf.content(),
        message_size=env.size, to=to, bounce_size_limit=settings.int("bounce_size_limit"),
        now=now, date=True,
        message_id=f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}."
                   f"{os.getpid()}.{env.queue_id}@{myhostname}>")
    new_id = _queue_notice(store, to, data, {"bounce_kind": kind, "rewrite_context": "local"})
    if kind == "bounce" and "bounce" in [c.lower() for c in settings.list("notify_classes")]:
        copy_to = settings.str("bounce_notice_recipient")
        copy = build_dsn(
            "failure", queue_id=env.queue_id, arrival_date=env.arrival_time,
            sender=env.sender, recipients=recipients, myhostname=myhostname,
            mail_name=settings.str("mail_name"), ret="HDRS", envid=env.envid,
            original_message_chunks=qf.content(), message_size=env.size, to=copy_to,
            postmaster_copy=True, now=now, date=True,
            message_id=f"<{time.strftime('%Y%m%d%H%M%S', time.gmtime(now))}."
                       f"{os.getpid()}.pm.{env.queue_id}@{myhostname}>")
        _queue_notice(store, copy_to, copy, {"bounce_kind": "2bounce",
                                             "rewrite_context": "local"})
    return new_id

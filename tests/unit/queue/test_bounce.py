"""Notices from defer/bounce log entries (hato.queue.bounce): the formal
part of a server's reply (Remote-MTA, Diagnostic-Code) reaches the DSN, as
Postfix's bounce(8) prints the log's mta_mname and diag_type/diag_text."""

from __future__ import annotations

import email
from email import policy

from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.delivery.request import RcptStatus
from hato.queue.bounce import send_bounce, send_notice
from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import INCOMING

FACTS = HostFacts("mx1", (("127.0.0.1", 8),), (("::1", 128),))
REPLY = "550 5.1.1 <x@example.org>: Recipient address rejected: User unknown"


def settings(main: str = ""):
    return Config("/etc/hato", MainCf.parse("myhostname = mail.example.com\n" + main,
                                            "/etc/hato/main.cf"),
                  MasterCf.parse("", "/etc/hato/master.cf"), FACTS).settings()


def queued(store, sender="sender@example.com"):
    env = Envelope(sender=sender, recipients=[Recipient("x@example.org", "x@example.org"),
                                              Recipient("y@example.org", "y@example.org")])
    with store.create(INCOMING) as w:
        w.write_envelope(env)
        w.write_content(b"Subject: hi\n\nhello\n")
        qid = w.commit()
    return store.open(INCOMING, qid, writable=False)


def entry(address: str, st: RcptStatus) -> dict:
    # what qmgr writes to the defer/bounce log
    return {"recipient": address, "orig_rcpt": address, "notify": "", "orcpt": "",
            "status": st.dsn, "action": st.action, "reason": st.reason, "relay": st.relay,
            "offset": "0", **st.log_fields()}


def notice(store, qid):
    qf = store.open(INCOMING, qid, writable=False)
    try:
        data = b"".join(qf.content())
    finally:
        qf.close()
    return email.message_from_bytes(data, policy=policy.compat32)


def per_recipient(msg):
    report = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"][0]
    blocks = report.get_payload()
    return blocks[1:]  # the first block is per-message


def text_part(msg):
    part = [p for p in msg.walk() if p.get_content_type() == "text/plain"][0]
    return part.get_payload(decode=True).decode()


def test_bounce_carries_the_remote_reply(store):
    qf = queued(store)
    said = RcptStatus(0, "bounced", "5.1.1", f"host mx.example.org[192.0.2.1] said: {REPLY} "
                      "(in reply to RCPT TO command)", "mx.example.org[192.0.2.1]:25",
                      remote_mta="mx.example.org", diagnostic=REPLY)
    local = RcptStatus(1, "bounced", "5.1.1", "unknown user: \"y\"", "local")
    try:
        qid = send_bounce(settings(), store, qf.envelope, qf,
                          [entry("x@example.org", said), entry("y@example.org", local)])
    finally:
        qf.close()
    msg = notice(store, qid)
    first, second = per_recipient(msg)
    assert first["Final-Recipient"] == "rfc822; x@example.org"
    assert first["Action"] == "failed" and first["Status"] == "5.1.1"
    assert first["Remote-MTA"] == "dns; mx.example.org"
    assert " ".join(first["Diagnostic-Code"].split()) == f"smtp; {REPLY}"
    assert second["Remote-MTA"] is None
    assert second["Diagnostic-Code"] == 'X-hato; unknown user: "y"'
    text = " ".join(text_part(msg).split())
    assert (f"<x@example.org>: host mx.example.org[192.0.2.1] said: {REPLY} "
            "(in reply to RCPT TO command)") in text


def test_bounce_from_an_old_log_entry(store):
    qf = queued(store)
    e = {"recipient": "x@example.org", "status": "5.0.0", "reason": "gone"}
    try:
        qid = send_bounce(settings(), store, qf.envelope, qf, [e])
    finally:
        qf.close()
    (block,) = per_recipient(notice(store, qid))
    assert block["Remote-MTA"] is None and block["Diagnostic-Code"] == "X-hato; gone"


def test_success_notice_says_relayed_with_the_reply(store):
    qf = queued(store)
    st = RcptStatus(0, "sent", "2.0.0", "250 2.0.0 Ok: queued as ABC", "mx[192.0.2.1]:25",
                    "relayed", "mx.example.org", "250 2.0.0 Ok: queued as ABC")
    e = {**entry("x@example.org", st), "notify": "SUCCESS"}
    try:
        qid = send_notice("success", settings(), store, qf.envelope, qf, [e])
    finally:
        qf.close()
    (block,) = per_recipient(notice(store, qid))
    assert (block["Action"], block["Remote-MTA"]) == ("relayed", "dns; mx.example.org")
    assert block["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok: queued as ABC"


def test_delay_notice_carries_the_remote_reply(store):
    qf = queued(store)
    st = RcptStatus(0, "deferred", "4.2.0", "host mx[192.0.2.1] said: 450 4.2.0 busy "
                    "(in reply to RCPT TO command)", "mx[192.0.2.1]:25",
                    remote_mta="mx.example.org", diagnostic="450 4.2.0 busy")
    try:
        qid = send_notice("delay", settings(), store, qf.envelope, qf,
                          [entry("x@example.org", st)])
    finally:
        qf.close()
    (block,) = per_recipient(notice(store, qid))
    assert (block["Action"], block["Status"]) == ("delayed", "4.2.0")
    assert block["Remote-MTA"] == "dns; mx.example.org"
    assert block["Diagnostic-Code"] == "smtp; 450 4.2.0 busy"

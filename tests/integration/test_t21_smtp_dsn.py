"""t-21: the bounce for a recipient a remote server refused carries the
server's own reply, as Postfix's: the notice lands in the sender's Maildir
and its delivery-status part says ``Remote-MTA: dns; <host>`` and
``Diagnostic-Code: smtp; 550 5.1.1 ...``; the text part quotes the reply
("host X said: ... (in reply to RCPT TO command)")."""

from __future__ import annotations

import email
import mailbox
from email import policy

import pytest

from .instance import Instance, smtp_ready

pytestmark = pytest.mark.integration


def test_bounce_from_a_remote_550_carries_remote_mta_and_diagnostic(instance):
    peer = Instance("peer")
    try:
        # the peer takes peer.test but knows nobody there: 550 5.1.1 at RCPT
        peer.postconf("myhostname = peer.hato.test",
                      "virtual_mailbox_domains = hato.test, peer.test")
        peer.start()
        peer.wait_for(lambda: smtp_ready(peer.port), what="peer smtpd")
        inst = instance
        inst.postconf(f"relayhost = [127.0.0.1]:{peer.port}")
        inst.start()
        r = inst.sendmail("-f", "demo@hato.test", "nobody@peer.test",
                          message=b"From: demo@hato.test\nTo: nobody@peer.test\n"
                                  b"Subject: refused\n\nhello\n")
        assert r.returncode == 0, r.stderr
        inst.wait_log("status=bounced")
        # the sender is demo@hato.test, a Maildir of this instance
        box = inst.root / "mail" / "hato.test" / "demo"
        inst.wait_for(lambda: (box / "new").is_dir()
                      and len(mailbox.Maildir(str(box), create=False)) == 1,
                      what="the bounce in the sender's Maildir")
        (key,) = mailbox.Maildir(str(box), create=False).keys()
        raw = mailbox.Maildir(str(box), create=False).get_bytes(key)
        msg = email.message_from_bytes(raw, policy=policy.compat32)
        assert msg["Subject"] == "Undelivered Mail Returned to Sender"
        assert msg.get_content_type() == "multipart/report"
        report = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
        blocks = report[0].get_payload()
        rcpt = blocks[1]
        assert rcpt["Final-Recipient"] == "rfc822; nobody@peer.test"
        assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.1.1")
        assert rcpt["Remote-MTA"] == "dns; 127.0.0.1"
        diag = " ".join(rcpt["Diagnostic-Code"].split())
        assert diag.startswith("smtp; 550 5.1.1 <nobody@peer.test>: Recipient address "
                               "rejected: "), diag
        text = [p for p in msg.walk() if p.get_content_type() == "text/plain"][0]
        human = " ".join(text.get_payload(decode=True).decode().split())
        assert ("<nobody@peer.test>: host 127.0.0.1[127.0.0.1] said: " + diag[len("smtp; "):]
                + " (in reply to RCPT TO command)") in human, human
    finally:
        peer.cleanup()

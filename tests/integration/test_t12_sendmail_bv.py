"""t-12: ``sendmail -bv`` delivers nothing and mails the sender a Mail
Delivery Status Report saying how each recipient would be delivered."""

from __future__ import annotations

import email
import mailbox

import pytest

pytestmark = pytest.mark.integration


def test_sendmail_bv_reports_instead_of_delivering(instance):
    inst = instance
    transport = inst.root / "transport"
    transport.write_text("blocked.example error:5.7.1 no mail for you\n")
    inst.postconf(f"transport_maps = texthash:{transport}")
    inst.start()
    r = inst.sendmail("-bv", "-f", "demo@hato.test", "demo@hato.test", "x@blocked.example",
                      message=b"")
    assert r.returncode == 0, r.stderr
    inst.wait_log("sender delivery status notification:")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    log = inst.log_text()
    assert "to=<demo@hato.test>, relay=virtual" in log and "status=deliverable" in log
    assert "to=<x@blocked.example>, relay=error" in log and "status=undeliverable" in log
    box = mailbox.Maildir(str(inst.root / "mail" / "hato.test" / "demo"), factory=None,
                          create=False)
    inst.wait_for(lambda: len(box.keys()) >= 1, what="the report")
    msgs = [email.message_from_bytes(box.get_bytes(k)) for k in box.keys()]
    assert len(msgs) == 1, "only the report: nothing was delivered"
    report = msgs[0]
    assert report.get_content_type() == "multipart/report"
    assert report["Subject"] == "Mail Delivery Status Report"
    text = report.as_string()
    assert "Action: deliverable" in text and "Action: undeliverable" in text
    assert "Final-Recipient: rfc822; x@blocked.example" in text
    assert "Status: 5.7.1" in text

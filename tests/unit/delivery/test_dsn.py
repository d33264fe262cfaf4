"""Delivery status notifications, parsed back with Python's email package."""

from __future__ import annotations

import email
import email.policy
import re
import time

import pytest

from hato.delivery.dsn import (
    DeliveryError,
    DsnRecipient,
    build_dsn,
    line_wrap,
    mail_date,
    quote_822_local,
    status_for_errno,
)

ORIGINAL = (b"Return-Path: <ignored@example.com>\n"
            b"From: Sender <sender@example.com>\n"
            b"To: user@example.org\n"
            b"Subject: the original\n"
            b"Message-ID: <orig.1@example.com>\n"
            b"\n"
            b"Body line 1\n"
            b"Body line 2\n")
ARRIVAL = 1700000000.0
NOW = 1700003600.0


def recipients():
    return [DsnRecipient(address="user@example.org", original="User@Example.org",
                         status="5.1.1",
                         reason="host mx.example.org[192.0.2.1] said: 550 5.1.1 "
                                "<user@example.org>: User unknown (in reply to RCPT TO "
                                "command)",
                         diagnostic_type="smtp",
                         diagnostic_text="550 5.1.1 <user@example.org>: User unknown",
                         remote_mta="mx.example.org"),
            DsnRecipient(address="two@example.net", status="5.2.0",
                         reason="cannot update mailbox /var/mail/two")]


def build(kind="failure", **kw):
    args = {"queue_id": "4ABCDEF", "arrival_date": ARRIVAL, "sender": "sender@example.com",
            "recipients": recipients(), "myhostname": "mail.example.com",
            "original_message_chunks": [ORIGINAL], "now": NOW}
    args.update(kw)
    return build_dsn(kind, **args)


def parse(data: bytes):
    return email.message_from_bytes(data, policy=email.policy.compat32)


def status_groups(msg):
    report = msg.get_payload()[1]
    assert report.get_content_type() == "message/delivery-status"
    return report.get_payload()


def test_failure_is_a_multipart_report():
    data = build()
    msg = parse(data)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"] == "MAILER-DAEMON@mail.example.com (Mail Delivery System)"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["To"] == "sender@example.com"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["MIME-Version"] == "1.0"
    assert msg.get_boundary() == f"4ABCDEF.{int(NOW)}/mail.example.com"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "message/rfc822"]
    assert [p["Content-Description"] for p in parts] == [
        "Notification", "Delivery report", "Undelivered Message"]

    text = parts[0].get_payload(decode=True).decode()
    assert text.startswith("This is the mail system at host mail.example.com.\n\n"
                           "I'm sorry to have to inform you that your message could not\n"
                           "be delivered to one or more recipients. It's attached below.\n")
    assert "For further assistance, please send mail to postmaster." in text
    assert "                   The mail system\n" in text
    assert ("<user@example.org> (expanded from <User@Example.org>): host\n"
            "    mx.example.org[192.0.2.1] said:") in text
    assert "<two@example.net>: cannot update mailbox /var/mail/two" in text

    per_message, first, second = status_groups(msg)
    assert per_message["Reporting-MTA"] == "dns; mail.example.com"
    assert per_message["X-hato-Queue-ID"] == "4ABCDEF"
    assert per_message["X-hato-Sender"] == "rfc822; sender@example.com"
    assert per_message["Arrival-Date"] == mail_date(ARRIVAL)
    assert "Original-Envelope-Id" not in per_message
    assert first["Final-Recipient"] == "rfc822; user@example.org"
    assert first["Original-Recipient"] == "rfc822; User@Example.org"
    assert first["Action"] == "failed"
    assert first["Status"] == "5.1.1"
    assert first["Remote-MTA"] == "dns; mx.example.org"
    assert first["Diagnostic-Code"] == "smtp; 550 5.1.1 <user@example.org>: User unknown"
    assert second["Final-Recipient"] == "rfc822; two@example.net"
    assert "Original-Recipient" not in second
    assert second["Diagnostic-Code"] == "X-hato; cannot update mailbox /var/mail/two"

    original = parts[2].get_payload()[0]
    assert original["Subject"] == "the original"
    assert original["Return-Path"] == "<sender@example.com>"
    assert original.get_payload() == "Body line 1\nBody line 2\n"
    assert data.endswith(f"\n--4ABCDEF.{int(NOW)}/mail.example.com--\n".encode())


def test_ret_hdrs_returns_headers_only():
    msg = parse(build(ret="HDRS"))
    third = msg.get_payload()[2]
    assert third.get_content_type() == "text/rfc822-headers"
    assert third["Content-Description"] == "Undelivered Message Headers"
    body = third.get_payload()
    assert "Subject: the original" in body
    assert "Body line" not in body


def test_ret_full_is_the_default_and_explicit():
    assert parse(build(ret="FULL")).get_payload()[2].get_content_type() == "message/rfc822"
    assert parse(build(ret=None)).get_payload()[2].get_content_type() == "message/rfc822"


def test_eight_bit_original():
    original = ("From: a@example.com\nSubject: =?utf-8?q?caf=C3=A9?=\n\n"
                "Grüße aus Köln\n").encode()
    data = build(original_message_chunks=[original])
    msg = parse(data)
    assert msg["Content-Transfer-Encoding"] == "8bit"
    third = msg.get_payload()[2]
    assert third["Content-Transfer-Encoding"] == "8bit"
    inner = third.get_payload()[0]
    assert inner.get_payload(decode=True).decode("utf-8") == "Grüße aus Köln\n"
    assert "Grüße aus Köln".encode() in data
    # Also when 8-bit MIME is off for the notice itself: 8-bit content wins.
    msg = parse(build(original_message_chunks=[original], smtputf8_enable=False))
    assert msg["Content-Transfer-Encoding"] == "8bit"


def test_seven_bit_without_smtputf8():
    msg = parse(build(smtputf8_enable=False))
    assert msg["Content-Transfer-Encoding"] == "7bit"
    assert msg.get_payload()[0].get_content_charset() == "us-ascii"
    assert msg.get_payload()[2]["Content-Transfer-Encoding"] is None


def test_large_message_returns_headers_and_reads_no_further():
    consumed = []

    def stream():
        yield ORIGINAL[:ORIGINAL.index(b"\n\n") + 2]
        for i in range(1000):
            consumed.append(i)
            yield b"x" * 1000 + b"\n"

    msg = parse(build(original_message_chunks=stream(), bounce_size_limit=50000))
    third = msg.get_payload()[2]
    assert third.get_content_type() == "text/rfc822-headers"
    assert "Subject: the original" in third.get_payload()
    assert len(consumed) < 60
    # A known size decides without reading the body at all.
    consumed.clear()
    msg = parse(build(original_message_chunks=stream(), message_size=1_001_000))
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert consumed == []


def test_delay_warning():
    msg = parse(build("delay", recipients=[DsnRecipient(
        address="user@example.org", status="4.4.1",
        reason="connect to mx.example.org[192.0.2.1]:25: Connection timed out")],
        delay_warning_time=4 * 3600, maximal_queue_lifetime=5 * 86400))
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    text = msg.get_payload()[0].get_payload(decode=True).decode()
    assert "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" in text
    assert "Your message could not be delivered for more than 4 hour(s)." in text
    assert "It will be retried until it is 5 day(s) old." in text
    _, rcpt = status_groups(msg)
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.4.1"
    assert rcpt["Will-Retry-Until"] == mail_date(ARRIVAL + 5 * 86400)
    third = msg.get_payload()[2]
    assert third.get_content_type() == "text/rfc822-headers"
    assert third["Content-Description"] == "Undelivered Message Headers"


def test_success_report():
    msg = parse(build("success", recipients=[
        ("user@example.org", "", "delivered", "2.0.0", "delivered to mailbox"),
        ("far@example.net", "", "relayed", "2.0.0", "smtp; 250 2.0.0 Ok", "mx.example.net")]))
    assert msg["Subject"] == "Successful Mail Delivery Report"
    text = msg.get_payload()[0].get_payload(decode=True).decode()
    assert "Your message was successfully delivered to the destination(s)" in text
    _, first, second = status_groups(msg)
    assert (first["Action"], first["Status"]) == ("delivered", "2.0.0")
    assert first["Diagnostic-Code"] == "X-hato; delivered to mailbox"
    assert (second["Action"], second["Remote-MTA"]) == ("relayed", "dns; mx.example.net")
    assert second["Diagnostic-Code"] == "smtp; 250 2.0.0 Ok"
    third = msg.get_payload()[2]
    assert third["Content-Description"] == "Message Headers"
    msg = parse(build("success", ret="FULL", recipients=[
        ("user@example.org", "", "delivered", "2.0.0", "delivered to mailbox")]))
    assert msg.get_payload()[2]["Content-Description"] == "Message"


def test_postmaster_copy():
    msg = parse(build(postmaster_copy=True, to="postmaster"))
    assert msg["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert msg["To"] == "postmaster"
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_payload()[0].get_payload(decode=True).decode()
    assert "I'm sorry" not in text
    assert text.lstrip().startswith("<user@example.org>")
    assert msg.get_payload()[2].get_content_type() == "text/rfc822-headers"


def test_envid_orcpt_and_threading():
    msg = parse(build(envid="ENV-42", threaded_bounce=True, recipients=[DsnRecipient(
        address="user@example.org", status="5.0.0", reason="no", orcpt="rfc822;User@x")]))
    per_message, rcpt = status_groups(msg)
    assert per_message["Original-Envelope-Id"] == "ENV-42"
    assert rcpt["Original-Recipient"] == "rfc822;User@x"
    assert msg["References"] == msg["In-Reply-To"] == "<orig.1@example.com>"
    assert "References" not in parse(build())


def test_no_original_available():
    data = build(original_message_chunks=None)
    assert b"\t--- Undelivered message unavailable ---\n" in data
    assert parse(data).get_payload()[2].get_content_type() == "message/rfc822"


def test_crlf_original_is_normalised():
    msg = parse(build(original_message_chunks=[ORIGINAL.replace(b"\n", b"\r\n")]))
    original = msg.get_payload()[2].get_payload()[0]
    assert original.get_payload() == "Body line 1\nBody line 2\n"


def test_tuple_recipient_forms():
    r = DsnRecipient.from_tuple(("a@x", "b@x", "failed", "5.1.1",
                                 "smtp; 550 5.1.1 no such user", "dns; mx.x"))
    assert (r.diagnostic_type, r.diagnostic_text, r.reason) == (
        "smtp", "550 5.1.1 no such user", "550 5.1.1 no such user")
    assert (r.remote_mta_type, r.remote_mta) == ("dns", "mx.x")
    r = DsnRecipient.from_tuple(("a@x", "", "failed", "5.1.1", 'unknown user: "a"'))
    assert (r.diagnostic_type, r.reason) == ("", 'unknown user: "a"')


def test_from_error():
    err = DeliveryError("user unknown. Command output: nope", dsn="5.1.1",
                        diagnostic_type="x-unix", diagnostic_text="nope")
    r = DsnRecipient.from_error("a@x", err, original="b@x")
    assert (r.status, r.reason, r.diagnostic_type, r.diagnostic_text) == (
        "5.1.1", "user unknown. Command output: nope", "x-unix", "nope")


def test_mail_date_format():
    assert re.fullmatch(r"[A-Z][a-z]{2}, [ 1-3]\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d "
                        r"[+-]\d{4} \(.+\)", mail_date(time.time()))


def test_line_wrap_like_postfix():
    text = "<a@example.org>: " + " ".join(["word"] * 30)
    lines = line_wrap(text)
    assert all(len(line) <= 79 for line in lines)
    assert lines[0].startswith("<a@example.org>: word")
    assert all(line.startswith("    word") for line in lines[1:])
    assert " ".join(line.strip() for line in lines) == text
    assert line_wrap("short") == ["short"]
    assert line_wrap("x" * 100) == ["x" * 100]


def test_delivery_error_rules():
    assert DeliveryError("x", dsn="4.2.0").temporary
    assert not DeliveryError("x", dsn="5.2.0").temporary
    assert DeliveryError("x", dsn="4.2.0").action == "deferred"
    with pytest.raises(ValueError):
        DeliveryError("x", dsn="5.2.0", temporary=True)
    with pytest.raises(ValueError):
        DeliveryError("x", dsn="2.0.0")
    with pytest.raises(ValueError):
        DeliveryError("x", dsn="bogus")
    assert status_for_errno(None, "5.2.0") == "5.2.0"


def test_quote_822_local():
    assert quote_822_local("user@example.com") == "user@example.com"
    assert quote_822_local("a b@example.com") == '"a b"@example.com'
    assert quote_822_local('a"b@x') == '"a\\"b"@x'
    assert quote_822_local(".a@x") == '".a"@x'
    assert quote_822_local("a..b@x") == '"a..b"@x'
    assert quote_822_local("@route:a b@x") == '@route:"a b"@x'
    assert quote_822_local("") == '""'

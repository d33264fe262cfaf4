"""qmgr's delivery requests and the status line every agent logs."""

from __future__ import annotations

from hato.delivery.request import (DeliveryRequest, RcptRequest, RcptStatus, format_delay,
                                   decode_statuses, encode_statuses, status_line)
from hato.proto.attr import AttrReader, encode


def roundtrip(attrs):
    r = AttrReader()
    r.receive_data(encode(attrs))
    return r.next_message()


def test_request_round_trip():
    req = DeliveryRequest("active", "ABC123", "local", "mail.example", "a@example.org",
                          1000.5, 1001.25,
                          [RcptRequest(0, "b@example.com", "B@example.com", "FAILURE", ""),
                           RcptRequest(3, "c\nd@example.com", "", "", "rfc822;c@x")],
                          envid="e1", ret="HDRS", size=42, attributes={"uid": "0"})
    back = DeliveryRequest.decode(roundtrip(req.encode()))
    assert back == req


def test_statuses_round_trip():
    st = [RcptStatus(0, "sent", "2.0.0", "delivered to maildir", "local"),
          RcptStatus(3, "bounced", "5.1.1", "unknown user: \"c\"", "local")]
    assert decode_statuses(roundtrip(encode_statuses(st))) == st
    assert st[1].action == "failed"


def test_delay_format_like_postfix():
    assert [format_delay(x) for x in (0, 0.004, 0.06, 0.64, 1.72, 27.3)] == \
        ["0", "0", "0.06", "0.64", "1.7", "27"]


def test_status_line():
    req = DeliveryRequest("active", "ABC", "local", "h", "s@x", 100.0, 100.5,
                          [RcptRequest(0, "u@h", "u")])
    line = status_line(req, req.recipients[0],
                       RcptStatus(0, "sent", "2.0.0", "delivered to maildir", "local"),
                       started=100.52, connected=100.52, finished=100.6)
    assert line == ("ABC: to=<u@h>, orig_to=<u>, relay=local, delay=0.6, "
                    "delays=0.5/0.02/0/0.08, dsn=2.0.0, status=sent (delivered to maildir)")


def test_statuses_carry_remote_mta_and_diagnostic():
    st = [RcptStatus(0, "bounced", "5.1.1",
                     "host mx.example.org[192.0.2.1] said: 550 5.1.1 <x@y>: Recipient address "
                     "rejected: User unknown (in reply to RCPT TO command)", "mx.example.org"
                     "[192.0.2.1]:25", remote_mta="mx.example.org",
                     diagnostic="550 5.1.1 <x@y>: Recipient address rejected: User unknown"),
          RcptStatus(1, "sent", "2.0.0", "250 2.0.0 Ok", "mx.example.org[192.0.2.1]:25",
                     "relayed", "mx.example.org", "250 2.0.0 Ok"),
          RcptStatus(2, "deferred", "4.4.1", "connect to x[192.0.2.2]:25: Connection refused"),
          RcptStatus(3, "bounced", "5.3.0", "command failed", "pipe", remote_mta="",
                     diagnostic="EX_SOFTWARE", diagnostic_type="x-unix")]
    back = decode_statuses(roundtrip(encode_statuses(st)))
    assert back == st
    assert back[0].diagnostic_type == "smtp" and back[2].remote_mta == back[2].diagnostic == ""
    assert st[0].log_fields() == {
        "mta_type": "dns", "mta_mname": "mx.example.org", "diag_type": "smtp",
        "diag_text": "550 5.1.1 <x@y>: Recipient address rejected: User unknown"}
    assert st[2].log_fields() == {}
    assert st[3].log_fields() == {"diag_type": "x-unix", "diag_text": "EX_SOFTWARE"}


def test_statuses_from_an_agent_without_the_dsn_fields():
    from hato.proto.attr import Attrs

    a = Attrs.of(status="done")
    for i, (st, dsn) in enumerate((("sent", "2.0.0"), ("bounced", "5.1.1"))):
        a.add("rcpt_index", str(i)).add("rcpt_status", st).add("dsn", dsn)
        a.add("reason", "why").add("relay", "local").add("action", "")
    back = decode_statuses(roundtrip(a))
    assert [(s.status, s.action, s.remote_mta, s.diagnostic, s.diagnostic_type) for s in back] \
        == [("sent", "delivered", "", "", "smtp"), ("bounced", "failed", "", "", "smtp")]

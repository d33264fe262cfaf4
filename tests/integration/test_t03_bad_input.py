"""t-03: odd and hostile input through sendmail: every message is either
delivered intact or refused with a clear answer (a bounce for a local
submission), never a crash, never a silent loss."""

from __future__ import annotations

import os

import pytest

from .test_t01_local_flow import USER, fresh_maildir, local_user, maildir_messages  # noqa: F401

pytestmark = pytest.mark.integration


@pytest.fixture
def running(instance, local_user):  # noqa: F811
    instance.postconf("home_mailbox = Maildir/", "mydestination = $myhostname, localhost",
                      "message_size_limit = 1000000")
    box = fresh_maildir(local_user)
    instance.start()
    return instance, box


CASES = {
    "empty": b"",
    "headers-only": b"Subject: only headers\nX-Test: 1\n",
    "nul-bytes": b"Subject: nul\n\nbefore\x00after\n",
    "8bit-header": "Subject: h\u00e9llo w\u00f6rld\n\n8bit body \u00e9\n".encode("utf-8"),
    "long-header": b"Subject: " + b"x" * 100_000 + b"\n\nbody\n",
    "crlf": b"Subject: crlf\r\n\r\nline one\r\nline two\r\n",
    "bare-cr": b"Subject: cr\n\na\rb\n",
    "no-final-newline": b"Subject: nonl\n\nlast line",
}


@pytest.mark.parametrize("name", list(CASES))
def test_odd_messages_are_delivered(running, name):
    inst, box = running
    r = inst.sendmail("-f", USER, USER, message=CASES[name])
    assert r.returncode == 0, r.stderr
    inst.wait_for(lambda: len(maildir_messages(box)) == 1, what="the delivered message")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    raw = open(os.path.join(box, "new", os.listdir(os.path.join(box, "new"))[0]), "rb").read()
    assert b"Delivered-To: " in raw
    if name == "crlf":
        assert b"line one\nline two\n" in raw
    if name == "no-final-newline":
        assert raw.endswith(b"last line\n")
    assert "Traceback" not in inst.log_text()


def test_oversized_message_comes_back(running):
    inst, box = running
    big = b"Subject: big\n\n" + (b"y" * 999 + b"\n") * 2000  # 2 MB > 1 MB limit
    r = inst.sendmail("-f", USER, USER, message=big)
    assert r.returncode == 0
    inst.wait_log("message file too big")
    inst.wait_for(lambda: len(maildir_messages(box)) == 1, what="the bounce")
    notice = maildir_messages(box)[0]
    assert notice.get_content_type() == "multipart/report"
    assert "5.3.4" in notice.as_string()
    inst.wait_for(inst.queue_empty, what="an empty queue")


@pytest.mark.parametrize("rcpt", ['"quoted user"@localhost', "@route.example:" + USER + "@localhost"])
def test_odd_addresses(running, rcpt):
    inst, box = running
    r = inst.sendmail("-f", USER, rcpt, message=b"Subject: addr\n\nx\n")
    assert r.returncode == 0
    # Either delivered (the route is stripped) or bounced back as unknown user:
    inst.wait_for(lambda: len(maildir_messages(box)) == 1, what="a delivery or a bounce")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    msg = maildir_messages(box)[0]
    assert msg["Subject"] == "addr" or msg.get_content_type() == "multipart/report"
    assert "Traceback" not in inst.log_text()


def test_sendmail_usage_errors(instance):
    r = instance.sendmail("-f", "x", message=b"Subject: none\n\n")
    assert r.returncode == 64 and b"no recipients" in r.stderr
    r = instance.sendmail("-N", "sometimes", "x", message=b"")
    assert r.returncode == 64

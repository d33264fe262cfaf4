"""Sizes meant to hurt: a 10,000-recipient transaction (smtpd_recipient_limit
and its overshoot, then smtpd_hard_error_limit; the worker neither crashes
nor balloons), megabyte command lines on the TLS services, headers past
header_size_limit and body lines past line_length_limit, and MIME bombs —
nesting far past mime_nesting_limit, boundaries thousands of bytes long —
through header_checks, body_checks and a milter."""

from __future__ import annotations

import email
import hashlib

import pytest

from tests.integration.test_t07_smtpd_adversarial import assert_no_crash, rss_kb, smtpd_pids

from .conftest import HOSTNAME, wire

pytestmark = pytest.mark.integration


def test_ten_thousand_recipients(live):
    src = "127.0.0.14"
    mark = live.mark()
    queued = set(live.queued_files())
    pids = smtpd_pids(live.inst)
    assert pids
    replies: list[bytes] = []
    peak = 0
    with wire(live.smtpd, src, timeout=60) as w:
        assert w.reply().startswith(b"220 ")
        assert b"PIPELINING" in w.cmd(b"EHLO many.example\r\n")
        assert w.cmd(b"MAIL FROM:<sender@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
        for _ in range(20):  # 10,000 RCPTs, 500 a packet
            try:
                w.send(b"RCPT TO:<demo@hato.test>\r\n" * 500)
            except OSError:
                break
            for _ in range(500):
                r = w.reply()
                if not r:
                    break
                replies.append(r)
            peak = max([peak] + [rss_kb(p) for p in smtpd_pids(live.inst)])
            if not r or replies[-1].startswith(b"421 "):
                break
    too_many = b"452 4.5.3 Error: too many recipients\r\n"
    assert replies[:1000] == [b"250 2.1.5 Ok\r\n"] * 1000, set(replies[:1000])
    # Postfix: smtpd_recipient_overshoot_limit (1000) refusals are free,
    # then each counts toward smtpd_hard_error_limit (20)
    assert replies[1000:-1] == [too_many] * (1000 + 20), (len(replies), set(replies[1000:]))
    assert replies[-1] == f"421 4.7.0 {HOSTNAME} Error: too many errors\r\n".encode()
    assert peak < 300 * 1024, f"an smtpd worker grew to {peak} kB"
    assert smtpd_pids(live.inst) == pids  # none crashed and was restarted
    live.inst.wait_for(lambda: f"too many errors after RCPT from unknown[{src}]"
                       in live.log(mark), what="the error limit logged")
    assert "queued as" not in live.log(mark)
    assert set(live.queued_files()) <= queued
    assert_no_crash(live.inst)


@pytest.mark.parametrize("service", ["sub", "smtps"])
def test_megabyte_command_lines_on_tls_services(live, service):
    mark = live.mark()
    with wire(getattr(live, service)) as w:
        if service == "smtps":
            live.tls(w)
            assert w.reply().startswith(b"220 ")
        else:
            assert w.reply().startswith(b"220 ")
            w.cmd(b"EHLO long.example\r\n")
            assert w.cmd(b"STARTTLS\r\n").startswith(b"220 ")
            live.tls(w)
        assert w.cmd(b"NOOP " + b"n" * 1_000_000 + b"\r\n") == b"250 2.0.0 Ok\r\n"
        assert w.cmd(b"X" * 1_000_000 + b"\r\n") == \
            b"500 5.5.2 Error: command not recognized\r\n"
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    live.inst.wait_log("request longer than 2048: NOOP nnnnn")
    assert "request longer than 2048: XXXXX" in live.log(mark)
    assert_no_crash(live.inst)


def send(live, port: int, subject: str, content: bytes, src: str = "127.0.0.1") -> bytes:
    """One message by raw SMTP; the reply to its end of data."""
    with wire(port, src, timeout=60) as w:
        assert w.reply().startswith(b"220 ")
        w.cmd(b"EHLO bomb.example\r\n")
        assert w.cmd(b"MAIL FROM:<sender@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
        assert w.cmd(b"RCPT TO:<demo@hato.test>\r\n") == b"250 2.1.5 Ok\r\n"
        assert w.cmd(b"DATA\r\n").startswith(b"354 ")
        r = w.cmd(f"Subject: {subject}\r\n".encode() + content + b".\r\n")
        w.cmd(b"QUIT\r\n")
    return r


def delivered(live, before, subject: str) -> bytes:
    live.inst.wait_for(lambda: any(f"Subject: {subject}".encode() in m
                                   for m in live.delivered_since(before)), what=subject)
    return next(m for m in live.delivered_since(before) if f"Subject: {subject}".encode() in m)


def test_long_header_and_long_lines(live):
    before = live.mailbox()
    long_line = b"".join(b"%07d" % i for i in range(3000))  # 21,000 bytes, one line
    body = b"short\r\n" + long_line + b"\r\nend\r\n"
    huge = b"X-Huge: " + b"h" * 200_000 + b"\r\n"
    r = send(live, live.smtpd, "adv-long", huge + b"X-After: 1\r\n\r\n" + body)
    assert r.startswith(b"250 2.0.0 Ok: queued as "), r
    msg = delivered(live, before, "adv-long")
    head, _, got = msg.partition(b"\n\n")
    # header_size_limit: the excess is discarded, the message still goes
    assert len(head) < 110_000, len(head)
    # line_length_limit: long lines are stored in pieces and rebuilt on delivery
    assert got.replace(b"\r\n", b"\n") == body.replace(b"\r\n", b"\n")


def nested(depth: int, boundary_len: int, inner: bytes) -> bytes:
    """A multipart/mixed *depth* levels deep with *inner* at the bottom."""
    part = b"Content-Type: text/plain\r\n\r\n" + inner + b"\r\n"
    for level in range(depth):
        b = (b"%05d" % level) + b"b" * max(0, boundary_len - 5)
        part = (b'Content-Type: multipart/mixed; boundary="' + b + b'"\r\n\r\n'
                + b"--" + b + b"\r\n" + part + b"--" + b + b"--\r\n")
    return b"MIME-Version: 1.0\r\n" + part


def test_mime_bombs_pass_the_checks_and_the_milter(live):
    before = live.mailbox()
    # deep and wide-bounded, harmless: delivered whole, the milter saw it
    bomb = nested(300, 3000, b"adv-deep-bottom")
    r = send(live, live.mime, "adv-bomb", bomb)
    assert r.startswith(b"250 2.0.0 Ok: queued as "), r
    msg = delivered(live, before, "adv-bomb")
    got = msg.partition(b"\n\n")[2].replace(b"\n", b"\r\n")
    want = bomb.partition(b"\r\n\r\n")[2]
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest()
    assert email.message_from_bytes(msg).is_multipart()
    assert any(b"adv-deep-bottom" in s.body() for s in live.milter.sessions)
    # body_checks sees content below the nesting limit (it is body all the same)
    r = send(live, live.mime, "adv-bomb-body", nested(300, 80, b"adv-body-reject-marker"))
    assert r == b"550 5.7.1 body marker seen\r\n", r
    # a part header within the nesting limit meets mime_header_checks
    r = send(live, live.smtpd, "adv-bomb-part",
             nested(50, 70, b"x").replace(b'Content-Type: text/plain\r\n',
                                           b"Content-Type: text/plain\r\n"
                                           b"Content-Description: adv-reject-me\r\n"))
    assert r == b"550 5.7.1 part header marker seen\r\n", r
    assert_no_crash(live.inst)

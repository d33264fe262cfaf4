"""SMTP smuggling, beyond t07 (which sends its five fake end-of-data
sequences through DATA on the plain smtpd): more variants — bare CR, NUL
next to the dot, doubled CR — through DATA on smtpd and on submission
(authenticated, TLS), and every variant through BDAT, where no dot ends
anything. Whatever the client sends, each transaction is one message,
delivered once, with the would-be second message inside its body; no
reply is ever sent for the smuggled commands.

The client is outside mynetworks, so smtpd_forbid_bare_newline (hato's
default ``normalize``, as Postfix 3.9) applies to it.
"""

from __future__ import annotations

import base64
import email
import re

import pytest

from tests.integration.test_t07_smtpd_adversarial import FAKE_ENDS, assert_no_crash

from .conftest import PASSWORD, USER, wire

pytestmark = pytest.mark.integration

MORE_FAKE_ENDS = {
    "cr-dot-cr": b"\r.\r",
    "lf-dot-cr": b"\n.\r",
    "cr-dot-crlf": b"\r.\r\n",
    "crlf-dot-nul-crlf": b"\r\n.\0\r\n",
    "crlf-nul-dot-crlf": b"\r\n\0.\r\n",
    "crcrlf-dot-crcrlf": b"\r\r\n.\r\r\n",
    "crlf-dot-space-crlf": b"\r\n. \r\n",
    "lf-lf-dot-lf-lf": b"\n\n.\n\n",
}
ALL_FAKE_ENDS = {**FAKE_ENDS, **MORE_FAKE_ENDS}


def payload(tag: str, fake: bytes) -> bytes:
    return (b"Subject: smuggle-" + tag.encode() + b"\r\n\r\nbefore" + fake
            + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<demo@hato.test>\r\nDATA\r\n"
            + b"Subject: smuggled-" + tag.encode() + b"\r\n\r\nevil payload\r\n")


def check_delivered(live, before, tags: list[str]) -> None:
    live.inst.wait_for(lambda: len(live.delivered_since(before)) >= len(tags),
                       what=f"{len(tags)} messages")
    live.inst.wait_for(live.inst.queue_empty, what="an empty queue")
    msgs = live.delivered_since(before)
    assert len(msgs) == len(tags), [m[:200] for m in msgs]
    subjects = sorted(email.message_from_bytes(m)["Subject"] for m in msgs)
    assert subjects == sorted(f"smuggle-{t}" for t in tags), subjects
    for m in msgs:
        assert b"evil payload" in m and b"MAIL FROM:<evil@example.org>" in m, m


def variants(prefix: str, table: dict[str, bytes]) -> dict[str, bytes]:
    """The fake ends of *table*, tagged with *prefix*."""
    return {f"{prefix}-{name}": fake for name, fake in table.items()}


def data_session(w, tags: list[str], ends: dict[str, bytes]) -> None:
    for tag in tags:
        assert w.cmd(b"MAIL FROM:<sender@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
        assert w.cmd(b"RCPT TO:<demo@hato.test>\r\n") == b"250 2.1.5 Ok\r\n"
        assert w.cmd(b"DATA\r\n").startswith(b"354 ")
        r = w.cmd(payload(tag, ends[tag]) + b".\r\n")
        assert r.startswith(b"250 2.0.0 Ok: queued as "), (tag, r)
    # nothing was answered for the smuggled commands: the next reply is NOOP's
    assert w.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"


@pytest.mark.parametrize("service", ["smtpd", "sub"])
def test_fake_ends_through_data(live, service):
    """smtpd: the variants t07 does not send; submission: every variant,
    from an authenticated client under TLS."""
    before = live.mailbox()
    ends = variants(service, MORE_FAKE_ENDS if service == "smtpd" else ALL_FAKE_ENDS)
    with wire(getattr(live, service)) as w:
        assert w.reply().startswith(b"220 ")
        assert w.cmd(b"EHLO smuggler.example\r\n").startswith(b"250-")
        if service == "sub":
            assert w.cmd(b"STARTTLS\r\n").startswith(b"220 ")
            live.tls(w)
            assert w.cmd(b"EHLO smuggler.example\r\n").startswith(b"250-")
            token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode())
            assert w.cmd(b"AUTH PLAIN " + token + b"\r\n").startswith(b"235 ")
        data_session(w, list(ends), ends)
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    check_delivered(live, before, list(ends))
    assert_no_crash(live.inst)


def test_every_fake_end_through_bdat(live):
    before = live.mailbox()
    tags = [f"bdat-{name}" for name in ALL_FAKE_ENDS]
    with wire(live.smtpd) as w:
        assert w.reply().startswith(b"220 ")
        assert b"CHUNKING" in w.cmd(b"EHLO smuggler.example\r\n")
        for name, fake in ALL_FAKE_ENDS.items():
            tag = f"bdat-{name}"
            body = payload(tag, fake) + b".\r\nQUIT\r\n"
            half = len(body) // 2
            assert w.cmd(b"MAIL FROM:<sender@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
            assert w.cmd(b"RCPT TO:<demo@hato.test>\r\n") == b"250 2.1.5 Ok\r\n"
            # two chunks, the split inside the fake end where it is long enough
            r = w.cmd(b"BDAT %d\r\n" % half + body[:half])
            assert r.startswith(b"250 2.0.0 Ok: "), (tag, r)
            r = w.cmd(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
            assert r.startswith(b"250 2.0.0 Ok: queued as "), (tag, r)
        assert w.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    check_delivered(live, before, tags)
    # the dot and the QUIT inside the chunks are content, not commands
    for m in live.delivered_since(before):
        assert re.search(rb"evil payload\r?\n\.\.?\r?\nQUIT", m), m[-200:]
    assert_no_crash(live.inst)

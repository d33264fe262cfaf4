"""Header and log injection: CR, LF, NUL and 8-bit bytes in HELO, MAIL
FROM, RCPT TO and AUTH must never make an extra header line in the
delivered message (its Received: header names the HELO and the client) nor
an extra line in the mail log. Every message that gets through is read
back from the Maildir; every new log line must be a whole syslog line."""

from __future__ import annotations

import base64
import email
import re

import pytest

from tests.integration.test_t07_smtpd_adversarial import assert_no_crash

from .conftest import wire

pytestmark = pytest.mark.integration

SRC = "127.0.0.12"
EVIL = "X-Injected: yes"
BYTES = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n", "nul": b"\0", "8bit": b"\xe9\xff",
         "utf8": "\u00e9".encode(), "tab": b"\t"}
LOG_LINE = re.compile(r"^\w{3} [ \d]\d \d\d:\d\d:\d\d \S+ [\w/.-]+\[\d+\]: \S")


def vectors() -> list[tuple[str, bytes, bytes, bytes]]:
    """(name, HELO, MAIL FROM, RCPT TO) command lines; one field evil at a time."""
    out = []
    for name, b in BYTES.items():
        bad = b + EVIL.encode()
        out.append((f"helo-{name}", b"EHLO inj.example" + bad, b"MAIL FROM:<s@example.org>",
                    b"RCPT TO:<demo@hato.test>"))
        out.append((f"mail-{name}", b"EHLO inj.example",
                     b'MAIL FROM:<"s' + bad + b'"@example.org>', b"RCPT TO:<demo@hato.test>"))
        out.append((f"mailparam-{name}", b"EHLO inj.example",
                     b"MAIL FROM:<s@example.org> ENVID=x" + bad.replace(b" ", b"+"),
                     b"RCPT TO:<demo@hato.test>"))
        out.append((f"rcpt-{name}", b"EHLO inj.example", b"MAIL FROM:<s@example.org>",
                    b"RCPT TO:<demo@hato.test> ORCPT=rfc822;x" + bad.replace(b" ", b"+")))
        out.append((f"rcptaddr-{name}", b"EHLO inj.example", b"MAIL FROM:<s@example.org>",
                    b'RCPT TO:<"demo' + bad + b'"@hato.test>'))
    return out


def assert_log_clean(log: str) -> None:
    bad = [line for line in log.splitlines() if not LOG_LINE.match(line)]
    assert not bad, bad
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log), repr(log)


def assert_message_clean(msg: bytes) -> None:
    head = msg.split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        # each line is a header field or a folded continuation of one
        assert re.match(rb"^([!-9;-~]+:|[ \t])", line), (line, head)
        assert b"\r" not in line and b"\0" not in line, (line, head)
    parsed = email.message_from_bytes(msg)
    assert "X-Injected" not in parsed, head
    assert parsed.get_all("Received"), head


def cmd(w, line: bytes) -> bytes:
    """A reply, or b"" once the server has ended the session."""
    try:
        return w.cmd(line)
    except OSError:
        return b""


@pytest.mark.parametrize("port_name", ["smtpd", "mime"])
def test_envelope_fields_cannot_inject_lines(live, port_name):
    mark = live.mark()
    before = live.mailbox()
    sent = []
    for name, helo, mail, rcpt in vectors():
        with wire(getattr(live, port_name), SRC) as w:
            assert w.reply().startswith(b"220 ")
            if not cmd(w, helo + b"\r\n").startswith(b"250"):
                cmd(w, b"EHLO inj.example\r\n")
            cmd(w, mail + b"\r\n")
            cmd(w, rcpt + b"\r\n")
            if cmd(w, b"DATA\r\n").startswith(b"354 "):
                r = cmd(w, f"Subject: inj-{port_name}-{name}\r\n\r\nbody\r\n.\r\n".encode())
                if r.startswith(b"250 "):
                    sent.append(name)
            cmd(w, b"QUIT\r\n")
    assert sent, "no message got through at all"
    live.inst.wait_for(lambda: len(live.delivered_since(before)) >= len(sent),
                       what=f"{len(sent)} messages")
    for msg in live.delivered_since(before):
        assert_message_clean(msg)
    live.inst.wait_for(lambda: live.log(mark).count(f"disconnect from unknown[{SRC}]")
                       >= len(vectors()), what="every session's end")
    assert_log_clean(live.log(mark))
    assert_no_crash(live.inst)


def test_auth_fields_cannot_inject_log_lines(live):
    mark = live.mark()
    src = "127.0.0.13"
    with wire(live.smtps, src) as w:
        live.tls(w)
        assert w.reply().startswith(b"220 ")
        assert b"AUTH" in w.cmd(b"EHLO inj.example\r\n")
        for b in BYTES.values():
            user = b"alice" + b + EVIL.encode()
            token = base64.b64encode(b"\0" + user + b"\0pw")
            cmd(w, b"AUTH PLAIN " + token + b"\r\n")
            # the mechanism name and the raw line itself
            cmd(w, b"AUTH PL" + b + b"AIN\r\n")
        cmd(w, b"QUIT\r\n")
    live.inst.wait_log(f"disconnect from unknown[{src}]")
    log = live.log(mark)
    assert "authentication failed" in log, log
    assert_log_clean(log)

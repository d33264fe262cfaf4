"""t-06: hato's smtpd with real clients (swaks, Python's smtplib,
aiosmtplib): mail accepted over SMTP lands in a Maildir with Postfix's
Received: header; unknown recipients and relay attempts are refused with
Postfix's replies; DSN options reach the queue; a reload does not drop a
session in progress; the log has Postfix's smtpd lines."""

from __future__ import annotations

import asyncio
import email
import mailbox
import re
import smtplib
import socket
import subprocess
import time

import pytest

from tests.conftest import require_tool

from .instance import smtp_ready

pytestmark = pytest.mark.integration

BOX = ("mail", "hato.test", "demo")


def demo_messages(inst) -> list[email.message.Message]:
    path = inst.root.joinpath(*BOX)
    if not (path / "new").is_dir():
        return []
    box = mailbox.Maildir(str(path), factory=None, create=False)
    return [email.message_from_bytes(box.get_bytes(k)) for k in box.keys()]


def wait_messages(inst, n: int) -> list[email.message.Message]:
    inst.wait_for(lambda: len(demo_messages(inst)) >= n, what=f"{n} message(s) in the Maildir")
    return demo_messages(inst)


@pytest.fixture
def smtp_instance(instance):
    instance.start()
    instance.wait_for(lambda: smtp_ready(instance.port), what="smtpd listening")
    return instance




def test_swaks_delivers_into_maildir(smtp_instance):
    inst = smtp_instance
    swaks = require_tool("swaks", "swaks")
    r = subprocess.run([swaks, "--server", f"127.0.0.1:{inst.port}", "--from",
                        "sender@example.org", "--to", "demo@hato.test", "--helo",
                        "client.example", "--header", "Subject: via swaks",
                        "--body", "hello over SMTP"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"<-\s+250 2\.0\.0 Ok: queued as (\w+)", r.stdout)
    assert m, r.stdout
    qid = m.group(1)
    msgs = wait_messages(inst, 1)
    msg = msgs[0]
    assert msg["Subject"] == "via swaks"
    received = msg.get_all("Received")[0]
    assert re.match(r"from client\.example \(localhost \[127\.0\.0\.1\]\)|"
                    r"from client\.example \(unknown \[127\.0\.0\.1\]\)", received), received
    assert f"with ESMTP id {qid}" in received
    assert "for <demo@hato.test>;" in received
    assert msg["Return-Path"] == "<sender@example.org>"
    log = inst.log_text()
    assert re.search(r"smtpd\[\d+\]: connect from \S+\[127\.0\.0\.1\]", log), log
    assert re.search(rf"smtpd\[\d+\]: {qid}: client=\S+\[127\.0\.0\.1\]", log), log
    inst.wait_log("disconnect from")
    assert re.search(r"disconnect from \S+\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=1 "
                     r"quit=1 commands=5", log + inst.log_text()), inst.log_text()


def test_smtplib_replies_and_refusals(smtp_instance):
    inst = smtp_instance
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        code, text = s.ehlo("client.example")
        assert code == 250
        for ext in ("pipelining", "size", "etrn", "enhancedstatuscodes", "8bitmime", "dsn",
                    "smtputf8", "chunking"):
            assert s.has_extn(ext), (ext, text)
        assert s.mail("sender@example.org") == (250, b"2.1.0 Ok")
        code, text = s.rcpt("nobody@hato.test")
        assert code == 550 and text.startswith(b"5.1.1 <nobody@hato.test>: Recipient address "
                                               b"rejected"), text
        assert s.rcpt("demo@hato.test") == (250, b"2.1.5 Ok")
        code, text = s.data(b"Subject: smtplib\r\n\r\nbody\r\n")
        assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), text
        assert s.noop() == (250, b"2.0.0 Ok")
        assert s.rset() == (250, b"2.0.0 Ok")
        code, text = s.docmd("BOGUS")
        assert (code, text) == (500, b"5.5.2 Error: command not recognized")  # as Postfix
        code, text = s.docmd("RCPT TO:<demo@hato.test>")
        assert (code, text) == (503, b"5.5.1 Error: need MAIL command")
    msgs = wait_messages(inst, 1)
    assert msgs[0]["Subject"] == "smtplib"
    assert "NOQUEUE: reject: RCPT from" in inst.log_text()
    assert "to=<nobody@hato.test> proto=ESMTP helo=<client.example>" in inst.log_text()


def test_relay_denied_outside_mynetworks(instance):
    inst = instance
    inst.postconf("mynetworks = 192.0.2.0/24")
    inst.start()
    inst.wait_for(lambda: smtp_ready(inst.port), what="smtpd listening")
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example")
        s.mail("sender@example.org")
        code, text = s.rcpt("someone@elsewhere.example")
        # Postfix's default smtpd_relay_restrictions end in defer_unauth_destination.
        assert (code, text) == (454, b"4.7.1 <someone@elsewhere.example>: Relay access denied")
        assert s.rcpt("demo@hato.test")[0] == 250


def test_dsn_options_reach_the_queue(smtp_instance):
    inst = smtp_instance
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example")
        s.sendmail("demo@hato.test", ["demo@hato.test"],
                   b"Subject: dsn\r\nMessage-ID: <dsn-1@example>\r\n\r\nbody\r\n",
                   mail_options=["RET=HDRS", "ENVID=env-1"],
                   rcpt_options=["NOTIFY=SUCCESS"])
    # NOTIFY=SUCCESS: the sender (demo@hato.test itself) gets a success notice.
    msgs = wait_messages(inst, 2)
    reports = [m for m in msgs if m.get_content_type() == "multipart/report"]
    assert reports, [m["Subject"] for m in msgs]
    text = reports[0].as_string()
    assert "Action: delivered" in text
    assert "Original-Envelope-Id: env-1" in text


def test_aiosmtplib_pipelined_transaction(smtp_instance):
    import aiosmtplib

    inst = smtp_instance

    async def send() -> tuple:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=inst.port, timeout=30)
        await client.connect()
        await client.ehlo(hostname="pipe.example")
        assert client.supports_extension("pipelining")
        errors, response = await client.sendmail(
            "sender@example.org", ["demo@hato.test", "postmaster@hato.test", "x@hato.test"],
            b"Subject: pipelined\r\n\r\nbody\r\n")
        await client.quit()
        return errors, response

    errors, response = asyncio.run(send())
    assert "x@hato.test" in errors and errors["x@hato.test"].code == 550
    assert response.startswith("2.0.0 Ok: queued as")
    msgs = wait_messages(inst, 1)
    assert msgs[0]["Subject"] == "pipelined"


def test_reload_keeps_sessions(smtp_instance):
    inst = smtp_instance
    s = smtplib.SMTP("127.0.0.1", inst.port, timeout=30)
    s.ehlo("early.example")
    assert s.mail("sender@example.org")[0] == 250
    r = inst.cmd("reload")
    assert r.returncode == 0, r.stderr
    inst.wait_log("reload -- version hato")
    time.sleep(0.5)
    # The session that began before the reload goes on to the end.
    assert s.rcpt("demo@hato.test")[0] == 250
    code, text = s.data(b"Subject: across reload\r\n\r\nbody\r\n")
    assert code == 250, text
    s.quit()
    # And a new session after the reload is served by the new workers.
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s2:
        s2.sendmail("sender@example.org", ["demo@hato.test"], b"Subject: after reload\r\n\r\nx\r\n")
    subjects = {m["Subject"] for m in wait_messages(inst, 2)}
    assert subjects == {"across reload", "after reload"}


def test_bdat_and_smuggling_over_the_wire(instance):
    inst = instance
    # The loopback client is in mynetworks, which smtpd_forbid_bare_newline_exclusions
    # names by default: take the exclusion away.
    inst.postconf("smtpd_forbid_bare_newline = normalize",
                  "smtpd_forbid_bare_newline_exclusions =")
    inst.start()
    inst.wait_for(lambda: smtp_ready(inst.port), what="smtpd listening")
    with socket.create_connection(("127.0.0.1", inst.port), timeout=30) as s:
        f = s.makefile("rb")

        def reply() -> bytes:
            lines = []
            while True:
                line = f.readline()
                lines.append(line)
                if line[3:4] != b"-":
                    return b"".join(lines)

        assert reply().startswith(b"220 ")
        s.sendall(b"EHLO wire.example\r\n")
        assert b"CHUNKING" in reply()
        body = b"Subject: bdat\r\n\r\nchunked\r\n"
        s.sendall(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<demo@hato.test>\r\n"
                  b"BDAT %d LAST\r\n" % len(body) + body)
        assert reply().startswith(b"250 2.1.0")
        assert reply().startswith(b"250 2.1.5")
        assert reply().startswith(b"250 2.0.0 Ok: queued as")
        # A smuggling attempt: the bare-LF "end of data" must not end the
        # message, so one message is queued, holding the second "MAIL".
        s.sendall(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<demo@hato.test>\r\nDATA\r\n")
        assert reply().startswith(b"250")
        assert reply().startswith(b"250")
        assert reply().startswith(b"354")
        s.sendall(b"Subject: smuggle\r\n\r\nbefore\n.\nMAIL FROM:<evil@example.org>\n"
                  b"RCPT TO:<demo@hato.test>\nDATA\nSubject: smuggled\n\nevil\r\n.\r\n")
        assert reply().startswith(b"250 2.0.0 Ok: queued as")
        s.sendall(b"QUIT\r\n")
        assert reply().startswith(b"221")
    msgs = wait_messages(inst, 2)
    subjects = sorted(m["Subject"] for m in msgs)
    assert subjects == ["bdat", "smuggle"]


def test_sendmail_bs_speaks_smtp_on_stdin(smtp_instance):
    inst = smtp_instance
    dialogue = (b"EHLO local\r\nMAIL FROM:<demo@hato.test>\r\nRCPT TO:<demo@hato.test>\r\n"
                b"DATA\r\nSubject: via -bs\r\n\r\nhello\r\n.\r\nQUIT\r\n")
    r = inst.cmd("sendmail", "-bs", input=dialogue)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert out.startswith("220 "), out
    assert "250 2.0.0 Ok: queued as " in out, out
    assert out.rstrip().endswith("221 2.0.0 Bye"), out
    msgs = wait_messages(inst, 1)
    assert msgs[0]["Subject"] == "via -bs"
    # A local submission: pickup's Received: line names the submitting user.
    assert "from userid" in msgs[0].get_all("Received")[0]

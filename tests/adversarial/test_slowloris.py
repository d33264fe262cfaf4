"""Slowloris on every service: a client that sends one byte every half
second — to smtpd, to submission (after STARTTLS, each byte its own TLS
record), to smtps, and to postscreen's own SMTP engine — all at once. Each
is cut off by the per-request deadline (smtpd_timeout, or
postscreen_command_time_limit, 3 s here) with a 421 and a log line, long
before its command is through, while a well-behaved client is served
meanwhile. t07 drips at smtpd alone."""

from __future__ import annotations

import re
import select
import smtplib
import ssl
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.test_t07_smtpd_adversarial import assert_no_crash

from .conftest import HOSTNAME, TIMEOUT, wire

pytestmark = pytest.mark.integration

COMMAND = b"EHLO slowloris.example.with.a.name.long.enough.to.outlast.the.deadline\r\n"
SOURCES = {"smtpd": "127.0.0.51", "sub": "127.0.0.52", "smtps": "127.0.0.53",
           "ps": "127.0.0.54"}


def spoke(sock) -> bytes | None:
    """What the server sent within half a second: None for nothing, b""
    when it hung up. TLS records that carry no data (TLS 1.3 session
    tickets) are nothing."""
    if not select.select([sock], [], [], 0.5)[0]:
        return None
    sock.setblocking(False)
    try:
        return sock.recv(4096)
    except ssl.SSLWantReadError:
        return None
    except OSError:
        return b""
    finally:
        sock.setblocking(True)


def drip(live, service: str) -> tuple[int, bytes]:
    """Bytes sent before the server hung up, and what it said meanwhile."""
    w = wire(getattr(live, service), SOURCES[service], timeout=TIMEOUT * 10)
    try:
        if service == "smtps":
            live.tls(w)
        assert w.reply().startswith(b"220")
        if service == "sub":
            w.cmd(b"EHLO drip.example\r\n")
            assert w.cmd(b"STARTTLS\r\n").startswith(b"220 ")
            live.tls(w)
        sent, said = 0, None
        while sent < len(COMMAND) and said is None:
            try:
                w.sock.sendall(COMMAND[sent:sent + 1])
            except OSError:
                break
            sent += 1
            said = spoke(w.sock)
        try:
            rest = w.file.read() if said else b""
        except OSError:
            rest = b""
        return sent, (said or b"") + rest
    finally:
        w.close()


def test_slowloris_on_every_service(live):
    mark = live.mark()
    before = live.mailbox()
    with ThreadPoolExecutor(len(SOURCES)) as pool:
        futures = {s: pool.submit(drip, live, s) for s in SOURCES}
        # meanwhile a polite client is served
        with smtplib.SMTP("127.0.0.1", live.smtpd, timeout=30) as c:
            c.sendmail("sender@example.org", ["demo@hato.test"],
                       b"Subject: adv-during-slowloris\r\n\r\nserved\r\n")
        results = {s: f.result() for s, f in futures.items()}
    timeout = f"421 4.4.2 {HOSTNAME} Error: timeout exceeded\r\n".encode()
    for service, (sent, said) in results.items():
        assert sent < len(COMMAND), (service, "the whole command went through")
        assert said == timeout, (service, said)
    live.inst.wait_for(lambda: any(b"adv-during-slowloris" in m
                                   for m in live.delivered_since(before)), what="the message")
    for service in ("smtpd", "sub", "smtps"):
        live.inst.wait_for(lambda s=service: re.search(
            rf"timeout after \S+ from unknown\[{re.escape(SOURCES[s])}\]", live.log(mark)),
            what=f"the timeout of {service} logged")
    live.inst.wait_for(lambda: re.search(
        rf"COMMAND TIME LIMIT from \[{re.escape(SOURCES['ps'])}\]:\d+", live.log(mark)),
        what="postscreen's command time limit logged")
    assert_no_crash(live.inst)

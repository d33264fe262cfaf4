"""HTTP and other protocols spoken to the mail services — as a browser,
a proxy scanner, a POP3 or IMAP client would. smtpd (on every service:
plain, submission before TLS, smtps inside TLS) ends the session at
``CONNECT``, ``GET``, ``POST`` and header-like lines with Postfix's
``221 2.7.0 Error: I can break rules, too. Goodbye.`` and a ``non-SMTP
command`` warning (smtpd_forbidden_commands), and answers other foreign
words as unknown commands; postscreen's non-SMTP-command test drops the
client and logs ``NON-SMTP COMMAND``. t07 sends GET and CONNECT to the
plain smtpd."""

from __future__ import annotations

import re

import pytest

from tests.integration.test_t07_smtpd_adversarial import assert_no_crash

from .conftest import wire

pytestmark = pytest.mark.integration

GOODBYE = b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"
FORBIDDEN = [b"GET / HTTP/1.0", b"POST /cgi-bin/mail HTTP/1.1", b"CONNECT mail.example:25 HTTP/1.1",
             b"Host: 127.0.0.1", b"get /index.html"]
UNKNOWN = [b"USER alice", b"PASS secret", b"a001 CAPABILITY", b"HEAD / HTTP/1.0"]


def open_session(live, service: str, src: str = "127.0.0.1"):
    w = wire(getattr(live, service), src)
    if service == "smtps":
        live.tls(w)
    assert w.reply().startswith(b"220 ")
    return w


@pytest.mark.parametrize("service", ["smtpd", "sub", "smtps"])
def test_smtpd_ends_http_sessions(live, service):
    mark = live.mark()
    for line in FORBIDDEN:
        with open_session(live, service) as w:
            # as an HTTP client sends it: the request line and more
            assert w.cmd(line + b"\r\nUser-Agent: x\r\n\r\n") == GOODBYE, line
            assert w.closed_by_peer()
    with open_session(live, service) as w:
        for line in UNKNOWN:
            assert w.cmd(line + b"\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    live.inst.wait_for(lambda: live.log(mark).count("warning: non-SMTP command from")
                       >= len(FORBIDDEN), what="a warning for each")
    log = live.log(mark)
    for line in FORBIDDEN:
        assert (f"warning: non-SMTP command from unknown[127.0.0.1]: {line.decode()}\n"
                in log), (line, log)
    assert "queued as" not in log
    assert_no_crash(live.inst)


@pytest.mark.parametrize("line", [b"GET / HTTP/1.0", b"POST / HTTP/1.1",
                                  b"CONNECT 10.0.0.1:25 HTTP/1.0", b"USER alice"])
def test_postscreen_drops_non_smtp_clients(live, line):
    src = {b"G": "127.0.0.61", b"P": "127.0.0.62", b"C": "127.0.0.63", b"U": "127.0.0.64"}[
        line[:1]]
    mark = live.mark()
    with wire(live.ps, src) as w:
        greeting = w.reply()
        assert greeting.startswith(b"220"), greeting
        r = w.cmd(line + b"\r\nHost: x\r\n\r\n")
        if line.startswith(b"USER"):
            # not a forbidden word: an unknown command, the client stays
            assert r.startswith(b"502 5.5.2 "), r
        else:
            assert r == b"521 5.7.0 Error: I can break rules, too. Goodbye.\r\n", r
            assert w.closed_by_peer()
    if line.startswith(b"USER"):
        return
    live.inst.wait_log(f"DISCONNECT [{src}]:")
    log = live.log(mark)
    assert re.search(rf"postscreen\[\d+\]: NON-SMTP COMMAND from \[{re.escape(src)}\]:\d+ "
                     rf"after CONNECT: {re.escape(line.decode())}\n", log), log
    assert f"PASS NEW [{src}]" not in log
    # and it stays out: the next connection meets the engine again
    with wire(live.ps, src) as w:
        assert w.reply().startswith(b"220")
        assert w.cmd(b"EHLO x\r\n").startswith(b"250")

"""TLS and AUTH under attack: STARTTLS command injection (plaintext
pipelined after STARTTLS is discarded, as Postfix does) on submission and
in postscreen's own SMTP engine; AUTH before TLS on submission and AUTH on
a service without it; AUTH brute force, cut by anvil's
smtpd_client_auth_rate_limit and then by smtpd_hard_error_limit, each
logged in Postfix's words; TLS 1.2 renegotiation requests (smtps,
submission, postscreen), refused, alone and as a flood, with the services
still serving mail afterwards."""

from __future__ import annotations

import base64
import re
import smtplib
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import require_tool
from tests.integration.test_t07_smtpd_adversarial import assert_no_crash

from .conftest import AUTH_RATE, PASSWORD, USER, wire

pytestmark = pytest.mark.integration

INJECTED = b"MAIL FROM:<injected@example.org>\r\n"


def plain(user: str, password: str) -> bytes:
    return base64.b64encode(f"\0{user}\0{password}".encode())


def injected_starttls(live, w, helo: bytes) -> None:
    """EHLO, then STARTTLS with a command pipelined behind it in the same
    packet; under TLS the first reply must answer our NOOP, not the
    injected MAIL (which, run, would answer 503: no EHLO yet)."""
    assert b"STARTTLS" in w.cmd(b"EHLO " + helo + b"\r\n")
    w.send(b"STARTTLS\r\n" + INJECTED)
    assert w.reply().startswith(b"220 ")
    live.tls(w)
    assert w.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    assert w.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
    assert w.cmd(b"EHLO " + helo + b"\r\n").startswith(b"250-")


def test_starttls_injection_on_submission(live):
    mark = live.mark()
    with wire(live.sub) as w:
        assert w.reply().startswith(b"220 ")
        injected_starttls(live, w, b"inject.example")
        assert w.cmd(b"QUIT\r\n").startswith(b"221 ")
    live.inst.wait_log("disconnect from unknown[127.0.0.1] ehlo=2 starttls=1 noop=2 quit=1")
    assert "injected@example.org" not in live.log(mark)


def test_starttls_injection_in_postscreen(live):
    mark = live.mark()
    with wire(live.ps, "127.0.0.41") as w:
        assert w.reply().startswith(b"220")
        injected_starttls(live, w, b"inject.example")
        # still postscreen's engine: it tells the client to come back later
        assert w.cmd(b"MAIL FROM:<a@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
        assert w.cmd(b"RCPT TO:<demo@hato.test>\r\n") == \
            b"450 4.3.2 Service currently unavailable\r\n"
    live.inst.wait_log("PASS NEW [127.0.0.41]:")
    log = live.log(mark)
    assert "injected@example.org" not in log
    assert "TLS connection established from [127.0.0.41]" in log, log


def test_auth_before_tls_is_refused(live):
    mark = live.mark()
    with wire(live.sub) as w:
        assert w.reply().startswith(b"220 ")
        ehlo = w.cmd(b"EHLO early.example\r\n")
        assert b"STARTTLS" in ehlo and b"AUTH" not in ehlo, ehlo
        # the right password, in the clear: refused, never checked
        r = w.cmd(b"AUTH PLAIN " + plain(USER, PASSWORD) + b"\r\n")
        assert r == b"530 5.7.0 Must issue a STARTTLS command first\r\n", r
        r = w.cmd(b"AUTH LOGIN\r\n")
        assert r == b"530 5.7.0 Must issue a STARTTLS command first\r\n", r
        r = w.cmd(b"MAIL FROM:<alice@hato.test>\r\n")
        assert r == b"530 5.7.0 Must issue a STARTTLS command first\r\n", r
        assert w.cmd(b"QUIT\r\n").startswith(b"221 ")
    # the plain smtpd does not offer AUTH at all
    with wire(live.smtpd) as w:
        assert w.reply().startswith(b"220 ")
        assert b"AUTH" not in w.cmd(b"EHLO early.example\r\n")
        r = w.cmd(b"AUTH PLAIN " + plain(USER, PASSWORD) + b"\r\n")
        assert r == b"503 5.5.1 Error: authentication not enabled\r\n", r
        assert w.cmd(b"QUIT\r\n").startswith(b"221 ")
    live.inst.wait_for(lambda: live.log(mark).count("disconnect from") >= 2, what="2 sessions")
    log = live.log(mark)
    assert "sasl_username" not in log and "sasl_method" not in log, log


def test_auth_brute_force_is_rate_limited_and_cut(live):
    src = "127.0.0.9"
    mark = live.mark()
    replies = []
    with wire(live.sub, src) as w:
        assert w.reply().startswith(b"220 ")
        w.cmd(b"EHLO brute.example\r\n")
        assert w.cmd(b"STARTTLS\r\n").startswith(b"220 ")
        live.tls(w)
        assert b"AUTH PLAIN" in w.cmd(b"EHLO brute.example\r\n")
        for i in range(40):
            r = w.cmd(b"AUTH PLAIN " + plain(USER, f"guess {i}") + b"\r\n")
            replies.append(r)
            if not r or r.startswith(b"421 "):
                break
        # then the right password gets nowhere either: the session is over
        ended = w.closed_by_peer() if replies[-1].startswith(b"421 ") else False
    failed = [r for r in replies if r.startswith(b"535 5.7.8 ")]
    limited = [r for r in replies if r == b"450 4.7.1 Error: too many AUTH commands from "
               + src.encode() + b"\r\n"]
    assert len(failed) == AUTH_RATE, replies
    assert replies[:AUTH_RATE] == failed, replies
    assert replies[-1] == b"421 4.7.0 localhost.localdomain Error: too many errors\r\n", replies
    assert len(failed) + len(limited) == len(replies) - 1, replies
    assert ended
    # a new session from the same address is still refused AUTH (the rate
    # is per client, across sessions), while another client authenticates
    with wire(live.sub, src) as w:
        assert w.reply().startswith(b"220 ")
        w.cmd(b"EHLO brute.example\r\n")
        assert w.cmd(b"STARTTLS\r\n").startswith(b"220 ")
        live.tls(w)
        w.cmd(b"EHLO brute.example\r\n")
        r = w.cmd(b"AUTH PLAIN " + plain(USER, PASSWORD) + b"\r\n")
        assert r.startswith(b"450 4.7.1 Error: too many AUTH commands"), r
    with smtplib.SMTP("127.0.0.1", live.sub, timeout=30) as c:
        c.starttls(context=live.context())
        c.ehlo("good.example")
        assert c.login(USER, PASSWORD)[0] == 235
    live.inst.wait_log(f"too many errors after AUTH from unknown[{src}]")
    log = live.log(mark)
    assert re.search(rf"warning: AUTH command rate limit exceeded: {AUTH_RATE + 1} from "
                     rf"unknown\[{re.escape(src)}\] for service \S+", log), log
    assert len(re.findall(rf"warning: unknown\[{re.escape(src)}\]: SASL PLAIN authentication "
                          r"failed", log)) == AUTH_RATE, log
    assert_no_crash(live.inst)


# -- renegotiation -------------------------------------------------------------------------


def renegotiate(live, args: list[str], times: int = 3) -> tuple[bytes, bytes]:
    """openssl s_client, TLS 1.2, asking for renegotiation (its ``R``
    command) after EHLO, then NOOP; its output and errors."""
    openssl = require_tool("openssl", "openssl")
    p = subprocess.Popen([openssl, "s_client", "-tls1_2", "-crlf", "-CAfile",
                          str(live.site.ca.path), *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in [b"EHLO reneg.example\n"] + [b"R\n"] * times + [b"NOOP\n", b"QUIT\n"]:
            time.sleep(0.3)  # s_client reads its commands one line at a time
            p.stdin.write(line)
            p.stdin.flush()
    except BrokenPipeError:  # it gave up: the server refused
        pass
    out, err = p.communicate(timeout=30)
    return out, err


@pytest.mark.parametrize("service", ["smtps", "sub", "ps"])
def test_tls_renegotiation_is_refused(live, service):
    port = getattr(live, service)
    args = ["-connect", f"127.0.0.1:{port}"]
    if service != "smtps":
        args += ["-starttls", "smtp"]
    if service == "ps":  # a client of its own, for postscreen's engine
        args += ["-bind", "127.0.0.42:0"]
    out, err = renegotiate(live, args)
    assert b"250-SIZE" in out, out  # the session was up and answered EHLO
    assert b"RENEGOTIATING" in err, err
    assert b"no renegotiation" in err, err
    assert b"250 2.0.0 Ok" not in out.split(b"250 CHUNKING", 1)[-1], out  # NOOP never ran


def test_renegotiation_flood_leaves_the_service_up(live):
    """Twelve clients at once, each asking for renegotiation ten times."""
    before = live.mailbox()
    mark = live.mark()
    with ThreadPoolExecutor(12) as pool:
        runs = list(pool.map(lambda _: renegotiate(live, ["-connect", f"127.0.0.1:{live.smtps}"],
                                                   times=10), range(12)))
    for out, err in runs:
        assert b"250-SIZE" in out and b"no renegotiation" in err, (out, err)
    with smtplib.SMTP_SSL("127.0.0.1", live.smtps, timeout=30, context=live.context()) as c:
        c.login(USER, PASSWORD)
        c.sendmail(USER, ["demo@hato.test"], b"Subject: after-reneg\r\n\r\nstill up\r\n")
    live.inst.wait_for(lambda: any(b"Subject: after-reneg" in m
                                   for m in live.delivered_since(before)), what="the message")
    live.inst.wait_for(lambda: live.log(mark).count("postfix/smtps/smtpd") and
                       live.log(mark).count("disconnect from unknown[127.0.0.1]") >= 13,
                       what="every session's end")
    assert_no_crash(live.inst)

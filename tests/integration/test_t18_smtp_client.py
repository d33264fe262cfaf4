"""t-18: the smtp delivery agent, end to end: hato relays to Debian's
smtp-sink and to a second hato instance (through relayhost and through
MX lookup against the test DNS server), with Postfix's status lines;
recipients refused by the peer are bounced with its own words, a peer
that is down defers, and the next MX is tried."""

from __future__ import annotations

import mailbox
import re
import socket
import subprocess
import time

import pytest

from tests.conftest import require_tool

from .instance import Instance, free_port, smtp_ready

pytestmark = pytest.mark.integration


def message(to: str, subject: str = "outbound") -> bytes:
    return (f"From: sender@hato.test\nTo: {to}\nSubject: {subject}\n\nhello there\n"
            .encode())


@pytest.fixture
def sink():
    """Postfix's smtp-sink on a loopback port: accepts everything."""
    binary = require_tool("smtp-sink", "postfix")
    port = free_port()
    proc = subprocess.Popen([binary, "-u", "nobody", "-c", f"127.0.0.1:{port}", "100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "smtp-sink did not start"
            time.sleep(0.05)
    yield port
    proc.kill()
    proc.wait()


def test_relayhost_to_smtp_sink(instance, sink):
    inst = instance
    inst.postconf(f"relayhost = [127.0.0.1]:{sink}")
    inst.start()
    r = inst.sendmail("-f", "sender@hato.test", "someone@example.org",
                      message=message("someone@example.org"))
    assert r.returncode == 0, r.stderr
    inst.wait_log("status=sent")
    log = inst.log_text()
    assert re.search(r"smtp\[\d+\]: \w+: to=<someone@example\.org>, "
                     r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:" + str(sink) +
                     r", delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent \(250 ", log), \
        log[-2000:]
    inst.wait_for(inst.queue_empty, what="the queue emptied")


def test_relay_to_a_second_hato_with_refused_recipient(instance):
    """The peer (another hato) accepts demo@hato.test and refuses
    nobody@hato.test: one recipient delivered into the peer's Maildir, one
    bounced with the peer's reply."""
    peer = Instance("peer")
    try:
        peer.postconf("myhostname = peer.hato.test")  # else: "loops back to myself"
        peer.start()
        peer.wait_for(lambda: smtp_ready(peer.port), what="peer smtpd")
        inst = instance
        inst.postconf(f"relayhost = [127.0.0.1]:{peer.port}",
                      "virtual_mailbox_domains =", "mydestination = $myhostname, localhost")
        inst.start()
        r = inst.sendmail("-f", "sender@hato.test", "demo@hato.test", "nobody@hato.test",
                          message=message("demo@hato.test"))
        assert r.returncode == 0, r.stderr
        inst.wait_log("status=sent")
        inst.wait_log("status=bounced")
        log = inst.log_text()
        assert re.search(r"to=<nobody@hato\.test>, relay=127\.0\.0\.1\[127\.0\.0\.1\]:\d+, "
                         r".*dsn=5\.1\.1, status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] "
                         r"said: 550 5\.1\.1 <nobody@hato\.test>: Recipient address rejected: "
                         r".*\(in reply to RCPT TO command\)\)", log), log[-3000:]
        box = peer.root / "mail" / "hato.test" / "demo"
        peer.wait_for(lambda: (box / "new").is_dir()
                      and len(mailbox.Maildir(str(box), create=False)) == 1,
                      what="the message in the peer's Maildir")
    finally:
        peer.cleanup()


def test_peer_down_defers_then_delivers(instance, sink):
    inst = instance
    dead = free_port()
    inst.postconf(f"relayhost = [127.0.0.1]:{dead}", "smtp_connect_timeout = 5s")
    inst.start()
    r = inst.sendmail("-f", "sender@hato.test", "later@example.org",
                      message=message("later@example.org"))
    assert r.returncode == 0
    inst.wait_log("status=deferred")
    log = inst.log_text()
    assert re.search(r"to=<later@example\.org>, relay=none, .*status=deferred \(connect to "
                     r"127\.0\.0\.1\[127\.0\.0\.1\]:" + str(dead) +
                     r": Connection refused\)", log), log[-2000:]
    # the peer comes back: a flush delivers
    inst.postconf(f"relayhost = [127.0.0.1]:{sink}")
    inst.cmd("reload")
    time.sleep(2)
    inst.cmd("flush")
    inst.wait_log("status=sent", timeout=60)


def test_starttls_and_sasl_to_a_submission_service(instance, tmp_path):
    """Through a relay that demands STARTTLS and AUTH (a second hato's
    submission service, users in its sasldb): encrypt + SASL PLAIN from
    smtp_sasl_password_maps; a wrong password defers, never bounces; a
    policy that cannot be met defers."""
    from tests.certs import TestCA

    from .test_t10_submission import PASSWORD, USER, Site

    peer = Instance("peer")
    try:
        peer.postconf("myhostname = peer.hato.test")
        site = Site(peer, TestCA(tmp_path / "ca"), "sasldb")
        site.start()
        inst = instance
        secrets = inst.root / "sasl_passwd"
        secrets.write_text(f"[127.0.0.1]:{site.sub} {USER}:{PASSWORD}\n")
        inst.postconf(f"relayhost = [127.0.0.1]:{site.sub}", "virtual_mailbox_domains =",
                      "smtp_tls_security_level = encrypt", "smtp_tls_loglevel = 1",
                      "smtp_sasl_auth_enable = yes",
                      f"smtp_sasl_password_maps = texthash:{secrets}",
                      "smtp_sasl_security_options = noanonymous")
        inst.start()
        r = inst.sendmail("-f", "sender@hato.test", "demo@hato.test",
                          message=message("demo@hato.test"))
        assert r.returncode == 0
        inst.wait_log("status=sent")
        log = inst.log_text()
        assert re.search(r"smtp\[\d+\]: (Untrusted|Trusted) TLS connection established to "
                         r"127\.0\.0\.1\[127\.0\.0\.1\]:\d+: TLSv1\.[23] with cipher", log), \
            log[-3000:]
        # the strongest mechanism both sides have
        peer.wait_log("sasl_method=SCRAM-SHA-256, sasl_username=" + USER)
        # the wrong password: deferred with the server's reply
        secrets.write_text(f"[127.0.0.1]:{site.sub} {USER}:wrong\n")
        inst.cmd("reload")  # texthash: read when the agent starts, as in Postfix
        time.sleep(2)
        r = inst.sendmail("-f", "sender@hato.test", "demo@hato.test",
                          message=message("demo@hato.test", "second"))
        assert r.returncode == 0
        inst.wait_log("status=deferred")
        assert re.search(r"dsn=4\.7\.\d, status=deferred \(.*authentication failed",
                         inst.log_text(), re.I), inst.log_text()[-2000:]
    finally:
        peer.cleanup()

"""t-16 (TLS): STARTTLS in postscreen's SMTP engine
(postscreen_tls_security_level), with the deep protocol tests on: a client
that speaks TLS to postscreen passes the tests, is told to come back
(450 4.3.2), and is PASS OLD and served by smtpd when it does."""

from __future__ import annotations

import os
import shutil
import smtplib
import ssl

import pytest

from tests.certs import TestCA

from .test_t16_postscreen import postscreen_instance

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


def client(port: int, src: str) -> smtplib.SMTP:
    c = smtplib.SMTP(timeout=20, source_address=(src, 0))
    c.connect("127.0.0.1", port)
    c._host = "mx.hato.test"  # the name STARTTLS sends as SNI
    return c


def test_starttls_in_postscreen_then_pass_old(instance, ca):
    issued = ca.issue("mx.hato.test")
    for p in (issued.cert, issued.key):
        shutil.copy(p, instance.root / p.name)
        os.chmod(instance.root / p.name, 0o644)  # postscreen runs as mail_owner
    inst = postscreen_instance(instance,
                               f"smtpd_tls_cert_file = {instance.root / issued.cert.name}",
                               f"smtpd_tls_key_file = {instance.root / issued.key.name}",
                               "postscreen_tls_security_level = may",
                               "smtpd_tls_loglevel = 1",
                               "postscreen_pipelining_enable = yes",
                               "postscreen_non_smtp_command_enable = yes")
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.check_hostname = False
    c = client(inst.port, "127.0.0.20")
    code, text = c.ehlo("tls.example")
    assert code == 250 and b"STARTTLS" in text and b"PIPELINING" not in text, text
    c.starttls(context=ctx)
    code, text = c.ehlo("tls.example")
    assert code == 250 and b"STARTTLS" not in text, text
    assert c.mail("a@example.org")[0] == 250
    assert c.rcpt("demo@hato.test") == (450, b"4.3.2 Service currently unavailable")
    c.quit()
    inst.wait_log("PASS NEW [127.0.0.20]:")
    log = inst.log_text()
    assert "Anonymous TLS connection established from [127.0.0.20]:" in log, log[-2000:]
    # it comes back: straight to smtpd, which offers STARTTLS itself
    c = client(inst.port, "127.0.0.20")
    code, text = c.ehlo("tls.example")
    assert code == 250 and b"PIPELINING" in text, text
    c.quit()
    inst.wait_log("PASS OLD [127.0.0.20]:")


def test_encrypt_requires_starttls_in_postscreen(instance, ca):
    issued = ca.issue("mx.hato.test")
    for p in (issued.cert, issued.key):
        shutil.copy(p, instance.root / p.name)
        os.chmod(instance.root / p.name, 0o644)  # postscreen runs as mail_owner
    inst = postscreen_instance(instance,
                               f"smtpd_tls_cert_file = {instance.root / issued.cert.name}",
                               f"smtpd_tls_key_file = {instance.root / issued.key.name}",
                               "postscreen_tls_security_level = encrypt",
                               "postscreen_pipelining_enable = yes")
    c = client(inst.port, "127.0.0.21")
    c.ehlo("plain.example")
    assert c.mail("a@example.org") == (530, b"5.7.0 Must issue a STARTTLS command first")
    c.quit()

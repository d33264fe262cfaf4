"""t-37: client certificates on smtpd (``smtpd_tls_ask_ccert = yes``), as
Postfix takes them: every certificate a client sends is accepted; one that
chains to ``smtpd_tls_CAfile`` is "Trusted", any other "Untrusted" but
still known by its fingerprint, which is how ``relay_clientcerts`` lets a
certificate nobody signed relay (``permit_tls_clientcerts``). Python's
smtplib is the client, with and without a certificate of its own."""

from __future__ import annotations

import hashlib
import shutil
import smtplib
import ssl

import pytest

from tests.certs import TestCA

from .instance import free_port, smtp_ready

pytestmark = pytest.mark.integration


def fingerprint(cert_pem: bytes) -> str:
    der = ssl.PEM_cert_to_DER_cert(cert_pem.decode())
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    base = tmp_path_factory.mktemp("t37")
    ca = TestCA(base / "ca")
    other = TestCA(base / "other", "a CA smtpd does not know")
    return {"ca": ca, "server": ca.issue("mx.hato.test"),
            "trusted": ca.issue("client.hato.test", client=True),
            "listed": other.issue("laptop.example", client=True),
            "unlisted": other.issue("stranger.example", client=True)}


@pytest.fixture
def site(instance, certs):
    inst = instance
    root = inst.root
    for name in ("server",):
        for p in (certs[name].cert, certs[name].key):
            shutil.copy(p, root / p.name)
            (root / p.name).chmod(0o644)
    relay = root / "relay_clientcerts"
    relay.write_text(f"{fingerprint(certs['listed'].cert.read_bytes())} laptop\n")
    r = inst.cmd("postmap", f"hash:{relay}")
    assert r.returncode == 0, r.stderr
    port = free_port()
    inst.postconf(f"relay_clientcerts = hash:{relay}")
    with open(root / "master.cf", "a") as f:
        f.write(f"127.0.0.1:{port} inet n - n - - smtpd\n"
                "  -o syslog_name=postfix/ccert\n"
                "  -o smtpd_tls_security_level=may\n"
                f"  -o smtpd_tls_cert_file={root / certs['server'].cert.name}\n"
                f"  -o smtpd_tls_key_file={root / certs['server'].key.name}\n"
                "  -o smtpd_tls_ask_ccert=yes\n"
                f"  -o smtpd_tls_CAfile={certs['ca'].path}\n"
                "  -o smtpd_tls_loglevel=1\n"
                "  -o mynetworks=192.0.2.0/24\n"
                "  -o smtpd_relay_restrictions=permit_tls_clientcerts,"
                "reject_unauth_destination\n")
    inst.start()
    inst.wait_for(lambda: smtp_ready(port), what="the ccert service")
    return inst, port


def relay_attempt(port: int, certs, which: str | None) -> tuple[int, str]:
    """STARTTLS (with the client certificate *which*), then a recipient
    elsewhere: RCPT's reply."""
    ctx = ssl.create_default_context(cafile=str(certs["ca"].path))
    ctx.check_hostname = False
    if which is not None:
        ctx.load_cert_chain(certs[which].cert, certs[which].key)
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.example")
        s.starttls(context=ctx)
        s.ehlo("client.example")
        assert s.docmd("MAIL FROM:<a@client.example>")[0] == 250
        code, text = s.docmd("RCPT TO:<someone@elsewhere.example>")
        s.docmd("RSET")
        return code, text.decode()


def established(inst, count: int) -> list[str]:
    inst.wait_log("TLS connection established from", count=count)
    return [line.split("]: ", 1)[1] for line in inst.log_text().splitlines()
            if "postfix/ccert/smtpd" in line and "TLS connection established from" in line]


def test_a_listed_certificate_nobody_signed_relays(site, certs):
    inst, port = site
    code, text = relay_attempt(port, certs, "listed")
    assert code == 250, text
    assert established(inst, 1)[-1].startswith("Untrusted TLS connection established from")


def test_an_unlisted_certificate_is_taken_but_does_not_relay(site, certs):
    inst, port = site
    code, text = relay_attempt(port, certs, "unlisted")
    assert code == 554 and "Relay access denied" in text, text
    assert established(inst, 1)[-1].startswith("Untrusted TLS connection established from")


def test_a_trusted_certificate_and_none(site, certs):
    inst, port = site
    code, text = relay_attempt(port, certs, "trusted")
    assert code == 554, text  # trusted, but not listed: permit_tls_clientcerts wants its print
    assert established(inst, 1)[-1].startswith("Trusted TLS connection established from")
    code, text = relay_attempt(port, certs, None)
    assert code == 554, text
    assert established(inst, 2)[-1].startswith("Anonymous TLS connection established from")

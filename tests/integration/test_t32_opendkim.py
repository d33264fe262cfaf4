"""t-32: Debian's OpenDKIM as a milter on the reference setup.

The smtps and submission services carry ``-o
milter_macro_daemon_name=ORIGINATING`` as in the installation memo; OpenDKIM
(tests/opendkim.py) signs mail whose ``{daemon_name}`` is ORIGINATING and
verifies everything else. So:

* mail submitted with AUTH on smtps comes out of the Maildir with a
  DKIM-Signature that dkimpy verifies against OpenDKIM's key;
* mail arriving on port 25 is verified, not signed: a good signature gets
  ``Authentication-Results: mx.hato.test; dkim=pass``, a message changed
  after signing ``dkim=fail``.
"""

from __future__ import annotations

import mailbox
import os
import pwd
import smtplib
import ssl

import dkim
import pytest

from tests.certs import TestCA
from tests.milter_peer import MilterPeer
from tests.opendkim import OpenDkim

from .test_t10_submission import PASSWORD, USER, Site

pytestmark = pytest.mark.integration

DOMAIN = "example.test"


def message(subject: str) -> bytes:
    return (f"From: Alice <alice@{DOMAIN}>\r\nTo: bob@{DOMAIN}\r\nSubject: {subject}\r\n"
            f"Date: Sun, 29 Nov 2026 10:00:00 +0000\r\n"
            f"Message-ID: <{subject.replace(' ', '-')}@{DOMAIN}>\r\n\r\n"
            f"Hello Bob,\r\nthis is {subject}.\r\n").encode()


def bob_messages(inst) -> list[bytes]:
    path = inst.root / "mail" / DOMAIN / "bob"
    if not (path / "new").is_dir():
        return []
    box = mailbox.Maildir(str(path), factory=None, create=False)
    return [box.get_bytes(k) for k in box.keys()]


def wait_for_subject(inst, subject: str) -> bytes:
    found: list[bytes] = []

    def there() -> bool:
        found[:] = [m for m in bob_messages(inst) if f"Subject: {subject}".encode() in m]
        return bool(found)
    inst.wait_for(there, timeout=60, what=f"{subject!r} in bob's Maildir")
    return found[0]


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def site(instance, ca):
    odk = OpenDkim(domain=DOMAIN).start()
    peer = MilterPeer()  # second in the chain: records what it is sent
    try:
        s = Site(instance, ca, "sasldb")
        uid = pwd.getpwnam("hato").pw_uid if os.geteuid() == 0 else os.getuid()
        gid = pwd.getpwnam("hato").pw_gid if os.geteuid() == 0 else os.getgid()
        instance.postconf(f"virtual_mailbox_domains = {DOMAIN}",
                          f"virtual_mailbox_maps = inline:{{ bob@{DOMAIN}={DOMAIN}/bob/ }}",
                          f"virtual_uid_maps = static:{uid}", f"virtual_gid_maps = static:{gid}",
                          "virtual_minimum_uid = 1",
                          f"smtpd_milters = {odk.endpoint}, {peer.endpoint}",
                          f"non_smtpd_milters = {odk.endpoint}",
                          "milter_default_action = tempfail")
        s.start()
        s.odk = odk
        s.peer = peer
        yield s
    finally:
        odk.stop()
        peer.stop()


def test_smtps_submission_is_signed(site):
    ctx = ssl.create_default_context(cafile=str(site.ca.path))
    ctx.check_hostname = False
    with smtplib.SMTP_SSL("127.0.0.1", site.smtps, timeout=60, context=ctx) as c:
        c.ehlo("mua.example")
        c.login(USER, PASSWORD)
        c.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], message("signed on smtps"))
    got = wait_for_subject(site.inst, "signed on smtps")
    assert b"DKIM-Signature:" in got, got[:2000]
    assert f"d={DOMAIN}".encode() in got and b"s=sel" in got
    assert dkim.verify(got, dnsfunc=site.odk.dns_txt), got[:3000]
    # The milter after OpenDKIM in smtpd_milters saw its signature, and the
    # macros of an authenticated TLS session on the ORIGINATING service.
    session = next(x for x in site.peer.sessions if x.of("M"))
    site.peer.wait_closed(len(site.peer.sessions))
    macros = session.macros
    assert macros["C"]["{daemon_name}"] == "ORIGINATING"
    assert macros["H"]["{tls_version}"].startswith("TLSv1")
    assert macros["H"]["{cipher}"] and int(macros["H"]["{cipher_bits}"]) >= 128
    assert macros["M"]["{auth_authen}"] == USER
    assert macros["M"]["{auth_type}"] in ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256")
    assert macros["M"]["{mail_addr}"] == f"alice@{DOMAIN}"
    headers = [e.fields for e in session.of("L")]
    assert headers[0][0] == "DKIM-Signature", headers


def test_inbound_mail_is_verified_not_signed(site):
    private = (site.odk.dir / "sel.private").read_bytes()
    good = message("verified inbound")
    signed = dkim.sign(good, b"sel", DOMAIN.encode(), private,
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    original = message("tampered inbound")
    tampered = dkim.sign(original, b"sel", DOMAIN.encode(), private,
                         include_headers=[b"from", b"to", b"subject", b"date"]) + original
    tampered = tampered.replace(b"this is tampered inbound.", b"this was changed later.")
    with smtplib.SMTP("127.0.0.1", site.inst.port, timeout=60) as c:
        c.ehlo("sender.example")
        c.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], signed + good)
        c.sendmail(f"alice@{DOMAIN}", [f"bob@{DOMAIN}"], tampered)
    got = wait_for_subject(site.inst, "verified inbound")
    assert b"Authentication-Results: mx.hato.test;" in got
    assert b"dkim=pass" in got, got[:2000]
    assert got.count(b"DKIM-Signature:") == 1  # the sender's, not a new one
    bad = wait_for_subject(site.inst, "tampered inbound")
    assert b"dkim=fail" in bad, bad[:2000]


def test_sendmail_mail_is_not_signed_but_passes(site):
    """non_smtpd_milters: local mail goes through OpenDKIM too (it is not
    ORIGINATING and not from an internal host: verified, nothing to sign)."""
    r = site.inst.sendmail("-f", f"alice@{DOMAIN}", f"bob@{DOMAIN}",
                           message=message("local via sendmail"))
    assert r.returncode == 0, r.stderr
    got = wait_for_subject(site.inst, "local via sendmail")
    assert b"DKIM-Signature:" not in got

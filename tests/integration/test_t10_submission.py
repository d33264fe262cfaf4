"""t-10: the reference setup's submission (587: STARTTLS required, SASL
AUTH, only authenticated clients relay) and smtps (465: TLS from the first
byte) services, with its master.cf lines unchanged but for the addresses,
driven by real clients: swaks, msmtp, Python's smtplib and openssl
s_client. Users live in hato's sasldb (smtpd.conf: auxprop/sasldb) or
behind Debian's saslauthd (smtpd.conf: pwcheck_method: saslauthd)."""

from __future__ import annotations

import os
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.certs import TestCA
from tests.conftest import require_tool

from .instance import GROUP, free_port, smtp_ready

pytestmark = pytest.mark.integration

USER, PASSWORD = "alice@hato.test", "s3cret pass"

REFERENCE = """\
127.0.0.1:{sub} inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_reject_unlisted_recipient=yes
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
127.0.0.1:{smtps} inet  n       -       n       -       -       smtpd
  -o syslog_name=postfix/smtps
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_reject_unlisted_recipient=yes
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
"""


def _without_submission(master: str, port: int) -> str:
    """hato init's master.cf less its own submission entry."""
    out, skip = [], False
    for line in master.splitlines(keepends=True):
        if line.startswith(f"127.0.0.1:{port + 62} "):
            skip = True
            continue
        if skip and line[:1] in (" ", "\t"):
            continue
        skip = False
        out.append(line)
    return "".join(out)


class Site:
    def __init__(self, inst, ca: TestCA, backend: str):
        self.inst = inst
        self.ca = ca
        self.sub, self.smtps = free_port(), free_port()
        root = inst.root
        issued = ca.issue("mx.hato.test")
        for p in (issued.cert, issued.key):
            shutil.copy(p, root / p.name)
            os.chmod(root / p.name, 0o644)
        self.sasldb = root / "sasldb.lmdb"
        conf = root / "sasl"
        conf.mkdir(exist_ok=True)  # hato init made it
        if backend == "sasldb":
            (conf / "smtpd.conf").write_text(
                f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {self.sasldb}\n"
                "mech_list: PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\n")
        else:
            (conf / "smtpd.conf").write_text(
                f"pwcheck_method: saslauthd\nsaslauthd_path: {backend}\nmech_list: PLAIN LOGIN\n")
        inst.postconf(f"smtpd_tls_cert_file = {root / issued.cert.name}",
                      f"smtpd_tls_key_file = {root / issued.key.name}",
                      f"cyrus_sasl_config_path = {conf}",
                      "smtpd_tls_loglevel = 1",
                      "smtpd_tls_received_header = yes",
                      "smtpd_sasl_authenticated_header = yes",
                      # relaying elsewhere is what submission is for
                      "relay_domains = ", "mynetworks = 192.0.2.0/24")
        master = root / "master.cf"
        master.write_text(_without_submission(master.read_text(), inst.port)
                          + REFERENCE.format(sub=self.sub, smtps=self.smtps))
        if backend == "sasldb":
            r = inst.cmd("saslpasswd", "-p", "-c", "-f", str(self.sasldb), USER,
                         input=(PASSWORD + "\n").encode())
            assert r.returncode == 0, r.stderr
            if os.geteuid() == 0:  # smtpd runs as mail_owner: let its group read
                shutil.chown(self.sasldb, group=GROUP)
                os.chmod(self.sasldb, 0o640)

    def start(self) -> None:
        self.inst.start()
        self.inst.wait_for(lambda: smtp_ready(self.sub), what="submission listening")

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca.path))
        ctx.check_hostname = False
        return ctx




@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def site(instance, ca):
    s = Site(instance, ca, "sasldb")
    s.start()
    return s


def test_submission_demands_tls_then_auth(site):
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as s:
        s.ehlo("mua.example")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth")  # no AUTH before TLS under encrypt
        code, text = s.docmd("MAIL FROM:<alice@hato.test>")
        assert (code, text) == (530, b"5.7.0 Must issue a STARTTLS command first")
        code, text = s.docmd("AUTH PLAIN AGFsaWNlAHB3")
        assert code in (503, 530), text
        s.starttls(context=site.context())
        s.ehlo("mua.example")
        assert "PLAIN" in s.esmtp_features["auth"] and "LOGIN" in s.esmtp_features["auth"]
        s.mail("alice@hato.test")
        code, text = s.rcpt("someone@elsewhere.example")
        # not authenticated: no relaying (smtpd_relay_restrictions defer first, as Postfix)
        assert code == 454, text
        s.rset()
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            s.login(USER, "wrong password")
        assert err.value.smtp_code == 535
        s.login(USER, PASSWORD)
        s.sendmail("alice@hato.test", ["demo@hato.test"],
                   b"Subject: submitted\r\n\r\nvia submission\r\n")
    log = site.inst.log_text()
    assert re.search(r"postfix/submission/smtpd\[\d+\]: \w+: client=\S+\[127\.0\.0\.1\], "
                     r"sasl_method=(PLAIN|LOGIN|CRAM-MD5|SCRAM-SHA-256), "
                     rf"sasl_username={re.escape(USER)}", log), log
    assert "SASL" in log and "authentication failed" in log


def _maildir_files(inst) -> list[Path]:
    new = inst.root / "mail" / "hato.test" / "demo" / "new"
    return sorted(new.iterdir()) if new.is_dir() else []


def test_swaks_every_mechanism(site):
    swaks = require_tool("swaks", "swaks")
    for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
        r = subprocess.run([swaks, "--server", f"127.0.0.1:{site.sub}", "-tls", "-a", mech,
                            "-au", USER, "-ap", PASSWORD, "--from", "alice@hato.test",
                            "--to", "demo@hato.test", "--header", f"Subject: {mech}"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "235 2.7.0 Authentication successful" in r.stdout
    site.inst.wait_for(lambda: len(_maildir_files(site.inst)) >= 3, what="3 messages")
    text = _maildir_files(site.inst)[0].read_text()
    assert "with ESMTPSA id" in text
    assert f"(Authenticated sender: {USER})" in text
    assert "(using TLSv1." in text


def test_smtps_wrapper_mode_with_swaks_and_openssl(site):
    swaks = require_tool("swaks", "swaks")
    r = subprocess.run([swaks, "--server", f"127.0.0.1:{site.smtps}", "--tlsc", "-a", "PLAIN",
                        "-au", USER, "-ap", PASSWORD, "--from", "alice@hato.test",
                        "--to", "someone@elsewhere.example"],
                       capture_output=True, text=True, timeout=60)
    # authenticated: relaying is allowed (the message then waits for the
    # SMTP client, which this instance does not run yet)
    assert "250 2.0.0 Ok: queued as" in r.stdout, r.stdout + r.stderr
    openssl = require_tool("openssl", "openssl")
    # -ign_eof: keep reading after our input ends, until the server closes
    # after QUIT; -verify_return_error: a certificate that does not verify
    # against the test CA fails the run.
    r = subprocess.run([openssl, "s_client", "-connect", f"127.0.0.1:{site.smtps}",
                        "-CAfile", str(site.ca.path), "-verify_return_error", "-quiet",
                        "-ign_eof", "-crlf"],
                       input="EHLO x\nQUIT\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "220 " in r.stdout and "250-AUTH PLAIN LOGIN" in r.stdout, r.stdout + r.stderr
    assert "221 2.0.0 Bye" in r.stdout


def test_msmtp_submission_and_smtps(site, tmp_path):
    msmtp = require_tool("msmtp", "msmtp")
    conf = tmp_path / "msmtprc"
    conf.write_text(f"""\
defaults
auth on
user {USER}
password {PASSWORD}
tls on
tls_trust_file {site.ca.path}
tls_certcheck off
from alice@hato.test
account sub
host 127.0.0.1
port {site.sub}
tls_starttls on
account smtps
host 127.0.0.1
port {site.smtps}
tls_starttls off
""")
    conf.chmod(0o600)
    for account in ("sub", "smtps"):
        r = subprocess.run([msmtp, "-C", str(conf), "-a", account, "demo@hato.test"],
                           input=f"Subject: msmtp {account}\n\nhello\n", capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
    site.inst.wait_for(lambda: len(_maildir_files(site.inst)) >= 2, what="2 messages")


def test_starttls_injection_is_not_executed(site):
    with socket.create_connection(("127.0.0.1", site.sub), timeout=30) as raw:
        f = raw.makefile("rb")

        def reply(stream) -> bytes:
            out = b""
            while True:
                line = stream.readline()
                out += line
                if line[3:4] != b"-":
                    return out

        reply(f)
        raw.sendall(b"EHLO x\r\n")
        reply(f)
        # pipelined behind STARTTLS: a command that, were it run under TLS,
        # would answer something else than NOOP's 250 (503: no EHLO yet)
        raw.sendall(b"STARTTLS\r\nMAIL FROM:<injected@example.org>\r\n")
        assert reply(f).startswith(b"220 ")
        tls = site.context().wrap_socket(raw)
        tf = tls.makefile("rb")
        tls.sendall(b"NOOP\r\n")
        # the first reply under TLS answers NOOP; the injected MAIL is gone
        assert reply(tf).startswith(b"250 2.0.0 Ok")
        tls.sendall(b"NOOP\r\n")
        assert reply(tf).startswith(b"250 2.0.0 Ok")
        tls.sendall(b"QUIT\r\n")
        reply(tf)


def test_tls_garbage_and_stalled_handshakes_do_not_hurt_others(site):
    # garbage instead of a ClientHello, on smtps; a client that stops mid-way
    bad = socket.create_connection(("127.0.0.1", site.smtps), timeout=10)
    bad.sendall(os.urandom(3000))
    stalled = socket.create_connection(("127.0.0.1", site.smtps), timeout=10)
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc")  # a truncated ClientHello
    big = socket.create_connection(("127.0.0.1", site.sub), timeout=10)
    big.recv(100)
    big.sendall(b"X" * 1_000_000)
    with smtplib.SMTP_SSL("127.0.0.1", site.smtps, timeout=30, context=site.context()) as s:
        s.login(USER, PASSWORD)
        s.sendmail("alice@hato.test", ["demo@hato.test"], b"Subject: still fine\r\n\r\nx\r\n")
    for s in (bad, stalled, big):
        s.close()
    site.inst.wait_for(lambda: len(_maildir_files(site.inst)) >= 1, what="the message")
    assert "killed by signal" not in site.inst.log_text()


def test_testssl_finds_no_weak_protocols_or_ciphers(site, tmp_path):
    """testssl.sh against smtps and against submission's STARTTLS: no SSLv2/
    SSLv3/TLS 1.0/TLS 1.1 and no NULL, anonymous, EXPORT or LOW ciphers under
    the defaults. Its JSON findings are kept as test artifacts."""
    import json

    testssl = shutil.which("testssl") or shutil.which("testssl.sh") or require_tool(
        "testssl", "testssl.sh")
    artifacts = Path(os.environ.get("HATO_TEST_ARTIFACTS", tempfile.gettempdir()))
    for label, extra, port in (("smtps", [], site.smtps),
                               ("starttls", ["-t", "smtp"], site.sub)):
        out = tmp_path / f"testssl-{label}.json"
        r = subprocess.run([testssl, "--quiet", "--color", "0", "--warnings", "off", "--fast",
                            "--openssl-timeout", "5", "-p", "-s", *extra,
                            "--jsonfile", str(out), f"127.0.0.1:{port}"],
                           capture_output=True, text=True, timeout=600)
        findings = out.read_text() if out.exists() else ""
        (artifacts / f"testssl-{label}.json").write_text(findings)
        assert findings, r.stdout + r.stderr
        items = {i["id"]: i["finding"] for i in json.loads(findings)}
        for proto in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
            assert items.get(proto, "").startswith("not offered"), (label, proto, items)
        assert items.get("TLS1_3", "").startswith("offered"), (label, items)
        for weak in ("cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT",
                     "cipherlist_LOW"):
            assert items.get(weak, "").startswith("not offered"), (label, weak, items)


@pytest.fixture
def saslauthd_user():
    """A system user with a password, behind Debian's saslauthd -a shadow."""
    name, pw = "hatot10", "shadow pass 1"
    if subprocess.run(["getent", "passwd", name], capture_output=True).returncode:
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    subprocess.run(["chpasswd"], input=f"{name}:{pw}\n", text=True, check=True)
    rundir = Path(tempfile.mkdtemp(prefix="hato-saslauthd-"))
    os.chmod(rundir, 0o755)
    daemon = require_tool("saslauthd", "sasl2-bin")
    # its own session: saslauthd signals its whole process group on exit
    proc = subprocess.Popen([daemon, "-a", "shadow", "-m", str(rundir), "-n", "2", "-d"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    mux = rundir / "mux"
    deadline = time.monotonic() + 15
    while not mux.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield name, pw, str(mux)
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(rundir, ignore_errors=True)
    subprocess.run(["userdel", name], capture_output=True)


def test_submission_through_debian_saslauthd(instance, ca, saslauthd_user):
    name, pw, mux = saslauthd_user
    s = Site(instance, ca, mux)
    s.start()
    with smtplib.SMTP("127.0.0.1", s.sub, timeout=30) as c:
        c.starttls(context=s.context())
        c.ehlo("mua.example")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login(name, "not it")
        c.login(name, pw)
        c.sendmail("alice@hato.test", ["demo@hato.test"], b"Subject: via saslauthd\r\n\r\nx\r\n")
    instance.wait_for(lambda: len(_maildir_files(instance)) >= 1, what="the message")
    assert f"sasl_username={name}" in instance.log_text()

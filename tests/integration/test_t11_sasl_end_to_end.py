"""t11: hato's smtpd (the reference setup's submission service, STARTTLS
required) authenticating real clients — swaks ``-tls -a PLAIN|LOGIN|CRAM-MD5``
and Python's smtplib — end to end through each SASL backend:

* Debian's Dovecot auth (``smtpd_sasl_type = dovecot``), its auth-client
  socket at an absolute path and at ``private/auth`` (relative to the queue
  directory, as in Postfix's documentation);
* Debian's saslauthd ``-a sasldb``, which always reads ``/etc/sasldb2``:
  the test creates that file only when it does not exist and removes it
  afterwards; when it exists the test fails rather than touch it;
* hato's own sasldb with SCRAM-SHA-256 and SCRAM-SHA-1 from a scramp client,
  which verifies the server's final message;
* ``smtpd_sender_login_maps`` with ``reject_sender_login_mismatch`` on
  submission.

Started by root, smtpd's workers run as the user ``hato``: the daemons'
sockets are mode 0666 in directories that user can search.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import smtplib
import subprocess
import textwrap

import pytest

from tests.certs import TestCA
from tests.conftest import require_tool

from .sasl_daemons import Dovecot, Saslauthd
from .test_t10_submission import PASSWORD, USER, Site, _maildir_files

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


ALICE, ALICE_PW = "alice@hato.test", "wonder land"
BOB, BOB_PW = "bob@hato.test", "builder"
LOGIN_RE = (r"postfix/submission/smtpd\[\d+\]: \w+: client=\S+\[127\.0\.0\.1\], "
            r"sasl_method={mech}, sasl_username={user}")


def make_site(instance, ca, backend: str) -> Site:
    """t10's Site, which writes its own sasl/smtpd.conf (hato init now
    writes one too: t10's Site expects none)."""
    shutil.rmtree(instance.root / "sasl", ignore_errors=True)
    return Site(instance, ca, backend)


def swaks(site: Site, mech: str, user: str, password: str, *, sender: str = ALICE,
          subject: str = "") -> subprocess.CompletedProcess:
    exe = require_tool("swaks", "swaks")
    return subprocess.run([exe, "--server", f"127.0.0.1:{site.sub}", "-tls", "-a", mech,
                           "-au", user, "-ap", password, "--from", sender,
                           "--to", "demo@hato.test", "--header", f"Subject: {subject or mech}"],
                          check=False, capture_output=True, text=True, timeout=60)


def smtplib_login(site: Site, user: str, password: str, *, send: bool = True) -> None:
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.starttls(context=site.context())
        c.ehlo("mua.example")
        code, _ = c.login(user, password)
        assert code == 235
        if send:
            c.sendmail(user, ["demo@hato.test"], b"Subject: smtplib\r\n\r\nx\r\n")


def wrong_password_is_535(site: Site, user: str, mech: str) -> None:
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.starttls(context=site.context())
        c.ehlo("mua.example")
        c.user, c.password = user, "not the password"
        authobject = {"PLAIN": c.auth_plain, "LOGIN": c.auth_login,
                      "CRAM-MD5": c.auth_cram_md5}[mech]
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            c.auth(mech, authobject, initial_response_ok=mech == "PLAIN")
        assert err.value.smtp_code == 535, err.value
        assert err.value.smtp_error.startswith(b"5.7.8 "), err.value


def advertised(site: Site) -> list[str]:
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.starttls(context=site.context())
        c.ehlo("mua.example")
        return c.esmtp_features.get("auth", "").split()


# -- Dovecot ---------------------------------------------------------------------------

def dovecot_site(instance, ca, socket_path: str | None, sasl_path: str | None = None):
    """The instance with smtpd_sasl_type = dovecot; Dovecot started with its
    auth-client socket at *socket_path* (None: its temp directory) and
    main.cf's smtpd_sasl_path = *sasl_path* (None: the socket's absolute path)."""
    site = make_site(instance, ca, "/nonexistent/mux")   # its smtpd.conf is not read
    daemon = Dovecot(failure_delay="0", socket=socket_path, users=[])
    users = [f"{ALICE}:{{PLAIN}}{ALICE_PW}", f"{BOB}:{daemon.hash('CRAM-MD5', BOB_PW)}"]
    with open(os.path.join(daemon.dir, "passwd"), "w") as f:
        f.write("".join(u + "\n" for u in users))
    instance.postconf("smtpd_sasl_type = dovecot",
                      f"smtpd_sasl_path = {sasl_path or daemon.socket}")
    return site, daemon


@pytest.fixture
def dovecot_absolute(instance, ca):
    site, daemon = dovecot_site(instance, ca, None)
    try:
        daemon.start()
        site.start()
        yield site, daemon
    finally:
        daemon.cleanup()


def test_dovecot_absolute_socket(dovecot_absolute):
    site, _daemon = dovecot_absolute
    assert advertised(site) == ["PLAIN", "LOGIN", "CRAM-MD5"]
    # alice has a {PLAIN} password: every mechanism; bob's {CRAM-MD5} one too
    for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
        r = swaks(site, mech, ALICE, ALICE_PW)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "235 2.7.0 Authentication successful" in r.stdout
    for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
        r = swaks(site, mech, BOB, BOB_PW, sender=BOB)
        assert r.returncode == 0, (mech, r.stdout + r.stderr)
    smtplib_login(site, ALICE, ALICE_PW)
    for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
        wrong_password_is_535(site, ALICE, mech)
    r = swaks(site, "PLAIN", ALICE, "nope")
    assert r.returncode != 0 and "535 5.7.8 Error: authentication failed" in r.stdout, r.stdout
    site.inst.wait_for(lambda: len(_maildir_files(site.inst)) >= 7, what="7 messages")
    log = site.inst.log_text()
    for mech in ("PLAIN", "LOGIN", "CRAM-MD5"):
        for user in (ALICE, BOB):
            assert re.search(LOGIN_RE.format(mech=mech, user=re.escape(user)), log), (mech, user)
    assert re.search(r"warning: \S+\[127\.0\.0\.1\]: SASL (PLAIN|LOGIN|CRAM-MD5) "
                     r"authentication failed", log), log
    text = _maildir_files(site.inst)[0].read_text()
    assert "with ESMTPSA id" in text and "(Authenticated sender: " in text


@pytest.fixture
def dovecot_in_queue(instance, ca):
    queue = instance.root / "queue"
    site, daemon = dovecot_site(instance, ca, str(queue / "private" / "auth"), "private/auth")
    try:
        site.start()    # hato start makes queue/private (owned by hato, mode 0700)
        assert (queue / "private").is_dir()
        daemon.start()  # Dovecot runs as root: it places its 0666 socket there
        yield site, daemon
    finally:
        daemon.cleanup()


def test_dovecot_socket_relative_to_queue_directory(dovecot_in_queue):
    site, daemon = dovecot_in_queue
    assert daemon.socket == str(site.inst.root / "queue" / "private" / "auth")
    assert advertised(site) == ["PLAIN", "LOGIN", "CRAM-MD5"]
    for mech in ("PLAIN", "LOGIN"):
        r = swaks(site, mech, ALICE, ALICE_PW)
        assert r.returncode == 0, r.stdout + r.stderr
    wrong_password_is_535(site, ALICE, "PLAIN")
    smtplib_login(site, BOB, BOB_PW)
    log = site.inst.log_text()
    assert re.search(LOGIN_RE.format(mech="PLAIN", user=re.escape(ALICE)), log), log


# -- saslauthd -a sasldb ---------------------------------------------------------------

@pytest.fixture
def saslauthd_sasldb(tmp_path):
    """Debian's saslauthd -a sasldb serving a database made for the test,
    with one user (saslauthd sees it as /etc/sasldb2 in a mount namespace of
    its own; the machine's /etc/sasldb2 is not touched)."""
    saslpasswd2 = require_tool("saslpasswd2", "sasl2-bin")
    db = tmp_path / "sasldb2"
    # saslauthd gets "carol" and realm "hato.test" (libsasl splits the login
    # at its last @), and sasldb keys on exactly that pair
    subprocess.run([saslpasswd2, "-f", str(db), "-c", "-p", "-u", "hato.test", "carol"],
                   input="sasl db pw\n", text=True, check=True, timeout=30)
    daemon = Saslauthd(mechanism="sasldb", sasldb=str(db))
    try:
        daemon.setup()
        yield daemon, "carol@hato.test", "sasl db pw"
    finally:
        daemon.cleanup()


def test_debian_saslauthd_with_sasldb(instance, ca, saslauthd_sasldb):
    daemon, user, password = saslauthd_sasldb
    site = make_site(instance, ca, daemon.mux)
    site.start()
    assert advertised(site) == ["PLAIN", "LOGIN"]
    for mech in ("PLAIN", "LOGIN"):
        r = swaks(site, mech, user, password, sender=user)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "235 2.7.0 Authentication successful" in r.stdout
    smtplib_login(site, user, password)
    wrong_password_is_535(site, user, "PLAIN")
    wrong_password_is_535(site, user, "LOGIN")
    # the realm is part of the key: the same name in another realm is not carol
    r = swaks(site, "PLAIN", "carol@elsewhere.test", password)
    assert r.returncode != 0 and "535 5.7.8" in r.stdout, r.stdout
    site.inst.wait_for(lambda: len(_maildir_files(site.inst)) >= 3, what="3 messages")
    log = site.inst.log_text()
    for mech in ("PLAIN", "LOGIN"):
        assert re.search(LOGIN_RE.format(mech=mech, user=re.escape(user)), log), log


# -- hato's sasldb: SCRAM ----------------------------------------------------------------

def scram_login(site: Site, mech: str, user: str, password: str) -> None:
    import scramp

    client = scramp.ScramClient([mech], user, password)
    steps: list[str] = []

    def authobject(challenge: bytes | None = None) -> str:
        if challenge is None:
            steps.append("client-first")
            return client.get_client_first()
        if len(steps) == 1:
            client.set_server_first(challenge.decode())
            steps.append("client-final")
            return client.get_client_final()
        client.set_server_final(challenge.decode())     # raises unless the signature checks
        steps.append("server-final verified")
        return ""

    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.starttls(context=site.context())
        c.ehlo("mua.example")
        assert mech in c.esmtp_features["auth"].split()
        code, text = c.auth(mech, authobject)
        assert code == 235, text
        assert steps == ["client-first", "client-final", "server-final verified"], steps
        c.sendmail(user, ["demo@hato.test"], f"Subject: {mech}\r\n\r\nx\r\n".encode())

    # a wrong password: the server's first message, then 535 for the proof
    bad = scramp.ScramClient([mech], user, "wrong")
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.starttls(context=site.context())
        c.ehlo("mua.example")
        code, text = c.docmd("AUTH", f"{mech} {b64(bad.get_client_first())}")
        assert code == 334, text
        bad.set_server_first(base64.b64decode(text).decode())
        code, text = c.docmd(b64(bad.get_client_final()))
        assert code == 535, (code, text)


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


@pytest.fixture
def scram_site(instance, ca):
    site = make_site(instance, ca, "sasldb")
    conf = instance.root / "sasl" / "smtpd.conf"
    conf.write_text(conf.read_text().replace("SCRAM-SHA-256", "SCRAM-SHA-256 SCRAM-SHA-1"))
    site.start()
    return site


def test_hato_sasldb_scram(scram_site):
    assert advertised(scram_site) == ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256",
                                      "SCRAM-SHA-1"]
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        scram_login(scram_site, mech, USER, PASSWORD)
    scram_site.inst.wait_for(lambda: len(_maildir_files(scram_site.inst)) >= 2,
                             what="2 messages")
    log = scram_site.inst.log_text()
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        assert re.search(LOGIN_RE.format(mech=mech, user=re.escape(USER)), log), log


# -- smtpd_sender_login_maps -------------------------------------------------------------

@pytest.fixture
def login_maps_site(instance, ca):
    site = make_site(instance, ca, "sasldb")
    r = instance.cmd("saslpasswd", "-p", "-c", "-f", str(site.sasldb), BOB,
                     input=(BOB_PW + "\n").encode())
    assert r.returncode == 0, r.stderr
    owners = instance.root / "sender_logins"
    owners.write_text(textwrap.dedent(f"""\
        {ALICE}   {ALICE}
        {BOB}     {BOB}
        shared@hato.test  {ALICE}, {BOB}
        """))
    instance.postconf(f"smtpd_sender_login_maps = texthash:{owners}")
    master = instance.root / "master.cf"
    text, n = re.subn(r"(?m)^(  -o syslog_name=postfix/submission\n)",
                      r"\1  -o smtpd_sender_restrictions=reject_sender_login_mismatch\n",
                      master.read_text())
    assert n == 1
    master.write_text(text)
    site.start()
    return site


def test_sender_login_mismatch_on_submission(login_maps_site):
    site = login_maps_site
    assert USER == ALICE
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.starttls(context=site.context())
        c.ehlo("mua.example")
        c.login(ALICE, PASSWORD)
        # smtpd_delay_reject = yes: the sender is judged at RCPT
        code, _ = c.mail(BOB)
        assert code == 250
        code, text = c.rcpt("demo@hato.test")
        assert (code, text) == (553, f"5.7.1 <{BOB}>: Sender address rejected: not owned by "
                                     f"user {ALICE}".encode())
        c.rset()
        for own in (ALICE, "shared@hato.test"):
            c.mail(own)
            code, text = c.rcpt("demo@hato.test")
            assert code == 250, (own, text)
            code, text = c.data(b"Subject: own address\r\n\r\nx\r\n")
            assert code == 250, text
        # an address nobody owns is not alice's either (Postfix's
        # reject_known_sender_login_mismatch would let it pass)
        c.mail("nobody@elsewhere.example")
        code, text = c.rcpt("demo@hato.test")
        assert (code, text) == (553, b"5.7.1 <nobody@elsewhere.example>: Sender address "
                                     b"rejected: not owned by user " + ALICE.encode())
    # bob, logged in, may send as himself but not as alice
    r = swaks(site, "PLAIN", BOB, BOB_PW, sender=BOB)
    assert r.returncode == 0, r.stdout + r.stderr
    r = swaks(site, "PLAIN", BOB, BOB_PW, sender=ALICE)
    assert f"553 5.7.1 <{ALICE}>: Sender address rejected: not owned by user {BOB}" in r.stdout, \
        r.stdout
    log = site.inst.log_text()
    assert re.search(rf"NOQUEUE: reject: RCPT from \S+\[127\.0\.0\.1\]: 553 5\.7\.1 <{BOB}>: "
                     rf"Sender address rejected: not owned by user {ALICE}; from=<{BOB}> "
                     r"to=<demo@hato\.test> proto=ESMTP\w* helo=<mua\.example>", log), log

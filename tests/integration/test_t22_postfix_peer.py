"""t-22: hato's smtp delivery agent relaying to Debian's Postfix.

Each test starts a private Postfix (tests/postfix_instance.py: its own
config directory, queue and log, smtpd on a loopback port of its own)
and a hato instance whose ``relayhost`` is ``[127.0.0.1]:PORT`` of that
Postfix. A mail goes into hato with ``sendmail``; hato's smtp agent hands
it to Postfix's smtpd. What happened is read on both sides:

* hato's log: Postfix's ``to=<...>, relay=..., dsn=..., status=... (...)``
  lines, with Postfix's replies quoted in them;
* Postfix's log (its own ``maillog``): the queue id it announced, TLS and
  SASL lines, its virtual(8) delivery;
* the Maildirs Postfix's virtual(8) delivers into (domain ``peer.test``,
  mailboxes listed in a texthash table, owned by ``nobody``), and the
  Maildir of hato's sender ``demo@hato.test``, where bounces go.

The peers:

* plain: no TLS; ``check_recipient_access hash:`` (rebuilt with postmap
  while Postfix runs: smtpd notices the new table before its next
  session) says 450 to recipients the test wants deferred; unknown
  recipients of peer.test get Postfix's own ``550 5.1.1 ... User unknown
  in virtual mailbox table``.
* TLS: ``smtpd_tls_cert_file``/``key_file`` issued by a test CA for
  ``mx.hato.test``; hato checks it with ``verify`` against that CA.
* TLS + SASL: Cyrus SASL through Debian's saslauthd (``-a shadow``, a
  system user the fixture creates and removes, a socket in a temp dir),
  AUTH only after STARTTLS (``smtpd_tls_auth_only``), relaying only for
  authenticated clients (mynetworks does not hold 127.0.0.1).
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import re
import shutil
import socket
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest

from tests.certs import TestCA
from tests.conftest import require_tool
from tests.ports import free_port, port_holders
from tests.postfix_instance import PostfixInstance

from .instance import Instance
from .maillog import statuses, wait_status
from .sasl_daemons import Saslauthd

pytestmark = pytest.mark.integration

SENDER = "demo@hato.test"
DOMAIN = "peer.test"
MAILBOXES = ("alice", "bob", "carol", "later", "dave", "erin", "frank")
PF_NAME = "mx.hato.test"          # Postfix's myhostname and its certificate's name
SASL_PASSWORD = "t22 Pass-word"   # saslauthd's user; a space inside, as texthash allows
NOBODY = 65534

# -- hato's log ---------------------------------------------------------------------------

def send(inst: Instance, *rcpts: str, subject: str, body: bytes = b"hello there\n",
         headers: bytes = b"") -> bytes:
    msg = (f"From: {SENDER}\nTo: {', '.join(rcpts)}\nSubject: {subject}\n".encode()
           + headers + b"\n" + body)
    r = inst.sendmail("-i", "-f", SENDER, *rcpts, message=msg)  # -i: a lone "." is text
    assert r.returncode == 0, r.stderr
    return msg


def relay_of(pf: PostfixInstance) -> str:
    return f"127.0.0.1[127.0.0.1]:{pf.port}"


def flush(inst: Instance) -> None:
    r = inst.cmd("flush")
    assert r.returncode == 0, r.stderr


# -- Postfix's side -----------------------------------------------------------------------

class Peer:
    """A private Postfix delivering peer.test into Maildirs (virtual(8)),
    with the files it needs in a directory of its own (mode 0755: Postfix's
    daemons run as postfix and nobody)."""

    def __init__(self, *, tls: Path | None = None, sasl_socket: str | None = None,
                 extra: str = "") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ht22pf"))
        os.chmod(self.dir, 0o755)
        self.vmail = self.dir / "vmail"
        self.vmail.mkdir()
        os.chown(self.vmail, NOBODY, NOBODY)
        (self.dir / "vmailbox").write_text(
            "".join(f"{u}@{DOMAIN} {DOMAIN}/{u}/\n" for u in MAILBOXES))
        # postmap reads a main.cf; this one only names hash as the default type
        (self.dir / "pmconf").mkdir()
        (self.dir / "pmconf" / "main.cf").write_text("compatibility_level = 3.6\n")
        self.access({})
        # an old table: smtpd sees the next postmap as a change, whatever the clock says
        os.utime(self.dir / "access.db", (1_000_000_000, 1_000_000_000))
        main = [
            f"virtual_mailbox_domains = {DOMAIN}",
            f"virtual_mailbox_base = {self.vmail}",
            f"virtual_mailbox_maps = texthash:{self.dir}/vmailbox",
            f"virtual_uid_maps = static:{NOBODY}",
            f"virtual_gid_maps = static:{NOBODY}",
            "virtual_transport = virtual",
            f"smtpd_recipient_restrictions = check_recipient_access hash:{self.dir}/access",
        ]
        master = "virtual unix - n n - - virtual\n"
        if tls is not None:
            cert, key = tls
            main += [f"smtpd_tls_cert_file = {cert}", f"smtpd_tls_key_file = {key}",
                     "smtpd_tls_security_level = may", "smtpd_tls_loglevel = 1",
                     "smtpd_tls_received_header = yes"]
            master += "tlsmgr unix - - n 1000? 1 tlsmgr\n"
        conf_files = {}
        if sasl_socket is not None:
            # Debian's Postfix has libsasl read $config_directory/sasl/smtpd.conf
            conf_files["sasl/smtpd.conf"] = (f"pwcheck_method: saslauthd\nsaslauthd_path: "
                                             f"{sasl_socket}\nmech_list: PLAIN LOGIN\n")
            main += ["smtpd_sasl_auth_enable = yes", "smtpd_sasl_type = cyrus",
                     "smtpd_sasl_path = smtpd",
                     "smtpd_sasl_security_options = noanonymous",
                     "smtpd_sasl_tls_security_options = noanonymous",
                     "smtpd_tls_auth_only = yes",
                     # 127.0.0.1 relays only when authenticated
                     "mynetworks = 192.0.2.1/32",
                     ("smtpd_relay_restrictions = permit_sasl_authenticated, "
                      "reject_unauth_destination")]
        self.pf = PostfixInstance("\n".join(main) + "\n" + extra, master_cf_extra=master,
                                  name="t22", conf_files=conf_files)

    def __enter__(self) -> Peer:  # noqa: PYI034
        try:
            self.pf.start()
            if not self.greets():
                # a Postfix whose first smtpd never came up: start it afresh
                # on a port of its own, and say what the first one's processes
                # waited in. (The cause seen so far, postlogd blocked by a
                # flood of "overriding earlier entry" warnings at start, is
                # gone: tests/postfix_instance.py writes each setting once.)
                old, holders = self.pf.root, port_holders(self.port)
                first = f"{self.log()[-2000:]}\n{self.pf.processes_report()}"
                # in the run's warnings summary even when the second try works
                warnings.warn(f"Postfix did not greet on 127.0.0.1:{self.port} (started "
                              f"afresh):\n{holders}\n{first}", stacklevel=1)
                self.pf.stop()
                shutil.rmtree(old, ignore_errors=True)
                self.pf.port = free_port()
                self.pf.start()
                if not self.greets(timeout=60.0):
                    raise AssertionError(f"Postfix does not greet on 127.0.0.1:{self.port}\n"
                                         f"{self.log()[-3000:]}\n{port_holders(self.port)}\n"
                                         f"{self.pf.processes_report()}\n"
                                         f"the first try: {holders}\n{first}")
        except BaseException:
            self.cleanup()
            raise
        return self

    def greets(self, timeout: float = 20.0) -> bool:
        """Does Postfix's smtpd answer with its 220 greeting (one session)?"""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
                s.settimeout(timeout)
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(512)
                    if not chunk:
                        return False
                    data += chunk
                s.sendall(b"QUIT\r\n")
                return data.startswith(b"220")
        except OSError:
            return False

    def __exit__(self, *exc) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        try:
            self.pf.cleanup()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def port(self) -> int:
        return self.pf.port

    def access(self, entries: dict[str, str]) -> None:
        """Write and postmap the check_recipient_access table."""
        table = self.dir / "access"
        table.write_text("".join(f"{k} {v}\n" for k, v in entries.items()))
        postmap = require_tool("postmap", "postfix")
        env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        subprocess.run([postmap, "-c", str(self.dir / "pmconf"), f"hash:{table}"],
                       check=True, capture_output=True, env=env)

    def log(self) -> str:
        return self.pf.log_text()

    def maildir(self, user: str) -> list[bytes]:
        box = self.vmail / DOMAIN / user
        if not (box / "new").is_dir():
            return []
        md = mailbox.Maildir(str(box), factory=None, create=False)
        return [md.get_bytes(key) for key in sorted(md.keys())]

    def wait_maildir(self, inst: Instance, user: str, count: int = 1) -> list[bytes]:
        inst.wait_for(lambda: len(self.maildir(user)) >= count,
                      what=f"{count} message(s) in {user}@{DOMAIN}'s Maildir"
                      f"\n--- Postfix's log:\n{self.log()[-3000:]}")
        return self.maildir(user)

    def wait_log(self, inst: Instance, pattern: str) -> re.Match:
        found: list[re.Match] = []

        def look() -> bool:
            m = re.search(pattern, self.log(), re.MULTILINE)
            if m:
                found.append(m)
            return m is not None
        inst.wait_for(look, what=f"{pattern!r} in Postfix's log\n--- Postfix's log:\n"
                      f"{self.log()[-3000:]}")
        return found[0]


def body_of(raw: bytes) -> bytes:
    return raw.split(b"\n\n", 1)[1]


def bounce_for(inst: Instance, rcpt: str) -> email.message.Message:
    """The bounce in the sender's Maildir that names *rcpt*."""
    box = inst.root / "mail" / "hato.test" / "demo"
    found: list[email.message.Message] = []

    def look() -> bool:
        if not (box / "new").is_dir():
            return False
        md = mailbox.Maildir(str(box), factory=None, create=False)
        for key in md.iterkeys():
            msg = email.message_from_bytes(md.get_bytes(key), policy=email.policy.compat32)
            if f"rfc822; {rcpt}" in msg.as_string():
                found.append(msg)
                return True
        return False
    inst.wait_for(look, what=f"a bounce for {rcpt} in {box}")
    return found[0]


def hato(instance: Instance, pf: Peer, *settings: str) -> Instance:
    instance.postconf(f"relayhost = [127.0.0.1]:{pf.port}", "smtp_tls_loglevel = 1",
                      *settings)
    instance.start()
    return instance


@pytest.fixture(scope="module")
def pki():
    """A CA and Postfix's certificate, in a directory hato's smtp agent
    (user hato) can read."""
    d = Path(tempfile.mkdtemp(prefix="ht22ca"))
    os.chmod(d, 0o755)
    try:
        ca = TestCA(d)
        yield ca, ca.issue(PF_NAME)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- 1. delivery, a refused recipient, the bounce -----------------------------------------

EIGHT_BIT = ("Grüße aus Köln — ça va?\n"
             ".a line that starts with a dot\n"
             "..and one with two\n"
             ".\n"
             "the end\n").encode()


def test_delivery_and_a_refused_recipient(instance):
    with Peer() as pf:
        inst = hato(instance, pf)
        rcpts = [f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"nobody@{DOMAIN}"]
        sent = send(inst, *rcpts, subject="to Postfix", body=EIGHT_BIT,
                    headers=b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                            b"Content-Transfer-Encoding: 8bit\n")
        a, b, c = (wait_status(inst, r) for r in rcpts)
        for st in (a, b):
            assert (st["status"], st["dsn"], st["relay"]) == ("sent", "2.0.0", relay_of(pf.pf)), st
            # BDAT (Postfix offers CHUNKING): "Ok: N bytes queued as"; DATA: "Ok: queued as"
            assert re.fullmatch(r"250 2\.0\.0 Ok: (\d+ bytes )?queued as [0-9A-F]+", st["text"]), st
        # one transaction: both recipients in the one message Postfix queued
        assert a["text"] == b["text"]
        assert (c["status"], c["dsn"], c["relay"]) == ("bounced", "5.1.1", relay_of(pf.pf)), c
        assert c["text"] == (f"host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <nobody@{DOMAIN}>: "
                             "Recipient address rejected: User unknown in virtual mailbox "
                             "table (in reply to RCPT TO command)"), c
        assert a["qid"] == b["qid"] == c["qid"]

        # Postfix delivered the queue id it announced, to both mailboxes
        pf_qid = a["text"].rsplit(" ", 1)[1]
        for user in ("alice", "bob"):
            pf.wait_log(inst, rf" {pf_qid}: to=<{user}@{DOMAIN}>, relay=virtual, .*"
                        r"status=sent \(delivered to maildir\)")
        pf.wait_log(inst, rf" {pf_qid}: from=<{re.escape(SENDER)}>, size=\d+, nrcpt=2 ")
        pf.wait_log(inst, rf" {pf_qid}: reject: RCPT from \S+\[127\.0\.0\.1\]: 550 5\.1\.1 "
                    rf"<nobody@{DOMAIN}>: Recipient address rejected: User unknown in virtual "
                    "mailbox table;")
        assert f"to=<nobody@{DOMAIN}>, relay=" not in pf.log()
        # ... with the body as sent, byte for byte (8-bit text, dot lines)
        for user in ("alice", "bob"):
            (got,) = pf.wait_maildir(inst, user)
            assert body_of(got) == body_of(sent) == EIGHT_BIT
            headers = got.split(b"\n\n", 1)[0]
            assert f"Delivered-To: {user}@{DOMAIN}".encode() in headers
            assert b"Content-Transfer-Encoding: 8bit" in headers  # not downgraded

        # the bounce to the sender quotes Postfix
        dsn = bounce_for(inst, f"nobody@{DOMAIN}")
        assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
        status = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"]
        rcpt = status[0].get_payload()[1]
        assert rcpt["Final-Recipient"] == f"rfc822; nobody@{DOMAIN}"
        assert (rcpt["Action"], rcpt["Status"]) == ("failed", "5.1.1")
        assert rcpt["Remote-MTA"] == "dns; 127.0.0.1"
        assert " ".join(rcpt["Diagnostic-Code"].split()) == (
            f"smtp; 550 5.1.1 <nobody@{DOMAIN}>: Recipient address rejected: User unknown "
            "in virtual mailbox table")
        text = next(p for p in dsn.walk() if p.get_content_type() == "text/plain")
        human = " ".join(text.get_payload(decode=True).decode().split())
        assert (f"<nobody@{DOMAIN}>: host 127.0.0.1[127.0.0.1] said: 550 5.1.1 "
                f"<nobody@{DOMAIN}>: Recipient address rejected: User unknown in virtual "
                "mailbox table (in reply to RCPT TO command)") in human, human
        inst.wait_for(inst.queue_empty, what="hato's queue emptied")


# -- 2. Postfix says "later" ---------------------------------------------------------------

def test_temporary_refusal_then_flush(instance):
    """450 from check_recipient_access: deferred with Postfix's words while
    the good recipient is delivered; the entry removed, a flush delivers
    the deferred one (and only it)."""
    with Peer() as pf:
        pf.access({f"later@{DOMAIN}": "450 4.2.0 mailbox busy, come back later"})
        # a new session after the flush: only then does Postfix's smtpd read the new table
        inst = hato(instance, pf, "smtp_connection_cache_on_demand = no")
        send(inst, f"carol@{DOMAIN}", f"later@{DOMAIN}", subject="later")
        ok = wait_status(inst, f"carol@{DOMAIN}")
        later = wait_status(inst, f"later@{DOMAIN}")
        assert (ok["status"], ok["dsn"]) == ("sent", "2.0.0"), ok
        assert (later["status"], later["dsn"], later["relay"]) == \
            ("deferred", "4.2.0", relay_of(pf.pf)), later
        assert later["text"] == (f"host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <later@{DOMAIN}>: "
                                 "Recipient address rejected: mailbox busy, come back later "
                                 "(in reply to RCPT TO command)"), later
        pf.wait_log(inst, rf"\w+: reject: RCPT from \S+\[127\.0\.0\.1\]: 450 4\.2\.0 "
                    rf"<later@{DOMAIN}>: Recipient address rejected: mailbox busy")
        assert not inst.queue_empty()
        assert pf.maildir("later") == []
        pf.wait_maildir(inst, "carol")

        pf.access({})
        flush(inst)
        again = wait_status(inst, f"later@{DOMAIN}", 2)
        assert (again["status"], again["dsn"], again["qid"]) == ("sent", "2.0.0", later["qid"]), \
            again
        (got,) = pf.wait_maildir(inst, "later")
        assert body_of(got) == b"hello there\n"
        assert len(pf.maildir("carol")) == 1
        assert len(statuses(inst.log_text(), f"carol@{DOMAIN}")) == 1
        inst.wait_for(inst.queue_empty, what="hato's queue emptied")


def test_postfix_stopped_then_started(instance):
    with Peer() as pf:
        inst = hato(instance, pf)
        pf.pf.stop()
        send(inst, f"dave@{DOMAIN}", subject="while Postfix is down")
        st = wait_status(inst, f"dave@{DOMAIN}")
        assert (st["status"], st["relay"]) == ("deferred", "none"), st
        assert st["text"] == (f"connect to 127.0.0.1[127.0.0.1]:{pf.port}: Connection "
                              "refused"), st
        # the same Postfix again, on the same port
        pf.pf._run("start")
        pf.pf.running = True
        pf.pf.wait_listening()
        flush(inst)
        st = wait_status(inst, f"dave@{DOMAIN}", 2)
        assert (st["status"], st["relay"]) == ("sent", relay_of(pf.pf)), st
        pf.wait_maildir(inst, "dave")


# -- 3. STARTTLS ---------------------------------------------------------------------------

def test_verified_tls_to_postfix(instance, pki):
    ca, issued = pki
    with Peer(tls=(issued.cert, issued.key)) as pf:
        inst = hato(instance, pf, "smtp_tls_security_level = verify",
                    f"smtp_tls_CAfile = {ca.path}", f"smtp_tls_verify_cert_match = {PF_NAME}",
                    f"smtp_tls_servername = {PF_NAME}")
        send(inst, f"erin@{DOMAIN}", subject="over TLS")
        st = wait_status(inst, f"erin@{DOMAIN}")
        assert (st["status"], st["dsn"]) == ("sent", "2.0.0"), (st, inst.log_text()[-3000:])
        log = inst.log_text()
        assert re.search(r"smtp\[\d+\]: Verified TLS connection established to "
                         rf"127\.0\.0\.1\[127\.0\.0\.1\]:{pf.port}: TLSv1\.[23] with cipher ",
                         log), log[-3000:]
        pf.wait_log(inst, r"smtpd\[\d+\]: Anonymous TLS connection established from "
                    r"\S+\[127\.0\.0\.1\]: TLSv1\.[23] with cipher ")
        # the SNI name reached Postfix's log? Postfix logs it only at higher log levels;
        # the Received: header Postfix added says the message itself came over TLS
        (got,) = pf.wait_maildir(inst, "erin")
        received = got.split(b"\n\n", 1)[0].decode()
        assert re.search(r"Received: from \S+ \(\S+ \[127\.0\.0\.1\]\)\n\t\(using TLSv1\.[23] "
                         r"with cipher ", received), received


def test_verify_with_the_wrong_name_defers(instance, pki):
    ca, issued = pki
    with Peer(tls=(issued.cert, issued.key)) as pf:
        inst = hato(instance, pf, "smtp_tls_security_level = verify",
                    f"smtp_tls_CAfile = {ca.path}",
                    "smtp_tls_verify_cert_match = other.hato.test")
        send(inst, f"erin@{DOMAIN}", subject="wrong name")
        st = wait_status(inst, f"erin@{DOMAIN}")
        assert (st["status"], st["dsn"]) == ("deferred", "4.7.5"), st
        assert st["text"] == "Server certificate not verified", st
        assert pf.maildir("erin") == []
        assert f"to=<erin@{DOMAIN}>" not in pf.log()


def test_encrypt_to_postfix_without_tls_defers(instance):
    """Postfix offers no STARTTLS: the mail is deferred, and no MAIL FROM
    is ever sent in plaintext."""
    with Peer() as pf:
        inst = hato(instance, pf, "smtp_tls_security_level = encrypt")
        send(inst, f"frank@{DOMAIN}", subject="encrypt or nothing")
        st = wait_status(inst, f"frank@{DOMAIN}")
        assert (st["status"], st["dsn"], st["relay"]) == ("deferred", "4.7.4", relay_of(pf.pf)), st
        assert st["text"] == ("TLS is required, but was not offered by host "
                              "127.0.0.1[127.0.0.1]"), st
        # Postfix saw EHLO and QUIT, nothing else
        pf.wait_log(inst, r"smtpd\[\d+\]: disconnect from \S+\[127\.0\.0\.1\] ehlo=1 quit=1 "
                    r"commands=2$")
        assert "mail=" not in pf.log() and "MAIL FROM" not in pf.log()
        assert pf.maildir("frank") == []
        assert not inst.queue_empty()


# -- 4. SASL -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saslauthd():
    """Debian's saslauthd -a shadow, on a socket in a temp dir, with a
    system user of its own (created and removed here)."""
    daemon = Saslauthd(mechanism="shadow", password=SASL_PASSWORD)
    try:
        daemon.setup()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def sasl_peer(pki, saslauthd):
    ca, issued = pki
    with Peer(tls=(issued.cert, issued.key), sasl_socket=saslauthd.mux) as pf:
        yield pf, ca, saslauthd


def sasl_hato(instance: Instance, pf: Peer, ca: TestCA, user: str, password: str,
              *settings: str) -> Instance:
    secrets = instance.root / "sasl_passwd"
    secrets.write_text(f"[127.0.0.1]:{pf.port} {user}:{password}\n")
    return hato(instance, pf, "smtp_tls_security_level = verify",
                f"smtp_tls_CAfile = {ca.path}", f"smtp_tls_verify_cert_match = {PF_NAME}",
                "smtp_sasl_auth_enable = yes", f"smtp_sasl_password_maps = texthash:{secrets}",
                "smtp_sasl_security_options = noanonymous",
                "smtp_sasl_tls_security_options = noanonymous", *settings)


RELAYED = "someone@remote.example"  # not Postfix's: it relays (to discard)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_sasl_relay_through_postfix(instance, sasl_peer, mech):
    pf, ca, daemon = sasl_peer
    extra = ["smtp_sasl_mechanism_filter = login"] if mech == "LOGIN" else []
    inst = sasl_hato(instance, pf, ca, daemon.user, SASL_PASSWORD, *extra)
    send(inst, RELAYED, subject=f"relayed with {mech}")
    st = wait_status(inst, RELAYED)
    assert (st["status"], st["dsn"], st["relay"]) == ("sent", "2.0.0", relay_of(pf.pf)), \
        (st, pf.log()[-2000:])
    pf_qid = st["text"].rsplit(" ", 1)[1]
    pf.wait_log(inst, rf"smtpd\[\d+\]: {pf_qid}: client=\S+\[127\.0\.0\.1\], "
                rf"sasl_method={mech}, sasl_username={daemon.user}$")
    pf.wait_log(inst, rf" {pf_qid}: to=<{re.escape(RELAYED)}>, relay=none, .*status=sent")
    assert re.search(r"Verified TLS connection established to 127\.0\.0\.1", inst.log_text())
    with open(os.path.join(daemon.dir, "saslauthd.out"), errors="replace") as f:
        assert f"auth success: [user={daemon.user}] [service=smtp]" in f.read()


def test_sasl_wrong_password_defers(instance, sasl_peer):
    pf, ca, daemon = sasl_peer
    inst = sasl_hato(instance, pf, ca, daemon.user, "not the password")
    send(inst, RELAYED, subject="wrong password")
    st = wait_status(inst, RELAYED)
    assert (st["status"], st["dsn"], st["relay"]) == ("deferred", "4.7.8", relay_of(pf.pf)), st
    assert st["text"] == ("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: "
                          "535 5.7.8 Error: authentication failed: authentication failure"), st
    pf.wait_log(inst, r"smtpd\[\d+\]: warning: \S+\[127\.0\.0\.1\]: SASL PLAIN authentication "
                r"failed")
    assert not inst.queue_empty()


def test_without_sasl_postfix_refuses_to_relay(instance, sasl_peer):
    """The same relay without AUTH: Postfix's 554 Relay access denied, a
    bounce — so the relaying above was the login's doing."""
    pf, ca, _daemon = sasl_peer
    inst = hato(instance, pf, "smtp_tls_security_level = verify",
                f"smtp_tls_CAfile = {ca.path}", f"smtp_tls_verify_cert_match = {PF_NAME}")
    send(inst, RELAYED, subject="no login")
    st = wait_status(inst, RELAYED)
    assert (st["status"], st["dsn"]) == ("bounced", "5.7.1"), st
    assert st["text"] == (f"host 127.0.0.1[127.0.0.1] said: 554 5.7.1 <{RELAYED}>: Relay "
                          "access denied (in reply to RCPT TO command)"), st


def test_the_peer_reads_each_setting_once(sasl_peer):
    """The peer's main.cf names each setting once (tests/postfix_instance.py
    merges the test's settings into the base): no Postfix process warns
    about overridden entries, a flood of which at start once blocked
    postlogd, and every daemon behind it."""
    pf, _ca, _daemon = sasl_peer
    assert pf.greets()
    assert "overriding earlier entry" not in pf.log(), pf.log()[-2000:]

"""t-19: the lmtp delivery agent against Debian's Dovecot LMTP
(dovecot-lmtpd), started privately by the test: a unix-domain socket in a
temp directory (``lmtp:unix:/path``), the same listener reached as
``lmtp:unix:private/dovecot-lmtp`` relative to $queue_directory, and a
loopback port (``lmtp:inet:127.0.0.1:PORT``). Dovecot delivers into
Maildirs it owns (a passwd-file userdb, uid/gid of the system user
``mail``), read back with :class:`mailbox.Maildir`.

LMTP replies per recipient after DATA: one message to a known user, a user
over quota (Dovecot's 552 after the dot) and an unknown user (Dovecot's 550
at RCPT) ends with one delivered and two bounced recipients, each with
Dovecot's own words. Dovecot down defers (``connect to ...: No such file or
directory`` / ``Connection refused``); once it is back, ``hato flush``
delivers."""

from __future__ import annotations

import mailbox
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import textwrap
import time

import pytest

from tests.conftest import require_tool

from .instance import free_port
from .sasl_daemons import stop, wait_for

pytestmark = pytest.mark.integration

LMTP_EXE = "/usr/lib/dovecot/lmtp"


class DovecotLmtp:
    """Dovecot with ``protocols = lmtp``: a unix listener at *DIR/lmtp* (or
    *socket*) and an inet listener on 127.0.0.1:*port*; users ``demo``
    (and any other name in *users*) in a passwd-file userdb, mail in
    ``DIR/mail/USER/Maildir`` owned by ``mail``; user ``full`` has a
    10-byte quota. ``auth_username_format = %Ln``: the domain is ignored."""

    def __init__(self, *, socket_path: str | None = None,
                 users: tuple[str, ...] = ("demo",)) -> None:
        self.exe = require_tool("dovecot", "dovecot-core")
        if not os.path.exists(LMTP_EXE):
            pytest.fail(f"{LMTP_EXE} is missing: install Debian's dovecot-lmtpd")
        if os.geteuid() != 0:
            pytest.fail("the test runs Dovecot as root (it delivers as user mail)")
        self.dir = tempfile.mkdtemp(prefix="hdl")  # short: Dovecot's socket paths
        self.proc: subprocess.Popen | None = None
        try:
            self._configure(socket_path, users)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def _configure(self, socket_path: str | None, users: tuple[str, ...]) -> None:
        d = self.dir
        os.chmod(d, 0o755)
        mail = pwd.getpwnam("mail")
        self.mail = os.path.join(d, "mail")
        os.mkdir(self.mail)
        os.chown(self.mail, mail.pw_uid, mail.pw_gid)
        self.socket = socket_path or os.path.join(d, "lmtp")
        self.port = free_port()
        ids = f"{mail.pw_uid}:{mail.pw_gid}"
        lines = [f"{u}:{{PLAIN}}x:{ids}::{self.mail}/{u}::" for u in users]
        lines.append(f"full:{{PLAIN}}x:{ids}::{self.mail}/full::userdb_quota_rule=*:bytes=10")
        passwd = os.path.join(d, "passwd")
        with open(passwd, "w") as f:
            f.write("".join(line + "\n" for line in lines))
        self.conf = os.path.join(d, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(textwrap.dedent(f"""\
                protocols = lmtp
                base_dir = {d}/run
                state_dir = {d}/state
                log_path = {d}/dovecot.log
                ssl = no
                default_internal_user = dovecot
                default_login_user = dovenull
                first_valid_uid = {mail.pw_uid}
                mail_location = maildir:{self.mail}/%n/Maildir
                auth_username_format = %Ln
                mail_plugins = quota
                plugin {{
                  quota = maildir:User quota
                }}
                service lmtp {{
                  unix_listener {self.socket} {{
                    mode = 0666
                  }}
                  inet_listener lmtp {{
                    address = 127.0.0.1
                    port = {self.port}
                  }}
                }}
                passdb {{
                  driver = passwd-file
                  args = {passwd}
                }}
                userdb {{
                  driver = passwd-file
                  args = {passwd}
                }}
                """))

    def start(self) -> None:
        # Dovecot leaves its listener sockets behind when it stops.
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        out = os.path.join(self.dir, "dovecot.out")
        with open(out, "ab") as f:
            self.proc = subprocess.Popen([self.exe, "-F", "-c", self.conf], stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.socket, self.proc, "dovecot", log=out)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "dovecot's lmtp port did not open"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
        if os.path.exists(self.socket):
            os.unlink(self.socket)  # as if Dovecot had never run: ENOENT

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        try:
            with open(os.path.join(self.dir, "dovecot.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def maildir(self, user: str) -> mailbox.Maildir | None:
        path = os.path.join(self.mail, user, "Maildir")
        if not os.path.isdir(os.path.join(path, "new")):
            return None
        return mailbox.Maildir(path, create=False)

    def messages(self, user: str) -> list[bytes]:
        box = self.maildir(user)
        return [] if box is None else [box.get_bytes(k) for k in box.iterkeys()]


@pytest.fixture
def dovecot():
    d = DovecotLmtp(users=("demo", "mail"))
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


def message(to: str, subject: str, body: str = "hello over lmtp") -> bytes:
    return f"From: sender@hato.test\nTo: {to}\nSubject: {subject}\n\n{body}\n".encode()


def send(inst, *rcpts: str, subject: str, body: str = "hello over lmtp",
         sender: str = "sender@hato.test") -> None:
    r = inst.sendmail("-f", sender, *rcpts,
                      message=message(", ".join(rcpts), subject, body))
    assert r.returncode == 0, r.stderr


def wait_delivered(inst, dovecot, user: str, count: int = 1) -> list[bytes]:
    inst.wait_for(lambda: len(dovecot.messages(user)) >= count,
                  what=f"{count} message(s) in {user}'s Maildir (dovecot log:\n"
                       f"{dovecot.log()[-1500:]})")
    return dovecot.messages(user)


def test_unix_socket_per_recipient_replies(instance, dovecot):
    """virtual_transport = lmtp:unix:/path for hato.test: demo delivered,
    full (over quota) bounced after DATA, nobody (unknown) bounced at RCPT,
    each with Dovecot's reply; one LMTP session for the three."""
    inst = instance
    inst.postconf(f"virtual_transport = lmtp:unix:{dovecot.socket}")
    inst.start()
    send(inst, "demo@hato.test", "full@hato.test", "nobody@hato.test", sender="demo@hato.test",
         subject="three recipients", body="a body longer than the ten-byte quota")
    inst.wait_log("status=sent")
    inst.wait_log("status=bounced", count=2)
    log = inst.log_text()
    relay = re.escape(f"localhost.localdomain[{dovecot.socket}]")
    assert re.search(r"lmtp\[\d+\]: \w+: to=<demo@hato\.test>, relay=" + relay +
                     r", delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent "
                     r"\(250 2\.0\.0 <demo@hato\.test> \S+ Saved\)", log), log[-3000:]
    assert re.search(r"to=<full@hato\.test>, relay=" + relay + r", .*dsn=5\.2\.2, "
                     r"status=bounced \(host " + relay + r" said: 552 5\.2\.2 "
                     r"<full@hato\.test> Quota exceeded \(mailbox for user is full\) "
                     r"\(in reply to end of DATA command\)\)", log), log[-3000:]
    assert re.search(r"to=<nobody@hato\.test>, relay=" + relay + r", .*dsn=5\.1\.1, "
                     r"status=bounced \(host " + relay + r" said: 550 5\.1\.1 "
                     r"<nobody@hato\.test> User doesn't exist: nobody@hato\.test "
                     r"\(in reply to RCPT TO command\)\)", log), log[-3000:]
    (got,) = [m for m in wait_delivered(inst, dovecot, "demo")
              if m.startswith(b"Return-Path: <demo@hato.test>")]
    assert b"a body longer than" in got
    assert dovecot.messages("full") == []
    # one LMTP transaction for the three: Dovecot's session id is shared
    ids: dict[str, str] = {}
    for user, sid in re.findall(r"lmtp\((demo|full)\)<\d+><([^:>]+)", dovecot.log()):
        ids.setdefault(user, sid)
    assert len(ids) == 2 and ids["demo"] == ids["full"], dovecot.log()
    # the sender (demo) gets one bounce for both, through Dovecot into its Maildir
    msgs = wait_delivered(inst, dovecot, "demo", 2)
    (dsn,) = [m for m in msgs if m.startswith(b"Return-Path: <>")]
    text = dsn.decode(errors="replace")
    assert re.search(r"<full@hato\.test>: host localhost\.localdomain\[\S+\] said: 552\s+"
                     r"5\.2\.2 <full@hato\.test> Quota exceeded \(mailbox for user is full\) "
                     r"\(in reply\s+to end of DATA command\)", text), text
    assert "Status: 5.2.2\nRemote-MTA: dns; localhost.localdomain\n" \
           "Diagnostic-Code: smtp; 552 5.2.2 <full@hato.test> Quota exceeded" in text, text
    assert "Status: 5.1.1" in text and "User doesn't exist" in text, text


def test_down_defers_flush_delivers_and_inet(instance):
    """lmtp:unix:private/dovecot-lmtp (relative to $queue_directory) and
    lmtp:inet:127.0.0.1:PORT through transport_maps: both defer while
    Dovecot is down, with Postfix's connect errors; once Dovecot is back,
    `hato flush` delivers both. Then over TCP: a known and an unknown user,
    relay=host[addr]:port."""
    inst = instance
    sock = str(inst.root / "queue" / "private" / "dovecot-lmtp")
    dovecot = DovecotLmtp(socket_path=sock, users=("demo", "other"))
    try:
        table = inst.root / "transport"
        table.write_text("demo@hato.test lmtp:unix:private/dovecot-lmtp\n"
                         f"hato.test lmtp:inet:127.0.0.1:{dovecot.port}\n")
        inst.postconf(f"transport_maps = texthash:{table}")
        inst.start()
        send(inst, "demo@hato.test", "other@hato.test", subject="while down")
        inst.wait_log("status=deferred", count=2)
        log = inst.log_text()
        assert re.search(r"lmtp\[\d+\]: \w+: to=<demo@hato\.test>, relay=none, .*dsn=4\.4\.1, "
                         r"status=deferred \(connect to localhost\.localdomain\[" +
                         re.escape(sock) + r"\]: No such file or directory\)", log), \
            log[-3000:]
        where = re.escape(f"127.0.0.1[127.0.0.1]:{dovecot.port}")
        assert re.search(r"to=<other@hato\.test>, relay=none, .*dsn=4\.4\.1, "
                         r"status=deferred \(connect to " + where + r": Connection refused\)",
                         log), log[-3000:]
        dovecot.start()
        r = inst.cmd("flush")
        assert r.returncode == 0, r.stderr
        inst.wait_log("status=sent", count=2)
        assert b"Subject: while down" in wait_delivered(inst, dovecot, "demo")[0]
        assert b"Subject: while down" in wait_delivered(inst, dovecot, "other")[0]
        inst.wait_for(inst.queue_empty, what="the queue emptied")
        # over TCP: one delivered, one refused at RCPT
        send(inst, "other@hato.test", "nobody@hato.test", subject="over tcp")
        inst.wait_log("status=sent", count=3)
        inst.wait_log("status=bounced")
        log = inst.log_text()
        assert re.search(r"lmtp\[\d+\]: \w+: to=<other@hato\.test>, relay=" + where +
                         r", delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent "
                         r"\(250 2\.0\.0 <other@hato\.test> \S+ Saved\)", log), log[-3000:]
        assert re.search(r"to=<nobody@hato\.test>, relay=" + where + r", .*dsn=5\.1\.1, "
                         r"status=bounced \(host " + where + r" said: 550 5\.1\.1 "
                         r"<nobody@hato\.test> User doesn't exist: nobody@hato\.test "
                         r"\(in reply to RCPT TO command\)\)", log), log[-3000:]
        got = wait_delivered(inst, dovecot, "other", 2)
        assert any(b"Subject: over tcp" in m and b"hello over lmtp" in m for m in got)
        assert "Connect from 127.0.0.1" in dovecot.log()
    finally:
        dovecot.cleanup()


def test_mailbox_transport_for_a_local_user(instance, dovecot):
    """mailbox_transport = lmtp:unix:/path: local recipient mail@localhost
    (a system user) handed by local(8) to the lmtp agent."""
    inst = instance
    inst.postconf(f"mailbox_transport = lmtp:unix:{dovecot.socket}")
    inst.start()
    send(inst, "mail@localhost", subject="local user")
    inst.wait_for(lambda: "status=" in inst.log_text(), what="a delivery status")
    log = inst.log_text()
    assert re.search(r"lmtp\[\d+\]: \w+: to=<mail@localhost>, .*status=sent \(250 2\.0\.0 ",
                     log), log[-2000:]
    # local(8) handed it over: only the lmtp agent logs the recipient
    assert not re.search(r"local\[\d+\]: \w+: to=<mail@localhost>", log), log[-2000:]
    assert b"Subject: local user" in wait_delivered(inst, dovecot, "mail")[0]

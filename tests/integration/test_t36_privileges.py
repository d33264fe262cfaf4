"""t-36: privilege separation of an instance started by root.

One instance, started by root, with a mail_owner of its own whose primary
group differs from setgid_group and who is a member of one more group (as
Debian's ``adduser postfix sasl``), postscreen in front of smtpd, a
submission service with STARTTLS and SASL (hato's sasldb), and a local user.
The tests prove, from /proc and with the workers' own credentials:

* every network-facing process (smtpd, postscreen, smtp, anvil) and qmgr
  runs with mail_owner's uid and gid as real, effective and saved ids,
  exactly the supplementary groups initgroups(mail_owner) gives (never
  setgid_group, never root's), and no capabilities;
* with those credentials /etc/shadow cannot be read and nothing can be
  created outside the queue directory (the config directory, /, /etc),
  while incoming/ is writable (the credentials are not simply broken);
* the TLS private key stays 0600 root and smtpd still offers and completes
  STARTTLS (it loads the key before dropping privileges, as Postfix does);
  so does the smtp client's key, and the server that asks for the client's
  certificate gets it;
* ``hato saslpasswd`` creates the sasldb readable by nobody but its owner
  and group, and smtpd reads it through mail_owner's supplementary group;
* local delivery leaves the message owned by the recipient.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import re
import shutil
import smtplib
import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from bench.common import descendants
from tests.certs import TestCA
from tests.conftest import require_tool

from .instance import Instance, free_port, smtp_ready

pytestmark = pytest.mark.integration

OWNER = "hatot36"          # mail_owner, primary group hatot36
SETGID = "hatot36d"        # setgid_group
SASL_GROUP = "hatot36s"    # a supplementary group of mail_owner (Debian's "sasl")
LOCAL = "hatot36u"         # a local recipient
SASL_USER, SASL_PASSWORD = "alice@hato.test", "t36-secret"

#: (service name, type) of the processes that must run as mail_owner
UNPRIVILEGED = ("smtpd", "postscreen", "smtp", "anvil", "qmgr")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def _exists(kind: str, name: str) -> bool:
    return subprocess.run(["getent", kind, name], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def accounts():
    if os.geteuid() != 0:
        pytest.fail("the privilege separation tests start hato as root and create users "
                    "(tools/run-tests runs them as root)")
    require_tool("setpriv", "util-linux")
    home = tempfile.mkdtemp(prefix="hato-t36-home-", dir="/tmp")
    os.rmdir(home)
    try:
        for group in (OWNER, SETGID, SASL_GROUP):
            if not _exists("group", group):
                _run("groupadd", "--system", group)
        if not _exists("passwd", OWNER):
            _run("useradd", "--system", "--gid", OWNER, "--groups", SASL_GROUP,
                 "--home-dir", "/nonexistent", "--no-create-home",
                 "--shell", "/usr/sbin/nologin", OWNER)
        if not _exists("passwd", LOCAL):
            _run("useradd", "-m", "-d", home, "-s", "/bin/sh", LOCAL)
        yield pwd.getpwnam(OWNER), pwd.getpwnam(LOCAL)
    finally:
        subprocess.run(["userdel", "-r", LOCAL], capture_output=True)
        subprocess.run(["userdel", OWNER], capture_output=True)
        for group in (SASL_GROUP, SETGID, OWNER):
            subprocess.run(["groupdel", group], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


POSTSCREEN_MASTER = """\
127.0.0.1:{port} inet  n       -       n       -     1     postscreen
smtpd     pass  -       -       n       -     -     smtpd
127.0.0.1:{sub} inet n  -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file={cert}
  -o smtpd_tls_key_file={key}
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
127.0.0.1:{tls_screen} inet n - n       -     1     postscreen
  -o smtpd_tls_security_level=may
  -o smtpd_tls_cert_file={cert}
  -o smtpd_tls_key_file={key}
127.0.0.1:{ccert} inet n  -       n       -       -       smtpd
  -o syslog_name=postfix/ccert
  -o myhostname=ccert.hato.test
  -o smtpd_tls_security_level=may
  -o smtpd_tls_cert_file={cert}
  -o smtpd_tls_key_file={key}
  -o smtpd_tls_ask_ccert=yes
  -o smtpd_tls_CAfile={cafile}
  -o smtpd_tls_loglevel=1
  -o smtpd_recipient_restrictions=defer
"""


class Site:
    """The instance and what the tests need to know about it."""

    def __init__(self, accounts):
        self.owner, self.local = accounts
        self.inst = Instance("t36")
        root = self.inst.root
        self.sub = free_port()
        self.tls_screen = free_port()  # postscreen with STARTTLS
        self.ccert = free_port()  # smtpd that asks the smtp client for its certificate
        ca = TestCA(root / "ca")
        issued = ca.issue("mx.hato.test")
        self.cafile = str(ca.path)
        self.key = root / "smtpd.key"
        self.cert = root / "smtpd.crt"
        shutil.copy(issued.key, self.key)
        shutil.copy(issued.cert, self.cert)
        os.chown(self.key, 0, 0)
        os.chmod(self.key, 0o600)  # as Postfix's keys: root's alone
        os.chmod(self.cert, 0o644)
        # the smtp client's own certificate, its key root's alone too
        client = ca.issue("client.hato.test", client=True)
        self.client_key = root / "client.key"
        self.client_cert = root / "client.crt"
        shutil.copy(client.key, self.client_key)
        shutil.copy(client.cert, self.client_cert)
        os.chown(self.client_key, 0, 0)
        os.chmod(self.client_key, 0o600)
        os.chmod(self.client_cert, 0o644)
        self.sasldb = root / "sasldb.lmdb"
        (root / "sasl" / "smtpd.conf").write_text(
            f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {self.sasldb}\n"
            "mech_list: PLAIN LOGIN\n")
        self.inst.postconf(f"mail_owner = {OWNER}", f"setgid_group = {SETGID}",
                           f"cyrus_sasl_config_path = {root / 'sasl'}",
                           "home_mailbox = Maildir/",
                           "mydestination = $myhostname, localhost",
                           "postscreen_access_list = permit_mynetworks",
                           # mail for elsewhere goes to a port where nothing
                           # listens: the smtp client runs and defers it
                           f"relayhost = [127.0.0.1]:{free_port()}",
                           # ... but for ccert.test: the smtpd that asks for
                           # the client's certificate
                           f"transport_maps = inline:{{ ccert.test=smtp:[127.0.0.1]:{self.ccert} }}",
                           "smtp_tls_security_level = may",
                           f"smtp_tls_cert_file = {self.client_cert}",
                           f"smtp_tls_key_file = {self.client_key}",
                           "mynetworks = 127.0.0.1/32")
        master = root / "master.cf"
        text = master.read_text()
        text = re.sub(r"^127\.0\.0\.1:\d+ +inet .*smtpd\n(  -o .*\n)*", "", text,
                      flags=re.MULTILINE)
        master.write_text(POSTSCREEN_MASTER.format(
            port=self.inst.port, sub=self.sub, tls_screen=self.tls_screen, cert=self.cert,
            key=self.key, ccert=self.ccert, cafile=self.cafile) + text)
        r = self.inst.cmd("saslpasswd", "-p", "-c", "-f", str(self.sasldb), SASL_USER,
                          input=(SASL_PASSWORD + "\n").encode())
        assert r.returncode == 0, r.stderr
        self.sasldb_created = os.stat(self.sasldb)
        # Cyrus practice: root:sasl 0640, the mail system in group sasl
        shutil.chown(self.sasldb, group=SASL_GROUP)

    def start(self) -> None:
        self.inst.start()
        self.inst.wait_for(lambda: smtp_ready(self.inst.port), what="postscreen listening")
        self.inst.wait_for(lambda: smtp_ready(self.sub), what="submission listening")

    def master_pid(self) -> int:
        return int((self.inst.root / "queue" / "pid" / "master.pid").read_text().split()[0])

    def workers(self) -> dict[str, list[int]]:
        """The worker processes under master, by service command
        (``hato.master.worker NAME TYPE`` on their command line)."""
        master = self.master_pid()
        out: dict[str, list[int]] = {}
        for pid in descendants(master):
            try:
                args = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            except OSError:
                continue
            if "hato.master.worker" not in args:
                continue
            name, kind = args[args.index("hato.master.worker") + 1:][:2]
            key = name
            if kind == "inet":
                key = {f"127.0.0.1:{self.sub}": "smtpd",
                       f"127.0.0.1:{self.tls_screen}": "postscreen-tls"}.get(name, "postscreen")
            out.setdefault(key, []).append(pid)
        return out


@pytest.fixture(scope="module")
def site(accounts):
    s = Site(accounts)
    try:
        s.start()
        yield s
    finally:
        s.inst.cleanup()


def proc_status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.strip()
    return out


def serving(pid: int) -> bool:
    """Has worker *pid* finished starting up, its event loop running (an
    epoll descriptor open)? Before that it may still hold root's ids."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[eventpoll]"
                   for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def unprivileged_workers(site) -> dict[str, list[int]]:
    """The smtpd, postscreen, smtp, anvil and qmgr workers, once every one
    of them runs its event loop."""
    found: dict[str, list[int]] = {}

    def all_there() -> bool:
        found.clear()
        found.update({name: pids for name, pids in site.workers().items()
                      if name in UNPRIVILEGED})
        return all(found.get(name) for name in UNPRIVILEGED) and \
            all(serving(pid) for pids in found.values() for pid in pids)

    # one SMTP session through postscreen and smtpd, and one message that
    # the smtp client must try, so that every one of them runs
    with smtplib.SMTP("127.0.0.1", site.inst.port, timeout=30) as c:
        c.ehlo("client.example")
        c.sendmail("t36@example.org", ["somebody@elsewhere.example"], b"Subject: x\r\n\r\nx\r\n")
    site.inst.wait_for(all_there, what="smtpd, postscreen, smtp, anvil and qmgr workers")
    return {name: found[name] for name in UNPRIVILEGED}


def test_network_facing_processes_run_as_mail_owner(site):
    pw = site.owner
    expected_groups = sorted(set(os.getgrouplist(OWNER, pw.pw_gid)))
    # the test's premises: a supplementary group beyond the primary one,
    # and a setgid_group that mail_owner is not a member of
    assert grp.getgrnam(SASL_GROUP).gr_gid in expected_groups
    assert grp.getgrnam(SETGID).gr_gid not in expected_groups
    uid, gid = str(pw.pw_uid), str(pw.pw_gid)
    for name, pids in unprivileged_workers(site).items():
        for pid in pids:
            st = proc_status(pid)
            where = f"{name} (pid {pid})"
            assert st["Uid"].split() == [uid] * 4, f"{where}: Uid {st['Uid']}"
            assert st["Gid"].split() == [gid] * 4, f"{where}: Gid {st['Gid']}"
            groups = sorted(int(g) for g in st["Groups"].split())
            assert groups == expected_groups, f"{where}: Groups {st['Groups']}"
            for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
                assert int(st[cap], 16) == 0, f"{where}: {cap} {st[cap]}"
    # master stays root, as Postfix's
    assert proc_status(site.master_pid())["Uid"].split()[1] == "0"


PROBE = r"""
import os, sys
def attempt(what, fn):
    try:
        fn()
    except OSError:
        print(what, "denied")
    else:
        print(what, "allowed")
attempt("read /etc/shadow", lambda: open("/etc/shadow", "rb").read(1))
for d in sys.argv[1:]:
    def create(d=d):
        p = os.path.join(d, "hato-t36-probe")
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(p)
    attempt("create in " + d, create)
"""


def as_process(pid: int, *argv: str) -> str:
    """Run *argv* with the uid, gid and supplementary groups that process
    *pid* has now (from /proc/PID/status), and no capabilities."""
    st = proc_status(pid)
    uid, gid = st["Uid"].split()[1], st["Gid"].split()[1]
    groups = st["Groups"].split()
    cmd = [require_tool("setpriv", "util-linux"), f"--reuid={uid}", f"--regid={gid}",
           f"--groups={','.join(groups)}" if groups else "--clear-groups",
           "--inh-caps=-all", "--"]
    r = subprocess.run([*cmd, *argv], capture_output=True, text=True, cwd="/", timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_workers_cannot_read_shadow_or_write_outside_the_queue(site):
    python = "/usr/bin/python3"
    root = site.inst.root
    incoming = root / "queue" / "incoming"
    outside = [str(root), str(root / "queue"), "/", "/etc"]
    for name, pids in unprivileged_workers(site).items():
        out = as_process(pids[0], python, "-c", PROBE, *outside, str(incoming))
        lines = set(out.splitlines())
        assert "read /etc/shadow denied" in lines, (name, out)
        for d in outside:
            assert f"create in {d} denied" in lines, (name, d, out)
        # the same credentials can work in the queue: they are the worker's
        assert f"create in {incoming} allowed" in lines, (name, out)
    assert os.stat(root / "main.cf").st_uid == 0


def test_tls_key_stays_root_only_and_starttls_works(site):
    st = os.stat(site.key)
    assert st.st_uid == 0 and st.st_mode & 0o077 == 0
    smtpd = unprivileged_workers(site)["smtpd"][0]
    out = as_process(smtpd, "/usr/bin/python3", "-c",
                     f"import sys\ntry:\n    open({str(site.key)!r}).read()\n"
                     "except OSError:\n    print('denied')\nelse:\n    print('read')")
    assert out.strip() == "denied"
    ctx = ssl.create_default_context(cafile=site.cafile)
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.ehlo("client.example")
        assert c.has_extn("starttls"), "smtpd could not load its key"
        code, _ = c.starttls(context=ctx)
        assert code == 220
        c.ehlo("client.example")
        assert c.sock.version() is not None


def test_smtp_client_certificate_with_a_root_only_key(site):
    """The smtp client reads its certificate's key (0600 root) before it
    drops privileges, as Postfix's smtp: the server that asks for it gets
    it, though the client runs as mail_owner."""
    st = os.stat(site.client_key)
    assert st.st_uid == 0 and st.st_mode & 0o077 == 0
    r = site.inst.sendmail("-f", f"{LOCAL}@localhost", "someone@ccert.test",
                           message=b"Subject: client certificate\n\nhi\n")
    assert r.returncode == 0, r.stderr
    site.inst.wait_for(lambda: any("to=<someone@ccert.test>" in x and "status=deferred" in x
                                   for x in site.inst.log_text().splitlines()),
                       what="the smtp client's attempt")
    lines = [x for x in site.inst.log_text().splitlines()
             if "postfix/ccert/smtpd" in x and "TLS connection established from" in x]
    assert lines, site.inst.log_text()
    # "Anonymous" would mean the client sent no certificate
    assert lines[0].split("]: ", 1)[1].startswith("Trusted TLS"), lines[0]
    assert "client TLS configuration problem" not in site.inst.log_text()
    site.inst.cmd("postsuper", "-d", "ALL")


def test_sasldb_mode_and_auth_through_the_group(site):
    created = site.sasldb_created
    assert created.st_uid == 0
    assert created.st_mode & 0o777 == 0o640  # Cyrus saslpasswd2 practice: no "other"
    st = os.stat(site.sasldb)
    assert st.st_gid == grp.getgrnam(SASL_GROUP).gr_gid and st.st_mode & 0o007 == 0
    r = site.inst.cmd("check")
    assert "sasldb.lmdb" not in r.stderr.decode(), r.stderr
    ctx = ssl.create_default_context(cafile=site.cafile)
    ctx.check_hostname = False
    with smtplib.SMTP("127.0.0.1", site.sub, timeout=30) as c:
        c.ehlo("client.example")
        c.starttls(context=ctx)
        c.ehlo("client.example")
        token = base64.b64encode(f"\0{SASL_USER}\0{SASL_PASSWORD}".encode()).decode()
        code, text = c.docmd("AUTH", f"PLAIN {token}")
        assert code == 235, (code, text, site.inst.log_text()[-2000:])


def test_local_delivery_belongs_to_the_recipient(site):
    user = site.local
    box = Path(user.pw_dir) / "Maildir"
    r = site.inst.sendmail("-f", "sender@example.org", LOCAL, message=b"Subject: t36\n\nhi\n")
    assert r.returncode == 0, r.stderr
    site.inst.wait_for(lambda: (box / "new").is_dir() and any((box / "new").iterdir()),
                       what="the message in the recipient's Maildir")
    files = list((box / "new").iterdir())
    assert len(files) == 1
    st = files[0].stat()
    assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)
    assert st.st_mode & 0o077 == 0
    for d in (box, box / "new", box / "cur", box / "tmp"):
        assert d.stat().st_uid == user.pw_uid, d


def test_postscreen_with_a_root_only_tls_key(site):
    """postscreen, like smtpd, must load its TLS key before it drops root's
    privileges: with the key 0600 root it must still greet clients."""
    site.inst.wait_for(lambda: smtp_ready(site.tls_screen), timeout=15,
                       what="postscreen with STARTTLS listening")


def test_check_is_quiet_about_a_running_instance(site):
    """What hato start made and the running services wrote has the owners
    and modes hato check expects: no "not owned by" or "writable" warnings
    (master.lock in data_directory is mail_owner's, as Postfix's)."""
    r = site.inst.cmd("check")
    assert r.returncode == 0, r.stderr
    words = ("not owned by", "group or other writable", "wrong mode")
    assert [line for line in r.stderr.decode().splitlines()
            if any(w in line for w in words)] == []
    lock = site.inst.root / "data" / "master.lock"
    assert lock.stat().st_uid == site.owner.pw_uid

"""t-01: mail handed to sendmail reaches local users, aliases, virtual
mailboxes and discard; failures come back as RFC 3464 reports; a temporary
failure is retried once the cause is fixed. Maildirs are read back with
Python's mailbox module."""

from __future__ import annotations

import email
import mailbox
import os
import pwd
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.integration

USER = "hatot01"


@pytest.fixture(scope="module")
def local_user():
    """A system user of the test's own, with a home directory."""
    if os.geteuid() != 0:
        pytest.fail("the local delivery tests create a system user and must run as root "
                    "(tools/run-tests runs them as root)")
    home = f"/tmp/{USER}-home"
    if subprocess.run(["getent", "passwd", USER], capture_output=True).returncode:
        subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/sh", USER], check=True)
    pw = pwd.getpwnam(USER)
    yield pw
    subprocess.run(["userdel", "-r", USER], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def maildir_messages(path: str) -> list[email.message.Message]:
    """The messages of a Maildir; none while local delivery is still making
    its directories (new/ may exist before cur/ and tmp/)."""
    if not all(os.path.isdir(os.path.join(path, d)) for d in ("new", "cur", "tmp")):
        return []
    box = mailbox.Maildir(path, factory=None, create=False)
    return [email.message_from_bytes(box.get_bytes(key)) for key in box.keys()]


def fresh_maildir(pw) -> str:
    path = os.path.join(pw.pw_dir, "Maildir")
    shutil.rmtree(path, ignore_errors=True)
    return path


def test_local_user_maildir(instance, local_user):
    inst = instance
    inst.postconf("home_mailbox = Maildir/", "mydestination = $myhostname, localhost")
    box = fresh_maildir(local_user)
    inst.start()
    r = inst.sendmail("-f", "sender@example.org", USER,
                      message=b"Subject: hello\n\nfirst line\n.dot line\n")
    assert r.returncode == 0, r.stderr
    inst.wait_log("status=sent (delivered to maildir)")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    msgs = maildir_messages(box)
    assert len(msgs) == 1
    m = msgs[0]
    assert m["Subject"] == "hello"
    assert m["Return-Path"] == "<sender@example.org>"
    assert m["Delivered-To"] == f"{USER}@localhost.localdomain"
    assert m["Message-Id"] and m["Date"] and m["From"]
    assert m.get_payload() == "first line\n.dot line\n"
    files = os.listdir(os.path.join(box, "new"))
    st = os.stat(os.path.join(box, "new", files[0]))
    assert st.st_uid == local_user.pw_uid and (st.st_mode & 0o777) == 0o600
    log = inst.log_text()
    for piece in ("uid=0 from=<sender@example.org>", "message-id=<",
                  "from=<sender@example.org>, size=", "nrcpt=1 (queue active)",
                  f"to=<{USER}@localhost.localdomain>, orig_to=<{USER}>, relay=local",
                  ": removed"):
        assert piece in log, piece


def test_aliases_file_command_and_list(instance, local_user):
    inst = instance
    drop = inst.root / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)  # default_privs (nobody) writes here
    (inst.root / "aliases").write_text(
        f"team: {USER}, {drop}/team.mbox, \"|/bin/sh -c 'cat > {drop}/piped'\"\n"
        f"boss: {USER}\n"
        "postmaster: root\n")
    inst.postconf("home_mailbox = Maildir/", "mydestination = $myhostname, localhost",
                  f"alias_maps = hash:{inst.root}/aliases",
                  f"alias_database = hash:{inst.root}/aliases")
    r = inst.cmd("newaliases")
    assert r.returncode == 0, r.stderr
    box = fresh_maildir(local_user)
    inst.start()
    r = inst.sendmail("-f", f"{USER}@localhost", "team", "boss",
                      message=b"Subject: to the team\n\nhi all\n")
    assert r.returncode == 0, r.stderr
    inst.wait_log("to=<boss@localhost.localdomain>")
    inst.wait_log("to=<team@localhost.localdomain>")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    assert len(maildir_messages(box)) == 2
    mbox = mailbox.mbox(str(drop / "team.mbox"))
    assert [m["Subject"] for m in mbox] == ["to the team"]
    piped = (drop / "piped").read_bytes()
    assert piped.startswith(b"From ") and b"Subject: to the team" in piped


def test_alias_to_another_domain_is_forwarded(instance):
    """An alias that leaves the local domain: local (working as root)
    queues a copy for qmgr (the mail owner) to pick up and deliver."""
    inst = instance
    uid = pwd.getpwnam("hato").pw_uid if os.geteuid() == 0 else os.getuid()
    gid = pwd.getpwnam("hato").pw_gid if os.geteuid() == 0 else os.getgid()
    (inst.root / "aliases").write_text("away: bob@example.com\npostmaster: root\n")
    inst.postconf("mydestination = $myhostname, localhost",
                  f"alias_maps = hash:{inst.root}/aliases",
                  f"alias_database = hash:{inst.root}/aliases",
                  "virtual_mailbox_domains = example.com",
                  "virtual_mailbox_maps = inline:{ bob@example.com=example.com/bob/ }",
                  f"virtual_uid_maps = static:{uid}", f"virtual_gid_maps = static:{gid}",
                  "virtual_minimum_uid = 1")
    r = inst.cmd("newaliases")
    assert r.returncode == 0, r.stderr
    inst.start()
    r = inst.sendmail("-f", "x@example.org", "away", message=b"Subject: fwd\n\nforwarded\n")
    assert r.returncode == 0, r.stderr
    inst.wait_log("status=sent (forwarded as ")
    inst.wait_log("to=<bob@example.com>, relay=virtual")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    box = inst.root / "mail" / "example.com" / "bob"
    got = maildir_messages(str(box))
    assert [m["Subject"] for m in got] == ["fwd"]
    assert got[0].get_all("Delivered-To") == ["bob@example.com", "away@localhost.localdomain"]
    assert "unexpected error" not in inst.log_text()


def test_virtual_mailboxes(instance):
    inst = instance
    uid = pwd.getpwnam("hato").pw_uid if os.geteuid() == 0 else os.getuid()
    gid = pwd.getpwnam("hato").pw_gid if os.geteuid() == 0 else os.getgid()
    inst.postconf("virtual_mailbox_domains = example.com",
                  "virtual_mailbox_maps = inline:{ bob@example.com=example.com/bob/, "
                  "carol@example.com=example.com/carol }",
                  f"virtual_uid_maps = static:{uid}", f"virtual_gid_maps = static:{gid}",
                  "virtual_minimum_uid = 1", "home_mailbox = Maildir/")
    inst.start()
    r = inst.sendmail("-f", "x@example.org", "bob@example.com", "carol@example.com",
                      message=b"Subject: v\n\nvirtual\n")
    assert r.returncode == 0
    inst.wait_log("status=sent (delivered to mailbox)")
    inst.wait_log("status=sent (delivered to maildir)")
    base = inst.root / "mail" / "example.com"
    assert [m["Subject"] for m in maildir_messages(str(base / "bob"))] == ["v"]
    assert [m["Subject"] for m in mailbox.mbox(str(base / "carol"))] == ["v"]


def test_bounce_is_a_delivery_status_report(instance, local_user):
    inst = instance
    inst.postconf("home_mailbox = Maildir/", "mydestination = $myhostname, localhost",
                  "transport_maps = inline:{ { gone@localhost.localdomain = "
                  "error:5.1.1 this mailbox is gone }, junk@localhost.localdomain=discard: }")
    box = fresh_maildir(local_user)
    inst.start()
    r = inst.sendmail("-f", USER, "gone", "junk", message=b"Subject: bounce me\n\nbody\n")
    assert r.returncode == 0
    inst.wait_log("status=bounced (this mailbox is gone)")
    inst.wait_log("sender non-delivery notification")
    inst.wait_log("relay=none, delay=")  # discard: reports its next hop, as Postfix
    inst.wait_for(lambda: len(maildir_messages(box)) == 1, what="the bounce in the Maildir")
    dsn = maildir_messages(box)[0]
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Return-Path"] == "<>"
    parts = dsn.get_payload()
    status = parts[1]
    assert status.get_content_type() == "message/delivery-status"
    fields = status.get_payload()
    per_rcpt = fields[1]
    assert per_rcpt["Final-Recipient"] == "rfc822; gone@localhost.localdomain"
    assert per_rcpt["Status"] == "5.1.1"
    assert per_rcpt["Action"] == "failed"
    assert parts[2].get_content_type() == "message/rfc822"


def test_temporary_failure_is_retried(instance, local_user):
    inst = instance
    flag = inst.root / "ok"
    script = inst.root / "deliver.sh"
    script.write_text(f"#!/bin/sh\nif [ -e {flag} ]; then cat >/dev/null; exit 0; fi\n"
                      "exit 75\n")
    os.chmod(script, 0o755)
    (inst.root / "aliases").write_text(f"flaky: \"|{script}\"\n")
    inst.postconf("mydestination = $myhostname, localhost",
                  f"alias_maps = hash:{inst.root}/aliases",
                  f"alias_database = hash:{inst.root}/aliases",
                  "minimal_backoff_time = 1s", "maximal_backoff_time = 2s",
                  "queue_run_delay = 1s")
    assert inst.cmd("newaliases").returncode == 0
    inst.start()
    inst.sendmail("-f", "someone@example.org", "flaky", message=b"Subject: retry\n\nx\n")
    inst.wait_log("status=deferred")
    assert not inst.queue_empty()
    flag.write_text("")
    assert inst.cmd("flush").returncode == 0
    inst.wait_log("status=sent (delivered to command:")
    inst.wait_for(inst.queue_empty, what="an empty queue")


def test_stop_and_status(instance):
    inst = instance
    inst.start()
    r = inst.cmd("status")
    assert r.returncode == 0 and b"is running" in r.stderr
    r = inst.cmd("start")
    assert r.returncode != 0 and b"already running" in r.stderr
    inst.stop()
    r = inst.cmd("status")
    assert r.returncode == 1 and b"not running" in r.stderr


def test_pipe_transport(instance):
    inst = instance
    drop = inst.root / "drop"
    drop.mkdir()
    os.chmod(drop, 0o1777)
    with open(inst.root / "master.cf", "a") as f:
        f.write(f"pipetest unix - n n - - pipe\n"
                f"  flags=FR user=nobody argv=/bin/dd of={drop}/${{user}}.out status=none\n")
    inst.postconf("mydestination = $myhostname, localhost",
                  "transport_maps = inline:{ piped@localhost.localdomain=pipetest: }")
    inst.start()
    r = inst.sendmail("-f", "x@example.org", "piped", message=b"Subject: pipe\n\nthrough\n")
    assert r.returncode == 0
    inst.wait_log("status=sent (delivered via pipetest service)")
    out = (drop / "piped.out").read_bytes()
    assert out.startswith(b"From x@example.org ")
    assert b"Return-Path: <x@example.org>" in out and out.endswith(b"through\n")
    if os.geteuid() == 0:
        assert (drop / "piped.out").stat().st_uid == pwd.getpwnam("nobody").pw_uid


def test_success_and_delay_notices(instance, local_user):
    """NOTIFY=SUCCESS brings a "delivered" report; a message still deferred
    after delay_warning_time brings a "delayed" report."""
    inst = instance
    script = inst.root / "tempfail.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\nexit 75\n")
    os.chmod(script, 0o755)
    (inst.root / "aliases").write_text(f"postmaster: root\nslow: \"|{script}\"\n")
    inst.postconf("home_mailbox = Maildir/", "mydestination = $myhostname, localhost",
                  f"alias_maps = hash:{inst.root}/aliases", "delay_warning_time = 1s",
                  "minimal_backoff_time = 1s", "maximal_backoff_time = 1s",
                  "queue_run_delay = 1s")
    assert inst.cmd("newaliases").returncode == 0
    box = fresh_maildir(local_user)
    inst.start()
    r = inst.sendmail("-f", USER, "-N", "success", USER, message=b"Subject: s\n\nx\n")
    assert r.returncode == 0
    inst.wait_log("delivery status notification:")
    r = inst.sendmail("-f", USER, "slow", message=b"Subject: d\n\nx\n")
    inst.wait_log("sender delay notification:", timeout=60)
    reports = {}
    inst.wait_for(lambda: len(maildir_messages(box)) >= 3, what="message and two reports")
    for m in maildir_messages(box):
        if m.get_content_type() == "multipart/report":
            action = m.get_payload()[1].get_payload()[1]["Action"]
            reports[action] = m
    assert set(reports) == {"delivered", "delayed"}


def test_header_checks_hold_and_discard(instance):
    inst = instance
    (inst.root / "header_checks").write_text("/^Subject: hold me/ HOLD\n"
                                             "/^Subject: drop me/ DISCARD\n")
    inst.postconf(f"header_checks = regexp:{inst.root}/header_checks")
    inst.start()
    inst.sendmail("-f", "demo@hato.test", "demo@hato.test", message=b"Subject: hold me\n\nx\n")
    inst.sendmail("-f", "demo@hato.test", "demo@hato.test", message=b"Subject: drop me\n\nx\n")
    inst.wait_log("hold: header Subject: hold me")
    inst.wait_log("discard: header Subject: drop me")
    hold = inst.root / "queue" / "hold"
    inst.wait_for(lambda: len(os.listdir(hold)) == 1, what="one message in hold/")
    assert not (inst.root / "mail" / "hato.test" / "demo").exists()


def test_header_checks_redirect(instance):
    inst = instance
    (inst.root / "vmailbox").write_text("demo@hato.test hato.test/demo/\n"
                                        "audit@hato.test hato.test/audit/\n")
    (inst.root / "header_checks").write_text("/^Subject: audit me/ REDIRECT audit@hato.test\n")
    inst.postconf(f"header_checks = regexp:{inst.root}/header_checks")
    inst.start()
    inst.sendmail("-f", "demo@hato.test", "demo@hato.test", message=b"Subject: audit me\n\nx\n")
    inst.wait_log("to=<audit@hato.test>")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    assert [m["Subject"] for m in maildir_messages(str(inst.root / "mail/hato.test/audit"))] \
        == ["audit me"]
    assert not (inst.root / "mail" / "hato.test" / "demo").exists()


def test_discard_runs_inside_qmgr_unless_master_cf_sets_options(instance):
    """A plain ``discard`` service is run by qmgr itself: the same status
    line under the discard name, with qmgr's pid. A discard service with
    options of its own (here a syslog_name) is a process of its own, as
    before."""
    import re

    inst = instance
    inst.postconf("transport_maps = inline:{ junk@localhost.localdomain=discard:trash.test }")
    inst.start()
    assert inst.sendmail("-f", "someone@example.com", "junk@localhost.localdomain",
                         message=b"Subject: one\n\nbody\n").returncode == 0
    inst.wait_log("status=sent (trash.test)")
    line = next(x for x in inst.log_text().splitlines() if "status=sent (trash.test)" in x)
    m = re.search(r" (\S+)/discard\[(\d+)\]: [0-9A-F]+: to=<junk@localhost\.localdomain>, "
                  r"relay=none, delay=[\d.]+, delays=[\d./]+, dsn=2\.0\.0, status=sent "
                  r"\(trash\.test\)$", line)
    assert m, line
    assert inst.pids().get(int(m.group(2))) == "qmgr", (line, inst.pids())
    inst.stop()
    text = (inst.root / "master.cf").read_text()
    text = re.sub(r"^discard(\s+unix.*discard)$", r"discard\1\n  -o syslog_name=trashcan",
                  text, count=1, flags=re.M)
    assert "syslog_name=trashcan" in text
    (inst.root / "master.cf").write_text(text)
    inst.start()
    assert inst.sendmail("-f", "someone@example.com", "junk@localhost.localdomain",
                         message=b"Subject: two\n\nbody\n").returncode == 0
    inst.wait_log("status=sent (trash.test)", 2)
    line = [x for x in inst.log_text().splitlines() if "status=sent (trash.test)" in x][-1]
    m = re.search(r" trashcan/discard\[(\d+)\]: ", line)
    assert m, line
    assert int(m.group(1)) not in {p for p, role in inst.pids().items() if role == "qmgr"}

"""t-29: Maildir++ quotas kept as Courier's tools and Dovecot keep them.

Maildirs are made with Courier's maildirmake (Debian package maildrop) and
with ``hato maildirmake``; Courier's deliverquota and hato's virtual and
local agents deliver into the same Maildirs; Dovecot's "maildir" quota
backend (``doveadm quota get``, dovecot-core, run privately) reads what
hato wrote. Over quota, hato bounces (5.2.2) or defers (4.2.2) and
delivers on retry once messages are removed; smtpd answers 452/552 at
RCPT time with hato_mailbox_quota_rcpt_check; 20 parallel deliveries
never overshoot; broken maildirsize files cost a warning, never a
message."""

from __future__ import annotations

import email
import mailbox
import os
import pwd
import shutil
import smtplib
import subprocess
import tempfile
import textwrap
import time

import pytest

from hato.delivery.maildir_quota import scan_usage
from hato.policy.maildir_quota import Usage, format_usage_line, parse_maildirsize
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

USER = "hatot29"
SENDER = "sender@hato.test"
FULL = "full@hato.test"


# -- helpers ---------------------------------------------------------------------------


def courier(tool: str, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    exe = require_tool(tool, "maildrop")
    # Courier's maildirmake -q loops forever on a missing Maildir: never wait long.
    return subprocess.run([exe, *args], input=input, capture_output=True, timeout=30)


def sizefile(box):
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        data = f.read()
    return data, parse_maildirsize(data)


def message(subject: str, size: int = 0) -> bytes:
    return f"Subject: {subject}\n\n".encode() + b"q" * size + b"\n"


def maildir_messages(path: str) -> list[email.message.Message]:
    if not all(os.path.isdir(os.path.join(path, d)) for d in ("new", "cur", "tmp")):
        return []
    box = mailbox.Maildir(path, factory=None, create=False)
    return [email.message_from_bytes(box.get_bytes(key)) for key in box.keys()]


def virtual_ids() -> tuple[int, int]:
    if os.geteuid() == 0:
        pw = pwd.getpwnam("hato")
        return pw.pw_uid, pw.pw_gid
    return os.getuid(), os.getgid()


def chown_tree(path, uid: int, gid: int) -> None:
    if os.geteuid() != 0:
        return
    for dirpath, dirs, files in os.walk(path):
        os.chown(dirpath, uid, gid)
        for name in files:
            os.chown(os.path.join(dirpath, name), uid, gid)


def setup_virtual(inst, *extra: str) -> dict[str, str]:
    """Virtual mailboxes sender@ and full@hato.test; returns their paths."""
    uid, gid = virtual_ids()
    (inst.root / "vmailbox").write_text(f"{SENDER} hato.test/sender/\n"
                                        f"{FULL} hato.test/full/\n")
    inst.postconf(f"virtual_uid_maps = static:{uid}", f"virtual_gid_maps = static:{gid}",
                  "virtual_minimum_uid = 1", "minimal_backoff_time = 300s",
                  "maximal_backoff_time = 600s", "queue_run_delay = 300s", *extra)
    base = inst.root / "mail" / "hato.test"
    base.mkdir(parents=True, exist_ok=True)
    chown_tree(inst.root / "mail", uid, gid)
    return {"sender": str(base / "sender"), "full": str(base / "full")}


def make_courier_maildir(path: str, quota: str) -> None:
    r = courier("maildirmake", path)
    assert r.returncode == 0, r.stderr
    r = courier("maildirmake", "-q", quota, path)
    assert r.returncode == 0, r.stderr
    chown_tree(path, *virtual_ids())


def statuses(inst, rcpt: str, status: str) -> int:
    return sum(1 for line in inst.log_text().splitlines()
               if f"to=<{rcpt}>, relay=virtual" in line and f"status={status}" in line)


def remove_messages(box: str) -> None:
    """What a Maildir++ client (an IMAP server) does when the user deletes
    mail: remove the files, append ``-<size> -1`` for each."""
    for sub in ("new", "cur"):
        for name in os.listdir(os.path.join(box, sub)):
            path = os.path.join(box, sub, name)
            size = os.path.getsize(path)
            os.unlink(path)
            fd = os.open(os.path.join(box, "maildirsize"), os.O_WRONLY | os.O_APPEND)
            os.write(fd, format_usage_line(-size, -1))
            os.close(fd)


def fill(box: str, quota: str, free: int) -> None:
    """Make the Maildir *box* hold *free* bytes less than its quota."""
    limit = int(quota.rstrip("S"))
    with open(os.path.join(box, "cur", f"1.filler.host,S={limit - free}:2,S"), "wb") as f:
        f.write(b"x" * (limit - free))
    assert courier("maildirmake", "-q", quota, box).returncode == 0
    chown_tree(box, *virtual_ids())


def delivered(box: str) -> int:
    return sum(len(os.listdir(os.path.join(box, d))) for d in ("new", "cur"))


# -- Dovecot's view --------------------------------------------------------------------


class Dovecot:
    """A private Dovecot (no listeners but its auth) whose quota plugin uses
    the "maildir" backend on one Maildir."""

    def __init__(self, maildir: str, uid: int, gid: int):
        self.exe = require_tool("dovecot", "dovecot-core")
        self.doveadm = require_tool("doveadm", "dovecot-core")
        self.dir = tempfile.mkdtemp(prefix="hato-t29-dovecot-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            f.write(f"quser:{{PLAIN}}x:{uid}:{gid}::{os.path.dirname(maildir)}::"
                    f"userdb_mail=maildir:{maildir}\n")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        with open(self.conf, "w") as f:
            f.write(textwrap.dedent(f"""\
                protocols =
                base_dir = {self.dir}/run
                state_dir = {self.dir}/state
                log_path = {self.dir}/dovecot.log
                ssl = no
                default_internal_user = dovecot
                default_login_user = dovenull
                first_valid_uid = 1
                mail_plugins = quota
                plugin {{
                  quota = maildir:User quota
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
        self.proc = subprocess.Popen([self.exe, "-F", "-c", self.conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not os.path.exists(os.path.join(self.dir, "run", "auth-userdb")):
            assert self.proc.poll() is None and time.monotonic() < deadline, \
                "dovecot did not start"
            time.sleep(0.05)

    def quota(self) -> dict[str, tuple[int, int]]:
        """{STORAGE|MESSAGE: (value, limit)}; STORAGE in KiB, as doveadm shows it."""
        r = subprocess.run([self.doveadm, "-c", self.conf, "-f", "tab", "quota", "get",
                            "-u", "quser"], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        out = {}
        for line in r.stdout.splitlines()[1:]:
            fields = line.split("\t")
            out[fields[1]] = (int(fields[2]), int(fields[3]))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- tests ---------------------------------------------------------------------------


def test_maildirmake_matches_courier(instance, tmp_path):
    """Fresh Maildirs and quotas installed on full ones: the same maildirsize."""
    inst = instance
    for quota, line in (("10000000S", "10000000S"), ("10000000S,1000C", "10000000S,1000C"),
                        ("1000C", "1000C"), ("10C,0100S", "100S,10C"), ("0S,5C", "5C"),
                        ("0S", None)):
        ours, theirs = tmp_path / f"h{quota}", tmp_path / f"c{quota}"
        r = inst.hato("maildirmake", "-q", quota, str(ours))
        assert r.returncode == 0, r.stderr
        make_courier_maildir(str(theirs), quota)
        assert sorted(os.listdir(ours)) == sorted(os.listdir(theirs))
        if line is None:  # no quota: no maildirsize
            assert not (ours / "maildirsize").exists()
            continue
        assert (ours / "maildirsize").read_bytes() == (theirs / "maildirsize").read_bytes()
        assert (ours / "maildirsize").read_bytes().split(b"\n")[0] == line.encode()
    # A Maildir with messages, folders and a Trash: both count the same.
    for box in (tmp_path / "hfull", tmp_path / "cfull"):
        assert courier("maildirmake", str(box)).returncode == 0
        for folder in ("Sent", "Trash"):
            assert courier("maildirmake", "-f", folder, str(box)).returncode == 0
        for i in range(3):
            assert courier("deliverquota", str(box), input=message(f"m{i}", 100 * i)).returncode == 0
        (box / ".Sent" / "cur" / "1.a.host:2,S").write_bytes(b"x" * 777)
        (box / ".Trash" / "cur" / "2.b.host,S=5000:2,S").write_bytes(b"x" * 5000)
    assert inst.hato("maildirmake", "-q", "5000S,100C", str(tmp_path / "hfull")).returncode == 0
    assert courier("maildirmake", "-q", "5000S,100C", str(tmp_path / "cfull")).returncode == 0
    hato_file = (tmp_path / "hfull" / "maildirsize").read_bytes()
    assert hato_file == (tmp_path / "cfull" / "maildirsize").read_bytes()
    assert parse_maildirsize(hato_file).usage.count == 4  # .Trash is not counted
    # Folders: the same names, the same maildirfolder marker.
    for tool in (["hato"], ["courier"]):
        box = tmp_path / f"f{tool[0]}"
        args = ["-F", "Déjà vu", str(box)]
        if tool == ["hato"]:
            assert inst.hato("maildirmake", str(box)).returncode == 0
            assert inst.hato("maildirmake", *args).returncode == 0
        else:
            assert courier("maildirmake", str(box)).returncode == 0
            assert courier("maildirmake", *args).returncode == 0
    assert sorted(os.listdir(tmp_path / "fhato")) == sorted(os.listdir(tmp_path / "fcourier"))
    assert os.path.exists(tmp_path / "fhato" / ".D&AOk-j&AOA- vu" / "maildirfolder")
    r = inst.hato("maildirmake", "-q", "lots", str(tmp_path / "bad"))
    assert r.returncode == 1 and b"invalid quota" in r.stderr


def test_hato_deliveries_agree_with_deliverquota_and_dovecot(instance):
    inst = instance
    boxes = setup_virtual(inst)
    box = boxes["full"]
    # Made by Courier; Courier delivers first, then hato.
    make_courier_maildir(box, "9000S,100C")
    for i in range(2):
        r = courier("deliverquota", box, input=message(f"courier {i}", 1000))
        assert r.returncode == 0, r.stderr
    chown_tree(box, *virtual_ids())
    inst.start()
    for i in range(3):
        inst.sendmail("-f", SENDER, FULL, message=message(f"hato {i}", 1000))
        inst.wait_log("status=sent (delivered to maildir)", count=i + 1)
    data, sf = sizefile(box)
    counted, _ = scan_usage(box)
    assert sf.usage == counted and counted.count == 5
    assert data.startswith(b"9000S,100C\n")
    # hato appended one padded line per message, as deliverquota does.
    newest = max(os.listdir(os.path.join(box, "new")),
                 key=lambda n: os.stat(os.path.join(box, "new", n)).st_mtime_ns)
    assert data.endswith(format_usage_line(os.path.getsize(os.path.join(box, "new", newest)), 1))
    # Courier counts from scratch (on a copy) and gets the same usage.
    copy = inst.root / "copy"
    shutil.copytree(box, copy)
    os.unlink(copy / "maildirsize")
    assert courier("maildirmake", "-q", "9000S,100C", str(copy)).returncode == 0
    assert parse_maildirsize((copy / "maildirsize").read_bytes()).usage == counted
    # deliverquota reads hato's lines: a message one byte too big does not fit...
    room = 9000 - counted.bytes
    assert room > 100
    r = courier("deliverquota", box, input=message("too much", room - len(message("too much"))
                                                   + 1))
    assert r.returncode == 77, (r.returncode, r.stderr)
    # ...one that just fits does, and hato reads deliverquota's line right.
    r = courier("deliverquota", box, input=message("fits", room - len(message("fits"))))
    assert r.returncode == 0, r.stderr
    _, sf = sizefile(box)
    assert sf.usage == scan_usage(box)[0] == Usage(9000, 6)
    inst.sendmail("-f", SENDER, FULL, message=message("no room left"))
    inst.wait_log("dsn=4.2.2, status=deferred (maildir delivery failed: Mailbox full)")
    assert sizefile(box)[1].usage == Usage(9000, 6)
    # Dovecot's maildir quota backend reports the same usage.
    dovecot = Dovecot(box, *virtual_ids())
    try:
        got = dovecot.quota()
    finally:
        dovecot.stop()
    assert got["MESSAGE"] == (sf.usage.count, 100)
    kib = sf.usage.bytes / 1024
    assert int(kib) <= got["STORAGE"][0] <= int(kib) + 1, (got, sf.usage)
    assert got["STORAGE"][1] in (9000 // 1024, -(-9000 // 1024))  # KiB, rounded


@pytest.mark.parametrize("bounce", [True, False])
def test_over_quota_bounces_or_defers_then_retry_delivers(instance, bounce):
    inst = instance
    boxes = setup_virtual(inst, f"hato_mailbox_quota_bounce = {'yes' if bounce else 'no'}")
    make_courier_maildir(boxes["full"], "3000S")
    inst.start()
    inst.sendmail("-f", SENDER, FULL, message=message("fits", 2000))
    inst.wait_log("status=sent (delivered to maildir)")
    inst.sendmail("-f", SENDER, FULL, message=message("too big", 2000))
    if bounce:
        inst.wait_log("dsn=5.2.2, status=bounced (maildir delivery failed: Mailbox full)")
        inst.wait_for(lambda: len(maildir_messages(boxes["sender"])) == 1,
                      what="the bounce in the sender's Maildir")
        dsn = maildir_messages(boxes["sender"])[0]
        assert dsn.get_content_type() == "multipart/report"
        per_rcpt = dsn.get_payload()[1].get_payload()[1]
        assert per_rcpt["Status"] == "5.2.2" and per_rcpt["Action"] == "failed"
        assert "Mailbox full" in per_rcpt["Diagnostic-Code"]
        inst.wait_for(inst.queue_empty, what="an empty queue")
    else:
        inst.wait_log("dsn=4.2.2, status=deferred (maildir delivery failed: Mailbox full)")
        assert not inst.queue_empty() and delivered(boxes["full"]) == 1
        # The user makes room; the retry delivers.
        remove_messages(boxes["full"])
        assert inst.cmd("flush").returncode == 0
        inst.wait_log("status=sent (delivered to maildir)", count=2)
        inst.wait_for(inst.queue_empty, what="an empty queue")
        assert [m["Subject"] for m in maildir_messages(boxes["full"])] == ["too big"]
        _, sf = sizefile(boxes["full"])
        assert sf.usage == scan_usage(boxes["full"])[0]
    assert delivered(boxes["full"]) == 1


def test_rcpt_time_check(instance):
    inst = instance
    boxes = setup_virtual(inst, "hato_mailbox_quota_rcpt_check = yes")
    make_courier_maildir(boxes["full"], "5000S")
    make_courier_maildir(boxes["sender"], "100000S")
    fill(boxes["full"], "5000S", 0)
    inst.start()

    def rcpt(address: str) -> tuple[int, bytes]:
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
            s.ehlo("client.example.org")
            s.mail("someone@example.org")
            return s.rcpt(address)

    code, text = rcpt(FULL)
    assert (code, text) == (452, f"4.2.2 <{FULL}>: Recipient address rejected: "
                                 "Mailbox full".encode())
    assert rcpt(SENDER)[0] == 250  # room there
    inst.wait_log(f"NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 452 4.2.2 <{FULL}>")
    # With the bounce setting the answer is permanent.
    inst.postconf("hato_mailbox_quota_bounce = yes",
                  "hato_mailbox_quota_message = Sorry, this mailbox is full")
    assert inst.cmd("reload").returncode == 0
    inst.wait_for(lambda: rcpt(FULL)[0] == 552, what="552 after the reload")
    assert rcpt(FULL)[1] == (f"5.2.2 <{FULL}>: Recipient address rejected: "
                             "Sorry, this mailbox is full").encode()
    # After cleanup the recipient is accepted again.
    remove_messages(boxes["full"])
    assert rcpt(FULL)[0] == 250
    # A mailbox with room for a little: accepted at RCPT time (unless
    # SIZE= says the message is too big); the delivery decides.
    fill(boxes["full"], "5000S", 100)
    assert rcpt(FULL)[0] == 250
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.example.org")
        s.mail("someone@example.org", ["SIZE=4000"])
        assert s.rcpt(FULL)[0] == 552
    # Nothing the query did shows up as a delivery.
    assert "NOQUEUE: to=" not in inst.log_text()


def test_twenty_parallel_deliveries(instance):
    inst = instance
    boxes = setup_virtual(inst, "virtual_destination_concurrency_limit = 20",
                          "default_destination_concurrency_limit = 20",
                          "initial_destination_concurrency = 20")
    box = boxes["full"]
    make_courier_maildir(box, "100000S")
    # Near the limit: room for 7 of these messages, but not with hato's
    # headers added.
    filler = 100000 - 7 * len(message("p10", 1000))
    with open(os.path.join(box, "cur", f"1.filler.host,S={filler}:2,S"), "wb") as f:
        f.write(b"x" * 10)
    assert courier("maildirmake", "-q", "100000S", box).returncode == 0
    chown_tree(box, *virtual_ids())
    for i in range(20):
        r = inst.sendmail("-f", SENDER, FULL, message=message(f"p{i}", 1000))
        assert r.returncode == 0, r.stderr
    inst.start()
    inst.wait_for(lambda: statuses(inst, FULL, "sent") + statuses(inst, FULL, "deferred") >= 20,
                  timeout=120, what="20 delivery attempts")
    _, sf = sizefile(box)
    counted, _ = scan_usage(box)
    assert sf.usage == counted  # consistent after concurrent appends
    sizes = [int(n.rsplit(",S=", 1)[1]) for n in os.listdir(os.path.join(box, "new"))]
    # Never over the quota, and nothing refused that would have fitted.
    assert counted.bytes <= 100000 < counted.bytes + min(sizes)
    assert statuses(inst, FULL, "sent") == len(sizes) == counted.count - 1 >= 5
    assert statuses(inst, FULL, "deferred") == 20 - len(sizes)


def test_local_delivery_with_quota_maps(instance):
    """local(8) with home_mailbox = Maildir/: the quota from
    hato_mailbox_quota_maps, maildirsize created and owned by the user."""
    if os.geteuid() != 0:
        pytest.fail("this test creates a system user and must run as root")
    home = f"/tmp/{USER}-home"
    if subprocess.run(["getent", "passwd", USER], capture_output=True).returncode:
        subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/sh", USER], check=True)
    pw = pwd.getpwnam(USER)
    try:
        inst = instance
        box = os.path.join(pw.pw_dir, "Maildir")
        shutil.rmtree(box, ignore_errors=True)
        (inst.root / "quota").write_text(f"{USER} 2500S\n")
        inst.postconf("home_mailbox = Maildir/", "mydestination = $myhostname, localhost",
                      f"hato_mailbox_quota_maps = texthash:{inst.root}/quota",
                      "hato_mailbox_quota_rcpt_check = yes",
                      "minimal_backoff_time = 300s", "queue_run_delay = 300s")
        inst.start()
        inst.sendmail("-f", "x@example.org", USER, message=message("one", 2000))
        inst.wait_log("status=sent (delivered to maildir)")
        data, sf = sizefile(box)
        assert data.startswith(b"2500S\n") and sf.usage == scan_usage(box)[0]
        st = os.stat(os.path.join(box, "maildirsize"))
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid)
        inst.sendmail("-f", "x@example.org", USER, message=message("two", 2000))
        inst.wait_log("dsn=4.2.2, status=deferred (maildir delivery failed: Mailbox full)")
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
            s.ehlo("client.example.org")
            s.mail("someone@example.org")
            assert s.rcpt(f"{USER}@localhost")[0] == 250  # not full yet: 2000 of 2500
        with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
            s.ehlo("client.example.org")
            s.mail("someone@example.org", ["SIZE=1000"])  # but this one would not fit
            assert s.rcpt(f"{USER}@localhost") == (
                452, f"4.2.2 <{USER}@localhost>: Recipient address rejected: "
                     "Mailbox full".encode())
        assert delivered(box) == 1
    finally:
        subprocess.run(["userdel", "-r", USER], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)


def test_bad_maildirsize_files(instance):
    """Garbage lines and a negative total: a warning, a recalculation, the
    message delivered. A quota line that does not parse: a warning and a
    deferral; the message stays queued."""
    inst = instance
    boxes = setup_virtual(inst)
    make_courier_maildir(boxes["sender"], "100000S")
    make_courier_maildir(boxes["full"], "100000S")
    with open(os.path.join(boxes["sender"], "maildirsize"), "wb") as f:
        f.write(b"100000S\nthis is not a number\n" + format_usage_line(-5000, -7))
    with open(os.path.join(boxes["full"], "maildirsize"), "wb") as f:
        f.write(b"a great deal\n" + format_usage_line(0, 0))
    chown_tree(inst.root / "mail", *virtual_ids())
    inst.start()
    inst.sendmail("-f", FULL, SENDER, message=message("garbage", 100))
    inst.wait_log("status=sent (delivered to maildir)")
    assert "recalculating" in inst.log_text() and "negative total" in inst.log_text()
    data, sf = sizefile(boxes["sender"])
    assert not sf.problems and sf.usage == scan_usage(boxes["sender"])[0] == Usage(
        sf.usage.bytes, 1)
    # A Maildir without tmp/: made again, the message delivered and counted.
    os.rmdir(os.path.join(boxes["sender"], "tmp"))
    inst.sendmail("-f", FULL, SENDER, message=message("no tmp", 100))
    inst.wait_log("status=sent (delivered to maildir)", count=2)
    _, sf = sizefile(boxes["sender"])
    assert sf.usage == scan_usage(boxes["sender"])[0] and sf.usage.count == 2
    inst.sendmail("-f", SENDER, FULL, message=message("bad quota line", 100))
    inst.wait_log("dsn=4.3.0, status=deferred (maildir delivery failed: bad quota definition")
    assert "bad quota definition 'a great deal'" in inst.log_text()
    assert delivered(boxes["full"]) == 0 and not inst.queue_empty()

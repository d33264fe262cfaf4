"""t28: the reference setup's second instance, postfix-deux, made and run
with ``hato postmulti``; the service scripts in contrib/.

Everything lives under one temporary directory ROOT: the primary in
ROOT/etc/hato (queue ROOT/spool/hato, data ROOT/lib/hato), so the new
instance's directories derive, as Postfix derives them, to
ROOT/etc/postfix-deux, ROOT/spool/postfix-deux and ROOT/lib/postfix-deux.

* The reference steps: ``-e init`` → ``-I postfix-deux -G mta -e create``
  → its main.cf edited (``master_service_disable =``, ``syslog_facility =
  local5``) and its master.cf listening on a test port → ``-e enable`` →
  ``-p start`` → a message through each instance lands in that instance's
  mailbox and log (``postfix-deux/smtpd[pid]`` lines) → ``-x newaliases``,
  ``-x postmap`` and ``-x mailq`` act on the selected instance → ``-l`` →
  ``-p stop`` → ``-e disable`` → ``hato -c DIR start`` refused → ``-p
  start`` checks the disabled instance instead → ``-e destroy`` refused
  while a deferred message is queued, accepted once it is deleted.
* contrib/init.d/hato run directly: start, status, reload, stop, and a
  stale pid file after kill -9 of a master.
* contrib/systemd/hato.service and hato@.service with systemd-analyze verify.
"""

from __future__ import annotations

import os
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool

from .instance import GROUP, OWNER, ensure_system_user, free_port, hato_command, hato_env, \
    smtp_ready

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INIT_SCRIPT = REPO / "contrib" / "init.d" / "hato"
UNITS = REPO / "contrib" / "systemd"


class Site:
    """A primary made by ``hato init`` under ROOT/etc/hato."""

    def __init__(self):
        ensure_system_user()
        self.root = Path(tempfile.mkdtemp(prefix="hato-t28-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.primary = self.root / "etc" / "hato"
        self.deux = self.root / "etc" / "postfix-deux"
        self.port = free_port()
        r = self.hato("init", "-p", str(self.port), str(self.primary))
        assert r.returncode == 0, r.stderr
        # queue_directory belongs to root, 0755, as Postfix's
        (self.root / "spool" / "hato").mkdir(mode=0o755, parents=True)
        (self.root / "lib").mkdir(mode=0o755)
        r = self.hato("-c", str(self.primary), "postconf", "-e",
                      f"queue_directory={self.root}/spool/hato",
                      f"data_directory={self.root}/lib/hato")
        assert r.returncode == 0, r.stderr
        if os.geteuid() == 0:
            shutil.chown(self.primary / "mail", OWNER, GROUP)

    def hato(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        e = hato_env()
        if env:
            e.update(env)
        return subprocess.run([*hato_command(), *args], capture_output=True, text=True, env=e,
                              timeout=120)

    def pm(self, *args: str) -> subprocess.CompletedProcess:
        return self.hato("-c", str(self.primary), "postmulti", *args)

    def ok(self, *args: str) -> subprocess.CompletedProcess:
        r = self.pm(*args)
        assert r.returncode == 0, (args, r.stdout, r.stderr, self.logs())
        return r

    def logs(self) -> str:
        out = []
        for path in (self.primary / "log" / "maillog", self.deux / "maillog"):
            if path.exists():
                out.append(f"--- {path}\n{path.read_text(errors='replace')}")
        return "\n".join(out)

    def cleanup(self) -> None:
        for d in (self.deux, self.primary):
            if (d / "main.cf").exists():
                self.hato("-c", str(d), "abort")
        marker = f"={self.root}/".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if not any(v.startswith(b"MAIL_CONFIG=") and marker in v
                               for v in f.read().split(b"\0")):
                        continue
                os.kill(int(entry), signal.SIGKILL)
            except OSError:
                continue
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def site():
    if os.geteuid() != 0:
        pytest.fail("t28 needs root (instances drop their services to the user hato)")
    s = Site()
    yield s
    s.cleanup()


def wait_for(predicate, what: str, site: Site, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}\n{site.logs()}")


def maildir_files(path: Path) -> list[Path]:
    return sorted(path.glob("*")) if path.is_dir() else []


def send(port: int, rcpt: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.sendmail("sender@example.org", [rcpt],
                   f"Subject: {subject}\r\n\r\nthrough port {port}\r\n".encode())


def configure_deux(site: Site, port: int, dead_port: int) -> Path:
    """The administrator's edits of the new instance, made through
    ``postmulti -x postconf`` (which acts on the selected instance): the
    reference's ``master_service_disable =`` and ``syslog_facility =
    local5``, a mailbox domain of its own, and a master.cf listening on
    PORT instead of smtp."""
    deux, mail = site.deux, site.root / "deux-mail"
    mail.mkdir()
    shutil.chown(mail, OWNER, GROUP)
    (deux / "vmailbox").write_text("demo@hato.test  hato.test/demo/\n")
    (deux / "aliases").write_text("postmaster: root\n")
    uid = str(max(int(subprocess.run(["id", "-u", OWNER], capture_output=True, text=True)
                      .stdout), 1))
    gid = subprocess.run(["id", "-g", OWNER], capture_output=True, text=True).stdout.strip()
    site.ok("-i", "postfix-deux", "-x", "postconf", "-e",
            "master_service_disable =", "syslog_facility = local5",
            f"maillog_file = {deux}/maillog",
            "inet_interfaces = loopback-only", "inet_protocols = ipv4",
            "mynetworks = 127.0.0.0/8", "myhostname = deux.localdomain",
            "mydestination = $myhostname, localhost",
            "virtual_mailbox_domains = hato.test", f"virtual_mailbox_base = {mail}",
            f"virtual_mailbox_maps = texthash:{deux}/vmailbox",
            f"virtual_uid_maps = static:{uid}", f"virtual_gid_maps = static:{gid}",
            f"virtual_minimum_uid = {uid}",
            f"alias_maps = hash:{deux}/aliases", f"alias_database = hash:{deux}/aliases",
            "default_database_type = lmdb",
            f"relayhost = [127.0.0.1]:{dead_port}")
    site.ok("-i", "postfix-deux", "-x", "newaliases")
    master = (deux / "master.cf").read_text().splitlines(keepends=True)
    smtp = [i for i, line in enumerate(master) if line.split()[:2] == ["smtp", "inet"]]
    assert len(smtp) == 1, master
    master[smtp[0]] = "#" + master[smtp[0]]
    master.insert(smtp[0] + 1, f"127.0.0.1:{port} inet n - n - - smtpd\n")
    (deux / "master.cf").write_text("".join(master))
    return mail


def test_reference_multi_instance_workflow(site):
    primary, deux = site.primary, site.deux
    # 1. init
    site.ok("-e", "init")
    r = site.hato("-c", str(primary), "postconf", "-h", "multi_instance_enable",
                  "multi_instance_wrapper")
    enable, wrapper = r.stdout.splitlines()
    assert enable == "yes" and wrapper.endswith(" postmulti -p --")
    # 2. create postfix-deux in group mta, directories derived from the primary's
    site.ok("-I", "postfix-deux", "-G", "mta", "-e", "create")
    r = site.hato("-c", str(deux), "postconf", "-h", "queue_directory", "data_directory",
                  "master_service_disable", "authorized_submit_users", "multi_instance_name",
                  "multi_instance_group", "multi_instance_enable")
    assert r.stdout.splitlines() == [
        f"{site.root}/spool/postfix-deux", f"{site.root}/lib/postfix-deux", "inet", "",
        "postfix-deux", "mta", "no"], r.stderr
    r = site.hato("-c", str(deux), "postconf", "-xh", "syslog_name")
    assert r.stdout.strip() == "postfix-deux", r.stderr
    # 3./4. its main.cf and master.cf
    port2, dead = free_port(), free_port()
    deux_mail = configure_deux(site, port2, dead)
    r = site.hato("-c", str(deux), "postconf", "-h", "syslog_facility", "master_service_disable")
    assert r.stdout.splitlines() == ["local5", ""]
    # 5. enable and start: the primary first, then postfix-deux
    site.ok("-i", "postfix-deux", "-e", "enable")
    try:
        site.ok("-p", "start")
        wait_for(lambda: smtp_ready(site.port) and smtp_ready(port2), "both smtpd", site)
        r = site.ok("-p", "status")
        assert r.stderr.count("the mail system is running") == 2, r.stderr

        # a message through each instance lands in that instance's mailbox
        box1 = primary / "mail" / "hato.test" / "demo" / "new"
        box2 = deux_mail / "hato.test" / "demo" / "new"
        send(site.port, "demo@hato.test", "to the primary")
        send(port2, "demo@hato.test", "to deux")
        wait_for(lambda: len(maildir_files(box1)) == 1 and len(maildir_files(box2)) == 1,
                 "one message in each mailbox", site)
        assert b"to the primary" in maildir_files(box1)[0].read_bytes()
        assert b"to deux" in maildir_files(box2)[0].read_bytes()
        log1 = (primary / "log" / "maillog").read_text()
        log2 = (deux / "maillog").read_text()
        assert " postfix-deux/smtpd[" in log2 and " postfix-deux/virtual[" in log2
        assert " postfix/smtpd[" in log1 and "postfix-deux/" not in log1
        assert " postfix/" not in log2

        # -x newaliases and -x postmap act on postfix-deux, with its settings
        [aliases_db] = primary.glob("aliases*.db")
        before = aliases_db.stat().st_mtime_ns
        (deux / "aliases").write_text("postmaster: root\nmaster: demo@hato.test\n")
        site.ok("-i", "postfix-deux", "-x", "newaliases")
        r = site.ok("-i", "postfix-deux", "-x", "postalias", "-q", "master", f"hash:{deux}/aliases")
        assert r.stdout.strip() == "demo@hato.test"
        assert aliases_db.stat().st_mtime_ns == before
        (deux / "access").write_text("example.org OK\n")
        site.ok("-i", "postfix-deux", "-x", "postmap", f"{deux}/access")
        assert (deux / "access.lmdb").exists() and not (deux / "access.db").exists()
        r = site.ok("-i", "postfix-deux", "-x", "postmap", "-q", "example.org",
                    f"lmdb:{deux}/access")
        assert r.stdout.strip() == "OK"

        # a message postfix-deux cannot deliver stays in its queue: -x mailq
        send(port2, "someone@remote.example", "deferred")
        wait_for(lambda: "status=deferred" in (deux / "maillog").read_text(),
                 "the deferral", site)
        r = site.ok("-i", "postfix-deux", "-x", "mailq")
        assert "someone@remote.example" in r.stdout and "1 Request" in r.stdout, r.stdout
        r = site.ok("-i", "-", "-x", "mailq")
        assert r.stdout.strip() == "Mail queue is empty"
    finally:
        site.pm("-p", "stop")

    r = site.pm("-p", "status")
    assert r.returncode == 1 and r.stderr.count("the mail system is not running") == 2
    # -l: name, group, enabled, configuration directory
    r = site.ok("-l")
    assert r.stdout.splitlines() == [
        f"{'-':<15} {'-':<15} {'y':<9} {primary}",
        f"{'postfix-deux':<15} {'mta':<15} {'y':<9} {deux}",
    ]
    # destroy needs a disabled instance
    r = site.pm("-i", "postfix-deux", "-e", "destroy")
    assert r.stderr == "postmulti: fatal: Cannot remove enabled instances\n"
    site.ok("-i", "postfix-deux", "-e", "disable")
    assert site.ok("-l").stdout.splitlines()[1].split()[2] == "n"
    # a disabled secondary: hato start refuses it; -p start only checks it
    r = site.hato("-c", str(deux), "start", env={"HATO_PRIMARY_CONFIG": str(primary)})
    assert r.returncode == 1 and r.stderr.strip() == (
        f"hato: fatal: multi_instance_enable!=yes in secondary instance {deux}, "
        "run 'hato postmulti -i postfix-deux -e enable' first")
    try:
        site.ok("-p", "start")
        wait_for(lambda: smtp_ready(site.port), "the primary's smtpd", site)
        assert not smtp_ready(port2)
        r = site.hato("-c", str(deux), "status")
        assert r.returncode == 1
    finally:
        site.ok("-p", "stop")

    # destroy: refused while the deferred message is queued, then accepted
    r = site.pm("-i", "postfix-deux", "-e", "destroy")
    assert (r.returncode, r.stderr) == (
        1, f"postmulti: fatal: Instance '{deux}' queue is not empty: 1 message\n")
    assert (deux / "main.cf").exists()
    site.ok("-i", "postfix-deux", "-x", "postsuper", "-d", "ALL")
    r = site.ok("-i", "postfix-deux", "-e", "destroy")
    # what the instance and its administrator added stays, and is named (as
    # with Postfix): the data (verify cache) and the tables in config_directory
    lib = site.root / "lib" / "postfix-deux"
    assert r.stderr.splitlines() == [
        f"postmulti: warning: {lib}: please verify contents and remove by hand",
        f"postmulti: warning: {deux}: please verify contents and remove by hand"]
    assert sorted(p.name for p in deux.iterdir()) == [
        "access", "access.lmdb", "aliases", *sorted(p.name for p in deux.glob("aliases*.db")),
        "maillog", "vmailbox"]
    assert not (site.root / "spool" / "postfix-deux").exists()
    assert lib.exists() and not (lib / "master.lock").exists()
    r = site.hato("-c", str(primary), "postconf", "-h", "multi_instance_directories")
    assert r.stdout.strip() == ""
    assert site.ok("-l").stdout.splitlines() == [f"{'-':<15} {'-':<15} {'y':<9} {primary}"]


def test_bad_input_leaves_nothing_behind(site):
    def tree() -> list[str]:
        return sorted(os.path.join(d, n) for d, dirs, files in os.walk(site.root)
                      for n in dirs + files if "/log/" not in os.path.join(d, n))

    site.ok("-e", "init")
    site.ok("-I", "postfix-deux", "-G", "mta", "-e", "create")
    before = tree()
    existing = site.root / "etc" / "postfix-half"
    for args, message in [
        (("-I", "deux", "-e", "create"), "New instance name must start with 'postfix-' or 'hato-'"),
        (("-I", "postfix-deux", "-e", "create"),
         f"new config_directory={site.deux} is already in use by instance {site.deux}, "
         f"config_directory={site.deux}"),
        (("-I", "postfix-deux", "-e", "create", f"config_directory={existing}"),
         f"instance {existing}, multi_instance_name=postfix-deux conflicts with instance "
         f"{site.deux}, multi_instance_name=postfix-deux"),
        (("-I", "postfix-trois", "-e", "create", f"config_directory={site.primary}"),
         f"new config_directory={site.primary} is already in use by instance {site.primary}, "
         f"config_directory={site.primary}"),
    ]:
        r = site.pm(*args)
        assert (r.returncode, r.stderr) == (1, f"postmulti: fatal: {message}\n"), args
        assert tree() == before, args
    site.ok("-i", "postfix-deux", "-e", "enable")
    r = site.pm("-i", "postfix-deux", "-e", "destroy")
    assert r.stderr == "postmulti: fatal: Cannot remove enabled instances\n"
    assert tree() == before


# -- the service scripts --------------------------------------------------------------------


def test_init_script(site):
    """contrib/init.d/hato run directly on a primary with one secondary."""
    site.ok("-e", "init")
    site.ok("-I", "hato-deux", "-e", "create")
    deux = site.root / "etc" / "hato-deux"
    port2 = free_port()
    master = (deux / "master.cf").read_text().replace(
        "smtp      inet  n       -       n       -       -       smtpd",
        f"127.0.0.1:{port2} inet n - n - - smtpd")
    (deux / "master.cf").write_text(master)
    site.ok("-i", "deux", "-x", "postconf", "-e", "master_service_disable =",
            "inet_interfaces = loopback-only", "inet_protocols = ipv4",
            f"maillog_file = {deux}/maillog")
    site.ok("-i", "deux", "-e", "enable")
    hato = hato_command()
    if len(hato) != 1:
        pytest.fail("the init script needs the hato program: run the tests with tools/run-tests "
                    "(HATO_VENV)")
    defaults = site.root / "default-hato"
    defaults.write_text(f"HATO={hato[0]}\nCONFIG=/nonexistent\n")
    env = hato_env()
    env["HATO_DEFAULTS"] = str(defaults)
    pids = [site.root / "spool" / "hato" / "pid" / "master.pid",
            site.root / "spool" / "hato-deux" / "pid" / "master.pid"]

    def rc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", str(INIT_SCRIPT), *args, "-c", str(site.primary)],
                              capture_output=True, text=True, env=env, timeout=180)

    try:
        r = rc("status")
        assert r.returncode == 3 and "hato is not running" in r.stdout, r.stdout + r.stderr
        r = rc("start")
        assert r.returncode == 0 and "Started hato" in r.stdout, r.stdout + r.stderr
        wait_for(lambda: smtp_ready(site.port) and smtp_ready(port2), "both smtpd", site)
        r = rc("status")
        assert r.returncode == 0 and "hato is running" in r.stdout
        assert r.stderr.count("the mail system is running") == 2
        r = rc("start")
        assert r.returncode == 0 and "already running" in r.stdout
        old = [int(p.read_text()) for p in pids]
        r = rc("reload")
        assert r.returncode == 0 and r.stderr.count("refreshing the mail system") == 2, r.stderr
        assert [int(p.read_text()) for p in pids] == old
        # kill -9 the secondary's master: its pid file stays behind
        os.kill(old[1], signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{old[1]}"), "the master to die", site)
        wait_for(lambda: not smtp_ready(port2), "the secondary's smtpd to go", site)
        r = rc("stop")
        assert r.returncode == 0 and "Stopped hato" in r.stdout, r.stdout + r.stderr
        r = rc("status")
        assert r.returncode == 1 and f"dead but pid file {pids[1]} exists" in r.stdout, r.stdout
        r = rc("start")
        assert r.returncode == 0 and f"removing stale pid file {pids[1]}" in r.stdout, \
            r.stdout + r.stderr
        wait_for(lambda: smtp_ready(site.port) and smtp_ready(port2), "both smtpd again", site)
        assert int(pids[1].read_text()) != old[1]
        r = rc("stop")
        assert r.returncode == 0 and "Stopped hato" in r.stdout
        assert rc("status").returncode == 3 and not any(p.exists() for p in pids)
    finally:
        rc("stop")


def test_systemd_units(tmp_path):
    analyze = require_tool("systemd-analyze", "systemd")
    hato = hato_command()
    if len(hato) != 1:
        pytest.fail("the units need the hato program: run the tests with tools/run-tests "
                    "(HATO_VENV)")
    names = ["hato.service", "hato@.service"]
    for name in names:
        text = (UNITS / name).read_text()
        assert "/opt/hato/venv/bin/hato" in text
        (tmp_path / name).write_text(text.replace("/opt/hato/venv/bin/hato", hato[0]))
    r = subprocess.run([analyze, "verify", str(tmp_path / "hato.service"),
                        str(tmp_path / "hato@.service"), str(tmp_path / "hato@postfix-deux.service")],
                       capture_output=True, text=True, timeout=120)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), r.stdout + r.stderr
    # the template: one instance per unit, selected with postmulti -i
    text = (UNITS / "hato@.service").read_text()
    for verb in ("start", "stop", "reload"):
        assert f"postmulti -i %I -p {verb}\n" in text

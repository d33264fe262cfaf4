"""t13: ``hato saslauthd``, the saslauthd-compatible daemon, with real clients.

* Debian's ``testsaslauthd -f SOCKET -u USER -p PASS -s smtp`` against
  ``-a pam``, ``-a shadow`` and ``-a sasldb``: right and wrong passwords.
  PAM: Debian has no /etc/pam.d/smtp, so the service ``smtp`` falls back
  to ``other`` (common-auth: pam_unix, which sleeps ~2 s after a failure).
* The daemon's life: it detaches and writes RUNDIR/saslauthd.pid, a second
  one on the same RUNDIR refuses to start, SIGTERM removes socket and pid
  file.
* contrib/init.d/hato-saslauthd: start, status, second start, restart,
  stop, a stale pid file after kill -9.
* 200 parallel testsaslauthd runs through PAM, good and bad passwords
  mixed: every answer right, and the whole run far shorter than the
  failures' delays one after the other.
* Debian's Postfix 3.7 with Cyrus SASL (``pwcheck_method: saslauthd``)
  authenticating swaks through hato's saslauthd; hato's smtpd through it.

Every daemon runs on a socket in a temp dir (never /run/saslauthd), the
system user the test makes is removed, /etc/sasldb2 is not used.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.certs import TestCA
from tests.conftest import require_tool

from .instance import hato_command, hato_env
from .sasl_daemons import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INIT_SCRIPT = ROOT / "contrib" / "init.d" / "hato-saslauthd"
PASSWORD = "good pass wörd"


@pytest.fixture(scope="module")
def system_user():
    for tool in ("useradd", "userdel", "chpasswd"):
        require_tool(tool, "passwd")
    if os.geteuid() != 0:
        pytest.fail("t13 needs root (system users, /etc/shadow, PAM)")
    user = f"ht13u{os.getpid() % 100000}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", user], check=True)
    try:
        subprocess.run(["chpasswd"], input=f"{user}:{PASSWORD}\n", text=True, check=True)
        yield user
    finally:
        subprocess.run(["userdel", user], check=False)


@pytest.fixture
def rundir():
    d = tempfile.mkdtemp(prefix="ht13")
    os.chmod(d, 0o755)  # smtpd's workers (users hato, postfix) reach the socket
    yield d
    pid_file = os.path.join(d, "saslauthd.pid")
    try:
        os.kill(int(Path(pid_file).read_text()), signal.SIGKILL)
    except (OSError, ValueError):
        pass
    shutil.rmtree(d, ignore_errors=True)


class Daemon:
    """``hato saslauthd -d`` in the foreground, in its own session."""

    def __init__(self, rundir: str, *args: str):
        self.rundir = rundir
        self.mux = os.path.join(rundir, "mux")
        self.log = os.path.join(rundir, "daemon.log")
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*hato_command(), "saslauthd", "-m", rundir, "-d",
                                          *args], stdout=out, stderr=subprocess.STDOUT,
                                         env=hato_env(), start_new_session=True)
        wait_for(self.mux, self.proc, "hato saslauthd", log=self.log)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def log_text(self) -> str:
        return Path(self.log).read_text(errors="replace")


@pytest.fixture
def daemons():
    started: list[Daemon] = []
    yield started
    for d in started:
        d.stop()


def run_testsaslauthd(mux: str, user: str, password: str, *extra: str,
                  service: str = "smtp") -> subprocess.CompletedProcess:
    exe = require_tool("testsaslauthd", "sasl2-bin")
    return subprocess.run([exe, "-f", mux, "-u", user, "-p", password, "-s", service, *extra],
                          capture_output=True, text=True, timeout=60, check=False)


def assert_ok(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == 0 and r.stdout.strip() == '0: OK "Success."', r.stdout + r.stderr


def assert_no(r: subprocess.CompletedProcess) -> None:
    assert r.returncode != 0 and 'NO "authentication failed"' in r.stdout, r.stdout + r.stderr


# -- testsaslauthd against each mechanism --------------------------------------------------

@pytest.mark.parametrize("mech", ["shadow", "pam"])
def test_testsaslauthd_system_user(system_user, rundir, daemons, mech):
    daemon = Daemon(rundir, "-a", mech, "-n", "3")
    daemons.append(daemon)
    assert_ok(run_testsaslauthd(daemon.mux, system_user, PASSWORD))
    assert_no(run_testsaslauthd(daemon.mux, system_user, PASSWORD + "x"))
    assert_no(run_testsaslauthd(daemon.mux, system_user + "nobody", PASSWORD))
    # hato's own client says the same
    r = subprocess.run([*hato_command(), "testsaslauthd", "-f", daemon.mux, "-u", system_user,
                        "-p", PASSWORD, "-s", "smtp"], capture_output=True, text=True,
                       env=hato_env(), timeout=60)
    assert r.returncode == 0 and r.stdout == '0: OK "Success."\n', r.stdout + r.stderr
    assert daemon.stop() == 0
    log = daemon.log_text()
    assert f"auth success: [user={system_user}] [service=smtp] [realm=] [mech={mech}]" in log
    assert f"auth failure: [user={system_user}] [service=smtp]" in log
    assert PASSWORD not in log
    assert not os.path.exists(daemon.mux), "the socket was not removed"


def test_testsaslauthd_sasldb(rundir, daemons):
    from hato.auth.sasldb import Sasldb

    path = os.path.join(rundir, "sasldb.lmdb")
    Sasldb(path, writable=True).set_password("carol", "hato.test", "sasl db pw", ["PLAIN"])
    daemon = Daemon(rundir, "-a", "sasldb", "-O", path, "-n", "2")
    daemons.append(daemon)
    assert_ok(run_testsaslauthd(daemon.mux, "carol", "sasl db pw", "-r", "hato.test"))
    assert_ok(run_testsaslauthd(daemon.mux, "carol@hato.test", "sasl db pw"))
    assert_no(run_testsaslauthd(daemon.mux, "carol", "wrong", "-r", "hato.test"))
    assert_no(run_testsaslauthd(daemon.mux, "carol", "sasl db pw", "-r", "elsewhere.test"))


# -- the daemon's life ---------------------------------------------------------------------

def test_detach_pid_file_second_instance_and_sigterm(system_user, rundir):
    cmd = [*hato_command(), "saslauthd", "-a", "shadow", "-m", rundir, "-n", "2", "-c"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=hato_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    pid = int(Path(rundir, "saslauthd.pid").read_text())
    os.kill(pid, 0)
    assert Path(rundir, "saslauthd.pid.lock").exists()
    assert os.stat(os.path.join(rundir, "mux")).st_mode & 0o777 == 0o777
    assert_ok(run_testsaslauthd(os.path.join(rundir, "mux"), system_user, PASSWORD))
    # a second daemon on the same run directory refuses, and leaves the first alone
    r = subprocess.run(cmd, capture_output=True, text=True, env=hato_env(), timeout=30)
    assert r.returncode == 1 and "another saslauthd is running" in r.stderr, r.stderr
    assert_ok(run_testsaslauthd(os.path.join(rundir, "mux"), system_user, PASSWORD))
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)
    for name in ("mux", "saslauthd.pid", "saslauthd.pid.lock"):
        assert not os.path.exists(os.path.join(rundir, name)), name


def test_version_and_usage():
    r = subprocess.run([*hato_command(), "saslauthd", "-v"], capture_output=True, text=True,
                       env=hato_env(), timeout=30)
    assert r.returncode == 0
    assert re.search(r"^authentication mechanisms: .*\bshadow\b", r.stdout, re.M), r.stdout
    assert "pam" in r.stdout.split(), r.stdout
    r = subprocess.run([*hato_command(), "saslauthd", "-m", "/nonexistent"],
                       capture_output=True, text=True, env=hato_env(), timeout=30)
    assert r.returncode == 1 and "no authentication mechanism" in r.stderr


# -- the init script -----------------------------------------------------------------------

def test_init_script(system_user, rundir):
    wrapper = os.path.join(rundir, "hato")
    Path(wrapper).write_text("#!/bin/sh\nexec " + " ".join(map(shlex.quote, hato_command()))
                             + ' "$@"\n')
    os.chmod(wrapper, 0o755)
    defaults = os.path.join(rundir, "defaults")
    Path(defaults).write_text(f"HATO={wrapper}\nMECH=shadow\nRUNDIR={rundir}/run\n"
                              "WORKERS=2\nOPTIONS=\n")
    env = {**hato_env(), "HATO_SASLAUTHD_DEFAULTS": defaults}
    mux = os.path.join(rundir, "run", "mux")
    pid_file = Path(rundir, "run", "saslauthd.pid")

    def rc(action: str) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", str(INIT_SCRIPT), action], capture_output=True,
                              text=True, env=env, timeout=60)

    try:
        assert rc("status").returncode == 3
        r = rc("start")
        assert r.returncode == 0 and "Started" in r.stdout, r.stdout + r.stderr
        pid = int(pid_file.read_text())
        r = rc("status")
        assert r.returncode == 0 and f"running (pid {pid})" in r.stdout
        assert_ok(run_testsaslauthd(mux, system_user, PASSWORD))
        r = rc("start")  # refused: one daemon only
        assert "already running" in r.stdout and int(pid_file.read_text()) == pid
        r = rc("restart")
        assert r.returncode == 0, r.stdout + r.stderr
        new_pid = int(pid_file.read_text())
        assert new_pid != pid and not os.path.exists(f"/proc/{pid}")
        assert_ok(run_testsaslauthd(mux, system_user, PASSWORD))
        os.kill(new_pid, signal.SIGKILL)  # leaves pid file, lock file and socket behind
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{new_pid}") and time.monotonic() < deadline:
            time.sleep(0.05)
        r = rc("status")
        assert r.returncode == 1 and "dead but pid file" in r.stdout, r.stdout
        r = rc("start")
        assert r.returncode == 0 and "stale pid file" in r.stdout, r.stdout + r.stderr
        third = int(pid_file.read_text())
        assert third != new_pid
        assert_ok(run_testsaslauthd(mux, system_user, PASSWORD))
        r = rc("stop")
        assert r.returncode == 0 and "Stopped" in r.stdout
        assert not os.path.exists(f"/proc/{third}")
        assert rc("status").returncode == 3
        assert not os.path.exists(mux) and not pid_file.exists()
    finally:
        rc("stop")


# -- concurrency ---------------------------------------------------------------------------

def test_parallel_pam_with_failure_delay(system_user, rundir, daemons):
    """pam_unix delays every failure by ~2 s. 200 clients, 60 of them with a
    wrong password, on 20 workers: every answer is right, and good
    passwords sent after wrong ones are answered before them — the slow
    failures do not queue the others behind them (no timing is asserted,
    only the order of the answers)."""
    import threading

    daemon = Daemon(rundir, "-a", "pam", "-n", "20")
    daemons.append(daemon)
    exe = require_tool("testsaslauthd", "sasl2-bin")
    procs = []
    for i in range(200):
        good = i % 10 >= 3
        procs.append((good, subprocess.Popen(
            [exe, "-f", daemon.mux, "-u", system_user, "-p",
             PASSWORD if good else f"wrong{i}", "-s", "smtp"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    done: list[int] = []  # indexes in the order their answers came
    lock = threading.Lock()
    results: dict[int, tuple[int, str]] = {}

    def wait(i: int, proc: subprocess.Popen) -> None:
        out, _ = proc.communicate(timeout=120)
        with lock:
            done.append(i)
            results[i] = (proc.returncode, out)

    threads = [threading.Thread(target=wait, args=(i, p)) for i, (_, p) in enumerate(procs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wrong = [(good, *results[i]) for i, (good, _) in enumerate(procs)
             if (results[i][0] == 0) != good or ("OK" in results[i][1]) != good]
    assert not wrong, wrong[:5]
    order = {i: n for n, i in enumerate(done)}
    first_bad = 0  # request 0 has a wrong password
    overtaking = [i for i, (good, _) in enumerate(procs) if good and i > first_bad
                  and order[i] < order[first_bad]]
    assert overtaking, "every good password waited behind the first failure"


# -- Postfix and hato's smtpd as clients ---------------------------------------------------

def test_debian_postfix_through_hato_saslauthd(system_user, rundir, daemons):
    from tests.postfix_instance import PostfixInstance

    swaks = require_tool("swaks", "swaks")
    daemon = Daemon(rundir, "-a", "pam", "-n", "4")
    daemons.append(daemon)
    main_cf = ("smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = cyrus\n"
               "smtpd_sasl_path = smtpd\nsmtpd_sasl_security_options = noanonymous\n"
               "smtpd_tls_security_level = none\n")
    with PostfixInstance(main_cf, name="t13") as pf:
        sasl = pf.conf / "sasl"
        sasl.mkdir()
        (sasl / "smtpd.conf").write_text(f"pwcheck_method: saslauthd\nsaslauthd_path: "
                                         f"{daemon.mux}\nmech_list: PLAIN LOGIN\n")
        pf.postconf("-e", f"cyrus_sasl_config_path = {sasl}")
        pf._run("reload")
        time.sleep(1)  # the reload replaces smtpd processes that read no smtpd.conf

        def auth(mech: str, password: str) -> subprocess.CompletedProcess:
            return subprocess.run([swaks, "--server", f"127.0.0.1:{pf.port}", "-a", mech,
                                   "-au", system_user, "-ap", password, "--quit-after", "AUTH"],
                                  capture_output=True, text=True, timeout=60, check=False)

        for mech in ("PLAIN", "LOGIN"):
            r = auth(mech, PASSWORD)
            assert r.returncode == 0 and "235 2.7.0 Authentication successful" in r.stdout, \
                r.stdout + r.stderr + pf.log_text()[-2000:]
        r = auth("PLAIN", "not it")
        assert r.returncode != 0 and "535 5.7.8" in r.stdout, r.stdout
    log = daemon.log_text()
    assert f"auth success: [user={system_user}] [service=smtp]" in log
    assert f"auth failure: [user={system_user}] [service=smtp]" in log


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


def test_hato_smtpd_through_hato_saslauthd(instance, ca, rundir, daemons):
    from hato.auth.sasldb import Sasldb

    from .test_t11_sasl_end_to_end import advertised, make_site, swaks

    path = os.path.join(rundir, "sasldb.lmdb")
    Sasldb(path, writable=True).set_password("carol", "hato.test", "sasl db pw", ["PLAIN"])
    daemon = Daemon(rundir, "-a", "sasldb", "-O", path, "-n", "2")
    daemons.append(daemon)
    site = make_site(instance, ca, daemon.mux)
    site.start()
    assert advertised(site) == ["PLAIN", "LOGIN"]
    for mech in ("PLAIN", "LOGIN"):
        r = swaks(site, mech, "carol@hato.test", "sasl db pw", sender="carol@hato.test")
        assert r.returncode == 0 and "235 2.7.0 Authentication successful" in r.stdout, \
            r.stdout + r.stderr
    r = swaks(site, "PLAIN", "carol@hato.test", "wrong", sender="carol@hato.test")
    assert r.returncode != 0 and "535 5.7.8" in r.stdout, r.stdout
    log = daemon.log_text()
    assert "auth success: [user=carol] [service=smtp] [realm=hato.test] [mech=sasldb]" in log

"""A real hato instance for integration tests: its own directory, ports,
main.cf and master.cf, started with ``hato start`` and stopped afterwards.

Run as root (as in CI), the instance drops its services to the system user
``hato`` (group ``hatodrop``), which the fixture creates when missing, and
runs hato from the test environment ``$HATO_VENV`` (tools/run-tests makes it
readable to that user). Run by an ordinary user, everything runs as that
user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hato.cli.init import SUBMISSION_OFFSET  # hato init -p PORT: submission on PORT + it
from tests.conftest import SRC
from tests.ports import free_port, free_port_with  # noqa: F401 (free_port re-exported for the tests)


OWNER = "hato"
GROUP = "hatodrop"


def ensure_system_user() -> None:
    if os.geteuid() != 0:
        return
    if subprocess.run(["getent", "group", GROUP], capture_output=True).returncode:
        subprocess.run(["groupadd", "--system", GROUP], check=True)
    if subprocess.run(["getent", "passwd", OWNER], capture_output=True).returncode:
        subprocess.run(["useradd", "--system", "--gid", GROUP, "--home-dir", "/nonexistent",
                        "--no-create-home", "--shell", "/usr/sbin/nologin", OWNER], check=True)


_checked = False


def check_readable_by_owner() -> None:
    """Started by root, hato's services run as OWNER: they must be able to
    read Python and hato. tools/run-tests sets this up ($HATO_VENV)."""
    global _checked
    if _checked or os.geteuid() != 0:
        return
    venv = os.environ.get("HATO_VENV")
    python = os.path.join(venv, "bin", "python") if venv else sys.executable
    probe = subprocess.run(["runuser", "-u", OWNER, "--", python, "-c",
                            "import concurrent.futures.thread, hato.services.qmgr"],
                           capture_output=True, env=hato_env(), text=True, cwd="/")
    if probe.returncode:
        import pytest

        pytest.fail(f"user {OWNER} cannot run hato with {python} ({probe.stderr.strip()[-200:]});"
                    " run the tests with tools/run-tests, which installs hato where the "
                    "mail_owner can read it")
    _checked = True


def hato_command() -> list[str]:
    venv = os.environ.get("HATO_VENV")
    if venv and os.path.exists(os.path.join(venv, "bin", "hato")):
        return [os.path.join(venv, "bin", "hato")]
    return [sys.executable, "-m", "hato"]


def hato_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    if not os.environ.get("HATO_VENV"):
        env["PYTHONPATH"] = str(SRC)
    return env


def common_port(last_octets: range) -> int:
    """A port free on 127.0.0.1 and on each 127.0.0.N for N in
    *last_octets* (several test servers on one port, as MX hosts)."""
    for _ in range(50):
        port = free_port()
        try:
            for last in last_octets:
                with socket.socket() as t:
                    t.bind((f"127.0.0.{last}", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


def smtp_ready(port: int) -> bool:
    """Does an SMTP server on 127.0.0.1:*port* greet with 220?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            return s.recv(100).startswith(b"220 ")
    except OSError:
        return False


class Instance:
    def __init__(self, name: str = "t"):
        ensure_system_user()
        check_readable_by_owner()
        self.root = Path(tempfile.mkdtemp(prefix=f"hato-{name}-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.port = free_port_with(SUBMISSION_OFFSET)  # both of init's ports held for us
        r = self.hato("init", "-p", str(self.port), str(self.root))
        assert r.returncode == 0, r.stderr
        self.maillog = self.root / "log" / "maillog"
        self.running = False

    # -- commands ------------------------------------------------------------------

    def hato(self, *args: str, input: bytes | None = None,
             check: bool = False) -> subprocess.CompletedProcess:
        return subprocess.run([*hato_command(), *args], input=input, capture_output=True,
                              env=hato_env(), timeout=120, check=check)

    def cmd(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
        return self.hato("-c", str(self.root), *args, input=input)

    def postconf(self, *settings: str) -> None:
        r = self.cmd("postconf", "-e", *settings)
        assert r.returncode == 0, r.stderr

    def sendmail(self, *args: str, message: bytes) -> subprocess.CompletedProcess:
        return self.cmd("sendmail", *args, input=message)

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root / "mail", OWNER, GROUP)
        r = self.cmd("start")
        assert r.returncode == 0, (r.stdout, r.stderr, self.log_text())
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.cmd("stop")
            self.running = False

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if os.geteuid() == 0:
                self.cmd("abort")
            self.kill_strays()
            shutil.rmtree(self.root, ignore_errors=True)

    def kill_strays(self) -> None:
        """Leave no process of this instance behind (a test that killed its
        master on purpose may have left a worker starting up)."""
        marker = f"MAIL_CONFIG={self.root}".encode()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker not in f.read().split(b"\0"):
                        continue
                os.kill(int(entry), 9)
            except OSError:
                continue

    # -- observation -----------------------------------------------------------------

    def pids(self) -> dict[int, str]:
        """pid -> role ("master" or the worker's service) of this instance's
        processes now."""
        return instance_pids(str(self.root))

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}\n--- maillog:\n{self.log_text()}")

    def wait_log(self, text: str, count: int = 1, timeout: float = 30.0) -> None:
        self.wait_for(lambda: self.log_text().count(text) >= count, timeout,
                      f"{count} x {text!r} in the mail log")

    def queue_empty(self) -> bool:
        q = self.root / "queue"
        for name in ("maildrop", "incoming", "active", "deferred"):
            for _dirpath, _dirs, files in os.walk(q / name):
                if files:
                    return False
        return True


def instance_pids(root: str) -> dict[int, str]:
    """pid -> role ("master" or the worker's service) of the instance in
    *root*: its workers carry MAIL_CONFIG=root; the master's pid is in its
    pid file."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"MAIL_CONFIG={root}".encode() in env and b"hato.master.worker" in argv:
            found[int(entry)] = argv[argv.index(b"hato.master.worker") + 1].decode()
    pidfile = os.path.join(root, "queue", "pid", "master.pid")
    try:
        found[int(open(pidfile).read())] = "master"
    except (OSError, ValueError):
        pass
    return found

"""Debian's SASL daemons for the integration tests (t09, t11), started in
temp directories and stopped afterwards, each in its own session.

* :class:`Saslauthd`: Cyrus' saslauthd (sasl2-bin) on a socket in a temp
  directory. With ``-a shadow`` (the default) it checks a system user the
  fixture creates (``useradd`` + ``chpasswd``) and removes. With
  ``mechanism="sasldb"`` it reads libsasl's ``/etc/sasldb2`` — always that
  file: its getopt callback offers no ``sasldb_path`` — and creates no user.
* :class:`Dovecot`: Dovecot's auth service (dovecot-core) with a minimal
  auth-only configuration (``protocols =``, a passwd-file passdb) whose
  auth-client socket (mode 0666) lives in a temp directory or at a path
  the caller chooses; nothing listens on the network.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time

import pytest

from tests.conftest import require_tool

PASSWORD = "s3cret pw\twith tab"


def _accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def wait_for(path: str, proc: subprocess.Popen, what: str, *, log: str,
             timeout: float = 15) -> None:
    """Wait until *path*, a UNIX socket, accepts a connection: a name left
    behind by an earlier run of the daemon, or a socket bound but not yet
    listening, is not ready."""
    deadline = time.monotonic() + timeout
    while not _accepts(path):
        if proc.poll() is not None:
            with open(log, errors="replace") as f:
                pytest.fail(f"{what} exited with status {proc.returncode}: {f.read()[-2000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not create {path}")
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    """End a daemon the test started, with its children (its own session)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


SASLDB2 = "/etc/sasldb2"

# -- saslauthd ---------------------------------------------------------------------

class Saslauthd:
    def __init__(self, *, mechanism: str = "shadow", password: str = PASSWORD,
                 sasldb: str | None = None) -> None:
        """*sasldb*: with ``mechanism="sasldb"``, the database file to serve.
        saslauthd can only read /etc/sasldb2, so it runs in a mount
        namespace of its own where that name is bind-mounted from *sasldb*:
        the machine's /etc/sasldb2 is never written."""
        self.exe = require_tool("saslauthd", "sasl2-bin")
        self.mechanism = mechanism
        self.sasldb = sasldb
        self.made_target = False
        self.password = password
        if mechanism == "shadow":
            for tool in ("useradd", "userdel", "chpasswd"):
                require_tool(tool, "passwd")
        if os.geteuid() != 0:
            pytest.fail(f"saslauthd -a {mechanism} needs root (to read /etc/shadow or "
                        "/etc/sasldb2)")
        self.dir = tempfile.mkdtemp(prefix="hsa")
        os.chmod(self.dir, 0o755)  # smtpd's workers (user hato) connect to the socket
        self.mux = os.path.join(self.dir, "mux")
        self.user = f"hsasl{os.getpid() % 100000}"
        self.user_added = False
        self.proc: subprocess.Popen | None = None

    def setup(self) -> None:
        if self.mechanism == "shadow":
            subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", self.user], check=True)
            self.user_added = True
            subprocess.run(["chpasswd"], input=f"{self.user}:{self.password}\n", text=True,
                           check=True)
        self.start()

    def start(self) -> None:
        log = os.path.join(self.dir, "saslauthd.out")
        with open(log, "ab") as out:
            # its own session: saslauthd signals its whole process group on exit
            argv = [self.exe, "-a", self.mechanism, "-m", self.dir, "-n", "2", "-d"]
            if self.sasldb is not None:
                unshare = require_tool("unshare", "util-linux")
                if not os.path.lexists(SASLDB2):
                    open(SASLDB2, "x").close()  # a mount point; removed in cleanup()
                    self.made_target = True
                argv = [unshare, "--mount", "--propagation", "private", "--", "sh", "-c",
                        'mount --bind "$0" /etc/sasldb2 && exec "$@"', self.sasldb, *argv]
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        wait_for(self.mux, self.proc, "saslauthd", log=log)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if self.user_added:
            subprocess.run(["userdel", self.user], check=False)
        if self.made_target and os.path.exists(SASLDB2) and os.path.getsize(SASLDB2) == 0:
            os.unlink(SASLDB2)
        shutil.rmtree(self.dir, ignore_errors=True)


# -- Dovecot ---------------------------------------------------------------------

class Dovecot:
    """*socket*: where the auth-client listener goes (default: DIR/auth-client);
    *users*: passwd-file lines ``name:{SCHEME}secret`` (default: t09's alice
    with {PLAIN}wonderland and bob with {CRAM-MD5} of "builder")."""

    def __init__(self, *, failure_delay: str = "1s", socket: str | None = None,
                 users: list[str] | None = None) -> None:
        self.exe = require_tool("dovecot", "dovecot-core")
        self.doveadm = require_tool("doveadm", "dovecot-core")
        if os.geteuid() != 0:
            pytest.fail("the test runs Dovecot as root (it drops to dovecot/dovenull)")
        self.dir = tempfile.mkdtemp(prefix="hdv")  # short: Dovecot's socket paths
        self.proc: subprocess.Popen | None = None
        try:
            self._configure(failure_delay, socket, users)
        except BaseException:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise

    def hash(self, scheme: str, password: str) -> str:
        """``doveadm pw -s SCHEME``: the password as ``{SCHEME}...``."""
        return subprocess.run([self.doveadm, "pw", "-s", scheme, "-p", password],
                              capture_output=True, text=True, check=True).stdout.strip()

    def _configure(self, failure_delay: str, socket: str | None,
                   users: list[str] | None) -> None:
        os.chmod(self.dir, 0o755)
        self.socket = socket or os.path.join(self.dir, "auth-client")
        if users is None:
            users = ["alice:{PLAIN}wonderland", f"bob:{self.hash('CRAM-MD5', 'builder')}"]
        passwd = os.path.join(self.dir, "passwd")
        with open(passwd, "w") as f:
            f.write("".join(u + "\n" for u in users))
        os.chmod(passwd, 0o644)
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
                auth_mechanisms = plain login cram-md5
                auth_failure_delay = {failure_delay}
                disable_plaintext_auth = no
                service auth {{
                  unix_listener auth-client {{
                    path = {self.socket}
                    mode = 0666
                  }}
                }}
                passdb {{
                  driver = passwd-file
                  args = {passwd}
                }}
                userdb {{
                  driver = static
                  args = uid=65534 gid=65534 home=/nonexistent
                }}
                """))

    def start(self) -> None:
        # Dovecot leaves its listener sockets behind when it stops.
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        with open(os.path.join(self.dir, "dovecot.out"), "ab") as out:
            self.proc = subprocess.Popen([self.exe, "-F", "-c", self.conf], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.socket, self.proc, "dovecot", log=os.path.join(self.dir, "dovecot.out"))

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None

    def cleanup(self) -> None:
        self.stop()
        if not self.socket.startswith(self.dir + os.sep) and os.path.exists(self.socket):
            os.unlink(self.socket)
        shutil.rmtree(self.dir, ignore_errors=True)

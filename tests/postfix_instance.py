"""A private Debian Postfix instance for differential tests.

    with PostfixInstance({"smtpd_recipient_limit": "5"}) as pf:
        talk_to(("127.0.0.1", pf.port))
        pf.queued()          # what the log says was queued: [Envelope(qid, sender, rcpts)]

Everything lives in one temporary directory under /tmp: ``conf/`` (main.cf,
master.cf: the ``config_directory``), ``queue/``, ``data/`` and the log
``maillog`` (written by postlogd, no syslog). Started with ``postfix -c
DIR start``, which runs as root (as CI does; the ``postfix`` user and
``postdrop`` group of the Debian package are the mail owner and setgid
group). smtpd listens on 127.0.0.1:PORT only, a free port unless one is
given. Nothing in /etc/postfix is written and the system instance is never
touched: every command gets ``-c DIR`` and an environment without
MAIL_CONFIG.

Every transport is ``discard:``: a message that smtpd queues goes through
cleanup and qmgr, is "delivered" to the discard service and removed. The
SMTP replies are those of a normal server, and the log has, per queue id,
``QID: from=<S>, size=N, nrcpt=N (queue active)``, one ``QID: to=<R>, ...,
status=sent (...)`` per recipient and ``QID: removed`` — which is how
:meth:`PostfixInstance.envelope` learns the envelope of a queued message
(the same lines come from hato's log: :func:`envelope_from_log`).

The base main.cf (:data:`BASE_MAIN_CF`) sets the instance's paths and
names (``myhostname = mx.hato.test``); ``main_cf`` settings (a dict or
main.cf text) override it: they replace the base's entries of the same
names (:func:`merged_main_cf`) and are appended. ``master_cf_extra`` is
appended to the generated master.cf.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.ports import free_port

POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
DAEMON_DIRECTORY = "/usr/lib/postfix/sbin"

#: Settings every private instance gets (paths are filled in).  Shared with
#: the hato side of the differential tests (``HATO_MAIN_CF``), apart from
#: the Postfix-only paths.
COMMON_MAIN_CF = """\
compatibility_level = 3.6
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = mx.hato.test
mydomain = hato.test
myorigin = $myhostname
mydestination = $myhostname, localhost
mynetworks = 127.0.0.0/8
relay_domains =
virtual_alias_domains =
virtual_mailbox_domains =
virtual_mailbox_maps =
alias_maps =
alias_database =
default_transport = discard
local_transport = discard
relay_transport = discard
virtual_transport = discard
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
"""

BASE_MAIN_CF = COMMON_MAIN_CF + """\
queue_directory = {root}/queue
data_directory = {root}/data
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
"""

MASTER_CF = """\
{listen} inet n - n - - smtpd
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class PostfixError(Exception):
    pass


@dataclass
class Envelope:
    qid: str
    sender: str | None = None
    rcpts: list[str] = field(default_factory=list)
    removed: bool = False
    nrcpt: int = 0  # qmgr's count: as many to=<> lines are due


def envelope_from_log(log: str, qid: str) -> Envelope:
    """The envelope of message QID from a Postfix-style mail log: sender
    from qmgr's ``from=<>`` line, recipients from the delivery agents'
    ``to=<>`` lines (one per recipient; ``orig_to`` is ignored)."""
    env = Envelope(qid)
    q = re.escape(qid)
    m = re.search(rf" {q}: from=<(.*?)>, size=\d+, nrcpt=(\d+) \(queue active\)", log)
    if m:
        env.sender = m.group(1)
        env.nrcpt = int(m.group(2))
    env.rcpts = sorted(re.findall(rf" {q}: to=<(.*?)>,", log))
    env.removed = re.search(rf" {q}: removed\s*$", log, re.MULTILINE) is not None
    return env


def _backdate(*paths: Path) -> None:
    # Postfix commands pause ~2 s when main.cf changed within the last second.
    t = time.time() - 10
    for p in paths:
        os.utime(p, (t, t))


def _main_cf_text(main_cf: dict | str | None) -> str:
    if not main_cf:
        return ""
    if isinstance(main_cf, str):
        return main_cf if main_cf.endswith("\n") else main_cf + "\n"
    return "".join(f"{k} = {v}\n" for k, v in main_cf.items())


_SETTING = re.compile(r"^([A-Za-z0-9_]+)[ \t]*=", re.MULTILINE)


def merged_main_cf(base: str, extra: str) -> str:
    """*base* without the settings that *extra* sets again, then *extra*.

    Appending would work too (the last entry wins), but every Postfix
    process that reads main.cf then warns "overriding earlier entry" for
    each repeated name, through postlogd's datagram socket. At start many
    processes do so at once, before postlogd reads: the socket's queue
    fills, and postlogd, which reads main.cf itself first, blocks sending
    its own warning to itself; every daemon that logs then blocks behind
    it (an smtpd that never greets)."""
    assert not re.search(r"^[ \t]", base, re.MULTILINE), "no continuation lines in base"
    again = set(_SETTING.findall(extra))
    kept = [line for line in base.splitlines(keepends=True)
            if not ((m := _SETTING.match(line)) and m.group(1) in again)]
    return "".join(kept) + extra


class PostfixInstance:
    """Context manager: a running private Postfix; ``.port``, ``.root``,
    ``.conf``, ``.maillog``; ``stop()`` is idempotent."""

    def __init__(self, main_cf: dict | str | None = None, master_cf_extra: str = "",
                 port: int | None = None, name: str = "pf",
                 conf_files: dict[str, str] | None = None):
        """*conf_files*: more files for the config directory, written before
        Postfix starts (name relative to it: text), e.g. Cyrus SASL's
        ``sasl/smtpd.conf``, which Debian's Postfix reads from
        ``$config_directory/sasl``."""
        for tool in (POSTFIX, POSTCONF, f"{DAEMON_DIRECTORY}/smtpd"):
            if not os.path.exists(tool):
                raise PostfixError(f"{tool} is missing: install the Debian package postfix")
        if os.geteuid() != 0:
            raise PostfixError("a private Postfix instance must be started as root")
        self.main_cf = _main_cf_text(main_cf)
        self.master_cf_extra = master_cf_extra
        self.conf_files = dict(conf_files or {})
        self.port = port or free_port()
        self.name = name
        self.root: Path | None = None
        self.running = False
        self.env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}

    # -- life cycle ------------------------------------------------------------------

    def __enter__(self) -> PostfixInstance:  # noqa: PYI034
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    @property
    def conf(self) -> Path:
        assert self.root is not None
        return self.root / "conf"

    @property
    def queue(self) -> Path:
        assert self.root is not None
        return self.root / "queue"

    @property
    def maillog(self) -> Path:
        assert self.root is not None
        return self.root / "maillog"

    def _run(self, *args: str, check: bool = True,
             timeout: float = 60) -> subprocess.CompletedProcess:
        _backdate(self.conf / "main.cf", self.conf / "master.cf")
        r = subprocess.run([POSTFIX, "-c", str(self.conf), *args], check=False,
                           capture_output=True, text=True, env=self.env, timeout=timeout, cwd="/")
        if check and r.returncode:
            # `postfix start` hides configuration errors; postsuper tells them.
            why = subprocess.run(["/usr/sbin/postsuper", "-c", str(self.conf)], check=False,
                                 capture_output=True, text=True, env=self.env, timeout=60)
            raise PostfixError(f"postfix -c {self.conf} {' '.join(args)} exited {r.returncode}:"
                               f"\n{r.stdout}{r.stderr}{why.stderr}"
                               f"\n--- maillog:\n{self.log_text()[-3000:]}")
        return r

    def start(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"hato-{self.name}-", dir="/tmp"))
        os.chmod(self.root, 0o755)
        self.conf.mkdir()
        self.queue.mkdir(mode=0o755)    # root-owned; `postfix start` makes the rest
        (self.root / "data").mkdir()
        shutil.chown(self.root / "data", "postfix", "postfix")
        (self.conf / "main.cf").write_text(
            merged_main_cf(BASE_MAIN_CF.format(root=self.root), self.main_cf))
        listen = f"127.0.0.1:{self.port}"
        (self.conf / "master.cf").write_text(MASTER_CF.format(listen=listen)
                                             + self.master_cf_extra)
        for name, text in self.conf_files.items():
            path = self.conf / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        self._run("start")
        self.running = True
        self.wait_listening()

    def wait_listening(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
            except OSError:
                time.sleep(0.02)
                continue
            # That probe was a real session; smtpd logs the lost connection.
            return
        raise PostfixError(f"Postfix does not listen on 127.0.0.1:{self.port}\n"
                           f"{self.log_text()[-3000:]}")

    def master_pid(self) -> int | None:
        try:
            return int((self.queue / "pid" / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """What ``postfix stop`` does (SIGTERM to the master), without its
        one-second polling; ``postfix -c DIR stop`` if the master lingers,
        then SIGKILL for anything of this instance still running."""
        if self.root is None or not self.running:
            return
        self.running = False
        pid = self.master_pid()
        if pid and os.path.exists(f"/proc/{pid}"):
            try:
                os.kill(pid, signal.SIGTERM)
            except OSError:
                pass
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.01)
            if os.path.exists(f"/proc/{pid}"):
                try:
                    self._run("stop", check=False, timeout=30)
                except subprocess.TimeoutExpired:
                    pass
        self.kill_strays()

    def own_pids(self) -> list[int]:
        """The processes of this instance: everything started with this
        instance's configuration (``-c`` or MAIL_CONFIG: ``postfix -c DIR
        start`` gives it to master, master to its daemons)."""
        if self.root is None:
            return []
        conf = str(self.conf).encode()
        me = os.getpid()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == me:
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
                with open(f"/proc/{entry}/environ", "rb") as f:
                    environ = f.read().split(b"\0")
            except OSError:
                continue
            if conf in argv or b"MAIL_CONFIG=" + conf in environ:
                pids.append(int(entry))
        return sorted(pids)

    def processes_report(self) -> str:
        """What each process of this instance is doing (for a failure
        message): its state, the system call it waits in, its kernel stack
        and, with gdb installed, its user-space stack."""
        out = []
        gdb = shutil.which("gdb")
        for pid in self.own_pids():
            def read(name: str, pid: int = pid) -> str:
                try:
                    with open(f"/proc/{pid}/{name}", errors="replace") as f:
                        return f.read().strip()
                except OSError as e:
                    return f"({e.strerror})"
            state = next((line for line in read("status").splitlines()
                          if line.startswith("State:")), "State: ?")
            out.append(f"pid {pid} {read('cmdline').replace(chr(0), ' ').strip()} "
                       f"{state}\n  wchan: {read('wchan')}  syscall: {read('syscall')}\n"
                       f"  kernel stack:\n    " + read("stack").replace("\n", "\n    "))
            if gdb:
                try:
                    r = subprocess.run([gdb, "-p", str(pid), "-batch", "-nx", "-ex", "bt"],
                                       capture_output=True, text=True, timeout=60, check=False)
                    frames = [line for line in r.stdout.splitlines() if line.startswith("#")]
                    out.append("  user stack:\n    " + "\n    ".join(frames or ["(none)"]))
                except (OSError, subprocess.TimeoutExpired) as e:
                    out.append(f"  gdb: {e}")
        return "\n".join(out) or "(no process of this instance is running)"

    def kill_strays(self) -> None:
        """SIGKILL any process still running from this instance's daemon
        directory with this instance's configuration (``-c`` or
        MAIL_CONFIG)."""
        if self.root is None:
            return
        for pid in self.own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            if self.root is not None:
                self.kill_strays()
                shutil.rmtree(self.root, ignore_errors=True)
                self.root = None

    # -- observation -----------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except (FileNotFoundError, AssertionError):
            return ""

    def envelope(self, qid: str, timeout: float = 15) -> Envelope:
        """The envelope of queued message QID, once the log says it is
        delivered (discarded) and removed."""
        return wait_envelope(self.log_text, qid, timeout)

    def postconf(self, *args: str) -> str:
        _backdate(self.conf / "main.cf", self.conf / "master.cf")
        r = subprocess.run([POSTCONF, "-c", str(self.conf), *args], check=False,
                           capture_output=True,
                           text=True, env=self.env, timeout=60)
        return r.stdout


def wait_envelope(log_text, qid: str, timeout: float = 15) -> Envelope:
    deadline = time.monotonic() + timeout
    while True:
        env = envelope_from_log(log_text(), qid)
        # Done when qmgr removed it and every recipient's status line is
        # there: the delivery agent's lines may reach the log after qmgr's.
        if env.removed and len(env.rcpts) >= env.nrcpt or time.monotonic() > deadline:
            return env
        time.sleep(0.02)

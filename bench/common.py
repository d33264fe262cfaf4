"""What the benchmarks that run hato and Debian's Postfix side by side share:
running commands, reading /proc, and private instances of both (set up,
started, sampled, stopped, and nothing left behind).

Not a benchmark itself; run.py and the single-scenario scripts import it:
the instances, the SMTP load helpers (smtp-source, drain, banners), the
sampler of memory, sink connections and load, and the report helpers
(tables, machine facts). Everything here runs as root: both instances are
started by root and drop to their mail owners, as a real installation does.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWNER, GROUP = "hato", "hatodrop"
POSTFIX, POSTCONF = "/usr/sbin/postfix", "/usr/sbin/postconf"
SMTP_SOURCE, POSTALIAS = "/usr/sbin/smtp-source", "/usr/sbin/postalias"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something prevents a fair measurement; the message says what."""


def run(cmd: list[str], *, env: dict | None = None, input: bytes | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=timeout,
                          cwd="/", check=False)


def must(cmd: list[str], what: str, log: Path | None = None, **kw) -> subprocess.CompletedProcess:
    r = run(cmd, **kw)
    if r.returncode:
        raise BenchError(f"{what} failed (exit {r.returncode}): {shlex.join(cmd)}\n"
                         f"{(r.stdout + r.stderr).decode(errors='replace').strip()}"
                         + (f"\n--- last lines of {log}:\n{tail(log)}" if log else ""))
    return r


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"({err.strerror})"


def wait_until(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def backdate(*paths: Path) -> None:
    # Postfix commands pause ~2 s when main.cf changed within the last second.
    t = time.time() - 10
    for p in paths:
        os.utime(p, (t, t))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_system_user() -> None:
    """The user hato's services run as, created as tools/run-hato does."""
    if run(["getent", "group", GROUP]).returncode:
        must(["groupadd", "--system", GROUP], "groupadd")
    if run(["getent", "passwd", OWNER]).returncode:
        must(["useradd", "--system", "--gid", GROUP, "--home-dir", "/nonexistent",
              "--no-create-home", "--shell", "/usr/sbin/nologin", OWNER], "useradd")


def hato_command(option: str | None, venv: str | None = None) -> list[str]:
    """The hato command: *option* when given, else ``VENV/bin/hato`` when
    *venv* has one, else the hato beside the running Python, else
    ``python -m hato`` (Hato then sets PYTHONPATH=src)."""
    if option:
        return shlex.split(option)
    for candidate in ([Path(venv) / "bin" / "hato"] if venv else []) + \
            [Path(sys.executable).parent / "hato"]:
        if candidate.exists():
            return [str(candidate)]
    return [sys.executable, "-m", "hato"]


def raise_on_signals() -> None:
    """SIGTERM and SIGHUP interrupt like Ctrl-C, so that cleanup runs."""
    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signum)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)


def ignore_signals() -> None:
    """While cleaning up: no second interruption."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


# -- /proc -------------------------------------------------------------------------

def master_pid(queue: Path) -> int | None:
    try:
        return int((queue / "pid" / "master.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, ...], or []."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def descendants(pid: int) -> list[int]:
    """pid and every process below it, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        fields = stat_fields(int(name)) if name.isdigit() else []
        if fields:
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def status_kb(pid: int, *keys: str) -> dict[str, int]:
    """Fields of /proc/PID/status in kB (VmRSS, VmHWM, ...); {} when gone."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0]
            if key in keys:
                out[key] = int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return {}
    return out


def vm_hwm_kb(pid: int) -> int | None:
    return status_kb(pid, "VmHWM").get("VmHWM")


def pss_kb(pid: int) -> int:
    """Proportional set size (shared pages divided among their users)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def cpu_ticks(pid: int) -> int:
    """utime + stime of pid and of its children that it has waited for."""
    f = stat_fields(pid)
    return sum(int(x) for x in f[11:15]) if len(f) > 14 else 0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


# -- private instances ---------------------------------------------------------------

class Engine:
    """One private instance: start, sample, stop (subclasses set it up)."""

    name = ""
    config_files: tuple[Path, ...]
    control: list[str]      # the instance's command, to which start/stop/abort are added

    def __init__(self, root: Path):
        self.root = root
        self.queue = root / "queue"
        self.maillog = root / "maillog"
        self.env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        self.peak: dict[int, int] = {}      # pid -> highest VmHWM seen, kB
        self.peak_rss = 0                   # highest sum of VmRSS in one sample, kB
        self.rss_samples: list[int] = []    # every sampled sum of VmRSS, kB
        self.seen: dict[int, list[str]] = {}    # pid -> [start time] from /proc/PID/stat
        self.port = 0                       # its smtpd's port on 127.0.0.1, if it has one

    def pids(self) -> list[int]:
        pid = master_pid(self.queue)
        if pid is None or not alive(pid):
            return []
        return descendants(pid)

    def sample(self) -> None:
        total = 0
        for p in self.pids():
            kb = status_kb(p, "VmHWM", "VmRSS")
            if kb:
                self.peak[p] = max(self.peak.get(p, 0), kb.get("VmHWM", 0))
                total += kb.get("VmRSS", 0)
                self.seen.setdefault(p, stat_fields(p)[19:20])
        self.peak_rss = max(self.peak_rss, total)
        if total:
            self.rss_samples.append(total)

    def cpu_seconds(self) -> float:
        """CPU time of the whole instance: every process under its master,
        with the children they reaped (Postfix's short-lived daemons)."""
        return sum(cpu_ticks(p) for p in self.pids()) / CLK_TCK

    def label(self, pid: int) -> str:
        """What the process is, for the CPU breakdown: its command name."""
        return comm(pid)

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far by label; what processes that exited used is
        under "exited processes" (their parent reaped them and holds their time)."""
        out: dict[str, float] = {}
        for p in self.pids():
            f = stat_fields(p)
            if len(f) > 14:
                own, reaped = int(f[11]) + int(f[12]), int(f[13]) + int(f[14])
                name = self.label(p)
                out[name] = out.get(name, 0) + own / CLK_TCK
                out["exited processes"] = out.get("exited processes", 0) + reaped / CLK_TCK
        return out

    def memory_kb(self) -> tuple[int, int, int]:
        """(sum of VmRSS, sum of Pss, number of processes) now."""
        rss = pss = n = 0
        for p in self.pids():
            kb = status_kb(p, "VmRSS").get("VmRSS")
            if kb is not None:
                rss, pss, n = rss + kb, pss + pss_kb(p), n + 1
                self.seen.setdefault(p, stat_fields(p)[19:20])
        return rss, pss, n

    def start(self) -> None:
        backdate(*self.config_files)
        must([*self.control, "start"], f"{self.name} start", self.maillog, env=self.env)
        if not wait_until(lambda: alive(master_pid(self.queue) or 0), 10):
            raise BenchError(f"{self.name} start: no live master in {self.queue}/pid/master.pid\n"
                             f"{tail(self.maillog)}")

    def stop(self) -> None:
        self.sample()
        pid = master_pid(self.queue)
        for action in ("stop", "abort"):
            if pid is None or not alive(pid):
                break
            try:
                run([*self.control, action], env=self.env, timeout=30)
            except subprocess.TimeoutExpired:
                pass
            wait_until(lambda: not alive(pid), 20)
        for p, started in self.seen.items():    # anything left that we saw running
            if started and stat_fields(p)[19:20] == started:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        wait_until(lambda: pid is None or not alive(pid), 5)

    def queue_files(self) -> int:
        """Messages in incoming/, active/, deferred/ and hold/."""
        n = 0
        for name in ("incoming", "active", "deferred", "hold"):
            for _dirpath, _dirs, files in os.walk(self.queue / name):
                n += len(files)
        return n


class Hato(Engine):
    """A hato instance made by ``hato init``."""

    name = "hato"

    def __init__(self, root: Path, command: list[str]):
        super().__init__(root)
        self.maillog = root / "log" / "maillog"
        self.config_files = (root / "main.cf", root / "master.cf")
        self.command = command
        self.control = [*command, "-c", str(root)]
        if command[1:3] == ["-m", "hato"]:
            self.env["PYTHONPATH"] = str(ROOT / "src")

    def label(self, pid: int) -> str:
        """The service of a worker ("smtpd" for an inet one), or "master"."""
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return "?"
        if "hato.master.worker" not in args:
            return "master"
        service, kind = (args[args.index("hato.master.worker") + 1:] + ["", ""])[:2]
        return "smtpd" if kind == "inet" else service

    def create(self, port: int, settings: list[str], *, only_inet: str | None = None) -> None:
        """``hato init -p PORT``, then ``postconf -e SETTINGS``. With
        *only_inet* (``host:port``), every other inet entry (the submission
        service that init adds) is removed from master.cf."""
        must([*self.command, "init", "-p", str(port), str(self.root)], "hato init",
             env=self.env)
        if settings:
            must([*self.control, "postconf", "-e", *settings], "hato postconf -e",
                 env=self.env)
        if only_inet:
            listing = must([*self.control, "postconf", "-M"], "hato postconf -M",
                           env=self.env).stdout.decode()
            for line in listing.splitlines():
                fields = line.split()
                if len(fields) > 1 and fields[1] == "inet" and fields[0] != only_inet:
                    must([*self.control, "postconf", "-MX", f"{fields[0]}/inet"],
                         "hato postconf -MX", env=self.env)
        shutil.chown(self.root / "mail", OWNER, GROUP)
        os.chmod(self.root, 0o755)


class Postfix(Engine):
    """A private Debian Postfix instance (``postfix -c DIR/conf``): no
    chroot, its own queue and log file, /etc/postfix never touched."""

    name = "postfix"

    def __init__(self, root: Path):
        super().__init__(root)
        self.conf = root / "conf"
        self.config_files = (self.conf / "main.cf", self.conf / "master.cf")
        self.control = [POSTFIX, "-c", str(self.conf)]

    def create(self, main_cf: str, *, smtpd_inet: str | None = None) -> None:
        """The instance with main.cf = the common lines + *main_cf*; with
        *smtpd_inet* (``host:port``) the stock ``smtp inet`` entry of
        master.cf listens there instead of port 25."""
        for tool in (POSTFIX, POSTCONF, "/etc/postfix/master.cf.proto"):
            if not os.path.exists(tool):
                raise BenchError(f"{tool} is missing: install Debian's postfix package")
        r = self.root
        self.conf.mkdir(parents=True)
        self.queue.mkdir(mode=0o755)    # root-owned; `postfix check` makes its subdirectories
        os.chmod(r, 0o755)
        master_cf = Path("/etc/postfix/master.cf.proto").read_text()
        if smtpd_inet:
            master_cf, n = re.subn(r"(?m)^smtp(?=\s+inet\s)", lambda _m: smtpd_inet, master_cf)
            if n != 1:
                raise BenchError("/etc/postfix/master.cf.proto has no single `smtp inet` entry")
        (self.conf / "master.cf").write_text(master_cf)
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {r}/data
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = localhost.localdomain
maillog_file = {self.maillog}
maillog_file_prefixes = {r}
""" + main_cf)
        # Debian's master.cf.proto chroots most services into the queue; hato's
        # instance does not chroot, and a chroot under /tmp lacks /etc files.
        must([POSTCONF, "-c", str(self.conf), "-F", "*/*/chroot = n"], "postconf -F")
        backdate(*self.config_files)
        must([POSTFIX, "-c", str(self.conf), "check"], "postfix check", self.maillog)


def guarded(prog: str, body, cleanup) -> int:
    """Run *body()* for a benchmark's exit status: SIGTERM and SIGHUP stop it
    like Ctrl-C; a BenchError, OSError or failed command is said and gives 1,
    an interruption 128 + the signal; *cleanup()* runs at the end in every
    case, with those signals ignored."""
    raise_on_signals()
    try:
        return body()
    except (BenchError, OSError, subprocess.SubprocessError) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print(f"{prog}: interrupted, cleaning up", file=sys.stderr)
        return 128 + (stop.args[0] if stop.args else signal.SIGINT)
    finally:
        ignore_signals()
        cleanup()


def count(d: Path) -> int:
    """Files in directory *d* (a Maildir's new/), 0 when it is missing."""
    try:
        return len(os.listdir(d))
    except FileNotFoundError:
        return 0


def clear(d: Path) -> None:
    for name in os.listdir(d) if d.exists() else ():
        os.unlink(d / name)


def stop_all(engines: list[Engine], prog: str) -> None:
    for e in engines:
        try:
            e.stop()
        except (OSError, subprocess.SubprocessError) as err:    # the others must stop too
            print(f"{prog}: stopping {e.name}: {err}", file=sys.stderr)



def preflight(prog: str, script: str, why_root: str, tools: dict[str, str],
              nofile: int = 4096) -> str | None:
    """What every benchmark checks before it starts: that it runs as root
    (*why_root* says why), that the Debian tools it runs are there (path →
    package), and a file-descriptor limit of *nofile* for the sessions
    (root may raise the hard limit too; the instances inherit it). The
    command line to record in the results, or None after saying why the
    benchmark cannot run."""
    if os.geteuid() != 0:
        print(f"{prog}: must run as root ({why_root})", file=sys.stderr)
        return None
    for path, package in tools.items():
        if not os.path.exists(path):
            print(f"{prog}: {path} is missing: install Debian's {package} package",
                  file=sys.stderr)
            return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < nofile:
        if hard != resource.RLIM_INFINITY and hard < nofile:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
            except (ValueError, OSError):
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        else:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    return shlex.join(["python3", script, *sys.argv[1:]])


def create_mirror(hato: Hato, postfix: Postfix, edit=None) -> None:
    """The Postfix instance of a pair, made after hato's: copies of hato's
    aliases and vmailbox files with its own paths, hato's main.cf mirrored
    (*edit* may change that text), its stock ``smtp inet`` entry on
    127.0.0.1:postfix.port, its Maildirs owned by the mail owner as hato's."""
    postfix.root.mkdir()
    (postfix.root / "mail").mkdir()
    shutil.chown(postfix.root / "mail", OWNER, GROUP)
    for name in ("aliases", "vmailbox"):
        text = (hato.root / name).read_text().replace(str(hato.root), str(postfix.root))
        (postfix.root / name).write_text(text)
    main_cf = mirrored_main_cf(hato, postfix)
    postfix.create(edit(main_cf) if edit else main_cf,
                   smtpd_inet=f"127.0.0.1:{postfix.port}")
    must([POSTALIAS, "-c", str(postfix.conf), str(postfix.root / "aliases")], "postalias")


#: set by Postfix.create already, or belonging to the instance (its owner and paths)
OWN = {"compatibility_level", "queue_directory", "data_directory", "mail_owner",
       "setgid_group", "maillog_file", "inet_interfaces", "inet_protocols", "myhostname"}


def mirrored_main_cf(hato: Hato, postfix: Postfix) -> str:
    """hato's main.cf (hato init's and the bench's settings) for Postfix: its
    other parameters, with the instance's paths changed to the Postfix one's."""
    out, keep = [], False
    for line in (hato.root / "main.cf").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():   # else a continuation of the line before
            keep = line.split("=", 1)[0].strip() not in OWN
        if keep:
            out.append(line.replace(str(hato.root), str(postfix.root)) + "\n")
    return "".join(out)


# -- SMTP load ----------------------------------------------------------------------------

def log_size(e: Engine) -> int:
    try:
        return e.maillog.stat().st_size
    except FileNotFoundError:
        return 0


def log_since(e: Engine, offset: int) -> str:
    try:
        with open(e.maillog, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def banner(port: int, timeout: float = 30) -> str:
    """The first reply line of a new session, retried until the port answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                data = b""
                while b"\n" not in data:
                    chunk = s.recv(512)
                    if not chunk:
                        break
                    data += chunk
                s.sendall(b"QUIT\r\n")
                return data.decode(errors="replace").strip()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def smtp_source(e: Engine, messages: int, sessions: int, size: int, *, recipient: str,
                timeout: float, reuse: bool = False, sender: str = "bench@client.test",
                helo: str = "client.test") -> float:
    """Run Postfix's smtp-source against the engine's smtpd (a new connection
    per message unless *reuse*); the time.monotonic() at which it exited. It
    aborts on any reply but the expected one: then BenchError."""
    cmd = [SMTP_SOURCE, "-4", "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-M", helo, "-f", sender, "-t", recipient, *(["-d"] if reuse else []),
           f"127.0.0.1:{e.port}"]
    try:
        r = run(cmd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{e.name}: smtp-source did not finish within {timeout:.0f} s\n"
                         f"--- last lines of {e.maillog}:\n{tail(e.maillog)}") from None
    done = time.monotonic()
    if r.returncode:
        raise BenchError(f"{e.name}: smtp-source exited {r.returncode}: {shlex.join(cmd)}\n"
                         f"{(r.stdout + r.stderr).decode(errors='replace').strip()[-2000:]}\n"
                         f"--- last lines of {e.maillog}:\n{tail(e.maillog, 30)}")
    return done


def drain(e: Engine, offset: int, expected: int, timeout: float) -> int:
    """Wait until the queue is empty (every acknowledged message delivered or
    discarded); return how many deliveries the log shows since *offset*."""
    deadline = time.monotonic() + timeout
    empty_since = None
    while True:
        sent = log_since(e, offset).count("status=sent")
        if e.queue_files() == 0:
            empty_since = empty_since or time.monotonic()
            # the log may trail the queue a little
            if sent >= expected or time.monotonic() - empty_since > 5:
                return sent
        else:
            empty_since = None
        if time.monotonic() > deadline:
            raise BenchError(f"{e.name}: {e.queue_files()} messages still queued after "
                             f"{timeout:.0f} s\n--- last lines of {e.maillog}:\n"
                             f"{tail(e.maillog, 30)}")
        time.sleep(0.05)


def client_cpu() -> float:
    """CPU seconds of this process (the bench's own clients) so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class Sampler(threading.Thread):
    """While a round runs: the engine's memory every 0.25 s and, when a
    sink is watched too, the connections open to it every 0.05 s; the
    machine's 1-minute load average every second, all along."""

    def __init__(self):
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.engine: Engine | None = None
        self.sink = None            # anything with open_connections()
        self.peak = 0
        self.tick = 0
        self.loads: list[float] = []
        self.halt = threading.Event()

    def watch(self, e: Engine, sink=None) -> None:
        with self.lock:
            self.engine, self.sink, self.peak = e, sink, 0

    def unwatch(self) -> int:
        """Stop watching; the most connections seen open to the sink."""
        with self.lock:
            self.engine = self.sink = None
            return self.peak

    def run(self) -> None:
        while not self.halt.wait(0.05):
            self.tick += 1
            with self.lock:
                if self.sink is not None:
                    self.peak = max(self.peak, self.sink.open_connections())
                if self.engine is not None and self.tick % 5 == 0:
                    self.engine.sample()
            if self.tick % 20 == 0:
                with contextlib.suppress(OSError):     # EMFILE while idle sessions fill the table
                    self.loads.append(float(loadavg().split()[0]))


# -- reports ------------------------------------------------------------------------------

#: log lines that say something went wrong (beyond the expected start-up notes)
TROUBLE = re.compile(r"warning|error|fatal|panic|traceback|exception", re.IGNORECASE)
EXPECTED = re.compile(r"is not run by this version of hato|not implemented yet in hato")


def troubles(engines: list[Engine], limit: int = 20) -> list[str]:
    out = []
    for e in engines:
        lines = [ln for ln in log_since(e, 0).splitlines()
                 if TROUBLE.search(ln) and not EXPECTED.search(ln)]
        out += [f"{e.name}: {ln}" for ln in lines[:limit]]
        if len(lines) > limit:
            out.append(f"{e.name}: ... and {len(lines) - limit} more")
    return out


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers: {text!r}")
    return values


def size_name(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after.keys() | before.keys()}


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(c) for c in col) for col in zip(head, *rows)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) for c, w in zip(cells, widths))
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def machine_facts(hato: Hato) -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split()[1]
    fs = "?"
    best = ""
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, kind = line.split()[:3]
        if "/tmp/".startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
            best, fs = mnt, f"{kind} ({dev})"
    pf = run([POSTCONF, "-dh", "mail_version"]).stdout.decode().strip()
    return {"nproc": str(os.cpu_count()), "cpu": cpu,
            "memory": f"{int(mem) / 1024 / 1024:.1f} GiB", "kernel": platform.release(),
            "/tmp": fs, "postfix": pf or "?", "hato": hato_version(hato)}


def hato_version(hato: Hato) -> str:
    """hato's version and the source tree's commit (the venv installs src/ editable)."""
    cmd = hato.command
    python = str(Path(cmd[0]).parent / "python") if cmd[0].endswith("/hato") else cmd[0]
    version = run([python, "-c", "import importlib.metadata as m; print(m.version('hato'))"],
                  env=hato.env).stdout.decode().strip() or "?"
    git = run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).stdout.decode().strip()
    dirty = run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no",
                 "src"]).stdout.strip()
    return f"hato {version}" + (f" (git {git}{' + uncommitted changes in src/' if dirty else ''})"
                                 if git else "")

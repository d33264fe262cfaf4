"""Mail flow end to end: N messages through ``sendmail`` into a Maildir, hato
against Debian's Postfix on the same machine, in the same run.

    sudo python3 bench/flow.py [--messages 500] [--rounds 3] [--size 1024]
                               [--jobs 8] [--hato PATH] [--timeout 600]

Runs as root (as CI does). Each engine is a private instance under one
temporary directory in /tmp, loopback only with no listeners
(``master_service_disable = inet``): sendmail -> pickup -> cleanup -> qmgr ->
virtual -> Maildir. A round submits N messages from J concurrent sendmail
processes and is timed from the first submission until all N files are in
``new/``. Printed: min/median/max seconds and messages/second per engine, the
ratio of medians (above 1: hato is faster) and the peak RSS of each engine's
daemons. Everything is stopped and removed at the end, also on Ctrl-C or an
error. bench/README.md says more. Not a test: no timing is ever asserted.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWNER, GROUP = "hato", "hatodrop"
POSTFIX, POSTCONF, PF_SENDMAIL = "/usr/sbin/postfix", "/usr/sbin/postconf", "/usr/sbin/sendmail"


class BenchError(Exception):
    """Something prevents a fair measurement; the message says what."""


def run(cmd: list[str], *, env: dict | None = None, input: bytes | None = None,
        timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=input, capture_output=True, env=env, timeout=timeout,
                          cwd="/", check=False)


def must(cmd: list[str], what: str, log: Path | None = None, **kw) -> None:
    r = run(cmd, **kw)
    if r.returncode:
        raise BenchError(f"{what} failed (exit {r.returncode}): {shlex.join(cmd)}\n"
                         f"{(r.stdout + r.stderr).decode(errors='replace').strip()}"
                         + (f"\n--- last lines of {log}:\n{tail(log)}" if log else ""))


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as err:
        return f"({err.strerror})"


# -- processes -----------------------------------------------------------------------

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


def vm_hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class Engine:
    """One private instance: set up, start, submit one message, stop."""

    name = domain = ""
    config_files: tuple[Path, ...]
    control: list[str]      # the instance's command, to which start/stop/abort are added
    sendmail: list[str]     # its sendmail command line for demo@DOMAIN

    def __init__(self, root: Path):
        self.root = root
        self.queue = root / "queue"
        self.maillog = root / "maillog"
        self.env = {k: v for k, v in os.environ.items() if k != "MAIL_CONFIG"}
        self.new_dir = root / "mail" / self.domain / "demo" / "new"
        self.peak: dict[int, int] = {}      # pid -> highest VmHWM seen, kB
        self.seen: dict[int, list[str]] = {}    # pid -> [start time] from /proc/PID/stat

    def sample(self) -> None:
        pid = master_pid(self.queue)
        if pid is None or not alive(pid):
            return
        for p in descendants(pid):
            kb = vm_hwm_kb(p)
            if kb is not None:
                self.peak[p] = max(self.peak.get(p, 0), kb)
                self.seen.setdefault(p, stat_fields(p)[19:20])

    def setup(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        backdate(*self.config_files)
        must([*self.control, "start"], f"{self.name} start", self.maillog, env=self.env)
        if not wait_until(lambda: master_pid(self.queue) is not None, 10):
            raise BenchError(f"{self.name} start wrote no {self.queue}/pid/master.pid\n"
                             f"{tail(self.maillog)}")

    def submit(self, message: bytes) -> None:
        r = run(self.sendmail, env=self.env, input=message, timeout=60)
        if r.returncode:
            raise BenchError(f"{self.name} sendmail exited {r.returncode}: "
                             f"{r.stderr.decode(errors='replace').strip()}")

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


class Hato(Engine):
    name, domain = "hato", "hato.test"

    def __init__(self, root: Path, command: list[str]):
        super().__init__(root)
        self.maillog = root / "log" / "maillog"
        self.config_files = (root / "main.cf", root / "master.cf")
        self.command = command
        self.control = [*command, "-c", str(root)]
        self.sendmail = [*self.control, "sendmail", "-f", "demo@hato.test", "demo@hato.test"]
        if command[1:3] == ["-m", "hato"]:
            self.env["PYTHONPATH"] = str(ROOT / "src")


    def setup(self) -> None:
        must([*self.command, "init", "-p", str(free_port()), str(self.root)], "hato init",
             env=self.env)
        must([*self.control, "postconf", "-e",
              "master_service_disable = inet"], "hato postconf -e", env=self.env)
        shutil.chown(self.root / "mail", OWNER, GROUP)
        os.chmod(self.root, 0o755)


class Postfix(Engine):
    name, domain = "postfix", "bench.test"

    def __init__(self, root: Path):
        super().__init__(root)
        self.conf = root / "conf"
        self.config_files = (self.conf / "main.cf", self.conf / "master.cf")
        self.control = [POSTFIX, "-c", str(self.conf)]
        # Run by root, -C needs no alternate_config_directories in /etc/postfix/main.cf.
        self.sendmail = [PF_SENDMAIL, "-C", str(self.conf), "-f", "demo@bench.test",
                         "demo@bench.test"]


    def setup(self) -> None:
        for tool in (POSTFIX, POSTCONF, PF_SENDMAIL, "/etc/postfix/master.cf.proto"):
            if not os.path.exists(tool):
                raise BenchError(f"{tool} is missing: install Debian's postfix package")
        owner = pwd.getpwnam(OWNER)
        r = self.root
        self.conf.mkdir(parents=True)
        (r / "mail").mkdir()
        self.queue.mkdir(mode=0o755)    # root-owned; `postfix check` makes its subdirectories
        shutil.chown(r / "mail", OWNER, GROUP)
        os.chmod(r, 0o755)
        (r / "vmailbox").write_text("demo@bench.test bench.test/demo/\n")
        shutil.copy("/etc/postfix/master.cf.proto", self.conf / "master.cf")
        (self.conf / "main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {r}/data
shlib_directory = /usr/lib/postfix
meta_directory = /etc/postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
master_service_disable = inet
myhostname = localhost.localdomain
mydestination =
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {r}/mail
virtual_mailbox_maps = texthash:{r}/vmailbox
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
virtual_minimum_uid = {owner.pw_uid}
maillog_file = {self.maillog}
maillog_file_prefixes = {r}
""")
        # Debian's master.cf.proto chroots most services into the queue; hato's
        # instance does not chroot, and a chroot under /tmp lacks /etc files.
        must([POSTCONF, "-c", str(self.conf), "-F", "*/*/chroot = n"], "postconf -F")
        backdate(*self.config_files)
        must([POSTFIX, "-c", str(self.conf), "check"], "postfix check", self.maillog)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the benchmark --------------------------------------------------------------------

def message(domain: str, i: int, size: int) -> bytes:
    head = (f"From: demo@{domain}\nTo: demo@{domain}\nSubject: bench message {i}\n"
            "MIME-Version: 1.0\nContent-Type: text/plain\n\n")
    body, line = [], "x" * 75 + "\n"
    left = max(size - len(head), 1)
    while left > 0:
        body.append(line[-left:] if left < len(line) else line)
        left -= len(body[-1])
    return (head + "".join(body)).encode()


def count(d: Path) -> int:
    try:
        return len(os.listdir(d))
    except FileNotFoundError:
        return 0


def clear(d: Path) -> None:
    for name in os.listdir(d) if d.exists() else ():
        os.unlink(d / name)


def check_delivery(engine: Engine) -> None:
    """One message before timing: the engine must really deliver it."""
    engine.submit(message(engine.domain, 0, 200))
    if not wait_until(lambda: count(engine.new_dir) >= 1, 30):
        raise BenchError(f"{engine.name} accepted a message but delivered nothing into "
                         f"{engine.new_dir} within 30 s\n--- last lines of {engine.maillog}:\n"
                         f"{tail(engine.maillog)}")
    clear(engine.new_dir)


def one_round(engine: Engine, messages: list[bytes], jobs: int, timeout: float) -> float:
    clear(engine.new_dir)
    n = len(messages)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        t0 = time.perf_counter()
        futures = [pool.submit(engine.submit, m) for m in messages]
        try:
            while count(engine.new_dir) < n:
                if time.perf_counter() - t0 > timeout:
                    raise BenchError(f"{engine.name}: only {count(engine.new_dir)} of {n} "
                                     f"messages delivered after {timeout:.0f} s\n"
                                     f"--- last lines of {engine.maillog}:\n{tail(engine.maillog)}")
                for f in futures:
                    if f.done() and (exc := f.exception()) is not None:
                        raise exc
                time.sleep(0.01)
            elapsed = time.perf_counter() - t0
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    got = count(engine.new_dir)
    if got != n:
        print(f"warning: {engine.name} delivered {got} files for {n} messages", file=sys.stderr)
    return elapsed


def ensure_system_user() -> None:
    """The user hato's services run as, created as tools/run-hato does."""
    if run(["getent", "group", GROUP]).returncode:
        must(["groupadd", "--system", GROUP], "groupadd")
    if run(["getent", "passwd", OWNER]).returncode:
        must(["useradd", "--system", "--gid", GROUP, "--home-dir", "/nonexistent",
              "--no-create-home", "--shell", "/usr/sbin/nologin", OWNER], "useradd")


def hato_command(option: str | None) -> list[str]:
    if option:
        return shlex.split(option)
    beside = Path(sys.executable).parent / "hato"
    if beside.exists():
        return [str(beside)]
    return [sys.executable, "-m", "hato"]


def sampler(engines: list[Engine], stop: threading.Event) -> None:
    while not stop.wait(0.25):
        for e in engines:
            e.sample()


def report(args, times: dict[str, list[float]], engines: list[Engine]) -> None:
    n = args.messages
    print(f"\n{n} messages of {args.size} bytes, {args.rounds} rounds, {args.jobs} submitters, "
          f"{os.cpu_count()} CPUs")
    print(f"{'engine':<8} {'min s':>8} {'median s':>9} {'max s':>8} {'msg/s':>8} "
          f"{'peak RSS':>10} {'procs':>6}")
    for e in engines:
        t = times[e.name]
        med = statistics.median(t)
        rss = sum(e.peak.values()) / 1024
        print(f"{e.name:<8} {min(t):>8.2f} {med:>9.2f} {max(t):>8.2f} {n / med:>8.1f} "
              f"{rss:>8.1f}MB {len(e.peak):>6}")
    h, p = statistics.median(times["hato"]), statistics.median(times["postfix"])
    hato = engines[0]
    print(f"hato/Postfix = {p / h:.2f} (median {h:.2f} s vs {p:.2f} s; above 1 means hato is "
          f"faster); hato's daemons peaked at {sum(hato.peak.values()) / 1024:.1f} MB RSS "
          f"over {len(hato.peak)} processes")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024, help="bytes per message (about)")
    ap.add_argument("--jobs", type=int, default=8, help="concurrent sendmail submitters")
    ap.add_argument("--hato", help="the hato command (default: hato beside this Python, "
                    "else python -m hato with PYTHONPATH=src)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per round")
    args = ap.parse_args()
    if args.messages < 1 or args.rounds < 1 or args.jobs < 1:
        ap.error("--messages, --rounds and --jobs must be at least 1")
    if os.geteuid() != 0:
        print("flow.py: must run as root (it starts private hato and Postfix instances "
              "that drop to their mail owners)", file=sys.stderr)
        return 2

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(signum)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)

    work = Path(tempfile.mkdtemp(prefix="hato-bench-flow-", dir="/tmp"))
    os.chmod(work, 0o755)
    engines: list[Engine] = []
    stop_sampling = threading.Event()
    try:
        ensure_system_user()
        engines = [Hato(work / "hato", hato_command(args.hato)), Postfix(work / "postfix")]
        for e in engines:
            print(f"setting up {e.name} in {e.root}", flush=True)
            e.setup()
            e.start()
            check_delivery(e)
        threading.Thread(target=sampler, args=(engines, stop_sampling), daemon=True).start()
        times: dict[str, list[float]] = {e.name: [] for e in engines}
        for r in range(args.rounds):
            for e in (engines if r % 2 == 0 else engines[::-1]):
                msgs = [message(e.domain, i, args.size) for i in range(1, args.messages + 1)]
                t = one_round(e, msgs, args.jobs, args.timeout)
                times[e.name].append(t)
                print(f"round {r + 1}: {e.name:<8} {t:7.2f} s  {args.messages / t:8.1f} msg/s",
                      flush=True)
        stop_sampling.set()
        for e in engines:
            e.sample()
        report(args, times, engines)
        return 0
    except (BenchError, OSError, subprocess.TimeoutExpired) as err:
        print(f"flow.py: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print("flow.py: interrupted, cleaning up", file=sys.stderr)
        return 128 + (stop.args[0] if stop.args else signal.SIGINT)
    finally:
        stop_sampling.set()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for e in engines:
            try:
                e.stop()
            except (OSError, subprocess.SubprocessError) as err:    # the other must stop too
                print(f"flow.py: stopping {e.name}: {err}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

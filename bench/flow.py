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
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import (
    OWNER,
    BenchError,
    Engine,
    clear,
    count,
    ensure_system_user,
    free_port,
    hato_command,
    ignore_signals,
    raise_on_signals,
    run,
    stop_all,
    tail,
    wait_until,
)

PF_SENDMAIL = "/usr/sbin/sendmail"


class Hato(common.Hato):
    domain = "hato.test"

    def __init__(self, root: Path, command: list[str]):
        super().__init__(root, command)
        self.new_dir = root / "mail" / self.domain / "demo" / "new"
        self.sendmail = [*self.control, "sendmail", "-f", "demo@hato.test", "demo@hato.test"]

    def setup(self) -> None:
        self.create(free_port(), ["master_service_disable = inet"])


class Postfix(common.Postfix):
    domain = "bench.test"

    def __init__(self, root: Path):
        super().__init__(root)
        self.new_dir = root / "mail" / self.domain / "demo" / "new"
        # Run by root, -C needs no alternate_config_directories in /etc/postfix/main.cf.
        self.sendmail = [PF_SENDMAIL, "-C", str(self.conf), "-f", "demo@bench.test",
                         "demo@bench.test"]

    def setup(self) -> None:
        if not os.path.exists(PF_SENDMAIL):
            raise BenchError(f"{PF_SENDMAIL} is missing: install Debian's postfix package")
        owner = pwd.getpwnam(OWNER)
        r = self.root
        r.mkdir()
        (r / "mail").mkdir()
        shutil.chown(r / "mail", OWNER, common.GROUP)
        (r / "vmailbox").write_text("demo@bench.test bench.test/demo/\n")
        self.create(f"""\
master_service_disable = inet
mydestination =
virtual_mailbox_domains = bench.test
virtual_mailbox_base = {r}/mail
virtual_mailbox_maps = texthash:{r}/vmailbox
virtual_uid_maps = static:{owner.pw_uid}
virtual_gid_maps = static:{owner.pw_gid}
virtual_minimum_uid = {owner.pw_uid}
""")


def submit(engine: Hato | Postfix, message: bytes) -> None:
    r = run(engine.sendmail, env=engine.env, input=message, timeout=60)
    if r.returncode:
        raise BenchError(f"{engine.name} sendmail exited {r.returncode}: "
                         f"{r.stderr.decode(errors='replace').strip()}")


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


def check_delivery(engine: Engine) -> None:
    """One message before timing: the engine must really deliver it."""
    submit(engine, message(engine.domain, 0, 200))
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
        futures = [pool.submit(submit, engine, m) for m in messages]
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

    raise_on_signals()

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
        ignore_signals()
        stop_all(engines, "flow.py")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

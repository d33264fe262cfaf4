"""SMTP acceptance: messages per second that smtpd acknowledges (250 after
the queue file is durable), hato against Debian's Postfix on the same
machine, in the same run, with Postfix's smtp-source as the load.

    python3 bench/smtp_accept.py [--messages 500] [--rounds 3] [--sessions 1,10,50]
                                 [--sizes 1024,65536] [--idle 500] [--reuse]
                                 [--hato CMD] [--timeout 600]

Runs as root (as CI does). Each engine is a private instance under one
temporary directory in /tmp with its smtpd on its own 127.0.0.1 port. hato's
is made by ``hato init -p PORT`` (hato from $HATO_VENV, default
/opt/hato/venv) plus SETTINGS below: mail from 127.0.0.1 is relayed
(mynetworks), the recipient's domain goes to default_transport = discard,
which throws each message away once queued, the client's name is not looked
up, and default_process_limit = 1000. Postfix (``postfix -c DIR``) gets the
same main.cf, with its own paths, owner and copies of the aliases and
vmailbox files.

For each message size (smtp-source -l, body bytes) and number of parallel
sessions (smtp-source -s), each round sends --messages messages to each
engine (a new connection per message unless --reuse), alternating which
engine goes first. A round is timed from the start of smtp-source until it
exits, which it does only when every message got its 250 (any other reply
aborts it, and the round). Then the queue must drain (all discarded) before
the next round, and the CPU time of the whole instance (every process under
its master, with the children it reaped: master, smtpd, cleanup, qmgr,
trivial-rewrite, discard... for Postfix; master and workers for hato) is
read from /proc before and after, drain included.

Then each engine is restarted and --idle connections are opened and held,
each until its 220 banner arrived; the instance's memory (sum of VmRSS, and
of Pss, over its processes) against the moment before gives the memory per
idle session, and how many sessions fit in 2 GiB.

Printed: per configuration min/median/max messages/second for each engine,
the ratio of medians hato/Postfix (above 1: hato is faster), CPU
milliseconds per message; the peak memory during the rounds; the idle
session table; finally the same as a Markdown section for bench/RESULTS.md.
Everything is stopped and removed at the end, also on Ctrl-C or an error.
Not a test: no timing is ever asserted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import (
    SMTP_SOURCE,
    BenchError,
    Engine,
    Hato,
    Postfix,
    Sampler,
    banner,
    cpu_delta,
    create_mirror,
    drain,
    ensure_system_user,
    free_port,
    hato_command,
    ignore_signals,
    int_list,
    log_size,
    preflight,
    raise_on_signals,
    size_name,
    smtp_source,
    stop_all,
    tail,
)

PROG = "smtp_accept.py"
SENDER, RECIPIENT, HELO = "bench@client.test", "bench@discard.test", "client.test"
GIB2_KB = 2 * 1024 * 1024

#: main.cf settings both engines get, on top of their instance's own
#: (hato init's main.cf; the common lines of bench/common.py for Postfix).
SETTINGS = [
    "mynetworks = 127.0.0.0/8",
    "default_transport = discard",
    "default_process_limit = 1000",
    # Postfix looks 127.0.0.1 up in /etc/hosts, hato would ask the DNS
    # servers of /etc/resolv.conf: neither, to stay on loopback.
    "smtpd_peername_lookup = no",
]


# -- one engine ----------------------------------------------------------------------


@dataclass
class Round:
    seconds: float
    cpu: float          # CPU seconds of the instance, drain included
    messages: int


def one_round(e: Engine, messages: int, sessions: int, size: int, args) -> Round:
    offset = log_size(e)
    cpu0 = e.cpu_seconds()
    t0 = time.monotonic()
    elapsed = smtp_source(e, messages, sessions, size, recipient=RECIPIENT, reuse=args.reuse,
                          timeout=args.timeout) - t0
    sent = drain(e, offset, messages, args.timeout)
    cpu = e.cpu_seconds() - cpu0
    if sent != messages:
        print(f"warning: {e.name} logged {sent} deliveries for {messages} messages",
              file=sys.stderr)
    return Round(elapsed, cpu, messages)


def warm_up(e: Engine, timeout: float) -> None:
    """Before timing: the engine answers, accepts and discards a few messages."""
    first = banner(e.port)
    if not first.startswith("220"):
        raise BenchError(f"{e.name} greeted with {first!r}\n{tail(e.maillog)}")
    offset = log_size(e)
    smtp_source(e, 5, 1, 1024, recipient=RECIPIENT, timeout=timeout)
    sent = drain(e, offset, 5, 60)
    if sent < 5:
        raise BenchError(f"{e.name} accepted 5 messages but logged {sent} deliveries\n"
                         f"--- last lines of {e.maillog}:\n{tail(e.maillog)}")


@dataclass
class Idle:
    sessions: int
    before: tuple[int, int, int]    # (RSS kB, Pss kB, processes)
    after: tuple[int, int, int]
    seconds: float                  # until every banner had arrived

    def per_session(self, i: int) -> float:
        return (self.after[i] - self.before[i]) / self.sessions

    def per_2gib(self, i: int) -> int | None:
        per = self.per_session(i)
        return int((GIB2_KB - self.before[i]) / per) if per > 0 else None


def idle_sessions(e: Engine, k: int, timeout: float) -> Idle:
    """Hold k connections, each until its 220 banner came; measure memory."""
    time.sleep(1)
    before = e.memory_kb()
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    try:
        t0 = time.monotonic()
        for _ in range(k):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", e.port))
            sel.register(s, selectors.EVENT_READ, bytearray())
        got = 0
        while got < k:
            left = t0 + timeout - time.monotonic()
            events = sel.select(timeout=max(left, 0)) if left > 0 else []
            if not events and time.monotonic() > t0 + timeout:
                raise BenchError(f"{e.name}: {got} of {k} idle sessions got their banner "
                                 f"within {timeout:.0f} s\n{tail(e.maillog)}")
            for key, _ in events:
                try:
                    data = key.fileobj.recv(512)
                except OSError as err:
                    raise BenchError(f"{e.name}: idle session {got + 1}: {err}\n"
                                     f"{tail(e.maillog)}") from None
                if not data:
                    raise BenchError(f"{e.name}: closed an idle session before its banner "
                                     f"(after {got} banners)\n{tail(e.maillog)}")
                key.data.extend(data)
                if b"\n" in key.data:
                    if not key.data.startswith(b"220"):
                        raise BenchError(f"{e.name} greeted idle session {got + 1} with "
                                         f"{bytes(key.data)!r}")
                    sel.unregister(key.fileobj)
                    got += 1
        seconds = time.monotonic() - t0
        time.sleep(1)
        after = e.memory_kb()
    finally:
        sel.close()
        for s in socks:
            s.close()
    return Idle(k, before, after, seconds)


# -- setup -----------------------------------------------------------------------------

def make_engines(work: Path, args) -> tuple[Hato, Postfix]:
    venv = os.environ.get("HATO_VENV", "/opt/hato/venv")
    hato = Hato(work / "hato", hato_command(args.hato, venv))
    hato.port = free_port()
    postfix = Postfix(work / "postfix")
    postfix.port = free_port()
    return hato, postfix


def set_up(hato: Hato, postfix: Postfix) -> None:
    """hato init's instance with SETTINGS; Postfix with the same main.cf."""
    hato.create(hato.port, SETTINGS, only_inet=f"127.0.0.1:{hato.port}")
    create_mirror(hato, postfix)


# -- report ----------------------------------------------------------------------------

@dataclass
class Results:
    rounds: dict[tuple[str, int, int], list[Round]] = field(default_factory=dict)
    idle: dict[str, Idle] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)      # sampled sum of VmRSS, kB
    hwm: dict[str, tuple[int, int]] = field(default_factory=dict)   # (sum of VmHWM, procs)
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> label -> s
    load: list[str] = field(default_factory=list)   # /proc/loadavg before and after


def rates(rs: list[Round]) -> list[float]:
    return [r.messages / r.seconds for r in rs]


def cpu_ms(rs: list[Round]) -> float:
    return statistics.median(r.cpu / r.messages for r in rs) * 1000


def throughput_rows(res: Results, args) -> list[list[str]]:
    rows = []
    for size in args.sizes:
        for n in args.sessions:
            h, p = res.rounds[("hato", size, n)], res.rounds[("postfix", size, n)]
            hr, pr = rates(h), rates(p)
            rows.append([
                size_name(size), str(n),
                f"{min(hr):.0f} / {statistics.median(hr):.0f} / {max(hr):.0f}",
                f"{min(pr):.0f} / {statistics.median(pr):.0f} / {max(pr):.0f}",
                f"{statistics.median(hr) / statistics.median(pr):.2f}",
                f"{cpu_ms(h):.2f}", f"{cpu_ms(p):.2f}",
                f"{cpu_ms(h) / cpu_ms(p):.1f}" if cpu_ms(p) > 0 else "-"])
    return rows


THROUGHPUT_HEAD = ["size", "sessions", "hato msg/s min / med / max",
                   "Postfix msg/s min / med / max", "ratio hato/Postfix",
                   "hato CPU ms/msg", "Postfix CPU ms/msg", "CPU hato/Postfix"]
MEMORY_HEAD = ["engine", "idle sessions", "banners after", "RSS before", "RSS with them",
               "RSS per session", "sessions per 2 GiB RSS", "Pss per session",
               "sessions per 2 GiB Pss", "processes"]


def memory_rows(res: Results) -> list[list[str]]:
    rows = []
    for name, idle in res.idle.items():
        per2g = [f"{v:,}" if (v := idle.per_2gib(i)) is not None else "-" for i in (0, 1)]
        rows.append([
            name, str(idle.sessions), f"{idle.seconds:.1f} s",
            f"{idle.before[0] / 1024:.0f} MB", f"{idle.after[0] / 1024:.0f} MB",
            f"{idle.per_session(0):.0f} kB", per2g[0],
            f"{idle.per_session(1):.0f} kB", per2g[1],
            f"{idle.before[2]} -> {idle.after[2]}"])
    return rows


def peak_lines(res: Results) -> list[str]:
    out = []
    for name, kb in res.peak_rss.items():
        hwm, procs = res.hwm[name]
        line = (f"{name}: peak RSS {kb / 1024:.0f} MB, summed over its processes "
                f"(sampled every 0.25 s during the rounds)")
        if name == "hato":  # long-lived processes: their own peaks add up meaningfully
            line += f"; the sum of each process's VmHWM is {hwm / 1024:.0f} MB over {procs}"
        else:
            line += f"; {procs} processes came and went"
        out.append(line)
    for name, by in res.cpu.items():
        total = sum(by.values()) or 1
        parts = ", ".join(f"{label} {100 * v / total:.0f}%" for label, v in
                          sorted(by.items(), key=lambda kv: -kv[1]) if v / total >= 0.005)
        out.append(f"{name}: CPU over all rounds {total:.1f} s: {parts}")
    return out


def report(res: Results, args, facts: dict[str, str], command: str, trouble: list[str]) -> None:
    mode = "one connection per message" if not args.reuse else "sessions reused (-d)"
    print(f"\n{args.messages} messages per round, {args.rounds} rounds, {mode}; "
          f"ratio above 1: hato is faster; load average {' -> '.join(res.load)}")
    print(common.text_table(THROUGHPUT_HEAD, throughput_rows(res, args)))
    print()
    print("\n".join(peak_lines(res)))
    if res.idle:
        print()
        print(common.text_table(MEMORY_HEAD, memory_rows(res)))
    idle = ("" if not res.idle else
            "\nIdle sessions (each held until its 220 banner), the instance's memory "
            "before and with them:\n\n" + common.md_table(MEMORY_HEAD, memory_rows(res)) + "\n")
    today = datetime.date.today().isoformat()
    print(f"""
--- Markdown for bench/RESULTS.md ---
## smtp_accept — `{command}`

* date: {today}
* machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']},
  /tmp on {facts['/tmp']}
* software: Postfix {facts['postfix']}; {facts['hato']}; client: Postfix's smtp-source
* load: {args.messages} messages per round, {args.rounds} rounds, {mode}
* /proc/loadavg at the start and the end: {" and ".join(res.load)}

msg/s counts messages acknowledged (250 once the queue file is durable) per
second; the ratio is of the medians (above 1: hato is faster); CPU is the whole
instance's per message, the drain of the queue (discard) included.

{common.md_table(THROUGHPUT_HEAD, throughput_rows(res, args))}

{chr(10).join("* " + line for line in peak_lines(res))}
{idle}""" + (("\nLog lines that need a look:\n\n" + "\n".join(f"    {t}" for t in trouble) + "\n")
       if trouble else ""))


# -- main ------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500, help="messages per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int_list, default=[1, 10, 50],
                    help="parallel sessions, comma-separated (smtp-source -s)")
    ap.add_argument("--sizes", type=int_list, default=[1024, 65536],
                    help="body bytes, comma-separated (smtp-source -l)")
    ap.add_argument("--idle", type=int, default=500,
                    help="idle sessions to hold for the memory measurement (0: skip; "
                    "at most 1000, default_process_limit)")
    ap.add_argument("--reuse", action="store_true",
                    help="send every message of a session over one connection (-d)")
    ap.add_argument("--hato", help="the hato command (default: $HATO_VENV/bin/hato, "
                    "HATO_VENV=/opt/hato/venv by default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per round")
    args = ap.parse_args()
    if args.messages < 1 or args.rounds < 1 or not 0 <= args.idle <= 1000:
        ap.error("--messages and --rounds must be at least 1, --idle 0 to 1000")
    command = preflight(PROG, "bench/smtp_accept.py",
                        "it starts private hato and Postfix instances that drop to "
                        "their mail owners",
                        {SMTP_SOURCE: "postfix"})
    if command is None:
        return 2

    raise_on_signals()
    work = Path(tempfile.mkdtemp(prefix="hato-bench-smtp-", dir="/tmp"))
    os.chmod(work, 0o755)
    engines: list[Engine] = []
    sampler = Sampler()
    try:
        ensure_system_user()
        hato, postfix = make_engines(work, args)
        engines = [hato, postfix]
        print(f"setting up hato in {hato.root} and Postfix in {postfix.root}", flush=True)
        set_up(hato, postfix)
        for e in engines:
            print(f"starting {e.name}, smtpd on 127.0.0.1:{e.port}", flush=True)
            e.start()
            warm_up(e, args.timeout)
        facts = common.machine_facts(hato)
        sampler.start()
        res = Results(load=[common.loadavg()])
        cpu_before = {e.name: e.cpu_by_process() for e in engines}
        for size in args.sizes:
            for n in args.sessions:
                for r in range(args.rounds):
                    for e in (engines if r % 2 == 0 else engines[::-1]):
                        sampler.watch(e)
                        rd = one_round(e, args.messages, n, size, args)
                        sampler.unwatch()
                        res.rounds.setdefault((e.name, size, n), []).append(rd)
                        print(f"{size_name(size):>6}, {n:>3} sessions, round {r + 1}: "
                              f"{e.name:<8} {rd.seconds:7.2f} s {rd.messages / rd.seconds:8.1f}"
                              f" msg/s  {rd.cpu / rd.messages * 1000:6.2f} ms CPU/msg",
                              flush=True)
        res.load.append(common.loadavg())
        for e in engines:
            res.cpu[e.name] = cpu_delta(cpu_before[e.name], e.cpu_by_process())
            e.sample()
            res.peak_rss[e.name] = e.peak_rss
            res.hwm[e.name] = (sum(e.peak.values()), len(e.peak))
        if args.idle:
            for e in engines:
                print(f"{e.name}: restarting, then {args.idle} idle sessions", flush=True)
                e.stop()
                e.start()
                banner(e.port)
                res.idle[e.name] = idle_sessions(e, args.idle, args.timeout)
        report(res, args, facts, command, common.troubles(engines))
        return 0
    except (BenchError, OSError, subprocess.SubprocessError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        for line in common.troubles(engines):
            print(f"{PROG}: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print(f"{PROG}: interrupted, cleaning up", file=sys.stderr)
        return 128 + (stop.args[0] if stop.args else 2)
    finally:
        sampler.halt.set()
        ignore_signals()
        stop_all(engines, PROG)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

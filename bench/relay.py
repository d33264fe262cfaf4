"""End-to-end relay throughput: Postfix's smtp-source → hato → Postfix's
smtp-sink against smtp-source → Debian's Postfix → smtp-sink, on the same
machine, in the same run, with the SMTP sessions the relays open to the sink.

    python3 bench/relay.py [--messages 500] [--rounds 3] [--sessions 10,50]
                           [--sizes 1024,65536] [--warmup 20] [--quick]
                           [--hato CMD] [--timeout 600]

Runs as root (as CI does). Each engine is a private instance under one
temporary directory in /tmp with its smtpd on its own 127.0.0.1 port, and
each relays to its own smtp-sink (``smtp-sink -u nobody -c``, on another
127.0.0.1 port). hato's instance is ``hato init -p PORT`` (hato from
$HATO_VENV, default /opt/hato/venv) plus SETTINGS below; Postfix
(``postfix -c DIR``) gets the same main.cf with its own paths, owner, and
its own sink's port in relayhost. Everything else stays at the defaults of
each (both: default_destination_concurrency_limit 20, initial 5).

Counting at the sink: ``smtp-sink -c`` writes its counters
(``sess=N quit=N mesg=N``, separated by CR) to its standard output each
time a session ends, a QUIT is done or a "." (end of a message) arrives;
a thread of this script reads that pipe and notes when each update came.
``mesg`` counts messages received whole, ``sess`` sessions that ended.

For each message size (smtp-source -l) and number of parallel client
sessions (smtp-source -s; a new connection per message, its default), each
round sends --messages messages to each engine, alternating which goes
first. A round is timed from the start of smtp-source until the sink's
``mesg`` counter has gone up by --messages (the time of the update that got
there). smtp-source must exit 0 (it aborts on any reply but the expected
250), the engine's queue must then be empty and its log must show one
``status=sent`` per message; the round waits until no connection to the
sink is left open (Postfix keeps reused connections cached for 2 s), so
that the sink's ``sess`` counter has counted every session the relay
opened in that round, and the next round starts from none. CPU is the whole
instance's (every process under its master, with the children it reaped)
from before smtp-source to after the drain.

Before timing, each engine must relay one message (the sink counts it and
the log shows ``status=sent`` with ``relay=127.0.0.1[127.0.0.1]:SINKPORT``),
then --warmup more (untimed); else the script says why and exits 1. It never
prints a number it did not measure.

Printed: per configuration min/median/max messages/second end to end (to
the sink) and the acceptance rate alone (until smtp-source exited) for each
engine, the ratios of medians hato/Postfix (above 1: hato is faster), CPU
milliseconds per message, sink sessions per round (the relay's
connections), messages per session, the most connections open to the sink
at once (sampled every 0.05 s); then a Markdown section for
bench/RESULTS.md. Everything is stopped and removed at the end, also on
Ctrl-C or an error. Not a test: no timing is ever asserted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
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
    ensure_system_user,
    free_port,
    hato_command,
    ignore_signals,
    int_list,
    log_since,
    log_size,
    preflight,
    raise_on_signals,
    size_name,
    smtp_source,
    stop_all,
    tail,
    wait_until,
)
from smtp_accept import Results as AcceptResults
from smtp_accept import peak_lines

SMTP_SINK = "/usr/sbin/smtp-sink"
PROG = "relay.py"
SENDER, RECIPIENT, HELO = "bench@client.test", "bench@remote.test", "client.test"

#: main.cf settings both engines get, on top of their instance's own (and
#: relayhost = [127.0.0.1]:PORT of the engine's own sink).
SETTINGS = [
    "mynetworks = 127.0.0.0/8",
    "default_process_limit = 1000",
    # Postfix looks 127.0.0.1 up in /etc/hosts, hato would ask the DNS
    # servers of /etc/resolv.conf: neither, to stay on loopback.
    "smtpd_peername_lookup = no",
]

COUNTERS = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")


# -- the sink --------------------------------------------------------------------------

class Sink:
    """Postfix's smtp-sink on 127.0.0.1:port, its counters read from its -c output."""

    def __init__(self, name: str, port: int):
        self.name, self.port = name, port
        self.sess = self.quit = self.mesg = 0
        self.stamp = 0.0                # time.monotonic() of the last update
        self.cond = threading.Condition()
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-c", "-4", "-m", "1000",
             f"127.0.0.1:{port}", "1000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd="/")
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        buf = b""
        fd = self.proc.stdout.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            now = time.monotonic()
            if not chunk:
                with self.cond:
                    self.cond.notify_all()
                return
            buf += chunk
            *records, buf = buf.split(b"\r")
            last = None
            for rec in records:
                if m := COUNTERS.search(rec):
                    last = m
            if last:
                with self.cond:
                    self.sess, self.quit, self.mesg = (int(x) for x in last.groups())
                    self.stamp = now
                    self.cond.notify_all()

    def counters(self) -> tuple[int, int, int]:
        with self.cond:
            return self.sess, self.quit, self.mesg

    def wait_mesg(self, target: int, timeout: float) -> float | None:
        """The monotonic time at which mesg reached target, or None."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.mesg < target:
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    return None
                self.cond.wait(min(left, 1))
            return self.stamp

    def ready(self, timeout: float = 10) -> None:
        wait_until(lambda: self.listening() or self.proc.poll() is not None, timeout)
        if self.proc.poll() is not None or not self.listening():
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() \
                is not None else ""
            raise BenchError(f"smtp-sink for {self.name} on 127.0.0.1:{self.port} did not "
                             f"start: {err.strip()}")

    def _sockets(self) -> list[str]:
        """States of the TCP sockets whose local port is the sink's."""
        want = f":{self.port:04X}"
        out = []
        try:
            with open("/proc/net/tcp") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[1].endswith(want):
                        out.append(fields[3])
        except OSError:
            pass
        return out

    def listening(self) -> bool:
        return "0A" in self._sockets()

    def open_connections(self) -> int:
        """Connections to the sink open now (ESTABLISHED on the sink's side)."""
        return self._sockets().count("01")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


# -- one round -------------------------------------------------------------------------

@dataclass
class Round:
    seconds: float          # smtp-source start until the sink had every message
    accept_seconds: float   # smtp-source start until it exited (every 250 received)
    cpu: float              # CPU seconds of the instance, drain included
    messages: int
    received: int           # messages the sink counted
    sessions: int           # sessions the relay opened to the sink
    peak_open: int          # most connections open to the sink at once (sampled)


def settle(e: Engine, sink: Sink, offset: int, expected: int, timeout: float) -> int:
    """Wait until the queue is empty, the log shows *expected* deliveries
    since *offset* and no connection to the sink is open; return the
    deliveries logged."""
    deadline = time.monotonic() + timeout
    while True:
        sent = log_since(e, offset).count("status=sent")
        if e.queue_files() == 0 and sent >= expected and sink.open_connections() == 0:
            time.sleep(0.1)     # the sink's counters follow the close
            if sink.open_connections() == 0:
                return sent
        if time.monotonic() > deadline:
            raise BenchError(f"{e.name}: after {timeout:.0f} s, {e.queue_files()} messages "
                             f"still queued, {sent} of {expected} deliveries logged, "
                             f"{sink.open_connections()} connections to the sink open\n"
                             f"--- last lines of {e.maillog}:\n{tail(e.maillog, 30)}")
        time.sleep(0.05)


def one_round(e: Engine, sink: Sink, messages: int, sessions: int, size: int,
              timeout: float, sampler: Sampler) -> Round:
    if sink.open_connections():
        settle(e, sink, log_size(e), 0, timeout)
    offset = log_size(e)
    sess0, _quit0, mesg0 = sink.counters()
    cpu0 = e.cpu_seconds()
    sampler.watch(e, sink)
    t0 = time.monotonic()
    accepted = smtp_source(e, messages, sessions, size, recipient=RECIPIENT, timeout=timeout)
    reached = sink.wait_mesg(mesg0 + messages, max(1.0, timeout - (time.monotonic() - t0)))
    if reached is None:
        raise BenchError(f"{e.name}: the sink counted {sink.counters()[2] - mesg0} of "
                         f"{messages} messages within {timeout:.0f} s\n"
                         f"--- last lines of {e.maillog}:\n{tail(e.maillog, 30)}")
    sent = settle(e, sink, offset, messages, timeout)
    peak = sampler.unwatch()
    cpu = e.cpu_seconds() - cpu0
    sess1, _quit1, mesg1 = sink.counters()
    if sent != messages:
        print(f"warning: {e.name} logged {sent} deliveries for {messages} messages",
              file=sys.stderr)
    if mesg1 - mesg0 != messages:
        print(f"warning: the sink of {e.name} counted {mesg1 - mesg0} messages for "
              f"{messages}", file=sys.stderr)
    return Round(reached - t0, accepted - t0, cpu, messages, mesg1 - mesg0, sess1 - sess0,
                 peak)


def verify(e: Engine, sink: Sink, warmup: int, timeout: float) -> None:
    """Before timing: one message relayed to the sink, then *warmup* more."""
    first = banner(e.port)
    if not first.startswith("220"):
        raise BenchError(f"{e.name} greeted with {first!r}\n{tail(e.maillog)}")
    offset = log_size(e)
    mesg0 = sink.counters()[2]
    smtp_source(e, 1, 1, 1024, recipient=RECIPIENT, timeout=timeout)
    if sink.wait_mesg(mesg0 + 1, 60) is None:
        raise BenchError(f"{e.name} accepted a message but its sink did not receive it "
                         f"within 60 s\n--- last lines of {e.maillog}:\n{tail(e.maillog, 30)}")
    relay = f"relay=127.0.0.1[127.0.0.1]:{sink.port}"
    if not wait_until(lambda: any("status=sent" in ln and relay in ln
                                  for ln in log_since(e, offset).splitlines()), 20):
        raise BenchError(f"{e.name}: no 'status=sent' with '{relay}' in its log\n"
                         f"--- last lines of {e.maillog}:\n{tail(e.maillog, 30)}")
    settle(e, sink, offset, 1, 60)
    if warmup:
        offset = log_size(e)
        mesg0 = sink.counters()[2]
        smtp_source(e, warmup, min(10, warmup), 1024, recipient=RECIPIENT, timeout=timeout)
        if sink.wait_mesg(mesg0 + warmup, timeout) is None:
            raise BenchError(f"{e.name}: the sink got {sink.counters()[2] - mesg0} of "
                             f"{warmup} warm-up messages\n{tail(e.maillog, 30)}")
        settle(e, sink, offset, warmup, timeout)


# -- setup -----------------------------------------------------------------------------

def set_up(hato: Hato, postfix: Postfix, sinks: dict[str, Sink]) -> None:
    """hato init's instance with SETTINGS and relayhost; Postfix with the same
    main.cf, its own paths and its own sink."""
    relay = {name: f"relayhost = [127.0.0.1]:{s.port}" for name, s in sinks.items()}
    hato.create(hato.port, SETTINGS + [relay["hato"]], only_inet=f"127.0.0.1:{hato.port}")

    def own_sink(main_cf: str) -> str:
        main_cf, n = re.subn(r"(?m)^relayhost\s*=.*$", relay["postfix"], main_cf)
        if n != 1:
            raise BenchError(f"hato's main.cf has {n} relayhost lines, expected 1")
        return main_cf
    create_mirror(hato, postfix, own_sink)


# -- report ----------------------------------------------------------------------------

@dataclass
class Results:
    rounds: dict[tuple[str, int, int], list[Round]] = field(default_factory=dict)
    load: list[str] = field(default_factory=list)
    extra: AcceptResults = field(default_factory=AcceptResults)    # peak RSS, CPU by process


def med(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float]) -> str:
    return f"{min(values):.0f} / {med(values):.0f} / {max(values):.0f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


THROUGHPUT_HEAD = ["size", "sessions", "hato msg/s to sink min / med / max",
                   "Postfix msg/s to sink min / med / max", "ratio hato/Postfix",
                   "accepted msg/s hato / Postfix (med)", "hato CPU ms/msg",
                   "Postfix CPU ms/msg", "CPU hato/Postfix"]
REUSE_HEAD = ["size", "sessions", "messages per round", "hato sink sessions per round",
              "hato msg/session", "hato max open", "Postfix sink sessions per round",
              "Postfix msg/session", "Postfix max open"]


def throughput_rows(res: Results, args) -> list[list[str]]:
    rows = []
    for size in args.sizes:
        for n in args.sessions:
            h, p = res.rounds[("hato", size, n)], res.rounds[("postfix", size, n)]
            hr = [r.messages / r.seconds for r in h]
            pr = [r.messages / r.seconds for r in p]
            ha = med([r.messages / r.accept_seconds for r in h])
            pa = med([r.messages / r.accept_seconds for r in p])
            hc = med([r.cpu / r.messages for r in h]) * 1000
            pc = med([r.cpu / r.messages for r in p]) * 1000
            rows.append([size_name(size), str(n), spread(hr), spread(pr),
                         ratio(med(hr), med(pr)), f"{ha:.0f} / {pa:.0f}",
                         f"{hc:.2f}", f"{pc:.2f}", ratio(hc, pc)])
    return rows


def sessions_text(rs: list[Round]) -> str:
    values = sorted({r.sessions for r in rs})
    return " / ".join(str(v) for v in values) if len(values) <= 3 else \
        f"{values[0]}–{values[-1]}"


def reuse_rows(res: Results, args) -> list[list[str]]:
    rows = []
    for size in args.sizes:
        for n in args.sessions:
            row = [size_name(size), str(n), str(args.messages)]
            for name in ("hato", "postfix"):
                rs = res.rounds[(name, size, n)]
                per = [r.messages / r.sessions for r in rs if r.sessions]
                row += [sessions_text(rs), f"{med(per):.2f}" if per else "-",
                        str(max(r.peak_open for r in rs))]
            rows.append(row)
    return rows


def report(res: Results, args, facts: dict[str, str], command: str,
           trouble: list[str]) -> None:
    print(f"\n{args.messages} messages per round, {args.rounds} rounds; ratio above 1: "
          f"hato is faster; load average {' -> '.join(res.load)}")
    print(common.text_table(THROUGHPUT_HEAD, throughput_rows(res, args)))
    print()
    print(common.text_table(REUSE_HEAD, reuse_rows(res, args)))
    print()
    lines = peak_lines(res.extra)
    print("\n".join(lines))
    today = datetime.date.today().isoformat()
    print(f"""
--- Markdown for bench/RESULTS.md ---
## relay — `{command}` (as root)

* date: {today}
* machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']},
  /tmp on {facts['/tmp']}
* software: Postfix {facts['postfix']}; {facts['hato']}; client: Postfix's smtp-source
  (a new connection per message); sink: Postfix's smtp-sink
* load: {args.messages} messages per round, {args.rounds} rounds per engine and
  configuration, interleaved; {args.warmup} warm-up messages per engine
* /proc/loadavg at the start and the end: {" and ".join(res.load)}

msg/s to sink: messages per second from the start of smtp-source until the
sink had received them all (its `-c` counter); accepted: until smtp-source
exited. Ratios are of the medians (above 1: hato is faster). CPU is the
whole instance's per message, smtpd to the last delivery.

{common.md_table(THROUGHPUT_HEAD, throughput_rows(res, args))}

Connections the relays opened to the sink (the sink's count of ended
sessions per round, after all had closed) and the most open at once
(sampled every 0.05 s):

{common.md_table(REUSE_HEAD, reuse_rows(res, args))}

{chr(10).join("* " + line for line in lines)}
""" + (("\nLog lines that need a look:\n\n" + "\n".join(f"    {t}" for t in trouble) + "\n")
       if trouble else ""))


# -- main ------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=500, help="messages per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int_list, default=[10, 50],
                    help="parallel client sessions, comma-separated (smtp-source -s)")
    ap.add_argument("--sizes", type=int_list, default=[1024, 65536],
                    help="body bytes, comma-separated (smtp-source -l)")
    ap.add_argument("--warmup", type=int, default=20,
                    help="untimed messages per engine after the one-message check")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 1 round of 100 messages, 5 warm-up messages")
    ap.add_argument("--hato", help="the hato command (default: $HATO_VENV/bin/hato, "
                    "HATO_VENV=/opt/hato/venv by default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per round")
    args = ap.parse_args()
    if args.quick:
        args.messages, args.rounds, args.warmup = 100, 1, 5
    if args.messages < 1 or args.rounds < 1 or args.warmup < 0:
        ap.error("--messages and --rounds must be at least 1, --warmup at least 0")
    command = preflight(PROG, "bench/relay.py",
                        "it starts private hato and Postfix instances that drop to their "
                        "mail owners", {SMTP_SOURCE: "postfix", SMTP_SINK: "postfix"})
    if command is None:
        return 2

    raise_on_signals()
    work = Path(tempfile.mkdtemp(prefix="hato-bench-relay-", dir="/tmp"))
    os.chmod(work, 0o755)
    engines: list[Engine] = []
    sinks: dict[str, Sink] = {}
    sampler = Sampler()
    try:
        ensure_system_user()
        venv = os.environ.get("HATO_VENV", "/opt/hato/venv")
        hato = Hato(work / "hato", hato_command(args.hato, venv))
        hato.port = free_port()
        postfix = Postfix(work / "postfix")
        postfix.port = free_port()
        for name in ("hato", "postfix"):
            sinks[name] = Sink(name, free_port())
        for s in sinks.values():
            s.ready()
        engines = [hato, postfix]
        print(f"setting up hato in {hato.root} and Postfix in {postfix.root}", flush=True)
        set_up(hato, postfix, sinks)
        for e in engines:
            print(f"starting {e.name}, smtpd on 127.0.0.1:{e.port}, relayhost "
                  f"[127.0.0.1]:{sinks[e.name].port} (smtp-sink)", flush=True)
            e.start()
            verify(e, sinks[e.name], args.warmup, args.timeout)
            print(f"{e.name}: relayed 1 + {args.warmup} messages to its sink", flush=True)
        facts = common.machine_facts(hato)
        sampler.start()
        res = Results(load=[common.loadavg()])
        cpu_before = {e.name: e.cpu_by_process() for e in engines}
        for size in args.sizes:
            for n in args.sessions:
                for r in range(args.rounds):
                    for e in (engines if r % 2 == 0 else engines[::-1]):
                        rd = one_round(e, sinks[e.name], args.messages, n, size,
                                       args.timeout, sampler)
                        res.rounds.setdefault((e.name, size, n), []).append(rd)
                        print(f"{size_name(size):>6}, {n:>3} sessions, round {r + 1}: "
                              f"{e.name:<8} {rd.seconds:7.2f} s {rd.messages / rd.seconds:7.1f}"
                              f" msg/s to sink (accepted {rd.messages / rd.accept_seconds:6.1f}"
                              f"/s)  {rd.cpu / rd.messages * 1000:6.2f} ms CPU/msg  "
                              f"{rd.sessions} sink sessions, max {rd.peak_open} open",
                              flush=True)
        res.load.append(common.loadavg())
        for e in engines:
            res.extra.cpu[e.name] = cpu_delta(cpu_before[e.name], e.cpu_by_process())
            e.sample()
            res.extra.peak_rss[e.name] = e.peak_rss
            res.extra.hwm[e.name] = (sum(e.peak.values()), len(e.peak))
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
        for s in sinks.values():
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

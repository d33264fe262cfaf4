"""The throughput scenarios of bench/run.py: accept, maildir, relay,
submission and postscreen, each a private hato and a private Debian Postfix
configured alike (bench/README.md says how), measured in interleaved rounds.

Each scenario function takes the run's Context and an ExitStack that is
closed when the scenario ends (also after an error or Ctrl-C), and returns
an Outcome: per configuration (a Case) the rounds of each engine, plus what
the report needs to say how it was measured. The set-up, warm-up and round
code is the single-scenario scripts' (smtp_accept.py, relay.py,
submission.py, postscreen.py); what is new here is the maildir round and
the bookkeeping shared by every scenario: pair(), interleave(), Outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import postscreen
import relay
import smtp_accept
import submission
from common import (
    BenchError,
    Engine,
    Hato,
    Postfix,
    clear,
    count,
    create_mirror,
    drain,
    free_port,
    log_size,
    machine_facts,
    size_name,
    smtp_source,
    stop_all,
    tail,
    troubles,
)

PROG = "run.py"
MAILBOX = "demo@hato.test"      # hato init's virtual mailbox; Postfix's mirror has it too
SOURCE = ("smtp-source -4 -s SESSIONS -m MESSAGES -l SIZE -M client.test "
          "-f bench@client.test -t {rcpt} 127.0.0.1:PORT")


@dataclass
class Sample:
    """One round of one engine."""
    seconds: float
    units: int              # messages or sessions in the round
    cpu: float              # the instance's CPU seconds (every process, reaped children too)
    latency: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.units / self.seconds


@dataclass
class Case:
    """One configuration of a scenario (e.g. 1 KiB × 10 sessions)."""
    size: str
    sessions: str
    rounds: dict[str, list[Sample]]


@dataclass
class Outcome:
    name: str
    unit: str                       # "msg" or "session"
    what: str                       # how it was measured, for the report
    client: str                     # the client's command (pattern)
    cases: list[Case] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: extra tables (title, head, rows) for scenarios that are not a rate
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)  # peak, steady kB
    load: list[float] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class Context:
    args: argparse.Namespace
    work: Path
    sampler: common.Sampler
    hato_cmd: list[str]
    facts: dict[str, str] | None = None
    memory: dict[str, tuple[int, int]] = field(default_factory=dict)
    trouble: list[str] = field(default_factory=list)


def settings_with(base: list[str], **override: str) -> list[str]:
    """*base* main.cf lines with some parameters replaced or added."""
    out = [s for s in base if s.split("=", 1)[0].strip() not in override]
    return out + [f"{k} = {v}" for k, v in override.items()]


@contextlib.contextmanager
def pair(ctx: Context, name: str, set_up: Callable[[Hato, Postfix], None],
         hato_cls: type[Hato] = Hato, postfix_cls: type[Postfix] = Postfix
         ) -> Iterator[tuple[Hato, Postfix]]:
    """A hato and a Postfix instance under WORK/NAME, each smtpd on its own
    127.0.0.1 port, set up by *set_up*, started; stopped and removed at the
    end, after their memory figures and log troubles are noted in *ctx*."""
    root = ctx.work / name
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    hato, postfix = hato_cls(root / "hato", ctx.hato_cmd), postfix_cls(root / "postfix")
    hato.port, postfix.port = free_port(), free_port()
    engines: list[Engine] = [hato, postfix]
    try:
        print(f"[{name}] setting up hato (127.0.0.1:{hato.port}) and Postfix "
              f"(127.0.0.1:{postfix.port}) in {root}", flush=True)
        set_up(hato, postfix)
        for e in engines:
            e.start()
        if ctx.facts is None:
            ctx.facts = machine_facts(hato)
        yield hato, postfix
    finally:
        ctx.sampler.unwatch()
        for e in engines:
            e.sample()
        ctx.memory = {e.name: (e.peak_rss, int(statistics.median(e.rss_samples))
                               if e.rss_samples else 0) for e in engines}
        stop_all(engines, PROG)
        ctx.trouble += [f"[{name}] {t}" for t in troubles(engines)]
        shutil.rmtree(root, ignore_errors=True)


def as_sample(r) -> Sample:
    """A round of one of the single-scenario scripts as a Sample."""
    if isinstance(r, Sample):
        return r
    units = getattr(r, "messages", 0) or r.sessions
    return Sample(r.seconds, units, r.cpu, list(getattr(r, "latency", []) or []))


def interleave(ctx: Context, engines: list[Engine], label: str, unit: str,
               one_round: Callable[[Engine], object]) -> dict[str, list[Sample]]:
    """--rounds rounds, each engine once per round, alternating which goes
    first (A B, B A, A B, …), memory sampled while each runs."""
    out: dict[str, list[Sample]] = {e.name: [] for e in engines}
    for r in range(ctx.args.rounds):
        for e in (engines if r % 2 == 0 else engines[::-1]):
            ctx.sampler.watch(e)
            try:
                s = as_sample(one_round(e))
            finally:
                ctx.sampler.unwatch()
            out[e.name].append(s)
            print(f"{label}, round {r + 1}: {e.name:<8} {s.seconds:7.2f} s "
                  f"{s.rate:8.1f} {unit}/s {s.cpu / s.units * 1000:7.2f} ms CPU/{unit}",
                  flush=True)
    return out


def messages_for(ctx: Context, sessions: int) -> int:
    """Messages per round: --messages, and at least two per session."""
    return max(ctx.args.messages, 2 * sessions)


# -- accept ---------------------------------------------------------------------------------

def accept(ctx: Context, stack: contextlib.ExitStack) -> Outcome:
    a = ctx.args
    out = Outcome("accept", "msg", "messages acknowledged per second (250 once the queue file "
                  "is durable; smtp-source start to exit), then discarded; the queue drains "
                  "between rounds and its CPU is counted",
                  SOURCE.format(rcpt="bench@discard.test"))
    hato, postfix = stack.enter_context(pair(ctx, "accept", smtp_accept.set_up))
    for e in (hato, postfix):
        smtp_accept.warm_up(e, a.timeout)
    for size in a.sizes:
        for n in a.sessions:
            one = partial(smtp_accept.one_round, messages=messages_for(ctx, n), sessions=n,
                          size=size, args=a)
            rounds = interleave(ctx, [hato, postfix], f"accept {size_name(size)} × {n}",
                                "msg", one)
            out.cases.append(Case(size_name(size), str(n), rounds))
    return out


# -- maildir --------------------------------------------------------------------------------

#: smtp_accept.py's settings but the discard: mail goes to hato init's virtual mailbox
MAILDIR_SETTINGS = [s for s in smtp_accept.SETTINGS if not s.startswith("default_transport")]


def new_dir(e: Engine) -> Path:
    return e.root / "mail" / "hato.test" / "demo" / "new"


def maildir_set_up(hato: Hato, postfix: Postfix) -> None:
    hato.create(hato.port, MAILDIR_SETTINGS, only_inet=f"127.0.0.1:{hato.port}")
    create_mirror(hato, postfix)


def maildir_round(e: Engine, messages: int, sessions: int, size: int,
                  timeout: float) -> Sample:
    """smtp-source → smtpd → queue → virtual → Maildir; timed until the last
    file is in new/."""
    new = new_dir(e)
    clear(new)
    offset, cpu0 = log_size(e), e.cpu_seconds()
    t0 = time.monotonic()
    smtp_source(e, messages, sessions, size, recipient=MAILBOX, timeout=timeout)
    while count(new) < messages:
        if time.monotonic() - t0 > timeout:
            raise BenchError(f"{e.name}: {count(new)} of {messages} messages in {new} after "
                             f"{timeout:.0f} s\n--- last lines of {e.maillog}:\n"
                             f"{tail(e.maillog, 30)}")
        time.sleep(0.01)
    seconds = time.monotonic() - t0
    drain(e, offset, messages, timeout)
    got = count(new)
    if got != messages:
        print(f"warning: {e.name} delivered {got} files for {messages} messages",
              file=sys.stderr)
    return Sample(seconds, messages, e.cpu_seconds() - cpu0)


def maildir(ctx: Context, stack: contextlib.ExitStack) -> Outcome:
    a = ctx.args
    out = Outcome("maildir", "msg", "messages per second from the start of smtp-source until "
                  "the last file is in the Maildir's new/ (virtual delivery to "
                  f"{MAILBOX}, one Maildir)", SOURCE.format(rcpt=MAILBOX))
    hato, postfix = stack.enter_context(pair(ctx, "maildir", maildir_set_up))
    for e in (hato, postfix):
        common.banner(e.port)
        # one message first: it creates the Maildir (hato's virtual deferred one of two
        # concurrent first deliveries with "create maildir file …: Permission denied")
        maildir_round(e, 1, 1, 1024, 60)     # delivers, else BenchError with the log
        maildir_round(e, 10, 5, 1024, 60)
    for size in a.sizes:
        for n in a.sessions:
            one = partial(maildir_round, messages=messages_for(ctx, n), sessions=n, size=size,
                          timeout=a.timeout)
            rounds = interleave(ctx, [hato, postfix], f"maildir {size_name(size)} × {n}",
                                "msg", one)
            out.cases.append(Case(size_name(size), str(n), rounds))
    return out


# -- relay ----------------------------------------------------------------------------------

def relay_(ctx: Context, stack: contextlib.ExitStack) -> Outcome:
    a = ctx.args
    out = Outcome("relay", "msg", "messages per second from the start of smtp-source until "
                  "the engine's own smtp-sink (`smtp-sink -u nobody -c -4 -m 1000`, "
                  "relayhost) counted them all", SOURCE.format(rcpt="bench@remote.test"))
    sinks = {name: relay.Sink(name, free_port()) for name in ("hato", "postfix")}
    for s in sinks.values():
        stack.callback(s.stop)
    for s in sinks.values():
        s.ready()
    hato, postfix = stack.enter_context(
        pair(ctx, "relay", lambda h, p: relay.set_up(h, p, sinks)))
    for e in (hato, postfix):
        relay.verify(e, sinks[e.name], a.relay_warmup, a.timeout)
    per_session: dict[str, list[float]] = {"hato": [], "postfix": []}

    def one(e: Engine, messages: int, sessions: int, size: int):
        r = relay.one_round(e, sinks[e.name], messages, sessions, size, a.timeout, ctx.sampler)
        if r.sessions:
            per_session[e.name].append(r.messages / r.sessions)
        return r
    for size in a.sizes:
        for n in a.relay_sessions:
            rounds = interleave(ctx, [hato, postfix], f"relay {size_name(size)} × {n}", "msg",
                                partial(one, messages=messages_for(ctx, n), sessions=n,
                                        size=size))
            out.cases.append(Case(size_name(size), str(n), rounds))
    out.notes.append("messages per connection to the sink, median over all rounds: hato "
                     + " / Postfix ".join(f"{statistics.median(v):.1f}" if v else "-"
                                          for v in per_session.values()))
    return out


# -- submission -----------------------------------------------------------------------------

def submission_(ctx: Context, stack: contextlib.ExitStack) -> Outcome:
    a = ctx.args
    out = Outcome("submission", "session", "sessions per second, each EHLO, STARTTLS (full "
                  "handshake), EHLO, AUTH PLAIN (saslauthd -a shadow, one shared daemon), "
                  "one 1 KiB message, QUIT; discarded",
                  "Python smtplib threads in the bench process, certificate not checked")
    extra = ctx.work / "submission-tls"
    extra.mkdir(mode=0o755)
    stack.callback(shutil.rmtree, extra, ignore_errors=True)
    issued = submission.TestCA(extra / "tls").issue("mx.bench.test")
    for p in (issued.cert, issued.key):
        os.chmod(p, 0o644)  # hato's smtpd reads it as the mail owner
    password = "bench " + os.urandom(6).hex()
    submission.add_user(password)
    stack.callback(submission.remove_user)
    sasl = submission.Saslauthd(extra / "saslauthd", 10)
    stack.callback(sasl.stop)
    sasl.start()
    hato, postfix = stack.enter_context(
        pair(ctx, "submission", lambda h, p: submission.set_up(extra, h, p, sasl.mux)))
    message = submission.body(1024)
    for e in (hato, postfix):
        submission.warm_up(e, sasl, password, message, a.timeout)
    for c in a.sub_concurrency:
        one = partial(submission.one_round, sasl=sasl, n=a.sub_sessions, concurrency=c,
                      password=password, message=message, timeout=a.timeout)
        rounds = interleave(ctx, [hato, postfix], f"submission × {c}", "session", one)
        out.cases.append(Case("1 KiB", str(c), rounds))
    return out


# -- postscreen -----------------------------------------------------------------------------

def postscreen_(ctx: Context, stack: contextlib.ExitStack) -> Outcome:
    a = ctx.args
    clients = a.ps_clients
    out = Outcome("postscreen", "session", "sessions per second through postscreen, every "
                  f"one a cache hit (PASS OLD, checked in the log); {clients} client sockets, "
                  "each bound to its own source address, connect, 220, EHLO, QUIT, 221",
                  "one asyncio loop in the bench process (postscreen.py's client)")
    sources = [f"127.0.0.{2 + i}" for i in range(clients)]

    def set_up(h: Hato, p: Postfix) -> None:
        h.direct, p.direct = free_port(), free_port()
        postscreen.set_up(h, p)
    hato, postfix = stack.enter_context(pair(ctx, "postscreen", set_up, postscreen.PsHato,
                                             postscreen.PsPostfix))
    for e in (hato, postfix):
        postscreen.warm_up(e, sources, a.ps_warmup, 60, 0.1, 0.002)
    one = partial(postscreen.one_round, path="postscreen", n=a.ps_sessions, sources=sources,
                  timeout=60, ramp=0.002)
    rounds = interleave(ctx, [hato, postfix], f"postscreen × {clients}", "session", one)
    out.cases.append(Case("-", str(clients), rounds))
    for name, rs in rounds.items():
        lat = sorted(x for r in rs for x in r.latency)
        if lat:
            out.notes.append(f"{name}: connect → 220 through postscreen under load, median "
                             f"{statistics.median(lat) * 1000:.1f} ms, p99 "
                             f"{lat[int(0.99 * (len(lat) - 1))] * 1000:.1f} ms")
    return out

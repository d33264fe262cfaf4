"""The session scenarios of bench/run.py, with their asyncio clients in the
bench process:

* latency: --latency-sessions (50) SMTP sessions held open, each sending
  message after message (MAIL, RCPT, DATA, 1 KiB, "."); for every message
  the time from handing the final "." to the kernel to the complete 250
  reply; median and 99th percentile per engine, interleaved rounds.
* idle: how many concurrent sessions, each greeted and EHLO'd, an instance
  holds, and at what memory: connections are opened 100 at a time up to
  each milestone (…, 1,000, 2,000, 5,000, 10,000, 20,000 for hato; up to
  its process limit for Postfix), and at each the instance's summed RSS and
  Pss is read from /proc.

Both use smtp_accept.py's instance (discard); idle raises
default_process_limit to each engine's target (the number of concurrent
sessions a service may hold, for hato as for Postfix).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import smtp_accept
from common import (
    BenchError,
    Engine,
    Hato,
    Postfix,
    banner,
    create_mirror,
    drain,
    log_size,
    tail,
)
from postscreen import SessionError, read_reply
from scenarios import Case, Context, Outcome, Sample, interleave, pair, settings_with

SENDER, RECIPIENT = "bench@client.test", "bench@discard.test"


async def reply(reader: asyncio.StreamReader, code: bytes) -> bytes:
    """One whole reply, which must have *code*."""
    out = await read_reply(reader)
    if not out.startswith(code):
        raise SessionError(f"expected {code.decode()}, got {out[:200]!r}")
    return out


def message(size: int) -> bytes:
    """A message of about *size* bytes, dot-terminated, for DATA."""
    head = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: latency\r\n\r\n").encode()
    body = b"".join(b"x" * 70 + b"\r\n" for _ in range(max(1, (size - len(head)) // 72)))
    return head + body + b".\r\n"


# -- latency ---------------------------------------------------------------------------------

async def latency_load(port: int, messages: int, sessions: int, size: int,
                       timeout: float) -> tuple[float, list[float]]:
    """*messages* messages over *sessions* concurrent sessions; (seconds,
    end-of-DATA → 250 of each message)."""
    left = [messages]
    latency: list[float] = []
    data = message(size)

    async def session() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await reply(reader, b"220")
            writer.write(b"EHLO client.test\r\n")
            await reply(reader, b"250")
            while left[0] > 0:
                left[0] -= 1
                writer.write(f"MAIL FROM:<{SENDER}>\r\n".encode())
                await reply(reader, b"250")
                writer.write(f"RCPT TO:<{RECIPIENT}>\r\n".encode())
                await reply(reader, b"250")
                writer.write(b"DATA\r\n")
                await reply(reader, b"354")
                writer.write(data)
                t0 = time.perf_counter()    # write() sent what the socket took at once
                await writer.drain()
                await reply(reader, b"250")
                latency.append(time.perf_counter() - t0)
            writer.write(b"QUIT\r\n")
            await reply(reader, b"221")
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(session() for _ in range(sessions))), timeout)
    return time.perf_counter() - t0, latency


def latency_round(e: Engine, messages: int, sessions: int, size: int,
                  timeout: float) -> Sample:
    offset, cpu0 = log_size(e), e.cpu_seconds()
    try:
        seconds, lat = asyncio.run(latency_load(e.port, messages, sessions, size, timeout))
    except (OSError, SessionError, TimeoutError) as err:
        raise BenchError(f"{e.name}: latency client: {type(err).__name__}: {err}\n"
                         f"--- last lines of {e.maillog}:\n{tail(e.maillog, 20)}") from None
    drain(e, offset, messages, timeout)
    return Sample(seconds, messages, e.cpu_seconds() - cpu0, lat)


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of xs."""
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s) + 0.5) - 1))]


def spread(xs: list[float], fmt: str = "{:.1f}") -> str:
    return " / ".join(fmt.format(v) for v in (min(xs), statistics.median(xs), max(xs)))


LATENCY_HEAD = ["engine", "messages", "msg/s med", "end-of-DATA→250 ms p50 / p99 (all rounds)",
                "p99 ms per round min / med / max", "CPU ms/msg med"]


def latency(ctx: Context, stack: contextlib.ExitStack) -> Outcome:
    a = ctx.args
    n = a.latency_sessions
    out = Outcome("latency", "msg", f"{n} sessions held open, each sending 1 KiB messages one "
                  "after another; per message the time from the final \".\" to the 250 "
                  "(queue file durable), then discarded",
                  f"asyncio client in the bench process: {n} sessions, MAIL, RCPT, DATA, "
                  "1 KiB, \".\" per message")
    hato, postfix = stack.enter_context(pair(ctx, "latency", smtp_accept.set_up))
    for e in (hato, postfix):
        smtp_accept.warm_up(e, a.timeout)
        latency_round(e, 2 * n, n, 1024, a.timeout)     # untimed: every session once
    rounds = interleave(ctx, [hato, postfix], f"latency × {n}", "msg",
                        lambda e: latency_round(e, a.latency_messages, n, 1024, a.timeout))
    out.cases.append(Case("1 KiB", str(n), rounds))
    rows = []
    for name, rs in rounds.items():
        every = [x * 1000 for r in rs for x in r.latency]
        rows.append([name, str(len(every)), f"{statistics.median(r.rate for r in rs):.0f}",
                     f"{statistics.median(every):.1f} / {pct(every, 99):.1f}",
                     spread([pct(r.latency, 99) * 1000 for r in rs]),
                     f"{statistics.median(r.cpu / r.units for r in rs) * 1000:.2f}"])
    out.tables.append((f"Latency at {n} sessions", LATENCY_HEAD, rows))
    ratios = [pct(h.latency, 99) / pct(p.latency, 99)
              for h, p in zip(rounds["hato"], rounds["postfix"])]
    med_ratios = [statistics.median(h.latency) / statistics.median(p.latency)
                  for h, p in zip(rounds["hato"], rounds["postfix"])]
    out.notes.append(f"p99 ratio hato/Postfix per round min / med / max: {spread(ratios, '{:.2f}')}"
                     f" (below 1: hato's tail is shorter); median ratio "
                     f"{spread(med_ratios, '{:.2f}')}")
    return out


# -- idle --------------------------------------------------------------------------------------

class Idler(asyncio.Protocol):
    """One idle session: 220, EHLO, 250 (multi-line), then nothing."""

    def __init__(self, ready: asyncio.Future):
        self.ready = ready
        self.buf = bytearray()
        self.step = 0
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf and not self.ready.done():
            line, _, rest = bytes(self.buf).partition(b"\n")
            self.buf = bytearray(rest)
            if line[3:4] == b"-":
                continue
            want = b"220" if self.step == 0 else b"250"
            if not line.startswith(want):
                self.ready.set_exception(SessionError(f"expected {want.decode()}, got "
                                                      f"{line[:200]!r}"))
                self.transport.abort()
                return
            if self.step == 0:
                self.transport.write(b"EHLO client.test\r\n")
                self.step = 1
            else:
                self.ready.set_result(True)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(SessionError(f"closed before EHLO's reply: {exc}"))


def milestones(target: int) -> list[int]:
    return sorted({m for m in (100, 250, 500, 1000, 2000, 5000, 10000, 15000, 20000)
                   if m < target} | {target})


async def hold(e: Engine, target: int, timeout: float) -> tuple[list[list[str]], int, str]:
    """Open sessions up to each milestone, at most 100 in flight; (rows,
    sessions held at the end, why it stopped early or "")."""
    loop = asyncio.get_running_loop()
    idlers: list[Idler] = []
    gate = asyncio.Semaphore(100)
    rows: list[list[str]] = []
    before = e.memory_kb()
    rows.append(["0", "-", f"{before[0] / 1024:.0f}", f"{before[1] / 1024:.0f}", "-", "-",
                 str(before[2])])
    t0, stop = time.monotonic(), ""

    async def one() -> bool:
        async with gate:
            ready = loop.create_future()
            idler = Idler(ready)
            try:
                await asyncio.wait_for(loop.create_connection(lambda: idler, "127.0.0.1",
                                                              e.port), timeout)
                await asyncio.wait_for(ready, timeout)
            except (OSError, SessionError, TimeoutError):
                if idler.transport is not None:
                    idler.transport.abort()
                return False
            idlers.append(idler)
            return True
    try:
        for m in milestones(target):
            oks = await asyncio.gather(*(one() for _ in range(m - len(idlers))))
            await asyncio.sleep(1)
            held = sum(not i.closed for i in idlers)
            rss, pss, procs = e.memory_kb()
            if not procs:
                raise BenchError(f"{e.name}: no process of the instance readable in /proc "
                                 f"with {held} sessions open\n{tail(e.maillog)}")
            rows.append([f"{m:,}", f"{held:,}", f"{rss / 1024:.0f}", f"{pss / 1024:.0f}",
                         f"{(rss - before[0]) / max(held, 1):.1f}",
                         f"{time.monotonic() - t0:.1f}", str(procs)])
            print(f"[idle] {e.name}: {held:,} of {m:,} sessions held, RSS {rss / 1024:.0f} MB, "
                  f"Pss {pss / 1024:.0f} MB, {procs} processes", flush=True)
            if not all(oks) or held < m:
                stop = (f"{oks.count(False)} sessions of the last step got no EHLO reply within "
                        f"{timeout:.0f} s" if not all(oks) else
                        f"{m - held} sessions closed by the server")
                break
        return rows, sum(not i.closed for i in idlers), stop
    finally:
        for i in idlers:
            if i.transport is not None:
                i.transport.abort()
        await asyncio.sleep(0.1)


IDLE_HEAD = ["engine", "sessions opened", "held (EHLO'd, open)", "RSS MB", "Pss MB",
             "RSS kB per session", "seconds", "processes"]


def idle(ctx: Context, stack: contextlib.ExitStack) -> Outcome:
    a = ctx.args
    targets = {"hato": a.idle_hato, "postfix": a.idle_postfix}
    # the client holds every session in this process: its descriptors bound the target
    room = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 512
    tries = {name: min(t, room) for name, t in targets.items()}
    out = Outcome("idle", "session", "concurrent sessions each greeted (220) and EHLO'd (250), "
                  "held open; the instance's summed RSS and Pss at each milestone",
                  "asyncio client in the bench process, at most 100 handshakes in flight; "
                  f"RLIMIT_NOFILE {a.nofile} for the bench and both instances")
    limit = re.compile(r"(?m)^default_process_limit\s*=.*$")

    def set_up(h: Hato, p: Postfix) -> None:
        h.create(h.port, settings_with(smtp_accept.SETTINGS,
                                       default_process_limit=str(targets["hato"])),
                 only_inet=f"127.0.0.1:{h.port}")
        create_mirror(h, p, lambda cf: limit.sub(
            f"default_process_limit = {targets['postfix']}", cf))
    hato, postfix = stack.enter_context(pair(ctx, "idle", set_up))
    rows = []
    for e in (hato, postfix):
        first = banner(e.port)
        if not first.startswith("220"):
            raise BenchError(f"{e.name} greeted with {first!r}\n{tail(e.maillog)}")
        time.sleep(1)
        ctx.sampler.watch(e)
        try:
            steps, held, stop = asyncio.run(hold(e, tries[e.name], 30))
        finally:
            ctx.sampler.unwatch()
        rows += [[e.name, *r] for r in steps]
        out.notes.append(f"{e.name}: held {held:,} of {tries[e.name]:,} sessions tried"
                         + (f"; stopped: {stop}" if stop else "")
                         + f" (default_process_limit = {targets[e.name]})"
                         + (f"; the bench tried only {tries[e.name]:,}: its RLIMIT_NOFILE is "
                            f"{room + 512:,} (the hard limit; raising it needs "
                            f"CAP_SYS_RESOURCE)" if tries[e.name] < targets[e.name] else ""))
    out.tables.append(("Idle sessions", IDLE_HEAD, rows))
    return out

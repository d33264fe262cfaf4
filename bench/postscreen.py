"""Connections per second through postscreen (cache hits: ``PASS OLD``) for
hato and Debian's Postfix, and the latency postscreen's hand-off adds over a
direct smtpd connection, on the same machine in the same run.

    python3 bench/postscreen.py [--sessions 5000] [--rounds 3] [--clients 200]
                                [--probe 300] [--warmup 400] [--quick]
                                [--hato CMD] [--timeout 60]

Runs as root (as CI does). Two private instances under one temporary
directory in /tmp, each with two ports on 127.0.0.1:

* ``hato``: ``hato init`` (hato from $HATO_VENV, default /opt/hato/venv)
  plus SETTINGS below; ``postfix``: a private Debian Postfix with the same
  main.cf (its own paths and owner);
* both with the reference setup's postscreen lines in master.cf (as
  tests/integration/test_t16_postscreen.py): ``127.0.0.1:PS inet n - n - 1
  postscreen``, ``smtpd pass - - n - - smtpd``, ``dnsblog unix - - n - 0
  dnsblog`` (Postfix also ``tlsproxy unix - - n - 0 tlsproxy``), and a plain
  ``127.0.0.1:DIRECT inet n - n - - smtpd`` entry: the same smtpd without
  postscreen in front, for comparison.

``postscreen_access_list =`` (empty) and ``mynetworks = 127.0.0.1/32``, so
that the clients, each bound to its own source address 127.0.0.2,
127.0.0.3, …, are neither permitted outright nor trusted: postscreen must
look each one up in its cache (``postscreen_cache_map``, a btree file).

Before timing: every source address connects once through postscreen, waits
out ``postscreen_greet_wait = 1s`` (the ``220-`` line, then smtpd's ``220``)
and says EHLO and QUIT, so that it is ``PASS NEW``; then every address
connects once more and the log must show ``PASS OLD`` for each one. Else
the bench says so and exits 1: it never prints a number it did not measure.
Then --warmup sessions on each port (untimed), so that processes are up.

Timed rounds: --clients sockets (default 200) in one asyncio loop of this
process, client i always bound to source address 127.0.0.(2+i), each doing
connect → 220 → EHLO → 250 → QUIT → 221 → the server closes → the next
session until --sessions sessions are done; timed from the first connect to
the last close. Each round is one of four runs — hato or Postfix, through
postscreen or direct to smtpd — and the runs are interleaved, rotating which
goes first. A session fails on any other reply, a multi-line greeting (a
``220-`` line means postscreen ran its tests: not a cache hit), a reset or a
timeout; a postscreen round fails unless the log shows one ``PASS OLD`` per
session and no ``PASS NEW``.

Measured per round, from /proc before and after (0.5 s after the last
close): CPU of the whole instance (every process under its master, with the
children it reaped), of its postscreen process alone (hato: the worker of
the postscreen inet service; Postfix: ``postscreen``), of this process (the
client); and for every session the time from the start of connect() to the
complete 220 line (under load). Then the idle hand-off latency: --probe
sequential sessions per engine and path (one at a time, all four
alternating), connect → 220 → QUIT → 221 → close, the time from connect()
to the 220 line. Printed: per engine and path min/median/max sessions/s,
CPU figures, latency median and p99; the ratios; a Markdown section for
bench/RESULTS.md. Everything is stopped and removed at the end, also on
Ctrl-C or an error. Not a test: no timing is ever asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import re
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
    CLK_TCK,
    POSTCONF,
    POSTFIX,
    BenchError,
    Engine,
    Hato,
    Postfix,
    banner,
    client_cpu,
    cpu_delta,
    create_mirror,
    ensure_system_user,
    free_port,
    hato_command,
    ignore_signals,
    log_since,
    log_size,
    must,
    preflight,
    raise_on_signals,
    stat_fields,
    stop_all,
    tail,
    wait_until,
)

PROG = "postscreen.py"
HELO = "client.test"
GREET_WAIT = 1.0

#: main.cf settings both engines get, on top of their instance's own.
SETTINGS = [
    "mynetworks = 127.0.0.1/32",            # the clients (127.0.0.2+) are not trusted
    "default_transport = discard",
    "default_process_limit = 1000",         # also postscreen's pre- and post-queue limits
    "smtpd_peername_lookup = no",
    "postscreen_access_list =",             # loopback is not permitted outright
    "postscreen_greet_action = enforce",
    f"postscreen_greet_wait = {GREET_WAIT:.0f}s",
    # postscreen_cache_map: the default on both, btree:$data_directory/postscreen_cache
]

#: the postscreen lines of master.cf (the reference setup's) and a direct smtpd
MASTER = """\
127.0.0.1:{ps} inet  n       -       n       -       1       postscreen
smtpd     pass  -       -       n       -       -       smtpd
dnsblog   unix  -       -       n       -       0       dnsblog
{extra}127.0.0.1:{direct} inet  n       -       n       -       -       smtpd
"""
TLSPROXY = "tlsproxy  unix  -       -       n       -       0       tlsproxy\n"

PASS_OLD = re.compile(r"postscreen\[\d+\]: PASS OLD \[([0-9.]+)\]:\d+")
PASS_NEW = re.compile(r"postscreen\[\d+\]: PASS NEW \[([0-9.]+)\]:\d+")
VERDICT = re.compile(r"postscreen\[\d+\]: (PASS OLD|PASS NEW|PREGREET|DNSBL|HANGUP|"
                     r"DENYLISTED|BLACKLISTED|ALLOWLISTED|WHITELISTED|NOQUEUE|"
                     r"COMMAND|BARE|NON-SMTP)")
PATHS = ("postscreen", "direct")


# -- the engines ---------------------------------------------------------------------------

class PsHato(Hato):
    """hato with postscreen on .port and a direct smtpd on .direct."""

    direct = 0

    def label(self, pid: int) -> str:
        """inet workers by port (postscreen, or the direct smtpd); others by service."""
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return "?"
        if "hato.master.worker" not in args:
            return "master"
        service, kind = (args[args.index("hato.master.worker") + 1:] + ["", ""])[:2]
        if kind == "inet":
            return "postscreen" if service.endswith(f":{self.port}") else "smtpd (direct)"
        return service


class PsPostfix(Postfix):
    direct = 0


def port_of(e: Engine, path: str) -> int:
    return e.port if path == "postscreen" else e.direct


def set_up(hato: PsHato, postfix: PsPostfix) -> None:
    hato.create(hato.port, SETTINGS, only_inet=f"127.0.0.1:{hato.port}")
    master = hato.root / "master.cf"
    text, n = re.subn(rf"(?m)^127\.0\.0\.1:{hato.port}\s+inet\s.*smtpd\n",
                      lambda _m: MASTER.format(ps=hato.port, direct=hato.direct, extra=""),
                      master.read_text())
    if n != 1:
        raise BenchError(f"{master}: no single `127.0.0.1:{hato.port} inet … smtpd` entry")
    master.write_text(text)
    create_mirror(hato, postfix)
    master = postfix.conf / "master.cf"
    text, n = re.subn(rf"(?m)^127\.0\.0\.1:{postfix.port}\s+inet\s.*smtpd\n",
                      lambda _m: MASTER.format(ps=postfix.port, direct=postfix.direct,
                                               extra=TLSPROXY),
                      master.read_text())
    if n != 1:
        raise BenchError(f"{master}: no single `127.0.0.1:{postfix.port} inet … smtpd` entry")
    master.write_text(text)
    must([POSTFIX, "-c", str(postfix.conf), "check"], "postfix check", postfix.maillog)


# -- the client ----------------------------------------------------------------------------

#: (the reply code expected, what to send after it)
STEPS = ((b"220", f"EHLO {HELO}\r\n".encode()), (b"250", b"QUIT\r\n"), (b"221", b""))


class SessionError(Exception):
    pass


class Churn(asyncio.Protocol):
    """One session: 220 (one line), EHLO, 250, QUIT, 221, then the server
    closes. Records when the 220 line was complete."""

    def __init__(self, done: asyncio.Future, timeout: float):
        self.done = done
        self.timeout = timeout
        self.buf = bytearray()
        self.step = 0
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.error: str | None = None
        self.greeted = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.error = f"no end of session within {self.timeout:.0f} s (after {self.step} replies)"
        self.transport.abort()

    def _fail(self, why: str) -> None:
        self.error = why
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not buf.endswith(b"\r\n"):
            return
        i = buf.rfind(b"\r\n", 0, len(buf) - 2)
        last = buf[i + 2 if i >= 0 else 0:]
        if self.step == 0 and buf[3:4] == b"-":
            return self._fail("a multi-line greeting (postscreen ran its tests: not a cache "
                              f"hit): {bytes(buf[:200]).decode(errors='replace')!r}")
        if last[3:4] == b"-":       # more lines of a multi-line reply to come
            return
        if self.step >= len(STEPS):
            return self._fail(f"unexpected data after 221: {bytes(buf[:200])!r}")
        expect, send = STEPS[self.step]
        if buf[:3] != expect:
            return self._fail(f"expected {expect.decode()}, got "
                              f"{bytes(buf[:200]).decode(errors='replace')!r}")
        if self.step == 0:
            self.greeted = time.perf_counter()
        buf.clear()
        self.step += 1
        if send:
            self.transport.write(send)

    def eof_received(self) -> bool:
        return False    # close our side too

    def connection_lost(self, exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.done.done():
            return
        if self.error is None and self.step == len(STEPS):
            self.done.set_result(self.greeted)
        else:
            self.done.set_exception(SessionError(
                self.error or f"closed after {self.step} of {len(STEPS)} replies"
                + (f": {exc}" if exc else "")))


async def churn(port: int, sessions: int, sources: list[str], timeout: float,
                ramp: float = 0.0, once: bool = False
                ) -> tuple[float, int, list[str], list[float]]:
    """*sessions* sessions over one socket per source address, client i
    starting after i × *ramp* seconds; (seconds, sessions done, errors,
    connect→220 seconds of each). With *once*, each client one session only."""
    loop = asyncio.get_running_loop()
    left = [sessions]
    ok = [0]
    errors: list[str] = []
    latency: list[float] = []

    async def client(i: int, src: str) -> None:
        if ramp:
            await asyncio.sleep(i * ramp)
        while left[0] > 0 and len(errors) < 10:
            left[0] -= 1
            done = loop.create_future()
            t0 = time.perf_counter()
            try:
                await loop.create_connection(lambda: Churn(done, timeout), "127.0.0.1", port,
                                             local_addr=(src, 0))
                greeted = await done
            except (OSError, SessionError) as err:
                errors.append(f"from {src}: {type(err).__name__}: {err}")
            else:
                ok[0] += 1
                latency.append(greeted - t0)
            if once:
                return

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(client(i, src)) for i, src in enumerate(sources)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks),
                               timeout * max(1, sessions / len(sources)))
    except TimeoutError:
        errors.append(f"the round did not finish ({ok[0]} of {sessions} sessions done)")
    return time.perf_counter() - t0, ok[0], errors, latency


def run_churn(port: int, sessions: int, sources: list[str], timeout: float,
              ramp: float = 0.0, once: bool = False):
    return asyncio.run(churn(port, sessions, sources, timeout, ramp, once))


async def read_reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (every line of a multi-line one)."""
    out = b""
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise SessionError(f"connection closed after {out + line!r}")
        out += line
        if line[3:4] != b"-":
            return out


async def first_pass(port: int, sources: list[str], timeout: float,
                     stagger: float) -> list[str]:
    """Every source address once, polite: waits out the greet wait (220-,
    then smtpd's 220), EHLO, QUIT; one client starts every *stagger*
    seconds. Errors, if any."""
    async def one(i: int, src: str) -> str | None:
        await asyncio.sleep(i * stagger)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, local_addr=(src, 0)), timeout)
            try:
                greeting = await asyncio.wait_for(read_reply(reader), timeout)
                if not greeting.startswith(b"220"):
                    return f"{src}: greeted with {greeting!r}"
                writer.write(f"EHLO {HELO}\r\n".encode())
                ehlo = await asyncio.wait_for(read_reply(reader), timeout)
                writer.write(b"QUIT\r\n")
                quit_ = await asyncio.wait_for(read_reply(reader), timeout)
                if not (ehlo.startswith(b"250") and quit_.startswith(b"221")):
                    return f"{src}: EHLO {ehlo!r}, QUIT {quit_!r}"
            finally:
                writer.close()
        except (TimeoutError, OSError, SessionError) as err:
            return f"{src}: {type(err).__name__}: {err}"
        return None
    return [e for e in await asyncio.gather(*(one(i, s) for i, s in enumerate(sources))) if e]


def probe_once(port: int, src: str, timeout: float) -> float:
    """One idle session, connect → 220 → QUIT → 221 → close; seconds to the 220 line."""
    with socket.socket() as s:
        s.bind((src, 0))
        s.settimeout(timeout)
        t0 = time.perf_counter()
        s.connect(("127.0.0.1", port))
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                raise SessionError(f"closed before the greeting: {data!r}")
            data += chunk
        t = time.perf_counter() - t0
        if not data.startswith(b"220 ") or data.count(b"\r\n") != 1:
            raise SessionError(f"greeted with {data[:200]!r} (want one 220 line)")
        s.sendall(b"QUIT\r\n")
        rest = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        if not rest.startswith(b"221"):
            raise SessionError(f"QUIT answered with {rest[:200]!r}")
        return t


# -- measuring -----------------------------------------------------------------------------

def postscreen_procs(e: Engine) -> dict[tuple[int, str], int]:
    """The engine's postscreen process(es): (pid, start time) -> utime+stime ticks."""
    out = {}
    for p in e.pids():
        if e.label(p) == "postscreen":
            f = stat_fields(p)
            if len(f) > 19:
                out[(p, f[19])] = int(f[11]) + int(f[12])
    return out


def verdicts(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for m in VERDICT.finditer(text):
        out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


@dataclass
class Round:
    seconds: float
    sessions: int
    cpu: float                  # the whole instance's CPU seconds
    ps_cpu: float               # its postscreen process's
    client_cpu: float           # this process's
    latency: list[float] = field(default_factory=list)     # connect → 220, seconds
    ps_restarted: bool = False

    @property
    def rate(self) -> float:
        return self.sessions / self.seconds


def one_round(e: Engine, path: str, n: int, sources: list[str], timeout: float,
              ramp: float) -> Round:
    offset = log_size(e)
    p0, cpu0, c0 = postscreen_procs(e), e.cpu_seconds(), client_cpu()
    seconds, done, errors, latency = run_churn(port_of(e, path), n, sources, timeout, ramp)
    c1 = client_cpu()
    time.sleep(0.5)     # the last sessions end in the server (not timed)
    p1, cpu1 = postscreen_procs(e), e.cpu_seconds()
    if errors:
        raise BenchError(f"{e.name} {path}: {len(errors)} of {n} sessions failed ({done} done), "
                         f"e.g. {errors[0]}\n--- last lines of {e.maillog}:\n{tail(e.maillog, 20)}")
    if path == "postscreen":
        wait_until(lambda: verdicts(log_since(e, offset)).get("PASS OLD", 0) >= n, 15, 0.25)
        seen = verdicts(log_since(e, offset))
        if seen.get("PASS OLD", 0) != n or set(seen) != {"PASS OLD"}:
            raise BenchError(f"{e.name}: {n} sessions through postscreen, but its log shows "
                             f"{seen or 'no verdicts'} (want {n} PASS OLD and nothing else)\n"
                             f"--- last lines of {e.maillog}:\n{tail(e.maillog, 20)}")
    ps = sum(t - p0.get(k, 0) for k, t in p1.items()) / CLK_TCK
    return Round(seconds, n, cpu1 - cpu0, ps, c1 - c0, latency,
                 ps_restarted=bool(set(p0) - set(p1)))


def warm_up(e: Engine, sources: list[str], sessions: int, timeout: float,
            stagger: float, ramp: float) -> None:
    """Every source PASS NEW, then PASS OLD (checked in the log); then
    *sessions* untimed sessions on each port."""
    for path in PATHS:
        first = banner(port_of(e, path))
        if not first.startswith("220"):
            raise BenchError(f"{e.name} {path} greeted with {first!r}\n{tail(e.maillog)}")
    offset = log_size(e)
    errors = asyncio.run(first_pass(e.port, sources, timeout, stagger))
    if errors:
        raise BenchError(f"{e.name}: {len(errors)} of {len(sources)} first sessions through "
                         f"postscreen failed, e.g. {errors[0]}\n{tail(e.maillog, 20)}")
    want = set(sources)
    wait_until(lambda: want <= set(PASS_NEW.findall(log_since(e, offset))), 10, 0.25)
    missing = want - set(PASS_NEW.findall(log_since(e, offset)))
    if missing:
        raise BenchError(f"{e.name}: no `PASS NEW` in its log for {len(missing)} of the "
                         f"{len(sources)} clients that waited out the greet wait, e.g. "
                         f"{sorted(missing)[0]}\n{tail(e.maillog, 20)}")
    offset = log_size(e)
    _s, done, errors, _lat = run_churn(e.port, len(sources), sources, timeout,
                                          ramp, once=True)
    if errors:
        raise BenchError(f"{e.name}: {len(errors)} of {len(sources)} second sessions through "
                         f"postscreen failed ({done} done), e.g. {errors[0]}\n"
                         f"{tail(e.maillog, 20)}")
    wait_until(lambda: want <= set(PASS_OLD.findall(log_since(e, offset))), 10, 0.25)
    text = log_since(e, offset)
    missing = want - set(PASS_OLD.findall(text))
    if missing or PASS_NEW.search(text):
        raise BenchError(f"{e.name}: the second session of each client is not a cache hit: "
                         f"no `PASS OLD` for {len(missing)} of {len(sources)} clients "
                         f"(e.g. {sorted(missing)[:3]}), {len(PASS_NEW.findall(text))} "
                         f"`PASS NEW`: there is no PASS OLD rate to measure\n"
                         f"{tail(e.maillog, 20)}")
    for path in PATHS:
        _s, done, errors, _lat = run_churn(port_of(e, path), sessions, sources, timeout, ramp)
        if errors:
            raise BenchError(f"{e.name} {path}: {len(errors)} of {sessions} warm-up sessions "
                             f"failed ({done} done), e.g. {errors[0]}\n{tail(e.maillog, 20)}")


def probe(engines: list[Engine], sources: list[str], k: int, timeout: float
          ) -> dict[tuple[str, str], list[float]]:
    """*k* idle sessions per engine and path, one at a time, alternating."""
    runs = [(e, path) for path in PATHS for e in engines]
    out: dict[tuple[str, str], list[float]] = {(e.name, p): [] for e, p in runs}
    offsets = {e.name: log_size(e) for e in engines}
    for i in range(k):
        src = sources[i % len(sources)]
        j = i % len(runs)
        for e, path in runs[j:] + runs[:j]:
            try:
                out[(e.name, path)].append(probe_once(port_of(e, path), src, timeout))
            except (OSError, SessionError) as err:
                raise BenchError(f"{e.name} {path}: idle session from {src}: "
                                 f"{type(err).__name__}: {err}\n{tail(e.maillog, 20)}")
    for e in engines:
        wait_until(lambda: verdicts(log_since(e, offsets[e.name])).get("PASS OLD", 0) >= k,
                   15, 0.25)
        seen = verdicts(log_since(e, offsets[e.name]))
        if seen.get("PASS OLD", 0) != k or set(seen) != {"PASS OLD"}:
            raise BenchError(f"{e.name}: {k} idle sessions through postscreen, but its log "
                             f"shows {seen or 'no verdicts'}")
    return out


# -- report --------------------------------------------------------------------------------

def p99(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[98] if len(xs) > 1 else xs[0]


def med(rs: list[Round], attr: str) -> float:
    return statistics.median(getattr(r, attr) / r.sessions for r in rs)


HEAD = ["engine", "path", "sessions/s min / med / max", "CPU ms/session (instance)",
        "postscreen CPU µs/session", "client CPU ms/session",
        "connect→220 ms med / p99 (under load)"]
PROBE_HEAD = ["engine", "via postscreen med / p99 ms", "direct to smtpd med / p99 ms",
              "added by postscreen med / p99 ms"]


def rows(res: dict[tuple[str, str], list[Round]]) -> list[list[str]]:
    out = []
    for (name, path), rs in res.items():
        rates = [r.rate for r in rs]
        lat = [x for r in rs for x in r.latency]
        out.append([
            name, path,
            f"{min(rates):.0f} / {statistics.median(rates):.0f} / {max(rates):.0f}",
            f"{med(rs, 'cpu') * 1000:.2f}",
            f"{med(rs, 'ps_cpu') * 1e6:.0f}" if path == "postscreen" else "-",
            f"{med(rs, 'client_cpu') * 1000:.2f}",
            f"{statistics.median(lat) * 1000:.1f} / {p99(lat) * 1000:.1f}"])
    return out


def probe_rows(lat: dict[tuple[str, str], list[float]], names: list[str]) -> list[list[str]]:
    out = []
    for name in names:
        ps, d = lat[(name, "postscreen")], lat[(name, "direct")]
        out.append([name,
                    f"{statistics.median(ps) * 1000:.2f} / {p99(ps) * 1000:.2f}",
                    f"{statistics.median(d) * 1000:.2f} / {p99(d) * 1000:.2f}",
                    f"{(statistics.median(ps) - statistics.median(d)) * 1000:+.2f} / "
                    f"{(p99(ps) - p99(d)) * 1000:+.2f}"])
    return out


def ratio_lines(res, lat, breakdown) -> list[str]:
    def rate(name: str, path: str) -> float:
        return statistics.median(r.rate for r in res[(name, path)])

    def cpu(name: str, path: str, attr: str = "cpu") -> float:
        return med(res[(name, path)], attr)

    def div(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 0 else "-"

    def added(name: str) -> float:
        return (statistics.median(lat[(name, "postscreen")])
                - statistics.median(lat[(name, "direct")]))
    out = [
        f"sessions/s through postscreen, ratio of medians hato/Postfix: "
        f"{div(rate('hato', 'postscreen'), rate('postfix', 'postscreen'))} (above 1: hato is "
        f"faster); direct to smtpd: {div(rate('hato', 'direct'), rate('postfix', 'direct'))}",
        f"through postscreen / direct, sessions/s: hato "
        f"{div(rate('hato', 'postscreen'), rate('hato', 'direct'))}, Postfix "
        f"{div(rate('postfix', 'postscreen'), rate('postfix', 'direct'))}",
        f"CPU per session through postscreen hato/Postfix: "
        f"{div(cpu('hato', 'postscreen'), cpu('postfix', 'postscreen'))} (instance), "
        f"{div(cpu('hato', 'postscreen', 'ps_cpu'), cpu('postfix', 'postscreen', 'ps_cpu'))} "
        f"(postscreen process); CPU added by postscreen per session (postscreen − direct, "
        f"instance): hato {(cpu('hato', 'postscreen') - cpu('hato', 'direct')) * 1000:+.2f} ms, "
        f"Postfix {(cpu('postfix', 'postscreen') - cpu('postfix', 'direct')) * 1000:+.2f} ms",
        f"idle hand-off latency added (median via postscreen − median direct): hato "
        f"{added('hato') * 1000:+.2f} ms, Postfix {added('postfix') * 1000:+.2f} ms",
    ]
    for key, by in breakdown.items():
        total = sum(by.values()) or 1
        parts = ", ".join(f"{label} {100 * v / total:.0f}%" for label, v in
                          sorted(by.items(), key=lambda kv: -kv[1]) if v / total >= 0.005)
        out.append(f"{key[0]} {key[1]}: CPU over its rounds {total:.1f} s: {parts}")
    restarted = [name for (name, path), rs in res.items()
                 if path == "postscreen" and any(r.ps_restarted for r in rs)]
    if restarted:
        out.append(f"note: the postscreen process of {', '.join(restarted)} was replaced "
                   f"during a round; the CPU of the one that exited is not in its figure")
    return out


def report(res, lat, breakdown, args, facts, command, load, trouble) -> None:
    table = rows(res)
    ptable = probe_rows(lat, ["hato", "postfix"])
    ratios = ratio_lines(res, lat, breakdown)
    print(f"\n{args.sessions} sessions per round, {args.rounds} rounds, {args.clients} client "
          f"sockets (one source address each); load average {' -> '.join(load)}")
    print(common.text_table(HEAD, table))
    print(f"\nidle hand-off latency, connect → 220, {args.probe} sequential sessions each:")
    print(common.text_table(PROBE_HEAD, ptable))
    print()
    print("\n".join(ratios))
    print(f"""
--- Markdown for bench/RESULTS.md ---
## postscreen (cache hits, PASS OLD) — `{command}`

* date: {datetime.date.today().isoformat()}
* machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']}
* software: Postfix {facts['postfix']}; {facts['hato']}; client: one asyncio loop in the
  bench process (Python {sys.version.split()[0]}), {args.clients} sockets, each bound to
  its own source address 127.0.0.2…
* load: {args.sessions} sessions per round (connect, 220, EHLO, QUIT, 221, server closes),
  {args.rounds} rounds per engine and path (through postscreen, direct to smtpd),
  interleaved; before them each client passed once (PASS NEW after the 1 s greet wait)
  and was checked to be PASS OLD, and {args.warmup} warm-up sessions per port;
  then {args.probe} idle sequential sessions per engine and path for the hand-off latency
* both: `hato init` main.cf plus {', '.join(f'`{s}`' for s in SETTINGS)}
  (Postfix: the same main.cf); master.cf `127.0.0.1:PORT inet n - n - 1 postscreen`,
  `smtpd pass - - n - - smtpd`, `dnsblog unix - - n - 0 dnsblog` (Postfix also
  `tlsproxy unix - - n - 0 tlsproxy`) and `127.0.0.1:PORT2 inet n - n - - smtpd`
* /proc/loadavg at the start and the end: {" and ".join(load)}

Every postscreen round's log showed one `PASS OLD` per session and no other
verdict. sessions/s is from the first connect to the last close; CPU per
session is the whole instance's (every process under its master, with the
children it reaped); postscreen's is its process alone; connect→220 is from
connect() to the complete 220 line, every session of the rounds (so it
includes queueing behind {args.clients} clients).

{common.md_table(HEAD, table)}

Idle hand-off latency (connect → 220, one session at a time, the four
alternating):

{common.md_table(PROBE_HEAD, ptable)}

{chr(10).join("* " + line for line in ratios)}
""" + (("\nLog lines that need a look:\n\n" + "\n".join(f"    {t}" for t in trouble) + "\n")
       if trouble else ""))


# -- main ----------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=5000, help="sessions per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=200,
                    help="concurrent client sockets, one source address each (at most 253)")
    ap.add_argument("--probe", type=int, default=300,
                    help="idle sequential sessions per engine and path (latency)")
    ap.add_argument("--warmup", type=int, default=400, help="warm-up sessions per port")
    ap.add_argument("--stagger", type=float, default=0.1,
                    help="seconds between the clients' first (PASS NEW) connections: hato's "
                    "postscreen (up to 5491aae) crashes when several cache writes overlap")
    ap.add_argument("--ramp", type=float, default=0.002,
                    help="seconds between the starts of the clients (0: all at once; "
                    "hato's hand-off (up to 5491aae) fails with 421 when over 100 clients wait at "
                    "once on smtpd's pass socket)")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 round of 500 sessions, 100 probe and 200 warm-up sessions")
    ap.add_argument("--hato", help="the hato command (default: $HATO_VENV/bin/hato, "
                    "HATO_VENV=/opt/hato/venv by default)")
    ap.add_argument("--timeout", type=float, default=60,
                    help="seconds allowed per session (connect to close)")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.rounds, args.probe, args.warmup = 500, 1, 100, 200
    if args.sessions < 1 or args.rounds < 1 or not 1 <= args.clients <= 253 \
            or args.probe < 2 or args.warmup < 1:
        ap.error("--sessions and --rounds must be at least 1, --clients 1 to 253, "
                 "--probe at least 2, --warmup at least 1")
    command = preflight(PROG, "bench/postscreen.py",
                        "it starts private hato and Postfix instances that drop to "
                        "their mail owners",
                        {POSTCONF: "postfix"})
    if command is None:
        return 2
    sources = [f"127.0.0.{2 + i}" for i in range(args.clients)]

    raise_on_signals()
    work = Path(tempfile.mkdtemp(prefix="hato-bench-ps-", dir="/tmp"))
    os.chmod(work, 0o755)
    engines: list[Engine] = []
    try:
        ensure_system_user()
        venv = os.environ.get("HATO_VENV", "/opt/hato/venv")
        hato = PsHato(work / "hato", hato_command(args.hato, venv))
        postfix = PsPostfix(work / "postfix")
        for e in (hato, postfix):
            e.port, e.direct = free_port(), free_port()
        engines = [hato, postfix]
        print(f"setting up hato and Postfix in {work}", flush=True)
        set_up(hato, postfix)
        for e in engines:
            print(f"starting {e.name}: postscreen on 127.0.0.1:{e.port}, smtpd on "
                  f"127.0.0.1:{e.direct}", flush=True)
            e.start()
            warm_up(e, sources, args.warmup, args.timeout, args.stagger, args.ramp)
            print(f"{e.name}: {len(sources)} clients PASS NEW, then PASS OLD (in its log); "
                  f"{args.warmup} warm-up sessions per port", flush=True)
        facts = common.machine_facts(hato)
        load = [common.loadavg()]
        runs = [(e, path) for path in PATHS for e in engines]
        res: dict[tuple[str, str], list[Round]] = {(e.name, p): [] for e, p in runs}
        breakdown: dict[tuple[str, str], dict[str, float]] = {(e.name, p): {} for e, p in runs}
        for r in range(args.rounds):
            k = r % len(runs)
            for e, path in runs[k:] + runs[:k]:
                before = e.cpu_by_process()
                rd = one_round(e, path, args.sessions, sources, args.timeout, args.ramp)
                for label, v in cpu_delta(before, e.cpu_by_process()).items():
                    breakdown[(e.name, path)][label] = \
                        breakdown[(e.name, path)].get(label, 0) + v
                res[(e.name, path)].append(rd)
                lat = sorted(rd.latency)
                print(f"round {r + 1}: {e.name:<7} {path:<10} {rd.seconds:6.2f} s "
                      f"{rd.rate:6.0f} sessions/s  {rd.cpu / rd.sessions * 1000:5.2f} ms "
                      f"CPU/session, postscreen {rd.ps_cpu / rd.sessions * 1e6:4.0f} µs/session, "
                      f"client {rd.client_cpu / rd.sessions * 1000:.2f} ms/session, "
                      f"connect→220 {statistics.median(lat) * 1000:.1f} / "
                      f"{p99(lat) * 1000:.1f} ms", flush=True)
        print(f"idle hand-off latency: {args.probe} sessions per engine and path", flush=True)
        lat = probe(engines, sources, args.probe, args.timeout)
        load.append(common.loadavg())
        report(res, lat, breakdown, args, facts, command, load, common.troubles(engines))
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
        ignore_signals()
        stop_all(engines, PROG)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

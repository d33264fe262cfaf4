"""Connection churn with per-client limits active: sessions per second
(connect, 220, EHLO, QUIT, close) against hato with local anvil counters,
Debian's Postfix, and hato with its anvil counters in Redis, on the same
machine in the same run.

    python3 bench/anvil.py [--sessions 5000] [--rounds 3] [--clients 200]
                           [--warmup 400] [--quick] [--hato CMD] [--timeout 600]

Runs as root (as CI does). Three private instances under one temporary
directory in /tmp, each with its smtpd on its own 127.0.0.1 port:

(a) ``hato``: ``hato init -p PORT`` (hato from $HATO_VENV, default
    /opt/hato/venv) plus SETTINGS below: every client limit on but far above
    what the load reaches, and ``smtpd_client_event_limit_exceptions =``
    empty so that loopback is counted: every session costs two anvil
    requests (connect and disconnect) and no session is refused;
(b) ``postfix``: a private Debian Postfix with the same main.cf (its own
    paths and owner);
(c) ``hato-redis``: (a) plus ``hato_anvil_backend = redis:redis://127.0.0.1:PORT/0``,
    a private redis-server that the bench starts on loopback (no persistence).

The load: --clients sockets (default 200) from one asyncio loop in this
process, each doing connect → 220 → EHLO → 250 → QUIT → 221 → the server
closes → next session, until --sessions sessions (default 5000) are done; a
round is timed from the first connect to the last close. Any other reply
(a 421 from a limit, say), a reset or a timeout fails the round. Rounds are
interleaved (a b c, b c a, c a b, …) so that each engine goes first in turn.

Before timing, each engine gets --warmup sessions and must show that its
anvil counts: ``anvil_status_update_time = 5s``, and its log must show a
``statistics: max connection rate`` line (anvil's periodic report) within
20 s; hato-redis must also have sent commands to Redis (INFO commandstats)
and must not have fallen back to local counters. Otherwise the bench says so
and exits 1: it never prints a number it did not measure.

Measured per round, from /proc before and after (and 0.5 s of settling
after the last close): the CPU time of the whole instance (every process
under its master, with the children it reaped), of its anvil process alone
(hato: the worker whose command line has ``hato.master.worker anvil``;
Postfix: ``anvil``), divided by 2 requests per session, of redis-server
(for hato-redis), and of this process (the client). Printed: per engine
min/median/max sessions/second and the medians of the CPU figures, the
ratios hato/Postfix and hato-redis/hato, then a Markdown section for
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
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import (
    CLK_TCK,
    POSTCONF,
    BenchError,
    Engine,
    Hato,
    Postfix,
    banner,
    client_cpu,
    cpu_delta,
    cpu_ticks,
    create_mirror,
    ensure_system_user,
    free_port,
    hato_command,
    ignore_signals,
    log_since,
    log_size,
    preflight,
    raise_on_signals,
    run,
    stat_fields,
    stop_all,
    tail,
    wait_until,
)

PROG = "anvil.py"
REDIS_SERVER = "/usr/bin/redis-server"
HELO = "client.test"
REQUESTS_PER_SESSION = 2        # connect + disconnect
STATS_WAIT = 20.0               # seconds for the first statistics line after the warm-up
BIG = "1000000"

#: main.cf settings all three engines get, on top of their instance's own.
SETTINGS = [
    "mynetworks = 127.0.0.0/8",
    "default_transport = discard",
    "default_process_limit = 1000",
    "smtpd_peername_lookup = no",
    # loopback is in mynetworks but not excepted: every session is counted
    "smtpd_client_event_limit_exceptions =",
    "smtpd_client_connection_count_limit = 100000",
    f"smtpd_client_connection_rate_limit = {BIG}",
    f"smtpd_client_message_rate_limit = {BIG}",
    f"smtpd_client_recipient_rate_limit = {BIG}",
    f"smtpd_client_new_tls_session_rate_limit = {BIG}",
    f"smtpd_client_auth_rate_limit = {BIG}",
    "anvil_rate_time_unit = 60s",
    "anvil_status_update_time = 5s",
]

STATS_RATE = re.compile(r"statistics: max connection rate (\d+)/\d+s for \(([^)]*)\)")
STATS_COUNT = re.compile(r"statistics: max connection count (\d+) for \(([^)]*)\)")
FALLBACK = "using local counters"


# -- redis-server ------------------------------------------------------------------------

def resp(*args: str) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Redis:
    """A private redis-server on 127.0.0.1 (as tests/redis_server.py runs it,
    without its pytest dependency): no persistence, in its own session."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.dir.mkdir(mode=0o700)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
             "--protected-mode", "yes", "--dir", str(self.dir), "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.log)],
            cwd=str(self.dir), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT, start_new_session=True)

        def pong() -> bool:
            if self.proc.poll() is not None:
                return True
            try:
                return self.command("PING").startswith("+PONG")
            except OSError:
                return False
        if not wait_until(pong, 15, 0.05) or self.proc.poll() is not None:
            raise BenchError(f"redis-server did not start on 127.0.0.1:{self.port}\n"
                             f"{tail(self.log)}")

    def command(self, *args: str) -> str:
        """One command on a fresh connection; the raw reply (enough for PING and INFO)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(resp(*args))
            f = s.makefile("rb")
            line = f.readline()
            if line.startswith(b"$"):
                n = int(line[1:])
                return f.read(n + 2).decode(errors="replace") if n >= 0 else ""
            return line.decode(errors="replace")

    def calls(self) -> tuple[int, int]:
        """(scripts run: EVALSHA and EVAL, commands executed: every command,
        those inside the scripts included), from INFO commandstats."""
        stats = dict((name, int(n)) for name, n in re.findall(
            r"(?m)^cmdstat_([^:]+):calls=(\d+)", self.command("INFO", "commandstats")))
        return (stats.get("evalsha", 0) + stats.get("eval", 0),
                sum(n for name, n in stats.items() if name != "info"))

    def cpu_seconds(self) -> float:
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return cpu_ticks(self.proc.pid) / CLK_TCK

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def redis_version() -> str:
    out = run([REDIS_SERVER, "--version"]).stdout.decode()
    m = re.search(r"v=(\S+)", out)
    return m.group(1) if m else "?"


# -- the client --------------------------------------------------------------------------

#: (the reply code expected, what to send after it)
STEPS = ((b"220", f"EHLO {HELO}\r\n".encode()), (b"250", b"QUIT\r\n"), (b"221", b""))


class SessionError(Exception):
    pass


class Churn(asyncio.Protocol):
    """One session: 220, EHLO, 250, QUIT, 221, then the server closes."""

    def __init__(self, done: asyncio.Future, timeout: float):
        self.done = done
        self.timeout = timeout
        self.buf = bytearray()
        self.step = 0
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.error: str | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(self.timeout, self._timed_out)

    def _timed_out(self) -> None:
        self.error = f"no end of session within {self.timeout:.0f} s (after {self.step} replies)"
        self.transport.abort()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not buf.endswith(b"\r\n"):
            return
        i = buf.rfind(b"\r\n", 0, len(buf) - 2)
        last = buf[i + 2 if i >= 0 else 0:]
        if last[3:4] == b"-":       # more lines of a multi-line reply to come
            return
        if self.step >= len(STEPS):
            self.error = f"unexpected data after 221: {bytes(buf[:200])!r}"
            self.transport.abort()
            return
        expect, send = STEPS[self.step]
        if buf[:3] != expect:
            self.error = f"expected {expect.decode()}, got {bytes(buf[:200]).decode(errors='replace')!r}"
            self.transport.abort()
            return
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
            self.done.set_result(None)
        else:
            self.done.set_exception(SessionError(
                self.error or f"closed after {self.step} of {len(STEPS)} replies"
                + (f": {exc}" if exc else "")))


async def churn(port: int, sessions: int, clients: int, timeout: float) -> tuple[float, int, list[str]]:
    """*sessions* sessions over *clients* concurrent sockets; (seconds, done, errors)."""
    loop = asyncio.get_running_loop()
    left = [sessions]
    ok = [0]
    errors: list[str] = []

    async def client() -> None:
        while left[0] > 0 and len(errors) < 10:
            left[0] -= 1
            done = loop.create_future()
            try:
                await loop.create_connection(lambda: Churn(done, timeout), "127.0.0.1", port)
                await done
            except (OSError, SessionError) as err:
                errors.append(f"{type(err).__name__}: {err}")
            else:
                ok[0] += 1

    t0 = time.perf_counter()
    tasks = [asyncio.ensure_future(client()) for _ in range(clients)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), timeout * max(1, sessions / clients))
    except TimeoutError:
        errors.append(f"the round did not finish ({ok[0]} of {sessions} sessions done)")
    return time.perf_counter() - t0, ok[0], errors


def run_churn(port: int, sessions: int, clients: int, timeout: float) -> tuple[float, int, list[str]]:
    return asyncio.run(churn(port, sessions, clients, timeout))


# -- measuring one engine ----------------------------------------------------------------

def anvil_procs(e: Engine) -> dict[tuple[int, str], int]:
    """The engine's anvil process(es): (pid, start time) -> utime+stime ticks."""
    out = {}
    for p in e.pids():
        if e.label(p) == "anvil":
            f = stat_fields(p)
            if len(f) > 19:
                out[(p, f[19])] = int(f[11]) + int(f[12])
    return out


@dataclass
class Round:
    seconds: float
    sessions: int
    cpu: float                  # the whole instance's CPU seconds
    anvil_cpu: float            # its anvil process's
    client_cpu: float           # this process's
    redis_cpu: float = 0.0      # redis-server's (hato-redis only)
    redis_scripts: int = 0      # Lua scripts Redis ran (hato-redis only)
    redis_commands: int = 0     # commands Redis executed, those in the scripts included
    anvil_restarted: bool = False

    @property
    def rate(self) -> float:
        return self.sessions / self.seconds


def one_round(e: Engine, n: int, clients: int, timeout: float, redis: Redis | None) -> Round:
    offset = log_size(e)
    a0, cpu0, c0 = anvil_procs(e), e.cpu_seconds(), client_cpu()
    r0 = (redis.cpu_seconds(), *redis.calls()) if redis else (0.0, 0, 0)
    seconds, done, errors = run_churn(e.port, n, clients, timeout)
    c1 = client_cpu()
    time.sleep(0.5)     # the last disconnects reach anvil (not timed)
    a1, cpu1 = anvil_procs(e), e.cpu_seconds()
    r1 = (redis.cpu_seconds(), *redis.calls()) if redis else (0.0, 0, 0)
    if errors:
        raise BenchError(f"{e.name}: {len(errors)} of {n} sessions failed ({done} done), e.g. "
                         f"{errors[0]}\n--- last lines of {e.maillog}:\n{tail(e.maillog, 20)}")
    if redis and (FALLBACK in log_since(e, offset) or r1[1] - r0[1] < n):
        raise BenchError(f"{e.name}: Redis ran {r1[1] - r0[1]} scripts for {n} sessions"
                         f"{' and anvil fell back to local counters' if FALLBACK in log_since(e, offset) else ''}"
                         f"\n{tail(e.maillog, 20)}")
    anvil = sum(t - a0.get(k, 0) for k, t in a1.items()) / CLK_TCK
    return Round(seconds, n, cpu1 - cpu0, anvil, c1 - c0, r1[0] - r0[0], r1[1] - r0[1],
                 r1[2] - r0[2], anvil_restarted=bool(set(a0) - set(a1)))


def warm_up(e: Engine, sessions: int, clients: int, timeout: float,
            redis: Redis | None) -> list[str]:
    """The engine answers, takes *sessions* sessions, and its anvil counts them
    (a statistics line in the log; for Redis, commands sent there). Returns
    the statistics lines."""
    first = banner(e.port)
    if not first.startswith("220"):
        raise BenchError(f"{e.name} greeted with {first!r}\n{tail(e.maillog)}")
    offset = log_size(e)
    scripts0 = redis.calls()[0] if redis else 0
    _seconds, done, errors = run_churn(e.port, sessions, clients, timeout)
    if errors:
        raise BenchError(f"{e.name}: {len(errors)} of {sessions} warm-up sessions failed "
                         f"({done} done), e.g. {errors[0]}\n--- last lines of {e.maillog}:\n"
                         f"{tail(e.maillog, 20)}")
    if not wait_until(lambda: STATS_RATE.search(log_since(e, offset)), STATS_WAIT, 0.25):
        raise BenchError(f"{e.name}: no `statistics: max connection rate` line in its log "
                         f"within {STATS_WAIT:.0f} s of {sessions} sessions "
                         f"(anvil_status_update_time = 5s): its anvil does not count them, "
                         f"so there is nothing to measure\n--- last lines of {e.maillog}:\n"
                         f"{tail(e.maillog, 20)}")
    if not anvil_procs(e):
        raise BenchError(f"{e.name}: no anvil process under its master")
    if redis:
        log = log_since(e, offset)
        scripts = redis.calls()[0] - scripts0
        if FALLBACK in log or scripts < sessions:
            raise BenchError(f"{e.name}: Redis ran {scripts} scripts for {sessions} "
                             f"sessions{' and anvil fell back to local counters' if FALLBACK in log else ''}: "
                             f"the counters are not in Redis\n{tail(e.maillog, 20)}")
    return [m.group(0) for m in STATS_RATE.finditer(log_since(e, offset))]


def stats_peaks(e: Engine) -> tuple[int, int]:
    """The highest `max connection rate` and `max connection count` in the log."""
    text = log_since(e, 0)
    rate = max((int(m.group(1)) for m in STATS_RATE.finditer(text)), default=0)
    count = max((int(m.group(1)) for m in STATS_COUNT.finditer(text)), default=0)
    return rate, count


# -- setup -------------------------------------------------------------------------------

def set_up(hato: Hato, postfix: Postfix, hato_redis: Hato, redis_url: str) -> None:
    hato.create(hato.port, SETTINGS, only_inet=f"127.0.0.1:{hato.port}")
    hato_redis.create(hato_redis.port, [*SETTINGS, f"hato_anvil_backend = redis:{redis_url}"],
                      only_inet=f"127.0.0.1:{hato_redis.port}")
    create_mirror(hato, postfix)


# -- report ------------------------------------------------------------------------------

HEAD = ["engine", "sessions/s min / med / max", "CPU ms/session (instance)",
        "anvil CPU µs/request", "redis-server CPU ms/session", "client CPU ms/session",
        "max connection count / rate (anvil statistics)"]


def med(rs: list[Round], attr: str, per: float = 1.0) -> float:
    return statistics.median(getattr(r, attr) / (r.sessions * per) for r in rs)


def rows(res: dict[str, list[Round]], peaks: dict[str, tuple[int, int]]) -> list[list[str]]:
    out = []
    for name, rs in res.items():
        rates = [r.rate for r in rs]
        rate, count = peaks.get(name, (0, 0))
        out.append([
            name,
            f"{min(rates):.0f} / {statistics.median(rates):.0f} / {max(rates):.0f}",
            f"{med(rs, 'cpu') * 1000:.2f}",
            f"{med(rs, 'anvil_cpu', REQUESTS_PER_SESSION) * 1e6:.0f}",
            f"{med(rs, 'redis_cpu') * 1000:.3f}" if name == "hato-redis" else "-",
            f"{med(rs, 'client_cpu') * 1000:.2f}",
            f"{count} / {rate}"])
    return out


def ratio_lines(res: dict[str, list[Round]],
                breakdown: dict[str, dict[str, float]]) -> list[str]:
    def rate(name: str) -> float:
        return statistics.median(r.rate for r in res[name])

    def cpu(name: str) -> float:
        return med(res[name], "cpu")

    def anvil(name: str) -> float:
        return med(res[name], "anvil_cpu")

    def div(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b > 0 else "-"
    out = [f"sessions/s, ratio of medians hato/Postfix: {div(rate('hato'), rate('postfix'))}"
           f" (above 1: hato is faster); hato-redis/hato: "
           f"{div(rate('hato-redis'), rate('hato'))} (below 1: Redis costs throughput)",
           f"CPU per session hato/Postfix: {div(cpu('hato'), cpu('postfix'))}; "
           f"hato-redis/hato: {div(cpu('hato-redis'), cpu('hato'))} "
           f"(redis-server not included)",
           f"anvil CPU per request hato/Postfix: {div(anvil('hato'), anvil('postfix'))}; "
           f"hato-redis/hato: {div(anvil('hato-redis'), anvil('hato'))}"]
    rs = res["hato-redis"]
    out.append(f"Redis per hato-redis session (INFO commandstats): "
               f"{statistics.median(r.redis_scripts / r.sessions for r in rs):.2f} scripts "
               f"(EVALSHA), {statistics.median(r.redis_commands / r.sessions for r in rs):.1f} "
               f"commands counting those the scripts run")
    for name, by in breakdown.items():
        total = sum(by.values()) or 1
        parts = ", ".join(f"{label} {100 * v / total:.0f}%" for label, v in
                          sorted(by.items(), key=lambda kv: -kv[1]) if v / total >= 0.005)
        out.append(f"{name}: CPU over its rounds {total:.1f} s: {parts}")
    restarted = [name for name, rs in res.items() if any(r.anvil_restarted for r in rs)]
    if restarted:
        out.append(f"note: the anvil process of {', '.join(restarted)} was replaced during a "
                   f"round; the CPU of the one that exited is not in its anvil figure")
    return out


def report(res, peaks, breakdown, args, facts, command, load, trouble) -> None:
    table = rows(res, peaks)
    ratios = ratio_lines(res, breakdown)
    print(f"\n{args.sessions} sessions per round, {args.rounds} rounds, {args.clients} client "
          f"sockets; load average {' -> '.join(load)}")
    print(common.text_table(HEAD, table))
    print()
    print("\n".join(ratios))
    print(f"""
--- Markdown for bench/RESULTS.md ---
## anvil (connection churn, client limits on) — `{command}`

* date: {datetime.date.today().isoformat()}
* machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']}
* software: Postfix {facts['postfix']}; {facts['hato']}; redis-server {redis_version()};
  client: one asyncio loop in the bench process (Python {sys.version.split()[0]}),
  {args.clients} sockets
* load: {args.sessions} sessions per round (connect, 220, EHLO, QUIT, 221, server closes),
  {args.rounds} rounds per engine, interleaved; {args.warmup} warm-up sessions each
* all three: `hato init` main.cf plus {', '.join(f'`{s}`' for s in SETTINGS)}
  (Postfix: the same main.cf); hato-redis also
  `hato_anvil_backend = redis:redis://127.0.0.1:PORT/0` (a private redis-server)
* /proc/loadavg at the start and the end: {" and ".join(load)}

sessions/s is from the first connect to the last close; CPU per session is
the whole instance's (every process under its master, with the children it
reaped); anvil's is its process alone, per request (2 per session: connect and
disconnect); the last column is the highest peak that anvil's own statistics
lines logged (evidence that it counted).

{common.md_table(HEAD, table)}

{chr(10).join("* " + line for line in ratios)}
""" + (("\nLog lines that need a look:\n\n" + "\n".join(f"    {t}" for t in trouble) + "\n")
       if trouble else ""))


# -- main --------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=5000, help="sessions per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=200, help="concurrent client sockets")
    ap.add_argument("--warmup", type=int, default=400, help="warm-up sessions per engine")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 1 round of 500 sessions, 200 warm-up sessions")
    ap.add_argument("--hato", help="the hato command (default: $HATO_VENV/bin/hato, "
                    "HATO_VENV=/opt/hato/venv by default)")
    ap.add_argument("--timeout", type=float, default=60,
                    help="seconds allowed per session (connect to close)")
    args = ap.parse_args()
    if args.quick:
        args.sessions, args.rounds, args.warmup = 500, 1, 200
    if args.sessions < 1 or args.rounds < 1 or not 1 <= args.clients <= 900 \
            or args.warmup < 10:
        ap.error("--sessions and --rounds must be at least 1, --clients 1 to 900 "
                 "(default_process_limit is 1000), --warmup at least 10")
    command = preflight(PROG, "bench/anvil.py",
                        "it starts private hato and Postfix instances that drop to "
                        "their mail owners",
                        {REDIS_SERVER: "redis-server", POSTCONF: "postfix"})
    if command is None:
        return 2

    raise_on_signals()
    work = Path(tempfile.mkdtemp(prefix="hato-bench-anvil-", dir="/tmp"))
    os.chmod(work, 0o755)
    engines: list[Engine] = []
    redis = Redis(work / "redis")
    try:
        ensure_system_user()
        redis.start()
        venv = os.environ.get("HATO_VENV", "/opt/hato/venv")
        cmd = hato_command(args.hato, venv)
        hato = Hato(work / "hato", cmd)
        hato_redis = Hato(work / "hato-redis", cmd)
        hato_redis.name = "hato-redis"
        postfix = Postfix(work / "postfix")
        for e in (hato, postfix, hato_redis):
            e.port = free_port()
        engines = [hato, postfix, hato_redis]
        print(f"setting up hato, Postfix and hato-redis in {work}; redis-server on "
              f"127.0.0.1:{redis.port}", flush=True)
        set_up(hato, postfix, hato_redis, redis.url)
        for e in engines:
            print(f"starting {e.name}, smtpd on 127.0.0.1:{e.port}", flush=True)
            e.start()
            lines = warm_up(e, args.warmup, args.clients, args.timeout,
                            redis if e is hato_redis else None)
            print(f"{e.name}: {args.warmup} warm-up sessions; anvil counts: {lines[-1]}",
                  flush=True)
        facts = common.machine_facts(hato)
        load = [common.loadavg()]
        res: dict[str, list[Round]] = {e.name: [] for e in engines}
        breakdown: dict[str, dict[str, float]] = {e.name: {} for e in engines}
        for r in range(args.rounds):
            k = r % len(engines)
            for e in engines[k:] + engines[:k]:
                before = e.cpu_by_process()
                rd = one_round(e, args.sessions, args.clients, args.timeout,
                               redis if e is hato_redis else None)
                for label, v in cpu_delta(before, e.cpu_by_process()).items():
                    breakdown[e.name][label] = breakdown[e.name].get(label, 0) + v
                res[e.name].append(rd)
                extra = (f", redis-server {rd.redis_cpu / rd.sessions * 1000:.3f} ms/session"
                         if e is hato_redis else "")
                print(f"round {r + 1}: {e.name:<10} {rd.seconds:6.2f} s {rd.rate:7.0f} "
                      f"sessions/s  {rd.cpu / rd.sessions * 1000:5.2f} ms CPU/session, anvil "
                      f"{rd.anvil_cpu / (rd.sessions * REQUESTS_PER_SESSION) * 1e6:4.0f} "
                      f"µs/request, client {rd.client_cpu / rd.sessions * 1000:.2f} "
                      f"ms/session{extra}", flush=True)
        load.append(common.loadavg())
        time.sleep(6)   # one more statistics report covering the last rounds
        peaks = {e.name: stats_peaks(e) for e in engines}
        report(res, peaks, breakdown, args, facts, command, load, common.troubles(engines))
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
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""The floor under hato's accept numbers: how fast a Python process can take
mail at all on this machine, next to Debian's Postfix, in the same run.

    python3 bench/floor.py [--messages 2000] [--rounds 3] [--sessions 10,50]
                           [--size 1024] [--python /opt/hato/venv/bin/python]

The "floor" is a minimal SMTP server on the event loop hato uses (uvloop
when it is installed in --python, else asyncio): a Protocol per connection,
canned replies (EHLO, MAIL, RCPT, DATA, QUIT), no checks, no parsing past
the command's first four bytes, no logging. Each message is made durable
as Postfix's cleanup makes it: the body written to a new file, fsync, the
file renamed into a second directory, then 250; and then removed (as a
discard transport would, without a queue manager). It runs twice over:
``floor-threads`` does the file work on a pool of eight threads, so that
the fsyncs of concurrent sessions overlap as those of Postfix's cleanup
processes do (and pays for handing the work over); ``floor-inline`` does
it on the event loop, one fsync at a time (the least CPU, but the disk's
latency bounds the rate). It is not a mail server: it is
what any mail server in CPython pays before it does any of the work a mail
server does, and so the lowest CPU per message hato's smtpd could reach in
pure Python on this machine with this kernel.

Postfix gets the accept scenario's instance (bench/smtp_accept.py: relay
for 127.0.0.0/8, default_transport = discard). Rounds alternate which goes
first; each sends --messages messages with Postfix's smtp-source (a new
connection per message). Printed per configuration: messages per second
(min / median / max) and CPU milliseconds per message of the server (all
of Postfix's processes, drain of the queue included; a floor's one
process), and of smtp-source itself, which shares the two cores. Rounds
go through the three engines in turn, reversed every other round.

Runs as root (Postfix's instance). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import (
    SMTP_SOURCE,
    BenchError,
    Postfix,
    banner,
    drain,
    free_port,
    log_size,
    preflight,
    smtp_source,
    stop_all,
)

PROG = "floor.py"
RECIPIENT = "bench@discard.test"
POSTFIX_MAIN_CF = """\
mynetworks = 127.0.0.0/8
default_transport = discard
default_process_limit = 1000
smtpd_peername_lookup = no
"""

#: The floor server, run by --python with the spool directory and the way
#: it commits ("threads" or "inline") as arguments and the port on stdin's
#: first line; prints "ready" when it listens.
SERVER = textwrap.dedent('''\
    import asyncio, itertools, os, sys
    from concurrent.futures import ThreadPoolExecutor
    try:
        import uvloop
    except ImportError:
        uvloop = None
    SPOOL = sys.argv[1]
    TMP, DONE = os.path.join(SPOOL, "tmp"), os.path.join(SPOOL, "done")
    FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    NAMES = itertools.count()
    POOL = ThreadPoolExecutor(8) if sys.argv[2] == "threads" else None
    EHLO = b"250-floor\\r\\n250-PIPELINING\\r\\n250-8BITMIME\\r\\n250 SIZE 10240000\\r\\n"
    REPLIES = {b"MAIL": b"250 2.1.0 Ok\\r\\n", b"RCPT": b"250 2.1.5 Ok\\r\\n",
               b"RSET": b"250 2.0.0 Ok\\r\\n", b"NOOP": b"250 2.0.0 Ok\\r\\n",
               b"HELO": b"250 floor\\r\\n", b"EHLO": EHLO}

    def commit(body):
        name = f"{os.getpid()}.{next(NAMES)}"
        path = os.path.join(TMP, name)
        fd = os.open(path, FLAGS, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        final = os.path.join(DONE, name)
        os.rename(path, final)
        return final

    class Session(asyncio.Protocol):
        def connection_made(self, transport):
            self.t = transport
            self.buf = b""
            self.body = None
            self.committing = False  # input waits until the 250 is out
            transport.write(b"220 floor ESMTP\\r\\n")

        def data_received(self, data):
            buf = self.buf + data
            out = []
            while not self.committing:
                nl = buf.find(b"\\n")
                if nl < 0:
                    break
                line, buf = buf[:nl + 1], buf[nl + 1:]
                if self.body is not None:
                    if line == b".\\r\\n":
                        body, self.body = b"".join(self.body), None
                        if out:
                            self.t.write(b"".join(out))
                            out = []
                        # the fsyncs of concurrent sessions overlap, as
                        # those of Postfix's cleanup processes do
                        self.committing = True
                        if POOL is None:  # on the loop: one fsync at a time
                            fut = asyncio.get_running_loop().create_future()
                            fut.set_result(commit(body))
                            self.committed(fut)
                            continue
                        fut = asyncio.get_running_loop().run_in_executor(POOL, commit, body)
                        fut.add_done_callback(self.committed)
                    else:
                        self.body.append(line)
                    continue
                verb = line[:4].upper()
                if verb == b"DATA":
                    self.body = []
                    out.append(b"354 End data with <CR><LF>.<CR><LF>\\r\\n")
                elif verb == b"QUIT":
                    out.append(b"221 2.0.0 Bye\\r\\n")
                    self.t.write(b"".join(out))
                    self.t.close()
                    return
                else:
                    out.append(REPLIES.get(verb, b"502 5.5.2 Error\\r\\n"))
            self.buf = buf
            if out:
                self.t.write(b"".join(out))

        def committed(self, fut):
            os.unlink(fut.result())  # "discarded"
            self.committing = False
            if not self.t.is_closing():
                self.t.write(b"250 2.0.0 Ok: queued\\r\\n")
                if POOL is not None:
                    self.data_received(b"")

    async def main(port):
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Session, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    if uvloop is not None:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(main(int(sys.stdin.readline())))
''')


class Floor:
    """The floor server as a child process (the bench's Engine calls it
    needs: a name, a port, CPU seconds)."""

    def __init__(self, root: Path, python: str, commit: str):
        self.name = f"floor-{commit}"
        self.commit = commit
        self.root = root
        self.python = python
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        for d in ("tmp", "done"):
            (self.root / d).mkdir(parents=True)
        self.proc = subprocess.Popen([self.python, "-c", SERVER, str(self.root),
                                      self.commit],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.proc.stdin.write(f"{self.port}\n".encode())
        self.proc.stdin.close()
        if self.proc.stdout.readline().strip() != b"ready":
            raise BenchError(f"the floor server did not start (status {self.proc.wait()})")

    def cpu_seconds(self) -> float:
        return common.cpu_ticks(self.proc.pid) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def client_seconds() -> float:
    """CPU seconds of the children this process has reaped (smtp-source)."""
    r = os.times()
    return r.children_user + r.children_system


def one_round(e, messages: int, sessions: int, size: int, timeout: float):
    offset = log_size(e) if isinstance(e, Postfix) else 0
    cpu0, client0 = e.cpu_seconds(), client_seconds()
    t0 = time.monotonic()
    elapsed = smtp_source(e, messages, sessions, size, recipient=RECIPIENT,
                          timeout=timeout) - t0
    if isinstance(e, Postfix):
        drain(e, offset, messages, timeout)
    return messages / elapsed, (e.cpu_seconds() - cpu0) / messages * 1000, \
        (client_seconds() - client0) / messages * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", default="10,50")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--python", default=os.path.join(os.environ.get("HATO_VENV",
                                                                     "/opt/hato/venv"),
                                                     "bin", "python"))
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if preflight(PROG, "bench/floor.py", "Postfix's private instance needs root",
                 {SMTP_SOURCE: "postfix"}) is None:
        return 2
    work = Path(tempfile.mkdtemp(prefix="hato-floor-"))
    os.chmod(work, 0o755)
    postfix = Postfix(work / "postfix")
    postfix.port = free_port()
    floors = [Floor(work / f"floor-{c}", args.python, c) for c in ("threads", "inline")]
    engines = [*floors, postfix]
    try:
        postfix.create(POSTFIX_MAIN_CF, smtpd_inet=f"127.0.0.1:{postfix.port}")
        postfix.start()
        for floor in floors:
            floor.start()
        for e in engines:
            if not banner(e.port).startswith("220"):
                raise BenchError(f"{e.name} did not greet")
            one_round(e, 50, 5, args.size, args.timeout)  # warm-up
        print(f"{'sessions':>8} {'engine':>13} {'msg/s min/med/max':>22} "
              f"{'server CPU ms/msg':>18} {'smtp-source CPU ms/msg':>23}")
        for sessions in [int(x) for x in args.sessions.split(",")]:
            got: dict[str, list[tuple[float, float, float]]] = {e.name: [] for e in engines}
            for i in range(args.rounds):
                for e in (engines if i % 2 == 0 else engines[::-1]):
                    got[e.name].append(one_round(e, args.messages, sessions, args.size,
                                                 args.timeout))
            for e in engines:
                rs = got[e.name]
                rate = sorted(r[0] for r in rs)
                print(f"{sessions:>8} {e.name:>13} "
                      f"{rate[0]:6.0f} /{statistics.median(rate):6.0f} /{rate[-1]:6.0f} "
                      f"{statistics.median(r[1] for r in rs):18.2f} "
                      f"{statistics.median(r[2] for r in rs):23.2f}")
        print(f"load average at the end: {common.loadavg()}")
        return 0
    except BenchError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    finally:
        for floor in floors:
            floor.stop()
        stop_all([postfix], PROG)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    sys.exit(main())

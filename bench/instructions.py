"""Instructions per message of hato's smtpd: a count that does not move with
the machine's load, for telling whether a change to the hot path made it
cheaper.

    python3 bench/instructions.py [--messages 100,400] [--sessions 10]
                                  [--size 1024] [--tool callgrind|calls|both]
                                  [--top 25] [--python /opt/hato/venv/bin/python]

Timings on a shared two-core machine move by ten per cent from one run to
the next, more than most single changes to the SMTP path save. This script
counts instead. It makes a private instance (``hato init -p PORT``, plus
``mynetworks = 127.0.0.0/8``, ``default_transport = discard`` and
``smtpd_peername_lookup = no``, as the accept scenario has) and runs its
smtpd in one process, built as master's worker builds it (the same
``SessionServer`` from main.cf and master.cf, the same garbage collector
settings, uvloop when --python has it), under ``valgrind --tool=callgrind``
(``callgrind``) or under cProfile (``calls``). Postfix's ``smtp-source``
sends the messages (a new connection per message, ``--sessions`` at a
time) from its own process, which is not counted.

Each tool runs twice, with the two numbers of ``--messages``; the
difference divided by the difference of messages is the cost of one
message, start-up and imports taken out:

* callgrind: user-space instructions (``Ir``) per message: everything the
  process executes, the interpreter, uvloop, OpenSSL's and libc's code
  included, the kernel not. Repeated runs agree to a fraction of a per
  cent.
* calls: Python function calls per message (cProfile's count, builtins
  included), and with ``--top`` the functions that make the most of them,
  per message.

What it leaves out: the kernel's work (a syscall counts only its user-space
side), qmgr (nothing wakes it: the messages stay in incoming/, which is
emptied between runs), and the other threads' time is counted by callgrind
(it runs them one at a time) but not by cProfile, which sees the event
loop's thread only. The queue files are still created, written and fsynced,
and the log written, as in the real worker; but the harness runs as root,
so each queue file also gets the fchown() that a worker running as
mail_owner does not make.

Runs as root (the instance's files belong to its mail owner). Needs
valgrind (Debian's ``valgrind``) for callgrind and Postfix's smtp-source
(``postfix``). Nothing is asserted: it prints the counts and what it ran.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import SMTP_SOURCE, BenchError, Hato, free_port, preflight

PROG = "instructions.py"
VALGRIND = "/usr/bin/valgrind"
SETTINGS = ["mynetworks = 127.0.0.0/8", "default_transport = discard",
            "smtpd_peername_lookup = no", "default_process_limit = 1000"]

#: The smtpd under measurement: argv is the instance's directory, its port,
#: the number of messages, of sessions, the size, smtp-source's path and
#: where to write a cProfile dump ("-": none). Prints "acked N" at the end.
HARNESS = textwrap.dedent('''\
    import asyncio, os, socket, subprocess, sys
    cfgdir, port, messages, sessions, size, source, dump = sys.argv[1:8]
    from hato.config.settings import Config
    from hato.io.dns import Resolver
    from hato.io.hostinfo import host_facts
    from hato.io.maillog import MailLog
    from hato.io.smtpd_server import SessionServer
    from hato.master.layout import fix_layout
    from hato.master.worker import tune_gc
    name = f"127.0.0.1:{port}"
    config = Config.load(cfgdir, host_facts(), explicit_dir=True, process_name=name)
    svc = config.master.find(name, "inet")[0]
    settings = config.settings(svc)
    config.process_name = svc.command
    fix_layout(settings)  # the queue's directories, as master makes them
    log = MailLog.from_settings(settings, svc.command)
    server = SessionServer(settings, log, service=svc,
                           dns=Resolver.from_settings(settings), wake_qmgr=lambda: None)
    server.session_limit = 1000
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(port)))
    listener.listen(1024)
    listener.setblocking(False)
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    tune_gc()

    async def main():
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(server.accept_loop(listener, stop))
        client = await asyncio.create_subprocess_exec(
            source, "-4", "-s", sessions, "-m", messages, "-l", size, "-M", "client.test",
            "-f", "bench@client.test", "-t", "bench@discard.test", f"127.0.0.1:{port}")
        rc = await client.wait()
        while server.sessions:
            await asyncio.sleep(0.05)
        stop.set()
        task.cancel()
        return rc

    profile = None
    if dump != "-":
        import cProfile
        profile = cProfile.Profile()
        profile.enable()
    rc = asyncio.run(main())
    if profile is not None:
        profile.disable()
        profile.dump_stats(dump)
    incoming = os.path.join(settings.str("queue_directory"), "incoming")
    acked = sum(len(files) for _, _, files in os.walk(incoming))
    print(f"smtp-source {rc} acked {acked}", flush=True)
''')


def harness_run(python: str, hato: Hato, port: int, messages: int, sessions: int,
                size: int, *, valgrind_out: Path | None, dump: Path | None,
                timeout: float) -> None:
    """One run of the harness; checks that every message was queued."""
    incoming = hato.root / "queue" / "incoming"
    if incoming.exists():
        for entry in incoming.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    cmd = [python, "-c", HARNESS, str(hato.root), str(port), str(messages), str(sessions),
           str(size), SMTP_SOURCE, str(dump) if dump else "-"]
    if valgrind_out is not None:
        cmd = [VALGRIND, "--tool=callgrind", f"--callgrind-out-file={valgrind_out}",
               "--dump-line=no", *cmd]
    env = dict(os.environ, **hato.env)
    proc = subprocess.run(cmd, capture_output=True, env=env, timeout=timeout)
    out = proc.stdout.decode(errors="replace")
    found = re.search(r"smtp-source (\d+) acked (\d+)", out)
    if proc.returncode or not found or found.group(1) != "0" \
            or int(found.group(2)) != messages:
        raise BenchError(f"the smtpd run for {messages} messages failed "
                         f"(exit {proc.returncode}): {out.strip()[-500:]}\n"
                         f"{proc.stderr.decode(errors='replace').strip()[-1500:]}\n"
                         f"mail log:\n{common.tail(hato.maillog)}")


def callgrind_total(path: Path) -> int:
    """The ``totals:`` (or ``summary:``) line of a callgrind output file."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise BenchError(f"{path}: no totals line")


def profile_counts(path: Path) -> dict[str, int]:
    """Calls per function (``file:line(name)``) of a cProfile dump."""
    import pstats

    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    out = {}
    for (filename, line, name), (_cc, calls, *_rest) in stats.items():
        short = filename.split("/site-packages/")[-1].split("/src/")[-1]
        out[f"{short}:{line}({name})"] = calls
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", default="100,400",
                    help="the two message counts whose difference is measured")
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--tool", choices=("callgrind", "calls", "both"), default="both")
    ap.add_argument("--top", type=int, default=25,
                    help="with calls: list this many functions by calls per message")
    ap.add_argument("--python", default=os.path.join(
        os.environ.get("HATO_VENV", "/opt/hato/venv"), "bin", "python"))
    ap.add_argument("--hato", help="the hato command (default: beside --python)")
    ap.add_argument("--timeout", type=float, default=1800, help="per run, seconds")
    ap.add_argument("--keep", metavar="DIR",
                    help="copy the callgrind and cProfile output files there "
                         "(for callgrind_annotate, pstats)")
    args = ap.parse_args(argv)
    counts = sorted(common.int_list(args.messages))
    if len(counts) != 2 or counts[0] == counts[1] or counts[0] < 1:
        ap.error("--messages takes two different positive counts, e.g. 100,400")
    tools = {SMTP_SOURCE: "postfix"}
    if args.tool != "calls":
        tools[VALGRIND] = "valgrind"
    command = preflight(PROG, "bench/instructions.py", "the instance's files belong to "
                        "its mail owner", tools)
    if command is None:
        return 1
    common.ensure_system_user()
    work = Path(tempfile.mkdtemp(prefix="hato-bench-instr-"))
    os.chmod(work, 0o755)
    try:
        hato = Hato(work / "hato", common.hato_command(
            args.hato, str(Path(args.python).parent.parent)))
        port = free_port()
        hato.create(port, SETTINGS, only_inet=f"127.0.0.1:{port}")
        # one short run first: byte-code caches written, tables built
        harness_run(args.python, hato, port, 10, 2, args.size, valgrind_out=None,
                    dump=None, timeout=args.timeout)
        print(f"# {command}")
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}; hato's smtpd in one process, "
              f"{args.sessions} sessions, {args.size} bytes, a new connection per message;"
              f" runs of {counts[0]} and {counts[1]} messages")
        delta = counts[1] - counts[0]
        if args.tool in ("callgrind", "both"):
            totals = []
            for n in counts:
                out = work / f"callgrind.{n}"
                harness_run(args.python, hato, port, n, args.sessions, args.size,
                            valgrind_out=out, dump=None, timeout=args.timeout)
                totals.append(callgrind_total(out))
                print(f"callgrind: {n} messages: {totals[-1]:,} instructions")
            print(f"callgrind: {(totals[1] - totals[0]) / delta:,.0f} instructions "
                  f"per message")
        if args.tool in ("calls", "both"):
            runs = []
            for n in counts:
                dump = work / f"profile.{n}"
                harness_run(args.python, hato, port, n, args.sessions, args.size,
                            valgrind_out=None, dump=dump, timeout=args.timeout)
                runs.append(profile_counts(dump))
            total = [sum(r.values()) for r in runs]
            print(f"calls: {(total[1] - total[0]) / delta:,.1f} Python function calls "
                  f"per message (event loop thread)")
            if args.top:
                per = {k: (runs[1].get(k, 0) - runs[0].get(k, 0)) / delta
                       for k in runs[1]}
                for key, value in sorted(per.items(), key=lambda kv: -kv[1])[:args.top]:
                    print(f"  {value:8.1f}  {key}")
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            for path in work.glob("callgrind.*"):
                shutil.copy(path, args.keep)
            for path in work.glob("profile.*"):
                shutil.copy(path, args.keep)
        return 0
    except BenchError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""hato against Debian's Postfix on the same machine, in the same run: the
benchmark suite in one command.

    python3 bench/run.py [--quick] [--scenario NAME ...] [--rounds N]
                         [--messages N] [--markdown FILE] [--hato CMD]

Runs as root (it starts private instances that drop to their mail owners,
and adds a system user for the submission scenario). For each scenario a
private hato (``hato init``, from $HATO_VENV, default /opt/hato/venv) and a
private Debian Postfix (``postfix -c DIR``) with the same main.cf are
started on loopback ports under one temporary directory in /tmp, measured
in rounds interleaved A B, B A, …, stopped and removed. Scenarios, in this
order (--scenario picks some):

  accept      durable accept with discard delivery, smtp-source, 1/10/50/200
              sessions × 1 KiB and 64 KiB
  maildir     end to end into a Maildir (virtual), the same matrix, until the
              last file is in new/
  relay       end to end to smtp-sink (relayhost), 10/50 sessions × 1/64 KiB
  submission  STARTTLS + AUTH PLAIN (saslauthd), one message per session
  postscreen  connections through postscreen, every one a cache hit
  latency     end-of-DATA → 250, median and p99, at 50 sessions
  idle        concurrent EHLO'd sessions held, and the memory they take

Printed per configuration: min/median/max rate per engine, the per-round
ratio hato/Postfix (min/median/max; above 1: hato is faster), CPU per
message or session of each instance (every process, with the children it
reaped, from /proc), peak and steady RSS, the load average during the run;
then a Markdown section for bench/RESULTS.md (also written to --markdown
FILE). A scenario that fails is reported and the others still run; the exit
status is then 1. Everything is stopped and removed at the end, also on
Ctrl-C or SIGTERM. Not a test: no timing is ever asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scenarios
import sessions
from common import (
    SMTP_SOURCE,
    BenchError,
    Sampler,
    ensure_system_user,
    guarded,
    hato_command,
    int_list,
    loadavg,
    md_table,
    preflight,
    text_table,
)
from relay import SMTP_SINK
from submission import SAUTHD

PROG = "run.py"
SCENARIOS = {
    "accept": scenarios.accept,
    "maildir": scenarios.maildir,
    "relay": scenarios.relay_,
    "submission": scenarios.submission_,
    "postscreen": scenarios.postscreen_,
    "latency": sessions.latency,
    "idle": sessions.idle,
}

#: (full, --quick) sizes of each scenario; --rounds and --messages override
SIZES = {
    "rounds": (5, 2),
    "messages": (500, 100),             # per round, accept/maildir/relay (≥ 2 per session)
    "relay_warmup": (20, 5),
    "sub_sessions": (300, 60),
    "ps_clients": (100, 50),
    "ps_sessions": (5000, 500),
    "ps_warmup": (400, 100),
    "latency_messages": (2000, 500),
    "idle_hato": (20000, 2000),
    "idle_postfix": (1000, 200),
}


def options() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run: 2 rounds, fewer messages and sessions (minutes)")
    ap.add_argument("--scenario", action="append", choices=list(SCENARIOS), metavar="NAME",
                    help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    ap.add_argument("--rounds", type=int, help="rounds per configuration (5; --quick 2)")
    ap.add_argument("--messages", type=int,
                    help="messages per round for accept, maildir, relay (500; --quick 100)")
    ap.add_argument("--sessions", type=int_list, default=[1, 10, 50, 200],
                    help="smtp-source sessions for accept and maildir")
    ap.add_argument("--sizes", type=int_list, default=[1024, 65536],
                    help="message bytes for accept, maildir, relay (smtp-source -l)")
    ap.add_argument("--idle-hato", type=int, help="idle sessions to try on hato (20000)")
    ap.add_argument("--idle-postfix", type=int,
                    help="idle sessions to try on Postfix, also its process limit (1000)")
    ap.add_argument("--markdown", type=Path, metavar="FILE",
                    help="also write the Markdown section for RESULTS.md to FILE")
    ap.add_argument("--hato", help="the hato command (default: $HATO_VENV/bin/hato, "
                    "HATO_VENV=/opt/hato/venv by default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per round")
    args = ap.parse_args()
    for key, (full, quick) in SIZES.items():
        if getattr(args, key, None) is None:
            setattr(args, key, quick if args.quick else full)
    if args.rounds < 1 or args.messages < 1 or args.idle_hato < 1 or args.idle_postfix < 1:
        ap.error("--rounds, --messages, --idle-hato and --idle-postfix must be at least 1")
    args.relay_sessions = [10, 50]
    args.sub_concurrency = [10, 50]
    args.latency_sessions = 50
    args.reuse = False
    args.nofile = 2 * (args.idle_hato + args.idle_postfix) + 4096
    args.scenario = args.scenario or list(SCENARIOS)
    return args


# -- report ---------------------------------------------------------------------------------

def spread(xs: list[float], fmt: str) -> str:
    return " / ".join(fmt.format(v) for v in (min(xs), statistics.median(xs), max(xs)))


RATE_HEAD = ["scenario", "size", "sessions", "hato /s min / med / max",
             "Postfix /s min / med / max", "ratio hato/Postfix per round min / med / max",
             "hato CPU ms per msg/session", "Postfix CPU ms per msg/session",
             "CPU hato/Postfix"]
SCENARIO_HEAD = ["scenario", "hato RSS peak / steady MB", "Postfix RSS peak / steady MB",
                 "1-min load min / med / max", "wall time s"]


def rate_rows(outcomes: list[scenarios.Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        for c in o.cases:
            h, p = c.rounds["hato"], c.rounds["postfix"]
            ratios = [a.rate / b.rate for a, b in zip(h, p)]
            hc = statistics.median(r.cpu / r.units for r in h) * 1000
            pc = statistics.median(r.cpu / r.units for r in p) * 1000
            rows.append([o.name, c.size, c.sessions,
                         spread([r.rate for r in h], "{:.0f}"),
                         spread([r.rate for r in p], "{:.0f}"),
                         spread(ratios, "{:.2f}"), f"{hc:.2f}", f"{pc:.2f}",
                         f"{hc / pc:.2f}" if pc > 0 else "-"])
    return rows


def scenario_rows(outcomes: list[scenarios.Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        mem = [f"{o.memory[n][0] / 1024:.0f} / {o.memory[n][1] / 1024:.0f}"
               if n in o.memory else "-" for n in ("hato", "postfix")]
        rows.append([o.name, *mem, spread(o.load, "{:.1f}") if o.load else "-",
                     f"{o.seconds:.0f}"])
    return rows


def markdown(outcomes, failed, args, facts, command, load, trouble, started) -> str:
    today = datetime.date.today().isoformat()
    clients = "\n".join(f"  * {o.name}: {o.what}; client: "
                        + (f"`{o.client}`" if o.client.startswith("smtp-source") else o.client)
                        for o in outcomes)
    tables = "".join(f"\n{title}:\n\n{md_table(head, rows)}\n"
                     for o in outcomes for title, head, rows in o.tables)
    notes = "\n".join(f"* {o.name}: {n}" for o in outcomes for n in o.notes)
    fails = "\n".join(f"* **{name} failed**: {why.splitlines()[0]}" for name, why in failed)
    look = ("\nLog lines that need a look:\n\n" + "\n".join(f"    {t}" for t in trouble[:40])
            + "\n") if trouble else ""
    return f"""## bench/run.py — `{command}` (as root)

* date: {today}, {started} to {time.strftime('%H:%M')} ({', '.join(o.name for o in outcomes)})
* machine: `nproc` {facts['nproc']} ({facts['cpu']}), {facts['memory']} RAM,
  Linux {facts['kernel']}, /tmp on {facts['/tmp']}
* software: Postfix {facts['postfix']} (Debian); {facts['hato']}
* load average (/proc/loadavg) at the start: {load[0]}; at the end: {load[1]}; the
  1-minute load sampled every second during the run, min / median / max:
  {load[2]}
* {args.rounds} rounds per configuration, interleaved (hato first in odd rounds, Postfix
  in even ones); accept/maildir/relay: {args.messages} messages per round (at least 2 per
  session), a new connection per message
* both instances: `hato init -p PORT` main.cf plus `mynetworks = 127.0.0.0/8`,
  `default_process_limit = 1000`, `smtpd_peername_lookup = no` (accept, latency,
  idle: `default_transport = discard`); Postfix gets the same main.cf with its
  own paths and owner, and the stock master.cf.proto without chroot
* scenarios:
{clients}

Rates are messages (or sessions) per second; the ratio is taken per round
(hato's round against Postfix's round of the same number), above 1: hato is
faster. CPU is the whole instance's (every process under its master, with
the children it reaped) per message or session, drain of the queue included.
RSS is the sum of VmRSS over the instance's processes, sampled every 0.25 s
while its rounds ran: the peak, and the median (steady).

{md_table(RATE_HEAD, rate_rows([o for o in outcomes if o.cases]))}

{md_table(SCENARIO_HEAD, scenario_rows(outcomes))}
{tables}
{notes}
{fails}
{look}"""


def print_outcome(o: scenarios.Outcome) -> None:
    if o.cases:
        print(text_table(RATE_HEAD, rate_rows([o])))
    for title, head, rows in o.tables:
        print(f"{title}:\n{text_table(head, rows)}")
    print(text_table(SCENARIO_HEAD, scenario_rows([o])))
    for n in o.notes:
        print(n)
    print(flush=True)


# -- main -----------------------------------------------------------------------------------

def main() -> int:
    args = options()
    tools = {SMTP_SOURCE: "postfix", SMTP_SINK: "postfix", SAUTHD: "sasl2-bin"}
    command = preflight(PROG, "bench/run.py", "it starts private hato and Postfix instances "
                        "that drop to their mail owners, and adds a system user",
                        tools, nofile=args.nofile)
    if command is None:
        return 2
    work = Path(tempfile.mkdtemp(prefix="hato-bench-run-", dir="/tmp"))
    os.chmod(work, 0o755)
    sampler = Sampler()
    venv = os.environ.get("HATO_VENV", "/opt/hato/venv")
    ctx = scenarios.Context(args, work, sampler, hato_command(args.hato, venv))

    def cleanup() -> None:
        sampler.halt.set()
        shutil.rmtree(work, ignore_errors=True)
    return guarded(PROG, lambda: run_all(ctx, command), cleanup)


def run_one(ctx: scenarios.Context, name: str) -> scenarios.Outcome | str:
    """One scenario, its instances removed at the end; its Outcome, or why it failed."""
    t0, first = time.monotonic(), len(ctx.sampler.loads)
    try:
        with contextlib.ExitStack() as stack:
            o = SCENARIOS[name](ctx, stack)
    except (BenchError, OSError, subprocess.SubprocessError) as err:
        print(f"{PROG}: {name}: {err}", file=sys.stderr, flush=True)
        return str(err)
    except Exception as err:  # noqa: BLE001 -- a bench bug: say where, run the others
        traceback.print_exc()
        return f"{type(err).__name__}: {err}"
    o.memory, o.seconds = ctx.memory, time.monotonic() - t0
    o.load = ctx.sampler.loads[first:]
    return o


def run_all(ctx: scenarios.Context, command: str) -> int:
    args, sampler = ctx.args, ctx.sampler
    outcomes: list[scenarios.Outcome] = []
    failed: list[tuple[str, str]] = []
    started, t_run = time.strftime("%H:%M"), time.monotonic()
    load = [loadavg()]
    ensure_system_user()
    sampler.start()
    for name in args.scenario:
        print(f"== {name}", flush=True)
        o = run_one(ctx, name)
        if isinstance(o, str):
            failed.append((name, o))
        else:
            outcomes.append(o)
            print_outcome(o)
    load += [loadavg(), spread(sampler.loads, "{:.2f}") if sampler.loads else "-"]
    print(f"all scenarios: {time.monotonic() - t_run:.0f} s; load average {load[0]} -> "
          f"{load[1]}")
    if ctx.facts is None:
        print(f"{PROG}: no scenario got as far as starting its instances", file=sys.stderr)
        return 1
    text = markdown(outcomes, failed, args, ctx.facts, command, load, ctx.trouble, started)
    print("\n--- Markdown for bench/RESULTS.md ---\n" + text)
    if args.markdown:
        args.markdown.write_text(text)
        print(f"written to {args.markdown}")
    for line in ctx.trouble[:40]:
        print(f"{PROG}: {line}", file=sys.stderr)
    return 1 if failed else 0

if __name__ == "__main__":
    sys.exit(main())

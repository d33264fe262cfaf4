"""The soak: mixed traffic and periodic kills against a live hato for a
long time (an hour by default), then a summary of the messages accepted,
delivered, duplicated and lost (lost must be 0) and the instance's peak RSS.
Not part of the test suite; run as root from the checkout:

    tools/soak                      # one hour
    tools/soak --minutes 5          # a short one

It exits 1 when a message was lost or damaged, or hato did not come back.
The load and the kills are those of tests/reliability/crashload.py, with a
kill every 5 to 20 seconds (--kill-every)."""

from __future__ import annotations

import argparse
import sys
import time

from tests.integration.instance import Instance

from .crashload import CrashLoad, queue_state


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tools/soak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="how long the load runs (60)")
    ap.add_argument("--clients", type=int, default=5, help="SMTP client threads (5)")
    ap.add_argument("--kill-every", type=float, nargs=2, default=(5.0, 20.0),
                    metavar=("MIN", "MAX"), help="seconds between kills (5 20)")
    ap.add_argument("--keep", action="store_true", help="keep the instance's directory")
    args = ap.parse_args(argv)
    inst = Instance("soak")
    began = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"soak: instance {inst.root}, port {inst.port}, {args.minutes:g} minutes, "
          f"{args.clients} SMTP clients, a kill every {args.kill_every[0]:g}-"
          f"{args.kill_every[1]:g} s", flush=True)
    try:
        load = CrashLoad(inst, clients=args.clients, kill_every=tuple(args.kill_every))
        load.start_instance()

        def progress(elapsed: float) -> None:
            print(f"soak: {elapsed / 60:5.1f} min: accepted {len(load.acked)}, "
                  f"killed {len(load.kills)} times, master restarted {load.restarts} times, "
                  f"peak RSS {load.peak_rss_kb // 1024} MB", flush=True)

        load.run(args.minutes * 60, progress)
        seen = load.drain(600)
        report = load.report(seen)
        ended = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        print(f"soak: {began} to {ended}")
        print("soak: " + report.summary())
        failed = bool(report.lost or report.damaged or load.errors)
        if load.errors:
            print("soak: " + load.errors[0])
        if report.lost:
            print(f"soak: LOST {report.lost[:50]}\n{queue_state(inst)}")
        if report.damaged:
            print(f"soak: DAMAGED {report.damaged[:50]}")
        print("soak: " + ("FAILED" if failed else "passed: nothing lost, nothing damaged"))
        return 1 if failed else 0
    finally:
        if args.keep:
            inst.stop()
            print(f"soak: kept {inst.root}")
        else:
            inst.cleanup()


if __name__ == "__main__":
    sys.exit(main())

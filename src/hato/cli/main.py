"""The ``hato`` command and the standard MTA entry points.

``hato [-c DIR] COMMAND [ARGS]`` runs one of the commands below; ``sendmail``,
``mailq`` and ``newaliases`` (and any Postfix tool name, through a symlink)
dispatch on the name they were called by, as Postfix's programs do.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from .. import __version__
from .common import parse_options, UsageError

Command = Callable[[list[str]], int]


def _lazy(module: str, func: str = "main") -> Command:
    def call(argv: list[str]) -> int:
        import importlib

        mod = importlib.import_module(f"hato.cli.{module}")
        return int(getattr(mod, func)(argv) or 0)

    return call


def _not_provided(name: str, why: str) -> Command:
    def call(argv: list[str]) -> int:
        print(f"hato: {name}: not provided: {why}", file=sys.stderr)
        return 1

    return call


# Commands that later work provides answer honestly that they are not there yet.
COMMANDS: dict[str, Command] = {
    "postconf": _lazy("postconf"),
    "check": _lazy("check"),
    "set-permissions": _lazy("control", "set_permissions_main"),
    "init": _lazy("init"),
    "postmap": _lazy("postmap", "postmap_main"),
    "postalias": _lazy("postmap", "postalias_main"),
    "newaliases": _lazy("postmap", "newaliases_main"),
    "start": _lazy("control", "start_main"),
    "start-fg": _lazy("control", "start_fg_main"),
    "stop": _lazy("control", "stop_main"),
    "reload": _lazy("control", "reload_main"),
    "status": _lazy("control", "status_main"),
    "abort": _lazy("control", "abort_main"),
    "flush": _lazy("control", "flush_main"),
    "sendmail": _lazy("sendmail"),
    "postdrop": _not_provided("postdrop", "hato's sendmail writes to maildrop/ itself "
                                          "(docs/compat.md)"),
    "postqueue": _lazy("postqueue", "postqueue_main"),
    "mailq": _lazy("postqueue", "mailq_main"),
    "postsuper": _lazy("postsuper"),
    "postcat": _lazy("postcat"),
    "qshape": _lazy("qshape"),
    "postlog": _lazy("postlog"),
    "postmulti": _lazy("postmulti"),
    "saslauthd": _lazy("saslauthd", "saslauthd_main"),
    "testsaslauthd": _lazy("saslauthd", "testsaslauthd_main"),
    "saslpasswd": _lazy("saslpasswd", "saslpasswd_main"),
    "saslpasswd2": _lazy("saslpasswd", "saslpasswd2_main"),
    "sasldblistusers": _lazy("saslpasswd", "sasldblistusers_main"),
    "sasldblistusers2": _lazy("saslpasswd", "sasldblistusers2_main"),
    "maildirmake": _lazy("maildirmake"),
}

USAGE = """\
usage: hato [-c config_dir] [-v] command [args...]

instance:  init DIR | start | stop | abort | reload | status | check | flush
           set-permissions
tools:     postconf postmap postalias newaliases sendmail mailq postqueue
           postsuper postcat qshape postlog postmulti saslauthd saslpasswd
           sasldblistusers maildirmake
"""


def hato(argv: Sequence[str]) -> int:
    try:
        opts, args = parse_options(argv, "c:vV")
    except UsageError as err:
        print(f"hato: fatal: usage: {err}", file=sys.stderr)
        return 1
    for opt, val in opts:
        if opt == "-c":
            os.environ["MAIL_CONFIG"] = val
        elif opt == "-V":
            print(f"hato {__version__}")
            return 0
    if not args or args[0] in ("help", "-h", "--help"):
        sys.stdout.write(USAGE) if args else sys.stderr.write(USAGE)
        return 0 if args else 1
    if args[0] == "--version":
        print(f"hato {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"hato: fatal: unknown command: {args[0]}", file=sys.stderr)
        sys.stderr.write(USAGE)
        return 1
    return command(args[1:])


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv
    prog = os.path.basename(argv[0]) if argv else "hato"
    if prog in COMMANDS and prog != "hato":
        code = COMMANDS[prog](list(argv[1:]))
    else:
        code = hato(list(argv[1:]))
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    sys.exit(main())

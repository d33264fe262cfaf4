"""``sendmail`` (and ``hato sendmail``): the Sendmail-compatible way for
programs to hand mail to hato, with Postfix's options.

    sendmail [-t] [-i|-oi] [-f sender|-r sender] [-F full_name] [-N dsn]
             [-R ret] [-V envid] [-C config_dir] [-bm|-bv|-bp|-bi|-bs] [-q]
             [recipient ...]

The message is read from standard input and written, with its envelope, as
a queue file into ``$queue_directory/maildrop`` (what Postfix's postdrop
does); the pickup service then feeds it to cleanup. The command exits 0 only
after the file is durable (fsynced) in maildrop/. ``-bp`` is mailq, ``-bi``
newaliases, ``-q`` flushes the queue. ``-bv`` delivers nothing: the sender
gets a report on how each recipient would be delivered (the address
resolution qmgr does: transport and next hop).

Exit statuses are sysexits(3) codes, as Postfix's sendmail: 64 usage,
65 data error, 67 no such user, 75 temporary failure, 77 permission denied.
"""

from __future__ import annotations

import os
import pwd
import sys
import time
from dataclasses import dataclass, field

from .common import Fatal, Messages, UsageError, load_config, parse_options, run

EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77

# Postfix sendmail's getopt string (sendmail.c), so every option it accepts
# is accepted here, including the Sendmail ones it ignores.
GETOPT = "B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:r:q:tvx"
DSN_NOTIFY = {"never", "success", "failure", "delay"}


@dataclass
class Submission:
    sender: str | None = None
    full_name: str | None = None
    recipients: list[str] = field(default_factory=list)
    extract: bool = False  # -t
    dot_ends: bool = True  # a line "." ends input, unless -i/-oi
    notify: str | None = None  # -N
    ret: str | None = None  # -R
    envid: str | None = None  # -V
    mode: str = "m"  # b flag: m deliver, v verify, p print queue, i aliases, s smtp
    flush: bool = False  # -q
    config_dir: str | None = None
    verbose: int = 0


def parse(argv: list[str]) -> Submission:
    opts, args = parse_options(argv, GETOPT)
    sub = Submission()
    for opt, val in opts:
        flag = opt[1]
        if flag == "C":
            sub.config_dir = val
        elif flag in ("f", "r"):
            sub.sender = val
        elif flag == "F":
            sub.full_name = val
        elif flag == "t":
            sub.extract = True
        elif flag == "i":
            sub.dot_ends = False
        elif flag == "o":
            if val == "i":
                sub.dot_ends = False
            # other -o options (Sendmail's) are accepted and ignored, as Postfix does
        elif flag == "N":
            words = {w.strip().lower() for w in val.split(",") if w.strip()}
            if not words <= DSN_NOTIFY or ("never" in words and len(words) > 1):
                raise Fatal(f"bad -N option value: {val}", EX_USAGE)
            sub.notify = ",".join(sorted(w.upper() for w in words))
        elif flag == "R":
            if val.lower() not in ("full", "hdrs"):
                raise Fatal(f"bad -R option value: {val}", EX_USAGE)
            sub.ret = val.upper()
        elif flag == "V":
            sub.envid = val
        elif flag == "b":
            if val not in ("d", "h", "i", "l", "m", "p", "s", "v", "D", "H", "P", "t", "a"):
                raise Fatal(f"unsupported: -b{val}", EX_USAGE)
            sub.mode = val
        elif flag == "q":
            sub.flush = True
        elif flag == "v":
            sub.verbose += 1
    sub.recipients = list(args)
    return sub


def read_message(stream, dot_ends: bool) -> bytes:
    """The message from standard input; with dot_ends a line with a single
    "." ends it (Sendmail's rule without -i)."""
    if not dot_ends:
        return stream.read()
    out = bytearray()
    for line in iter(stream.readline, b""):
        if line.rstrip(b"\r\n") == b".":
            break
        out += line
    return bytes(out)


def login_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def body(msgs: Messages, argv: list[str]) -> int:
    try:
        sub = parse(argv)
    except UsageError as err:
        print(f"sendmail: fatal: usage: {err}", file=sys.stderr)
        return EX_USAGE
    if sub.config_dir:
        os.environ["MAIL_CONFIG"] = sub.config_dir
    if sub.mode == "p":
        if sub.recipients:
            raise Fatal("display queue mode requires no recipient", EX_TEMPFAIL)
        from . import main as hato_main

        return hato_main.COMMANDS["mailq"]([])
    if sub.mode == "i":
        from . import main as hato_main

        return hato_main.COMMANDS["newaliases"]([])
    if sub.flush:
        from . import main as hato_main

        return hato_main.COMMANDS["flush"]([])
    if sub.mode == "s":
        return smtp_on_stdio(msgs)
    if sub.mode in ("d", "h", "H", "D", "P", "t", "a", "l"):
        raise Fatal(f"-b{sub.mode} is not supported yet by hato", EX_USAGE)
    cfg = load_config(None, process_name="sendmail")
    settings = cfg.settings()
    if not sub.recipients and not sub.extract:
        raise Fatal("no recipients specified", EX_USAGE)
    if sub.mode == "v" and sys.stdin.isatty():
        data = b""  # -bv: a report is mailed; no message need be typed
    else:
        data = read_message(sys.stdin.buffer, sub.dot_ends)
    from ..queue.submit import submit_to_maildrop

    try:
        qid = submit_to_maildrop(
            settings, sender=sub.sender if sub.sender is not None else login_name(),
            full_name=sub.full_name, recipients=sub.recipients, extract=sub.extract,
            notify=sub.notify, ret=sub.ret, envid=sub.envid, content=data,
            uid=os.getuid(), arrival=time.time(), verify=sub.mode == "v")
    except PermissionError as err:
        raise Fatal(f"cannot write to the maildrop queue: {err}", EX_NOPERM) from None
    except OSError as err:
        raise Fatal(f"cannot queue the message: {err}", EX_TEMPFAIL) from None
    from ..io.ipc import notify
    from ..proto.attr import Attrs

    notify(os.path.join(settings.str("queue_directory"), "public", "pickup"),
           Attrs.of(request="wakeup"))
    if sub.verbose:
        msgs.info(f"queued as {qid}")
    return 0


def smtp_on_stdio(msgs: Messages) -> int:
    """-bs: speak SMTP on standard input and output, as Postfix's sendmail
    does through a stand-alone smtpd; accepted messages go into maildrop/
    for pickup, like any local submission."""
    import asyncio

    from ..io.ipc import notify
    from ..io.maillog import MailLog
    from ..io.smtpd_server import SessionServer
    from ..io.smtpd_stdio import serve_stdio
    from ..proto.attr import Attrs

    cfg = load_config(None, process_name="sendmail")
    settings = cfg.settings()
    pickup = os.path.join(settings.str("queue_directory"), "public", "pickup")
    try:
        log = MailLog.from_settings(settings, "smtpd")
    except OSError:
        log = MailLog(syslog_name=settings.str("syslog_name"), daemon="smtpd",
                      maillog_file="/dev/null")
    server = SessionServer(settings, log, stand_alone_uid=os.getuid(),
                           wake_qmgr=lambda: notify(pickup, Attrs.of(request="wakeup")))
    server.peername_lookup = False
    try:
        asyncio.run(serve_stdio(server))
    finally:
        log.close()
    return 0


def main(argv: list[str]) -> int:
    return run("sendmail", body, argv)

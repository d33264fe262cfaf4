"""``hato postlog``: write to the mail log, as Postfix's postlog(1).

    postlog [-iv] [-c config_dir] [-p priority] [-t tag] [text...]

Logs the text on the command line (the arguments joined by spaces) as one
record, or else each line of standard input as one record, the way every
hato process logs: to ``maillog_file`` when it is set (appended directly,
whether hato is running or not), else to syslog with ``syslog_facility``::

    Nov 29 16:36:46 mx postfix/postlog[10789]: warning: hello world

The tag is ``$syslog_name/postlog`` unless ``-t`` gives another, used as
is; the process id is always there (``-i`` is accepted, as in Postfix,
where it is the default). ``-p`` sets the severity: ``info`` (the default),
``warn``/``warning``, ``error``/``err``, ``fatal``/``crit`` or ``panic``,
shown as Postfix's ``warning:``, ``error:``, ``fatal:`` and ``panic:``
prefixes; postlog itself still exits 0. When standard error is a terminal
the records are shown there too (``tag: warning: text``). Characters that
are not printable become ``?``, as in every log line.
"""

from __future__ import annotations

import getopt
import logging
import os
import sys

from ..io.maillog import PANIC
from .common import Fatal, Messages, load_config, run

OPTIONS = "c:ip:t:v"
USAGE = "usage: postlog [-c config_dir] [-i] [-p priority] [-t tag] [-v] [text]"
LEVELS = {
    "info": logging.INFO, "warn": logging.WARNING, "warning": logging.WARNING,
    "error": logging.ERROR, "err": logging.ERROR, "fatal": logging.CRITICAL,
    "crit": logging.CRITICAL, "panic": PANIC,
}
PREFIXES = {logging.INFO: "", logging.WARNING: "warning: ", logging.ERROR: "error: ",
            logging.CRITICAL: "fatal: ", PANIC: "panic: "}


def severity(name: str) -> int:
    level = LEVELS.get(name.lower())
    if level is None:
        raise Fatal(f'bad severity: "{name}"')
    return level


def records(args: list[str], stdin) -> list[str]:
    """What to log: the arguments as one record, else each input line."""
    if args:
        return [" ".join(args)]
    out = []
    for line in stdin:
        if line.endswith(b"\n"):
            line = line[:-1]
        out.append(line.decode("utf-8", "surrogateescape"))
    return out


def body(msgs: Messages, argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, OPTIONS)
    except getopt.GetoptError:
        raise Fatal(USAGE) from None
    config_dir = None
    tag = None
    level = logging.INFO
    for opt, val in opts:
        if opt == "-c":
            config_dir = val
        elif opt == "-p":
            level = severity(val)
        elif opt == "-t":
            tag = val
    settings = load_config(config_dir, process_name="postlog",
                           main_missing_ok=True).settings()
    if tag is None:
        tag = f"{settings.str('syslog_name')}/postlog"
    maillog_file = settings.str("maillog_file")
    if maillog_file:
        try:  # a clear error now, rather than a lost record later
            os.close(os.open(maillog_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
        except OSError as e:
            raise Fatal(f"open maillog_file {maillog_file}: {e.strerror}") from None
    lines = records(args, sys.stdin.buffer)
    from ..io.maillog import MailLog

    log = MailLog(syslog_name=tag, daemon="", maillog_file=maillog_file,
                  syslog_facility=settings.str("syslog_facility"),
                  hostname=settings.str("myhostname"),
                  utf8=settings.bool("smtputf8_enable"))
    on_terminal = sys.stderr.isatty()
    try:
        for text in lines:
            log.logger.log(level, text)
            if on_terminal:
                print(f"{tag}: {PREFIXES[level]}{text}", file=sys.stderr)
    finally:
        log.close()
    return 0


def main(argv: list[str]) -> int:
    return run("postlog", body, argv)

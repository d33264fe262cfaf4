"""``hato qshape``: the queue by domain and age, as Postfix's qshape(1).

    qshape [-s] [-p] [-m min_subdomains] [-b bucket_count] [-t bucket_time]
           [-l] [-w terminal_width] [-N batch_msg_count] [-n batch_top_domains]
           [-c config_directory] [queue_name ...]

Counts the pending recipients (``-s``: the senders) of every message in the
named queues (default ``incoming`` and ``active``; a name that is not an
absolute path is taken under ``queue_directory``; subdirectories are
searched) by domain and by age in buckets of ``-t`` minutes (default 5)
that double in length (``-l``: that grow linearly), ``-b`` of them (default
10), and prints Postfix's table::

                                         T  5 10 20 40 80 160 320 640 1280 1280+
                                  TOTAL  2  2  0  0  0  0   0   0   0    0     0
                            example.org  2  2  0  0  0  0   0   0   0    0     0

``-p`` adds parent domains (``.example.org``) that have at least ``-m``
(default 5) subdomains. ``-w`` widens the table past 80 columns. When the
output is a terminal, the table is redrawn every ``-N`` messages (default
1000) with the top ``-n`` rows (default 20).

As qshape reads them: a queue file is a file named by at least six letters
or digits, with mode 0700 under the 0733 mask (a file still being written is
skipped), whose age is its arrival time record (a maildrop file without one:
its modification time); done recipients are not counted; a file without
pending recipients, or that cannot be read, is skipped. The arithmetic is in
:mod:`hato.queue.qshape`.
"""

from __future__ import annotations

import getopt
import os
import re
import stat
import sys
import time
from collections.abc import Iterator

from ..queue import qshape as Q
from ..queue import records as R
from .common import Fatal, Messages, load_config, run

OPTIONS = "lhc:psw:b:t:m:n:N:"
USAGE = """\
Usage: qshape [ -s ] [ -p ] [ -m <min_subdomains> ] [ -l ]
\t[ -b <bucket_count> ] [ -t <bucket_time> ] [ -w <terminal_width> ]
\t[ -N <batch_msg_count> ] [ -n <batch_top_domains> ]
\t[ -c <config_directory> ] [ <queue_name> ... ]
The 's' option shows sender domain counts.
The 'p' option shows address counts by for parent domains.
Parent domains are shown with a leading '.' before the domain name.
Parent domains are only shown if the domain is not a TLD, and at
least <min_subdomains> (default 5) subdomains are shown in the output.

The bucket age ranges in units of <bucket_time> minutes are
[0,1), [1,2), [2,4), [4,8), [8, 16), ... i.e.:
\tthe first bucket is [0, bucket_time) minutes
\tthe second bucket is [bucket_time, 2*bucket_time) minutes
\tthe third bucket is [2*bucket_time, 4*bucket_time) minutes...
'-l' makes the ages linear, the number of buckets shown is <bucket_count>

The default summary is for the incoming and active queues. An explicit
list of queue names can be given on the command line. Non-absolute queue
names are interpreted relative to the Postfix queue directory. Use
<config_directory> to specify a non-default Postfix instance.
"""
DEFAULT_QUEUES = ("incoming", "active")
QUEUE_FILE_NAME = re.compile(r"[A-Za-z0-9]{6,}")
#: A committed queue file: mode 0700 once the 0733 bits are masked.
READY_MASK, READY_MODE = 0o733, 0o700
DEFAULT_BATCH_MESSAGES = 1000
DEFAULT_BATCH_TOP = 20
CLEAR_SCREEN = "\x1b[H\x1b[2J"


class _Skip(Exception):
    """Not a queue file qshape counts."""


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _records(fp, offset: int) -> Iterator[R.Record]:
    def read_at(pos: int, size: int) -> bytes:
        fp.seek(pos)
        return fp.read(size)

    return R.read_records(read_at, offset, block=8192)


def message_facts(path: str, st: os.stat_result) -> tuple[float, str, list[str]]:
    """(arrival time, sender, pending recipients) of a queue file, read as
    qshape reads it; raises :class:`_Skip`."""
    try:
        with open(path, "rb") as fp:
            return _facts(fp, st)
    except (OSError, R.RecordError, ValueError):
        raise _Skip() from None


def _facts(fp, st: os.stat_result) -> tuple[float, str, list[str]]:
    recs = _records(fp, 0)
    first = next(recs, None)
    if first is None:
        raise _Skip()
    sender: str | None = None
    recipients: list[str] = []
    segment: int | None = None
    data_offset = 0
    if first.type == R.SIZE:
        sizes = first.data.split()
        if len(sizes) >= 3 and all(s.isdigit() for s in sizes[:3]):
            segment = int(sizes[0])
        second = next(recs, None)
        if second is None or second.type != R.TIME:
            raise _Skip()
        fields = second.data.split()
        if not fields or not fields[0].isdigit():
            raise _Skip()
        arrival: float = int(fields[0])
    elif first.type in (R.FROM, R.FULL):
        arrival = st.st_mtime
        if first.type == R.FULL:
            first = next(recs, None)
            if first is None or first.type != R.FROM:
                raise _Skip()
        sender = _text(first.data)
    else:
        raise _Skip()
    for rec in recs:
        if rec.type == R.RCPT:
            recipients.append(_text(rec.data))
        elif rec.type == R.FROM:
            sender = _text(rec.data)
        elif rec.type == R.PTR:
            raise _Skip()  # hato writes none
        elif rec.type == R.MESG:
            if sender is None:
                raise _Skip()
            data_offset = rec.offset + R.header_size(len(rec.data)) + len(rec.data)
            break
    else:
        raise _Skip()
    xtra: R.Record | None = None
    if segment is not None:
        recs = _records(fp, data_offset + segment)
        xtra = next(recs, None)
    else:
        for rec in recs:
            if rec.type not in (R.NORM, R.CONT, R.DTXT):
                xtra = rec
                break
    if xtra is None or xtra.type != R.XTRA:
        raise _Skip()
    for rec in recs:
        if rec.type == R.RCPT:
            recipients.append(_text(rec.data))
        elif rec.type == R.FROM:
            sender = _text(rec.data)
        elif rec.type == R.END:
            if sender is None or not recipients:
                raise _Skip()
            return arrival, sender, recipients
    raise _Skip()


def queue_files(directory: str, msgs: Messages) -> Iterator[tuple[str, os.stat_result]]:
    """Every file under *directory* that has a queue file's name and mode."""
    if not os.path.isdir(directory):
        msgs.warn(f"Can't stat {directory}: No such file or directory")
        return
    for top, dirs, files in os.walk(directory, onerror=lambda e: msgs.warn(str(e))):
        dirs.sort()
        for name in sorted(files):
            if not QUEUE_FILE_NAME.fullmatch(name):
                continue
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_mode & READY_MASK == READY_MODE:
                yield path, st


def _number(opt: str, value: str, integer: bool = True) -> float:
    try:
        return int(value) if integer else float(value)
    except ValueError:
        raise Fatal(f"bad {opt} value: {value}\n{USAGE}") from None


def body(msgs: Messages, argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, OPTIONS)
    except getopt.GetoptError as e:
        sys.stderr.write(f"qshape: {e.msg}\n{USAGE}")
        return 1
    o = dict(opts)
    if "-h" in o:
        sys.stderr.write(USAGE)
        return 1
    width = Q.DEFAULT_WIDTH
    buckets = Q.DEFAULT_BUCKETS
    tick: float = Q.DEFAULT_TICK
    min_sub = Q.DEFAULT_MIN_SUBDOMAINS
    if "-w" in o and _number("-w", o["-w"]) > width:
        width = int(o["-w"])
    if "-b" in o and _number("-b", o["-b"]) > 0:
        buckets = int(o["-b"])
    if "-t" in o and _number("-t", o["-t"], integer=False) > 0:
        tick = float(o["-t"])
        if tick.is_integer():
            tick = int(tick)
    if "-m" in o and _number("-m", o["-m"]) > 0:
        min_sub = int(o["-m"])
    linear = "-l" in o
    senders = "-s" in o
    queues = args or list(DEFAULT_QUEUES)
    queue_directory = ""
    if not all(os.path.isabs(q) for q in queues):
        settings = load_config(o.get("-c"), process_name="qshape").settings()
        queue_directory = settings.str("queue_directory")
        if not os.path.isdir(queue_directory):
            raise Fatal(f"chdir({queue_directory}): No such file or directory")
    if sys.stdout.isatty():
        batch = int(_number("-N", o["-N"])) if "-N" in o else DEFAULT_BATCH_MESSAGES
        top = int(_number("-n", o["-n"])) if "-n" in o else DEFAULT_BATCH_TOP
        clear = CLEAR_SCREEN
    else:
        batch = top = 0
        clear = ""
    shape = Q.Shape(buckets=buckets, parents="-p" in o)
    now = int(time.time())

    def show() -> None:
        lines = Q.format_table(shape, tick, linear, width, min_sub, top)
        sys.stdout.write(clear + "".join(line + "\n" for line in lines))
        sys.stdout.flush()

    for queue in queues:
        directory = queue if os.path.isabs(queue) else os.path.join(queue_directory, queue)
        for path, st in queue_files(directory, msgs):
            try:
                arrival, sender, recipients = message_facts(path, st)
            except _Skip:
                continue
            shape.add([sender] if senders else recipients,
                      Q.bucket(now - arrival, tick, buckets, linear))
            if batch > 0 and shape.messages % batch == 0:
                show()
    show()
    return 0


def main(argv: list[str]) -> int:
    return run("qshape", body, argv)

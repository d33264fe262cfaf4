"""Logging in Postfix's format, to ``maillog_file`` or to syslog.

Every line looks like Postfix's, so pflogsumm and people's grep habits work:

    Nov 29 07:21:46 mail postfix/smtpd[1234]: connect from host[192.0.2.1]

The program name is ``$syslog_name/<daemon>``. Lines go through a bounded
in-memory deque to one background writer thread that writes them in
batches, so a stalled syslog or a slow disk never stalls mail and a busy
process pays neither ``logging``'s machinery nor a thread wake-up per line;
when the deque is full, lines are dropped and counted, and the count is
logged once the writer catches up.

Levels map to Postfix's prefixes: WARNING → ``warning:``, ERROR →
``error:``, CRITICAL → ``fatal:``; INFO has no prefix.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import socket
import sys
import threading
import time

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: Postfix's msg_panic(), above CRITICAL (msg_fatal())
PANIC = logging.CRITICAL + 1
PREFIX = {logging.WARNING: "warning: ", logging.ERROR: "error: ", logging.CRITICAL: "fatal: ",
          PANIC: "panic: "}
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11,
    **{f"local{i}": 16 + i for i in range(8)},
}
SEVERITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
            logging.CRITICAL: 2, PANIC: 2}
QUEUE_SIZE = 10000
BATCH_SIZE = 512  # lines per write; a loop's turn writes at once when it has this many


# (second, zone names, its timestamp): the last one made, for the lines of
# one second (time.tzname changes with a time.tzset())
_LAST_STAMP: tuple[int, tuple[str, str], str] = (-1, ("", ""), "")


def syslog_timestamp(when: float) -> str:
    """``Mmm dd hh:mm:ss`` with a space-padded day, in local time, in English."""
    global _LAST_STAMP
    second, zones, last = math.floor(when), time.tzname, _LAST_STAMP  # (one read: threads)
    if last[0] == second and last[1] is zones:
        return last[2]
    t = time.localtime(when)
    stamp = f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    _LAST_STAMP = (second, zones, stamp)
    return stamp


def printable(text: str, utf8: bool = True) -> str:
    """Postfix's printable(): every character that is not printable becomes
    ``?`` — control characters always, non-ASCII ones unless *utf8*
    (smtputf8_enable), one ``?`` per byte; bytes that were not UTF-8
    (surrogate escapes) always."""
    if text.isascii() and text.isprintable():
        return text
    out = []
    for ch in text:
        o = ord(ch)
        if 0x20 <= o < 0x7f:
            out.append(ch)
        elif o < 0x80 or 0xDC80 <= o <= 0xDCFF:
            out.append("?")
        elif utf8 and ch.isprintable():
            out.append(ch)
        else:
            out.append("?" * len(ch.encode("utf-8", "surrogatepass")))
    return "".join(out)


class PostfixFormatter(logging.Formatter):
    """Formats the part after the timestamp and host: ``name[pid]: text``."""

    def __init__(self, program: str, utf8: bool = True):
        super().__init__()
        self.program = program
        self.utf8 = utf8

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return self.line(record.levelno, text, record.process)

    def line(self, level: int, text: str, pid: int | None, program: str | None = None) -> str:
        text = printable((PREFIX.get(level, "") + text).replace("\n", " | "), self.utf8)
        return f"{program or self.program}[{pid}]: {text}"


class MaillogFileHandler(logging.Handler):
    """Appends whole lines to a file (``maillog_file``); reopens it when it
    is rotated away."""

    def __init__(self, path: str, hostname: str):
        super().__init__()
        self.path = path
        self.hostname = hostname
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        try:
            self._open()  # now, while the process may still have the rights
        except OSError:
            pass  # reported by emit() on the first record

    def _open(self) -> int:
        try:
            st = os.stat(self.path)
            ino = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            ino = None
        if self._fd is None or ino != self._ino:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                             0o644)
            except PermissionError:
                # A service that gave up its privileges after opening the
                # log keeps writing to the file it has.
                if self._fd is None:
                    raise
                self._ino = ino
                return self._fd
            if self._fd is not None:
                os.close(self._fd)
            self._fd = fd
            st = os.fstat(self._fd)
            self._ino = (st.st_dev, st.st_ino)
        return self._fd

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{syslog_timestamp(record.created)} {self.hostname} {self.format(record)}\n"
            os.write(self._open(), line.encode("utf-8", "replace"))
        except Exception:
            self.handleError(record)

    def write_batch(self, batch: list[tuple[int, float, str, str | None]]) -> None:
        """Lines (level, time, text, program) from the writer, in one append."""
        fmt = self.formatter
        assert isinstance(fmt, PostfixFormatter)
        pid = os.getpid()
        out = []
        for level, when, text, program in batch:
            stamp = syslog_timestamp(when)
            out.append(f"{stamp} {self.hostname} {fmt.line(level, text, pid, program)}\n")
        data = "".join(out).encode("utf-8", "replace")
        try:
            fd = self._open()
            while data:
                n = os.write(fd, data)
                data = data[n:]
        except OSError as err:
            sys.stderr.write(f"maillog: cannot write {self.path}: {err}\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        super().close()


class SyslogHandler(logging.Handler):
    """Sends RFC 3164 datagrams to the local syslog socket (/dev/log)."""

    def __init__(self, facility: str, address: str = "/dev/log"):
        super().__init__()
        self.facility = FACILITIES.get(facility.lower(), FACILITIES["mail"])
        self.address = address
        self._sock: socket.socket | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self._send(record.levelno, record.created, self.format(record))

    def write_batch(self, batch: list[tuple[int, float, str, str | None]]) -> None:
        fmt = self.formatter
        assert isinstance(fmt, PostfixFormatter)
        pid = os.getpid()
        for level, when, text, program in batch:
            self._send(level, when, fmt.line(level, text, pid, program))

    def _send(self, level: int, when: float, line: str) -> None:
        pri = self.facility * 8 + SEVERITY.get(level, 6)
        data = f"<{pri}>{syslog_timestamp(when)} {line}".encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.connect(self.address)
            self._sock.send(data)
        except OSError:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            # syslog is not there: nothing to tell it with; drop the record.

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        super().close()


class _Writer(threading.Thread):
    """The one writer of a process's log lines. Producers append lines to a
    deque (no lock, no logging machinery on the hot path); what has
    gathered is written in one go:

    * by the event loop that logged them, at the end of its turn, when the
      log is a local file (``maillog_file``): one append per turn (or per
      BATCH_SIZE lines of a busy turn), and no thread switch;
    * otherwise by this background thread, so that a stalled syslog never
      stalls mail: lines logged in an event loop wake it once per turn of
      the loop, lines logged elsewhere (worker threads, commands) at once.

    A producer wakes the thread only when it is asleep, by releasing a
    plain lock (a C call; ``threading.Event`` would run Python code for
    each line). Beyond QUEUE_SIZE waiting lines, new ones are dropped and
    counted."""

    def __init__(self, target: logging.Handler, direct: bool = False):
        super().__init__(name="maillog-writer", daemon=True)
        self.target = target
        self.direct = direct  # event loops write their lines themselves
        self.lines: collections.deque[tuple[int, float, str, str | None]] = collections.deque()
        self.dropped = 0
        self.sleeping = False
        self.turn_end = None  # the loop whose turn ends with a write or a wake-up
        self.write_lock = threading.Lock()  # one writer at a time: lines stay in order
        self.gate = threading.Lock()
        self.gate.acquire()  # held: the writer waits by acquiring it again
        self.stopping = False

    def put(self, level: int, text: str, program: str | None = None) -> None:
        if len(self.lines) >= QUEUE_SIZE:
            self.dropped += 1
            return
        self.lines.append((level, time.time(), text, program))
        loop = asyncio._get_running_loop()
        if loop is not None:
            if self.direct and len(self.lines) >= BATCH_SIZE:
                # a turn that logs a great deal (thousands of sessions ending
                # at once) writes as it goes, rather than drop lines
                self.drain()
            elif self.turn_end is not loop:
                self.turn_end = loop
                loop.call_soon(self._end_of_turn)
        elif self.sleeping:
            self._wake()

    def _end_of_turn(self) -> None:
        self.turn_end = None
        if self.direct:
            self.drain()
        elif self.sleeping:
            self._wake()

    def _wake(self) -> None:
        try:
            self.gate.release()
        except RuntimeError:
            pass  # another producer woke it already

    def drain(self) -> None:
        """Write every waiting line."""
        lines = self.lines
        with self.write_lock:
            while lines:
                batch = []
                while lines and len(batch) < BATCH_SIZE:
                    batch.append(lines.popleft())
                try:
                    self.target.write_batch(batch)  # type: ignore[attr-defined]
                except Exception:  # noqa: BLE001 - the log must never take the process down
                    pass

    def run(self) -> None:
        lines = self.lines
        while True:
            if not lines:
                if self.stopping:
                    return
                self.sleeping = True
                if not lines and not self.stopping:  # (re-checked: see put())
                    self.gate.acquire()
                self.sleeping = False
                continue
            self.drain()

    def stop(self) -> None:
        self.stopping = True
        self._wake()
        self.join(10)


class _DequeHandler(logging.Handler):
    """Python logging (library warnings, exceptions with tracebacks) into the
    writer: the message and traceback formatted now, in the caller."""

    def __init__(self, writer: _Writer):
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.writer.put(record.levelno, text)
        except Exception:  # noqa: BLE001
            self.handleError(record)


class MailLog:
    """The logging set-up of one hato process."""

    def __init__(self, *, syslog_name: str, daemon: str, maillog_file: str = "",
                 syslog_facility: str = "mail", hostname: str | None = None,
                 stderr: bool = False, utf8: bool = True):
        self.program = f"{syslog_name}/{daemon}" if daemon else syslog_name
        self.hostname = (hostname or socket.gethostname()).split(".")[0]
        if maillog_file:
            target: logging.Handler = MaillogFileHandler(maillog_file, self.hostname)
        else:
            target = SyslogHandler(syslog_facility)
        formatter = PostfixFormatter(self.program, utf8)
        target.setFormatter(formatter)
        self._target = target
        self._writer = _Writer(target, direct=isinstance(target, MaillogFileHandler))
        self._writer.start()
        self._stderr = logging.StreamHandler() if stderr else None
        if self._stderr is not None:
            self._stderr.setFormatter(formatter)
        self._handler = _DequeHandler(self._writer)
        self.logger = logging.getLogger(f"hato.{daemon or 'main'}.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self._handler)
        if self._stderr is not None:
            self.logger.addHandler(self._stderr)

    def _put(self, level: int, text: str) -> None:
        self._writer.put(level, text)
        if self._stderr is not None:
            self._stderr.handle(self.logger.makeRecord(self.logger.name, level, "", 0, text,
                                                       None, None))

    def info(self, text: str) -> None:
        if self._writer.dropped:
            self._report_drops()
        self._put(logging.INFO, text)

    def warning(self, text: str) -> None:
        self._put(logging.WARNING, text)

    def error(self, text: str) -> None:
        self._put(logging.ERROR, text)

    def fatal(self, text: str) -> None:
        self._put(logging.CRITICAL, text)

    def exception(self, text: str) -> None:
        self.logger.error(text, exc_info=True)

    def _report_drops(self) -> None:
        w = self._writer
        if w.dropped and len(w.lines) < QUEUE_SIZE // 2:
            n, w.dropped = w.dropped, 0
            self._put(logging.WARNING, f"log queue was full: {n} records dropped")

    def adopt(self, name: str = "hato") -> None:
        """Send the records of Python's logger *name* (warnings of library
        code such as the DNS resolver) to this log, under this daemon's
        name, as Postfix's own msg_warn() lines."""
        logger = logging.getLogger(name)
        logger.addHandler(self._handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def close(self) -> None:
        """Write what is waiting and stop the writer thread."""
        self._writer.stop()
        self._target.close()
        self.logger.removeHandler(self._handler)

    @classmethod
    def from_settings(cls, settings, daemon: str, **kw) -> "MailLog":
        return cls(syslog_name=settings.str("syslog_name"), daemon=daemon,
                   maillog_file=settings.str("maillog_file"),
                   syslog_facility=settings.str("syslog_facility"),
                   hostname=settings.str("myhostname"),
                   utf8=settings.bool("smtputf8_enable"), **kw)


class DaemonLog:
    """Info and warning lines under another program name (``name/daemon``)
    through a process's :class:`MailLog`, in order with its own lines: for
    a service the process runs itself (qmgr's discard)."""

    def __init__(self, log: MailLog, program: str):
        self._log = log
        self.program = program

    def info(self, text: str) -> None:
        self._log._writer.put(logging.INFO, text, self.program)

    def warning(self, text: str) -> None:
        self._log._writer.put(logging.WARNING, text, self.program)

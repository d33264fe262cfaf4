"""Logging in Postfix's format, to ``maillog_file`` or to syslog.

Every line looks like Postfix's, so pflogsumm and people's grep habits work:

    Nov 29 07:21:46 mail postfix/smtpd[1234]: connect from host[192.0.2.1]

The program name is ``$syslog_name/<daemon>``. Records go through a bounded
in-memory queue to one background writer thread (``logging``'s QueueHandler
and QueueListener), so a stalled syslog or a slow disk never stalls mail;
when the queue is full, records are dropped and counted, and the count is
logged once the writer catches up.

Levels map to Postfix's prefixes: WARNING → ``warning:``, ERROR →
``error:``, CRITICAL → ``fatal:``; INFO has no prefix.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import socket
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


def syslog_timestamp(when: float) -> str:
    """``Mmm dd hh:mm:ss`` with a space-padded day, in local time, in English."""
    t = time.localtime(when)
    return f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:2d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"


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
        text = PREFIX.get(record.levelno, "") + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        text = printable(text.replace("\n", " | "), self.utf8)
        return f"{self.program}[{record.process}]: {text}"


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
        pri = self.facility * 8 + SEVERITY.get(record.levelno, 6)
        data = f"<{pri}>{syslog_timestamp(record.created)} {self.format(record)}".encode(
            "utf-8", "replace")
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


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    def __init__(self, q: queue.Queue):
        super().__init__(q)
        self.dropped = 0
        self._lock = threading.Lock()

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # Format the message now (arguments may change later), keep the level.
        record.msg = record.getMessage()
        record.args = None
        return record


class _Listener(logging.handlers.QueueListener):
    def enqueue_sentinel(self) -> None:
        # At close we may wait for room: everything queued is written first.
        self.queue.put(self._sentinel)


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
        target.setFormatter(PostfixFormatter(self.program, utf8))
        self._target = target
        self._queue: queue.Queue = queue.Queue(QUEUE_SIZE)
        self._qhandler = _DroppingQueueHandler(self._queue)
        self._listener = _Listener(self._queue, target)
        self._listener.start()
        self.logger = logging.getLogger(f"hato.{daemon or 'main'}.{id(self)}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self._qhandler)
        if stderr:
            err = logging.StreamHandler()
            err.setFormatter(PostfixFormatter(self.program, utf8))
            self.logger.addHandler(err)

    def info(self, text: str) -> None:
        self._report_drops()
        self.logger.info(text)

    def warning(self, text: str) -> None:
        self.logger.warning(text)

    def error(self, text: str) -> None:
        self.logger.error(text)

    def fatal(self, text: str) -> None:
        self.logger.critical(text)

    def exception(self, text: str) -> None:
        self.logger.error(text, exc_info=True)

    def _report_drops(self) -> None:
        if self._qhandler.dropped and self._queue.qsize() < QUEUE_SIZE // 2:
            with self._qhandler._lock:
                n, self._qhandler.dropped = self._qhandler.dropped, 0
            self.logger.warning(f"log queue was full: {n} records dropped")

    def adopt(self, name: str = "hato") -> None:
        """Send the records of Python's logger *name* (warnings of library
        code such as the DNS resolver) to this log, under this daemon's
        name, as Postfix's own msg_warn() lines."""
        logger = logging.getLogger(name)
        logger.addHandler(self._qhandler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def close(self) -> None:
        """Flush what is queued and stop the writer thread."""
        self._listener.stop()
        self._target.close()
        self.logger.removeHandler(self._qhandler)

    @classmethod
    def from_settings(cls, settings, daemon: str, **kw) -> "MailLog":
        return cls(syslog_name=settings.str("syslog_name"), daemon=daemon,
                   maillog_file=settings.str("maillog_file"),
                   syslog_facility=settings.str("syslog_facility"),
                   hostname=settings.str("myhostname"),
                   utf8=settings.bool("smtputf8_enable"), **kw)

"""What cleanup's callers and its message pass share: the status and flag
bits (Postfix's CLEANUP_STAT_* and CLEANUP_FLAG_*), the message header
classes (header_opts.c), the dates cleanup writes, and a message's
:class:`Submission` and :class:`CleanupResult`. The pass itself is
:mod:`hato.queue.cleanup`.
"""

from __future__ import annotations

import math
import time as _time
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from enum import IntFlag

from ..policy.rewrite import LOCAL
from .envelope import Recipient

INFO = "info"
WARNING = "warning"


class CleanupStatus(IntFlag):
    """Postfix's CLEANUP_STAT_* bits."""

    OK = 0
    BAD = 1 << 0  # internal protocol error
    WRITE = 1 << 1  # queue file write error (also: table lookup failure)
    SIZE = 1 << 2  # message file too big
    CONT = 1 << 3  # message content rejected
    HOPS = 1 << 4  # too many hops
    RCPT = 1 << 6  # no recipients
    PROXY = 1 << 7
    DEFER = 1 << 8  # temporary reject
    NOPERM = 1 << 9


MASK_CANT_BOUNCE = CleanupStatus.BAD | CleanupStatus.WRITE | CleanupStatus.DEFER \
    | CleanupStatus.RCPT
MASK_INCOMPLETE = CleanupStatus.BAD | CleanupStatus.WRITE | CleanupStatus.SIZE \
    | CleanupStatus.DEFER

#: cleanup_strerror.c: most severe first.
_DETAIL = (
    (CleanupStatus.DEFER, 451, "4.7.1", "service unavailable"),
    (CleanupStatus.PROXY, 451, "4.3.0", "queue file write error"),
    (CleanupStatus.BAD, 451, "4.3.0", "internal protocol error"),
    (CleanupStatus.RCPT, 550, "5.1.0", "no recipients specified"),
    (CleanupStatus.HOPS, 554, "5.4.0", "too many hops"),
    (CleanupStatus.SIZE, 552, "5.3.4", "message file too big"),
    (CleanupStatus.CONT, 550, "5.7.1", "message content rejected"),
    (CleanupStatus.WRITE, 451, "4.3.0", "queue file write error"),
    (CleanupStatus.NOPERM, 550, "5.7.1", "service denied"),
)


def status_detail(status: CleanupStatus) -> tuple[int, str, str]:
    """(SMTP code, DSN status, text) for a status, as cleanup_stat_detail()."""
    if not status:
        return 250, "2.0.0", "Success"
    for bit, code, dsn, text in _DETAIL:
        if status & bit:
            return code, dsn, text
    return 451, "4.3.0", "internal protocol error"


class CleanupFlag(IntFlag):
    """Postfix's CLEANUP_FLAG_* bits a client sets per message."""

    NONE = 0
    BOUNCE = 1 << 0  # bounce bad mail instead of refusing it (local submission)
    FILTER = 1 << 1  # header/body checks
    HOLD = 1 << 2
    DISCARD = 1 << 3
    BCC_OK = 1 << 4  # automatic BCC recipients
    MAP_OK = 1 << 5  # canonical/virtual mapping and masquerading


EXTERNAL = CleanupFlag.FILTER | CleanupFlag.BCC_OK | CleanupFlag.MAP_OK
INTERNAL = CleanupFlag.MAP_OK

#: The bits as plain ints (attributes by name), for cleanup's hot paths.
FLAG_BITS = types.SimpleNamespace(**{m.name: int(m) for m in CleanupFlag})
STATUS_BITS = types.SimpleNamespace(**{m.name: int(m) for m in CleanupStatus})


# -- message header classification (header_opts.c) ------------------------------------

OPT_RECIP = 1 << 0
OPT_SENDER = 1 << 1
OPT_EXTRACT = 1 << 2
OPT_RR = 1 << 3  # Resent- header
OPT_MIME = 1 << 4
OPT_DROP = 1 << 5
OPT_XRECIP = OPT_RECIP | OPT_EXTRACT


@dataclass(frozen=True)
class HeaderOpts:
    name: str  # preferred capitalisation
    type: str  # lower-case name, "other" for a header known only from message_drop_headers
    flags: int


_HEADERS = (
    ("Apparently-To", OPT_RECIP), ("Bcc", OPT_XRECIP), ("Cc", OPT_XRECIP),
    ("Content-Description", OPT_MIME), ("Content-Disposition", OPT_MIME),
    ("Content-ID", OPT_MIME), ("Content-Length", 0), ("Content-Transfer-Encoding", OPT_MIME),
    ("Content-Type", OPT_MIME), ("Delivered-To", 0), ("Disposition-Notification-To", OPT_SENDER),
    ("Date", 0), ("Errors-To", OPT_SENDER), ("From", OPT_SENDER),
    ("Mail-Followup-To", OPT_SENDER), ("Message-Id", 0), ("MIME-Version", OPT_MIME),
    ("Received", 0), ("Reply-To", OPT_SENDER), ("Resent-Bcc", OPT_XRECIP | OPT_RR),
    ("Resent-Cc", OPT_XRECIP | OPT_RR), ("Resent-Date", OPT_RR),
    ("Resent-From", OPT_SENDER | OPT_RR), ("Resent-Message-Id", OPT_RR),
    ("Resent-Reply-To", OPT_RECIP | OPT_RR), ("Resent-Sender", OPT_SENDER | OPT_RR),
    ("Resent-To", OPT_XRECIP | OPT_RR), ("Return-Path", OPT_SENDER),
    ("Return-Receipt-To", OPT_SENDER), ("Sender", OPT_SENDER), ("To", OPT_XRECIP),
)


def header_table(drop: Iterable[str]) -> dict[str, HeaderOpts]:
    """The header table with message_drop_headers applied."""
    table = {name.lower(): HeaderOpts(name, name.lower(), flags) for name, flags in _HEADERS}
    for name in drop:
        key = name.lower()
        old = table.get(key)
        table[key] = (HeaderOpts(old.name, old.type, old.flags | OPT_DROP) if old
                      else HeaderOpts(name, "other", OPT_DROP))
    return table


def fold_address_header(header: str) -> str:
    """cleanup_fold_header(): a rewritten address list (one address per
    line, as the tokenizer writes it), as many addresses on a line as fit
    in 70 columns (bytes); the lines after the first still need their
    leading blank."""
    parts = header.split("\n")
    lines = [parts[0]]
    width = len(parts[0].encode("utf-8", "surrogateescape"))
    for part in parts[1:]:
        n = len(part.encode("utf-8", "surrogateescape"))
        if width + 1 + n < 70:
            lines[-1] = lines[-1] + " " + part
            width += 1 + n
        else:
            lines.append(part)
            width = n
    return "\n".join(lines)


def find_header_opts(table: dict[str, HeaderOpts], header: str) -> HeaderOpts | None:
    colon = header.find(":")
    if colon < 0:
        return None
    return table.get(header[:colon].rstrip(" \t").lower())


# -- dates -------------------------------------------------------------------------------

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


# (second, zone names, its local mail_date()): the last one made, for the
# messages of one second (time.tzname changes with a time.tzset())
_LAST_DATE: tuple[int, tuple[str, str], str] = (-1, ("", ""), "")


def mail_date(when: float, tz: tzinfo | None = None) -> str:
    """Postfix's mail_date(): ``Tue,  5 Mar 2024 10:00:00 +0100 (CET)`` —
    English names, a space-padded day (Postfix 3.7's ``%e``), the UTC
    offset and the zone name. *tz* None is the local time zone."""
    global _LAST_DATE
    if tz is None:
        second, zones, last = math.floor(when), _time.tzname, _LAST_DATE  # (one read: threads)
        if last[0] == second and last[1] is zones:
            return last[2]
        date = _mail_date(when, None)
        _LAST_DATE = (second, zones, date)
        return date
    return _mail_date(when, tz)


def _mail_date(when: float, tz: tzinfo | None) -> str:
    if tz is None:
        lt = _time.localtime(when)
        parts = (lt.tm_wday, lt.tm_mday, lt.tm_mon, lt.tm_year, lt.tm_hour, lt.tm_min,
                 lt.tm_sec)
        gmtoff = (lt.tm_gmtoff or 0) // 60
        zone = lt.tm_zone or ""
    else:
        dt = datetime.fromtimestamp(when, tz)
        parts = (dt.weekday(), dt.day, dt.month, dt.year, dt.hour, dt.minute, dt.second)
        off = dt.utcoffset()
        gmtoff = int(off.total_seconds()) // 60 if off is not None else 0
        zone = dt.tzname() or ""
    wday, mday, mon, year, hour, minute, sec = parts
    hours = int(gmtoff / 60)  # C division truncates toward zero
    return (f"{_DAYS[wday]}, {mday:2d} {_MONTHS[mon - 1]} {year} "
            f"{hour:02d}:{minute:02d}:{sec:02d} {hours:+03d}{abs(gmtoff) % 60:02d} ({zone})")


def message_id_stamp(when: float) -> str:
    """The time part of a Message-Id cleanup adds: YYYYMMDDhhmmss in UTC."""
    return _time.strftime("%Y%m%d%H%M%S", _time.gmtime(when))


def local_received(myhostname: str, mail_name: str, uid: int, queue_id: str,
                   when: float, tz: tzinfo | None = None) -> str:
    """The Received: header of a local submission, as Postfix's pickup
    writes it (two lines)."""
    return (f"Received: by {myhostname} ({mail_name}, from userid {uid})\n"
            f"\tid {queue_id}; {mail_date(when, tz)}")


# -- input ----------------------------------------------------------------------------------


@dataclass
class Submission:
    """The facts of one message that cleanup needs besides its content.

    ``recipients`` are as received (internal form); a :class:`Recipient`
    carries DSN NOTIFY/ORCPT and an original address. ``rewrite_context``
    is the header rewriting context the client gets: ``local`` for local
    submissions and for clients that match local_header_rewrite_clients
    (smtpd decides), ``remote`` otherwise. ``received`` is the Received:
    header smtpd made (lines joined by ``\\n``); for a local submission give
    ``userid`` instead and cleanup writes Postfix's. ``origin``, ``proto``
    and ``helo`` only go into log lines (``host[addr]``, ``ESMTP``).
    """

    queue_id: str
    sender: str
    recipients: Sequence[str | Recipient] = ()
    arrival_time: float = 0.0
    rewrite_context: str = LOCAL
    received: str | None = None
    userid: int | None = None
    submit_time: float | None = None  # date in the local Received: (maildrop file time)
    pickup_id: str | None = None  # id in the local Received: (default: queue_id)
    queue_time: float | None = None  # time in the added Message-Id (default: arrival_time)
    full_name: str | None = None
    extract_recipients: bool = False
    flags: CleanupFlag | None = None  # default: the service's (receive_override_options)
    origin: str = "local"
    proto: str | None = None
    helo: str | None = None
    tz: tzinfo | None = None
    encoding: str | None = None  # the client's word: "8bit" (BODY=8BITMIME), "7bit"


@dataclass
class CleanupResult:
    queue_id: str
    status: CleanupStatus
    reason: str | None  # DSN reason ("5.7.1 text") for CONT/DEFER, else None
    sender: str  # the rewritten envelope sender
    recipients: list[Recipient]
    message_id: str | None  # "<...>", as logged; None: none seen or added
    hold: bool = False
    discard: bool = False
    filter: str | None = None
    redirect: str | None = None
    encoding: str = "7bit"  # "8bit": 8-bit content, declared or seen (envelope "encoding")
    size: int = 0  # content bytes stored (lines with their LF)
    hop_count: int = 0
    bounce: bool = False  # the caller should bounce the message (local submission)
    log: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.status

    @property
    def temporary(self) -> bool:
        """A failure to try again later (4xx), not a rejection."""
        return status_detail(self.status)[0] // 100 == 4 or bool(
            self.reason and self.reason.startswith("4"))

    def detail(self) -> tuple[int, str, str]:
        return status_detail(self.status)

    def smtp_reply(self) -> str:
        """The reply smtpd gives for this result, as Postfix's smtpd does."""
        code, dsn, text = status_detail(self.status)
        if self.status & (CleanupStatus.CONT | CleanupStatus.DEFER) and self.reason \
                and not self.status & (CleanupStatus.BAD | CleanupStatus.WRITE):
            if self.status & CleanupStatus.DEFER:
                code = 451
            return f"{code} {self.reason}"
        if not self.status:
            return f"250 2.0.0 Ok: queued as {self.queue_id}"
        return f"{code} {dsn} Error: {text}"


__all__ = [
    "EXTERNAL",
    "INFO",
    "INTERNAL",
    "MASK_CANT_BOUNCE",
    "MASK_INCOMPLETE",
    "OPT_DROP",
    "OPT_EXTRACT",
    "OPT_MIME",
    "OPT_RECIP",
    "OPT_RR",
    "OPT_SENDER",
    "OPT_XRECIP",
    "WARNING",
    "CleanupFlag",
    "CleanupResult",
    "CleanupStatus",
    "HeaderOpts",
    "Submission",
    "find_header_opts",
    "fold_address_header",
    "header_table",
    "local_received",
    "mail_date",
    "message_id_stamp",
    "status_detail",
]

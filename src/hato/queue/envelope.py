"""The envelope of a queued message, and its encoding as queue file records.

An :class:`Envelope` is what cleanup writes before the content and what qmgr
and the delivery agents read back: sender, recipients (each with its
original form, DSN NOTIFY and ORCPT, and whether it is done), RET and ENVID,
arrival time, the client's attributes, the content size.

Strings are stored as UTF-8; bytes that are not UTF-8 (8-bit garbage in an
address) survive the round trip through ``surrogateescape``.

Attributes are free-form ``name=value`` pairs (Postfix's A records). Use the
``ATTR_*`` names below for the facts Postfix keeps, so that a queue file
reads the same to someone who knows Postfix's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from . import records as R

# DSN NOTIFY keywords and Postfix's bit mask for them (dsn_mask.h).
NEVER = "NEVER"
SUCCESS = "SUCCESS"
FAILURE = "FAILURE"
DELAY = "DELAY"
NOTIFY_BITS = {NEVER: 1, SUCCESS: 2, FAILURE: 4, DELAY: 8}
# DSN RET and Postfix's codes for it.
RET_FULL = "FULL"
RET_HDRS = "HDRS"
RET_CODES = {RET_FULL: 1, RET_HDRS: 2}

# Attribute names, as Postfix stores them in queue files (mail_proto.h).
ATTR_CLIENT_NAME = "log_client_name"
ATTR_CLIENT_ADDRESS = "log_client_address"
ATTR_CLIENT_PORT = "log_client_port"
ATTR_ORIGIN = "log_message_origin"  # name[address]
ATTR_HELO_NAME = "log_helo_name"
ATTR_PROTOCOL = "log_protocol_name"  # SMTP, ESMTP, ESMTPSA, ...
ATTR_SASL_METHOD = "sasl_method"
ATTR_SASL_USERNAME = "sasl_username"
ATTR_SASL_SENDER = "sasl_sender"
ATTR_REWRITE_CONTEXT = "rewrite_context"  # local or remote
ATTR_LOG_IDENT = "log_ident"
ATTR_ENCODING = "encoding"  # 7bit, 8bit
ATTR_SMTPUTF8 = "smtputf8"

_ENC = "utf-8"
_ERR = "surrogateescape"


def _b(text: str) -> bytes:
    return text.encode(_ENC, _ERR)


def _s(data: bytes) -> str:
    return data.decode(_ENC, _ERR)


@dataclass
class Recipient:
    """One envelope recipient.

    ``offset`` is the file offset of its R/D record once the message is on
    disk (the place :meth:`QueueFile.mark_done` flips); ``None`` before.
    """

    address: str
    orig_address: str = ""
    notify: frozenset[str] = frozenset()
    orcpt: str = ""  # DSN ORCPT as given: "rfc822;user@example.com"
    done: bool = False
    offset: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.notify:  # (no NOTIFY: the usual case)
            self.notify = frozenset()
            return
        self.notify = frozenset(n.upper() for n in self.notify)
        unknown = self.notify.difference(NOTIFY_BITS)  # a frozenset ("- keys()" gives a set)
        if unknown:
            raise ValueError(f"unknown DSN NOTIFY keyword(s): {', '.join(sorted(unknown))}")
        if NEVER in self.notify and len(self.notify) > 1:
            raise ValueError("NOTIFY=NEVER cannot be combined with other keywords")


@dataclass
class Envelope:
    """The envelope of one message.

    ``size`` is the length of the content in bytes, filled in by the store
    when the message is committed. ``warn_time`` is Postfix's W record: when
    the next delay warning is due (0: none); qmgr sets it to 0 once the
    warning is sent (see :meth:`QueueFile.update_warn_time`). ``hold`` on a
    message being written puts it in the hold queue when it is committed; on
    a message read back it says the message is in the hold queue.
    """

    queue_id: str = ""
    arrival_time: float = 0.0
    sender: str = ""
    recipients: list[Recipient] = field(default_factory=list)
    ret: str | None = None
    envid: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    size: int = 0
    hold: bool = False
    warn_time: int = 0
    full_name: str = ""

    def __post_init__(self) -> None:
        if self.ret is not None:
            self.ret = self.ret.upper()
            if self.ret not in RET_CODES:
                raise ValueError(f"bad DSN RET {self.ret!r}")

    @property
    def pending(self) -> list[Recipient]:
        """The recipients not yet done."""
        return [r for r in self.recipients if not r.done]

    @property
    def delay_warning_sent(self) -> bool:
        """False while a delay warning is still due (``warn_time`` set)."""
        return self.warn_time == 0


def notify_mask(notify: Iterable[str]) -> int:
    mask = 0
    for word in notify:
        mask |= NOTIFY_BITS[word]
    return mask


def notify_from_mask(mask: int) -> frozenset[str]:
    return frozenset(w for w, bit in NOTIFY_BITS.items() if mask & bit)


def format_time(t: float) -> tuple[int, int]:
    """Seconds and microseconds of *t*, as in Postfix's T record."""
    sec = int(t // 1)
    usec = round((t - sec) * 1_000_000)
    if usec >= 1_000_000:
        sec, usec = sec + 1, usec - 1_000_000
    return sec, usec


# -- encoding ---------------------------------------------------------------

SIZE_WIDTH = 15
SIZE_FIELDS = 5
SIZE_DATA_LENGTH = SIZE_FIELDS * SIZE_WIDTH + SIZE_FIELDS - 1  # "%15ld %15ld ..."
WARN_DATA_LENGTH = SIZE_WIDTH


def size_record_data(segment_size: int, data_offset: int, nrcpt: int,
                     flags: int = 0, content_length: int = 0) -> bytes:
    """Postfix's C record: message segment size (from the first content
    record to the X record), data offset (of the first content record),
    recipient count, queue manager flags, content length."""
    fields = (segment_size, data_offset, nrcpt, flags, content_length)
    return " ".join(f"{v:{SIZE_WIDTH}d}" for v in fields).encode()


def parse_size_record(data: bytes) -> tuple[int, int, int, int, int]:
    parts = data.split()
    if not 1 <= len(parts) <= SIZE_FIELDS or not all(p.isdigit() for p in parts):
        raise ValueError(f"bad size record {data!r}")
    values = [int(p) for p in parts] + [0] * (SIZE_FIELDS - len(parts))
    return values[0], values[1], values[2], values[3], values[4]


def warn_record_data(t: int) -> bytes:
    return f"{t:{SIZE_WIDTH}d}".encode()


def recipient_records(r: Recipient) -> list[tuple[str, bytes]]:
    """The records of one recipient, in Postfix's order (o, n, O, then R or
    D). The R/D record is the last one."""
    out: list[tuple[str, bytes]] = []
    if r.orcpt:
        out.append((R.DSN_ORCPT, _b(r.orcpt)))
    if r.notify:
        out.append((R.DSN_NOTIFY, str(notify_mask(r.notify)).encode()))
    if r.orig_address:
        out.append((R.ORCP, _b(r.orig_address)))
    out.append((R.DONE if r.done else R.RCPT, _b(r.address)))
    return out


def _attribute(name: str, value: str) -> bytes:
    if not name or "=" in name or "\n" in name:
        raise ValueError(f"bad attribute name {name!r}")
    return _b(f"{name}={value}")


def changed_attributes(before: dict[str, str],
                       after: dict[str, str]) -> list[tuple[str, bytes]]:
    """A records for what was added to or changed in *after* since
    *before* (a removed attribute cannot be taken back)."""
    return [(name, _attribute(name, value)) for name, value in after.items()
            if before.get(name) != value]


def envelope_records(env: Envelope, arrival: tuple[int, int]) -> list[tuple[str, bytes]]:
    """The envelope segment after the C record, up to but not including M.
    The W record (when ``warn_time`` is set) and the recipients come last."""
    out: list[tuple[str, bytes]] = [(R.TIME, f"{arrival[0]} {arrival[1]}".encode())]
    if env.full_name:
        out.append((R.FULL, _b(env.full_name)))
    for name, value in env.attributes.items():
        out.append((R.ATTR, _attribute(name, value)))
    out.append((R.FROM, _b(env.sender)))
    if env.ret:
        out.append((R.DSN_RET, str(RET_CODES[env.ret]).encode()))
    if env.envid:
        out.append((R.DSN_ENVID, _b(env.envid)))
    return out


# -- decoding ---------------------------------------------------------------

class EnvelopeBuilder:
    """Collects envelope and extracted-segment records into an Envelope."""


    def __init__(self) -> None:
        self.env = Envelope()
        self.warn_offset: int | None = None  # offset of the W record's data
        self._orcpt = ""
        self._notify = 0
        self._orig = ""

    def add(self, rec: R.Record) -> None:
        t, data = rec.type, rec.data
        env = self.env
        if t in (R.RCPT, R.DONE, R.DRCP):
            try:
                rcpt = Recipient(_s(data), self._orig, notify_from_mask(self._notify),
                                 self._orcpt, done=t != R.RCPT, offset=rec.offset)
            except ValueError as e:
                raise R.RecordError(str(e), rec.offset) from None
            env.recipients.append(rcpt)
            self._orcpt, self._notify, self._orig = "", 0, ""
        elif t == R.ORCP:
            self._orig = _s(data)
        elif t == R.DSN_NOTIFY:
            self._notify = _int(data, rec)
        elif t == R.DSN_ORCPT:
            self._orcpt = _s(data)
        elif t == R.ATTR:
            name, sep, value = _s(data).partition("=")
            if not sep or not name:
                raise R.RecordError(f"bad attribute record {data[:40]!r}", rec.offset)
            env.attributes[name] = value
        elif t == R.FROM:
            env.sender = _s(data)
        elif t == R.TIME:
            parts = data.split()
            if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
                raise R.RecordError(f"bad time record {data!r}", rec.offset)
            sec = int(parts[0])
            usec = int(parts[1]) if len(parts) > 1 else 0
            env.arrival_time = sec + usec / 1_000_000
        elif t == R.FULL:
            env.full_name = _s(data)
        elif t == R.DSN_RET:
            code = _int(data, rec)
            for word, number in RET_CODES.items():
                if number == code:
                    env.ret = word
        elif t == R.DSN_ENVID:
            env.envid = _s(data)
        elif t == R.WARN:
            env.warn_time = _int(data, rec)
            self.warn_offset = rec.offset + R.header_size(len(data))
        elif t == R.PTR:
            raise R.RecordError("pointer records are not supported", rec.offset)
        # Any other type is ignored: a newer writer's extension must not make
        # an older reader refuse the file.


def _int(data: bytes, rec: R.Record) -> int:
    text = data.strip()
    if not text.isdigit():
        raise R.RecordError(f"bad number in record {rec.type!r}: {data[:40]!r}", rec.offset)
    return int(text)

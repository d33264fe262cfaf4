"""The Sendmail 8 milter protocol as Postfix's milter client speaks it, without I/O.

The MTA drives the exchange; every packet is ``uint32 length`` (big-endian,
counting the command byte and the data) + ``char command`` + ``data``.
Strings are NUL-terminated.  This module has:

* the constants (``SMFIC_*`` commands, ``SMFIR_*`` replies, ``SMFIF_*``
  actions, ``SMFIP_*`` protocol flags, ``SMFIM_*`` macro stages);
* :class:`PacketDecoder`, an incremental decoder (feed bytes, take packets);
* ``encode_*`` for every MTA command (O C D H M R T U L N B E A Q K);
* :func:`parse_reply` for every milter reply (``a c d r t 4 y s p f q h i m +
  2 - e b`` and the ``O`` negotiation answer with its SETSYMLIST lists);
* negotiation as Postfix 3.x does it (:func:`parse_protocol`,
  :func:`negotiate`);
* :class:`EventReplies`, the reply loop of one event (Postfix's
  ``milter8_event``): progress, the final decision, quarantine, skip, the
  end-of-message modification requests, and Postfix's reply texts;
* the modification requests as :class:`Edit` dataclasses, and
  :class:`Verdict`, what a chain of milters decided.

Postfix's internal reply strings are used inside (``None`` = no news is good
news, ``"D"`` discard, ``"S"`` shutdown, ``"H<reason>"`` quarantine, or an
SMTP reply ``"4XX x.y.z text"`` / ``"5XX …"``); :class:`Verdict` is the
public form.  ``milter_list`` parsing lives in :mod:`hato.proto.milter_list`
and is re-exported here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# --- commands MTA → milter ---------------------------------------------------
SMFIC_ABORT = "A"
SMFIC_BODY = "B"
SMFIC_CONNECT = "C"
SMFIC_MACRO = "D"
SMFIC_BODYEOB = "E"
SMFIC_HELO = "H"
SMFIC_HEADER = "L"
SMFIC_MAIL = "M"
SMFIC_EOH = "N"
SMFIC_OPTNEG = "O"
SMFIC_QUIT = "Q"
SMFIC_RCPT = "R"
SMFIC_DATA = "T"
SMFIC_UNKNOWN = "U"
SMFIC_QUIT_NC = "K"

SMFIC_NAMES = {
    "A": "SMFIC_ABORT", "B": "SMFIC_BODY", "C": "SMFIC_CONNECT", "D": "SMFIC_MACRO",
    "E": "SMFIC_BODYEOB", "H": "SMFIC_HELO", "L": "SMFIC_HEADER", "M": "SMFIC_MAIL",
    "N": "SMFIC_EOH", "O": "SMFIC_OPTNEG", "Q": "SMFIC_QUIT", "R": "SMFIC_RCPT",
    "T": "SMFIC_DATA", "U": "SMFIC_UNKNOWN", "K": "SMFIC_QUIT_NC",
}

# --- replies milter → MTA ----------------------------------------------------
SMFIR_ADDRCPT = "+"
SMFIR_DELRCPT = "-"
SMFIR_ACCEPT = "a"
SMFIR_REPLBODY = "b"
SMFIR_CONTINUE = "c"
SMFIR_DISCARD = "d"
SMFIR_CONN_FAIL = "f"
SMFIR_CHGHEADER = "m"
SMFIR_PROGRESS = "p"
SMFIR_REJECT = "r"
SMFIR_TEMPFAIL = "t"
SMFIR_SHUTDOWN = "4"
SMFIR_ADDHEADER = "h"
SMFIR_INSHEADER = "i"
SMFIR_REPLYCODE = "y"
SMFIR_QUARANTINE = "q"
SMFIR_SKIP = "s"
SMFIR_CHGFROM = "e"
SMFIR_ADDRCPT_PAR = "2"
SMFIR_SETSYMLIST = "l"

SMFIR_NAMES = {
    "+": "SMFIR_ADDRCPT", "-": "SMFIR_DELRCPT", "a": "SMFIR_ACCEPT", "b": "SMFIR_REPLBODY",
    "c": "SMFIR_CONTINUE", "d": "SMFIR_DISCARD", "f": "SMFIR_CONN_FAIL",
    "m": "SMFIR_CHGHEADER", "p": "SMFIR_PROGRESS", "r": "SMFIR_REJECT",
    "t": "SMFIR_TEMPFAIL", "4": "SMFIR_SHUTDOWN", "h": "SMFIR_ADDHEADER",
    "i": "SMFIR_INSHEADER", "y": "SMFIR_REPLYCODE", "q": "SMFIR_QUARANTINE",
    "s": "SMFIR_SKIP", "e": "SMFIR_CHGFROM", "2": "SMFIR_ADDRCPT_PAR",
    "l": "SMFIR_SETSYMLIST",
}

# --- actions the milter may request (SMFIF_*) ----------------------------------
SMFIF_ADDHDRS = 0x01
SMFIF_CHGBODY = 0x02
SMFIF_ADDRCPT = 0x04
SMFIF_DELRCPT = 0x08
SMFIF_CHGHDRS = 0x10
SMFIF_QUARANTINE = 0x20
SMFIF_CHGFROM = 0x40
SMFIF_ADDRCPT_PAR = 0x80
SMFIF_SETSYMLIST = 0x100
#: What Postfix offers in its SMFIC_OPTNEG (every action, whatever the version).
MTA_ACTIONS = 0x1FF

# --- protocol flags (SMFIP_*) -------------------------------------------------
SMFIP_NOCONNECT = 0x1
SMFIP_NOHELO = 0x2
SMFIP_NOMAIL = 0x4
SMFIP_NORCPT = 0x8
SMFIP_NOBODY = 0x10
SMFIP_NOHDRS = 0x20
SMFIP_NOEOH = 0x40
SMFIP_NR_HDR = 0x80
SMFIP_NOHREPL = SMFIP_NR_HDR
SMFIP_NOUNKNOWN = 0x100
SMFIP_NODATA = 0x200
SMFIP_SKIP = 0x400
SMFIP_RCPT_REJ = 0x800
SMFIP_NR_CONN = 0x1000
SMFIP_NR_HELO = 0x2000
SMFIP_NR_MAIL = 0x4000
SMFIP_NR_RCPT = 0x8000
SMFIP_NR_DATA = 0x10000
SMFIP_NR_UNKN = 0x20000
SMFIP_NR_EOH = 0x40000
SMFIP_NR_BODY = 0x80000
SMFIP_HDR_LEADSPC = 0x100000

SMFIP_NOSEND_MASK = (SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT
                     | SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH | SMFIP_NOUNKNOWN
                     | SMFIP_NODATA)
SMFIP_NOREPLY_MASK = (SMFIP_NR_CONN | SMFIP_NR_HELO | SMFIP_NR_MAIL | SMFIP_NR_RCPT
                      | SMFIP_NR_DATA | SMFIP_NR_UNKN | SMFIP_NR_HDR | SMFIP_NR_EOH
                      | SMFIP_NR_BODY)

V2_PROTO_MASK = (SMFIP_NOCONNECT | SMFIP_NOHELO | SMFIP_NOMAIL | SMFIP_NORCPT
                 | SMFIP_NOBODY | SMFIP_NOHDRS | SMFIP_NOEOH)
V3_PROTO_MASK = V2_PROTO_MASK | SMFIP_NOUNKNOWN
V4_PROTO_MASK = V3_PROTO_MASK | SMFIP_NODATA
V6_PROTO_MASK = (V4_PROTO_MASK | SMFIP_SKIP | SMFIP_RCPT_REJ | SMFIP_NOREPLY_MASK
                 | SMFIP_HDR_LEADSPC)

#: ``milter_protocol`` words → events mask, in Postfix's (reverse numeric) order.
EVENT_MASKS: tuple[tuple[str, int], ...] = (
    ("6", V6_PROTO_MASK), ("4", V4_PROTO_MASK), ("3", V3_PROTO_MASK),
    ("2", V2_PROTO_MASK), ("no_header_reply", SMFIP_NOHREPL))
_VERSIONS = {"2": 2, "3": 3, "4": 4, "6": 6, "no_header_reply": 0}

# --- macro stages (SMFIM_*), as sent in the SETSYMLIST part of the O reply ------
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6
#: SMFIM_* → hato's stage names (also the ``MilterSettings`` macro fields).
MACRO_STAGES = {SMFIM_CONNECT: "connect", SMFIM_HELO: "helo", SMFIM_ENVFROM: "mail",
                SMFIM_ENVRCPT: "rcpt", SMFIM_DATA: "data", SMFIM_EOM: "eod",
                SMFIM_EOH: "eoh"}

# --- connect families ---------------------------------------------------------
SMFIA_UNKNOWN = "U"
SMFIA_UNIX = "L"
SMFIA_INET = "4"
SMFIA_INET6 = "6"

MILTER_CHUNK_SIZE = 65535          # body chunk size
MAX_DATA = 0x7FFFFFFF // 2          # Postfix: INT_MAX / 2

# --- Postfix's reply texts ----------------------------------------------------
REPLY_REJECT = "550 5.7.1 Command rejected"
REPLY_TEMPFAIL = "451 4.7.1 Service unavailable - try again later"
REPLY_DEF_REJECT = "550 5.5.0 Service unavailable"
REPLY_DEF_TEMPFAIL = "451 4.7.1 Service unavailable - try again later"
REPLY_CONF_ERROR = "451 4.3.5 Server configuration problem - try again later"
REPLY_DEF_QUARANTINE = "Hdefault_action"
REPLY_QUEUE_WRITE = "451 4.3.0 Queue file write error"

_ENC = ("utf-8", "surrogateescape")


def _b(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode(*_ENC)


def _s(data: bytes) -> str:
    return data.decode(*_ENC)


class MilterProtocolError(Exception):
    """A packet that does not parse; ``str(e)`` is Postfix's warning text
    (``{name}`` stands for the milter's name and is filled in by the caller)."""


# --- framing ------------------------------------------------------------------

def encode_packet(cmd: str, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd.encode("latin-1") + data


@dataclass(frozen=True)
class Packet:
    cmd: str
    data: bytes


class PacketDecoder:
    """Incremental decoder: ``feed(bytes)``, then ``next_packet()`` until None."""

    def __init__(self, max_data: int = MAX_DATA):
        self._buf = bytearray()
        self.max_data = max_data

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def pending(self) -> int:
        return len(self._buf)

    def next_packet(self) -> Packet | None:
        if len(self._buf) < 4:
            return None
        (length,) = struct.unpack(">I", self._buf[:4])
        check_length(length, self.max_data)
        if len(self._buf) < 4 + length:
            return None
        cmd = chr(self._buf[4])
        data = bytes(self._buf[5:4 + length])
        del self._buf[:4 + length]
        return Packet(cmd, data)


def check_length(length: int, max_data: int = MAX_DATA) -> None:
    """Postfix's checks on a reply packet length (raises with its warning)."""
    if length < 1:
        raise MilterProtocolError(f"milter {{name}}: bad packet length: {length}")
    if length > max_data:
        raise MilterProtocolError(
            f"milter {{name}}: unreasonable packet length: {length} > {max_data}")


# --- MTA commands -------------------------------------------------------------

def _strings(*items: str | bytes) -> bytes:
    return b"".join(_b(i) + b"\0" for i in items)


def encode_optneg(version: int, actions: int, protocol: int) -> bytes:
    return encode_packet(SMFIC_OPTNEG, struct.pack(">III", version, actions, protocol))


def encode_macros(event: str, pairs: list[tuple[str, str]]) -> bytes:
    """``D``: the event's command byte, then ``name\\0value\\0`` pairs (names as
    configured: ``j``, ``{daemon_name}``)."""
    flat: list[str] = []
    for name, value in pairs:
        flat += [name, value]
    return encode_packet(SMFIC_MACRO, event.encode("latin-1") + _strings(*flat))


def encode_connect(hostname: str, family: str, port: int = 0, address: str = "") -> bytes:
    if family == SMFIA_UNKNOWN:
        return encode_packet(SMFIC_CONNECT, _strings(hostname) + b"U")
    return encode_packet(SMFIC_CONNECT, _strings(hostname) + family.encode("latin-1")
                         + struct.pack(">H", port) + _strings(address))


def encode_helo(name: str) -> bytes:
    return encode_packet(SMFIC_HELO, _strings(name))


def encode_mail(args: list[str]) -> bytes:
    return encode_packet(SMFIC_MAIL, _strings(*args))


def encode_rcpt(args: list[str]) -> bytes:
    return encode_packet(SMFIC_RCPT, _strings(*args))


def encode_data() -> bytes:
    return encode_packet(SMFIC_DATA)


def encode_unknown(command: str) -> bytes:
    return encode_packet(SMFIC_UNKNOWN, _strings(command))


def encode_header(name: str, value: str) -> bytes:
    return encode_packet(SMFIC_HEADER, _strings(name, value))


def encode_eoh() -> bytes:
    return encode_packet(SMFIC_EOH)


def encode_body(chunk: bytes) -> bytes:
    return encode_packet(SMFIC_BODY, chunk)


def encode_eob() -> bytes:
    return encode_packet(SMFIC_BODYEOB)


def encode_abort() -> bytes:
    return encode_packet(SMFIC_ABORT)


def encode_quit() -> bytes:
    return encode_packet(SMFIC_QUIT)


def encode_quit_nc() -> bytes:
    return encode_packet(SMFIC_QUIT_NC)


def split_header(text: str, leadspc: bool) -> tuple[str, str]:
    """A logical header ``Name: value`` → the ``L`` packet's (name, value):
    blanks before the colon go, and so does one space (not a tab) after it
    unless the milter negotiated SMFIP_HDR_LEADSPC.  Continuation lines stay
    joined with ``\\n``, as Postfix sends them."""
    colon = text.find(":")
    if colon < 0:
        return text, ""
    name, value = text[:colon].rstrip(" \t"), text[colon + 1:]
    if not leadspc and value.startswith(" "):
        value = value[1:]
    return name, value


def body_chunks(lines, size: int = MILTER_CHUNK_SIZE):
    """Body lines (bytes, no terminator) → ``B`` chunks of exactly *size*
    bytes (the last one shorter), each line followed by CRLF, lines split
    across chunks as Postfix does."""
    buf = bytearray()
    for line in lines:
        buf += line
        buf += b"\r\n"
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


# --- modification requests ----------------------------------------------------

@dataclass(frozen=True)
class Edit:
    """Base of the end-of-message modification requests."""


@dataclass(frozen=True)
class AddHeader(Edit):
    """Append ``name:value`` after the last header.  *value* is the text that
    follows the colon, the leading space already resolved as Postfix does:
    a milter without SMFIP_HDR_LEADSPC gets ``" " + value``.  Multi-line
    values keep the milter's line breaks (``\\n`` or ``\\r\\n``)."""
    name: str
    value: str


@dataclass(frozen=True)
class InsertHeader(Edit):
    """Insert ``name:value`` (value as in :class:`AddHeader`) at *index*, the
    milter's 0-based position among *all* headers as delivered, including the
    MTA's own first Received: header (0 = before it).  Postfix inserts before
    header number ``index + 1`` (1-based), or appends when there is none."""
    index: int
    name: str
    value: str


@dataclass(frozen=True)
class ChangeHeader(Edit):
    """Replace the *index*-th (1-based; libmilter's 0 already made 1) header
    called *name* (case-insensitive), counting from the second header of the
    message (the MTA's own Received: header is never counted).  *value* as in
    :class:`AddHeader`; ``value is None`` means delete.  When there is no such
    header, a change appends ``name:value`` (a delete does nothing)."""
    index: int
    name: str
    value: str | None


@dataclass(frozen=True)
class AddRecipient(Edit):
    """``+`` (esmtp_args None) or ``2`` (esmtp_args "" or "NOTIFY=…")."""
    address: str
    esmtp_args: str | None = None


@dataclass(frozen=True)
class DeleteRecipient(Edit):
    address: str


@dataclass(frozen=True)
class ChangeSender(Edit):
    address: str
    esmtp_args: str = ""


@dataclass(frozen=True)
class ReplaceBody(Edit):
    """The new body: every ``b`` chunk concatenated, bytes as the milter sent
    them (CRLF kept).  :meth:`lines` splits it as Postfix writes it."""
    data: bytes

    def lines(self) -> list[bytes]:
        """Lines without terminators: split at LF, one CR before the LF
        dropped, a bare CR kept, a last line without CRLF still a line."""
        out = []
        parts = self.data.split(b"\n")
        for part in parts[:-1]:
            out.append(part[:-1] if part.endswith(b"\r") else part)
        if parts[-1]:
            out.append(parts[-1])
        return out


@dataclass(frozen=True)
class Quarantine(Edit):
    """Not produced by the chain (a quarantine is the message's
    :class:`Verdict`); kept for callers that record it among the edits."""
    reason: str


# --- replies ------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    """One decoded reply packet: *cmd* and its fields."""
    cmd: str
    text: str = ""                     # y: reply; q: reason
    edit: Edit | None = None
    extra: int = 0                     # bytes after a reply that takes none


@dataclass(frozen=True)
class Negotiation:
    version: int
    actions: int
    protocol: int
    macros: dict[int, str] = field(default_factory=dict)   # SMFIM_* → list
    unknown_stages: tuple[int, ...] = ()


class _Fields:
    """Reads Postfix's data items from a packet, raising its warnings."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def long(self) -> int:
        if self.left < 4:
            raise MilterProtocolError("milter {name}: input packet too short for network long")
        (value,) = struct.unpack(">I", self.data[self.pos:self.pos + 4])
        self.pos += 4
        return value

    def string(self) -> str:
        if self.left < 1:
            raise MilterProtocolError("milter {name}: packet too short for string")
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise MilterProtocolError(
                "milter8_read_data: milter {name}: missing string null termimator")
        text = _s(self.data[self.pos:end])
        self.pos = end + 1
        return text

    def buffer(self) -> bytes:
        rest = self.data[self.pos:]
        self.pos = len(self.data)
        return rest

    def end(self) -> None:
        if self.left > 0:
            raise MilterProtocolError(f"milter8_read_data: left-over data {self.left} bytes")


def _cstr(data: bytes) -> str:
    """A C string from a raw buffer: up to the first NUL."""
    end = data.find(b"\0")
    return _s(data if end < 0 else data[:end])


def parse_negotiation(data: bytes) -> Negotiation:
    f = _Fields(data)
    version, actions, protocol = f.long(), f.long(), f.long()
    macros: dict[int, str] = {}
    unknown: list[int] = []
    while f.left > 0:
        stage = f.long()
        names = f.string()
        if stage in MACRO_STAGES:
            macros[stage] = names
        else:
            unknown.append(stage)
    return Negotiation(version, actions, protocol, macros, tuple(unknown))


def parse_reply(cmd: str, data: bytes, leadspc: bool = False) -> Reply:
    """Decode one reply.  Modification requests become :class:`Edit` objects
    with Postfix's normalisation (header space, change index 0 → 1, insert
    index kept as sent); replies that take no data report ``extra`` bytes.
    Raises :class:`MilterProtocolError` for a short or overlong packet."""
    space = "" if leadspc else " "
    f = _Fields(data)
    if cmd in "acdrt4sp":
        return Reply(cmd, extra=len(data))
    if cmd == SMFIR_REPLYCODE:
        return Reply(cmd, text=_cstr(data))
    if cmd == SMFIR_QUARANTINE:
        return Reply(cmd, text=_cstr(data))
    if cmd == SMFIR_ADDHEADER:
        name, value = f.string(), f.string()
        f.end()
        return Reply(cmd, edit=AddHeader(name, space + value))
    if cmd == SMFIR_INSHEADER:
        index, name, value = f.long(), f.string(), f.string()
        f.end()
        return Reply(cmd, edit=InsertHeader(index, name, space + value))
    if cmd == SMFIR_CHGHEADER:
        index, name, value = f.long(), f.string(), f.string()
        f.end()
        return Reply(cmd, edit=ChangeHeader(index or 1, name,
                                            space + value if value else None))
    if cmd == SMFIR_ADDRCPT:
        address = f.string()
        f.end()
        return Reply(cmd, edit=AddRecipient(address))
    if cmd in (SMFIR_ADDRCPT_PAR, SMFIR_CHGFROM):
        address = f.string()
        args = f.string() if f.left > 0 else ""
        f.end()
        if cmd == SMFIR_CHGFROM:
            return Reply(cmd, edit=ChangeSender(address, args))
        return Reply(cmd, edit=AddRecipient(address, args))
    if cmd == SMFIR_DELRCPT:
        address = f.string()
        f.end()
        return Reply(cmd, edit=DeleteRecipient(address))
    if cmd == SMFIR_REPLBODY:
        return Reply(cmd, edit=ReplaceBody(f.buffer()))
    return Reply(cmd, extra=len(data))


def valid_reply_code(text: str) -> bool:
    """Postfix's check of a ``y`` reply: ``[45]DD[ -]`` and, when an enhanced
    code follows, its class equals the reply's first digit."""
    t = text + "\0" * 5
    return (t[0] in "45" and t[1].isdigit() and t[2].isdigit() and t[3] in " -"
            and (not t[4].isdigit() or t[4] == t[0]))


def unescape_percent(text: str) -> str:
    """Sendmail treats a ``y`` reply as a format: ``%%`` → ``%``, a single
    ``%`` is dropped (Postfix's loop, including a trailing lone ``%``)."""
    if "%" not in text:
        return text
    out, i = [], 0
    while i < len(text):
        ch = text[i]
        i += 1
        if ch == "%":
            if i >= len(text):
                break
            ch = text[i]
            i += 1
        out.append(ch)
    return "".join(out)


def soft_bounce_reply(text: str) -> str:
    """``soft_bounce = yes``: every 5XX line becomes 4XX (and a 5.x.x code 4.x.x)."""
    lines = text.split("\r\n")
    for n, line in enumerate(lines):
        if line.startswith("5"):
            line = "4" + line[1:]
            if len(line) > 4 and line[4] == "5":
                line = line[:4] + "4" + line[5:]
            lines[n] = line
    return "\r\n".join(lines)


# --- negotiation ----------------------------------------------------------------

class MilterConfigError(Exception):
    """``milter_protocol`` or endpoint that Postfix refuses at connect time;
    ``str(e)`` is its warning text with ``{name}`` for the milter."""


def parse_protocol(value: str) -> tuple[int, int]:
    """``milter_protocol`` (``"6"``, ``"2 no_header_reply"``) → (version,
    events offered)."""
    version, events = 0, 0
    masks = dict(EVENT_MASKS)
    for word in value.replace(",", " ").split():
        if word not in masks or (_VERSIONS[word] and version):
            raise MilterConfigError(f"milter {{name}}: bad protocol information: {word}")
        version = _VERSIONS[word] or version
        events |= masks[word]
    if not events or not version:
        raise MilterConfigError("milter {name}: no protocol version information")
    return version, events


@dataclass
class Negotiated:
    version: int
    actions: int
    events: int                 # the milter's SMFIP_* answer (ev_mask)
    np_mask: int                # events outside the protocol version: never sent
    macros: dict[str, str]      # the milter's own lists: stage name → names
    warnings: list[str]

    @property
    def leadspc(self) -> bool:
        return bool(self.events & SMFIP_HDR_LEADSPC)


def negotiate(my_version: int, my_events: int, cmd: str, data: bytes) -> Negotiated:
    """Check the milter's answer to our SMFIC_OPTNEG as Postfix does; raise
    :class:`MilterProtocolError` (communication error) with its warning."""
    if cmd != SMFIC_OPTNEG:
        raise MilterProtocolError(f'milter {{name}}: unexpected reply "{cmd}" in initial handshake')
    try:
        neg = parse_negotiation(data)
    except MilterProtocolError as e:
        raise MilterProtocolError(f"{e}\nmilter {{name}}: read error in initial handshake") from None
    if neg.version > my_version:
        raise MilterProtocolError(f"milter {{name}}: protocol version {neg.version} conflict"
                                  f" with MTA protocol version {my_version}")
    if neg.actions & MTA_ACTIONS != neg.actions:
        raise MilterProtocolError(f"milter {{name}}: request mask 0x{neg.actions:x} conflict"
                                  f" with MTA request mask 0x{MTA_ACTIONS:x}")
    warnings = []
    np_mask = SMFIP_NOSEND_MASK & ~my_events
    if neg.version < my_version:
        for word, mask in EVENT_MASKS:
            if word.isdigit() and int(word) <= neg.version:
                np_mask |= SMFIP_NOSEND_MASK & ~mask
                break
        else:
            warnings.append(f"milter {{name}}: unexpected protocol version {neg.version}")
    for stage in neg.unknown_stages:
        warnings.append(f"milter {{name}}: ignoring unknown macro type {stage}")
    macros = {MACRO_STAGES[k]: v for k, v in neg.macros.items()}
    return Negotiated(neg.version, neg.actions, neg.protocol, np_mask, macros, warnings)


# --- one event's replies (milter8_event) ------------------------------------------

#: event → the SMFIP_NO* flag that lets the milter refuse it, and the NR_* flag.
EVENT_FLAGS = {
    SMFIC_CONNECT: (SMFIP_NOCONNECT, SMFIP_NR_CONN),
    SMFIC_HELO: (SMFIP_NOHELO, SMFIP_NR_HELO),
    SMFIC_MAIL: (SMFIP_NOMAIL, SMFIP_NR_MAIL),
    SMFIC_RCPT: (SMFIP_NORCPT, SMFIP_NR_RCPT),
    SMFIC_DATA: (SMFIP_NODATA, SMFIP_NR_DATA),
    SMFIC_UNKNOWN: (SMFIP_NOUNKNOWN, SMFIP_NR_UNKN),
    SMFIC_HEADER: (SMFIP_NOHDRS, SMFIP_NR_HDR),
    SMFIC_EOH: (SMFIP_NOEOH, SMFIP_NR_EOH),
    SMFIC_BODY: (SMFIP_NOBODY, SMFIP_NR_BODY),
    SMFIC_BODYEOB: (0, 0),
}


@dataclass
class Outcome:
    """How one event ended.  *kind*: ``continue accept discard reject
    tempfail shutdown reply skip`` (decisions), ``comm_error`` or
    ``conf_error`` (the milter falls to its default action) or
    ``discard_refused`` (discard at connect/helo: warn, nothing else)."""
    kind: str
    text: str | None = None                 # y: the reply (validated, unescaped)
    quarantine: str | None = None           # "H<reason>" when q was seen
    edits: list[Edit] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


class EventReplies:
    """Feed the reply packets of one event; :meth:`receive` returns an
    :class:`Outcome` when the event is decided, None while more are due."""

    def __init__(self, event: str, *, leadspc: bool = False, event_len: int = 0,
                 soft_bounce: bool = False):
        self.event = event
        self.leadspc = leadspc
        self.event_len = event_len
        self.soft_bounce = soft_bounce
        self.quarantine: str | None = None
        self.edits: list[Edit] = []
        self._body: bytearray | None = None
        self._body_done = False

    def _finish_body(self) -> None:
        if self._body is not None:
            self.edits.append(ReplaceBody(bytes(self._body)))
            self._body = None
            self._body_done = True

    def _out(self, kind: str, text: str | None = None, warning: str | None = None) -> Outcome:
        self._finish_body()
        return Outcome(kind, text, self.quarantine, self.edits,
                       [warning] if warning else [])

    def receive(self, cmd: str, data: bytes) -> Outcome | None:
        name = SMFIR_NAMES.get(cmd)
        if self._body is not None and cmd != SMFIR_REPLBODY:
            self._finish_body()
        try:
            reply = parse_reply(cmd, data, self.leadspc)
        except MilterProtocolError as e:
            return self._out("comm_error", warning=str(e))
        if cmd in "pcadrt4s" and reply.extra:
            return self._out("comm_error", warning=(
                f"milter {{name}}: reply {name or 'unknown'} was followed by "
                f"{self.event_len} data bytes"))
        if cmd == SMFIR_PROGRESS:
            return None
        kinds = {SMFIR_CONTINUE: "continue", SMFIR_ACCEPT: "accept",
                 SMFIR_REJECT: "reject", SMFIR_TEMPFAIL: "tempfail",
                 SMFIR_SHUTDOWN: "shutdown", SMFIR_SKIP: "skip"}
        if cmd in kinds:
            return self._out(kinds[cmd])
        if cmd == SMFIR_DISCARD:
            if self.event in (SMFIC_CONNECT, SMFIC_HELO):
                return self._out("discard_refused", warning=(
                    "milter {name}: DISCARD action is not allowed for connect or helo"))
            return self._out("discard")
        if cmd == SMFIR_REPLYCODE:
            text = reply.text
            if not valid_reply_code(text):
                return self._out("conf_error", warning=f"milter {{name}}: malformed reply: {text}")
            text = unescape_percent(text)
            if self.soft_bounce:
                text = soft_bounce_reply(text)
            return self._out("reply", text)
        if cmd == SMFIR_QUARANTINE:
            self.quarantine = "H" + reply.text[:100]
            return None
        if self.event == SMFIC_BODYEOB and reply.edit is not None:
            edit = reply.edit
            if isinstance(edit, ChangeHeader) and not edit.name:
                return self._out("conf_error", warning="milter {name}: null change header name")
            if isinstance(edit, InsertHeader) and edit.index + 1 < 1:
                return self._out("conf_error", warning=(
                    f"milter {{name}}: bad insert header index: {edit.index}"))
            if isinstance(edit, ReplaceBody):
                if self._body_done:
                    return self._out("conf_error", warning=(
                        "milter {name}: body replacement requests can't currently be"
                        " mixed with other requests"))
                if self._body is None:
                    self._body = bytearray()
                self._body += edit.data
                return None
            self.edits.append(edit)
            return None
        return self._out("comm_error", warning=(
            f"milter {{name}}: unexpected filter response {name or '(unknown filter reply)'}"
            f" after event {SMFIC_NAMES.get(self.event, '(unknown MTA event)')}"))


# --- verdicts -------------------------------------------------------------------

@dataclass(frozen=True)
class Verdict:
    """What the chain decided for one event.

    *action*: ``continue`` (no news is good news: also what a milter's
    accept looks like to the chain), ``reject`` (5XX *reply*), ``tempfail``
    (4XX *reply*), ``discard``, ``quarantine`` (hold; *reason*) or
    ``shutdown`` (the milter asked to close the connection: smtpd answers
    ``421 4.7.0 <myhostname> Server closing connection`` and hangs up).
    *reply* may be multi-line, lines separated by CRLF.  *raw* is Postfix's
    internal string."""
    action: str
    reply: str | None = None
    reason: str | None = None

    @classmethod
    def from_raw(cls, raw: str | None) -> "Verdict":
        if raw is None:
            return cls("continue")
        if raw == "D":
            return cls("discard")
        if raw == "S":
            return cls("shutdown")
        if raw.startswith("H"):
            return cls("quarantine", reason=raw[1:])
        return cls("tempfail" if raw.startswith("4") else "reject", reply=raw)

    @property
    def raw(self) -> str | None:
        return {"continue": None, "discard": "D", "shutdown": "S"}.get(
            self.action, "H" + (self.reason or "") if self.action == "quarantine"
            else self.reply)

    @property
    def ok(self) -> bool:
        return self.action == "continue"


from .milter_list import (  # noqa: E402,F401  (re-exported)
    MilterSpec, macro_defaults, parse_milter_list, split_macro_names)

"""Typed records: the grammar of a queue file.

A queue file is a sequence of records, as in Postfix (``record.c``): one
type byte, the data length as a little-endian base-128 varint (the low seven
bits first, the high bit set on every byte but the last), then that many
bytes of data. The type letters are Postfix's (``rec_type.h``); hato adds
none of its own. See docs/queue.md for the layout of a whole file.

:class:`RecordDecoder` is a push decoder (feed bytes, take records) that
works the same whether it is fed a whole file or one byte at a time;
:func:`read_records` drives it over a file. A truncated or garbled input
raises :class:`RecordError` with the offset of the bad record; the decoder
always makes progress or asks for more bytes, so it cannot hang, and a
length larger than ``max_size`` is refused before anything is allocated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple

# Postfix's record types (rec_type.h), as one-character strings.
SIZE = "C"  # first record: fixed-width sizes and offsets, updated in place
TIME = "T"  # arrival time "sec usec"
CTIME = "c"  # create time (read and ignored)
FULL = "F"  # sender full name
INSP = "I"  # inspector transport (read and ignored)
FILT = "L"  # content filter (same letter as CONT; only in the envelope segment)
FROM = "S"  # sender; empty for the null sender
DONE = "D"  # recipient already delivered
RCPT = "R"  # recipient still to deliver
ORCP = "O"  # original recipient (before rewriting)
DRCP = "/"  # canceled recipient (treated as done)
WARN = "W"  # time of the next delay warning, fixed width, updated in place
ATTR = "A"  # name=value attribute
KILL = "K"  # killed record (ignored)
RDR = ">"  # redirect target (read and ignored)
FLGS = "f"  # cleanup flags (read and ignored)
DELAY = "d"  # cleanup delay (read and ignored)
MESG = "M"  # start of the message content
CONT = "L"  # content: a piece of a line that continues in the next record
NORM = "N"  # content: the last piece of a line (a newline follows it)
DTXT = "w"  # padding (ignored)
XTRA = "X"  # start of the extracted segment (after the content)
RRTO = "r"  # return-receipt (read and ignored)
ERTO = "e"  # errors-to (read and ignored)
PRIO = "P"  # priority (read and ignored)
PTR = "p"  # pointer record (hato writes none; a file that has one is refused)
VERP = "V"  # VERP delimiters (read and ignored)
DSN_RET = "<"  # DSN RET: 1 = FULL, 2 = HDRS
DSN_ENVID = "i"  # DSN ENVID
DSN_ORCPT = "o"  # DSN ORCPT of the next recipient, "type;address"
DSN_NOTIFY = "n"  # DSN NOTIFY mask of the next recipient
MILT_COUNT = "m"  # milter count (read and ignored)
END = "E"  # terminator: a file without it is never delivered

NAMES = {
    SIZE: "size", TIME: "time", CTIME: "create_time", FULL: "fullname",
    INSP: "inspector_transport", FROM: "sender", DONE: "done", RCPT: "recipient",
    ORCP: "original_recipient", DRCP: "canceled_recipient", WARN: "warning_message_time",
    ATTR: "named_attribute", KILL: "killed", RDR: "redirect_to", FLGS: "flags",
    DELAY: "cleanup_delay", MESG: "message_content", CONT: "unterminated_text",
    NORM: "regular_text", DTXT: "padding", XTRA: "message_extracted", RRTO: "return_receipt",
    ERTO: "errors_to", PRIO: "priority", PTR: "pointer_record", VERP: "verp_delimiters",
    DSN_RET: "dsn_return_flags", DSN_ENVID: "dsn_envelope_id", DSN_ORCPT: "dsn_original_recipient",
    DSN_NOTIFY: "dsn_notify_flags", MILT_COUNT: "milter_count", END: "message_end",
}

#: The largest record hato writes; content lines longer than this are cut
#: into CONT pieces. Readers accept up to DEFAULT_MAX_SIZE.
MAX_WRITE_SIZE = 64 * 1024
DEFAULT_MAX_SIZE = 4 * 1024 * 1024
#: Postfix stops at 32 length bits; five varint bytes carry 35.
_MAX_LENGTH_BYTES = 5

_SHORT_HEADERS = {
    t: [bytes((ord(t), n)) for n in range(128)] for t in (NORM, CONT)
}


class RecordError(ValueError):
    """A queue file that is truncated or garbled."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} (at offset {offset})")
        self.reason = message
        self.offset = offset


class TruncatedRecord(RecordError):
    """The input ended inside a record."""


class Record(NamedTuple):
    type: str
    data: bytes
    offset: int  # file offset of the type byte


def encode_length(n: int) -> bytes:
    if n < 0:
        raise ValueError(f"negative record length {n}")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_record(rtype: str, data: bytes = b"") -> bytes:
    code = ord(rtype)
    if not 0 < code < 256:
        raise ValueError(f"bad record type {rtype!r}")
    n = len(data)
    if n < 128:
        return bytes((code, n)) + data
    return bytes((code,)) + encode_length(n) + data


def header_size(n: int) -> int:
    """Bytes taken by the type and length of a record of *n* data bytes."""
    size = 2
    while n >= 128:
        n >>= 7
        size += 1
    return size


def encode_content(chunk: bytes, max_size: int = MAX_WRITE_SIZE) -> bytes:
    """Content bytes as NORM/CONT records, Postfix's way: every line ending
    in a newline becomes a NORM record (without the newline), the unfinished
    tail of the chunk a CONT record that the next chunk continues. Lines
    longer than *max_size* are cut into CONT pieces. Feeding a message in any
    split gives records that decode to exactly the same bytes."""
    if not chunk:
        return b""
    lines = chunk.split(b"\n")
    last = lines.pop()
    parts: list[bytes] = []
    add = parts.append
    norm = _SHORT_HEADERS[NORM]
    short = min(128, max_size + 1)
    for line in lines:
        n = len(line)
        if n < short:
            add(norm[n])
            add(line)
        elif n <= max_size:
            add(b"N" + encode_length(n))
            add(line)
        else:
            _add_long(parts, line, NORM, max_size)
    if last:
        _add_long(parts, last, CONT, max_size)
    return b"".join(parts)


def _add_long(parts: list[bytes], line: bytes, final: str, max_size: int) -> None:
    for start in range(0, len(line), max_size):
        piece = line[start: start + max_size]
        last = start + max_size >= len(line)
        parts.append(encode_record(final if last else CONT, piece))


def content_bytes(rtype: str, data: bytes) -> bytes:
    """The message bytes one content record stands for."""
    return data + b"\n" if rtype == NORM else data


class RecordDecoder:
    """Push decoder. :meth:`feed` bytes, then call :meth:`next` until it
    returns ``None`` (more bytes needed). :meth:`close` says the input ended
    and raises :class:`TruncatedRecord` when it ended inside a record."""

    def __init__(self, offset: int = 0, max_size: int = DEFAULT_MAX_SIZE):
        self._buf = bytearray()
        self._pos = 0
        self._offset = offset  # file offset of self._buf[0]
        self.max_size = max_size

    @property
    def offset(self) -> int:
        """File offset of the next record to be decoded."""
        return self._offset + self._pos

    @property
    def pending(self) -> int:
        """Bytes fed but not yet returned as records."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._offset += self._pos
            self._pos = 0
        self._buf += data

    def next(self) -> Record | None:
        buf = self._buf
        pos = self._pos
        end = len(buf)
        if pos >= end:
            return None
        start = pos
        code = buf[pos]
        if code == 0:  # never written: encode_record() refuses type 0
            raise RecordError("illegal record type 0", self._offset + start)
        pos += 1
        length = 0
        shift = 0
        while True:
            if pos >= end:
                return None
            byte = buf[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift >= 7 * _MAX_LENGTH_BYTES:
                raise RecordError(f"too many length bytes, record type {code}",
                                  self._offset + start)
        if length > self.max_size:
            raise RecordError(f"illegal length {length}, record type {code}",
                              self._offset + start)
        if end - pos < length:
            return None
        data = bytes(buf[pos: pos + length])
        self._pos = pos + length
        return Record(chr(code), data, self._offset + start)

    def __iter__(self) -> Iterator[Record]:
        while (rec := self.next()) is not None:
            yield rec

    def close(self) -> None:
        if self.pending:
            raise TruncatedRecord(f"input ends inside a record ({self.pending} bytes)",
                                  self.offset)


_N = ord(NORM)
_L = ord(CONT)
_W = ord(DTXT)


def decode_content(buf: bytes, start: int, out: list[bytes], final: bool) -> int:
    """Fast path for the content segment: decode the NORM/CONT/DTXT records
    of ``buf[start:]`` into message bytes appended to *out*; return the
    offset in *buf* where an incomplete record begins (``len(buf)`` when
    all was used). With *final*, an incomplete record is an error. Any other
    record type raises :class:`RecordError` with the offset in *buf*."""
    i = start
    n = len(buf)
    add = out.append
    nl = b"\n"
    while i < n:
        t = buf[i]
        if i + 1 >= n:
            break
        length = buf[i + 1]
        j = i + 2
        if length & 0x80:
            length &= 0x7F
            shift = 7
            while True:
                if j >= n:
                    length = -1
                    break
                byte = buf[j]
                j += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift >= 7 * _MAX_LENGTH_BYTES:
                    raise RecordError(f"too many length bytes, record type {t}", i)
            if length < 0:
                break
        k = j + length
        if k > n:
            if length > DEFAULT_MAX_SIZE:
                raise RecordError(f"illegal length {length}, record type {t}", i)
            break
        if t == _N:
            add(buf[j:k])
            add(nl)
        elif t == _L:
            add(buf[j:k])
        elif t != _W:
            raise RecordError(f"unexpected record {chr(t)!r} in the content", i)
        i = k
    if final and i < n:
        raise TruncatedRecord(f"input ends inside a record ({n - i} bytes)", i)
    return i


def decode_records(data: bytes, offset: int = 0,
                   max_size: int = DEFAULT_MAX_SIZE) -> list[Record]:
    """Decode a whole buffer; raises :class:`RecordError` on a bad or
    truncated record."""
    dec = RecordDecoder(offset, max_size)
    dec.feed(data)
    out = list(dec)
    dec.close()
    return out


ReadAt = Callable[[int, int], bytes]  # (offset, size) -> bytes, b"" at end of file


def read_records(read_at: ReadAt, offset: int = 0, *, block: int = 64 * 1024,
                 max_size: int = DEFAULT_MAX_SIZE) -> Iterator[Record]:
    """Records from a file, starting at *offset*, read *block* bytes at a
    time through *read_at*. Stops at the end of the file; raises
    :class:`TruncatedRecord` when the file ends inside a record. The caller
    may stop early (after END, say) without reading further."""
    dec = RecordDecoder(offset, max_size)
    pos = offset
    while True:
        rec = dec.next()
        if rec is not None:
            yield rec
            continue
        data = read_at(pos, block)
        if not data:
            dec.close()
            return
        pos += len(data)
        dec.feed(data)

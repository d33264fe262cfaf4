"""``hato postcat``: show queue file contents, as Postfix's postcat(1).

    postcat [-bdehoqrv] [-c config_dir] [-s offset] [files...]

Prints the named queue files (``-q``: the named queue ids, searched for in
maildrop, incoming, active, deferred, hold and saved, in that order) in
Postfix's layout, one line per record::

    *** ENVELOPE RECORDS deferred/A/A0428256004 ***
    message_size:             293             769               2               0             293
    message_arrival_time: Sun Nov 29 16:36:44 2026
    named_attribute: log_client_name=client.example.com
    sender: sender@example.com
    dsn_notify_flags: 6
    original_recipient: One@Example.org
    done_recipient: one@example.org
    recipient: two@example.org
    *** MESSAGE CONTENTS deferred/A/A0428256004 ***
    Subject: ...
    *** HEADER EXTRACTED deferred/A/A0428256004 ***
    *** MESSAGE FILE END deferred/A/A0428256004 ***

Without a file name it reads standard input (shown as ``stdin``).
``-e`` shows the envelope records, ``-h`` the header, ``-b`` the body (the
first line that is neither a header nor its continuation, on); without any
of them all three. ``-o`` prefixes each record with its file offset
(``%9lu``), ``-d`` with its decimal type (``%3d``); ``-s offset`` starts at
that offset; ``-v`` also shows the text record types, padding and pointer
records; ``-r`` does not follow pointer records and goes on past the end
record. Message bytes are printed as they are stored, 8-bit and all.

Errors are Postfix's: ``bad mail queue ID: X``, ``open queue file X: No such
file or directory``; a garbled record gives a warning with the reason and
``fatal: record read error``; exit status 1 after a fatal error. A file that
ends without its end record is shown as far as it goes, with a warning.
"""

from __future__ import annotations

import errno
import getopt
import os
import sys
import time
from dataclasses import dataclass
from typing import BinaryIO

from ..queue import records as R
from ..queue.directories import ACTIVE, DEFERRED, HOLD, INCOMING, MAILDROP, SAVED
from ..queue.ids import MAX_ID_LENGTH, hash_dirs, is_queue_id
from .common import Fatal, Messages, load_config, run

OPTIONS = "bc:dehoqrs:v"
USAGE = ("usage: postcat [-b (body text)] [-c config_dir] [-d (decimal record type)] "
         "[-e (envelope records)] [-h (header text)] [-q (access queue)] [-v] [file(s)...]")

#: Where ``-q`` looks, in Postfix's order.
SEARCH_QUEUES = (MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD, SAVED)

#: Postfix's printable record names (rec_type_name()); others print as
#: ``unknown_record_type``. L is ``content_filter`` in the envelope and
#: ``unterminated_text`` in the content.
RECORD_NAMES = {
    R.SIZE: b"message_size", R.TIME: b"message_arrival_time",
    R.CTIME: b"queue_file_create_time", R.FULL: b"sender_fullname",
    R.INSP: b"content_inspector", R.FILT: b"content_filter", R.FROM: b"sender",
    R.DONE: b"done_recipient", R.RCPT: b"recipient", R.ORCP: b"original_recipient",
    R.DRCP: b"canceled_recipient", R.WARN: b"warning_message_time",
    R.ATTR: b"named_attribute", R.KILL: b"killed_record", R.RDR: b"redirect_to",
    R.FLGS: b"flags", R.MESG: b"message_content", R.NORM: b"regular_text",
    R.DTXT: b"padding", R.XTRA: b"message_extracted", R.RRTO: b"return_receipt",
    R.ERTO: b"errors_to", R.PRIO: b"priority", R.PTR: b"pointer_record",
    R.VERP: b"verp_delimiters", R.DSN_RET: b"dsn_return_flags",
    R.DSN_ENVID: b"dsn_envelope_id", R.DSN_ORCPT: b"dsn_original_recipient",
    R.DSN_NOTIFY: b"dsn_notify_flags", R.END: b"message_end",
}
UNKNOWN_NAME = b"unknown_record_type"
#: Record types a queue file may start with (Postfix's REC_TYPE_ENVELOPE).
ENVELOPE_TYPES = frozenset(b"MCTcFILSDRO/WVA>K<ion")
#: The attribute postcat shows as a time.
ATTR_CREATE_TIME = b"create_time"
#: Postfix's rec_goto() gives up after this many backward pointer jumps.
REVERSE_JUMP_LIMIT = 10000

_SPACE = b" \t\n\v\f\r"
_CHUNK = 1024 * 1024


@dataclass
class Flags:
    envelope: bool = False
    header: bool = False
    body: bool = False
    offsets: bool = False
    decimal: bool = False
    raw: bool = False
    verbose: int = 0
    start_offset: int = 0


class RecordReadError(Exception):
    """A record postcat cannot read; the message is Postfix's warning text."""


class RecordStream:
    """Postfix's rec_get_raw() over a binary stream: type byte, base-128
    length, data; any length (read in pieces, so a garbled length costs no
    memory). ``offset`` is the file offset of the next record."""

    def __init__(self, fp: BinaryIO | _Prepend, path: str, offset: int = 0):
        self.fp = fp
        self.path = path
        self.offset = offset

    def get(self) -> tuple[int, bytes] | None:
        """The next (type, data), ``None`` at the end of the input; raises
        :class:`RecordReadError`."""
        head = self.fp.read(1)
        if not head:
            return None
        rtype = head[0]
        length = 0
        shift = 0
        used = 1
        while True:
            if shift >= 32:
                raise RecordReadError(f"{self.path}: too many length bits, record type {rtype}")
            byte = self.fp.read(1)
            if not byte:
                raise RecordReadError(
                    f"{self.path}: unexpected EOF reading length, record type {rtype}")
            used += 1
            length = (length | (byte[0] & 0x7F) << shift) & 0xFFFFFFFF
            if not byte[0] & 0x80:
                break
            shift += 7
        if length >= 1 << 31:  # a C int: negative
            raise RecordReadError(f"{self.path}: illegal length {length - (1 << 32)}, "
                                  f"record type {rtype}")
        pieces = []
        want = length
        while want:
            piece = self.fp.read(min(want, _CHUNK))
            if not piece:
                raise RecordReadError(f"{self.path}: unexpected EOF in data, record type "
                                      f"{rtype} length {length}")
            pieces.append(piece)
            want -= len(piece)
        self.offset += used + length
        return rtype, b"".join(pieces)

    def seek(self, offset: int) -> None:
        self.fp.seek(offset)
        self.offset = offset


def atol(data: bytes) -> int:
    """C's atol(): leading white space, a sign, digits; 0 when there are none."""
    text = data.lstrip(_SPACE)
    sign = 1
    if text[:1] in (b"+", b"-"):
        sign = -1 if text[:1] == b"-" else 1
        text = text[1:]
    n = 0
    for c in text:
        if not 0x30 <= c <= 0x39:
            break
        n = n * 10 + c - 0x30
    return sign * n


def ctime_text(seconds: int) -> bytes | None:
    """asctime(localtime()) with its newline; ``None`` when out of range."""
    try:
        return time.asctime(time.localtime(seconds)).encode() + b"\n"
    except (OverflowError, OSError, ValueError):
        return None


def split_nameval(data: bytes) -> tuple[bytes, bytes] | str:
    """Postfix's split_nameval(): (name, value) or the error text."""
    text = data.lstrip(_SPACE)
    if not text:
        return "missing attribute name"
    end = 0
    while end < len(text) and text[end] not in _SPACE and text[end] != 0x3D:
        end += 1
    rest = text[end:].lstrip(_SPACE)
    if not rest.startswith(b"="):
        return "missing '=' after attribute name"
    return text[:end], rest[1:].strip(_SPACE)


def is_header(line: bytes) -> bool:
    """Postfix's is_header(): a name of printable ASCII, optional blanks,
    then a colon."""
    state = 0  # 0: nothing yet, 1: in the name, 2: blanks after the name
    for c in line:
        if c == 0x3A:
            return state != 0
        if c in (0x20, 0x09):
            if state == 0:
                return False
            state = 2
        elif c == 0 or c >= 0x80 or c < 0x20 or c == 0x7F or state == 2:
            return False
        else:
            state = 1
    return False


def _cstr(data: bytes) -> bytes:
    """What C's ``%s`` prints of a record: up to the first NUL."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def _name(rtype: int) -> bytes:
    return RECORD_NAMES.get(chr(rtype), UNKNOWN_NAME)


# State of the envelope/header/body machine.
_ENV, _HEADER, _BODY = 0, 1, 2


class Printer:
    """Prints one queue file as Postfix's postcat does, to *out*."""

    def __init__(self, flags: Flags, out: BinaryIO, msgs: Messages):
        self.flags = flags
        self.out = out
        self.msgs = msgs

    def _prefix(self, offset: int, rtype: int) -> bytes:
        text = b""
        if self.flags.offsets:
            text += b"%9d " % offset
        if self.flags.decimal:
            text += b"%3d " % rtype
        return text

    def _marker(self, offset: int, rtype: int, label: bytes, path: bytes) -> None:
        self.out.write(self._prefix(offset, rtype) + b"*** " + label + b" " + path + b" ***\n")

    def show(self, fp: BinaryIO, path: str, seekable: bool) -> None:
        flags = self.flags
        out = self.out
        bpath = os.fsencode(path)
        stream = RecordStream(fp, path)
        if flags.start_offset > 0:
            self._skip(stream, seekable)
        else:
            first = fp.read(1)
            if first and first[0] not in ENVELOPE_TYPES:
                self.msgs.warn(f"{path}: input is not a valid queue file")
                return
            stream = RecordStream(_Prepend(first, fp), path)
        if flags.start_offset == 0 and flags.envelope:
            out.write(b"*** ENVELOPE RECORDS " + bpath + b" ***\n")
        state = _ENV
        do_print = flags.envelope
        text_flags = flags.header or flags.body
        data_offset = data_size = -1
        line_start = True  # the next content record begins a line
        open_line = False  # printed text that still needs its newline
        jumps = 0
        last_jump = 0
        ended = False
        while True:
            offset = stream.offset
            try:
                rec = stream.get()
            except RecordReadError as e:
                out.flush()
                self.msgs.warn(str(e))
                raise Fatal("record read error") from None
            if rec is None:
                break
            rtype, data = rec
            kind = chr(rtype)
            if kind in (R.NORM, R.CONT) and state != _ENV:
                if (state == _HEADER and text_flags and line_start
                        and not (is_header(_cstr(data)) or data[:1] in (b" ", b"\t"))):
                    state = _BODY
                    do_print = flags.body
                    if not do_print and not flags.envelope:
                        break
                    if (not do_print and seekable and data_offset > 0
                            and data_size >= 0):
                        stream.seek(data_offset + data_size)
                        line_start = True
                        continue
                line_start = kind == R.NORM
            elif kind == R.MESG:
                if state != _ENV:
                    self.msgs.warn(f"{path}: out-of-order message content marker")
                if flags.envelope:
                    self._marker(offset, rtype, b"MESSAGE CONTENTS", bpath)
                if not text_flags and seekable and data_offset > 0 and data_size >= 0:
                    stream.seek(data_offset + data_size)
                state = _HEADER
                do_print = flags.header
                line_start = True
                continue
            elif kind == R.XTRA:
                if state == _ENV:
                    self.msgs.warn(f"{path}: out-of-order extracted segment marker")
                # End an unfinished last line before the marker (when only
                # text is printed, the message bytes are left as they are).
                if open_line and do_print and flags.envelope:
                    out.write(b"\n")
                open_line = False
                if flags.envelope:
                    self._marker(offset, rtype, b"HEADER EXTRACTED", bpath)
                state = _ENV
                do_print = flags.envelope
                if not do_print:
                    ended = True
                    break
                continue
            elif kind == R.END:
                if state != _ENV:
                    self.msgs.warn(f"{path}: out-of-order message end marker")
                if flags.envelope:
                    self._marker(offset, rtype, b"MESSAGE FILE END", bpath)
                ended = True
                if flags.raw:
                    continue
                break
            elif kind == R.PTR:
                if do_print and flags.verbose:
                    out.write(self._prefix(offset, rtype) + _name(rtype) + b": "
                              + _cstr(data) + b"\n")
                if not flags.raw:
                    target = atol(data)
                    if target < 0 or not data.strip(_SPACE).isdigit():
                        out.flush()
                        self.msgs.warn(f"{path}: malformed pointer record value: "
                                       f"{_cstr(data).strip(_SPACE).decode('ascii', 'replace')}")
                        raise Fatal("bad pointer record, or input is not seekable")
                    if target:
                        if target <= last_jump:
                            jumps += 1
                            if jumps > REVERSE_JUMP_LIMIT:
                                out.flush()
                                self.msgs.warn(f"{path}: too many reverse jump records")
                                raise Fatal("bad pointer record, or input is not seekable")
                        if not seekable:
                            raise Fatal("bad pointer record, or input is not seekable")
                        stream.seek(target)
                        last_jump = target
                continue
            elif kind == R.SIZE:
                if do_print:
                    out.write(self._prefix(offset, rtype) + _name(rtype) + b": "
                              + _cstr(data) + b"\n")
                if data_size >= 0 or data_offset >= 0:
                    self.msgs.warn("file contains multiple size records")
                else:
                    fields = data.split()
                    try:
                        data_size, data_offset = int(fields[0]), int(fields[1])
                    except (IndexError, ValueError):
                        data_size = data_offset = 0
                    if data_offset <= 0 or data_size <= 0:
                        out.flush()
                        self.msgs.warn("invalid size record: "
                                       + _cstr(data)[:100].decode("ascii", "replace"))
                    # Nothing to print before the content: go there (else
                    # read on; the M record starts it just the same).
                    if not flags.envelope and seekable and data_offset > 0:
                        stream.seek(data_offset)
                        state = _HEADER
                        do_print = flags.header
                        line_start = True
                continue
            elif kind == R.DTXT and not flags.verbose:
                continue

            if not do_print:
                continue
            self._record(offset, rtype, data, state, path)
            open_line = kind == R.CONT and state != _ENV and not (
                flags.verbose or flags.offsets)
        if not ended and flags.envelope:
            if open_line:
                out.write(b"\n")
            out.flush()
            self.msgs.warn(f"{path}: no end record: the queue file is truncated")

    def _skip(self, stream: RecordStream, seekable: bool) -> None:
        target = self.flags.start_offset
        if seekable:
            try:
                stream.seek(target)
            except OSError as e:
                raise Fatal(f"{stream.path}: seek to {target}: {e.strerror}") from None
            return
        done = 0
        while done < target:
            piece = stream.fp.read(min(_CHUNK, target - done))
            if not piece:
                raise Fatal(f"{stream.path}: skip {target} bytes failed after {done}")
            done += len(piece)
        stream.offset = target

    def _record(self, offset: int, rtype: int, data: bytes, state: int, path: str) -> None:
        out = self.out
        kind = chr(rtype)
        line = self._prefix(offset, rtype)
        name = _name(rtype)
        if kind in (R.TIME, R.WARN):  # "sec usec" and "sec": the seconds as a date
            stamp = ctime_text(atol(data))
            line += name + b": " + (stamp if stamp is not None else _cstr(data) + b"\n")
        elif kind == R.CONT:
            if state == _ENV:
                line += name + b": "
            elif self.flags.verbose:
                line += b"unterminated_text: "
            line += data
            if state == _ENV or self.flags.verbose or self.flags.offsets:
                line += b"\n"
        elif kind == R.NORM:
            if self.flags.verbose:
                line += name + b": "
            line += data + b"\n"
        elif kind == R.DTXT:
            line += name + b": " + data + b"\n"
        elif kind == R.ATTR:
            parts = split_nameval(_cstr(data))
            if isinstance(parts, str):
                out.flush()
                self.msgs.warn(f"{path}: malformed attribute: {parts}: "
                               f"{_cstr(data)[:100].decode('utf-8', 'replace')}")
                return
            attr, value = parts
            if attr == ATTR_CREATE_TIME:
                stamp = ctime_text(atol(value))
                line += attr + b": " + (stamp if stamp is not None else value + b"\n")
            else:
                line += name + b": " + attr + b"=" + value + b"\n"
        else:
            line += name + b": " + _cstr(data) + b"\n"
        out.write(line)


class _Prepend:
    """A stream with one byte already read put back in front."""

    def __init__(self, first: bytes, fp: BinaryIO):
        self._first = first
        self._fp = fp

    def read(self, n: int) -> bytes:
        if self._first and n > 0:
            head, self._first = self._first, b""
            return head + self._fp.read(n - 1) if n > 1 else head
        return self._fp.read(n)

    def seek(self, offset: int) -> None:
        self._first = b""
        self._fp.seek(offset)


def _seekable(fp: BinaryIO) -> bool:
    try:
        return fp.seekable()
    except OSError:
        return False


def valid_queue_id_syntax(text: str) -> bool:
    """Postfix's mail_queue_id_ok(): letters, digits and ``_``, not too
    long (so never a path)."""
    return 0 < len(text) <= MAX_ID_LENGTH and all(
        c.isascii() and (c.isalnum() or c == "_") for c in text)


def queue_candidates(store, queue: str, queue_id: str) -> list[str]:
    """Where *queue_id* may be in *queue*: where the hashing parameters put
    it, then in the other layouts (a file from before they changed)."""
    if not is_queue_id(queue_id):
        return []  # never a name hato gives a queue file
    paths = [store.path(queue, queue_id)]
    base = store.queue_dir(queue)
    for depth in range(1, max(store.hash_queue_depth, 1) + 1):
        paths.append(os.path.join(base, *hash_dirs(queue_id, depth), queue_id))
    paths.append(os.path.join(base, queue_id))
    seen: list[str] = []
    for p in paths:
        if p not in seen:
            seen.append(p)
    return seen


def open_queue_file(store, queue_id: str) -> tuple[BinaryIO, str]:
    """Open *queue_id* in the first queue that has it; (file, path relative
    to the queue directory, as Postfix shows it)."""
    if not valid_queue_id_syntax(queue_id):
        raise Fatal(f"bad mail queue ID: {queue_id}")
    error = errno.ENOENT
    for _ in range(2):  # a message may move between queues while we look
        for queue in SEARCH_QUEUES:
            for path in queue_candidates(store, queue, queue_id):
                try:
                    fp = open(path, "rb")  # noqa: SIM115 - the caller closes it
                except FileNotFoundError:
                    continue
                except OSError as e:
                    error = e.errno or errno.EIO
                    continue
                return fp, os.path.relpath(path, store.directory)
    raise Fatal(f"open queue file {queue_id}: {os.strerror(error)}")


def parse_args(argv: list[str]) -> tuple[Flags, bool, str | None, list[str]]:
    try:
        opts, args = getopt.getopt(argv, OPTIONS)
    except getopt.GetoptError as e:
        if e.opt and "requires argument" in e.msg:
            print(f"postcat: option requires an argument -- '{e.opt}'", file=sys.stderr)
        else:
            print(f"postcat: invalid option -- '{e.opt}'", file=sys.stderr)
        raise Fatal(USAGE) from None
    flags = Flags()
    search = False
    config_dir = None
    for opt, val in opts:
        if opt == "-b":
            flags.body = True
        elif opt == "-c":
            config_dir = val
        elif opt == "-d":
            flags.decimal = True
        elif opt == "-e":
            flags.envelope = True
        elif opt == "-h":
            flags.header = True
        elif opt == "-o":
            flags.offsets = True
        elif opt == "-q":
            search = True
        elif opt == "-r":
            flags.raw = True
        elif opt == "-s":
            if not val.isdigit():
                raise Fatal(f"bad offset: {val}")
            flags.start_offset = int(val)
        elif opt == "-v":
            flags.verbose += 1
    if not (flags.envelope or flags.header or flags.body):
        flags.envelope = flags.header = flags.body = True
    return flags, search, config_dir, args


def body(msgs: Messages, argv: list[str]) -> int:
    flags, search, config_dir, args = parse_args(argv)
    out = sys.stdout.buffer
    printer = Printer(flags, out, msgs)
    try:
        if not args:
            load_config(config_dir, process_name="postcat", main_missing_ok=True)
            printer.show(sys.stdin.buffer, "stdin", _seekable(sys.stdin.buffer))
        elif search:
            from ..queue.store import QueueStore

            settings = load_config(config_dir, process_name="postcat").settings()
            store = QueueStore.from_settings(settings)
            if not os.path.isdir(store.directory):
                raise Fatal(f"chdir {store.directory}: No such file or directory")
            for queue_id in args:
                fp, path = open_queue_file(store, queue_id)
                with fp:
                    printer.show(fp, path, _seekable(fp))
        else:
            load_config(config_dir, process_name="postcat", main_missing_ok=True)
            for name in args:
                try:
                    fp = open(name, "rb")  # noqa: SIM115 - closed below
                except OSError as e:
                    raise Fatal(f"open {name}: {e.strerror}") from None
                with fp:
                    printer.show(fp, name, _seekable(fp))
    finally:
        try:
            out.flush()
        except BrokenPipeError:
            pass
    return 0


def main(argv: list[str]) -> int:
    return run("postcat", body, argv)

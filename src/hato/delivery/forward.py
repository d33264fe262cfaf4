"""Destination lists: alias values, ``:include:`` files and ``.forward``
files, as local(8) reads them (Postfix's local/token.c, include.c,
dotforward.c and global/tok822_parse.c).

A list is cut into RFC 822 tokens (quoted strings, comments, ``<...>``
routes, operators) and grouped into addresses the way tok822_parse()
does: commas separate entries; two words with nothing between them are
two entries (``a b`` is ``a, b``: quote a command that has blanks,
``"|/usr/bin/procmail -a x"``); comments are dropped; ``Name <addr>``
keeps only ``addr``; ``group: a, b;`` keeps the members. Each entry is
then unquoted and classified by its first characters:

* ``/path`` — append to a file (a name ending in ``/`` is a Maildir);
* ``~/path`` — a file relative to the recipient's home;
* ``|command`` — pipe to a command;
* ``:include:/path`` (any case) — read more destinations from a file;
* anything else — a mail address (``\\user`` is ``user``: the backslash
  only protects the name from alias expansion, which local(8) gets from
  its self-reference rule).

Files (``:include:`` and ``.forward``) are read line by line; a line
whose first character is ``#`` is a comment, and lines longer than
``line_length_limit`` are cut into pieces (every piece parsed on its
own), as Postfix does. A line is never continued on the next one.

:func:`load_forward_file` and :func:`load_include_file` apply local(8)'s
safety rules before reading (a ``.forward`` must be a regular file — not
a symlink —, owned by the user or root and not world-writable; an
``:include:`` file must be named by an absolute path, be a regular file
and not world-writable), with Postfix's warning texts.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from ..tables.aliases import ATOM, COMMENT, DOMLIT, QSTRING, Token, internalize, scan

Kind = Literal["address", "command", "file", "home_file", "include"]


@dataclass(frozen=True)
class Destination:
    """One entry of a destination list."""

    kind: Kind
    value: str  # the address, the command (without |), the path
    text: str   # the entry as written, unquoted


_WORDS = (ATOM, QSTRING, DOMLIT)
_INCLUDE = ":include:"


def _group(tokens: list[Token]) -> list[list[Token]]:
    """tok822_parse(): the address groups of a flat token list (parsed
    right to left as Postfix does, missing commas added between words)."""
    toks = [t for t in tokens if t.kind != COMMENT]
    groups: list[list[Token]] = []
    cur: list[Token] = []  # reversed
    do_word, do_group = True, False

    def flush() -> None:
        nonlocal cur
        if cur:
            groups.append(list(reversed(cur)))
        cur = []

    i = len(toks) - 1
    while i >= 0:
        tp = toks[i]
        kind = tp.kind
        if kind == 0x3B:  # ';' ends a named group
            flush()
            do_word, do_group = True, True
        elif kind == 0x3A and do_group:  # ':' starts it: drop the group name
            flush()
            i -= 1
            while i >= 0 and toks[i].kind != 0x2C:
                i -= 1
            continue
        elif kind == 0x3E:  # '>' ends a route: keep what is inside <>
            flush()
            i -= 1
            while i >= 0 and toks[i].kind != 0x3C:
                if toks[i].kind != COMMENT:
                    cur.append(toks[i])
                i -= 1
            flush()
            i -= 1
            while i >= 0 and not (isinstance(toks[i].kind, int)
                                  and toks[i].kind in (0x3E, 0x3B, 0x2C, 0x3A)):
                i -= 1
            do_word = True
            continue
        elif kind in _WORDS:
            if not do_word:
                flush()
            cur.append(tp)
            do_word = False
        elif kind == 0x2C:  # ','
            flush()
            do_word = True
        else:
            cur.append(tp)
            do_word = True
        i -= 1
    flush()
    groups.reverse()
    return groups


def classify(entry: str) -> Destination:
    """What kind of destination an unquoted entry is."""
    if entry.startswith("/"):
        return Destination("file", entry, entry)
    if entry.startswith("~"):
        return Destination("home_file", entry, entry)
    if entry.startswith("|"):
        return Destination("command", entry[1:], entry)
    if entry[:len(_INCLUDE)].lower() == _INCLUDE:
        return Destination("include", entry[len(_INCLUDE):], entry)
    return Destination("address", entry, entry)


def parse_destinations(text: str | bytes) -> list[Destination]:
    """The destinations in one alias value or one file line."""
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    out = []
    for group in _group(scan(data)):
        entry = internalize(group).decode("utf-8", "surrogateescape").strip()
        if entry:
            out.append(classify(entry))
    return out


def file_records(data: bytes, line_length_limit: int = 2048) -> Iterator[bytes]:
    """The records of an include or .forward file: lines, with lines
    longer than *line_length_limit* cut into pieces (vstring_fgets_bound)."""
    limit = max(line_length_limit, 1)
    for line in data.splitlines(keepends=True):
        while len(line) > limit:
            yield line[:limit]
            line = line[limit:]
        if line:
            yield line


def parse_destination_file(data: bytes, *, line_length_limit: int = 2048) -> list[Destination]:
    """All destinations in an include or .forward file."""
    out: list[Destination] = []
    for record in file_records(data, line_length_limit):
        if record.startswith(b"#"):
            continue
        out.extend(parse_destinations(record))
    return out


# -- reading the files, with local(8)'s checks ---------------------------------------------


class ForwardFileError(Exception):
    """An include file local(8) refuses: *dsn* and *reason* for the
    recipient, *warning* for the log."""

    def __init__(self, warning: str, *, dsn: str = "5.3.5",
                 reason: str = "mail system configuration error"):
        super().__init__(warning)
        self.warning = warning
        self.dsn = dsn
        self.reason = reason


def _may_read(st: os.stat_result, uid: int, gid: int | None) -> bool:
    mode = st.st_mode
    if st.st_uid == uid:
        return bool(mode & stat.S_IRUSR)
    if gid is not None and st.st_gid == gid:
        return bool(mode & stat.S_IRGRP)
    return bool(mode & stat.S_IROTH)


def _as_user() -> bool:
    return os.geteuid() == 0


def load_forward_file(path: str, st: os.stat_result, *, uid: int, gid: int | None = None,
                      line_length_limit: int = 2048
                      ) -> tuple[list[Destination] | None, str | None]:
    """Read a ``.forward`` file found with lstat() (*st*). Returns
    (destinations, None), or (None, warning) when local(8) ignores it."""
    if not stat.S_ISREG(st.st_mode):
        return None, f"file {path} is not a regular file"
    if st.st_uid != 0 and st.st_uid != uid:
        return None, f"file {path} has bad owner uid {st.st_uid}"
    if st.st_mode & stat.S_IWOTH:
        return None, f"file {path} is world writable"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fst = os.fstat(fd)
            if (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
                return None, f"file {path} is not a regular file"
            if _as_user() and uid != 0 and not _may_read(fst, uid, gid):
                raise PermissionError(13, os.strerror(13))
            data = _read_all(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        return None, f"cannot open file {path}: {exc.strerror}"
    return parse_destination_file(data, line_length_limit=line_length_limit), None


def include_status(path: str) -> os.stat_result:
    """stat() an :include: file, enforcing local(8)'s rules; raises
    ForwardFileError with Postfix's warning."""
    if not path.startswith("/"):
        raise ForwardFileError(f":include:{path} uses a relative path")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ForwardFileError(f"unable to lookup :include: file {path}: "
                               f"{exc.strerror}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise ForwardFileError(f":include: file {path} is not a regular file")
    if st.st_mode & stat.S_IWOTH:
        raise ForwardFileError(f":include: file {path} is world writable")
    return st


def load_include_file(path: str, *, uid: int, gid: int | None = None,
                      line_length_limit: int = 2048) -> list[Destination]:
    """Read an :include: file with the delivery rights *uid*/*gid* (0:
    the mail system's own). Run as root for another user, the file must be
    readable by that user, as if Postfix had opened it as them."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                raise ForwardFileError(f":include: file {path} is not a regular file")
            if _as_user() and uid != 0 and not _may_read(fst, uid, gid):
                raise PermissionError(13, os.strerror(13))
            data = _read_all(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ForwardFileError(f"cannot open include file {path}: {exc.strerror}") from exc
    return parse_destination_file(data, line_length_limit=line_length_limit)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, True)
    parts: list[bytes] = []
    while True:
        data = os.read(fd, 65536)
        if not data:
            return b"".join(parts)
        parts.append(data)


__all__ = ["Destination", "ForwardFileError", "classify", "file_records", "include_status",
           "load_forward_file", "load_include_file", "parse_destination_file",
           "parse_destinations"]

"""UNIX mbox delivery, and the message copy rules every delivery shares.

This module is Postfix's ``mail_copy.c`` and ``mbox_open.c``:

* :func:`envelope_headers` — the lines Postfix prepends at delivery, in its
  order: ``Return-Path: <sender>``, ``X-Original-To: orig`` (when the
  original recipient is known), ``Delivered-To: recipient``; addresses
  quoted as RFC 822 local parts (``quote_822_local``).
* :func:`from_line` — the mbox ``From sender  Mon Jan  1 00:00:00 2024``
  envelope line (two blanks, asctime() date in local time, the null sender
  written as ``MAILER-DAEMON``).
* :class:`LineCopier` — the streaming body copy: ``>`` before lines that
  begin with ``From `` (only those: Postfix quotes no ``>From``), ``.``
  before lines that begin with ``.`` (pipe's ``.`` flag), a choice of line
  end, and a final newline when the message ends in an incomplete line.
  It works on chunks of any size and never holds more than a few bytes of
  a line.
* :func:`deliver_mbox` — append to an mbox file: open it the way Postfix's
  safe_open() does (no symlinks unless owned by root, exactly one hard
  link, no directories; create with O_EXCL, mode 0600, owned by the
  recipient), lock it (``fcntl``, ``flock``, ``dotlock`` — ``path.lock``
  made with O_EXCL, broken when older than stale_lock_time, retried
  deliver_lock_attempts times deliver_lock_delay apart, as
  dot_lockfile.c), write the From_ line, the prepended headers, the body
  with ``>From`` quoting and a blank line at the end, fsync, and on any
  write error truncate the file back to its original size before the lock
  is released.

Line ends: the content is copied as given; a line ends at LF. Converting
CRLF to LF is the caller's job (the queue file stores LF).

Privileges: hato never changes the process's effective uid (that is not
thread-safe). Run as root with a recipient *uid*/*gid*, it creates files
itself and hands them over with fchown(), and it refuses what the recipient
could not have done themselves: appending to a file the recipient may not
write, or creating one in a directory the recipient may not write (except
in the mail spool directory, which Postfix, too, writes as root). See
docs/delivery.md.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Iterable, Sequence

from .dsn import DeliveryError, quote_822_local, status_for_errno

# -- the seams for fault injection (tests replace these) --------------------------------

_write = os.write
_fsync = os.fsync


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = _write(fd, view)
        view = view[n:]


# -- mail_copy() pieces ------------------------------------------------------------------


def envelope_headers(*, sender: str | None = None, original_recipient: str | None = None,
                     delivered_to: str | None = None, eol: bytes = b"\n") -> list[bytes]:
    """The header lines Postfix prepends, in mail_copy()'s order. Pass
    None to leave a line out; an empty original recipient is left out as
    Postfix does (original recipient processing was off)."""
    lines: list[bytes] = []
    if sender is not None:
        rp = quote_822_local(sender) if sender else ""
        lines.append(b"Return-Path: <" + _b(rp) + b">" + eol)
    if original_recipient:
        lines.append(b"X-Original-To: " + _b(quote_822_local(original_recipient)) + eol)
    if delivered_to is not None:
        lines.append(b"Delivered-To: " + _b(quote_822_local(delivered_to)) + eol)
    return lines


def from_line(sender: str, when: float | None = None, eol: bytes = b"\n") -> bytes:
    """``From sender  Www Mmm dd hh:mm:ss yyyy`` (mail_copy()'s format)."""
    who = quote_822_local(sender) if sender else "MAILER-DAEMON"
    stamp = time.asctime(time.localtime(time.time() if when is None else when))
    return b"From " + _b(who) + b"  " + stamp.encode("ascii") + eol


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def normalize_header_lines(lines: Iterable[bytes], eol: bytes = b"\n") -> bytes:
    """Prepended header lines, each ending in exactly one *eol*."""
    out = bytearray()
    for line in lines:
        out += bytes(line).rstrip(b"\r\n") + eol
    return bytes(out)


class LineCopier:
    """Streaming line transformation for mail_copy().

    ``feed(chunk)`` returns the bytes to write for *chunk*; ``finish()``
    returns what ends the message (a line end when the last line was
    incomplete, plus a blank line with *blank*)."""

    _FROM = b"From "

    def __init__(self, *, quote_from: bool = False, dot: bool = False,
                 eol: bytes = b"\n", blank: bool = False):
        self.quote_from = quote_from
        self.dot = dot
        self.eol = eol
        self.blank = blank
        self._bol = True  # at the beginning of a line
        self._pending = b""  # a line start too short to decide on
        self.plain = not quote_from and not dot and eol == b"\n"

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        if self.plain:
            data = bytes(chunk)
            self._bol = data.endswith(b"\n")
            return data
        buf = self._pending + bytes(chunk)
        self._pending = b""
        out = bytearray()
        pos, n = 0, len(buf)
        while pos < n:
            if self._bol:
                rest = buf[pos:pos + 5]
                if self.quote_from and len(rest) < 5 and self._FROM.startswith(rest) \
                        and b"\n" not in rest:
                    self._pending = bytes(rest)
                    return bytes(out)
                if self.quote_from and rest == self._FROM:
                    out += b">"
                if self.dot and buf[pos:pos + 1] == b".":
                    out += b"."
                self._bol = False
            nl = buf.find(b"\n", pos)
            if nl < 0:
                out += buf[pos:]
                break
            out += buf[pos:nl]
            out += self.eol
            pos = nl + 1
            self._bol = True
        return bytes(out)

    def finish(self) -> bytes:
        out = bytearray()
        if self._pending:
            out += self._pending
            self._pending = b""
            self._bol = False
        if not self._bol:
            out += self.eol
            self._bol = True
        if self.blank:
            out += self.eol
        return bytes(out)


# -- permission checks for root on behalf of a user ------------------------------------


def privileged_for(uid: int | None) -> bool:
    """True when this process must act for *uid* (running as root, the
    recipient not root): hato then creates files itself, gives them away
    with fchown(), and checks what the recipient could have done."""
    return uid is not None and uid != 0 and os.geteuid() == 0


def user_may(st: os.stat_result, uid: int, gid: int | None, bits: int) -> bool:
    """Would *uid* (with only group *gid*, as Postfix's set_eugid() gives)
    have the access *bits* (a combination of 4 = read, 2 = write, 1 = search)
    to the object *st* describes?"""
    mode = st.st_mode
    if st.st_uid == uid:
        return (mode >> 6) & bits == bits
    if gid is not None and st.st_gid == gid:
        return (mode >> 3) & bits == bits
    return mode & bits == bits


# -- locks ---------------------------------------------------------------------------------

_PATH_LOCKS: dict[str, threading.Lock] = {}
_PATH_LOCKS_GUARD = threading.Lock()


def _path_lock(path: str) -> threading.Lock:
    """fcntl() locks belong to the process, so two threads of one process
    do not exclude each other with them, and closing any descriptor of the
    file drops them. One mutex per mailbox path keeps threads apart."""
    with _PATH_LOCKS_GUARD:
        lock = _PATH_LOCKS.get(path)
        if lock is None:
            lock = _PATH_LOCKS[path] = threading.Lock()
        return lock


def dot_lock(path: str, *, attempts: int = 20, delay: float = 1.0,
             stale_time: float = 500.0, sleep=time.sleep) -> str:
    """Create ``path.lock`` exclusively (dot_lockfile.c): retry while it
    exists, remove it when its ctime is older than *stale_time*. Returns
    the lock file name; raises OSError (EEXIST when a fresh lock stayed)."""
    lock_file = path + ".lock"
    count = 1
    while True:
        try:
            fd = os.open(lock_file, os.O_WRONLY | os.O_EXCL | os.O_CREAT | os.O_CLOEXEC, 0)
        except OSError as exc:
            if count >= attempts or exc.errno != errno.EEXIST:
                raise
            try:
                st = os.stat(lock_file)
            except FileNotFoundError:
                st = None
            if st is not None and time.time() > st.st_ctime + stale_time:
                try:
                    os.unlink(lock_file)
                except FileNotFoundError:
                    pass
            sleep(delay)
            count += 1
            continue
        os.close(fd)
        return lock_file


def _kernel_lock(fd: int, method: str, *, attempts: int, delay: float, sleep) -> None:
    """deliver_flock(): a non-blocking exclusive lock, retried."""
    op = fcntl.LOCK_EX | fcntl.LOCK_NB
    for count in range(1, attempts + 1):
        try:
            if method == "flock":
                fcntl.flock(fd, op)
            else:
                fcntl.lockf(fd, op)
            return
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK) \
                    or count >= attempts:
                raise
            sleep(delay)


# -- opening ---------------------------------------------------------------------------------


def _open_existing(path: str, flags: int) -> tuple[int, os.stat_result]:
    """safe_open_exist(): open without O_CREAT and verify what was opened."""
    fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        fst = os.fstat(fd)
        if fst.st_nlink != 1 and not stat.S_ISCHR(fst.st_mode):
            raise OSError(errno.EPERM, f"file has {fst.st_nlink} hard links")
        if stat.S_ISDIR(fst.st_mode):
            raise OSError(errno.EISDIR, "file is a directory")
        try:
            lst = os.lstat(path)
        except OSError as exc:
            raise OSError(errno.EPERM, f"file status changed unexpectedly: "
                                       f"{exc.strerror}") from None
        if stat.S_ISLNK(lst.st_mode):
            if lst.st_uid != 0:
                raise OSError(errno.EPERM, "file is a symbolic link")
        elif (fst.st_dev, fst.st_ino, fst.st_nlink, fst.st_mode) != \
                (lst.st_dev, lst.st_ino, lst.st_nlink, lst.st_mode):
            raise OSError(errno.EPERM, "file status changed unexpectedly")
        return fd, fst
    except BaseException:
        os.close(fd)
        raise


def _open_mbox(path: str, *, uid: int | None, gid: int | None, privileged: bool,
               spool: bool) -> tuple[int, os.stat_result, bool]:
    """safe_open(O_APPEND|O_WRONLY|O_CREAT): (fd, status, created)."""
    flags = os.O_WRONLY | os.O_APPEND
    try:
        fd, st = _open_existing(path, flags)
        return fd, st, False
    except FileNotFoundError:
        pass
    parent = os.path.dirname(path) or "."
    chown_gid = gid
    if privileged:
        pst = os.stat(parent)
        if spool:
            # mailbox.c: a world-writable spool is written as the recipient,
            # a group-writable one with the spool's group, else as root.
            if not pst.st_mode & stat.S_IWOTH and pst.st_mode & stat.S_IWGRP:
                chown_gid = pst.st_gid
        elif not user_may(pst, uid, gid, 3):  # type: ignore[arg-type]
            raise OSError(errno.EACCES, os.strerror(errno.EACCES))
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
                     | os.O_NONBLOCK, 0o600)
    except FileExistsError:
        fd, st = _open_existing(path, flags)
        return fd, st, False
    try:
        os.fchmod(fd, 0o600)
        if privileged:
            os.fchown(fd, uid, -1 if chown_gid is None else chown_gid)  # type: ignore
        return fd, os.fstat(fd), True
    except BaseException:
        os.close(fd)
        raise


# -- delivery ---------------------------------------------------------------------------------


def deliver_mbox(path: str | os.PathLike[str], chunks: Iterable[bytes], *,
                 sender: str,
                 arrival: float | None = None,
                 prepend_headers: Sequence[bytes] = (),
                 lock_methods: Sequence[str] = ("fcntl", "dotlock"),
                 uid: int | None = None,
                 gid: int | None = None,
                 kind: str = "mailbox",
                 spool: bool = False,
                 strict_owner: bool = True,
                 error_dsn: str = "5.2.0",
                 size_limit: int = 0,
                 lock_attempts: int = 20,
                 lock_delay: float = 1.0,
                 stale_lock_time: float = 500.0,
                 sleep=time.sleep) -> int:
    """Append one message to the mbox file *path*; return the bytes written.

    *kind* is ``"mailbox"`` (a user's mailbox: it must be a regular file,
    and with *strict_owner* owned by *uid* — Postfix's
    strict_mailbox_ownership) or ``"file"`` (a /file destination from an
    alias or .forward: non-regular files such as /dev/null are written
    without locks, an executable file is refused with 5.7.1, a dotlock
    that cannot be created is ignored). *spool* says *path* is in the
    mail spool directory, where a missing mailbox is created (as root) even
    though the recipient may not write the directory. *arrival* is the
    time on the From_ line; None means now, as Postfix does. *size_limit*
    (mailbox_size_limit) caps the file size; going past it fails as EFBIG.
    *error_dsn* is the status for errors without a better one (local:
    5.2.0). Raises :class:`DeliveryError`.
    """
    path = os.fspath(path)
    privileged = privileged_for(uid)
    for method in lock_methods:
        if method not in ("fcntl", "flock", "dotlock"):
            raise ValueError(f"unknown mailbox lock method: {method}")
    mutex = _path_lock(os.path.abspath(path))
    if not mutex.acquire(timeout=max(lock_attempts * lock_delay, 1.0)):
        raise DeliveryError(f"cannot update mailbox {path}: unable to lock for exclusive "
                            f"access: Resource temporarily unavailable", dsn="4.2.0")
    try:
        return _deliver_locked(path, chunks, sender=sender, arrival=arrival,
                               prepend_headers=prepend_headers, lock_methods=lock_methods,
                               uid=uid, gid=gid, kind=kind, spool=spool,
                               strict_owner=strict_owner, error_dsn=error_dsn,
                               size_limit=size_limit, lock_attempts=lock_attempts,
                               lock_delay=lock_delay, stale_lock_time=stale_lock_time,
                               sleep=sleep, privileged=privileged)
    finally:
        mutex.release()


def _deliver_locked(path: str, chunks: Iterable[bytes], *, sender: str,
                    arrival: float | None, prepend_headers: Sequence[bytes],
                    lock_methods: Sequence[str], uid: int | None, gid: int | None,
                    kind: str, spool: bool, strict_owner: bool, error_dsn: str,
                    size_limit: int, lock_attempts: int, lock_delay: float,
                    stale_lock_time: float, sleep, privileged: bool) -> int:
    what = f"cannot update mailbox {path}" if kind == "mailbox" else \
        f"cannot append message to file {path}"
    try:
        fd, st, _created = _open_mbox(path, uid=uid, gid=gid, privileged=privileged,
                                      spool=spool)
    except OSError as exc:
        raise DeliveryError(f"{what}: cannot open file: {exc.strerror}",
                            dsn=status_for_errno(exc.errno, error_dsn)) from exc
    lock_file = None
    try:
        regular = stat.S_ISREG(st.st_mode)
        if kind == "mailbox" and not regular:
            raise DeliveryError(f"destination {path} is not a regular file", dsn="5.2.0")
        if kind == "file" and regular and st.st_mode & 0o111:
            raise DeliveryError(f"{what}: file is executable", dsn="5.7.1")
        if privileged and not spool and not user_may(st, uid, gid, 2):  # type: ignore
            raise DeliveryError(f"{what}: cannot open file: Permission denied",
                                dsn=status_for_errno(errno.EACCES, error_dsn))
        if kind == "mailbox" and strict_owner and uid is not None and st.st_uid != uid:
            raise DeliveryError(f"destination {path} is not owned by recipient", dsn="4.2.0")
        if regular:
            if "dotlock" in lock_methods:
                try:
                    lock_file = dot_lock(path, attempts=lock_attempts, delay=lock_delay,
                                         stale_time=stale_lock_time, sleep=sleep)
                except OSError as exc:
                    if exc.errno == errno.EEXIST:
                        raise DeliveryError(
                            f"{what}: unable to create lock file {path}.lock: "
                            f"{exc.strerror}", dsn="4.2.0") from exc
                    if kind != "file":
                        raise DeliveryError(
                            f"{what}: unable to create lock file {path}.lock: "
                            f"{exc.strerror}",
                            dsn=status_for_errno(exc.errno, error_dsn)) from exc
            for method in lock_methods:
                if method in ("fcntl", "flock"):
                    try:
                        _kernel_lock(fd, method, attempts=lock_attempts, delay=lock_delay,
                                     sleep=sleep)
                    except OSError as exc:
                        raise DeliveryError(
                            f"{what}: unable to lock for exclusive access: {exc.strerror}",
                            dsn=status_for_errno(errno.EAGAIN if exc.errno in
                                                 (errno.EACCES, errno.EWOULDBLOCK)
                                                 else exc.errno, error_dsn)) from exc
            # mbox_open()'s check: someone replaced the file meanwhile.
            now_st = os.fstat(fd)
            if now_st.st_nlink != 1:
                raise DeliveryError(f"{what}: target file status changed unexpectedly",
                                    dsn="4.2.0")
        os.set_blocking(fd, True)
        return _append(fd, path, chunks, what=what, sender=sender, arrival=arrival,
                       prepend_headers=prepend_headers, regular=regular,
                       error_dsn=error_dsn, size_limit=size_limit)
    finally:
        try:
            os.close(fd)
        finally:
            if lock_file is not None:
                try:
                    os.unlink(lock_file)
                except OSError:
                    pass


def _append(fd: int, path: str, chunks: Iterable[bytes], *, what: str, sender: str,
            arrival: float | None, prepend_headers: Sequence[bytes], regular: bool,
            error_dsn: str, size_limit: int) -> int:
    orig = os.lseek(fd, 0, os.SEEK_END) if regular else 0
    written = 0
    copier = LineCopier(quote_from=True, blank=True)
    buf = bytearray()

    def flush(force: bool = False) -> None:
        nonlocal written
        if buf and (force or len(buf) >= 65536):
            if size_limit > 0 and regular and orig + written + len(buf) > size_limit:
                raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))
            _write_all(fd, bytes(buf))
            written += len(buf)
            buf.clear()

    try:
        try:
            buf += from_line(sender, arrival)
            buf += normalize_header_lines(prepend_headers)
            it = iter(chunks)
            while True:
                try:
                    chunk = next(it)
                except StopIteration:
                    break
                except OSError as exc:
                    raise _ReadError(exc) from exc
                buf += copier.feed(chunk)
                flush()
            buf += copier.finish()
            flush(force=True)
            if regular:
                _fsync(fd)
        except _ReadError as exc:
            _truncate(fd, orig, regular)
            cause = exc.cause
            raise DeliveryError(f"{what}: error reading message: {cause.strerror}",
                                dsn="4.3.0") from cause
        except OSError as exc:
            _truncate(fd, orig, regular)
            raise DeliveryError(f"{what}: error writing message: {exc.strerror}",
                                dsn=status_for_errno(exc.errno, error_dsn)) from exc
        except BaseException:
            _truncate(fd, orig, regular)
            raise
    finally:
        buf.clear()
    return written


class _ReadError(Exception):
    def __init__(self, cause: OSError):
        super().__init__(str(cause))
        self.cause = cause


def _truncate(fd: int, length: int, regular: bool) -> None:
    """Undo a partial append (mail_copy() with MAIL_COPY_TOFILE)."""
    if not regular:
        return
    try:
        os.ftruncate(fd, length)
    except OSError:
        pass


__all__ = ["LineCopier", "deliver_mbox", "dot_lock", "envelope_headers", "from_line",
           "normalize_header_lines", "privileged_for", "user_may"]

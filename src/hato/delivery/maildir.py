"""Maildir delivery (Postfix's local/maildir.c and virtual/maildir.c).

:func:`deliver_maildir` writes one message into a Maildir:

1. The Maildir and its ``tmp/``, ``new/`` and ``cur/`` are created when
   missing, mode 0700 (missing parent directories too, as make_dirs()).
2. The message goes into a new file in ``tmp/``, created with O_EXCL and
   mode 0600, named per the Maildir specification
   (cr.yp.to/proto/maildir.html): ``<secs>.M<usecs>P<pid>Q<n>.<host>``.
   Postfix names the tmp/ file ``<secs>.P<pid>.<host>`` because it
   delivers one message per process; hato delivers from many threads of
   one process, so a per-process delivery counter ``Q<n>`` makes the name
   unique, and O_EXCL catches the impossible rest. The host name has
   ``/``, ``:`` and ``,`` written as ``\\057``, ``\\072`` and ``\\054``.
3. The prepended header lines (Return-Path:, X-Original-To:, Delivered-To:
   from :func:`hato.delivery.mbox.envelope_headers`), then the content
   chunks as they come (CRLF→LF is the caller's job); a last line without
   a newline gets one, as mail_copy() does.
4. fsync() of the file, then a hard link into ``new/`` under the final
   name ``<secs>.M<usecs>P<pid>Q<n>.<host>,S=<size>`` (``S=`` is the file
   size, so Maildir++ quota code never has to stat it); link() never
   replaces an existing file, and falls back to rename() on file systems
   without hard links. The tmp/ name is removed and ``new/`` fsynced.

Failures raise :class:`~hato.delivery.dsn.DeliveryError` with Postfix's
texts (``maildir delivery failed: create maildir file ...: ...``). The
status comes from :func:`~hato.delivery.dsn.status_for_errno`: a full
disk or file system (ENOSPC, 4.3.0), a full quota (EDQUOT/EFBIG, 4.2.2),
I/O errors (EIO, 4.3.0) and lock-style contention (4.2.0) are always
temporary. Anything else — permission denied, a path component that is a
regular file (ENOTDIR/EEXIST) — takes *error_dsn*: ``5.2.0`` (bounce) for
local(8), whose Maildir paths the user controls, and ``4.2.0`` (defer)
for virtual(8), whose paths the administrator controls, exactly as the
two Postfix agents do.

Privileges: with *uid*/*gid* and the process running as root, every
directory and the file are created by this process and handed over with
(f)chown() — never seteuid(), which is not thread-safe. To keep that as
safe as Postfix's "do it as the user", every directory hato creates an
entry in must be writable by the recipient (owner, group *gid*, or
other write permission), checked on the open directory descriptor that
the entry is then created in (no race with a symlink swap); otherwise the
delivery fails as EACCES would.

*quota* is the hook for Maildir++ quota (PROTOCOLS.md §3.5,
:class:`hato.delivery.maildir_quota.MaildirsizeKeeper`): ``check(maildir,
size)`` is called once the message is in ``tmp/`` and fsynced, with its
exact size (the ``S=`` of its name), before it is moved into ``new/``; it
raises DeliveryError when the message does not fit, and the ``tmp/`` file
is removed (Courier's deliverquota backs out the same way).
``add(maildir, size, count)`` is called after the file is in ``new/``,
and ``release()`` at the end in any case (the hook may hold a lock on the
Maildir from check() to add()).
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Iterable, Sequence
from typing import Protocol

from .dsn import DeliveryError, status_for_errno
from .mbox import normalize_header_lines, privileged_for, user_may

# -- the seams for fault injection (tests replace these) --------------------------------

_write = os.write
_fsync = os.fsync
_link = os.link

_COUNTER = itertools.count(1)
_DIR_MODE = 0o700
_FILE_MODE = 0o600
_BUFSIZE = 65536
_NO_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK)


class MaildirQuota(Protocol):
    """The Maildir++ quota hook (hato.delivery.maildir_quota)."""

    def check(self, maildir: str, size: int) -> None:
        """Raise DeliveryError when a message of *size* bytes does not fit."""

    def add(self, maildir: str, size: int, count: int) -> None:
        """Record a delivered message (``maildirsize``: ``<size> <count>``)."""

    def release(self) -> None:
        """The delivery is over (delivered or not)."""


def maildir_hostname(hostname: str) -> str:
    """The host name part of a Maildir file name: ``/``, ``:`` and ``,``
    escaped as ``\\057``, ``\\072``, ``\\054`` (the Maildir spec and
    Maildir++)."""
    return hostname.replace("/", "\\057").replace(":", "\\072").replace(",", "\\054")


def unique_name(hostname: str, *, now: float | None = None) -> str:
    """A new ``<secs>.M<usecs>P<pid>Q<n>.<host>`` name."""
    t = time.time() if now is None else now
    secs = int(t)
    usecs = int((t - secs) * 1_000_000)
    return f"{secs}.M{usecs}P{os.getpid()}Q{next(_COUNTER)}.{maildir_hostname(hostname)}"


class _Failure(Exception):
    """An OSError with the words Postfix puts in front of it."""

    def __init__(self, text: str, exc: OSError):
        super().__init__(text)
        self.text = text
        self.exc = exc


def _check_writable(fd: int, where: str, uid: int | None, gid: int | None,
                    privileged: bool) -> None:
    if privileged and not user_may(os.fstat(fd), uid, gid, 3):  # type: ignore[arg-type]
        raise _Failure(f"create maildir file {where}",
                       OSError(errno.EACCES, os.strerror(errno.EACCES)))


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


def _mkdir_open(parent_fd: int, name: str, where: str, *, uid: int | None, gid: int | None,
                privileged: bool) -> int:
    """Open directory *name* in the open directory *parent_fd*, creating it
    (mode 0700, owned by the recipient) when it is missing."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        pass
    # The parent may be one another delivery has just made and not yet
    # given to the recipient (two first deliveries at once).
    _check_writable_soon(parent_fd, where, uid, gid, privileged)
    try:
        os.mkdir(name, _DIR_MODE, dir_fd=parent_fd)
    except FileExistsError:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        if privileged:
            _wait_for_owner(fd, uid)
        return fd
    # Never follow a symlink someone put in place of the new directory.
    fd = os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent_fd)
    try:
        os.fchmod(fd, _DIR_MODE)
        if privileged:
            os.fchown(fd, uid, -1 if gid is None else gid)  # type: ignore[arg-type]
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_writable_soon(fd: int, where: str, uid: int | None, gid: int | None,
                         privileged: bool) -> None:
    """:func:`_check_writable` for a directory that may be one another
    delivery has just made and not yet given away: wait a moment for its
    owner before failing."""
    try:
        _check_writable(fd, where, uid, gid, privileged)
    except _Failure:
        if not privileged:
            raise
        _wait_for_owner(fd, uid)
        _check_writable(fd, where, uid, gid, privileged)


def _wait_for_owner(fd: int, uid: int | None, tries: int = 50) -> None:
    """A directory another delivery has just made may not be the
    recipient's yet (it is made, then given away): wait a moment for that,
    rather than find it unwritable (two first deliveries to one Maildir)."""
    for _ in range(tries):
        if os.fstat(fd).st_uid == uid:
            return
        time.sleep(0.02)


def _open_dir(path: str, *, uid: int | None, gid: int | None, privileged: bool) -> int:
    """Open directory *path*, creating it and its missing parents."""
    try:
        return os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        pass
    # make_dirs(): find the deepest existing ancestor, create the rest.
    missing: list[str] = []
    head = os.path.normpath(path)
    while True:
        parent, name = os.path.split(head)
        if not name:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        missing.append(name)
        try:
            fd = os.open(parent or ".", _DIR_FLAGS)
            break
        except FileNotFoundError:
            head = parent
    try:
        where = parent or "."
        for name in reversed(missing):
            where = os.path.join(where, name)
            child = _mkdir_open(fd, name, where, uid=uid, gid=gid, privileged=privileged)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def deliver_maildir(path: str | os.PathLike[str], chunks: Iterable[bytes], *,
                    prepend_headers: Sequence[bytes] = (),
                    uid: int | None = None,
                    gid: int | None = None,
                    hostname: str,
                    error_dsn: str = "5.2.0",
                    quota: MaildirQuota | None = None,
                    size_limit: int = 0,
                    now: float | None = None) -> str:
    """Deliver one message into the Maildir *path*; return the file name
    it got in ``new/``. *size_limit* (mailbox_size_limit,
    virtual_mailbox_limit; 0 = none) caps the file size: a bigger message
    fails as EFBIG would. See the module documentation for the steps and
    the errors (:class:`DeliveryError`)."""
    root = os.fspath(path).rstrip("/") or "/"
    privileged = privileged_for(uid)
    fds: list[int] = []
    tmp_name: str | None = None
    tmp_fd: int | None = None
    file_fd: int | None = None
    where = os.path.join(root, "tmp")
    try:
        try:
            root_fd = _open_dir(root, uid=uid, gid=gid, privileged=privileged)
            fds.append(root_fd)
            sub = {"uid": uid, "gid": gid, "privileged": privileged}
            tmp_fd = _mkdir_open(root_fd, "tmp", where, **sub)  # type: ignore[arg-type]
            fds.append(tmp_fd)
            new_fd = _mkdir_open(root_fd, "new", os.path.join(root, "new"),
                                 **sub)  # type: ignore[arg-type]
            fds.append(new_fd)
            os.close(_mkdir_open(root_fd, "cur", os.path.join(root, "cur"),
                                 **sub))  # type: ignore[arg-type]
            _check_writable_soon(tmp_fd, where, uid, gid, privileged)
            _check_writable_soon(new_fd, os.path.join(root, "new"), uid, gid, privileged)
        except OSError as exc:
            raise _Failure(f"create maildir file {where}", exc) from exc


        # Create the tmp/ file.
        for _ in range(100):
            base = unique_name(hostname, now=now)
            tmp_name = base
            where = os.path.join(root, "tmp", tmp_name)
            try:
                file_fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                                  | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE, dir_fd=tmp_fd)
                break
            except FileExistsError:
                tmp_name = None
                continue
            except OSError as exc:
                tmp_name = None
                raise _Failure(f"create maildir file {where}", exc) from exc
        else:
            raise _Failure(f"create maildir file {where}",
                           OSError(errno.EEXIST, os.strerror(errno.EEXIST)))
        try:
            os.fchmod(file_fd, _FILE_MODE)
            if privileged:
                os.fchown(file_fd, uid, -1 if gid is None else gid)  # type: ignore[arg-type]
        except OSError as exc:
            raise _Failure(f"create maildir file {where}", exc) from exc

        size = _copy(file_fd, chunks, prepend_headers, size_limit)
        try:
            _fsync(file_fd)
        except OSError as exc:
            raise _Failure("error writing message", exc) from exc
        os.close(file_fd)
        file_fd = None
        if quota is not None:
            quota.check(root, size)

        # Move it into new/ without ever replacing a file.
        new_name = f"{base},S={size}"
        while True:
            try:
                _link(tmp_name, new_name, src_dir_fd=tmp_fd, dst_dir_fd=new_fd,
                      follow_symlinks=False)
                break
            except FileExistsError:
                new_name = f"{unique_name(hostname, now=now)},S={size}"
            except OSError as exc:
                cause: OSError = exc
                if exc.errno in _NO_LINKS:
                    # A file system without hard links: rename() instead
                    # (the name is unique, so nothing is replaced).
                    try:
                        os.rename(tmp_name, new_name, src_dir_fd=tmp_fd, dst_dir_fd=new_fd)
                        tmp_name = None
                        break
                    except OSError as exc2:
                        cause = exc2
                raise _Failure(f"create maildir file {os.path.join(root, 'new', new_name)}",
                               cause) from cause
        if tmp_name is not None:
            try:
                os.unlink(tmp_name, dir_fd=tmp_fd)
            except OSError:
                pass
            tmp_name = None
        try:
            _fsync(new_fd)
        except OSError as exc:
            # The message is in new/ but may not survive a crash: retry.
            try:
                os.unlink(new_name, dir_fd=new_fd)
            except OSError:
                pass
            raise _Failure("error writing message", exc) from exc
        if quota is not None:
            quota.add(root, size, 1)
        return new_name
    except _Failure as failure:
        err = failure.exc
        raise DeliveryError(f"maildir delivery failed: {failure.text}: "
                            f"{err.strerror or err}",
                            dsn=status_for_errno(err.errno, error_dsn)) from err
    except _ReadFailure as failure:
        raise DeliveryError(f"maildir delivery failed: error reading message: "
                            f"{failure.exc.strerror or failure.exc}", dsn="4.3.0") from failure.exc
    finally:
        if quota is not None:
            quota.release()
        if file_fd is not None:
            os.close(file_fd)
        if tmp_name is not None and tmp_fd is not None:
            try:
                os.unlink(tmp_name, dir_fd=tmp_fd)
            except OSError:
                pass
        for fd in fds:
            os.close(fd)


class _ReadFailure(Exception):
    def __init__(self, exc: OSError):
        super().__init__(str(exc))
        self.exc = exc


def _copy(fd: int, chunks: Iterable[bytes], prepend_headers: Sequence[bytes],
          size_limit: int = 0) -> int:
    """Write the headers and the content; return the file size."""
    buf = bytearray(normalize_header_lines(prepend_headers))
    size = 0
    last = b"\n"

    def flush() -> None:
        nonlocal size
        if size_limit > 0 and size + len(buf) > size_limit:
            raise _Failure("error writing message",
                           OSError(errno.EFBIG, os.strerror(errno.EFBIG)))
        view = memoryview(buf)
        try:
            while view:
                n = _write(fd, view)
                view = view[n:]
        except OSError as exc:
            raise _Failure("error writing message", exc) from exc
        finally:
            view.release()
        size += len(buf)
        buf.clear()

    it = iter(chunks)
    while True:
        try:
            chunk = next(it)
        except StopIteration:
            break
        except OSError as exc:
            raise _ReadFailure(exc) from exc
        if not chunk:
            continue
        buf += chunk
        last = bytes(chunk[-1:])
        if len(buf) >= _BUFSIZE:
            flush()
    if last != b"\n":
        buf += b"\n"
    if buf:
        flush()
    return size


__all__ = ["MaildirQuota", "deliver_maildir", "maildir_hostname", "unique_name"]

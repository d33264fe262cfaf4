"""The one seam every file operation of the queue store goes through.

:class:`FileOps` wraps the system calls the store makes (open, close, write,
pwrite, pread, fsync, fdatasync, fchmod, fstat, ftruncate, flock, stat,
rename, rename without overwrite, link, unlink, mkdir, listdir, fsync of a
directory, chmod, chown). The store
never calls ``os`` for a file directly, so a test can hand it a
:class:`FaultyFileOps` that fails or "crashes" at any chosen call:

* ``FaultyFileOps(fail_at=7, error=errno.ENOSPC)`` — the 7th call (counting
  from 1) raises ``OSError(ENOSPC)``;
* ``FaultyFileOps(op="fsync_dir", error=errno.EIO)`` — the first call of that
  name raises (``nth=`` picks a later one, ``path_contains=`` narrows it);
* ``error=CRASH`` raises :class:`SimulatedCrash`, a BaseException that no
  error handler of the store catches: the operation aborts mid-way, as if
  the process had been killed there; nothing after it runs.
* ``partial=True`` makes a failing ``write``/``pwrite`` first write half its
  data, as a disk that fills up mid-write does;
* ``sticky=True`` keeps failing every matching call after the first fault
  (a disk that stays full or dead).

Every call is recorded in ``FaultyFileOps.calls`` as ``(op, path)``, so a
test can count the calls of a clean run and then fail each one in turn.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import threading
from typing import Any

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


class SimulatedCrash(BaseException):
    """Raised by :class:`FaultyFileOps` to stop the program in the middle of
    an operation, as a kill -9 would. Derives from BaseException so that no
    ``except Exception`` cleanup path runs."""


#: Pass as ``error=`` to :class:`FaultyFileOps` to simulate a crash.
CRASH = "crash"


class FileOps:
    """Plain blocking file operations. Paths are ``str``; data is ``bytes``."""

    # -- files ------------------------------------------------------------
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        return os.open(path, flags | os.O_CLOEXEC, mode)

    def close(self, fd: int) -> None:
        os.close(fd)

    def write(self, fd: int, data: bytes) -> None:
        """Write all of *data* at the file position."""
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        """Write all of *data* at *offset* (one byte: Postfix's in-place
        record type flip)."""
        view = memoryview(data)
        while view:
            n = os.pwrite(fd, view, offset)
            view = view[n:]
            offset += n

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        return os.pread(fd, size, offset)

    def fsync(self, fd: int) -> None:
        os.fsync(fd)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def fchmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        os.fchown(fd, uid, gid)

    def fstat(self, fd: int) -> os.stat_result:
        return os.fstat(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)

    def flock(self, fd: int, operation: int) -> None:
        """``fcntl.flock``: LOCK_EX, LOCK_SH, LOCK_UN."""
        fcntl.flock(fd, operation)

    # -- names ------------------------------------------------------------
    def stat(self, path: str) -> os.stat_result:
        return os.stat(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def rename_noreplace(self, src: str, dst: str) -> None:
        """Rename, failing with EEXIST rather than replacing *dst*:
        renameat2(RENAME_NOREPLACE) where the kernel and file system have it,
        else link() then unlink() of the old name."""
        if _renameat2 is not None:
            if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                          _RENAME_NOREPLACE) == 0:
                return
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise OSError(err, os.strerror(err), src, None, dst)
        self.link(src, dst)
        try:
            self.unlink(src)
        except FileNotFoundError:
            pass
        except OSError:
            # Keep the operation all-or-nothing: take the new name away again.
            try:
                self.unlink(dst)
            except OSError:
                pass
            raise

    def link(self, src: str, dst: str) -> None:
        os.link(src, dst)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        os.mkdir(path, mode)

    def listdir(self, path: str) -> list[tuple[str, bool]]:
        """Names in *path* with whether each is a directory."""
        with os.scandir(path) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]

    def fsync_dir(self, path: str) -> None:
        """Make the entries of directory *path* durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid)


class FaultyFileOps(FileOps):
    """:class:`FileOps` that records every call and injects one fault.

    A call matches when its number (1-based, over all calls) is *fail_at*,
    or — with *op* — when it is the *nth* call of that name (optionally with
    *path_contains* in its path). *error* is an errno number or
    :data:`CRASH`. With *sticky*, every later matching call fails too (with
    *fail_at*, every later call of any name).
    """

    def __init__(self, *, fail_at: int | None = None, op: str | None = None, nth: int = 1,
                 path_contains: str | None = None, error: int | str = errno.EIO,
                 partial: bool = False, sticky: bool = False):
        self.fail_at = fail_at
        self.op = op
        self.nth = nth
        self.path_contains = path_contains
        self.error = error
        self.partial = partial
        self.sticky = sticky
        self.calls: list[tuple[str, str]] = []
        self.faults: list[tuple[int, str, str]] = []  # (call number, op, path)
        self._op_count = 0
        self._tripped = False
        self._lock = threading.Lock()

    @property
    def tripped(self) -> bool:
        return self._tripped

    def _matches(self, number: int, op: str, path: str) -> bool:
        if self.fail_at is not None:
            return number == self.fail_at or (self.sticky and self._tripped)
        if self.op is None or op != self.op:
            return False
        if self.path_contains is not None and self.path_contains not in path:
            return False
        self._op_count += 1
        return self._op_count == self.nth or (self.sticky and self._tripped)

    def _check(self, op: str, path: Any) -> bool:
        """Record the call; True when it must fail."""
        p = str(path)
        with self._lock:
            self.calls.append((op, p))
            number = len(self.calls)
            fail = self._matches(number, op, p)
            if fail:
                self._tripped = True
                self.faults.append((number, op, p))
        return fail

    def _raise(self, op: str, path: Any) -> None:
        if self.error == CRASH:
            raise SimulatedCrash(f"simulated crash in {op} {path}")
        code = int(self.error)
        raise OSError(code, os.strerror(code), str(path))

    def _guard(self, op: str, path: Any) -> None:
        if self._check(op, path):
            self._raise(op, path)

    # Each wrapper names the operation and the path or fd it acts on.
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        self._guard("open", path)
        return super().open(path, flags, mode)

    def close(self, fd: int) -> None:
        if self._check("close", fd):
            super().close(fd)  # the descriptor is gone even when close fails
            self._raise("close", fd)
        super().close(fd)

    def write(self, fd: int, data: bytes) -> None:
        if self._check("write", fd):
            if self.partial and len(data) > 1:
                super().write(fd, data[: len(data) // 2])
            self._raise("write", fd)
        super().write(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> None:
        if self._check("pwrite", fd):
            if self.partial and len(data) > 1:
                super().pwrite(fd, data[: len(data) // 2], offset)
            self._raise("pwrite", fd)
        super().pwrite(fd, data, offset)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self._guard("pread", fd)
        return super().pread(fd, size, offset)

    def fsync(self, fd: int) -> None:
        self._guard("fsync", fd)
        super().fsync(fd)

    def fdatasync(self, fd: int) -> None:
        self._guard("fdatasync", fd)
        super().fdatasync(fd)

    def fchmod(self, fd: int, mode: int) -> None:
        self._guard("fchmod", fd)
        super().fchmod(fd, mode)

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        self._guard("fchown", fd)
        super().fchown(fd, uid, gid)

    def fstat(self, fd: int) -> os.stat_result:
        self._guard("fstat", fd)
        return super().fstat(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        self._guard("ftruncate", fd)
        super().ftruncate(fd, length)

    def flock(self, fd: int, operation: int) -> None:
        self._guard("flock", fd)
        super().flock(fd, operation)

    def stat(self, path: str) -> os.stat_result:
        self._guard("stat", path)
        return super().stat(path)

    def rename(self, src: str, dst: str) -> None:
        self._guard("rename", dst)
        super().rename(src, dst)

    def rename_noreplace(self, src: str, dst: str) -> None:
        self._guard("rename_noreplace", dst)
        super().rename_noreplace(src, dst)

    def link(self, src: str, dst: str) -> None:
        self._guard("link", dst)
        super().link(src, dst)

    def unlink(self, path: str) -> None:
        self._guard("unlink", path)
        super().unlink(path)

    def mkdir(self, path: str, mode: int = 0o700) -> None:
        self._guard("mkdir", path)
        super().mkdir(path, mode)

    def listdir(self, path: str) -> list[tuple[str, bool]]:
        self._guard("listdir", path)
        return super().listdir(path)

    def fsync_dir(self, path: str) -> None:
        self._guard("fsync_dir", path)
        super().fsync_dir(path)

    def chmod(self, path: str, mode: int) -> None:
        self._guard("chmod", path)
        super().chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._guard("chown", path)
        super().chown(path, uid, gid)

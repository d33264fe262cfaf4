"""The master's lock and pid file.

As in Postfix, one master owns a queue: it holds an exclusive lock on
``$data_directory/master.lock`` for its whole life and writes its pid into
``$queue_directory/pid/master.pid``. A second master on the same queue finds
the lock taken and refuses to start.
"""

from __future__ import annotations

import errno
import fcntl
import os


class AlreadyRunning(Exception):
    def __init__(self, pid: int | None):
        super().__init__(f"the mail system is already running (pid {pid})" if pid
                         else "the mail system is already running")
        self.pid = pid


def pid_path(queue_directory: str) -> str:
    return os.path.join(queue_directory, "pid", "master.pid")


def lock_path(data_directory: str) -> str:
    return os.path.join(data_directory, "master.lock")


def read_pid(queue_directory: str) -> int | None:
    try:
        with open(pid_path(queue_directory), encoding="ascii") as f:
            text = f.read().strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


def running_pid(queue_directory: str, data_directory: str) -> int | None:
    """The pid of the master that holds the lock, or None."""
    try:
        fd = os.open(lock_path(data_directory), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return read_pid(queue_directory) or -1
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class MasterLock:
    """Held by the running master."""

    def __init__(self, queue_directory: str, data_directory: str,
                 owner: tuple[int, int] | None = None):
        self.queue_directory = queue_directory
        self.data_directory = data_directory
        #: (uid, gid) the lock file belongs to, as everything in
        #: data_directory (mail_owner's, in an instance started by root)
        self.owner = owner
        self.fd: int | None = None

    def acquire(self) -> None:
        os.makedirs(self.data_directory, exist_ok=True)
        os.makedirs(os.path.dirname(pid_path(self.queue_directory)), exist_ok=True)
        fd = os.open(lock_path(self.data_directory), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise AlreadyRunning(read_pid(self.queue_directory)) from None
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        self.fd = fd
        self.write_pid()

    def write_pid(self) -> None:
        path = pid_path(self.queue_directory)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="ascii") as f:
            f.write(f"{os.getpid():>10}\n")
        os.replace(tmp, path)

    def release(self) -> None:
        try:
            os.unlink(pid_path(self.queue_directory))
        except OSError:
            pass
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

"""The durable queue store: queue files under $queue_directory.

Writing (cleanup, postdrop)::

    w = store.create("incoming")        # w.queue_id is known from here on
    w.write_envelope(env)
    for chunk in body: w.write_content(chunk)
    qid = w.commit()                    # durable now: reply "250 ... queued as QID"

Reading (qmgr, delivery agents)::

    with store.open("active", qid) as f:
        f.envelope, f.content(), f.mark_done(rcpt)

Moving: :meth:`QueueStore.move` (a rename), :meth:`QueueStore.remove`,
:meth:`QueueStore.list`. Per-message logs: :meth:`QueueStore.append_log`,
:meth:`QueueStore.read_log`, :meth:`QueueStore.remove_log`. After a crash:
:meth:`QueueStore.recover`.

The durability argument, in short (docs/queue.md has it in full): a message
is written to a temporary name that is not a queue id, so nothing ever reads
it; commit() appends the END record, fsyncs the file, renames it to its
queue id without overwriting anything, fsyncs the directory (shared between
concurrent committers, see :mod:`groupcommit`), and only then returns. Any
failure before the rename removes the temporary file; a failure of the
directory fsync removes the new name again. Every file operation goes
through :class:`FileOps`, so tests inject ENOSPC, EIO and crashes at each of
them.

The writer and the open file live in :mod:`queuefile`, recovery in
:mod:`recovery`, the directory names in :mod:`directories`, the errors in
:mod:`errors`; this module re-exports what callers need.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from . import msglog
from .directories import (
    ACTIVE,
    BOUNCE,
    CORRUPT,
    DEFER,
    DEFERRED,
    FLUSH,
    HOLD,
    INCOMING,
    LAYOUT,
    LOG_QUEUES,
    MAILDROP,
    MESSAGE_QUEUES,
    SAVED,
    SETGID_DIRS,
    TRACE,
)
from .errors import CorruptQueueFile, NoSuchMessage, QueueError, best_effort, wrap_os_error
from .fileops import FileOps
from .groupcommit import GroupSync
from .ids import hash_dirs, is_queue_id, make_queue_id
from .queuefile import MODE_EXPIRE, MODE_WRITING, QueueFile, QueueWriter, is_ready_mode
from .recovery import RecoveryReport
from .recovery import recover as _recover

__all__ = [
    "ACTIVE", "BOUNCE", "CORRUPT", "DEFER", "DEFERRED", "FLUSH", "HOLD", "INCOMING",
    "LOG_QUEUES", "MAILDROP", "MESSAGE_QUEUES", "SAVED", "TRACE", "CorruptQueueFile",
    "NoSuchMessage", "QueueError", "QueueFile", "QueueStore", "QueueWriter", "RecoveryReport",
]

_QUEUE_NAME = re.compile(r"[A-Za-z0-9]{1,100}")
_BLOCK = 64 * 1024
_List = list  # QueueStore.list shadows the builtin in its class body


class QueueStore:
    """The queue directories under *queue_directory*.

    Thread-safe: one store is shared by the threads of a process; each
    writer or open file belongs to one thread at a time.
    """

    def __init__(self, queue_directory: str, fileops: FileOps | None = None,
                 long_ids: bool = False, *,
                 hash_queue_names: Iterable[str] = (DEFERRED, DEFER),
                 hash_queue_depth: int = 1,
                 clock: Callable[[], int] = time.time_ns):
        if hash_queue_depth < 1:
            raise ValueError(f"hash_queue_depth must be at least 1, not {hash_queue_depth}")
        self.directory = os.path.abspath(queue_directory)
        self.ops = fileops if fileops is not None else FileOps()
        self.long_ids = long_ids
        self.hash_queue_names = frozenset(n.lower() for n in hash_queue_names)
        self.hash_queue_depth = hash_queue_depth
        self._clock = clock
        self._lock = threading.Lock()
        self._syncers: dict[str, GroupSync] = {}
        self._dirs: set[str] = set()  # directories known to exist
        self._queue_dirs: dict[str, str] = {}  # queue name -> its directory
        self._counter = itertools.count()

    @classmethod
    def from_settings(cls, settings, fileops: FileOps | None = None) -> QueueStore:
        """A store as main.cf describes it: queue_directory,
        enable_long_queue_ids, hash_queue_names, hash_queue_depth."""
        return cls(settings.str("queue_directory"), fileops,
                   long_ids=settings.bool("enable_long_queue_ids"),
                   hash_queue_names=settings.list("hash_queue_names"),
                   hash_queue_depth=settings.int("hash_queue_depth"))

    # -- names --------------------------------------------------------------

    def queue_dir(self, queue: str) -> str:
        known = self._queue_dirs.get(queue)
        if known is not None:
            return known
        if not _QUEUE_NAME.fullmatch(queue):
            raise ValueError(f"bad queue name {queue!r}")
        path = os.path.join(self.directory, queue)
        if len(self._queue_dirs) < 64:  # the queues' names: a handful
            self._queue_dirs[queue] = path
        return path

    def is_hashed(self, queue: str) -> bool:
        return queue.lower() in self.hash_queue_names

    def dir_of(self, queue: str, queue_id: str) -> str:
        """The directory that holds *queue_id* in *queue* (Postfix's
        ``mail_queue_dir``)."""
        base = self.queue_dir(queue)
        if not is_queue_id(queue_id):
            raise ValueError(f"bad queue id {queue_id!r}")
        if self.is_hashed(queue):
            return os.path.join(base, "/".join(hash_dirs(queue_id, self.hash_queue_depth)))
        return base

    def path(self, queue: str, queue_id: str) -> str:
        """Where *queue_id* lives in *queue* (Postfix's ``mail_queue_path``)."""
        return os.path.join(self.dir_of(queue, queue_id), queue_id)

    def _candidates(self, queue: str, queue_id: str) -> Iterator[str]:
        """The canonical path first, then (worked out only when it is not
        there) where the file would be under the other hashing setting
        (until recover() puts it in its place)."""
        first = self.path(queue, queue_id)
        yield first
        paths = [first]
        base = self.queue_dir(queue)
        for depth in sorted({1, self.hash_queue_depth}):
            p = os.path.join(base, *hash_dirs(queue_id, depth), queue_id)
            if p not in paths:
                paths.append(p)
                yield p
        flat = os.path.join(base, queue_id)
        if flat not in paths:
            yield flat

    def _locate(self, queue: str, queue_id: str) -> str:
        for p in self._candidates(queue, queue_id):
            try:
                self.ops.stat(p)
                return p
            except FileNotFoundError:
                continue
            except OSError as e:
                raise wrap_os_error(e, f"stat {p}") from e
        raise NoSuchMessage(queue, queue_id)

    # -- directories --------------------------------------------------------

    def _makedirs(self, path: str) -> None:
        """Create *path* and its missing parents under the queue directory,
        fsyncing each parent so the new directory survives a crash."""
        if path in self._dirs:
            return
        missing = []
        p = path
        while True:
            try:
                self.ops.stat(p)
                break
            except FileNotFoundError:
                missing.append(p)
                parent = os.path.dirname(p)
                if parent == p:
                    break
                p = parent
        for d in reversed(missing):
            try:
                self.ops.mkdir(d, 0o700)
            except FileExistsError:
                continue
            self.ops.fsync_dir(os.path.dirname(d))
        with self._lock:
            self._dirs.add(path)

    def _forget_dir(self, path: str) -> None:
        with self._lock:
            self._dirs.discard(path)

    def sync_dir(self, path: str) -> None:
        """fsync directory *path*; concurrent callers share one fsync."""
        with self._lock:
            syncer = self._syncers.get(path)
            if syncer is None:
                syncer = self._syncers[path] = GroupSync(lambda: self.ops.fsync_dir(path))
        syncer.sync()

    def dir_syncs(self, path: str) -> int:
        """How many fsyncs of *path* actually ran (group commit statistics)."""
        syncer = self._syncers.get(path)
        return syncer.attempts if syncer else 0

    def ensure_layout(self, owner: int | None = None, group: int | None = None,
                      setgid_group: int | None = None) -> None:
        """Create the queue directory and every subdirectory Postfix has,
        with Postfix's modes: maildrop 0730 and public 0710 owned by
        (*owner*, *setgid_group*), pid 0755 left to its creator (root), the
        rest 0700 owned by (*owner*, *group*). Without a setgid group,
        maildrop and public are 0700. Existing directories get their modes
        and owners fixed. A queue directory made here is 0755, as Postfix's
        (root's, while the mail owner works inside)."""
        try:
            self.ops.stat(self.directory)
            made = False
        except FileNotFoundError:
            made = True
        self._makedirs(self.directory)
        if made:
            self.ops.chmod(self.directory, 0o755)
        for name, mode in LAYOUT.items():
            path = os.path.join(self.directory, name)
            try:
                self.ops.mkdir(path, mode)
            except FileExistsError:
                pass
            if name in SETGID_DIRS and setgid_group is None:
                mode = 0o700
            st = self.ops.stat(path)
            if st.st_mode & 0o7777 != mode:
                self.ops.chmod(path, mode)
            if name == "pid":
                continue
            uid = -1 if owner is None else owner
            gid = setgid_group if name in SETGID_DIRS and setgid_group is not None else group
            gid = -1 if gid is None else gid
            if (uid != -1 and st.st_uid != uid) or (gid != -1 and st.st_gid != gid):
                self.ops.chown(path, uid, gid)
            with self._lock:
                self._dirs.add(path)
        self.ops.fsync_dir(self.directory)

    # -- writing ------------------------------------------------------------

    def create(self, queue: str = INCOMING) -> QueueWriter:
        """Start a new queue file in *queue*. Its id is known at once
        (``writer.queue_id``) but nothing can see the file before
        :meth:`QueueWriter.commit` returns."""
        top = self.queue_dir(queue)
        ops = self.ops
        pid = os.getpid()
        fd = -1
        temp = ""
        try:
            for _ in range(1000):
                now = self._clock()
                usec = now // 1000 % 1_000_000
                temp = os.path.join(top, f"{usec}.{pid}.{next(self._counter)}")
                try:
                    fd = ops.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, MODE_WRITING)
                    break
                except FileExistsError:
                    continue
                except FileNotFoundError:
                    self._forget_dir(top)
                    self._makedirs(top)
            else:
                raise QueueError(errno.EEXIST, "cannot create a temporary queue file", top)
            if queue != MAILDROP and os.geteuid() == 0:
                # A daemon that works as root (local, forwarding mail) makes
                # the file its queue's owner's, for qmgr to open. (In
                # maildrop the owner is who submitted: pickup logs it.)
                st = ops.stat(top)
                if st.st_uid != 0:
                    ops.fchown(fd, st.st_uid, st.st_gid)
            inode = ops.fstat(fd).st_ino
        except OSError as e:
            if fd >= 0:
                best_effort(ops.close, fd)
                best_effort(ops.unlink, temp)
            raise wrap_os_error(e, f"create queue file in {queue}") from e
        sec, usec = divmod(now // 1000, 1_000_000)
        queue_id = make_queue_id(sec, usec, inode, self.long_ids)
        return QueueWriter(self, queue, queue_id, temp, fd, (sec, usec))

    # -- reading ------------------------------------------------------------

    def open(self, queue: str, queue_id: str, writable: bool = True) -> QueueFile:
        """Open a committed message. Raises :class:`NoSuchMessage` or
        :class:`CorruptQueueFile` (quarantine it with :meth:`quarantine`)."""
        for path in self._candidates(queue, queue_id):
            try:
                fd = self.ops.open(path, os.O_RDWR if writable else os.O_RDONLY)
                break
            except FileNotFoundError:
                continue
            except OSError as e:
                raise wrap_os_error(e, f"open {path}") from e
        else:
            raise NoSuchMessage(queue, queue_id)
        try:
            return QueueFile(self, queue, queue_id, path, fd, writable)
        except BaseException:
            best_effort(self.ops.close, fd)
            raise

    def exists(self, queue: str, queue_id: str) -> bool:
        try:
            self._locate(queue, queue_id)
            return True
        except NoSuchMessage:
            return False

    def find(self, queue_id: str, queues: Iterable[str] = MESSAGE_QUEUES) -> str | None:
        """The first of *queues* that holds *queue_id* (postsuper, postcat)."""
        for q in queues:
            if self.exists(q, queue_id):
                return q
        return None

    def locate(self, queue: str, queue_id: str) -> str:
        """The path of *queue_id* in *queue*: where the hashing parameters
        put it, or where it was under the other setting. Raises
        :class:`NoSuchMessage`."""
        return self._locate(queue, queue_id)

    def set_forced_expire(self, queue: str, queue_id: str) -> bool:
        """Mark a committed message so that qmgr returns it to its sender at
        the next delivery attempt (``postsuper -e``; Postfix sets the same
        bit). False when the message is not there, is not a committed
        queue file, or was marked already."""
        try:
            path = self._locate(queue, queue_id)
        except NoSuchMessage:
            return False
        try:
            fd = self.ops.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise wrap_os_error(e, f"expire {queue_id} in {queue}") from e
        try:
            st = self.ops.fstat(fd)
            if not is_ready_mode(st.st_mode) or st.st_mode & MODE_EXPIRE:
                return False
            self.ops.fchmod(fd, (st.st_mode | MODE_EXPIRE) & 0o7777)
            return True
        except OSError as e:
            raise wrap_os_error(e, f"expire {queue_id} in {queue}") from e
        finally:
            best_effort(self.ops.close, fd)

    def forced_expire(self, queue: str, queue_id: str) -> bool:
        """Whether ``postsuper -e``/``-f`` marked the message (postqueue's
        ``forced_expire``)."""
        try:
            return bool(self.ops.stat(self._locate(queue, queue_id)).st_mode & MODE_EXPIRE)
        except (NoSuchMessage, FileNotFoundError):
            return False

    def list(self, queue: str) -> list[str]:
        """The queue ids in *queue*, hashed subdirectories included, in no
        particular order. Temporary files are never listed."""
        return [qid for qid, _ in self.scan(queue)]

    def scan(self, queue: str) -> Iterator[tuple[str, str]]:
        """(queue id, path) of every queue file in *queue*, wherever it is."""
        stack = [(self.queue_dir(queue), 0)]
        while stack:
            d, level = stack.pop()
            try:
                entries = self.ops.listdir(d)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise wrap_os_error(e, f"scan {d}") from e
            for name, is_dir in entries:
                if is_dir:
                    if len(name) == 1 and level < 16:
                        stack.append((os.path.join(d, name), level + 1))
                elif is_queue_id(name):
                    yield name, os.path.join(d, name)

    # -- moving -------------------------------------------------------------

    def move(self, queue_id: str, src: str, dst: str, sync: bool = True) -> None:
        """Move a message between queues with one rename (atomic; it never
        replaces a file of the same name). With *sync* (the default) the
        destination directory is fsynced before this returns, so the move
        cannot be lost even on a file system that does not order directory
        updates; the old name may at worst come back after a power loss,
        next to the new one, and recover() drops it. Should that fsync fail,
        the file is renamed back and QueueError raised."""
        old = self._locate(src, queue_id)
        new = self.path(dst, queue_id)
        self._rename(old, new, f"move {queue_id} from {src} to {dst}")
        if sync:
            try:
                self.sync_dir(os.path.dirname(new))
            except OSError as e:
                best_effort(self.ops.rename_noreplace, new, old)
                raise wrap_os_error(e, f"move {queue_id} from {src} to {dst}: fsync") from e

    def _rename(self, old: str, new: str, what: str) -> None:
        try:
            try:
                self.ops.rename_noreplace(old, new)
            except FileNotFoundError:
                self.ops.stat(old)  # the source is there: the target directory is not
                self._forget_dir(os.path.dirname(new))
                self._makedirs(os.path.dirname(new))
                self.ops.rename_noreplace(old, new)
        except FileExistsError as e:
            raise QueueError(errno.EEXIST, f"{what}: {new} exists", new) from e
        except OSError as e:
            raise wrap_os_error(e, what) from e

    def quarantine(self, queue: str, queue_id: str) -> None:
        """Move an unreadable message to corrupt/, as Postfix's qmgr does."""
        self.move(queue_id, queue, CORRUPT)

    def remove(self, queue: str, queue_id: str, sync: bool = False) -> None:
        """Delete a message (its logs stay: see :meth:`remove_log`)."""
        path = self.path(queue, queue_id)
        try:
            try:
                self.ops.unlink(path)  # where it belongs, the usual case
            except FileNotFoundError:
                path = self._locate(queue, queue_id)
                self.ops.unlink(path)
            if sync:
                self.sync_dir(os.path.dirname(path))
        except FileNotFoundError:
            raise NoSuchMessage(queue, queue_id) from None
        except OSError as e:
            raise wrap_os_error(e, f"remove {queue_id} from {queue}") from e

    # -- per-message logs ---------------------------------------------------

    def log_path(self, kind: str, queue_id: str) -> str:
        if kind not in LOG_QUEUES:
            raise ValueError(f"bad log kind {kind!r}: one of {', '.join(LOG_QUEUES)}")
        return self.path(kind, queue_id)

    def append_log(self, kind: str, queue_id: str, entry: Mapping[str, object],
                   sync: bool = True) -> None:
        """Append one entry (recipient, status, action, reason, ...) to the
        defer, bounce or trace log of *queue_id*. With *sync* (the default)
        it is durable when this returns. Appenders take an exclusive flock;
        an entry a crash cut short is cut off before the next one is added."""
        path = self.log_path(kind, queue_id)
        data = msglog.encode_entry(entry)
        ops = self.ops
        fd = -1
        try:
            created = False
            for _ in range(2):
                try:
                    fd = ops.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL,
                                  0o600)
                    created = True
                    break
                except FileExistsError:
                    fd = ops.open(path, os.O_RDWR | os.O_APPEND)
                    break
                except FileNotFoundError:
                    self._forget_dir(os.path.dirname(path))
                    self._makedirs(os.path.dirname(path))
            else:
                raise QueueError(errno.ENOENT, "cannot create log", path)
            ops.flock(fd, fcntl.LOCK_EX)
            if not created:
                self._trim_log(fd)
            ops.write(fd, data)
            if sync:
                ops.fdatasync(fd)
        except OSError as e:
            raise wrap_os_error(e, f"append to {kind} log of {queue_id}") from e
        finally:
            if fd >= 0:
                best_effort(ops.close, fd)
        if sync and created:
            try:
                self.sync_dir(os.path.dirname(path))
            except OSError as e:
                raise wrap_os_error(e, f"append to {kind} log of {queue_id}") from e

    def _trim_log(self, fd: int) -> None:
        size = self.ops.fstat(fd).st_size
        if size == 0 or (size >= 2 and self.ops.pread(fd, 2, size - 2) == b"\n\n"):
            return
        data = _read_all(self.ops, fd, size)
        self.ops.ftruncate(fd, msglog.complete_length(data))

    def read_log(self, kind: str, queue_id: str) -> _List[dict[str, str]]:
        """The entries of a log, oldest first; [] when there is none."""
        path = self.log_path(kind, queue_id)
        try:
            fd = self.ops.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise wrap_os_error(e, f"read {kind} log of {queue_id}") from e
        try:
            return msglog.parse_log(_read_all(self.ops, fd, None))
        except OSError as e:
            raise wrap_os_error(e, f"read {kind} log of {queue_id}") from e
        finally:
            best_effort(self.ops.close, fd)

    def remove_logs(self, queue_id: str) -> None:
        """Remove the defer, bounce and trace logs of a message that is
        gone."""
        for kind in LOG_QUEUES:
            self.remove_log(kind, queue_id)

    def remove_log(self, kind: str, queue_id: str, sync: bool = False) -> bool:
        """Remove a log; False when there was none."""
        path = self.log_path(kind, queue_id)
        try:
            self.ops.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise wrap_os_error(e, f"remove {kind} log of {queue_id}") from e
        if sync:
            self.sync_dir(os.path.dirname(path))
        return True

    # -- recovery -----------------------------------------------------------

    def recover(self, now: float | None = None,
                maildrop_temp_age: float = 3600.0) -> RecoveryReport:
        """Put the queue in order after a crash; see :func:`recovery.recover`."""
        return _recover(self, now, maildrop_temp_age)


def _read_all(ops: FileOps, fd: int, size: int | None) -> bytes:
    parts = []
    offset = 0
    while size is None or offset < size:
        data = ops.pread(fd, _BLOCK if size is None else min(_BLOCK, size - offset), offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
    return b"".join(parts)

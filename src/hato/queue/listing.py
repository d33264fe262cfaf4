"""What is in the queue: every message of maildrop, active, incoming,
deferred and hold with its envelope and, per recipient still to deliver,
why its delivery was deferred. This is what Postfix's showq(8) reads for
``postqueue -p`` (mailq) and ``postqueue -j``; the presentation is the
command's (:mod:`hato.cli.postqueue`).

The queue is live while it is listed: a message may move from one queue
to the next (it may then be listed twice, or missed, as with Postfix), be
removed, or be committed. A file that is gone when it is opened is left
out without a word; a file that is not ready (Postfix's rule: its owner
permission bits are not rwx, as while it is written) is left out as well;
a file that is not a regular file, or that cannot be parsed, is left out
with a warning (the *warn* callback). Files are opened without following
symbolic links, and only names that are queue ids, under the queue
directories and their one-character hash subdirectories (which are not
followed when they are links), are looked at.

For each message:

* ``arrival_time``: the seconds of its T record, else the file's mtime;
* ``message_size``: the first field of its C record (the size of the
  message content as stored, which is about what SMTP would carry, line
  ends included), else the file size;
* ``forced_expire``: the group execute bit of the file, Postfix's mark of
  a message forced to expire (``postsuper -e``);
* ``recipients``: those not yet done, with the reason of the latest defer
  log entry for each one (matched by its record offset, else by address)
  — first those with a reason, in the order of the log, then the others
  in the order of the queue file, as showq lists them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from . import envelope as E
from . import msglog
from . import records as R
from .directories import ACTIVE, DEFER, DEFERRED, HOLD, INCOMING, MAILDROP
from .errors import CorruptQueueFile, best_effort
from .queuefile import QueueFile
from .store import QueueStore

#: The queues showq lists, in its order.
LISTED_QUEUES = (MAILDROP, ACTIVE, INCOMING, DEFERRED, HOLD)

#: Postfix's MAIL_QUEUE_STAT_READY (owner rwx) and MAIL_QUEUE_STAT_EXPIRE.
STAT_READY = stat.S_IRWXU
STAT_EXPIRE = stat.S_IXGRP

#: The most defer log bytes read for one message.
MAX_LOG_SIZE = 16 * 1024 * 1024

Warn = Callable[[str], None]


@dataclass
class ListedRecipient:
    address: str
    #: why delivery was deferred; "" when there is no reason on record
    #: (delivery in progress, not yet tried, or stopped before it was logged)
    reason: str = ""


@dataclass
class ListedMessage:
    queue_name: str
    queue_id: str
    arrival_time: int
    message_size: int
    forced_expire: bool
    sender: str  # "" for the null sender
    recipients: list[ListedRecipient] = field(default_factory=list)


def list_queue(store: QueueStore, queues: Iterable[str] = LISTED_QUEUES,
               warn: Warn | None = None) -> Iterator[ListedMessage]:
    """Every message of *queues* (showq's order by default), read as it
    is found. An error reading a queue directory itself (permission
    denied, say) raises :class:`~hato.queue.errors.QueueError`."""
    for queue in queues:
        for queue_id, path in store.scan(queue):
            msg = read_message(store, queue, queue_id, path, warn)
            if msg is not None:
                yield msg


def read_message(store: QueueStore, queue: str, queue_id: str, path: str | None = None,
                 warn: Warn | None = None) -> ListedMessage | None:
    """One message as listed, or None when it is gone, not ready, or
    unreadable (then *warn* says why)."""
    warn = warn or (lambda text: None)
    ops = store.ops
    if path is None:
        path = store.path(queue, queue_id)
    try:
        fd = ops.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ELOOP:
            warn(f"{path}: not a regular file")
        else:
            warn(f"open {queue} {queue_id}: {err.strerror or err}")
        return None
    try:
        st = ops.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            warn(f"{path}: uid {st.st_uid}: not a regular file")
            return None
        if st.st_mode & STAT_READY != STAT_READY:
            return None  # still being written
        size = _segment_size(ops, fd)
        try:
            qf = QueueFile(store, queue, queue_id, path, fd, writable=False)
        except CorruptQueueFile as err:
            warn(f"{queue} {queue_id}: {err.reason} -- skipping this file")
            return None
        env = qf.envelope
        fd = -1  # the QueueFile owns it now
        qf.close()
        log = _defer_log(store, queue_id, warn)
    except OSError as err:
        warn(f"read {queue} {queue_id}: {err.strerror or err}")
        return None
    finally:
        if fd >= 0:
            best_effort(ops.close, fd)
    return ListedMessage(
        queue_name=queue, queue_id=queue_id,
        arrival_time=int(env.arrival_time) or int(st.st_mtime),
        message_size=size if size is not None else st.st_size,
        forced_expire=bool(st.st_mode & STAT_EXPIRE),
        sender=env.sender,
        recipients=merge_reasons(env.recipients, log))


def merge_reasons(recipients: list[E.Recipient],
                  log: list[dict[str, str]]) -> list[ListedRecipient]:
    """The recipients not yet done, with their latest deferral reason:
    those with a reason first (in the order of their latest log entry),
    then the others in envelope order."""
    pending = [r for r in recipients if not r.done]
    by_offset = {r.offset: r for r in pending if r.offset is not None}
    by_address: dict[str, E.Recipient] = {}
    for r in pending:
        by_address.setdefault(r.address.lower(), r)
    latest: dict[int, tuple[int, str]] = {}  # id(recipient) -> (log position, reason)
    for pos, entry in enumerate(log):
        rcpt = None
        offset = entry.get("offset", "")
        if offset.isdigit() and int(offset) in by_offset:
            rcpt = by_offset[int(offset)]
        if rcpt is None:
            for key in ("recipient", "orig_rcpt"):
                rcpt = by_address.get(entry.get(key, "").lower())
                if rcpt is not None:
                    break
        if rcpt is None:
            continue  # done since, or not of this message
        latest[id(rcpt)] = (pos, entry.get("reason", ""))
    with_reason = sorted((r for r in pending if latest.get(id(r), (0, ""))[1]),
                         key=lambda r: latest[id(r)][0])
    out = [ListedRecipient(r.address, latest[id(r)][1]) for r in with_reason]
    out += [ListedRecipient(r.address) for r in pending if not latest.get(id(r), (0, ""))[1]]
    return out


def _segment_size(ops, fd: int) -> int | None:
    """The message size of the C record, None when it is not there."""
    try:
        first = next(R.read_records(lambda off, n: ops.pread(fd, n, off), 0, block=256), None)
    except R.RecordError:
        return None
    if first is None or first.type != R.SIZE:
        return None
    try:
        return E.parse_size_record(first.data)[0]
    except ValueError:
        return None


def _defer_log(store: QueueStore, queue_id: str, warn: Warn) -> list[dict[str, str]]:
    """The entries of the defer log of *queue_id*; [] when there is none
    or it cannot be read (a warning says why)."""
    ops = store.ops
    path = store.log_path(DEFER, queue_id)
    try:
        fd = ops.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return []
    except OSError as err:
        if err.errno == errno.ELOOP:
            warn(f"{path}: not a regular file")
        else:
            warn(f"open {DEFER} {queue_id}: {err.strerror or err}")
        return []
    try:
        st = ops.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            warn(f"{path}: not a regular file")
            return []
        parts = []
        offset = 0
        while offset < MAX_LOG_SIZE:
            data = ops.pread(fd, min(64 * 1024, MAX_LOG_SIZE - offset), offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
        return msglog.parse_log(b"".join(parts))
    except OSError as err:
        warn(f"read {DEFER} {queue_id}: {err.strerror or err}")
        return []
    finally:
        best_effort(ops.close, fd)


__all__ = ["LISTED_QUEUES", "ListedMessage", "ListedRecipient", "list_queue",
           "merge_reasons", "read_message"]

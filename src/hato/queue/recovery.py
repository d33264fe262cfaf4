"""Putting the queue in order after a crash: :func:`recover`.

Run once at startup (``QueueStore.recover()``), before any service writes to
the queue. See docs/queue.md.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .directories import ACTIVE, CORRUPT, INCOMING, LOG_QUEUES, MAILDROP, MESSAGE_QUEUES, PRECEDENCE
from .errors import CorruptQueueFile, QueueError

if TYPE_CHECKING:
    from .store import QueueStore

#: Temporary queue file names: hato's usec.pid.n and Postfix's usec.pid.
TEMP_NAME = re.compile(r"\d+\.\d+(\.\d+)?")


@dataclass
class RecoveryReport:
    """What :meth:`QueueStore.recover` did."""

    removed_temp: list[str] = field(default_factory=list)  # paths
    corrupt: list[tuple[str, str]] = field(default_factory=list)  # (queue, qid)
    requeued: list[str] = field(default_factory=list)  # active -> incoming
    rehashed: list[tuple[str, str]] = field(default_factory=list)  # (queue, qid)
    removed_logs: list[tuple[str, str]] = field(default_factory=list)  # (kind, qid)
    stale_names: list[tuple[str, str]] = field(default_factory=list)  # (queue, qid) unlinked
    errors: list[str] = field(default_factory=list)


def recover(store: QueueStore, now: float | None = None,
            maildrop_temp_age: float = 3600.0) -> RecoveryReport:
    """Put the queue in order after a crash; run once at startup, before
    any service writes to the queue.

    1. Temporary files (a message being written when the crash came,
       never acknowledged) are removed; in maildrop/, which sendmail
       writes while hato may be down, only those older than
       *maildrop_temp_age* seconds.
    2. Messages in active/ go back to incoming/, where qmgr picks them
       up again (recipients marked done stay done).
    3. A file found under two queue names (the old name of a move came
       back after a power loss) keeps one of them.
    4. Every message in incoming/, maildrop/ (and so the former active
       ones) is read; one that cannot be read or has no END record goes
       to corrupt/.
    5. Files that are not where the hashing parameters put them are
       moved there (as postsuper does after hash_queue_names changes).
    6. defer/, bounce/ and trace/ logs of messages that no longer exist
       are removed.
    """
    report = RecoveryReport()
    now = time.time() if now is None else now
    touched: set[str] = set()
    _remove_temp_files(store, report, now, maildrop_temp_age, touched)
    for qid, path in list(store.scan(ACTIVE)):
        try:
            _recover_move(store, path, store.path(INCOMING, qid), touched)
            report.requeued.append(qid)
        except OSError as e:
            report.errors.append(f"requeue {qid}: {e}")
    _drop_stale_names(store, report, touched)
    for queue in (INCOMING, MAILDROP):
        for qid, path in list(store.scan(queue)):
            try:
                store.open(queue, qid, writable=False).close()
            except CorruptQueueFile:
                try:
                    _recover_move(store, path, store.path(CORRUPT, qid), touched)
                    report.corrupt.append((queue, qid))
                except OSError as e:
                    report.errors.append(f"quarantine {qid}: {e}")
            except OSError as e:
                report.errors.append(f"check {queue}/{qid}: {e}")
    present: set[str] = set()
    for queue in MESSAGE_QUEUES + LOG_QUEUES:
        for qid, path in list(store.scan(queue)):
            if queue in MESSAGE_QUEUES:
                present.add(qid)
            canonical = store.path(queue, qid)
            if path != canonical:
                try:
                    _recover_move(store, path, canonical, touched)
                    report.rehashed.append((queue, qid))
                except OSError as e:
                    report.errors.append(f"rehash {queue}/{qid}: {e}")
    for kind in LOG_QUEUES:
        for qid, path in list(store.scan(kind)):
            if qid not in present:
                try:
                    store.ops.unlink(path)
                    touched.add(os.path.dirname(path))
                    report.removed_logs.append((kind, qid))
                except OSError as e:
                    report.errors.append(f"remove {path}: {e}")
    for d in sorted(touched):
        try:
            store.ops.fsync_dir(d)
        except FileNotFoundError:
            pass
        except OSError as e:
            report.errors.append(f"fsync {d}: {e}")
    return report


def _drop_stale_names(store: QueueStore, report: RecoveryReport, touched: set[str]) -> None:
    """One file under two queue names: a move whose old name came back
    after a power loss. Both names are the same inode (done recipients
    included), so keeping either is safe; keep the later stage of the
    flow by PRECEDENCE and unlink the other name."""
    seen: dict[tuple[int, int], str] = {}
    for queue in PRECEDENCE:
        for qid, path in list(store.scan(queue)):
            try:
                st = store.ops.stat(path)
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen[key] = queue
                    continue
                store.ops.unlink(path)
                touched.add(os.path.dirname(path))
                report.stale_names.append((queue, qid))
            except FileNotFoundError:
                pass
            except OSError as e:
                report.errors.append(f"check {queue}/{qid}: {e}")


def _remove_temp_files(store: QueueStore, report: RecoveryReport, now: float, maildrop_age: float,
                       touched: set[str]) -> None:
    for queue in MESSAGE_QUEUES:
        top = store.queue_dir(queue)
        try:
            entries = store.ops.listdir(top)
        except FileNotFoundError:
            continue
        for name, is_dir in entries:
            if is_dir or not TEMP_NAME.fullmatch(name):
                continue
            path = os.path.join(top, name)
            try:
                if queue == MAILDROP and now - store.ops.stat(path).st_mtime < maildrop_age:
                    continue
                store.ops.unlink(path)
                touched.add(top)
                report.removed_temp.append(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                report.errors.append(f"remove {path}: {e}")


def _recover_move(store: QueueStore, old: str, new: str, touched: set[str]) -> None:
    try:
        store._rename(old, new, f"move {old} to {new}")
    except QueueError as e:
        if e.errno != errno.EEXIST:
            raise
        # The same file under two names (a link left by a crash): drop
        # the old name; two different files keep both and are reported.
        if not os.path.samestat(store.ops.stat(old), store.ops.stat(new)):
            raise
        store.ops.unlink(old)
    touched.add(os.path.dirname(old))
    touched.add(os.path.dirname(new))

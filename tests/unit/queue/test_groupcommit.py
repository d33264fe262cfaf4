"""Group commit: concurrent committers share directory fsyncs."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest

from hato.queue.envelope import Envelope, Recipient
from hato.queue.fileops import FileOps
from hato.queue.groupcommit import GroupSync
from hato.queue.store import QueueStore


def _wait_until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.001)


def test_callers_during_a_sync_share_the_next_one():
    gate = threading.Event()
    calls = []

    def sync():
        calls.append(1)
        if len(calls) == 1:
            gate.wait(10)

    g = GroupSync(sync)
    errors = []

    def run():
        try:
            g.sync()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    first = threading.Thread(target=run)
    first.start()
    _wait_until(lambda: g._running)
    later = [threading.Thread(target=run) for _ in range(5)]
    for t in later:
        t.start()
    _wait_until(lambda: g._waiting.get(1) == 5)
    gate.set()
    for t in [first, *later]:
        t.join(10)
    assert not errors
    assert len(calls) == 2 and g.attempts == 2  # six callers, two fsyncs
    assert g._results == {} and g._waiting == {}


def test_a_failed_sync_fails_everyone_it_covered():
    gate = threading.Event()
    calls = []

    def sync():
        calls.append(1)
        if len(calls) == 1:
            gate.wait(10)
        elif len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")

    g = GroupSync(sync)
    results: dict[int, object] = {}

    def run(i):
        try:
            g.sync()
            results[i] = "ok"
        except OSError as e:
            results[i] = e.errno

    first = threading.Thread(target=run, args=(0,))
    first.start()
    _wait_until(lambda: g._running)
    later = [threading.Thread(target=run, args=(i,)) for i in (1, 2, 3)]
    for t in later:
        t.start()
    _wait_until(lambda: g._waiting.get(1) == 3)
    gate.set()
    for t in [first, *later]:
        t.join(10)
    assert results == {0: "ok", 1: errno.EIO, 2: errno.EIO, 3: errno.EIO}
    g.sync()  # a new attempt starts afresh
    assert len(calls) == 3


class SlowDirSync(FileOps):
    def __init__(self):
        self.dir_syncs = 0
        self._lock = threading.Lock()

    def fsync_dir(self, path: str) -> None:
        with self._lock:
            self.dir_syncs += 1
        time.sleep(0.01)  # a slow disk
        super().fsync_dir(path)


def test_concurrent_commits_share_directory_fsyncs(tmp_path):
    ops = SlowDirSync()
    store = QueueStore(str(tmp_path / "q"), ops)
    store.ensure_layout()
    ops.dir_syncs = 0
    done: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(k):
        try:
            for i in range(8):
                w = store.create()
                w.write_envelope(Envelope(sender=f"{k}@x", recipients=[Recipient("r@x")]))
                w.write_content(f"message {k}.{i}\n".encode())
                qid = w.commit()
                with lock:
                    done.append(qid)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(done) == 64 and sorted(store.list("incoming")) == sorted(done)
    incoming = os.path.join(store.directory, "incoming")
    assert store.dir_syncs(incoming) == ops.dir_syncs
    # eight committers at a time: far fewer fsyncs than commits
    assert ops.dir_syncs < 64
    for qid in done:
        with store.open("incoming", qid) as f:
            assert f.read_content().startswith(b"message ")


@pytest.mark.parametrize("n", [1, 3])
def test_commit_failure_in_a_shared_fsync_removes_each_message(tmp_path, n):
    class FailingDirSync(FileOps):
        def fsync_dir(self, path):
            time.sleep(0.005)
            raise OSError(errno.EIO, "I/O error", path)

    store = QueueStore(str(tmp_path / "q"))
    store.ensure_layout()
    store.ops = FailingDirSync()
    failures = []

    def worker():
        w = store.create()
        w.write_envelope(Envelope(recipients=[Recipient("r@x")]))
        try:
            w.commit()
        except OSError as e:
            failures.append(e.errno)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert failures == [errno.EIO] * n
    assert store.list("incoming") == []
    assert os.listdir(os.path.join(store.directory, "incoming")) == []

"""Fault injection through the FileOps seam.

Every file operation of writing a message is failed in turn (ENOSPC, EIO,
with and without a partial write, and a simulated crash); afterwards no
queue holds a message that looks complete unless commit() returned it, and
nothing half-written is left behind.
"""

from __future__ import annotations

import errno
import os

import pytest

from hato.queue.envelope import Recipient
from hato.queue.fileops import CRASH, FaultyFileOps, FileOps, SimulatedCrash
from hato.queue.store import MESSAGE_QUEUES, QueueError, QueueStore

from .conftest import all_files, listed, sample_envelope

# Chunks that make the writer flush from its buffer and also write past it.
CHUNKS = [b"Subject: faults\r\n\r\n", b"x" * 40_000 + b"\n", b"y\n" * 30_000,
          b"z" * 100_000, b"tail"]
BODY = b"".join(CHUNKS)


def _scenario(store: QueueStore, hold: bool, writers: list) -> str:
    w = store.create()
    writers.append(w)
    env = sample_envelope(3)
    env.hold = hold
    w.write_envelope(env)
    for chunk in CHUNKS:
        w.write_content(chunk)
    w.add_recipient(Recipient("late@example.org"))
    return w.commit()


def _check_complete(store: QueueStore, queue: str, qid: str) -> None:
    with store.open(queue, qid) as f:
        assert len(f.envelope.recipients) == 4
        assert f.read_content() == BODY


def _fresh(tmp_path, name: str, layout: bool) -> str:
    qdir = str(tmp_path / name)
    if layout:
        QueueStore(qdir).ensure_layout()
    return qdir


def _count_ops(tmp_path, layout: bool, hold: bool) -> int:
    ops = FaultyFileOps()
    _scenario(QueueStore(_fresh(tmp_path, f"count{layout}{hold}", layout), ops), hold, [])
    return len(ops.calls)


def _close(writers: list) -> None:
    for w in writers:  # a crashed writer still holds its descriptor
        if w._fd >= 0:
            try:
                os.close(w._fd)
            except OSError:  # the crash came in close() itself
                pass
            w._fd = -1


CASES = [(layout, hold) for layout in (True, False) for hold in (False, True)]


@pytest.mark.parametrize("layout,hold", CASES)
@pytest.mark.parametrize("error,partial", [(errno.ENOSPC, False), (errno.ENOSPC, True),
                                           (errno.EIO, False), (errno.EIO, True)])
def test_error_at_every_step(tmp_path, layout, hold, error, partial):
    total = _count_ops(tmp_path, layout, hold)
    assert total >= 10
    target = "hold" if hold else "incoming"
    outcomes = set()
    for n in range(1, total + 1):
        qdir = _fresh(tmp_path, f"n{n}", layout)
        ops = FaultyFileOps(fail_at=n, error=error, partial=partial)
        writers: list = []
        try:
            qid = _scenario(QueueStore(qdir, ops), hold, writers)
        except QueueError as e:
            assert e.errno == error, (n, ops.faults, e)
            qid = None
        finally:
            _close(writers)
        assert ops.tripped, n
        clean = QueueStore(qdir)
        if qid is None:
            outcomes.add(("raised", ops.faults[0][1]))
            # nothing visible, nothing left over at all
            assert listed(clean) == {}, (n, ops.faults)
            assert all_files(qdir) == [], (n, ops.faults, all_files(qdir))
        else:
            outcomes.add(("committed", ops.faults[0][1]))
            assert listed(clean) == {target: [qid]}, (n, ops.faults)
            _check_complete(clean, target, qid)
    # every kind of step was hit, and only a failing close() is harmless
    assert {op for how, op in outcomes if how == "committed"} <= {"close"}
    assert {op for how, op in outcomes if how == "raised"} >= {
        "open", "fstat", "write", "pwrite", "fchmod", "fsync", "rename_noreplace", "fsync_dir"}


@pytest.mark.parametrize("layout,hold", CASES)
def test_crash_at_every_step(tmp_path, layout, hold):
    total = _count_ops(tmp_path, layout, hold)
    target = "hold" if hold else "incoming"
    for n in range(1, total + 1):
        qdir = _fresh(tmp_path, f"c{n}", layout)
        ops = FaultyFileOps(fail_at=n, error=CRASH, partial=True)
        writers: list = []
        with pytest.raises(SimulatedCrash):
            _scenario(QueueStore(qdir, ops), hold, writers)
        _close(writers)
        qid = writers[0].queue_id if writers else None
        # restart
        store = QueueStore(qdir)
        report = store.recover()
        assert report.corrupt == [] and report.errors == []
        now = listed(store)
        # never acknowledged, so it may be gone; if it is there it is whole
        # (the crash came after the rename: at-least-once, never partial)
        assert now in ({}, {target: [qid]}), (n, ops.faults)
        if now:
            _check_complete(store, target, qid)
            assert ops.faults[0][1] in ("fsync_dir", "close")
        assert all_files(qdir) == ([f"{target}/{qid}"] if now else []), (n, ops.faults)


@pytest.mark.parametrize("error", [errno.EIO, CRASH])
def test_disk_that_stays_broken(tmp_path, error):
    """From call N on every call fails: cleanup fails too. Whatever is left,
    nothing incomplete is ever listed, after the disk heals and recover()."""
    total = _count_ops(tmp_path, True, False)
    for n in range(1, total + 1):
        qdir = _fresh(tmp_path, f"s{n}", True)
        ops = FaultyFileOps(fail_at=n, error=error, sticky=True)
        writers: list = []
        try:
            _scenario(QueueStore(qdir, ops), False, writers)
            assert ops.faults[0][1] == "close"  # the data was on disk already
        except (QueueError, SimulatedCrash):
            pass
        _close(writers)
        store = QueueStore(qdir)
        store.recover()
        for queue in MESSAGE_QUEUES:
            for qid in store.list(queue):
                assert queue == "incoming" and qid == writers[0].queue_id
                _check_complete(store, queue, qid)


def _stored(tmp_path, name: str) -> tuple[str, str]:
    qdir = _fresh(tmp_path, name, True)
    store = QueueStore(qdir)
    return qdir, _scenario(store, False, [])


def _ops_of(action, qdir: str) -> int:
    ops = FaultyFileOps()
    action(QueueStore(qdir, ops))
    return len(ops.calls)


def _mark(store: QueueStore, qid: str) -> None:
    with store.open("incoming", qid) as f:
        f.mark_done(f.envelope.recipients[0], f.envelope.recipients[2])


def test_faults_in_mark_done(tmp_path):
    qdir, qid = _stored(tmp_path, "m")
    total = _ops_of(lambda s: _mark(s, qid), qdir)
    for n in range(1, total + 1):
        qdir, qid = _stored(tmp_path, f"m{n}")
        ops = FaultyFileOps(fail_at=n, error=errno.EIO)
        store = QueueStore(qdir, ops)
        try:
            _mark(store, qid)
            ok = True
        except QueueError:
            ok = False
        with QueueStore(qdir).open("incoming", qid) as f:
            done = [r.done for r in f.envelope.recipients]
            assert f.read_content() == BODY
        if ok:
            assert done == [True, False, True, False]
        else:  # each flip is whole or absent; a retry of the delivery is allowed
            assert done[1] is False and done[3] is False


def test_faults_in_move_and_logs(tmp_path):
    def action(s: QueueStore) -> None:
        qid = s.list("incoming")[0]
        s.append_log("defer", qid, {"recipient": "a@b", "status": "4.0.0"})
        s.move(qid, "incoming", "deferred", sync=True)
        s.append_log("defer", qid, {"recipient": "c@d", "status": "4.0.0"})

    qdir, _ = _stored(tmp_path, "v")
    total = _ops_of(action, qdir)
    for n in range(1, total + 1):
        for error in (errno.ENOSPC, CRASH):
            qdir, qid = _stored(tmp_path, f"v{n}{error}")
            ops = FaultyFileOps(fail_at=n, error=error, partial=True)
            try:
                action(QueueStore(qdir, ops))
                assert error != CRASH and ops.faults[0][1] == "close"
            except (QueueError, SimulatedCrash):
                pass
            store = QueueStore(qdir)
            store.recover()
            where = [q for q in MESSAGE_QUEUES if qid in store.list(q)]
            assert where in (["incoming"], ["deferred"])  # in exactly one queue
            _check_complete(store, where[0], qid)
            log = store.read_log("defer", qid)
            assert log in ([], [{"recipient": "a@b", "status": "4.0.0"}],
                           [{"recipient": "a@b", "status": "4.0.0"},
                            {"recipient": "c@d", "status": "4.0.0"}]), (n, ops.faults, log)


def test_fault_plans_by_name(tmp_path):
    qdir = _fresh(tmp_path, "named", True)
    ops = FaultyFileOps(op="fsync_dir", error=errno.EIO)
    with pytest.raises(QueueError) as e:
        _scenario(QueueStore(qdir, ops), False, [])
    assert e.value.errno == errno.EIO
    assert [f[1] for f in ops.faults] == ["fsync_dir"]
    assert all_files(qdir) == []
    # the second write, in the middle of the content
    ops = FaultyFileOps(op="write", nth=2, error=errno.ENOSPC, partial=True)
    writers: list = []
    with pytest.raises(QueueError) as e:
        _scenario(QueueStore(qdir, ops), False, writers)
    assert e.value.errno == errno.ENOSPC and "No space" in str(e.value)
    assert all_files(qdir) == []
    # a dead writer says so
    with pytest.raises(QueueError):
        writers[0].write_content(b"more")
    with pytest.raises(QueueError):
        writers[0].commit()
    writers[0].abort()  # harmless


def test_plain_fileops_rename_noreplace(tmp_path):
    ops = FileOps()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    open(a, "w").close()
    open(b, "w").close()
    with pytest.raises(FileExistsError):
        ops.rename_noreplace(a, b)
    os.unlink(b)
    ops.rename_noreplace(a, b)
    assert not os.path.exists(a) and os.path.exists(b)

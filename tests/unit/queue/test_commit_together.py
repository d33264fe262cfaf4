"""Commits that share one fsync of their directory
(hato.queue.inject.commit_together, QueueWriter.publish/published_durably/
withdraw): smtpd commits the messages that end at about the same time
together. Nothing is reported committed before its name is durable; a
failed directory fsync takes back every file it was meant to cover."""

from __future__ import annotations

import errno
import functools

import pytest

from hato.queue.cleanup import Cleanup
from hato.queue.errors import QueueError
from hato.queue.fileops import FaultyFileOps
from hato.queue.inject import Injection, commit_together
from hato.queue.store import HOLD, INCOMING, QueueStore
from tests.unit.policy.conftest import make_settings

from .conftest import all_files


def injection(tmp_path, store: QueueStore, body: bytes) -> Injection:
    settings = make_settings(f"queue_directory = {tmp_path}/q\n")
    inj = Injection(Cleanup(settings), store)
    inj.start(log=lambda level, text: None, sender="joe@example.org",
              recipients=["ann@example.org"], rewrite_context="remote",
              origin="client.test[192.0.2.1]", proto="ESMTP", helo="client.test")
    inj.feed(b"Subject: together\r\n\r\n" + body)
    return inj


def make_store(tmp_path, ops=None) -> QueueStore:
    QueueStore(str(tmp_path / "q")).ensure_layout()
    return QueueStore(str(tmp_path / "q"), ops) if ops else QueueStore(str(tmp_path / "q"))


def test_one_directory_fsync_for_the_batch(tmp_path):
    ops = FaultyFileOps()
    store = make_store(tmp_path, ops)
    injs = [injection(tmp_path, store, b"message %d\r\n" % i) for i in range(3)]
    held = injection(tmp_path, store, b"held\r\n")
    before = len(ops.calls)
    out = commit_together([functools.partial(i.finish, sync_dir=False) for i in injs]
                          + [functools.partial(held.finish, hold=True, sync_dir=False)])
    assert [o.queue_id for o in out] == [i.queue_id for i in injs] + [held.queue_id]
    syncs = [c for c in ops.calls[before:] if c[0] == "fsync_dir"]
    assert len(syncs) == 2  # incoming/ once for three, hold/ once
    assert sorted(store.list(INCOMING)) == sorted(i.queue_id for i in injs)
    assert store.list(HOLD) == [held.queue_id]
    for i, inj in enumerate(injs):
        assert inj.writer.committed
        with store.open(INCOMING, inj.queue_id) as qf:
            assert qf.read_content().endswith(b"message %d\n" % i)


def test_a_failed_directory_fsync_takes_every_file_back(tmp_path):
    ops = FaultyFileOps(op="fsync_dir", error=errno.EIO)
    store = make_store(tmp_path, ops)
    injs = [injection(tmp_path, store, b"message %d\r\n" % i) for i in range(2)]
    out = commit_together([functools.partial(i.finish, sync_dir=False) for i in injs])
    assert all(isinstance(o, QueueError) and o.errno == errno.EIO for o in out), out
    assert store.list(INCOMING) == []
    assert all_files(str(tmp_path / "q")) == []
    assert not any(i.writer.committed for i in injs)


def test_one_failed_commit_does_not_take_the_others(tmp_path):
    store = make_store(tmp_path)
    good = injection(tmp_path, store, b"good\r\n")
    bad = injection(tmp_path, store, b"bad\r\n")

    def broken():
        bad.abort()
        raise OSError(errno.ENOSPC, "No space left on device")

    out = commit_together([broken, functools.partial(good.finish, sync_dir=False)])
    assert isinstance(out[0], OSError) and out[0].errno == errno.ENOSPC
    assert out[1].queue_id == good.queue_id and good.writer.committed
    assert store.list(INCOMING) == [good.queue_id]


def test_a_published_file_that_is_abandoned_is_removed(tmp_path):
    store = make_store(tmp_path)
    inj = injection(tmp_path, store, b"x\r\n")
    result = inj.finish(sync_dir=False)
    assert inj.writer.published and store.list(INCOMING) == [result.queue_id]
    inj.writer.abort()
    assert store.list(INCOMING) == []
    assert all_files(str(tmp_path / "q")) == []
    with pytest.raises(QueueError):  # the writer is dead
        inj.writer.published_durably()


def test_a_submission_that_commits_whole_joins_a_batch(tmp_path):
    """sendmail -bs hands smtpd a maildrop submission, which commits itself
    whole (directory fsync included): it takes its place in a batch."""
    from hato.queue.envelope import Recipient
    from hato.queue.submit import MaildropSubmission
    from hato.queue.store import MAILDROP

    store = make_store(tmp_path)
    sub = MaildropSubmission(store, 1000)
    sub.start(sender="joe@example.org", recipients=[Recipient("ann@example.org")])
    sub.feed(b"Subject: -bs\n\nhello\n")
    other = injection(tmp_path, store, b"x\r\n")
    out = commit_together([functools.partial(sub.finish, sync_dir=False),
                           functools.partial(other.finish, sync_dir=False)])
    assert [o.queue_id for o in out] == [sub.queue_id, other.queue_id]
    assert store.list(MAILDROP) == [sub.queue_id]
    assert other.writer.committed

"""The queue listing behind postqueue -p/-j: what it reads, in which order,
and how it copes with a live queue, odd files and defer logs."""

from __future__ import annotations

import os

from hato.queue.envelope import Envelope, Recipient
from hato.queue.listing import LISTED_QUEUES, list_queue, merge_reasons, read_message
from hato.queue.store import QueueStore


def put(store: QueueStore, queue: str, rcpts=("a@x.test",), sender="s@x.test",
        body: bytes = b"Subject: t\n\nhello\n", arrival: float = 0.0) -> str:
    w = store.create(queue)
    w.write_envelope(Envelope(sender=sender, arrival_time=arrival,
                              recipients=[Recipient(r) for r in rcpts]))
    w.write_content(body)
    return w.commit()


def listing(store):
    warnings: list[str] = []
    return list(list_queue(store, warn=warnings.append)), warnings


def test_queues_in_showq_order(store):
    ids = {q: put(store, q) for q in reversed(LISTED_QUEUES)}
    put(store, "corrupt")
    msgs, warnings = listing(store)
    assert [(m.queue_name, m.queue_id) for m in msgs] == [(q, ids[q]) for q in LISTED_QUEUES]
    assert warnings == []


def test_envelope_facts(store):
    qid = put(store, "incoming", rcpts=("a@x.test", "b@x.test"), sender="",
              body=b"Subject: t\n\n" + b"x" * 300 + b"\n", arrival=1_700_000_000.75)
    (m,), _ = listing(store)
    assert (m.queue_id, m.sender, m.arrival_time) == (qid, "", 1_700_000_000)
    assert [r.address for r in m.recipients] == ["a@x.test", "b@x.test"]
    assert not m.forced_expire
    # the size as stored: content plus the record headers, as Postfix counts it
    with store.open("incoming", qid, writable=False) as f:
        assert f.envelope.size == 313
    assert 313 < m.message_size < 330


def test_done_recipients_are_not_listed(store):
    qid = put(store, "deferred", rcpts=("a@x.test", "b@x.test", "c@x.test"))
    with store.open("deferred", qid) as f:
        f.mark_done(f.envelope.recipients[1])
    (m,), _ = listing(store)
    assert [r.address for r in m.recipients] == ["a@x.test", "c@x.test"]


def test_defer_log_reasons(store):
    qid = put(store, "deferred", rcpts=("a@x.test", "b@x.test", "c@x.test", "d@x.test"))
    with store.open("deferred", qid) as f:
        a, b, c, d = f.envelope.recipients
        f.mark_done(d)
    # two attempts: the latest reason counts; c is found by its offset though
    # the log names it as resolved; d is done since
    store.append_log("defer", qid, {"recipient": "c@x.test", "reason": "old",
                                    "offset": str(c.offset)})
    store.append_log("defer", qid, {"recipient": "d@x.test", "reason": "gone now",
                                    "offset": str(d.offset)})
    store.append_log("defer", qid, {"recipient": "C@relay.test", "reason": "busy",
                                    "offset": str(c.offset)})
    store.append_log("defer", qid, {"recipient": "a@x.test", "reason": "refused"})
    (m,), _ = listing(store)
    assert [(r.address, r.reason) for r in m.recipients] == [
        ("c@x.test", "busy"), ("a@x.test", "refused"), ("b@x.test", "")]


def test_merge_reasons_without_log():
    rcpts = [Recipient("a@x"), Recipient("b@x", done=True)]
    assert [(r.address, r.reason) for r in merge_reasons(rcpts, [])] == [("a@x", "")]


def test_forced_expire_is_the_group_execute_bit(store):
    qid = put(store, "deferred")
    os.chmod(store.path("deferred", qid), 0o710)
    (m,), _ = listing(store)
    assert m.forced_expire


def test_files_not_ready_are_skipped_quietly(store):
    qid = put(store, "incoming")
    os.chmod(store.path("incoming", qid), 0o600)
    assert listing(store) == ([], [])


def test_vanished_file(store):
    qid = put(store, "active")
    path = store.path("active", qid)
    os.unlink(path)
    warnings: list[str] = []
    assert read_message(store, "active", qid, path, warnings.append) is None
    assert warnings == []


def test_corrupt_file_is_skipped_with_a_warning(store):
    good = put(store, "deferred")
    bad = put(store, "deferred", rcpts=("b@x.test",))
    path = store.path("deferred", bad)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 1)  # no END record
    msgs, warnings = listing(store)
    assert [m.queue_id for m in msgs] == [good]
    assert len(warnings) == 1 and warnings[0].startswith(f"deferred {bad}: ")
    assert warnings[0].endswith("-- skipping this file")


def test_links_are_not_followed(store, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"not a queue file\n")
    qid = put(store, "deferred")
    target = put(store, "hold")
    # a queue file name that is a symbolic link, in a queue and in a hash dir
    os.symlink(secret, os.path.join(store.queue_dir("incoming"), "ABCDEF12345"))
    os.symlink(store.path("hold", target), os.path.join(store.queue_dir("active"), "BCDEF123456"))
    # a hash subdirectory that is a link to a directory outside the queue
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(store.path("hold", target), outside / "CDEF1234567")
    os.symlink(outside, os.path.join(store.queue_dir("deferred"), "Q"))
    # a defer log that is a link
    os.makedirs(os.path.dirname(store.log_path("defer", qid)), exist_ok=True)
    log = tmp_path / "log"
    log.write_text("recipient=a@x.test\nreason=from outside\n\n")
    os.symlink(log, store.log_path("defer", qid))
    msgs, warnings = listing(store)
    assert [(m.queue_name, m.queue_id) for m in msgs] == [("deferred", qid), ("hold", target)]
    assert msgs[0].recipients[0].reason == ""
    assert sorted(w.split(":")[0] for w in warnings) == sorted([
        store.log_path("defer", qid), os.path.join(store.queue_dir("active"), "BCDEF123456"),
        os.path.join(store.queue_dir("incoming"), "ABCDEF12345")])
    assert all(w.endswith("not a regular file") for w in warnings)

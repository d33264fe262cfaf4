"""The queue store: write, commit, read back, move, logs, hashing, recovery."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hato.queue import records as R
from hato.queue.envelope import Envelope, Recipient
from hato.queue.ids import is_queue_id, parse_queue_id
from hato.queue.store import (
    CorruptQueueFile,
    NoSuchMessage,
    QueueError,
    QueueStore,
)

from .conftest import all_files, listed, sample_envelope


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write(store: QueueStore, env: Envelope, body: bytes | list[bytes] = b"hello\n",
           queue: str = "incoming") -> str:
    w = store.create(queue)
    w.write_envelope(env)
    for chunk in [body] if isinstance(body, bytes) else body:
        w.write_content(chunk)
    return w.commit()


def test_commit_then_reopen(store):
    env = sample_envelope(3)
    body = b"From: a@b\r\nSubject: test\r\n\r\nline\r\n.\r\nno final newline"
    qid = _write(store, env, [body[:7], body[7:30], body[30:]])
    assert store.list("incoming") == [qid]
    with store.open("incoming", qid) as f:
        got = f.envelope
        assert got.queue_id == qid
        assert got.sender == env.sender
        assert got.recipients == env.recipients
        assert got.ret == "HDRS" and got.envid == "ENV-1"
        assert got.attributes == env.attributes
        assert got.full_name == "Joe User"
        assert got.size == len(body)
        assert got.arrival_time == env.arrival_time
        assert f.read_content() == body
    # only the queue file, under its queue id, mode 0700
    assert all_files(store.directory) == [f"incoming/{qid}"]
    assert stat.S_IMODE(os.stat(store.path("incoming", qid)).st_mode) == 0o700


def test_queue_id_known_before_commit_and_invisible(store):
    w = store.create()
    assert is_queue_id(w.queue_id)
    w.write_envelope(sample_envelope())
    w.write_content(b"x" * 200_000)
    assert store.list("incoming") == []
    assert not os.path.exists(store.path("incoming", w.queue_id))
    assert w.commit() == w.queue_id
    assert store.list("incoming") == [w.queue_id]


def test_abort_removes_every_trace(store):
    before = all_files(store.directory)
    with store.create() as w:
        w.write_envelope(sample_envelope())
        w.write_content(b"data\n" * 50_000)
    assert all_files(store.directory) == before
    w = store.create()
    w.abort()
    assert all_files(store.directory) == before


def test_empty_content_and_no_recipients(store):
    qid = _write(store, Envelope(sender=""), [])
    with store.open("incoming", qid) as f:
        assert f.envelope.recipients == [] and f.envelope.sender == ""
        assert f.read_content() == b""


def test_arrival_time_defaults_to_the_queue_id_time(store):
    w = store.create()
    env = Envelope(recipients=[Recipient("a@b")])
    w.write_envelope(env)
    assert env.arrival_time == w.arrival_time
    assert abs(env.arrival_time - time.time()) < 60
    qid = w.commit()
    with store.open("incoming", qid) as f:
        assert f.envelope.arrival_time == w.arrival_time


def test_recipients_after_the_content(store):
    w = store.create()
    env = Envelope(sender="s@x", recipients=[Recipient("first@x")])
    w.write_envelope(env)
    w.write_content(b"To: later@x\n\nbody\n")
    w.add_recipient(Recipient("later@x", notify=frozenset({"NEVER"})))
    qid = w.commit()
    with store.open("incoming", qid) as f:
        assert [r.address for r in f.envelope.recipients] == ["first@x", "later@x"]
        assert f.envelope.recipients[1].notify == {"NEVER"}
        f.mark_done(f.envelope.recipients[1])
    with store.open("incoming", qid) as f:
        assert [r.done for r in f.envelope.recipients] == [False, True]


def test_hold_commits_into_the_hold_queue(store):
    env = sample_envelope()
    env.hold = True
    qid = _write(store, env)
    assert store.list("incoming") == [] and store.list("hold") == [qid]
    with store.open("hold", qid) as f:
        assert f.envelope.hold


def test_writer_order_is_enforced(store):
    w = store.create()
    with pytest.raises(RuntimeError):
        w.write_content(b"x")
    w.write_envelope(sample_envelope())
    with pytest.raises(RuntimeError):
        w.write_envelope(sample_envelope())
    w.commit()
    with pytest.raises(RuntimeError):
        w.commit()


def test_bad_envelopes_are_refused_before_writing(store):
    with pytest.raises(ValueError):
        Recipient("a@b", notify=frozenset({"SOMETIMES"}))
    with pytest.raises(ValueError):
        Recipient("a@b", notify=frozenset({"NEVER", "SUCCESS"}))
    with pytest.raises(ValueError):
        Envelope(ret="PART")
    w = store.create()
    with pytest.raises(ValueError):
        w.write_envelope(Envelope(attributes={"a=b": "c"}))
    w.abort()


# -- hypothesis: any envelope survives the disk --------------------------------

any_text = st.text(max_size=40) | st.binary(max_size=40).map(
    lambda b: b.decode("utf-8", "surrogateescape"))
recipients = st.builds(
    Recipient, any_text, any_text,
    st.sampled_from([frozenset(), frozenset({"NEVER"}), frozenset({"SUCCESS"}),
                     frozenset({"SUCCESS", "FAILURE", "DELAY"}), frozenset({"DELAY"})]),
    any_text, st.booleans())
envelopes = st.builds(
    Envelope, sender=any_text, recipients=st.lists(recipients, max_size=8),
    ret=st.sampled_from([None, "FULL", "HDRS"]), envid=any_text,
    attributes=st.dictionaries(st.from_regex(r"[a-z_]{1,12}", fullmatch=True), any_text,
                               max_size=6),
    arrival_time=st.integers(1, 2**33).flatmap(
        lambda s: st.integers(0, 999_999).map(lambda u: s + u / 1_000_000)),
    warn_time=st.integers(0, 2**40), full_name=any_text)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(envelopes, st.binary(max_size=5000))
def test_any_envelope_round_trips(store, env, body):
    qid = _write(store, env, body)
    with store.open("incoming", qid) as f:
        got = f.envelope
        assert got.sender == env.sender
        assert got.recipients == env.recipients
        assert [r.offset for r in got.recipients] == [r.offset for r in env.recipients]
        assert (got.ret, got.envid, got.attributes) == (env.ret, env.envid, env.attributes)
        assert got.arrival_time == env.arrival_time
        assert got.warn_time == env.warn_time and got.full_name == env.full_name
        assert f.read_content() == body
    store.remove("incoming", qid)


# -- big messages stream ---------------------------------------------------------

def test_30_mb_message_streams_in_64k_chunks(store):
    chunk = (b"0123456789" * 7 + b"\r\n") * 910
    chunk += b"z" * (65536 - len(chunk))
    n = (30 * 1024 * 1024) // len(chunk)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        w = store.create()
        w.write_envelope(sample_envelope())
        for i in range(n):
            piece = chunk[i % 7:] + chunk[: i % 7]  # vary where lines are cut
            digest.update(piece)
            w.write_content(piece)
        qid = w.commit()
        _, peak_write = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        back = hashlib.sha256()
        size = 0
        with store.open("incoming", qid) as f:
            assert f.envelope.size == n * 65536
            for part in f.content():
                back.update(part)
                size += len(part)
                assert len(part) <= 2 * 65536
        _, peak_read = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size == n * 65536 and back.digest() == digest.digest()
    # never the whole message in memory: a few chunks at most
    assert peak_write < 2 * 1024 * 1024, peak_write
    assert peak_read < 2 * 1024 * 1024, peak_read


# -- per-recipient status ---------------------------------------------------------

def test_mark_done_survives_reopen_and_flips_one_byte(store):
    qid = _write(store, sample_envelope(4))
    path = store.path("incoming", qid)
    before = _read(path)
    with store.open("incoming", qid) as f:
        r = f.envelope.recipients
        f.mark_done(r[1], r[3])
        assert [x.done for x in r] == [False, True, False, True]
        assert [x.address for x in f.envelope.pending] == ["rcpt0@example.org",
                                                           "rcpt2@example.org"]
        f.mark_done(r[1])  # again: harmless
    after = _read(path)
    diff = [i for i in range(len(before)) if before[i] != after[i]]
    assert len(before) == len(after) and len(diff) == 2
    assert all(before[i:i + 1] == b"R" and after[i:i + 1] == b"D" for i in diff)
    with store.open("incoming", qid) as f:
        assert [x.done for x in f.envelope.recipients] == [False, True, False, True]


def test_mark_done_needs_a_writable_file(store):
    qid = _write(store, sample_envelope())
    with store.open("incoming", qid, writable=False) as f, pytest.raises(RuntimeError):
        f.mark_done(f.envelope.recipients[0])


def test_warn_time_is_updated_in_place(store):
    env = sample_envelope()
    env.warn_time = 1_700_000_000
    qid = _write(store, env)
    with store.open("incoming", qid) as f:
        assert f.envelope.warn_time == 1_700_000_000
        assert not f.envelope.delay_warning_sent
        f.update_warn_time(0)
    with store.open("incoming", qid) as f:
        assert f.envelope.warn_time == 0 and f.envelope.delay_warning_sent


# -- moving, listing, hashing ------------------------------------------------------

def test_move_remove_list_path(store):
    a = _write(store, sample_envelope())
    b = _write(store, sample_envelope())
    assert sorted(store.list("incoming")) == sorted([a, b])
    store.move(a, "incoming", "active")
    store.move(a, "active", "deferred", sync=True)
    assert store.list("incoming") == [b] and store.list("deferred") == [a]
    # deferred is hashed by default: one level, the first hex digit
    assert store.path("deferred", a) == os.path.join(store.directory, "deferred", a[0], a)
    assert os.path.exists(store.path("deferred", a))
    assert store.find(a) == "deferred" and store.find(b) == "incoming"
    with store.open("deferred", a) as f:
        assert f.read_content() == b"hello\n"
    store.remove("deferred", a)
    assert store.list("deferred") == [] and store.find(a) is None
    with pytest.raises(NoSuchMessage):
        store.remove("deferred", a)
    with pytest.raises(NoSuchMessage):
        store.open("deferred", a)
    with pytest.raises(NoSuchMessage):
        store.move(a, "deferred", "active")


def test_move_never_overwrites(store):
    a = _write(store, sample_envelope())
    os.link(store.path("incoming", a), os.path.join(store.directory, "active", a))
    with pytest.raises(QueueError) as e:
        store.move(a, "incoming", "active")
    assert e.value.errno == 17  # EEXIST


def test_hash_parameters(tmp_path):
    store = QueueStore(str(tmp_path / "q"), hash_queue_names=["incoming", "defer"],
                       hash_queue_depth=2, long_ids=True)
    qid = _write(store, sample_envelope())
    usec = f"{parse_queue_id(qid).usec:05X}"
    parts = store.path("incoming", qid).split(os.sep)
    assert parts[-4:] == ["incoming", usec[0], usec[1], qid]
    assert os.path.exists(store.path("incoming", qid))
    assert store.list("incoming") == [qid]
    store.move(qid, "incoming", "deferred")  # not hashed in this configuration
    assert store.path("deferred", qid) == os.path.join(store.directory, "deferred", qid)
    assert os.path.exists(store.path("deferred", qid))


def test_changed_hashing_is_found_and_repaired(tmp_path):
    qdir = str(tmp_path / "q")
    old = QueueStore(qdir, hash_queue_names=[])
    qid = _write(old, sample_envelope())
    old.move(qid, "incoming", "deferred")
    old.append_log("defer", qid, {"recipient": "a@b", "status": "4.0.0"})
    new = QueueStore(qdir)  # deferred and defer hashed again
    assert new.list("deferred") == [qid]
    assert new.exists("deferred", qid)
    with new.open("deferred", qid) as f:
        assert f.envelope.sender == "sender@example.com"
    report = new.recover()
    assert sorted(report.rehashed) == [("defer", qid), ("deferred", qid)]
    assert os.path.exists(new.path("deferred", qid))
    assert new.read_log("defer", qid) == [{"recipient": "a@b", "status": "4.0.0"}]


# -- per-message logs ----------------------------------------------------------------

def test_logs_append_read_remove(store):
    qid = _write(store, sample_envelope())
    assert store.read_log("defer", qid) == []
    e1 = {"recipient": "a@b", "status": "4.4.1", "action": "delayed",
          "reason": "connect to x[192.0.2.1]:25: Connection refused\nsecond line \\ end"}
    e2 = {"recipient": "c@d", "offset": 123, "status": "5.1.1", "action": "failed",
          "reason": "User unknown"}
    store.append_log("defer", qid, e1)
    store.append_log("defer", qid, e2, sync=False)
    assert store.read_log("defer", qid) == [e1, {k: str(v) for k, v in e2.items()}]
    assert os.path.exists(store.log_path("defer", qid))
    assert store.log_path("defer", qid).split(os.sep)[-3:-1] == ["defer", qid[0]]
    store.append_log("bounce", qid, e2)
    store.append_log("trace", qid, e1)
    assert len(store.read_log("bounce", qid)) == 1
    assert store.remove_log("defer", qid) is True
    assert store.remove_log("defer", qid) is False
    assert store.read_log("defer", qid) == []
    with pytest.raises(ValueError):
        store.append_log("deferred", qid, e1)


def test_a_cut_off_log_entry_is_dropped_and_trimmed(store):
    qid = _write(store, sample_envelope())
    store.append_log("defer", qid, {"recipient": "a@b", "status": "4.0.0"})
    with open(store.log_path("defer", qid), "ab") as f:
        f.write(b"recipient=c@d\nstatus=4.0")  # a crash in the middle of an append
    assert store.read_log("defer", qid) == [{"recipient": "a@b", "status": "4.0.0"}]
    store.append_log("defer", qid, {"recipient": "e@f", "status": "4.0.1"})
    assert store.read_log("defer", qid) == [{"recipient": "a@b", "status": "4.0.0"},
                                            {"recipient": "e@f", "status": "4.0.1"}]


# -- layout ----------------------------------------------------------------------------

def test_ensure_layout_makes_postfix_s_directories(tmp_path):
    store = QueueStore(str(tmp_path / "spool"))
    gid = os.getgid()
    store.ensure_layout(owner=os.getuid(), group=gid, setgid_group=gid)
    names = sorted(os.listdir(store.directory))
    assert names == sorted(["maildrop", "incoming", "active", "deferred", "hold", "corrupt",
                            "saved", "bounce", "defer", "trace", "flush", "pid", "public",
                            "private"])

    def mode(name):
        return stat.S_IMODE(os.stat(os.path.join(store.directory, name)).st_mode)

    assert mode("maildrop") == 0o730 and mode("public") == 0o710
    assert mode("pid") == 0o755 and mode("incoming") == 0o700 and mode("private") == 0o700
    # without a setgid group nothing is group-accessible; modes are repaired
    os.chmod(os.path.join(store.directory, "active"), 0o777)
    store.ensure_layout()
    assert mode("maildrop") == 0o700 and mode("public") == 0o700 and mode("active") == 0o700


def test_queues_are_created_on_demand(tmp_path):
    store = QueueStore(str(tmp_path / "a" / "b"))
    qid = _write(store, sample_envelope(), queue="maildrop")
    store.move(qid, "maildrop", "saved")
    assert store.list("saved") == [qid]
    assert store.list("hold") == []  # a missing queue is an empty one


# -- corrupt files -----------------------------------------------------------------------

def test_every_truncation_of_a_queue_file_is_detected(store):
    env = sample_envelope(2)
    env.attributes = {"x": "y"}
    qid = _write(store, env, b"a\nbb\n" * 10)
    path = store.path("incoming", qid)
    data = _read(path)
    for cut in range(len(data)):
        with open(path, "wb") as f:
            f.write(data[:cut])
        try:
            with store.open("incoming", qid) as f:
                f.read_content()
        except CorruptQueueFile:
            continue
        pytest.fail(f"truncation at {cut} of {len(data)} not detected")


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_garbled_queue_files_raise_or_read_never_hang(store, data):
    if not store.list("incoming"):
        _write(store, sample_envelope(2), b"line one\nline two\n" * 20)
    qid = store.list("incoming")[0]
    path = store.path("incoming", qid)
    if not os.path.exists(path + ".orig"):
        os.link(path, path + ".orig")
    original = _read(path + ".orig")
    blob = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    try:
        with store.open("incoming", qid) as f:
            f.read_content()
    except CorruptQueueFile:
        pass
    except UnicodeError:  # pragma: no cover - surrogateescape never raises
        raise


def test_recover_moves_unreadable_files_to_corrupt(store):
    good = _write(store, sample_envelope())
    bad = _write(store, sample_envelope())
    path = store.path("incoming", bad)
    data = _read(path)
    with open(path, "wb") as f:
        f.write(data[:-2])  # END record gone
    report = store.recover()
    assert report.corrupt == [("incoming", bad)]
    assert store.list("incoming") == [good] and store.list("corrupt") == [bad]


def test_recover_requeues_active_and_cleans_up(store):
    a = _write(store, sample_envelope(3))
    store.move(a, "incoming", "active")
    with store.open("active", a) as f:
        f.mark_done(f.envelope.recipients[0])
    # a crash while receiving: temporary files
    w = store.create()
    w.write_envelope(sample_envelope())
    w.write_content(b"partial")
    w._flush()
    young = store.create("maildrop")
    young.write_envelope(sample_envelope())
    young._flush()
    old = store.create("maildrop")
    old._flush()
    os.utime(old._temp, (time.time() - 7200, time.time() - 7200))
    # an orphan log of a message that is gone
    gone = _write(store, sample_envelope())
    store.append_log("bounce", gone, {"recipient": "x@y", "status": "5.0.0"})
    store.remove("incoming", gone)
    store.append_log("defer", a, {"recipient": "x@y", "status": "4.0.0"})

    report = QueueStore(store.directory).recover()
    assert report.requeued == [a]
    assert sorted(report.removed_temp) == sorted([w._temp, old._temp])
    assert report.removed_logs == [("bounce", gone)]
    assert report.corrupt == [] and report.errors == []
    assert listed(store) == {"incoming": [a]}
    with store.open("incoming", a) as f:
        assert [r.done for r in f.envelope.recipients] == [True, False, False]
    assert store.read_log("defer", a) == [{"recipient": "x@y", "status": "4.0.0"}]
    assert os.path.exists(young._temp)  # sendmail may still be writing it
    young.abort()


def test_file_format_layout(store):
    """The records of a queue file, in Postfix's order."""
    qid = _write(store, sample_envelope(2), b"a\nb")
    data = _read(store.path("incoming", qid))
    types = "".join(r.type for r in R.decode_records(data))
    assert types == "CTFAAAS<iW" + "OR" + "onOR" + "M" + "NL" + "X" + "E"
    first = R.decode_records(data)[0]
    seg, off, nrcpt, flags, length = (int(x) for x in first.data.split())
    assert (nrcpt, flags, length) == (2, 0, 3)
    assert data[off - 2: off] == b"M\x00" and data[off + seg: off + seg + 2] == b"X\x00"


def test_bad_values_in_records_are_corruption(store):
    qid = _write(store, sample_envelope(2))
    path = store.path("incoming", qid)
    data = _read(path)
    mask = data.index(b"n\x016")  # NOTIFY=SUCCESS,FAILURE
    for garbage in (b"9", b"x"):  # NEVER+DELAY; not a number
        with open(path, "wb") as f:
            f.write(data[:mask + 2] + garbage + data[mask + 3:])
        with pytest.raises(CorruptQueueFile):
            store.open("incoming", qid)


def test_attributes_and_hold_set_after_the_envelope(store):
    w = store.create()
    env = sample_envelope()
    w.write_envelope(env)
    w.write_content(b"body\n")
    env.attributes["content_filter"] = "smtp:[127.0.0.1]:10025"
    env.attributes["sasl_username"] = "changed"
    env.hold = True
    qid = w.commit()
    assert store.list("hold") == [qid]
    with store.open("hold", qid) as f:
        assert f.envelope.attributes == env.attributes
        assert f.envelope.attributes["sasl_username"] == "changed"

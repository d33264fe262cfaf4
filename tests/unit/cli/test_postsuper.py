"""postsuper: argument parsing, queue id validation, and the operations on
a queue store in a temporary directory (no services)."""

from __future__ import annotations

import io
import os
import time

import pytest

from hato.cli import postsuper as P
from hato.cli.common import Fatal, Messages
from hato.queue.envelope import Envelope, Recipient
from hato.queue.ids import parse_queue_id
from hato.queue.store import QueueStore


class Settings:
    def str(self, name: str) -> str:
        return {"info_log_address_format": "internal"}[name]


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warning(self, text: str) -> None:
        self.lines.append(f"warning: {text}")

    error = warning


@pytest.fixture
def store(tmp_path) -> QueueStore:
    s = QueueStore(str(tmp_path / "queue"))
    s.ensure_layout()
    return s


@pytest.fixture
def sup(store):
    return P.Superintendent(Settings(), store, Messages("postsuper"), Log())


def queue_message(store: QueueStore, queue: str = "incoming", rcpt: str = "a@b.test") -> str:
    w = store.create(queue)
    w.write_envelope(Envelope(sender="s@b.test", recipients=[Recipient(rcpt, rcpt)]))
    w.write_content(b"Subject: t\n\nbody\n")
    return w.commit()


def restore_copy(path: str) -> None:
    """Replace a queue file by a copy of itself (a restore from backup):
    same name, another inode."""
    before = os.stat(path).st_ino
    with open(path, "rb") as f, open(path + ".copy", "wb") as out:
        out.write(f.read())
    os.chmod(path + ".copy", 0o700)
    os.replace(path + ".copy", path)
    assert os.stat(path).st_ino != before


def files_under(store: QueueStore) -> list[str]:
    out = []
    for dirpath, _dirs, names in os.walk(store.directory):
        out += [os.path.relpath(os.path.join(dirpath, n), store.directory) for n in names]
    return sorted(out)


# -- parsing -------------------------------------------------------------------------------

def test_operations_keep_command_line_order_and_all():
    req = P.parse_args(["-h", "ALL", "-d", "ABCDE1", "-d", "-", "deferred", "hold"])
    assert req.ops == [("-h", "ALL"), ("-d", "ABCDE1"), ("-d", "-")]
    assert req.action == P.HOLD_ALL | P.DELETE_ONE
    assert req.queues == ["deferred", "hold"]


def test_default_is_structure_check_and_purge_over_every_queue():
    req = P.parse_args([])
    assert req.action == P.STRUCT | P.PURGE
    assert set(req.queues) == set(P.QUEUE_INFO)
    assert P.parse_args(["-S"]).action == P.STRUCT | P.STRUCT_RED


def test_all_must_be_upper_case():
    assert P.parse_args(["-d", "all"]).action == P.DELETE_ONE
    assert P.parse_args(["-f", "ALL"]).action == P.EXP_REL_ALL


@pytest.mark.parametrize("argv,text", [
    (["-d", "ALL", "bogus"], "invalid directory name: bogus"),
    (["-d", "ALL", "corrupt"], "invalid directory name: corrupt"),
    (["-d", "ALL", "../etc"], "invalid directory name: ../etc"),
    (["-c", "relative/dir", "-s"], "-c requires absolute pathname"),
    (["-x"], P.USAGE),
    (["-d"], P.USAGE),
])
def test_bad_arguments_are_fatal(argv, text, capsys):
    with pytest.raises(Fatal) as exc:
        P.parse_args(argv)
    assert str(exc.value) == text


def test_bad_option_says_so_as_getopt_does(capsys):
    with pytest.raises(Fatal):
        P.parse_args(["-x"])
    assert capsys.readouterr().err == "postsuper: invalid option -- 'x'\n"


def test_main_exit_status_and_text(capsys):
    assert P.main(["-d", "ALL", "nowhere"]) == 1
    assert capsys.readouterr().err == "postsuper: fatal: invalid directory name: nowhere\n"


# -- queue ids -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../../etc/passwd", "", "ABC/../DEF", "hold", "ABCDE1 x"])
def test_invalid_ids_touch_nothing(sup, store, bad, capsys):
    qid = queue_message(store, "deferred")
    before = files_under(store)
    for op in (sup.delete_one, sup.hold_one, sup.release_one, sup.expire_one,
               sup.requeue_one):
        op(list(P.DEFAULT_QUEUES), bad)
    assert files_under(store) == before
    err = capsys.readouterr().err
    assert err.count(f"postsuper: warning: invalid mail queue id: {bad}\n") == 5
    assert store.exists("deferred", qid)


def test_unknown_id_is_not_counted(sup, capsys):
    sup.delete_one(list(P.DEFAULT_QUEUES), "ABCDE1")
    sup.report(P.DELETE_ONE)
    assert capsys.readouterr().err == "postsuper: Deleted: 0 messages\n"


# -- by queue id ---------------------------------------------------------------------------

def test_delete_removes_message_and_logs(sup, store, capsys):
    qid = queue_message(store, "deferred")
    keep = queue_message(store, "deferred")
    for kind in ("defer", "bounce"):
        store.append_log(kind, qid, {"recipient": "a@b.test", "reason": "x"})
    sup.delete_one(list(P.DEFAULT_QUEUES), qid)
    sup.report(P.DELETE_ONE)
    assert capsys.readouterr().err == (f"postsuper: {qid}: removed\n"
                                       "postsuper: Deleted: 1 message\n")
    assert store.find(qid) is None and store.read_log("defer", qid) == []
    assert not os.path.exists(store.log_path("bounce", qid))
    assert store.exists("deferred", keep)
    assert sup.log.lines == [f"{qid}: removed", "Deleted: 1 message"]


def test_queue_arguments_restrict(sup, store):
    qid = queue_message(store, "incoming")
    sup.delete_one(["deferred", "hold"], qid)
    assert store.exists("incoming", qid) and sup.deleted == 0


def test_hold_and_release(sup, store, capsys):
    qid = queue_message(store, "incoming")
    sup.hold_one(list(P.DEFAULT_QUEUES), qid)
    assert store.find(qid) == "hold"
    sup.hold_one(list(P.DEFAULT_QUEUES), qid)  # already on hold: not counted again
    sup.release_one(list(P.DEFAULT_QUEUES), qid)
    assert store.find(qid) == "deferred"
    sup.report(P.HOLD_ONE | P.RELEASE_ONE)
    assert capsys.readouterr().err == (
        f"postsuper: {qid}: placed on hold\npostsuper: {qid}: released from hold\n"
        "postsuper: Placed on hold: 1 message\npostsuper: Released from hold: 1 message\n")


def test_maildrop_mail_is_never_held(sup, store):
    qid = queue_message(store, "maildrop")
    sup.hold_one(list(P.DEFAULT_QUEUES), qid)
    assert store.find(qid) == "maildrop" and sup.held == 0


def test_expire_sets_the_mark_once(sup, store, capsys):
    qid = queue_message(store, "deferred")
    assert not store.forced_expire("deferred", qid)
    sup.expire_one(list(P.DEFAULT_QUEUES), qid)
    sup.expire_one(list(P.DEFAULT_QUEUES), qid)
    assert store.forced_expire("deferred", qid)
    with store.open("deferred", qid) as qf:
        assert qf.forced_expire
    assert sup.expired == 1
    assert capsys.readouterr().err == f"postsuper: {qid}: expired\n"


def test_force_expire_releases_from_hold(sup, store):
    qid = queue_message(store, "hold")
    sup.exp_rel_one(list(P.DEFAULT_QUEUES), qid)
    assert store.find(qid) == "deferred" and store.forced_expire("deferred", qid)
    assert (sup.expired, sup.released) == (1, 1)


def test_ids_on_standard_input(sup, store, capsys):
    a, b = queue_message(store, "deferred"), queue_message(store, "hold")
    req = P.parse_args(["-d", "-"])
    P.execute(sup, req, stdin=io.StringIO(f"{a}\n../x\n{b}\n"))
    assert store.find(a) is None and store.find(b) is None
    err = capsys.readouterr().err
    assert "postsuper: warning: invalid mail queue id: ../x\n" in err
    assert err.endswith("postsuper: Deleted: 2 messages\n")


# -- whole queues ----------------------------------------------------------------------------

def test_delete_all_in_one_queue(sup, store):
    gone = [queue_message(store, "deferred") for _ in range(3)]
    kept = queue_message(store, "incoming")
    for qid in gone:
        store.append_log("defer", qid, {"recipient": "x"})
    P.execute(sup, P.parse_args(["-d", "ALL", "deferred"]))
    assert sup.deleted == 3
    assert files_under(store) == [os.path.join("incoming", kept)]


def test_hold_all_and_release_all(sup, store):
    ids = [queue_message(store, q) for q in ("incoming", "deferred", "maildrop")]
    P.execute(sup, P.parse_args(["-h", "ALL"]))
    assert [store.find(q) for q in ids] == ["hold", "hold", "maildrop"]
    assert sup.held == 2
    P.execute(sup, P.parse_args(["-H", "ALL"]))
    assert [store.find(q) for q in ids] == ["deferred", "deferred", "maildrop"]


def test_structure_check_moves_files_to_their_place(sup, store):
    qid = queue_message(store, "deferred")
    right = store.path("deferred", qid)
    wrong_sub = "7" if qid[0] != "7" else "8"
    os.makedirs(os.path.join(store.queue_dir("deferred"), wrong_sub), exist_ok=True)
    os.rename(right, os.path.join(store.queue_dir("deferred"), wrong_sub, qid))
    flat = queue_message(store, "deferred")
    os.rename(store.path("deferred", flat), os.path.join(store.queue_dir("deferred"), flat))
    nested = queue_message(store, "incoming")
    os.makedirs(os.path.join(store.queue_dir("incoming"), "A"))
    os.rename(store.path("incoming", nested),
              os.path.join(store.queue_dir("incoming"), "A", nested))
    os.mkdir(os.path.join(store.queue_dir("hold"), "alien"))
    P.execute(sup, P.parse_args(["-s"]))
    assert os.path.exists(right) and os.path.exists(store.path("deferred", flat))
    assert os.path.exists(store.path("incoming", nested))
    assert not os.path.exists(os.path.join(store.queue_dir("incoming"), "A"))
    assert not os.path.exists(os.path.join(store.queue_dir("hold"), "alien"))
    assert sup.position_mismatch == 3 and sup.inode_fixed == 0


def test_structure_check_renames_to_match_the_inode(sup, store, capsys):
    qid = queue_message(store, "deferred")
    store.append_log("defer", qid, {"recipient": "a@b.test", "reason": "later"})
    path = store.path("deferred", qid)
    # a restore from elsewhere: same name, another inode
    restore_copy(path)
    ino = os.stat(path).st_ino
    P.execute(sup, P.parse_args(["-s"]))
    new_id = qid[:5] + f"{ino:X}"
    assert store.find(new_id) == "deferred" and store.find(qid) is None
    assert parse_queue_id(new_id).inode == ino
    assert store.read_log("defer", new_id)[0]["reason"] == "later"
    assert capsys.readouterr().err == (
        "postsuper: Renamed to match inode number: 1 message\n"
        "postsuper: warning: QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS\n")


def test_operations_by_id_refused_after_renaming(sup, store):
    qid = queue_message(store, "deferred")
    path = store.path("deferred", qid)
    restore_copy(path)
    with pytest.raises(Fatal, match="CHECK YOUR QUEUE IDS AND RE-ISSUE THE COMMAND"):
        P.execute(sup, P.parse_args(["-s", "-d", qid]))


def test_purge_removes_old_temporary_files_only(sup, store, capsys):
    old = os.path.join(store.queue_dir("incoming"), "123456.99.0")
    new = os.path.join(store.queue_dir("incoming"), "123457.99.1")
    for p in (old, new):
        with open(p, "wb"):
            pass
        os.chmod(p, 0o600)
    day_ago = time.time() - 2 * P.MAX_TEMP_AGE
    os.utime(old, (day_ago, day_ago))
    qid = queue_message(store, "incoming")
    P.execute(sup, P.parse_args(["-p"]))
    assert not os.path.exists(old) and os.path.exists(new)
    assert store.exists("incoming", qid)
    assert capsys.readouterr().err == "postsuper: warning: bogus file name: incoming/123457.99.1\n"


def test_fixed_queue_id_forms():
    assert P.fixed_queue_id("0ABCD1F", 0x2A, False) == "0ABCD2A"
    from hato.queue.ids import long_queue_id
    lid = long_queue_id(1700000000, 123456, 77)
    assert parse_queue_id(P.fixed_queue_id(lid, 99, True)).inode == 99
    short = P.fixed_queue_id(lid, 99, False)
    assert short == f"{123456:05X}{99:X}"

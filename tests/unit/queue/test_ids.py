"""Queue ids in Postfix's short and long forms."""

from __future__ import annotations

import os

from hypothesis import given
from hypothesis import strategies as st

from hato.queue import ids
from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import QueueStore

from .conftest import NoSyncFileOps


def test_safe_alphabet_is_postfix_s():
    # safe_ultostr.c: digits, then upper and lower case without the vowels
    assert ids.SAFE_CHARS == "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
    assert len(ids.SAFE_CHARS) == 52
    assert not set("AEIOUaeiou") & set(ids.SAFE_CHARS)


def test_short_form():
    assert ids.short_queue_id(0x3F2A1, 0xC4D5E) == "3F2A1C4D5E"
    assert ids.short_queue_id(5, 1) == "000051"
    assert ids.short_queue_id(999_999, 0xABCDEF) == "F423FABCDEF"


def test_long_form_layout():
    qid = ids.long_queue_id(1_700_000_000, 123_456, 987_654)
    parts = ids.parse_queue_id(qid)
    assert parts == ids.QueueIdParts(True, 1_700_000_000, 123_456, 987_654)
    z = qid.rfind("z")
    assert z >= ids.LG_TIME_PAD
    assert ids.safe_decode(qid[: z - 4], 52) == 1_700_000_000
    assert ids.safe_decode(qid[z - 4: z], 52) == 123_456
    assert ids.safe_decode(qid[z + 1:], 51) == 987_654
    assert "z" not in qid[z + 1:]


def test_long_form_pads_seconds_and_microseconds():
    qid = ids.long_queue_id(1, 2, 3)
    assert qid == "000001" + "0002" + "z" + "3"


def test_safe_encode_matches_postfix_digits():
    assert ids.safe_encode(51, 52) == "z"
    assert ids.safe_encode(52, 52) == "10"
    assert ids.safe_encode(50, 51) == "y"
    assert ids.safe_encode(51, 51) == "10"
    assert ids.safe_encode(7, 52, 4) == "0007"


@given(st.integers(0, 2**40), st.integers(0, 999_999), st.integers(1, 2**64 - 1))
def test_both_forms_parse_back(sec, usec, inode):
    short = ids.short_queue_id(usec, inode)
    long = ids.long_queue_id(sec, usec, inode)
    assert ids.parse_queue_id(short) == ids.QueueIdParts(False, None, usec, inode)
    assert ids.parse_queue_id(long) == ids.QueueIdParts(True, sec, usec, inode)
    assert ids.is_short_queue_id(short) and not ids.is_long_queue_id(short)
    assert ids.is_long_queue_id(long) and not ids.is_short_queue_id(long)
    # hashing looks at the same five hex digits of the microseconds
    assert ids.hash_dirs(short, 1) == ids.hash_dirs(long, 1) == [f"{usec:05X}"[0]]


def test_validator_rejects_other_names():
    for bad in ["", "12345", "3f2a1c4d5e", "3F2A1C4D5G", "123.456", "123.456.7",
                "F4240ABC",  # microseconds 1000000: out of range
                "00000" + "0",  # inode 0
                "example_com",  # a fast flush log name
                "000001000z3",  # long form with a short time part
                "0000010002z",  # no inode
                "000001000Az3",  # a vowel
                "000001zzzzz3",  # microseconds out of range
                "0000010002zz",  # 'z' in the inode part
                "../../etc", "A" * 300]:
        assert not ids.is_queue_id(bad), bad


def test_hash_dirs_like_dir_forest():
    assert ids.hash_dirs("3F2A1C4D5E", 1) == ["3"]
    assert ids.hash_dirs("3F2A1C4D5E", 2) == ["3", "F"]
    assert ids.hash_dirs("000051", 7) == ["0", "0", "0", "0", "5", "1", "_"]
    long = ids.long_queue_id(1_700_000_000, 0x3F2A1, 77)
    assert ids.hash_dirs(long, 3) == ["3", "F", "2"]


def _commit_many(store: QueueStore, n: int) -> list[str]:
    out = []
    for _ in range(n):
        w = store.create()
        w.write_envelope(Envelope(sender="", recipients=[Recipient("a@b")]))
        out.append(w.commit())
    return out


def test_ids_unique_over_10000_rapid_creations_and_restarts(tmp_path):
    for long_ids in (False, True):
        qdir = str(tmp_path / f"q{long_ids}")
        made = []
        for _restart in range(4):  # a new store is a restart
            store = QueueStore(qdir, NoSyncFileOps(), long_ids)
            made += _commit_many(store, 2500)
        assert len(made) == 10_000
        assert len(set(made)) == 10_000
        assert all(ids.is_queue_id(q) for q in made)
        assert all(ids.is_long_queue_id(q) == long_ids for q in made)
        assert sorted(QueueStore(qdir).list("incoming")) == sorted(made)


def test_queue_id_is_derived_from_the_inode(tmp_path):
    store = QueueStore(str(tmp_path / "q"))
    w = store.create()
    w.write_envelope(Envelope(recipients=[Recipient("a@b")]))
    qid = w.commit()
    inode = os.stat(store.path("incoming", qid)).st_ino
    assert ids.parse_queue_id(qid).inode == inode

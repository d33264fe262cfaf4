"""Queue-id path traversal through every command that takes a queue id
(postsuper -d/-h/-H/-r, postcat -q, postqueue -i, and ids read from
standard input with ``-``) and every one that takes a site name
(postqueue -s, SMTP ETRN, which the flush service turns into file names):
ids like ``../../precious``, ``/etc/shadow``, ``ABC/../x``, ones with NUL,
very long ones, and ones that name a real queue file by a detour. Each is
refused with a clear error; nothing outside the queue is touched, and the
real message they aim at stays where it is until it is deleted by its id."""

from __future__ import annotations

import os
import re
import smtplib
from pathlib import Path

import pytest

from .conftest import wire

pytestmark = pytest.mark.integration


def tree(root: Path) -> dict[str, tuple[int, float]]:
    """Every file under *root* but the log, mail and queue: path -> (size, mtime)."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts[:1] in (("log",), ("mail",), ("queue",), ("data",)):
            continue
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            out[str(rel / f)] = (st.st_size, st.st_mtime)
    return out


@pytest.fixture(scope="module")
def held(live):
    """A message on hold (header_checks HOLD): the target of the detours."""
    mark = live.mark()
    with smtplib.SMTP("127.0.0.1", live.smtpd, timeout=30) as c:
        c.sendmail("sender@example.org", ["demo@hato.test"],
                   b"Subject: adv-hold-me\r\n\r\nheld\r\n")
    live.inst.wait_for(lambda: re.search(r"(\w+): hold: header Subject: adv-hold-me",
                                         live.log(mark)), what="the message on hold")
    qid = re.search(r"(\w+): hold: header Subject: adv-hold-me", live.log(mark)).group(1)
    path = next(p for p in live.queued_files() if p.name == qid)
    assert path.parent.name == "hold" or "hold" in path.parts, path
    return qid, path


def bad_ids(qid: str) -> list[str]:
    return ["../../precious", "../precious", "/etc/shadow", "/etc/passwd", "ABC/../x",
            f"../hold/{qid}", f"hold/{qid}", f"{qid}/../{qid}", f"./{qid}", f"{qid}/",
            "..", ".", "", " ", "*", "A" * 5000, f"{qid}\n../../precious", "%2e%2e%2fprecious"]


def test_postsuper_refuses_bad_ids(live, held):
    qid, path = held
    inst = live.inst
    precious = inst.root / "precious"
    precious.write_text("keep me\n")
    inside = inst.root / "queue" / "precious"
    inside.write_text("keep me too\n")
    before = tree(inst.root)
    problems = []
    ids = bad_ids(qid)
    for flag in ("-d", "-h", "-H", "-r"):
        # every id in one run (as ``-d ID -d ID ...``)
        r = inst.cmd("postsuper", *[arg for bad in ids for arg in (flag, bad)])
        err = r.stderr.decode(errors="replace")
        if err.count("invalid mail queue id") != len(ids) or "Traceback" in err:
            problems.append((flag, r.returncode, err[-500:]))
        # on standard input, one a line, with NUL and a bare CR too
        lines = [b.encode() for b in ids if "\n" not in b] + [qid.encode() + b"\0x", b"A\rB"]
        r = inst.cmd("postsuper", flag, "-", input=b"\n".join(lines) + b"\n")
        err = r.stderr.decode(errors="replace")
        if err.count("invalid mail queue id") != len(lines) or "Traceback" in err:
            problems.append((flag, "-", r.returncode, err[-500:]))
        if re.search(r"(Deleted|Placed on hold|Released from hold|Requeued): [1-9]", err):
            problems.append((flag, "acted", err))
    assert not problems, problems
    assert precious.read_text() == "keep me\n" and inside.read_text() == "keep me too\n"
    assert tree(inst.root) == before
    assert path.exists(), "the held message moved"
    # its own id works: the check above could have failed
    r = inst.cmd("postcat", "-q", qid)
    assert r.returncode == 0 and b"adv-hold-me" in r.stdout, r.stderr


def test_postcat_and_postqueue_refuse_bad_ids(live, held):
    qid, path = held
    inst = live.inst
    before = tree(inst.root)
    problems = []
    for bad in bad_ids(qid)[:11]:
        r = inst.cmd("postcat", "-q", bad)
        if r.returncode == 0 or r.stdout or b"bad mail queue ID" not in r.stderr:
            problems.append(("postcat", bad[:40], r.returncode, r.stderr[-200:]))
        r = inst.cmd("postqueue", "-i", bad)
        if r.returncode == 0 or b"invalid name" not in r.stderr:
            problems.append(("postqueue -i", bad[:40], r.returncode, r.stderr[-200:]))
    for bad in ("../../precious", "a/../../b", "#../x", "A" * 5000):
        r = inst.cmd("postqueue", "-s", bad)
        if r.returncode == 0 or b"invalid destination" not in r.stderr:
            problems.append(("postqueue -s", bad[:40], r.returncode, r.stderr[-200:]))
    assert not problems, problems
    assert tree(inst.root) == before
    assert path.exists()


def test_etrn_refuses_path_names(live):
    inst = live.inst
    mark = live.mark()
    before = tree(inst.root)
    flush = inst.root / "queue" / "flush"
    flush_before = sorted(os.walk(flush)) if flush.exists() else []
    with wire(live.smtpd) as w:
        assert w.reply().startswith(b"220 ")
        w.cmd(b"EHLO etrn.example\r\n")
        for bad in (b"../../precious", b"@../../precious", b"#../../precious", b"/etc/shadow",
                    b"a/../../b", b"[../x]", b"x\0/../y"):
            r = w.cmd(b"ETRN " + bad + b"\r\n")
            assert r[:1] in (b"4", b"5"), (bad, r)
        assert w.cmd(b"QUIT\r\n").startswith(b"221 ")
    inst.wait_log("disconnect from unknown[127.0.0.1] ehlo=1 etrn=0/7 quit=1")
    assert tree(inst.root) == before
    assert (sorted(os.walk(flush)) if flush.exists() else []) == flush_before
    assert "Traceback" not in live.log(mark)


def test_delete_held_message_by_its_id(live, held):
    qid, path = held
    r = live.inst.cmd("postsuper", "-d", qid)
    assert r.returncode == 0 and b"Deleted: 1 message" in r.stderr, r.stderr
    assert not path.exists()

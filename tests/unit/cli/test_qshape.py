"""``hato qshape``: qshape.pl's buckets, domains and table."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from hato.cli import qshape
from hato.queue import qshape as Q
from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import QueueStore
from tests.conftest import require_tool


@pytest.mark.parametrize("minutes, expected", [
    (0, 1), (4.99, 1), (5, 2), (9.99, 2), (10, 3), (19.99, 3), (20, 4), (40, 5), (80, 6),
    (160, 7), (320, 8), (640, 9), (1279, 9), (1280, 10), (10**6, 10),
])
def test_geometric_buckets(minutes, expected):
    assert Q.bucket(minutes * 60, 5, 10) == expected


@pytest.mark.parametrize("minutes, expected", [
    (0, 1), (4.9, 1), (5, 2), (10, 3), (14.9, 3), (15, 4), (44.9, 9), (45, 10), (500, 10),
])
def test_linear_buckets(minutes, expected):
    assert Q.bucket(minutes * 60, 5, 10, linear=True) == expected


def test_headings():
    assert Q.headings(5, 10) == ["T", "5", "10", "20", "40", "80", "160", "320", "640",
                                 "1280", "1280+"]
    assert Q.headings(5, 4, linear=True) == ["T", "5", "10", "15", "15+"]
    assert Q.headings(2.5, 3) == ["T", "2.5", "5", "5+"]
    assert Q.headings(5, 1) == ["T", "0+"]


@pytest.mark.parametrize("address, domain", [
    ("user@Example.COM", "example.com"),
    ("a@b@example.org", "example.org"),
    ("", "MAILER-DAEMON"),
    ("root", "root"),
    ("u@example.com.", "example.com"),
    ("u@.example.com", "example.com"),
    ("u@a..b...c", "a.b..c"),
    ("u@ÉCOLE.example", "École.example"),  # ASCII letters only, as Perl's lc()
])
def test_address_domain(address, domain):
    assert Q.address_domain(address) == domain


def test_parent_domains():
    chain = []
    d: str | None = "a.b.example.com"
    while d is not None:
        chain.append(d)
        d = Q.parent_domain(d)
    assert chain == ["a.b.example.com", ".b.example.com", ".example.com"]
    assert Q.parent_domain("example.com") is None
    assert Q.parent_domain("localhost") is None


def test_counts_recipients_and_parents():
    shape = Q.Shape(buckets=3, parents=True)
    shape.add(["x@a.example.com", "y@a.example.com", "z@b.example.com"], 1)
    shape.add(["w@c.example.com"], 3)
    assert shape.counts["TOTAL"] == [4, 3, 0, 1]
    assert shape.counts["a.example.com"] == [2, 2, 0, 0]
    assert shape.counts[".example.com"] == [4, 3, 0, 1]
    assert shape.subdomains[".example.com"] == 3  # a, b and c, each once
    rows = [name for name, _ in shape.rows(min_subdomains=3)]
    assert rows == ["TOTAL", ".example.com", "a.example.com", "b.example.com",
                    "c.example.com"]
    assert ".example.com" not in [name for name, _ in shape.rows(min_subdomains=4)]
    assert [name for name, _ in shape.rows(min_subdomains=3, top=2)] == [
        "TOTAL", ".example.com"]


def test_table_layout():
    shape = Q.Shape()
    shape.add(["a@example.org", "b@example.org"], 1)
    shape.add(["c@" + "x" * 70 + ".example"], 10)
    lines = Q.format_table(shape)
    assert lines[0] == " " * 41 + "T  5 10 20 40 80 160 320 640 1280 1280+"
    assert lines[1] == " " * 34 + "TOTAL  3  2  0  0  0  0   0   0   0    0     1"
    assert lines[2] == " " * 28 + "example.org  2  2  0  0  0  0   0   0   0    0     0"
    # a name too long for its column keeps its end after a '+'
    assert lines[3] == "+" + ("x" * 70 + ".example")[-38:] + \
        "  1  0  0  0  0  0   0   0   0    0     1"
    assert all(len(line) == 80 for line in lines)
    wide = Q.format_table(shape, width=100)
    assert all(len(line) == 100 for line in wide)


def test_parent_rows_are_cut_with_dot_plus():
    shape = Q.Shape(parents=True)
    long = "y" * 50 + ".example"
    shape.add([f"u@{i}.{long}" for i in range(5)], 1)
    lines = Q.format_table(shape, min_subdomains=5)
    assert lines[2].startswith(".+" + ("." + long)[-37:])


# -- the command over a queue ------------------------------------------------------

MESSAGES = [  # (queue, age in minutes, sender, recipients (address, done))
    ("deferred", 1, "s@sender.example", [("a@one.example", False), ("b@one.example", False)]),
    ("deferred", 7, "", [("c@two.example", False), ("d@one.example", True)]),
    ("deferred", 100, "s@sender.example", [("e@x.two.example", False)]),
    ("deferred", 5000, "t@other.example", [("f@one.example", False)]),
    ("active", 30, "s@sender.example", [("g@one.example", False)]),
    ("incoming", 0, "s@sender.example", [("h@three.example", False)]),
    ("deferred", 3, "s@sender.example", [("i@one.example", True)]),  # nothing pending
]


@pytest.fixture
def queue(tmp_path):
    store = QueueStore(str(tmp_path / "queue"))
    store.ensure_layout()
    paths = []
    now = time.time()  # ages from now: the test runs right after
    for q, age, sender, rcpts in MESSAGES:
        w = store.create(q)
        w.write_envelope(Envelope(sender=sender, arrival_time=now - age * 60,
                                  recipients=[Recipient(a, done=d) for a, d in rcpts]))
        w.write_content(b"Subject: x\n\nbody\n")
        w.commit()
        paths.append(store.path(q, w.queue_id))
    # a file that is not ready (mode 0600: still being written) is not counted
    unready = os.path.join(store.directory, "deferred", "ABCDEF12345")
    with open(paths[0], "rb") as src, open(unready, "wb") as dst:
        dst.write(src.read())
    os.chmod(unready, 0o600)
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "main.cf").write_text(f"queue_directory = {store.directory}\n")
    return store, conf


def run_qshape(capsys, *args: str) -> list[str]:
    assert qshape.main(list(args)) == 0
    return capsys.readouterr().out.splitlines()


def test_deferred_queue_by_recipient_domain(capsys, queue):
    _, conf = queue
    lines = run_qshape(capsys, "-c", str(conf), "deferred")
    table = {line.split()[0]: [int(n) for n in line.split()[1:]] for line in lines[1:]}
    assert table == {
        "TOTAL": [5, 2, 1, 0, 0, 0, 1, 0, 0, 0, 1],
        "one.example": [3, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        "two.example": [1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
        "x.two.example": [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
    }
    assert [line.split()[0] for line in lines[1:]] == [
        "TOTAL", "one.example", "two.example", "x.two.example"]


def test_default_queues_and_senders(capsys, queue):
    store, conf = queue
    lines = run_qshape(capsys, "-c", str(conf), "-s")
    table = {line.split()[0]: int(line.split()[1]) for line in lines[1:]}
    assert table == {"TOTAL": 2, "sender.example": 2}
    lines = run_qshape(capsys, "-s", os.path.join(store.directory, "deferred"))
    table = {line.split()[0]: int(line.split()[1]) for line in lines[1:]}
    assert table == {"TOTAL": 4, "sender.example": 2, "MAILER-DAEMON": 1,
                     "other.example": 1}


def test_bad_numbers_and_missing_queues(capsys, queue):
    _, conf = queue
    assert qshape.main(["-c", str(conf), "-b", "many"]) == 1
    assert "bad -b value: many" in capsys.readouterr().err
    assert qshape.main(["-c", str(conf), "nosuchqueue"]) == 0
    out, err = capsys.readouterr()
    assert "nosuchqueue: No such file or directory" in err
    assert out.splitlines()[1].split() == ["TOTAL"] + ["0"] * 11


@pytest.mark.differential
@pytest.mark.parametrize("opts", [[], ["-s"], ["-p", "-m", "1"], ["-l", "-b", "5", "-t", "2"],
                                  ["-w", "120", "-b", "14"], ["-t", "2.5"]])
def test_same_table_as_postfix(queue, opts):
    store, _ = queue
    tool = require_tool("qshape", "postfix")
    paths = [os.path.join(store.directory, q) for q in ("deferred", "active", "incoming")]
    expected = subprocess.run([tool, *opts, *paths], capture_output=True, text=True,
                              timeout=60, check=True).stdout.splitlines()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    got = subprocess.run([sys.executable, "-m", "hato", "qshape", *opts, *paths],
                         capture_output=True, text=True, timeout=60, env=env,
                         check=True).stdout.splitlines()
    # qshape.pl orders rows of equal total and name length as its hash does
    assert got[:2] == expected[:2] and sorted(got) == sorted(expected)

"""``hato postcat``: Postfix's layout of a queue file, record by record.

The expected texts were taken from Debian's postcat run on the same files;
the differential tests at the end ask it again.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pytest

from hato.cli import postcat
from hato.queue import records as R
from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import QueueStore
from tests.conftest import require_tool

ARRIVAL = 1_700_000_000.25
HEADER = (b"Received: from client.example (client [192.0.2.1])\r\n"
          b"\tby mx.hato.test (hato) with ESMTP id X;\r\n"
          b"Subject: caf\xe9 \xff 8-bit\r\n"
          b"X-Folded: a\r\n b\r\n")
BODY = b"\r\nbody line\r\nnot: a header\r\n" + b"x" * 300 + b"\r\nlast"


def stamp(t: float) -> str:
    return time.asctime(time.localtime(int(t)))


@pytest.fixture
def conf(tmp_path):
    d = tmp_path / "conf"
    d.mkdir()
    (d / "main.cf").write_text(f"queue_directory = {tmp_path / 'queue'}\n")
    return d


@pytest.fixture
def store(tmp_path):
    s = QueueStore(str(tmp_path / "queue"))
    s.ensure_layout()
    return s


def make(store: QueueStore, queue: str = "deferred", content: bytes = HEADER + BODY,
         late: bool = True) -> str:
    w = store.create(queue)
    env = Envelope(
        sender="sender@example.com", arrival_time=ARRIVAL, full_name="Joe User",
        recipients=[Recipient("one@example.org", "One@Example.org",
                              frozenset({"SUCCESS", "FAILURE"}), "rfc822;One@Example.org"),
                    Recipient("two@example.org")],
        ret="HDRS", envid="ENV42", warn_time=1_700_003_600,
        attributes={"log_client_name": "client.example", "create_time": "1700000000"})
    w.write_envelope(env)
    w.write_content(content)
    if late:
        w.add_recipient(Recipient("three@example.net"))
        env.attributes["content_filter"] = "smtp:[127.0.0.1]:10025"
    qid = w.commit()
    with store.open(queue, qid) as f:
        f.mark_done(f.envelope.recipients[0])
    return qid


def cat(capsysbinary, conf, *args: str) -> tuple[int, bytes, str]:
    code = postcat.main(["-c", str(conf), *args])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


def envelope_lines(label: str) -> list[str]:
    return [
        f"*** ENVELOPE RECORDS {label} ***",
        "message_size: (the C record)",
        f"message_arrival_time: {stamp(ARRIVAL)}",
        "sender_fullname: Joe User",
        "named_attribute: log_client_name=client.example",
        f"create_time: {stamp(1_700_000_000)}",
        "sender: sender@example.com",
        "dsn_return_flags: 2",
        "dsn_envelope_id: ENV42",
        f"warning_message_time: {stamp(1_700_003_600)}",
        "dsn_original_recipient: rfc822;One@Example.org",
        "dsn_notify_flags: 6",
        "original_recipient: One@Example.org",
        "done_recipient: one@example.org",
        "recipient: two@example.org",
        f"*** MESSAGE CONTENTS {label} ***",
    ]


def size_line(path: str) -> str:
    with open(path, "rb") as f:
        first = next(R.read_records(lambda o, n: os.pread(f.fileno(), n, o)))
    return "message_size: " + first.data.decode()


def test_whole_file_in_postfix_layout(capsysbinary, conf, store):
    qid = make(store)
    path = store.path("deferred", qid)
    code, out, err = cat(capsysbinary, conf, path)
    assert code == 0 and err == ""
    expected = envelope_lines(path)
    expected[1] = size_line(path)
    text = out.split(b"\n")
    assert [line.decode() for line in text[:len(expected)]] == expected
    content = HEADER + BODY
    rest = out[len("\n".join(expected)) + 1:]
    assert rest == (content + b"\n" + f"*** HEADER EXTRACTED {path} ***\n".encode()
                    + b"named_attribute: content_filter=smtp:[127.0.0.1]:10025\n"
                    + b"recipient: three@example.net\n"
                    + f"*** MESSAGE FILE END {path} ***\n".encode())


def test_queue_search_shows_the_path_under_the_queue_directory(capsysbinary, conf, store):
    qid = make(store)
    code, out, _ = cat(capsysbinary, conf, "-e", "-q", qid)
    assert code == 0
    rel = os.path.relpath(store.path("deferred", qid), store.directory)
    assert rel == f"deferred/{qid[0]}/{qid}"
    assert out.startswith(f"*** ENVELOPE RECORDS {rel} ***\n".encode())
    assert out.endswith(f"*** MESSAGE FILE END {rel} ***\n".encode())


@pytest.mark.parametrize("queue", ["maildrop", "incoming", "active", "hold", "saved"])
def test_queue_search_looks_in_every_message_queue(capsysbinary, conf, store, queue):
    qid = make(store, queue)
    code, out, _ = cat(capsysbinary, conf, "-q", "-e", qid)
    assert code == 0
    assert out.startswith(f"*** ENVELOPE RECORDS {queue}/{qid} ***".encode())


def test_corrupt_queue_is_not_searched(capsysbinary, conf, store):
    qid = make(store, "corrupt")
    code, out, err = cat(capsysbinary, conf, "-q", qid)
    assert code == 1 and out == b""
    assert err == f"postcat: fatal: open queue file {qid}: No such file or directory\n"


@pytest.mark.parametrize("bad", ["../deferred/x", "A/B", "x.y", "", "A" * 300])
def test_queue_ids_never_name_a_path(capsysbinary, conf, store, bad):
    code, out, err = cat(capsysbinary, conf, "-q", bad)
    assert code == 1 and out == b""
    assert err == f"postcat: fatal: bad mail queue ID: {bad}\n"


def test_a_name_that_is_no_hato_queue_id_is_not_found(capsysbinary, conf, store):
    code, _, err = cat(capsysbinary, conf, "-q", "NOTANID")
    assert code == 1
    assert err == "postcat: fatal: open queue file NOTANID: No such file or directory\n"


def test_envelope_only(capsysbinary, conf, store):
    qid = make(store)
    path = store.path("deferred", qid)
    code, out, _ = cat(capsysbinary, conf, "-e", path)
    assert code == 0
    lines = out.decode().splitlines()
    assert lines[-4:] == [f"*** HEADER EXTRACTED {path} ***",
                          "named_attribute: content_filter=smtp:[127.0.0.1]:10025",
                          "recipient: three@example.net",
                          f"*** MESSAGE FILE END {path} ***"]
    assert b"body line" not in out and b"Subject" not in out


def test_header_and_body_split(capsysbinary, conf, store):
    qid = make(store)
    path = store.path("deferred", qid)
    assert cat(capsysbinary, conf, "-h", path)[1] == HEADER
    # the body starts at the empty line; the last line keeps its missing newline
    assert cat(capsysbinary, conf, "-b", path)[1] == BODY
    assert cat(capsysbinary, conf, "-bh", path)[1] == HEADER + BODY


def test_a_header_longer_than_one_record_stays_in_the_header(capsysbinary, conf, store):
    long_header = b"X-Long: " + b"y" * (R.MAX_WRITE_SIZE + 10) + b"\n continued\n"
    qid = make(store, content=long_header + b"\nbody\n")
    path = store.path("deferred", qid)
    assert cat(capsysbinary, conf, "-h", path)[1] == long_header
    assert cat(capsysbinary, conf, "-b", path)[1] == b"\nbody\n"


def test_a_message_that_starts_with_its_body(capsysbinary, conf, store):
    qid = make(store, content=b"no header here\nsecond: line\n")
    path = store.path("deferred", qid)
    assert cat(capsysbinary, conf, "-h", path)[1] == b""
    assert cat(capsysbinary, conf, "-b", path)[1] == b"no header here\nsecond: line\n"


def test_offsets_are_the_record_offsets(capsysbinary, conf, store):
    qid = make(store, late=False)
    path = store.path("deferred", qid)
    code, out, _ = cat(capsysbinary, conf, "-o", path)
    assert code == 0
    recs = R.decode_records(Path(path).read_bytes())
    shown = [r.offset for r in recs]  # every record, markers included
    lines = out.split(b"\n")[1:-1]  # after the ENVELOPE RECORDS line
    assert [int(line[:9]) for line in lines] == shown
    assert all(line[9:10] == b" " for line in lines)
    # each content record on its own line, the text as stored
    by_offset = {r.offset: r for r in recs}
    for line in lines:
        rec = by_offset[int(line[:9])]
        if rec.type in (R.NORM, R.CONT):
            assert line[10:] == rec.data


def test_verbose_and_decimal_types(capsysbinary, conf, store):
    qid = make(store, content=b"Subject: x\n\nab")
    path = store.path("deferred", qid)
    _, out, _ = cat(capsysbinary, conf, "-v", "-d", path)
    lines = out.decode().splitlines()
    assert " 78 regular_text: Subject: x" in lines
    assert " 78 regular_text: " in lines
    assert " 76 unterminated_text: ab" in lines
    assert " 83 sender: sender@example.com" in lines
    assert f" 77 *** MESSAGE CONTENTS {path} ***" in lines


def test_standard_input(capsysbinary, conf, store, monkeypatch):
    qid = make(store)
    data = Path(store.path("deferred", qid)).read_bytes()

    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    for stream in (io.BytesIO(data), Pipe(data)):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(stream))
        code, out, _ = cat(capsysbinary, conf)
        assert code == 0
        assert out.startswith(b"*** ENVELOPE RECORDS stdin ***\n")
        assert out.endswith(b"*** MESSAGE FILE END stdin ***\n")
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(type(stream)(data)))
        assert cat(capsysbinary, conf, "-bh")[1] == HEADER + BODY


def test_a_file_cut_inside_a_record(capsysbinary, conf, store, tmp_path):
    qid = make(store)
    data = Path(store.path("deferred", qid)).read_bytes()
    recs = R.decode_records(data)
    mesg = next(r for r in recs if r.type == R.MESG)
    cut = tmp_path / "cut"
    cut.write_bytes(data[: mesg.offset + 2 + 5])  # 5 bytes into the first content record
    code, out, err = cat(capsysbinary, conf, str(cut))
    assert code == 1
    assert out.endswith(f"*** MESSAGE CONTENTS {cut} ***\n".encode())
    first = next(r for r in recs if r.offset > mesg.offset)
    assert err == (f"postcat: warning: {cut}: unexpected EOF in data, record type 78 "
                   f"length {len(first.data)}\npostcat: fatal: record read error\n")


def test_a_garbled_length(capsysbinary, conf, store, tmp_path):
    qid = make(store)
    data = bytearray(Path(store.path("deferred", qid)).read_bytes())
    recs = R.decode_records(bytes(data))
    sender = next(r for r in recs if r.type == R.FROM)
    data[sender.offset + 1: sender.offset + 2] = b"\xff\xff\xff\xff\x7f"
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    code, out, err = cat(capsysbinary, conf, str(bad))
    assert code == 1
    assert err == (f"postcat: warning: {bad}: illegal length -1, record type 83\n"
                   "postcat: fatal: record read error\n")
    assert b"sender:" not in out and b"named_attribute:" in out


def test_a_file_without_its_end(capsysbinary, conf, store, tmp_path):
    qid = make(store)
    data = Path(store.path("deferred", qid)).read_bytes()
    xtra = next(r for r in R.decode_records(data) if r.type == R.XTRA)
    cut = tmp_path / "cut"
    cut.write_bytes(data[:xtra.offset])
    code, out, err = cat(capsysbinary, conf, str(cut))
    assert code == 0
    assert out.endswith(b"last\n")
    assert err == f"postcat: warning: {cut}: no end record: the queue file is truncated\n"


def test_not_a_queue_file(capsysbinary, conf, tmp_path):
    other = tmp_path / "other"
    other.write_bytes(b"hello\n")
    code, out, err = cat(capsysbinary, conf, str(other))
    assert (code, out) == (0, b"")
    assert err == f"postcat: warning: {other}: input is not a valid queue file\n"


def test_missing_file_and_bad_options(capsysbinary, conf, tmp_path):
    code, _, err = cat(capsysbinary, conf, str(tmp_path / "none"))
    assert code == 1
    assert err == f"postcat: fatal: open {tmp_path / 'none'}: No such file or directory\n"
    code, _, err = cat(capsysbinary, conf, "-x")
    assert code == 1
    assert err.splitlines() == ["postcat: invalid option -- 'x'",
                                "postcat: fatal: " + postcat.USAGE]
    code, _, err = cat(capsysbinary, conf, "-s", "x1", "f")
    assert (code, err) == (1, "postcat: fatal: bad offset: x1\n")


def test_start_offset(capsysbinary, conf, store):
    qid = make(store)
    path = store.path("deferred", qid)
    data = Path(path).read_bytes()
    sender = next(r for r in R.decode_records(data) if r.type == R.FROM)
    code, out, _ = cat(capsysbinary, conf, "-e", "-s", str(sender.offset), path)
    assert code == 0
    assert out.startswith(b"sender: sender@example.com\n")


@pytest.mark.parametrize("data, error", [
    (b"A", "missing '=' after attribute name"),
    (b"  ", "missing attribute name"),
])
def test_malformed_attribute(capsysbinary, conf, tmp_path, data, error):
    f = tmp_path / "q"
    f.write_bytes(R.encode_record(R.SIZE, b"1 1") + R.encode_record(R.ATTR, data)
                  + R.encode_record(R.ATTR, b" name = value ") + R.encode_record(R.END))
    code, out, err = cat(capsysbinary, conf, "-e", str(f))
    assert code == 0
    assert b"named_attribute: name=value\n" in out
    assert err == f"postcat: warning: {f}: malformed attribute: {error}: {data.decode()}\n"


def test_is_header():
    assert postcat.is_header(b"Subject: x")
    assert postcat.is_header(b"Subject : x")
    assert postcat.is_header(b"X:")
    assert not postcat.is_header(b"")
    assert not postcat.is_header(b": x")
    assert not postcat.is_header(b"two words: x")
    assert not postcat.is_header(b"caf\xe9: x")
    assert not postcat.is_header(b"\r")
    assert not postcat.is_header(b" Subject: x")


# -- differential: Debian's postcat on the same files --------------------------------

def _debian(tmp_path, *args: str) -> tuple[bytes, bytes]:
    tool = require_tool("postcat", "postfix")
    pconf = tmp_path / "postfix-conf"
    pconf.mkdir(exist_ok=True)
    main_cf = pconf / "main.cf"
    main_cf.write_text(f"queue_directory = {tmp_path / 'queue'}\n")
    os.utime(main_cf, (1_600_000_000, 1_600_000_000))  # Postfix waits on a fresh main.cf
    r = subprocess.run([tool, "-c", str(pconf), *args], capture_output=True, timeout=60,
                       check=False, cwd=tmp_path)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout, r.stderr


@pytest.mark.differential
@pytest.mark.parametrize("flags", [[], ["-e"], ["-h"], ["-b"], ["-bh"], ["-o"], ["-eb"],
                                   ["-eh"], ["-d"], ["-v"], ["-ov"], ["-bo"]])
def test_same_output_as_postfix(capsysbinary, conf, store, tmp_path, flags):
    qid = make(store)
    for args in ([store.path("deferred", qid)], ["-q", qid]):
        expected, _ = _debian(tmp_path, *flags, *args)
        code, out, _ = cat(capsysbinary, conf, *flags, *args)
        assert code == 0
        assert out == expected


@pytest.mark.differential
def test_same_errors_as_postfix(capsysbinary, conf, store, tmp_path):
    make(store)
    for args in (["-q", "../x"], ["-q", "B0428256004"], [str(tmp_path / "none")]):
        _, expected = _debian(tmp_path, *args)
        _, _, err = cat(capsysbinary, conf, *args)
        assert err == expected.decode().replace(require_tool("postcat", "postfix"), "postcat")

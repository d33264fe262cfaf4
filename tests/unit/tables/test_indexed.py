"""Conformance suite for the file tables: lmdb, hash, btree, cdb, texthash.

Each type is built from the same source (by hato's own writers, as
``hato postmap`` does) and asked the same questions: found, not found, key
folding and ``-f``, trailing-NUL handling, refresh after a rebuild, and an
atomic rebuild seen by a concurrent reader.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from hato.tables import registry
from hato.tables.base import OpenFlags, TableError
from hato.tables.textfile import (
    FileOpenFlags,
    NulMode,
    fold_key,
    logical_lines,
    parse_source,
    split_entry,
)

TYPES = ["lmdb", "hash", "btree", "cdb", "texthash"]
SUFFIX = {"lmdb": ".lmdb", "hash": ".hato.db", "btree": ".hato.db", "cdb": ".cdb",
          "texthash": ""}

SOURCE = """\
# a comment
Foo@Example.COM   bar
user+ext@example.org  one two  three
2001:DB8::1  ipv6
  # an indented comment inside nothing
Straße  utf8
multi  first
  second
"quoted key"  q
plain value with   inner   blanks
"""


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str


def hato_postmap(*argv: str, input: bytes = b"", prog: str = "postmap") -> Result:
    """``hato postmap ARGV`` in this process, with bytes on stdin/stdout."""
    from hato.cli.main import main

    stdin = io.TextIOWrapper(io.BytesIO(input), encoding="utf-8", errors="surrogateescape")
    out = io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="surrogateescape")
    err = io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr, os.environ.pop("MAIL_CONFIG", None)
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, err
    try:
        code = main(["hato", prog, *argv])
        stdout.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved[0], saved[1], saved[2]
        if saved[3] is not None:
            os.environ["MAIL_CONFIG"] = saved[3]
    return Result(code, out.getvalue(), err.getvalue())


def utf8_config(tmp_path: Path) -> Path:
    conf = tmp_path / "conf-utf8"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("compatibility_level = 3.6\n")
    return conf


def build(type_name: str, source: Path, *, fold: bool = True, nul: str = NulMode.DEFAULT,
          extra: list[str] | None = None) -> None:
    """What ``hato postmap type:source`` does, in-process."""
    args = []
    if not fold:
        args.append("-f")
    if nul == NulMode.WITH:
        args.append("-N")
    elif nul == NulMode.WITHOUT:
        args.append("-n")
    args += extra or []
    if type_name == "texthash":
        return
    res = hato_postmap(*args, f"{type_name}:{source}")
    assert res.returncode == 0, res.stderr


@pytest.fixture(params=TYPES)
def kind(request) -> str:
    return request.param


@pytest.fixture(params=[t for t in TYPES if t != "texthash"])
def indexed(request) -> str:
    """The types with an index file (texthash reads its source)."""
    return request.param


def make(tmp_path: Path, kind: str, text: str = SOURCE, **kw) -> Path:
    src = tmp_path / "table"
    src.write_text(text)
    build(kind, src, **kw)
    return src


def test_found_and_not_found(tmp_path, kind):
    src = make(tmp_path, kind)
    t = registry.open_table(f"{kind}:{src}")
    assert t.get("foo@example.com") == "bar"
    assert t.get("user+ext@example.org") == "one two  three"
    assert t.get("2001:db8::1") == "ipv6"
    assert t.get("multi") == "first  second"
    assert t.get('"quoted key"') == "q"
    assert t.get("plain") == "value with   inner   blanks"
    assert t.get("nothere") is None
    assert t.get("user@example.org") is None
    assert t.get("") is None
    t.close()


def test_key_folding(tmp_path, kind):
    src = make(tmp_path, kind)
    t = registry.open_table(f"{kind}:{src}")
    assert t.get("FOO@EXAMPLE.COM") == "bar"
    assert t.get("Foo@Example.Com") == "bar"
    # without smtputf8_enable only ASCII letters fold, as in Postfix
    assert t.get("straße") == "utf8"
    assert t.get("STRASSE") is None
    unfolded = registry.open_table(f"{kind}:{src}", OpenFlags(fold_case=False))
    if kind == "texthash":  # the source is read again, keys as written
        assert unfolded.get("Foo@Example.COM") == "bar"
        assert unfolded.get("foo@example.com") is None
    else:  # the index holds folded keys; the lookup key is used as given
        assert unfolded.get("foo@example.com") == "bar"
        assert unfolded.get("FOO@example.com") is None


def test_no_folding_at_build(tmp_path, kind):
    src = make(tmp_path, kind, "MiXed v\n", fold=False)
    t = registry.open_table(f"{kind}:{src}", FileOpenFlags(fold_case=False))
    assert t.get("MiXed") == "v"
    assert t.get("mixed") is None
    folded = registry.open_table(f"{kind}:{src}")
    if kind != "texthash":  # texthash folds when it reads the source
        assert folded.get("MiXed") is None  # the lookup folds, the stored key did not


def test_utf8_folding(tmp_path, kind):
    src = tmp_path / "table"
    src.write_text("STRASSE a\nΣΊΣΥΦΟΣ b\n")
    if kind != "texthash":
        res = hato_postmap("-c", str(utf8_config(tmp_path)), f"{kind}:{src}")
        assert res.returncode == 0, res.stderr
    t = registry.open_table(f"{kind}:{src}", FileOpenFlags(utf8=True))
    assert t.get("straße") == "a"
    assert t.get("σίσυφος") == "b"


def test_items(tmp_path, kind):
    src = make(tmp_path, kind, "b 2\na 1\n")
    t = registry.open_table(f"{kind}:{src}")
    assert sorted(t.items()) == [("a", "1"), ("b", "2")]


def test_missing_index(tmp_path, kind):
    src = tmp_path / "absent"
    with pytest.raises(TableError) as err:
        registry.open_table(f"{kind}:{src}")
    assert "No such file or directory" in str(err.value)
    assert str(src) in str(err.value)


def test_refresh_after_rebuild(tmp_path, kind):
    src = make(tmp_path, kind, "k old\n")
    t = registry.open_table(f"{kind}:{src}")
    assert t.get("k") == "old"
    assert t.refresh() is False
    src.write_text("k new\nk2 added\n")
    build(kind, src)
    if kind == "texthash":
        # same size and same second would hide a change: make sure it differs
        st = os.stat(src)
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert t.refresh() is True
    assert t.get("k") == "new"
    assert t.get("k2") == "added"
    assert t.refresh() is False


def test_rebuild_is_atomic_for_a_concurrent_reader(tmp_path, indexed):
    n = 3000
    src = tmp_path / "table"

    def generation(g: int) -> str:
        return "".join(f"key{i} gen{g}\n" for i in range(n))

    src.write_text(generation(0))
    build(indexed, src)
    index = str(src) + SUFFIX[indexed]
    stop = threading.Event()
    seen: set[str] = set()
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                t = registry.open_table(f"{indexed}:{src}")
            except TableError as err:  # the path must always hold a whole index
                errors.append(f"open: {err}")
                continue
            values = {t.get(f"key{i}") for i in (0, n // 2, n - 1)}
            t.close()
            if None in values or len(values) != 1:
                errors.append(f"mixed or missing: {values}")
            seen.update(v for v in values if v)

    th = threading.Thread(target=reader)
    th.start()
    try:
        for g in range(1, 8):
            src.write_text(generation(g))
            build(indexed, src)
            assert os.path.exists(index)
    finally:
        stop.set()
        th.join()
    assert not errors, errors[:5]
    assert len(seen) >= 2


def test_failed_rebuild_keeps_old_index(tmp_path, indexed):
    src = make(tmp_path, indexed, "k v\n")
    index = str(src) + SUFFIX[indexed]
    before = Path(index).read_bytes()
    src.write_bytes(b"k v2\nbinary \x00 garbage\n")
    res = hato_postmap(f"{indexed}:{src}")
    assert res.returncode == 1
    assert f"{src}, line 2: NUL byte in input" in res.stderr
    assert Path(index).read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_nul_modes(tmp_path):
    """-N / -n write with / without the NUL; lookups try both forms."""
    import lmdb

    for nul, expect in ((NulMode.WITH, b"k\0"), (NulMode.WITHOUT, b"k")):
        src = make(tmp_path, "lmdb", "k v\n", nul=nul)
        env = lmdb.open(str(src) + ".lmdb", subdir=False, readonly=True, lock=False)
        with env.begin() as txn:
            assert [k for k, _ in txn.cursor()] == [expect]
        env.close()
        assert registry.open_table(f"lmdb:{src}").get("k") == "v"
        only = NulMode.WITHOUT if nul == NulMode.WITH else NulMode.WITH
        assert registry.open_table(f"lmdb:{src}", FileOpenFlags(nul=only)).get("k") is None


def test_stale_index_warning(tmp_path, indexed, caplog):
    src = make(tmp_path, indexed, "k v\n")
    index = str(src) + SUFFIX[indexed]
    now = time.time()
    os.utime(index, (now - 600, now - 600))
    os.utime(src, (now - 300, now - 300))
    with caplog.at_level("WARNING", logger="hato.tables"):
        registry.open_table(f"{indexed}:{src}")
    assert f"database {index} is older than source file {src}" in caplog.text


def test_berkeley_db_file_is_named(tmp_path):
    """A Postfix hash: .db file without hato's index: say so and how to fix."""
    src = tmp_path / "virtual"
    src.write_text("a b\n")
    # the start of a Berkeley DB hash file: magic 0x061561 at offset 12
    (tmp_path / "virtual.db").write_bytes(b"\0" * 12 + bytes.fromhex("61150600") + b"\0" * 64)
    with pytest.raises(TableError) as err:
        registry.open_table(f"hash:{src}")
    msg = str(err.value)
    assert f"{src}.db is a Berkeley DB (Hash) file" in msg
    assert f'hato postmap hash:{src}' in msg


# -- the source parser -----------------------------------------------------------


def test_logical_lines_and_warnings():
    warnings: list[str] = []
    data = b"# c\n\nfoo\n  bar\n\n# x\nbaz\n  \n  qux\n leading at start\nk v"
    lines = list(logical_lines(b" lead\n" + data, "f", warnings.append))
    assert lines == [(4, b"foo  bar"), (8, b"baz  qux leading at start"), (12, b"k v")]
    assert warnings == ['f: logical line must not start with whitespace: " lead"']


def test_split_entry():
    assert split_entry(b'"a b" c d ') == (b'"a b"', b"c d", False)
    assert split_entry(b"a\\ b c") == (b"a\\ b", b"c", False)
    assert split_entry(b'"a b c') == (b'"a b c', b"", True)
    assert split_entry(b"key") == (b"key", b"", False)


def test_parse_source_warnings():
    warnings: list[str] = []
    data = b'k1 v1\nnovalue\n"unbalanced x\nalias: x\n'
    got = [(e.line, e.key, e.value) for e in parse_source(data, "src", warnings.append)]
    assert got == [(1, b"k1", b"v1"), (4, b"alias:", b"x")]
    assert warnings == [
        "src, line 2: expected format: key whitespace value",
        "src, line 3: unbalanced '\"' in '\"unbalanced x' -- ignoring this line",
        'src, line 4: record is in "key: value" format; is this an alias file?',
    ]


def test_parse_source_utf8_mode():
    warnings: list[str] = []
    got = list(parse_source(b"ok v\nbad \xff\n", "s", warnings.append, utf8=True))
    assert [e.key for e in got] == [b"ok"]
    assert warnings == ['s, line 2: non-UTF-8 input "bad ?" -- ignoring this line']


def test_fold_key():
    assert fold_key(b"ABC", False) == b"abc"
    assert fold_key("ÄB".encode(), False) == "Äb".encode()
    assert fold_key("ÄB".encode(), True) == "äb".encode()
    assert fold_key("Straße".encode(), True) == b"strasse"
    assert fold_key(b"\xff", True) is None

"""sqlite: tables against a real SQLite file the test writes."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hato.tables.base import OpenFlags, TableError, TableRetry
from hato.tables.registry import open_table
from hato.tables.sqlite import SqliteTable

ROWS = [
    ("alice@example.com", "alice@mail.example.com"),
    ("o'brien@example.com", "obrien"),
    ("back\\slash", "bs"),
    ("multi", "one"), ("multi", "two"), ("multi", "three"),
    ("holes", None), ("holes", ""), ("holes", "solid"),
    ("ünïcode@exämple.com", "ü-value"),
    ("strasse", "from-ss"),
    ("Upper", "stored-upper"),
]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "data.db"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("CREATE TABLE alias (k TEXT, v TEXT, n INTEGER)")
        conn.executemany("INSERT INTO alias (k, v, n) VALUES (?, ?, ?)",
                         [(k, v, i) for i, (k, v) in enumerate(ROWS)])
        conn.execute("CREATE TABLE typed (k TEXT, v)")
        conn.executemany("INSERT INTO typed VALUES (?, ?)",
                         [("int", 42), ("float", 1.5), ("big", 1e20), ("blob", b"AB\x00CD"),
                          ("latin1", b"caf\xe9"), ("nul", "before\x00after")])
    conn.close()
    return path


def make(tmp_path: Path, db: Path, body: str, name: str = "t.cf",
         flags: OpenFlags | None = None) -> SqliteTable:
    cf = tmp_path / name
    cf.write_text(f"dbpath = {db}\n{body}")
    table = open_table(f"sqlite:{cf}", flags or OpenFlags())
    assert isinstance(table, SqliteTable)
    return table


@pytest.fixture
def table(tmp_path: Path, db: Path) -> Iterator[SqliteTable]:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%s' ORDER BY n\n")
    yield t
    t.close()


def test_found_not_found_and_folding(table: SqliteTable) -> None:
    assert table.get("alice@example.com") == "alice@mail.example.com"
    assert table.get("ALICE@Example.Com") == "alice@mail.example.com"
    assert table.get("nobody@example.com") is None
    assert table.get("Upper") is None  # the key is folded, the stored one is not
    assert table.get("ÜNÏCODE@EXÄMPLE.COM") == "ü-value"
    assert table.get("STRASSE") == "from-ss"
    assert table.get("straße") == "from-ss"  # full case folding, as Postfix's casefold
    assert table.get("") is None


def test_no_folding_when_asked(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%s'\n",
             flags=OpenFlags(fold_case=False))
    assert t.get("Upper") == "stored-upper"
    assert t.get("upper") is None


def test_quotes_and_injection(table: SqliteTable) -> None:
    assert table.get("o'brien@example.com") == "obrien"
    assert table.get("back\\slash") == "bs"
    for attempt in ["x' OR '1'='1", "' OR 1=1 --", "x'; DROP TABLE alias; --",
                    "' UNION SELECT k FROM alias --", "\\' OR 1=1 --"]:
        assert table.get(attempt) is None
    assert table.get("alice@example.com") is not None  # the table is still there


def test_several_rows_joined_with_commas(table: SqliteTable) -> None:
    assert table.get("multi") == "one,two,three"
    assert table.get("holes") == "solid"  # NULL and empty values are skipped


def test_expansion_limit(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%s' ORDER BY n\n"
                           "expansion_limit = 2\n")
    assert t.get("holes") == "solid"
    with pytest.raises(TableRetry, match="expansion limit"):
        t.get("multi")


def test_result_format(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%s' ORDER BY n\n"
                           "result_format = smtp:[%d] for %U\n")
    assert t.get("alice@example.com") == "smtp:[mail.example.com] for alice"
    assert t.get("multi") is None  # no value has a domain


def test_value_conversions(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM typed WHERE k='%s'\n")
    assert t.get("int") == "42"
    assert t.get("float") == "1.5"
    assert t.get("big") == "1.0e+20"  # SQLite's own formatting, as sqlite3_column_text
    assert t.get("blob") == "AB"  # a C string ends at NUL
    assert t.get("nul") == "before"
    with pytest.raises(TableRetry, match="non-UTF-8"):
        t.get("latin1")


def test_only_the_first_column(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v, k FROM alias WHERE k='%s'\n")
    assert t.get("alice@example.com") == "alice@mail.example.com"


def test_suppressed_queries(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%u@%d'\n")
    assert t.get("alice@example.com") == "alice@mail.example.com"
    assert t.get("alice") is None
    assert t.get("@example.com") is None


def test_domain_filter(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%s'\n"
                           "domain = example.com\n")
    assert t.get("alice@example.com") == "alice@mail.example.com"
    assert t.get("multi") is None  # not an address in a listed domain
    assert t.get("@example.com") is None


def test_legacy_parameters(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "table = alias\nselect_field = v\nwhere_field = k\n"
                           "additional_conditions = ORDER BY n DESC\n")
    assert t.get("multi") == "three,two,one"


def test_database_is_read_only(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = DELETE FROM alias WHERE k='%s'\n")
    with pytest.raises(TableRetry, match="SQL query failed"):
        t.get("alice@example.com")
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT count(*) FROM alias").fetchone()[0] == len(ROWS)
    conn.close()


def test_query_errors_are_retries(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM no_such_table WHERE k='%s'\n")
    with pytest.raises(TableRetry, match="no such table"):
        t.get("x")


def test_locked_database_is_a_retry(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%s'\n")
    t.busy_timeout = 0.1
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TableRetry, match="locked"):
            t.get("alice@example.com")
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert t.get("alice@example.com") == "alice@mail.example.com"


def test_missing_or_bad_database(tmp_path: Path) -> None:
    cf = tmp_path / "t.cf"
    cf.write_text(f"dbpath = {tmp_path / 'missing.db'}\nquery = SELECT 1\n")
    with pytest.raises(TableError, match="can't open database") as info:
        open_table(f"sqlite:{cf}")
    assert info.value.line == 1
    assert not (tmp_path / "missing.db").exists()  # not created, unlike Postfix
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite database" * 100)
    cf.write_text(f"dbpath = {junk}\nquery = SELECT 1\n")
    with pytest.raises(TableError, match="not a database"):
        open_table(f"sqlite:{cf}")
    # a NUL in the name (found by the fuzz smoke test): an error, not a crash
    cf.write_text(f"dbpath = {junk}\0x\nquery = SELECT 1\n")
    with pytest.raises(TableError, match="null character"):
        open_table(f"sqlite:{cf}")


def test_refresh_after_replacement(tmp_path: Path, db: Path) -> None:
    t = make(tmp_path, db, "query = SELECT v FROM alias WHERE k='%s'\n")
    assert t.refresh() is False
    new = tmp_path / "new.db"
    conn = sqlite3.connect(new)
    with conn:
        conn.execute("CREATE TABLE alias (k TEXT, v TEXT)")
        conn.execute("INSERT INTO alias VALUES ('alice@example.com', 'rebuilt')")
    conn.close()
    os.replace(new, db)
    assert t.get("alice@example.com") == "alice@mail.example.com"  # the old file, still open
    assert t.refresh() is True
    assert t.get("alice@example.com") == "rebuilt"


def test_non_utf8_and_nul_keys(table: SqliteTable) -> None:
    assert table.get("caf\udce9") is None
    assert table.get("alice@example.com\0junk") is None


def test_threads(table: SqliteTable) -> None:
    errors: list[str] = []

    def worker() -> None:
        for _ in range(200):
            if table.get("multi") != "one,two,three":
                errors.append("bad")

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


def test_closed_table(table: SqliteTable) -> None:
    table.close()
    with pytest.raises(TableRetry):
        table.get("alice@example.com")

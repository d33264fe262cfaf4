"""Fuzz sql_table(5) configuration files and key quoting through the
``sqlite:`` table (hato.tables.sqlconf, hato.tables.sqlite).

Two modes, chosen by an option byte:

* the input is the table's .cf file (after a ``dbpath`` line naming a small
  database): every parameter, the ``%s %u %d %[1-9] %S %U %D`` templates,
  ``domain``, ``result_format``, ``expansion_limit``...; then lookups;
* the input is a lookup key for a fixed query ``... WHERE k='%s'``: the
  answer must be exactly the database's (a key must never change the SQL,
  whatever quotes, NULs or bytes it holds).

Documented outcomes: TableError when opened, TableRetry at lookup, else a
string or None. Anything else escaping is a crash.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile

from tests.fuzz.harness import Input, instrumented, run

with instrumented():
    from hato.tables.base import OpenFlags, TableError, TableRetry
    from hato.tables.registry import open_table

_DIR = tempfile.mkdtemp(prefix="hato-fuzz-sqlite-")  # tools/fuzz sets TMPDIR
atexit.register(shutil.rmtree, _DIR, True)
_DB = os.path.join(_DIR, "map.sqlite")
_ROWS = {"user@example.com": "OK", "example.com": "REJECT", "o'brien@example.com": "quoted",
         "user": "local part", "": "empty"}
with sqlite3.connect(_DB) as _db:
    _db.execute("CREATE TABLE t (k TEXT, v TEXT)")
    _db.executemany("INSERT INTO t VALUES (?, ?)", list(_ROWS.items()))
_db.close()
_FIXED = os.path.join(_DIR, "fixed.cf")
with open(_FIXED, "w") as fh:
    fh.write(f"dbpath = {_DB}\nquery = SELECT v FROM t WHERE k='%s'\n")
_FIXED_TABLE = open_table(f"sqlite:{_FIXED}", OpenFlags(fold_case=False))
_KEYS = ("user@example.com", "o'brien@example.com", "Example.COM", "user@", "@example.com",
         "a@b@c", "")


def _injection(key_bytes: bytes) -> None:
    key = key_bytes.decode("utf-8", "surrogateescape")
    try:
        got = _FIXED_TABLE.get(key)
    except TableRetry:
        return
    want = _ROWS.get(key) if "\0" not in key else None
    if got is not None and got != want:
        raise AssertionError(f"key {key!r} gave {got!r}, the database says {want!r}")


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    body = inp.rest()
    if opts & 1:
        _injection(body)
        return
    path = os.path.join(_DIR, "fuzz.cf")
    with open(path, "wb") as fh:
        fh.write(f"dbpath = {_DB}\n".encode() + body)
    try:
        table = open_table(f"sqlite:{path}", OpenFlags(fold_case=bool(opts & 2)))
    except TableError:
        return
    try:
        for key in _KEYS:
            try:
                value = table.get(key)
            except TableRetry:
                continue
            if value is not None and not isinstance(value, str):
                raise AssertionError(f"lookup gave {type(value).__name__}")
    finally:
        table.close()


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

"""One conformance suite over every table type this part of hato provides:
cidr, regexp, pcre, inline, static, fail, environ, unix, unionmap, pipemap,
proxy. Each is opened through the registry, as callers open it, and must
give the three outcomes (found, not found, temporary failure), fold keys as
Postfix does, and keep its place in a table list.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from hato.tables.base import OpenFlags, Table, TableRetry
from hato.tables.registry import open_table
from hato.tables.search import TableList


@dataclass
class Case:
    """How to build a table of one type that maps *key* to *value*."""

    make: Callable[[object], str]  # tmp_path → table spec
    key: str
    value: str
    missing: str | None  # a key it does not have (None: it has every key)
    upper_found: bool  # does the key in upper case find the value (folding)?
    pattern: bool = False


def _file(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


CASES: dict[str, Case] = {
    "cidr": Case(lambda p: "cidr:" + _file(p, "t.cidr", "192.0.2.0/24 one\n2001:db8::/32 six\n"),
                 "192.0.2.7", "one", "198.51.100.1", True, pattern=True),
    # /i makes the pattern case-sensitive; pattern tables never fold keys
    "regexp": Case(lambda p: "regexp:" + _file(p, "t.re", "/^alpha$/i one\n"),
                   "alpha", "one", "beta", False, pattern=True),
    "pcre": Case(lambda p: "pcre:" + _file(p, "t.pcre", "/^alpha$/i one\n"),
                 "alpha", "one", "beta", False, pattern=True),
    "inline": Case(lambda p: "inline:{ alpha=one, { beta = two words } }",
                   "alpha", "one", "gamma", True),
    "static": Case(lambda p: "static:{ one }", "alpha", "one", None, True),
    "environ": Case(lambda p: "environ:x", "hato_conformance_var", "one", "hato_no_such_var",
                    True),
    "unix": Case(lambda p: "unix:passwd.byname", "root",
                 "root:x:0:0:root:/root:/bin/bash", "hato-no-such-user", True),
    "unionmap": Case(lambda p: "unionmap:{inline:{alpha=one}, inline:{beta=two}}",
                     "alpha", "one", "gamma", True),
    "pipemap": Case(lambda p: "pipemap:{inline:{alpha=mid}, inline:{mid=one}}",
                    "alpha", "one", "gamma", True),
    "proxy": Case(lambda p: "proxy:inline:{alpha=one}", "alpha", "one", "gamma", True),
}


@pytest.fixture(autouse=True)
def _environ(monkeypatch):
    monkeypatch.setenv("hato_conformance_var", "one")


def _open(tmp_path, name: str, flags: OpenFlags = OpenFlags()) -> Table:
    return open_table(CASES[name].make(tmp_path), flags)


@pytest.mark.parametrize("name", sorted(CASES))
def test_found_and_not_found(tmp_path, name):
    case = CASES[name]
    table = _open(tmp_path, name)
    value = table.get(case.key)
    if name == "unix":
        assert value is not None and value.startswith("root:x:0:0:")
    else:
        assert value == case.value
    if case.missing is not None:
        assert table.get(case.missing) is None
    assert table.pattern_table == case.pattern
    assert table.name.startswith(name + ":")


@pytest.mark.parametrize("name", sorted(CASES))
def test_key_folding(tmp_path, name):
    case = CASES[name]
    table = _open(tmp_path, name)
    found = table.get(case.key.upper()) is not None
    assert found == case.upper_found
    if case.upper_found and case.missing is not None and name != "cidr":
        # with folding turned off (postmap -f), the upper-case key misses
        strict = _open(tmp_path, name, OpenFlags(fold_case=False))
        assert strict.get(case.key.upper()) is None
        assert strict.get(case.key) is not None


@pytest.mark.parametrize("spec", ["fail:oops", "unionmap:{inline:{a=1}, fail:x}",
                                  "pipemap:{inline:{alpha=a}, fail:x}", "proxy:fail:x"])
def test_temporary_failure(spec):
    table = open_table(spec)
    with pytest.raises(TableRetry) as err:
        table.get("alpha")
    assert "fail:" in str(err.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_list_order(tmp_path, name):
    case = CASES[name]
    table = _open(tmp_path, name)
    later = open_table("static:later")
    first = open_table("inline:{" + case.key + "=earlier}")
    assert TableList([table, later]).get(case.key) == (
        table.get(case.key) if name != "unix" else table.get("root"))
    assert TableList([first, table]).get(case.key) == "earlier"
    if case.missing is not None:
        assert TableList([table, later]).get(case.missing) == "later"
    with pytest.raises(TableRetry):
        TableList([open_table("fail:x"), table]).get(case.key)
    # a partial key (a derived form of an address) skips pattern tables
    got = TableList([table]).get(case.key, partial=True)
    assert (got is None) == case.pattern


def test_environ_reads_the_live_environment():
    table = open_table("environ:x")
    os.environ["hato_later_var"] = "v"
    try:
        assert table.get("hato_later_var") == "v"
        assert table.get("HATO_LATER_VAR") == "v"  # folded to lower case first
    finally:
        del os.environ["hato_later_var"]

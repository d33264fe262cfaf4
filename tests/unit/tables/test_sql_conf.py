"""The sql_table configuration file and Postfix's %-expansion rules
(hato.tables.sqlconf), without a database."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from hato.tables import registry
from hato.tables.base import Table, TableError, TableRetry
from hato.tables.sqlconf import DomainFilter, Expander, SqlConfig
from hato.tables.sqlite import sqlite_quote

# -- the file ----------------------------------------------------------------------


def parse(text: str) -> SqlConfig:
    return SqlConfig.parse(text, "/etc/postfix/x.cf", "sqlite")


def test_main_cf_syntax() -> None:
    cf = parse("# comment\n"
               "dbpath = /var/db/x.db\n"
               "query = SELECT a\n"
               "   FROM t   \n"
               "  # a comment inside does not end the line\n"
               "    WHERE k='%s'\n"
               "\n"
               "dbpath=/var/db/y.db\n")
    assert cf.values["dbpath"] == "/var/db/y.db"  # the last one wins
    assert cf.lines["dbpath"] == 8
    assert cf.values["query"] == "SELECT a FROM t WHERE k='%s'"
    assert cf.get_str("missing", "dflt") == "dflt"
    assert cf.get_str("missing", None) is None


def test_no_dollar_expansion() -> None:
    cf = parse("password = pa$$word\nquery = SELECT '$x'\n")
    assert cf.values["password"] == "pa$$word"


def test_syntax_error_names_file_and_line() -> None:
    with pytest.raises(TableError) as info:
        parse("dbpath = x\nthis is not a parameter\n")
    assert info.value.path == "/etc/postfix/x.cf" and info.value.line == 2
    assert "missing '='" in str(info.value)


def test_bad_numbers() -> None:
    cf = parse("expansion_limit = 2x\nretry_interval = 0\nbig = 99999999999\n")
    with pytest.raises(TableError, match="bad numerical configuration: expansion_limit = 2x") as info:
        cf.get_int("expansion_limit", 0)
    assert info.value.line == 1
    with pytest.raises(TableError, match="invalid retry_interval parameter value 0 < 1"):
        cf.get_int("retry_interval", 60, 1)
    with pytest.raises(TableError, match="bad numerical"):
        cf.get_int("big", 0)
    assert parse("n = -3\n").get_int("n", 0) == -3


def test_string_length() -> None:
    with pytest.raises(TableError, match="bad string length 0 < 1: result_format = "):
        parse("result_format =\n").get_str("result_format", "%s", 1)


def test_legacy_query() -> None:
    cf = parse("table = aliases\nselect_field = dest\nwhere_field = alias\n"
               "additional_conditions = AND active = 1\n")
    assert cf.query() == "SELECT dest FROM aliases WHERE alias='%s' AND active = 1"
    cf = parse("table = aliases\nselect_field = dest\nwhere_field = alias\n")
    assert cf.query() == "SELECT dest FROM aliases WHERE alias='%s' "
    # an empty query counts as unset, as in Postfix
    cf = parse("query =\nselect_function = lookup\n")
    assert cf.query(select_function=True) == "SELECT lookup('%s')"
    with pytest.raises(TableError, match="'table'"):
        cf.query()  # sqlite has no select_function
    with pytest.raises(TableError, match="'where_field'"):
        parse("table = t\nselect_field = f\n").query()


def test_main_cf_form_is_refused() -> None:
    with pytest.raises(TableError, match="not supported"):
        SqlConfig.read("mysqlsource", "pgsql")
    with pytest.raises(TableError, match="missing configuration file"):
        SqlConfig.read("", "sqlite")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TableError, match="No such file"):
        SqlConfig.read(str(tmp_path / "nope.cf"), "sqlite")


def test_table_open_errors_name_the_parameter(tmp_path: Path) -> None:
    cf = tmp_path / "bad.cf"
    cf.write_text("dbpath = /nonexistent\nquery = SELECT '%x'\n")
    with pytest.raises(TableError, match="invalid query template") as info:
        registry.open_table(f"sqlite:{cf}")
    assert info.value.line == 2
    cf.write_text("dbpath = /nonexistent\nquery = SELECT 1\nresult_format = 100%\n")
    with pytest.raises(TableError, match="invalid result template") as info:
        registry.open_table(f"sqlite:{cf}")
    assert info.value.line == 3
    cf.write_text("query = SELECT 1\n")
    with pytest.raises(TableError, match="bad string length 0 < 1: dbpath"):
        registry.open_table(f"sqlite:{cf}")


# -- the expansion -------------------------------------------------------------------------


def query(template: str, key: str, quote=None, result_format: str = "%s") -> str | None:
    ex = Expander("t")
    pieces = ex.parse(template, True)
    ex.parse(result_format, False)
    return ex.expand(pieces, key, None, quote)


@pytest.mark.parametrize("template, key, want", [
    ("%s", "User@Example.COM", "User@Example.COM"),
    ("%s", "", None),  # an empty key is never looked up
    ("%u", "user@example.com", "user"),
    ("%u", "user", "user"),  # no domain: the whole key
    ("%u", "@example.com", None),  # empty local part
    ("%u", "user@", "user"),
    ("%u", "a@b@example.com", "a@b"),  # the last @ splits
    ("%d", "user@example.com", "example.com"),
    ("%d", "user", None),
    ("%d", "user@", None),
    ("%d", "@example.com", "example.com"),
    ("%u|%d", "@example.com", None),
    ("%S %U %D", "u@d.e", "u@d.e u d.e"),
    ("%1", "u@mail.example.com", "com"),
    ("%3.%2.%1", "u@mail.example.com", "mail.example.com"),
    ("%4", "u@mail.example.com", None),  # too few labels
    ("%3", "u@a..example.com", "a"),  # empty labels are not counted
    ("%3", "u@.example.com.", None),
    ("%1", "example.com", None),  # no @: no domain
    ("100%% %s", "k", "100% k"),
    # a literal run that reads like a substitution stays literal (the
    # fuzzer's find: "%%2" crashed on a key without labels)
    ("%%2", "k", "%2"),
    ("%%s", "k", "%s"),
    ("%%1%1", "u@example.com", "%1com"),
    ("%s", "o'brien", "o'brien"),
])
def test_query_expansion(template: str, key: str, want: str | None) -> None:
    assert query(template, key) == want


def test_result_format_flags_restrict_the_query() -> None:
    # %D in the result format: keys without a domain are not even queried
    assert query("%s", "user", result_format="%D") is None
    assert query("%s", "user@x", result_format="%D") == "user@x"
    assert query("%s", "@x", result_format="%U") is None
    # value parts (%u %d) in the result format do not restrict the key
    assert query("%s", "user", result_format="%u@%d") == "user"


def test_quoting_applies_to_every_substitution() -> None:
    assert query("'%s' '%u' '%d' '%1'", "o'b@x'y", sqlite_quote) == "'o''b@x''y' 'o''b' 'x''y' 'x''y'"


def result(fmt: str, value: str | None, key: str) -> str | None:
    ex = Expander("t")
    ex.parse("%s", True)
    pieces = ex.parse(fmt, False)
    return ex.expand(pieces, value, key)


@pytest.mark.parametrize("fmt, value, key, want", [
    ("%s", "v", "k", "v"),
    ("%s", None, "k", None),  # NULL
    ("%s", "", "k", None),  # empty result: skipped
    ("smtp:[%s]", "mx.example.com", "k", "smtp:[mx.example.com]"),
    ("%u", "joe@example.com", "k", "joe"),
    ("%u", "joe", "k", "joe"),
    ("%u", "@example.com", "k", None),
    ("%d", "joe@example.com", "k", "example.com"),
    ("%d", "joe", "k", None),
    ("%S/%U/%D/%2", "v", "u@a.b", "u@a.b/u/a.b/a"),
    ("%U", "v", "plain", "plain"),
    ("%D", "v", "plain", None),
    ("%%%s%%", "v", "k", "%v%"),
])
def test_result_expansion(fmt: str, value: str | None, key: str, want: str | None) -> None:
    assert result(fmt, value, key) == want


@pytest.mark.parametrize("bad", ["%", "abc%", "%x", "%0", "%a", "%U%"])
def test_invalid_templates(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid query template"):
        Expander("t").parse(bad, True)


# -- the domain filter ---------------------------------------------------------------------


class _SetTable(Table):
    type_name = "testset"
    members: ClassVar[set[str]] = {"listed.example"}
    broken = False

    def get(self, key: str) -> str | None:
        if _SetTable.broken:
            raise TableRetry(self.name, "down")
        return "yes" if key in self.members else None


def test_domain_filter(tmp_path: Path) -> None:
    registry.register("testset", _SetTable)
    listfile = tmp_path / "domains"
    listfile.write_text("# listed domains\nfile.example\n  other.example\n!neg.file.example\n")
    cf = parse("domain = x")
    f = DomainFilter(f"!bad.example.com, Example.COM {listfile} testset:whatever "
                     f"!{tmp_path / 'domains'}", cf)
    assert f.match("example.com") and f.match("EXAMPLE.com")
    assert not f.match("bad.example.com")
    assert not f.match("sub.example.com")  # no parent-domain matching
    assert f.match("file.example") and f.match("other.example")
    assert not f.match("neg.file.example")
    assert f.match("listed.example")
    assert not f.match("unlisted.example")
    _SetTable.broken = True
    try:
        with pytest.raises(TableRetry):
            f.match("unlisted.example")
    finally:
        _SetTable.broken = False


def test_domain_file_lines_end_at_newline_only(tmp_path: Path) -> None:
    # readllines(): \n ends a line, C's isspace() trims it and starts a
    # continuation; \x1c and \x85 are neither (Python's splitlines() and
    # strip() take both), \r is a blank inside the line.
    listfile = tmp_path / "domains"
    listfile.write_bytes("a.example\x1cb.example\n c.example\r\nd.example\x85\n"
                         .encode())
    f = DomainFilter(str(listfile), parse("domain = x"))
    assert f.match("a.example\x1cb.example") and f.match("c.example")
    assert not f.match("a.example") and not f.match("b.example")
    assert f.match("d.example\x85")


def test_domain_filter_errors(tmp_path: Path) -> None:
    cf = parse("domain = x")
    with pytest.raises(TableError, match="open file"):
        DomainFilter(str(tmp_path / "missing"), cf)
    with pytest.raises(TableError, match="no pattern after"):
        DomainFilter("example.com, !", cf)
    with pytest.raises(TableError, match="nosuchtype"):
        DomainFilter("nosuchtype:/x", cf)

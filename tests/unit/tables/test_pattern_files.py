"""regexp:, pcre: and cidr: tables: file syntax, matching, warnings, errors.

The expected answers here were checked against Debian's Postfix 3.7
``postmap -q``; tests/differential/test_tables_pattern.py asks Postfix
itself on generated tables.
"""

from __future__ import annotations

import logging
import os

import pytest

from hato.tables.base import OpenFlags, TableError, TableRetry
from hato.tables.cidr import CidrTable, parse_network
from hato.tables.patternfile import Report, logical_lines, mac_parse, prescan
from hato.tables.pcre import PcreTable
from hato.tables.regexp import RegexpTable
from hato.tables.registry import open_table


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def where(table):
    """The warnings as (line, message) pairs."""
    return [(w.line, w.message) for w in table.warnings]


# -- logical lines and $n syntax ---------------------------------------------------------


def test_logical_lines_continuations_comments_and_numbers():
    report = Report("regexp", "f")
    data = b"/a/ one\n  two\n# note\n\n  three\n/b/ x\n\t# indented comment\n  /c/ y\n"
    assert list(logical_lines(data, report)) == [(1, b"/a/ one  two  three"),
                                                 (6, b"/b/ x  /c/ y")]
    assert report.warnings == []


def test_logical_line_starting_with_whitespace_is_dropped_with_warning(caplog):
    report = Report("regexp", "f")
    with caplog.at_level(logging.WARNING, "hato.tables"):
        assert list(logical_lines(b"  /a/ x\n   more\n/b/ y", report)) == [(3, b"/b/ y")]
    assert "f: logical line must not start with whitespace: \"  /a/ x   more\"" in caplog.text
    assert report.warnings[0].line == 1


def test_nul_ends_the_line_as_in_c():
    report = Report("regexp", "f")
    assert list(logical_lines(b"/c/ x\0y\n", report)) == [(1, b"/c/ x")]


def test_mac_parse_forms():
    assert list(mac_parse(b"a$1-${2}c$(3)$$d")) == [
        (0, b"a"), (1, b"1"), (0, b"-"), (1, b"2"), (0, b"c"), (1, b"3"), (0, b"$d")]
    assert list(mac_parse(b"$1b")) == [(1, b"1b")]  # a name runs on: Postfix skips the rule
    with pytest.raises(ValueError, match="truncated macro reference"):
        list(mac_parse(b"${1"))
    with pytest.raises(ValueError, match="empty macro name"):
        list(mac_parse(b"x$"))


def test_prescan_rejects_bad_references():
    report = Report("regexp", "f")
    assert prescan(report, 3, b"$ab") is None
    assert [w.message for w in report.warnings] == [
        'non-numeric replacement index "ab"', "bad replacement syntax: skipping this rule"]
    assert prescan(Report("pcre", "f"), 1, b"${0}") is None
    assert prescan(report, 1, b"x$$y") == (b"x$y", 0)
    assert prescan(report, 1, b"<${01}>") == ((b"<", 1, b">"), 1)


# -- regexp ---------------------------------------------------------------------------------


def test_regexp_posix_leftmost_longest(tmp_path):
    t = RegexpTable(write(tmp_path, "r", "/^(a|ab)(c|bcd)?/ [$1][$2]\n"))
    assert t.get("abc") == "[ab][c]"  # Perl-style engines (and Python's re) say [a][]
    assert t.get("abcd") == "[a][bcd]"  # the longest overall match wins
    assert t.get("ab9") == "[ab][]"  # an unmatched group expands to nothing
    assert t.get("xyz") is None


def test_regexp_case_and_flags(tmp_path):
    t = RegexpTable(write(tmp_path, "r", "/^ABC$/i upper\n/^abc$/ any\n/^(x)\\(y\\)$/x basic $1\n"))
    assert t.get("ABC") == "upper"  # 'i' makes it case-sensitive
    assert t.get("aBc") == "any"  # the default is case-insensitive
    # 'x' turns off REG_EXTENDED: \( \) group, ( ) are literal
    assert t.get("(x)y") == "basic y"


def test_regexp_posix_classes_and_c_locale(tmp_path):
    t = RegexpTable(write(tmp_path, "r", "/^[[:alpha:]]+$/ alpha\n/^.$/ one\n/^..$/ two\n"))
    assert t.get("Hello") == "alpha"
    assert t.get("é") == "two"  # bytes, as Postfix in the C locale
    assert t.get("1") == "one"


def test_regexp_second_pattern_if_endif_and_negation(tmp_path):
    text = ("/q/!/z/ q-not-z\n"
            "if /^x/\n/y/ xy\nif !/w/\n/k/ xk-not-w\nendif\nendif\n"
            "!/@/ no-at\n")
    t = RegexpTable(write(tmp_path, "r", text))
    assert t.get("q") == "q-not-z"
    assert t.get("qz") == "no-at"
    assert t.get("xy") == "xy"
    assert t.get("xk") == "xk-not-w"
    assert t.get("xkw") == "no-at"
    assert t.get("a@b") is None


def test_regexp_trailing_backslash_closes_pattern(tmp_path):
    t = RegexpTable(write(tmp_path, "r", "/abc\\\n"))
    assert t.get("xabcx") == ""
    assert (1, "no replacement text: using empty string") in where(t)


def test_regexp_warnings_name_file_and_line(tmp_path, caplog):
    text = ("/a(/ bad\n/b/q badflag\n/c/ $1\n!/e(x)/ $1\n/f\n"
            "if /k/ junk\n/k/ kk\nendif extra\nendif\nfoo\nIF /u/\n")
    path = write(tmp_path, "r", text)
    with caplog.at_level(logging.WARNING, "hato.tables"):
        t = RegexpTable(path)
    assert where(t) == [
        (1, "Unmatched ( or \\("),
        (2, 'unknown regexp option "q": skipping this rule'),
        (3, 'out of range replacement index "1": skipping this rule'),
        (4, "$number found in negative match replacement text: skipping this rule"),
        (5, 'no closing regexp delimiter "/": skipping this rule'),
        (6, 'ignoring extra text after IF statement: "junk"'),
        (6, "do not prepend whitespace to statements between IF and ENDIF"),
        (8, "ignoring extra text after ENDIF"),
        (9, "ignoring ENDIF without matching IF"),
        (10, "ignoring unrecognized request"),
        (11, "IF has no matching ENDIF"),
    ]
    assert f"regexp map {path}, line 1: Unmatched ( or \\(" in caplog.text
    assert str(t.warnings[0]) == f"{path}, line 1: Unmatched ( or \\("
    assert t.get("k") == "kk"  # the good rules still work
    with pytest.raises(TableError) as err:
        RegexpTable(path, strict=True)
    assert err.value.path == path and err.value.line == 1


def test_unterminated_if_skips_the_rest(tmp_path):
    t = RegexpTable(write(tmp_path, "r", "/a/ A\nif /^x/\n/y/ XY\n"))
    assert where(t) == [(2, "IF has no matching ENDIF")]
    assert t.get("xy") == "XY"
    assert t.get("y") is None
    assert t.get("a") == "A"


def test_missing_file_is_a_table_error(tmp_path):
    with pytest.raises(TableError, match="open .*nope: No such file or directory"):
        open_table(f"regexp:{tmp_path}/nope")
    with pytest.raises(TableError, match="open .*nope"):
        open_table(f"cidr:{tmp_path}/nope")


def test_refresh_rereads_a_changed_file(tmp_path):
    path = write(tmp_path, "r", "/a/ one\n")
    t = RegexpTable(path)
    assert not t.refresh()
    with open(path, "w") as fh:
        fh.write("/a/ two, now\n")
    os.utime(path, ns=(1, 1))
    assert t.refresh()
    assert t.get("a") == "two, now"


# -- pcre -------------------------------------------------------------------------------------


def test_pcre_syntax_python_re_lacks(tmp_path):
    text = ("/^\\Qa.b\\E$/ quoted\n/^[[:alpha:]]+$/ alpha\n/^(?-i)XyZ$/ cs\n"
            "/^(a|ab)(c|bcd)?/ [$1][$2]\n")
    t = PcreTable(write(tmp_path, "p", text))
    assert t.get("a.b") == "quoted"
    assert t.get("aXb") == "alpha"
    assert t.get("XyZ") == "alpha"
    t = PcreTable(write(tmp_path, "p2", "/^(?-i)XyZ$/ cs\n/^(a|ab)(c|bcd)?/ [$1][$2]\n"))
    assert t.get("XyZ") == "cs"
    assert t.get("xyz") is None
    assert t.get("abc") == "[a][]"  # Perl semantics: the first alternative wins
    assert t.get("abcd") == "[a][bcd]"


def test_pcre_flags(tmp_path):
    text = ("/^I$/i cs\n/^j.k$/s nodotall\n/^L/A anch\n/^m$/E eonly\n/n(a+)/U [$1]\n"
            "/^o # comment\n /x ext\n/^c$/X xflag\n")
    path = write(tmp_path, "p", text)
    t = PcreTable(path)
    assert t.get("I") == "cs" and t.get("i") is None
    assert t.get("j\nk") is None  # 's' turns DOTALL off
    assert t.get("L") == "anch"
    assert t.get("naaa") == "[a]"
    assert t.get("o") == "ext"
    assert t.get("c") == "xflag"
    assert (8, 'ignoring obsolete regexp option "X"') in where(t)


def test_pcre_invalid_regex_and_unsupported_syntax(tmp_path):
    t = PcreTable(write(tmp_path, "p", "/a(/ bad\n/h/!/z/ neg2\n/ok/ fine\n/f/ ${0}\n"))
    assert where(t) == [
        (1, "error in regex at offset 2: missing closing parenthesis"),
        (2, 'unknown regexp option "!": skipping this rule'),
        (4, 'out of range replacement index "0"'),
        (4, "bad replacement syntax: skipping this rule"),
    ]
    assert t.get("ok") == "fine"
    with pytest.raises(TableError) as err:
        PcreTable(t.spec, strict=True)
    assert err.value.line == 1 and "missing closing parenthesis" in str(err.value)


def test_pcre_unset_groups_and_named_groups(tmp_path):
    t = PcreTable(write(tmp_path, "p", "/g(x)|g(y)/ [$1][$2]\n/(?<n>e)/ named $1\n"))
    assert t.get("gy") == "[][y]"
    assert t.get("e") == "named e"


@pytest.mark.parametrize("cls", [RegexpTable, PcreTable])
def test_binary_garbage_warns_never_crashes(tmp_path, cls):
    import random
    rng = random.Random(7)
    data = bytes(rng.randrange(256) for _ in range(5000))
    t = cls(write(tmp_path, "g", data))
    assert t.warnings and all(w.path and w.line for w in t.warnings)
    for key in ("a", "", "1.2.3.4", "x" * 100):
        try:
            t.get(key)
        except TableRetry:
            pass  # a rule that yields bytes that are not UTF-8 in UTF-8 mode


def test_non_utf8_result_is_a_temporary_failure_in_utf8_mode(tmp_path):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Utf8(OpenFlags):
        utf8: bool = True

    path = write(tmp_path, "r", "/^(.)/ [$1]\n")
    assert RegexpTable(path).get("é") == "[\udcc3]"  # surrogate-escaped byte
    with pytest.raises(TableRetry, match="non-UTF-8 value"):
        RegexpTable(path, Utf8()).get("é")


# -- cidr -------------------------------------------------------------------------------------


def test_cidr_first_match_ipv4_ipv6_and_brackets(tmp_path):
    text = ("10.0.0.0/8 ten\n[::1]/128 v6one\n[192.168.0.0/16] br\n"
            "2001:db8::/32 doc\n1.2.3.4 single\n0.0.0.0/0 any4\n")
    t = CidrTable(write(tmp_path, "c", text))
    assert t.get("10.1.2.3") == "ten"
    assert t.get("::1") == "v6one"
    assert t.get("192.168.7.7") == "br"
    assert t.get("2001:DB8::5") == "doc"
    assert t.get("1.2.3.4") == "single"
    assert t.get("8.8.8.8") == "any4"
    assert t.get("::ffff:1.2.3.4") is None  # an IPv6 key
    assert t.get("01.2.3.4") is None  # not an address for inet_pton
    assert t.get("[1.2.3.4]") is None
    assert t.get("not an address") is None


def test_cidr_if_endif_and_negation(tmp_path):
    text = ("if 192.168.0.0/16\n192.168.1.0/24 inner\nendif\n"
            "!192.168.0.0/16 notlocal\n"
            "IF !10.0.0.0/8\nif ! 8.0.0.0/8\n7.0.0.0/8 seven\nEndIf\nendif\n")
    t = CidrTable(write(tmp_path, "c", text))
    assert t.get("192.168.1.5") == "inner"
    assert t.get("192.168.2.5") is None
    assert t.get("8.8.8.8") == "notlocal"
    assert t.get("::1") is None  # negation does not cross address families
    assert t.warnings == []


def test_cidr_bad_rules_are_skipped_with_postfix_warnings(tmp_path, caplog):
    text = ("10.0.0.0/33 bad\n10.0.0.1/8 odd\n1.2.3.4\nfoo bar\n1.2.3.0/ x\n"
            "[1.2.6.0/24 x\n[1.2.7.0]x y\nendif\nif 5.0.0.0/8\n0.0.0.0/0 all\n")
    path = write(tmp_path, "c", text)
    with caplog.at_level(logging.WARNING, "hato.tables"):
        t = CidrTable(path)
    assert where(t) == [
        (1, 'bad mask length in "10.0.0.0/33": skipping this rule'),
        (2, ('non-null host address bits in "10.0.0.1/8", perhaps you should use '
             '"10.0.0.0/8" instead: skipping this rule')),
        (3, "no lookup result: skipping this rule"),
        (4, 'bad address pattern: "foo": skipping this rule'),
        (5, 'bad mask value in "1.2.3.0/": skipping this rule'),
        (6, 'missing \']\' character after "[1.2.6.0/24": skipping this rule'),
        (7, 'garbage after "[1.2.7.0]": skipping this rule'),
        (8, "ENDIF without IF: skipping this rule"),
        (9, "IF has no matching ENDIF"),
    ]
    assert f"cidr map {path}, line 1: bad mask length in \"10.0.0.0/33\"" in caplog.text
    assert t.get("10.1.1.1") is None
    assert t.get("5.1.1.1") == "all"
    with pytest.raises(TableError) as err:
        CidrTable(path, strict=True)
    assert (err.value.path, err.value.line) == (path, 1)


def test_cidr_binary_garbage(tmp_path):
    import random
    rng = random.Random(3)
    t = CidrTable(write(tmp_path, "g", bytes(rng.randrange(256) for _ in range(4000))))
    assert t.warnings and all(w.line for w in t.warnings)
    assert t.get("1.2.3.4") is None


def test_cidr_fast_index_agrees_with_rule_walk(tmp_path):
    import random
    rng = random.Random(11)
    lines = []
    for i in range(300):
        length = rng.choice([0, 8, 12, 16, 20, 24, 28, 32])
        net = rng.getrandbits(32) & (((1 << 32) - 1) ^ ((1 << (32 - length)) - 1))
        lines.append(f"{'.'.join(str(net >> s & 255) for s in (24, 16, 8, 0))}/{length} v{i}")
    t = CidrTable(write(tmp_path, "c", "\n".join(lines) + "\n"))
    assert t._fast is not None
    keys = [".".join(str(rng.randrange(256)) for _ in range(4)) for _ in range(2000)]
    fast = [t.get(k) for k in keys]
    t._fast = None
    assert [t.get(k) for k in keys] == fast


@pytest.mark.parametrize("pattern,expect", [
    ("10.0.0.0/8", (2, 0x0A000000, 8)),
    ("[::1]/128", (10, 1, 128)),
    ("[10.1.0.0/16]", (2, 0x0A010000, 16)),
    ("1.2.3.4", (2, 0x01020304, 32)),
])
def test_parse_network(pattern, expect):
    import socket
    family, net, length = parse_network(pattern)
    assert (int(family), net, length) == (int(expect[0] and
                                              (socket.AF_INET if expect[0] == 2
                                               else socket.AF_INET6)), expect[1], expect[2])


# -- combined patterns (the speed-up) give the answers of the rule-by-rule walk ----------


@pytest.mark.parametrize("cls,pcre", [(RegexpTable, False), (PcreTable, True)])
@pytest.mark.parametrize("seed", range(6))
def test_combined_patterns_agree_with_rule_walk(tmp_path, cls, pcre, seed):
    import random

    from tests.differential.test_tables_pattern import ReGen, regex_keys
    rng = random.Random(f"combined{seed}")
    gen = ReGen(rng, pcre=pcre)
    # long runs of plain rules, some with the same flags
    text = "".join(f"/{gen.pattern()[0]}/ r{i} {'$1' if i % 3 else ''}\n" for i in range(60))
    text += gen.table()
    t = cls(write(tmp_path, "t", text))
    assert t.runs, "no run of plain rules: the test would prove nothing"
    keys = regex_keys(rng, 1500)
    fast = [t.get(k) for k in keys]
    t.runs = {}
    assert [t.get(k) for k in keys] == fast


def test_inline_rules_form(tmp_path):
    """Postfix 3.7: type:{ {rule}, {rule} }; "line N" is the N-th rule."""
    t = open_table("regexp:{ {/a/ A}, {/b(/ B}, {/c/ C}, {/d{2}/ D} }")
    assert [t.get(k) for k in ("a", "b", "c", "dd")] == ["A", None, "C", "D"]
    assert where(t) == [(2, "Unmatched ( or \\(")]
    assert str(t.warnings[0]).startswith("{ {/a/ A}, {/b(/ B}")
    assert open_table("pcre:{ {/a/ A} {/q/ {Q}} }").get("q") == "{Q}"
    assert open_table("cidr:{ {1.2.3.0/24 x}, {bad} }").get("1.2.3.4") == "x"
    assert open_table("regexp:{ {if /x/}, {/y/ XY}, {endif} }").get("xy") == "XY"
    assert open_table("regexp:{  }").get("a") is None
    for spec, message in [("regexp:{/a/ x}", "regexp map: no '{' at start of text in \"/a/\""),
                          ("regexp:{ {/a/ A}", "regexp map: missing '}' in \"{ {/a/ A}\""),
                          ("pcre:{ {/a/ A}x }", "pcre map: syntax error after '}' in "
                                                "\"{/a/ A}x\"")]:
        with pytest.raises(TableError) as err:
            open_table(spec)
        assert str(err.value) == message
    assert not open_table("regexp:{ {/a/ A} }").refresh()

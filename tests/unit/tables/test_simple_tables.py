"""inline:, static:, fail:, environ:, unix:, unionmap:, pipemap:, proxy:.

Expected texts were checked against Debian's Postfix 3.7 ``postmap -q``.
"""

from __future__ import annotations

import grp
import pwd
from dataclasses import dataclass

import pytest

from hato.tables.base import OpenFlags, TableError, TableRetry
from hato.tables.registry import open_table
from hato.tables.simple import extpar, parse_inline, split_braced
from hato.tables.unix import group_line, passwd_line


@dataclass(frozen=True)
class Utf8(OpenFlags):
    utf8: bool = True


def test_inline_syntax_as_postfix_parses_it():
    spec = ('{a=1, B=2, { c = x y }, {d=}, e= , g=h=i, {  "sp ace"  =  v  w  }, '
            '{x={y}}, z={w}, {=6}, a=dup}')
    assert dict(parse_inline(spec)) == {
        "a": "dup", "B": "2", "c": "x y", "d": "", "e": "", "g": "h=i",
        '"sp ace"': "v  w", "x": "{y}", "z": "{w}", "": "6"}
    t = open_table("inline:" + spec)
    assert t.get("b") == "2" and t.get("B") == "2"
    assert t.get('"sp ace"') == "v  w"
    assert t.get("sp ace") is None  # the quotes are part of the key
    assert t.get("d") == ""  # found, with an empty value
    assert open_table("inline:{{a=1}}").get("a") == "1"
    assert open_table("inline:{a=1 b=2 , , c=3}").get("c") == "3"


@pytest.mark.parametrize("spec,message", [
    ("inline:{}", 'bad syntax: "inline:{}"; need "inline:{name=value...}"'),
    ("inline:a=1", 'bad syntax: "inline:a=1"; need "inline:{name=value...}"'),
    ("inline:{a=1}x", 'bad syntax: "inline:{a=1}x"'),
    ("inline:{ a=1 } ", "bad syntax"),
    ("inline:{a}", "missing '=' after attribute name: \"inline:{a}\""),
    ("inline:{ {a=1}x=2 }", "syntax error after '}' in \"{a=1}x=2\""),
    ("inline:{ a=1, { } }", "no key found; expected format: key = value"),
    ('inline:{a="x, y"}', "unbalanced '\"'"),
    ("inline:{ }", 'empty table: "inline:{ }"'),
    ("inline:", 'expecting "type:name" form instead of "inline:"'),
    ("static:{ x }}", "bad static:name syntax: syntax error after '}' in \"{ x }}\""),
    ("static:{a", "bad static:name syntax: missing '}' in \"{a\""),
    ("static:", 'expecting "type:name" form'),
    ("fail:", 'expecting "type:name" form'),
    ("environ:", 'expecting "type:name" form'),
    ("unix:foo", "unknown table: unix:foo"),
    ("unionmap:{}", 'bad syntax: "unionmap:{}"; need "unionmap:{type:name...}"'),
    ("pipemap:{inline:{a=b}, x}", 'bad syntax: "pipemap:{inline:{a=b}, x}"'),
    ("unionmap:inline:{a=1}", "bad syntax"),
    ("proxy:nosuchtype:x", "unsupported dictionary type: nosuchtype"),
])
def test_syntax_errors(spec, message):
    with pytest.raises(TableError) as err:
        open_table(spec)
    assert message in str(err.value)


def test_inline_unicode_folding_follows_smtputf8():
    ascii_only = open_table("inline:{Ü=7, Straße=s}")
    assert ascii_only.get("Ü") == "7" and ascii_only.get("ü") is None
    utf8 = open_table("inline:{Ü=7, Straße=s}", Utf8())
    assert utf8.get("ü") == "7" and utf8.get("Ü") == "7"
    assert utf8.get("STRASSE") == "s"  # full case folding: ß → ss


def test_static_forms():
    assert open_table("static:hello world").get("x") == "hello world"
    assert open_table("static:{ hello world }").get("x") == "hello world"
    assert open_table("static:{ {a b} }").get("x") == "{a b}"
    assert open_table("static:{}").get("x") == ""


def test_fail_always_retries():
    t = open_table("fail:db-down")
    for key in ("a", "", "x@y"):
        with pytest.raises(TableRetry):
            t.get(key)


def test_unix_lines_match_the_system_databases():
    root = pwd.getpwuid(0)
    t = open_table("unix:passwd.byname")
    assert t.get(root.pw_name) == (f"{root.pw_name}:{root.pw_passwd}:0:{root.pw_gid}:"
                                   f"{root.pw_gecos}:{root.pw_dir}:{root.pw_shell}")
    assert t.get("hato-no-such-user") is None
    assert t.get("a\0b") is None
    with_members = [g for g in grp.getgrall() if g.gr_mem]
    g = open_table("unix:group.byname")
    for entry in with_members[:3] + [grp.getgrgid(0)]:
        assert g.get(entry.gr_name) == (f"{entry.gr_name}:{entry.gr_passwd}:{entry.gr_gid}:"
                                        + ",".join(entry.gr_mem))
    assert passwd_line("hato-no-such-user") is None and group_line("hato-none") is None


def test_unionmap_joins_like_postfix():
    t = open_table("unionmap:{inline:{a=1, b=2}, static:x, inline:{a=3}}")
    assert t.get("a") == "1,x,3"
    assert t.get("b") == "2,x"
    assert open_table("unionmap:{inline:{a=}, inline:{a=}}").get("a") is None
    assert open_table("unionmap:{inline:{a=}, inline:{a=y}}").get("a") == "y"
    assert open_table("unionmap:{inline:{a=x}, inline:{a=}}").get("a") == "x,"


def test_pipemap_and_proxy():
    t = open_table("pipemap:{inline:{a=b}, inline:{b=c}}")
    assert t.get("a") == "c" and t.get("b") is None
    assert open_table("proxy:static:{ a b }").get("q") == "a b"
    assert open_table("proxy:inline:{A=1}").get("a") == "1"


def test_composite_matches_like_its_first_member(tmp_path):
    path = tmp_path / "p.pcre"
    path.write_text("/x/ y\n")
    assert open_table(f"unionmap:{{pcre:{path}, inline:{{a=1}}}}").pattern_table
    assert not open_table(f"unionmap:{{inline:{{a=1}}, pcre:{path}}}").pattern_table
    assert open_table(f"proxy:pcre:{path}").pattern_table


def test_helpers():
    assert split_braced("hash:/a, inline:{a=1, b=2}  cidr:/b,") == [
        "hash:/a", "inline:{a=1, b=2}", "cidr:/b"]
    assert extpar("{ a }") == ("a", None)
    assert extpar("{ a")[1] == "missing '}' in \"{ a\""

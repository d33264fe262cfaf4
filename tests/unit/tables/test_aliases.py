"""aliases(5) parsing and what postalias stores (expected values taken from
Debian's Postfix 3.7 postalias)."""

from __future__ import annotations

from hato.tables.aliases import externalize, internalize, parse_aliases, scan, signature_records

ALIASES = b"""\
# comment
Postmaster: root
root: Admin@Example.COM, "|/usr/bin/cmd arg", /var/log/file,
   :include:/etc/list
"a b": x
"Quoted\\"Name": y
webmaster : root
multi:\ta,
\tb,  c
nocolon value
:empty: z
"unterminated: x
joe:
user@dom: x
us%er: x
"e,f": g
a\\:b: c
\\|pipe: a
esc: \\"quoted, a\\\\b, "q\\"x", "a\\\\b"
ctl: a\tb
semi: a:b:c
cmt: b (comment here) c
lit: "x y"@example.com, x\\,y, [1.2.3.4], <foo@bar>, Joe <joe@x>
ops: a;b, a.b , @x:y@z
"""

EXPECTED = [
    (b"Postmaster", b"root"),
    (b"root", b'Admin@Example.COM, "|/usr/bin/cmd arg", /var/log/file, :include:/etc/list'),
    (b"a b", b"x"),
    (b'Quoted"Name', b"y"),
    (b"webmaster", b"root"),
    (b"multi", b"a, b, c"),
    (b"e,f", b"g"),
    (b"a:b", b"c"),
    (b"|pipe", b"a"),
    (b"esc", b'"\\"quoted", "a\\\\b", "q\\"x", "a\\\\b"'),
    (b"ctl", b"a b"),
    (b"semi", b"a:b:c"),
    (b"cmt", b"b (comment here) c"),
    (b"lit", b'"x y"@example.com, "x,y", [1.2.3.4], <foo@bar>, Joe <joe@x>'),
    (b"ops", b"a;b, a.b, @x:y@z"),
]


def test_parse_aliases_as_postalias():
    warnings: list[str] = []
    got = [(a.name, a.value) for a in parse_aliases(ALIASES, "al", warnings.append)]
    assert got == EXPECTED
    assert warnings == [
        "al, line 10: need name:value pair",
        "al, line 11: need name:value pair",
        "al, line 12: need name:value pair",
        "al, line 13: need name:value pair",
        "al, line 14: name must be local",
        "al, line 15: name must be local",
    ]


def test_line_numbers_are_first_line_of_logical_line():
    warnings: list[str] = []
    data = b"# c\n\nfoo\n  bar\n\n# x\nbaz\n  \n  qux\nnokey\n"
    assert list(parse_aliases(data, "f", warnings.append)) == []
    assert warnings == ["f, line 3: need name:value pair", "f, line 7: need name:value pair",
                        "f, line 10: need name:value pair"]


def test_utf8_mode_skips_non_utf8_lines():
    warnings: list[str] = []
    got = list(parse_aliases(b"a: \xff\xfe\nb\xc3\xa4: ok\n", "al", warnings.append, utf8=True))
    assert [(a.name, a.value) for a in got] == [("bä".encode(), b"ok")]
    assert warnings == ['al, line 1: non-UTF-8 input "a: ??" -- ignoring this line']


def test_tokens_round_trip():
    toks = scan(b'"a b" <x@y> (c) [1.2.3.4]')
    # no blank between an operator and the next token (Postfix: "<x@y>(c)")
    assert internalize(toks) == b"a b <x@y>(c) [1.2.3.4]"
    assert externalize(toks) == b'"a b" <x@y>(c) [1.2.3.4]'


def test_long_line_is_accepted():
    value = b", ".join(b"user%d" % i for i in range(15000))
    got = list(parse_aliases(b"big: " + value + b"\nsmall: x\n", "al", print))
    assert got[0].value == value
    assert got[1].name == b"small"


def test_signature():
    recs = signature_records("mail.example.com", now=1234567890)
    assert recs == [(b"@", b"@", True), (b"YP_LAST_MODIFIED", b"1234567890", False),
                    (b"YP_MASTER_NAME", b"mail.example.com", False)]
    assert signature_records("h", now=5)[1][1] == b"0000000005"

"""Addresses: quoting, the RFC 822 tokenizer/parser, splitting, host names.

Expected values come from Postfix's own test data (quote_822_local.ref,
tok822_parse's behaviour) and from RFC 5321/5322 examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.policy import address as A

# -- quote_822_local / unquote_822_local (Postfix's quote_822_local.ref) ------------------

@pytest.mark.parametrize("internal, external", [
    ("a@b@c@d", '"a@b@c"@d'),
    ("user@example.com", "user@example.com"),
    ("first.last@example.com", "first.last@example.com"),
    ("joe smith@example.com", '"joe smith"@example.com'),
    ("a..b@example.com", '"a..b"@example.com'),
    (".a@example.com", '".a"@example.com'),
    ("a.@example.com", '"a."@example.com'),
    ('a"b@example.com', '"a\\"b"@example.com'),
    ("a\\b@example.com", '"a\\\\b"@example.com'),
    ("", '""'),
    ("@example.com", '""@example.com'),
    ("user", "user"),
    ("@a,@b:user@c", "@a,@b:user@c"),
    ("@a,@b:us er@c", '@a,@b:"us er"@c'),
    ("jöe@example.com", "jöe@example.com"),  # 8-bit clean by default
])
def test_quote(internal, external):
    assert A.quote_822_local(internal) == external
    assert A.unquote_822_local(external) == internal


def test_quote_flags():
    # Postfix escapes byte by byte: each byte of the UTF-8 sequence.
    assert A.quote_822_local("jöe@x", eightbit_clean=False).encode(
        "utf-8", "surrogateescape") == b'"j\\\xc3\\\xb6e"@x'
    assert A.quote_822_local("a@b", bare_localpart=True) == '"a@b"'
    assert A.quote_822_local("a@b@c", expose_at=True) == "a@b@c"


@pytest.mark.parametrize("external, internal", [
    ('"a@b@c"@d', "a@b@c@d"),
    ('"a@b@c"', "a@b@c"),
    ('"a@b@c"@d@e', "a@b@c@d@e"),
    ('"a\\"b"@x', 'a"b@x'),
    ('a\\', "a"),
])
def test_unquote(external, internal):
    assert A.unquote_822_local(external) == internal


@given(st.text(alphabet=st.sampled_from('ab .@"\\%!:,<>()[]x\u00e9'), max_size=12),
       st.sampled_from(["example.com", "x", ""]))
def test_quote_round_trip(local, domain):
    """What quote_822_local makes, unquote_822_local undoes."""
    address = f"{local}@{domain}" if domain else local
    if address.startswith("@"):
        return  # a source route is left alone on purpose
    if "@" in local and not domain:
        return  # the last @ is taken as the domain separator
    assert A.unquote_822_local(A.quote_822_local(address)) == address


_ANY_CHAR = st.characters(codec="utf-8", exclude_categories=("Cs",))


@given(st.text(alphabet=st.one_of(st.sampled_from("ab.-+_!#$%&'*/=?^`{|}~@ \"\\()<>,;:[]"),
                                  _ANY_CHAR), max_size=10),
       st.booleans(), st.booleans())
def test_dot_string_shortcut_agrees_with_the_loop(local, eightbit_clean, expose_at):
    """The pattern for plain local parts never accepts what Postfix's loop
    refuses."""
    if A._PLAIN_DOT_STRING.fullmatch(local):
        assert A._is_822_dot_string_loop(local, eightbit_clean, expose_at)
    assert A._is_822_dot_string(local, eightbit_clean, expose_at) == \
        A._is_822_dot_string_loop(local, eightbit_clean, expose_at)


@given(st.text(alphabet=st.one_of(st.sampled_from('ab.@:,"\\ '), _ANY_CHAR), max_size=12))
def test_unquote_shortcut_agrees_with_the_loop(address):
    assert A.unquote_822_local(address) == A._unquote_loop(address)


# -- tok822 -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, external, addresses", [
    ("Joe <joe@example.com>", "Joe <joe@example.com>", ["joe@example.com"]),
    ('"Joe Q. Public" <joe@example.com>', '"Joe Q. Public" <joe@example.com>',
     ["joe@example.com"]),
    ("a@b, c@d", "a@b, c@d", ["a@b", "c@d"]),
    ("a b@c", "a, b@c", ["a", "b@c"]),  # a missing comma is added
    ("joe@example.com (Joe)", "joe@example.com (Joe)", ["joe@example.com"]),
    ("(Joe) joe@example.com", "joe@example.com (Joe)", ["joe@example.com"]),
    ("undisclosed-recipients:;", "undisclosed-recipients: ;", []),
    ("friends: a@b, c@d;", "friends: a@b, c@d;", ["a@b", "c@d"]),
    ('"joe smith"@example.com', '"joe smith"@example.com', ["joe smith@example.com"]),
    ("<@route.example:joe@example.com>", "<@route.example:joe@example.com>",
     ["@route.example:joe@example.com"]),
    ("user@[192.0.2.1]", "user@[192.0.2.1]", ["user@[192.0.2.1]"]),
    ("", "", []),
])
def test_parse(text, external, addresses):
    tree = A.parse(text)
    assert A.externalize(tree) == external
    assert A.parse_address_list(text) == addresses


def test_externalize_lines():
    tree = A.parse("a@b, c@d, Joe <e@f>")
    assert A.externalize(tree, lines=True) == "a@b,\nc@d,\nJoe <e@f>"


def test_scan_and_folded_whitespace():
    tree = A.parse("Joe\n\t<joe@example.com>,\r\n  ann@example.com")
    assert A.parse_address_list("Joe\n\t<joe@example.com>,\r\n ann@example.com") == [
        "joe@example.com", "ann@example.com"]
    assert A.externalize(tree) == "Joe <joe@example.com>, ann@example.com"


def test_token_limit_and_nul():
    assert A.parse_address_list("a@b, c@d, e@f", limit=3) == ["a@b"]
    assert A.parse_address_list("a@b\0, c@d") == ["a@b"]  # C strings end at NUL


@given(st.text(max_size=60))
def test_parse_never_crashes(text):
    tree = A.parse(text)
    A.externalize(tree)
    A.internalize(tree)
    A.externalize(tree, lines=True)


# -- pieces -------------------------------------------------------------------------------

def test_split():
    assert A.split_address("a@b@c") == ("a@b", "c")
    assert A.split_address("user") == ("user", "")
    assert A.split_external('"a@b"@c') == ('"a@b"', "c")
    assert A.split_external('"a\\"@b"@c') == ('"a\\"@b"', "c")
    assert A.split_external("x") == ("x", "")


def test_fold_domain_keeps_local_part():
    assert A.fold_domain("Joe.User@Example.COM") == "Joe.User@example.com"
    assert A.fold_domain("Joe") == "Joe"


def test_source_route_and_null():
    assert A.strip_source_route("@a,@b:user@c") == "user@c"
    assert A.strip_source_route("@a:") == "@a:"
    assert A.strip_source_route("user@c") == "user@c"
    assert A.is_null("") and not A.is_null("<>")


@pytest.mark.parametrize("name, ok", [
    ("example.com", True), ("a-b.example", True), ("a_b.example", True),
    ("-a.example", False), ("a-.example", False), ("a..b", False), ("a.b.", False),
    ("", False), ("123.456", False), ("1.2.3.4", False), ("x" * 64 + ".com", False),
    ("exämple.com", False), ("a b", False),
])
def test_valid_hostname(name, ok):
    assert A.valid_hostname(name) is ok


def test_valid_hostname_utf8():
    assert A.valid_hostname("exämple.com", utf8=True)


@pytest.mark.parametrize("literal, addr", [
    ("[192.0.2.1]", "192.0.2.1"), ("[IPv6:2001:db8::1]", "2001:db8::1"),
    ("[ipv6:::1]", "::1"), ("[2001:db8::1]", None), ("[300.1.1.1]", None),
    ("[0.1.2.3]", None), ("[0.0.0.0]", "0.0.0.0"), ("192.0.2.1", None), ("[x]", None),
])
def test_mailhost_literal(literal, addr):
    assert A.mailhost_addr(literal) == addr

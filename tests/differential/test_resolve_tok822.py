"""The address parser and quoting against Postfix's own library code.

Debian's Postfix ships its global library as ``libpostfix-global.so``;
through ctypes the same inputs go to Postfix's tok822_parse_limit(),
tok822_scan_limit(), tok822_externalize()/tok822_internalize(),
quote_822_local_flags(), unquote_822_local(), valid_hostname(),
valid_mailhost_literal(), is_header_buf() and mail_date(), and to hato's
ports in :mod:`hato.policy.address` and :mod:`hato.queue.cleanup`. Inputs
are the RFC 5322 corner cases below plus hypothesis-generated strings over
the characters that matter to the parser; every answer must be the same.
"""

from __future__ import annotations

import ctypes
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.policy import address as A
from hato.queue.cleanup_defs import mail_date
from hato.queue.mime import header_name_length

pytestmark = pytest.mark.differential

LIBDIR = "/usr/lib/postfix"


class _Tok(ctypes.Structure):
    pass


_Tok._fields_ = [("type", ctypes.c_int), ("vstr", ctypes.c_void_p),
                 ("prev", ctypes.POINTER(_Tok)), ("next", ctypes.POINTER(_Tok)),
                 ("head", ctypes.POINTER(_Tok)), ("tail", ctypes.POINTER(_Tok)),
                 ("owner", ctypes.POINTER(_Tok))]


class _VBuf(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_int), ("data", ctypes.c_char_p)]


class Postfix:
    """ctypes bindings to the few library functions compared here."""

    def __init__(self) -> None:
        for lib in ("libpostfix-util.so", "libpostfix-global.so"):
            if not os.path.exists(os.path.join(LIBDIR, lib)):
                pytest.fail(f"{LIBDIR}/{lib} is missing: install the Debian package postfix "
                            f"(tools/run-tests installs every tool the tests use)")
        self.util = ctypes.CDLL(os.path.join(LIBDIR, "libpostfix-util.so"),
                                mode=ctypes.RTLD_GLOBAL)
        self.glob = ctypes.CDLL(os.path.join(LIBDIR, "libpostfix-global.so"),
                                mode=ctypes.RTLD_GLOBAL)
        u, g = self.util, self.glob
        u.vstring_alloc.restype = ctypes.c_void_p
        u.vstring_alloc.argtypes = [ctypes.c_ssize_t]
        u.vstring_free.argtypes = [ctypes.c_void_p]
        u.valid_hostname.argtypes = [ctypes.c_char_p, ctypes.c_int]
        g.tok822_parse_limit.restype = ctypes.POINTER(_Tok)
        g.tok822_parse_limit.argtypes = [ctypes.c_char_p, ctypes.c_int]
        g.tok822_scan_limit.restype = ctypes.POINTER(_Tok)
        g.tok822_scan_limit.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        g.tok822_free_tree.argtypes = [ctypes.POINTER(_Tok)]
        for name in ("tok822_externalize", "tok822_internalize"):
            fn = getattr(g, name)
            fn.restype = ctypes.c_void_p
            fn.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Tok), ctypes.c_int]
        g.quote_822_local_flags.restype = ctypes.c_void_p
        g.quote_822_local_flags.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        g.unquote_822_local.restype = ctypes.c_void_p
        g.unquote_822_local.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        g.valid_mailhost_literal.argtypes = [ctypes.c_char_p, ctypes.c_int]
        g.is_header_buf.restype = ctypes.c_ssize_t
        g.is_header_buf.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]
        g.mail_date.restype = ctypes.c_char_p
        g.mail_date.argtypes = [ctypes.c_long]
        self.vp = u.vstring_alloc(256)

    def _text(self) -> str:
        data = ctypes.cast(self.vp, ctypes.POINTER(_VBuf)).contents.data or b""
        return data.decode("utf-8", "surrogateescape")

    def _conv(self, fn: str, tp, flags: int) -> str:
        getattr(self.glob, fn)(self.vp, tp, flags | 3)  # WIPE | TERM
        return self._text()

    def parse(self, text: str, limit: int = 0) -> dict:
        raw = text.encode("utf-8", "surrogateescape")
        tree = self.glob.tok822_parse_limit(raw, limit)
        out = {
            "ext": self._conv("tok822_externalize", tree, 0),
            "ext_lines": self._conv("tok822_externalize", tree, 4),
            "int": self._conv("tok822_internalize", tree, 0),
            "addr_ext": [], "addr_int": [],
        }
        node = tree
        while node:
            tok = node.contents
            if tok.type == A.ADDR:
                out["addr_ext"].append(self._conv("tok822_externalize", tok.head, 0))
                out["addr_int"].append(self._conv("tok822_internalize", tok.head, 0))
            node = tok.next
        if tree:
            self.glob.tok822_free_tree(tree)
        scanned = self.glob.tok822_scan_limit(raw, None, limit)
        out["scan"] = self._conv("tok822_externalize", scanned, 0)
        if scanned:
            self.glob.tok822_free_tree(scanned)
        return out

    def quote(self, text: str, flags: int) -> str:
        self.glob.quote_822_local_flags(self.vp, text.encode("utf-8", "surrogateescape"), flags)
        return self._text()

    def unquote(self, text: str) -> str:
        self.glob.unquote_822_local(self.vp, text.encode("utf-8", "surrogateescape"))
        return self._text()


@pytest.fixture(scope="module")
def postfix() -> Postfix:
    return Postfix()


def hato_parse(text: str, limit: int = 0) -> dict:
    tree = A.parse(text, limit)
    nodes = A.grep(tree, A.ADDR)
    return {"ext": A.externalize(tree), "ext_lines": A.externalize(tree, lines=True),
            "int": A.internalize(tree),
            "addr_ext": [A.externalize(n.head) for n in nodes],
            "addr_int": [A.internalize(n.head) for n in nodes],
            "scan": A.externalize(A.scan(text, limit))}


CASES = [
    "", "a", "a@b", "Joe <joe@example.com>", '"Joe Q. Public" <john.q.public@example.com>',
    "Mary Smith <mary@x.test>, jdoe@example.org, Who? <one@y.test>",
    "<boss@nil.test>, \"Giant; \\\"Big\\\" Box\" <sysservices@example.net>",
    "A Group:Ed Jones <c@a.test>,joe@where.test,John <jdoe@one.test>;",
    "Undisclosed recipients:;", "Pete(A nice \\) chap) <pete(his account)@silly.test(his host)>",
    "(Empty list)(start)Hidden recipients  :(nobody(that I know))  ;",
    "@a,@b:user@c", "<@a,@b:user@c>", "user@[192.0.2.1]", "user@[IPv6:2001:db8::1]",
    "a b c", "a,,b", ",", ";", ":", "<>", "<", ">", "a<b>c", "<a,b>", "<a, b>,", "x y <a b>",
    "g: a, b; h: c;", "a@b (c) . ; , h!i ; >", "\"unterminated", "(unterminated",
    "[unterminated", "\\", "a\\@b@c", "h!i", "j%k@l", "caf\u00e9@exampl\u00e9.com",
    "\udcff@x", "a\tb\r\nc", "a@b.", "a..b@c", ".a@b", "a.@b", "a@b@c",
]


@pytest.mark.parametrize("text", CASES)
def test_parse_cases(postfix, text):
    assert hato_parse(text) == postfix.parse(text)


_CHARS = st.sampled_from(list('ab .@,;:<>()[]"\\!%|\t') + ["\u00e9", "\n", "xy", "z.w"])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_CHARS, max_size=25).map("".join))
def test_parse_random(postfix, text):
    assert hato_parse(text) == postfix.parse(text)


def test_token_limit(postfix):
    text = "a@b, c@d, e@f, g@h"
    for limit in (1, 2, 3, 4, 5, 10):
        assert hato_parse(text, limit) == postfix.parse(text, limit)


QUOTE_CASES = ["a@b", "a@b@c@d", "joe smith@x", "", "@x", "@a,@b:us er@c", 'a"b@c', "a\\b@c",
               ".a@b", "a.@b", "a..b@c", "caf\u00e9@x", "a\rb@c", "a\x01b@c", "@a:", "user"]


@pytest.mark.parametrize("text", QUOTE_CASES)
def test_quote_cases(postfix, text):
    # QUOTE_FLAG_8BITCLEAN = 1, EXPOSE_AT = 2, BARE_LOCALPART = 8
    for flags, kw in ((0, {"eightbit_clean": False}), (1, {}),
                      (3, {"expose_at": True}), (9, {"bare_localpart": True})):
        assert A.quote_822_local(text, **kw) == postfix.quote(text, flags), flags
    assert A.unquote_822_local(text) == postfix.unquote(text)


@settings(max_examples=800, deadline=None)
@given(st.lists(st.sampled_from(list('ab.@ "\\:,') + ["\u00e9"]), max_size=14).map("".join))
def test_quote_random(postfix, text):
    assert A.quote_822_local(text) == postfix.quote(text, 1)
    assert A.quote_822_local(text, eightbit_clean=False) == postfix.quote(text, 0)
    assert A.unquote_822_local(text) == postfix.unquote(text)


HOSTS = ["example.com", "a-b.example", "a_b.example", "-a.example", "a-.example", "a..b", "a.b.",
         "", "123.456", "1.2.3.4", "x" * 63 + ".com", "x" * 64 + ".com",
         ".".join(["abcdefghi"] * 26), "a b", "ex\u00e4mple.com", "a", "1a", "a1.2"]


@pytest.mark.parametrize("name", HOSTS)
def test_valid_hostname(postfix, name):
    raw = name.encode()
    assert A.valid_hostname(name) == bool(postfix.util.valid_hostname(raw, 0))


@pytest.mark.parametrize("literal", [
    "[192.0.2.1]", "[IPv6:2001:db8::1]", "[ipv6:::1]", "[2001:db8::1]", "[300.1.1.1]",
    "[0.1.2.3]", "[0.0.0.0]", "[1.2.3]", "[x]", "[IPv6:1.2.3.4]", "[01.2.3.4]"])
def test_valid_mailhost_literal(postfix, literal):
    assert A.valid_mailhost_literal(literal) == bool(
        postfix.glob.valid_mailhost_literal(literal.encode(), 0))


@pytest.mark.parametrize("line", [b"Subject: x", b"Subject : x", b"Subject\t:x", b" Subject: x",
                                  b"Sub ject: x", b"X-\x7fBad: x", b"no colon", b":", b"a:",
                                  "Caf\u00e9: x".encode(), b"From x"])
def test_is_header(postfix, line):
    assert header_name_length(line) == postfix.glob.is_header_buf(line, len(line))


@pytest.mark.parametrize("zone", ["UTC", "Europe/Berlin", "America/St_Johns", "Asia/Kolkata"])
def test_mail_date(postfix, zone):
    saved = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        for when in (0, 1700000000, 1709629200, 1720000000, 2000000000):
            assert mail_date(when) == postfix.glob.mail_date(when).decode()
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()

"""Mail addresses as Postfix handles them: tokens, quoting, splitting.

Postfix keeps an address in two string forms. The *external* form is
RFC 5322 text as it appears in headers and SMTP (``"joe smith"@example.com``);
the *internal* form has the quotes removed (``joe smith@example.com``) and is
what queue files, lookup keys and logs use. This module converts between
them exactly as Postfix's ``quote_822_local.c`` does, and holds a port of
Postfix's RFC 822 tokenizer and parser (``tok822_parse.c``, ``tok822_tree.c``)
because address rewriting (:mod:`hato.policy.rewrite`), resolution
(:mod:`hato.policy.resolve`) and header rewriting in cleanup all work on its
token lists, and their results depend on its details: where blanks are put
back, what counts as an address in a header, how a group is recognised.

Text is ``str``; bytes that are not UTF-8 travel as surrogate escapes
(``bytes.decode("utf-8", "surrogateescape")``), as in the table layer, so
8-bit addresses and headers survive a round trip unchanged.

Other pieces: :func:`split_address` (local part and domain, split at the
last ``@``), :func:`strip_source_route` (``@a,@b:user@c`` → ``user@c``),
:func:`valid_hostname` and :func:`valid_mailhost_literal` (Postfix's checks
for a resolvable destination), :func:`parse_address_list` (``sendmail``'s
and ``sendmail -t``'s reading of an address list).
"""

from __future__ import annotations

import re

import ipaddress
from collections.abc import Iterator

from ..proto.hostname import valid_hostname

# -- token types (tok822.h) -------------------------------------------------------------
# Operators are their own character code (< 256), as in Postfix.
ATOM = 256
QSTRING = 257
COMMENT = 258
DOMLIT = 259
ADDR = 260
STARTGRP = 261
MINTOK = ATOM

#: RFC 822 specials, plus the %, ! and | operators Postfix recognises.
LEX_822_SPECIALS = '()<>@,;:\\".[]'
OPCHARS = "|%!" + LEX_822_SPECIALS
_SPACE_TAB_CR_LF = " \t\r\n"


def _iscntrl(ch: str) -> bool:
    o = ord(ch)
    return o < 32 or o == 127


def _is8bit(ch: str) -> bool:
    return ord(ch) > 127


class Tok:
    """One token of Postfix's doubly linked token trees (TOK822).

    ``value`` holds the text of atoms, quoted strings (unquoted),
    comments (with their parentheses) and domain literals (without the
    brackets). An ``ADDR`` node holds its tokens below ``head``/``tail``.
    ``owner`` is the node a token hangs below, which decides where
    :func:`externalize` puts blanks back, as in Postfix.
    """

    __slots__ = ("head", "next", "owner", "prev", "tail", "type", "value")

    def __init__(self, type: int, value: str | None = None):
        self.type = type
        self.value = (value or "") if type >= MINTOK else ""
        self.prev: Tok | None = None
        self.next: Tok | None = None
        self.head: Tok | None = None
        self.tail: Tok | None = None
        self.owner: Tok | None = None

    def __repr__(self) -> str:
        name = {ATOM: "atom", QSTRING: "qstring", COMMENT: "comment", DOMLIT: "domlit",
                ADDR: "addr", STARTGRP: "startgrp"}.get(self.type, repr(chr(self.type)))
        return f"<Tok {name} {self.value!r}>"

    def __iter__(self) -> Iterator[Tok]:
        """This token and the ones to its right."""
        tp: Tok | None = self
        while tp is not None:
            yield tp
            tp = tp.next


# -- tree operators (tok822_tree.c, tok822_find.c) --------------------------------------


def tok_append(t1: Tok, t2: Tok) -> Tok:
    """Insert the list *t2* after *t1*; returns the last token of *t2*."""
    nxt = t1.next
    t1.next = t2
    t2.prev = t1
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = nxt
    if nxt is not None:
        nxt.prev = t2
    return t2


def tok_prepend(t1: Tok, t2: Tok) -> Tok:
    """Insert the list *t2* before *t1*; returns the last token of *t2*."""
    prev = t1.prev
    if prev is not None:
        prev.next = t2
    t2.prev = prev
    t2.owner = t1.owner
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1.owner
    t2.next = t1
    t1.prev = t2
    return t2


def tok_cut_before(tp: Tok) -> Tok | None:
    prev = tp.prev
    if prev is not None:
        prev.next = None
        tp.prev = None
    return prev


def tok_cut_after(tp: Tok) -> Tok | None:
    nxt = tp.next
    if nxt is not None:
        nxt.prev = None
        tp.next = None
    return nxt


def tok_unlink(tp: Tok) -> Tok | None:
    prev, nxt = tp.prev, tp.next
    if prev is not None:
        prev.next = nxt
    if nxt is not None:
        nxt.prev = prev
    tp.prev = tp.next = None
    return prev


def tok_sub_append(t1: Tok, t2: Tok) -> Tok:
    """Append the list *t2* below *t1*."""
    if t1.head is not None:
        assert t1.tail is not None
        t1.tail = tok_append(t1.tail, t2)
        return t1.tail
    t1.head = t2
    t2.owner = t1
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1
    t1.tail = t2
    return t2


def tok_sub_prepend(t1: Tok, t2: Tok) -> Tok:
    """Prepend the list *t2* below *t1*."""
    if t1.head is not None:
        tp = tok_prepend(t1.head, t2)
        t1.head = t2
        return tp
    t1.head = t2
    t2.owner = t1
    while t2.next is not None:
        t2 = t2.next
        t2.owner = t1
    t1.tail = t2
    return t2


def tok_sub_keep_before(t1: Tok, t2: Tok) -> Tok | None:
    """Keep the tokens below *t1* left of *t2*; returns the cut-off tail."""
    tail = t1.tail
    t1.tail = tok_cut_before(t2)
    if t1.tail is None:
        t1.head = None
    return tail


def tok_sub_keep_after(t1: Tok, t2: Tok) -> Tok | None:
    """Keep the tokens below *t1* right of *t2*; returns the cut-off head."""
    head = t1.head
    t1.head = tok_cut_after(t2)
    if t1.head is None:
        t1.tail = None
    return head


def find_type(head: Tok | None, op: int) -> Tok | None:
    tp = head
    while tp is not None and tp.type != op:
        tp = tp.next
    return tp


def rfind_type(tail: Tok | None, op: int) -> Tok | None:
    tp = tail
    while tp is not None and tp.type != op:
        tp = tp.prev
    return tp


def grep(tree: Tok | None, type: int) -> list[Tok]:
    """The tokens of *type* in the list (not below it)."""
    return [tp for tp in (tree or ()) if tp.type == type]


def last(tp: Tok) -> Tok:
    while tp.next is not None:
        tp = tp.next
    return tp


# -- tokenizer and parser (tok822_parse.c) ----------------------------------------------


_BLANKS = str.maketrans("\t\r\n", "   ")
#: a run of characters that _collect() takes as they are
_ATOM_RUN = re.compile("[^\\\\" + re.escape(_SPACE_TAB_CR_LF + OPCHARS) + "]+")
_STOP_RUNS: dict[str, re.Pattern[str]] = {}
#: tok822_quote_atom(): an atom with one of these must be quoted
_QUOTE_ATOM = re.compile("[\\x00-\\x20\\x7f" + re.escape(OPCHARS) + "]")


def _collect(text: str, i: int, stop: str | None) -> tuple[str, int]:
    """COLLECT(): characters up to one in *stop* (None: a blank or an
    operator), a backslash quoting the next character; CR, LF and TAB
    become blanks."""
    if stop is None:
        run = _ATOM_RUN
    else:
        run = _STOP_RUNS.get(stop)
        if run is None:
            run = _STOP_RUNS[stop] = re.compile("[^\\\\" + re.escape(stop) + "]+")
    out: list[str] = []
    n = len(text)
    while i < n:
        m = run.match(text, i)
        if m is not None:
            out.append(m.group().translate(_BLANKS) if stop is not None else m.group())
            i = m.end()
            if i >= n:
                break
        if text[i] != "\\":
            break  # a stop character
        i += 1
        if i >= n:
            break
        c = text[i]
        out.append(" " if c in _SPACE_TAB_CR_LF else c)
        i += 1
    return "".join(out), i


def _comment(text: str, i: int) -> tuple[str, int]:
    """A comment in external form, nested parentheses and all."""
    out = ["("]
    level, n = 1, len(text)
    while i < n:
        c = text[i]
        out.append(c)
        i += 1
        if c == "(":
            level += 1
        elif c == ")":
            level -= 1
            if level == 0:
                break
        elif c == "\\":
            if i >= n:
                break
            out.append(text[i])
            i += 1
    return "".join(out), i


def scan(text: str, limit: int = 0) -> Tok | None:
    """tok822_scan(): the external string as a flat token list."""
    head: Tok | None = None
    tail: Tok | None = None
    count = 0
    nul = text.find("\0")  # C strings end at a NUL
    if nul >= 0:
        text = text[:nul]
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        i += 1
        if c in _SPACE_TAB_CR_LF:
            continue
        if c == "(":
            value, i = _comment(text, i)
            tp = Tok(COMMENT, value)
        elif c == "[":
            value, i = _collect(text, i, "]")
            if i < n:
                i += 1
            tp = Tok(DOMLIT, value)
        elif c == '"':
            value, i = _collect(text, i, '"')
            if i < n:
                i += 1
            tp = Tok(QSTRING, value)
        elif c != "\\" and c in OPCHARS:
            tp = Tok(ord(c))
        else:
            value, i = _collect(text, i - 1, None)
            tp = Tok(ATOM, value)
            # tok822_quote_atom(): an atom that needs quoting becomes a string.
            if _QUOTE_ATOM.search(value):
                tp.type = QSTRING
        if head is None:
            head = tail = tp
        else:
            assert tail is not None
            tail = tok_append(tail, tp)
        count += 1
        if limit > 0 and count >= limit:
            break
    return head


def scan_addr(text: str) -> Tok:
    """tok822_scan_addr(): one address as an ADDR node over its tokens."""
    tree = Tok(ADDR)
    tree.head = scan(text)
    tree.tail = last(tree.head) if tree.head is not None else None
    return tree


def _group(group_type: int, left: Tok, right: Tok, sync_type: int) -> Tok:
    """tok822_group(): put the tokens between *left* and *right* below a new
    node; optionally insert a resync token (a missing comma)."""
    first = left.next
    if left is not right and first is not right and first is not None:
        tok_cut_before(right)
        tok_cut_before(first)
        group = Tok(group_type)
        tok_sub_append(group, first)
        tok_append(left, group)
        tok_append(group, right)
        if sync_type:
            tok_append(left, Tok(sync_type))
    return left


_DO_WORD = 1
_DO_GROUP = 2


def parse(text: str, limit: int = 0) -> Tok | None:
    """tok822_parse(): an external address list as a token tree. Permissive:
    nothing it does not understand is thrown away, and missing commas
    between addresses are added."""
    first = scan(text, limit)
    if first is None:
        return None
    head = Tok(0)
    head.next = first
    first.prev = head
    tail = Tok(0)
    lst = last(first)
    lst.next = tail
    tail.prev = lst

    state = _DO_WORD
    right = tail
    tp = tail.prev
    assert tp is not None
    while tp.type:
        if tp.type == COMMENT:  # move the comment to the side
            prev = tok_unlink(tp)
            right = tok_prepend(right, tp)
            assert prev is not None
            tp = prev
            continue
        if tp.type == ord(";"):  # right side of a named group
            right = _group(ADDR, tp, right, ord(","))
            state = _DO_GROUP | _DO_WORD
        elif tp.type == ord(":") and state & _DO_GROUP:
            tp.type = STARTGRP
            _group(ADDR, tp, right, 0)
            while tp.type and tp.type != ord(","):
                tp = tp.prev  # type: ignore[assignment]
            right = tp
            continue
        elif tp.type == ord(">"):  # right side of a <route>
            right = _group(ADDR, tp, right, ord(","))
            while tp.type and tp.type != ord("<"):
                if tp.type == COMMENT:
                    prev = tok_unlink(tp)
                    right = tok_prepend(right, tp)
                    assert prev is not None
                    tp = prev
                    continue
                tp = tp.prev  # type: ignore[assignment]
            _group(ADDR, tp, right, 0)
            while tp.type and (tp.type > 0xFF or chr(tp.type) not in ">;,:"):
                tp = tp.prev  # type: ignore[assignment]
            right = tp
            state |= _DO_WORD
            continue
        elif tp.type in (ATOM, QSTRING, DOMLIT):
            if not state & _DO_WORD:
                nxt = _group(ADDR, tp, right, ord(",")).next
                assert nxt is not None
                right = nxt
            state &= ~_DO_WORD
        elif tp.type == ord(","):
            right = _group(ADDR, tp, right, 0)
            state |= _DO_WORD
        else:
            state |= _DO_WORD
        tp = tp.prev  # type: ignore[assignment]
    _group(ADDR, tp, right, 0)

    result = head.next if head.next is not tail else None
    assert head.next is not None
    tok_cut_before(head.next)
    tok_cut_before(tail)
    return result


# -- back to text ---------------------------------------------------------------------------


def _non_operator(tp: Tok) -> bool:
    return tp.type in (ATOM, QSTRING, COMMENT, DOMLIT, ADDR)


def _append_space(tp: Tok) -> bool:
    nxt = tp.next
    if nxt is None or tp.owner is not None:
        return False
    if tp.type == ord(",") or tp.type == STARTGRP or nxt.type == ord("<"):
        return True
    return _non_operator(tp) and _non_operator(nxt)


def internalize(tree: Tok | None, *, lines: bool = False) -> str:
    """tok822_internalize(): the tokens as text without quoting."""
    out: list[str] = []
    _internalize(out, tree, lines)
    return "".join(out)


def _internalize(out: list[str], tree: Tok | None, lines: bool) -> None:
    tp = tree
    while tp is not None:
        t = tp.type
        if t == ord(","):
            out.append(",")
            if lines:
                out.append("\n")
                tp = tp.next
                continue
        elif t == ADDR:
            _internalize(out, tp.head, False)
        elif t in (COMMENT, ATOM, QSTRING):
            out.append(tp.value)
        elif t == DOMLIT:
            out.append("[" + tp.value + "]")
        elif t == STARTGRP:
            out.append(":")
        else:
            out.append(chr(t))
        if _append_space(tp):
            out.append(" ")
        tp = tp.next


def _copy_quoted(text: str, quote_set: str) -> str:
    return "".join("\\" + c if c in quote_set else c for c in text)


def externalize(tree: Tok | None, *, lines: bool = False) -> str:
    """tok822_externalize(): the tokens as RFC 822 text, quoting where
    needed. With *lines*, a line break follows each comma (header
    folding, TOK822_STR_LINE)."""
    out: list[str] = []
    tp = tree
    while tp is not None:
        t = tp.type
        if t == ord(","):
            # Postfix 3.7: a comma is always followed by a blank (or a line
            # break), inside an address too.
            out.append(",\n" if lines else ", ")
            tp = tp.next
            continue
        if t == ADDR:
            out.append(quote_822_local(internalize(tp.head), eightbit_clean=True))
        elif t in (ATOM, COMMENT):
            out.append(tp.value)
        elif t == QSTRING:
            out.append('"' + _copy_quoted(tp.value, '"\\\r\n') + '"')
        elif t == DOMLIT:
            out.append("[" + _copy_quoted(tp.value, "\\\r\n") + "]")
        elif t == STARTGRP:
            out.append(":")
        else:
            out.append(chr(t))
        if _append_space(tp):
            out.append(" ")
        tp = tp.next
    return "".join(out)


# -- quoting (quote_822_local.c) ------------------------------------------------------------

_NOT_IN_DOT_STRING = '()<>,;:\\"[]'


#: the usual local part: dot-separated runs of characters that need no
#: quoting whatever the flags (what the loop below accepts, found at once)
_ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_DOT_STRING = re.compile(f"{_ATEXT}(?:\\.{_ATEXT})*")


def _is_822_dot_string(local: str, eightbit_clean: bool, expose_at: bool) -> bool:
    return bool(_PLAIN_DOT_STRING.fullmatch(local)) or \
        _is_822_dot_string_loop(local, eightbit_clean, expose_at)


def _is_822_dot_string_loop(local: str, eightbit_clean: bool, expose_at: bool) -> bool:
    if not local or local[0] == ".":
        return False
    for i, ch in enumerate(local):
        if ch == "\0":
            local = local[:i]
            break
        if ch == "." and local[i + 1:i + 2] == ".":
            return False
        if _is8bit(ch) and not eightbit_clean:
            return False
        if ch == " " or _iscntrl(ch):
            return False
        if ch in _NOT_IN_DOT_STRING or (ch == "@" and not expose_at):
            return False
    return not local.endswith(".")


def _make_822_quoted_string(local: str, eightbit_clean: bool) -> str:
    out = ['"']
    for ch in local:
        if ch == "\0":
            break
        if (_is8bit(ch) and not eightbit_clean) or ch in '"\\\r':
            out.append("\\")
        out.append(ch)
    out.append('"')
    return "".join(out)


def quote_822_local(address: str, *, eightbit_clean: bool = True, expose_at: bool = False,
                    bare_localpart: bool = False) -> str:
    """Postfix's quote_822_local_flags(): the external form of an internal
    address. The local part (before the last ``@``, after a source route)
    stays as is when it is a dot-string and is quoted otherwise; the domain
    is left alone. ``"" `` is the external form of the null address.
    Without *eightbit_clean*, each byte of a non-ASCII character is
    escaped, as Postfix does byte by byte."""
    if not eightbit_clean and not address.isascii():
        raw = address.encode("utf-8", "surrogateescape").decode("latin-1")
        quoted = _quote(raw, False, expose_at, bare_localpart)
        return quoted.encode("latin-1").decode("utf-8", "surrogateescape")
    return _quote(address, eightbit_clean, expose_at, bare_localpart)


def _quote(address: str, eightbit_clean: bool, expose_at: bool, bare_localpart: bool) -> str:
    start = 0
    if address.startswith("@"):
        colon = address.find(":")
        if colon >= 0:
            start = colon + 1
    end = -1 if bare_localpart else address.rfind("@", start)
    if end < 0:
        end = len(address)
    local = address[start:end]
    if _is_822_dot_string(local, eightbit_clean, expose_at):
        return address
    return address[:start] + _make_822_quoted_string(local, eightbit_clean) + address[end:]


def unquote_822_local(address: str) -> str:
    """Postfix's unquote_822_local(): the internal form of an external
    address. Quotes and backslashes are removed from the local part; a
    source route and the text after the last unquoted ``@`` stay as they
    are."""
    if '"' not in address and "\\" not in address:
        return address  # nothing quoted: the loop would copy it as it is
    return _unquote_loop(address)


def _unquote_loop(address: str) -> str:
    out: list[str] = []
    start = 0
    if address.startswith("@"):
        colon = address.find(":")
        if colon >= 0:
            start = colon + 1
            out.append(address[:start])
    in_quote = False
    bare_at_dst = -1
    bare_at_src = -1
    i, n = start, len(address)
    while i < n:
        ch = address[i]
        if ch == '"':
            in_quote = not in_quote
            i += 1
            continue
        if ch == "@":
            if not in_quote:
                bare_at_dst = len(out)
                bare_at_src = i
        elif ch == "\\":
            if i + 1 >= n:
                i += 1
                continue
            i += 1
            ch = address[i]
        out.append(ch)
        i += 1
    if bare_at_dst >= 0:
        del out[bare_at_dst:]
        out.append(address[bare_at_src:])
    return "".join(out)


# -- address pieces ----------------------------------------------------------------------


def log_form(address: str, external: bool = True) -> str:
    """An address as log lines show it: quoted as in mail (``"a b"@x``)
    with info_log_address_format = external (the default), as stored with
    internal."""
    return quote_822_local(address) if external and address else address


def split_address(address: str) -> tuple[str, str]:
    """An internal address as (local part, domain), split at the last ``@``
    as Postfix does (``strrchr``). Without ``@`` the domain is empty."""
    at = address.rfind("@")
    if at < 0:
        return address, ""
    return address[:at], address[at + 1:]


def split_external(address: str) -> tuple[str, str]:
    """An external address as (local part, domain), split at the last
    ``@`` outside quotes; the local part keeps its quotes."""
    in_quote = False
    at = -1
    i, n = 0, len(address)
    while i < n:
        ch = address[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            in_quote = not in_quote
        elif ch == "@" and not in_quote:
            at = i
        i += 1
    if at < 0:
        return address, ""
    return address[:at], address[at + 1:]


def fold_domain(address: str) -> str:
    """Lower-case the domain of an internal address: domains are case
    insensitive, local parts are not and keep their case."""
    local, domain = split_address(address)
    if "@" not in address:
        return address
    return f"{local}@{domain.lower()}"


def strip_source_route(address: str) -> str:
    """``@a,@b:user@c`` → ``user@c``: the RFC 5321 source route is dropped,
    as Postfix's rewrite stage does (a route with nothing after the colon
    is left alone)."""
    if address.startswith("@"):
        colon = address.find(":")
        if 0 <= colon < len(address) - 1:
            return address[colon + 1:]
    return address


def is_null(address: str) -> bool:
    """The null (bounce) sender ``<>``."""
    return address == ""


def parse_address_list(text: str, limit: int = 0) -> list[str]:
    """The addresses of an RFC 5322 address list, in internal form (what
    Postfix's sendmail does with command-line recipients and with
    To/Cc/Bcc under ``-t``): phrases, comments and groups are dropped."""
    tree = parse(text, limit)
    return [internalize(tp.head) for tp in grep(tree, ADDR)]


# -- host names (valid_hostname.c) ---------------------------------------------------------

def valid_hostaddr(text: str) -> bool:
    """An IPv4 dotted quad or an IPv6 address (no brackets, no prefix)."""
    if ":" in text:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            return False
        return True
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and int(p) <= 255
                                  for p in parts):
        return False
    # Postfix allows 0.0.0.0 but not 0.1.2.3.
    return not (int(parts[0]) == 0 and text.strip("0."))


def mailhost_addr(literal: str) -> str | None:
    """The address inside ``[1.2.3.4]`` or ``[IPv6:2001:db8::1]``, or None
    when the literal is not valid (Postfix's valid_mailhost_literal())."""
    if len(literal) < 2 or literal[0] != "[" or literal[-1] != "]":
        return None
    inner = literal[1:-1]
    if inner[:5].lower() == "ipv6:":
        addr = inner[5:]
        return addr if ":" in addr and valid_hostaddr(addr) else None
    return inner if valid_hostaddr(inner) and ":" not in inner else None


def valid_mailhost_literal(literal: str) -> bool:
    return mailhost_addr(literal) is not None


__all__ = [
    "ADDR", "ATOM", "COMMENT", "DOMLIT", "QSTRING", "STARTGRP", "Tok", "externalize",
    "find_type", "fold_domain", "grep", "internalize", "is_null", "mailhost_addr", "parse",
    "parse_address_list", "quote_822_local", "rfind_type", "scan", "scan_addr",
    "split_address", "split_external", "strip_source_route", "unquote_822_local",
    "valid_hostaddr", "valid_hostname", "valid_mailhost_literal",
]

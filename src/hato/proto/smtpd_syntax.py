"""Address and parameter syntax for the SMTP server core (pure functions).

Postfix-compatible leniency: ``MAIL FROM: <a@b>`` (space after the colon)
and ``MAIL FROM:a@b`` (no angle brackets) are accepted unless
``strict_rfc821_envelopes``; source routes (``<@a,@b:user@c>``) are
stripped; quoted local parts are kept in external form (``"a b"@c``);
redundant brackets (``<<a@b>>``) are tolerated and a local part may hold
``@`` (``a@b@c``: routing, which the relay restrictions judge). The domain
is checked as Postfix's smtpd_check_addr() does (valid_hostname(), address
literals, non-ASCII only with SMTPUTF8).

Each parser returns a value or raises :class:`SyntaxProblem` carrying the
reply the server sends, so the connection core only maps problems to
replies.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field

from .hostname import valid_hostname


class SyntaxProblem(Exception):
    """A command argument is malformed; ``reply`` is (code, dsn, text)."""

    def __init__(self, code: int, dsn: str, text: str):
        super().__init__(f"{code} {dsn} {text}")
        self.code = code
        self.dsn = dsn
        self.text = text


# Characters that may not appear unquoted in a local part (RFC 5321 atext
# plus "." for dot-atoms; 8-bit is allowed here and checked elsewhere).
_LOCAL_BAD = frozenset('()<>,;:\\"[]@ \t')
_TYPE_OK = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*\Z")


def _find_close(text: str, start: int, closing: str) -> int:
    """Index of ``closing`` at or after ``start`` outside quotes, or -1."""
    i, n, quoted = start, len(text), False
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c == closing:
            return i
        i += 1
    return -1


_SPACE = " \t\r\n\f\v"


_PLAIN_ANGLE = re.compile(r'[^\\"<>]*>')
_PLAIN_QUOTE = re.compile(r'[^\\"]*"')


def _quoted_end(text: str, i: int, wanted: str) -> int:
    """Postfix's smtp_quoted(): the index after the ``wanted`` that closes a
    ``<...>`` or ``"..."`` opened just before ``i`` (``<>`` nest, quotes
    inside them too, backslash escapes); -1 when it is never closed."""
    # The usual case, <user@example.com>: nothing inside that nests or escapes.
    plain = (_PLAIN_ANGLE if wanted == ">" else _PLAIN_QUOTE).match(text, i)
    if plain is not None:
        return plain.end()
    return _quoted_scan(text, i, wanted)


def _quoted_scan(text: str, i: int, wanted: str) -> int:
    """:func:`_quoted_end` character by character, as smtp_quoted() goes."""
    stack = [wanted]
    n = len(text)
    while i < n:
        c = text[i]
        i += 1
        if c == "\\":
            i += 1
        elif c == wanted:
            if len(stack) == 1:
                return i
            stack.pop()
            wanted = stack[-1]
        elif c == '"':
            stack.append('"')
            wanted = '"'
        elif c == "<" and wanted == ">":
            stack.append(">")
    return -1


def _token_end(text: str) -> int:
    """End of the first token of ``text`` as Postfix's SMTP command
    tokenizer sees it (whitespace outside ``<>`` and quotes ends it); -1
    when a ``<`` or quote is not closed."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            return i
        if c == "\\":
            i += 2
            continue
        if c in '<"':
            i = _quoted_end(text, i + 1, ">" if c == "<" else '"')
            if i < 0:
                return -1
            continue
        i += 1
    return n


def _has_bracket(text: str) -> bool:
    """A ``<`` or ``>`` outside quotes."""
    return _find_close(text, 0, "<") >= 0 or _find_close(text, 0, ">") >= 0


def path_token(arg: str) -> str:
    """The path as the client typed it (``<a@b>``), for milters."""
    return arg[:max(_token_end(arg), 0)]


def split_path(arg: str, strict: bool) -> tuple[str, str, bool] | None:
    """Split ``<path> params`` (text after ``FROM:``/``TO:``, left-stripped).

    Returns (path without <>, parameter text, bracketed) or None when the
    path is malformed (unbalanced <>, junk after >, bare path under strict).
    As Postfix, redundant brackets are tolerated (``<<a@b>>`` is ``a@b``).
    """
    end = _token_end(arg)
    if end <= 0:
        return None
    token, rest = arg[:end], arg[end:]
    bracketed = token.startswith("<") and token.endswith(">") and len(token) >= 2
    if strict and not bracketed:
        return None
    path = token
    while path.startswith("<") and path.endswith(">") and len(path) >= 2:
        path = path[1:-1]
    if _has_bracket(path):
        return None
    return path, rest, bracketed


def _valid_local(local: str) -> bool:
    if not local:
        return False
    if local.startswith('"'):
        # A quoted string must be the whole local part; keep its external form.
        if len(local) < 2 or not local.endswith('"'):
            return False
        body = local[1:-1].replace("\\\\", "").replace('\\"', "")
        if body.endswith("\\") or '"' in body:
            return False
        return not any(ord(c) < 32 or ord(c) == 127 for c in body)
    return not any(c in _LOCAL_BAD or ord(c) < 32 or ord(c) == 127 for c in local)


def _valid_ipv4(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3
                                   and int(p) <= 255 for p in parts)


def _valid_literal(domain: str) -> bool:
    """Postfix's valid_mailhost_literal(): ``[1.2.3.4]`` or ``[IPv6:...]``."""
    if len(domain) < 3 or not domain.endswith("]"):
        return False
    inner = domain[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(inner[5:])
        except ValueError:
            return False
        return "%" not in inner
    return _valid_ipv4(inner)


def _valid_domain(domain: str, utf8: bool, numeric_ok: bool) -> bool:
    if domain.startswith("["):
        return _valid_literal(domain)
    # trivial-rewrite strips one trailing dot (not dot-dot).
    if len(domain) > 1 and domain.endswith(".") and domain[-2] != ".":
        domain = domain[:-1]
    if valid_hostname(domain, utf8=utf8):
        return True
    return numeric_ok and _valid_ipv4(domain)


def _unquoted_ats(path: str) -> list[int] | None:
    """Indexes of the ``@`` outside quotes; None for an unclosed quote."""
    ats: list[int] = []
    i, n, quoted = 0, len(path), False
    while i < n:
        c = path[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "@":
            ats.append(i)
        i += 1
    return None if quoted else ats


@functools.lru_cache(maxsize=4096)  # a pure function; the same names come again
def normalize_address(path: str, allow_empty: bool, *, smtputf8: bool = True,
                      numeric_ok: bool = False) -> str | None:
    """Validate a path's content; return the address in external form.

    The source route is stripped; ``""`` is returned for the null path
    when allowed. None means bad address syntax (Postfix's extract_addr()
    and smtpd_check_addr()): a local part with an ``@`` in it is kept, as
    Postfix does (``a@b@c`` is routing the policy judges); the domain must
    be a valid hostname or address literal, non-ASCII only with
    ``smtputf8`` (SMTPUTF8 enabled and requested by the client); an
    all-numeric domain only with ``numeric_ok`` (resolve_numeric_domain).
    """
    if path.startswith("@"):
        colon = _find_close(path, 0, ":")
        if colon < 0:
            return None
        # The route is dropped unjudged, as Postfix does; only its shape counts.
        route = path[:colon]
        if any(len(hop) < 2 or not hop.startswith("@") or _has_bracket(hop)
               for hop in route.split(",")):
            return None
        path = path[colon + 1:]
        if not path:
            return None
    if not path:
        return "" if allow_empty else None
    ats = _unquoted_ats(path)
    if ats is None:
        return None
    if not ats:
        return path if _valid_local(path) else None
    bounds = [-1, *ats]
    pieces = [path[bounds[k] + 1:bounds[k + 1]] for k in range(len(ats))]
    domain = path[ats[-1] + 1:]
    if not all(_valid_local(p) for p in pieces) or not domain \
            or not _valid_domain(domain, smtputf8, numeric_ok):
        return None
    return path


def parse_vrfy(args: list[str], *,
               smtputf8_enable: bool) -> tuple[str, str, bool] | None:
    """VRFY's argument words → (the address token, its path without <>,
    SMTPUTF8 requested).

    As Postfix: a last word ``SMTPUTF8`` (when enabled) is the RFC 6531
    option; the other words are joined and must hold one address (``alice
    junk`` is two). None means bad syntax (501 5.1.3).
    """
    smtputf8 = False
    if len(args) > 1 and smtputf8_enable and args[-1].upper() == "SMTPUTF8":
        args = args[:-1]
        smtputf8 = True
    text = " ".join(args)
    end = _token_end(text)
    if end <= 0:
        return None
    if end < len(text):
        # More than one word: only "phrase <address>" is one address.
        words = text.split()
        last = words[-1]
        if not (last.startswith("<") and last.endswith(">")) or any(
                c in w for w in words[:-1] for c in '<>@,;:'):
            return None
        text = last
    path = text
    while path.startswith("<") and path.endswith(">") and len(path) >= 2:
        path = path[1:-1]
    if _has_bracket(path):
        return None
    return text, path, smtputf8


def xtext_decode(text: str, *, strict: bool = True) -> str | None:
    """RFC 3461 xtext → text; None when malformed. Not *strict*: Postfix's
    xtext_unquote(), which decodes ``+HH`` and keeps every other character
    as is (it does not insist on xchar)."""
    if "+" not in text:
        if strict and any(ord(c) < 33 or ord(c) > 126 or c == "=" for c in text):
            return None
        return text
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "+":
            h = text[i + 1:i + 3]
            if len(h) != 2 or any(x not in "0123456789ABCDEFabcdef" for x in h):
                return None
            out.append(chr(int(h, 16)))
            i += 3
            continue
        if strict and (ord(c) < 33 or ord(c) > 126 or c == "="):
            return None
        out.append(c)
        i += 1
    return "".join(out)


def xtext_unquote(text: str) -> str | None:
    """Postfix's xtext_unquote(): see :func:`xtext_decode`."""
    return xtext_decode(text, strict=False)


def uxtext_unquote(text: str) -> str | None:
    """RFC 6533 utf-8-addr-xtext: ``\\x{HEX}`` decoded, other characters
    (UTF-8 included) kept; None when an escape is malformed."""
    out = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("\\x{", i):
            close = text.find("}", i + 3)
            digits = text[i + 3:close] if close >= 0 else ""
            if not 1 <= len(digits) <= 6 or any(
                    x not in "0123456789ABCDEFabcdef" for x in digits):
                return None
            code = int(digits, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                return None
            out.append(chr(code))
            i = close + 1
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


def _printable(text: str) -> bool:
    return all(32 <= ord(c) < 127 for c in text)


@dataclass
class MailParams:
    size: int | None = None
    body: str | None = None
    ret: str | None = None
    envid: str | None = None
    smtputf8: bool = False
    auth: str | None = None


@dataclass
class RcptParams:
    notify: frozenset[str] = field(default_factory=frozenset)
    orcpt: str | None = None


def parse_mail_params(params: list[str], *, dsn: bool, smtputf8: bool,
                      auth: bool, size_limit: int) -> MailParams:
    """MAIL FROM parameters (Postfix's checks and texts: the first problem wins)."""
    res = MailParams()
    for p in params:
        key, eq, value = p.partition("=")
        ukey = key.upper()
        if ukey == "SIZE" and eq:
            if not value.isascii() or not value.isdigit():
                raise SyntaxProblem(501, "5.5.4", "Bad message size syntax")
            res.size = int(value)
        elif ukey == "BODY" and eq and value.upper() in ("8BITMIME", "7BIT"):
            res.body = value.upper()
        elif ukey == "RET" and eq:
            if not dsn:
                raise SyntaxProblem(501, "5.7.1", "DSN support is disabled")
            if res.ret is not None or value.upper() not in ("FULL", "HDRS"):
                raise SyntaxProblem(501, "5.5.4", "Bad RET parameter syntax")
            res.ret = value.upper()
        elif ukey == "ENVID" and eq:
            if not dsn:
                raise SyntaxProblem(501, "5.7.1", "DSN support is disabled")
            # Postfix: xtext_unquote() and allprint(), no length limit.
            decoded = xtext_unquote(value) if value else None
            if (res.envid is not None or decoded is None or not decoded
                    or not _printable(decoded)):
                raise SyntaxProblem(501, "5.5.4", "Bad ENVID parameter syntax")
            res.envid = decoded
        elif ukey == "SMTPUTF8" and not eq and smtputf8:
            res.smtputf8 = True
        elif ukey == "AUTH" and eq and auth:
            if res.auth is not None:
                raise SyntaxProblem(503, "5.5.4", "Error: multiple AUTH= options")
            decoded = "<>" if value == "<>" else xtext_decode(value)
            if not decoded or not _printable(decoded):
                raise SyntaxProblem(501, "5.5.4", "Bad AUTH parameter syntax")
            res.auth = decoded
        else:
            raise SyntaxProblem(555, "5.5.4", f"Unsupported option: {p}")
    if size_limit and res.size is not None and res.size > size_limit:
        raise SyntaxProblem(552, "5.3.4", "Message size exceeds fixed limit")
    return res


_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY", "NEVER"})


def parse_rcpt_params(params: list[str], *, dsn: bool) -> RcptParams:
    """RCPT TO parameters."""
    res = RcptParams()
    seen_notify = False
    for p in params:
        key, eq, value = p.partition("=")
        ukey = key.upper()
        if ukey == "NOTIFY" and eq:
            if not dsn:
                raise SyntaxProblem(501, "5.7.1", "DSN support is disabled")
            items = [v.upper() for v in value.split(",")]
            if (seen_notify or not value or any(v not in _NOTIFY for v in items)
                    or ("NEVER" in items and len(items) > 1)):
                raise SyntaxProblem(501, "5.5.4", "Error: Bad NOTIFY parameter syntax")
            seen_notify = True
            res.notify = frozenset(items)
        elif ukey == "ORCPT" and eq:
            if not dsn:
                raise SyntaxProblem(501, "5.7.1", "DSN support is disabled")
            # Postfix: a non-empty type; "utf-8" addresses in uxtext
            # (RFC 6533), others in xtext.
            atype, semi, addr = value.partition(";")
            unquote = uxtext_unquote if atype.lower() == "utf-8" else xtext_unquote
            decoded = unquote(addr) if semi and addr else None
            if (res.orcpt is not None or not _TYPE_OK.match(atype) or decoded is None
                    or len(value) > 500):
                raise SyntaxProblem(501, "5.5.4", "Error: Bad ORCPT parameter syntax")
            res.orcpt = f"{atype};{decoded}"
        else:
            raise SyntaxProblem(555, "5.5.4", f"Unsupported option: {p}")
    return res


XCLIENT_NAMES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN",
                           "DESTADDR", "DESTPORT"})
XFORWARD_NAMES = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"})


def parse_attributes(verb: str, args: list[str], names: frozenset[str]) -> dict[str, str]:
    """``NAME=value ...`` for XCLIENT/XFORWARD; values xtext-decoded."""
    if not args:
        raise SyntaxProblem(501, "5.5.4", f"Syntax: {verb} attribute=value...")
    attrs: dict[str, str] = {}
    for a in args:
        name, eq, value = a.partition("=")
        if not eq:
            raise SyntaxProblem(501, "5.5.4", "Error: attribute=value expected")
        uname = name.upper()
        if uname not in names:
            raise SyntaxProblem(501, "5.5.4", f"Bad {verb} attribute name: {name}")
        decoded = xtext_decode(value) if value else ""
        if decoded is None:
            raise SyntaxProblem(501, "5.5.4", f"Bad {uname} syntax: {value}")
        if len(decoded) > 255:
            raise SyntaxProblem(501, "5.5.4", "Error: attribute value too long")
        attrs[uname] = decoded
    return attrs

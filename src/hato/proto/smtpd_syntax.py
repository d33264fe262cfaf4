"""Address and parameter syntax for the SMTP server core (pure functions).

Postfix-compatible leniency: ``MAIL FROM: <a@b>`` (space after the colon)
and ``MAIL FROM:a@b`` (no angle brackets) are accepted unless
``strict_rfc821_envelopes``; source routes (``<@a,@b:user@c>``) are
stripped; quoted local parts are kept in external form (``"a b"@c``).

Each parser returns a value or raises :class:`SyntaxProblem` carrying the
reply the server sends, so the connection core only maps problems to
replies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


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
_DOMAIN_OK = re.compile(r"[A-Za-z0-9._\-\u0080-\U0010ffff]+\Z")
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


def _find_space(text: str) -> int:
    """Index of the first whitespace outside quotes, or len(text)."""
    i, n, quoted = 0, len(text), False
    while i < n:
        c = text[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c in " \t":
            return i
        i += 1
    return n


def split_path(arg: str, strict: bool) -> tuple[str, str, bool] | None:
    """Split ``<path> params`` (text after ``FROM:``/``TO:``, left-stripped).

    Returns (path without <>, parameter text, bracketed) or None when the
    path is malformed (unbalanced <>, junk after >, bare path under strict).
    """
    if arg.startswith("<"):
        end = _find_close(arg, 1, ">")
        if end < 0:
            return None
        rest = arg[end + 1:]
        if rest and rest[0] not in " \t":
            return None
        return arg[1:end], rest, True
    if strict:
        return None
    end = _find_space(arg)
    path = arg[:end]
    if "<" in path or ">" in path:
        return None
    return path, arg[end:], False


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


def _valid_domain(domain: str) -> bool:
    if domain.startswith("["):
        if not domain.endswith("]") or len(domain) < 3:
            return False
        inner = domain[1:-1]
        return not any(c in "[]\\ \t" or ord(c) < 33 or ord(c) > 126 for c in inner)
    if not _DOMAIN_OK.match(domain):
        return False
    labels = domain[:-1].split(".") if domain.endswith(".") else domain.split(".")
    return all(labels)


def normalize_address(path: str, allow_empty: bool) -> str | None:
    """Validate a path's content; return the address in external form.

    The source route is stripped; ``""`` is returned for the null path
    when allowed. None means bad address syntax.
    """
    if path.startswith("@"):
        colon = _find_close(path, 0, ":")
        if colon < 0:
            return None
        route = path[:colon]
        if any(not hop.startswith("@") or not _valid_domain(hop[1:]) for hop in route.split(",")):
            return None
        path = path[colon + 1:]
        if not path:
            return None
    if not path:
        return "" if allow_empty else None
    at = -1
    i, n, quoted = 0, len(path), False
    while i < n:
        c = path[i]
        if c == "\\":
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif not quoted and c == "@":
            if at >= 0:
                return None  # two unquoted "@"
            at = i
        i += 1
    if quoted:
        return None
    if at < 0:
        return path if _valid_local(path) else None
    local, domain = path[:at], path[at + 1:]
    if not _valid_local(local) or not domain or not _valid_domain(domain):
        return None
    return path


def xtext_decode(text: str) -> str | None:
    """RFC 3461 xtext → text; None when malformed."""
    if "+" not in text:
        if any(ord(c) < 33 or ord(c) > 126 or c == "=" for c in text):
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
        if ord(c) < 33 or ord(c) > 126 or c == "=":
            return None
        out.append(c)
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
            decoded = xtext_decode(value) if value else None
            if (res.envid is not None or decoded is None or not decoded
                    or not _printable(decoded) or len(decoded) > 100):
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
            atype, semi, addr = value.partition(";")
            decoded = xtext_decode(addr) if semi and addr else None
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

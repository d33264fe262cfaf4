"""The MIME pass of cleanup (Postfix's mime_state.c): splits a message into
header blocks and body lines, following multipart boundaries and attached
message/rfc822 parts, and reports the MIME errors Postfix reports. Used by
:mod:`hato.queue.cleanup`, which owns the state it drives."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol

from ..policy.headerchecks import HeaderClass
from . import records as R

if TYPE_CHECKING:
    from .cleanup_defs import HeaderOpts

_IS_HEADER = re.compile(rb"[\x21-\x39\x3b-\x7e]+")


def header_name_length(line: bytes) -> int:
    """is_header(): the length of the header name when *line* starts with
    ``name:`` or ``name :``, else 0."""
    m = _IS_HEADER.match(line)
    if m is None:
        return 0
    i = m.end()
    while i < len(line) and line[i] in b" \t":
        i += 1
    return m.end() if i < len(line) and line[i] == 0x3A else 0



# -- MIME (mime_state.c) -------------------------------------------------------------------

_ST_PRIMARY, _ST_MULTIPART, _ST_NESTED, _ST_BODY = 1, 2, 3, 4
_CT_TEXT, _CT_MESSAGE, _CT_MULTIPART, _CT_OTHER = 1, 2, 3, 4
_STYPE_PLAIN, _STYPE_OTHER, _STYPE_RFC822, _STYPE_PARTIAL, _STYPE_EXTERN = 1, 2, 3, 4, 5
_ENC_7BIT, _ENC_8BIT, _ENC_BINARY, _ENC_QP, _ENC_BASE64 = 7, 8, 9, 1, 2
_ENCODINGS = {"7bit": (_ENC_7BIT, _ENC_7BIT), "8bit": (_ENC_8BIT, _ENC_8BIT),
              "binary": (_ENC_BINARY, _ENC_BINARY), "base64": (_ENC_BASE64, _ENC_7BIT),
              "quoted-printable": (_ENC_QP, _ENC_7BIT)}

MIME_ERR_NESTING = 1 << 0
MIME_ERR_TRUNC_HEADER = 1 << 1
MIME_ERR_8BIT_IN_HEADER = 1 << 2
MIME_ERR_8BIT_IN_7BIT_BODY = 1 << 3
MIME_ERR_ENCODING_DOMAIN = 1 << 4
_MIME_ERRORS = (
    (MIME_ERR_NESTING, "MIME nesting exceeds safety limit"),
    (MIME_ERR_TRUNC_HEADER, "message header length exceeds safety limit"),
    (MIME_ERR_8BIT_IN_HEADER, "improper use of 8-bit data in message header"),
    (MIME_ERR_8BIT_IN_7BIT_BODY, "improper use of 8-bit data in message body"),
    (MIME_ERR_ENCODING_DOMAIN, "invalid message/* or multipart/* encoding domain"),
)


def mime_error_text(code: int) -> str:
    for bit, text in _MIME_ERRORS:
        if code & bit:
            return text
    return "unknown MIME error"


_TSPECIALS = '()<>@,;:\\"/[]?='


def _ct_tokens(value: str) -> list[list[tuple[str, str]]]:
    """RFC 2045 header tokens, split into ``;``-separated groups; a token is
    ("t", text) or ("q", quoted text) or (special, special)."""
    groups: list[list[tuple[str, str]]] = [[]]
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            i += 1
        elif c == "(":
            depth = 0
            while i < n:
                if value[i] == "\\":
                    i += 2
                    continue
                if value[i] == "(":
                    depth += 1
                elif value[i] == ")":
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif c == '"':
            j, out = i + 1, []
            while j < n and value[j] != '"':
                if value[j] == "\\" and j + 1 < n:
                    j += 1
                out.append(value[j])
                j += 1
            groups[-1].append(("q", "".join(out)))
            i = j + 1
        elif c == ";":
            groups.append([])
            i += 1
        elif c in _TSPECIALS:
            groups[-1].append((c, c))
            i += 1
        else:
            j = i
            while j < n and value[j] not in _TSPECIALS and value[j] not in " \t\r\n":
                j += 1
            groups[-1].append(("t", value[i:j]))
            i = j
    return groups


def _tok_is(tok: tuple[str, str], text: str) -> bool:
    return tok[0] == "t" and tok[1].lower() == text


class MimeOwner(Protocol):
    """What :class:`_Mime` calls back: cleanup's CleanupState, or the smtp
    client's content pass (a Protocol: the compiled build checks no class)."""

    def find_opts(self, header: str) -> HeaderOpts | None: ...

    def header(self, klass: HeaderClass, info: HeaderOpts | None, text: str) -> None: ...

    def header_end(self) -> None: ...

    def body(self, rec_type: str, data: bytes, offset: int) -> None: ...

    def mime_error(self, code: int, text: bytes) -> None: ...


class _Mime:
    """mime_state: splits the content into header blocks and body lines,
    following multipart boundaries and message/rfc822 parts.

    Fed one record at a time (:meth:`update`; None at the end), it calls
    its owner back: ``find_opts(header_text)`` (the header's HeaderOpts or
    None), ``header(header_class, opts, text)`` per complete logical header
    (folded lines joined by ``\n``), ``header_end()`` after the primary
    block, ``body(rec_type, data, offset)`` per body record (the empty line
    after a header block included), ``mime_error(code, text)`` for the
    errors *report* asks for. cleanup is one owner, the smtp client's
    content pass (hato.delivery.smtp_content) another."""

    def __init__(self, owner: MimeOwner, *, disable: bool, report: int,
                 header_limit: int, max_depth: int, bound_len: int):
        self.o = owner
        self.disable = disable
        self.report = report  # MIME_ERR_* bits to report
        self.header_limit = header_limit
        self.max_depth = max_depth
        self.bound_len = bound_len
        self.err_flags = 0
        self.stack: list[tuple[int, int, bytes]] = []
        self.buf = bytearray()
        self.prev: str | None = None
        self.body_offset = 0
        self._set(_ST_PRIMARY, _CT_TEXT, _STYPE_PLAIN, _ENC_7BIT, _ENC_7BIT)

    def _set(self, state: int, ctype: int, stype: int, enc: int, dom: int) -> None:
        self.ctype, self.stype, self.encoding, self.domain = ctype, stype, enc, dom
        self._set_state(state)

    def _set_state(self, state: int) -> None:
        self.state = state
        if state == _ST_BODY:
            self.body_offset = 0

    def _error(self, code: int, text: bytes) -> None:
        if self.err_flags & code:
            return
        self.err_flags |= code
        if self.report & code:
            self.o.mime_error(code, text)

    def _content_type(self, value: str) -> None:
        groups = _ct_tokens(value)
        first = groups[0]
        if not first:
            return
        if _tok_is(first[0], "text"):
            self.ctype = _CT_TEXT
            self.stype = (_STYPE_PLAIN if len(first) >= 3 and first[1][0] == "/"
                          and _tok_is(first[2], "plain") else _STYPE_OTHER)
        elif _tok_is(first[0], "message"):
            self.ctype, self.stype = _CT_MESSAGE, _STYPE_OTHER
            if len(first) >= 3 and first[1][0] == "/":
                for name, st in (("rfc822", _STYPE_RFC822), ("partial", _STYPE_PARTIAL),
                                 ("external-body", _STYPE_EXTERN)):
                    if _tok_is(first[2], name):
                        self.stype = st
        elif _tok_is(first[0], "multipart"):
            self.ctype = _CT_MULTIPART
            if len(first) >= 3 and first[1][0] == "/" and _tok_is(first[2], "digest"):
                defaults = (_CT_MESSAGE, _STYPE_RFC822)
            else:
                defaults = (_CT_TEXT, _STYPE_PLAIN)
            for group in groups[1:]:
                if len(group) >= 3 and _tok_is(group[0], "boundary") and group[1][0] == "=":
                    if len(self.stack) > self.max_depth:
                        if self.report & MIME_ERR_NESTING:
                            self._error(MIME_ERR_NESTING, bytes(self.buf))
                    else:
                        bound = group[2][1].encode("utf-8", "surrogateescape")
                        self.stack.insert(0, (*defaults, bound[:self.bound_len]))
        else:
            self.ctype = _CT_OTHER

    def _content_encoding(self, value: str) -> None:
        groups = _ct_tokens(value)
        if groups[0] and groups[0][0][0] == "t":
            got = _ENCODINGS.get(groups[0][0][1].lower())
            if got is not None:
                self.encoding, self.domain = got

    def update(self, rec_type: str | None, text: bytes) -> None:
        """One record: NORM/CONT text, or None for the end of the content."""
        is_text = rec_type is not None
        if not is_text and self.prev == R.CONT:
            self.update(R.NORM, b"")
        state = self.state
        if state != _ST_BODY:
            if self.buf:
                if is_text:
                    if self.prev == R.CONT:
                        if len(self.buf) < self.header_limit:
                            self.buf += text
                        else:
                            self._error(MIME_ERR_TRUNC_HEADER, bytes(self.buf))
                        self.prev = rec_type
                        return
                    if text[:1] in (b" ", b"\t"):
                        if len(self.buf) < self.header_limit:
                            self.buf += b"\n" + text
                        else:
                            self._error(MIME_ERR_TRUNC_HEADER, bytes(self.buf))
                        self.prev = rec_type
                        return
                self._header_out()
            if is_text:
                name_len = header_name_length(text)
                if name_len > 0:
                    rest = text[name_len:].lstrip(b" \t")
                    self.buf = bytearray(text[:name_len] + rest)
                    self.prev = rec_type
                    return
            if state == _ST_PRIMARY:
                self.o.header_end()
            if self.report & MIME_ERR_ENCODING_DOMAIN:
                if self.ctype == _CT_MESSAGE:
                    if self.stype in (_STYPE_PARTIAL, _STYPE_EXTERN):
                        if self.domain != _ENC_7BIT:
                            self._error(MIME_ERR_ENCODING_DOMAIN, b"")
                    elif self.encoding != self.domain:
                        self._error(MIME_ERR_ENCODING_DOMAIN, b"")
                elif self.ctype == _CT_MULTIPART and self.encoding != self.domain:
                    self._error(MIME_ERR_ENCODING_DOMAIN, b"")
            if is_text:
                if not text:
                    self.body_offset = 0
                    if self.ctype == _CT_MESSAGE:
                        if self.stype == _STYPE_RFC822 and not self.disable:
                            self._set(_ST_NESTED, _CT_TEXT, _STYPE_PLAIN, _ENC_7BIT, _ENC_7BIT)
                        else:
                            self._set_state(_ST_BODY)
                    elif self.ctype == _CT_MULTIPART:
                        self._set(_ST_BODY, _CT_OTHER, _STYPE_OTHER, _ENC_7BIT, _ENC_7BIT)
                    else:
                        self._set_state(_ST_BODY)
                else:
                    self._set_state(_ST_BODY)
                    self._body_out(R.NORM, b"")
            else:
                self._set_state(_ST_BODY)
        # Body text: look for boundaries.
        if is_text:
            assert rec_type is not None
            if (self.report & MIME_ERR_8BIT_IN_7BIT_BODY and self.encoding == _ENC_7BIT
                    and not self.err_flags & MIME_ERR_8BIT_IN_7BIT_BODY
                    and not text.isascii()):
                self._error(MIME_ERR_8BIT_IN_7BIT_BODY, text)
            if self.stack and self.prev != R.CONT and text[:2] == b"--":
                for i, (def_ctype, def_stype, bound) in enumerate(self.stack):
                    if text[2:2 + len(bound)] == bound:
                        del self.stack[:i]
                        if text[2 + len(bound):4 + len(bound)] == b"--":
                            del self.stack[0]
                            self._set(_ST_BODY, _CT_OTHER, _STYPE_OTHER, _ENC_7BIT, _ENC_7BIT)
                        else:
                            self._set(_ST_MULTIPART, def_ctype, def_stype, _ENC_7BIT,
                                      _ENC_7BIT)
                        break
            self._body_out(rec_type, text)
        self.prev = rec_type

    def _header_out(self) -> None:
        raw = bytes(self.buf)
        self.buf = bytearray()
        self.prev = None
        text = raw.decode("utf-8", "surrogateescape")
        info = self.o.find_opts(text)
        if not self.disable and info is not None:
            value = text[len(info.name) + 1:]
            if info.type == "content-type":
                self._content_type(value)
            elif info.type == "content-transfer-encoding":
                self._content_encoding(value)
        if (self.report & MIME_ERR_8BIT_IN_HEADER
                and not self.err_flags & MIME_ERR_8BIT_IN_HEADER and not raw.isascii()):
            self._error(MIME_ERR_8BIT_IN_HEADER, raw)
        klass = {_ST_PRIMARY: HeaderClass.PRIMARY, _ST_MULTIPART: HeaderClass.MULTIPART,
                 _ST_NESTED: HeaderClass.NESTED}[self.state]
        self.o.header(klass, info, text)

    def _body_out(self, rec_type: str, text: bytes) -> None:
        offset = self.body_offset
        self.body_offset += len(text) + 1
        self.o.body(rec_type, text, offset)


MimeState = _Mime  # the name its users outside cleanup know it by

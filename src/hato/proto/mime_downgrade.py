"""8-bit to 7-bit MIME conversion for a server that does not offer 8BITMIME.

When the smtp client sends an 8-bit message to a server without 8BITMIME
(and ``disable_mime_output_conversion = no``), the content goes through a
:class:`Downgrader` on its way out, as Postfix's mime_state does with
MIME_OPT_DOWNGRADE:

* every MIME entity whose Content-Transfer-Encoding is ``8bit`` or
  ``binary`` loses that header, and gets one at the end of its header block:
  ``Content-Transfer-Encoding: quoted-printable`` for a leaf (its body is
  converted to quoted-printable, RFC 2045 §6.7), ``7bit`` for a multipart or
  message/* entity (whose parts are converted one by one);
* multipart bodies are followed by their boundaries (nested up to
  ``mime_nesting_limit``, boundaries cut at ``mime_boundary_length_limit``);
  message/rfc822 parts are followed into their own headers;
* everything else passes through byte for byte: 7-bit content, base64 and
  quoted-printable parts, the preamble and epilogue of a multipart, headers
  (8-bit header text is left as it is; it cannot be converted without
  knowing its charset), and a body with 8-bit data but no 8bit/binary
  Content-Transfer-Encoding header (such a body says it is 7-bit).

No header or comment is added besides the Content-Transfer-Encoding headers.
Quoted-printable output is Postfix's: bytes below 32 except TAB, ``=`` and
bytes above 126 become ``=XX``; a soft line break ``=`` ends an output line
once it holds more than 72 characters (lines never exceed 76); a space or
TAB before a hard line break is encoded.

The converter is fed the content in chunks of any size, with LF or CRLF line
ends (each output line keeps the line end of its input line). Memory is
bounded: one line (at most *line_limit* bytes; longer lines are handled in
pieces), one held Content-Transfer-Encoding header (at most *header_limit*
bytes) and the boundary stack. Past the nesting limit the converter records
Postfix's error "5.6.0 MIME nesting exceeds safety limit" (:attr:`Downgrader.error`),
and the caller fails the delivery as Postfix's smtp client does.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable, Iterator

# Parser states (mime_state.c).
_PRIMARY, _MULTIPART, _NESTED, _BODY = 1, 2, 3, 4
# Content types and subtypes that matter here.
_CT_OTHER, _CT_TEXT, _CT_MESSAGE, _CT_MULTIPART = 0, 1, 2, 3
_ST_OTHER, _ST_PLAIN, _ST_RFC822, _ST_PARTIAL, _ST_EXTERN, _ST_GLOBAL = 0, 1, 2, 3, 4, 5
# Encodings and domains: an encoding that is its own domain is an identity.
_ENC_QP, _ENC_BASE64, _ENC_7BIT, _ENC_8BIT, _ENC_BINARY = 1, 2, 7, 8, 9
_ENCODINGS = {"7bit": (_ENC_7BIT, _ENC_7BIT), "8bit": (_ENC_8BIT, _ENC_8BIT),
              "binary": (_ENC_BINARY, _ENC_BINARY), "base64": (_ENC_BASE64, _ENC_7BIT),
              "quoted-printable": (_ENC_QP, _ENC_7BIT)}
_MESSAGE_SUBTYPES = {"rfc822": _ST_RFC822, "partial": _ST_PARTIAL,
                     "external-body": _ST_EXTERN, "global": _ST_GLOBAL}

# Header kinds.
_H_OTHER, _H_TYPE, _H_ENCODING = 0, 1, 2
_HEADER_KINDS = {b"content-type": _H_TYPE, b"content-transfer-encoding": _H_ENCODING}

MIME_ERR_NESTING = 1 << 0
NESTING_ERROR = ("5.6.0", "MIME nesting exceeds safety limit")

#: Runs of bytes quoted-printable must encode: below 32 but TAB, "=", above 126.
_QP_RUN = re.compile(rb"[^\t\x20-\x3c\x3e-\x7e]+")
_QP_LINE = 72  # a soft line break goes out once a line holds more than this


def _qp_run(m: re.Match[bytes]) -> bytes:
    return b"=" + binascii.hexlify(m[0], b"=").upper()

_TSPECIALS = frozenset(b'()<>@,;:\\"/[]?=')


def _header_name_length(line: bytes) -> int:
    """The length of the header name when *line* is ``name:`` or
    ``name :`` (printable ASCII without ``:``), else 0."""
    i, n = 0, len(line)
    while i < n and 0x21 <= line[i] <= 0x7E and line[i] != 0x3A:
        i += 1
    if i == 0:
        return 0
    j = i
    while j < n and line[j] in (0x20, 0x09):
        j += 1
    return i if j < n and line[j] == 0x3A else 0


def _tokens(value: bytes, specials: frozenset[int] | None) -> list[list[tuple[str, bytes]]]:
    """RFC 822/2045 header tokens of *value*, in ``;``-separated groups
    (when *specials* is given). A token is ("t", atom), ("q", quoted
    string) or (special, special); comments and white space are skipped."""
    groups: list[list[tuple[str, bytes]]] = [[]]
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c <= 0x20 or c == 0x7F:
            i += 1
        elif c == 0x28:  # "(": a comment, maybe nested
            depth = 0
            while i < n:
                if value[i] == 0x5C:
                    i += 2
                    continue
                if value[i] == 0x28:
                    depth += 1
                elif value[i] == 0x29:
                    depth -= 1
                    if depth == 0:
                        i += 1
                        break
                i += 1
        elif c == 0x22:  # a quoted string
            j, out = i + 1, bytearray()
            while j < n and value[j] != 0x22:
                if value[j] == 0x5C and j + 1 < n:
                    j += 1
                out.append(value[j])
                j += 1
            groups[-1].append(("q", bytes(out)))
            i = j + 1
        elif specials is not None and c == 0x3B:  # ";"
            groups.append([])
            i += 1
        elif specials is not None and c in specials:
            groups[-1].append((chr(c), bytes((c,))))
            i += 1
        else:
            j = i
            while j < n and value[j] > 0x20 and value[j] != 0x7F and value[j] not in (
                    0x28, 0x22) and (specials is None or value[j] not in specials):
                j += 1
            groups[-1].append(("t", value[i:j]))
            i = j
    return groups


def _is(tok: tuple[str, bytes], word: bytes) -> bool:
    return tok[0] == "t" and tok[1].lower() == word


class DowngradeError(Exception):
    """The content cannot be converted (Postfix's MIME errors while
    downgrading): ``dsn`` and ``text`` as Postfix reports them."""

    def __init__(self, dsn: str, text: str):
        super().__init__(f"{dsn} {text}")
        self.dsn = dsn
        self.text = text


class Downgrader:
    """Converts one message's 8-bit MIME entities to quoted-printable.

    ``feed(chunk)`` returns the converted content so far, ``finish()`` the
    rest; the concatenation is the 7-bit message. The limits are Postfix's
    ``header_size_limit``, ``mime_nesting_limit``,
    ``mime_boundary_length_limit`` and ``line_length_limit`` (the record
    length of the queue file: longer lines are taken in pieces, as Postfix
    reads them).
    """

    def __init__(self, *, header_limit: int = 102400, max_depth: int = 100,
                 bound_len: int = 2048, line_limit: int = 2048):
        self.header_limit = header_limit
        self.max_depth = max_depth
        self.bound_len = bound_len
        self.line_limit = max(1, line_limit)
        self.errors = 0  # MIME_ERR_* bits
        self.converted = False  # some entity was converted
        self._stack: list[tuple[int, int, bytes]] = []  # (ctype, stype, boundary); top last
        self._pending = b""  # an incomplete input line
        self._out: list[bytes] = []
        self._qp = bytearray()  # the quoted-printable line being built
        self._eol = b"\n"  # the line end of the last complete line
        self._prev_cont = False  # the previous record was the first part of a line
        # The header being read: its name and value, normalised and joined by
        # "\n" as Postfix's header buffer; a Content-Transfer-Encoding header
        # is held (raw) until it is known whether it goes out.
        self._header: bytearray | None = None
        self._kind = _H_OTHER
        self._held: list[bytes] = []
        self._through = False  # nothing can change any more: copy the rest
        self._finished = False
        self._set(_PRIMARY, _CT_TEXT, _ST_PLAIN, _ENC_7BIT, _ENC_7BIT)

    @property
    def error(self) -> tuple[str, str] | None:
        """(DSN status, text) once the content cannot be converted, else None."""
        return NESTING_ERROR if self.errors & MIME_ERR_NESTING else None

    def _set(self, state: int, ctype: int, stype: int, enc: int, dom: int) -> None:
        self._state = state
        self._ctype, self._stype, self._encoding, self._domain = ctype, stype, enc, dom

    # -- input ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """More content; returns the output it completes."""
        if self._finished:
            raise RuntimeError("mime downgrade: feed() after finish()")
        buf = self._pending + data if self._pending else data
        if self._through:
            self._pending = b""
            return buf
        limit = self.line_limit
        start = 0
        while not self._through:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            end = nl
            eol = b"\n"
            if end > start and buf[end - 1] == 0x0D:
                end -= 1
                eol = b"\r\n"
            self._eol = eol
            while end - start > limit:
                self._record(buf[start:start + limit], b"", True)
                start += limit
            self._record(buf[start:end], eol, False)
            start = nl + 1
        if self._through:
            self._out.append(buf[start:])
            self._pending = b""
        else:
            # A piece longer than the limit goes on before its line ends; a
            # CR at the end may be the first half of a CRLF.
            while len(buf) - start - (1 if buf.endswith(b"\r") else 0) > limit:
                self._record(buf[start:start + limit], b"", True)
                start += limit
            self._pending = buf[start:]
        return self._take()

    def finish(self) -> bytes:
        """The end of the content; returns the last output."""
        if self._finished:
            return b""
        self._finished = True
        if self._through:
            self._out.append(self._pending)
            self._pending = b""
        else:
            if self._pending:
                # The last line has no line end: it ends here, without one
                # (a line taken in pieces always leaves its last piece here).
                data, self._pending = self._pending, b""
                self._record(data, b"", False)
            if self._state != _BODY:
                self._end_of_headers()
                self._state = _BODY
        return self._take()

    def _take(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    # -- the state machine ---------------------------------------------------------------

    def _record(self, text: bytes, eol: bytes, cont: bool) -> None:
        """One line of input (*eol* its line end) or, with *cont*, the first
        part of a longer one."""
        if self._state != _BODY:
            if self._header is not None:
                if self._prev_cont or (text[:1] in (b" ", b"\t") and text):
                    self._header_more(text, eol, joiner=b"" if self._prev_cont else b"\n")
                    self._prev_cont = cont
                    return
                self._header_end()
            n = _header_name_length(text)
            if n > 0:
                self._header_start(text, n, eol)
                self._prev_cont = cont
                return
            self._end_of_headers()
            if not text:
                if self._ctype == _CT_MESSAGE:
                    if self._stype == _ST_RFC822 or (
                            self._stype == _ST_GLOBAL and self._domain == _ENC_7BIT):
                        self._set(_NESTED, _CT_TEXT, _ST_PLAIN, _ENC_7BIT, _ENC_7BIT)
                    else:
                        self._state = _BODY
                elif self._ctype == _CT_MULTIPART:
                    self._set(_BODY, _CT_OTHER, _ST_OTHER, _ENC_7BIT, _ENC_7BIT)
                else:
                    self._state = _BODY
            else:
                # Not a header, not the end of the headers: the body starts
                # here; in the primary headers after an added empty line.
                if self._state == _PRIMARY:
                    self._out.append(self._eol)
                self._state = _BODY
        self._body(text, eol, cont)

    def _body(self, text: bytes, eol: bytes, cont: bool) -> None:
        stack = self._stack
        if stack and not self._prev_cont and len(text) > 2 and text[:2] == b"--":
            for i in range(len(stack) - 1, -1, -1):
                def_ctype, def_stype, bound = stack[i]
                if text.startswith(bound, 2):
                    del stack[i + 1:]
                    if text.startswith(b"--", 2 + len(bound)):
                        stack.pop()
                        self._set(_BODY, _CT_OTHER, _ST_OTHER, _ENC_7BIT, _ENC_7BIT)
                    else:
                        self._set(_MULTIPART, def_ctype, def_stype, _ENC_7BIT, _ENC_7BIT)
                    break
        if self._domain != _ENC_7BIT:
            self._quote(text, eol, cont)
        else:
            self._out.append(text + eol if eol else text)
        self._prev_cont = cont
        if self._state == _BODY and not stack and self._domain == _ENC_7BIT:
            self._through = True

    def _quote(self, text: bytes, eol: bytes, cont: bool) -> None:
        """Quoted-printable, RFC 2045 §6.7, with Postfix's line breaks: a
        soft break goes before the first character that would follow more
        than 72 on the line (so a line holds 73 to 75 characters and its
        ``=``, and an ``=XX`` is never cut)."""
        self.converted = True
        enc = _QP_RUN.sub(_qp_run, text)
        if self._qp:
            enc = bytes(self._qp) + enc
            self._qp.clear()
        start, n = 0, len(enc)
        if n > _QP_LINE + 1:
            soft = b"=" + self._eol
            out = self._out
            while True:
                cut = start + _QP_LINE + 1
                while cut < n and (enc[cut - 1] == 0x3D or enc[cut - 2] == 0x3D):
                    cut += 1  # inside an =XX
                if cut >= n:
                    break
                out.append(enc[start:cut] + soft)
                start = cut
        if cont:
            self._qp += enc[start:]
            return
        line = enc[start:]
        if line and line[-1] in (0x20, 0x09):
            line = line[:-1] + b"=%02X" % line[-1]
        self._out.append(line + eol)

    # -- headers -------------------------------------------------------------------------

    def _header_start(self, text: bytes, n: int, eol: bytes) -> None:
        rest = text[n:].lstrip(b" \t")  # "name :" is read as "name:"
        self._header = bytearray(text[:n] + rest)
        self._kind = _HEADER_KINDS.get(text[:n].lower(), _H_OTHER)
        if self._kind == _H_ENCODING:
            self._held = [text + eol]
        else:
            self._out.append(text + eol)

    def _header_more(self, text: bytes, eol: bytes, joiner: bytes) -> None:
        header = self._header
        assert header is not None
        if len(header) < self.header_limit:
            header += joiner + text
            if self._kind == _H_ENCODING:
                self._held.append(text + eol)
        elif self._kind == _H_ENCODING:
            return  # cut, as Postfix cuts a header past header_size_limit
        if self._kind != _H_ENCODING:
            self._out.append(text + eol)

    def _header_end(self) -> None:
        """The header being read is complete."""
        header, kind = self._header, self._kind
        assert header is not None
        self._header = None
        self._prev_cont = False
        name_len = header.index(b":")
        value = bytes(header[name_len + 1:])
        if kind == _H_TYPE:
            self._content_type(value)
        elif kind == _H_ENCODING:
            self._content_encoding(value)
            held, self._held = self._held, []
            # An 8bit or binary Content-Transfer-Encoding is replaced at
            # the end of the header block.
            if self._domain == _ENC_7BIT:
                self._out.extend(held)

    def _end_of_headers(self) -> None:
        """The header block ends: flush the last header and say how the
        entity is encoded now."""
        if self._header is not None:
            self._header_end()
        if self._domain != _ENC_7BIT:
            if (self._ctype == _CT_MESSAGE and self._stype != _ST_GLOBAL) \
                    or self._ctype == _CT_MULTIPART:
                value = b"7bit"
            else:
                value = b"quoted-printable"
            self._out.append(b"Content-Transfer-Encoding: " + value + self._eol)
            self.converted = True

    def _content_type(self, value: bytes) -> None:
        groups = _tokens(value, _TSPECIALS)
        first = groups[0][:3]
        if not first:
            return
        subtype = first[2] if len(first) >= 3 and first[1][0] == "/" else None
        if _is(first[0], b"text"):
            self._ctype = _CT_TEXT
            self._stype = _ST_PLAIN if subtype and _is(subtype, b"plain") else _ST_OTHER
        elif _is(first[0], b"message"):
            self._ctype = _CT_MESSAGE
            self._stype = _ST_OTHER
            if subtype is not None and subtype[0] == "t":
                self._stype = _MESSAGE_SUBTYPES.get(subtype[1].lower().decode("latin-1"),
                                                    _ST_OTHER)
        elif _is(first[0], b"multipart"):
            self._ctype = _CT_MULTIPART
            if subtype and _is(subtype, b"digest"):
                defaults = (_CT_MESSAGE, _ST_RFC822)
            else:
                defaults = (_CT_TEXT, _ST_PLAIN)
            for group in groups[1:]:
                if len(group) >= 3 and _is(group[0], b"boundary") and group[1][0] == "=":
                    # Postfix counts its nesting level from -1.
                    if len(self._stack) - 1 > self.max_depth:
                        self.errors |= MIME_ERR_NESTING
                    else:
                        self._stack.append((*defaults, group[2][1][:self.bound_len]))
        else:
            self._ctype = _CT_OTHER

    def _content_encoding(self, value: bytes) -> None:
        first = _tokens(value, None)[0]
        if first and first[0][0] == "t":
            got = _ENCODINGS.get(first[0][1].lower().decode("latin-1"))
            if got is not None:
                self._encoding, self._domain = got


def downgrade(chunks: Iterable[bytes], **limits: int) -> Iterator[bytes]:
    """The converted content of *chunks* (see :class:`Downgrader` for the
    *limits*). Raises :class:`DowngradeError` as soon as the content turns
    out not to be convertible."""
    conv = Downgrader(**limits)
    for chunk in chunks:
        out = conv.feed(chunk)
        if conv.error is not None:
            raise DowngradeError(*conv.error)
        if out:
            yield out
    out = conv.finish()
    if out:
        yield out

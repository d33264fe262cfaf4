"""Message content readers for the SMTP server core: DATA and BDAT.

This is where SMTP smuggling lives, so the rules are spelled out:

* Lines end at LF. The end of DATA is a line holding a single ``.``.
* ``forbid_bare_newline = no`` (Postfix 3.7 compatibility): ``.`` followed
  by any number of CRs and a LF ends the data, whatever ended the previous
  line (``\\n.\\n``, ``\\n.\\r\\n``, ``\\r\\n.\\n``, ``\\r\\n.\\r\\r\\n`` all end it:
  Postfix's smtp_get() strips every CR before the LF).
* ``normalize`` / ``yes`` / ``reject``: only ``<CR><LF>.<CR><LF>`` ends the
  data (the start of the content counts as following a CRLF). Every other
  dot line is content. Under ``normalize``/``yes`` a bare LF in the content
  becomes CRLF; under ``reject`` the first bare LF makes the reader drop
  the content and keep reading to the proper end, and the message is
  refused.
* A bare CR is always content, never a line end.
* Dot-unstuffing: a line that starts with ``.`` loses that dot.
* The size limit counts the content as emitted; past it the content is
  dropped and reading continues to the end.

The readers work on the connection's input buffer with ``bytes.find`` and
``count``; there is no per-byte Python loop.
"""

from __future__ import annotations

MAX_PIECE = 65536  # at most this much input is consumed per call
MAX_DOT_CRS = 2048  # "no" mode: a longer run of CRs after a dot line is content


class DotReader:
    """Reads DATA content up to the end-of-data line."""

    __slots__ = ("strict", "normalize", "reject", "limit", "size", "bare_newlines",
                 "bol", "crlf_before", "prev_cr", "too_big", "bare_lf_rejected", "done")

    def __init__(self, forbid_bare_newline: str, size_limit: int):
        mode = forbid_bare_newline
        self.strict = mode != "no"
        self.normalize = mode in ("normalize", "yes")
        self.reject = mode == "reject"
        self.limit = size_limit
        self.size = 0               # content bytes (after unstuffing/normalizing)
        self.bare_newlines = 0
        self.bol = True             # at the beginning of a line
        self.crlf_before = True     # the last line break seen was CRLF (or start)
        self.prev_cr = False        # the last content byte consumed was CR
        self.too_big = False
        self.bare_lf_rejected = False
        self.done = False

    @property
    def dropping(self) -> bool:
        return self.too_big or self.bare_lf_rejected

    def read(self, buf: bytes | bytearray) -> tuple[bytes, int]:
        """Consume content from ``buf``; return (content, bytes consumed).

        Sets :attr:`done` when the end-of-data line was consumed. Input that
        might still be the end-of-data line (``.`` or ``.\\r`` at the start
        of a line) stays unconsumed until more arrives. At most
        :data:`MAX_PIECE` bytes of input are consumed per call.
        """
        buf_end = len(buf)
        end = min(buf_end, MAX_PIECE)
        pos = 0
        out: list[bytes] = []
        while pos < end:
            if self.bol:
                if buf[pos] == 0x2E:  # "."
                    if self.strict:
                        nl = buf.find(b"\n", pos + 1, min(buf_end, pos + 3))
                        if nl < 0:
                            avail = buf_end - pos
                            if avail == 1 or (avail == 2 and buf[pos + 1] == 0x0D):
                                break  # maybe the end: wait for more input
                        elif nl == pos + 2 and buf[pos + 1] == 0x0D and self.crlf_before:
                            self.done = True
                            pos = nl + 1
                            break
                    else:
                        # Postfix's smtp_get() drops every CR before the LF:
                        # ".", ".\r", ".\r\r"... then LF all end the data.
                        j = pos + 1
                        stop = min(buf_end, pos + 2 + MAX_DOT_CRS)
                        while j < stop and buf[j] == 0x0D:
                            j += 1
                        if j == buf_end and j - pos - 1 <= MAX_DOT_CRS:
                            break  # maybe the end: wait for more input
                        if j < buf_end and buf[j] == 0x0A:
                            self.done = True
                            pos = j + 1
                            break
                    pos += 1  # dot-unstuffing
                    self.prev_cr = False
                self.bol = False
                if pos >= end:
                    break
            k = buf.find(b"\n.", pos, end)
            seg_end = end if k < 0 else k + 1
            seg = bytes(buf[pos:seg_end])
            self._content(seg, out)
            pos = seg_end
            if seg[-1:] == b"\n":
                self.bol = True
        return b"".join(out), pos

    def _content(self, seg: bytes, out: list[bytes]) -> None:
        was_dropping = self.dropping
        keep: int | None = None  # emit only seg[:keep] (dropping starts inside seg)
        n_lf = seg.count(b"\n")
        if n_lf:
            lead = 1 if self.prev_cr and seg[0] == 0x0A else 0
            bare = n_lf - seg.count(b"\r\n") - lead
            if seg[-1] == 0x0A:
                self.crlf_before = (seg[-2] == 0x0D) if len(seg) > 1 else self.prev_cr
            if bare:
                self.bare_newlines += bare
                if self.reject:
                    if not was_dropping:
                        keep = _first_bare_lf(seg, lead)
                    self.bare_lf_rejected = True
                elif self.normalize:
                    body = seg[lead:].replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
                    seg = seg[:lead] + body
        self.prev_cr = seg[-1] == 0x0D
        before = self.size
        self.size += len(seg)
        if self.limit and self.size > self.limit:
            if not was_dropping:
                room = self.limit - before
                keep = room if keep is None else min(keep, room)
            self.too_big = True
        if was_dropping:
            return
        if keep is None:
            out.append(seg)
        elif keep > 0:
            out.append(seg[:keep])


def _first_bare_lf(seg: bytes, lead: int) -> int:
    """Index of the first LF in seg not preceded by CR (seg[0] is CRLF's LF if lead)."""
    i = seg.find(b"\n", lead)
    while i > 0 and seg[i - 1] == 0x0D:
        i = seg.find(b"\n", i + 1)
    return max(i, 0)


class BdatReader:
    """Reads exactly ``count`` raw bytes of one BDAT chunk."""

    __slots__ = ("remaining", "count", "discard")

    def __init__(self, count: int, discard: bool):
        self.count = count
        self.remaining = count
        self.discard = discard

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def read(self, buf: bytes | bytearray) -> tuple[bytes, int]:
        n = min(self.remaining, len(buf), MAX_PIECE)
        self.remaining -= n
        if self.discard:
            return b"", n
        return bytes(buf[:n]), n

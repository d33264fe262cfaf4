"""The message as milters see it at the end of DATA, and their changes.

Postfix's cleanup runs the milters after the whole message is in the queue
file and edits that file in place (cleanup_milter.c). hato does the same on
the queue file that is still being written: :class:`MilterMessage` reads
the headers and body back from it (:meth:`QueueWriter.written_content`),
keeps the changes the milters ask for (headers in memory, a replaced body in
a spool file, the envelope in cleanup's state), shows each milter the
message as the milters before it left it, and at :meth:`finish` writes the
message anew under the same queue id when anything changed
(:meth:`QueueWriter.restart`). Nothing is acknowledged before that file is
committed.

Postfix's rules, kept here:

* our own Received: header (the first header, added by smtpd or pickup) is
  hidden from the milters; header change/delete indexes count headers of
  that name without it, insert indexes count every header including it;
* a change or delete of a header that is not there: a change adds it, a
  delete does nothing;
* added, inserted and changed headers go through ``milter_header_checks``
  (REJECT, DISCARD, HOLD, FILTER, REDIRECT, BCC, WARN, INFO, IGNORE,
  REPLACE; PREPEND is not implemented, as in Postfix);
* a new sender or recipient goes through cleanup's address processing
  (canonical maps, masquerading, virtual aliases, duplicates); a recipient
  is deleted by the address the client gave, as Postfix matches it;
* ESMTP arguments: RET= and ENVID= with a new sender, NOTIFY= and ORCPT=
  with a new recipient; others are logged and ignored.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..policy import address as A
from ..policy.headerchecks import HEADER, is_header, parse_action
from .cleanup_defs import CleanupFlag, CleanupStatus
from .envelope import NOTIFY_BITS, Recipient, notify_from_mask

if TYPE_CHECKING:
    from ..tables.search import TableList
    from .inject import Injection

_SPOOL_MEMORY = 1 << 20  # a replaced body stays in memory up to this size


class MilterEditError(Exception):
    """A change could not be applied (the message is not accepted: 4xx)."""


class MilterMessage:
    """One message between the end of DATA and its commit."""

    def __init__(self, inj: Injection, *, header_checks: TableList | None = None):
        assert inj.state is not None and inj.env is not None
        self.inj = inj
        self.state = inj.state
        self.env = inj.env
        self.header_checks = header_checks
        self._headers: list[str] | None = None
        self._hidden: int | None = None  # index of our own Received: header
        self._body_start = 0  # offset of the body in the written content
        self._body: tempfile.SpooledTemporaryFile | None = None
        self._new_body: tempfile.SpooledTemporaryFile | None = None
        self.changed = False
        self.rewritten = False

    # -- what the milters read -----------------------------------------------------------

    def _load(self) -> list[str]:
        if self._headers is not None:
            return self._headers
        headers: list[str] = []
        offset = 0
        pending = b""
        done = False
        for chunk in self.inj.writer.written_content():
            pending += chunk
            while True:
                nl = pending.find(b"\n")
                if nl < 0:
                    break
                line = pending[:nl]
                text = line.decode("utf-8", "surrogateescape")
                if line == b"":
                    offset += 1
                    done = True
                elif headers and line[:1] in (b" ", b"\t"):
                    headers[-1] += "\n" + text
                    offset += nl + 1
                elif is_header(text):
                    headers.append(text)
                    offset += nl + 1
                else:
                    done = True  # a body line without the empty line before it
                if done:
                    break
                pending = pending[nl + 1:]
            if done:
                break
        self._headers = headers
        self._body_start = offset
        sub = self.state.sub
        own = sub.received is not None or sub.userid is not None
        if own and headers and headers[0].lower().startswith("received:"):
            self._hidden = 0
        return headers

    def headers(self) -> Iterator[tuple[str, bool]]:
        """Each logical header (lines joined by ``\\n``) and whether it is
        hidden from milters (our own Received:)."""
        headers = self._load()
        for i, text in enumerate(list(headers)):
            yield text, i == self._hidden

    def body_lines(self) -> Iterator[bytes]:
        """The body, line by line, without line ends."""
        self._load()
        if self._body is not None:
            self._body.seek(0)
            yield from _lines(iter(lambda: self._body.read(65536), b""))
            return
        yield from _lines(_skip(self.inj.writer.written_content(), self._body_start))

    # -- changes ---------------------------------------------------------------------------

    def apply(self, milter: str, edits) -> None:
        """The changes one milter asked for, in its order."""
        from ..proto import milter as M

        headers = self._load()
        self._new_body = None
        for edit in edits:
            if isinstance(edit, M.ReplaceBody):
                self._replace_body(edit.data)
                continue
            self._finish_body()
            if isinstance(edit, M.AddHeader):
                self._add_header(len(headers), edit.name, edit.value)
            elif isinstance(edit, M.InsertHeader):
                self._add_header(min(max(edit.index, 0), len(headers)), edit.name, edit.value)
            elif isinstance(edit, M.ChangeHeader):
                self._change_header(edit.index, edit.name, edit.value)
            elif isinstance(edit, M.ChangeSender):
                self._change_sender(edit.address, edit.esmtp_args or "")
            elif isinstance(edit, M.AddRecipient):
                self._add_recipient(edit.address, edit.esmtp_args or "")
            elif isinstance(edit, M.DeleteRecipient):
                self._delete_recipient(edit.address)
            elif isinstance(edit, M.Quarantine):
                self.state.flags |= CleanupFlag.HOLD
            else:  # pragma: no cover - the codec makes only the edits above
                raise MilterEditError(f"milter {milter}: unknown change {edit!r}")
        self._finish_body()

    def _replace_body(self, data: bytes) -> None:
        if self._new_body is None:
            self._new_body = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
        self._new_body.write(data)

    def _finish_body(self) -> None:
        if self._new_body is None:
            return
        new, self._new_body = self._new_body, None
        new.seek(0)
        # CRLF line ends (as the milter sends them) become LF, as stored.
        out = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
        for line in _lines(iter(lambda: new.read(65536), b"")):
            out.write(line + b"\n")
        new.close()
        if self._body is not None:
            self._body.close()
        self._body = out
        self.changed = True

    def _checked(self, text: str) -> str | None:
        """milter_header_checks on a header a milter added or changed."""
        maps = self.header_checks
        if maps is None or not self.state.flags & CleanupFlag.FILTER:
            return text
        from ..tables.base import TableRetry

        try:
            value = maps.get(text)
        except TableRetry:
            self.state._warn("milter_header_checks map lookup problem -- "
                             "message not accepted, try again later")
            self.state.errs |= CleanupStatus.WRITE
            return None
        if value is None:
            return text
        action = parse_action(value, HEADER, "milter_header_checks")
        if action.warning:
            self.state._warn(action.warning)
            return text
        return self._act(action, text)

    def _act(self, action, text: str) -> str | None:
        st = self.state
        cmd = action.command
        if cmd == "REJECT":
            st.reason = action.reason
            st.errs |= CleanupStatus.DEFER if action.defer else CleanupStatus.CONT
            st.flags &= ~CleanupFlag.FILTER
            self._hbc_log("reject", text, action.reason)
        elif cmd == "DISCARD":
            self._hbc_log("discard", text, action.text)
            st.flags |= CleanupFlag.DISCARD
            st.flags &= ~CleanupFlag.FILTER
        elif cmd == "HOLD":
            if not st.flags & (CleanupFlag.HOLD | CleanupFlag.DISCARD):
                self._hbc_log("hold", text, action.text)
                st.flags |= CleanupFlag.HOLD
        elif cmd == "FILTER":
            st.filter = action.text
            self._hbc_log("filter", text, action.text)
        elif cmd == "REDIRECT":
            st.redirect = action.text
            self._hbc_log("redirect", text, action.text)
            st.flags &= ~CleanupFlag.FILTER
        elif cmd == "BCC":
            self._hbc_log("bcc", text, action.text)
            self._add_recipient(action.text, "")
        elif cmd in ("WARN", "INFO"):
            self._hbc_log("warning" if cmd == "WARN" else "info", text, action.text)
        elif cmd in ("IGNORE", "STRIP"):
            return None
        elif cmd == "REPLACE":
            return action.text
        elif cmd == "PREPEND":
            st._warn("the milter_header/body_checks prepend action is not implemented")
        return text

    def _hbc_log(self, word: str, text: str, optional: str) -> None:
        """Postfix's cleanup_milter_hbc_log() line."""
        st = self.state
        sub = st.sub
        out = f"{st.qid}: milter-header-{word}: header {text[:60]} from {sub.origin};"
        if st.sender is not None:
            out += f" from=<{st._log_addr(st.sender)}>"
        if st.recip is not None:
            out += f" to=<{st._log_addr(st.recip)}>"
        if sub.proto:
            out += f" proto={sub.proto}"
        if sub.helo:
            out += f" helo=<{sub.helo}>"
        if optional:
            out += f": {optional}"
        st._log("info", out)

    def _add_header(self, at: int, name: str, value: str) -> None:
        text = self._checked(_header_text(name, value))
        if text is None:
            return
        headers = self._load()
        headers.insert(at, text)
        if self._hidden is not None and at <= self._hidden:
            self._hidden += 1
        self.changed = True

    def _change_header(self, index: int, name: str, value: str | None) -> None:
        headers = self._load()
        want = name.lower()
        count = 0
        for i, text in enumerate(headers):
            if i == self._hidden or _header_name(text) != want:
                continue
            count += 1
            if count == index:
                if value is None:
                    del headers[i]
                    if self._hidden is not None and i < self._hidden:
                        self._hidden -= 1
                else:
                    new = self._checked(_header_text(name, value))
                    if new is None:
                        return
                    headers[i] = new
                self.changed = True
                return
        if value is not None:
            self._add_header(len(headers), name, value)

    def _change_sender(self, address: str, args: str) -> None:
        st = self.state
        for arg in args.split():
            key, _, val = arg.partition("=")
            if key.upper() == "RET" and val.upper() in ("FULL", "HDRS"):
                self.env.ret = val.upper()
            elif key.upper() == "ENVID" and val:
                self.env.envid = _xtext_decode(val)
            else:
                st._log("warning", f'Ignoring bad ESMTP parameter "{arg}" in SMFI_CHGFROM '
                                   f'request')
        found = A.parse_address_list(address)
        if len(found) > 1:
            st._warn(f'Milter request to add multi-sender: "{address}"')
        st.sender = st._envelope_sender(found[0] if found else "")
        self.changed = True

    def _add_recipient(self, address: str, args: str) -> None:
        st = self.state
        notify = 0
        orcpt = ""
        for arg in args.split():
            key, _, val = arg.partition("=")
            if key.upper() == "NOTIFY" and not notify and _notify_mask(val):
                notify = _notify_mask(val)
            elif key.upper() == "NOTIFY":
                st._warn(f'Bad NOTIFY parameter from Milter or header/body_checks: '
                         f'"{arg[:100]}"')
            elif key.upper() == "ORCPT" and ";" in val and not orcpt:
                kind, _, rest = val.partition(";")
                orcpt = f"{kind};{_xtext_decode(rest)}"
            elif key.upper() == "ORCPT":
                st._warn(f'Bad ORCPT parameter from Milter or header/body_checks: '
                         f'"{arg[:100]}"')
            else:
                st._warn(f'ignoring ESMTP argument from Milter or header/body_checks: '
                         f'"{arg[:100]}"')
        found = A.parse_address_list(address)
        if not found:
            st._warn("ignoring attempt from Milter to add null recipient")
            return
        if len(found) > 1:
            st._warn(f'Milter or header/body_checks request to add multi-recipient: '
                     f'"{address}"')
        st.add_recipient(found[0], notify, orcpt)
        self.changed = True

    def _delete_recipient(self, address: str) -> None:
        st = self.state
        found = A.parse_address_list(address)
        if len(found) > 1:
            st._warn(f'Milter request to drop multi-recipient: "{address}"')
        want = found[0] if found else ""
        keep = [r for r in st.recipients if (r.orig_address or r.address) != want]
        if len(keep) != len(st.recipients):
            st.recipients[:] = keep
            st.rcpt_count = len(keep)
            self.changed = True

    # -- the end -----------------------------------------------------------------------------

    def finish(self) -> None:
        """Decide with what the milters changed; write the message anew when
        they changed it (the caller commits)."""
        inj = self.inj
        st = self.state
        result = inj.result = st.result()
        if not result.ok or result.discard or not self.changed:
            self._close()
            return
        env = self.env
        env.sender = st.sender
        env.recipients = [Recipient(r.address, r.orig_address, r.notify, r.orcpt)
                          for r in st.recipients]
        result.recipients = list(env.recipients)
        writer = inj.writer
        headers = self._load()
        # The body is read from the file before it is emptied.
        body = self._body
        if body is None:
            body = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)
            for chunk in _skip(writer.written_content(), self._body_start):
                body.write(chunk)
        writer.restart(env)
        for text in headers:
            writer.write_content(text.encode("utf-8", "surrogateescape") + b"\n")
        writer.write_content(b"\n")
        body.seek(0)
        for chunk in iter(lambda: body.read(65536), b""):
            writer.write_content(chunk)
        body.close()
        self._body = None
        result.size = writer.content_length
        self.rewritten = True

    def _close(self) -> None:
        for spool in (self._body, self._new_body):
            if spool is not None:
                spool.close()
        self._body = self._new_body = None


def _header_text(name: str, value: str) -> str:
    """``name:value`` (the value starts with the space the milter's protocol
    implies), its line breaks (LF or CRLF) as stored: LF."""
    return f"{name}:{value}".replace("\r\n", "\n")


def _header_name(text: str) -> str:
    return text.split(":", 1)[0].rstrip(" \t").lower()


def _notify_mask(value: str) -> int:
    words = [w.upper() for w in value.split(",") if w]
    if not words or any(w not in NOTIFY_BITS for w in words):
        return 0
    if "NEVER" in words and len(words) > 1:
        return 0
    mask = 0
    for w in words:
        mask |= NOTIFY_BITS[w]
    notify_from_mask(mask)  # validates
    return mask


def _xtext_decode(text: str) -> str:
    out = []
    i = 0
    while i < len(text):
        if text[i] == "+" and i + 2 < len(text) + 0 and len(text[i + 1:i + 3]) == 2:
            try:
                out.append(chr(int(text[i + 1:i + 3], 16)))
                i += 3
                continue
            except ValueError:
                pass
        out.append(text[i])
        i += 1
    return "".join(out)


def _skip(chunks: Iterator[bytes], count: int) -> Iterator[bytes]:
    for chunk in chunks:
        if count >= len(chunk):
            count -= len(chunk)
            continue
        yield chunk[count:] if count else chunk
        count = 0


def _lines(chunks) -> Iterator[bytes]:
    """Lines without their LF (or CRLF); a last line without one too."""
    rest = b""
    for chunk in chunks:
        data = rest + chunk if rest else chunk
        parts = data.split(b"\n")
        rest = parts.pop()
        for line in parts:
            yield line[:-1] if line.endswith(b"\r") else line
    if rest:
        yield rest


__all__ = ["MilterEditError", "MilterMessage"]

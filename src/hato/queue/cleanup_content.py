"""cleanup(8)'s content pass, as a part of
:class:`hato.queue.cleanup.CleanupState`: what the MIME state machine
(:mod:`hato.queue.mime`) calls for each header (header_checks and their
actions, address header rewriting, the headers cleanup drops, counts or
remembers), at the end of the headers (the missing headers added) and for
each body line (body_checks). See :mod:`hato.queue.cleanup` for what the
whole pass does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..policy import address as A
from ..policy.headerchecks import (
    BODY,
    HEADER,
    Action,
    HeaderClass,
)
from ..tables.base import TableRetry
from .cleanup_defs import (
    FLAG_BITS,
    INFO,
    OPT_DROP,
    OPT_MIME,
    OPT_RECIP,
    OPT_RR,
    OPT_SENDER,
    OPT_XRECIP,
    STATUS_BITS,
    WARNING,
    HeaderOpts,
    find_header_opts,
    mail_date,
    message_id_stamp,
)
from .mime import (
    MIME_ERR_TRUNC_HEADER,
    header_name_length,
    mime_error_text,
)

if TYPE_CHECKING:
    from .cleanup import Cleanup
    from .cleanup_defs import Submission

#: Header values remembered per service before the memo starts again,
#: and the longest value remembered (a long list of recipients seldom
#: comes twice, and the memo must stay small).
HEADER_MEMO_SIZE = 4096
HEADER_MEMO_VALUE = 256
_UNSEEN = object()

# The bits as plain ints.
_F, _S = FLAG_BITS, STATUS_BITS


class ContentPass:
    """A part of CleanupState: what _Mime calls for each header, the end of
    the headers and each body line."""

    # CleanupState's state and helpers that these methods use (declared for
    # mypy, and for the compiled build: docs/compiled.md)
    svc: Cleanup
    sub: Submission
    qid: str
    flags: int
    errs: int
    sender: str
    recip: str | None
    reason: str | None
    filter: str | None
    redirect: str | None
    encoding: str | None
    message_id: str | None
    hbc_rcpt: list[str]
    hop_count: int
    headers_seen: set[str]
    xrcpt: list[str]
    xrcpt_resent: list[str]
    xresent: bool
    hdr_context: str | None

    @property
    def out_ok(self) -> bool:
        raise NotImplementedError

    def _log(self, level: str, text: str) -> None:
        raise NotImplementedError

    def _warn(self, text: str) -> None:
        raise NotImplementedError

    def _lookup_failed(self, err: TableRetry, what: str) -> None:
        raise NotImplementedError

    def _out(self, rec_type: str, data: bytes) -> None:
        raise NotImplementedError

    def _out_string(self, text: str) -> None:
        raise NotImplementedError

    def _out_header(self, header: str) -> None:
        raise NotImplementedError

    def _fold_header(self, header: str) -> None:
        raise NotImplementedError

    def _check(self, lookup, title: str, *args) -> Action | None:
        """A header or body check's lookup; a table that fails for now
        refuses the message for now (4xx), as Postfix: no action then."""
        try:
            return lookup(*args)
        except TableRetry:
            self._warn(f"{title} map lookup problem -- message not accepted, try again later")
            self.errs |= _S.WRITE
            return None

    def find_opts(self, header: str) -> HeaderOpts | None:
        return find_header_opts(self.svc.header_table, header)

    def _log_addr(self, address: str | None) -> str | None:
        """An address as info_log_address_format wants it in log lines."""
        if address is None or not address or not self.svc.log_external:
            return address
        return A.quote_822_local(address)

    def mime_error(self, code: int, text: bytes) -> None:
        if code & ~MIME_ERR_TRUNC_HEADER:
            shown = text[:100].decode("utf-8", "surrogateescape")
            self._log(INFO, f"{self.qid}: reject: mime-error {mime_error_text(code)}: {shown} "
                            f"from {self.sub.origin}; from=<{self._log_addr(self.sender)}> "
                            f"to=<{self._log_addr(self.recip) or 'unknown'}>")

    def _act(self, context: str, content: str, action: Action, map_class: str) -> str | None:
        """cleanup_act(): apply a header/body check action. Returns the
        line to use (the original, or a replacement), or None to drop it."""
        if action.warning:
            self._log(WARNING, action.warning)
            return content
        if action.note:
            self._log(WARNING, action.note)
        cmd = action.command

        def logit() -> None:
            line = action.log_text(self.qid, context, content, origin=self.sub.origin,
                                   sender=self._log_addr(self.sender),
                                   recipient=self._log_addr(self.recip),
                                   proto=self.sub.proto, helo=self.sub.helo)
            if line:
                self._log(INFO, line)

        if cmd == "REJECT":
            self.reason = action.reason
            self.errs |= _S.DEFER if action.defer else _S.CONT
            self.flags &= ~_F.FILTER
            logit()
        elif cmd in ("WARN", "INFO"):
            logit()
        elif cmd == "FILTER":
            self.filter = action.text
            logit()
        elif cmd == "PASS":
            logit()
            self.flags &= ~_F.FILTER
        elif cmd == "DISCARD":
            logit()
            self.flags |= _F.DISCARD
            self.flags &= ~_F.FILTER
        elif cmd == "HOLD":
            if not self.flags & (_F.HOLD | _F.DISCARD):
                logit()
                self.flags |= _F.HOLD
        elif cmd == "PREPEND":
            logit()
            if context == HEADER:
                self._out_header(action.text)
            else:
                self._out_string(action.text)
        elif cmd == "REPLACE":
            logit()
            return action.text
        elif cmd == "REDIRECT":
            self.redirect = action.text
            logit()
            self.flags &= ~_F.FILTER
        elif cmd == "BCC":
            self.hbc_rcpt.append(action.text)
            logit()
        elif cmd == "STRIP":
            logit()
            return None
        elif cmd == "IGNORE":
            return None
        return content

    def header(self, klass: HeaderClass, info: HeaderOpts | None, text: str) -> None:
        """cleanup_header_callback(): one complete logical header."""
        if not self.out_ok:
            return
        if info is not None and info.flags & OPT_MIME:
            klass = HeaderClass.MULTIPART
        if info is not None and info.type == "received":
            self.hop_count += 1
        if (self.sub.extract_recipients and klass == HeaderClass.PRIMARY and info is not None
                and info.flags & OPT_XRECIP == OPT_XRECIP
                and (not self.xresent or info.flags & OPT_RR)):
            target = self.xrcpt
            if info.flags & OPT_RR:
                target = self.xrcpt_resent
                self.xresent = True
            target.extend(A.parse_address_list(text[len(info.name) + 1:]))
        if self.flags & _F.FILTER:
            checks = self.svc.checks.tables_for(klass)
            if checks is not None:
                action = self._check(self.svc.checks.check_header, checks.title, klass, text)
                if action is not None:
                    result = self._act(HEADER, text, action, checks.title)
                    if result is None:
                        return
                    if result != text:
                        text = result
                        info = self.find_opts(text)
                    if not self.out_ok:
                        return
        if info is None:
            self._out_header(text)
            return
        value = text[len(info.name) + 1:].lstrip(" \t\r\n\f\v")
        if (self.svc.auto_8bit and info.type == "content-transfer-encoding"
                and value.lower() in ("8bit", "binary")):
            self.encoding = "8bit"
        if klass != HeaderClass.PRIMARY:
            self._out_header(text)
            return
        self.headers_seen.add(info.type)
        if info.type == "message-id":
            self.message_id = value
            self._log(INFO, f"{self.qid}: message-id={value}")
        elif info.type == "resent-message-id":
            self._log(INFO, f"{self.qid}: resent-message-id={value}")
        elif info.type == "received" and self.hop_count >= self.svc.hopcount_limit:
            self._warn("message rejected: hopcount exceeded")
            self.errs |= _S.HOPS
        if not self.out_ok:
            return
        if info.flags & OPT_RR:
            self.resent = "Resent-"
        if info.flags & (OPT_SENDER | OPT_RECIP) and self.hdr_context is not None:
            self._rewrite_header(info, text, sender=bool(info.flags & OPT_SENDER))
        elif not info.flags & OPT_DROP:
            self._out_header(text)

    def _rewrite_header(self, info: HeaderOpts, text: str, *, sender: bool) -> None:
        """cleanup_rewrite_sender()/cleanup_rewrite_recip()."""
        assert self.hdr_context is not None
        svc = self.svc
        name_len = len(info.name)
        value = text[name_len + 1:]
        map_ok = bool(self.flags & _F.MAP_OK)
        # Without tables or masquerading for this class the result depends
        # on the value and the settings alone, and the same From: and To:
        # values come again and again: remembered per service.
        memo = (svc.header_memo if len(value) <= HEADER_MEMO_VALUE
                and not (map_ok and svc.rewriter.header_tables(sender)) else None)
        if memo is not None:
            key = (self.hdr_context, sender, value)
            new = memo.get(key, _UNSEEN)
        if memo is None or new is _UNSEEN:
            tree = A.parse(value, svc.token_limit)
            did_rewrite = False
            for node in A.grep(tree, A.ADDR):
                try:
                    did_rewrite |= svc.rewriter.header_address(
                        node, sender=sender, context=self.hdr_context, map_ok=map_ok,
                        warn=self._warn)
                except TableRetry as err:
                    self._lookup_failed(err, "header address mapping")
            new = A.externalize(tree, lines=True) if did_rewrite else None
            if memo is not None:
                if len(memo) >= HEADER_MEMO_SIZE:
                    memo.clear()
                memo[key] = new
        if info.flags & OPT_DROP:
            return
        if isinstance(new, str):  # (None: unchanged)
            self._fold_header(text[:name_len] + ": " + new)
        else:
            self._out_header(text)

    def header_end(self) -> None:
        """cleanup_header_done_callback(): add missing headers."""
        if not self.out_ok:
            return
        svc = self.svc
        sub = self.sub
        add = self.hdr_context is not None or svc.always_add
        resent = self.resent
        mid_type = "resent-message-id" if resent else "message-id"
        if add and mid_type not in self.headers_seen:
            if svc.long_ids:
                mid = f"{self.qid}@{svc.myhostname}"
            else:
                when = sub.queue_time if sub.queue_time is not None else sub.arrival_time
                mid = f"{message_id_stamp(when)}.{self.qid}@{svc.myhostname}"
            self._out_string(f"{resent}Message-Id: <{mid}>")
            self._log(INFO, f"{self.qid}: {'resent-' if resent else ''}message-id=<{mid}>")
            if not resent:
                self.message_id = f"<{mid}>"
            self.headers_seen.add(mid_type)
        if "message-id" not in self.headers_seen:
            self._log(INFO, f"{self.qid}: message-id=<>")
        date_type = "resent-date" if resent else "date"
        if add and date_type not in self.headers_seen:
            self._out_string(f"{resent}Date: {mail_date(sub.arrival_time, sub.tz)}")
        from_type = "resent-from" if resent else "from"
        if add and from_type not in self.headers_seen:
            self._out_string(self._from_header(resent))
        seen_rcpt = self.headers_seen & {"to", "resent-to", "cc", "resent-cc"}
        if add and not seen_rcpt and svc.undisclosed:
            if header_name_length(svc.undisclosed.encode("utf-8", "surrogateescape")) == 0:
                self._log(WARNING, f'bad undisclosed_recipients_header header text '
                                   f'"{svc.undisclosed}" -- need "headername: headervalue"')
            else:
                self._out_string(svc.undisclosed)

    def _from_header(self, resent: str) -> str:
        sender = self.sender
        addr = A.quote_822_local(sender or "MAILER-DAEMON")
        full = self.sub.full_name
        if sender and full:
            full = full.replace("\r", " ").replace("\n", " ")
            if self.svc.from_format != "obsolete":
                if not any(c in '%!' + A.LEX_822_SPECIALS for c in full):
                    tokens = A.scan(full, self.svc.token_limit)
                else:
                    tokens = A.Tok(A.QSTRING, full)
                phrase = A.externalize(tokens) + " " if tokens is not None else ""
                return f"{resent}From: {phrase}<{addr}>"
            comment = A.parse(f"({full})")
            return f"{resent}From: {addr} {A.externalize(comment)}"
        return f"{resent}From: {addr}"

    def body(self, rec_type: str, data: bytes, offset: int) -> None:
        """cleanup_body_callback(): one body record."""
        if not self.out_ok:
            return
        checks = self.svc.checks
        if self.flags & _F.FILTER and checks.body_checks is not None:
            limit = checks.body_checks_size_limit
            if limit == 0 or offset < limit:
                line = data.decode("utf-8", "surrogateescape")
                action = self._check(checks.check_body, checks.body_checks.title, line)
                if action is not None:
                    result = self._act(BODY, line, action, checks.body_checks.title)
                    if result is None:
                        return
                    if result != line:
                        self._out(rec_type, result.encode("utf-8", "surrogateescape"))
                        return
        self._out(rec_type, data)

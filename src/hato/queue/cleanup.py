"""The message pass of cleanup(8), as a streaming state machine.

:class:`Cleanup` is one cleanup service: its settings read and its tables
(canonical, virtual alias, header/body checks, bcc maps) opened once.
:meth:`Cleanup.open` starts one message from its envelope facts
(:class:`Submission`); :meth:`CleanupState.feed` takes the raw message in
chunks of any size (CRLF or LF line endings, 8-bit, NUL bytes) and
:meth:`CleanupState.finish` returns a :class:`CleanupResult`. The content
to store comes out as queue records through the *output* callback while
the message streams in: ``(records.NORM, line)`` for a line, ``(records.CONT,
piece)`` for a piece of a line longer than ``line_length_limit``. Only one
header block (at most ``header_size_limit`` bytes plus one line) and one
line are held in memory at a time.

What it does, as Postfix's cleanup_envelope.c, cleanup_message.c,
cleanup_addr.c, cleanup_extracted.c and mime_state.c do:

* envelope: the sender and each recipient are rewritten in the local
  context, mapped (``sender_canonical_maps``/``recipient_canonical_maps``,
  ``canonical_maps``), masqueraded; recipients are expanded through
  ``virtual_alias_maps`` and duplicates dropped (``duplicate_filter_limit``);
  ``sender_bcc_maps``, ``recipient_bcc_maps`` and ``always_bcc`` add blind
  copies; with ``sendmail -t`` (``extract_recipients``) the recipients of
  To:/Cc:/Bcc: (or of the Resent- headers when there are any) are added;
* a ``Received:`` header first: the one smtpd passes, or for a local
  submission ``Received: by $myhostname ($mail_name, from userid N)``;
* headers: a folded header is one logical header (matched by header_checks
  as such, lines joined by ``\\n``); headers longer than
  ``header_size_limit`` are cut; ``header_checks`` (primary headers),
  ``mime_header_checks`` (MIME part headers and primary ``Content-*``),
  ``nested_header_checks`` (attached messages) and ``body_checks`` apply
  with all their actions; ``message_drop_headers`` (Bcc, Return-Path, ...)
  are removed; address headers are rewritten in the header context
  (``local``, or ``remote`` with ``remote_header_rewrite_domain``, or not at
  all); ``Received:`` headers are counted against ``hopcount_limit``;
* missing headers: ``Message-Id: <YYYYMMDDhhmmss.QID@$myhostname>``,
  ``Date:``, ``From:`` and ``$undisclosed_recipients_header`` for local
  submissions (or any, with ``always_add_missing_headers``);
* limits: ``message_size_limit`` (status SIZE, "message file too big"),
  ``line_length_limit`` (long lines become CONT pieces), MIME nesting;
  ``message_strip_characters``, ``message_reject_characters`` and
  ``cleanup_replace_stray_cr_lf``.

Logging is the caller's: every line Postfix's cleanup would log
(``QID: message-id=<...>``, ``QID: warning: header Subject: ...``) is given
to the *log* callback as ``(level, text)``, and kept in
:attr:`CleanupResult.log`. Time is never read here: the arrival time comes
with the submission.

The per-header and per-body-line work (header_checks, body_checks, address
header rewriting, the missing headers) is :mod:`hato.queue.cleanup_content`;
the flags, statuses, results and header classification are
:mod:`hato.queue.cleanup_defs`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..config.settings import Settings
from ..policy.headerchecks import (
    CONTENT,
    HeaderChecks,
    parse_action,
)
from ..policy.rewrite import LOCAL, REMOTE, DuplicateFilter, LookupDefer, Rewriter, open_maps
from ..tables.base import TableRetry
from ..tables.search import TableList
from . import records as R
from .cleanup_content import ContentPass
from .cleanup_defs import (
    EXTERNAL,
    FLAG_BITS,
    INTERNAL,
    MASK_CANT_BOUNCE,
    MASK_INCOMPLETE,
    STATUS_BITS,
    WARNING,
    CleanupFlag,
    CleanupResult,
    CleanupStatus,
    HeaderOpts,
    Submission,
    fold_address_header,
    header_table,
    local_received,
    mail_date,
    message_id_stamp,
    status_detail,
)
from .envelope import NOTIFY_BITS, Recipient, notify_from_mask, notify_mask
from .mime import (
    _ST_BODY,
    MIME_ERR_8BIT_IN_7BIT_BODY,
    MIME_ERR_8BIT_IN_HEADER,
    MIME_ERR_ENCODING_DOMAIN,
    MIME_ERR_NESTING,
    MIME_ERR_TRUNC_HEADER,
    _Mime,
    mime_error_text,
)

Output = Callable[[str, bytes], None]
LogSink = Callable[[str, str], None]


def _unescape(text: str) -> bytes:
    """Postfix's unescape(): C escapes (``\\r``, ``\\n``, ``\\t``, octal)."""
    out = bytearray()
    raw = text.encode("utf-8", "surrogateescape")
    i = 0
    simple = {ord("a"): 7, ord("b"): 8, ord("f"): 12, ord("n"): 10, ord("r"): 13,
              ord("t"): 9, ord("v"): 11}
    while i < len(raw):
        c = raw[i]
        if c == 0x5C and i + 1 < len(raw):
            i += 1
            c = raw[i]
            if c in simple:
                out.append(simple[c])
                i += 1
                continue
            if 0x30 <= c <= 0x37:
                j, val = i, 0
                while j < len(raw) and j < i + 3 and 0x30 <= raw[j] <= 0x37:
                    val = val * 8 + raw[j] - 0x30
                    j += 1
                out.append(val & 0xFF)
                i = j
                continue
        out.append(c)
        i += 1
    return bytes(out)


class Cleanup:
    """One cleanup service: settings and tables, shared by its messages."""

    def __init__(self, settings: Settings, *, rewriter: Rewriter | None = None,
                 checks: HeaderChecks | None = None):
        s = settings
        self.settings = s
        self.rewriter = rewriter or Rewriter(s)
        self.checks = checks or HeaderChecks(s)
        self.sender_bcc_maps = open_maps(s, "sender_bcc_maps")
        self.recipient_bcc_maps = open_maps(s, "recipient_bcc_maps")
        self.always_bcc = s.str("always_bcc")
        self.myhostname = s.str("myhostname")
        self.mail_name = s.str("mail_name")
        self.header_table = header_table(s.list("message_drop_headers"))
        self.header_limit = s.int("header_size_limit")
        self.line_limit = s.int("line_length_limit")
        self.hopcount_limit = s.int("hopcount_limit")
        self.size_limit = s.size("message_size_limit")
        self.token_limit = s.int("header_address_token_limit")
        self.delay_warning_time = s.time("delay_warning_time")  # for the envelope (inject)
        #: (context, sender class, header value) → the rewritten value, or
        #: None when it stays as it is (CleanupState._rewrite_header).
        self.header_memo: dict[tuple[str, bool, str], str | None] = {}
        self.duplicate_limit = s.int("duplicate_filter_limit")
        self.enable_orcpt = s.bool("enable_original_recipient")
        self.always_add = s.bool("always_add_missing_headers")
        self.undisclosed = s.str("undisclosed_recipients_header")
        self.from_format = s.str("header_from_format").lower()
        self.long_ids = s.bool("enable_long_queue_ids")
        self.auto_8bit = s.bool("detect_8bit_encoding_header")
        self.replace_stray = s.bool("cleanup_replace_stray_cr_lf")
        self.strip_chars = _unescape(s.str("message_strip_characters"))
        self.reject_chars = _unescape(s.str("message_reject_characters"))
        self.disable_mime = s.bool("disable_mime_input_processing")
        self.strict_8bitmime = s.bool("strict_8bitmime")
        self.strict_7bit_headers = s.bool("strict_7bit_headers")
        self.strict_8bit_body = s.bool("strict_8bitmime_body")
        self.strict_encoding = s.bool("strict_mime_encoding_domain")
        self.mime_depth = s.int("mime_nesting_limit")
        self.log_external = s.str("info_log_address_format").lower() != "internal"
        self.bound_len = s.int("mime_boundary_length_limit")
        flags = EXTERNAL
        overrides = set(s.list("receive_override_options"))
        if "no_address_mappings" in overrides:
            flags &= ~(CleanupFlag.BCC_OK | CleanupFlag.MAP_OK)
        if "no_header_body_checks" in overrides:
            flags &= ~CleanupFlag.FILTER
        self.default_flags = flags

    def open(self, submission: Submission, output: Output | None = None,
             log: LogSink | None = None,
             output_lines: Callable[[list[bytes]], None] | None = None) -> CleanupState:
        """Start one message. Without *output*, the records are kept in
        :attr:`CleanupState.records` (tests). *output_lines*, when given,
        takes runs of plain body lines (NORM records) in one call."""
        return CleanupState(self, submission, output, log, output_lines)

    def close(self) -> None:
        self.rewriter.close()
        self.checks.close()
        for maps in (self.sender_bcc_maps, self.recipient_bcc_maps):
            if maps is not None:
                maps.close()


def _dsn_notify(r: str | Recipient) -> tuple[str, str, int, str]:
    """(address, original address, notify mask, orcpt) of an input recipient."""
    if isinstance(r, Recipient):
        return r.address, r.orig_address or r.address, notify_mask(r.notify), r.orcpt
    return r, r, 0, ""


# The bits as plain ints, for CleanupState's hot paths.
_F, _S = FLAG_BITS, STATUS_BITS


class CleanupState(ContentPass):
    """One message going through cleanup (Postfix's CLEANUP_STATE)."""

    def __init__(self, service: Cleanup, sub: Submission, output: Output | None,
                 log: LogSink | None,
                 output_lines: Callable[[list[bytes]], None] | None = None):
        self.svc = service
        self.sub = sub
        self.qid = sub.queue_id
        self.records: list[tuple[str, bytes]] = []
        self._output = output or (lambda t, d: self.records.append((t, d)))
        if output_lines is None:
            out = self._output
            if output is None:
                output_lines = lambda lines: self.records.extend(  # noqa: E731
                    (R.NORM, line) for line in lines)
            else:
                def output_lines(lines: list[bytes]) -> None:
                    for line in lines:
                        out(R.NORM, line)
        self._output_lines = output_lines
        self.log_lines: list[tuple[str, str]] = []
        self._log_sink = log
        flags = service.default_flags if sub.flags is None else sub.flags
        # plain ints: IntFlag arithmetic runs Python code for each operation
        self.flags = int(flags)
        self.errs = 0
        self.err_mask = int(MASK_INCOMPLETE) if self.flags & _F.BOUNCE else ~0
        self.reason: str | None = None
        self.filter: str | None = None
        self.redirect: str | None = None
        self.encoding: str | None = None  # "8bit" when a Content-Transfer-Encoding says so
        self.eight_bit = False  # a byte over 127 in the content
        self.message_id: str | None = None
        self.hbc_rcpt: list[str] = []
        self.hop_count = 0
        self.headers_seen: set[str] = set()
        self.resent = ""
        self.size = 0
        self.recipients: list[Recipient] = []
        self.rcpt_count = 0
        self.recip: str | None = None  # the last recipient, for log lines
        self.dups = DuplicateFilter(service.duplicate_limit)
        self.xrcpt: list[str] = []  # extracted from To/Cc/Bcc
        self.xrcpt_resent: list[str] = []
        self.xresent = False
        context = sub.rewrite_context
        self.hdr_context: str | None = (
            LOCAL if context == LOCAL
            else REMOTE if context == REMOTE and service.rewriter.remote.domain else None)
        self._pending = bytearray()
        self._finished = False
        self._skip_body_checks = False

        report = 0
        if self.flags & _F.FILTER and not service.disable_mime:
            if service.strict_8bitmime or service.strict_7bit_headers:
                report |= MIME_ERR_8BIT_IN_HEADER
            if service.strict_8bitmime or service.strict_8bit_body:
                report |= MIME_ERR_8BIT_IN_7BIT_BODY
            if service.strict_encoding:
                report |= MIME_ERR_ENCODING_DOMAIN
            if (service.strict_8bitmime or service.strict_7bit_headers
                    or service.strict_8bit_body or service.strict_encoding
                    or service.checks.any_header_checks):
                report |= MIME_ERR_NESTING
        self.mime = _Mime(self, disable=service.disable_mime, report=report,
                          header_limit=service.header_limit, max_depth=service.mime_depth,
                          bound_len=service.bound_len)

        self.sender = self._envelope_sender(sub.sender)
        for r in sub.recipients:
            self._envelope_recipient(*_dsn_notify(r))
        received = sub.received
        if received is None and sub.userid is not None:
            received = local_received(service.myhostname, service.mail_name, sub.userid,
                                      sub.pickup_id or self.qid,
                                      sub.submit_time if sub.submit_time is not None
                                      else sub.arrival_time, sub.tz)
        if received:
            for line in received.encode("utf-8", "surrogateescape").split(b"\n"):
                self._record(R.NORM, line.rstrip(b"\r"))

    # -- logging and errors --------------------------------------------------------------

    def _log(self, level: str, text: str) -> None:
        self.log_lines.append((level, text))
        if self._log_sink is not None:
            self._log_sink(level, text)

    def _warn(self, text: str) -> None:
        self._log(WARNING, f"{self.qid}: {text}")

    @property
    def out_ok(self) -> bool:
        """CLEANUP_OUT_OK(): output still makes sense."""
        return not (self.errs & self.err_mask) and not self.flags & _F.DISCARD

    def _lookup_failed(self, err: TableRetry, what: str) -> None:
        if isinstance(err, LookupDefer):
            self._warn(err.text)
            self.errs |= _S.WRITE if err.retry else _S.DEFER
            if err.dsn_reason:
                self.reason = err.dsn_reason
        else:
            self._warn(f"{what} lookup problem -- message not accepted, try again later")
            self.errs |= _S.WRITE

    # -- envelope ------------------------------------------------------------------------

    def _envelope_sender(self, sender: str) -> str:
        map_ok = bool(self.flags & _F.MAP_OK)
        try:
            clean = self.svc.rewriter.sender(sender, map_ok=map_ok, warn=self._warn)
        except TableRetry as err:
            self._lookup_failed(err, "sender address mapping")
            clean = self.svc.rewriter.rewrite(sender) if sender else ""
        if self.flags & _F.BCC_OK and clean and self.svc.sender_bcc_maps is not None:
            self._bcc_lookup(self.svc.sender_bcc_maps, clean)
        return clean

    def _bcc_lookup(self, maps: TableList, address: str) -> None:
        try:
            found = self.svc.rewriter.finder.find(maps, address)
        except TableRetry as err:
            self._lookup_failed(err, f"{maps.title} map")
            return
        if found is not None:
            self._bcc(found.value)

    def _envelope_recipient(self, rcpt: str, orig: str, notify: int, orcpt: str) -> None:
        map_ok = bool(self.flags & _F.MAP_OK)
        rw = self.svc.rewriter
        try:
            clean = rw.recipient(rcpt, map_ok=map_ok, warn=self._warn)
        except TableRetry as err:
            self._lookup_failed(err, "recipient address mapping")
            clean = rw.rewrite(rcpt or rw.empty_address_recipient)
        # Without a DSN ORCPT from the client, the rewritten recipient is it.
        self._out_recipient(orcpt or f"rfc822;{clean}", notify, orig, clean)
        self.recip = clean
        if self.flags & _F.BCC_OK and clean and self.svc.recipient_bcc_maps is not None:
            self._bcc_lookup(self.svc.recipient_bcc_maps, clean)

    def _bcc(self, address: str) -> None:
        """cleanup_addr_bcc(): an automatic BCC recipient, without DSN
        notifications (NOTIFY=NEVER) or ORCPT."""
        self.add_recipient(address, NOTIFY_BITS["NEVER"], "")

    def add_recipient(self, address: str, notify: int, orcpt: str) -> None:
        """cleanup_addr_bcc_dsn(): a recipient that cleanup adds (BCC) or a
        milter adds, with its DSN NOTIFY bits (0: the default) and ORCPT."""
        rw = self.svc.rewriter
        map_ok = bool(self.flags & _F.MAP_OK)
        try:
            clean = rw.recipient(address, map_ok=map_ok, warn=self._warn)
        except TableRetry as err:
            self._lookup_failed(err, "recipient address mapping")
            return
        self._out_recipient(orcpt, notify, clean, clean)

    def _out_recipient(self, orcpt: str, notify: int, orig: str, recip: str) -> None:
        """cleanup_out_recipient(): virtual alias expansion and duplicate
        elimination; recipients are kept in :attr:`recipients`."""
        if self.flags & _F.MAP_OK and self.svc.rewriter.virtual_alias_maps is not None:
            try:
                addrs = self.svc.rewriter.expand_virtual(recip)
            except TableRetry as err:
                self._lookup_failed(err, "virtual_alias_maps map")
                addrs = [recip]
            if notify & NOTIFY_BITS["SUCCESS"] and (len(addrs) > 1 or addrs[0] != recip):
                # "expanded": the sender gets SUCCESS from here; not from the parts.
                bits = notify & ~NOTIFY_BITS["SUCCESS"]
                notify = NOTIFY_BITS["NEVER"] if notify == NOTIFY_BITS["SUCCESS"] else bits
        else:
            addrs = [recip]
        for addr in addrs:
            key = f"{orcpt}\n{notify}\n{orig}\n{addr}" if self.svc.enable_orcpt else addr
            if self.dups.seen(key):
                continue
            self.recipients.append(Recipient(addr, orig, notify_from_mask(notify), orcpt))
            self.rcpt_count += 1

    # -- input ---------------------------------------------------------------------------

    #: Body lines that need no inspection skip the general path (tests turn
    #: this off to check that both give the same output).
    FAST_BODY = True

    def feed(self, data: bytes) -> None:
        """More of the message, in any split."""
        if self._finished:
            raise RuntimeError("cleanup: feed() after finish()")
        if not data:
            return
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True
        if self._pending:
            self._pending += data
            data = bytes(self._pending)
            self._pending = bytearray()
        nl = data.rfind(b"\n")
        if nl >= 0:
            # One CR before each LF belongs to the line end.
            self._lines(data[:nl + 1].replace(b"\r\n", b"\n")[:-1].split(b"\n"))
            data = data[nl + 1:]
        if data:
            # A line longer than the limit goes out in pieces before it ends;
            # a trailing CR may still be the first half of a CRLF.
            limit = self.svc.line_limit
            buf = bytearray(data)
            while len(buf) - (1 if buf.endswith(b"\r") else 0) > limit:
                self._record(R.CONT, bytes(buf[:limit]))
                del buf[:limit]
            self._pending = buf

    def _body_slow(self) -> bool:
        """True when body lines need the general path: body inspection,
        character filters or 8-bit reports are on."""
        svc = self.svc
        if not self.FAST_BODY or self.mime.report & MIME_ERR_8BIT_IN_7BIT_BODY:
            return True
        return bool(self.flags & _F.FILTER
                    and (svc.reject_chars or svc.strip_chars
                         or svc.checks.body_checks is not None))

    def _lines(self, lines: list[bytes]) -> None:
        """Complete lines (without line ends). Plain body lines take a short
        cut that does what _record() → _Mime.update() → body() → _out() do,
        and go out in runs (one output call for many lines)."""
        svc = self.svc
        limit = svc.line_limit
        size_limit = svc.size_limit
        mime = self.mime
        stray = svc.replace_stray
        run: list[bytes] = []  # plain body lines not yet handed out
        slow = self._body_slow()
        ok = self.out_ok
        offset = mime.body_offset
        if (not slow and mime.state == _ST_BODY and not mime.stack and mime.prev != R.CONT
                and lines and max(map(len, lines)) <= limit):
            # All of them plain body lines (no boundary to look for): the
            # short cut for the whole run at once.
            total = sum(map(len, lines)) + len(lines)
            if not ok or not size_limit or self.size + total <= size_limit:
                if stray:
                    lines = [line.replace(b"\r", b" ") for line in lines]
                mime.body_offset = offset + total
                mime.prev = R.NORM
                if ok:
                    self.size += total
                    self._output_lines(lines)
                return
        fast = False  # the previous line took the short cut
        for line in lines:
            if (slow or mime.state != _ST_BODY or len(line) > limit
                    or (not fast and mime.prev == R.CONT)
                    or (mime.stack and line[:2] == b"--")):
                if fast:
                    mime.body_offset = offset
                    mime.prev = R.NORM
                    fast = False
                if run:
                    self._output_lines(run)
                    run = []
                self._line(line, limit)
                slow = self._body_slow()
                ok = self.out_ok
                offset = mime.body_offset
                continue
            fast = True
            if stray and b"\r" in line:
                line = line.replace(b"\r", b" ")
            n = len(line) + 1
            offset += n
            if ok:
                if size_limit and self.size + n > size_limit:
                    if run:
                        self._output_lines(run)
                        run = []
                    self._emit(R.NORM, line)
                    ok = self.out_ok
                else:
                    self.size += n
                    run.append(line)
        if run:
            self._output_lines(run)
        if fast:
            mime.body_offset = offset
            mime.prev = R.NORM

    def _line(self, line: bytes, limit: int) -> None:
        while len(line) > limit:
            self._record(R.CONT, line[:limit])
            line = line[limit:]
        self._record(R.NORM, line)

    def _record(self, rec_type: str, data: bytes) -> None:
        """One content record from the client (cleanup_message_headerbody)."""
        svc = self.svc
        if svc.replace_stray and b"\r" in data:
            data = data.replace(b"\r", b" ")
        if (self.flags & _F.FILTER and svc.reject_chars
                and any(c in svc.reject_chars for c in data)):
            self._act(CONTENT, data.decode("utf-8", "surrogateescape"),
                      parse_action("REJECT disallowed character", CONTENT, "character reject"),
                      "character reject")
            return
        if self.flags & _F.FILTER and svc.strip_chars:
            data = bytes(c for c in data if c not in svc.strip_chars)
        self.mime.update(rec_type, data)

    def finish(self) -> CleanupResult:
        """End of the message: flush, add extracted and BCC recipients,
        decide."""
        if not self._finished:
            self._finished = True
            if self._pending:
                # The last line has no line end; a CR there ends it too.
                data = bytes(self._pending)
                self._pending = bytearray()
                if data.endswith(b"\r"):
                    data = data[:-1]
                self._line(data, self.svc.line_limit)
            self.mime.update(None, b"")
            errs = self.mime.err_flags & ~MIME_ERR_TRUNC_HEADER & self.mime.report
            if errs and self.reason is None:
                self.errs |= _S.CONT
                self.reason = "5.6.0 " + mime_error_text(errs)
            self._extracted()
        return self._result()

    def _extracted(self) -> None:
        if self.sub.extract_recipients:
            for addr in (self.xrcpt_resent if self.xresent else self.xrcpt):
                self._envelope_recipient(addr, addr, 0, "")
        if self.flags & _F.BCC_OK and self.recip is not None and self.svc.always_bcc:
            self._bcc(self.svc.always_bcc)
        if self.hbc_rcpt and self.out_ok and self.recip is not None:
            for addr in self.hbc_rcpt:
                self._bcc(addr)
        if self.recip is None and not self.errs:
            self.errs |= _S.RCPT

    def result(self) -> CleanupResult:
        """The verdict as it stands (after :meth:`finish`; a milter may add
        to it)."""
        return self._result()

    def _result(self) -> CleanupResult:
        status = CleanupStatus(self.errs)
        bounce = bool(self.flags & _F.BOUNCE and status
                      and not status & MASK_CANT_BOUNCE)
        return CleanupResult(
            queue_id=self.qid, status=status, reason=self.reason, sender=self.sender,
            recipients=list(self.recipients), message_id=self.message_id,
            hold=bool(self.flags & _F.HOLD),
            discard=bool(self.flags & _F.DISCARD), filter=self.filter,
            redirect=self.redirect, encoding=self._body_encoding(), size=self.size,
            hop_count=self.hop_count, bounce=bounce, log=list(self.log_lines))

    def _body_encoding(self) -> str:
        """The queue file's ``encoding`` attribute (Postfix's values):
        ``8bit`` when the client said BODY=8BITMIME, when a
        Content-Transfer-Encoding says 8bit or binary (with
        detect_8bit_encoding_header) or when the content holds a byte over
        127 (Postfix does not look; hato does, so that the smtp client need
        not); ``7bit`` otherwise. The smtp client reads it to choose BODY=
        and whether to convert the content for a server without 8BITMIME."""
        declared = (self.sub.encoding or "").lower()
        if self.eight_bit or self.encoding == "8bit" or declared == "8bit":
            return "8bit"
        return "7bit"

    # -- output --------------------------------------------------------------------------

    def _out(self, rec_type: str, data: bytes) -> None:
        """cleanup_out(): records of at most line_length_limit bytes."""
        if not self.out_ok:
            return
        limit = self.svc.line_limit
        while len(data) > limit:
            self._emit(R.CONT, data[:limit])
            data = data[limit:]
        self._emit(rec_type, data)

    def _emit(self, rec_type: str, data: bytes) -> None:
        size = len(data) + (1 if rec_type == R.NORM else 0)
        limit = self.svc.size_limit
        if limit and self.size + size > limit:
            self._warn("queue file size limit exceeded")
            self.errs |= _S.SIZE
            return
        self.size += size
        if not self.eight_bit and not data.isascii():
            self.eight_bit = True  # text cleanup wrote (Received:, header_checks PREPEND)
        self._output(rec_type, data)

    def _out_string(self, text: str) -> None:
        self._out(R.NORM, text.encode("utf-8", "surrogateescape"))

    def _out_header(self, header: str) -> None:
        """cleanup_out_header(): a (multi-line) header, continuation lines
        starting with blank space, cut at header_size_limit (bytes)."""
        limit = self.svc.header_limit
        pos = 0
        for i, line in enumerate(header.encode("utf-8", "surrogateescape").split(b"\n")):
            cut = pos + len(line) > limit
            if cut:
                if pos > 0.9 * limit:  # nice cut
                    break
                line = line[:max(0, limit - pos)]  # unkind cut
            self._out(R.NORM, line if i == 0 or line[:1] in (b" ", b"\t") else b"\t" + line)
            if cut:
                break
            pos += len(line) + 1

    def _fold_header(self, header: str) -> None:
        self._out_header(fold_address_header(header))



def cleanup_message(service: Cleanup, submission: Submission, content: bytes,
                    chunk: int = 65536) -> tuple[CleanupResult, list[tuple[str, bytes]]]:
    """Run a whole message through cleanup; (result, records). For tests and
    small internal messages."""
    state = service.open(submission)
    for i in range(0, len(content), chunk):
        state.feed(content[i:i + chunk])
    return state.finish(), state.records


def records_to_bytes(records: Iterable[tuple[str, bytes]]) -> bytes:
    """The message text that content records stand for (LF line ends)."""
    return b"".join(R.content_bytes(t, d) for t, d in records)


__all__ = [
    "EXTERNAL",
    "INTERNAL",
    "Cleanup",
    "CleanupFlag",
    "CleanupResult",
    "CleanupState",
    "CleanupStatus",
    "HeaderOpts",
    "Submission",
    "cleanup_message",
    "header_table",
    "local_received",
    "mail_date",
    "message_id_stamp",
    "mime_error_text",
    "records_to_bytes",
    "status_detail",
]

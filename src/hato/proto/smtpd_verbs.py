"""The SMTP server core's less common commands, as a part of
:class:`hato.proto.smtpd.ServerConnection`: VRFY, ETRN, STARTTLS, AUTH (and
the client's SASL response lines), XCLIENT, XFORWARD and BDAT (RFC 3030
chunks). Each checks syntax and sequence, answers errors itself with
Postfix's texts and otherwise pauses with its event, as the core's other
commands do (see :mod:`hato.proto.smtpd`)."""

from __future__ import annotations

from collections import deque

from .smtpd_data import BdatReader
from .smtpd_events import (MODE_BDAT, MODE_CMD, REASON_SYNTAX, Auth, AuthResponse, BdatChunk,
                           DataCommand, Event, Limits, MailFrom, MessageData, MessageEnd, Reply,
                           StartTls,
                           Xclient, Xforward, Etrn, Vrfy)
from .smtpd_syntax import (XCLIENT_NAMES, XFORWARD_NAMES, SyntaxProblem, normalize_address,
                           parse_attributes, parse_vrfy)


class ExtensionCommands:
    """Mixed into ServerConnection, whose state and helpers these use."""

    limits: Limits
    mail_from: MailFrom | None
    helo_name: str | None
    tls_active: bool
    authenticated: bool
    error_count: int
    _in: bytearray
    _events: deque[Event]
    _mode: int
    _message_open: bool
    _core_answered: bool
    _truncated: bool
    _auth_verb: str
    _bdat: BdatReader | None
    _bdat_total: int
    _bdat_last: bool
    _bdat_error: bool
    _bdat_active: bool
    _bdat_pending_event: BdatChunk | None

    # what ServerConnection defines, for these methods (and for mypy)
    @property
    def offered(self) -> frozenset[str]:
        raise NotImplementedError

    def _send(self, reply: Reply) -> None:
        raise NotImplementedError

    def _close(self, reason: str, send: bool = True) -> None:
        raise NotImplementedError

    def _count(self, verb: str, ok: bool) -> None:
        raise NotImplementedError

    def _error(self, verb: str, reply: Reply, *, count: bool = True, junk: bool = False,
               error: bool = True, pipelined: bool = False, ok: bool = False) -> None:
        raise NotImplementedError

    def _pause(self, event: Event) -> None:
        raise NotImplementedError

    def _need_helo(self, verb: str, pending: bool, dsn: str = "5.5.1") -> bool:
        raise NotImplementedError

    def _no_recipients(self, verb: str) -> Reply | None:
        raise NotImplementedError

    def accept(self, reply: Reply | None = None, *,
               ehlo_keywords: list[str] | None = None) -> None:
        raise NotImplementedError

    def reject(self, reply: Reply, *, close: bool = False) -> None:
        raise NotImplementedError

    def _end_transaction(self) -> None:
        raise NotImplementedError

    def _cmd_vrfy(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if self.limits.disable_vrfy:
            self._error(verb, Reply(502, "5.5.1", "VRFY command is disabled"), pipelined=pending)
            return
        if not args:
            suffix = " [SMTPUTF8]" if self.limits.smtputf8_enable else ""
            self._error(verb, Reply(501, "5.5.4", f"Syntax: VRFY address{suffix}"),
                        pipelined=pending)
            return
        parsed = parse_vrfy(args, smtputf8_enable=self.limits.smtputf8_enable)
        address = None if parsed is None else normalize_address(
            parsed[1], allow_empty=False, smtputf8=parsed[2],
            numeric_ok=self.limits.resolve_numeric_domain)
        if parsed is None or address is None:
            self._error(verb, Reply(501, "5.1.3", "Bad recipient address syntax"),
                        pipelined=pending)
            return
        self._pause(Vrfy(verb=verb, pipelined=pending, argument=parsed[0],
                         smtputf8=parsed[2]))

    def _cmd_etrn(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if self._need_helo(verb, pending, dsn=""):
            return
        if self.mail_from is not None:
            self._error(verb, Reply(503, "", "Error: MAIL transaction in progress"),
                        pipelined=pending)
            return
        if len(args) != 1:
            self._error(verb, Reply(500, "", "Syntax: ETRN domain"), pipelined=pending)
            return
        self._pause(Etrn(verb=verb, pipelined=pending, argument=args[0]))

    def _cmd_starttls(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if args:
            self._error(verb, Reply(501, "5.5.4", "Syntax: STARTTLS"), pipelined=pending)
        elif self.tls_active:
            self._error(verb, Reply(554, "5.5.1", "Error: TLS already active"), pipelined=pending)
        elif "STARTTLS" not in self.offered:
            self._error(verb, Reply(502, "5.5.1", "Error: command not implemented"),
                        pipelined=pending)
        elif self.mail_from is not None:
            self._error(verb, Reply(503, "5.5.1", "Error: MAIL transaction in progress"),
                        pipelined=pending)
        else:
            self._pause(StartTls(verb=verb, pipelined=pending))

    def _cmd_auth(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if self.helo_name is None:
            self._error(verb, Reply(503, "5.5.1", "Error: send HELO/EHLO first"), pipelined=pending)
        elif "AUTH" not in self.offered:
            self._error(verb, Reply(503, "5.5.1", "Error: authentication not enabled"),
                        pipelined=pending)
        elif self.mail_from is not None:
            self._error(verb, Reply(503, "5.5.1", "Error: MAIL transaction in progress"),
                        pipelined=pending)
        elif self.authenticated:
            self._error(verb, Reply(503, "5.5.1", "Error: already authenticated"),
                        pipelined=pending)
        elif not 1 <= len(args) <= 2:
            self._error(verb, Reply(501, "5.5.4", "Syntax: AUTH mechanism"), pipelined=pending)
        else:
            self._auth_verb = verb
            self._pause(Auth(verb=verb, pipelined=pending, mechanism=args[0].upper(),
                             initial=args[1] if len(args) == 2 else None))

    def _cmd_xclient(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        self._x_command(verb, args, pending, XCLIENT_NAMES, Xclient)

    def _cmd_xforward(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        self._x_command(verb, args, pending, XFORWARD_NAMES, Xforward)

    def _x_command(self, verb: str, args: list[str], pending: bool, names: frozenset[str],
                   cls: type[Xclient] | type[Xforward]) -> None:
        if verb not in self.offered:
            self._error(verb, Reply(550, "5.7.0", "Error: insufficient authorization"),
                        pipelined=pending)
            return
        if self.mail_from is not None:
            self._error(verb, Reply(503, "5.5.1", "Error: MAIL transaction in progress"),
                        pipelined=pending)
            return
        try:
            attrs = parse_attributes(verb, args, names)
        except SyntaxProblem as e:
            self._error(verb, Reply(e.code, e.dsn, e.text), pipelined=pending)
            return
        self._pause(cls(verb=verb, pipelined=pending, attributes=attrs))

    # ------------------------------------------------------------------ AUTH

    def _auth_line(self, raw: bytes) -> None:
        if self._truncated:
            self._mode = MODE_CMD
            self._error(self._auth_verb, Reply(500, "5.5.6", "SASL response limit exceeded"))
            return
        self._pause(AuthResponse(verb=self._auth_verb, pipelined=bool(self._in),
                                 line=raw.decode("utf-8", "replace").strip()))

    def auth_done(self, ok: bool, reply: Reply | None = None) -> None:
        """End the SASL exchange: success → 235 (default), failure → 535."""
        if ok:
            self.accept(reply)
        else:
            self.reject(reply or Reply(535, "5.7.8", "Error: authentication failed: "
                                                  "authentication failure"))

    # ------------------------------------------------------------------ BDAT

    def _cmd_bdat(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if "CHUNKING" not in self.offered:
            self._error(verb, Reply(521, "5.5.1", "Error: command not implemented"),
                        pipelined=pending)
            self._close(REASON_SYNTAX)
            return
        if (not 1 <= len(args) <= 2 or not args[0].isascii() or not args[0].isdigit()
                or (len(args) == 2 and args[1].upper() != "LAST")):
            self._error(verb, Reply(521, "5.5.4", "Syntax: BDAT count [LAST]"), pipelined=pending)
            self._close(REASON_SYNTAX)
            return
        size = int(args[0])
        last = len(args) == 2
        self._bdat_last = last
        if self._bdat_error:
            self._bdat_discard(verb, size, last, pending,
                               Reply(551, "5.0.0", f"Discarded {size} bytes after earlier error"))
            return
        bad = self._no_recipients(verb)
        if bad is None and size == 0 and not last:
            bad = Reply(551, "5.7.1", "Null BDAT request")
        if bad is None and self.limits.message_size_limit and \
                self._bdat_total + size > self.limits.message_size_limit:
            bad = Reply(552, "5.3.4", "Chunk exceeds message size limit")
        if bad is not None:
            self._bdat_discard(verb, size, last, pending, bad)
            return
        self._bdat_active = True
        self._bdat_pending_event = BdatChunk(verb=verb, pipelined=pending, size=size, last=last)
        if not self._message_open:
            self._pause(DataCommand(verb=verb, pipelined=pending))
            return
        self._start_chunk(size, discard=False)

    def _bdat_discard(self, verb: str, size: int, last: bool, pending: bool,
                      reply: Reply) -> None:
        """Refuse a chunk: answer now, read and drop its bytes."""
        if self._message_open:
            self._message_open = False
            self._send(reply)
            self.error_count += 1
            self._count(verb, False)
            self._events.append(MessageEnd(verb=verb, pipelined=pending, size=self._bdat_total,
                                           too_big=reply.code == 552, reply=reply))
            self._core_answered = True
        else:
            self._error(verb, reply, pipelined=pending)
        if self.mail_from is not None:
            self._bdat_active = True
            self._bdat_error = not last
        if last:
            self._end_transaction()
        self._bdat_pending_event = None
        self._start_chunk(size, discard=True)

    def _start_chunk(self, size: int, discard: bool) -> None:
        self._bdat = BdatReader(size, discard)
        self._mode = MODE_BDAT

    def _step_bdat(self) -> bool:
        reader = self._bdat
        assert reader is not None
        if not reader.done:
            if not self._in:
                return False
            content, used = reader.read(self._in)
            del self._in[:used]
            if content:
                self._bdat_total += len(content)
                self._events.append(MessageData(verb="BDAT", data=content))
            if not reader.done:
                return True
        self._mode = MODE_CMD
        self._bdat = None
        ev = self._bdat_pending_event
        self._bdat_pending_event = None
        if ev is not None:
            ev.total = self._bdat_total
            ev.pipelined = bool(self._in)
            self._pause(ev)
        return True

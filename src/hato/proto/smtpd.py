"""The sans-IO core of hato's SMTP server.

Feed it bytes (:meth:`ServerConnection.receive_data`), read events
(:meth:`ServerConnection.next_event`), answer the events that need a decision
(:meth:`~ServerConnection.accept` / :meth:`~ServerConnection.reject`), and
send what :meth:`~ServerConnection.data_to_send` returns. No sockets, no
clock, no configuration object: limits arrive in :class:`Limits`.

Check and commit are separate: for HELO/EHLO, MAIL, RCPT, DATA (and the
first BDAT of a message), end of DATA, BDAT chunks, VRFY, ETRN, STARTTLS,
AUTH, XCLIENT and XFORWARD the core checks syntax and sequence itself (and
answers errors itself, with Postfix 3.7's texts), then emits an event and
waits (:data:`PAUSED`) until the service calls :meth:`accept` or
:meth:`reject` before it reads the next command. Everything else (NOOP,
RSET, QUIT, syntax and sequence errors, unknown commands, limits) it answers
on its own and still emits an event (:class:`Simple`,
:class:`ProtocolError`) so the service can count and log.

What the service must do:

* call :meth:`greet` once, then loop: ``next_event()``; answer paused
  events; send ``data_to_send()``; stop after :class:`Closed`.
* sleep ``smtpd_error_sleep_time`` before replying once
  :attr:`error_count` >= ``smtpd_soft_error_limit`` (the core never sleeps).
* :class:`MessageEnd` with ``reply`` set (message too big, bare <LF>
  refused) was answered by the core: abort the queue file, do not call
  accept/reject. Otherwise MessageEnd pauses and needs the final reply.
* after accepting :class:`StartTls`: do the handshake, then call
  :meth:`starttls_done` (input buffered before it is discarded).
* :class:`Auth`: send challenges with :meth:`reply` (334 …); each client
  line comes as :class:`AuthResponse` (``"*"`` = the client cancels: reply
  with ``reject(Reply(501, "5.7.0", "Authentication aborted"))``); finish
  with :meth:`auth_done` (or accept/reject).
* BDAT: the first BDAT of a message emits :class:`DataCommand` (verb
  ``"BDAT"``; accept(None) sends nothing), then the chunk's content as
  :class:`MessageData`, then :class:`BdatChunk` (pauses). A message the
  core abandons in the middle of a BDAT transfer (chunk over the size
  limit, null chunk) ends with a :class:`MessageEnd` with ``reply`` set.

The core's vocabulary (replies, limits, states, events) lives in
:mod:`hato.proto.smtpd_events` and its less common commands (VRFY, ETRN,
STARTTLS, AUTH, XCLIENT, XFORWARD, BDAT) in :mod:`hato.proto.smtpd_verbs`;
every public name is importable from here.
"""

from __future__ import annotations

from collections import deque

from .smtpd_data import BdatReader, DotReader
from .smtpd_events import (  # the core's vocabulary, part of this module's API
    DEFAULT_EXTENSIONS, LINE_KEEP, LONG_LINE_KEEP, MODE_AUTH, MODE_BDAT, MODE_CMD, MODE_DATA,
    MODE_DONE, MODE_TLS, NEED_DATA, PAUSED, REASON_BARE_LF, REASON_EOF, REASON_ERRORS,
    REASON_FORBIDDEN, REASON_GREETING, REASON_REJECTED, REASON_SYNC, REASON_SYNTAX,
    UNKNOWN_REPLY, Auth, AuthResponse, BdatChunk, Closed, DataCommand, Etrn, Event, Helo,
    Limits, MailFrom, MessageData, MessageEnd, NeedData, Paused, ProtocolError,
    ProtocolStateError, RcptTo, Reply, Simple, StartTls, State, UnknownCommand, Vrfy, Xclient,
    Xforward)
from .smtpd_syntax import (SyntaxProblem, normalize_address, parse_mail_params,
                           parse_rcpt_params, path_token, split_path)
from .smtpd_verbs import ExtensionCommands

__all__ = [
    "Reply", "DEFAULT_EXTENSIONS", "Limits", "NeedData", "Paused", "NEED_DATA", "PAUSED",
    "ProtocolStateError", "State", "Event", "Helo", "MailFrom", "RcptTo", "UnknownCommand",
    "UNKNOWN_REPLY", "DataCommand", "MessageData", "MessageEnd", "BdatChunk", "Simple", "Vrfy",
    "Etrn", "StartTls", "Auth", "AuthResponse", "Xclient", "Xforward", "ProtocolError",
    "Closed", "LINE_KEEP", "LONG_LINE_KEEP", "REASON_EOF", "REASON_ERRORS", "REASON_SYNC",
    "REASON_FORBIDDEN", "REASON_BARE_LF", "REASON_GREETING", "REASON_REJECTED",
    "REASON_SYNTAX", "ServerConnection", "is_header"]


# Postfix's command table flags: commands that count toward the junk limit,
# commands that must be last in a pipeline group, commands allowed before TLS.
_JUNK = frozenset({"HELO", "EHLO", "RSET", "NOOP", "VRFY", "ETRN"})
_LAST = frozenset({"HELO", "EHLO", "NOOP", "VRFY"})
_PRE_TLS = frozenset({"HELO", "EHLO", "STARTTLS", "NOOP", "QUIT", "XCLIENT"})
_KNOWN = frozenset({"HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
                    "VRFY", "ETRN", "STARTTLS", "AUTH", "XCLIENT", "XFORWARD"})

_OK = Reply(250, "2.0.0", "Ok")


def _r(code: int, dsn: str, text: str) -> Reply:
    return Reply(code, dsn, text)


def is_header(word: str) -> bool:
    """Postfix's is_header(): ``Name:`` (ASCII, no control characters,
    perhaps spaces before the colon) starts the word."""
    seen = False
    space = False
    for c in word:
        if c == ":":
            return seen
        if c in " \t":
            if not seen:
                return False
            space = True
            continue
        if not c.isascii() or ord(c) < 32 or ord(c) == 127 or space:
            return False
        seen = True
    return False


class ServerConnection(ExtensionCommands):
    """One SMTP server session, sans-IO."""

    def __init__(self, limits: Limits | None = None, hostname: str = "localhost"):
        self.limits = limits or Limits()
        self.hostname = hostname
        self.enhanced_status_codes = True
        self._in = bytearray()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._paused: Event | None = None
        self._mode = MODE_CMD
        self._greeted = False
        self._banner: Reply | None = None
        self._early_input = False
        self._eof = False
        self._closed_event: Closed | None = None
        self._skipping = False  # discarding the rest of an over-long command line
        self._long_line: bytes | None = None
        self._long_ready: tuple[bytes, bool] | None = None
        self._skip_cr = False
        self._truncated = False
        self._line = b""  # the current command line (start), for ProtocolError.line
        # session
        self.helo_name: str | None = None
        self.esmtp = False
        self.tls_active = False
        self.authenticated = False
        self._offered: frozenset[str] | None = None  # from the last EHLO reply
        self._pipelining_offered = False
        self.improper_pipelining: tuple[str, bytes] | None = None
        self.error_count = 0
        self.junk_count = 0
        self.last_command = ""
        self.counts: dict[str, list[int]] = {}
        # transaction
        self.mail_from: MailFrom | None = None
        self.recipients = 0
        self._rcpt_overshoot = 0
        self._message_open = False  # the service accepted DATA/first BDAT
        self._data: DotReader | None = None
        self._bdat: BdatReader | None = None
        self._bdat_active = False  # a BDAT transfer is in progress
        self._bdat_error = False  # discard the rest of this BDAT transfer
        self._bdat_last = False
        self._bdat_total = 0
        self._bdat_pending_event: BdatChunk | None = None
        self._auth_verb = ""
        self._core_answered = False  # the last MessageEnd was answered by the core

    # ------------------------------------------------------------------ I/O

    def greet(self, reply: Reply) -> None:
        """Queue the banner.

        A 421 banner closes the session after it. Any other refusal (e.g. a
        554 for smtpd_delay_reject=no) keeps it open, as Postfix does: the
        service then refuses each command (``503 5.7.0 Error: access denied
        for …``) until the client quits.
        """
        if self._greeted:
            raise ProtocolStateError("greet() called twice")
        self._greeted = True
        self._banner = reply
        if self.limits.forbid_unauth_pipelining and self._early_input and reply.code < 400:
            self._send(_r(554, "5.5.0", "Error: SMTP protocol synchronization"))
            self._close(REASON_SYNC)
            return
        self._send(reply)
        if reply.code == 421:
            self._close(REASON_GREETING)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; b"" means the client closed."""
        if self._closed_event is not None:
            return
        if not data:
            self._eof = True
            return
        if not self._greeted:
            self._early_input = True
        if self._mode == MODE_TLS:
            return  # plaintext after STARTTLS: discarded (command injection)
        self._in += data
        self._bound_input()

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def input_pending(self) -> bool:
        """Bytes are buffered beyond what has been consumed."""
        return bool(self._in)

    # ----------------------------------------------------------- properties

    @property
    def closed(self) -> bool:
        return self._closed_event is not None

    @property
    def in_transaction(self) -> bool:
        return self.mail_from is not None

    @property
    def state(self) -> State:
        if self._closed_event is not None:
            return State.CLOSED
        if not self._greeted:
            return State.INIT
        if self._mode == MODE_TLS:
            return State.STARTTLS
        if self._mode == MODE_AUTH or isinstance(self._paused, (Auth, AuthResponse)):
            return State.AUTH
        if self._mode == MODE_DATA:
            return State.DATA
        if self._bdat_active:
            return State.BDAT
        if self.mail_from is not None:
            return State.MAIL
        if self.helo_name is not None:
            return State.HELO
        return State.READY

    @property
    def offered(self) -> frozenset[str]:
        """Extension keywords in force (first words, upper-case)."""
        if self._offered is not None:
            return self._offered
        return self.limits.extensions if self.limits.extensions is not None else DEFAULT_EXTENSIONS

    def disconnect_stats(self) -> str:
        """Postfix's ``ehlo=1 mail=1 rcpt=0/1 ... commands=3/5``."""
        parts = []
        ok_all = total_all = 0
        for name, (ok, total) in self.counts.items():
            ok_all += ok
            total_all += total
            parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
        parts.append(f"commands={ok_all}" if ok_all == total_all
                     else f"commands={ok_all}/{total_all}")
        return " ".join(parts)

    # --------------------------------------------------------------- events

    def next_event(self) -> Event | NeedData | Paused:
        while True:
            if self._events:
                return self._events.popleft()
            if self._closed_event is not None:
                return self._closed_event
            if self._paused is not None or self._mode == MODE_TLS:
                return PAUSED
            if not self._greeted:
                return NEED_DATA
            progressed = self._step()
            if not progressed:
                if self._eof:
                    self._close(REASON_EOF, send=False)
                    continue
                return NEED_DATA

    def _step(self) -> bool:
        """Try to produce events from buffered input; False if more is needed."""
        if self._mode == MODE_DATA:
            return self._step_data()
        if self._mode == MODE_BDAT:
            return self._step_bdat()
        if self._mode == MODE_CMD and self.error_count >= self.limits.hard_error_limit:
            self._send(_r(421, "4.7.0", f"{self.hostname} Error: too many errors"))
            self._close(REASON_ERRORS)
            return True
        line = self._read_line()
        if line is None:
            return False
        raw, bare_lf = line
        self._line = b""
        first = len(self._events)
        truncated = self._truncated
        limit = self._line_limit()
        if bare_lf and self.limits.forbid_bare_newline == "reject":
            self._error("", _r(self.limits.bare_newline_reject_code, "5.5.2",
                               f"{self.hostname} Error: bare <LF> received"))
            self._close(REASON_BARE_LF)
        elif self._mode == MODE_AUTH:
            self._auth_line(raw)
        else:
            self._command(raw)
        if truncated and len(self._events) > first:
            self._events[first].long_line = (limit, raw[:LONG_LINE_KEEP])
        return True

    # ------------------------------------------------------------ line input

    def _bound_input(self) -> None:
        """Never buffer an unbounded command line: keep its first part only.

        As Postfix's smtp_get(): a line longer than the limit is truncated
        at the limit and the rest up to its LF is skipped.
        """
        if self._mode not in (MODE_CMD, MODE_AUTH):
            return
        limit = self._line_limit()
        if self._skipping:
            nl = self._in.find(b"\n")
            if nl < 0:
                if self._in:
                    self._skip_cr = self._in[-1] == 0x0D
                self._in.clear()
                return
            cr = self._in[nl - 1] == 0x0D if nl else self._skip_cr
            del self._in[:nl + 1]
            self._skipping = False
            self._long_ready = (self._long_line or b"", not cr)
            self._long_line = None
            return
        if self._long_ready is None and len(self._in) > limit and \
                self._in.find(b"\n", 0, limit + 1) < 0:
            self._long_line = bytes(self._in[:limit])
            self._skip_cr = self._long_line.endswith(b"\r")
            del self._in[:limit]
            self._skipping = True
            self._bound_input()

    def _line_limit(self) -> int:
        return self.limits.sasl_response_limit if self._mode == MODE_AUTH else \
            self.limits.line_length_limit

    def _read_line(self) -> tuple[bytes, bool] | None:
        self._truncated = False
        self._bound_input()
        if self._long_ready is not None:
            raw, bare_lf = self._long_ready
            self._long_ready = None
            self._truncated = True
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            return raw, bare_lf
        if self._skipping:
            return None
        nl = self._in.find(b"\n")
        if nl < 0:
            return None
        raw = bytes(self._in[:nl])
        del self._in[:nl + 1]
        if raw.endswith(b"\r"):
            return raw[:-1], False
        return raw, True

    # --------------------------------------------------------------- output

    def _send(self, reply: Reply) -> None:
        if self._closed_event is None:
            self._out += reply.render(self.enhanced_status_codes)

    def _close(self, reason: str, send: bool = True) -> None:
        if self._closed_event is None:
            self._closed_event = Closed(verb=self.last_command, reason=reason)
            self._events.append(self._closed_event)
        self._mode = MODE_DONE
        self._paused = None
        self._in.clear()

    def _count(self, verb: str, ok: bool) -> None:
        c = self.counts.setdefault(verb.lower(), [0, 0])
        c[1] += 1
        if ok:
            c[0] += 1

    def recount_failed(self, verb: str) -> None:
        """A command answered with success failed after all (a STARTTLS
        whose new TLS session the service refused): count it as failed."""
        c = self.counts.get(verb.lower())
        if c and c[0] > 0:
            c[0] -= 1

    def _error(self, verb: str, reply: Reply, *, count: bool = True, junk: bool = False,
               error: bool = True, pipelined: bool = False, ok: bool = False) -> None:
        """Answer a command with an error the core decided on (*ok*: Postfix
        still counts the command as a success)."""
        self._send(reply)
        if error:
            self.error_count += 1
        if count and verb:
            self._count(verb if verb in _KNOWN else "unknown", ok)
        self._events.append(ProtocolError(verb=verb, pipelined=pipelined, reply=reply,
                                          junk=junk, line=self._line))

    def _pause(self, event: Event) -> None:
        self._paused = event
        self._events.append(event)

    # -------------------------------------------------------------- commands

    def _command(self, raw: bytes) -> None:
        self._core_answered = False
        lim = self.limits
        pending = bool(self._in)
        nul = raw.find(b"\0")
        if nul >= 0:
            raw = raw[:nul]  # C string semantics, as Postfix
        self._line = raw[:LINE_KEEP]
        if lim.smtputf8_enable:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                self.last_command = ""
                self._error("", _r(500, "5.5.2", "Error: bad UTF-8 syntax"), junk=True,
                            pipelined=pending)
                return
        else:
            text = raw.decode("utf-8", "surrogateescape")
        words = text.split()
        if not words:
            self.last_command = ""
            self._error("", _r(500, "5.5.2", "Error: bad syntax"), junk=True, pipelined=pending)
            return
        verb = words[0].upper()
        self.last_command = verb
        first = words[0][0]
        if verb in lim.forbidden_commands or (
                lim.forbid_bogus_commands and not ("A" <= first.upper() <= "Z")):
            self._error(verb, _r(221, "2.7.0", "Error: I can break rules, too. Goodbye."),
                        junk=True, pipelined=pending)
            self._close(REASON_FORBIDDEN)
            return
        if verb not in _KNOWN:
            if is_header(words[0]):
                # Postfix: a header line sent as a command (an HTTP client or
                # a smuggling attempt) ends the session.
                self._error(verb, _r(221, "2.7.0", "Error: I can break rules, too. Goodbye."),
                            junk=True, error=False, pipelined=pending)
                self._close(REASON_FORBIDDEN)
                return
            if lim.ask_unknown:
                # a milter sees it first; the service answers (default: 500)
                self._pause(UnknownCommand(verb="UNKNOWN", pipelined=pending, line=text))
                return
            self._error(verb, _r(500, "5.5.2", "Error: command not recognized"), junk=True,
                        pipelined=pending)
            return
        # pipelining checks (Postfix: improper command pipelining)
        if pending and (verb in _LAST or not self._pipelining_offered):
            if self.improper_pipelining is None:
                self.improper_pipelining = (verb, bytes(self._in[:100]))
            if lim.forbid_unauth_pipelining:
                self._error(verb, _r(554, "5.5.0", "Error: SMTP protocol synchronization"),
                            pipelined=pending)
                self._close(REASON_SYNC)
                return
        if lim.enforce_tls and not self.tls_active and verb not in _PRE_TLS:
            self._error(verb, _r(530, "5.7.0", "Must issue a STARTTLS command first"),
                        pipelined=pending)
            return
        if verb in _JUNK:
            # Postfix: "junk_cmds++ > limit", i.e. the command after the
            # first (limit + 1) is the first to count as an error.
            if self.junk_count > lim.junk_command_limit:
                self.error_count += 1
            self.junk_count += 1
        rest = text[len(words[0]):].strip()
        handler = getattr(self, "_cmd_" + verb.lower())
        handler(verb, rest, words[1:], pending)

    def _cmd_helo(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if not args:
            self._error(verb, _r(501, "", f"Syntax: {verb} hostname"), pipelined=pending)
            return
        self._pause(Helo(verb=verb, pipelined=pending, hostname=" ".join(args),
                         extended=verb == "EHLO"))

    def _cmd_ehlo(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        self._cmd_helo(verb, rest, args, pending)

    def _need_helo(self, verb: str, pending: bool, dsn: str = "5.5.1") -> bool:
        if self.limits.helo_required and self.helo_name is None:
            self._error(verb, _r(503, dsn, "Error: send HELO/EHLO first"), pipelined=pending)
            return True
        return False

    def _cmd_mail(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if self._need_helo(verb, pending):
            return
        if self._bdat_active:
            self._error(verb, _r(503, "5.5.1", "Error: MAIL after BDAT"), pipelined=pending)
            return
        if self.mail_from is not None:
            self._error(verb, _r(503, "5.5.1", "Error: nested MAIL command"), pipelined=pending)
            return
        arg = self._path_arg(rest, "FROM:")
        if arg is None:
            self._error(verb, _r(501, "5.5.4", "Syntax: MAIL FROM:<address>"), pipelined=pending)
            return
        bad = _r(501, "5.1.7", "Bad sender address syntax")
        split = split_path(arg, self.limits.strict_rfc821_envelopes)
        offered = self.offered
        address = None
        if split is not None:
            # As Postfix, the address is judged before the parameters, but
            # knowing whether SMTPUTF8 is among them (non-ASCII domains).
            utf8 = self.limits.smtputf8_enable and "SMTPUTF8" in offered and any(
                w.upper() == "SMTPUTF8" for w in split[1].split())
            address = normalize_address(split[0], allow_empty=True, smtputf8=utf8,
                                        numeric_ok=self.limits.resolve_numeric_domain)
        if split is None or address is None:
            self._error(verb, bad, pipelined=pending)
            return
        try:
            p = parse_mail_params(split[1].split(), dsn="DSN" in offered,
                                  smtputf8=self.limits.smtputf8_enable and "SMTPUTF8" in offered,
                                  auth="AUTH" in offered,
                                  size_limit=self.limits.message_size_limit)
        except SyntaxProblem as e:
            self._error(verb, _r(e.code, e.dsn, e.text), pipelined=pending)
            return
        if self.limits.strict_smtputf8 and not p.smtputf8 and not address.isascii():
            self._error(verb, _r(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"),
                        pipelined=pending)
            return
        self._pause(MailFrom(verb=verb, pipelined=pending, address=address, size=p.size,
                             body=p.body, ret=p.ret, envid=p.envid,
                             smtputf8=p.smtputf8, auth=p.auth,
                             args=[path_token(arg), *split[1].split()]))

    @staticmethod
    def _path_arg(rest: str, keyword: str) -> str | None:
        """Text after FROM:/TO: (left-stripped), None for a syntax error."""
        if rest[:len(keyword)].upper() != keyword:
            return None
        arg = rest[len(keyword):].lstrip()
        return arg or None

    def _cmd_rcpt(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if self.mail_from is None:
            self._error(verb, _r(503, "5.5.1", "Error: need MAIL command"), pipelined=pending)
            return
        if self._bdat_active:
            self._error(verb, _r(503, "5.5.1", "Error: RCPT after BDAT"), pipelined=pending)
            return
        arg = self._path_arg(rest, "TO:")
        if arg is None:
            self._error(verb, _r(501, "5.5.4", "Syntax: RCPT TO:<address>"), pipelined=pending)
            return
        lim = self.limits
        if lim.recipient_limit and self.recipients >= lim.recipient_limit:
            # Postfix's rcpt_cmd() returns 0 (a success in the disconnect
            # counters) after the 452 until the overshoot limit is passed.
            self._rcpt_overshoot += 1
            over = self._rcpt_overshoot > lim.recipient_overshoot_limit
            self._error(verb, _r(452, "4.5.3", "Error: too many recipients"), pipelined=pending,
                        error=over, ok=not over)
            return
        split = split_path(arg, lim.strict_rfc821_envelopes)
        address = None if split is None else normalize_address(
            split[0], allow_empty=False, smtputf8=self.mail_from.smtputf8,
            numeric_ok=lim.resolve_numeric_domain)
        if split is None or address is None:
            self._error(verb, _r(501, "5.1.3", "Bad recipient address syntax"), pipelined=pending)
            return
        try:
            p = parse_rcpt_params(split[1].split(), dsn="DSN" in self.offered)
        except SyntaxProblem as e:
            self._error(verb, _r(e.code, e.dsn, e.text), pipelined=pending)
            return
        if lim.strict_smtputf8 and not self.mail_from.smtputf8 and not address.isascii():
            self._error(verb, _r(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address"),
                        pipelined=pending)
            return
        self._pause(RcptTo(verb=verb, pipelined=pending, address=address,
                           notify=p.notify, orcpt=p.orcpt,
                           args=[path_token(arg), *split[1].split()]))

    def _no_recipients(self, verb: str) -> Reply | None:
        if self.recipients:
            return None
        if self.mail_from is None:
            return _r(503, "5.5.1", "Error: need RCPT command")
        return _r(554, "5.5.1", "Error: no valid recipients")

    def _cmd_data(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        bad = self._no_recipients(verb)
        if bad is not None:
            self._error(verb, bad, pipelined=pending)
            return
        if args:
            self._error(verb, _r(501, "5.5.4", "Syntax: DATA"), pipelined=pending)
            return
        if self._bdat_active:
            self._error(verb, _r(503, "5.5.1", "Error: DATA after BDAT"), pipelined=pending)
            return
        self._pause(DataCommand(verb=verb, pipelined=pending))

    def _cmd_rset(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        if args:
            self._error(verb, _r(501, "5.5.4", "Syntax: RSET"), pipelined=pending)
            return
        self._end_transaction()
        self._simple(verb, rest, pending, _OK)

    def _simple(self, verb: str, rest: str, pending: bool, reply: Reply) -> None:
        self._send(reply)
        self._count(verb, True)
        self._events.append(Simple(verb=verb, pipelined=pending, argument=rest))

    def _cmd_noop(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        self._simple(verb, rest, pending, _OK)

    def _cmd_quit(self, verb: str, rest: str, args: list[str], pending: bool) -> None:
        self._simple(verb, rest, pending, _r(221, "2.0.0", "Bye"))
        self._close("")

    # ------------------------------------------------------------ content

    def _step_data(self) -> bool:
        reader = self._data
        assert reader is not None
        if not self._in:
            return False
        content, used = reader.read(self._in)
        if used:
            del self._in[:used]
        if content:
            self._events.append(MessageData(verb="DATA", data=content))
        if reader.done:
            self._finish_data(reader)
            return True
        return bool(used)

    def _finish_data(self, reader: DotReader) -> None:
        self._mode = MODE_CMD
        self._data = None
        pending = bool(self._in)
        reply = None
        if reader.bare_lf_rejected:
            reply = _r(self.limits.bare_newline_reject_code, "5.5.2",
                       f"{self.hostname} Error: bare <LF> received")
        elif reader.too_big:
            reply = _r(552, "5.3.4", "Error: message file too big")
        end = MessageEnd(verb="DATA", pipelined=pending, size=reader.size,
                         bare_newlines=reader.bare_newlines, too_big=reader.too_big,
                         bare_lf_rejected=reader.bare_lf_rejected, reply=reply)
        if reply is None:
            self._pause(end)
            return
        self._send(reply)
        self.error_count += 1
        self._count("DATA", False)
        self._message_open = False
        self._end_transaction()
        self._core_answered = True
        self._events.append(end)

    # ------------------------------------------------------ answering events

    def accept(self, reply: Reply | None = None, *,
               ehlo_keywords: list[str] | None = None) -> None:
        """Answer the paused event positively; None sends the default reply."""
        ev = self._take_paused()
        if ev is None:
            return
        verb = ev.verb
        if isinstance(ev, Helo):
            self._end_transaction()
            self.helo_name = ev.hostname
            self.esmtp = ev.extended
            if ev.extended:
                if ehlo_keywords is None and reply is not None:
                    ehlo_keywords = reply.text.split("\n")[1:]
                if ehlo_keywords is None:
                    ehlo_keywords = self._default_keywords()
                self._offered = frozenset(k.split()[0].upper() for k in ehlo_keywords if k.split())
                self._pipelining_offered = "PIPELINING" in self._offered
                reply = reply or Reply(250, "", "\n".join([self.hostname, *ehlo_keywords]))
            else:
                self._pipelining_offered = False
                reply = reply or Reply(250, "", self.hostname)
            self._send(reply)
        elif isinstance(ev, MailFrom):
            self.mail_from = ev
            self.recipients = 0
            self._rcpt_overshoot = 0
            self._send(reply or _r(250, "2.1.0", "Ok"))
        elif isinstance(ev, RcptTo):
            self.recipients += 1
            self._send(reply or _r(250, "2.1.5", "Ok"))
        elif isinstance(ev, DataCommand):
            self._message_open = True
            if verb == "DATA":
                self._send(reply or Reply(354, "", "End data with <CR><LF>.<CR><LF>"))
                self._data = DotReader(self.limits.forbid_bare_newline,
                                       self.limits.message_size_limit)
                self._mode = MODE_DATA
            else:
                if reply is not None:
                    self._send(reply)
                ev2 = self._bdat_pending_event
                self._start_chunk(ev2.size if ev2 else 0, discard=False)
            return  # counted at the end of the message
        elif isinstance(ev, MessageEnd):
            self._send(reply or _OK)
            self._message_done(verb, reply)
            return
        elif isinstance(ev, BdatChunk):
            if ev.last:
                self._send(reply or _r(250, "2.0.0", f"Ok: {ev.total} bytes"))
                self._message_done(verb, reply)
            else:
                self._send(reply or _r(250, "2.0.0", f"Ok: {ev.size} bytes"))
                self._count(verb, True)
            return
        elif isinstance(ev, Vrfy):
            self._send(reply or _r(252, "2.0.0", ev.argument))
        elif isinstance(ev, Etrn):
            self._send(reply or Reply(250, "", "Queuing started"))
        elif isinstance(ev, StartTls):
            self._send(reply or _r(220, "2.0.0", "Ready to start TLS"))
            self._mode = MODE_TLS
            self._in.clear()
            self._skipping = False
            self._long_line = None
            self._long_ready = None
        elif isinstance(ev, (Auth, AuthResponse)):
            self._mode = MODE_CMD
            self.authenticated = True
            self._send(reply or _r(235, "2.7.0", "Authentication successful"))
        elif isinstance(ev, Xclient):
            self._reset_session()
            self._send(reply or self._banner or Reply(220, "", f"{self.hostname} ESMTP"))
        elif isinstance(ev, Xforward):
            self._send(reply or _OK)
        self._count(verb, True)

    def _message_done(self, verb: str, reply: Reply | None) -> None:
        ok = reply is None or reply.code < 400
        self._count(verb, ok)
        if ok:
            self.error_count = 0
            self.junk_count = 0
        self._message_open = False
        self._end_transaction()

    def reject(self, reply: Reply, *, close: bool = False) -> None:
        """Answer the paused event with an error reply (counts as an error)."""
        ev = self._take_paused()
        if ev is None:
            if close:
                self._send(reply)
                self._close(REASON_REJECTED)
            return
        self._send(reply)
        self.error_count += 1
        verb = ev.verb
        if isinstance(ev, (MessageEnd, BdatChunk)):
            if isinstance(ev, BdatChunk) and not ev.last:
                self._count(verb, False)
                self._message_open = False
                self._bdat_error = True
            else:
                self._message_done(verb, reply)
        elif isinstance(ev, DataCommand):
            self._count(verb, False)
            if verb == "BDAT":
                ev2 = self._bdat_pending_event
                self._bdat_pending_event = None
                size = ev2.size if ev2 else 0
                if ev2 is not None and ev2.last:
                    self._end_transaction()
                else:
                    self._bdat_error = True
                self._start_chunk(size, discard=True)
        elif isinstance(ev, (Auth, AuthResponse)):
            self._mode = MODE_CMD
            self._count(verb, False)
        else:
            self._count(verb, False)
        if close:
            self._close(REASON_REJECTED)

    def reply(self, reply: Reply) -> None:
        """Send a reply without answering the paused event (AUTH 334 challenges).

        A 334 during AUTH makes the core read the client's next line as an
        :class:`AuthResponse`.
        """
        if self._paused is None:
            raise ProtocolStateError("reply() with no paused event")
        self._send(reply)
        if isinstance(self._paused, (Auth, AuthResponse)) and reply.code == 334:
            self._paused = None
            self._mode = MODE_AUTH

    def _take_paused(self) -> Event | None:
        ev = self._paused
        if ev is None and self._core_answered:
            return None  # a MessageEnd the core answered itself: nothing to do
        if ev is None:
            if isinstance(self._closed_event, Closed):
                raise ProtocolStateError("session closed")
            raise ProtocolStateError("no paused event to answer")
        self._paused = None
        return ev

    def starttls_done(self) -> None:
        """The TLS handshake completed: back to the initial state."""
        if self._mode != MODE_TLS:
            raise ProtocolStateError("starttls_done() without an accepted STARTTLS")
        self._mode = MODE_CMD
        self._in.clear()
        self.tls_active = True
        self._reset_session()

    # ---------------------------------------------------------------- resets

    def _default_keywords(self) -> list[str]:
        lim = self.limits
        offered = self.limits.extensions if self.limits.extensions is not None \
            else DEFAULT_EXTENSIONS
        kw = []
        for k in ("PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "AUTH",
                  "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"):
            if k not in offered or (k == "VRFY" and lim.disable_vrfy) or (
                    k == "SMTPUTF8" and not lim.smtputf8_enable):
                continue
            if k == "SIZE" and lim.message_size_limit:
                k = f"SIZE {lim.message_size_limit}"
            kw.append(k)
        return kw

    def _end_transaction(self) -> None:
        self.mail_from = None
        self.recipients = 0
        self._rcpt_overshoot = 0
        self._bdat_active = False
        self._bdat_error = False
        self._bdat_total = 0
        self._message_open = False

    def _reset_session(self) -> None:
        self._end_transaction()
        self.helo_name = None
        self.esmtp = False
        self._offered = None
        self._pipelining_offered = False

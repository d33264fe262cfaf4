"""postscreen's small built-in SMTP engine, sans-IO (Postfix's postscreen_smtpd.c).

What a client talks to while postscreen has not (yet) handed it to smtpd:

* after an early verdict with action ``enforce`` (denylist, pregreet,
  DNSBL): every RCPT (and VRFY) is rejected with that test's reply, the
  client learns nothing else and goes away;
* for the deep protocol tests: ``pipelining`` (the client sends more before
  the reply to a command; this engine never announces PIPELINING),
  ``non_smtp`` (an HTTP request, a header line ``User-Agent: ...``, a
  command in ``postscreen_forbidden_commands``, the default's
  ``regexp:{{/^[^A-Z]/ Bogus}}``, or invalid UTF-8 as command name) and
  ``bare_newline`` (a line that ends in a bare ``<LF>``). The tests pass
  when the client gets to a RCPT command without failing them; that RCPT
  is answered ``450 4.3.2 Service currently unavailable`` (or the enforce
  reply) and the client must come back, to be handed to smtpd then.
* with ``final_reply`` (Postfix's PSC_SMTPD_X21): no tests, the first
  command other than QUIT gets that reply and the connection is closed.

Feed bytes with :meth:`PostscreenSmtp.receive_data` (``b""`` is EOF), send
what :meth:`~PostscreenSmtp.data_to_send` returns, log the lines
:meth:`~PostscreenSmtp.logs` returns (Postfix's texts, info level, without
the ``postscreen[pid]:`` prefix), and stop once :attr:`closed` is set
(:attr:`close_reason` says why). The pipelining test looks at what has
already arrived after a command: bytes that came in one read are one
``receive_data`` call, as Postfix looks at its read buffer.

Not here (the service's): the greeting's ``220-`` line and the pregreet
wait, the command time limit (the service calls
:meth:`~PostscreenSmtp.command_time_limit` when it expires), HANGUP /
DISCONNECT / PASS NEW lines, the cache, and the TLS handshake (after the
``220 2.0.0 Ready to start TLS`` reply the engine waits for
:meth:`~PostscreenSmtp.starttls_done`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .escape import escape
from .smtpd import Reply

#: Deep test names, as Verdict.test.
PIPELINING = "pipelining"
NON_SMTP = "non_smtp"
BARE_NEWLINE = "bare_newline"
DEEP_TESTS = (PIPELINING, NON_SMTP, BARE_NEWLINE)

ACTIONS = ("ignore", "enforce", "drop")

#: RCPT/VRFY reply when no test asked for another (the deep tests passed).
DEFAULT_RCPT_REPLY = Reply(450, "4.3.2", "Service currently unavailable")
#: RCPT/VRFY reply after a deep test failed with action enforce.
ENFORCE_REPLY = Reply(550, "5.5.1", "Protocol error")
#: Reply before disconnecting after a deep test failed with action drop.
DROP_REPLY = Reply(521, "5.5.1", "Protocol error")
DROP_NON_SMTP_REPLY = Reply(521, "5.7.0", "Error: I can break rules, too. Goodbye.")

_NOT_RECOGNIZED = Reply(502, "5.5.2", "Error: command not recognized")
_OK = Reply(250, "2.0.0", "Ok")

# Postfix's command table: every name known to the engine, and the ones
# that are allowed before STARTTLS when TLS is required.
_DISABLED = frozenset({"XCLIENT", "XFORWARD", "AUTH"})
_KNOWN = frozenset({"HELO", "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA", "BDAT", "RSET",
                    "NOOP", "VRFY", "ETRN", "QUIT"}) | _DISABLED
_PRE_TLS = frozenset({"HELO", "EHLO", "STARTTLS", "NOOP", "QUIT"})

_CR, _LF = 13, 10
_ANY, _IN_CR = 0, 1  # command reader states
_LOG_TEXT_LIMIT = 100  # bytes of client text quoted in a log line


@dataclass(frozen=True)
class EngineConfig:
    hostname: str  # myhostname
    ehlo_keywords: tuple[str, ...]  # already filtered by the service (discard lists, TLS)
    command_count_limit: int = 20  # postscreen_command_count_limit
    # A deep test that is due for this client: its action (ignore, enforce,
    # drop); "" when the test is off or its cached result is still valid.
    pipelining: str = ""
    non_smtp: str = ""
    bare_newline: str = ""
    forbidden_commands: tuple[str, ...] = ("CONNECT", "GET", "POST")
    line_length_limit: int = 2048  # line_length_limit
    # -- additions --
    # The default postscreen_forbidden_commands ($smtpd_forbidden_commands)
    # ends in regexp:{{/^[^A-Z]/ Bogus}}: a command that does not start
    # with a letter.
    forbid_bogus_commands: bool = True
    # postscreen_*_action: Postfix turns every deep test on when the client
    # already failed an earlier test (a ``reject`` verdict); a test that is
    # off above then uses its configured action.
    pipelining_action: str = "enforce"
    non_smtp_action: str = "drop"
    bare_newline_action: str = "ignore"
    helo_required: bool = False  # postscreen_helo_required
    disable_vrfy: bool = False  # postscreen_disable_vrfy_command
    tls_required: bool = False  # postscreen_tls_security_level = encrypt
    smtputf8_enable: bool = True  # a command name in invalid UTF-8 is non-SMTP
    # How MAIL/RCPT addresses appear in log lines (info_log_address_format);
    # the service passes hato.policy.address.log_form. None: as received,
    # unquoted (the internal form).
    log_address: Callable[[str], str] | None = None


@dataclass
class Verdict:
    """A failed test (deep test here; early test from the service) and what
    to do about it. For a deep test with action ignore, ``reply`` is the
    reply enforce would have used."""

    test: str
    action: str
    reply: Reply


class PostscreenSmtp:
    """One client session of postscreen's SMTP engine."""

    def __init__(self, config: EngineConfig, client: str, *, banner_line: str | None,
                 reject: Verdict | None = None, final_reply: Reply | None = None):
        """client: ``[addr]:port`` as logged. banner_line: the final ``220 ...``
        line to send first, or None (the client pregreeted: it gets no banner,
        its early commands are answered directly). reject: a verdict of an
        earlier test with action enforce; its reply answers RCPT and VRFY, and
        all deep tests are turned on (as Postfix does for a client that failed
        a test). final_reply: answer the first command but QUIT with this and
        close (no tests)."""
        self.config = config
        self.client = client
        self.failed: list[Verdict] = []
        self.closed = False
        self.close_reason = ""
        self.commands = 0
        self.last_command = "CONNECT"  # Postfix's state->where
        self.helo: str | None = None
        self.sender: str | None = None
        self.protocol = "SMTP"
        self.tls_active = False
        self.starttls_pending = False
        self.rcpt_reply = reject.reply if reject is not None else DEFAULT_RCPT_REPLY
        self.final_reply = final_reply
        self._out = bytearray()
        self._logs: list[str] = []
        self._inbuf = bytearray()
        self._line = bytearray()
        self._read_state = _ANY
        self._chunking_off = False  # CHUNKING not announced by the last EHLO
        self._passed: set[str] = set()
        self._decided: set[str] = set()  # failed, or passed by ignore (Postfix's SKIP)
        self._todo: dict[str, str] = {}
        if final_reply is None:
            chosen = (config.pipelining, config.non_smtp, config.bare_newline)
            fallback = (config.pipelining_action, config.non_smtp_action,
                        config.bare_newline_action)
            for test, action, default in zip(DEEP_TESTS, chosen, fallback):
                if not action and reject is not None:
                    action = default
                if action:
                    if action not in ACTIONS:
                        raise ValueError(f"unknown {test} action {action!r}")
                    self._todo[test] = action
        if banner_line is not None:
            self._send_raw(banner_line)

    # -- API ------------------------------------------------------------------------------

    @property
    def tests(self) -> dict[str, str]:
        """The deep tests run in this session and their actions."""
        return dict(self._todo)

    @property
    def passed(self) -> frozenset[str]:
        """Deep tests passed so far (a failure with action ignore counts as
        passed, as in Postfix: its result is cached with the shortest TTL)."""
        return frozenset(self._passed)

    def deep_passed(self) -> bool:
        """Every deep test of this session has run and passed (Postfix: that
        happens at RCPT). True when there are none."""
        return all(t in self._passed for t in self._todo)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def logs(self) -> list[str]:
        out = self._logs
        self._logs = []
        return out

    def receive_data(self, data: bytes) -> None:
        if self.closed:
            return
        if not data:
            self._close("eof")
            return
        self._inbuf += data
        self._run()

    def command_time_limit(self) -> None:
        """postscreen_command_time_limit expired (the service keeps the clock)."""
        if self.closed:
            return
        self._log("COMMAND TIME LIMIT from ", self.client, " after ", self.last_command)
        self._drop(Reply(421, "4.4.2", f"{self.config.hostname} Error: timeout exceeded"),
                   "time limit")

    def starttls_done(self) -> None:
        """The TLS handshake after STARTTLS succeeded: input that came before
        it is discarded, HELO and MAIL are forgotten."""
        if not self.starttls_pending:
            raise RuntimeError("starttls_done() without STARTTLS")
        self.starttls_pending = False
        self.tls_active = True
        self._inbuf.clear()
        self._line.clear()
        self._read_state = _ANY
        self.helo = None
        self.sender = None

    # -- command reader -------------------------------------------------------------------

    def _run(self) -> None:
        buf = self._inbuf
        limit = self.config.line_length_limit
        i = 0
        while i < len(buf) and not self.closed and not self.starttls_pending:
            ch = buf[i]
            i += 1
            line = self._line
            if self._read_state == _ANY and len(line) >= limit:
                del buf[:i]
                self._log("COMMAND LENGTH LIMIT from ", self.client, " after ", self.last_command)
                self._drop(self._reply_421(), "line too long")
                return
            line.append(ch)
            if self._read_state == _IN_CR and ch == _LF:
                text = bytes(line[:-2])
            elif ch == _LF:
                self._read_state = _ANY
                self._bare_newline(bytes(line[:-1]))
                if self.closed:
                    del buf[:i]
                    return
                text = bytes(line[:-1])
            else:
                self._read_state = _IN_CR if ch == _CR else _ANY
                continue
            del buf[:i]
            i = 0
            self._read_state = _ANY
            line.clear()
            self._command(text)
        if self.closed or not self.starttls_pending:
            del buf[:i]

    def _bare_newline(self, text: bytes) -> None:
        if not self._due(BARE_NEWLINE):
            return
        self._log("BARE NEWLINE from ", self.client, " after ",
                  escape(text[:_LOG_TEXT_LIMIT]))
        self._fail(BARE_NEWLINE, DROP_REPLY)

    # -- one command ----------------------------------------------------------------------

    def _command(self, line: bytes) -> None:
        text = line.split(b"\0", 1)[0]  # a C string ends at NUL
        stripped = text.lstrip(b" ")
        space = stripped.find(b" ")
        if space < 0:
            word, args = stripped, b""
        else:
            word, args = stripped[:space], stripped[space + 1:]
        upper = word.decode("latin-1").upper()
        name = upper if upper in _KNOWN else None
        saved_where = self.last_command
        self.last_command = name or "UNIMPLEMENTED"

        if self.final_reply is not None and name != "QUIT":
            self._drop(self.final_reply, "final reply")
            return
        if name is None and self._due(NON_SMTP) and self._non_smtp(word):
            self._log("NON-SMTP COMMAND from ", self.client, " after ", saved_where, ": ",
                      word[:_LOG_TEXT_LIMIT], " ", escape(args[:_LOG_TEXT_LIMIT]))
            self._fail(NON_SMTP, DROP_NON_SMTP_REPLY)
            if self.closed:
                return
        if name != "BDAT" and self._due(PIPELINING) and self._inbuf:
            self._log("COMMAND PIPELINING from ", self.client, " after ",
                      word[:_LOG_TEXT_LIMIT], ": ",
                      escape(bytes(self._inbuf[:_LOG_TEXT_LIMIT])))
            self._fail(PIPELINING, DROP_REPLY)
            if self.closed:
                return
        if name == "RCPT":
            for test in self._todo:
                if test not in self._decided:
                    self._passed.add(test)
        self.commands += 1
        if self.commands > self.config.command_count_limit and name != "QUIT":
            self._log("COMMAND COUNT LIMIT from ", self.client, " after ", saved_where)
            self._drop(self._reply_421(), "too many commands")
            return
        if name is None or name in _DISABLED:
            self._send(_NOT_RECOGNIZED)
        elif self.config.tls_required and not self.tls_active and name not in _PRE_TLS:
            self._send(Reply(530, "5.7.0", "Must issue a STARTTLS command first"))
        else:
            getattr(self, "_do_" + name.lower())(args)

    def _non_smtp(self, word: bytes) -> bool:
        if _is_header(word):
            return True
        if self.config.smtputf8_enable:
            try:
                word.decode("utf-8")
            except UnicodeDecodeError:
                return True
        upper = word.decode("latin-1").upper()
        if any(upper == c.upper() for c in self.config.forbidden_commands):
            return True
        return bool(self.config.forbid_bogus_commands and word
                    and not (65 <= word[0] <= 90 or 97 <= word[0] <= 122))

    # -- command handlers (Postfix's psc_*_cmd) ---------------------------------------------

    def _do_helo(self, args: bytes) -> None:
        name = _token(args)
        if name is None:
            self._send(Reply(501, "", "Syntax: HELO hostname"))
            return
        self.helo = name
        self.sender = None
        self._send(Reply(250, "", self.config.hostname))

    def _do_ehlo(self, args: bytes) -> None:
        name = _token(args)
        if name is None:
            self._send(Reply(501, "", "Syntax: EHLO hostname"))
            return
        self.helo = name
        self.sender = None
        self.protocol = "ESMTP"
        keywords = [k for k in self.config.ehlo_keywords
                    if not (self.tls_active and k.upper() == "STARTTLS")]
        self._chunking_off = not any(k.upper() == "CHUNKING" for k in keywords)
        self._send(Reply(250, "", "\n".join([self.config.hostname, *keywords])))

    def _do_starttls(self, args: bytes) -> None:
        if _token(args) is not None:
            self._send(Reply(501, "5.5.4", "Syntax: STARTTLS"))
        elif self.tls_active:
            self._send(Reply(554, "5.5.1", "Error: TLS already active"))
        elif not any(k.upper() == "STARTTLS" for k in self.config.ehlo_keywords):
            self._send(Reply(502, "5.5.1", "Error: command not implemented"))
        else:
            self._send(Reply(220, "2.0.0", "Ready to start TLS"))
            self.starttls_pending = True

    def _do_mail(self, args: bytes) -> None:
        if self.config.helo_required and self.helo is None:
            self._send(Reply(503, "5.5.1", "Error: send HELO/EHLO first"))
            return
        if self.sender is not None:
            self._send(Reply(503, "5.5.1", "Error: nested MAIL command"))
            return
        colon = args.find(b":")
        if colon < 0:
            self._send(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"))
            return
        self.sender = _extract_address(args[colon + 1:])
        self._send(Reply(250, "2.1.0", "Ok"))

    def _do_rcpt(self, args: bytes) -> None:
        if self.sender is None:
            self._send(Reply(503, "5.5.1", "Error: need MAIL command"))
            return
        colon = args.find(b":")
        if colon < 0:
            self._send(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"))
            return
        rcpt = _extract_address(args[colon + 1:])
        reply = self.rcpt_reply
        form = self.config.log_address or (lambda a: a)
        self._log("NOQUEUE: reject: RCPT from ", self.client, ": ", _reply_text(reply),
                  "; from=<", form(self.sender), ">, to=<", form(rcpt), ">, proto=",
                  self.protocol, ", helo=<", self.helo or "", ">")
        self._send(reply)

    def _do_data(self, args: bytes) -> None:
        self._log("DATA without valid RCPT from ", self.client)
        if _token(args) is not None:
            reply = Reply(501, "5.5.4", "Syntax: DATA")
        elif self.sender is None:
            reply = Reply(503, "5.5.1", "Error: need RCPT command")
        else:
            reply = Reply(554, "5.5.1", "Error: no valid recipients")
        self._drop(reply, "data")

    def _do_bdat(self, args: bytes) -> None:
        self._log("BDAT without valid RCPT from ", self.client)
        if self._chunking_off:
            reply = Reply(502, "5.5.1", "Error: command not implemented")
        elif _token(args) is None:
            reply = Reply(501, "5.5.4", "Syntax: BDAT count [LAST]")
        elif self.sender is None:
            reply = Reply(554, "5.5.1", "Error: need MAIL command")
        else:
            reply = Reply(554, "5.5.1", "Error: no valid recipients")
        self._drop(reply, "bdat")

    def _do_rset(self, args: bytes) -> None:
        self.sender = None
        self._send(_OK)

    def _do_noop(self, args: bytes) -> None:
        self._send(_OK)

    def _do_vrfy(self, args: bytes) -> None:
        if _token(args) is None:
            self._send(Reply(501, "5.5.4", "Syntax: VRFY address"))
        elif self.config.disable_vrfy:
            self._send(Reply(502, "5.5.1", "VRFY command is disabled"))
        else:
            self._send(self.rcpt_reply)

    def _do_etrn(self, args: bytes) -> None:
        if self.config.helo_required and self.helo is None:
            self._send(Reply(503, "5.5.1", "Error: send HELO/EHLO first"))
        elif _token(args) is None:
            self._send(Reply(500, "", "Syntax: ETRN domain"))
        else:
            self._send(Reply(458, "", "Unable to queue messages"))

    def _do_quit(self, args: bytes) -> None:
        self._drop(Reply(221, "2.0.0", "Bye"), "quit")

    # -- helpers --------------------------------------------------------------------------

    def _due(self, test: str) -> bool:
        return test in self._todo and test not in self._decided

    def _fail(self, test: str, drop_reply: Reply) -> None:
        """A deep test failed: Postfix's FAIL, then the action."""
        action = self._todo[test]
        self._decided.add(test)
        self._passed.discard(test)
        if action == "drop":
            self.failed.append(Verdict(test, action, drop_reply))
            self._drop(drop_reply, "drop")
        elif action == "enforce":
            self.failed.append(Verdict(test, action, ENFORCE_REPLY))
            self.rcpt_reply = ENFORCE_REPLY
        else:
            self.failed.append(Verdict(test, action, ENFORCE_REPLY))
            self._passed.add(test)

    def _reply_421(self) -> Reply:
        return Reply(421, "", f"{self.config.hostname} Service unavailable - try again later")

    def _send(self, reply: Reply) -> None:
        self._out += reply.render()

    def _send_raw(self, line: str) -> None:
        self._out += line.rstrip("\r\n").encode("utf-8", "surrogateescape") + b"\r\n"

    def _drop(self, reply: Reply, reason: str) -> None:
        self._send(reply)
        self._close(reason)

    def _close(self, reason: str) -> None:
        self.closed = True
        self.close_reason = reason
        self._inbuf.clear()
        self._line.clear()

    def _log(self, *parts: str | bytes) -> None:
        raw = b"".join(p if isinstance(p, bytes) else p.encode("utf-8", "surrogateescape")
                       for p in parts)
        self._logs.append(printable(raw).decode("utf-8", "replace"))


def _reply_text(reply: Reply) -> str:
    return reply.render().decode("utf-8", "surrogateescape").rstrip("\r\n").replace("\r\n", " ")


def _token(args: bytes) -> str | None:
    """Postfix's mystrtok(&args, " "): the first space-separated word."""
    words = args.split(b" ")
    for w in words:
        if w:
            return w.decode("utf-8", "surrogateescape")
    return None


def _extract_address(text: bytes) -> str:
    """psc_extract_addr(): the address after ``FROM:``/``TO:``, unquoted;
    ``<...>`` or up to the next space; a source route is cut off."""
    i, n = 0, len(text)
    while i < n and text[i] == 0x20:
        i += 1
    stop = 0x20
    if i < n and text[i] == 0x3C:  # <
        i += 1
        stop = 0x3E  # >
    out = bytearray()
    quoted = False
    while i < n:
        c = text[i]
        if not quoted and c == stop:
            break
        if c == 0x22:  # "
            quoted = not quoted
        else:
            if c == 0x5C:  # backslash
                i += 1
                if i >= n:
                    break
                c = text[i]
            out.append(c)
        i += 1
    addr = out.decode("utf-8", "surrogateescape")
    if addr.startswith("@") and ":" in addr:
        addr = addr[addr.index(":") + 1:]
    return addr


def _is_header(word: bytes) -> bool:
    """Postfix's is_header(): a header label (printable ASCII) followed by
    optional blanks and a colon."""
    state = 0  # 0 init, 1 in label, 2 blanks after label
    for c in word:
        if c == 0x3A:  # :
            return state != 0
        if c in (0x20, 0x09):
            if state == 0:
                return False
            state = 2
            continue
        if c == 0 or c >= 0x80 or c < 0x20 or c == 0x7F or state == 2:
            return False
        state = 1
    return False



def printable(data: bytes) -> bytes:
    """Postfix's printable() with UTF-8 on: printable ASCII and (loosely
    checked) UTF-8 sequences stay, every other byte becomes ``?``."""
    out = bytearray(data)
    i, n = 0, len(out)
    while i < n:
        c = out[i]
        if c < 0x80:
            if c < 0x20 or c == 0x7F:
                out[i] = 0x3F
        elif 194 <= c <= 254 and i + 1 < n and 0x80 <= out[i + 1] < 0xC0:
            while i + 1 < n and 0x80 <= out[i + 1] < 0xC0:
                i += 1
        else:
            out[i] = 0x3F
        i += 1
    return bytes(out)

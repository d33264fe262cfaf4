"""The sans-IO core of hato's SMTP and LMTP client (the smtp and lmtp
delivery agents drive it).

Feed it the server's bytes (:meth:`ClientConnection.receive_data`, ``b""``
when the server closed), read events (:meth:`~ClientConnection.next_event`),
answer the ones that need a decision, and write what
:meth:`~ClientConnection.data_to_send` returns. No sockets, no clock, no
configuration object: the session's settings arrive in :class:`ClientParams`,
the message in :class:`Message`. Timeouts are the driver's: it calls
:meth:`~ClientConnection.abort` with Postfix's text.

The conversation is Postfix's smtp(8): the greeting (``smtp_skip_5xx_greeting``
makes a 5xx greeting a soft error), EHLO with a HELO fallback (LHLO for LMTP,
no fallback), STARTTLS and AUTH when the caller's policy asks, SIZE checked
before MAIL, SMTPUTF8 required and not offered → bounce 5.6.7, ``BODY=``,
``SMTPUTF8``, ``RET``/``ENVID``/``NOTIFY``/``ORCPT`` when offered, PIPELINING
(MAIL, every RCPT and DATA in one group, replies read in order), one end of
data reply for all accepted recipients (SMTP) or one per recipient (LMTP),
BDAT when the server offers CHUNKING and PIPELINING, RSET before the next
message after a failed one, QUIT at the end without waiting for its reply
(``smtp_skip_quit_response = yes``).

Events (:meth:`next_event`):

* :class:`NeedTls` — STARTTLS was answered 220: do the handshake, call
  :meth:`tls_done` (the core sends EHLO again) or :meth:`abort`.
* :class:`NeedAuth` — the server offers AUTH and ``ClientParams.auth`` is
  set: call :meth:`authenticate` with a mechanism object (``name``,
  ``initial_response()``, ``step(challenge)``; see
  :mod:`hato.proto.sasl_client`) or with None to go on without.
* :class:`NeedBody` — stream the content with :meth:`send_body` and finish
  with :meth:`end_body` (returned again while the core waits for content).
  ``downgrade`` says the body is 8-bit and the server lacks 8BITMIME: the
  caller converts it (or sends it as is, ``disable_mime_output_conversion``).
* :class:`MessageDone` — every recipient of the message has its
  :class:`RecipientResult`.
* :data:`READY` — the session is idle: :meth:`send_message` or :meth:`quit`.
* :class:`Closed` — the session is over; its :class:`Outcome` says whether
  the host failed (try the next MX, do not cache the connection).

Recipient dispositions follow the reply class of the enhanced status code:
2 → sent, 4 → deferred, 5 → bounced. Whether a deferred recipient is tried
at the next MX or goes to the deferred queue is the delivery agent's choice
(Postfix: the next server unless this one was the last).
"""

from __future__ import annotations

import base64
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from .smtp_client_replies import (
    BadReply,
    BodyEncoder,
    ReplyReader,
    ServerReply,
    fake_reply,
    parse_ehlo,
    xtext,
)


class ProtocolStateError(RuntimeError):
    """The caller used the API out of order."""


@dataclass(frozen=True)
class ClientParams:
    helo_name: str  # smtp_helo_name / lmtp_lhlo_name
    server_name: str = "unknown[unknown]"  # "host[addr]" (":port" for LMTP) for texts
    lmtp: bool = False
    try_ehlo: bool = True  # smtp_never_send_ehlo = no
    skip_5xx_greeting: bool = True  # smtp_skip_5xx_greeting
    starttls: str = "none"  # none | may | encrypt (the policy's effect on STARTTLS)
    tls_active: bool = False  # the connection is already TLS (wrapper mode)
    auth: bool = False  # smtp_sasl_auth_enable with credentials for this server
    auth_soft_bounce: bool = True  # smtp_sasl_auth_soft_bounce
    pipelining: bool = True  # use PIPELINING when offered
    chunking: bool = True  # use BDAT when CHUNKING (and PIPELINING) are offered
    line_length_limit: int = 998  # smtp_line_length_limit, 0 = none
    reply_line_limit: int = 2048  # line_length_limit
    discard_ehlo_keywords: frozenset[str] = frozenset()  # smtp_discard_ehlo_keywords
    myhostname: str | None = None  # set: EHLO naming us is a mail loop (5.4.6)


@dataclass(frozen=True)
class Recipient:
    address: str
    notify: frozenset[str] = frozenset()  # SUCCESS, FAILURE, DELAY or NEVER
    orcpt: str | None = None  # "rfc822;addr", decoded


@dataclass(frozen=True)
class Message:
    sender: str  # "" for the null sender
    recipients: tuple[Recipient | str, ...]
    size: int = 0  # for SIZE=
    body: str | None = None  # "7BIT" | "8BITMIME" | None (unknown: no BODY=)
    smtputf8: bool = False  # SMTPUTF8 is required (UTF-8 envelope or headers)
    ret: str | None = None  # FULL | HDRS
    envid: str | None = None  # decoded
    #: an address probe (address verification): the transaction ends after
    #: the RCPT replies, no DATA; a 2xx RCPT reply is the recipient's "sent"
    verify_only: bool = False

    def recipient(self, i: int) -> Recipient:
        r = self.recipients[i]
        return Recipient(r) if isinstance(r, str) else r


class AuthMechanism(Protocol):
    name: str

    def initial_response(self) -> bytes | None: ...

    def step(self, challenge: bytes) -> bytes: ...


class Disposition(Enum):
    SENT = "sent"
    DEFERRED = "deferred"
    BOUNCED = "bounced"


class Outcome(Enum):
    OK = "ok"  # the session ended normally (QUIT, or an idle session closed)
    SITE_SOFT = "site-soft"  # the host failed for now: try the next MX, do not reuse
    SITE_HARD = "site-hard"  # the host refused permanently (5xx greeting/HELO)


@dataclass(frozen=True)
class RecipientResult:
    index: int
    address: str
    disposition: Disposition
    dsn: str  # enhanced status code
    reply: ServerReply  # code 0: made up by the client
    command: str  # what the reply answered ("RCPT TO", "end of DATA"), "" if none
    reason: str  # Postfix's status text ("host X said: ... (in reply to RCPT TO command)")

    @property
    def code(self) -> int:
        return self.reply.code


class Event:
    pass


@dataclass
class NeedTls(Event):
    pass


@dataclass
class NeedAuth(Event):
    mechanisms: tuple[str, ...] = ()


@dataclass
class NeedBody(Event):
    downgrade: bool = False
    chunking: bool = False  # BDAT (no dot-stuffing)


@dataclass
class MessageDone(Event):
    results: tuple[RecipientResult, ...] = ()


@dataclass
class Closed(Event):
    outcome: Outcome = Outcome.OK
    reason: str = ""  # the failure, "" after QUIT


class _Sentinel:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
READY = _Sentinel("READY")

# Phases
_GREETING, _HELLO, _STARTTLS, _TLS, _NEED_AUTH, _AUTH, _READY, _TRANS, _BODY, _DONE = range(10)

# What a reply is expected for: stage text for "lost connection ... while"
_STAGE = {
    "GREETING": "receiving the initial server greeting",
    "EHLO": "performing the EHLO handshake", "HELO": "performing the HELO handshake",
    "LHLO": "performing the LHLO handshake",
    "STARTTLS": "receiving the STARTTLS response",
    "AUTH": "performing the SASL authentication",
    "RSET": "sending RSET", "MAIL": "sending MAIL FROM", "RCPT": "sending RCPT TO",
    "DATA": "sending DATA command", "BDAT": "sending message body",
    "DOT": "sending end of data -- message may be sent more than once",
    "DISCARD": "sending end of data", "BODY": "sending message body",
}


@dataclass
class _Expect:
    kind: str  # a key of _STAGE
    index: int = -1  # RCPT / LMTP DOT: the recipient
    last: bool = False  # BDAT LAST


@dataclass
class _Txn:
    message: Message
    results: dict[int, RecipientResult] = field(default_factory=dict)
    accepted: list[int] = field(default_factory=list)
    plan: deque[_Expect] = field(default_factory=deque)  # commands not sent yet
    failed: bool = False  # MAIL or the content was refused: ignore the rest
    sent: bool = False  # a command of this transaction went out
    bdat: bool = False
    encoder: BodyEncoder | None = None
    pending_chunk: bytes = b""
    body_ended: bool = False


class ClientConnection:
    """One SMTP or LMTP client session, sans-IO."""

    def __init__(self, params: ClientParams, message: Message | None = None):
        self.params = params
        self.features: dict[str, str] = {}  # EHLO keywords in force
        self.esmtp = False
        self.tls_active = params.tls_active
        self.authenticated = False
        self.server_helo_name = ""
        self.size_limit = 0  # the server's SIZE, 0: none
        self.messages = 0  # transactions started on this session
        self._reader = ReplyReader(params.reply_line_limit)
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._expect: deque[_Expect] = deque()
        self._phase = _GREETING
        self._expect.append(_Expect("GREETING"))
        self._txn: _Txn | None = None
        self._next: Message | None = message
        self._need_rset = False
        self._tls_refused = False  # STARTTLS failed under "may": go on in plaintext
        self._auth_declined = False
        self._mech: AuthMechanism | None = None
        self._eof = False

    # ------------------------------------------------------------------ I/O

    def receive_data(self, data: bytes) -> None:
        """The server's bytes; ``b""`` when it closed the connection."""
        if self._phase == _DONE:
            return
        if not data:
            self._eof = True
            return
        if self._phase == _TLS:
            return  # plaintext after 220 to STARTTLS: dropped (injection)
        self._reader.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self._phase == _DONE

    @property
    def pipelining(self) -> bool:
        return self.params.pipelining and "PIPELINING" in self.features

    @property
    def downgrade(self) -> bool:
        """The current message is 8-bit and the server lacks 8BITMIME."""
        t = self._txn
        return t is not None and t.message.body == "8BITMIME" and "8BITMIME" not in self.features

    @property
    def waiting_for(self) -> str:
        """What the next reply answers (GREETING, EHLO, MAIL, RCPT, DATA,
        DOT, ...; a key of the stage table), "" when no reply is due: the
        driver picks its timeout by it."""
        return self._expect[0].kind if self._expect else ""

    @staticmethod
    def stage_text(kind: str) -> str:
        """``receiving the initial server greeting``, ... (Postfix's words
        for "while ..." in timeouts and lost connections)."""
        return _STAGE.get(kind, "")

    def next_event(self) -> Event | _Sentinel:
        while True:
            if self._events:
                return self._events.popleft()
            if self._phase == _DONE:
                return NEED_DATA
            if self._phase == _TLS:
                return NeedTls()
            if self._phase == _NEED_AUTH:
                return NeedAuth(tuple(self.features.get("AUTH", "").upper().split()))
            if self._phase == _BODY:
                t = self._txn
                assert t is not None
                if not t.body_ended and not t.failed:
                    return NeedBody(self.downgrade, t.bdat)
                if t.failed and not self._expect:
                    self._finish_txn()  # a BDAT chunk was refused
                    continue
            if self._phase == _READY and not self._expect:
                if self._eof and not self._reader.pending:
                    self._lost()  # an idle (cached) session the server closed
                    continue
                if self._next is not None:
                    msg, self._next = self._next, None
                    self._start(msg)
                    continue
                return READY
            if self._expect:
                try:
                    reply = self._reader.next_reply()
                except BadReply as e:
                    self._protocol_error(e.line)
                    continue
                if reply is not None:
                    self._on_reply(reply)
                    continue
            if self._eof:
                self._lost()
                continue
            return NEED_DATA

    # ------------------------------------------------------------ commands

    def _send(self, line: str, expect: _Expect | None) -> None:
        self._out += line.encode("utf-8", "surrogateescape") + b"\r\n"
        if expect is not None:
            self._expect.append(expect)

    def _hello(self) -> None:
        p = self.params
        if p.lmtp:
            self._send(f"LHLO {p.helo_name}", _Expect("LHLO"))
        elif p.try_ehlo:
            self._send(f"EHLO {p.helo_name}", _Expect("EHLO"))
        else:
            self._send(f"HELO {p.helo_name}", _Expect("HELO"))
        self._phase = _HELLO

    def tls_done(self) -> None:
        """The TLS handshake succeeded: forget what the server said before,
        say EHLO (LHLO) again."""
        if self._phase != _TLS:
            raise ProtocolStateError("tls_done() without NeedTls")
        self.tls_active = True
        self.features = {}
        self._reader.clear()
        self._hello()

    def authenticate(self, mechanism: AuthMechanism | None) -> None:
        """Answer :class:`NeedAuth`: start the exchange, or None to skip AUTH."""
        if self._phase != _NEED_AUTH:
            raise ProtocolStateError("authenticate() without NeedAuth")
        if mechanism is None:
            self._auth_declined = True
            self._phase = _READY
            return
        self._mech = mechanism
        self._phase = _AUTH
        try:
            initial = mechanism.initial_response()
        except Exception as e:  # noqa: BLE001 - the mechanism cannot start: defer
            self._auth_error(str(e))
            return
        if initial is None:
            self._send(f"AUTH {mechanism.name}", _Expect("AUTH"))
        else:
            b64 = base64.b64encode(initial).decode("ascii") or "="
            self._send(f"AUTH {mechanism.name} {b64}", _Expect("AUTH"))

    def send_message(self, message: Message) -> None:
        """Start a mail transaction (after :data:`READY`)."""
        if self._phase == _DONE:
            raise ProtocolStateError("session closed")
        if self._next is not None or self._txn is not None:
            raise ProtocolStateError("a message is in progress")
        self._next = message

    def check(self) -> None:
        """RSET on an idle session (after :data:`READY`), to learn that a
        cached connection still works before it carries a message: READY
        again on 2xx, :class:`Closed` (SITE_SOFT) otherwise."""
        if self._phase != _READY or self._txn is not None or self._next is not None \
                or self._expect:
            raise ProtocolStateError("check() on a busy session")
        self._need_rset = False
        self._send("RSET", _Expect("RSET", last=True))

    def quit(self) -> None:
        """End the session (after :data:`READY`, NeedTls or NeedAuth)."""
        if self._phase == _DONE:
            return
        if self._txn is not None or self._phase not in (_READY, _TLS, _NEED_AUTH, _GREETING,
                                                       _HELLO):
            raise ProtocolStateError("quit() during a transaction")
        if self._phase != _TLS and not self._expect:
            self._send("QUIT", None)
        self._close(Outcome.OK, "")

    def abort(self, reason: str, dsn: str = "4.4.2") -> None:
        """The driver gave up (timeout, TLS handshake failure, I/O error):
        pending recipients are deferred with *reason*, the session ends."""
        if self._phase == _DONE:
            return
        self._site_fail(fake_reply(dsn), reason, "", quit=False)

    # --------------------------------------------------------------- body

    def send_body(self, chunk: bytes) -> None:
        """Message content (LF or CRLF line ends); ignored once the message
        has failed."""
        t = self._body_txn()
        if t is None or t.encoder is None:
            return
        data = t.encoder.encode(chunk)
        if not t.bdat:
            self._out += data
        elif data:
            if t.pending_chunk:
                self._bdat(t.pending_chunk, last=False)
            t.pending_chunk = data

    def end_body(self) -> None:
        t = self._body_txn()
        if t is None or t.encoder is None:
            return
        t.body_ended = True
        tail = t.encoder.finish()
        if not t.bdat:
            self._out += tail + b".\r\n"
            self._expect_end("DOT")
        else:
            self._bdat(t.pending_chunk + tail, last=True)
            t.pending_chunk = b""
        self._phase = _TRANS

    def _body_txn(self) -> _Txn | None:
        t = self._txn
        if t is None or t.failed or t.body_ended:
            return None  # the message failed or ended already: nothing to send
        if self._phase != _BODY:
            raise ProtocolStateError("no message body expected")
        return t

    def _bdat(self, data: bytes, last: bool) -> None:
        self._out += f"BDAT {len(data)}{' LAST' if last else ''}\r\n".encode("ascii") + data
        if last:
            self._expect_end("BDAT")
        else:
            self._expect.append(_Expect("BDAT"))

    def _expect_end(self, kind: str) -> None:
        t = self._txn
        assert t is not None
        if self.params.lmtp:
            for i in t.accepted:
                self._expect.append(_Expect("DOT", index=i, last=True))
        else:
            self._expect.append(_Expect(kind if kind == "DOT" else "BDAT", last=True))

    # -------------------------------------------------------- transaction

    def _start(self, msg: Message) -> None:
        p = self.params
        t = self._txn = _Txn(msg)
        self.messages += 1
        self._phase = _TRANS
        n = len(msg.recipients)
        if self.size_limit and msg.size > self.size_limit:
            self._fail_all(fake_reply("5.3.4"), f"message size {msg.size} exceeds size limit "
                           f"{self.size_limit} of server {p.server_name}", "")
        elif msg.smtputf8 and "SMTPUTF8" not in self.features:
            self._fail_all(fake_reply("5.6.7"), "SMTPUTF8 is required, but was not offered "
                           f"by host {p.server_name}", "")
        if t.results:
            self._finish_txn()
            return
        t.bdat = p.chunking and "CHUNKING" in self.features and self.pipelining \
            and not msg.verify_only
        if self._need_rset:
            t.plan.append(_Expect("RSET"))
            self._need_rset = False
        t.plan.append(_Expect("MAIL"))
        t.plan.extend(_Expect("RCPT", index=i) for i in range(n))
        if not t.bdat and not msg.verify_only:
            t.plan.append(_Expect("DATA"))
        self._send_plan()

    def _send_plan(self) -> None:
        """Send the next command, or all of them when pipelining (RFC 2920:
        DATA ends the group)."""
        t = self._txn
        assert t is not None
        while t.plan:
            e = t.plan[0]
            if e.kind == "DATA" and not self.pipelining and not t.accepted:
                t.plan.popleft()
                break  # nobody to send to: no DATA (RSET before the next message)
            t.plan.popleft()
            t.sent = True
            self._send(self._command(t.message, e), e)
            if not self.pipelining:
                return
        if not t.plan and not self._expect:
            self._end_of_commands()

    def _command(self, msg: Message, e: _Expect) -> str:
        f = self.features
        if e.kind == "RSET":
            return "RSET"
        if e.kind == "DATA":
            return "DATA"
        if e.kind == "MAIL":
            line = f"MAIL FROM:<{msg.sender}>"
            if "SIZE" in f:
                line += f" SIZE={msg.size}"
            if "8BITMIME" in f and msg.body in ("7BIT", "8BITMIME"):
                line += f" BODY={msg.body}"
            if msg.smtputf8 and "SMTPUTF8" in f:
                line += " SMTPUTF8"
            if "DSN" in f:
                if msg.envid:
                    line += f" ENVID={xtext(msg.envid)}"
                if msg.ret:
                    line += f" RET={msg.ret}"
            return line
        r = msg.recipient(e.index)
        line = f"RCPT TO:<{r.address}>"
        if "DSN" in f:
            if r.notify:
                order = ("NEVER", "SUCCESS", "FAILURE", "DELAY")
                line += " NOTIFY=" + ",".join(n for n in order if n in r.notify)
            if r.orcpt and ";" in r.orcpt:
                atype, _, addr = r.orcpt.partition(";")
                line += f" ORCPT={atype};{xtext(addr)}"
        return line

    def _end_of_commands(self) -> None:
        """Every command of the envelope was answered."""
        t = self._txn
        assert t is not None
        if self._phase == _BODY:
            return
        if t.bdat and t.accepted and not t.failed and not t.body_ended:
            self._start_body()
            return
        self._finish_txn()

    def _start_body(self) -> None:
        t = self._txn
        assert t is not None
        t.encoder = BodyEncoder(stuff=not t.bdat, line_limit=self.params.line_length_limit)
        self._phase = _BODY

    def _finish_txn(self) -> None:
        t = self._txn
        assert t is not None
        msg = t.message
        for i in range(len(msg.recipients)):
            if i not in t.results:  # cannot happen with a sane server; never lose one
                self._result(i, fake_reply("4.5.0"), "", "internal protocol error")
        # The server may still hold the transaction: RSET before the next one.
        self._need_rset = t.sent and not (t.body_ended and not t.failed)
        self._events.append(MessageDone(tuple(t.results[i] for i in sorted(t.results))))
        self._txn = None
        if self._phase != _DONE:
            self._phase = _READY

    # ------------------------------------------------------------- results

    def _result(self, i: int, reply: ServerReply, command: str, reason: str) -> None:
        t = self._txn
        assert t is not None
        if i in t.results:
            return
        cls = reply.dsn[:1]
        disp = Disposition.SENT if cls == "2" else \
            Disposition.BOUNCED if cls == "5" else Disposition.DEFERRED
        t.results[i] = RecipientResult(i, t.message.recipient(i).address, disp, reply.dsn,
                                       reply, command, reason)

    def _said(self, reply: ServerReply, command: str) -> str:
        return f"host {self.params.server_name} said: {reply.text} (in reply to {command} command)"

    def _fail_all(self, reply: ServerReply, reason: str, command: str,
                  only: list[int] | None = None) -> None:
        t = self._txn
        if t is None:
            return
        for i in (only if only is not None else range(len(t.message.recipients))):
            self._result(i, reply, command, reason)

    def _site_fail(self, reply: ServerReply, reason: str, command: str, *, quit: bool) -> None:
        """The host failed: every recipient without a result gets *reply*,
        the session ends (QUIT first when the connection is sane)."""
        if self._txn is None and self._next is not None:
            self._txn = _Txn(self._next)
            self._next = None
        if self._txn is not None:
            self._fail_all(reply, reason, command)
            self._finish_txn()
        if quit:
            self._send("QUIT", None)
        hard = reply.dsn.startswith("5")
        self._close(Outcome.SITE_HARD if hard else Outcome.SITE_SOFT, reason)

    def _close(self, outcome: Outcome, reason: str) -> None:
        self._phase = _DONE
        self._expect.clear()
        self._txn = None
        self._events.append(Closed(outcome, reason))

    def _stage(self) -> str:
        if self._expect:
            return _STAGE[self._expect[0].kind]
        return _STAGE["BODY"] if self._phase == _BODY else "sending QUIT"

    def _lost(self) -> None:
        if self._phase in (_READY,) and not self._expect and self._txn is None \
                and self._next is None:
            self._close(Outcome.OK, "lost connection")
            return
        self._site_fail(fake_reply("4.4.2"), f"lost connection with {self.params.server_name} "
                        f"while {self._stage()}", "", quit=False)

    def _protocol_error(self, line: bytes) -> None:
        text = line[:100].decode("utf-8", "replace")
        self._site_fail(fake_reply("4.5.0", text), "remote protocol error in reply from "
                        f"{self.params.server_name} while {self._stage()}: {text}", "",
                        quit=False)

    # -------------------------------------------------------------- replies

    def _on_reply(self, reply: ServerReply) -> None:
        e = self._expect.popleft()
        if reply.code == 421 and e.kind != "DISCARD":
            # The server is going away: everything pending is deferred.
            command = _COMMAND.get(e.kind, "")
            if e.kind in ("GREETING", "EHLO", "HELO", "LHLO"):
                reason = f"host {self.params.server_name} refused to talk to me: {reply.text}"
            else:
                reason = self._said(reply, command) if command else \
                    f"host {self.params.server_name} said: {reply.text}"
            self._site_fail(reply, reason, command, quit=False)
            return
        getattr(self, "_reply_" + e.kind.lower())(e, reply)
        t = self._txn
        if t is not None and self._phase == _TRANS and not self._expect:
            if t.plan and not t.failed:
                self._send_plan()
            else:
                t.plan.clear()
                self._end_of_commands()

    def _refused(self, reply: ServerReply) -> None:
        self._site_fail(reply, f"host {self.params.server_name} refused to talk to me: "
                        f"{reply.text}", "", quit=True)

    def _reply_greeting(self, e: _Expect, reply: ServerReply) -> None:
        if reply.code // 100 == 2:
            self._hello()
            return
        if reply.code // 100 == 5 and self.params.skip_5xx_greeting:
            reply = ServerReply(reply.code, "4" + reply.dsn[1:], reply.lines)
        self._refused(reply)

    def _reply_ehlo(self, e: _Expect, reply: ServerReply) -> None:
        if reply.code // 100 != 2:
            if self.params.lmtp:
                self._refused(reply)
            else:  # Postfix: any EHLO failure but 421 → HELO
                self._send(f"HELO {self.params.helo_name}", _Expect("HELO"))
            return
        name, kw = parse_ehlo(reply)
        for k in self.params.discard_ehlo_keywords:
            kw.pop(k.upper(), None)
        self.features = kw
        self.esmtp = True
        self.server_helo_name = name
        size = kw.get("SIZE", "").split()
        self.size_limit = int(size[0]) if size and size[0].isascii() and size[0].isdigit() else 0
        me = self.params.myhostname
        if me and name.lower() == me.lower():
            self._site_fail(fake_reply("5.4.6"), f"mail for {self.params.server_name} "
                            "loops back to myself", "", quit=True)
            return
        self._after_hello()

    _reply_lhlo = _reply_ehlo

    def _reply_helo(self, e: _Expect, reply: ServerReply) -> None:
        if reply.code // 100 != 2:
            self._refused(reply)
            return
        self.features = {}
        self.esmtp = False
        self.size_limit = 0
        self._after_hello()

    def _after_hello(self) -> None:
        p = self.params
        if p.starttls != "none" and not self.tls_active and not self._tls_refused:
            if "STARTTLS" in self.features:
                self._send("STARTTLS", _Expect("STARTTLS"))
                self._phase = _STARTTLS
                return
            if p.starttls == "encrypt":
                self._site_fail(fake_reply("4.7.4"), "TLS is required, but was not offered "
                                f"by host {p.server_name}", "", quit=True)
                return
        if p.auth and not self.authenticated and not self._auth_declined and \
                "AUTH" in self.features:
            self._phase = _NEED_AUTH
            return
        self._phase = _READY

    def _reply_starttls(self, e: _Expect, reply: ServerReply) -> None:
        if reply.code // 100 == 2:
            self._phase = _TLS
            self._reader.clear()
            return
        if self.params.starttls == "encrypt":
            self._site_fail(ServerReply(reply.code, "4" + reply.dsn[1:], reply.lines),
                            f"TLS is required, but host {self.params.server_name} refused "
                            f"to start TLS: {reply.text}", "", quit=True)
            return
        self._tls_refused = True
        self._after_hello()

    def _reply_auth(self, e: _Expect, reply: ServerReply) -> None:
        mech = self._mech
        assert mech is not None
        if reply.code == 334:
            try:
                challenge = base64.b64decode(reply.lines[-1][4:].strip(), validate=True)
                answer = mech.step(challenge)
            except Exception as err:  # noqa: BLE001 - bad base64, or the mechanism refuses
                self._send("*", _Expect("DISCARD"))
                self._auth_error(str(err))
                return
            self._send(base64.b64encode(answer).decode("ascii"), _Expect("AUTH"))
            return
        if reply.code // 100 == 2:
            self.authenticated = True
            self._mech = None
            self._after_hello()
            return
        if self.params.auth_soft_bounce and reply.dsn.startswith("5"):
            reply = ServerReply(reply.code, "4" + reply.dsn[1:], reply.lines)
        self._site_fail(reply, "SASL authentication failed; server "
                        f"{self.params.server_name} said: {reply.text}", "", quit=True)

    def _auth_error(self, why: str) -> None:
        self._site_fail(fake_reply("4.7.0"), "SASL authentication failed; cannot "
                        f"authenticate to server {self.params.server_name}: {why}", "",
                        quit=True)

    def _reply_discard(self, e: _Expect, reply: ServerReply) -> None:
        pass

    def _reply_rset(self, e: _Expect, reply: ServerReply) -> None:
        if e.last and reply.code // 100 != 2:  # check(): the session is not usable
            self._site_fail(reply, self._said(reply, "RSET"), "RSET", quit=True)

    def _reply_mail(self, e: _Expect, reply: ServerReply) -> None:
        t = self._txn
        assert t is not None
        if reply.code // 100 != 2:
            self._fail_all(reply, self._said(reply, "MAIL FROM"), "MAIL FROM")
            t.failed = True

    def _reply_rcpt(self, e: _Expect, reply: ServerReply) -> None:
        t = self._txn
        assert t is not None
        if t.failed:
            return
        if reply.code // 100 == 2:
            t.accepted.append(e.index)
            if t.message.verify_only:  # the probe's answer: deliverable
                self._result(e.index, reply, "RCPT TO", reply.text)
        else:
            self._result(e.index, reply, "RCPT TO", self._said(reply, "RCPT TO"))

    def _reply_data(self, e: _Expect, reply: ServerReply) -> None:
        t = self._txn
        assert t is not None
        if reply.code == 354:
            if t.failed or not t.accepted:
                # A server that says 354 with no recipient: an empty message.
                self._send(".", _Expect("DISCARD"))
                t.failed = True
                return
            self._start_body()
            return
        if not t.failed and t.accepted:
            self._fail_all(reply, self._said(reply, "DATA"), "DATA", t.accepted)
            t.failed = True

    def _reply_bdat(self, e: _Expect, reply: ServerReply) -> None:
        t = self._txn
        assert t is not None
        if t.failed:
            return
        if reply.code // 100 != 2 or e.last:
            command = "end of DATA" if e.last else "BDAT"
            self._fail_all(reply, self._said(reply, command) if reply.code // 100 != 2
                           else reply.text, command, t.accepted)
            if reply.code // 100 != 2:
                t.failed = True

    def _reply_dot(self, e: _Expect, reply: ServerReply) -> None:
        t = self._txn
        assert t is not None
        reason = reply.text if reply.code // 100 == 2 else self._said(reply, "end of DATA")
        only = [e.index] if e.index >= 0 else t.accepted
        self._fail_all(reply, reason, "end of DATA", only)


_COMMAND = {"MAIL": "MAIL FROM", "RCPT": "RCPT TO", "DATA": "DATA", "DOT": "end of DATA",
            "BDAT": "BDAT", "RSET": "RSET", "AUTH": "AUTH", "STARTTLS": "STARTTLS"}

"""One SMTP server session over a socket: the asyncio glue between the
sans-IO core (:mod:`hato.proto.smtpd`), the restrictions
(:mod:`hato.policy.smtpd_check`) and the queue (:mod:`hato.queue.inject`).
What the sessions of one worker share, and the accept loop that makes
them, is :class:`hato.io.smtpd_server.SessionServer`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import socket
import ssl
import time
from typing import TYPE_CHECKING

from ..io.tls import TlsFacts
from ..policy import address as A
from ..policy.smtpd_check import ClientFacts
from ..proto import smtpd as P
from ..proto.escape import escape
from ..queue.envelope import Recipient
from ..queue.inject import Injection
from ..tables.base import TableRetry
from .maillog import printable
from .smtpd_anvil import SessionLimits
from .smtpd_commands import CommandHandlers
from .smtpd_message import MessageIntake
from .smtpd_milter import SessionMilters
from .smtpd_tlsauth import READ_SIZE, SessionEnd, TlsAuth

if TYPE_CHECKING:
    from .smtpd_server import SessionServer

#: Postfix's order of the counters in the "disconnect from" line (its
#: command table).
COUNTER_ORDER = ("helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt",
                 "data", "bdat", "rset", "noop", "vrfy", "etrn", "quit", "unknown")

INTERNAL_ERROR = P.Reply(451, "4.3.0", "Error: internal error")


@functools.lru_cache(maxsize=16)
def _session_limits(limits: P.Limits, enforce_tls: bool, bare_ok: bool) -> P.Limits:
    """The server's limits as one session has them: TLS required on a
    port where it is not a wrapper, bare newlines allowed for clients in
    smtpd_forbid_bare_newline_exclusions. (Limits are frozen: the few
    combinations are made once, not for every connection.)"""
    if enforce_tls:
        limits = dataclasses.replace(limits, enforce_tls=True)
    if bare_ok:
        limits = dataclasses.replace(limits, forbid_bare_newline="no")
    return limits


class Session(TlsAuth, MessageIntake, CommandHandlers):
    """One SMTP session (STARTTLS, smtps and AUTH: :class:`TlsAuth`)."""

    def __init__(self, server: SessionServer, reader: asyncio.StreamReader | None,
                 writer: asyncio.StreamWriter | None, addr: str, port: str, *,
                 sock: socket.socket | None = None):
        self.server = server
        self.sock = sock  # wrapper mode: the socket, until the handshake
        self.log = server.log
        self.reader = reader
        self.writer = writer
        self.facts = ClientFacts(name="unknown", reverse_name="unknown", addr=addr, port=port,
                                 stress=server.stress)  # policy servers see "stress=yes"
        enforce_tls = server.tls.level == "encrypt" and not server.tls.wrapper
        bare_ok = bool(server.bare_newline_exclusions
                       and server.bare_newline_exclusions.match("", addr))
        self.conn = P.ServerConnection(_session_limits(server.limits, enforce_tls, bare_ok),
                                       hostname=server.hostname)
        self.checks = server.checks.session(self.facts)
        self.denied: P.Reply | None = None
        self.xforward: dict[str, str] = {}
        self.where: str | None = None  # overrides the core's last command in log lines
        self.pipelining_logged = False  # "improper command pipelining" is logged once
        self.tls: TlsFacts | None = None
        self.handshake_failed = False
        self.exchange = None  # the SASL exchange in progress
        self.auth_mechanism = ""
        self.auth_final = False  # Success data sent; waiting for the client's empty line
        self.anvil: SessionLimits | None = None
        self.milters: SessionMilters | None = None
        self.transactions = 0  # MAIL commands accepted: the policy "instance" sequence
        # the wait for the client in progress (see _waiting)
        self.wait_began = 0.0
        self.wait_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._task: asyncio.Task | None = None
        self._timed_out = False
        self._new_transaction()

    def _new_transaction(self) -> None:
        f = self.facts  # what policy servers see of the transaction (Postfix's mail_reset)
        f.instance, f.queue_id, f.sasl_sender = "", "", None
        self.mail: P.MailFrom | None = None
        self.sender = ""
        self.recipients: list[Recipient] = []
        self.injection: Injection | None = None
        self.started = False
        self.failed: P.Reply | None = None

    # -- names -----------------------------------------------------------------------------------

    @property
    def client(self) -> str:
        f = self.facts
        text = f"{f.name}[{f.addr}]"
        return f"{text}:{f.port}" if self.server.port_logging and f.port else text

    @property
    def protocol(self) -> str:
        f = self.facts
        proto = "ESMTP" if self.conn.esmtp else "SMTP"
        if getattr(f, "tls_active", False) and proto == "ESMTP":
            proto += "S"
        if getattr(f, "sasl_username", None) and proto.startswith("ESMTP"):
            proto += "A"
        return proto

    def _where(self) -> str:
        return self.where or self.conn.last_command or "CONNECT"

    # -- the session --------------------------------------------------------------------------

    async def run(self) -> None:
        srv = self.server
        f = self.facts
        name, status, rname, rstatus = await srv.client_names(f.addr)
        # Postfix's peer codes: 2 ok, 4 temporary, 5 none, 6 forged.
        f.name, f.name_status = name, 0 if status == 2 else status
        f.reverse_name, f.reverse_name_status = rname, 0 if rstatus == 2 else rstatus
        self.log.info(f"connect from {self.client}")
        if srv.anvil is not None:
            exempt = srv.anvil.exempt(f.name, f.addr) or srv.authorized(srv.xclient_hosts, f)
            self.anvil = srv.anvil.session(f.addr, self.client, exempt)
        if self.sock is not None:
            if not await self._accept_tls():
                self.log.info(f"lost connection after CONNECT from {self.client}")
                self.log.info(f"disconnect from {self.client}{self._counters()}")
                return
            self.conn.tls_active = True
            refused = await self._newtls_refused()
            if refused is not None:
                await self._refuse_session(refused)
                return
        refused = await self.anvil.connect() if self.anvil is not None else None
        if refused is not None:
            await self._refuse_session(refused)
            return
        greeting = P.Reply(220, "", srv.banner)
        if not srv.delay_reject:
            decision = await self._check(self.checks.connect)
            if decision is not None and decision.reply is not None:
                self.denied = decision.reply
                greeting = decision.reply
        if srv.milters is not None and self.denied is None:
            greeting = await self._milter_connect(greeting)
        self.conn.greet(greeting)
        reason = ""
        try:
            reason = await self._loop()
        except (ConnectionError, OSError):
            reason = "lost"
        except asyncio.CancelledError:
            reason = "lost"
            raise
        except Exception:
            self.log.exception(f"{self._qid_or_noqueue()}: unexpected error in session "
                               f"with {self.client}")
            self._send_now(INTERNAL_ERROR)
            reason = "error"
        finally:
            self._abort_transaction()
            if reason == "lost":
                self.log.info(f"lost connection after {self._where()} from {self.client}")
            elif reason == "timeout":
                self.log.info(f"timeout after {self._where()} from {self.client}")
            elif reason == "errors":
                self.log.info(f"too many errors after {self._where()} from {self.client}")
            self.log.info(f"disconnect from {self.client}{self._counters()}")

    async def _milter_connect(self, greeting: P.Reply) -> P.Reply:
        """The milters' CONNECT event. A 5xx makes the greeting a 554 and
        the milter refuses what follows (not HELO/EHLO); a 421 ends the
        session after the greeting."""
        self.milters = self.server.milters.session(self)
        if self.milters is None:
            return greeting
        out = await self.milters.connect()
        if out.reply is not None and out.reply.code // 100 == 5:
            self.conn.error_count += 1
            return P.Reply(554, "", f"{self.server.hostname} ESMTP not accepting connections")
        if out.reply is not None and out.reply.code == 421:
            return P.Reply(421, "", f"{self.server.hostname} Service unavailable - try again "
                                    f"later")
        return greeting

    def whatsup(self, recipient: str | None = None) -> str:
        """Postfix's smtpd_whatsup(): `` from=<s> to=<r> proto=P helo=<h>``."""
        out = ""
        if self.mail is not None or self.sender:
            out += f" from=<{A.log_form(self.sender, self.server.external)}>"
        if recipient is None and self.recipients:
            recipient = self.recipients[-1].address
        if recipient is not None:
            out += f" to=<{A.log_form(recipient, self.server.external)}>"
        out += f" proto={self.protocol}"
        if self.facts.helo_name:
            out += f" helo=<{self.facts.helo_name}>"
        return out

    async def _refuse_session(self, reply: P.Reply) -> None:
        """End the session before it starts (anvil's limits), as Postfix:
        the reply, then ``disconnect from``."""
        self._send_now(reply)
        try:
            await asyncio.wait_for(self.writer.drain(), self.server.timeout)
        except (OSError, asyncio.TimeoutError):
            pass
        self.log.info(f"disconnect from {self.client}{self._counters()}")

    def _counters(self) -> str:
        counts = {k: list(v) for k, v in self.conn.counts.items()}
        if self.started and self.conn.last_command in ("DATA", "BDAT"):
            # cut short inside the message: Postfix counts the command as tried
            counts.setdefault(self.conn.last_command.lower(), [0, 0])[1] += 1
        parts: list[str] = []
        ok_total = all_total = 0
        for name in COUNTER_ORDER:
            if name not in counts:
                continue
            ok, total = counts[name]
            if not total:
                continue
            ok_total += ok
            all_total += total
            parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
        if not parts:
            return " commands=0/0"  # as Postfix 3.7 logs a session without commands
        cmds = f"commands={ok_total}" if ok_total == all_total else \
            f"commands={ok_total}/{all_total}"
        return " " + " ".join(parts + [cmds])

    def _send_now(self, reply: P.Reply) -> None:
        try:
            self.writer.write(reply.render())
        except Exception:
            pass

    async def _flush(self) -> None:
        out = self.conn.data_to_send()
        if not out:
            return
        if self.conn.error_count >= self.server.soft_error_limit and out[:1] in b"45" \
                and self.server.error_sleep:
            await asyncio.sleep(self.server.error_sleep)
        writer = self.writer
        writer.write(out)
        transport = getattr(writer, "transport", None)  # (sendmail -bs writes to a pipe)
        if transport is not None and not transport.get_write_buffer_size():
            return  # all sent: nothing to wait for (the usual case)
        # A timeout raises TimeoutError (an OSError): the connection is lost.
        self.wait_began = asyncio.get_running_loop().time()
        await self._waiting(writer.drain(), self.wait_began + self.server.timeout)

    async def _read(self) -> bytes | None:
        """Bytes from the client; b"" at EOF; None on timeout. With
        smtpd_per_request_deadline the time limit is for the whole request
        (a slow-drip client is cut off at smtpd_timeout), extended while
        message content arrives by one second per smtpd_min_data_rate bytes.
        The wait is watched by the session's timer, which set_stress() may
        bring forward."""
        srv = self.server
        wait = srv.timeout
        if srv.per_request_deadline:
            wait = max(0.0, self.deadline - time.monotonic())
            if wait <= 0:
                return None
        self.wait_began = asyncio.get_running_loop().time()
        try:
            data = await self._waiting(self.reader.read(READ_SIZE), self.wait_began + wait)
        except TimeoutError:
            return None
        if srv.per_request_deadline and self.conn.last_command in ("DATA", "BDAT"):
            self.deadline += len(data) / srv.min_data_rate
        return data

    # -- the session's timer -------------------------------------------------------------
    #
    # One timer per session instead of one per read or write: the timer is
    # armed at the deadline of the wait in progress and, when it fires
    # before a later wait's deadline, moves itself there. A session waiting
    # for its client (seconds to minutes) costs no timer work per command.

    async def _waiting(self, awaitable, deadline: float):
        """Await *awaitable*; TimeoutError once the loop's clock passes
        *deadline* (loop time) first."""
        self.wait_deadline = deadline
        self._task = asyncio.current_task()
        if self._timer is None or self._timer_at > deadline:
            self._arm(deadline)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._timed_out:
                self._timed_out = False
                task = asyncio.current_task()
                if task is not None and task.uncancel() == 0:
                    raise TimeoutError from None
            raise
        finally:
            self.wait_deadline = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_at(when, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        deadline = self.wait_deadline
        if deadline is None:
            return  # not waiting: the next wait arms the timer again
        if asyncio.get_running_loop().time() < deadline:
            self._arm(deadline)
            return
        if self._task is not None and not self._task.done():
            self._timed_out = True
            self._task.cancel()

    def shorten_wait(self, timeout: float) -> None:
        """Cut the wait in progress to *timeout* seconds from when it began
        (stress mode: never lengthened)."""
        if self.wait_deadline is None or self._timed_out:
            return
        cut = self.wait_began + timeout
        if cut < self.wait_deadline:
            self.wait_deadline = cut
            if self._timer is None or self._timer_at > cut:
                self._arm(cut)

    async def _loop(self) -> str:
        srv = self.server
        srv.live.add(self)  # from here on set_stress() reaches this session
        try:
            return await self._commands()
        finally:
            srv.live.discard(self)

    async def _commands(self) -> str:
        conn, srv = self.conn, self.server
        # The limits that stress mode changes may have changed since the
        # session was made.
        lim = srv.limits
        if (conn.limits.hard_error_limit != lim.hard_error_limit
                or conn.limits.junk_command_limit != lim.junk_command_limit):
            conn.limits = dataclasses.replace(conn.limits,
                                              hard_error_limit=lim.hard_error_limit,
                                              junk_command_limit=lim.junk_command_limit)
        self.request_began = time.monotonic()
        self.deadline = self.request_began + srv.timeout
        while True:
            ev = conn.next_event()
            if ev is P.NEED_DATA:
                await self._flush()
                if conn.closed:
                    return "errors" if conn.error_count >= conn.limits.hard_error_limit else ""
                data = await self._read()
                if data is None:
                    self._anvil_disconnect()
                    self._send_now(P.Reply(421, "4.4.2",
                                           f"{self.server.hostname} Error: timeout exceeded"))
                    return "timeout"
                conn.receive_data(data)
                if not data:
                    # EOF: let the core report what was cut short
                    continue
                continue
            if ev is P.PAUSED:  # pragma: no cover - every pausing event is answered below
                raise RuntimeError("smtpd core paused without an answer")
            if not isinstance(ev, P.MessageData):
                self.request_began = time.monotonic()
                self.deadline = self.request_began + self.server.timeout
            if isinstance(ev, P.Closed):
                self._anvil_disconnect()  # before the last reply (221, 421) goes out
                await self._flush()
                if ev.reason == P.REASON_EOF:
                    return "lost"
                if ev.reason == P.REASON_ERRORS:
                    return "errors"
                return ""
            try:
                await self._event(ev)
            except SessionEnd as end:
                return end.reason

    # -- events ----------------------------------------------------------------------------

    async def _event(self, ev: P.Event) -> None:
        conn = self.conn
        if ev.long_line is not None:
            self._log_long_line(*ev.long_line)
        if conn.improper_pipelining is not None and not self.pipelining_logged:
            self.pipelining_logged = True
            verb, pending = conn.improper_pipelining
            self.log.info(f"improper command pipelining after {verb} from {self.client}: "
                          f"{escape(pending)}")
        if not isinstance(ev, (P.MessageData, P.MessageEnd, P.BdatChunk)):
            self.where = None
        if self.denied is not None and isinstance(ev, (P.Helo, P.MailFrom, P.RcptTo,
                                                       P.DataCommand, P.Vrfy, P.Etrn,
                                                       P.UnknownCommand)):
            conn.reject(P.Reply(503, "5.7.0", f"Error: access denied for {self.client}"))
            return
        handler = _HANDLERS.get(type(ev))
        if handler is not None:
            await handler(self, ev)
        elif isinstance(ev, P.StartTls):
            await self._starttls()
        elif isinstance(ev, P.Auth):
            await self._auth(ev)
        elif isinstance(ev, P.AuthResponse):
            await self._auth_response(ev)
        elif isinstance(ev, P.ProtocolError):
            self._protocol_error(ev)
        elif isinstance(ev, P.Simple):
            if ev.verb in ("RSET", "HELO", "EHLO"):
                self._abort_transaction()
                self._new_transaction()
                self.checks.reset()
                if self.milters is not None:
                    await self.milters.abort()

    def _anvil_disconnect(self) -> None:
        """anvil hears that the session is over (once; close() makes sure).
        A session that ends with a reply (221 after QUIT, 421) tells anvil
        before that reply goes out: its client may connect again as soon
        as it has read it, and must not count twice against
        smtpd_client_connection_count_limit."""
        if self.anvil is not None:
            self.anvil.disconnect()

    async def close(self) -> None:
        """Close the connection. After a failed TLS handshake the stream's
        protocol is no longer the transport's, so nothing waits for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._anvil_disconnect()
        if self.milters is not None:
            try:
                if self.facts.helo_name is not None:
                    await self.milters.helo_reset()
                await self.milters.close()
            except Exception:  # noqa: BLE001 - the session is over either way
                pass
        if self.writer is None:
            if self.sock is not None:
                self.sock.close()
            return
        try:
            self.writer.close()
        except Exception:
            return
        if self.handshake_failed:
            return
        transport = getattr(self.writer, "transport", None)
        if self.tls is None and transport is not None \
                and transport.get_extra_info("sslcontext") is None \
                and not transport.get_write_buffer_size():
            return  # all sent, no TLS close_notify to wait for: closed at once
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass

    def _log_long_line(self, limit: int, line: bytes) -> None:
        """Postfix's smtpd_chat_query(): ``request longer than LIMIT: %.30s...``
        of the cut line made printable()."""
        text = printable(line.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),
                         self.conn.limits.smtputf8_enable)
        start = text.encode("utf-8")[:30].decode("utf-8", "ignore")
        self.log.warning(f"{self.client}: request longer than {limit}: {start}...")

    def _protocol_error(self, ev: P.ProtocolError) -> None:
        if ev.reply is not None and ev.reply.code == 221 and ev.verb:
            # Postfix: "non-SMTP command from %s: %.100s", the line as typed
            self.log.warning(f"non-SMTP command from {self.client}: {escape(ev.line[:100])}")
        elif ev.reply is not None and ev.reply.code == self.conn.limits.bare_newline_reject_code \
                and "bare <LF>" in ev.reply.text:
            self._log_whatsup("reject", self._where(), "bare <LF> received")

    def _log_whatsup(self, action: str, stage: str, text: str) -> None:
        """Postfix's log_whatsup(): ``QID: reject: EHLO from host[addr]: text;
        from=<s> to=<r> proto=ESMTP helo=<h>`` (from/to/helo when known)."""
        parts = [f"{self._qid_or_noqueue()}: {action}: {stage} from {self.client}: {text};"]
        if self.mail is not None:
            parts.append(f"from=<{A.log_form(self.sender, self.server.external)}>")
        if self.recipients:
            parts.append(f"to=<{A.log_form(self.recipients[-1].address, self.server.external)}>")
        parts.append(f"proto={self.protocol}")
        if self.facts.helo_name:
            parts.append(f"helo=<{self.facts.helo_name}>")
        self.log.info(" ".join(parts))

    async def _check(self, fn, *args):
        """Run one restriction stage; a failure is a 4xx, never a crash."""
        try:
            if self.checks.may_block:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self.server.check_threads(), fn, *args)
            return fn(*args)
        except TableRetry as err:
            self.log.warning(f"{self.client}: {err}")
            return _Refusal(P.Reply(451, "4.3.0", "Temporary lookup failure"))
        except Exception:
            self.log.exception(f"{self.client}: restriction check failed")
            return _Refusal(P.Reply(451, "4.3.5", "Server configuration problem"))

    def _qid_or_noqueue(self) -> str:
        return self.injection.queue_id if self.injection is not None else "NOQUEUE"

    def _log_decision(self, decision) -> None:
        qid = self.injection.queue_id if self.injection is not None else ""
        for entry in decision.logs:
            if entry.action == "warning":
                self.log.warning(entry.text)
            else:
                self.log.info(entry.format(decision.stage, self.client, queue_id=qid,
                                           protocol=self.protocol,
                                           external=self.server.external))

    async def _decide(self, fn, stage: str, *args, rcpt: str | None = None) -> P.Reply | None:
        decision = await self._check(fn, *args)
        if decision is None:
            return None
        if isinstance(decision, _Refusal):
            r = decision.reply
            self.log.info(f"{self._qid_or_noqueue()}: reject: {stage} from {self.client}: "
                          f"{r.code} {r.dsn} {r.text}; "
                          f"from=<{A.log_form(self.sender, self.server.external)}>"
                          + (f" to=<{A.log_form(rcpt, self.server.external)}>"
                             if rcpt is not None else "")
                          + f" proto={self.protocol}"
                          + (f" helo=<{self.facts.helo_name}>" if self.facts.helo_name else ""))
            return r
        self._log_decision(decision)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        return decision.reply

@dataclasses.dataclass
class _Refusal:
    reply: P.Reply


_HANDLERS = {
    P.Helo: Session._helo,
    P.MailFrom: Session._mail,
    P.RcptTo: Session._rcpt,
    P.DataCommand: Session._data,
    P.MessageData: Session._message_data,
    P.MessageEnd: Session._message_end,
    P.BdatChunk: Session._bdat_chunk,
    P.Vrfy: Session._vrfy,
    P.Etrn: Session._etrn,
    P.Xclient: Session._xclient,
    P.Xforward: Session._xforward,
    P.UnknownCommand: Session._unknown,
}

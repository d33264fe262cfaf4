"""The message part of an smtpd session: DATA and BDAT, the queue file
that cleanup writes from the content as it arrives (with Postfix's
Received: header and the client attributes), and the end-of-data
restrictions before the reply that says the message is safe on disk. Mixed
into :class:`hato.io.smtpd_session.Session`."""

from __future__ import annotations

import asyncio
import functools

from ..proto import smtpd as P
from ..queue import envelope as E
from ..queue.envelope import Recipient
from ..queue.inject import Injection
from ..queue.received import smtpd_received
from ..tables.base import TableRetry
from .batch import run_to_end
from .smtpd_milter import parse_reply as parse_milter_reply

WRITE_ERROR = P.Reply(451, "4.3.0", "Error: queue file write error")


def parse_reply(text: str) -> P.Reply:
    """ "250 2.0.0 Ok: queued as X" → Reply(250, "2.0.0", "Ok: queued as X")."""
    code, _, rest = text.partition(" ")
    first, _, after = rest.partition(" ")
    if len(first) >= 5 and first[0] in "245" and first[1] == "." and first.count(".") == 2:
        return P.Reply(int(code), first, after)
    return P.Reply(int(code), "", rest)


class MessageIntake:
    """Mixed into Session: uses its server, conn, facts, log, checks, the
    transaction state (mail, sender, recipients, injection, started,
    failed) and its restriction helpers."""

    async def _data(self, ev: P.DataCommand) -> None:
        reply = await self._decide(self.checks.data, "DATA", len(self.recipients))
        if reply is not None and reply.code >= 400:
            self.conn.reject(reply)
            return
        if self.injection is None:  # the core refuses DATA without recipients
            self.conn.reject(P.Reply(503, "5.5.1", "Error: need RCPT command"))
            return
        if self.milters is not None:
            out = await self.milters.data()
            if out.reply is not None:
                self.conn.reject(out.reply, close=out.close)
                return
        try:
            self._start_message()
        except Exception as err:
            self.log.warning(f"{self.injection.queue_id}: cannot write the queue file: {err}")
            self.injection = None
            self.conn.reject(WRITE_ERROR)
            return
        self.conn.accept()

    def _start_message(self) -> None:
        srv, f, inj = self.server, self.facts, self.injection
        assert inj is not None and self.mail is not None
        actions = self.checks.actions
        xf = self.xforward
        received = smtpd_received(
            helo=f.helo_name, name=f.name, addr=f.addr,
            port=f.port if srv.port_logging else "", myhostname=srv.hostname,
            mail_name=srv.mail_name, protocol=self.protocol, queue_id=inj.queue_id,
            recipients=[r.address for r in self.recipients], when=inj.arrival_time,
            tls=self._tls_received(),
            auth_sender=f.sasl_username if srv.sasl_header and f.sasl_username else None)
        prepend = list(getattr(actions, "prepend", []) or [])
        received = "\n".join(prepend + [received])
        for bcc in getattr(actions, "bcc", []) or []:
            if all(r.address != bcc for r in self.recipients):
                self.recipients.append(Recipient(bcc))
        attributes = {
            E.ATTR_CLIENT_NAME: xf.get("NAME", f.name),
            E.ATTR_CLIENT_ADDRESS: xf.get("ADDR", f.addr),
            E.ATTR_CLIENT_PORT: xf.get("PORT", f.port),
            E.ATTR_ORIGIN: self.client,
            E.ATTR_HELO_NAME: xf.get("HELO", f.helo_name or ""),
            E.ATTR_PROTOCOL: xf.get("PROTO", self.protocol),
            E.ATTR_REWRITE_CONTEXT: self._rewrite_context(),
        }
        sasl = getattr(f, "sasl_username", None)
        if sasl:
            attributes[E.ATTR_SASL_METHOD] = f.sasl_method or ""
            attributes[E.ATTR_SASL_USERNAME] = sasl
        if self.mail.smtputf8:
            attributes[E.ATTR_SMTPUTF8] = "yes"
        if self.mail.body:  # MAIL FROM BODY=: what the client declared
            attributes[E.ATTR_ENCODING] = "8bit" if self.mail.body.upper() == "8BITMIME" \
                else "7bit"
        log = self._cleanup_log
        inj.start(log=log, attributes=attributes, ret=self.mail.ret,
                  envid=self.mail.envid or "", sender=self.sender,
                  recipients=list(self.recipients), rewrite_context=attributes[
                      E.ATTR_REWRITE_CONTEXT], received=received, origin=self.client,
                  proto=self.protocol, helo=f.helo_name)
        self.started = True

    def _cleanup_log(self, level: str, text: str) -> None:
        {"warning": self.log.warning, "error": self.log.error}.get(level, self.log.info)(text)

    def _rewrite_context(self) -> str:
        """local_header_rewrite_clients: permit_inet_interfaces,
        permit_mynetworks, permit_sasl_authenticated, static:all, ..."""
        for item in self.server.local_rewrite:
            if item == "static:all":
                return "local"
            if item == "permit_mynetworks" and self.checks.in_mynetworks():
                return "local"
            if item == "permit_sasl_authenticated" and getattr(self.facts, "sasl_username",
                                                                None):
                return "local"
            if item == "permit_inet_interfaces" and self.facts.addr in ("127.0.0.1", "::1"):
                return "local"
        return "remote"

    async def _message_data(self, ev: P.MessageData) -> None:
        if self.injection is None or not self.started or self.failed is not None:
            return
        try:
            self.injection.feed(ev.data)
        except TableRetry as err:
            self.log.warning(f"{self.injection.queue_id}: {err}")
            self.failed = P.Reply(451, "4.3.0", "Error: queue file write error")
        except OSError as err:
            self.log.warning(f"{self.injection.queue_id}: queue file write error: {err}")
            self.failed = WRITE_ERROR

    async def _message_end(self, ev: P.Event) -> None:
        conn = self.conn
        self.where = "END-OF-MESSAGE"
        try:
            reply = await self._end_of_message(ev)
        finally:
            self._abort_transaction()
            self._new_transaction()
            self.checks.reset()
            if self.milters is not None:
                await self.milters.abort()
        if reply.code < 400:
            conn.accept(reply)
        else:
            conn.reject(reply)

    async def _end_of_message(self, ev: P.Event) -> P.Reply:
        inj = self.injection
        if getattr(ev, "reply", None) is not None:
            if getattr(ev, "bare_lf_rejected", False):
                self._log_whatsup("reject", "END-OF-MESSAGE", "bare <LF> received")
            return ev.reply  # the core refused the content (too big, bare <LF>)
        if getattr(ev, "too_big", False):
            return P.Reply(552, "5.3.4", "Error: message file too big")
        if self.failed is not None:
            return self.failed
        if inj is None or not self.started:
            return P.Reply(554, "5.5.1", "Error: no valid recipients")
        # the whole message's size (a BDAT event's own size is its last chunk's)
        size = ev.total if isinstance(ev, P.BdatChunk) else getattr(ev, "size", 0)
        reply = await self._decide(self.checks.end_of_data, "END-OF-MESSAGE", size)
        if reply is not None and reply.code >= 400:
            return reply
        actions = self.checks.actions
        try:
            if self.milters is not None and not self.milters.skip:
                refused = await self._milter_message(inj)
                if refused is not None:
                    return refused
            # Cancelled meanwhile (a stop), the session still waits for the
            # commit: its clean-up would otherwise abort the injection the
            # thread is writing. The client then has no reply and sends the
            # message again (at least once).
            result = await run_to_end(self.server.committer.submit_future(
                functools.partial(self._finish, inj, actions, self.milters, sync_dir=False)))
        except TableRetry as err:
            self.log.warning(f"{inj.queue_id}: {err}")
            return P.Reply(451, "4.3.0", "Error: queue file write error")
        except OSError as err:
            self.log.warning(f"{inj.queue_id}: queue file write error: {err}")
            return WRITE_ERROR
        self.injection = None
        if result.queue_id:
            self.server.wake_qmgr()
        return parse_reply(result.result.smtp_reply())

    async def _milter_message(self, inj: Injection) -> P.Reply | None:
        """The milters' look at the message before it is committed
        (Postfix's cleanup_milter_inspect()); a reply when they refuse it."""
        result = await run_to_end(asyncio.to_thread(inj.end_content))
        if not result.ok:
            return None  # cleanup refused it already; finish() says how
        edit = inj.milter_message(header_checks=self.server.milters.header_checks)
        reply = await self.milters.message(edit)
        if not reply:
            return None
        what = {"H": ("milter-hold", "milter triggers HOLD action"),
                "D": ("milter-discard", "milter triggers DISCARD action")}.get(reply[0])
        if what is None and reply[0] in "45":
            what = ("milter-reject", reply[4:])
        elif what is None:  # shutdown ("S"): the message is not accepted
            what = ("milter-reject", "5.7.1 message content rejected")
            reply = "550 5.7.1 Error: message content rejected"
        if reply[0] == "H":
            if self.milters.hold:
                return None
            self.milters.hold = True
        elif reply[0] == "D":
            self.milters.discard = True
        self.log.info(f"{inj.queue_id}: {what[0]}: END-OF-MESSAGE from {self.client}: "
                      f"{what[1]};{self.whatsup()}")
        if reply[0] in "45":
            inj.abort()
            return parse_milter_reply(reply)
        return None

    @staticmethod
    def _finish(inj: Injection, actions, milters=None, *, sync_dir: bool = True):
        hold = bool(getattr(actions, "hold", None)) or bool(milters and milters.hold)
        discard = bool(getattr(actions, "discard", None)) or bool(milters and milters.discard)
        return inj.finish(hold=hold, filter=getattr(actions, "filter", None),
                          redirect=getattr(actions, "redirect", None), discard=discard,
                          sync_dir=sync_dir)

    async def _bdat_chunk(self, ev: P.BdatChunk) -> None:
        if ev.last:
            await self._message_end(ev)
        else:
            self.conn.accept()

    def _abort_transaction(self) -> None:
        if self.injection is not None:
            try:
                self.injection.abort()
            except Exception:
                pass
            self.injection = None

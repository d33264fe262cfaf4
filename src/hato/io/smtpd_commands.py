"""The SMTP commands of a session other than the message and TLS/AUTH:
HELO/EHLO, MAIL, RCPT, VRFY, ETRN, XCLIENT, XFORWARD and unknown commands,
each after its restrictions and the milters' say. Mixed into
:class:`hato.io.smtpd_session.Session` (which has the restriction and
logging helpers they use)."""

from __future__ import annotations

import os

from ..io.ipc import notify
from ..policy import address as A
from ..policy.smtpd_policy import policy_instance
from ..proto import smtpd as P
from ..proto.attr import Attrs
from ..queue.envelope import Recipient


class CommandHandlers:
    """Mixed into Session: uses its server, conn, facts, log, checks,
    milters and the transaction state."""

    async def _helo(self, ev: P.Helo) -> None:
        f = self.facts
        self._abort_transaction()
        self._new_transaction()
        self.checks.reset()
        if self.milters is not None:
            if f.helo_name is not None:
                await self.milters.helo_reset()
            out = await self.milters.helo(ev.hostname, ev.extended)
            if out.close:
                self.conn.reject(out.reply, close=True)
                return
        f.helo_name = ev.hostname
        reply = await self._decide(self.checks.helo, "EHLO" if ev.extended else "HELO",
                                   ev.hostname, ev.extended)
        if reply is not None and reply.code >= 400:
            self.conn.reject(reply)
            return
        # as Postfix, after the check (policy servers see the old name at
        # EHLO); HELO never turns ESMTP back into SMTP
        if ev.extended:
            f.protocol = "ESMTP"
        elif f.protocol not in ("ESMTP", "SMTP"):
            f.protocol = "SMTP"
        if ev.extended:
            words, discarded = self.server.ehlo_keywords(f)
            self.conn.enhanced_status_codes = "enhancedstatuscodes" not in discarded
            self.conn.accept(ehlo_keywords=words)
        else:
            self.conn.accept()

    async def _mail(self, ev: P.MailFrom) -> None:
        sender = A.unquote_822_local(ev.address) if ev.address else ""
        self.sender = sender
        self.facts.sender = sender
        self.facts.sasl_sender = ev.auth if ev.auth and ev.auth != "<>" else None
        reply = await self.anvil.message() if self.anvil is not None else None
        if reply is None:
            reply = await self._decide(self.checks.mail, "MAIL", sender, ev.size)
        if reply is not None and reply.code >= 400:
            self.sender = ""
            self.facts.sasl_sender = None
            self.conn.reject(reply)
            return
        if self.milters is not None:
            out = await self.milters.mail(ev.args)
            if out.reply is not None:
                self.sender = ""
                self.facts.sasl_sender = None
                await self.milters.abort()
                self.conn.reject(out.reply, close=out.close)
                return
        short = self.server.queue_space_short()
        if short is not None:
            self.sender = ""
            self.facts.sasl_sender = None
            reply = P.Reply(452, "4.3.1", "Insufficient system storage")
            self._log_whatsup("reject", "MAIL", "452 4.3.1 Insufficient system storage")
            self.log.warning(short)
            if self.milters is not None:
                await self.milters.abort()
            self.conn.reject(reply)
            return
        self.mail = ev
        self.facts.instance = policy_instance(self.transactions)
        self.transactions += 1
        self.conn.accept()

    async def _rcpt(self, ev: P.RcptTo) -> None:
        rcpt = A.unquote_822_local(ev.address)
        reply = await self.anvil.recipient() if self.anvil is not None else None
        if reply is None:
            reply = await self._decide(self.checks.rcpt, "RCPT", rcpt, rcpt=rcpt)
            if self.milters is not None:
                refused = reply if reply is not None and reply.code >= 400 else None
                out = await self.milters.rcpt(rcpt, ev.args, refused)
                if refused is None and out.reply is not None:
                    self.conn.reject(out.reply, close=out.close)
                    return
        if reply is not None and reply.code >= 400:
            self.conn.reject(reply)
            return
        if self.injection is None:
            try:
                self.injection = self.server.new_submission()
            except Exception as err:
                self.log.warning(f"cannot create a queue file: {err}")
                self.conn.reject(P.Reply(451, "4.3.0", "Error: queue file write error"))
                return
            extra = ""
            sasl = getattr(self.facts, "sasl_username", None)
            if sasl:
                extra = f", sasl_method={self.facts.sasl_method}, sasl_username={sasl}"
            self.log.info(f"{self.injection.queue_id}: client={self.client}{extra}")
            self.facts.queue_id = self.injection.queue_id
        self.recipients.append(Recipient(rcpt, notify=ev.notify, orcpt=ev.orcpt or ""))
        self.conn.accept()

    def _milter_refusal(self, codes: str = "45") -> P.Reply | None:
        """The reply a milter now gives to every command (after it refused
        the connection): Postfix's milter_other_event(), for VRFY, ETRN and
        STARTTLS."""
        if self.milters is None:
            return None
        reply = self.milters.other()
        return reply if reply is not None and str(reply.code)[0] in codes else None

    async def _vrfy(self, ev: P.Vrfy) -> None:
        refused = self._milter_refusal()
        if refused is not None:
            self.conn.reject(refused)
            return
        arg = ev.argument.strip()
        address = A.unquote_822_local(arg.strip("<>"))
        reply = await self._decide(self.checks.vrfy, "VRFY", address, rcpt=address)
        if reply is not None and reply.code >= 400:
            self.conn.reject(reply)
            return
        self.conn.accept(P.Reply(252, "2.0.0", arg))

    async def _etrn(self, ev: P.Etrn) -> None:
        refused = self._milter_refusal()
        if refused is not None:
            self.conn.reject(refused)
            return
        domain = ev.argument.strip()
        site = domain.lstrip("@#")
        reply = await self._decide(self.checks.etrn, "ETRN", site)
        if reply is not None and reply.code >= 400:
            self.conn.reject(reply)
            return
        if self.server.flush_domains.match(site, ""):
            notify(os.path.join(self.server.settings.str("queue_directory"), "public", "qmgr"),
                   Attrs.of(request="flush", domain=site))
            self.conn.accept(P.Reply(250, "", "Queuing started"))
        else:
            self.conn.reject(P.Reply(459, "", f"<{site}>: service unavailable"))

    async def _xclient(self, ev: P.Xclient) -> None:
        if not self.server.authorized(self.server.xclient_hosts, self.facts):
            self.conn.reject(P.Reply(550, "5.7.0", "Error: insufficient authorization"))
            return
        f = self.facts
        values = {k.upper(): v for k, v in ev.attributes.items()}
        for key, attr in (("NAME", "name"), ("REVERSE_NAME", "reverse_name"),
                          ("ADDR", "addr"), ("PORT", "port"), ("HELO", "helo_name"),
                          ("LOGIN", "sasl_username")):
            if key in values:
                value = values[key]
                if value in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
                    value = "unknown" if attr in ("name", "reverse_name") else ""
                    if attr in ("name", "reverse_name"):
                        setattr(f, attr + "_status", 4 if "TEMP" in values[key] else 5)
                elif attr in ("name", "reverse_name"):
                    setattr(f, attr + "_status", 0)
                if attr == "addr" and value.upper().startswith("IPV6:"):
                    value = value[5:]
                setattr(f, attr, value or None if attr == "helo_name" else value)
        self._abort_transaction()
        self._new_transaction()
        self.checks = self.server.checks.session(f)
        self.conn.accept(P.Reply(220, "", self.server.banner))

    async def _unknown(self, ev: P.UnknownCommand) -> None:
        out = await self.milters.unknown(ev.line) if self.milters is not None else None
        if out is not None and out.reply is not None:
            self.conn.reject(out.reply, close=out.close)
        else:
            self.conn.reject(P.UNKNOWN_REPLY)

    async def _xforward(self, ev: P.Xforward) -> None:
        if not self.server.authorized(self.server.xforward_hosts, self.facts):
            self.conn.reject(P.Reply(550, "5.7.0", "Error: insufficient authorization"))
            return
        for key, value in ev.attributes.items():
            if value not in ("[UNAVAILABLE]", "[TEMPUNAVAIL]"):
                self.xforward[key.upper()] = value
        self.conn.accept(P.Reply(250, "2.0.0", "Ok"))

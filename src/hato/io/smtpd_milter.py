"""smtpd's milters (``smtpd_milters``, ``smtpd_milter_maps``): the glue
between an SMTP session and the milter chain of
:mod:`hato.io.milter_client`, as Postfix's smtpd.c and smtpd_milter.c do it.

* :class:`MilterSetup` is what an smtpd worker reads once: the milter list,
  smtpd_milter_maps, the macro values that come from main.cf and
  ``milter_header_checks``.
* :class:`SessionMilters` is one session's chain: the SMTP events in
  Postfix's order (CONNECT before the greeting, HELO/EHLO before the HELO
  restrictions, MAIL, RCPT and DATA after theirs, unknown commands), the
  macro values as Postfix's smtpd_milter_eval() computes them, and the
  replies handled as its check_milter_reply(): HOLD and DISCARD are kept
  for the message, 4xx/5xx replies are given to the client, a shutdown
  is a 421, and each is logged (``milter-reject``, ``milter-hold``,
  ``milter-discard``).
* At the end of the message :meth:`SessionMilters.message` shows the
  queue file that is being written to the chain
  (:class:`hato.queue.milter_edit.MilterMessage`) before it is committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.settings import Settings
from ..policy import address as A
from ..policy.rewrite import open_maps
from ..proto import milter as M
from ..proto import smtpd as P
from ..tables.base import TableRetry
from .milter_client import MilterChain, MilterSettings

DISABLE = "DISABLE"


@dataclass
class Outcome:
    """What a milter reply means for smtpd: a reply for the client (None:
    go on) and whether the session must end (421)."""

    reply: P.Reply | None = None
    close: bool = False


def parse_reply(text: str) -> P.Reply:
    """ "550 5.7.1 Command rejected" → Reply; multi-line replies keep their
    lines (the client sees them as the milter gave them)."""
    code = int(text[:3])
    rest = text[4:]
    first, _, after = rest.partition(" ")
    if len(first) >= 5 and first[0] in "245" and first[1] == "." and first.count(".") == 2:
        return P.Reply(code, first, after)
    return P.Reply(code, "", rest)


class MilterSetup:
    """The milter settings of one smtpd service."""

    def __init__(self, settings: Settings):
        s = settings
        self.value = s.str("smtpd_milters").strip()
        self.maps = open_maps(s, "smtpd_milter_maps")
        self.config = MilterSettings.from_settings(s)
        self.specs = M.parse_milter_list(self.value) if self.value else []
        self.daemon_name = s.str("milter_macro_daemon_name")
        self.macro_v = s.str("milter_macro_v")
        self.hostname = s.str("myhostname")
        self.header_checks = open_maps(s, "milter_header_checks", fold_case=False)
        self.sasl_enable = s.bool("smtpd_sasl_auth_enable")

    @property
    def active(self) -> bool:
        return bool(self.specs) or self.maps is not None

    def specs_for(self, addr: str, log) -> list:
        """The milters for a client: smtpd_milter_maps first, DISABLE for none."""
        if self.maps is not None:
            try:
                found = self.maps.get(addr)
            except TableRetry as err:
                log.warning(f"smtpd_milter_maps lookup error for {addr}: {err}")
                found = None
            if found is not None:
                if found.strip().upper() == DISABLE:
                    return []
                try:
                    return M.parse_milter_list(found)
                except Exception as err:  # noqa: BLE001 - a bad table entry is a warning
                    log.warning(f"smtpd_milter_maps: bad milter list for {addr}: {err}")
                    return self.specs
        if self.value.upper() == DISABLE:
            return []
        return self.specs

    def session(self, session) -> SessionMilters | None:
        specs = self.specs_for(session.facts.addr, session.log)
        if not specs:
            return None
        return SessionMilters(self, session, MilterChain(specs, self.config, session.log))


class SessionMilters:
    """The milters of one SMTP session."""

    def __init__(self, setup: MilterSetup, session, chain: MilterChain):
        self.setup = setup
        self.session = session
        self.chain = chain
        self.hold = False  # milter-hold: the message goes to the hold queue
        self.discard = False  # milter-discard: the message is dropped
        self.need_abort = False  # MAIL was sent: RSET and the end undo it
        self.reject_text: str | None = None  # a RCPT the restrictions refused
        self.recipient: str | None = None  # the RCPT being reported
        self.first_recipient: str | None = None  # the first RCPT accepted (Postfix's state->recipient)

    # -- macros ----------------------------------------------------------------------------

    def macro(self, name: str) -> str | None:
        """smtpd_milter_eval(): a macro's value now, None when it has none."""
        key = name[1:-1] if name.startswith("{") and name.endswith("}") else name
        s = self.session
        f = s.facts
        setup = self.setup
        if key == "daemon_name":
            return setup.daemon_name
        if key == "v":
            return setup.macro_v
        if key == "_":
            text = f"{f.reverse_name} [{f.addr}]"
            if f.name.lower() != f.reverse_name.lower():
                text += " (may be forged)"
            return text
        if key == "j":
            return setup.hostname
        if key == "client_addr":
            return f"IPv6:{f.addr}" if ":" in f.addr else f.addr
        if key == "client_port":
            return f.port if f.port and f.port != "unknown" else "0"
        if key == "client_connections":
            return str(getattr(s, "connection_count", 0) or 0)
        if key == "client_name":
            return f.name
        if key == "client_ptr":
            return f.reverse_name
        if key == "client_resolve":
            return {0: "OK", 4: "TEMP", 6: "FORGED"}.get(f.name_status, "FAIL")
        if key == "daemon_addr":
            return f.server_addr or None
        if key == "daemon_port":
            return f.server_port or None
        if key in ("tls_version", "cipher", "cipher_bits", "cert_subject", "cert_issuer"):
            if not f.tls_active:
                return None
            if key == "tls_version":
                return f.tls_protocol
            if key == "cipher":
                return f.tls_cipher
            if key == "cipher_bits":
                return str(f.tls_cipher_bits)
            if not f.tls_ccert_verified:
                return None  # the peer's CN and its issuer's, when trusted
            return (f.tls_ccert_subject if key == "cert_subject" else f.tls_ccert_issuer) \
                or None
        if key == "i":
            inj = s.injection
            return inj.queue_id if inj is not None else None
        if key == "auth_type":
            return f.sasl_method or None
        if key == "auth_authen":
            return f.sasl_username or None
        if key == "auth_author":
            return f.sasl_sender or None
        if key in ("mail_addr", "mail_host", "mail_mailer"):
            if s.mail is None and not self._in_mail:
                return None
            return self._address_macro(key[5:], s.sender)
        if key in ("rcpt_addr", "rcpt_host", "rcpt_mailer"):
            # the recipient being reported, else the first one accepted
            rcpt = self.recipient if self.recipient is not None else self.first_recipient
            if rcpt is None:
                return None
            if self.reject_text is not None and self.recipient is not None and rcpt:
                # "554 5.7.1 <user@example.com>: Relay access denied": Postfix
                # gives the status as the host and what follows the address
                # as the address
                words = self.reject_text[4:].split(" ", 2)
                if key == "rcpt_mailer":
                    return "error"
                if key == "rcpt_host":
                    return words[0]
                return words[2] if len(words) > 2 else None
            return self._address_macro(key[5:], rcpt)
        return None

    def _address_macro(self, part: str, address: str) -> str | None:
        """``{mail_*}``/``{rcpt_*}``: the address as trivial-rewrite leaves
        it (``addr``), its next hop (``host``) or its transport (``mailer``)."""
        if part == "addr" and address == "":
            return ""
        checks = self.session.checks
        res = checks.resolve_address(address) if hasattr(checks, "resolve_address") else None
        if res is None:
            return address if part == "addr" else None
        if part == "addr":
            return A.quote_822_local(res.recipient) if res.recipient else res.recipient
        return res.nexthop if part == "host" else res.transport

    _in_mail = False

    # -- replies ------------------------------------------------------------------------------

    def check_reply(self, reply: str | None, where: str) -> Outcome:
        """check_milter_reply(): what a milter's answer means, logged."""
        if not reply:
            return Outcome()
        s = self.session
        qid = s.injection.queue_id if s.injection is not None else "NOQUEUE"
        out = Outcome()
        if reply[0] == "H":
            self.hold = True
            action, text = "milter-hold", "milter triggers HOLD action"
        elif reply[0] == "D":
            self.discard = True
            action, text = "milter-discard", "milter triggers DISCARD action"
        elif reply[0] == "S":
            action, text = "milter-reject", "421 4.7.0 Server closing connection"
            out = Outcome(parse_reply(text), close=True)
        elif reply[0] in "45":
            action, text = "milter-reject", reply
            out = Outcome(parse_reply(reply), close=reply.startswith("421"))
        else:
            action, text = "reject", "421 4.3.5 Server configuration error"
            out = Outcome(parse_reply(text), close=True)
        s.log.info(f"{qid}: {action}: {where} from {s.client}: {text};"
                   f"{s.whatsup(self.recipient or self.first_recipient)}")
        return out

    @property
    def skip(self) -> bool:
        """MILTER_SKIP_FLAGS: after a DISCARD, no more events this transaction."""
        return self.discard

    # -- events -------------------------------------------------------------------------------

    async def connect(self) -> Outcome:
        s = self.session
        f = s.facts
        family = "6" if ":" in f.addr else "4"
        port = f.port if f.port and f.port != "unknown" else "0"
        reply = (await self.chain.connect(f.name, f.addr, port, family, self.macro)).raw
        return self.check_reply(reply, "CONNECT")

    async def helo(self, name: str, extended: bool) -> Outcome:
        if self.skip:
            return Outcome()
        s = self.session
        saved = s.facts.helo_name
        reply = (await self.chain.helo(name, self.macro)).raw
        s.facts.helo_name = name  # log with the HELO name being reported
        try:
            return self.check_reply(reply, "EHLO" if extended else "HELO")
        finally:
            s.facts.helo_name = saved

    async def mail(self, args: list[str]) -> Outcome:
        if self.skip:
            return Outcome()
        self.need_abort = True
        self._in_mail = True
        try:
            reply = (await self.chain.mail(args, self.macro)).raw
        finally:
            self._in_mail = False
        return self.check_reply(reply, "MAIL")

    async def rcpt(self, recipient: str, args: list[str], refused: P.Reply | None) -> Outcome:
        """A recipient; *refused* is the restrictions' reply when they
        refused it (a milter that asked for rejected recipients sees it)."""
        if self.skip:
            return Outcome()
        self.recipient = recipient
        self.reject_text = None if refused is None else \
            f"{refused.code} {refused.dsn} {refused.text}" if refused.dsn else \
            f"{refused.code} {refused.text}"
        try:
            verdict = await self.chain.rcpt(args, self.macro, rejected=refused is not None)
            reply = verdict.raw
        finally:
            self.reject_text = None
        if refused is not None:
            self.recipient = None
            return Outcome()
        try:
            out = self.check_reply(reply, "RCPT")
        finally:
            self.recipient = None
        if out.reply is None and self.first_recipient is None:
            self.first_recipient = recipient
        return out

    async def data(self) -> Outcome:
        if self.skip:
            return Outcome()
        return self.check_reply((await self.chain.data(self.macro)).raw, "DATA")

    async def unknown(self, line: str) -> Outcome:
        """An unknown command: milters get its first word, as Postfix sends it."""
        verb = line.split()[0] if line.split() else line
        return self.check_reply((await self.chain.unknown(verb, self.macro)).raw, "UNKNOWN")

    def other(self) -> P.Reply | None:
        """milter_other_event(): a reply a milter gives to every command
        (after it rejected the connection)."""
        reply = self.chain.other().raw
        if reply and reply[0] in "45":
            return parse_reply(reply)
        return None

    async def message(self, edit) -> str | None:
        """The end of the message: the chain reads and changes *edit*; the
        reply (None, "H", "D", "S" or an SMTP reply) for the caller."""
        return (await self.chain.message(edit, self.macro)).raw

    async def abort(self) -> None:
        """The transaction ends (RSET, the end of a message, a new HELO):
        Postfix's mail_reset()."""
        if self.need_abort:
            self.need_abort = False
            await self.chain.abort()
        self.hold = self.discard = False
        self.first_recipient = None

    async def helo_reset(self) -> None:
        """A new HELO, or the end of the session, after a HELO (Postfix's
        helo_reset()): every milter still in a transaction is told ABORT."""
        self.need_abort = False
        await self.chain.abort()
        self.hold = self.discard = False
        self.first_recipient = None

    async def close(self) -> None:
        await self.chain.close()


__all__ = ["MilterSetup", "Outcome", "SessionMilters", "parse_reply"]

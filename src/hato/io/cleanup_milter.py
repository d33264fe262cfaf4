"""non_smtpd_milters: mail that did not come over SMTP (sendmail, pickup)
goes through milters too, as Postfix's cleanup does it
(cleanup_milter_emul_mail/_rcpt/_data, then the message): the milters see
a client ``localhost [127.0.0.1]`` that said EHLO localhost, the sender,
each recipient, DATA, and then the message, whose changes they make as for
SMTP mail (:class:`hato.queue.milter_edit.MilterMessage`).

A milter that refuses a recipient of such mail cannot be obeyed: the
message is deferred ("milter configuration error"), as Postfix does. 4xx
replies defer the message, 5xx replies reject it (pickup returns it to its
sender), HOLD and DISCARD apply.
"""

from __future__ import annotations

from ..config.settings import Settings
from ..policy import address as A
from ..policy.rewrite import open_maps
from ..proto import milter as M
from ..queue.cleanup_defs import CleanupFlag, CleanupStatus
from .milter_client import MilterChain, MilterSettings

CLIENT_NAME = "localhost"
CLIENT_ADDR = "127.0.0.1"


class NonSmtpdMilters:
    """The non_smtpd_milters of a service that injects local mail."""

    def __init__(self, settings: Settings, log):
        s = settings
        self.log = log
        value = s.str("non_smtpd_milters").strip()
        self.specs = M.parse_milter_list(value) if value else []
        self.config = MilterSettings.from_settings(s)
        self.daemon_name = s.str("milter_macro_daemon_name")
        self.macro_v = s.str("milter_macro_v")
        self.hostname = s.str("myhostname")
        self.header_checks = open_maps(s, "milter_header_checks", fold_case=False)

    @property
    def active(self) -> bool:
        return bool(self.specs)

    async def inspect(self, inj) -> None:
        """Run one message (after ``inj.end_content()`` accepted it) through
        the milters; their decisions go into cleanup's state, their changes
        into the message (:meth:`Injection.commit` writes them)."""
        state = inj.state
        run = _Run(self, inj)
        chain = MilterChain(self.specs, self.config, self.log)
        try:
            reply = (await chain.connect(CLIENT_NAME, CLIENT_ADDR, "0", "4", run.macro)).raw
            if reply:
                run.apply("CONNECT", reply)
                return
            reply = (await chain.helo(CLIENT_NAME, run.macro)).raw
            if reply:
                run.apply("EHLO", reply)
                return
            sender = state.sender
            run.mail_addr = A.quote_822_local(sender) if sender else ""
            reply = (await chain.mail([run.mail_addr], run.macro)).raw
            if reply:
                run.apply("MAIL", reply)
                return
            for rcpt in list(state.recipients):
                run.rcpt_addr = A.quote_822_local(rcpt.address) if rcpt.address else ""
                reply = (await chain.rcpt([run.rcpt_addr], run.macro)).raw
                if reply and run.apply("RCPT", reply):
                    run.warn(f"{inj.queue_id}: milter configuration error: can't reject "
                             f"recipient in non-smtpd(8) submission")
                    run.warn(f"{inj.queue_id}: message not accepted, try again later")
                    state.reason = "4.3.5 Server configuration error"
                    state.errs |= CleanupStatus.DEFER
                    return
            reply = (await chain.data(run.macro)).raw
            if reply:
                run.apply("DATA", reply)
                return
            if not run.ok:
                return
            edit = inj.milter_message(header_checks=self.header_checks)
            reply = (await chain.message(edit, run.macro)).raw
            if reply:
                run.apply("END-OF-MESSAGE", reply)
        finally:
            await chain.close()


class _Run:
    """One message's pass: macros (cleanup_milter_eval) and replies
    (cleanup_milter_apply)."""

    def __init__(self, owner: NonSmtpdMilters, inj):
        self.owner = owner
        self.inj = inj
        self.state = inj.state
        self.mail_addr: str | None = None
        self.rcpt_addr: str | None = None

    @property
    def ok(self) -> bool:
        return self.state.out_ok

    def warn(self, text: str) -> None:
        self.state._log("warning", text)

    def macro(self, name: str) -> str | None:
        key = name[1:-1] if name.startswith("{") and name.endswith("}") else name
        o = self.owner
        attrs = self.inj.env.attributes if self.inj.env is not None else {}
        values = {
            "daemon_name": o.daemon_name, "v": o.macro_v, "j": o.hostname,
            "_": f"{CLIENT_NAME} [{CLIENT_ADDR}]", "client_addr": CLIENT_ADDR,
            "client_name": CLIENT_NAME, "client_port": "0", "client_ptr": CLIENT_NAME,
            "daemon_addr": CLIENT_ADDR, "daemon_port": "0", "i": self.inj.queue_id,
            "auth_type": attrs.get("sasl_method"), "auth_authen": attrs.get("sasl_username"),
            "auth_author": attrs.get("sasl_sender"),
            "mail_addr": self.mail_addr, "rcpt_addr": self.rcpt_addr,
        }
        return values.get(key)

    def apply(self, event: str, reply: str) -> bool:
        """cleanup_milter_apply(): True when the reply refuses (4xx/5xx)."""
        st = self.state
        if st.flags & CleanupFlag.DISCARD or st.errs & CleanupStatus.CONT:
            return False  # redundant: the message is going nowhere already
        if not st.out_ok:
            return False
        refused = False
        if reply[0] == "H":
            if st.flags & CleanupFlag.HOLD:
                return False
            st.flags |= CleanupFlag.HOLD
            action, text = "milter-hold", "milter triggers HOLD action"
        elif reply[0] == "D":
            st.flags |= CleanupFlag.DISCARD
            action, text = "milter-discard", "milter triggers DISCARD action"
        elif reply[0] == "4":
            st.reason = reply[4:]
            st.errs |= CleanupStatus.DEFER
            action, text, refused = "milter-reject", reply[4:], True
        elif reply[0] == "5":
            st.reason = reply[4:]
            st.errs |= CleanupStatus.CONT
            action, text, refused = "milter-reject", reply[4:], True
        else:  # "S"
            st.errs |= CleanupStatus.CONT
            action, text = "milter-reject", "message content rejected"
        line = f"{self.inj.queue_id}: {action}: {event} from {CLIENT_NAME}[{CLIENT_ADDR}]: {text};"
        if st.sender is not None:
            line += f" from=<{st._log_addr(st.sender)}>"
        if st.recip is not None:
            line += f" to=<{st._log_addr(st.recip)}>"
        st._log("info", line)
        return refused


__all__ = ["NonSmtpdMilters"]

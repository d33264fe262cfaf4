"""Delivery requests between qmgr and the delivery agents, and the status
line every agent logs.

qmgr sends one request per (transport, next hop, batch of recipients) in the
attribute protocol (:mod:`hato.proto.attr`); the agent answers one status
per recipient. The agent logs Postfix's status line, which pflogsumm reads:

    QID: to=<rcpt>, orig_to=<orig>, relay=local, delay=0.12,
        delays=0.01/0.01/0/0.1, dsn=2.0.0, status=sent (delivered to maildir)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..policy.address import log_form
from ..proto.attr import Attrs

SENT = "sent"
DEFERRED = "deferred"
BOUNCED = "bounced"


@dataclass
class RcptRequest:
    index: int  # position in the queue file's recipient list
    address: str
    orig_address: str = ""
    notify: str = ""  # comma-separated DSN NOTIFY keywords
    orcpt: str = ""


@dataclass
class DeliveryRequest:
    queue_name: str
    queue_id: str
    transport: str
    nexthop: str
    sender: str
    arrival: float
    active_time: float  # when qmgr moved the message to active/
    recipients: list[RcptRequest] = field(default_factory=list)
    envid: str = ""
    ret: str = ""
    size: int = 0
    attributes: dict[str, str] = field(default_factory=dict)
    #: qmgr's hints to the agent, as Postfix's DEL_REQ_FLAG_*: CONN_LOAD
    #: (more mail for this destination is waiting: keep the connection)
    flags: frozenset[str] = frozenset()

    def encode(self) -> Attrs:
        a = Attrs.of(request="deliver", queue_name=self.queue_name, queue_id=self.queue_id,
                     transport=self.transport, nexthop=self.nexthop, sender=self.sender,
                     arrival=repr(self.arrival), active_time=repr(self.active_time),
                     envid=self.envid, ret=self.ret, size=self.size,
                     flags=",".join(sorted(self.flags)))
        for name, value in self.attributes.items():
            a.add("attr", f"{name}={value}")
        for r in self.recipients:
            a.add("rcpt_index", str(r.index)).add("rcpt", r.address)
            a.add("orig_rcpt", r.orig_address).add("notify", r.notify).add("orcpt", r.orcpt)
        return a

    @classmethod
    def decode(cls, a: Attrs) -> "DeliveryRequest":
        req = cls(queue_name=a["queue_name"], queue_id=a["queue_id"], transport=a["transport"],
                  nexthop=a.get("nexthop", "") or "", sender=a.get("sender", "") or "",
                  arrival=float(a.get("arrival") or 0), active_time=float(a.get("active_time") or 0),
                  envid=a.get("envid", "") or "", ret=a.get("ret", "") or "",
                  size=a.int("size"),
                  flags=frozenset(f for f in (a.get("flags", "") or "").split(",") if f))
        for item in a.all("attr"):
            name, _, value = item.partition("=")
            req.attributes[name] = value
        idx, rcpt, orig = a.all("rcpt_index"), a.all("rcpt"), a.all("orig_rcpt")
        notify, orcpt = a.all("notify"), a.all("orcpt")
        for i in range(len(rcpt)):
            req.recipients.append(RcptRequest(int(idx[i]), rcpt[i], orig[i], notify[i], orcpt[i]))
        return req


@dataclass
class RcptStatus:
    """One recipient's outcome, as an agent reports it to qmgr.

    *remote_mta* and *diagnostic* are the formal part of a server's reply,
    as Postfix's smtp/lmtp client records it (``dsb_update(..., "dns",
    host, "smtp", reply)``): the name of the host that answered (the DSN's
    ``Remote-MTA: dns; host``) and its reply as received, multi-line replies
    joined with spaces (``Diagnostic-Code: smtp; 550 5.1.1 ...``);
    *diagnostic_type* is ``smtp`` for SMTP and LMTP alike, ``x-unix`` for
    commands. Empty when the outcome is hato's own (a connect failure, a
    local delivery): the DSN then says ``Diagnostic-Code: X-<mail_name>;
    <reason>`` and has no Remote-MTA.
    """

    index: int
    status: str  # sent, deferred, bounced
    dsn: str  # 2.0.0, 4.x.y, 5.x.y
    reason: str
    relay: str = "none"
    action: str = ""  # DSN action: delivered, relayed, expanded, failed, delayed
    remote_mta: str = ""  # the host that gave the reply (Remote-MTA: dns; host)
    diagnostic: str = ""  # its reply, "550 5.1.1 <u@x>: ..." (Diagnostic-Code)
    diagnostic_type: str = "smtp"
    #: already logged by the agent that delivered it (local's mailbox_transport
    #: hands a recipient to another agent, which logs it): not sent to qmgr
    logged: bool = False
    #: the transaction's number on its connection (the smtp client's
    #: connection cache): logged as ``conn_use=N`` when over 1; not sent
    conn_use: int = 0

    def __post_init__(self) -> None:
        if not self.action:
            self.action = {SENT: "delivered", DEFERRED: "delayed", BOUNCED: "failed"}[self.status]

    def log_fields(self) -> dict[str, str]:
        """The formal DSN fields for a defer/bounce log entry, under
        Postfix's attribute names (mta_mname, diag_type, diag_text); empty
        when there are none."""
        out: dict[str, str] = {}
        if self.remote_mta:
            out["mta_type"] = "dns"
            out["mta_mname"] = self.remote_mta
        if self.diagnostic:
            out["diag_type"] = self.diagnostic_type or "smtp"
            out["diag_text"] = self.diagnostic
        return out


def encode_statuses(statuses: list[RcptStatus]) -> Attrs:
    a = Attrs.of(status="done")
    for s in statuses:
        a.add("rcpt_index", str(s.index)).add("rcpt_status", s.status).add("dsn", s.dsn)
        a.add("reason", s.reason).add("relay", s.relay).add("action", s.action)
        a.add("mta_mname", s.remote_mta).add("diag_type", s.diagnostic_type)
        a.add("diag_text", s.diagnostic)
    return a


def decode_statuses(a: Attrs) -> list[RcptStatus]:
    """The statuses of an agent's answer. An answer without the formal
    DSN fields (an agent that predates them) gives empty ones."""
    idx, st, dsn = a.all("rcpt_index"), a.all("rcpt_status"), a.all("dsn")
    reason, relay, action = a.all("reason"), a.all("relay"), a.all("action")
    n = len(idx)

    def column(name: str, default: str) -> list[str]:
        values = a.all(name)
        return list(values) if len(values) == n else [default] * n

    mta, dtype, dtext = column("mta_mname", ""), column("diag_type", "smtp"), \
        column("diag_text", "")
    return [RcptStatus(int(idx[i]), st[i], dsn[i], reason[i], relay[i], action[i],
                       remote_mta=mta[i], diagnostic=dtext[i],
                       diagnostic_type=dtype[i] or "smtp")
            for i in range(n)]


def format_delay(seconds: float) -> str:
    """Postfix's delay formatting: whole seconds from 10 s, one decimal from
    1 s, two below (trailing zeros dropped), and 0 below 10 ms."""
    seconds += 1e-9  # float noise: 100.6 - 100.0 is 0.5999...
    if seconds >= 10:
        return f"{int(seconds)}"
    if seconds >= 1:
        text = f"{int(seconds * 10) / 10:.1f}"
    elif seconds >= 0.01:
        text = f"{int(seconds * 100) / 100:.2f}"
    else:
        return "0"
    return text.rstrip("0").rstrip(".")


def status_line(req: DeliveryRequest, rcpt: RcptRequest, st: RcptStatus, *,
                started: float, connected: float, finished: float,
                external: bool = True) -> str:
    """The line Postfix's delivery agents log for one recipient; addresses
    in the form info_log_address_format says (*external*)."""
    a = max(0.0, req.active_time - req.arrival)
    b = max(0.0, started - req.active_time)
    c = max(0.0, connected - started)
    d = max(0.0, finished - connected)
    total = max(0.0, finished - req.arrival)
    orig = f", orig_to=<{log_form(rcpt.orig_address, external)}>" if rcpt.orig_address and \
        rcpt.orig_address != rcpt.address else ""
    use = f", conn_use={st.conn_use}" if st.conn_use > 1 else ""
    return (f"{req.queue_id}: to=<{log_form(rcpt.address, external)}>{orig}, relay={st.relay}"
            f"{use}, delay={format_delay(total)}, delays={format_delay(a)}/{format_delay(b)}/{format_delay(c)}/{format_delay(d)}, "
            f"dsn={st.dsn}, status={st.status} ({st.reason})")

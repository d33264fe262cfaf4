"""The smtp/lmtp agent's per-recipient statuses: a server's reply gives the
DSN's Remote-MTA (the host that answered) and Diagnostic-Code (its reply),
as Postfix's smtp client records them; a failure of hato's own gives
neither."""

from __future__ import annotations

from hato.delivery.request import BOUNCED, DEFERRED, SENT, DeliveryRequest, RcptRequest
from hato.io import smtp_delivery as D
from hato.policy.smtp_route import Candidate, Destination, Hop, NextHop, RouteFailure
from hato.proto import smtp_client as C
from hato.proto.smtp_client_replies import ServerReply, fake_reply

MX = Candidate("mx.example.org", "192.0.2.1", 25, 10)


class Router:
    def __init__(self, hop):
        self.hop = hop

    def hops(self, nexthop):
        return [self.hop]

    def failure(self, hop, last):
        return last or RouteFailure("4.4.1", "no server")


def agent(attempt: D._Attempt) -> D.SmtpDelivery:
    a = object.__new__(D.SmtpDelivery)
    hop = Hop(Destination(NextHop("example.org", "example.org", "smtp", 25)), (MX,), final=True)
    a.router = Router(hop)
    a.cache = None
    a.generic = a.outbound = None  # no smtp_generic_maps, no content checks
    a._try = lambda cand, req, pending, timing, reused=None: attempt
    return a


def request(n: int) -> DeliveryRequest:
    return DeliveryRequest("active", "QID", "smtp", "example.org", "s@example.com", 1.0, 2.0,
                           [RcptRequest(i, f"u{i}@example.org") for i in range(n)])


def reply(code: int, *lines: str) -> ServerReply:
    return ServerReply(code, lines[-1].split()[1], lines)


def test_server_replies_become_remote_mta_and_diagnostic():
    r550 = reply(550, "550-5.1.1 <u0@example.org>: Recipient address rejected:",
                 "550 5.1.1 User unknown")
    r452 = reply(452, "452 4.5.3 Too many recipients")
    r250 = reply(250, "250 2.0.0 Ok: queued as XYZ")
    said = "host mx.example.org[192.0.2.1] said: {} (in reply to RCPT TO command)"
    results = (
        C.RecipientResult(0, "u0@example.org", C.Disposition.BOUNCED, "5.1.1", r550, "RCPT TO",
                          said.format(r550.text)),
        C.RecipientResult(1, "u1@example.org", C.Disposition.DEFERRED, "4.5.3", r452,
                          "RCPT TO", said.format(r452.text)),
        C.RecipientResult(2, "u2@example.org", C.Disposition.SENT, "2.0.0", r250,
                          "end of DATA", r250.text),
        C.RecipientResult(3, "u3@example.org", C.Disposition.DEFERRED, "4.4.2",
                          fake_reply("4.4.2"), "", "lost connection with mx.example.org"
                          "[192.0.2.1] while sending end of data -- message may be sent more "
                          "than once"),
    )
    out = {s.index: s for s in agent(D._Attempt(results=results, connected=True))
           .deliver(request(4), {})}
    bounced = out[0]
    assert (bounced.status, bounced.dsn, bounced.action) == (BOUNCED, "5.1.1", "failed")
    assert bounced.relay == "mx.example.org[192.0.2.1]:25"
    assert bounced.remote_mta == "mx.example.org"
    assert bounced.diagnostic == ("550-5.1.1 <u0@example.org>: Recipient address rejected: "
                                  "550 5.1.1 User unknown")
    assert bounced.diagnostic_type == "smtp"
    assert bounced.log_fields()["diag_text"] == bounced.diagnostic
    assert (out[1].status, out[1].remote_mta, out[1].diagnostic) == \
        (DEFERRED, "mx.example.org", "452 4.5.3 Too many recipients")
    assert (out[2].status, out[2].action, out[2].diagnostic) == \
        (SENT, "relayed", "250 2.0.0 Ok: queued as XYZ")
    # made up by the client: no Remote-MTA, the DSN says X-hato; <reason>
    assert (out[3].status, out[3].remote_mta, out[3].diagnostic) == (DEFERRED, "", "")
    assert out[3].log_fields() == {}


def test_no_server_answered():
    out = agent(D._Attempt(failure="connect to mx.example.org[192.0.2.1]:25: Connection "
                           "refused", failure_dsn="4.4.1")).deliver(request(1), {})
    (st,) = out
    assert (st.status, st.relay, st.remote_mta, st.diagnostic) == (DEFERRED, "none", "", "")


def test_lmtp_assume_final_reports_delivered():
    """lmtp_assume_final = yes and an LMTP server without DSN: the DSN
    action is "delivered" (final delivery), else "relayed"."""
    ok = reply(250, "250 2.0.0 <u0@example.org> Saved")
    res = (C.RecipientResult(0, "u0@example.org", C.Disposition.SENT, "2.0.0", ok,
                             "end of DATA", ok.text),)
    final = agent(D._Attempt(results=res, connected=True, final=True)).deliver(request(1), {})
    relayed = agent(D._Attempt(results=res, connected=True)).deliver(request(1), {})
    assert (final[0].action, relayed[0].action) == ("delivered", "relayed")

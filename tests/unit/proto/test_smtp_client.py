"""SMTP/LMTP client core, driven against hato's own server core in memory:
a small loop shuttles bytes between the two, the server answering per a
script. Every scenario also runs with the server's replies fed one byte at
a time and at hypothesis-chosen split points: the client's events and its
bytes on the wire must not change."""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.proto import smtp_client as c
from hato.proto import smtpd as s
from hato.proto.smtp_client_replies import BodyEncoder, ReplyReader, xtext
from hato.proto.smtpd_syntax import xtext_decode
from tests.unit.proto.test_smtpd_support import BANNER, HOST, KEYWORDS, QUEUED, pieces

SERVER = "mx.example.com[192.0.2.1]"
PARAMS = c.ClientParams(helo_name="client.example.org", server_name=SERVER)
BODY = b"Subject: hi\n\nline one\n.leading dot\n..two dots\nlast line"
NOPIPE = [k for k in KEYWORDS if k not in ("PIPELINING", "CHUNKING")]
NOCHUNK = [k for k in KEYWORDS if k != "CHUNKING"]


def msg(*rcpts: str | c.Recipient, **kw: object) -> c.Message:
    kw.setdefault("size", len(BODY))
    return c.Message("sender@example.org", tuple(rcpts), **kw)  # type: ignore[arg-type]


@dataclass
class Script:
    """How the server answers (None: its default acceptance)."""

    keywords: list[str] | None = field(default_factory=lambda: list(NOCHUNK))
    banner: s.Reply = BANNER
    ehlo: s.Reply | None = None
    helo: s.Reply | None = None
    mail: s.Reply | None = None
    rcpt: dict[str, s.Reply] = field(default_factory=dict)
    data: s.Reply | None = None
    end: s.Reply | list[s.Reply] | None = None  # a list: LMTP, one per recipient
    auth: bool = True  # accept AUTH
    starttls: s.Reply | None = None


def _answer(conn: s.ServerConnection, reply: s.Reply | None) -> None:
    if reply is None:
        conn.accept()
    elif reply.code < 400:
        conn.accept(reply)
    else:
        conn.reject(reply, close=reply.code == 421)


class Run:
    def __init__(self, script: Script, params: c.ClientParams = PARAMS,
                 messages: Iterable[c.Message] = (), split: Iterable[int] | str | None = None,
                 body: bytes = BODY, body_chunks: int = 0, check: bool = False):
        self.script = script
        self.check = check  # RSET (check()) before each message after the first
        self._checked = False
        self.params = params
        self.messages = list(messages)
        self.split = split
        self.body = body
        self.body_chunks = body_chunks
        self.server = s.ServerConnection(s.Limits(), hostname=HOST)
        self.client = c.ClientConnection(params, self.messages.pop(0) if self.messages else None)
        self.events: list[object] = []  # client events
        self.server_events: list[s.Event] = []
        self.writes: list[bytes] = []  # the client's writes, as sent
        self.wire = bytearray()  # everything the server sent
        self.auth_lines: list[str] = []

    # -- the server side
    def _policy(self, ev: s.Event) -> None:
        conn, sc = self.server, self.script
        if isinstance(ev, s.Helo):
            if ev.extended and sc.ehlo is not None:
                conn.reject(sc.ehlo, close=sc.ehlo.code == 421)
            elif not ev.extended and sc.helo is not None:
                conn.reject(sc.helo)
            else:
                kw = sc.keywords if sc.keywords is not None else KEYWORDS
                conn.accept(ehlo_keywords=kw if ev.extended else None)
        elif isinstance(ev, s.MailFrom):
            _answer(conn, sc.mail)
        elif isinstance(ev, s.RcptTo):
            _answer(conn, sc.rcpt.get(ev.address))
        elif isinstance(ev, s.DataCommand):
            _answer(conn, sc.data)
        elif isinstance(ev, s.BdatChunk) and not ev.last:
            conn.accept()
        elif isinstance(ev, (s.MessageEnd, s.BdatChunk)):
            end = sc.end if sc.end is not None else QUEUED
            if isinstance(end, list):
                for r in end[:-1]:
                    conn.reply(r)
                end = end[-1]
            _answer(conn, end)
        elif isinstance(ev, s.StartTls):
            _answer(conn, sc.starttls)
        elif isinstance(ev, s.Auth):
            if ev.initial is None:
                conn.reply(s.Reply(334, "", base64.b64encode(b"Username:").decode()))
            else:
                self.auth_lines.append(ev.initial)
                conn.auth_done(sc.auth)
        elif isinstance(ev, s.AuthResponse):
            self.auth_lines.append(ev.line)
            if len(self.auth_lines) == 1:
                conn.reply(s.Reply(334, "", base64.b64encode(b"Password:").decode()))
            else:
                conn.auth_done(sc.auth)
        else:
            conn.accept()

    def _pump_server(self) -> None:
        conn = self.server
        while True:
            ev = conn.next_event()
            if ev is s.NEED_DATA or ev is s.PAUSED:
                break
            self.server_events.append(ev)
            if isinstance(ev, s.Closed):
                break
            if isinstance(ev, s.MessageEnd) and ev.reply is not None:
                continue
            if isinstance(ev, (s.Helo, s.MailFrom, s.RcptTo, s.DataCommand, s.MessageEnd,
                               s.BdatChunk, s.StartTls, s.Auth, s.AuthResponse)):
                self._policy(ev)

    # -- the client side
    def _drain(self) -> None:
        cl = self.client
        while True:
            ev = cl.next_event()
            if ev is c.NEED_DATA:
                return
            if ev is c.READY:
                if self.messages and self.check and not self._checked:
                    self._checked = True
                    cl.check()
                elif self.messages:
                    self._checked = False
                    cl.send_message(self.messages.pop(0))
                else:
                    cl.quit()
                continue
            self.events.append(ev)
            if isinstance(ev, c.NeedBody):
                n = self.body_chunks or len(self.body) or 1
                for i in range(0, len(self.body), n):
                    cl.send_body(self.body[i:i + n])
                cl.end_body()
            elif isinstance(ev, c.NeedTls):
                self.server.starttls_done()
                cl.tls_done()
            elif isinstance(ev, c.NeedAuth):
                cl.authenticate(Login() if "LOGIN" in ev.mechanisms else None)
            elif isinstance(ev, c.Closed):
                return

    def go(self) -> Run:
        self.server.greet(self.script.banner)
        s2c = self.server.data_to_send()
        for _ in range(1000):
            self.wire += s2c
            for piece in pieces(s2c, self.split) if s2c else [b""]:
                if piece:
                    self.client.receive_data(piece)
                self._drain()
            c2s = self.client.data_to_send()
            if c2s:
                self.writes.append(c2s)
                if self.params.lmtp:
                    c2s = c2s.replace(b"LHLO ", b"EHLO ")
                self.server.receive_data(c2s)
                self._pump_server()
            if self.client.closed:
                return self
            s2c = self.server.data_to_send()
            if not s2c and not c2s:
                assert self.server.closed, "deadlock"
                self.client.receive_data(b"")
                self._drain()
        raise AssertionError("no end")

    # -- views
    @property
    def transcript(self) -> bytes:
        return b"".join(self.writes)

    def results(self) -> list[tuple[int, str, str, str]]:
        done = [e for e in self.events if isinstance(e, c.MessageDone)]
        return [[(r.index, r.disposition.value, r.dsn, r.command) for r in d.results]
                for d in done]

    @property
    def closed(self) -> c.Closed:
        ev = self.events[-1]
        assert isinstance(ev, c.Closed)
        return ev

    def server_content(self) -> bytes:
        return b"".join(e.data for e in self.server_events if isinstance(e, s.MessageData))

    def of(self, kind: type) -> list:
        return [e for e in self.server_events if isinstance(e, kind)]


class Login:
    name = "LOGIN"

    def initial_response(self) -> bytes | None:
        return None

    def step(self, challenge: bytes) -> bytes:
        return {b"Username:": b"user", b"Password:": b"secret"}[challenge]


def run_all_ways(script: Script, params: c.ClientParams = PARAMS,
                 messages: Iterable[c.Message] = (), **kw: object) -> Run:
    """Whole, byte by byte: the same events and the same bytes sent."""
    messages = list(messages)
    whole = Run(script, params, messages, "whole", **kw).go()  # type: ignore[arg-type]
    by_byte = Run(script, params, messages, "bytes", **kw).go()  # type: ignore[arg-type]
    assert by_byte.events == whole.events
    assert by_byte.transcript == whole.transcript
    return whole


def normalized_body(body: bytes) -> bytes:
    out = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return out if out.endswith(b"\r\n") else out + b"\r\n"


# ---------------------------------------------------------------- delivery


def test_pipelined_delivery_one_group():
    r = run_all_ways(Script(), messages=[msg("a@d", "b@d")])
    assert r.results() == [[(0, "sent", "2.0.0", "end of DATA"),
                            (1, "sent", "2.0.0", "end of DATA")]]
    done = r.events[-2]
    assert done.results[0].reason == "250 2.0.0 Ok: queued as 4XyZ"
    assert r.closed.outcome is c.Outcome.OK
    # RFC 2920: MAIL, every RCPT and DATA in one write
    assert r.writes[1] == (b"MAIL FROM:<sender@example.org> SIZE=%d\r\nRCPT TO:<a@d>\r\n"
                           b"RCPT TO:<b@d>\r\nDATA\r\n" % len(BODY))
    assert r.writes[-1].endswith(b".\r\nQUIT\r\n") or r.writes[-1] == b"QUIT\r\n"
    assert r.server_content() == normalized_body(BODY)
    assert r.server.improper_pipelining is None


def test_without_pipelining_one_command_at_a_time():
    r = run_all_ways(Script(keywords=NOPIPE), messages=[msg("a@d", "b@d")])
    assert r.results()[0][1][1] == "sent"
    assert r.server.improper_pipelining is None
    cmds = [w for w in r.writes if not w.startswith(b"Subject")]
    assert b"RCPT TO:<a@d>\r\n" in cmds and b"DATA\r\n" in cmds
    assert not r.client.pipelining


def test_mixed_recipient_replies():
    sc = Script(rcpt={"b@d": s.Reply(452, "4.2.2", "Mailbox full"),
                      "c@d": s.Reply(550, "5.1.1", "<c@d>: Recipient address rejected")})
    for keywords in (NOCHUNK, NOPIPE):
        sc.keywords = keywords
        r = run_all_ways(sc, messages=[msg("a@d", "b@d", "c@d")])
        assert r.results() == [[(0, "sent", "2.0.0", "end of DATA"),
                                (1, "deferred", "4.2.2", "RCPT TO"),
                                (2, "bounced", "5.1.1", "RCPT TO")]]
        res = r.events[-2].results
        assert res[2].reason == (f"host {SERVER} said: 550 5.1.1 <c@d>: Recipient address "
                                 "rejected (in reply to RCPT TO command)")
        assert res[2].code == 550 and res[1].reply.message == "Mailbox full"
        assert [e.address for e in r.of(s.RcptTo)] == ["a@d", "b@d", "c@d"]


def test_all_recipients_refused_no_data():
    no = s.Reply(550, "5.1.1", "User unknown")
    for keywords in (NOCHUNK, NOPIPE):
        r = run_all_ways(Script(keywords=keywords, rcpt={"a@d": no, "b@d": no}),
                         messages=[msg("a@d", "b@d"), msg("a@d")])
        assert r.results() == [[(0, "bounced", "5.1.1", "RCPT TO"),
                                (1, "bounced", "5.1.1", "RCPT TO")],
                               [(0, "bounced", "5.1.1", "RCPT TO")]]
        assert not r.of(s.MessageEnd) and not r.server_content()
        if keywords is NOPIPE:
            assert b"DATA\r\n" not in r.transcript
        # the next transaction starts with RSET
        assert b"RSET\r\nMAIL FROM" in r.transcript or b"RSET\r\n" in r.writes


def test_421_in_the_middle_defers_everything():
    sc = Script(rcpt={"b@d": s.Reply(421, "4.7.0", "mx.example.com Error: too busy")})
    for keywords in (NOCHUNK, NOPIPE):
        sc.keywords = keywords
        r = run_all_ways(sc, messages=[msg("a@d", "b@d", "c@d")])
        assert r.results() == [[(0, "deferred", "4.7.0", "RCPT TO"),
                                (1, "deferred", "4.7.0", "RCPT TO"),
                                (2, "deferred", "4.7.0", "RCPT TO")]]
        assert r.closed.outcome is c.Outcome.SITE_SOFT
        assert b"QUIT" not in r.transcript


def test_5xx_greeting():
    sc = Script(banner=s.Reply(554, "5.7.1", "go away"))
    r = run_all_ways(sc, messages=[msg("a@d")])
    assert r.results() == [[(0, "deferred", "4.7.1", "")]]  # smtp_skip_5xx_greeting
    assert r.closed.outcome is c.Outcome.SITE_SOFT
    assert r.closed.reason == f"host {SERVER} refused to talk to me: 554 5.7.1 go away"
    assert r.transcript == b"QUIT\r\n"
    params = c.ClientParams("me", server_name=SERVER, skip_5xx_greeting=False)
    r = run_all_ways(sc, params, messages=[msg("a@d")])
    assert r.results() == [[(0, "bounced", "5.7.1", "")]]
    assert r.closed.outcome is c.Outcome.SITE_HARD


def test_4xx_greeting_and_421_greeting():
    r = run_all_ways(Script(banner=s.Reply(450, "", "busy")), messages=[msg("a@d")])
    assert r.results() == [[(0, "deferred", "4.0.0", "")]]
    r = run_all_ways(Script(banner=s.Reply(421, "4.3.2", "shutting down")), messages=[msg("a@d")])
    assert r.results() == [[(0, "deferred", "4.3.2", "")]]
    assert b"QUIT" not in r.transcript


def test_ehlo_refused_falls_back_to_helo():
    r = run_all_ways(Script(ehlo=s.Reply(502, "5.5.2", "Error: command not recognized")),
                     messages=[msg("a@d", body="8BITMIME", ret="FULL")])
    assert r.results() == [[(0, "sent", "2.0.0", "end of DATA")]]
    assert b"HELO client.example.org\r\n" in r.transcript
    assert not r.client.esmtp
    mail = r.of(s.MailFrom)[0]
    assert mail.size is None and mail.body is None and mail.ret is None
    assert r.events[0] == c.NeedBody(downgrade=True)


def test_helo_refused_too():
    sc = Script(ehlo=s.Reply(550, "", "no"), helo=s.Reply(550, "5.7.1", "no"))
    r = run_all_ways(sc, messages=[msg("a@d")])
    assert r.results() == [[(0, "bounced", "5.7.1", "")]]
    assert r.closed.outcome is c.Outcome.SITE_HARD


def test_size_too_big_refused_before_mail():
    sc = Script(keywords=["PIPELINING", "SIZE 100", "8BITMIME"])
    r = run_all_ways(sc, messages=[msg("a@d", size=5000), msg("b@d", size=50)])
    assert r.results() == [[(0, "bounced", "5.3.4", "")], [(0, "sent", "2.0.0", "end of DATA")]]
    res = r.events[0].results[0]
    assert res.reason == f"message size 5000 exceeds size limit 100 of server {SERVER}"
    assert res.code == 0
    assert r.transcript.count(b"MAIL FROM") == 1 and b"RSET" not in r.transcript


def test_smtputf8_required_and_not_offered():
    sc = Script(keywords=[k for k in NOCHUNK if k != "SMTPUTF8"])
    r = run_all_ways(sc, messages=[msg("ü@d", smtputf8=True)])
    assert r.results() == [[(0, "bounced", "5.6.7", "")]]
    assert r.events[0].results[0].reason == (f"SMTPUTF8 is required, but was not offered "
                                             f"by host {SERVER}")
    r = run_all_ways(Script(), messages=[msg("ü@d", smtputf8=True)])
    assert r.results()[0][0][1] == "sent" and r.of(s.MailFrom)[0].smtputf8


def test_8bitmime():
    r = run_all_ways(Script(), messages=[msg("a@d", body="8BITMIME")])
    assert r.of(s.MailFrom)[0].body == "8BITMIME"
    assert r.events[0] == c.NeedBody(downgrade=False)
    sc = Script(keywords=[k for k in NOCHUNK if k != "8BITMIME"])
    r = run_all_ways(sc, messages=[msg("a@d", body="8BITMIME")])
    assert r.of(s.MailFrom)[0].body is None
    assert r.events[0] == c.NeedBody(downgrade=True)


def test_dsn_parameters():
    rc = c.Recipient("a@d", frozenset({"FAILURE", "DELAY"}), "rfc822;x+y=z@d")
    m = msg(rc, "b@d", ret="HDRS", envid="id+=1 x")
    r = run_all_ways(Script(), messages=[m])
    mail = r.of(s.MailFrom)[0]
    assert (mail.ret, mail.envid) == ("HDRS", "id+=1 x")
    r1, r2 = r.of(s.RcptTo)
    assert r1.notify == frozenset({"FAILURE", "DELAY"}) and r1.orcpt == "rfc822;x+y=z@d"
    assert b"NOTIFY=FAILURE,DELAY ORCPT=rfc822;x+2By+3Dz@d" in r.transcript
    assert r2.notify == frozenset() and r2.orcpt is None
    # not offered: not sent
    r = run_all_ways(Script(keywords=[k for k in NOCHUNK if k != "DSN"]), messages=[m])
    assert b"NOTIFY" not in r.transcript and b"RET=" not in r.transcript
    assert r.results()[0][0][1] == "sent"


def test_mail_refused():
    for code, disp in ((451, "deferred"), (553, "bounced")):
        sc = Script(mail=s.Reply(code, f"{code // 100}.1.8", "Sender refused"))
        for keywords in (NOCHUNK, NOPIPE):
            sc.keywords = keywords
            r = run_all_ways(sc, messages=[msg("a@d", "b@d")])
            assert r.results() == [[(0, disp, f"{code // 100}.1.8", "MAIL FROM"),
                                    (1, disp, f"{code // 100}.1.8", "MAIL FROM")]]
            assert "(in reply to MAIL FROM command)" in r.events[0].results[0].reason
            assert not r.of(s.MessageEnd)


def test_data_and_end_of_data_refused():
    r = run_all_ways(Script(data=s.Reply(554, "5.5.1", "no")), messages=[msg("a@d")])
    assert r.results() == [[(0, "bounced", "5.5.1", "DATA")]]
    r = run_all_ways(Script(end=s.Reply(552, "5.3.4", "too big")), messages=[msg("a@d", "b@d")])
    assert r.results() == [[(0, "bounced", "5.3.4", "end of DATA"),
                            (1, "bounced", "5.3.4", "end of DATA")]]
    assert r.events[-2].results[0].reason.endswith("(in reply to end of DATA command)")


def test_lmtp_per_recipient_replies():
    params = c.ClientParams("client", server_name="private/dovecot-lmtp", lmtp=True)
    sc = Script(rcpt={"x@d": s.Reply(550, "5.1.1", "no such user")},
                end=[s.Reply(250, "2.0.0", "<a@d> Saved"),
                     s.Reply(452, "4.2.2", "<b@d> Quota exceeded"),
                     s.Reply(552, "5.2.2", "<c@d> Mailbox full")])
    r = run_all_ways(sc, params, messages=[msg("a@d", "x@d", "b@d", "c@d")])
    assert r.writes[0] == b"LHLO client\r\n"
    assert r.results() == [[(0, "sent", "2.0.0", "end of DATA"),
                            (1, "bounced", "5.1.1", "RCPT TO"),
                            (2, "deferred", "4.2.2", "end of DATA"),
                            (3, "bounced", "5.2.2", "end of DATA")]]
    assert r.events[-2].results[0].reason == "250 2.0.0 <a@d> Saved"


def test_lmtp_lhlo_refused_no_helo():
    params = c.ClientParams("client", lmtp=True)
    r = run_all_ways(Script(ehlo=s.Reply(500, "5.5.2", "no")), params, messages=[msg("a@d")])
    assert r.results() == [[(0, "bounced", "5.5.2", "")]]
    assert b"HELO" not in r.transcript


def test_bdat_when_chunking_offered():
    body = b"x" * 50 + b"\n.dot\n" + b"y" * 30
    r = run_all_ways(Script(keywords=KEYWORDS), messages=[msg("a@d", "b@d")], body=body,
                     body_chunks=20)
    assert r.results() == [[(0, "sent", "2.0.0", "end of DATA"),
                            (1, "sent", "2.0.0", "end of DATA")]]
    chunks = r.of(s.BdatChunk)
    assert len(chunks) > 2 and chunks[-1].last
    assert b"DATA\r\n" not in r.transcript
    assert r.server_content() == normalized_body(body)  # no dot-stuffing in BDAT
    assert r.events[0] == c.NeedBody(chunking=True)


def test_bdat_empty_message_and_lmtp():
    params = c.ClientParams("client", lmtp=True)
    sc = Script(keywords=KEYWORDS, end=[s.Reply(250, "2.0.0", "ok a"),
                                        s.Reply(550, "5.1.1", "gone b")])
    r = run_all_ways(sc, params, messages=[msg("a@d", "b@d")], body=b"")
    assert r.results() == [[(0, "sent", "2.0.0", "end of DATA"),
                            (1, "bounced", "5.1.1", "end of DATA")]]
    assert b"BDAT 0 LAST\r\n" in r.transcript


def test_second_message_on_same_session():
    sc = Script(rcpt={"bad@d": s.Reply(550, "5.1.1", "unknown")})
    r = run_all_ways(sc, messages=[msg("a@d"), msg("b@d"), msg("bad@d"), msg("c@d")])
    assert [x[0][1] for x in r.results()] == ["sent", "sent", "bounced", "sent"]
    assert len(r.of(s.Helo)) == 1 and r.client.messages == 4
    assert r.transcript.count(b"RSET") == 1  # only after the refused transaction
    assert r.transcript.index(b"RSET") > r.transcript.index(b"bad@d")
    assert r.closed.outcome is c.Outcome.OK


def test_starttls_then_auth():
    params = c.ClientParams("me", server_name=SERVER, starttls="may", auth=True)
    r = run_all_ways(Script(keywords=KEYWORDS), params, messages=[msg("a@d")])
    assert isinstance(r.events[0], c.NeedTls) and isinstance(r.events[1], c.NeedAuth)
    assert "LOGIN" in r.events[1].mechanisms
    assert r.transcript.count(b"EHLO me") == 2 and r.server.tls_active
    assert r.server.authenticated and r.client.authenticated
    assert [base64.b64decode(x) for x in r.auth_lines] == [b"user", b"secret"]
    assert r.results()[0][0][1] == "sent"


def test_auth_failure_defers():
    params = c.ClientParams("me", server_name=SERVER, auth=True)
    r = run_all_ways(Script(keywords=KEYWORDS, auth=False), params, messages=[msg("a@d")])
    assert r.results() == [[(0, "deferred", "4.7.8", "")]]  # smtp_sasl_auth_soft_bounce
    assert r.closed.reason.startswith(f"SASL authentication failed; server {SERVER} said: 535")


def test_tls_required_not_offered():
    sc = Script(keywords=[k for k in NOCHUNK if k != "STARTTLS"])
    params = c.ClientParams("me", server_name=SERVER, starttls="encrypt")
    r = run_all_ways(sc, params, messages=[msg("a@d")])
    assert r.results() == [[(0, "deferred", "4.7.4", "")]]
    assert r.closed.reason == f"TLS is required, but was not offered by host {SERVER}"
    params = c.ClientParams("me", server_name=SERVER, starttls="may")
    r = run_all_ways(sc, params, messages=[msg("a@d")])
    assert r.results()[0][0][1] == "sent" and not r.client.tls_active


def test_mail_loop_detected():
    params = c.ClientParams("me", server_name=SERVER, myhostname=HOST)
    r = run_all_ways(Script(), params, messages=[msg("a@d")])
    assert r.results() == [[(0, "bounced", "5.4.6", "")]]
    assert r.closed.reason == f"mail for {SERVER} loops back to myself"


def test_session_without_message_then_quit():
    r = run_all_ways(Script())
    assert r.events == [c.Closed(c.Outcome.OK, "")]
    assert r.transcript.endswith(b"QUIT\r\n")


# ----------------------------------------------------- raw server replies


def feed(client: c.ClientConnection, data: bytes) -> list[object]:
    client.receive_data(data)
    out = []
    while True:
        ev = client.next_event()
        if ev is c.NEED_DATA or ev is c.READY:
            return out
        out.append(ev)
        if isinstance(ev, c.NeedBody):
            client.send_body(b"hello\n")
            client.end_body()


def test_protocol_error_and_lost_connection():
    cl = c.ClientConnection(PARAMS, msg("a@d"))
    assert feed(cl, b"220 hi\r\n") == []
    evs = feed(cl, b"garbage\r\n")
    assert [type(e) for e in evs] == [c.MessageDone, c.Closed]
    assert evs[0].results[0].dsn == "4.5.0" and evs[0].results[0].disposition.value == "deferred"
    assert evs[1].outcome is c.Outcome.SITE_SOFT
    assert "remote protocol error" in evs[1].reason
    cl = c.ClientConnection(PARAMS, msg("a@d"))
    feed(cl, b"220 hi\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n250 ok\r\n354 go\r\n")
    evs = feed(cl, b"")
    assert evs[1].reason == (f"lost connection with {SERVER} while sending end of data "
                             "-- message may be sent more than once")
    assert evs[0].results[0].dsn == "4.4.2"


def test_abort_by_driver():
    cl = c.ClientConnection(PARAMS, msg("a@d", "b@d"))
    feed(cl, b"220 hi\r\n")
    cl.abort(f"conversation with {SERVER} timed out while performing the EHLO handshake")
    evs = feed(cl, b"")
    assert [r.dsn for r in evs[0].results] == ["4.4.2", "4.4.2"]
    assert cl.closed


def test_multiline_reply_text_as_postfix():
    cl = c.ClientConnection(PARAMS, msg("a@d"))
    feed(cl, b"220 hi\r\n250-x\r\n250 PIPELINING\r\n250 ok\r\n")
    evs = feed(cl, b"550-5.1.1 The account does not\r\n550 5.1.1 exist. Try again\r\n554 no\r\n")
    res = evs[0].results[0]
    assert res.reason == (f"host {SERVER} said: 550-5.1.1 The account does not 550 5.1.1 "
                          "exist. Try again (in reply to RCPT TO command)")
    assert res.dsn == "5.1.1"


def test_reply_reader_details():
    rd = ReplyReader(line_limit=10)
    rd.feed(b"250 " + b"x" * 40 + b"\r\n451 4.3.0 a\r\n550 4.1.1 mismatch\n")
    r1, r2, r3 = rd.next_reply(), rd.next_reply(), rd.next_reply()
    assert r1.lines == ("250 xxxxxx",) and r2.dsn == "4.3.0" and r3.dsn == "5.0.0"
    rd.feed(b"250")
    assert rd.next_reply() is None
    rd.feed(b"\n")
    assert rd.next_reply().code == 250


def test_body_encoder():
    enc = BodyEncoder(stuff=True, line_limit=5)
    out = enc.encode(b".a\r") + enc.encode(b"\nabcdefghijk\n.") + enc.finish()
    assert out == b"..a\r\nabcde\r\n fghi\r\n jk\r\n..\r\n"
    enc = BodyEncoder(stuff=False)
    assert enc.encode(b"a\rb\n") + enc.finish() == b"a\rb\r\n"


def test_xtext_roundtrip():
    for text in ("plain", "a+b=c", "sp ace", "tab\there"):
        assert xtext_decode(xtext(text)) == text


def test_api_misuse():
    cl = c.ClientConnection(PARAMS)
    with pytest.raises(c.ProtocolStateError):
        cl.tls_done()
    with pytest.raises(c.ProtocolStateError):
        cl.authenticate(None)


# ----------------------------------------------------- hypothesis splits

SPLIT_SCRIPT = Script(rcpt={"b@d": s.Reply(452, "4.2.2", "Mailbox full"),
                            "c@d": s.Reply(550, "5.1.1", "unknown")})
SPLIT_MESSAGES = [msg("a@d", "b@d", "c@d"), msg("c@d"), msg("d@d")]
REFERENCE = Run(SPLIT_SCRIPT, PARAMS, SPLIT_MESSAGES).go()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), max_size=12))
def test_hypothesis_split_replies(cuts):
    r = Run(SPLIT_SCRIPT, PARAMS, SPLIT_MESSAGES, split=cuts).go()
    assert r.events == REFERENCE.events
    assert r.transcript == REFERENCE.transcript


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=300), max_size=8),
       st.integers(min_value=1, max_value=40))
def test_hypothesis_split_lmtp_bdat(cuts, chunk):
    params = c.ClientParams("client", lmtp=True)
    sc = Script(keywords=KEYWORDS, end=[s.Reply(250, "2.0.0", "ok"),
                                        s.Reply(450, "4.2.0", "later")])
    ref = Run(sc, params, [msg("a@d", "b@d")], body_chunks=7).go()
    r = Run(sc, params, [msg("a@d", "b@d")], split=cuts, body_chunks=chunk).go()
    assert r.events == ref.events
    assert r.server_content() == ref.server_content() == normalized_body(BODY)


def test_starttls_refused():
    sc = Script(starttls=s.Reply(454, "4.7.0", "TLS not available due to local problem"))
    r = run_all_ways(sc, c.ClientParams("me", server_name=SERVER, starttls="may"),
                     messages=[msg("a@d")])
    assert r.results()[0][0][1] == "sent" and not r.client.tls_active
    r = run_all_ways(sc, c.ClientParams("me", server_name=SERVER, starttls="encrypt"),
                     messages=[msg("a@d")])
    assert r.results() == [[(0, "deferred", "4.7.0", "")]]
    assert r.closed.reason.startswith(f"TLS is required, but host {SERVER} refused to start "
                                      "TLS: 454 4.7.0")


def test_idle_session_closed_by_server():
    cl = c.ClientConnection(PARAMS)
    feed(cl, b"220 hi\r\n250 ok\r\n")
    assert cl.next_event() is c.READY
    evs = feed(cl, b"")
    assert evs == [c.Closed(c.Outcome.OK, "lost connection")]
    # a message handed over meanwhile is deferred, not lost
    cl = c.ClientConnection(PARAMS)
    feed(cl, b"220 hi\r\n250 ok\r\n")
    cl.receive_data(b"")
    cl.send_message(msg("a@d"))
    evs = feed(cl, b"")
    assert evs[0].results[0].disposition is c.Disposition.DEFERRED


def test_354_without_recipients_sends_empty_message():
    cl = c.ClientConnection(PARAMS, msg("a@d"))
    feed(cl, b"220 hi\r\n250-x\r\n250 PIPELINING\r\n")
    cl.data_to_send()
    evs = feed(cl, b"250 ok\r\n550 5.1.1 no\r\n354 go ahead\r\n")
    assert evs == [] and cl.data_to_send() == b".\r\n"
    evs = feed(cl, b"250 2.0.0 ok\r\n")
    assert evs[0].results[0].disposition is c.Disposition.BOUNCED
    assert cl.next_event() is c.READY
    cl.send_message(msg("b@d"))
    cl.next_event()
    assert cl.data_to_send().startswith(b"RSET\r\nMAIL FROM:<sender@example.org>")


# ------------------------------------------------------- probes and reuse


def test_probe_stops_after_rcpt():
    sc = Script(rcpt={"bad@d": s.Reply(550, "5.1.1", "<bad@d>: Recipient address rejected"),
                      "later@d": s.Reply(450, "4.2.0", "try later")})
    r = run_all_ways(sc, messages=[msg("a@d", "bad@d", "later@d", verify_only=True)])
    assert r.results() == [[(0, "sent", "2.1.5", "RCPT TO"), (1, "bounced", "5.1.1", "RCPT TO"),
                            (2, "deferred", "4.2.0", "RCPT TO")]]
    assert b"DATA" not in r.transcript and b"BDAT" not in r.transcript
    assert not r.of(s.MessageData)
    assert r.closed.outcome is c.Outcome.OK


def test_probe_with_chunking_sends_no_bdat_and_next_message_resets():
    r = run_all_ways(Script(keywords=KEYWORDS),
                     messages=[msg("a@d", verify_only=True), msg("b@d")])
    assert [x[0][1] for x in r.results()] == ["sent", "sent"]
    t = r.transcript
    assert t.index(b"RSET") > t.index(b"RCPT TO:<a@d>")  # the probe's transaction is ended
    assert t.index(b"RSET") < t.index(b"MAIL FROM", t.index(b"RCPT TO:<a@d>"))
    assert b"BDAT" in t  # the real message uses CHUNKING


def test_check_rset_before_reuse():
    r = run_all_ways(Script(), messages=[msg("a@d"), msg("b@d")], check=True)
    assert [x[0][1] for x in r.results()] == ["sent", "sent"]
    assert r.transcript.count(b"RSET\r\n") == 1
    assert r.closed.outcome is c.Outcome.OK and r.client.messages == 2


def test_check_refused_closes_session_soft():
    conn = c.ClientConnection(PARAMS, msg("a@d"))
    conn.receive_data(b"220 mx ESMTP\r\n")
    assert conn.next_event() is c.NEED_DATA
    conn.data_to_send()
    conn.receive_data(b"250-mx\r\n250 PIPELINING\r\n")
    assert conn.next_event() is c.NEED_DATA
    conn.data_to_send()
    conn.receive_data(b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n")
    assert isinstance(conn.next_event(), c.NeedBody)
    conn.send_body(b"x\n")
    conn.end_body()
    conn.data_to_send()
    conn.receive_data(b"250 2.0.0 Ok\r\n")
    assert isinstance(conn.next_event(), c.MessageDone)
    assert conn.next_event() is c.READY
    conn.check()
    assert conn.data_to_send() == b"RSET\r\n"
    assert conn.waiting_for == "RSET"
    conn.receive_data(b"421 4.4.2 mx Error: timeout exceeded\r\n")
    ev = conn.next_event()
    assert isinstance(ev, c.Closed) and ev.outcome is c.Outcome.SITE_SOFT
    with pytest.raises(c.ProtocolStateError):
        conn.check()


def test_check_on_a_busy_session_is_an_error():
    conn = c.ClientConnection(PARAMS, msg("a@d"))
    with pytest.raises(c.ProtocolStateError):
        conn.check()

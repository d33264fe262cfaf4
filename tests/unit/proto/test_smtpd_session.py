"""SMTP server core: session-level behaviour — limits, error counting,
pipelining, STARTTLS, AUTH, long lines, greetings and statistics."""

from __future__ import annotations

import base64

import pytest

from hato.proto import smtpd as s
from tests.unit.proto.test_smtpd_support import (BANNER, HOST, KEYWORDS, Session, run,
                                                 run_all_ways)

ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"


def test_errors_count_to_421():
    lim = s.Limits(hard_error_limit=5)
    sess = run_all_ways(b"EHLO c\r\n" + b"XYZ\r\n" * 4 + b"MAIL FROM\r\nNOOP\r\n", lim)
    assert sess.replies[-2:] == ["501 5.5.4 Syntax: MAIL FROM:<address>",
                                 f"421 4.7.0 {HOST} Error: too many errors"]
    assert sess.conn.closed and sess.conn.error_count == 5
    closed = sess.events[-1]
    assert isinstance(closed, s.Closed) and closed.reason == s.REASON_ERRORS


def test_421_sent_before_reading_next_command():
    # Postfix checks the limit at the top of its command loop.
    lim = s.Limits(hard_error_limit=2)
    sess = run([b"XYZ\r\n", b"XYZ\r\n"], lim)
    assert sess.replies[-1] == f"421 4.7.0 {HOST} Error: too many errors"


def test_service_rejections_count_as_errors():
    def policy(conn, ev):
        if isinstance(ev, s.RcptTo):
            conn.reject(s.Reply(550, "5.1.1", "User unknown"))
        else:
            conn.accept(ehlo_keywords=KEYWORDS if isinstance(ev, s.Helo) else None)
    lim = s.Limits(hard_error_limit=3)
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\n" + b"RCPT TO:<x@y>\r\n" * 4, lim,
                        policy=policy)
    assert sess.replies[-4:] == ["550 5.1.1 User unknown"] * 3 + [
        f"421 4.7.0 {HOST} Error: too many errors"]
    assert sess.conn.counts["rcpt"] == [0, 3]


def test_error_count_resets_after_delivery():
    sess = run_all_ways(b"XYZ\r\nXYZ\r\n" + ENVELOPE + b"DATA\r\n.\r\n")
    assert sess.conn.error_count == 0


def test_junk_limit():
    lim = s.Limits(junk_command_limit=3)
    sess = run_all_ways(b"EHLO c\r\n" + b"NOOP\r\n" * 4 + b"RSET\r\nVRFY x\r\n", lim)
    assert sess.conn.junk_count == 7
    assert sess.conn.error_count == 3  # Postfix's junk_cmds++ > 3: commands 5..7
    assert sess.codes()[-3:] == ["250 2.0.0", "250 2.0.0", "252 2.0.0"]


def test_junk_limit_reaches_hard_limit_as_postfix():
    # junk 5, hard 5 (limits/junk-noop-limit): after EHLO, NOOPs 1-10 get
    # 250 (6-10 are errors), the 421 comes before NOOP 11 is read.
    lim = s.Limits(junk_command_limit=5, hard_error_limit=5)
    sess = run_all_ways(b"EHLO c\r\n" + b"NOOP\r\n" * 11, lim)
    assert sess.codes()[-11:] == ["250 2.0.0"] * 10 + ["421 4.7.0"]
    assert sess.conn.closed and sess.events[-1].reason == s.REASON_ERRORS


def test_recipient_limit_with_1000_rcpts():
    lim = s.Limits(recipient_limit=1000, recipient_overshoot_limit=5, hard_error_limit=1000)
    rcpts = b"".join(b"RCPT TO:<u%d@d>\r\n" % i for i in range(1010))
    sess = run(b"EHLO c\r\nMAIL FROM:<a@b>\r\n" + rcpts, lim)
    codes = sess.codes()[2:]
    assert codes[:1000] == ["250 2.1.5"] * 1000
    assert codes[1000:] == ["452 4.5.3"] * 10
    assert sess.replies[-1] == "452 4.5.3 Error: too many recipients"
    assert sess.conn.recipients == 1000
    assert sess.conn.error_count == 5  # only past the overshoot limit
    # Postfix's rcpt_cmd() returns 0 after the 452 within the overshoot
    # limit: those count as successes in the disconnect counters.
    assert sess.conn.counts["rcpt"] == [1005, 1010]


def test_refused_rcpt_over_the_limit_counts_as_success():
    lim = s.Limits(recipient_limit=2)
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\n" + b"RCPT TO:<u@d>\r\n" * 3, lim)
    assert sess.codes()[-1] == "452 4.5.3"
    assert sess.conn.counts["rcpt"] == [3, 3]
    assert sess.conn.error_count == 0
    assert sess.conn.disconnect_stats() == "ehlo=1 mail=1 rcpt=3 commands=5"


def test_recipient_limit_resets_per_transaction():
    lim = s.Limits(recipient_limit=1)
    sess = run_all_ways(ENVELOPE + b"RCPT TO:<e@f>\r\nRSET\r\nMAIL FROM:<a@b>\r\nRCPT TO:<e@f>\r\n",
                        lim)
    assert sess.codes()[-4:] == ["452 4.5.3", "250 2.0.0", "250 2.1.0", "250 2.1.5"]


# ---------------------------------------------------------------- lines


@pytest.mark.parametrize("size", [10_000, 1_000_000])
def test_long_command_line_bounded_memory(size):
    sess = Session()
    sess.feed(b"EHLO c\r\n")
    line = b"NOOP " + b"x" * size + b"\r\n"
    peak = 0
    for i in range(0, len(line), 4096):
        sess.conn.receive_data(line[i:i + 4096])
        peak = max(peak, len(sess.conn._in))
        sess.pump()
    assert peak <= s.Limits().line_length_limit + 4096
    sess.feed(b"NOOP\r\n")
    assert sess.codes()[-2:] == ["250 2.0.0", "250 2.0.0"]


def test_long_mail_line_is_truncated_like_postfix():
    addr = b"x" * 3000
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<" + addr + b"@x>\r\nNOOP\r\n")
    assert sess.replies[-2:] == ["501 5.1.7 Bad sender address syntax", "250 2.0.0 Ok"]


def test_long_line_whole_and_split_same():
    sess = run_all_ways(b"EHLO c\r\nNOOP " + b"y" * 5000 + b"\r\nRSET\r\n")
    assert sess.codes()[-2:] == ["250 2.0.0", "250 2.0.0"]


def test_long_lines_are_flagged_on_their_event():
    sess = run_all_ways(b"EHLO c\r\n" + b"X" * 10_000 + b"\r\nNOOP " + b"y" * 3000 +
                        b"\r\nNOOP\r\nMAIL FROM:<" + b"a" * 2100 + b"@b>\r\n")
    ev = [e for e in sess.events if not isinstance(e, s.Helo)]
    assert [type(e) for e in ev] == [s.ProtocolError, s.Simple, s.Simple, s.ProtocolError]
    assert ev[0].long_line == (2048, b"X" * s.LONG_LINE_KEEP)
    assert ev[1].long_line == (2048, (b"NOOP " + b"y" * 3000)[:s.LONG_LINE_KEEP])
    assert ev[2].long_line is None
    assert ev[3].long_line is not None and ev[3].long_line[1].startswith(b"MAIL FROM:<aaa")
    assert sess.events[0].long_line is None


def test_long_line_boundary_as_postfix():
    # smtp_get() reads at most the limit: 19 bytes + CRLF fit (it repairs a
    # CR read last), 20 bytes + CRLF do not (the 20th byte is no LF).
    lim = s.Limits(line_length_limit=20)
    line = b"NOOP " + b"y" * 14
    sess = run_all_ways(b"EHLO c\r\n" + line + b"\r\n" + line + b"z\r\n", lim)
    assert sess.codes()[-2:] == ["250 2.0.0", "250 2.0.0"]
    assert sess.events[-2].long_line is None
    assert sess.events[-1].long_line == (20, line + b"z")


def test_long_auth_response_is_flagged_with_the_sasl_limit():
    lim = s.Limits(sasl_response_limit=100)
    sess = run_all_ways([b"EHLO c\r\nAUTH PLAIN\r\n", b"A" * 500 + b"\r\nNOOP\r\n"], lim,
                        policy=auth_policy)
    err = [e for e in sess.events if isinstance(e, s.ProtocolError)]
    assert err[-1].long_line == (100, b"A" * s.LONG_LINE_KEEP)


def test_protocol_error_carries_the_line_as_typed():
    cases = {b"get / http/1.1": b"get / http/1.1",
             b"\x01\x1b[2Jbogus \x07bell": b"\x01\x1b[2Jbogus \x07bell",
             b"Subject: hello": b"Subject: hello",
             b"GET /x\0HTTP": b"GET /x",  # a NUL ends the line, as a C string
             b"GET /" + b"a" * 500: b"GET /" + b"a" * (s.LINE_KEEP - 5)}
    for line, kept in cases.items():
        sess = run_all_ways(b"EHLO c\r\n" + line + b"\r\n")
        err = sess.events[-2]
        assert isinstance(err, s.ProtocolError) and err.reply.code == 221
        assert err.line == kept, line
    sess = run_all_ways(b"EHLO c\r\nXYZZY  plugh\r\nMAIL FROM\r\n")
    assert [e.line for e in sess.events[1:]] == [b"XYZZY  plugh", b"MAIL FROM"]


def test_nul_bytes():
    sess = run_all_ways(b"EHLO c\r\n\0\r\nNO\0OP\r\nNOOP \0x\r\n")
    assert sess.replies[-3:] == ["500 5.5.2 Error: bad syntax",
                                 "500 5.5.2 Error: command not recognized", "250 2.0.0 Ok"]


def test_invalid_utf8_without_smtputf8_enable():
    sess = run_all_ways(b"EHLO c\r\nNOOP \xff\r\n", s.Limits(smtputf8_enable=False))
    assert sess.replies[-1] == "250 2.0.0 Ok"


@pytest.mark.parametrize("cmd", [b"GET / HTTP/1.0", b"POST /x HTTP/1.1", b"CONNECT h:25",
                                 b"get /", b"<html>", b"1234"])
def test_http_and_bogus_commands_close(cmd):
    sess = run_all_ways(b"EHLO c\r\n" + cmd + b"\r\nNOOP\r\n")
    assert sess.replies[-1] == "221 2.7.0 Error: I can break rules, too. Goodbye."
    assert sess.conn.closed and sess.events[-1].reason == s.REASON_FORBIDDEN
    assert sess.conn.counts["unknown"] == [0, 1]


# ------------------------------------------------------------- pipelining


def test_pipelined_flag_and_input_pending():
    sess = run(b"EHLO c\r\nNOOP\r\nNOOP\r\n")
    noops = [e for e in sess.events if isinstance(e, s.Simple)]
    assert [e.pipelined for e in noops] == [True, False]
    assert next(e for e in sess.events if isinstance(e, s.Helo)).pipelined
    assert sess.conn.improper_pipelining == ("EHLO", b"NOOP\r\nNOOP\r\n")
    assert not sess.conn.input_pending()


def test_improper_pipelining_recorded_but_allowed_by_default():
    sess = run(b"HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")
    assert sess.codes()[-2:] == ["250 2.1.0", "250 2.1.5"]
    assert sess.conn.improper_pipelining == ("HELO", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n")


FORBID = s.Limits(forbid_unauth_pipelining=True)


@pytest.mark.parametrize("writes,ok", [
    ([b"HELO x\r\nNOOP\r\n"], 0),
    ([b"EHLO x\r\nNOOP\r\n"], 0),
    ([b"EHLO x\r\n", b"NOOP\r\nNOOP\r\n"], 1),
    ([b"EHLO x\r\n", b"VRFY a\r\nNOOP\r\n"], 1),
    ([b"HELO x\r\n", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"], 1),
    ([b"HELO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"BDAT 1\r\nx"], 3),
])
def test_forbid_unauth_pipelining_closes(writes, ok):
    sess = run(writes, FORBID)
    assert sess.replies[-1] == "554 5.5.0 Error: SMTP protocol synchronization"
    assert len(sess.codes()) - 1 == ok
    assert sess.conn.closed and sess.events[-1].reason == s.REASON_SYNC


@pytest.mark.parametrize("writes", [
    [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", b"x\r\n.\r\nNOOP\r\n"],
    [b"EHLO x\r\n", b"RSET\r\nNOOP\r\n"],
    [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\nNOOP\r\n"],
    [b"EHLO x\r\n", b"XYZ\r\nNOOP\r\n"],
])
def test_forbid_unauth_pipelining_allows_pipelining_clients(writes):
    sess = run(writes, FORBID)
    assert not sess.conn.closed
    assert "554" not in " ".join(sess.codes())


def test_forbid_unauth_pipelining_before_greeting():
    conn = s.ServerConnection(FORBID, hostname=HOST)
    conn.receive_data(b"EHLO x\r\n")
    conn.greet(BANNER)
    assert conn.data_to_send() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
    assert isinstance(conn.next_event(), s.Closed)


def test_input_before_greeting_is_processed_after_it():
    conn = s.ServerConnection(s.Limits(), hostname=HOST)
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() is s.NEED_DATA
    conn.greet(BANNER)
    assert isinstance(conn.next_event(), s.Simple)
    assert conn.data_to_send() == b"220 mx.example.com ESMTP hato\r\n250 2.0.0 Ok\r\n"


# ------------------------------------------------------------- greeting/close


def test_421_greeting_closes():
    conn = s.ServerConnection(s.Limits(), hostname=HOST)
    conn.greet(s.Reply(421, "", f"{HOST} Service unavailable"))
    assert conn.data_to_send() == f"421 {HOST} Service unavailable\r\n".encode()
    ev = conn.next_event()
    assert isinstance(ev, s.Closed) and ev.reason == s.REASON_GREETING
    assert conn.closed and conn.state is s.State.CLOSED


def test_554_greeting_keeps_session_open():
    # Postfix with smtpd_delay_reject=no: the refusal is the greeting, then
    # every command is refused by the service until QUIT.
    conn = s.ServerConnection(s.Limits(), hostname=HOST)
    conn.greet(s.Reply(554, "5.7.1", "<h[1.2.3.4]>: Client host rejected: Access denied"))
    conn.receive_data(b"EHLO c\r\nQUIT\r\n")
    ev = conn.next_event()
    assert isinstance(ev, s.Helo)
    conn.reject(s.Reply(503, "5.7.0", "Error: access denied for h[1.2.3.4]"))
    assert isinstance(conn.next_event(), s.Simple)
    assert conn.data_to_send().endswith(b"503 5.7.0 Error: access denied for h[1.2.3.4]\r\n"
                                        b"221 2.0.0 Bye\r\n")


def test_core_errors_that_close_emit_protocol_error_first():
    sess = run(b"EHLO c\r\nGET / HTTP/1.0\r\n")
    assert isinstance(sess.events[-2], s.ProtocolError)
    assert sess.events[-2].reply.code == 221 and sess.events[-2].verb == "GET"


def test_answering_a_core_answered_message_end_is_ignored():
    def policy(conn, ev):
        if isinstance(ev, s.MessageEnd):
            conn.reject(s.Reply(552, "5.3.4", "Error: message file too big"))
        elif isinstance(ev, s.Helo):
            conn.accept(ehlo_keywords=KEYWORDS)
        else:
            conn.accept()
    sess = Session(s.Limits(message_size_limit=5), policy)
    sess.feed(ENVELOPE + b"DATA\r\n0123456789\r\n.\r\n")
    for ev in sess.events:
        if isinstance(ev, s.MessageEnd):
            sess.policy(sess.conn, ev)  # the driver skips it; a service might not
    sess.feed(b"NOOP\r\n")
    assert sess.replies[-2:] == ["552 5.3.4 Error: message file too big", "250 2.0.0 Ok"]
    assert sess.conn.error_count == 1


def test_reject_with_close():
    def policy(conn, ev):
        if isinstance(ev, s.MailFrom):
            conn.reject(s.Reply(421, "4.7.0", f"{HOST} Error: too many connections"), close=True)
        else:
            conn.accept()
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\nNOOP\r\n", policy=policy)
    assert sess.replies[-1] == f"421 4.7.0 {HOST} Error: too many connections"
    assert sess.events[-1].reason == s.REASON_REJECTED


def test_eof_gives_closed_with_last_command():
    sess = run(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", eof=True)
    ev = sess.events[-1]
    assert isinstance(ev, s.Closed) and ev.reason == s.REASON_EOF and ev.verb == "DATA"
    assert sess.conn.last_command == "DATA"


def test_quit_and_statistics():
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x>\r\nDATA\r\nXYZ\r\nQUIT\r\n",
                        policy=lambda c, e: c.reject(s.Reply(550, "5.1.1", "No"))
                        if isinstance(e, s.RcptTo) else c.accept())
    assert sess.events[-1] == s.Closed(verb="QUIT", reason="")
    assert sess.conn.disconnect_stats() == \
        "ehlo=1 mail=1 rcpt=0/1 data=0/1 unknown=0/1 quit=1 commands=3/6"


def test_api_misuse_raises():
    conn = s.ServerConnection(s.Limits(), hostname=HOST)
    conn.greet(BANNER)
    with pytest.raises(s.ProtocolStateError):
        conn.accept()
    with pytest.raises(s.ProtocolStateError):
        conn.starttls_done()
    with pytest.raises(s.ProtocolStateError):
        conn.greet(BANNER)


def test_paused_until_answered():
    conn = s.ServerConnection(s.Limits(), hostname=HOST)
    conn.greet(BANNER)
    conn.receive_data(b"EHLO c\r\nNOOP\r\n")
    assert isinstance(conn.next_event(), s.Helo)
    assert conn.next_event() is s.PAUSED
    assert conn.input_pending()
    conn.accept(ehlo_keywords=["PIPELINING"])
    assert isinstance(conn.next_event(), s.Simple)
    assert conn.next_event() is s.NEED_DATA


def test_enforce_tls():
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\nNOOP\r\n", s.Limits(enforce_tls=True))
    assert sess.replies[-2:] == ["530 5.7.0 Must issue a STARTTLS command first", "250 2.0.0 Ok"]


# ---------------------------------------------------------------- STARTTLS


def test_starttls_discards_injected_commands():
    sess = Session()
    sess.feed(b"EHLO c\r\n")
    sess.conn.receive_data(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n")
    ev = sess.conn.next_event()
    assert isinstance(ev, s.StartTls)
    sess.conn.accept()
    assert sess.conn.next_event() is s.PAUSED
    assert sess.conn.state is s.State.STARTTLS
    sess.conn.receive_data(b"RCPT TO:<evil@y>\r\n")  # still plaintext: dropped
    assert sess.conn.data_to_send() == b"220 2.0.0 Ready to start TLS\r\n"
    sess.conn.starttls_done()
    assert sess.conn.tls_active and sess.conn.helo_name is None
    assert sess.conn.state is s.State.READY
    assert sess.conn.next_event() is s.NEED_DATA
    sess.feed(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n")
    assert not any(isinstance(e, s.MailFrom) and e.address == "evil@x" for e in sess.events)
    assert sess.replies[-2:] == ["554 5.5.1 Error: TLS already active", "250 2.1.0 Ok"]
    assert "STARTTLS" in sess.conn.offered


def test_starttls_resets_ehlo_state():
    sess = run([b"EHLO c\r\n", b"STARTTLS\r\n", b"MAIL FROM:<a@b>\r\n"],
               s.Limits(helo_required=True))
    assert sess.replies[-1] == "503 5.5.1 Error: send HELO/EHLO first"


# -------------------------------------------------------------------- AUTH


def auth_policy(conn, ev, log=[]):  # noqa: B006 - per-test list passed in below
    if isinstance(ev, s.Helo):
        conn.accept(ehlo_keywords=KEYWORDS)
    elif isinstance(ev, s.Auth):
        if ev.initial is None:
            conn.reply(s.Reply(334, "", ""))
        else:
            conn.auth_done(base64.b64decode(ev.initial) == b"\0u\0p")
    elif isinstance(ev, s.AuthResponse):
        if ev.line == "*":
            conn.reject(s.Reply(501, "5.7.0", "Authentication aborted"))
        else:
            conn.auth_done(base64.b64decode(ev.line) == b"\0u\0p")
    else:
        conn.accept()


def test_auth_initial_response_and_already_authenticated():
    good = base64.b64encode(b"\0u\0p")
    sess = run_all_ways(b"EHLO c\r\nAUTH PLAIN " + good + b"\r\nAUTH PLAIN\r\n", policy=auth_policy)
    assert sess.replies[-2:] == ["235 2.7.0 Authentication successful",
                                 "503 5.5.1 Error: already authenticated"]
    assert sess.conn.authenticated


def test_auth_challenge_response_cancel_and_failure():
    good = base64.b64encode(b"\0u\0p")
    bad = base64.b64encode(b"\0u\0x")
    sess = run_all_ways([b"EHLO c\r\nAUTH PLAIN\r\n", b"*\r\n", b"AUTH PLAIN\r\n", bad + b"\r\n",
                         b"AUTH PLAIN\r\n", good + b"\r\n", b"MAIL FROM:<a@b>\r\n"],
                        policy=auth_policy)
    assert sess.replies[-7:] == ["334 ", "501 5.7.0 Authentication aborted", "334 ",
                                 "535 5.7.8 Error: authentication failed: authentication failure",
                                 "334 ", "235 2.7.0 Authentication successful", "250 2.1.0 Ok"]
    responses = [e.line for e in sess.events if isinstance(e, s.AuthResponse)]
    assert responses == ["*", bad.decode(), good.decode()]
    assert sess.conn.counts["auth"] == [1, 3]
    assert sess.conn.error_count == 2


def test_auth_not_offered_and_before_helo():
    sess = run_all_ways(b"AUTH PLAIN\r\nHELO c\r\nAUTH PLAIN\r\n")
    assert sess.replies == ["503 5.5.1 Error: send HELO/EHLO first", f"250 {HOST}",
                            "503 5.5.1 Error: authentication not enabled"]


def test_auth_response_too_long():
    lim = s.Limits(sasl_response_limit=100)
    sess = run_all_ways([b"EHLO c\r\nAUTH PLAIN\r\n", b"A" * 500 + b"\r\nNOOP\r\n"], lim,
                        policy=auth_policy)
    assert sess.replies[-2:] == ["500 5.5.6 SASL response limit exceeded", "250 2.0.0 Ok"]

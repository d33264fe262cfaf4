"""SMTP server core: commands in every state, Postfix 3.7's reply texts,
MAIL/RCPT parameters and address syntax."""

from __future__ import annotations

import pytest

from hato.proto import smtpd as s
from tests.unit.proto.test_smtpd_support import HOST, run_all_ways

PREFIX = {
    "READY": b"",
    "HELO": b"EHLO c\r\n",
    "MAIL": b"EHLO c\r\nMAIL FROM:<a@b>\r\n",
    "RCPT": b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
    "BDAT": b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 1\r\nx",
}
STATE_OF = {"READY": s.State.READY, "HELO": s.State.HELO, "MAIL": s.State.MAIL,
            "RCPT": s.State.MAIL, "BDAT": s.State.BDAT}

#            command                 READY        HELO         MAIL         RCPT         BDAT
TABLE = [
    (b"HELO h\r\n",              ["250"] * 5),
    (b"EHLO h\r\n",              ["250"] * 5),
    (b"MAIL FROM:<a@b>\r\n",     ["250 2.1.0", "250 2.1.0", "503 5.5.1", "503 5.5.1", "503 5.5.1"]),
    (b"RCPT TO:<c@d>\r\n",       ["503 5.5.1", "503 5.5.1", "250 2.1.5", "250 2.1.5", "503 5.5.1"]),
    (b"DATA\r\n",                ["503 5.5.1", "503 5.5.1", "554 5.5.1", "354", "503 5.5.1"]),
    (b"BDAT 1 LAST\r\nx",        ["503 5.5.1", "503 5.5.1", "554 5.5.1", "250 2.0.0", "250 2.0.0"]),
    (b"RSET\r\n",                ["250 2.0.0"] * 5),
    (b"NOOP\r\n",                ["250 2.0.0"] * 5),
    (b"QUIT\r\n",                ["221 2.0.0"] * 5),
    (b"VRFY u\r\n",              ["252 2.0.0"] * 5),
    (b"ETRN d\r\n",              ["250", "250", "503", "503", "503"]),
    (b"STARTTLS\r\n",            ["502 5.5.1", "220 2.0.0", "503 5.5.1", "503 5.5.1", "503 5.5.1"]),
    (b"AUTH PLAIN\r\n",          ["503 5.5.1", "235 2.7.0", "503 5.5.1", "503 5.5.1", "503 5.5.1"]),
    (b"XCLIENT NAME=x\r\n",      ["550 5.7.0"] * 5),
    (b"XFORWARD NAME=x\r\n",     ["550 5.7.0"] * 5),
    (b"FOO\r\n",                 ["500 5.5.2"] * 5),
    (b"GET / HTTP/1.0\r\n",      ["221 2.7.0"] * 5),
    (b"\r\n",                    ["500 5.5.2"] * 5),
]
CASES = [(state, cmd, expected[i]) for cmd, expected in TABLE
         for i, state in enumerate(PREFIX)]


@pytest.mark.parametrize("state,cmd,expected", CASES,
                         ids=[f"{st}-{c[:8].decode().strip()}" for st, c, _ in CASES])
def test_command_in_state(state, cmd, expected):
    pre = run_all_ways(PREFIX[state])
    assert pre.conn.state is STATE_OF[state]
    n = len(pre.codes())
    sess = run_all_ways(PREFIX[state] + cmd)
    assert sess.codes()[n:] == [expected]


def test_helo_required_state_table():
    lim = s.Limits(helo_required=True)
    sess = run_all_ways(b"MAIL FROM:<a@b>\r\nETRN x\r\nRCPT TO:<a@b>\r\nHELO x\r\nMAIL FROM:<a@b>\r\n",
                        lim)
    assert sess.replies == ["503 5.5.1 Error: send HELO/EHLO first",
                            "503 Error: send HELO/EHLO first",
                            "503 5.5.1 Error: need MAIL command",
                            f"250 {HOST}", "250 2.1.0 Ok"]


TEXTS = [
    (b"MAIL FROM\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    (b"MAIL TO:<a@b>\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    (b"MAIL FROM:\r\n", "501 5.5.4 Syntax: MAIL FROM:<address>"),
    (b"MAIL FROM:<a b@c>\r\n", "501 5.1.7 Bad sender address syntax"),
    (b"MAIL FROM:<a@b\r\n", "501 5.1.7 Bad sender address syntax"),
    (b"MAIL FROM:<a@b>x\r\n", "501 5.1.7 Bad sender address syntax"),
    (b"MAIL FROM:<a@b> SIZE=99999999999\r\n", "552 5.3.4 Message size exceeds fixed limit"),
    (b"MAIL FROM:<a@b> SIZE=x\r\n", "501 5.5.4 Bad message size syntax"),
    (b"MAIL FROM:<a@b> SIZE=\r\n", "501 5.5.4 Bad message size syntax"),
    (b"MAIL FROM:<a@b> FOO=1\r\n", "555 5.5.4 Unsupported option: FOO=1"),
    (b"MAIL FROM:<a@b> BODY=FOO\r\n", "555 5.5.4 Unsupported option: BODY=FOO"),
    (b"MAIL FROM:<a@b> BODY=BINARYMIME\r\n", "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
    (b"MAIL FROM:<a@b> RET=X\r\n", "501 5.5.4 Bad RET parameter syntax"),
    (b"MAIL FROM:<a@b> RET=FULL RET=HDRS\r\n", "501 5.5.4 Bad RET parameter syntax"),
    (b"MAIL FROM:<a@b> ENVID=\r\n", "501 5.5.4 Bad ENVID parameter syntax"),
    (b"MAIL FROM:<a@b> ENVID=a ENVID=b\r\n", "501 5.5.4 Bad ENVID parameter syntax"),
    (b"MAIL FROM:<a@b> ENVID=a+zz\r\n", "501 5.5.4 Bad ENVID parameter syntax"),
    (b"MAIL FROM:<a@b> AUTH=<> AUTH=<>\r\n", "503 5.5.4 Error: multiple AUTH= options"),
    (b"RCPT TO:<c@d>\r\n", "503 5.5.1 Error: need MAIL command"),
    (b"DATA\r\n", "503 5.5.1 Error: need RCPT command"),
    (b"VRFY\r\n", "501 5.5.4 Syntax: VRFY address [SMTPUTF8]"),
    (b"ETRN\r\n", "500 Syntax: ETRN domain"),
    (b"HELO\r\n", "501 Syntax: HELO hostname"),
    (b"EHLO\r\n", "501 Syntax: EHLO hostname"),
    (b"RSET x\r\n", "501 5.5.4 Syntax: RSET"),
    (b"STARTTLS x\r\n", "501 5.5.4 Syntax: STARTTLS"),
    (b"AUTH\r\n", "501 5.5.4 Syntax: AUTH mechanism"),
    (b"XYZZY\r\n", "500 5.5.2 Error: command not recognized"),
    (b"\r\n", "500 5.5.2 Error: bad syntax"),
    (b"   \r\n", "500 5.5.2 Error: bad syntax"),
    (b"\0EHLO x\r\n", "500 5.5.2 Error: bad syntax"),
    (b"NO\0OP\r\n", "500 5.5.2 Error: command not recognized"),
    (b"NOOP \xfc\r\n", "500 5.5.2 Error: bad UTF-8 syntax"),
    (b"NOOP x y\r\n", "250 2.0.0 Ok"),
    (b"QUIT now\r\n", "221 2.0.0 Bye"),
    (b"GET / HTTP/1.1\r\n", "221 2.7.0 Error: I can break rules, too. Goodbye."),
    (b"post /x\r\n", "221 2.7.0 Error: I can break rules, too. Goodbye."),
    (b"CONNECT a:25\r\n", "221 2.7.0 Error: I can break rules, too. Goodbye."),
    (b".\r\n", "221 2.7.0 Error: I can break rules, too. Goodbye."),
]


@pytest.mark.parametrize("cmd,reply", TEXTS, ids=[t[0].decode("latin1").strip() or "empty"
                                                   for t in TEXTS])
def test_postfix_texts_after_ehlo(cmd, reply):
    sess = run_all_ways(b"EHLO c\r\n" + cmd)
    assert sess.replies[-1] == reply


TRANSACTION_TEXTS = [
    (b"MAIL FROM:<a@b>\r\n", "503 5.5.1 Error: nested MAIL command"),
    (b"DATA\r\n", "554 5.5.1 Error: no valid recipients"),
    (b"DATA x\r\n", "554 5.5.1 Error: no valid recipients"),
    (b"RCPT TO\r\n", "501 5.5.4 Syntax: RCPT TO:<address>"),
    (b"RCPT TO:\r\n", "501 5.5.4 Syntax: RCPT TO:<address>"),
    (b"RCPT TO:<>\r\n", "501 5.1.3 Bad recipient address syntax"),
    (b"RCPT TO:<a@b\r\n", "501 5.1.3 Bad recipient address syntax"),
    (b"RCPT TO:<a@>\r\n", "501 5.1.3 Bad recipient address syntax"),
    (b"RCPT TO:<c@d> NOTIFY=NEVER,SUCCESS\r\n", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    (b"RCPT TO:<c@d> NOTIFY=FOO\r\n", "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    (b"RCPT TO:<c@d> NOTIFY=SUCCESS NOTIFY=DELAY\r\n",
     "501 5.5.4 Error: Bad NOTIFY parameter syntax"),
    (b"RCPT TO:<c@d> ORCPT=foo\r\n", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    (b"RCPT TO:<c@d> ORCPT=rfc822;a@b ORCPT=rfc822;c@d\r\n",
     "501 5.5.4 Error: Bad ORCPT parameter syntax"),
    (b"RCPT TO:<c@d> FOO=bar\r\n", "555 5.5.4 Unsupported option: FOO=bar"),
    (b"RCPT TO:c@d SIZE=1\r\n", "555 5.5.4 Unsupported option: SIZE=1"),
    (b"ETRN x\r\n", "503 Error: MAIL transaction in progress"),
    (b"STARTTLS\r\n", "503 5.5.1 Error: MAIL transaction in progress"),
    (b"AUTH PLAIN\r\n", "503 5.5.1 Error: MAIL transaction in progress"),
]


@pytest.mark.parametrize("cmd,reply", TRANSACTION_TEXTS,
                         ids=[t[0].decode().strip() for t in TRANSACTION_TEXTS])
def test_postfix_texts_in_transaction(cmd, reply):
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\n" + cmd)
    assert sess.replies[-1] == reply


def test_bdat_texts():
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 0\r\nBDAT 2\r\nab"
                        b"BDAT 1 LAST\r\nxNOOP\r\nBDAT 1x\r\n")
    assert sess.replies[-5:] == ["551 5.7.1 Null BDAT request",
                                 "551 5.0.0 Discarded 2 bytes after earlier error",
                                 "551 5.0.0 Discarded 1 bytes after earlier error",
                                 "250 2.0.0 Ok",
                                 "521 5.5.4 Syntax: BDAT count [LAST]"]
    assert sess.conn.closed


def test_bdat_not_offered_closes():
    def policy(conn, ev):
        if isinstance(ev, s.Helo):
            conn.accept(ehlo_keywords=["PIPELINING", "SIZE 100"])
        else:
            conn.accept()
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 1 LAST\r\nx",
                        policy=policy)
    assert sess.replies[-1] == "521 5.5.1 Error: command not implemented"
    assert sess.conn.closed


def test_data_after_bdat_and_rcpt_after_bdat():
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nBDAT 2\r\nab"
                        b"DATA\r\nRCPT TO:<e@f>\r\nMAIL FROM:<a@b>\r\nBDAT 0 LAST\r\n")
    assert sess.replies[-5:] == ["250 2.0.0 Ok: 2 bytes", "503 5.5.1 Error: DATA after BDAT",
                                 "503 5.5.1 Error: RCPT after BDAT",
                                 "503 5.5.1 Error: MAIL after BDAT",
                                 "250 2.0.0 Ok: queued as 4XyZ"]


def test_dsn_disabled():
    def policy(conn, ev):
        if isinstance(ev, s.Helo):
            conn.accept(ehlo_keywords=["PIPELINING", "8BITMIME"])
        else:
            conn.accept()
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b> RET=FULL\r\nMAIL FROM:<a@b> SMTPUTF8\r\n"
                        b"MAIL FROM:<a@b> BODY=8BITMIME SIZE=10\r\n"
                        b"RCPT TO:<c@d> NOTIFY=NEVER\r\n", policy=policy)
    assert sess.replies[-4:] == ["501 5.7.1 DSN support is disabled",
                                 "555 5.5.4 Unsupported option: SMTPUTF8", "250 2.1.0 Ok",
                                 "501 5.7.1 DSN support is disabled"]


def test_params_after_helo_are_accepted():
    # Postfix accepts ESMTP parameters after HELO too.
    sess = run_all_ways(b"HELO c\r\nMAIL FROM:<a@b> SIZE=10 BODY=8BITMIME\r\n"
                        b"RCPT TO:<c@d> NOTIFY=NEVER\r\n")
    assert sess.codes()[-2:] == ["250 2.1.0", "250 2.1.5"]


def test_mail_parameters_parsed():
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b> size=10 body=8bitmime ret=hdrs envid=x+41y "
                        b"SMTPUTF8 AUTH=u+2Bv\r\n"
                        b"RCPT TO:<c@d> notify=success,delay orcpt=rfc822;x+2By@z\r\n")
    mail = next(e for e in sess.events if isinstance(e, s.MailFrom))
    assert (mail.address, mail.size, mail.body, mail.ret, mail.envid, mail.smtputf8,
            mail.auth) == ("a@b", 10, "8BITMIME", "HDRS", "xAy", True, "u+v")
    rcpt = next(e for e in sess.events if isinstance(e, s.RcptTo))
    assert rcpt.notify == {"SUCCESS", "DELAY"}
    assert rcpt.orcpt == "rfc822;x+y@z"
    assert sess.conn.mail_from == mail and sess.conn.recipients == 1


def test_duplicate_size_and_body_last_wins():
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b> SIZE=1 SIZE=2 BODY=8BITMIME BODY=7BIT\r\n")
    mail = next(e for e in sess.events if isinstance(e, s.MailFrom))
    assert (mail.size, mail.body) == (2, "7BIT")


ADDRESSES = [
    (b"<a@b>", "a@b"),
    (b" <a@b>", "a@b"),
    (b"a@b", "a@b"),
    (b"<@r1,@r2:u@c>", "u@c"),
    (b'<"a b"@c>', '"a b"@c'),
    (b"<u@[1.2.3.4]>", "u@[1.2.3.4]"),
    (b"<u@[IPv6:2001:db8::1]>", "u@[IPv6:2001:db8::1]"),
    (b"<postmaster>", "postmaster"),
    ("<j\u00f6rg@client.test>".encode(), "j\u00f6rg@client.test"),
    (b"<a.b+c@d-e.f>", "a.b+c@d-e.f"),
    # Postfix tolerates redundant brackets and keeps a routed local part
    # (the relay restrictions judge it).
    (b"<<a@client.test>>", "a@client.test"),
    (b"<a@b@c.test>", "a@b@c.test"),
    (b"<a@b.c.>", "a@b.c."),
]


@pytest.mark.parametrize("path,address", ADDRESSES)
def test_recipient_address_forms(path, address):
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:" + path + b"\r\n")
    assert sess.codes()[-1] == "250 2.1.5"
    assert next(e for e in sess.events if isinstance(e, s.RcptTo)).address == address
    assert next(e for e in sess.events if isinstance(e, s.MailFrom)).address == ""


BAD = [b"<>", b"<a b@c>", b"<a@>", b"<@b>", b"<a@b>x", b"<a@b", b"a@b>",
       b'<"a@b>', b"<a@b,c@d>", b"<a@[1.2.3.4>", b"<a@b..c>", b"<(x)a@b>",
       # Postfix's valid_hostname() / valid_mailhost_literal()
       b"<a@-bad-.test>", b"<a@b-.c>", b"<a@b_c!d>", b"<a@[foo]>", b"<a@[1.2.3]>",
       b"<a@1.2.3.4>", b"<@>", b"<a@b@>", b"<@a@b>", b"<<a@b>", b"<a@b>>",
       ("<a@" + "x" * 64 + ".test>").encode()]


@pytest.mark.parametrize("path", BAD)
def test_bad_recipient_addresses(path):
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:" + path + b"\r\n")
    assert sess.replies[-1] == "501 5.1.3 Bad recipient address syntax"


def test_strict_rfc821_envelopes():
    lim = s.Limits(strict_rfc821_envelopes=True)
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:a@b\r\nMAIL FROM: <a@b>\r\nRCPT TO:c@d\r\n", lim)
    assert sess.replies[-3:] == ["501 5.1.7 Bad sender address syntax", "250 2.1.0 Ok",
                                 "501 5.1.3 Bad recipient address syntax"]


def test_strict_smtputf8():
    lim = s.Limits(strict_smtputf8=True)
    u = "\u00fc".encode()
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<" + u + b"@b>\r\nMAIL FROM:<" + u +
                        b"@b> SMTPUTF8\r\nRCPT TO:<" + u + b"@d>\r\n", lim)
    assert sess.replies[-3:] == ["553 5.6.7 Must declare SMTPUTF8 to send unicode address",
                                 "250 2.1.0 Ok", "250 2.1.5 Ok"]


def test_unicode_address_without_smtputf8_is_accepted_by_default():
    sess = run_all_ways("EHLO c\r\nMAIL FROM:<\u00fc@b>\r\n".encode())
    assert sess.replies[-1] == "250 2.1.0 Ok"


def test_unicode_domain_needs_smtputf8():
    # Postfix's smtpd_check_addr(): a non-ASCII domain only with SMTPUTF8.
    u = "b\u00fccher.example".encode()
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@" + u + b">\r\nMAIL FROM:<a@" + u +
                        b"> SMTPUTF8\r\nRCPT TO:<x@" + u + b">\r\n")
    assert sess.replies[-3:] == ["501 5.1.7 Bad sender address syntax", "250 2.1.0 Ok",
                                 "250 2.1.5 Ok"]
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<x@" + u + b">\r\n")
    assert sess.replies[-1] == "501 5.1.3 Bad recipient address syntax"
    lim = s.Limits(smtputf8_enable=False)
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@" + u + b">\r\nMAIL FROM:<j\xc3\xb6rg@b>\r\n",
                        lim)
    assert sess.replies[-2:] == ["501 5.1.7 Bad sender address syntax", "250 2.1.0 Ok"]


def test_numeric_domain_only_with_resolve_numeric_domain():
    cmd = b"EHLO c\r\nMAIL FROM:<a@1.2.3.4>\r\n"
    assert run_all_ways(cmd).replies[-1] == "501 5.1.7 Bad sender address syntax"
    lim = s.Limits(resolve_numeric_domain=True)
    assert run_all_ways(cmd, lim).replies[-1] == "250 2.1.0 Ok"


def test_sender_address_forms_as_postfix():
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<<a@client.test>>\r\nRSET\r\n"
                        b"MAIL FROM:<a@b@c.test>\r\nRSET\r\nMAIL FROM:<a@b..c>\r\n"
                        b"MAIL FROM:<a@-bad-.test>\r\nMAIL FROM:<a@>\r\nMAIL FROM:<@>\r\n")
    assert sess.codes()[1:] == ["250 2.1.0", "250 2.0.0", "250 2.1.0", "250 2.0.0"] + \
        ["501 5.1.7"] * 4
    assert [e.address for e in sess.events if isinstance(e, s.MailFrom)] == [
        "a@client.test", "a@b@c.test"]


def test_long_envid_and_utf8_orcpt_accepted():
    # Postfix has no ENVID length limit; ORCPT=utf-8;... is RFC 6533 uxtext.
    sess = run_all_ways(b"EHLO c\r\nMAIL FROM:<a@b> ENVID=" + b"e" * 120 + b"\r\n"
                        b"RCPT TO:<c@d> ORCPT=utf-8;\xc3\xa4@example.com\r\n"
                        b"RCPT TO:<e@d> ORCPT=UTF-8;x\\x{E4}y@example.com\r\n"
                        b"RCPT TO:<f@d> ORCPT=utf-8;x\\x{zz}@example.com\r\n")
    assert sess.replies[-4:] == ["250 2.1.0 Ok", "250 2.1.5 Ok", "250 2.1.5 Ok",
                                "501 5.5.4 Error: Bad ORCPT parameter syntax"]
    assert next(e for e in sess.events if isinstance(e, s.MailFrom)).envid == "e" * 120
    assert [e.orcpt for e in sess.events if isinstance(e, s.RcptTo)] == [
        "utf-8;\u00e4@example.com", "UTF-8;x\u00e4y@example.com"]


@pytest.mark.parametrize("line", [b"Subject: hello", b"From: someone@client.test",
                                  b"X-Thing:value", b"To:x", b"Received:from x"])
def test_header_like_commands_close(line):
    sess = run_all_ways(line + b"\r\nNOOP\r\n")
    assert sess.replies[-1] == "221 2.7.0 Error: I can break rules, too. Goodbye."
    assert sess.conn.closed and sess.events[-1].reason == s.REASON_FORBIDDEN


@pytest.mark.parametrize("line", [b"XYZ a:b", b"FOO", b"A\x01B: x"])
def test_unknown_non_header_commands_stay_unknown(line):
    sess = run_all_ways(line + b"\r\n")
    assert sess.replies[-1] == "500 5.5.2 Error: command not recognized"
    assert not sess.conn.closed


def test_vrfy_argument_parsing():
    sess = run_all_ways(b"VRFY alice SMTPUTF8\r\nVRFY alice junk\r\nVRFY <>\r\n"
                        b"VRFY <a@-x>\r\nVRFY Alice <alice@d>\r\n")
    assert sess.replies == ["252 2.0.0 alice",
                            "501 5.1.3 Bad recipient address syntax",
                            "501 5.1.3 Bad recipient address syntax",
                            "501 5.1.3 Bad recipient address syntax", "252 2.0.0 <alice@d>"]
    vrfys = [e for e in sess.events if isinstance(e, s.Vrfy)]
    assert [(e.argument, e.smtputf8) for e in vrfys] == [("alice", True), ("<alice@d>", False)]
    sess = run_all_ways(b"VRFY alice SMTPUTF8\r\n", s.Limits(smtputf8_enable=False))
    assert sess.replies[-1] == "501 5.1.3 Bad recipient address syntax"


def test_vrfy_disabled_and_default_reply():
    sess = run_all_ways(b"EHLO c\r\nVRFY x\r\n", s.Limits(disable_vrfy=True))
    assert sess.replies[-1] == "502 5.5.1 VRFY command is disabled"
    sess = run_all_ways(b"EHLO c\r\nVRFY <u@d>\r\n")
    assert sess.replies[-1] == "252 2.0.0 <u@d>"
    assert next(e for e in sess.events if isinstance(e, s.Vrfy)).argument == "<u@d>"


def test_ehlo_default_keywords_and_helo_reply():
    sess = run_all_ways(b"EHLO c\r\nHELO d e\r\n", policy=lambda c, e: c.accept())
    assert sess.replies == [f"250-{HOST}", "250-PIPELINING", "250-SIZE 10240000", "250-VRFY",
                            "250-ETRN", "250-ENHANCEDSTATUSCODES", "250-8BITMIME", "250-DSN",
                            "250-SMTPUTF8", "250 CHUNKING", f"250 {HOST}"]
    assert sess.conn.helo_name == "d e" and not sess.conn.esmtp


def test_enhanced_status_codes_off():
    sess = run_all_ways(b"EHLO c\r\nRSET\r\n", policy=lambda c, e: (
        setattr(c, "enhanced_status_codes", False), c.accept()))
    assert sess.replies[-1] == "250 Ok"


def test_reply_render():
    assert s.Reply(250, "2.0.0", "Ok").render() == b"250 2.0.0 Ok\r\n"
    assert s.Reply(250, "2.0.0", "Ok").render(enhanced=False) == b"250 Ok\r\n"
    assert s.Reply(250, "", "a\nb").render() == b"250-a\r\n250 b\r\n"
    assert s.Reply(550, "5.1.1", "a\nb").render() == b"550-5.1.1 a\r\n550 5.1.1 b\r\n"


def test_xclient_and_xforward():
    seen = []

    def policy(conn, ev):
        seen.append(ev)
        if isinstance(ev, s.Helo) and ev.extended:
            conn.accept(ehlo_keywords=["PIPELINING", "XCLIENT NAME ADDR", "XFORWARD NAME"])
        else:
            conn.accept()
    sess = run_all_ways(b"EHLO c\r\nXFORWARD NAME=spike.porcupine.org\r\n"
                        b"XCLIENT NAME=a+2Eb ADDR=1.2.3.4\r\nMAIL FROM:<a@b>\r\n"
                        b"EHLO d\r\nXCLIENT FOO=1\r\nXCLIENT\r\nXCLIENT NAME\r\n"
                        b"MAIL FROM:<a@b>\r\nXCLIENT NAME=x\r\n", policy=policy)
    assert sess.replies[4:] == ["250 2.0.0 Ok", f"220 {HOST} ESMTP hato",
                                 "250 2.1.0 Ok", f"250-{HOST}", "250-PIPELINING",
                                 "250-XCLIENT NAME ADDR", "250 XFORWARD NAME",
                                 "501 5.5.4 Bad XCLIENT attribute name: FOO",
                                 "501 5.5.4 Syntax: XCLIENT attribute=value...",
                                 "501 5.5.4 Error: attribute=value expected",
                                 "250 2.1.0 Ok",
                                 "503 5.5.1 Error: MAIL transaction in progress"]
    xc = next(e for e in sess.events if isinstance(e, s.Xclient))
    assert xc.attributes == {"NAME": "a.b", "ADDR": "1.2.3.4"}

"""postscreen's built-in SMTP engine: replies and log lines as Debian's
Postfix 3.7 postscreen gives them (established with a private Postfix, see
tests/differential/test_postscreen_engine.py); every dialog is played with
one read per client write, then byte by byte and in random pieces where the
result cannot depend on the split (the pipelining test looks at what came in
one read)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.policy.address import log_form
from hato.proto import postscreen_smtp as ps
from hato.proto.smtpd import Reply

HOST = "mx.hato.test"
CLIENT = "[127.0.1.10]:57785"
BANNER = "220 mx.hato.test ESMTP Postfix"
KEYWORDS = ("SIZE 10240000", "VRFY", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
            "SMTPUTF8", "CHUNKING")
EHLO_REPLY = ("250-mx.hato.test\r\n250-SIZE 10240000\r\n250-VRFY\r\n250-ETRN\r\n"
              "250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-DSN\r\n250-SMTPUTF8\r\n"
              "250 CHUNKING\r\n")
GREETING = BANNER + "\r\n"
ALL = {"pipelining": "enforce", "non_smtp": "enforce", "bare_newline": "enforce"}
DENYLIST = ps.Verdict("denylist", "enforce", Reply(550, "5.3.2", "Service currently unavailable"))
PREGREET = ps.Verdict("pregreet", "enforce", Reply(550, "5.5.1", "Protocol error"))


def config(**kw) -> ps.EngineConfig:
    kw.setdefault("log_address", log_form)
    return ps.EngineConfig(hostname=HOST, ehlo_keywords=KEYWORDS, **kw)


def play(chunks, *, banner=BANNER, reject=None, final_reply=None, **kw):
    eng = ps.PostscreenSmtp(config(**kw), CLIENT, banner_line=banner, reject=reject,
                            final_reply=final_reply)
    out = eng.data_to_send()
    for chunk in chunks:
        eng.receive_data(chunk)
        out += eng.data_to_send()
    return eng, out.decode("utf-8", "surrogateescape"), eng.logs()


def play_split(data: bytes, cuts, **kw):
    pieces, last = [], 0
    for c in sorted(set(cuts)):
        pieces.append(data[last:c])
        last = c
    pieces.append(data[last:])
    return play([p for p in pieces if p], **kw)


def noqueue(reply: str, rcpt="c@d", sender="a@b", proto="ESMTP", helo="x") -> str:
    return (f"NOQUEUE: reject: RCPT from {CLIENT}: {reply}; from=<{sender}>, to=<{rcpt}>, "
            f"proto={proto}, helo=<{helo}>")


# -- Dialogs observed on Debian Postfix 3.7.11 -------------------------------------------------
# (name, engine settings, client writes, server output after the banner, log lines)

POLITE = [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"RCPT TO:<e@f>\r\n",
          b"QUIT\r\n"]

CASES = [
    ("polite", ALL, POLITE,
     EHLO_REPLY + "250 2.1.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n"
     "450 4.3.2 Service currently unavailable\r\n221 2.0.0 Bye\r\n",
     [noqueue("450 4.3.2 Service currently unavailable"),
      noqueue("450 4.3.2 Service currently unavailable", rcpt="e@f")]),
    ("non_smtp_get_enforce", ALL,
     [b"GET / HTTP/1.0\r\n", b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
      b"QUIT\r\n"],
     "502 5.5.2 Error: command not recognized\r\n" + EHLO_REPLY
     + "250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n221 2.0.0 Bye\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: GET / HTTP/1.0",
      noqueue("550 5.5.1 Protocol error")]),
    ("non_smtp_connect_after_ehlo", ALL,
     [b"EHLO x\r\n", b"CONNECT 1.2.3.4:25 HTTP/1.0\r\n", b"MAIL FROM:<a@b>\r\n",
      b"RCPT TO:<c@d>\r\n", b"QUIT\r\n"],
     EHLO_REPLY + "502 5.5.2 Error: command not recognized\r\n"
     "250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n221 2.0.0 Bye\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after EHLO: CONNECT 1.2.3.4:25 HTTP/1.0",
      noqueue("550 5.5.1 Protocol error")]),
    ("non_smtp_header", ALL,
     [b"User-Agent: foo\r\n", b"HELO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
      b"QUIT\r\n"],
     ("502 5.5.2 Error: command not recognized\r\n250 mx.hato.test\r\n"
      "250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n221 2.0.0 Bye\r\n"),
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: User-Agent: foo",
      noqueue("550 5.5.1 Protocol error", proto="SMTP")]),
    ("non_smtp_drop", {"non_smtp": "drop"}, [b"GET / HTTP/1.0\r\n", b"EHLO x\r\n"],
     "521 5.7.0 Error: I can break rules, too. Goodbye.\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: GET / HTTP/1.0"]),
    ("non_smtp_ignore", {"non_smtp": "ignore"},
     [b"GET / HTTP/1.0\r\n", b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
      b"QUIT\r\n"],
     "502 5.5.2 Error: command not recognized\r\n" + EHLO_REPLY
     + "250 2.1.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n221 2.0.0 Bye\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: GET / HTTP/1.0",
      noqueue("450 4.3.2 Service currently unavailable")]),
    ("bare_newline_enforce", ALL,
     [b"EHLO x\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"QUIT\r\n"],
     EHLO_REPLY + "250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n221 2.0.0 Bye\r\n",
     [f"BARE NEWLINE from {CLIENT} after EHLO x", noqueue("550 5.5.1 Protocol error")]),
    ("bare_newline_after_rcpt", ALL,
     [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"NOOP\n",
      b"RCPT TO:<c@d>\r\n", b"QUIT\r\n"],
     EHLO_REPLY + "250 2.1.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n"
     "250 2.0.0 Ok\r\n550 5.5.1 Protocol error\r\n221 2.0.0 Bye\r\n",
     [noqueue("450 4.3.2 Service currently unavailable"),
      f"BARE NEWLINE from {CLIENT} after NOOP", noqueue("550 5.5.1 Protocol error")]),
    ("bare_newline_drop", {"bare_newline": "drop"}, [b"EHLO x\n", b"QUIT\r\n"],
     "521 5.5.1 Protocol error\r\n", [f"BARE NEWLINE from {CLIENT} after EHLO x"]),
    ("bare_newline_ignore", {"bare_newline": "ignore"},
     [b"EHLO x\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"QUIT\r\n"],
     EHLO_REPLY + "250 2.1.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n"
     "221 2.0.0 Bye\r\n",
     [f"BARE NEWLINE from {CLIENT} after EHLO x",
      noqueue("450 4.3.2 Service currently unavailable")]),
    ("bare_newline_before_non_smtp_drop", {"bare_newline": "drop", "non_smtp": "drop"},
     [b"GET /\n"], "521 5.5.1 Protocol error\r\n",
     [f"BARE NEWLINE from {CLIENT} after GET /"]),
    ("pipelining_enforce", ALL,
     [b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", b"QUIT\r\n"],
     EHLO_REPLY + "250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n221 2.0.0 Bye\r\n",
     [f"COMMAND PIPELINING from {CLIENT} after EHLO: MAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n",
      noqueue("550 5.5.1 Protocol error")]),
    ("pipelining_to_data", ALL,
     [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n"],
     EHLO_REPLY + "250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n"
     "554 5.5.1 Error: no valid recipients\r\n",
     [f"COMMAND PIPELINING from {CLIENT} after MAIL: RCPT TO:<c@d>\\r\\nDATA\\r\\n",
      noqueue("550 5.5.1 Protocol error"), f"DATA without valid RCPT from {CLIENT}"]),
    ("pipelining_drop", {"pipelining": "drop"},
     [b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"], "521 5.5.1 Protocol error\r\n",
     [f"COMMAND PIPELINING from {CLIENT} after EHLO: MAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n"]),
    ("pipelining_ignore", {"pipelining": "ignore"},
     [b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", b"RCPT TO:<e@f>\r\n", b"QUIT\r\n"],
     EHLO_REPLY + "250 2.1.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n"
     "450 4.3.2 Service currently unavailable\r\n221 2.0.0 Bye\r\n",
     [f"COMMAND PIPELINING from {CLIENT} after EHLO: MAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n",
      noqueue("450 4.3.2 Service currently unavailable"),
      noqueue("450 4.3.2 Service currently unavailable", rcpt="e@f")]),
    ("all_three_ignore", {t: "ignore" for t in ALL},
     [b"GET /\n", b"EHLO x\r\nMAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"VRFY u\r\n",
      b"QUIT\r\n"],
     "502 5.5.2 Error: command not recognized\r\n" + EHLO_REPLY
     + "250 2.1.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n"
     "450 4.3.2 Service currently unavailable\r\n221 2.0.0 Bye\r\n",
     [f"BARE NEWLINE from {CLIENT} after GET /",
      f"NON-SMTP COMMAND from {CLIENT} after CONNECT: GET /",
      f"COMMAND PIPELINING from {CLIENT} after EHLO: MAIL FROM:<a@b>\\r\\n",
      noqueue("450 4.3.2 Service currently unavailable")]),
    ("quit_pipelined", ALL, [b"QUIT\r\nNOOP\r\n"], "221 2.0.0 Bye\r\n",
     [f"COMMAND PIPELINING from {CLIENT} after QUIT: NOOP\\r\\n"]),
    ("data_without_mail", ALL, [b"EHLO x\r\n", b"DATA\r\n", b"NOOP\r\n"],
     EHLO_REPLY + "503 5.5.1 Error: need RCPT command\r\n",
     [f"DATA without valid RCPT from {CLIENT}"]),
    ("data_with_argument", ALL, [b"EHLO x\r\n", b"DATA x\r\n"],
     EHLO_REPLY + "501 5.5.4 Syntax: DATA\r\n", [f"DATA without valid RCPT from {CLIENT}"]),
    ("bdat_without_mail", ALL, [b"BDAT 10\r\n"], "554 5.5.1 Error: need MAIL command\r\n",
     [f"BDAT without valid RCPT from {CLIENT}"]),
    ("bdat_without_count", ALL, [b"BDAT\r\n"], "501 5.5.4 Syntax: BDAT count [LAST]\r\n",
     [f"BDAT without valid RCPT from {CLIENT}"]),
    ("bdat_after_rcpt_no_helo", ALL,
     [b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"BDAT 10 LAST\r\n"],
     ("250 2.1.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n"
      "554 5.5.1 Error: no valid recipients\r\n"),
     [noqueue("450 4.3.2 Service currently unavailable", proto="SMTP", helo=""),
      f"BDAT without valid RCPT from {CLIENT}"]),
    ("quit", ALL, [b"QUIT\r\n"], "221 2.0.0 Bye\r\n", []),
    ("quit_with_argument", ALL, [b"QUIT now\r\n"], "221 2.0.0 Bye\r\n", []),
    ("cr_inside_lines", ALL, [b"NOOP\r\r\n", b"NOOP\rx\r\n", b"QUIT\r\n"],
     "502 5.5.2 Error: command not recognized\r\n" * 2 + "221 2.0.0 Bye\r\n", []),
    ("addresses", ALL,
     [b"  EHLO  a b\r\n", b"HELO c\r\n", b"MAIL FROM:a@b SIZE=1\r\n",
      b"RCPT TO:<@r,@s:x@y> NOTIFY=NEVER\r\n", b'RCPT TO: <"q x"@d>\r\n',
      b"RCPT TO:<a\\>b@c>\r\n", b"RCPT TO:\r\n", b"RSET\r\n", b"MAIL FROM:<>\r\n",
      b"RCPT TO:<>\r\n", b"NOOP\tx\r\n", b"RCPT TO:<Q@D>\r\n", b"QUIT\r\n"],
     EHLO_REPLY + "250 mx.hato.test\r\n250 2.1.0 Ok\r\n"
     + "450 4.3.2 Service currently unavailable\r\n" * 4 + "250 2.0.0 Ok\r\n250 2.1.0 Ok\r\n"
     "450 4.3.2 Service currently unavailable\r\n502 5.5.2 Error: command not recognized\r\n"
     "450 4.3.2 Service currently unavailable\r\n221 2.0.0 Bye\r\n",
     [noqueue("450 4.3.2 Service currently unavailable", rcpt="x@y", helo="c"),
      noqueue("450 4.3.2 Service currently unavailable", rcpt='"q x"@d', helo="c"),
      noqueue("450 4.3.2 Service currently unavailable", rcpt='"a>b"@c', helo="c"),
      noqueue("450 4.3.2 Service currently unavailable", rcpt="", helo="c"),
      noqueue("450 4.3.2 Service currently unavailable", sender="", rcpt="", helo="c"),
      noqueue("450 4.3.2 Service currently unavailable", sender="", rcpt="Q@D", helo="c")]),
    ("misc_commands_to_count_limit", ALL,
     [b"NOOP\r\n", b"VRFY x\r\n", b"VRFY\r\n", b"ETRN\r\n", b"ETRN x\r\n", b"HELO\r\n",
      b"EHLO\r\n", b"HELO h\r\n", b"AUTH PLAIN\r\n", b"STARTTLS\r\n", b"XCLIENT a=b\r\n",
      b"FOO bar\r\n", b"\r\n", b"RSET\r\n", b"rcpt to:<x@y>\r\n", b"MAIL\r\n",
      b"MAIL FROM <a>\r\n", b"mail from:<a@b> SIZE=10\r\n", b"MAIL FROM:<x>\r\n",
      b"RCPT\r\n", b"RCPT x\r\n", b"RSET\r\n"],
     "250 2.0.0 Ok\r\n450 4.3.2 Service currently unavailable\r\n"
     "501 5.5.4 Syntax: VRFY address\r\n500 Syntax: ETRN domain\r\n"
     "458 Unable to queue messages\r\n501 Syntax: HELO hostname\r\n"
     "501 Syntax: EHLO hostname\r\n250 mx.hato.test\r\n"
     "502 5.5.2 Error: command not recognized\r\n502 5.5.1 Error: command not implemented\r\n"
     + "502 5.5.2 Error: command not recognized\r\n" * 3 + "250 2.0.0 Ok\r\n"
     "503 5.5.1 Error: need MAIL command\r\n" + "501 5.5.4 Syntax: MAIL FROM:<address>\r\n" * 2
     + "250 2.1.0 Ok\r\n503 5.5.1 Error: nested MAIL command\r\n"
     "501 5.5.4 Syntax: RCPT TO:<address>\r\n"
     "421 mx.hato.test Service unavailable - try again later\r\n",
     [f"COMMAND COUNT LIMIT from {CLIENT} after RCPT"]),
    ("long_line", ALL, [b"NOOP " + b"x" * 2043 + b"\r\n", b"NOOP\r\n"],
     "421 mx.hato.test Service unavailable - try again later\r\n",
     [f"COMMAND LENGTH LIMIT from {CLIENT} after CONNECT"]),
    ("long_line_bare_newline", ALL, [b"NOOP " + b"x" * 2044 + b"\n"],
     "421 mx.hato.test Service unavailable - try again later\r\n",
     [f"COMMAND LENGTH LIMIT from {CLIENT} after CONNECT"]),
    # Escapes in log lines: printable() for the command word, escape() for the rest.
    ("escape_rest", {"non_smtp": "enforce"},
     [b"http://x/ \x01\t\\\xc3\xa9\xff\r\n", b"QUIT\r\n"],
     "502 5.5.2 Error: command not recognized\r\n221 2.0.0 Bye\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: http://x/ \\001\\t\\\\\\303\\251\\377"]),
    ("escape_bad_utf8_header", {"non_smtp": "enforce"}, [b"X\xffY: a\r\n"],
     "502 5.5.2 Error: command not recognized\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: X?Y: a"]),
    ("escape_utf8_command_is_bogus", {"non_smtp": "enforce"}, [b"\xc3\x91OOP a\r\n"],
     "502 5.5.2 Error: command not recognized\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: \u00d1OOP a"]),
    ("escape_pipelined", {"pipelining": "enforce"},
     [b"NOOP\r\nMAIL \x01\t\\\xc3\xa9\xff\x7f\r\n", b"QUIT\r\n"],
     "250 2.0.0 Ok\r\n501 5.5.4 Syntax: MAIL FROM:<address>\r\n221 2.0.0 Bye\r\n",
     [f"COMMAND PIPELINING from {CLIENT} after NOOP: MAIL \\001\\t\\\\\\303\\251\\377\\177\\r\\n"]),
    ("escape_bare_newline", {"bare_newline": "enforce", "non_smtp": "enforce"},
     [b"NOOP\x01\t\\\xc3\xa9\xff\x7f\n", b"QUIT\r\n"],
     "502 5.5.2 Error: command not recognized\r\n221 2.0.0 Bye\r\n",
     [f"BARE NEWLINE from {CLIENT} after NOOP\\001\\t\\\\\\303\\251\\377\\177",
      f"NON-SMTP COMMAND from {CLIENT} after CONNECT: NOOP??\\\u00e9?? "]),
    ("escape_bad_first_byte", {"non_smtp": "enforce"}, [b"\xffOO\r\n"],
     "502 5.5.2 Error: command not recognized\r\n",
     [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: ?OO "]),
]


@pytest.mark.parametrize("name,tests,writes,expected,logs", CASES, ids=[c[0] for c in CASES])
def test_dialog(name, tests, writes, expected, logs):
    _eng, out, got_logs = play(writes, **tests)
    assert out == GREETING + expected
    assert got_logs == logs


def _split_independent(tests, writes) -> bool:
    return "pipelining" not in tests


@pytest.mark.parametrize("name,tests,writes,expected,logs",
                         [c for c in CASES if _split_independent(c[1], c[2])],
                         ids=[c[0] for c in CASES if _split_independent(c[1], c[2])])
def test_dialog_byte_by_byte_and_whole(name, tests, writes, expected, logs):
    data = b"".join(writes)
    _eng, out, got_logs = play([data[i:i + 1] for i in range(len(data))], **tests)
    assert (out, got_logs) == (GREETING + expected, logs)
    _eng, out, got_logs = play([data], **tests)
    assert (out, got_logs) == (GREETING + expected, logs)


_SPLIT_CASES = [c for c in CASES if _split_independent(c[1], c[2])]


@settings(max_examples=60, deadline=None)
@given(case=st.sampled_from(_SPLIT_CASES), cuts=st.lists(st.integers(0, 3000), max_size=12))
def test_dialog_random_splits(case, cuts):
    _, tests, writes, expected, logs = case
    data = b"".join(writes)
    _eng, out, got_logs = play_split(data, [c for c in cuts if c < len(data)], **tests)
    assert (out, got_logs) == (GREETING + expected, logs)


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(0, 200), max_size=10))
def test_pipelining_only_when_input_waits(cuts):
    """Pipelining exactly when some command had more input behind it in its
    read: when some line end (but the last) is not where a read ends."""
    lines = [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n"]
    data = b"".join(lines)
    ends = {sum(len(x) for x in lines[:i + 1]) for i in range(len(lines) - 1)}
    cut = [c for c in cuts if 0 < c < len(data)]
    eng, out, _logs = play_split(data, cut, pipelining="enforce")
    if ends <= set(cut):
        assert eng.failed == [] and eng.deep_passed()
        assert out.endswith("450 4.3.2 Service currently unavailable\r\n")
    else:
        assert [v.test for v in eng.failed] == ["pipelining"]
        assert out.endswith("550 5.5.1 Protocol error\r\n")


# -- verdicts, state --------------------------------------------------------------------------


def test_deep_tests_pass_at_rcpt():
    eng = ps.PostscreenSmtp(config(**ALL), CLIENT, banner_line=BANNER)
    for line in POLITE[:2]:
        eng.receive_data(line)
    assert not eng.deep_passed() and eng.passed == frozenset()
    eng.receive_data(POLITE[2])
    assert eng.deep_passed() and eng.passed == {"pipelining", "non_smtp", "bare_newline"}
    assert eng.failed == [] and not eng.closed
    eng.receive_data(b"QUIT\r\n")
    assert eng.closed and eng.close_reason == "quit" and eng.commands == 4


def test_rcpt_with_bad_syntax_still_passes_the_tests():
    # Postfix passes the deep tests when it sees RCPT, before its checks.
    eng, out, logs = play([b"RCPT TO:<c@d>\r\n"], **ALL)
    assert out.endswith("503 5.5.1 Error: need MAIL command\r\n")
    assert eng.deep_passed() and logs == []


def test_enforce_failure_is_not_passed_later():
    eng, _, _ = play([b"EHLO x\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n"], **ALL)
    assert eng.failed == [ps.Verdict("bare_newline", "enforce", ps.ENFORCE_REPLY)]
    assert eng.passed == {"pipelining", "non_smtp"} and not eng.deep_passed()


def test_ignore_failure_counts_as_passed():
    eng, _, _ = play([b"EHLO x\n"], bare_newline="ignore")
    assert eng.failed == [ps.Verdict("bare_newline", "ignore", ps.ENFORCE_REPLY)]
    assert eng.deep_passed()


@pytest.mark.parametrize("test,line,reply", [
    ("pipelining", b"EHLO x\r\nNOOP\r\n", ps.DROP_REPLY),
    ("non_smtp", b"GET /\r\n", ps.DROP_NON_SMTP_REPLY),
    ("bare_newline", b"EHLO x\n", ps.DROP_REPLY)])
def test_drop_verdicts(test, line, reply):
    eng, out, _ = play([line], **{test: "drop"})
    assert out == GREETING + reply.render().decode()
    assert eng.closed and eng.close_reason == "drop"
    assert eng.failed == [ps.Verdict(test, "drop", reply)]
    eng.receive_data(b"QUIT\r\n")
    assert eng.data_to_send() == b""


def test_each_test_fails_once_per_session():
    eng, _, logs = play([b"GET /\r\n", b"POST /\r\n", b"EHLO x\n", b"NOOP\n"],
                        non_smtp="ignore", bare_newline="ignore")
    assert [v.test for v in eng.failed] == ["non_smtp", "bare_newline"]
    assert len(logs) == 2


# -- enforce verdicts of earlier tests --------------------------------------------------------


def test_denylist_enforce_rejects_rcpt_and_vrfy():
    _eng, out, logs = play([b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
                           b"VRFY x\r\n", b"QUIT\r\n"], reject=DENYLIST)
    assert out == GREETING + EHLO_REPLY + (
        "250 2.1.0 Ok\r\n550 5.3.2 Service currently unavailable\r\n"
        "550 5.3.2 Service currently unavailable\r\n221 2.0.0 Bye\r\n")
    assert logs == [noqueue("550 5.3.2 Service currently unavailable")]


def test_early_failure_turns_on_every_deep_test_with_configured_actions():
    # Postfix: deep tests off, denylist enforce; pipelining_action=enforce,
    # non_smtp_command_action=enforce, bare_newline_action=ignore.
    actions = {"pipelining_action": "enforce", "non_smtp_action": "enforce",
               "bare_newline_action": "ignore"}
    eng, out, logs = play([b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", b"QUIT\r\n"],
                          reject=DENYLIST, **actions)
    assert out == GREETING + EHLO_REPLY + (
        "250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n221 2.0.0 Bye\r\n")
    assert logs == [
        f"COMMAND PIPELINING from {CLIENT} after EHLO: MAIL FROM:<a@b>\\r\\nRCPT TO:<c@d>\\r\\n",
        noqueue("550 5.5.1 Protocol error")]
    eng, out, logs = play([b"GET\r\n", b"RCPT TO:<c@d>\r\n", b"QUIT\r\n"],
                          reject=DENYLIST, **actions)
    assert out == GREETING + ("502 5.5.2 Error: command not recognized\r\n"
                              "503 5.5.1 Error: need MAIL command\r\n221 2.0.0 Bye\r\n")
    assert logs == [f"NON-SMTP COMMAND from {CLIENT} after CONNECT: GET "]
    eng, out, logs = play([b"NOOP\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n"],
                          reject=DENYLIST, **actions)
    assert out.endswith("550 5.3.2 Service currently unavailable\r\n")  # ignore: no change
    assert logs == [f"BARE NEWLINE from {CLIENT} after NOOP",
                    noqueue("550 5.3.2 Service currently unavailable", proto="SMTP", helo="")]
    assert eng.tests == {"pipelining": "enforce", "non_smtp": "enforce",
                         "bare_newline": "ignore"}


def test_without_reject_only_the_configured_tests_run():
    eng = ps.PostscreenSmtp(config(pipelining="enforce"), CLIENT, banner_line=BANNER)
    assert eng.tests == {"pipelining": "enforce"}


def test_pregreet_client_gets_no_banner():
    _eng, out, logs = play([b"EHLO early\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
                           b"QUIT\r\n"], banner=None, reject=PREGREET)
    assert out == EHLO_REPLY + ("250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n"
                                "221 2.0.0 Bye\r\n")
    assert logs == [noqueue("550 5.5.1 Protocol error", helo="early")]


def test_pregreet_with_pipelined_commands():
    _eng, out, logs = play([b"EHLO early\r\nMAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
                           b"QUIT\r\n"], banner=None, reject=PREGREET)
    assert out == EHLO_REPLY + ("250 2.1.0 Ok\r\n550 5.5.1 Protocol error\r\n"
                                "221 2.0.0 Bye\r\n")
    assert logs == [f"COMMAND PIPELINING from {CLIENT} after EHLO: MAIL FROM:<a@b>\\r\\n",
                    noqueue("550 5.5.1 Protocol error", helo="early")]


# -- non-SMTP command classification ----------------------------------------------------------

# Observed with the default postscreen_forbidden_commands (CONNECT GET POST
# regexp:{{/^[^A-Z]/ Bogus}}) and with postscreen_forbidden_commands = FOO.
@pytest.mark.parametrize("word,default,foo", [
    (b":b", True, False), (b"\xc3\xa9", True, False), (b"a.b", False, False),
    (b"-x", True, False), (b"1234", True, False), (b"A_B", False, False),
    (b"x\x01", False, False), (b"[x]", True, False), (b"<x>", True, False),
    (b"ab(", False, False), (b"{", True, False), (b"=", True, False), (b"Ab", False, False),
    (b"\xc3\xa9x", True, False), (b"ab\xc3\xa9", False, False), (b"FOO", False, True),
    (b"foo", False, True), (b"a:b", True, True), (b"get", True, False),
    (b"Connect", True, False), (b"GETX", False, False), (b"", False, False),
    (b"\xffOO", True, True), (b"NOOP", False, False), (b"auth", False, False)])
def test_non_smtp_commands(word, default, foo):
    for kw, expect in (({}, default),
                       ({"forbidden_commands": ("FOO",), "forbid_bogus_commands": False}, foo)):
        eng, _, _logs = play([word + b"\r\n"], non_smtp="enforce", **kw)
        assert bool(eng.failed) == expect, (word, kw)


def test_non_smtp_log_after_unimplemented():
    eng, _, logs = play([b"XYZ\r\n", b"GET /\r\n"], non_smtp="enforce")
    assert logs == [f"NON-SMTP COMMAND from {CLIENT} after UNIMPLEMENTED: GET /"]
    assert eng.last_command == "UNIMPLEMENTED"


def test_last_command():
    eng, _, _ = play([b"ehlo x\r\n", b"auth x\r\n"])
    assert eng.last_command == "AUTH" and eng.commands == 2


# -- limits ------------------------------------------------------------------------------------


def test_command_count_limit_spares_quit():
    eng, out, logs = play([b"NOOP\r\n"] * 3 + [b"QUIT\r\n"], command_count_limit=3)
    assert out.endswith("250 2.0.0 Ok\r\n221 2.0.0 Bye\r\n") and logs == []
    eng, out, logs = play([b"NOOP\r\n"] * 4, command_count_limit=3)
    assert out.endswith("421 mx.hato.test Service unavailable - try again later\r\n")
    assert logs == [f"COMMAND COUNT LIMIT from {CLIENT} after NOOP"]
    assert eng.close_reason == "too many commands"


@pytest.mark.parametrize("line,ok", [
    (b"x" * 2047 + b"\r\n", True), (b"x" * 2048 + b"\r\n", False),
    (b"x" * 2047 + b"\n", True), (b"x" * 2048 + b"\n", False),
    (b"x" * 2046 + b"\r\r\n", True)])
def test_line_length_limit(line, ok):
    eng, out, logs = play([line])
    assert (eng.close_reason != "line too long") == ok
    eng, out2, logs2 = play([line[i:i + 1] for i in range(len(line))])
    assert (out2, logs2) == (out, logs)


def test_command_time_limit():
    eng, _out, _ = play([b"EHLO x\r\n", b"MAI"])
    eng.command_time_limit()
    assert eng.data_to_send() == b"421 4.4.2 mx.hato.test Error: timeout exceeded\r\n"
    assert eng.logs() == [f"COMMAND TIME LIMIT from {CLIENT} after EHLO"]
    assert eng.closed and eng.close_reason == "time limit"


def test_eof():
    eng, _out, logs = play([b"EHLO x\r\nMAI", b""], **ALL)
    assert eng.closed and eng.close_reason == "eof"
    # Postfix logs the partial command as pipelined input.
    assert logs == [f"COMMAND PIPELINING from {CLIENT} after EHLO: MAI"]


def test_nul_ends_the_command():
    _, out, _ = play([b"NOOP\0junk\r\n"])
    assert out == GREETING + "250 2.0.0 Ok\r\n"


# -- settings ----------------------------------------------------------------------------------


def test_helo_required():
    _, out, _ = play([b"MAIL FROM:<a@b>\r\n", b"ETRN x\r\n", b"HELO x\r\n", b"ETRN x\r\n"],
                     helo_required=True)
    assert out == GREETING + ("503 5.5.1 Error: send HELO/EHLO first\r\n" * 2
                              + "250 mx.hato.test\r\n458 Unable to queue messages\r\n")


def test_disable_vrfy():
    _, out, _ = play([b"VRFY x\r\n"], disable_vrfy=True)
    assert out == GREETING + "502 5.5.1 VRFY command is disabled\r\n"


def test_bdat_without_chunking():
    eng = ps.PostscreenSmtp(ps.EngineConfig(hostname=HOST, ehlo_keywords=("VRFY",)), CLIENT,
                            banner_line=None)
    eng.receive_data(b"EHLO x\r\nBDAT 1\r\n")
    assert eng.data_to_send() == b"250-mx.hato.test\r\n250 VRFY\r\n" \
        b"502 5.5.1 Error: command not implemented\r\n"


def test_final_reply_x21():
    busy = Reply(421, "4.3.2", "All server ports are busy")
    eng, out, logs = play([b"EHLO x\r\n"], final_reply=busy, **ALL)
    assert out == GREETING + "421 4.3.2 All server ports are busy\r\n"
    assert eng.close_reason == "final reply" and eng.tests == {} and logs == []
    eng, out, _ = play([b"QUIT\r\n"], final_reply=busy, reject=DENYLIST)
    assert out == GREETING + "221 2.0.0 Bye\r\n"


def test_starttls():
    kw = KEYWORDS[:3] + ("STARTTLS",) + KEYWORDS[3:]
    eng = ps.PostscreenSmtp(ps.EngineConfig(hostname=HOST, ehlo_keywords=kw, tls_required=True),
                            CLIENT, banner_line=BANNER)
    eng.receive_data(b"EHLO x\r\nMAIL FROM:<a@b>\r\nSTARTTLS x\r\nSTARTTLS\r\nNOOP\r\n")
    out = eng.data_to_send().decode()
    assert "250-STARTTLS\r\n" in out
    assert out.endswith("530 5.7.0 Must issue a STARTTLS command first\r\n"
                        "501 5.5.4 Syntax: STARTTLS\r\n220 2.0.0 Ready to start TLS\r\n")
    assert eng.starttls_pending
    eng.receive_data(b"RSET\r\n")
    assert eng.data_to_send() == b""
    eng.starttls_done()  # the plaintext that came behind STARTTLS is gone
    eng.receive_data(b"EHLO y\r\n")
    assert "STARTTLS" not in eng.data_to_send().decode()
    eng.receive_data(b"STARTTLS\r\nMAIL FROM:<a@b>\r\n")
    assert eng.data_to_send() == b"554 5.5.1 Error: TLS already active\r\n250 2.1.0 Ok\r\n"
    assert eng.helo == "y"


def test_starttls_not_offered():
    _, out, _ = play([b"STARTTLS\r\n"])
    assert out == GREETING + "502 5.5.1 Error: command not implemented\r\n"


def test_bad_action_refused():
    with pytest.raises(ValueError):
        ps.PostscreenSmtp(config(pipelining="reject"), CLIENT, banner_line=BANNER)


def test_log_address_default_is_internal_form():
    eng = ps.PostscreenSmtp(ps.EngineConfig(hostname=HOST, ehlo_keywords=KEYWORDS), CLIENT,
                            banner_line=None)
    eng.receive_data(b'MAIL FROM:<a@b>\r\nRCPT TO:<"q x"@d>\r\n')
    assert eng.logs() == [noqueue("450 4.3.2 Service currently unavailable", rcpt="q x@d",
                                  proto="SMTP", helo="")]

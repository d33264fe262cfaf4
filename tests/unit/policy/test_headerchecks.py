"""header_checks actions (header_checks(5)) and the tables of a service."""

from __future__ import annotations

import pytest

from hato.policy.headerchecks import (
    Action,
    HeaderChecks,
    HeaderClass,
    act_log_text,
    dsn_prepend,
    is_header,
    parse_action,
)

from .conftest import make_settings


@pytest.mark.parametrize("value, command, text, reason, warning", [
    ("REJECT", "REJECT", "", "5.7.1 message content rejected", None),
    ("reject Go away", "REJECT", "Go away", "5.7.1 Go away", None),
    ("REJECT 5.7.0 Spam", "REJECT", "5.7.0 Spam", "5.7.0 Spam", None),
    ("REJECT 4.7.1 later", "REJECT", "4.7.1 later", "4.7.1 later", None),
    ("WARN", "WARN", "", "", None),
    ("WARN spammy subject", "WARN", "spammy subject", "", None),
    ("INFO seen it", "INFO", "seen it", "", None),
    ("DISCARD", "DISCARD", "", "", None),
    ("HOLD quarantine", "HOLD", "quarantine", "", None),
    ("IGNORE", "IGNORE", "", "", None),
    ("DUNNO", "DUNNO", "", "", None),
    ("OK", "OK", "", "", None),
    ("PASS", "PASS", "", "", None),
    ("STRIP removed", "STRIP", "removed", "", None),
    ("PREPEND X-Flag: yes", "PREPEND", "X-Flag: yes", "", None),
    ("REPLACE Subject: cleaned", "REPLACE", "Subject: cleaned", "", None),
    ("REDIRECT abuse@example.com", "REDIRECT", "abuse@example.com", "", None),
    ("BCC archive@example.com", "BCC", "archive@example.com", "", None),
    ("FILTER scan:[127.0.0.1]:10025", "FILTER", "scan:[127.0.0.1]:10025", "", None),
    ("FILTER", "FILTER", "", "", "missing FILTER command argument in header_checks map"),
    ("FILTER nocolon", "FILTER", "nocolon", "",
     "bad FILTER command nocolon in header_checks -- need transport:destination"),
    ("PREPEND", "PREPEND", "", "", "PREPEND action without text in header_checks map"),
    ("PREPEND not a header", "PREPEND", "not a header", "",
     ('bad PREPEND header text "not a header" in header_checks map -- need '
     '"headername: headervalue"')),
    ("REPLACE", "REPLACE", "", "", "REPLACE action without text in header_checks map"),
    ("REDIRECT nobody", "REDIRECT", "nobody", "",
     'bad REDIRECT target "nobody" in header_checks map -- need user@domain'),
    ("BCC nobody", "BCC", "nobody", "",
     'bad BCC address "nobody" in header_checks map -- need user@domain'),
    ("FROBNICATE", "", "", "", "unknown command in header_checks map: FROBNICATE"),
])
def test_parse_action(value, command, text, reason, warning):
    action = parse_action(value)
    assert (action.command, action.text, action.reason, action.warning) == (
        command, text, reason, warning)


def test_body_context_allows_any_prepend_text():
    assert parse_action("PREPEND plain text", "body", "body_checks").valid
    assert parse_action("REPLACE plain text", "body", "body_checks").valid


def test_reject_with_a_success_code_defers():
    action = parse_action("REJECT 2.0.0 strange")
    assert action.reason == "4.0.0 strange" and action.defer
    assert action.note == "bad DSN action in 2.0.0 strange -- need 4.x.x or 5.x.x"


def test_action_properties():
    assert parse_action("IGNORE").drop and parse_action("STRIP").drop
    assert not parse_action("WARN").drop
    assert parse_action("REJECT 4.1.1 x").defer and not parse_action("REJECT").defer
    assert parse_action("OK").log_word is None
    assert parse_action("WARN").log_word == "warning"
    assert parse_action("bogus").log_word is None


def test_log_text():
    """The line Postfix's cleanup_act_log() writes."""
    action = parse_action("WARN spam subject")
    line = action.log_text("3F1A2B", "header", "Subject: buy now", origin="mail.example[192.0.2.5]",
                           sender="a@example.org", recipient="b@example.com", proto="ESMTP",
                           helo="mail.example")
    assert line == ("3F1A2B: warning: header Subject: buy now from mail.example[192.0.2.5]; "
                    "from=<a@example.org> to=<b@example.com> proto=ESMTP helo=<mail.example>: "
                    "spam subject")
    reject = parse_action("REJECT no thanks")
    assert reject.log_text("Q", "body", "x" * 300, sender="") == (
        f"Q: reject: body {'x' * 200} from unknown; from=<>: 5.7.1 no thanks")
    assert parse_action("WARN").log_text("Q", "header", "X: y") == (
        "Q: warning: header X: y from unknown;")
    assert parse_action("DUNNO").log_text("Q", "header", "X: y") is None
    assert act_log_text("Q", "hold", "header", "X: y", "why", origin="local") == (
        "Q: hold: header X: y from local;: why")


def test_helpers():
    assert is_header("Subject: x") and is_header("X-Y : z") and not is_header("no colon")
    assert not is_header(" Subject: x") and not is_header("a b: c")
    assert dsn_prepend("5.7.1", "text") == "5.7.1 text"
    assert dsn_prepend("5.7.1", "4.2.0   text") == "4.2.0 text"
    assert Action("WARN").valid


def test_tables(tmp_path):
    hc = tmp_path / "header_checks"
    hc.write_text("/^Subject:.*viagra/  REJECT no pills\n"
                  "/^Subject: folded[[:space:]]+continued$/  WARN folded header\n"
                  "/^Content-Type:.*exe/  REJECT attachment\n")
    mime = tmp_path / "mime_checks"
    mime.write_text("/^Content-Type:.*name=.*\\.exe/  REJECT executable\n")
    body = tmp_path / "body_checks"
    body.write_text("/^bad line$/  DISCARD\n")
    s = make_settings(f"header_checks = regexp:{hc}\nmime_header_checks = regexp:{mime}\n"
                      f"body_checks = regexp:{body}\nbody_checks_size_limit = 100\n")
    checks = HeaderChecks(s)
    assert checks.check_header(HeaderClass.PRIMARY, "Subject: cheap VIAGRA").reason == \
        "5.7.1 no pills"
    # a folded header is matched as one, line break included
    assert checks.check_header(HeaderClass.PRIMARY, "Subject: folded\n\tcontinued").command == \
        "WARN"
    assert checks.check_header(HeaderClass.PRIMARY, "Subject: hello") is None
    # nested_header_checks defaults to $header_checks
    assert checks.check_header(HeaderClass.NESTED, "Subject: viagra").command == "REJECT"
    assert checks.nested_header_checks.title == "nested_header_checks"
    assert checks.check_header(HeaderClass.MULTIPART,
                               'Content-Type: x; name="a.exe"').text == "executable"
    assert checks.check_body("bad line").command == "DISCARD"
    assert checks.check_body("bad line", offset=100) is None
    assert checks.check_body("good line") is None
    checks.close()


def test_no_tables():
    checks = HeaderChecks(make_settings(""))
    assert not checks.any_header_checks
    assert checks.check_header(HeaderClass.PRIMARY, "Subject: x") is None
    assert checks.check_body("x") is None

"""header_checks, mime_header_checks, nested_header_checks and body_checks
inside cleanup: every action, the MIME header classes, the log lines."""

from __future__ import annotations

import datetime

import pytest

from hato.queue.cleanup import Cleanup, CleanupStatus, Submission, cleanup_message, records_to_bytes
from tests.unit.policy.conftest import make_settings

UTC = datetime.UTC
ORIGIN = "client.example[192.0.2.5]"


def run(tmp_path, header_checks: str = "", body_checks: str = "", content: bytes = b"",
        main: str = "", **kw):
    lines = []
    if header_checks:
        (tmp_path / "hc").write_text(header_checks)
        lines.append(f"header_checks = regexp:{tmp_path / 'hc'}")
    if body_checks:
        (tmp_path / "bc").write_text(body_checks)
        lines.append(f"body_checks = regexp:{tmp_path / 'bc'}")
    svc = Cleanup(make_settings("\n".join(lines) + "\n" + main))
    kw.setdefault("recipients", ["ann@example.org"])
    kw.setdefault("rewrite_context", "remote")
    sub = Submission("4ABC", "joe@example.net", arrival_time=1700000000.0, tz=UTC,
                     origin=ORIGIN, proto="ESMTP", helo="client.example", **kw)
    result, recs = cleanup_message(svc, sub, content)
    return result, records_to_bytes(recs).decode("utf-8", "surrogateescape")


MSG = b"From: joe@example.net\nSubject: hello world\nTo: ann@example.org\n\nline one\nline two\n"
TAIL = "from client.example[192.0.2.5]; from=<joe@example.net> to=<ann@example.org> " \
       "proto=ESMTP helo=<client.example>"


def test_warn(tmp_path):
    result, text = run(tmp_path, "/^Subject:/ WARN subject seen\n", content=MSG)
    assert result.ok and text == MSG.decode()
    assert ("info", f"4ABC: warning: header Subject: hello world {TAIL}: subject seen") \
        in result.log


def test_info_and_dunno_and_ok(tmp_path):
    result, text = run(tmp_path, "/^Subject:/ INFO noted\n/^From:/ DUNNO\n/^To:/ OK\n",
                       content=MSG)
    assert result.ok and text == MSG.decode()
    assert [line for _, line in result.log if ": info: " in line] == [
        f"4ABC: info: header Subject: hello world {TAIL}: noted"]
    assert not any("header From" in line or "header To" in line for _, line in result.log)


def test_reject(tmp_path):
    result, _text = run(tmp_path, "/^Subject:.*world/ REJECT no worlds here\n", content=MSG)
    assert result.status == CleanupStatus.CONT
    assert result.reason == "5.7.1 no worlds here"
    assert result.smtp_reply() == "550 5.7.1 no worlds here"
    assert ("info", f"4ABC: reject: header Subject: hello world {TAIL}: 5.7.1 no worlds here") \
        in result.log
    result, _ = run(tmp_path, "/^Subject:/ REJECT\n", content=MSG)
    assert result.smtp_reply() == "550 5.7.1 message content rejected"
    result, _ = run(tmp_path, "/^Subject:/ REJECT 4.7.0 try later\n", content=MSG)
    assert result.status == CleanupStatus.DEFER and result.temporary
    assert result.smtp_reply() == "451 4.7.0 try later"


def test_discard_and_hold(tmp_path):
    result, text = run(tmp_path, "/^Subject:/ DISCARD spam\n", content=MSG)
    assert result.discard and result.ok
    assert ("info", f"4ABC: discard: header Subject: hello world {TAIL}: spam") in result.log
    assert "Subject" not in text and "line one" not in text  # nothing more is stored
    result, text = run(tmp_path, "/^Subject:/ HOLD\n/^To:/ HOLD again\n", content=MSG)
    assert result.hold and result.ok and text == MSG.decode()
    assert len([line for _, line in result.log if ": hold: " in line]) == 1


def test_ignore_and_strip(tmp_path):
    result, text = run(tmp_path, "/^Subject:/ IGNORE\n/^To:/ STRIP gone\n", content=MSG)
    assert "Subject" not in text and "To:" not in text and "From:" in text
    assert ("info", f"4ABC: strip: header To: ann@example.org {TAIL}: gone") in result.log


def test_prepend_and_replace(tmp_path):
    checks = "/^Subject: (.*)/ REPLACE Subject: [tagged] $1\n/^To:/ PREPEND X-Seen: yes\n"
    result, text = run(tmp_path, checks, content=MSG)
    assert text == ("From: joe@example.net\nSubject: [tagged] hello world\nX-Seen: yes\n"
                    "To: ann@example.org\n\nline one\nline two\n")
    assert ("info", (f"4ABC: replace: header Subject: hello world {TAIL}: "
                    "Subject: [tagged] hello world")) in result.log


def test_replace_result_is_a_new_header(tmp_path):
    """A REPLACE result is classified again: here it becomes an address
    header and is rewritten in the local context."""
    _result, text = run(tmp_path, "/^X-Sender:/ REPLACE From: joe\n",
                       content=b"X-Sender: 1\n\n", rewrite_context="local")
    assert "From: joe@mx1.example.com\n" in text


def test_redirect_filter_bcc(tmp_path):
    checks = ("/^Subject:/ REDIRECT abuse@example.com\n/^To:/ FILTER scan:[127.0.0.1]:10025\n"
              "/^From:/ BCC archive@example.com\n")
    result, _ = run(tmp_path, checks, content=MSG)
    # REDIRECT ends the checks: To: and From: come later and are not inspected
    assert result.redirect == "abuse@example.com" and result.filter is None
    checks = ("/^From:/ BCC archive@example.com\n/^To:/ FILTER scan:[127.0.0.1]:10025\n")
    result, _ = run(tmp_path, checks, content=MSG)
    assert result.filter == "scan:[127.0.0.1]:10025"
    assert [r.address for r in result.recipients] == ["ann@example.org", "archive@example.com"]
    assert ("info", f"4ABC: bcc: header From: joe@example.net {TAIL}: archive@example.com") \
        in result.log


def test_pass_stops_checks(tmp_path):
    result, text = run(tmp_path, "/^From:/ PASS\n/^Subject:/ REJECT\n", content=MSG,
                       body_checks="/^line/ REJECT\n")
    assert result.ok and text == MSG.decode()


def test_bad_entries_warn_and_do_nothing(tmp_path):
    result, text = run(tmp_path, "/^Subject:/ PREPEND not a header\n/^To:/ FROBNICATE\n",
                       content=MSG)
    assert result.ok and text == MSG.decode()
    assert ("warning", ('bad PREPEND header text "not a header" in header_checks map -- need '
                       '"headername: headervalue"')) in result.log
    assert ("warning", "unknown command in header_checks map: FROBNICATE") in result.log


def test_folded_header_matched_as_one(tmp_path):
    content = b"Subject: first\n second line\nTo: a@b.example\n\n"
    result, _text = run(tmp_path, "/^Subject: first[[:space:]]+second line$/ REJECT folded\n",
                       content=content)
    assert result.reason == "5.7.1 folded"
    assert ("info", "4ABC: reject: header Subject: first\n second line " + TAIL.replace(
        "to=<ann@example.org>", "to=<ann@example.org>") + ": 5.7.1 folded") in result.log


def test_body_checks(tmp_path):
    checks = "/^line one$/ REPLACE line ONE\n/^line two$/ WARN second\n/^drop me$/ IGNORE\n" \
             "/^PREPEND$/ PREPEND inserted text\n"
    content = MSG + b"drop me\nPREPEND\n"
    result, text = run(tmp_path, body_checks=checks, content=content)
    assert text.endswith("\nline ONE\nline two\ninserted text\nPREPEND\n")
    assert ("info", f"4ABC: warning: body line two {TAIL}: second") in result.log


def test_body_checks_size_limit(tmp_path):
    content = b"Subject: s\n\n" + b"filler\n" * 20 + b"bad\n"
    result, _ = run(tmp_path, body_checks="/^bad$/ REJECT\n", content=content,
                    main="body_checks_size_limit = 100\n")
    assert result.ok
    result, _ = run(tmp_path, body_checks="/^bad$/ REJECT\n", content=content)
    assert result.status == CleanupStatus.CONT


def test_body_checks_on_pieces_of_long_lines(tmp_path):
    content = b"Subject: s\n\n" + b"a" * 512 + b"TRIGGER\n"
    result, _ = run(tmp_path, body_checks="/^TRIGGER$/ REJECT\n", content=content,
                    main="line_length_limit = 512\n")
    assert result.status == CleanupStatus.CONT  # the last piece is checked on its own


MIME = b"""From: joe@example.net
Subject: with parts
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

preamble
--outer
Content-Type: text/plain

hello
--outer
Content-Type: application/octet-stream; name="evil.exe"
Content-Disposition: attachment

AAAA
--outer
Content-Type: message/rfc822

Subject: inner subject
From: someone@example.org

inner body
--outer--
epilogue
"""


def test_mime_classes(tmp_path):
    hc = (tmp_path / "hc")
    hc.write_text("/^Subject: with parts/ WARN primary\n")
    mime = tmp_path / "mime"
    mime.write_text("/^Content-Type:.*evil\\.exe/ REJECT executable attachment\n"
                    "/^Content-Type: multipart/ WARN primary content-type is a MIME header\n")
    nested = tmp_path / "nested"
    nested.write_text("/^Subject: inner/ WARN nested\n")
    svc = Cleanup(make_settings(f"header_checks = regexp:{hc}\n"
                                f"mime_header_checks = regexp:{mime}\n"
                                f"nested_header_checks = regexp:{nested}\n"))
    sub = Submission("Q", "joe@example.net", ["ann@example.org"], 1700000000.0, tz=UTC,
                     rewrite_context="remote")
    result, _recs = cleanup_message(svc, sub, MIME)
    log = [line for _, line in result.log]
    assert any(": warning: header Subject: with parts " in line for line in log)
    assert any(": warning: header Content-Type: multipart/mixed" in line for line in log)
    assert any(": reject: header Content-Type: application/octet-stream" in line
               for line in log)
    assert result.reason == "5.7.1 executable attachment"
    # after the REJECT, no more checks: the nested Subject: is not seen
    assert not any("nested" in line for line in log)


def test_nested_checks_and_default_sharing(tmp_path):
    (tmp_path / "hc").write_text("/^Subject: inner/ REJECT nested match\n")
    svc = Cleanup(make_settings(f"header_checks = regexp:{tmp_path / 'hc'}\n"))
    sub = Submission("Q", "joe@example.net", ["ann@example.org"], 1700000000.0, tz=UTC)
    result, _ = cleanup_message(svc, sub, MIME)
    assert result.reason == "5.7.1 nested match"  # nested_header_checks = $header_checks
    svc = Cleanup(make_settings(f"header_checks = regexp:{tmp_path / 'hc'}\n"
                                "nested_header_checks =\n"))
    result, _ = cleanup_message(svc, sub, MIME)
    assert result.ok


def test_mime_disabled(tmp_path):
    (tmp_path / "hc").write_text("/^Subject: inner/ REJECT nested match\n")
    svc = Cleanup(make_settings(f"header_checks = regexp:{tmp_path / 'hc'}\n"
                                "disable_mime_input_processing = yes\n"))
    sub = Submission("Q", "joe@example.net", ["ann@example.org"], 1700000000.0, tz=UTC)
    result, recs = cleanup_message(svc, sub, MIME)
    assert result.ok
    assert records_to_bytes(recs).endswith(b"\n--outer--\nepilogue\n")


def test_mime_nesting_limit():
    parts = b"".join(b"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\n" % (i, i)
                     for i in range(6))
    svc = Cleanup(make_settings("mime_nesting_limit = 3\nstrict_mime_encoding_domain = yes\n"))
    sub = Submission("Q", "joe@example.net", ["ann@example.org"], 1700000000.0, tz=UTC)
    result, _ = cleanup_message(svc, sub, b"Subject: deep\n" + parts + b"text\n")
    assert result.status == CleanupStatus.CONT
    assert result.reason == "5.6.0 MIME nesting exceeds safety limit"


def test_lookup_failure_in_checks(tmp_path):
    svc = Cleanup(make_settings("header_checks = fail:x\n"))
    sub = Submission("Q", "joe@example.net", ["ann@example.org"], 1700000000.0, tz=UTC)
    result, _ = cleanup_message(svc, sub, MSG)
    assert result.status & CleanupStatus.WRITE and result.temporary
    assert ("warning", ("Q: header_checks map lookup problem -- message not accepted, "
                       "try again later")) in result.log
    svc = Cleanup(make_settings("body_checks = fail:x\n"))
    result, _ = cleanup_message(svc, sub, MSG)
    assert result.status & CleanupStatus.WRITE and result.temporary
    assert ("warning", ("Q: body_checks map lookup problem -- message not accepted, "
                       "try again later")) in result.log


def test_runaway_back_reference_match_defers_the_message(tmp_path):
    # glibc would take minutes on this header; the table gives up after
    # 0.25 CPU seconds and the message is deferred, not lost and not hung
    slow = b"Subject: " + b"a" * 40 + b"\n"
    result, _ = run(tmp_path, "/^Subject: (a|aa)*\\1*$/ REJECT\n",
                    content=slow + MSG.split(b"\n", 2)[2])
    assert result.status & CleanupStatus.WRITE and result.temporary
    assert result.smtp_reply() == "451 4.3.0 Error: queue file write error"
    assert ("warning", "4ABC: header_checks map lookup problem -- message not accepted, "
                       "try again later") in result.log
    # the same rule still works on a header it can answer
    result, _ = run(tmp_path, "/^Subject: (a|aa)*\\1*$/ REJECT spam\n",
                    content=b"Subject: aaaa\n" + MSG.split(b"\n", 2)[2])
    assert result.status == CleanupStatus.CONT and result.reason == "5.7.1 spam"


@pytest.mark.parametrize("flags_off", [True])
def test_no_filter_flag(tmp_path, flags_off):
    from hato.queue.cleanup import CleanupFlag

    result, text = run(tmp_path, "/^Subject:/ REJECT\n", content=MSG,
                       flags=CleanupFlag.MAP_OK)
    assert result.ok and text == MSG.decode()

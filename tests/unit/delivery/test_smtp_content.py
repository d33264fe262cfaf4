"""smtp_header_checks, smtp_mime_header_checks, smtp_nested_header_checks
and smtp_body_checks (hato.delivery.smtp_content): the actions the smtp
client knows, their log lines and the header classes; differential tests
against Debian's Postfix are in t-38."""

from __future__ import annotations

import pytest

from hato.delivery.smtp_content import ContentCheckError, OutboundContent
from hato.tables import registry
from hato.tables.base import Table, TableRetry

from ..policy.conftest import make_settings

MESSAGE = (b"Received: from inside.example (inside.example [192.168.1.5])\n"
           b"\tby mx1.example.com\n"
           b"Subject: hello there\n"
           b"X-Secret: 42\n"
           b"X-Mark: old\n"
           b"X-Other: 1\n"
           b"MIME-Version: 1.0\n"
           b"Content-Type: multipart/mixed; boundary=\"b\"\n"
           b"\n"
           b"--b\n"
           b"Content-Type: text/plain\n"
           b"\n"
           b"line one\n"
           b"password: hunter2\n"
           b"--b\n"
           b"Content-Type: message/rfc822\n"
           b"\n"
           b"Subject: inner\n"
           b"X-Secret: inner\n"
           b"\n"
           b"inner body\n"
           b"--b--\n")


class Log:
    def __init__(self):
        self.info: list[str] = []
        self.warning: list[str] = []


def outbound(tmp_path, tables: dict[str, str], main: str = "", prefix: str = "smtp"):
    lines = []
    for name, text in tables.items():
        path = tmp_path / name
        path.write_text(text)
        lines.append(f"{name} = regexp:{path}")
    log = Log()
    run = OutboundContent(make_settings("\n".join(lines) + "\n" + main), prefix, generic=None,
                          log_info=log.info.append, log_warning=log.warning.append)
    return run, log


def send(run: OutboundContent, data: bytes = MESSAGE, cut: int = 5) -> bytes:
    return b"".join(run.content((data[i:i + cut] for i in range(0, len(data), cut)), "QID"))


def test_nothing_configured_needs_no_pass(tmp_path):
    run, _ = outbound(tmp_path, {})
    assert not run.needed


def test_header_actions_and_their_log_lines(tmp_path):
    run, log = outbound(tmp_path, {"smtp_header_checks": (
        "/^Received: from inside\\.example/ IGNORE\n"
        "/^Subject:/ WARN subject seen\n"
        "/^X-Secret:/ STRIP\n"
        "/^X-Mark:/ REPLACE X-Mark: new\n"
        "/^X-Other:/ PREPEND X-Added: yes\n"
        "/^MIME-Version:/ IGNORE\n")})
    out = send(run)
    head = out.split(b"\n\n")[0]
    assert head == (b"Subject: hello there\n"
                    b"X-Mark: new\n"
                    b"X-Added: yes\n"
                    b"X-Other: 1\n"
                    b"MIME-Version: 1.0\n"
                    b"Content-Type: multipart/mixed; boundary=\"b\"")
    assert log.info == ["QID: warning: header Subject: hello there: subject seen",
                        "QID: strip: header X-Secret: 42",
                        "QID: replace: header X-Mark: old: X-Mark: new",
                        "QID: prepend: header X-Other: 1: X-Added: yes"]
    # MIME-Version is a MIME header: smtp_mime_header_checks' (empty), as in
    # Postfix, so the primary table's IGNORE does not reach it
    # the primary table does not see the attached message's headers
    assert b"Subject: inner\nX-Secret: inner\n" in out
    assert out.endswith(b"inner body\n--b--\n")


def test_the_content_goes_out_unchanged_when_nothing_matches(tmp_path):
    run, log = outbound(tmp_path, {"smtp_header_checks": "/^X-Nothing:/ IGNORE\n",
                                   "smtp_body_checks": "/^nothing$/ IGNORE\n"})
    assert send(run) == MESSAGE
    for cut in (1, 64, 100000):
        assert send(run, cut=cut) == MESSAGE
    assert log.info == [] and log.warning == []


def test_mime_and_nested_headers_go_to_their_own_tables(tmp_path):
    run, log = outbound(tmp_path, {
        "smtp_header_checks": "/^Content-Type:/ WARN primary table\n",
        "smtp_mime_header_checks": "/^Content-Type: (.*)/ WARN mime table $1\n",
        "smtp_nested_header_checks": "/^X-Secret:/ IGNORE\n"})
    out = send(run)
    assert b"X-Secret: 42\n" in out  # a primary header: not the nested table's
    assert b"X-Secret: inner" not in out
    # Content-* of the primary block count as MIME headers, as in cleanup
    assert log.info == [
        'QID: warning: header Content-Type: multipart/mixed; boundary="b": '
        'mime table multipart/mixed; boundary="b"',
        "QID: warning: header Content-Type: text/plain: mime table text/plain",
        "QID: warning: header Content-Type: message/rfc822: mime table message/rfc822"]


def test_body_actions_and_the_size_limit(tmp_path):
    run, log = outbound(tmp_path, {"smtp_body_checks": ("/^password:/ REPLACE password: ***\n"
                                                       "/^line one$/ INFO one\n"
                                                       "/^inner body$/ IGNORE\n")})
    out = send(run)
    assert b"\npassword: ***\n" in out and b"hunter2" not in out
    assert b"inner body" not in out
    assert log.info == ["QID: info: body line one: one",
                        "QID: replace: body password: hunter2: password: ***"]
    run, log = outbound(tmp_path, {"smtp_body_checks": "/^password:/ IGNORE\n"},
                        "body_checks_size_limit = 10\n")
    assert b"hunter2" in send(run)  # past the first 10 bytes of its part: not inspected


def test_actions_the_client_does_not_have_are_named_and_ignored(tmp_path):
    run, log = outbound(tmp_path, {"smtp_header_checks": ("/^Subject:/ REJECT no\n"
                                                         "/^X-Mark:/ REPLACE not a header\n"
                                                         "/^X-Secret:/ FROBNICATE\n")})
    assert send(run) == MESSAGE
    assert log.warning == [
        "unsupported command in smtp_header_checks map: REJECT no",
        "unsupported command in smtp_header_checks map: FROBNICATE",
        "bad REPLACE header text \"not a header\" in smtp_header_checks map -- "
        "need \"headername: headervalue\""]


def test_lmtp_reads_its_own_tables(tmp_path):
    run, _ = outbound(tmp_path, {"smtp_header_checks": "/^Subject:/ IGNORE\n"},
                      prefix="lmtp")
    assert not run.needed
    run, _ = outbound(tmp_path, {"lmtp_header_checks": "/^Subject:/ IGNORE\n"},
                      prefix="lmtp")
    assert b"Subject:" not in send(run).split(b"\n\n")[0]


class _Down(Table):
    def get(self, key: str):
        raise TableRetry(self.name, "the server is down")


def test_a_table_that_cannot_answer_stops_the_message(tmp_path):
    registry.register("checksdown", _Down)
    log = Log()
    run = OutboundContent(make_settings("smtp_header_checks = checksdown:x\n"), "smtp",
                          generic=None, log_info=log.info.append,
                          log_warning=log.warning.append)
    with pytest.raises(ContentCheckError) as err:
        send(run)
    assert err.value.text == "smtp_header_checks map lookup problem"
    assert log.warning == ["QID: smtp header checks lookup error"]


def test_without_mime_processing_there_is_one_header_block(tmp_path):
    # disable_mime_input_processing = yes: the parts' and the attached
    # message's headers are body lines, seen by no header table
    run, log = outbound(tmp_path, {
        "smtp_mime_header_checks": "/^Content-Type: (.*)/ WARN mime table $1\n",
        "smtp_nested_header_checks": "/^X-Secret:/ IGNORE\n"},
        "disable_mime_input_processing = yes\n")
    out = send(run)
    assert out == MESSAGE
    assert log.info == ['QID: warning: header Content-Type: multipart/mixed; boundary="b": '
                        'mime table multipart/mixed; boundary="b"']

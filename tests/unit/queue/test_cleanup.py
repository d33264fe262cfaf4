"""cleanup(8)'s message pass: headers added, removed, rewritten and
checked; envelope rewriting and expansion; limits."""

from __future__ import annotations

import datetime
import textwrap

import pytest

from hato.queue import records as R
from hato.queue.cleanup import (
    Cleanup,
    CleanupFlag,
    CleanupStatus,
    Submission,
    cleanup_message,
    local_received,
    mail_date,
    records_to_bytes,
    status_detail,
)
from hato.queue.envelope import Recipient
from tests.unit.policy.conftest import make_settings

UTC = datetime.UTC
T0 = 1700000000.0  # Tue, 14 Nov 2023 22:13:20 UTC
DATE = "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)"


def run(main: str = "", content: bytes = b"", **kw):
    """(result, message text) for one message through a fresh service."""
    svc = Cleanup(make_settings(textwrap.dedent(main)))
    kw.setdefault("queue_id", "4ABC123")
    kw.setdefault("sender", "joe")
    kw.setdefault("recipients", ["ann@example.org"])
    kw.setdefault("arrival_time", T0)
    kw.setdefault("tz", UTC)
    result, recs = cleanup_message(svc, Submission(**kw), content)
    return result, records_to_bytes(recs).decode("utf-8", "surrogateescape")


# -- dates and the local Received: header ----------------------------------------------------

def test_local_mail_date_follows_the_time_zone_within_one_second(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert mail_date(1700000000.1) == "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)"
        assert mail_date(1700000000.9) == "Tue, 14 Nov 2023 22:13:20 +0000 (UTC)"
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
        assert mail_date(1700000000.9) == "Wed, 15 Nov 2023 03:43:20 +0530 (IST)"
        # the two sides of 1970-01-01 00:00:00 are different seconds
        monkeypatch.setenv("TZ", "UTC")
        time.tzset()
        assert mail_date(-0.5) == "Wed, 31 Dec 1969 23:59:59 +0000 (UTC)"
        assert mail_date(0.5) == "Thu,  1 Jan 1970 00:00:00 +0000 (UTC)"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_mail_date():
    assert mail_date(T0, UTC) == DATE
    cet = datetime.timezone(datetime.timedelta(hours=1), "CET")
    assert mail_date(1709629200, cet) == "Tue,  5 Mar 2024 10:00:00 +0100 (CET)"
    ist = datetime.timezone(datetime.timedelta(hours=-5, minutes=-30), "X")
    assert mail_date(T0, ist).endswith(" -0530 (X)")


def test_local_received():
    assert local_received("mx1.example.com", "hato", 1000, "4ABC", T0, UTC) == (
        "Received: by mx1.example.com (hato, from userid 1000)\n"
        f"\tid 4ABC; {DATE}")


# -- a local submission ---------------------------------------------------------------------

def test_local_submission_adds_missing_headers():
    result, text = run(content=b"Subject: hi\n\nbody\n", userid=1000)
    assert text == (
        "Received: by mx1.example.com (hato, from userid 1000)\n"
        f"\tid 4ABC123; {DATE}\n"
        "Subject: hi\n"
        "Message-Id: <20231114221320.4ABC123@mx1.example.com>\n"
        f"Date: {DATE}\n"
        "From: joe@mx1.example.com\n"
        "\n"
        "body\n")
    assert result.ok and result.status == CleanupStatus.OK
    assert result.sender == "joe@mx1.example.com"
    assert result.recipients == [Recipient("ann@example.org", "ann@example.org",
                                           orcpt="rfc822;ann@example.org")]
    assert result.message_id == "<20231114221320.4ABC123@mx1.example.com>"
    assert result.log == [("info", "4ABC123: message-id=<20231114221320.4ABC123@mx1.example.com>")]
    assert result.size == len(text.encode())
    assert result.smtp_reply() == "250 2.0.0 Ok: queued as 4ABC123"


def test_existing_headers_are_kept_and_logged():
    content = (b"Message-ID: <abc@example.org>\nDate: Mon, 1 Jan 2024 00:00:00 +0000\n"
               b"From: Joe <joe@example.org>\nTo: ann@example.org\n\nbody\n")
    result, text = run(content=content)
    assert text == content.decode()
    assert result.message_id == "<abc@example.org>"
    assert ("info", "4ABC123: message-id=<abc@example.org>") in result.log


def test_long_queue_ids_message_id_and_queue_time():
    _result, text = run("enable_long_queue_ids = yes\n", b"\n", queue_id="4T1l2b3c4")
    assert "Message-Id: <4T1l2b3c4@mx1.example.com>\n" in text
    _, text = run("", b"\n", queue_time=T0 + 3600)
    assert "Message-Id: <20231114231320.4ABC123@mx1.example.com>\n" in text


def test_from_with_full_name():
    _, text = run(content=b"\n", full_name="Joe User")
    assert "From: Joe User <joe@mx1.example.com>\n" in text
    _, text = run(content=b"\n", full_name="Joe Q. User")
    assert 'From: "Joe Q. User" <joe@mx1.example.com>\n' in text
    _, text = run("header_from_format = obsolete\n", b"\n", full_name="Joe User")
    assert "From: joe@mx1.example.com (Joe User)\n" in text
    _, text = run(content=b"\n", sender="", full_name="Joe")
    assert "From: MAILER-DAEMON\n" in text


def test_undisclosed_recipients_header():
    _, text = run("undisclosed_recipients_header = To: undisclosed-recipients:;\n", b"\n")
    assert "To: undisclosed-recipients:;\n" in text
    _, text = run("undisclosed_recipients_header = To: undisclosed-recipients:;\n",
                  b"Cc: x@example.org\n\n")
    assert "undisclosed" not in text
    result, text = run("undisclosed_recipients_header = bogus\n", b"\n")
    assert "bogus" not in text
    assert any("bad undisclosed_recipients_header" in line for _, line in result.log)


def test_resent_headers_get_resent_message_id():
    content = b"Resent-From: joe@example.org\nMessage-Id: <a@b>\nDate: x\nFrom: y@z\n\n"
    result, text = run(content=content)
    assert "Resent-Message-Id: <20231114221320.4ABC123@mx1.example.com>\n" in text
    assert f"Resent-Date: {DATE}\n" in text
    assert "Resent-From: joe@example.org\n" in text.split("Resent-Message-Id")[0]
    assert ("info", "4ABC123: resent-message-id=<20231114221320.4ABC123@mx1.example.com>") \
        in result.log


# -- remote submissions ----------------------------------------------------------------------

SMTP_RECEIVED = ("Received: from client.example (client.example [192.0.2.5])\n"
                 "\tby mx1.example.com (hato) with ESMTP id 4ABC123\n"
                 "\tfor <ann@example.org>; " + DATE)


def test_remote_submission():
    content = b"From: x@example.net\r\nSubject: hi\r\n\r\nbody\r\n"
    result, text = run(content=content, rewrite_context="remote", received=SMTP_RECEIVED,
                       origin="client.example[192.0.2.5]", proto="ESMTP",
                       helo="client.example")
    assert text == SMTP_RECEIVED + "\nFrom: x@example.net\nSubject: hi\n\nbody\n"
    assert ("info", "4ABC123: message-id=<>") in result.log
    assert result.message_id is None and result.hop_count == 1


def test_remote_submission_always_add_and_rewrite_domain():
    _, text = run("always_add_missing_headers = yes\n", b"From: joe\n\n",
                  rewrite_context="remote")
    assert "Message-Id: <" in text and "Date: " in text
    assert "From: joe\n" in text  # remote context without a domain: no rewriting
    _, text = run("remote_header_rewrite_domain = domain.invalid\n", b"From: joe\n\n",
                  rewrite_context="remote")
    assert "From: joe@domain.invalid\n" in text
    assert "Message-Id: <" in text  # a rewrite context adds the missing headers


# -- header address rewriting ----------------------------------------------------------------

def test_header_rewriting_local_context():
    content = b"From: joe\nTo: ann, Bob <bob>, carl@example.org\nCc: dave@host\nSubject: x\n\n"
    _, text = run("append_dot_mydomain = yes\n", content)
    assert "From: joe@mx1.example.com\n" in text
    assert ("To: ann@mx1.example.com, Bob <bob@mx1.example.com>, carl@example.org\n"
            in text)
    assert "Cc: dave@host.example.com\n" in text
    assert "Subject: x\n" in text


def test_unchanged_address_header_is_kept_verbatim():
    content = b"To:   Ann   <ann@example.org>  (comment)\n\n"
    _, text = run(content=content)
    assert text.startswith("To:   Ann   <ann@example.org>  (comment)\n")


def test_header_rewriting_is_remembered_per_service():
    """The same header value on the next message takes the remembered
    result, rewritten or not, and gives the same text as the first time."""
    svc = Cleanup(make_settings("append_dot_mydomain = yes\n"))
    content = b"From: joe\nTo: Ann <ann@example.org>, bob\nCc: dave@host\n\n"
    texts = []
    for qid in ("4ABC123", "4ABC124"):
        _, recs = cleanup_message(svc, Submission(queue_id=qid, sender="joe",
                                                  recipients=["ann@example.org"],
                                                  arrival_time=T0, tz=UTC), content)
        texts.append(records_to_bytes(recs).decode())
    for text in texts:
        assert "From: joe@mx1.example.com\n" in text
        assert "To: Ann <ann@example.org>, bob@mx1.example.com\n" in text
        assert "Cc: dave@host.example.com\n" in text
    assert texts[0].replace("4ABC123", "4ABC124") == texts[1]
    assert svc.header_memo == {
        ("local", True, " joe"): "joe@mx1.example.com",
        ("local", False, " Ann <ann@example.org>, bob"):
            "Ann <ann@example.org>,\nbob@mx1.example.com",  # (one address a line, folded later)
        ("local", False, " dave@host"): "dave@host.example.com",
    }
    # A value that stays as it is is remembered as such.
    cleanup_message(svc, Submission(queue_id="4ABC125", sender="joe", recipients=["x@y.example"],
                                    arrival_time=T0, tz=UTC), b"To:  <x@y.example>\n\n")
    assert svc.header_memo[("local", False, "  <x@y.example>")] is None
    # A long value is rewritten as ever, and not remembered.
    long_to = ", ".join(f"user{i}" for i in range(60))
    _, recs = cleanup_message(svc, Submission(queue_id="4ABC126", sender="joe",
                                              recipients=["x@y.example"], arrival_time=T0,
                                              tz=UTC), f"To: {long_to}\n\n".encode())
    assert "user59@mx1.example.com" in records_to_bytes(recs).decode()
    assert len(svc.header_memo) == 4


def test_header_rewriting_through_tables_is_not_remembered(tmp_path):
    """With canonical maps or masquerading for the class, every header
    goes through them: a table's answer may change between messages."""
    table = tmp_path / "canonical"
    table.write_text("joe@mx1.example.com Joe.User@example.com\n")
    svc = Cleanup(make_settings(f"canonical_maps = texthash:{table}\n"))

    def from_header():
        _, recs = cleanup_message(svc, Submission(queue_id="4ABC123", sender="x@example.org",
                                                  recipients=["ann@example.org"],
                                                  arrival_time=T0, tz=UTC), b"From: joe\n\n")
        text = records_to_bytes(recs).decode()
        return text[text.index("From:"):].split("\n")[0]

    assert from_header() == "From: Joe.User@example.com"
    assert svc.header_memo == {}
    svc.rewriter.canonical_maps = None  # (as if the table were gone)
    assert from_header() == "From: joe@mx1.example.com"


def test_header_canonical_and_masquerade():
    main = """
        canonical_maps = inline:{ {joe@mx1.example.com = Joe.User@example.com} }
        masquerade_domains = example.com
    """
    content = b"From: joe\nTo: ann@host.example.com\nReply-To: bob@a.example.com\n\n"
    result, text = run(main, content)
    assert "From: Joe.User@example.com\n" in text
    assert "To: ann@example.com\n" in text  # header_recipient is a masquerade class
    assert "Reply-To: bob@example.com\n" in text
    assert result.sender == "Joe.User@example.com"


def test_long_address_header_is_folded():
    addrs = ", ".join(f"user{i}@example.org" for i in range(8))
    _, text = run(content=f"To: {addrs}\n\n".encode())
    # unchanged: kept as one line
    assert f"To: {addrs}\n" in text
    _, text = run(content=f"To: {addrs.replace('@example.org', '')}\n\n".encode())
    lines = text.split("\n")
    to = lines[lines.index(next(line for line in lines if line.startswith("To:"))):]
    folded = []
    for line in to:
        if folded and not line.startswith("\t"):
            break
        folded.append(line)
    assert len(folded) > 1 and all(len(line) < 75 for line in folded)
    assert folded[1].startswith("\tuser")
    assert "".join(folded).count("@mx1.example.com") == 8


def test_dropped_headers():
    content = (b"Bcc: secret@example.org\nReturn-Path: <x@y>\nContent-Length: 5\n"
               b"Resent-Bcc: s2@example.org\nDelivered-To: ann@example.org\nSubject: s\n\n")
    _, text = run(content=content)
    for name in ("Bcc:", "Return-Path:", "Content-Length:", "Resent-Bcc:"):
        assert name not in text
    assert "Delivered-To: ann@example.org\n" in text
    _, text = run("message_drop_headers = x-secret\n",
                  b"X-Secret: 1\nBcc: b@example.org\nSubject: s\n\n")
    assert "X-Secret" not in text and "Bcc: b@example.org" in text


# -- envelope ----------------------------------------------------------------------------------

def test_envelope_rewriting_and_virtual_alias_expansion():
    main = """
        recipient_delimiter = +
        virtual_alias_maps = inline:{ {info@example.com = ann@example.org, bob@example.org}, \
            {team@example.com = info@example.com, ann@example.org} }
        canonical_maps = inline:{ {old@example.com = new@example.com} }
    """
    result, _ = run(main, b"\n", sender="old@example.com",
                    recipients=["team@example.com", "info+x@example.com", "ann@example.org",
                                "Ann@example.org"])
    assert result.sender == "new@example.com"
    assert [(r.address, r.orig_address) for r in result.recipients] == [
        ("ann@example.org", "team@example.com"),
        ("bob@example.org", "team@example.com"),
        ("ann+x@example.org", "info+x@example.com"),
        ("bob+x@example.org", "info+x@example.com"),
        ("ann@example.org", "ann@example.org"),  # a different original recipient
    ]


def test_duplicate_filter_without_original_recipient():
    main = """
        enable_original_recipient = no
        virtual_alias_maps = inline:{ {list@example.com = ann@example.org} }
    """
    result, _ = run(main, b"\n", recipients=["list@example.com", "ann@example.org",
                                             "ANN@example.org"])
    assert [r.address for r in result.recipients] == ["ann@example.org"]


def test_alias_expansion_limit_defers():
    many = ", ".join(f"m{i}@x.example" for i in range(5))
    main = f"""
        virtual_alias_maps = inline:{{ {{big@v.example = {many}}} }}
        virtual_alias_expansion_limit = 3
    """
    result, text = run(main, b"Subject: x\n\nbody\n", recipients=["big@v.example"])
    assert result.status & CleanupStatus.DEFER
    assert result.reason == "4.6.0 Alias expansion error"
    assert result.temporary
    assert result.smtp_reply() == "451 4.6.0 Alias expansion error"
    assert ("warning", ("4ABC123: unreasonable virtual_alias_maps map expansion size for "
                       "big@v.example -- message not accepted, try again later")) in result.log
    assert text == ""


def test_table_failure_defers():
    result, _ = run("canonical_maps = fail:x\n", b"\n")
    assert result.status & CleanupStatus.WRITE and result.temporary
    assert result.smtp_reply() == "451 4.3.0 Error: queue file write error"


def test_bcc_maps_and_always_bcc():
    main = """
        sender_bcc_maps = inline:{ {joe@mx1.example.com = sent@example.com} }
        recipient_bcc_maps = inline:{ {ann@example.org = ann-copy@example.com} }
        always_bcc = archive@example.com
    """
    result, _ = run(main, b"\n")
    assert [r.address for r in result.recipients] == [
        "sent@example.com", "ann@example.org", "ann-copy@example.com", "archive@example.com"]
    result, _ = run(main, b"\n", flags=CleanupFlag.FILTER | CleanupFlag.MAP_OK)
    assert [r.address for r in result.recipients] == ["ann@example.org"]


def test_receive_override_options():
    main = """
        receive_override_options = no_address_mappings, no_header_body_checks
        canonical_maps = inline:{ {ann@example.org = x@example.org} }
        always_bcc = archive@example.com
    """
    result, _ = run(main, b"\n")
    assert [r.address for r in result.recipients] == ["ann@example.org"]


def test_dsn_notify_success_after_expansion():
    main = "virtual_alias_maps = inline:{ {list@example.com = a@x.example, b@x.example} }\n"
    rcpt = Recipient("list@example.com", notify=frozenset({"SUCCESS", "FAILURE"}),
                     orcpt="rfc822;list@example.com")
    result, _ = run(main, b"\n", recipients=[rcpt])
    assert [(r.address, r.notify, r.orcpt) for r in result.recipients] == [
        ("a@x.example", frozenset({"FAILURE"}), "rfc822;list@example.com"),
        ("b@x.example", frozenset({"FAILURE"}), "rfc822;list@example.com")]


def test_no_recipients():
    result, _ = run(content=b"\n", recipients=[])
    assert result.status == CleanupStatus.RCPT
    assert result.smtp_reply() == "550 5.1.0 Error: no recipients specified"


def test_extract_recipients():
    """sendmail -t: To, Cc and Bcc, added to the command-line recipients."""
    content = (b"To: Ann <ann@example.org>, bob\nCc: carl@example.org\nBcc: dave@example.org\n"
               b"Apparently-To: nope@example.org\nSubject: x\n\n")
    result, text = run(content=content, recipients=["first@example.org"],
                       extract_recipients=True)
    assert [r.address for r in result.recipients] == [
        "first@example.org", "ann@example.org", "bob@mx1.example.com", "carl@example.org",
        "dave@example.org"]
    assert "Bcc" not in text


def test_extract_resent_recipients():
    content = (b"To: old@example.org\nResent-To: new@example.org\nResent-Cc: cc@example.org\n"
               b"Cc: ignored@example.org\n\n")
    result, _ = run(content=content, recipients=[], extract_recipients=True)
    assert [r.address for r in result.recipients] == ["new@example.org", "cc@example.org"]
    result, _ = run(content=b"Subject: none\n\n", recipients=[], extract_recipients=True)
    assert result.status == CleanupStatus.RCPT


# -- limits --------------------------------------------------------------------------------------

def test_hopcount_limit():
    content = b"Received: from a\n" * 4 + b"Subject: loop\n\nbody\n"
    result, _ = run("hopcount_limit = 5\n", content, received=SMTP_RECEIVED,
                    rewrite_context="remote")
    assert result.status == CleanupStatus.HOPS
    assert result.smtp_reply() == "554 5.4.0 Error: too many hops"
    assert ("warning", "4ABC123: message rejected: hopcount exceeded") in result.log
    result, _ = run("hopcount_limit = 6\n", content, received=SMTP_RECEIVED)
    assert result.ok and result.hop_count == 5
    # A local submission is bounced rather than refused.
    result, _ = run("hopcount_limit = 5\n", content, userid=0,
                    flags=CleanupFlag.BOUNCE | CleanupFlag.FILTER | CleanupFlag.MAP_OK)
    assert result.status == CleanupStatus.HOPS and result.bounce


def test_message_size_limit():
    body = b"x" * 100 + b"\n"
    result, _text = run("message_size_limit = 2000\n", b"Subject: big\n\n" + body * 50)
    assert result.status & CleanupStatus.SIZE
    assert result.smtp_reply() == "552 5.3.4 Error: message file too big"
    assert result.size <= 2000
    result, _ = run("message_size_limit = 0\n", b"Subject: big\n\n" + body * 50)
    assert result.ok


def test_header_size_limit_nice_and_unkind_cut():
    folded = "Subject: " + "\n\t".join(["word" * 20] * 20)  # 20 lines of 81-82 bytes
    result, text = run("header_size_limit = 1000\n", (folded + "\n\nbody\n").encode())
    subject = text[text.index("Subject:"):text.index("\nMessage-Id")]
    assert len(subject) <= 1000 and subject.count("\n") >= 9  # cut at a line boundary
    assert subject.endswith("word")
    long = "Subject: " + "y" * 5000
    result, text = run("header_size_limit = 1000\n", (long + "\n\nbody\n").encode())
    assert f"Subject: {'y' * 991}\n" in text  # cut inside the line
    assert result.ok and text.endswith("\nbody\n")


def test_long_lines_are_split_into_pieces():
    svc = Cleanup(make_settings("line_length_limit = 512\n"))
    line = b"z" * 1500
    _result, recs = cleanup_message(svc, Submission("Q", "joe", ["a@b.example"], T0, tz=UTC),
                                   b"Subject: x\n\n" + line + b"\n")
    body = [r for r in recs if r[1].startswith(b"z")]
    assert [(t, len(d)) for t, d in body] == [(R.CONT, 512), (R.CONT, 512), (R.NORM, 476)]
    assert records_to_bytes(recs).endswith(b"\n" + line + b"\n")


def test_header_line_of_100000_characters():
    line = b"X-Long: " + b"a" * 100000
    result, text = run(content=line + b"\nSubject: after\n\nbody\n")
    assert result.ok
    assert ("X-Long: " + "a" * 100000 + "\n") in text  # under header_size_limit: whole
    assert "Subject: after\n" in text


# -- odd input -----------------------------------------------------------------------------------

def test_zero_byte_message():
    result, text = run(content=b"", userid=0)
    assert result.ok
    assert text == ("Received: by mx1.example.com (hato, from userid 0)\n"
                    f"\tid 4ABC123; {DATE}\n"
                    "Message-Id: <20231114221320.4ABC123@mx1.example.com>\n"
                    f"Date: {DATE}\nFrom: joe@mx1.example.com\n")


def test_headers_only():
    result, text = run(content=b"Subject: only\nTo: ann@example.org")
    assert result.ok
    assert text.startswith("Subject: only\nTo: ann@example.org\nMessage-Id:")
    assert not text.endswith("\n\n")


def test_body_without_headers_gets_a_separator():
    _, text = run(content=b"just a body line\nsecond\n")
    assert text.endswith("From: joe@mx1.example.com\n\njust a body line\nsecond\n")


def test_crlf_and_lf_give_the_same_content():
    lf = b"Subject: s\nTo: ann@example.org\n\nline 1\nline 2\n"
    crlf = lf.replace(b"\n", b"\r\n")
    assert run(content=lf)[1] == run(content=crlf)[1]


def test_stray_carriage_returns():
    _, text = run(content=b"Subject: a\rb\n\nx\ry\r\n")
    assert "Subject: a b\n" in text and text.endswith("\nx y\n")
    _, text = run("cleanup_replace_stray_cr_lf = no\n", b"Subject: s\n\nx\ry\n")
    assert text.endswith("\nx\ry\n")


def test_nul_bytes_and_8bit():
    content = "Subject: caf\u00e9 \udcff\n\nbody\x00with nul\n\udce9t\u00e9\n".encode(
        "utf-8", "surrogateescape")
    result, text = run(content=content)
    assert result.ok
    raw = text.encode("utf-8", "surrogateescape")
    assert b"Subject: caf\xc3\xa9 \xff\n" in raw
    assert b"body\x00with nul\n\xe9t\xc3\xa9\n" in raw


def test_strict_7bit_headers():
    result, _ = run("strict_7bit_headers = yes\n", "Subject: café\n\n".encode())
    assert result.status == CleanupStatus.CONT
    assert result.reason == "5.6.0 improper use of 8-bit data in message header"
    assert any("reject: mime-error improper use of 8-bit data in message header" in line
               for _, line in result.log)


def test_message_strip_and_reject_characters():
    _, text = run("message_strip_characters = \\0\n", b"Subject: s\n\na\x00b\n")
    assert text.endswith("\nab\n")
    result, _ = run("message_reject_characters = \\0\n", b"Subject: s\n\na\x00b\n")
    assert result.status == CleanupStatus.CONT
    assert result.reason == "5.7.1 disallowed character"


def test_content_transfer_encoding_8bit():
    # detect_8bit_encoding_header: the header says so, even over 7-bit text
    result, _ = run(content=b"Content-Transfer-Encoding: 8bit\n\nplain\n")
    assert result.encoding == "8bit"
    result, _ = run("detect_8bit_encoding_header = no\n",
                    content=b"Content-Transfer-Encoding: 8bit\n\nplain\n")
    assert result.encoding == "7bit"
    result, _ = run(content=b"Content-Transfer-Encoding: base64\n\nQQ==\n")
    assert result.encoding == "7bit"


def test_feed_after_finish():
    svc = Cleanup(make_settings(""))
    state = svc.open(Submission("Q", "joe", ["a@b.example"], T0, tz=UTC))
    state.feed(b"Subject: x\n\n")
    first = state.finish()
    assert state.finish() == first
    with pytest.raises(RuntimeError):
        state.feed(b"more")


def test_status_detail():
    assert status_detail(CleanupStatus.OK) == (250, "2.0.0", "Success")
    assert status_detail(CleanupStatus.SIZE | CleanupStatus.DEFER) == (
        451, "4.7.1", "service unavailable")

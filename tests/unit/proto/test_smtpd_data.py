"""SMTP server core: DATA and BDAT content, smuggling, size limits, splits."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings, strategies as st

from hato.proto import smtpd as s
from hato.proto.smtpd_data import MAX_PIECE, DotReader
from tests.unit.proto.test_smtpd_support import HOST, content, normalized, run, run_all_ways

ENVELOPE = b"EHLO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"


def ends(sess):
    return [e for e in sess.events if isinstance(e, s.MessageEnd)]


def data_session(body: bytes, mode: str = "normalize", **kw):
    lim = s.Limits(forbid_bare_newline=mode, **kw)
    return run_all_ways(ENVELOPE + b"DATA\r\n" + body + b"NOOP\r\n", lim)


@pytest.mark.parametrize("mode", ["no", "normalize", "yes", "reject"])
def test_plain_message(mode):
    sess = data_session(b"Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\n", mode)
    assert content(sess) == b"Subject: x\r\n\r\nhello\r\n.dot\r\n"
    (end,) = ends(sess)
    assert (end.size, end.bare_newlines, end.too_big, end.reply) == (27, 0, False, None)
    assert sess.replies[-3:] == ["354 End data with <CR><LF>.<CR><LF>",
                                 "250 2.0.0 Ok: queued as 4XyZ", "250 2.0.0 Ok"]


def test_empty_message():
    sess = data_session(b".\r\n")
    assert content(sess) == b""
    assert ends(sess)[0].size == 0


SMUGGLE = [b"\n.\n", b"\n.\r\n", b"\r.\n", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n..\r\n"]
INNER = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n"


@pytest.mark.parametrize("mode", ["normalize", "yes", "reject"])
@pytest.mark.parametrize("variant", SMUGGLE, ids=[repr(v) for v in SMUGGLE])
def test_smuggling_never_ends_early(mode, variant):
    sess = data_session(b"x" + variant + INNER + b".\r\n", mode)
    assert len(ends(sess)) == 1
    assert sum(isinstance(e, s.MailFrom) for e in sess.events) == 1
    assert sum(isinstance(e, s.DataCommand) for e in sess.events) == 1
    assert sess.replies[-1] == "250 2.0.0 Ok"  # the NOOP after the one message
    end = ends(sess)[0]
    if mode == "reject" and end.bare_newlines:
        assert end.bare_lf_rejected
        assert sess.replies[-2] == f"550 5.5.2 {HOST} Error: bare <LF> received"
    else:
        assert sess.replies[-2] == "250 2.0.0 Ok: queued as 4XyZ"
        assert b"smuggled" in content(sess)


@pytest.mark.parametrize("variant", [b"\n.\n", b"\n.\r\n", b"\r\n.\n"])
def test_bare_lf_dot_ends_data_in_no_mode(variant):
    # Postfix 3.7 with smtpd_forbid_bare_newline=no: the smuggled
    # transaction really happens (this is why the setting exists).
    sess = data_session(b"x" + variant + INNER + b".\r\n", "no")
    assert len(ends(sess)) == 2
    assert [e.address for e in sess.events if isinstance(e, s.MailFrom)] == ["a@b", "evil@x"]


def test_bare_cr_before_dot_does_not_end_in_no_mode():
    sess = data_session(b"x\r.\r\ny\r\n.\r\n", "no")
    assert len(ends(sess)) == 1
    assert content(sess) == b"x\r.\r\ny\r\n"


@pytest.mark.parametrize("variant", [b".\r\r\n", b".\r\r\r\n"])
def test_dot_crs_lf_ends_data_in_no_mode(variant):
    # Postfix's smtp_get() strips every CR before the LF: with
    # smtpd_forbid_bare_newline=no ".\r\r\n" ends the data (recorded from
    # Postfix 3.7.11: smuggling-no/crlf-dot-cr-crlf queues two messages).
    sess = data_session(b"x\r\n" + variant + INNER + b".\r\n", "no")
    assert len(ends(sess)) == 2
    assert [e.address for e in sess.events if isinstance(e, s.MailFrom)] == ["a@b", "evil@x"]


@pytest.mark.parametrize("mode", ["normalize", "yes", "reject"])
def test_dot_crs_lf_is_content_in_strict_modes(mode):
    sess = data_session(b"x\r\n.\r\r\ny\r\n.\r\n", mode)
    assert len(ends(sess)) == 1


def test_long_cr_run_after_dot_is_content_in_no_mode():
    from hato.proto.smtpd_data import MAX_DOT_CRS
    sess = data_session(b"x\r\n." + b"\r" * (MAX_DOT_CRS + 5) + b"\ny\r\n.\r\n", "no")
    assert len(ends(sess)) == 1


def test_normalize_bare_lf_and_keep_bare_cr():
    sess = data_session(b"a\nb\r\nc\rd\r\n.\ne\n\r\n.\r\n", "normalize")
    assert content(sess) == b"a\r\nb\r\nc\rd\r\n\r\ne\r\n\r\n"
    assert ends(sess)[0].bare_newlines == 3
    assert ends(sess)[0].size == len(content(sess))


def test_no_mode_counts_but_keeps_bare_lf():
    sess = data_session(b"a\nb\r\n.\r\n", "no")
    assert content(sess) == b"a\nb\r\n"
    assert ends(sess)[0].bare_newlines == 1


def test_reject_bare_lf_reads_to_end_and_continues():
    sess = data_session(b"a\nb\r\n.\r\n", "reject", bare_newline_reject_code=554)
    assert sess.replies[-2:] == [f"554 5.5.2 {HOST} Error: bare <LF> received", "250 2.0.0 Ok"]
    end = ends(sess)[0]
    assert end.bare_lf_rejected and end.reply is not None
    assert not sess.conn.in_transaction
    assert sess.conn.counts["data"] == [0, 1]
    assert sess.conn.error_count == 1


def test_reject_bare_lf_in_command_closes():
    sess = run_all_ways(b"EHLO c\n", s.Limits(forbid_bare_newline="reject"))
    assert sess.replies == [f"550 5.5.2 {HOST} Error: bare <LF> received"]
    assert sess.conn.closed


@pytest.mark.parametrize("mode", ["no", "normalize"])
def test_bare_lf_commands_accepted(mode):
    sess = run_all_ways(b"EHLO c\nNOOP\n", s.Limits(forbid_bare_newline=mode))
    assert sess.codes()[-1] == "250 2.0.0"


def test_size_limit_keeps_reading_and_replies():
    body = b"x" * 98 + b"\r\n" + b"y" * 200 + b"\r\n.\r\n"
    sess = data_session(body, message_size_limit=100)
    end = ends(sess)[0]
    assert end.too_big and end.reply == s.Reply(552, "5.3.4", "Error: message file too big")
    assert sess.replies[-2:] == ["552 5.3.4 Error: message file too big", "250 2.0.0 Ok"]
    assert len(content(sess)) <= 100
    assert not sess.conn.in_transaction


def test_size_limit_exact_fits():
    sess = data_session(b"x" * 98 + b"\r\n.\r\n", message_size_limit=100)
    assert not ends(sess)[0].too_big


def test_long_content_lines_are_content():
    line = b"z" * 100_000 + b"\r\n"
    sess = data_session(line + b".\r\n")
    assert content(sess) == line


def test_message_data_pieces_are_bounded():
    body = (b"0123456789" * 7 + b"\r\n") * 20000  # 1.4 MB
    sess = run(ENVELOPE + b"DATA\r\n" + body + b".\r\n")
    pieces = [e.data for e in sess.events if isinstance(e, s.MessageData)]
    assert max(map(len, pieces)) <= MAX_PIECE
    assert b"".join(pieces) == body


def test_partial_content_emitted_when_input_runs_out():
    sess = run([ENVELOPE + b"DATA\r\n", b"partial line"])
    assert content(sess) == b"partial line"
    sess.feed(b"\r\n.")
    assert content(sess) == b"partial line\r\n"  # "." might be the end
    sess.feed(b"\r\n")
    assert len(ends(sess)) == 1


def test_lost_connection_in_data():
    sess = run([ENVELOPE + b"DATA\r\nabc"], eof=True)
    closed = sess.events[-1]
    assert isinstance(closed, s.Closed) and closed.reason == s.REASON_EOF
    assert closed.verb == "DATA"


def test_dot_reader_direct():
    r = DotReader("normalize", 0)
    data, used = r.read(b".\r\n")
    assert r.done and data == b"" and used == 3
    r = DotReader("normalize", 0)
    data, used = r.read(b".")
    assert not r.done and used == 0


# ---------------------------------------------------------------- BDAT


def test_bdat_pipelined_with_commands():
    sess = run_all_ways(ENVELOPE + b"BDAT 5\r\n.\r\n\r\nBDAT 3 LAST\r\nab\nRSET\r\nQUIT\r\n")
    assert content(sess) == b".\r\n\r\nab\n"
    chunks = [e for e in sess.events if isinstance(e, s.BdatChunk)]
    assert [(c.size, c.last, c.total) for c in chunks] == [(5, False, 5), (3, True, 8)]
    assert sess.replies[-4:] == ["250 2.0.0 Ok: 5 bytes", "250 2.0.0 Ok: queued as 4XyZ",
                                 "250 2.0.0 Ok", "221 2.0.0 Bye"]
    assert sess.conn.counts["bdat"] == [2, 2]


def test_bdat_zero_last():
    sess = run_all_ways(ENVELOPE + b"BDAT 0 LAST\r\n")
    assert sess.replies[-1] == "250 2.0.0 Ok: queued as 4XyZ"
    assert [e.size for e in sess.events if isinstance(e, s.BdatChunk)] == [0]


def test_bdat_chunk_over_size_limit():
    lim = s.Limits(message_size_limit=10)
    sess = run_all_ways(ENVELOPE + b"BDAT 6\r\n123456BDAT 6\r\n123456BDAT 6 LAST\r\n123456"
                        b"NOOP\r\n", lim)
    assert sess.replies[-4:] == ["250 2.0.0 Ok: 6 bytes", "552 5.3.4 Chunk exceeds message size limit",
                                 "551 5.0.0 Discarded 6 bytes after earlier error", "250 2.0.0 Ok"]
    end = ends(sess)[0]
    assert end.too_big and end.reply.code == 552
    assert not sess.conn.in_transaction


def test_bdat_after_rejected_data_command_discards_chunks():
    def policy(conn, ev):
        if isinstance(ev, s.DataCommand):
            conn.reject(s.Reply(554, "5.7.1", "No"))
        elif isinstance(ev, s.Helo):
            conn.accept(ehlo_keywords=["CHUNKING"])
        else:
            conn.accept()
    sess = run_all_ways(ENVELOPE + b"BDAT 4\r\nMAILBDAT 4 LAST\r\nRCPTNOOP\r\n", policy=policy)
    assert sess.replies[-3:] == ["554 5.7.1 No", "551 5.0.0 Discarded 4 bytes after earlier error",
                                 "250 2.0.0 Ok"]
    assert content(sess) == b""


def test_bdat_last_rejected_by_service():
    def policy(conn, ev):
        if isinstance(ev, s.BdatChunk) and ev.last:
            conn.reject(s.Reply(451, "4.3.0", "Error: queue file write error"))
        elif isinstance(ev, s.Helo):
            conn.accept(ehlo_keywords=["CHUNKING"])
        else:
            conn.accept()
    sess = run_all_ways(ENVELOPE + b"BDAT 1 LAST\r\nxMAIL FROM:<a@b>\r\n", policy=policy)
    assert sess.replies[-2:] == ["451 4.3.0 Error: queue file write error", "250 2.1.0 Ok"]
    assert sess.conn.counts["bdat"] == [0, 1]


# ------------------------------------------------------------- random splits

SCRIPTS = [
    ENVELOPE + b"DATA\r\nSubject: a\r\n\r\n..x\n.\r\n\r.\nz\r\n.\r\nNOOP\r\n",
    ENVELOPE + b"BDAT 3\r\nabcBDAT 4 LAST\r\n\r\n.\r\nRSET\r\nQUIT\r\n",
    ENVELOPE + b"DATA\r\n" + b"q" * 3000 + b"\r\n.\r\nNOOP " + b"n" * 3000 + b"\r\nQUIT\r\n",
    b"EHLO c\r\nMAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c@d> NOTIFY=NEVER\r\nDATA\r\n.\r\n"
    b"VRFY x\r\nXYZ\r\n\r\nBDAT 1\r\nxBDAT 0 LAST\r\nQUIT\r\n",
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(range(len(SCRIPTS))), st.sampled_from(["no", "normalize", "reject"]),
       st.lists(st.integers(1, 7000), max_size=30))
def test_random_splits_give_identical_results(idx, mode, cuts):
    script = SCRIPTS[idx]
    lim = s.Limits(forbid_bare_newline=mode)
    whole = run(script, lim)
    split = run(script, lim, split=cuts)
    assert bytes(split.out) == bytes(whole.out)
    assert normalized(split.events) == normalized(whole.events)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b"\r\n.", b"..", b"x\r\n"]),
                max_size=40),
       st.sampled_from(["no", "normalize", "reject"]),
       st.lists(st.integers(1, 200), max_size=10))
def test_dot_reader_fuzz(parts, mode, cuts):
    """Content never contains the terminator; splits never change anything."""
    inner = b"".join(parts)
    assume(b"\r\n.\r\n" not in b"\r\n" + inner + b"\r\n")
    body = inner + b"\r\n.\r\n"
    lim = s.Limits(forbid_bare_newline=mode)
    whole = run(ENVELOPE + b"DATA\r\n" + body, lim)
    split = run(ENVELOPE + b"DATA\r\n" + body, lim, split=cuts)
    assert bytes(split.out) == bytes(whole.out)
    assert normalized(split.events) == normalized(whole.events)
    assert len(ends(whole)) >= 1
    if mode != "no":
        # only the final CRLF.CRLF ends it: exactly one message, whole body
        assert len(ends(whole)) == 1
        assert not any(isinstance(e, s.ProtocolError) for e in whole.events)
    if mode == "normalize":
        c = content(whole)
        assert c.count(b"\n") == c.count(b"\r\n")

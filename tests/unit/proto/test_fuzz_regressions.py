"""Inputs the fuzzers (tests/fuzz) found crashing or hanging the protocol
cores, kept as plain tests."""

from __future__ import annotations

from hato.proto import smtp_client as C
from hato.proto.smtp_client_replies import BodyEncoder


def test_body_encoder_line_limit_one_ends():
    """smtp_line_length_limit = 1 made the folding loop spin for ever: after
    the folding space no room was left, so it folded again and again."""
    enc = BodyEncoder(stuff=True, line_limit=1)
    out = enc.encode(b"abc\r\n") + enc.finish()
    assert out == b"a\r\n b\r\n c\r\n"


def test_client_sends_body_with_line_limit_one():
    """The same through the client core, as the fuzzer met it."""
    conn = C.ClientConnection(C.ClientParams(helo_name="c.example", line_length_limit=1,
                                             pipelining=False),
                              C.Message("a@example.com", ("b@example.org",)))
    for reply in (b"220 mx\r\n", b"250 mx\r\n", b"250 ok\r\n", b"250 ok\r\n", b"354 go\r\n"):
        assert conn.next_event() is C.NEED_DATA
        conn.data_to_send()
        conn.receive_data(reply)
    ev = conn.next_event()
    assert isinstance(ev, C.NeedBody)
    conn.send_body(b"Subject: x\n\nbody\n")
    conn.end_body()
    wire = conn.data_to_send()
    assert wire.endswith(b"\r\n.\r\n")
    assert b"S\r\n u\r\n b" in wire


# str.isdigit() is true for digits that int() refuses ("²", "¹"...): a peer
# that sent one made int() raise a ValueError nobody expected.

def test_client_ehlo_size_with_a_superscript_digit():
    """A server's ``250 SIZE ²`` made the client core raise ValueError."""
    conn = C.ClientConnection(C.ClientParams(helo_name="c.example"),
                              C.Message("a@example.com", ("b@example.org",)))
    conn.receive_data("220 mx\r\n250-mx\r\n250 SIZE ²\r\n".encode())
    while conn.next_event() is not C.NEED_DATA:
        pass
    assert conn.size_limit == 0
    assert conn.esmtp


def test_dovecot_reply_id_with_a_superscript_digit():
    """``OK<TAB>²`` from the auth server escaped as ValueError instead of
    the documented DovecotProtocolError."""
    import pytest

    from hato.proto.dovecot_auth import DovecotProtocolError, parse_reply

    with pytest.raises(DovecotProtocolError):
        parse_reply("OK\t²")
    assert parse_reply("OK\t7\tuser=joe").id == 7


def test_milter_port_with_a_superscript_digit():
    """``smtpd_milters = inet:localhost:²`` was a ValueError, not the
    configuration error Postfix words."""
    import pytest

    from hato.proto.milter import MilterConfigError, parse_milter_list

    (spec,) = parse_milter_list("inet:localhost:²")
    with pytest.raises(MilterConfigError, match="bad port"):
        spec.endpoint()

"""The 8-bit to 7-bit MIME conversion of the smtp client (Postfix's
mime_state with MIME_OPT_DOWNGRADE): whole inputs, byte by byte, every
split, and 8-bit text round-tripping through the email package's
quoted-printable decoder."""

from __future__ import annotations

import email
import email.policy
import quopri

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.proto.mime_downgrade import (
    NESTING_ERROR,
    DowngradeError,
    Downgrader,
    downgrade,
)


def whole(data: bytes, **kw) -> bytes:
    conv = Downgrader(**kw)
    return conv.feed(data) + conv.finish()


def bytewise(data: bytes, **kw) -> bytes:
    conv = Downgrader(**kw)
    out = b"".join(conv.feed(data[i:i + 1]) for i in range(len(data)))
    return out + conv.finish()


def split(data: bytes, at: int, **kw) -> bytes:
    conv = Downgrader(**kw)
    return conv.feed(data[:at]) + conv.feed(data[at:]) + conv.finish()


def body_lines(out: bytes) -> list[bytes]:
    return out.split(b"\n\n", 1)[1].split(b"\n")


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)


# -- messages -------------------------------------------------------------------------------

PLAIN_7BIT = (b"Received: from a by b\n\tid 1; Tue, 14 Nov 2023 22:13:20 +0000\n"
              b"From: ann@example.org\nSubject: hello\n\nbody = text \n.\n\n-- \nsig\n")

MIXED_7BIT = (b"From: ann@example.org\nMIME-Version: 1.0\n"
              b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n"
              b"preamble\n--b1\nContent-Type: text/plain\n"
              b"Content-Transfer-Encoding: quoted-printable\n\nh=C3=A9\n"
              b"--b1\nContent-Type: application/octet-stream\n"
              b"Content-Transfer-Encoding: base64\n\nAAEC/w==\n--b1--\nepilogue\n")

SINGLE_8BIT = (b"From: ann@example.org\nSubject: caf\xc3\xa9\nMIME-Version: 1.0\n"
               b"Content-Type: text/plain; charset=utf-8\n"
               b"Content-Transfer-Encoding: 8bit\nX-After: 1\n\n"
               b"caf\xc3\xa9 cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e\nsecond line\n")

ALTERNATIVE = (b"From: ann@example.org\nMIME-Version: 1.0\n"
               b"Content-Type: multipart/alternative; boundary=alt\n\n"
               b"--alt\nContent-Type: text/plain; charset=iso-8859-1\n"
               b"Content-Transfer-Encoding: 8bit\n\nna\xefve caf\xe9\n"
               b"--alt\nContent-Type: text/html; charset=utf-8\n"
               b"Content-Transfer-Encoding: base64\n\nPHA+bmHDr3ZlPC9wPg==\n"
               b"--alt--\n")

NESTED = (b"From: ann@example.org\nMIME-Version: 1.0\n"
          b"Content-Type: multipart/mixed; boundary=\"outer\"\n"
          b"Content-Transfer-Encoding: 8bit\n\n"
          b"--outer\nContent-Type: multipart/alternative; boundary=inner\n\n"
          b"--inner\nContent-Type: text/plain; charset=utf-8\n"
          b"Content-Transfer-Encoding: 8bit\n\n\xc3\xa9t\xc3\xa9\n"
          b"--inner\nContent-Type: text/plain\n\nplain\n--inner--\n"
          b"--outer\nContent-Type: text/plain; charset=utf-8\n"
          b"Content-Transfer-Encoding: binary\n\n\xe2\x82\xac 5\n"
          b"--outer--\n")

RFC822 = (b"From: ann@example.org\nMIME-Version: 1.0\n"
          b"Content-Type: multipart/mixed; boundary=m\n\n"
          b"--m\nContent-Type: text/plain\n\nsee attached\n"
          b"--m\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n"
          b"From: bob@example.org\nSubject: inner\nMIME-Version: 1.0\n"
          b"Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
          b"gr\xc3\xbc\xc3\x9fe\n"
          b"--m--\n")

ALL = [PLAIN_7BIT, MIXED_7BIT, SINGLE_8BIT, ALTERNATIVE, NESTED, RFC822]


# -- 7-bit content ----------------------------------------------------------------------------

@pytest.mark.parametrize("msg", [PLAIN_7BIT, MIXED_7BIT])
def test_7bit_content_passes_byte_for_byte(msg):
    conv = Downgrader()
    assert conv.feed(msg) + conv.finish() == msg
    assert not conv.converted
    assert bytewise(msg) == msg
    crlf = msg.replace(b"\n", b"\r\n")
    assert whole(crlf) == crlf == bytewise(crlf)


def test_8bit_headers_and_undeclared_8bit_body_are_left_alone():
    # Postfix converts only what a Content-Transfer-Encoding calls 8-bit;
    # header text is never encoded.
    msg = b"From: J\xc3\xb6rg <j@example.org>\nSubject: \xe2\x82\xac\n\nbody\n"
    assert whole(msg) == msg
    msg = b"Subject: s\nContent-Type: text/plain; charset=utf-8\n\n\xc3\xa9\n"
    assert whole(msg) == msg
    # quoted-printable or base64 say the body is 7-bit already
    msg = b"Content-Transfer-Encoding: quoted-printable\n\n\xc3\xa9\n"
    assert whole(msg) == msg


# -- single part ------------------------------------------------------------------------------

def test_single_part_8bit_becomes_quoted_printable():
    conv = Downgrader()
    out = conv.feed(SINGLE_8BIT) + conv.finish()
    assert conv.converted and conv.error is None
    head, body = out.split(b"\n\n", 1)
    # The 8bit header goes; the new one ends the header block; the rest
    # (8-bit Subject included) is unchanged.
    assert head == (b"From: ann@example.org\nSubject: caf\xc3\xa9\nMIME-Version: 1.0\n"
                    b"Content-Type: text/plain; charset=utf-8\nX-After: 1\n"
                    b"Content-Transfer-Encoding: quoted-printable")
    assert body == b"caf=C3=A9 cr=C3=A8me br=C3=BBl=C3=A9e\nsecond line\n"
    msg = parse(out)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_content() == "café crème brûlée\nsecond line\n"


@pytest.mark.parametrize("value", [b"8bit", b"8BIT", b"binary", b" 8bit (comment)"])
def test_encoding_names(value):
    out = whole(b"Content-Transfer-Encoding:" + value + b"\n\n\xff\n")
    assert out == b"Content-Transfer-Encoding: quoted-printable\n\n=FF\n"


def test_folded_encoding_header_goes_whole():
    out = whole(b"Subject: a\nContent-Transfer-Encoding:\n 8bit\nTo: b\n\n\xe9\n")
    assert out == b"Subject: a\nTo: b\nContent-Transfer-Encoding: quoted-printable\n\n=E9\n"


def test_message_without_mime_version_is_converted_too():
    # mime_state pays no attention to MIME-Version
    out = whole(b"Subject: a\nContent-Transfer-Encoding: 8bit\n\n\xe9\n")
    assert out.endswith(b"Content-Transfer-Encoding: quoted-printable\n\n=E9\n")


def test_headers_without_body_still_get_their_encoding():
    out = whole(b"Subject: a\nContent-Transfer-Encoding: 8bit\n")
    assert out == b"Subject: a\nContent-Transfer-Encoding: quoted-printable\n"


def test_body_without_empty_line_after_the_primary_headers():
    out = whole(b"Subject: a\nContent-Transfer-Encoding: 8bit\n\xe9t\xe9\n")
    assert out == b"Subject: a\nContent-Transfer-Encoding: quoted-printable\n\n=E9t=E9\n"


# -- quoted-printable rules -------------------------------------------------------------------

HDR = b"Content-Transfer-Encoding: 8bit\n\n"
OUT_HDR = b"Content-Transfer-Encoding: quoted-printable\n\n"


def test_equals_sign_control_characters_and_trailing_white_space():
    out = whole(HDR + b"a=b \nx\t\n\tin\tside\t \nnul\x00esc\x1bdel\x7f\n \n\n")
    assert out == OUT_HDR + (b"a=3Db=20\nx=09\n\tin\tside\t=20\nnul=00esc=1Bdel=7F\n=20\n\n")


def test_long_lines_get_soft_breaks_where_postfix_puts_them():
    out = whole(HDR + b"a" * 100 + b"\n")
    assert out == OUT_HDR + b"a" * 73 + b"=\n" + b"a" * 27 + b"\n"
    # An encoded byte never straddles a soft break; a line never exceeds 76.
    out = whole(HDR + b"\xe9" * 60 + b"\n")
    lines = body_lines(out)
    assert lines[0] == b"=E9" * 25 + b"="
    assert all(len(line) <= 76 for line in lines)
    assert quopri.decodestring(b"\n".join(lines)) == b"\xe9" * 60 + b"\n"


def reference_qp(lines: list[bytes]) -> bytes:
    """mime_state_downgrade() byte by byte, the way Postfix writes it."""
    out = bytearray()
    for text in lines:
        buf = bytearray()
        for c in text:
            if len(buf) > 72:
                out += buf + b"=\n"
                buf.clear()
            buf += b"=%02X" % c if (c < 32 and c != 9) or c == 61 or c > 126 else bytes((c,))
        if buf and buf[-1] in (32, 9):
            buf[-1:] = b"=%02X" % buf[-1]
        out += buf + b"\n"
    return bytes(out)


@given(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"")),
                min_size=1, max_size=12))
@settings(max_examples=300, deadline=None)
def test_random_8bit_text_round_trips(lines):
    text = b"\n".join(lines) + b"\n"
    msg = (b"Subject: t\nMIME-Version: 1.0\nContent-Type: text/plain; charset=latin-1\n"
           b"Content-Transfer-Encoding: 8bit\n\n" + text)
    out = whole(msg)
    assert out.isascii()
    body = out.split(b"\n\n", 1)[1]
    assert all(len(line) <= 76 for line in body.split(b"\n"))
    assert quopri.decodestring(body) == text
    assert body == reference_qp(lines)
    assert whole(msg, line_limit=50) == out  # long lines in pieces
    part = parse(out)
    assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert part.get_payload(decode=True) == text
    assert bytewise(msg) == out


# -- multipart and attached messages ----------------------------------------------------------

def test_multipart_alternative_with_an_8bit_and_a_base64_part():
    out = whole(ALTERNATIVE)
    assert out.isascii()
    # The base64 part and everything around the parts are unchanged.
    assert (b"--alt\nContent-Type: text/html; charset=utf-8\n"
            b"Content-Transfer-Encoding: base64\n\nPHA+bmHDr3ZlPC9wPg==\n--alt--\n") in out
    assert (b"--alt\nContent-Type: text/plain; charset=iso-8859-1\n"
            b"Content-Transfer-Encoding: quoted-printable\n\nna=EFve caf=E9\n") in out
    plain, html = parse(out).iter_parts()
    assert plain.get_content() == "naïve café"  # the last LF belongs to the boundary
    assert html.get_content() == "<p>naïve</p>"


def test_nested_multipart():
    out = whole(NESTED)
    assert out.isascii()
    head = out.split(b"\n\n", 1)[0]
    # A multipart entity is never quoted-printable: its encoding becomes 7bit.
    assert head.endswith(b"boundary=\"outer\"\nContent-Transfer-Encoding: 7bit")
    assert b"--inner\nContent-Type: text/plain\n\nplain\n--inner--\n" in out
    msg = parse(out)
    alt, euro = msg.iter_parts()
    first, second = alt.iter_parts()
    assert first.get_content() == "été"
    assert first["Content-Transfer-Encoding"] == "quoted-printable"
    assert second.get_content() == "plain"
    assert euro.get_content() == "€ 5"


def test_attached_message_is_converted_inside():
    out = whole(RFC822)
    assert out.isascii()
    assert (b"--m\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 7bit\n\n"
            b"From: bob@example.org\nSubject: inner\nMIME-Version: 1.0\n"
            b"Content-Type: text/plain; charset=utf-8\n"
            b"Content-Transfer-Encoding: quoted-printable\n\ngr=C3=BC=C3=9Fe\n--m--\n") in out
    _text, attached = parse(out).iter_parts()
    inner = attached.get_content()
    assert inner["Subject"] == "inner"
    assert inner.get_content() == "grüße"


def test_multipart_digest_parts_default_to_message_rfc822():
    msg = (b"Content-Type: multipart/digest; boundary=d\n\n--d\n\n"
           b"Subject: one\nContent-Transfer-Encoding: 8bit\n\n\xe9\n--d--\n")
    assert whole(msg) == (b"Content-Type: multipart/digest; boundary=d\n\n--d\n\n"
                          b"Subject: one\nContent-Transfer-Encoding: quoted-printable\n\n"
                          b"=E9\n--d--\n")


def test_preamble_and_epilogue_are_not_converted():
    msg = (b"Content-Type: multipart/mixed; boundary=b\nContent-Transfer-Encoding: 8bit\n\n"
           b"pr\xe9\n--b\nContent-Transfer-Encoding: 8bit\n\n\xe9\n--b--\n\xe9pi\n")
    assert whole(msg) == (b"Content-Type: multipart/mixed; boundary=b\n"
                          b"Content-Transfer-Encoding: 7bit\n\npr\xe9\n--b\n"
                          b"Content-Transfer-Encoding: quoted-printable\n\n=E9\n--b--\n\xe9pi\n")


def test_nesting_limit():
    def nested(depth: int) -> bytes:
        head = b"".join(b"--b%d\nContent-Type: multipart/mixed; boundary=b%d\n\n" % (i, i + 1)
                        for i in range(depth))
        return (b"Content-Type: multipart/mixed; boundary=b0\n\n" + head + b"--b%d\n\nx\n" % depth)

    conv = Downgrader(max_depth=3)
    out = conv.feed(nested(4)) + conv.finish()
    assert conv.error is None and out == nested(4)
    conv = Downgrader(max_depth=3)
    conv.feed(nested(5))
    assert conv.error == NESTING_ERROR == ("5.6.0", "MIME nesting exceeds safety limit")
    with pytest.raises(DowngradeError) as info:
        list(downgrade([nested(5)], max_depth=3))
    assert (info.value.dsn, info.value.text) == NESTING_ERROR


def test_boundaries_are_cut_at_the_boundary_length_limit():
    msg = (b"Content-Type: multipart/mixed; boundary=abcdefgh\n\n--abcdXYZ\n"
           b"Content-Transfer-Encoding: 8bit\n\n\xe9\n--abcd--\n\xe9\n")
    assert whole(msg, bound_len=4) == (
        b"Content-Type: multipart/mixed; boundary=abcdefgh\n\n--abcdXYZ\n"
        b"Content-Transfer-Encoding: quoted-printable\n\n=E9\n--abcd--\n\xe9\n")


# -- line ends, chunks and long lines ---------------------------------------------------------

def test_crlf_input_keeps_crlf():
    msg = SINGLE_8BIT.replace(b"\n", b"\r\n") + b"\xe9" * 30 + b"\r\n"
    out = whole(msg)
    assert b"\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" in out
    assert out.count(b"\n") == out.count(b"\r\n")
    assert out.endswith(b"=E9" * 25 + b"=\r\n" + b"=E9" * 5 + b"\r\n")
    assert parse(out).get_payload(decode=True) == (
        "café crème brûlée\r\nsecond line\r\n".encode() + b"\xe9" * 30 + b"\r\n")
    assert bytewise(msg) == out


@pytest.mark.parametrize("msg", ALL)
def test_every_split_gives_the_same_output(msg):
    expected = whole(msg)
    assert bytewise(msg) == expected
    for at in range(len(msg) + 1):
        assert split(msg, at) == expected


@pytest.mark.parametrize("msg", ALL)
def test_lines_taken_in_pieces_give_the_same_output(msg):
    # A line longer than line_limit is read in pieces, as Postfix reads
    # CONT records (a header name must fit in the first piece); the output
    # does not change.
    expected = whole(msg)
    assert whole(msg, line_limit=30) == expected
    assert bytewise(msg, line_limit=30) == expected


def test_long_body_line_in_pieces():
    msg = HDR + b"x" * 5000 + b"\xe9 \n--not-a-boundary\n"
    expected = whole(msg)
    assert whole(msg, line_limit=100) == expected == bytewise(msg, line_limit=64)
    assert quopri.decodestring(expected.split(b"\n\n", 1)[1]) == msg.split(b"\n\n", 1)[1]
    assert expected.endswith(b"x=E9=20\n--not-a-boundary\n")


def test_last_line_without_line_end():
    assert whole(HDR + b"a \xe9") == OUT_HDR + b"a =E9"
    assert whole(HDR + b"a ") == OUT_HDR + b"a=20"
    assert whole(b"Subject: x\n\nend\r") == b"Subject: x\n\nend\r"


def test_feed_after_finish():
    conv = Downgrader()
    conv.feed(b"Subject: x\n\n")
    conv.finish()
    assert conv.finish() == b""
    with pytest.raises(RuntimeError):
        conv.feed(b"more")


def test_downgrade_iterates_over_chunks():
    chunks = [SINGLE_8BIT[:30], SINGLE_8BIT[30:90], SINGLE_8BIT[90:]]
    assert b"".join(downgrade(chunks)) == whole(SINGLE_8BIT)

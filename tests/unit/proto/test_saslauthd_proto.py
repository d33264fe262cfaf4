"""The saslauthd socket protocol core (hato.proto.saslauthd)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.proto.saslauthd import (MAX_REQ_LEN, RequestError, RequestReader,
                                  SaslauthdProtocolError, SaslauthdRequest, encode_reply,
                                  encode_request, parse_reply, reply_length)


def counted(*fields: bytes) -> bytes:
    return b"".join(struct.pack(">H", len(f)) + f for f in fields)


def test_encode_request_is_four_counted_strings():
    assert encode_request("bob", "s3cret", "smtp", "") == counted(b"bob", b"s3cret", b"smtp", b"")
    assert encode_request("jöe", b"pw", "smtp", "example.org") == counted(
        "jöe".encode(), b"pw", b"smtp", b"example.org")


def test_encode_request_refuses_what_saslauthd_would_misread():
    with pytest.raises(SaslauthdProtocolError):
        encode_request("bob", "secret\0junk", "smtp", "")  # saslauthd would check "secret"
    with pytest.raises(SaslauthdProtocolError):
        encode_request("x" * (MAX_REQ_LEN + 1), "pw", "smtp", "")
    encode_request("x" * MAX_REQ_LEN, "pw", "smtp", "")  # exactly the limit is fine


def test_max_req_len_is_cyrus_2_1_28s():
    assert MAX_REQ_LEN == 256


def read_all(data: bytes, *, bytewise: bool):
    reader = RequestReader()
    result = None
    if bytewise:
        for i in range(len(data)):
            result = reader.feed(data[i:i + 1])
    else:
        result = reader.feed(data)
    return reader, result


@pytest.mark.parametrize("bytewise", [False, True])
def test_reader_reads_a_request(bytewise):
    data = encode_request("bob", "s3cret pw", "smtp", "example.org")
    reader, result = read_all(data, bytewise=bytewise)
    assert result == SaslauthdRequest(b"bob", b"s3cret pw", b"smtp", b"example.org")
    assert reader.done
    assert "s3cret" not in repr(result)


def test_reader_needs_more_until_the_last_byte():
    data = encode_request("bob", "pw", "smtp", "r")
    reader = RequestReader()
    for i in range(len(data) - 1):
        assert reader.feed(data[i:i + 1]) is None
    assert isinstance(reader.feed(data[-1:]), SaslauthdRequest)
    assert isinstance(reader.feed(b"more"), SaslauthdRequest)  # later bytes change nothing


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize("index,name", [(0, "login"), (1, "password"), (2, "service"),
                                        (3, "realm")])
def test_reader_refuses_a_field_over_the_limit_like_saslauthd(bytewise, index, name):
    fields = [b"bob", b"pw", b"smtp", b""]
    fields[index] = b"x" * (MAX_REQ_LEN + 1)
    _, result = read_all(counted(*fields), bytewise=bytewise)
    assert isinstance(result, RequestError)
    assert result.field == name
    assert result.reply == b"\x00\x03NO "  # what saslauthd 2.1.28 answers


def test_reader_refuses_once_the_count_is_read():
    reader = RequestReader()
    assert isinstance(reader.feed(struct.pack(">H", 300)), RequestError)


def test_reader_refuses_empty_login_and_password_like_saslauthd():
    _, result = read_all(counted(b"", b"pw", b"smtp", b""), bytewise=False)
    assert result.reply == encode_reply(False, "NULL login received")
    _, result = read_all(counted(b"bob", b"", b"smtp", b""), bytewise=False)
    assert result.reply == encode_reply(False, "NULL password received")


def test_reader_refuses_nul_inside_a_field():
    _, result = read_all(counted(b"bob", b"pw\0x", b"smtp", b""), bytewise=False)
    assert isinstance(result, RequestError) and result.field == "password"


def test_reader_eof():
    reader = RequestReader()
    reader.feed(counted(b"bob") + b"\x00")
    err = reader.eof()
    assert err.field == "password" and err.reply is None


def test_reader_limit_is_a_parameter():
    reader = RequestReader(max_field=4)
    assert isinstance(reader.feed(counted(b"12345")), RequestError)


def test_replies_as_saslauthd_sends_them():
    assert encode_reply(True) == b"\x00\x02OK"
    assert encode_reply(False, "Incorrect password") == b"\x00\x15NO Incorrect password"
    assert parse_reply(b"\x00\x02OK") == (True, "")
    assert parse_reply(b"\x00\x15NO Incorrect password") == (False, "Incorrect password")
    assert parse_reply(b"\x00\x03NO ") == (False, "")
    assert parse_reply(b"\x00\x0aOK Success\x00") == (True, "Success")  # older servers' NUL
    assert parse_reply(b"\x00\x02NOtrailing") == (False, "")


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x00\x01O", b"\x00\x05OK", b"\x00\x00"])
def test_parse_reply_refuses_short_or_truncated(bad):
    with pytest.raises(SaslauthdProtocolError):
        parse_reply(bad)


def test_reply_length():
    assert reply_length(b"\x00") is None
    assert reply_length(b"\x00\x02O") == 4


fields = st.binary(max_size=MAX_REQ_LEN).filter(lambda b: b"\0" not in b)


@given(fields.filter(bool), fields.filter(bool), fields, fields, st.data())
def test_roundtrip_any_split(login, password, service, realm, data):
    wire = encode_request(login, password, service, realm)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    reader = RequestReader()
    result = None
    last = 0
    for cut in cuts + [len(wire)]:
        result = reader.feed(wire[last:cut])
        last = cut
    assert result == SaslauthdRequest(login, password, service, realm)


@given(st.booleans(), st.text(max_size=200).filter(lambda t: "\0" not in t))
def test_reply_roundtrip(ok, text):
    got_ok, got_text = parse_reply(encode_reply(ok, text))
    assert got_ok == ok
    assert got_text == text.lstrip(" ")

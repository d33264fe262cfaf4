"""Dovecot's auth protocol, client side (hato.proto.dovecot_auth)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.proto.dovecot_auth import (AuthReply, DovecotProtocolError, Handshake, LineReader, Mech,
                                     encode_auth, encode_cont, encode_handshake,
                                     filter_mechanisms, parse_reply, tabescape, tabunescape)

# What Debian's Dovecot 2.3.19 sends with auth_mechanisms = plain login cram-md5.
DOVECOT_HANDSHAKE = (b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
                     b"MECH\tCRAM-MD5\tdictionary\tactive\nSPID\t31810\nCUID\t1\n"
                     b"COOKIE\tfce883a9cde48c970affd7e9cc8d1ab1\nDONE\n")


def run_handshake(data: bytes, *, bytewise: bool) -> tuple[Handshake, list[str]]:
    reader = LineReader()
    hs = Handshake()
    rest: list[str] = []
    chunks = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    for chunk in chunks:
        for line in reader.feed(chunk):
            if hs.done:
                rest.append(line)
            else:
                hs.feed_line(line)
    return hs, rest


# -- escaping: libdovecot's str_tabescape / str_tabunescape ------------------

@pytest.mark.parametrize("raw,escaped", [
    ("a\tb", "a\x01tb"), ("a\nb", "a\x01nb"), ("a\rb", "a\x01rb"), ("a\x01b", "a\x011b"),
    ("a\x02b", "a\x02b"), ("a\\b", "a\\b"), ("plain", "plain"),
])
def test_tabescape_matches_libdovecot(raw, escaped):
    # Pairs taken from calling libdovecot.so.0's str_tabescape (Dovecot 2.3.19).
    assert tabescape(raw) == escaped
    assert tabunescape(escaped) == raw


@pytest.mark.parametrize("escaped,raw", [("a\x01lb", "alb"), ("a\x01xb", "axb"), ("a\x01", "a")])
def test_tabunescape_quirks_match_libdovecot(escaped, raw):
    assert tabunescape(escaped) == raw


@given(st.text())
def test_tabescape_roundtrip(text):
    escaped = tabescape(text)
    assert "\t" not in escaped and "\n" not in escaped and "\r" not in escaped
    assert tabunescape(escaped) == text


# -- handshake ----------------------------------------------------------------

def test_client_handshake_is_postfixs():
    assert encode_handshake(4242) == b"VERSION\t1\t0\nCPID\t4242\n"


@pytest.mark.parametrize("bytewise", [False, True])
def test_handshake_of_real_dovecot(bytewise):
    hs, rest = run_handshake(DOVECOT_HANDSHAKE + b"OK\t1\tuser=x\n", bytewise=bytewise)
    assert hs.done and hs.version == (1, 2)
    assert hs.mechs == [Mech("PLAIN", frozenset({"plaintext"})),
                        Mech("LOGIN", frozenset({"plaintext"})),
                        Mech("CRAM-MD5", frozenset({"dictionary", "active"}))]
    assert hs.spid == "31810" and hs.cuid == "1"
    assert hs.cookie == "fce883a9cde48c970affd7e9cc8d1ab1"
    assert rest == ["OK\t1\tuser=x"]


def test_handshake_ignores_unknown_lines_and_drops_private_mechs():
    hs, _ = run_handshake(b"VERSION\t1\t3\nFOO\tbar\nMECH\tPLAIN\tplaintext\n"
                          b"MECH\tOAUTHBEARER\tprivate\nMECH\tEXTERNAL\nSPID\t1\nDONE\n",
                          bytewise=False)
    assert [m.name for m in hs.offered()] == ["PLAIN", "EXTERNAL"]


@pytest.mark.parametrize("data,text", [
    (b"VERSION\t2\t0\n", "mismatch"),
    (b"VERSION\tx\n", "version error"),
    (b"VERSION\t1\t2\nSPID\t1\n", "wrong auth socket"),
    (b"DONE\n", "version error"),
])
def test_handshake_errors(data, text):
    with pytest.raises(DovecotProtocolError, match=text):
        run_handshake(data, bytewise=False)


def test_line_reader_limit():
    reader = LineReader(max_line=10)
    with pytest.raises(DovecotProtocolError):
        reader.feed(b"x" * 11)
    reader = LineReader(max_line=10)
    assert reader.feed(b"0123456789\nab") == ["0123456789"]
    assert reader.pending == 2


# -- requests -----------------------------------------------------------------

def test_auth_line_as_postfix_writes_it():
    line = encode_auth(7, "plain", "smtp", local_ip="192.0.2.1", remote_ip="198.51.100.2",
                       secured=True, initial_response=b"\0bob\0pw")
    assert line == (b"AUTH\t7\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\t"
                    b"rip=198.51.100.2\tsecured\tresp=" + base64.b64encode(b"\0bob\0pw") + b"\n")


def test_auth_line_without_addresses_or_initial_response():
    assert encode_auth(1, "LOGIN") == b"AUTH\t1\tLOGIN\tservice=smtp\tnologin\n"
    assert encode_auth(1, "PLAIN", initial_response=b"").endswith(b"\tresp=\n")


def test_auth_line_refuses_a_mechanism_that_would_break_the_line():
    with pytest.raises(DovecotProtocolError):
        encode_auth(1, "PLAIN\tx")


def test_cont_line():
    assert encode_cont(3, b"bob") == b"CONT\t3\tYm9i\n"
    assert encode_cont(3, b"") == b"CONT\t3\t\n"


# -- replies ------------------------------------------------------------------

def test_ok_reply():
    reply = parse_reply("OK\t1\tuser=alice")
    assert reply == AuthReply("OK", 1, None, {"user": "alice"}, frozenset())
    assert reply.user == "alice" and not reply.temporary


def test_ok_with_final_data():
    assert parse_reply("OK\t2\tuser=a\tresp=" + base64.b64encode(b"v=xyz").decode()).data \
        == b"v=xyz"


def test_cont_reply():
    assert parse_reply("CONT\t5\tVXNlcm5hbWU6").data == b"Username:"
    assert parse_reply("CONT\t3\t").data == b""  # PLAIN without initial response


def test_fail_replies():
    reply = parse_reply("FAIL\t4\tuser=al\x01tice\toriginal_user=al\x01tice")
    assert reply.kind == "FAIL" and reply.user == "al\tice"  # as Dovecot 2.3.19 escapes it
    reply = parse_reply("FAIL\t9\treason=Try later\ttemp")
    assert reply.reason == "Try later" and reply.temporary
    assert parse_reply("FAIL\t9\tcode=temp_fail").temporary
    assert not parse_reply("FAIL\t9\tauthz").temporary


@pytest.mark.parametrize("line", ["SPID\t1", "", "NOTIFY\tx"])
def test_other_lines_are_not_replies(line):
    assert parse_reply(line) is None


@pytest.mark.parametrize("line", ["OK", "OK\tx", "CONT\t1", "CONT\t1\t!!notbase64"])
def test_bad_replies(line):
    with pytest.raises(DovecotProtocolError):
        parse_reply(line)


@pytest.mark.parametrize("bytewise", [False, True])
def test_replies_fed_in_pieces(bytewise):
    data = b"OK\t2\tuser=alice\nFAIL\t1\tuser=alice\nCONT\t3\tUGFzc3dvcmQ6\n"
    reader = LineReader()
    lines: list[str] = []
    for chunk in ([data[i:i + 1] for i in range(len(data))] if bytewise else [data]):
        lines += reader.feed(chunk)
    replies = [parse_reply(line) for line in lines]
    assert [(r.kind, r.id) for r in replies] == [("OK", 2), ("FAIL", 1), ("CONT", 3)]


# -- security options ---------------------------------------------------------

MECHS = [Mech("PLAIN", frozenset({"plaintext"})), Mech("LOGIN", frozenset({"plaintext"})),
         Mech("CRAM-MD5", frozenset({"dictionary", "active"})),
         Mech("ANONYMOUS", frozenset({"anonymous"})),
         Mech("SCRAM-SHA-256", frozenset({"mutual-auth", "dictionary"})),
         Mech("SECRET", frozenset({"private"}))]


@pytest.mark.parametrize("options,expected", [
    ([], ["PLAIN", "LOGIN", "CRAM-MD5", "ANONYMOUS", "SCRAM-SHA-256"]),
    (["noanonymous"], ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]),
    (["noanonymous", "noplaintext"], ["CRAM-MD5", "SCRAM-SHA-256"]),
    (["noactive"], ["PLAIN", "LOGIN", "ANONYMOUS", "SCRAM-SHA-256"]),
    (["nodictionary"], ["PLAIN", "LOGIN", "ANONYMOUS"]),
    (["mutual_auth"], ["SCRAM-SHA-256"]),
])
def test_filter_by_dovecots_properties_as_postfix(options, expected):
    assert filter_mechanisms(MECHS, options) == expected


def test_filter_unknown_option():
    with pytest.raises(ValueError):
        filter_mechanisms(MECHS, ["nosuchthing"])

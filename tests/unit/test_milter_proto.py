"""The sans-IO milter codec, negotiation, reply loop and milter list parser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.config.errors import ConfigError
from hato.proto import milter as mp
from hato.proto.milter import (
    AddHeader, AddRecipient, ChangeHeader, ChangeSender, DeleteRecipient, InsertHeader,
    MilterConfigError, MilterProtocolError, MilterSpec, PacketDecoder, ReplaceBody, Verdict)
from hato.proto.milter_list import macro_defaults, parse_milter_list, split_macro_names


def pkt(cmd: str, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd.encode() + data


# --- framing and commands --------------------------------------------------------

def test_encoders_match_the_wire_format():
    assert mp.encode_optneg(6, 0x1FF, 0x1FFFFF) == pkt("O", struct.pack(">III", 6, 0x1FF, 0x1FFFFF))
    assert mp.encode_macros("C", [("j", "mx"), ("{daemon_name}", "d")]) == \
        pkt("D", b"Cj\0mx\0{daemon_name}\0d\0")
    assert mp.encode_macros("H", []) == pkt("D", b"H")
    assert mp.encode_connect("host", "4", 25, "1.2.3.4") == \
        pkt("C", b"host\0" + b"4" + struct.pack(">H", 25) + b"1.2.3.4\0")
    assert mp.encode_connect("host", "U") == pkt("C", b"host\0U")
    assert mp.encode_helo("h") == pkt("H", b"h\0")
    assert mp.encode_mail(["<a@b>", "SIZE=1"]) == pkt("M", b"<a@b>\0SIZE=1\0")
    assert mp.encode_rcpt(["<c@d>"]) == pkt("R", b"<c@d>\0")
    assert mp.encode_header("Subject", "x") == pkt("L", b"Subject\0x\0")
    assert mp.encode_unknown("FOO bar") == pkt("U", b"FOO bar\0")
    for fn, cmd in ((mp.encode_data, "T"), (mp.encode_eoh, "N"), (mp.encode_eob, "E"),
                    (mp.encode_abort, "A"), (mp.encode_quit, "Q"), (mp.encode_quit_nc, "K")):
        assert fn() == pkt(cmd)
    assert mp.encode_body(b"ab\r\n") == pkt("B", b"ab\r\n")


def test_decoder_whole_and_byte_by_byte():
    stream = pkt("c") + pkt("y", b"550 5.7.1 no\0") + pkt("h", b"X\0v\0")
    whole = PacketDecoder()
    whole.feed(stream)
    got = []
    while (p := whole.next_packet()) is not None:
        got.append(p)
    assert [p.cmd for p in got] == ["c", "y", "h"]
    one = PacketDecoder()
    got2 = []
    for b in stream:
        one.feed(bytes([b]))
        while (p := one.next_packet()) is not None:
            got2.append(p)
    assert got2 == got


@given(st.lists(st.tuples(st.sampled_from("acdhmy+-"), st.binary(max_size=50)), max_size=8),
       st.data())
def test_decoder_any_split(packets, data):
    stream = b"".join(pkt(c, d) for c, d in packets)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    dec, got, last = PacketDecoder(), [], 0
    for cut in cuts + [len(stream)]:
        dec.feed(stream[last:cut])
        last = cut
        while (p := dec.next_packet()) is not None:
            got.append((p.cmd, p.data))
    assert got == packets


def test_decoder_rejects_bad_lengths():
    dec = PacketDecoder()
    dec.feed(b"\0\0\0\0")
    with pytest.raises(MilterProtocolError, match="bad packet length: 0"):
        dec.next_packet()
    dec = PacketDecoder()
    dec.feed(b"\xff\xff\xff\xff")
    with pytest.raises(MilterProtocolError, match="unreasonable packet length: 4294967295 > 1073741823"):
        dec.next_packet()


# --- replies -----------------------------------------------------------------------

def test_parse_every_reply():
    assert mp.parse_reply("c", b"").cmd == "c"
    assert mp.parse_reply("c", b"x").extra == 1
    assert mp.parse_reply("y", b"451 4.7.0 later\0").text == "451 4.7.0 later"
    assert mp.parse_reply("q", b"spam\0").text == "spam"
    assert mp.parse_reply("h", b"X-A\0v\0").edit == AddHeader("X-A", " v")
    assert mp.parse_reply("h", b"X-A\0v\0", leadspc=True).edit == AddHeader("X-A", "v")
    assert mp.parse_reply("i", struct.pack(">I", 0) + b"X\0v\0").edit == InsertHeader(0, "X", " v")
    assert mp.parse_reply("m", struct.pack(">I", 0) + b"Subject\0new\0").edit == \
        ChangeHeader(1, "Subject", " new")
    assert mp.parse_reply("m", struct.pack(">I", 2) + b"Subject\0\0").edit == \
        ChangeHeader(2, "Subject", None)
    assert mp.parse_reply("+", b"<x@y>\0").edit == AddRecipient("<x@y>")
    assert mp.parse_reply("2", b"<x@y>\0NOTIFY=NEVER\0").edit == AddRecipient("<x@y>", "NOTIFY=NEVER")
    assert mp.parse_reply("2", b"<x@y>\0").edit == AddRecipient("<x@y>", "")
    assert mp.parse_reply("-", b"<x@y>\0").edit == DeleteRecipient("<x@y>")
    assert mp.parse_reply("e", b"<s@y>\0").edit == ChangeSender("<s@y>", "")
    assert mp.parse_reply("e", b"<s@y>\0SIZE=1\0").edit == ChangeSender("<s@y>", "SIZE=1")
    assert mp.parse_reply("b", b"a\r\nb").edit == ReplaceBody(b"a\r\nb")


def test_parse_reply_errors_are_postfix_warnings():
    with pytest.raises(MilterProtocolError, match="missing string null termimator"):
        mp.parse_reply("h", b"X-A\0v")
    with pytest.raises(MilterProtocolError, match="input packet too short for network long"):
        mp.parse_reply("i", b"\0\0")
    with pytest.raises(MilterProtocolError, match="left-over data 2 bytes"):
        mp.parse_reply("+", b"a\0xx")
    with pytest.raises(MilterProtocolError, match="packet too short for string"):
        mp.parse_reply("h", b"X\0")


def test_replace_body_lines_as_postfix_writes_them():
    assert ReplaceBody(b"a\r\nb\nc\rd\r\n").lines() == [b"a", b"b", b"c\rd"]
    assert ReplaceBody(b"last line without crlf").lines() == [b"last line without crlf"]
    assert ReplaceBody(b"").lines() == []
    assert ReplaceBody(b"\r\n").lines() == [b""]


def test_reply_code_validation_and_percent():
    assert mp.valid_reply_code("550 5.7.1 no")
    assert mp.valid_reply_code("451-4.7.1 first\r\n451 4.7.1 second")
    assert mp.valid_reply_code("550 no enhanced code")
    assert not mp.valid_reply_code("250 2.0.0 ok")
    assert not mp.valid_reply_code("550 4.7.1 class mismatch")
    assert not mp.valid_reply_code("55")
    assert not mp.valid_reply_code("550x")
    assert mp.unescape_percent("550 5.7.1 100%% sure") == "550 5.7.1 100% sure"
    assert mp.unescape_percent("550 5.7.1 50% off") == "550 5.7.1 50 off"
    assert mp.unescape_percent("550 trailing %") == "550 trailing "
    assert mp.soft_bounce_reply("550-5.7.1 a\r\n550 5.7.1 b") == "450-4.7.1 a\r\n450 4.7.1 b"


def test_split_header_and_chunks():
    assert mp.split_header("Subject: hi", False) == ("Subject", "hi")
    assert mp.split_header("Subject: hi", True) == ("Subject", " hi")
    assert mp.split_header("Subject:\thi", False) == ("Subject", "\thi")
    assert mp.split_header("Subject :  two", False) == ("Subject", " two")
    assert mp.split_header("X: a\n\tb", False) == ("X", "a\n\tb")
    chunks = list(mp.body_chunks([b"x" * 70000, b"y"]))
    assert [len(c) for c in chunks] == [65535, 70002 + 3 - 65535]
    assert b"".join(chunks) == b"x" * 70000 + b"\r\ny\r\n"
    assert list(mp.body_chunks([])) == []
    assert list(mp.body_chunks([b"x" * 65533])) == [b"x" * 65533 + b"\r\n"]


# --- negotiation ---------------------------------------------------------------------

def test_protocol_parameter():
    assert mp.parse_protocol("6") == (6, 0x1FFFFF)
    assert mp.parse_protocol("2") == (2, 0x7F)
    assert mp.parse_protocol("3") == (3, 0x17F)
    assert mp.parse_protocol("4") == (4, 0x37F)
    assert mp.parse_protocol("2 no_header_reply") == (2, 0xFF)
    with pytest.raises(MilterConfigError, match="bad protocol information: 5"):
        mp.parse_protocol("5")
    with pytest.raises(MilterConfigError, match="bad protocol information: 4"):
        mp.parse_protocol("2,4")
    with pytest.raises(MilterConfigError, match="no protocol version information"):
        mp.parse_protocol("no_header_reply")


def neg_data(version, actions, protocol, lists=()):
    data = struct.pack(">III", version, actions, protocol)
    for stage, names in lists:
        data += struct.pack(">I", stage) + names.encode() + b"\0"
    return data


def test_negotiate_downgrades_and_symlists():
    n = mp.negotiate(6, 0x1FFFFF, "O", neg_data(6, 0x1FF, 0x100000,
                                                [(mp.SMFIM_HELO, "{client_addr}"), (9, "x")]))
    assert n.leadspc and n.np_mask == 0
    assert n.macros == {"helo": "{client_addr}"}
    assert n.warnings == ["milter {name}: ignoring unknown macro type 9"]
    assert mp.negotiate(6, 0x1FFFFF, "O", neg_data(2, 1, 0)).np_mask == \
        mp.SMFIP_NOUNKNOWN | mp.SMFIP_NODATA
    assert mp.negotiate(6, 0x1FFFFF, "O", neg_data(3, 1, 0)).np_mask == mp.SMFIP_NODATA
    assert mp.negotiate(6, 0x1FFFFF, "O", neg_data(5, 1, 0)).np_mask == 0   # 5 → 4's events
    assert mp.negotiate(2, 0x7F, "O", neg_data(2, 1, 0)).np_mask == \
        mp.SMFIP_NOUNKNOWN | mp.SMFIP_NODATA
    old = mp.negotiate(6, 0x1FFFFF, "O", neg_data(1, 1, 0))
    assert old.warnings == ["milter {name}: unexpected protocol version 1"]


def test_negotiate_failures():
    with pytest.raises(MilterProtocolError, match="protocol version 6 conflict with MTA protocol version 4"):
        mp.negotiate(4, 0x37F, "O", neg_data(6, 1, 0))
    with pytest.raises(MilterProtocolError, match="request mask 0x200 conflict with MTA request mask 0x1ff"):
        mp.negotiate(6, 0x1FFFFF, "O", neg_data(6, 0x200, 0))
    with pytest.raises(MilterProtocolError, match='unexpected reply "c" in initial handshake'):
        mp.negotiate(6, 0x1FFFFF, "c", b"")
    with pytest.raises(MilterProtocolError, match="read error in initial handshake"):
        mp.negotiate(6, 0x1FFFFF, "O", b"\0\0\0\6")


# --- one event's replies ---------------------------------------------------------------

def feed(ev: mp.EventReplies, *packets):
    out = None
    for cmd, data in packets:
        assert out is None
        out = ev.receive(cmd, data)
    return out


def test_event_decisions():
    assert feed(mp.EventReplies("M"), ("p", b""), ("p", b""), ("c", b"")).kind == "continue"
    for cmd, kind in (("a", "accept"), ("r", "reject"), ("t", "tempfail"), ("4", "shutdown"),
                      ("s", "skip"), ("d", "discard")):
        assert feed(mp.EventReplies("R"), (cmd, b"")).kind == kind
    out = feed(mp.EventReplies("C"), ("d", b""))
    assert out.kind == "discard_refused"
    assert out.warnings == ["milter {name}: DISCARD action is not allowed for connect or helo"]
    out = feed(mp.EventReplies("R"), ("y", b"550 5.7.1 100%% bad\0"))
    assert (out.kind, out.text) == ("reply", "550 5.7.1 100% bad")
    out = feed(mp.EventReplies("R", soft_bounce=True), ("y", b"550 5.7.1 bad\0"))
    assert out.text == "450 4.7.1 bad"
    out = feed(mp.EventReplies("R"), ("y", b"250 ok\0"))
    assert out.kind == "conf_error" and out.warnings == ["milter {name}: malformed reply: 250 ok"]
    out = feed(mp.EventReplies("R", event_len=7), ("c", b"zz"))
    assert out.kind == "comm_error"
    assert out.warnings == ["milter {name}: reply SMFIR_CONTINUE was followed by 7 data bytes"]
    out = feed(mp.EventReplies("M"), ("h", b"X\0v\0"))
    assert out.kind == "comm_error"
    assert out.warnings == ["milter {name}: unexpected filter response SMFIR_ADDHEADER after event SMFIC_MAIL"]
    out = feed(mp.EventReplies("M"), ("z", b""))
    assert out.warnings == ["milter {name}: unexpected filter response (unknown filter reply)"
                            " after event SMFIC_MAIL"]


def test_event_quarantine_and_edits():
    out = feed(mp.EventReplies("E"), ("q", b"too spammy\0"), ("h", b"X-A\0one\0"),
               ("b", b"new\r\n"), ("b", b"body\r\n"), ("-", b"<a@b>\0"), ("c", b""))
    assert out.kind == "continue" and out.quarantine == "Htoo spammy"
    assert out.edits == [AddHeader("X-A", " one"), ReplaceBody(b"new\r\nbody\r\n"),
                         DeleteRecipient("<a@b>")]
    out = feed(mp.EventReplies("E"), ("b", b"x"), ("h", b"X\0v\0"), ("b", b"y"))
    assert out.kind == "conf_error"
    assert "body replacement requests can't currently be mixed" in out.warnings[0]
    assert out.edits == [ReplaceBody(b"x"), AddHeader("X", " v")]
    out = feed(mp.EventReplies("E"), ("m", struct.pack(">I", 1) + b"\0v\0"))
    assert out.kind == "conf_error" and "null change header name" in out.warnings[0]
    out = feed(mp.EventReplies("E"), ("i", struct.pack(">I", 0xFFFFFFFF) + b"X\0v\0"), ("c", b""))
    assert out.kind == "continue"   # unsigned index: Postfix's check never fires on LP64
    assert feed(mp.EventReplies("E"), ("q", b"x" * 150 + b"\0"), ("a", b"")).quarantine == \
        "H" + "x" * 100


def test_verdicts():
    assert Verdict.from_raw(None).ok
    assert Verdict.from_raw("D").action == "discard"
    assert Verdict.from_raw("S").action == "shutdown"
    assert Verdict.from_raw("Hspam") == Verdict("quarantine", reason="spam")
    assert Verdict.from_raw(mp.REPLY_REJECT) == Verdict("reject", reply="550 5.7.1 Command rejected")
    assert Verdict.from_raw(mp.REPLY_TEMPFAIL).action == "tempfail"
    for raw in (None, "D", "S", "Hx", "550 5.7.1 no", "451 4.7.1 later"):
        assert Verdict.from_raw(raw).raw == raw


# --- milter lists -------------------------------------------------------------------------

def test_parse_milter_list():
    assert parse_milter_list("") == []
    assert parse_milter_list("inet:127.0.0.1:8891, unix:/run/m.sock") == [
        MilterSpec("inet:127.0.0.1:8891"), MilterSpec("unix:/run/m.sock")]
    specs = parse_milter_list(
        "inet:localhost:1 { inet:127.0.0.1:2, connect_timeout=10s, command_timeout=1m,"
        " content_timeout=5, default_action=accept, protocol=4 }"
        " {unix:/x,{ default_action = quarantine }}")
    assert specs[1] == MilterSpec("inet:127.0.0.1:2", 10, 60, 5, "4", "accept")
    assert specs[2] == MilterSpec("unix:/x", default_action="quarantine")


@pytest.mark.parametrize("value, error", [
    ("{ inet:1.2.3.4:5", "milter service syntax error: missing '}' in \"{ inet:1.2.3.4:5\""),
    ("{ }", 'empty milter definition: "{ }"'),
    ("{ inet:a:1, timeout=10s }", 'unknown option: "timeout = 10s"'),
    ("{ inet:a:1, connect_timeout }", "malformed option: missing '=' after attribute name"),
    ("{ inet:a:1, connect_timeout=10x }", "connect_timeout: bad time value or unit: 10x"),
    ("{ inet:a:1, command_timeout=0 }", r"invalid command_timeout: 0 \(min 1\)"),
    ("{ inet:a:1, default_action= }", "bad string length 0 < 1: default_action = "),
])
def test_parse_milter_list_errors(value, error):
    with pytest.raises(ConfigError, match=error):
        parse_milter_list(value)


def test_endpoints():
    assert MilterSpec("inet:127.0.0.1:8891").endpoint() == ("inet", "127.0.0.1", 8891)
    assert MilterSpec("inet:[::1]:8891").endpoint() == ("inet", "::1", 8891)
    assert MilterSpec("inet:8891").endpoint() == ("inet", "localhost", 8891)
    assert MilterSpec("unix:/run/x").endpoint() == ("unix", "/run/x", None)
    assert MilterSpec("local:private/x").endpoint() == ("unix", "private/x", None)
    with pytest.raises(MilterConfigError, match='needs transport:endpoint instead of "nocolon"'):
        MilterSpec("nocolon").endpoint()
    with pytest.raises(MilterConfigError, match="invalid transport name: inet6 in Milter service"):
        MilterSpec("inet6:[::1]:1").endpoint()
    with pytest.raises(MilterConfigError, match="bad port"):
        MilterSpec("inet:host:smtp").endpoint()


def test_macro_names_and_defaults():
    assert split_macro_names("j {daemon_name}, v  _") == ["j", "{daemon_name}", "v", "_"]
    assert macro_defaults("") == {}
    assert macro_defaults("auth_type=none, {client_port}=0 { rcpt_host = x y }") == {
        "{auth_type}": "none", "{client_port}": "0", "{rcpt_host}": "x y"}
    assert macro_defaults("a=1 a=2") == {"{a}": "1"}
    with pytest.raises(ConfigError, match="malformed default macro entry: missing '='"):
        macro_defaults("novalue")

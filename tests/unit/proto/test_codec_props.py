"""Property tests: encode → decode round trips of hato's wire codecs
(hypothesis): the internal attribute protocol, policy delegation, milter
packets, saslauthd, Dovecot auth escaping and PROXY headers."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings, strategies as st

from hato.proto import milter as M
from hato.proto.attr import AttrReader, Attrs, encode
from hato.proto.dovecot_auth import tabescape, tabunescape
from hato.proto.policy import ReplyReader, encode_request, sanitize_name, sanitize_value
from hato.proto.proxy_protocol import ProxyHeader, ProxyReader, encode_v1, encode_v2
from hato.proto.saslauthd import RequestReader, SaslauthdRequest, encode_reply, encode_request \
    as saslauthd_request, parse_reply

FAST = settings(max_examples=100, deadline=None)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
names = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="=\n"),
                min_size=1, max_size=20)


def _feed(reader_feed, blob: bytes, split: int):
    result = None
    for i in range(0, len(blob), split):
        result = reader_feed(blob[i:i + split])
    return result


@FAST
@given(st.lists(st.lists(st.tuples(names, text), max_size=6), max_size=4),
       st.integers(min_value=1, max_value=50))
def test_attr_round_trip(messages, split):
    blob = b"".join(encode(Attrs(items)) for items in messages)
    reader = AttrReader()
    got = []
    for i in range(0, len(blob), split):
        reader.receive_data(blob[i:i + split])
        got.extend(a.items for a in reader.messages())
    assert got == messages


@FAST
@given(text, st.lists(st.tuples(text, text), max_size=8), st.integers(min_value=1, max_value=50))
def test_policy_request_reads_back(action, attrs, split):
    """What encode_request writes, a ReplyReader reads as the same
    (sanitized) attributes: one line per attribute, an empty line after."""
    items = [("action", action), *attrs]
    reader = ReplyReader()
    reply = _feed(reader.receive_data, encode_request(items), split)
    assert reply is not None
    assert reply.attributes == [(sanitize_name(n), sanitize_value(v)) for n, v in items]
    assert reply.action == sanitize_value(action)


@FAST
@given(st.lists(st.tuples(st.sampled_from("OCDHMRTULNBEAQK"), st.binary(max_size=300)),
                max_size=8), st.integers(min_value=1, max_value=64))
def test_milter_packets_round_trip(packets, split):
    blob = b"".join(M.encode_packet(c, d) for c, d in packets)
    dec = M.PacketDecoder()
    got = []
    for i in range(0, len(blob), split):
        dec.feed(blob[i:i + split])
        while (p := dec.next_packet()) is not None:
            got.append((p.cmd, p.data))
    assert got == packets and dec.pending == 0


@FAST
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
               max_size=30), st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                              blacklist_characters="\0"),
                                     max_size=30))
def test_milter_header_strings(name, value):
    packet = M.encode_header(name, value)
    dec = M.PacketDecoder()
    dec.feed(packet)
    p = dec.next_packet()
    assert p.cmd == M.SMFIC_HEADER
    assert p.data == name.encode("utf-8") + b"\0" + value.encode("utf-8") + b"\0"


nonempty = st.binary(min_size=1, max_size=60).filter(lambda b: b"\0" not in b)
field = st.binary(max_size=60).filter(lambda b: b"\0" not in b)


@FAST
@given(nonempty, nonempty, field, field, st.integers(min_value=1, max_value=20))
def test_saslauthd_request_round_trip(login, password, service, realm, split):
    reader = RequestReader()
    got = _feed(reader.feed, saslauthd_request(login, password, service, realm), split)
    assert got == SaslauthdRequest(login, password, service, realm)


@FAST
@given(st.booleans(), st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                                     blacklist_characters="\0"), max_size=80))
def test_saslauthd_reply_round_trip(ok, message):
    got_ok, got_text = parse_reply(encode_reply(ok, message))
    assert got_ok is ok
    assert got_text == message.lstrip(" ")


@FAST
@given(text)
def test_dovecot_tab_escaping(value):
    escaped = tabescape(value)
    assert "\t" not in escaped and "\n" not in escaped
    assert tabunescape(escaped) == value


ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(min_value=0, max_value=2**128 - 1).map(
    lambda n: ipaddress.IPv6Address(n)).filter(lambda a: a.ipv4_mapped is None).map(str)
port = st.integers(min_value=0, max_value=65535)


@FAST
@given(st.one_of(st.tuples(st.just("tcp4"), ipv4, ipv4), st.tuples(st.just("tcp6"), ipv6, ipv6)),
       port, port, st.booleans(), st.integers(min_value=1, max_value=40))
def test_proxy_header_round_trip(addrs, cport, sport, v2, split):
    family, client, server = addrs
    header = ProxyHeader(2 if v2 else 1, "PROXY", family, client, cport, server, sport)
    blob = (encode_v2(header) if v2 else encode_v1(header)) + b"EHLO x\r\n"
    reader = ProxyReader()
    for i in range(0, len(blob), split):
        reader.receive_data(blob[i:i + split])
    assert reader.header() == header
    assert reader.remaining() == b"EHLO x\r\n"

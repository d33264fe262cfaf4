from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings, strategies as st

from hato.proto.proxy_protocol import (
    V1_MAX_LEN, V2_SIGNATURE, ProxyError, ProxyHeader, ProxyReader, encode_v1, encode_v2,
    log_escape,
)

SMTP = b"EHLO client.example\r\n"


def feed_whole(data: bytes, **kw) -> ProxyReader:
    r = ProxyReader(**kw)
    r.receive_data(data)
    return r


def feed_bytewise(data: bytes, **kw) -> ProxyReader:
    r = ProxyReader(**kw)
    for i in range(len(data)):
        r.receive_data(data[i:i + 1])
    return r


FEEDERS = [feed_whole, feed_bytewise]


def parse(data: bytes, feed=feed_whole, **kw) -> ProxyHeader | None:
    return feed(data, **kw).header()


def v2(ver_cmd: int, fam: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes((ver_cmd, fam)) + struct.pack("!H", len(body)) + body


V4_BLOCK = bytes([192, 0, 2, 1, 198, 51, 100, 25]) + struct.pack("!HH", 56324, 25)
V6_BLOCK = (ipaddress.IPv6Address("2001:db8::1").packed
            + ipaddress.IPv6Address("2001:db8::25").packed + struct.pack("!HH", 1, 65535))

TCP4 = ProxyHeader(1, "PROXY", "tcp4", "192.0.2.1", 56324, "198.51.100.25", 25)
TCP6 = ProxyHeader(1, "PROXY", "tcp6", "2001:db8::1", 1, "2001:db8::25", 65535)

# (wire bytes, the header they mean)
GOOD = [
    (b"PROXY TCP4 192.0.2.1 198.51.100.25 56324 25\r\n", TCP4),
    (b"PROXY TCP6 2001:db8::1 2001:db8::25 1 65535\r\n", TCP6),
    (b"PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8::25 1 65535\r\n", TCP6),
    (b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
     ProxyHeader(1, "PROXY", "tcp4", "0.0.0.0", 0, "255.255.255.255", 65535)),
    (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1025 25\r\n",
     ProxyHeader(1, "PROXY", "tcp6", "192.0.2.1", 1025, "::1", 25)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, "LOCAL", "unknown")),
    (b"PROXY UNKNOWN ffff:f::f whatever \x01\xff 99999\r\n", ProxyHeader(1, "LOCAL", "unknown")),
    (v2(0x21, 0x11, V4_BLOCK), ProxyHeader(2, "PROXY", "tcp4", "192.0.2.1", 56324,
                                           "198.51.100.25", 25)),
    (v2(0x21, 0x21, V6_BLOCK), ProxyHeader(2, "PROXY", "tcp6", "2001:db8::1", 1,
                                           "2001:db8::25", 65535)),
    (v2(0x20, 0x00, b""), ProxyHeader(2, "LOCAL", "unknown")),
    (v2(0x20, 0x11, V4_BLOCK), ProxyHeader(2, "LOCAL", "unknown")),   # LOCAL: block ignored
    (v2(0x20, 0x12, b"xyz"), ProxyHeader(2, "LOCAL", "unknown")),     # even UDP, any length
    (v2(0x21, 0x00, b""), ProxyHeader(2, "LOCAL", "unknown")),        # PROXY, AF_UNSPEC
    (v2(0x21, 0x11, V4_BLOCK + b"\x04\x00\x03abc" + b"\x01\x00\x02h2"),  # TLVs skipped
     ProxyHeader(2, "PROXY", "tcp4", "192.0.2.1", 56324, "198.51.100.25", 25)),
    (v2(0x21, 0x31, b"/run/client.sock".ljust(108, b"\0") + b"/run/smtpd".ljust(108, b"\0")),
     ProxyHeader(2, "PROXY", "unix", "/run/client.sock", None, "/run/smtpd", None)),
    (v2(0x21, 0x21, (ipaddress.IPv6Address("::ffff:10.1.2.3").packed
                     + ipaddress.IPv6Address("2001:db8::25").packed + b"\0\1\0\2")),
     ProxyHeader(2, "PROXY", "tcp6", "10.1.2.3", 1, "2001:db8::25", 2)),
]


@pytest.mark.parametrize("feed", FEEDERS)
@pytest.mark.parametrize(("wire", "want"), GOOD)
def test_good_headers(feed, wire, want):
    r = feed(wire + SMTP)
    assert r.header() == want
    assert r.remaining() == SMTP


@pytest.mark.parametrize(("wire", "want"), GOOD)
def test_nothing_until_complete(wire, want):
    r = ProxyReader()
    for i in range(len(wire) - 1):
        r.receive_data(wire[i:i + 1])
        assert r.header() is None
        assert r.remaining() == b""
    r.receive_data(wire[-1:])
    assert r.header() == want and r.remaining() == b""


def test_data_after_the_header_keeps_coming():
    r = ProxyReader()
    r.receive_data(b"PROXY UNKNOWN\r\nEH")
    r.receive_data(b"LO x\r\n")
    assert r.remaining() == b"EHLO x\r\n"
    assert r.remaining() == b"EHLO x\r\n"   # asking does not consume


def test_binary_and_tls_bytes_after_the_header_are_untouched():
    tls_hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(256))
    r = feed_whole(v2(0x21, 0x11, V4_BLOCK) + tls_hello)
    assert r.header() is not None and r.remaining() == tls_hello


# -- errors ------------------------------------------------------------------------

BAD = [
    # (input, Postfix's reason, or hato's where Postfix has none)
    (b"EHLO foo\r\n", "unrecognized protocol header"),
    (b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "unrecognized protocol header"),
    (b"PROXY\r\n", "unrecognized protocol header"),
    (b"\r\n\r\n\0\r\nQUIX\n", "unrecognized protocol header"),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "bad or missing protocol type"),
    (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "bad or missing protocol type"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad or missing protocol type"),
    (b"PROXY \r\n", "bad or missing protocol type"),
    (b"PROXY UNKNOWNX\r\n", "bad or missing protocol type"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "unexpected text after server port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "unexpected text after server port"),
    (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "bad or missing client address"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "bad or missing client address"),
    (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "bad or missing client address"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "bad or missing client address"),
    (b"PROXY TCP4 1.2.3.4\r\n", "bad or missing server address"),
    (b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n", "bad or missing server address"),
    (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad or missing client address"),
    (b"PROXY TCP6 ::1 1::2::3 1 2\r\n", "bad or missing server address"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "bad or missing client port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "bad or missing client port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 025 2\r\n", "bad or missing client port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 +25 2\r\n", "bad or missing client port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "bad or missing server port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "bad or missing server port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xb2\xb5\r\n", "bad or missing server port"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bare <LF> or <CR> in protocol header"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "bare <LF> or <CR> in protocol header"),
    (b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n", "missing protocol header terminator"),
    (v2(0x11, 0x11, V4_BLOCK), "unrecognized protocol version"),
    (v2(0x31, 0x11, V4_BLOCK), "unrecognized protocol version"),
    (v2(0x22, 0x11, V4_BLOCK), "bad command in proxy header"),
    (v2(0x2F, 0x11, V4_BLOCK), "bad command in proxy header"),
    (v2(0x21, 0x12, V4_BLOCK), "unsupported network protocol"),        # UDP over IPv4
    (v2(0x21, 0x22, V6_BLOCK), "unsupported network protocol"),        # UDP over IPv6
    (v2(0x21, 0x32, bytes(216)), "unsupported network protocol"),      # unix datagram
    (v2(0x21, 0x41, V4_BLOCK), "unsupported network protocol"),
    (v2(0x21, 0x10, V4_BLOCK), "unsupported network protocol"),
    (v2(0x21, 0x01, V4_BLOCK), "unsupported network protocol"),
    (v2(0x21, 0x11, V4_BLOCK[:11]), "short address field"),
    (v2(0x21, 0x21, V4_BLOCK), "short address field"),
    (v2(0x21, 0x31, bytes(215)), "short address field"),
    (v2(0x21, 0x11, V4_BLOCK + bytes(600)), "protocol header too long: 628 > 536 bytes"),
]


@pytest.mark.parametrize("feed", FEEDERS)
@pytest.mark.parametrize(("wire", "reason"), BAD)
def test_bad_headers(feed, wire, reason):
    with pytest.raises(ProxyError) as info:
        feed(wire + SMTP)
    assert str(info.value) == reason


def test_v1_length_limit_is_107_bytes():
    # The longest line the spec allows (107 bytes with CRLF) passes ...
    addr = "ffff:" * 7 + "ffff"
    line = f"PROXY UNKNOWN {addr} {addr} 65535 65535\r\n".encode()
    assert len(line) == V1_MAX_LEN
    for feed in FEEDERS:
        assert parse(line, feed) == ProxyHeader(1, "LOCAL", "unknown")
    # ... one more byte does not, whether the CRLF comes late or not at all.
    longer = line.replace(b"PROXY UNKNOWN ", b"PROXY UNKNOWN  ")
    for data in (longer, longer[:-2] + b"x" * 10):
        for feed in FEEDERS:
            with pytest.raises(ProxyError, match="missing protocol header terminator"):
                feed(data)


def test_v1_waits_for_crlf_but_no_longer_than_needed():
    r = ProxyReader()
    r.receive_data(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r")
    assert r.header() is None
    with pytest.raises(ProxyError):
        r.receive_data(b"\r")


@pytest.mark.parametrize(("data", "reason"), [
    (b"G", "unrecognized protocol header"),              # first byte decides
    (b"PROXZ", "unrecognized protocol header"),
    (b"\r\n\r\n\0\r\nQ\0", "unrecognized protocol header"),
    (V2_SIGNATURE + b"\x11", "unrecognized protocol version"),   # ver/cmd byte decides
    (V2_SIGNATURE + b"\x23", "bad command in proxy header"),
    (V2_SIGNATURE + b"\x21\x12", "unsupported network protocol"),  # fam byte decides
    (V2_SIGNATURE + b"\x21\x11\x00\x04", "short address field"),   # length decides
    (V2_SIGNATURE + b"\x21\x11\x02\x10", "protocol header too long: 544 > 536 bytes"),
    (b"PROXY TCP4\n", "bare <LF> or <CR> in protocol header"),
])
def test_errors_come_without_waiting(data, reason):
    r = ProxyReader()
    with pytest.raises(ProxyError) as info:
        r.receive_data(data)
    assert str(info.value) == reason
    assert info.value.data == data


def test_decided_prefixes_wait():
    for prefix in (b"P", b"PROXY", b"PROXY ", b"\r", V2_SIGNATURE[:5], V2_SIGNATURE,
                   V2_SIGNATURE + b"\x21\x11\x00"):
        r = ProxyReader()
        r.receive_data(prefix)
        assert r.header() is None


def test_error_is_sticky():
    r = ProxyReader()
    with pytest.raises(ProxyError):
        r.receive_data(b"HELO x\r\n")
    with pytest.raises(ProxyError, match="unrecognized protocol header"):
        r.receive_data(b"PROXY UNKNOWN\r\n")
    assert r.header() is None and r.remaining() == b""


def test_max_header():
    wire = v2(0x21, 0x11, V4_BLOCK + bytes(100))
    assert parse(wire, max_header=128) is not None
    with pytest.raises(ProxyError, match="too long: 128 > 127"):
        parse(wire, max_header=127)
    with pytest.raises(ValueError):
        ProxyReader(max_header=100)


def test_log_escape_is_postfixs_escape():
    assert log_escape(b"PROXY TCP4 a\\b\r\n") == "PROXY TCP4 a\\\\b\\r\\n"
    # Postfix prints other bytes in octal, three digits (util/unescape.c)
    assert log_escape(b"\0Q\x00\x31\xff") == "\\000Q\\0001\\377"
    assert log_escape(b"\x07\x08\x0c\t\x0b") == "\\a\\b\\f\\t\\v"


def test_error_carries_the_bytes_for_the_log():
    with pytest.raises(ProxyError) as info:
        ProxyReader().receive_data(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\nEHLO x\r\n")
    e = info.value
    assert e.data == b"PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n"      # the line, not the SMTP after it
    assert (f"haproxy read: {e}: {log_escape(e.data)}"
            == "haproxy read: bad or missing server port: PROXY TCP4 1.2.3.4 5.6.7.8 1 x\\r\\n")


# -- encoders ----------------------------------------------------------------------

def test_encode_v1():
    assert encode_v1(TCP4) == b"PROXY TCP4 192.0.2.1 198.51.100.25 56324 25\r\n"
    assert encode_v1(TCP6) == b"PROXY TCP6 2001:db8::1 2001:db8::25 1 65535\r\n"
    assert encode_v1(ProxyHeader.local(1)) == b"PROXY UNKNOWN\r\n"
    for bad in (ProxyHeader(1, "PROXY", "tcp4", "::1", 1, "1.2.3.4", 2),
                ProxyHeader(1, "PROXY", "tcp4", "1.2.3.4", 65536, "1.2.3.4", 2),
                ProxyHeader(1, "PROXY", "tcp4", None, 1, "1.2.3.4", 2),
                ProxyHeader(1, "PROXY", "unix", "/a", None, "/b", None)):
        with pytest.raises(ValueError):
            encode_v1(bad)


def test_encode_v2():
    assert encode_v2(ProxyHeader.local()) == V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert encode_v2(ProxyHeader(2, "PROXY", "unknown")) == V2_SIGNATURE + b"\x21\x00\x00\x00"
    assert encode_v2(TCP4) == v2(0x21, 0x11, V4_BLOCK)
    assert encode_v2(TCP4, tlvs=b"\x04\x00\x01z") == v2(0x21, 0x11, V4_BLOCK + b"\x04\x00\x01z")
    unix = ProxyHeader(2, "PROXY", "unix", "@abstract", None, "/run/smtpd", None)
    assert parse(encode_v2(unix)) == unix
    with pytest.raises(ValueError):
        encode_v2(ProxyHeader(2, "PROXY", "unix", "/" + "x" * 108, None, "/b", None))
    with pytest.raises(ValueError):
        encode_v2(ProxyHeader(2, "MAYBE", "tcp4"))


# -- hypothesis --------------------------------------------------------------------

ipv4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
ipv6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1)).filter(
    lambda a: ipaddress.IPv6Address(a).ipv4_mapped is None)
ports = st.integers(0, 65535)


@st.composite
def headers(draw, version):
    kind = draw(st.sampled_from(["tcp4", "tcp6", "local"]))
    if kind == "local":
        return ProxyHeader.local(version)
    addrs = ipv4 if kind == "tcp4" else ipv6
    return ProxyHeader(version, "PROXY", kind, draw(addrs), draw(ports), draw(addrs),
                       draw(ports))


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        pieces.append(data[last:p])
        last = p
    return pieces


@settings(max_examples=300)
@given(st.one_of(headers(1), headers(2)), st.binary(max_size=40),
       st.lists(st.integers(0, 10_000), max_size=8),
       st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=30)), max_size=4))
def test_round_trip_in_any_split(header, after, cuts, tlvs):
    if header.version == 1:
        wire = encode_v1(header)
    else:
        wire = encode_v2(header, b"".join(bytes([t]) + struct.pack("!H", len(v)) + v
                                          for t, v in tlvs))
    r = ProxyReader()
    for piece in split_at(wire + after, cuts):
        r.receive_data(piece)
    assert r.header() == header
    assert r.remaining() == after


@settings(max_examples=500)
@given(st.binary(max_size=700), st.lists(st.integers(0, 10_000), max_size=8))
def test_garbage_raises_only_proxy_error(data, cuts):
    r = ProxyReader()
    try:
        for piece in split_at(data, cuts):
            r.receive_data(piece)
    except ProxyError:
        return
    if r.header() is None:
        # Still undecided: only a prefix of a header that could yet be valid.
        assert len(data) < 536
    else:
        assert r.remaining() == data[len(data) - len(r.remaining()):]


prefixes = st.sampled_from([b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN",
                            V2_SIGNATURE, V2_SIGNATURE + b"\x21\x11",
                            V2_SIGNATURE + b"\x20\x00", V2_SIGNATURE + b"\x21\x21"])


@settings(max_examples=500)
@given(prefixes, st.binary(max_size=700), st.lists(st.integers(0, 10_000), max_size=8))
def test_garbage_after_a_good_start(prefix, tail, cuts):
    data = prefix + tail
    whole = ProxyReader()
    try:
        whole.receive_data(data)
        whole_result: object = (whole.header(), whole.remaining())
    except ProxyError as e:
        whole_result = str(e)
    split = ProxyReader()
    try:
        for piece in split_at(data, cuts):
            split.receive_data(piece)
        split_result: object = (split.header(), split.remaining())
    except ProxyError as e:
        split_result = str(e)
    assert whole_result == split_result         # the split never changes the verdict
    if isinstance(whole_result, tuple) and whole_result[0] is None:
        # Undecided input never grows past what a header may need.
        assert len(data) < 536

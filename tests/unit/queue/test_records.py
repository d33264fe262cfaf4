"""The record grammar: encoder, push decoder, content records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hato.queue import records as R

record_types = st.sampled_from(sorted(R.NAMES))
record_lists = st.lists(st.tuples(record_types, st.binary(max_size=300)), max_size=30)


def _encode(recs) -> bytes:
    return b"".join(R.encode_record(t, d) for t, d in recs)


def _decode_bytewise(data: bytes, offset: int = 0) -> list[R.Record]:
    dec = R.RecordDecoder(offset)
    out = []
    for i in range(len(data)):
        dec.feed(data[i: i + 1])
        out.extend(dec)
    dec.close()
    return out


def test_length_is_postfix_s_varint():
    assert R.encode_length(0) == b"\x00"
    assert R.encode_length(127) == b"\x7f"
    assert R.encode_length(128) == b"\x80\x01"
    assert R.encode_length(300) == b"\xac\x02"
    assert R.encode_record("N", b"x" * 200)[:3] == b"N\xc8\x01"


def test_type_letters_are_postfix_s():
    assert (R.SIZE, R.TIME, R.FULL, R.FROM, R.RCPT, R.DONE, R.ORCP, R.DRCP, R.ATTR,
            R.WARN, R.MESG, R.NORM, R.CONT, R.XTRA, R.END) == tuple("CTFSRDO/AWMNLXE")
    assert (R.DSN_ORCPT, R.DSN_NOTIFY, R.DSN_RET, R.DSN_ENVID) == ("o", "n", "<", "i")


@given(record_lists, st.integers(0, 1000))
def test_round_trip_whole_and_bytewise(recs, offset):
    data = _encode(recs)
    whole = R.decode_records(data, offset)
    assert [(r.type, r.data) for r in whole] == recs
    assert _decode_bytewise(data, offset) == whole
    # offsets point at the type bytes
    for r in whole:
        assert data[r.offset - offset] == ord(r.type)


@given(record_lists, st.lists(st.integers(1, 50), max_size=40))
def test_any_split_gives_the_same_records(recs, cuts):
    data = _encode(recs)
    dec = R.RecordDecoder()
    out = []
    pos = 0
    for n in cuts:
        dec.feed(data[pos: pos + n])
        out.extend(dec)
        pos += n
    dec.feed(data[pos:])
    out.extend(dec)
    dec.close()
    assert [(r.type, r.data) for r in out] == recs


@given(st.lists(st.tuples(record_types, st.binary(min_size=0, max_size=200)),
                min_size=1, max_size=10), st.data())
def test_truncation_is_reported(recs, data):
    blob = _encode(recs)
    cut = data.draw(st.integers(0, len(blob) - 1))
    dec = R.RecordDecoder()
    dec.feed(blob[:cut])
    got = list(dec)
    ends = set()
    pos = 0
    for t, d in recs:
        pos += len(R.encode_record(t, d))
        ends.add(pos)
    if cut in ends or cut == 0:
        dec.close()
    else:
        with pytest.raises(R.TruncatedRecord):
            dec.close()
    assert len(got) <= len(recs)


def test_garbled_length_is_an_error_not_a_hang():
    with pytest.raises(R.RecordError, match="too many length bytes"):
        R.decode_records(b"N" + b"\xff" * 20)
    with pytest.raises(R.RecordError, match="illegal length"):
        R.decode_records(b"N" + R.encode_length(R.DEFAULT_MAX_SIZE + 1))
    with pytest.raises(R.RecordError, match="illegal length"):
        R.decode_records(b"N\x10abc", max_size=4)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_random_bytes_terminate(blob):
    try:
        recs = R.decode_records(blob)
    except R.RecordError:
        return
    # Whatever decodes encodes back to the same records. (Not always to the
    # same bytes: a length may come with needless continuation bytes, such
    # as 0x81 0x00 for 1, which Postfix's rec_get() accepts too.)
    pairs = [(r.type, r.data) for r in recs]
    assert [(r.type, r.data) for r in R.decode_records(_encode(pairs))] == pairs


def test_a_length_with_needless_continuation_bytes_is_read():
    """Postfix's rec_get() adds up 7-bit groups until one without the
    high bit, whether or not the encoding is the shortest."""
    recs = R.decode_records(b"\x01\x81\x00\x00")
    assert [(r.type, r.data) for r in recs] == [("\x01", b"\x00")]


def test_read_records_from_a_file_like_source():
    recs = [("C", b"x" * 100), ("N", b"y" * 70000), ("E", b"")]
    blob = _encode(recs)
    got = list(R.read_records(lambda off, n: blob[off: off + n], 0, block=7))
    assert [(r.type, r.data) for r in got] == recs
    with pytest.raises(R.TruncatedRecord):
        list(R.read_records(lambda off, n: blob[:-3][off: off + n], 0, block=1000))


# -- content records ---------------------------------------------------------

def _content_of(encoded: bytes) -> bytes:
    return b"".join(R.content_bytes(r.type, r.data) for r in R.decode_records(encoded))


def test_content_lines_are_norm_records():
    enc = R.encode_content(b"Subject: x\r\n\r\nbody\nlast")
    recs = [(r.type, r.data) for r in R.decode_records(enc)]
    assert recs == [("N", b"Subject: x\r"), ("N", b"\r"), ("N", b"body"), ("L", b"last")]


def test_long_lines_are_cut_into_cont_records():
    enc = R.encode_content(b"a" * 10 + b"\n", max_size=4)
    recs = [(r.type, r.data) for r in R.decode_records(enc)]
    assert recs == [("L", b"aaaa"), ("L", b"aaaa"), ("N", b"aa")]


content = st.binary(max_size=3000) | st.lists(
    st.sampled_from([b"\n", b"\r\n", b"x", b"yy" * 100, b".", b"\x00", b"\xff"]),
    max_size=200).map(b"".join)


@given(content, st.lists(st.integers(0, 400), max_size=20), st.integers(1, 300))
def test_content_survives_any_chunking(body, cuts, max_size):
    parts = []
    pos = 0
    for n in cuts:
        parts.append(body[pos: pos + n])
        pos += n
    parts.append(body[pos:])
    enc = b"".join(R.encode_content(p, max_size) for p in parts)
    assert _content_of(enc) == body
    # the fast content decoder agrees, whole and in pieces
    out: list[bytes] = []
    assert R.decode_content(enc, 0, out, final=True) == len(enc)
    assert b"".join(out) == body
    out = []
    rest = b""
    for i in range(0, len(enc), 13):
        buf = rest + enc[i: i + 13]
        used = R.decode_content(buf, 0, out, final=i + 13 >= len(enc))
        rest = buf[used:]
    assert rest == b"" and b"".join(out) == body


def test_fast_content_decoder_rejects_other_records():
    out: list[bytes] = []
    with pytest.raises(R.RecordError, match="unexpected record 'E'"):
        R.decode_content(R.encode_record("N", b"ok") + R.encode_record("E"), 0, out, True)
    with pytest.raises(R.TruncatedRecord):
        R.decode_content(R.encode_record("N", b"okay")[:-1], 0, [], True)
    with pytest.raises(R.RecordError, match="too many length bytes"):
        R.decode_content(b"N" + b"\xff" * 10, 0, [], True)

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hato.proto.attr import AttrError, AttrReader, Attrs, encode

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=12)
values = st.text(max_size=40)


@given(st.lists(st.tuples(names, values), max_size=10), st.integers(1, 7))
def test_round_trip_in_any_split(items, step):
    data = encode(Attrs(items)) + encode(Attrs([("x", "y")]))
    r = AttrReader()
    for i in range(0, len(data), step):
        r.receive_data(data[i:i + step])
    assert r.next_message() == Attrs(items)
    assert r.next_message() == Attrs([("x", "y")])
    assert r.next_message() is None


def test_lists_and_typed_access():
    a = Attrs.of(queue_id="ABC", rcpt=["a@x", "b@y"], count=3, missing=None)
    assert a.all("rcpt") == ["a@x", "b@y"]
    assert a.int("count") == 3 and "missing" not in a
    assert encode(a) == b"queue_id=ABC\nrcpt=a@x\nrcpt=b@y\ncount=3\n\n"


@pytest.mark.parametrize("data", [b"novalue\n\n", b"=x\n\n", b"a=\\q\n\n"])
def test_malformed(data):
    with pytest.raises(AttrError):
        AttrReader().receive_data(data)


def test_size_limit():
    r = AttrReader(max_message=100)
    with pytest.raises(AttrError):
        r.receive_data(b"a=" + b"x" * 200)

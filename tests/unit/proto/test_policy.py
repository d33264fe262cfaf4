"""The policy delegation codec (proto.policy): requests, replies whole, byte
by byte and in any split, and every kind of trouble with Postfix's warning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.proto.policy import (
    PolicyReplyError,
    ReplyReader,
    encode_request,
    sanitize_value,
    xtext,
)


def read_all(data: bytes, step: int | None = None, **kw) -> ReplyReader:
    r = ReplyReader(**kw)
    if step is None:
        r.receive_data(data)
    else:
        for i in range(0, len(data), step):
            r.receive_data(data[i:i + step])
    return r


def trouble(data: bytes, *, eof: bool = False, **kw) -> str:
    r = ReplyReader(**kw)
    with pytest.raises(PolicyReplyError) as info:
        for i in range(len(data)):  # byte by byte: the same verdict
            r.receive_data(data[i:i + 1])
        if eof:
            r.eof()
    whole = ReplyReader(**kw)
    with pytest.raises(PolicyReplyError) as again:
        whole.receive_data(data)
        if eof:
            whole.eof()
    assert again.value.text("S") == info.value.text("S")
    return info.value.text("127.0.0.1:10023")


def test_request_encoding() -> None:
    data = encode_request([("request", "smtpd_access_policy"), ("size", "0"), ("sender", "")])
    assert data == b"request=smtpd_access_policy\nsize=0\nsender=\n\n"
    assert encode_request({"a": "1"}) == b"a=1\n\n"


def test_request_values_never_break_lines() -> None:
    data = encode_request([("helo_name", "x\nrecipient=evil\r\0y"), ("na=me\n", "v")])
    assert data == b"helo_name=x?recipient=evil??y\nna?me?=v\n\n"
    assert data.count(b"\n") == 3
    assert sanitize_value("ok") == "ok"


def test_request_keeps_utf8_and_raw_bytes() -> None:
    assert encode_request([("sender", "j\u00f6rg@example.org")]) == \
        "sender=j\u00f6rg@example.org\n\n".encode()
    assert encode_request([("x", b"\xff".decode("utf-8", "surrogateescape"))]) == b"x=\xff\n\n"


def test_xtext_as_postfix() -> None:
    assert xtext("Wietse Venema") == "Wietse+20Venema"
    assert xtext("a+b=c") == "a+2Bb=c"
    assert xtext("J\u00f6rg") == "J+C3+B6rg"
    assert xtext("tab\there~") == "tab+09here~"
    assert xtext("") == ""


@pytest.mark.parametrize("step", [None, 1, 2, 5])
def test_reply(step) -> None:
    r = read_all(b"action=defer_if_permit Service temporarily unavailable\n\n", step)
    assert r.done and r.reply is not None
    assert r.reply.action == "defer_if_permit Service temporarily unavailable"
    assert r.extra == b""


def test_other_attributes_are_skipped_and_the_first_action_wins() -> None:
    r = read_all(b"foo=bar\nnoequals\naction=DUNNO\naction=REJECT\nx-action=1\n\n")
    assert r.reply is not None and r.reply.action == "DUNNO"
    assert ("foo", "bar") in r.reply.attributes


def test_empty_action_and_blanks_kept() -> None:
    r = read_all(b"action=\n\n")
    assert r.reply is not None and r.reply.action == ""
    r = read_all(b"action=PREPEND X-Test:  two  blanks\n\n")
    assert r.reply is not None and r.reply.action == "PREPEND X-Test:  two  blanks"


def test_trailing_bytes_are_kept_apart() -> None:
    r = read_all(b"action=OK\n\naction=REJECT\n\n")
    assert r.reply is not None and r.reply.action == "OK"
    assert r.extra == b"action=REJECT\n\n"
    r.receive_data(b"more")
    assert r.extra.endswith(b"more")


def test_utf8_action() -> None:
    r = read_all("action=REJECT gr\u00fc\u00dfe\n\n".encode())
    assert r.reply is not None and r.reply.valid_utf8
    assert r.reply.action == "REJECT gr\u00fc\u00dfe"
    r = read_all(b"action=REJECT \xff\xfe\n\n")
    assert r.reply is not None and not r.reply.valid_utf8


def test_missing_action() -> None:
    assert trouble(b"\n") == "missing attribute action in input from 127.0.0.1:10023"
    assert trouble(b"hello world\n\n") == \
        "missing attribute action in input from 127.0.0.1:10023"


def test_action_without_value() -> None:
    assert trouble(b"action\n\n") == \
        "missing value for string attribute action from 127.0.0.1:10023"


def test_premature_end() -> None:
    assert trouble(b"", eof=True) == ("premature end-of-input on 127.0.0.1:10023 while "
                                      "reading input attribute name")
    assert trouble(b"action=DUN", eof=True) == ("premature end-of-input on 127.0.0.1:10023 "
                                                "while reading input attribute value")
    assert trouble(b"action=DUNNO\n", eof=True).endswith("reading input attribute name")
    assert trouble(b"foo=ba", eof=True).endswith("reading input attribute name")


def test_eof_after_a_complete_reply_is_fine() -> None:
    r = read_all(b"action=OK\n\n")
    r.eof()


def test_timeout_text() -> None:
    r = ReplyReader()
    r.receive_data(b"action=DU")
    err = r.timeout()
    assert err.timed_out
    assert err.text("x:1") == "timeout on x:1 while reading input attribute value"


def test_over_long() -> None:
    assert trouble(b"action=" + b"x" * 200, max_line=100) == \
        "string length > 100 characters from 127.0.0.1:10023 while reading input attribute value"
    assert trouble(b"junk" * 100 + b"\n\n", max_line=100).startswith("string length > 100")


def test_too_many_lines() -> None:
    assert trouble(b"a=b\n" * 20, max_lines=10) == \
        "attribute count exceeds limit 10 in input from 127.0.0.1:10023"


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=10).filter(
    lambda n: n != "action")
values = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters="\n\r\0"), max_size=30)


@given(st.lists(st.tuples(names, values), max_size=6), values, st.integers(1, 9))
def test_any_split(before, action, step) -> None:
    data = encode_request([*before, ("action", action), ("after", "x")])
    r = read_all(data, step)
    assert r.reply is not None and r.reply.action == action
    assert r.extra == b""

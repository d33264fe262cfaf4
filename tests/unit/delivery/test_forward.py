"""Destination lists: alias values, :include: and .forward files."""

from __future__ import annotations

import os

import pytest

from hato.delivery.forward import (
    Destination,
    ForwardFileError,
    classify,
    file_records,
    include_status,
    load_forward_file,
    load_include_file,
    parse_destination_file,
    parse_destinations,
)


def pairs(text):
    return [(d.kind, d.value) for d in parse_destinations(text)]


@pytest.mark.parametrize("text, expected", [
    ("a, b", [("address", "a"), ("address", "b")]),
    ("a b", [("address", "a"), ("address", "b")]),  # missing commas are added
    ("a,,b,", [("address", "a"), ("address", "b")]),
    ("user@Example.COM", [("address", "user@Example.COM")]),
    ('"|/usr/bin/procmail -a x"', [("command", "/usr/bin/procmail -a x")]),
    ("|/bin/cmd", [("command", "/bin/cmd")]),
    ("|/bin/cmd -x", [("command", "/bin/cmd"), ("address", "-x")]),  # quote commands!
    ("/var/log/root.mbox", [("file", "/var/log/root.mbox")]),
    ("/srv/maildir/", [("file", "/srv/maildir/")]),
    ("~/Mail/inbox", [("home_file", "~/Mail/inbox")]),
    (":include:/etc/mail/staff", [("include", "/etc/mail/staff")]),
    (":INCLUDE: /etc/mail/staff", [("include", "/etc/mail/staff")]),
    ("Joe (the boss) <joe@x.org>, other", [("address", "joe@x.org"), ("address", "other")]),
    ("staff: a@x, b@y;", [("address", "a@x"), ("address", "b@y")]),
    ('"john doe"@x', [("address", "john doe@x")]),
    ("\\root", [("address", "root")]),
    ("(only a comment)", []),
    ("", []),
])
def test_parse_destinations(text, expected):
    assert pairs(text) == expected


def test_classify():
    assert classify("|cmd") == Destination("command", "cmd", "|cmd")
    assert classify(":Include:/x") == Destination("include", "/x", ":Include:/x")


def test_file_records_and_comments():
    data = (b"# comment, not an address\n"
            b"a, b\n"
            b"  #x\n"  # parsed: only column one starts a comment
            b'"|/bin/x y"\n'
            b"c\n"
            b"\n")
    assert [(d.kind, d.value) for d in parse_destination_file(data)] == [
        ("address", "a"), ("address", "b"), ("address", "#x"), ("command", "/bin/x y"),
        ("address", "c")]


def test_lines_are_not_continued_and_long_lines_are_cut():
    data = b"a,\n  b\n"
    assert [d.value for d in parse_destination_file(data)] == ["a", "b"]
    assert list(file_records(b"abcdefghij\nk\n", 4)) == [b"abcd", b"efgh", b"ij\n", b"k\n"]
    assert [d.value for d in parse_destination_file(b"aaaa bbbb", line_length_limit=5)] \
        == ["aaaa", "bbbb"]


def test_load_forward_file(tmp_path):
    f = tmp_path / ".forward"
    f.write_bytes(b"x@y\n")
    uid = os.geteuid()
    dests, warning = load_forward_file(str(f), os.lstat(f), uid=uid)
    assert warning is None and [d.value for d in dests] == ["x@y"]
    f.chmod(0o666)
    dests, warning = load_forward_file(str(f), os.lstat(f), uid=uid)
    assert dests is None and warning == f"file {f} is world writable"


def test_include_checks(tmp_path):
    with pytest.raises(ForwardFileError) as info:
        include_status("relative/list")
    assert info.value.warning == ":include:relative/list uses a relative path"
    assert (info.value.dsn, info.value.reason) == ("5.3.5", "mail system configuration error")
    with pytest.raises(ForwardFileError) as info:
        include_status(str(tmp_path))
    assert info.value.warning == f":include: file {tmp_path} is not a regular file"
    f = tmp_path / "list"
    f.write_bytes(b"# people\nann, bo\n")
    include_status(str(f))
    assert [d.value for d in load_include_file(str(f), uid=0)] == ["ann", "bo"]

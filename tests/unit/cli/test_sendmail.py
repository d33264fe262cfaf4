"""sendmail's options, parsed as Postfix's sendmail parses them."""

from __future__ import annotations

import io

import pytest

from hato.cli.common import Fatal, UsageError
from hato.cli.sendmail import parse, read_message


def test_common_forms():
    s = parse(["-t", "-oi", "-f", "alice@example.org", "-F", "Alice", "-N", "success,failure",
               "-R", "hdrs", "-V", "env1", "bob", "carol"])
    assert s.extract and not s.dot_ends
    assert s.sender == "alice@example.org" and s.full_name == "Alice"
    assert s.notify == "FAILURE,SUCCESS" and s.ret == "HDRS" and s.envid == "env1"
    assert s.recipients == ["bob", "carol"]


def test_options_stop_at_the_first_recipient():
    s = parse(["bob", "-f", "x"])
    assert s.recipients == ["bob", "-f", "x"] and s.sender is None


def test_sendmail_options_it_ignores_are_accepted():
    s = parse(["-oem", "-odb", "-i", "-v", "-B", "8BITMIME", "-r", "root", "x"])
    assert s.sender == "root" and not s.dot_ends and s.recipients == ["x"]


@pytest.mark.parametrize("argv", [["-N", "never,success", "x"], ["-N", "often", "x"],
                                  ["-R", "all", "x"], ["-bz"]])
def test_bad_values(argv):
    with pytest.raises(Fatal) as err:
        parse(argv)
    assert err.value.status == 64


def test_unknown_option():
    with pytest.raises(UsageError):
        parse(["-Z"])


def test_a_dot_ends_the_message_unless_i():
    data = b"Subject: x\n\nline\n.\nafter\n"
    assert read_message(io.BytesIO(data), True) == b"Subject: x\n\nline\n"
    assert read_message(io.BytesIO(data), False) == data

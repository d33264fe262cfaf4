"""Typed values and bounds."""

from __future__ import annotations

import pytest

from hato.config.errors import ConfigError
from hato.config.values import parse_bool, parse_int, parse_time, split_list


@pytest.mark.parametrize("text, unit, want", [
    ("10", "s", 10), ("10s", "s", 10), ("5m", "s", 300), ("2h", "s", 7200), ("1d", "s", 86400),
    ("1w", "s", 604800), ("3", "d", 259200), (" 60s ", "s", 60),
])
def test_time(text, unit, want):
    assert parse_time("t", text, unit) == want


@pytest.mark.parametrize("text", ["", "3x", "-1s", "1.5s", "s", "10 s"])
def test_bad_time(text):
    with pytest.raises(ConfigError) as err:
        parse_time("smtpd_timeout", text)
    assert "smtpd_timeout" in str(err.value)


def test_bounds():
    assert parse_int("n", "5", 1, 10) == 5
    with pytest.raises(ConfigError):
        parse_int("n", "0", 1)
    with pytest.raises(ConfigError):
        parse_int("n", "11", None, 10)
    with pytest.raises(ConfigError):
        parse_time("t", "0s", lo=1)


def test_bool():
    assert parse_bool("b", "yes") is True
    assert parse_bool("b", "NO") is False
    with pytest.raises(ConfigError):
        parse_bool("b", "maybe")


def test_lists():
    assert split_list("a, b c,,d") == ["a", "b", "c", "d"]
    assert split_list("check_policy_service { inet:127.0.0.1:9, timeout=10s }, x") == [
        "check_policy_service", "inet:127.0.0.1:9, timeout=10s", "x"]
    assert split_list("inline:{ a=1, b=2 }") == ["inline:{ a=1, b=2 }"]

"""The postscreen cache entry: Postfix's value format, validity and clean-up rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hato.policy.postscreen_cache_entry import (
    STAMP_DISABLED,
    STAMP_MAX,
    STAMP_NEW,
    TESTS,
    CacheEntry,
    PscTest,
    as_test,
)

NOW = 1_700_000_000
ALL = set(TESTS)


def test_fields_are_in_postfix_order():
    assert [t.value for t in TESTS] == ["pregreet", "dnsbl", "pipelining", "non_smtp",
                                        "bare_newline"]


def test_new_entry_formats_as_five_zero_stamps():
    assert CacheEntry.new().format() == "0;0;0;0;0"
    assert CacheEntry.new().is_new()


def test_round_trip_of_postfix_value():
    value = "1700086400;1700003600;1702592000;1;1"
    entry = CacheEntry.parse(value)
    assert entry is not None
    assert entry.stamp("pregreet") == 1700086400
    assert entry.stamp(PscTest.DNSBL) == 1700003600
    assert entry.stamp("pipelining") == 1702592000
    assert entry.stamp("non_smtp") == STAMP_DISABLED
    assert entry.stamp("bare_newline") == STAMP_DISABLED
    assert entry.format() == value
    assert not entry.is_new()


def test_parse_accepts_bytes_with_trailing_nul():
    entry = CacheEntry.parse(b"5;6;7;8;9\0")
    assert entry is not None and entry.format() == "5;6;7;8;9"


@pytest.mark.parametrize("value,expected", [
    # older postscreen versions wrote fewer fields: the missing ones are "disabled"
    ("100;200", "100;200;1;1;1"),
    ("100", "100;1;1;1;1"),
    # a bad field is "disabled", the others are kept
    ("100;x;300;-4;500", "100;1;300;1;500"),
    ("100;;300;400;500", "100;1;300;400;500"),
    (f"100;{STAMP_MAX + 1};300;400;500", "100;1;300;400;500"),
    # extra fields (Postfix 2.x's penalty stamp) are ignored
    ("100;200;300;400;500;600", "100;200;300;400;500"),
    (" 100 ;200;300;400;500", "100;200;300;400;500"),
])
def test_parse_is_tolerant_per_field(value, expected):
    entry = CacheEntry.parse(value)
    assert entry is not None
    assert entry.format() == expected


@pytest.mark.parametrize("value", [None, "", "garbage", ";;;;", "a;b;c;d;e", b"\0"])
def test_a_value_without_any_stamp_is_no_entry(value):
    assert CacheEntry.parse(value) is None


@given(st.text(max_size=60))
def test_parse_never_raises(text):
    entry = CacheEntry.parse(text)
    if entry is not None:
        assert CacheEntry.parse(entry.format()) == entry


@given(st.lists(st.integers(min_value=0, max_value=STAMP_MAX), min_size=5, max_size=5))
def test_round_trip(stamps):
    entry = CacheEntry.new()
    for test, stamp in zip(TESTS, stamps):
        entry.update(test, stamp)
    assert CacheEntry.parse(entry.format()) == entry


def test_format_writes_never_passed_disabled_tests_as_disabled():
    entry = CacheEntry.new()
    entry.update("pregreet", NOW + 86400)
    assert entry.format({"pregreet", "dnsbl"}) == f"{NOW + 86400};0;1;1;1"
    assert entry.format() == f"{NOW + 86400};0;0;0;0"


def test_valid_for_needs_every_enabled_test():
    entry = CacheEntry.new()
    entry.update("pregreet", NOW + 10)
    assert entry.valid_for({"pregreet"}, NOW)
    assert not entry.valid_for({"pregreet", "dnsbl"}, NOW)
    entry.update("dnsbl", NOW + 5)
    assert entry.valid_for({"pregreet", "dnsbl"}, NOW)
    assert entry.todo({"pregreet", "dnsbl"}, NOW + 6) == {PscTest.DNSBL}
    assert not entry.valid_for({"pregreet", "dnsbl"}, NOW + 6)


def test_expiry_edge_is_postfix_now_greater_than_stamp():
    entry = CacheEntry.new()
    entry.update("pregreet", NOW)
    assert entry.valid_for({"pregreet"}, NOW)  # Postfix tests again only when now > stamp
    assert not entry.valid_for({"pregreet"}, NOW + 1)
    assert entry.valid_for({"pregreet"}, NOW - 0.5)


def test_disabled_tests_do_not_count():
    entry = CacheEntry.parse(f"{NOW + 100};1;1;1;1")
    assert entry is not None
    assert entry.valid_for({"pregreet"}, NOW)
    assert not entry.valid_for({"pregreet", "pipelining"}, NOW)
    assert entry.valid_for(set(), NOW)


def test_fail_forgets_the_pass():
    entry = CacheEntry.new()
    entry.update("bare_newline", NOW + 100)
    entry.fail("bare_newline")
    assert entry.stamp("bare_newline") == STAMP_DISABLED
    assert not entry.valid_for({"bare_newline"}, NOW)


def test_update_rejects_out_of_range():
    with pytest.raises(ValueError):
        CacheEntry.new().update("dnsbl", -1)
    with pytest.raises(ValueError):
        CacheEntry.new().update("dnsbl", STAMP_MAX + 1)


def test_retain_is_postfix_cache_validator():
    week = 7 * 86400
    entry = CacheEntry.new()
    entry.update("pregreet", NOW - week + 10)   # expired, but within retention
    entry.update("dnsbl", NOW + 3600)
    enabled = {"pregreet", "dnsbl"}
    assert not entry.valid_for(enabled, NOW)
    assert entry.retain(enabled, NOW, week)
    # one enabled test expired longer ago than the retention time: dropped
    assert not entry.retain(enabled, NOW + 11, week)
    # ... unless that test is not enabled any more
    assert entry.retain({"dnsbl"}, NOW + 11, week)
    # a test that never passed but is enabled: dropped (nothing to remember)
    never = CacheEntry.parse(f"{NOW};0;1;1;1")
    assert never is not None
    assert not never.retain(enabled, NOW, week)
    assert never.retain({"pregreet"}, NOW, week)


def test_latest():
    assert CacheEntry.new().latest() == 0
    assert CacheEntry.parse("1;1;1;1;1").latest() == 0
    assert CacheEntry.parse(f"{NOW};5;{NOW + 9};0;1").latest() == NOW + 9


def test_as_test_spellings():
    assert as_test("non-smtp") is PscTest.NON_SMTP
    assert as_test("bare newline") is PscTest.BARE_NEWLINE
    assert as_test(PscTest.DNSBL) is PscTest.DNSBL
    with pytest.raises(ValueError):
        as_test("greylist")


def test_new_constant_is_zero():
    assert STAMP_NEW == 0 and STAMP_DISABLED == 1
    assert ALL == set(PscTest)

"""The Maildir++ quota rules (PROTOCOLS.md §3.5) as pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hato.policy.maildir_quota import (
    QuotaSpec,
    Usage,
    counts_toward_quota,
    format_maildirsize,
    format_usage_line,
    over_quota,
    parse_maildirsize,
    parse_quota,
    recalculation_reason,
    size_from_name,
)


@pytest.mark.parametrize("text,size,count", [
    ("10000000S", 10000000, None),
    ("1000C", None, 1000),
    ("10000000S,1000C", 10000000, 1000),
    ("1000C,5S", 5, 1000),
    ("0S", 0, None),
])
def test_parse_quota(text, size, count):
    q = parse_quota(text)
    assert (q.bytes, q.count, q.text) == (size, count, text)


@pytest.mark.parametrize("text", ["", "10", "10X", "-5S", "10S,20S", "S", "10 S", "10s"])
def test_parse_quota_refuses(text):
    with pytest.raises(ValueError):
        parse_quota(text)


def test_zero_means_no_limit():
    assert parse_quota("0S").unlimited
    assert not over_quota(parse_quota("0S"), Usage(10**12, 10**6), 10**9)
    assert over_quota(parse_quota("0S,2C"), Usage(0, 2), 1)


def test_courier_padding_and_sums():
    # What Courier's maildirmake -q and deliverquota write, byte for byte.
    data = b"1000S,10C\n           0            0\n          18            1\n"
    sf = parse_maildirsize(data)
    assert sf.quota == QuotaSpec("1000S,10C", 1000, 10)
    assert sf.usage == Usage(18, 1) and sf.lines == 2 and sf.problems == []
    assert format_maildirsize("1000S,10C", Usage(0, 0)) == data[:data.index(b"\n", 10) + 1]
    assert format_usage_line(18, 1) == b"          18            1\n"
    assert format_usage_line(-18, -1) == b"         -18           -1\n"


def test_any_whitespace_and_negative_lines_sum():
    sf = parse_maildirsize(b"500S\n100 2\n\t40\t1  \n-100 -2\n\n")
    assert sf.usage == Usage(40, 1) and sf.lines == 3 and not sf.problems


def test_garbage_lines_are_problems_and_not_summed():
    sf = parse_maildirsize(b"1000S\nxyz abc\n   10 1\n1 2 3\n5x 1\n")
    assert sf.usage == Usage(10, 1)
    assert len(sf.problems) == 3
    assert recalculation_reason(sf, file_size=40, age=0, quota=sf.quota, size=1) is not None


def test_negative_total_is_a_problem():
    sf = parse_maildirsize(b"1000S\n-500 -3\n")
    assert any("negative" in p for p in sf.problems)
    assert "negative" in recalculation_reason(sf, file_size=20, age=0, quota=sf.quota, size=1)


def test_bad_or_missing_quota_line():
    sf = parse_maildirsize(b"lots\n10 1\n")
    assert sf.quota is None and sf.problems
    sf = parse_maildirsize(b"")
    assert sf.quota is None and "no quota definition" in sf.problems


def test_no_usage_line_recalculates():
    sf = parse_maildirsize(b"100S\n")
    assert sf.problems == ["no usage line"]
    assert recalculation_reason(sf, file_size=5, age=0, quota=sf.quota, size=1)


def test_recalculation_triggers():
    q = parse_quota("1000S")
    fresh_one_line = parse_maildirsize(b"1000S\n" + format_usage_line(990, 3))
    # missing
    assert recalculation_reason(None, file_size=0, age=0, quota=q, size=1)
    # 5120 bytes or more, whatever it says
    assert recalculation_reason(fresh_one_line, file_size=5120, age=0, quota=q, size=1)
    assert recalculation_reason(fresh_one_line, file_size=5119, age=0, quota=q, size=1) is None
    # over quota with one usage line: trusted while fresh, recalculated at 15 minutes
    assert recalculation_reason(fresh_one_line, file_size=32, age=899, quota=q, size=20) is None
    assert recalculation_reason(fresh_one_line, file_size=32, age=900, quota=q,
                                size=20) == "over quota"
    # over quota with several usage lines: at once
    several = parse_maildirsize(b"1000S\n500 1\n490 2\n")
    assert recalculation_reason(several, file_size=20, age=0, quota=q, size=20) == "over quota"
    # under quota: never, however old or long
    assert recalculation_reason(several, file_size=20, age=10**6, quota=q, size=5) is None


def test_over_quota_counts_bytes_and_messages():
    q = parse_quota("100S,3C")
    assert not over_quota(q, Usage(50, 2), 50)
    assert over_quota(q, Usage(50, 2), 51)
    assert over_quota(q, Usage(0, 3), 1)
    assert not over_quota(parse_quota("100S"), Usage(0, 10**6), 100)


@pytest.mark.parametrize("name,size", [
    ("1700000000.M1P2Q3.host,S=1234", 1234),
    ("1700000000.M1P2Q3.host,S=1234:2,S", 1234),
    ("1700000000.M1P2V3.vm,S=18,W=19:2,RS", 18),
    ("1700000000.M1P2.host:2,S", None),
    ("1700000000.M1P2.host,S=:2,", None),
    ("odd:2,S=99", None),  # after the flags separator: not a size
])
def test_size_from_name(name, size):
    assert size_from_name(name) == size


def test_trash_is_not_counted():
    assert counts_toward_quota(".Sent") and counts_toward_quota(".Trash.Old")
    assert not counts_toward_quota(".Trash")
    assert not counts_toward_quota("cur") and not counts_toward_quota("..")


@given(st.lists(st.tuples(st.integers(-10**9, 10**9), st.integers(-1000, 1000)), max_size=30),
       st.sampled_from([b" ", b"\t", b"   "]))
def test_sums_every_line(lines, sep):
    data = b"100S\n" + b"".join(b"%d%s%d\n" % (a, sep, b) for a, b in lines)
    sf = parse_maildirsize(data)
    assert sf.usage == Usage(sum(a for a, _ in lines), sum(b for _, b in lines))
    assert sf.lines == len(lines)

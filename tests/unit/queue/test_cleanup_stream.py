"""cleanup as a stream: any split of the input gives the same output, and a
large message goes through in little memory."""

from __future__ import annotations

import datetime
import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from hato.queue.cleanup import Cleanup, CleanupStatus, Submission
from tests.unit.policy.conftest import make_settings

UTC = datetime.UTC

SERVICE = Cleanup(make_settings("line_length_limit = 512\nheader_size_limit = 2000\n"
                                "undisclosed_recipients_header = To: undisclosed-recipients:;\n"))

MESSAGES = [
    b"",
    b"Subject: only headers",
    b"Subject: hi\r\nFrom: joe\r\nTo: ann, bob\r\n\r\nbody line\r\nsecond\r\n",
    b"Subject: hi\nX-Long: " + b"h" * 1500 + b"\n\tfolded " + b"f" * 700 + b"\n\n"
    + b"b" * 1100 + b"\r\n" + b"c" * 512 + b"\r\n" + b"d" * 511 + b"\r\r\n" + b"end",
    b"Subject: stray\rcr\n\nx\ry\r\r\nlast\r",
    (b"Content-Type: multipart/mixed; boundary=zz\n\n--zz\nContent-Type: text/plain\n\n"
    b"part\n--zz\nContent-Type: message/rfc822\n\nSubject: inner\n\nin\n--zz--\n"),
    "Subject: caf\u00e9\n\n\x00nul\xff".encode("utf-8", "surrogateescape"),
    b"no headers at all\nsecond line\n",
    b"Subject: " + b"s" * 2500 + b"\n\nbody\n",
]


def run(content: bytes, splits: list[int]) -> tuple:
    sub = Submission("Q1", "joe", ["ann@example.org"], 1700000000.0, tz=UTC, userid=1000)
    state = SERVICE.open(sub)
    last = 0
    for cut in sorted(set(splits)) + [len(content)]:
        state.feed(content[last:cut])
        last = cut
    result = state.finish()
    return result, state.records


def test_whole_vs_byte_at_a_time():
    for content in MESSAGES:
        whole = run(content, [])
        one = run(content, list(range(len(content))))
        assert one == whole, content[:40]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(MESSAGES), st.lists(st.integers(min_value=0, max_value=6000),
                                            max_size=40))
def test_any_split_gives_the_same_output(content, splits):
    splits = [s for s in splits if s <= len(content)]
    assert run(content, splits) == run(content, [])


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.lists(st.integers(min_value=0, max_value=3000),
                                          max_size=20))
def test_arbitrary_bytes(content, splits):
    splits = [s for s in splits if s <= len(content)]
    result, records = run(content, splits)
    assert (result, records) == run(content, [])
    assert all(len(data) <= 512 for _, data in records)


def _big_message(total: int, line: bytes) -> iter[bytes]:
    yield b"Subject: big\r\nFrom: joe\r\n\r\n"
    chunk = line * (65536 // len(line))
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)


def _stream(service: Cleanup, total: int) -> tuple:
    counted = [0, 0]

    def output(rec_type: str, data: bytes) -> None:
        counted[0] += 1
        counted[1] += len(data)

    sub = Submission("BIG", "joe", ["ann@example.org"], 1700000000.0, tz=UTC, userid=0)
    tracemalloc.start()
    try:
        state = service.open(sub, output)
        for chunk in _big_message(total, b"x" * 998 + b"\r\n"):
            state.feed(chunk)
        result = state.finish()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, counted, peak


def test_30mb_message_in_little_memory():
    service = Cleanup(make_settings("message_size_limit = 40000000\n"))
    result, (records, _size), peak = _stream(service, 30 * 1024 * 1024)
    assert result.ok
    assert result.size > 29 * 1024 * 1024 and records > 30000
    assert peak < 1024 * 1024, f"peak {peak} bytes"


def test_30mb_message_over_the_limit():
    service = Cleanup(make_settings("message_size_limit = 10240000\n"))
    result, (_records, size), peak = _stream(service, 30 * 1024 * 1024)
    assert result.status == CleanupStatus.SIZE
    assert size <= 10240000
    assert peak < 1024 * 1024, f"peak {peak} bytes"


def _run_slow(content: bytes, splits: list[int]) -> tuple:
    from hato.queue.cleanup import CleanupState

    CleanupState.FAST_BODY = False
    try:
        return run(content, splits)
    finally:
        CleanupState.FAST_BODY = True


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.sampled_from(MESSAGES),
                 st.lists(st.sampled_from([b"--zz", b"--zz--", b"line", b"\r", b"\n", b"\r\n",
                                           b"Subject: x", b" folded", b"x" * 600, b"\xff",
                                           b"Content-Type: multipart/mixed; boundary=zz",
                                           b""]), max_size=30).map(b"".join)),
       st.lists(st.integers(min_value=0, max_value=3000), max_size=10))
def test_short_cut_and_general_path_agree(content, splits):
    """Plain body lines skip the general path; the output is the same."""
    splits = [s for s in splits if s <= len(content)]
    assert run(content, splits) == _run_slow(content, [])

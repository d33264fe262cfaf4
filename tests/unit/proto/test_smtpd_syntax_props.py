"""Property test: the end of a ``<...>`` or ``"..."`` in an SMTP command
(Postfix's smtp_quoted()), whose usual case takes a shortcut, always agrees
with the character-by-character scan it is defined by (which the explicit
cases below pin down)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from hato.proto.smtpd_syntax import _quoted_end, _quoted_scan


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet='ab@.<>"\\ ', max_size=16), st.integers(0, 16), st.sampled_from('>"'))
def test_quoted_end_agrees_with_the_scan(text, start, wanted):
    start = min(start, len(text))
    assert _quoted_end(text, start, wanted) == _quoted_scan(text, start, wanted)


def test_usual_and_unusual_addresses():
    line = 'FROM:<joe@example.org> SIZE=10'
    assert _quoted_end(line, 6, ">") == line.index(">") + 1
    nested = 'FROM:<"a>b"@example.org>'
    assert _quoted_end(nested, 6, ">") == len(nested)
    escaped = 'FROM:<a\\>b@example.org>'
    assert _quoted_end(escaped, 6, ">") == len(escaped)
    assert _quoted_end("FROM:<never closed", 6, ">") == -1

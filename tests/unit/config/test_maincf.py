"""main.cf reading, editing and its errors."""

from __future__ import annotations

import os
import threading

import pytest

from hato.config.errors import ConfigError
from hato.config.maincf import MainCf, write_atomic

SAMPLE = """\
# comment
myhostname = mail.example.com
mydestination = a,
    b
# inner comment
\tc

mydomain=example.com   
myhostname = later.example.com
"""


def test_logical_lines():
    m = MainCf.parse(SAMPLE, "main.cf")
    v = m.values()
    assert v["mydestination"] == "a, b c"
    assert v["mydomain"] == "example.com"
    assert v["myhostname"] == "later.example.com"  # last wins
    assert m.lineno("mydestination") == 3


@pytest.mark.parametrize("text, line, words", [
    ("smtpd_banner\n", 1, "missing '=' after attribute name"),
    ("a = 1\n= x\n", 2, "missing attribute name"),
    ("a b = x\n", 1, "missing '=' after attribute name"),
])
def test_errors_name_file_and_line(text, line, words):
    with pytest.raises(ConfigError) as err:
        MainCf.parse(text, "/etc/hato/main.cf")
    assert err.value.line == line
    assert str(err.value).startswith(f"/etc/hato/main.cf, line {line}: {words}")


def test_non_utf8_is_an_error_with_line():
    with pytest.raises(ConfigError) as err:
        MainCf.parse(b"a = 1\nb = \xff\xfe\n", "main.cf")
    assert err.value.line == 2
    assert "UTF-8" in str(err.value)


def test_huge_line_is_an_error():
    with pytest.raises(ConfigError) as err:
        MainCf.parse(b"a = " + b"x" * (1024 * 1024) + b"\n", "main.cf")
    assert "line 1" in str(err.value)


def test_leading_whitespace_first_line_warns():
    m = MainCf.parse("  a = 1\nb = 2\n", "main.cf")
    assert m.values() == {"b": "2"}
    assert "logical line must not start with whitespace" in m.warnings[0]


def test_edit_keeps_other_lines_byte_for_byte(tmp_path):
    p = tmp_path / "main.cf"
    p.write_text(SAMPLE)
    m = MainCf.read(str(p))
    m.set("mydestination", "x, y")
    m.write()
    text = p.read_text()
    assert text.startswith("# comment\nmyhostname = mail.example.com\n# inner comment\n"
                           "mydestination = x, y\n\nmydomain=example.com   \n")
    m.remove("mydomain")
    m.comment_out("myhostname")
    m.write()
    text = p.read_text()
    assert "#myhostname = mail.example.com\n" in text and "mydomain" not in text


def test_write_is_atomic_for_readers(tmp_path):
    p = tmp_path / "main.cf"
    small, big = "a = 1\n", "a = " + "x" * 200000 + "\n"
    p.write_text(small)
    stop = threading.Event()
    seen = set()

    def reader():
        while not stop.is_set():
            seen.add(p.read_text())

    t = threading.Thread(target=reader)
    t.start()
    for i in range(200):
        write_atomic(str(p), big if i % 2 else small)
    stop.set()
    t.join()
    assert seen <= {small, big}


def test_write_keeps_mode(tmp_path):
    p = tmp_path / "main.cf"
    p.write_text("a = 1\n")
    os.chmod(p, 0o640)
    write_atomic(str(p), "a = 2\n")
    assert (os.stat(p).st_mode & 0o777) == 0o640

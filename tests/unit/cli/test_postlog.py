"""``hato postlog``: records in hato's maillog, in Postfix's format."""

from __future__ import annotations

import io
import os
import re

import pytest

from hato.cli import postlog

LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (?P<host>\S+) "
                  r"(?P<tag>[^\[]+)\[(?P<pid>\d+)\]: (?P<text>.*)$")


@pytest.fixture
def conf(tmp_path):
    d = tmp_path / "conf"
    d.mkdir()
    (d / "main.cf").write_text(f"maillog_file = {tmp_path / 'maillog'}\n"
                               "myhostname = mx.hato.test\nsyslog_name = postfix\n")
    return d


def logged(tmp_path) -> list[dict[str, str]]:
    text = (tmp_path / "maillog").read_text()
    out = []
    for line in text.splitlines():
        m = LINE.match(line)
        assert m, line
        out.append(m.groupdict())
    return out


def test_arguments_are_one_record(conf, tmp_path):
    assert postlog.main(["-c", str(conf), "hello", "there", "world"]) == 0
    [rec] = logged(tmp_path)
    assert rec["host"] == "mx"
    assert rec["tag"] == "postfix/postlog"
    assert rec["pid"] == str(os.getpid())
    assert rec["text"] == "hello there world"


@pytest.mark.parametrize("priority, prefix", [
    ("info", ""), ("warn", "warning: "), ("warning", "warning: "), ("error", "error: "),
    ("err", "error: "), ("fatal", "fatal: "), ("crit", "fatal: "), ("panic", "panic: "),
    ("WARN", "warning: "),
])
def test_priorities(conf, tmp_path, priority, prefix):
    assert postlog.main(["-c", str(conf), "-p", priority, "text"]) == 0
    assert [r["text"] for r in logged(tmp_path)] == [prefix + "text"]


def test_tag_is_used_as_given(conf, tmp_path):
    assert postlog.main(["-c", str(conf), "-i", "-t", "backup-script", "done"]) == 0
    [rec] = logged(tmp_path)
    assert (rec["tag"], rec["text"]) == ("backup-script", "done")


def test_syslog_name_makes_the_default_tag(conf, tmp_path):
    (conf / "main.cf").write_text((conf / "main.cf").read_text() + "syslog_name = hato-out\n")
    assert postlog.main(["-c", str(conf), "x"]) == 0
    assert logged(tmp_path)[0]["tag"] == "hato-out/postlog"


def test_each_input_line_is_a_record(conf, tmp_path, monkeypatch):
    data = b"first\n\nthird with\ttab\nno newline"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    assert postlog.main(["-c", str(conf), "-p", "warning"]) == 0
    assert [r["text"] for r in logged(tmp_path)] == [
        "warning: first", "warning: ", "warning: third with?tab", "warning: no newline"]


def test_bad_severity_and_usage(conf, tmp_path, capsys):
    assert postlog.main(["-c", str(conf), "-p", "loud", "x"]) == 1
    assert capsys.readouterr().err == 'postlog: fatal: bad severity: "loud"\n'
    assert postlog.main(["-c", str(conf), "-x"]) == 1
    assert capsys.readouterr().err == f"postlog: fatal: {postlog.USAGE}\n"
    assert not (tmp_path / "maillog").exists()


def test_a_log_it_cannot_write(conf, tmp_path, capsys):
    (conf / "main.cf").write_text(f"maillog_file = {tmp_path}/none/maillog\n")
    assert postlog.main(["-c", str(conf), "x"]) == 1
    assert capsys.readouterr().err == (f"postlog: fatal: open maillog_file {tmp_path}/none/"
                                       "maillog: No such file or directory\n")

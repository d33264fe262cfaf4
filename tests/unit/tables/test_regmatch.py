"""regexp: back-reference patterns are matched in a helper process under a
time limit; a match that takes too long fails temporarily instead of
hanging the process (glibc takes 24 s for ``^(a|aa)*\\1*$`` on 14 ``a``s,
and minutes on 30)."""

from __future__ import annotations

import pytest

from hato.tables import regmatch
from hato.tables.base import TableRetry
from hato.tables.regexp import RegexpTable
from hato.tables.regmatch import MATCH_SECONDS


def write(tmp_path, text: str) -> str:
    path = tmp_path / "rules"
    path.write_bytes(text.encode())
    return str(path)


def on_match(monkeypatch, code: str) -> None:
    """Make the helper run *code* when it is asked to match."""
    monkeypatch.setattr(regmatch, "_HELPER", regmatch._HELPER.replace(
        'elif op == b"M":', f'elif op == b"M":\n        {code}'))


def test_back_references_match_with_groups(tmp_path):
    t = RegexpTable(write(tmp_path, "/^Subject: (.+) \\1$/ dup $1\n"
                                    "/^(a)(b)\\2\\1$/ abba:$2$1\n"
                                    "if /(x)\\1/\n/^(.*)$/ xx:$1\nendif\n"))
    try:
        assert t.warnings == []
        assert t.get("Subject: buy now buy now") == "dup buy now"
        assert t.get("Subject: buy now sell now") is None
        assert t.get("ABBA") == "abba:BA"  # case folded as a regexp: key is
        assert t.get("axxb") == "xx:axxb"
        assert t.get("axyb") is None
        assert t._helper is not None and t._helper.proc is not None
    finally:
        t.close()


def test_runaway_match_fails_temporarily_and_the_helper_comes_back(tmp_path, caplog):
    path = write(tmp_path, "/^(a|aa)*\\1*$/ slow\n/^(b)\\1$/ bb\n")
    t = RegexpTable(path)
    try:
        with pytest.raises(TableRetry, match=f"back-references took more than "
                                             f"{MATCH_SECONDS:g} CPU seconds"):
            t.get("a" * 40)
        assert (f"regexp map {path}: matching a pattern with back-references took more "
                f"than {MATCH_SECONDS:g} CPU seconds: giving up") in caplog.text
        assert t._helper is not None and t._helper.proc is None  # killed
        # the next lookup starts a new helper; the same rule still answers quickly
        assert t.get("aaa") == "slow"
        assert t.get("bb") == "bb"
    finally:
        t.close()


def test_helper_is_started_only_for_back_references_and_stopped_on_close(tmp_path):
    plain = RegexpTable(write(tmp_path, "/^a/ A\n/^b/ B\n/^c/ C\n/^d/ D\n/^(e)$/ E$1\n"))
    try:
        assert plain.get("dx") == "D"
        assert plain.get("e") == "Ee"
        assert plain._helper is None
    finally:
        plain.close()
    t = RegexpTable(write(tmp_path, "/(.)\\1/ double\n"))
    assert t.get("xyyz") == "double"
    proc = t._helper.proc
    assert proc is not None and proc.poll() is None
    t.close()
    assert proc.poll() is not None
    assert t._helper is None


def test_helper_that_died_between_lookups_is_replaced(tmp_path):
    t = RegexpTable(write(tmp_path, "/(.)\\1/ double\n"))
    try:
        assert t.get("aa") == "double"
        t._helper.proc.kill()
        t._helper.proc.wait()
        assert t.get("bb") == "double"
    finally:
        t.close()


def test_helper_that_dies_during_a_match_fails_the_lookup_temporarily(tmp_path, monkeypatch):
    # a helper that compiles, then exits instead of answering the match
    on_match(monkeypatch, "raise SystemExit(3)")
    t = RegexpTable(write(tmp_path, "/(.)\\1/ double\n"))
    try:
        with pytest.raises(TableRetry, match="the regular expression helper exited"):
            t.get("aa")
    finally:
        t.close()


def test_reload_starts_a_fresh_helper(tmp_path):
    path = write(tmp_path, "/(.)\\1/ double\n")
    t = RegexpTable(path)
    try:
        assert t.get("aa") == "double"
        old = t._helper.proc
        t._load()
        assert old.poll() is not None
        assert t.get("aa") == "double"
    finally:
        t.close()


def test_helper_that_does_not_answer_is_given_up(tmp_path, monkeypatch):
    # a helper that sleeps instead of matching: no CPU spent, the wait limit applies
    monkeypatch.setattr(regmatch, "WAIT_SECONDS", 0.5)
    on_match(monkeypatch, "import time; time.sleep(30)")
    t = RegexpTable(write(tmp_path, "/(.)\\1/ double\n"))
    try:
        with pytest.raises(TableRetry, match="did not answer within 0.5 seconds"):
            t.get("aa")
        assert t._helper.proc is None
    finally:
        t.close()

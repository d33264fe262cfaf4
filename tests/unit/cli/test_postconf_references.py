"""A main.cf value that refers to a parameter whose default is not valid
macro text (the expansion filters) is fatal, as in Postfix's postconf,
which scans what main.cf refers to down to the defaults."""

from __future__ import annotations

from tests.hatorun import hato_inprocess


def test_reference_to_a_filter_default_is_fatal(tmp_path):
    (tmp_path / "master.cf").write_text("")
    (tmp_path / "main.cf").write_text("relayhost = $(smtpd_expansion_filter)\n")
    r = hato_inprocess("postconf", "-c", str(tmp_path), "-n")
    assert r.returncode == 1 and r.stdout == ""
    assert "relayhost: $smtpd_expansion_filter: empty macro name" in r.stderr


def test_ordinary_references_are_fine(tmp_path):
    (tmp_path / "master.cf").write_text("")
    (tmp_path / "main.cf").write_text("relayhost = [$myhostname]\nmydomain = example.org\n")
    r = hato_inprocess("postconf", "-c", str(tmp_path), "-n")
    assert r.returncode == 0, r.stderr
    assert "relayhost = [$myhostname]" in r.stdout

"""Numbers read from files and options: str.isdigit() is true for digits
int() refuses ("²"), which made int() raise where a clean refusal was
meant. The same class of input the fuzzers (tests/fuzz) found in the
protocol cores."""

from __future__ import annotations

from hato.auth.cyrusconf import parse_cyrus_conf
from hato.auth.pwcheck import MechanismError, Rimap
from hato.auth.saslauthd_server import read_pid


def test_cyrus_conf_log_level_superscript():
    conf = parse_cyrus_conf("pwcheck_method: saslauthd\nlog_level: ²\n", "smtpd.conf")
    assert any("log_level" in str(e) for e in conf.errors)


def test_pid_file_with_a_superscript_digit(tmp_path):
    pid = tmp_path / "saslauthd.pid"
    pid.write_text("²\n")
    assert read_pid(str(pid)) is None
    pid.write_text("1234\n")
    assert read_pid(str(pid)) == 1234


def test_rimap_port_superscript():
    import pytest

    with pytest.raises(MechanismError, match="unknown port"):
        Rimap._port("²")
    assert Rimap._port("143") == 143

"""``postconf -x -o stress=yes``: what the stress-adapting parameters become
under stress, asked of Debian's Postfix and of hato on the same minimal
configuration directory."""

from __future__ import annotations

import pytest

from .postconf_cases import assert_same, write_config

pytestmark = pytest.mark.differential

MASTER_CF = "smtp inet n - n - - smtpd\n"
STRESS_PARAMS = ["smtpd_timeout", "smtpd_hard_error_limit", "smtpd_junk_command_limit",
                 "smtpd_per_request_deadline", "smtpd_starttls_timeout",
                 "postscreen_greet_wait", "postscreen_command_time_limit",
                 "address_verify_poll_count"]


@pytest.fixture
def minimal(tmp_path, postfix_postconf):
    return write_config(tmp_path / "conf", "", MASTER_CF)


def test_smtpd_timeout_under_stress(minimal):
    assert assert_same(minimal, "-x", "-o", "stress=yes", "smtpd_timeout") == \
        "smtpd_timeout = 10s\n"
    assert assert_same(minimal, "-x", "smtpd_timeout") == "smtpd_timeout = 300s\n"
    assert assert_same(minimal, "-x", "-o", "stress=", "smtpd_timeout") == \
        "smtpd_timeout = 300s\n"
    # Without -x the value is shown as written.
    assert_same(minimal, "-o", "stress=yes", "smtpd_timeout")


@pytest.mark.parametrize("stress", ["yes", "no", ""])
def test_stress_adapting_parameters(minimal, stress):
    assert_same(minimal, "-x", "-o", f"stress={stress}", *STRESS_PARAMS)


def test_main_cf_value_with_stress_expression(tmp_path, postfix_postconf):
    d = write_config(tmp_path / "own", "smtpd_timeout = ${stress?{2}:{300}}s\n"
                     "smtpd_hard_error_limit = ${stress?{1}:{20}}\n", MASTER_CF)
    assert assert_same(d, "-x", "-o", "stress=yes", "smtpd_timeout",
                       "smtpd_hard_error_limit") == \
        "smtpd_timeout = 2s\nsmtpd_hard_error_limit = 1\n"
    assert assert_same(d, "-x", "smtpd_timeout", "smtpd_hard_error_limit") == \
        "smtpd_timeout = 300s\nsmtpd_hard_error_limit = 20\n"
    assert_same(d, "-n", "-o", "stress=yes")

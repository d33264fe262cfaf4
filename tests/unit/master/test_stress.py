"""master's stress-mode decisions (hato.master.stress): the hysteresis of
StressGauge, and the names and texts of Postfix's warnings."""

from __future__ import annotations

import pytest

from hato.master.stress import (STRESS_HOLD, STRESS_HOLD_ENV, StressEvent, StressGauge,
                                limit_warnings, low_water, service_label, stress_hold)

START, END = StressEvent.START, StressEvent.END


def test_low_water_is_80_percent_and_below_maxproc():
    assert low_water(100) == 80
    assert low_water(10) == 8
    assert low_water(3) == 2
    assert low_water(2) == 1
    assert low_water(1) == 0


def test_starts_at_maxproc_once():
    g = StressGauge(3, hold=10)
    assert g.update(2, 0) is None
    assert not g.stressed
    assert g.update(3, 1) is START
    assert g.stressed
    assert g.update(3, 2) is None
    assert g.update(4, 3) is None  # more than maxproc (a reload's leftovers)


def test_unlimited_never_stresses():
    g = StressGauge(0, hold=10)
    for busy in (0, 1, 1000):
        assert g.update(busy, 0) is None
    assert not g.stressed


def test_ends_after_hold_time_below_low_water():
    g = StressGauge(10, hold=10)
    assert g.update(10, 0) is START
    assert g.update(8, 1) is None  # at the low-water mark: the hold begins
    assert g.ends_at == 11
    assert g.update(8, 5) is None
    assert g.update(5, 10.9) is None
    assert g.update(5, 11) is END
    assert not g.stressed
    assert g.ends_at is None
    assert g.update(5, 30) is None


def test_a_rise_above_low_water_restarts_the_hold():
    g = StressGauge(10, hold=10)
    g.update(10, 0)
    g.update(7, 1)
    assert g.update(9, 6) is None  # above 8: not low any more
    assert g.ends_at is None
    assert g.update(8, 7) is None
    assert g.update(8, 16) is None  # 9 s since 7
    assert g.update(8, 17) is END


def test_back_at_maxproc_during_the_hold_stays_in_stress():
    g = StressGauge(3, hold=10)
    assert g.update(3, 0) is START
    g.update(0, 1)
    assert g.update(3, 2) is None  # still stressed: no second START
    assert g.update(2, 3) is None
    assert g.update(2, 12.9) is None
    assert g.update(2, 13) is END
    assert g.update(3, 14) is START  # a new episode


def test_hold_zero_ends_at_first_low_reading():
    g = StressGauge(1, hold=0)
    assert g.update(1, 0) is START
    assert g.update(0, 0) is END


def test_stress_hold_from_environment(monkeypatch):
    monkeypatch.delenv(STRESS_HOLD_ENV, raising=False)
    assert stress_hold() == STRESS_HOLD == 10
    monkeypatch.setenv(STRESS_HOLD_ENV, "1.5")
    assert stress_hold() == 1.5
    monkeypatch.setenv(STRESS_HOLD_ENV, "soon")
    assert stress_hold() == STRESS_HOLD


@pytest.mark.parametrize("args,label", [
    (("smtp", "inet", False, 25, None), 'service "smtp" (25)'),
    (("127.0.0.1:2525", "inet", False, 2525, "127.0.0.1"),
     'service "127.0.0.1:2525" (127.0.0.1:2525)'),
    (("submission", "inet", False, 587, None), 'service "submission" (587)'),
    (("cleanup", "unix", True), 'service "cleanup" (private/cleanup)'),
    (("pickup", "unix", False), 'service "pickup" (public/pickup)'),
])
def test_service_label(args, label):
    assert service_label(*args) == label


def test_postfix_warning_texts():
    assert limit_warnings('service "smtp" (25)', 3) == [
        'service "smtp" (25) has reached its process limit "3": '
        "new clients may experience noticeable delays",
        "to avoid this condition, increase the process count in master.cf or reduce "
        "the service time per client",
        "see http://www.postfix.org/STRESS_README.html for examples of stress-adapting "
        "configuration settings",
    ]

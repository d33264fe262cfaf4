"""Stress mode decisions of master: when a service is full and when it is not.

master sums the busy sessions its workers report for one master.cf service
and feeds the total to that service's :class:`StressGauge`. The gauge says
when stress mode starts (busy reached ``maxproc``) and when it ends: only
after busy has stayed at or below the low-water mark (80% of maxproc, and
at least one below it) for :data:`STRESS_HOLD` seconds without a break, so
that a service hovering at its limit does not flap. A maxproc of 0
(unlimited) never reaches stress.

Pure: time comes in as an argument; master does the I/O and the logging
(:func:`limit_warnings`, :func:`service_label`).
"""

from __future__ import annotations

import enum
import os

#: Seconds the busy count must stay low before stress mode ends.
STRESS_HOLD = 10.0
#: Environment variable that overrides STRESS_HOLD (tests shorten it).
STRESS_HOLD_ENV = "HATO_STRESS_HOLD"
#: Postfix warns about a full service no more than once per this many seconds.
WARNING_INTERVAL = 1000.0
#: Stress ends when busy is at or below this fraction of maxproc.
LOW_WATER = 0.8


class StressEvent(enum.Enum):
    START = "start"
    END = "end"


def stress_hold() -> float:
    """STRESS_HOLD, or the value of $HATO_STRESS_HOLD when it is a number."""
    text = os.environ.get(STRESS_HOLD_ENV, "")
    try:
        value = float(text)
    except ValueError:
        return STRESS_HOLD
    return value if value >= 0 else STRESS_HOLD


def low_water(maxproc: int) -> int:
    """The busy count at or below which stress may end: 80% of maxproc,
    at least one below maxproc."""
    return max(0, min(maxproc - 1, int(maxproc * LOW_WATER)))


class StressGauge:
    """Stress state of one service: ``update(busy, now)`` → START, END or None."""

    def __init__(self, maxproc: int, hold: float = STRESS_HOLD):
        self.maxproc = maxproc
        self.hold = hold
        self.low = low_water(maxproc)
        self.stressed = False
        self.low_since: float | None = None

    def update(self, busy: int, now: float) -> StressEvent | None:
        if self.maxproc <= 0:
            return None
        if busy >= self.maxproc:
            self.low_since = None
            if not self.stressed:
                self.stressed = True
                return StressEvent.START
            return None
        if not self.stressed:
            return None
        if busy > self.low:
            self.low_since = None
            return None
        if self.low_since is None:
            self.low_since = now
        if now - self.low_since >= self.hold:
            self.stressed = False
            self.low_since = None
            return StressEvent.END
        return None

    @property
    def ends_at(self) -> float | None:
        """When stress ends if the busy count stays as it is (None: not
        ending); master asks again at that time."""
        if self.stressed and self.low_since is not None:
            return self.low_since + self.hold
        return None


def service_label(name: str, type_: str, private: bool, port: int | None = None,
                  host: str | None = None) -> str:
    """Postfix's ``service "NAME" (ENDPOINT)``: the endpoint is the port for
    an inet service on every interface, ``host:port`` as written for one
    with its own address, ``private/NAME`` or ``public/NAME`` for unix."""
    if type_ == "inet":
        endpoint = name if host else str(port if port is not None else name)
    elif type_ in ("unix", "unix-dgram", "pass"):
        endpoint = f"{'private' if private else 'public'}/{name}"
    else:
        endpoint = name
    return f'service "{name}" ({endpoint})'


def limit_warnings(label: str, maxproc: int) -> list[str]:
    """Postfix master's three warnings for a service at its process limit."""
    return [
        f'{label} has reached its process limit "{maxproc}": '
        "new clients may experience noticeable delays",
        "to avoid this condition, increase the process count in master.cf "
        "or reduce the service time per client",
        "see http://www.postfix.org/STRESS_README.html for examples of "
        "stress-adapting configuration settings",
    ]

"""anvil's counters and request protocol, without I/O.

anvil keeps, per *ident* (``service:client-address``, as smtpd forms it),
the number of connections in progress and the number of connections,
messages, recipients, new TLS sessions and AUTH commands in the current
window of ``anvil_rate_time_unit`` seconds — Postfix's fixed window: it
starts at the ident's first event and all its rates restart at 0 with the
first event after ``start + unit``. An ident without connections is
forgotten ``unit`` seconds after its last connection ended (or after its
first event, when it never connected), so the table stays as small as the
recent clients.

Requests and replies are attribute lists (:mod:`hato.proto.attr`), as
Postfix's anvil(8) speaks them on ``private/anvil``:

============================  ==============================================
request                        reply
============================  ==============================================
``request=connect ident=I``    ``status=0 count=N rate=N``
``request=disconnect ident=I`` ``status=0``
``request=message ident=I``    ``status=0 rate=N``
``request=recipient ident=I``  ``status=0 rate=N``
``request=newtls ident=I``     ``status=0 rate=N``
``request=newtls_report …``    ``status=0 rate=N`` (no update)
``request=auth ident=I``       ``status=0 rate=N``
``request=lookup ident=I``     ``status=0 count= rate= mail= rcpt= newtls= auth=``
``request=status``             ``status=0 size=N`` (hato: the table's size)
============================  ==============================================

A request that is not one of these, or lacks its ident, gets ``status=-1``
(Postfix's ANVIL_STAT_FAIL) and changes nothing.

Time comes in as an argument (seconds, wall clock: the statistics report
the time of day of each peak).
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from .attr import Attrs

STATUS_OK = 0
STATUS_FAIL = -1

#: request → the rate it counts (``connect`` counts the connection rate).
RATE_OF = {"connect": "rate", "message": "mail", "recipient": "rcpt",
           "newtls": "newtls", "auth": "auth"}

#: The statistics lines in Postfix's order: (field, name in the log line).
_STAT_RATES = (("rate", "connection"), ("mail", "message"), ("rcpt", "recipient"),
               ("newtls", "newtls"), ("auth", "auth"))

MAX_IDENT = 512  # service name + address: anything longer is not smtpd talking


@dataclass
class Remote:
    """One (service, client) pair."""

    ident: str
    start: float
    count: int = 0
    rate: int = 0
    mail: int = 0
    rcpt: int = 0
    newtls: int = 0
    auth: int = 0
    expires: float | None = None  # when count is 0: the time it is forgotten

    def roll(self, now: float, unit: float) -> None:
        if self.start + unit < now:
            self.rate = self.mail = self.rcpt = self.newtls = self.auth = 0
            self.start = now


@dataclass
class Peak:
    value: int = 0
    ident: str = ""
    when: float = 0.0

    def see(self, value: int, ident: str, now: float) -> None:
        if value > self.value:
            self.value, self.ident, self.when = value, ident, now


@dataclass
class Statistics:
    """The peaks since the last report, as anvil logs them."""

    count: Peak = field(default_factory=Peak)
    rates: dict[str, Peak] = field(default_factory=lambda: {f: Peak() for f, _ in _STAT_RATES})
    cache: Peak = field(default_factory=Peak)

    def report(self, unit: int, clock) -> list[str]:
        """The statistics lines (then the peaks start again). *clock*
        formats a time as Postfix does (``Nov 29 12:59:36``)."""
        lines = []
        for fname, name in _STAT_RATES:
            p = self.rates[fname]
            if p.value:
                lines.append(f"statistics: max {name} rate {p.value}/{unit}s for ({p.ident}) "
                             f"at {clock(p.when)}")
            if fname == "rate" and self.count.value:  # Postfix logs the count second
                lines.append(f"statistics: max connection count {self.count.value} for "
                             f"({self.count.ident}) at {clock(self.count.when)}")
        if self.cache.value:
            lines.append(f"statistics: max cache size {self.cache.value} at "
                         f"{clock(self.cache.when)}")
        self.count, self.cache = Peak(), Peak()
        self.rates = {f: Peak() for f, _ in _STAT_RATES}
        return lines


class AnvilTable:
    """The in-memory counters of one anvil."""

    def __init__(self, rate_time_unit: float):
        self.unit = rate_time_unit
        self.remotes: dict[str, Remote] = {}
        self.stats = Statistics()
        self._expiry: list[tuple[float, str]] = []  # (when, ident), lazily checked

    def __len__(self) -> int:
        return len(self.remotes)

    def _get(self, ident: str, now: float) -> Remote:
        remote = self.remotes.get(ident)
        if remote is None:
            remote = self.remotes[ident] = Remote(ident, now)
            self._forget_at(remote, now + self.unit)
            self.stats.cache.see(len(self.remotes), "", now)
        else:
            remote.roll(now, self.unit)
        return remote

    def _forget_at(self, remote: Remote, when: float) -> None:
        remote.expires = when
        heapq.heappush(self._expiry, (when, remote.ident))

    def connect(self, ident: str, now: float) -> tuple[int, int]:
        remote = self._get(ident, now)
        remote.count += 1
        remote.rate += 1
        remote.expires = None
        self.stats.count.see(remote.count, ident, now)
        self.stats.rates["rate"].see(remote.rate, ident, now)
        return remote.count, remote.rate

    def disconnect(self, ident: str, now: float) -> None:
        remote = self.remotes.get(ident)
        if remote is None or remote.count <= 0:
            return
        remote.count -= 1
        if remote.count == 0:
            self._forget_at(remote, now + self.unit)

    def event(self, request: str, ident: str, now: float) -> int:
        """message, recipient, newtls, auth: count one, return the rate."""
        fname = RATE_OF[request]
        remote = self._get(ident, now)
        value = getattr(remote, fname) + 1
        setattr(remote, fname, value)
        self.stats.rates[fname].see(value, ident, now)
        return value

    def peek(self, ident: str, now: float) -> Remote | None:
        """The current state, without counting (stale rates read as 0)."""
        remote = self.remotes.get(ident)
        if remote is not None:
            remote.roll(now, self.unit)
        return remote

    def expire(self, now: float) -> int:
        """Forget the idents whose time has come; the number forgotten."""
        gone = 0
        heap = self._expiry
        while heap and heap[0][0] <= now:
            when, ident = heapq.heappop(heap)
            remote = self.remotes.get(ident)
            if remote is not None and remote.count == 0 and remote.expires is not None \
                    and remote.expires <= now:
                del self.remotes[ident]
                gone += 1
        if len(heap) > 4 * len(self.remotes) + 1024:
            # connect/disconnect churn leaves superseded entries: rebuild
            self._expiry = [(r.expires, r.ident) for r in self.remotes.values()
                            if r.expires is not None]
            heapq.heapify(self._expiry)
        return gone

    def live_counts(self) -> dict[str, int]:
        return {i: r.count for i, r in self.remotes.items() if r.count > 0}


def handle(table: AnvilTable, req: Attrs, now: float,
           held: Counter | None = None) -> tuple[Attrs, str]:
    """Answer one request from the local table. *held* counts the
    connections this requester registered (so that they are dropped when
    it goes away). Returns the reply and a warning text ('' when none)."""
    request = req.get("request") or ""
    ident = req.get("ident")
    if request == "status":
        return Attrs.of(status=STATUS_OK, size=len(table)), ""
    if request not in ("connect", "disconnect", "message", "recipient", "newtls",
                       "newtls_report", "auth", "lookup"):
        return Attrs.of(status=STATUS_FAIL), f'unrecognized request: "{request}", ignored'
    if not ident or len(ident) > MAX_IDENT:
        return Attrs.of(status=STATUS_FAIL), f"{request}: bad or missing ident"
    if request == "connect":
        count, rate = table.connect(ident, now)
        if held is not None:
            held[ident] += 1
        return Attrs.of(status=STATUS_OK, count=count, rate=rate), ""
    if request == "disconnect":
        if held is None or held[ident] > 0:
            table.disconnect(ident, now)
            if held is not None:
                held[ident] -= 1
                if not held[ident]:
                    del held[ident]
        return Attrs.of(status=STATUS_OK), ""
    if request in ("newtls_report", "lookup"):
        r = table.peek(ident, now)
        if request == "newtls_report":
            return Attrs.of(status=STATUS_OK, rate=r.newtls if r else 0), ""
        return lookup_reply(r), ""
    return Attrs.of(status=STATUS_OK, rate=table.event(request, ident, now)), ""


def lookup_reply(r: Remote | None) -> Attrs:
    if r is None:
        return Attrs.of(status=STATUS_OK, count=0, rate=0, mail=0, rcpt=0, newtls=0, auth=0)
    return Attrs.of(status=STATUS_OK, count=r.count, rate=r.rate, mail=r.mail, rcpt=r.rcpt,
                    newtls=r.newtls, auth=r.auth)

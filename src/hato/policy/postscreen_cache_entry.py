"""One postscreen cache entry: per test, the time until which a pass is valid.

postscreen remembers, per client address, when each of its tests' passes
expires. The value is Postfix's (postscreen_tests.c, ``psc_print_tests``)
so that a cache file or Redis key is recognisable to anyone who knows
Postfix's ``postmap -s btree:/var/lib/postfix/postscreen_cache``::

    PREGREET;DNSBL;PIPELINING;NON_SMTP;BARE_NEWLINE

five unsigned decimal time stamps (seconds since the epoch), in that order.
Two values are not times:

* ``0`` (:data:`STAMP_NEW`): the test never passed; postscreen logs ``PASS
  NEW`` when the client passes its last test.
* ``1`` (:data:`STAMP_DISABLED`): the test never passed and was disabled
  when the entry was written (so enabling it later does not make every
  client "new" again).

Parsing is Postfix's (``psc_parse_tests``): a field that is empty, not a
number, or out of range, and every missing field, reads as
:data:`STAMP_DISABLED`; extra fields are ignored. :meth:`CacheEntry.parse`
returns None only when no field at all is a number, so such a value is
treated as no entry.

Validity is Postfix's ``psc_todo_tests``: an enabled test must be run again
when ``now > stamp``; a client whose every enabled test has ``stamp >= now``
is ``PASS OLD``. Clean-up is ``psc_cache_validator``: an entry is kept when
it would still be valid at ``now - postscreen_cache_retention_time`` for
the enabled tests, i.e. no enabled test expired longer ago than the
retention time; otherwise it is dropped.

Pure: time comes in as an argument.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

#: the test never passed
STAMP_NEW = 0
#: the test never passed and was disabled when the entry was written
STAMP_DISABLED = 1
#: strtoul's range on 64-bit systems: a larger number is ERANGE
STAMP_MAX = 2 ** 64 - 1


class PscTest(str, Enum):
    """postscreen's tests, in the order of the cache value's fields."""

    PREGREET = "pregreet"
    DNSBL = "dnsbl"
    PIPELINING = "pipelining"
    NON_SMTP = "non_smtp"
    BARE_NEWLINE = "bare_newline"


#: the fields of a cache value, in order
TESTS: tuple[PscTest, ...] = tuple(PscTest)
#: the tests run before the 220 greeting (the rest run in postscreen's SMTP engine)
EARLY_TESTS = frozenset({PscTest.PREGREET, PscTest.DNSBL})

_NUMBER = re.compile(r"[0-9]+")


def as_test(test: PscTest | str) -> PscTest:
    """``"non_smtp"`` (or ``"non-smtp"``, ``"bare newline"``…) → :class:`PscTest`."""
    if isinstance(test, PscTest):
        return test
    return PscTest(str(test).strip().lower().replace("-", "_").replace(" ", "_"))


def as_tests(tests: Iterable[PscTest | str]) -> frozenset[PscTest]:
    return frozenset(as_test(t) for t in tests)


def _parse_stamp(text: str) -> int | None:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        return None
    value = int(text)
    return value if value <= STAMP_MAX else None


@dataclass
class CacheEntry:
    """The expiry time stamps of one client's tests (see the module doc)."""

    stamps: dict[PscTest, int] = field(
        default_factory=lambda: {t: STAMP_NEW for t in TESTS})

    # -- building and reading ----------------------------------------------------------

    @classmethod
    def new(cls) -> CacheEntry:
        """A client never seen: every test :data:`STAMP_NEW`."""
        return cls()

    @classmethod
    def parse(cls, text: str | bytes | None) -> CacheEntry | None:
        """A cache value → entry; None when nothing in it is a time stamp."""
        if text is None:
            return None
        if isinstance(text, bytes):
            text = text.rstrip(b"\0").decode("ascii", "replace")
        parts = text.rstrip("\0").split(";")
        stamps: dict[PscTest, int] = {}
        good = 0
        for i, test in enumerate(TESTS):
            value = _parse_stamp(parts[i]) if i < len(parts) else None
            if value is None:
                stamps[test] = STAMP_DISABLED
            else:
                stamps[test] = value
                good += 1
        if good == 0:
            return None
        return cls(stamps)

    def format(self, enabled_tests: Iterable[PscTest | str] | None = None) -> str:
        """The cache value ``%lu;%lu;%lu;%lu;%lu``. With *enabled_tests*, a
        test that is not enabled and still :data:`STAMP_NEW` is written as
        :data:`STAMP_DISABLED`, as Postfix does."""
        enabled = None if enabled_tests is None else as_tests(enabled_tests)
        out = []
        for test in TESTS:
            stamp = self.stamps.get(test, STAMP_NEW)
            if enabled is not None and test not in enabled and stamp == STAMP_NEW:
                stamp = STAMP_DISABLED
            out.append(str(stamp))
        return ";".join(out)

    def __str__(self) -> str:
        return self.format()

    def copy(self) -> CacheEntry:
        return CacheEntry(dict(self.stamps))

    def stamp(self, test: PscTest | str) -> int:
        return self.stamps.get(as_test(test), STAMP_NEW)

    # -- changing ----------------------------------------------------------------------

    def update(self, test: PscTest | str, until: float) -> None:
        """*test* passed; the pass is valid until *until* (epoch seconds)."""
        value = int(until)
        if value < 0 or value > STAMP_MAX:
            raise ValueError(f"postscreen cache: time stamp out of range: {until}")
        self.stamps[as_test(test)] = value

    def fail(self, test: PscTest | str) -> None:
        """*test* failed: its earlier pass no longer counts (Postfix writes
        :data:`STAMP_DISABLED` over it, postscreen_smtpd.c)."""
        self.stamps[as_test(test)] = STAMP_DISABLED

    # -- deciding ----------------------------------------------------------------------

    def todo(self, enabled_tests: Iterable[PscTest | str], now: float) -> frozenset[PscTest]:
        """The enabled tests whose pass has expired (or never happened) at *now*."""
        return frozenset(t for t in as_tests(enabled_tests)
                         if now > self.stamps.get(t, STAMP_NEW))

    def valid_for(self, enabled_tests: Iterable[PscTest | str], now: float) -> bool:
        """True when every enabled test's pass is still valid at *now*
        (``stamp >= now``, Postfix's ``now > stamp`` means "test again"):
        the client is ``PASS OLD``."""
        return not self.todo(enabled_tests, now)

    def is_new(self) -> bool:
        """Some test never passed: when the client now passes, it is ``PASS NEW``."""
        return any(self.stamps.get(t, STAMP_NEW) == STAMP_NEW for t in TESTS)

    def retain(self, enabled_tests: Iterable[PscTest | str], now: float,
               retention: int) -> bool:
        """Postfix's clean-up rule: keep the entry while no enabled test
        expired longer ago than *retention* seconds."""
        return self.valid_for(enabled_tests, now - retention)

    def latest(self) -> int:
        """The last expiry of any test (0 when none passed)."""
        return max((s for s in self.stamps.values() if s > STAMP_DISABLED), default=0)


__all__ = ["EARLY_TESTS", "STAMP_DISABLED", "STAMP_MAX", "STAMP_NEW", "TESTS", "CacheEntry",
           "PscTest", "as_test", "as_tests"]

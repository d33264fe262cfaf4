"""Address verification decisions, as Postfix's verify(8) makes them: the
cache entry of one address, when it is fresh, when it needs a new probe,
what an update may overwrite, and the sender address of probes.

An entry is Postfix's value ``status:probed:updated:text`` (verify.c), so
that ``hato postmap -s btree:/var/lib/hato/verify_cache`` reads like
Postfix's:

* *status*: the recipient status of the last probe — :data:`OK` (0,
  deliverable), :data:`DEFER` (1) or :data:`BOUNCE` (2) (both
  undeliverable) — or :data:`TODO` (3): nothing known yet, a probe is out;
* *probed*: when the probe now outstanding was sent (0: none);
* *updated*: when the last result came in (0: never);
* *text*: what the delivery agent said (``Address verification in
  progress`` while there is nothing else).

A query (:func:`query`) answers from the entry while it has not expired
(``address_verify_positive_expire_time`` for deliverable addresses,
``address_verify_negative_expire_time`` for the others), and asks for a
new probe when the result is older than the refresh time
(``address_verify_positive_refresh_time`` /
``address_verify_negative_refresh_time``), unless a probe went out less
than :data:`PROBE_TTL` (1000 s) ago. With ``address_verify_negative_cache
= no`` nothing is stored for an address that has no result yet, and an
expired entry is deleted. An update (:func:`update`) that says
undeliverable never replaces a deliverable result before that expires:
the address is probed again at the next query instead.

Pure: time comes in as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

#: recipient status codes (Postfix's DEL_RCPT_STAT_*)
OK, DEFER, BOUNCE, TODO = 0, 1, 2, 3
#: request status codes (Postfix's VRFY_STAT_*)
STAT_OK, STAT_FAIL, STAT_BAD = 0, -1, -2
#: a probe without an answer after this many seconds is taken as lost
PROBE_TTL = 1000
#: the text of an address whose probe is under way
IN_PROGRESS = "Address verification in progress"
#: the alphabet of the time stamp in probe senders (Postfix's safe_ultostr, base 31)
SAFE_CHARS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
VERIFY_BASE = 31


def status_name(status: int) -> str | None:
    """How the delivery agents log a probe's result: ``deliverable`` or
    ``undeliverable``; None for a status an update may not carry."""
    if status == OK:
        return "deliverable"
    if status in (DEFER, BOUNCE):
        return "undeliverable"
    return None


def cache_key(address: str) -> str:
    """The key of an address in the cache: a ``:`` (IPv6 address literal)
    becomes ``_``, as Postfix stores it."""
    return address.replace(":", "_")


@dataclass(frozen=True)
class CacheEntry:
    status: int
    probed: int
    updated: int
    text: str

    def format(self) -> str:
        return f"{self.status}:{self.probed}:{self.updated}:{self.text}"

    @classmethod
    def parse(cls, raw: str | None) -> "CacheEntry | None":
        """The entry, or None when *raw* is not one (Postfix warns ``bad
        address verify table entry`` and treats the address as unknown)."""
        if raw is None:
            return None
        parts = raw.split(":", 3)
        if len(parts) != 4 or not all(p.isdigit() for p in parts[:3]):
            return None
        status, probed, updated = (int(p) for p in parts[:3])
        if status not in (OK, DEFER, BOUNCE, TODO) or not (probed or updated):
            return None
        return cls(status, probed, updated, parts[3])


@dataclass(frozen=True)
class Freshness:
    """The cache's time rules (seconds) and address_verify_negative_cache."""

    positive_expire: int = 31 * 86400
    positive_refresh: int = 7 * 86400
    negative_expire: int = 3 * 86400
    negative_refresh: int = 3 * 3600
    negative_cache: bool = True

    @classmethod
    def from_settings(cls, s) -> "Freshness":
        return cls(positive_expire=s.time("address_verify_positive_expire_time"),
                   positive_refresh=s.time("address_verify_positive_refresh_time"),
                   negative_expire=s.time("address_verify_negative_expire_time"),
                   negative_refresh=s.time("address_verify_negative_refresh_time"),
                   negative_cache=s.bool("address_verify_negative_cache"))

    def expired(self, e: CacheEntry, now: int) -> bool:
        if e.status == OK:
            return e.updated + self.positive_expire < now
        return e.updated + self.negative_expire < now

    def refresh_needed(self, e: CacheEntry, now: int) -> bool:
        if e.status == OK:
            return e.updated + self.positive_refresh < now
        return e.updated + self.negative_refresh < now


@dataclass(frozen=True)
class QueryOutcome:
    """The answer to a query and what the service does next."""

    status: int  # OK, DEFER, BOUNCE or TODO
    text: str
    probe: bool = False  # send a probe now
    store: CacheEntry | None = None  # write this entry
    delete: bool = False  # remove the address's entry


def query(entry: CacheEntry | None, now: int, rules: Freshness, *,
          present: bool | None = None) -> QueryOutcome:
    """verify_query_service(): *entry* is the cached entry (None: none, or
    one that did not parse); *present* says whether the cache had a value
    at all (for the deletion of an expired entry without negative caching;
    default: whether *entry* is not None)."""
    present = entry is not None if present is None else present
    delete = False
    if entry is None or (now - entry.probed > PROBE_TTL and rules.expired(entry, now)):
        if present and not rules.negative_cache:
            delete = True
        entry = CacheEntry(TODO, 0, 0, IN_PROGRESS)
    probe = now - entry.probed > PROBE_TTL and rules.refresh_needed(entry, now)
    store = None
    if probe and (entry.updated != 0 or rules.negative_cache):
        store = CacheEntry(entry.status, now, entry.updated, entry.text)
    return QueryOutcome(entry.status, entry.text, probe, store, delete and store is None)


def update(current: CacheEntry | None, status: int, text: str, now: int) -> CacheEntry | None:
    """verify_update_service(): the entry to write for a probe's result, or
    None when a failed probe must not replace a deliverable result."""
    if status != OK and current is not None and current.status == OK:
        return None
    return CacheEntry(status, 0, now, text)


def retain(entry: CacheEntry | None, now: int, rules: Freshness) -> bool:
    """The cache clean-up's validator: keep an entry with a probe under way
    or a result that has not expired."""
    return entry is not None and (now - entry.probed < PROBE_TTL
                                  or not rules.expired(entry, now))


def safe_ultostr(value: int, base: int = VERIFY_BASE) -> str:
    """Postfix's safe_ultostr() without padding: *value* in *base* with the
    digits of :data:`SAFE_CHARS` (no vowels)."""
    out = []
    while value:
        value, digit = divmod(value, base)
        out.append(SAFE_CHARS[digit])
    return "".join(reversed(out))


def probe_sender(sender: str, ttl: int, now: int) -> str:
    """make_verify_sender_addr() before the canonical rewrite: empty or
    ``<>`` is the null sender; with address_verify_sender_ttl the local
    part gets a time stamp that changes every *ttl* seconds
    (``double-bounce`` → ``double-bounceB5XK``). Raises ValueError for a
    value that starts or ends with ``@``."""
    if not sender or sender == "<>":
        return ""
    if sender.startswith("@"):
        raise ValueError(f'parameter address_verify_sender: value "{sender}" must not '
                         f"start with '@'")
    local, at, domain = sender.partition("@")
    if at and not domain:
        raise ValueError(f'parameter address_verify_sender: value "{sender}" must not '
                         f"end with '@'")
    if ttl > 0:
        return local + safe_ultostr(now // ttl) + at + domain
    return sender


__all__ = ["BOUNCE", "DEFER", "IN_PROGRESS", "OK", "PROBE_TTL", "STAT_BAD", "STAT_FAIL",
           "STAT_OK", "TODO", "CacheEntry", "Freshness", "QueryOutcome", "cache_key",
           "probe_sender", "query", "retain", "status_name", "update"]

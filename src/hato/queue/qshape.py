"""The arithmetic of ``qshape``: domains by age, as Postfix's qshape.pl counts
and prints them.

Every address of a message (each pending recipient, or with ``-s`` the one
sender) adds one to its domain's total and to one age bucket, chosen by the
age of the message (now minus its arrival time) in units of the bucket
time: bucket 1 holds ages under one unit, bucket *k* ages under
2^(k-1) units (``-l``: under *k* units), the last bucket everything older.
With parent domains (``-p``) each address also counts for every parent
``.example.com`` of its domain that is not a top-level domain; a parent is
shown once it has at least ``min_subdomains`` distinct child domains.

The table: a header line with ``T`` and each bucket's upper limit in
minutes (the last one with ``+``), then ``TOTAL``, then the domains, by
total (largest first), shorter names first among equal totals, then by
name. Columns are as wide as their heading or the TOTAL count needs, plus
one (at least three); the domain column takes what is left of the terminal
width (at least 18), and a longer name keeps its last characters after a
``+`` (``.+`` for a parent domain).

Nothing here reads files or clocks: the command (cli/qshape.py) reads the
queue and passes ages and addresses in.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

TOTAL = "TOTAL"
NULL_SENDER = "MAILER-DAEMON"
DEFAULT_BUCKETS = 10
DEFAULT_TICK = 5  # minutes
DEFAULT_WIDTH = 80
DEFAULT_MIN_SUBDOMAINS = 5
MIN_DOMAIN_WIDTH = 18

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_LOCAL_PART = re.compile(r".*@")
_DOUBLE_DOT = re.compile(r"\.\.")
_OUTER_DOTS = re.compile(r"\.?(.+?)\.?$")
_FIRST_LABEL = re.compile(r"^(?:\.)?[^.]+\.(.*\.)")


def number_text(value: float) -> str:
    """A number as Perl prints it: integers without a fraction."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.15g}"


def address_domain(address: str) -> str:
    """The domain qshape files an address under: after the last ``@``,
    ``..`` made ``.``, one leading and one trailing dot dropped; the null
    address is ``MAILER-DAEMON``. Only ASCII letters are folded to lower
    case (as Perl's lc() on bytes)."""
    a = address.translate(_ASCII_LOWER)
    if a == "":
        a = NULL_SENDER
    a = _LOCAL_PART.sub("", a, count=1)
    a = _DOUBLE_DOT.sub(".", a)
    return _OUTER_DOTS.sub(r"\1", a, count=1)


def parent_domain(domain: str) -> str | None:
    """The next parent of *domain* with a leading dot (``a.b.example.com``
    → ``.b.example.com`` → ``.example.com``), ``None`` past the last one
    that is not a top-level domain."""
    parent, n = _FIRST_LABEL.subn(r".\1", domain, count=1)
    return parent if n else None


def bucket(age: float, tick: float, buckets: int, linear: bool = False) -> int:
    """The bucket (1 … *buckets*) of a message *age* seconds old; *tick*
    is the first bucket's limit in minutes."""
    m = age / (60 * tick)
    if m < 1:
        return 1
    b = int(m + 1) if linear else 2 + int(math.log(m) / math.log(2))
    return min(b, buckets)


def headings(tick: float, buckets: int, linear: bool = False) -> list[str]:
    """``T`` and the upper limit of each bucket in minutes, the last with
    ``+``: T 5 10 20 40 80 160 320 640 1280 1280+ by default."""
    out = ["T"]
    t: float = 0
    for i in range(1, buckets + 1):
        if i < buckets:
            t += t if (t and not linear) else tick
            out.append(number_text(t))
        else:
            out.append(number_text(t) + "+")
    return out


@dataclass
class Shape:
    """Counts per domain: index 0 the total, 1 … ``buckets`` the ages."""

    buckets: int = DEFAULT_BUCKETS
    parents: bool = False
    counts: dict[str, list[int]] = field(default_factory=dict)
    subdomains: dict[str, int] = field(default_factory=dict)
    messages: int = 0

    def _row(self, name: str) -> list[int]:
        row = self.counts.get(name)
        if row is None:
            row = self.counts[name] = [0] * (self.buckets + 1)
        return row

    def add(self, addresses: Iterable[str], b: int) -> None:
        """Count one message: its addresses (recipients or the sender) in
        age bucket *b*."""
        self.messages += 1
        total = self._row(TOTAL)
        for address in addresses:
            total[0] += 1
            total[b] += 1
            domain: str | None = address_domain(address)
            new = False
            while domain is not None:
                row = self._row(domain)
                row[0] += 1
                row[b] += 1
                if new:
                    self.subdomains[domain] = self.subdomains.get(domain, 0) + 1
                new = row[0] == 1
                domain = parent_domain(domain) if self.parents else None

    def rows(self, min_subdomains: int = DEFAULT_MIN_SUBDOMAINS,
             top: int = 0) -> list[tuple[str, list[int]]]:
        """TOTAL and the domains in display order; parent domains with
        fewer than *min_subdomains* children left out; with *top*, only
        that many rows (TOTAL included)."""
        self._row(TOTAL)
        names = sorted(self.counts, key=lambda d: (-self.counts[d][0], len(d), d))
        out: list[tuple[str, list[int]]] = []
        for name in names:
            if name.startswith(".") and self.subdomains.get(name, 0) < min_subdomains:
                continue
            if top > 0 and len(out) >= top:
                break
            out.append((name, self.counts[name]))
        return out


def format_table(shape: Shape, tick: float = DEFAULT_TICK, linear: bool = False,
                 width: int = DEFAULT_WIDTH,
                 min_subdomains: int = DEFAULT_MIN_SUBDOMAINS, top: int = 0) -> list[str]:
    """The lines qshape prints, without newlines."""
    heads = headings(tick, shape.buckets, linear)
    total = shape._row(TOTAL)
    formats = []
    dw = width
    for i, head in enumerate(heads):
        n = max(len(str(total[i])), len(head))
        n = n + 1 if n > 2 else 3
        formats.append(n)
        dw -= n
    dw = max(dw, MIN_DOMAIN_WIDTH)

    def line(name: str, cells: list[str]) -> str:
        if len(name) > dw:
            label = (".+" + name[len(name) - dw + 2:] if name.startswith(".")
                     else "+" + name[len(name) - dw + 1:])
        else:
            label = name.rjust(dw)
        return label + "".join(c.rjust(w) for c, w in zip(cells, formats))

    out = [line("", heads)]
    for name, row in shape.rows(min_subdomains, top):
        out.append(line(name, [str(c) for c in row]))
    return out

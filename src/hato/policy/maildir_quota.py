"""Maildir++ quota rules: the ``maildirsize`` file as pure data and decisions.

The format and the rules are Courier's (README.maildirquota), which
deliverquota, maildrop and Dovecot's "maildir" quota backend all follow
(PROTOCOLS.md §3.5):

* line 1 is the quota definition, ``<n>S`` (bytes) and/or ``<n>C``
  (messages), comma-separated: ``10000000S``, ``10000000S,1000C``; a limit
  of 0 means no limit of that kind;
* every later line is ``<bytes> <count>``, two signed integers: the usage
  is the sum of all of them (deliveries append ``<size> 1``, deletions
  ``-<size> -1``); writers pad the numbers (Courier: ``%12d %12d``), and
  readers take any whitespace;
* the usage is recalculated from the Maildir when the file is missing,
  5120 bytes or more, or when the recorded totals say over quota and the
  file has more than one usage line or is 15 minutes old.

This module reads and writes no file: :mod:`hato.delivery.maildir_quota`
does the file work with these rules. Problems with the file (a garbage
line, a negative total, no usage line) are reported as
:attr:`SizeFile.problems`; the caller logs them and recalculates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

#: a maildirsize this big is recalculated (and so shrinks to two lines)
RECALC_SIZE = 5120
#: an over-quota maildirsize at least this old is recalculated
STALE_SECONDS = 15 * 60
#: the folder that never counts toward the quota
TRASH = ".Trash"

_ITEM = re.compile(r"([0-9]+)([SC])\Z")
_INT = re.compile(r"[-+]?[0-9]+\Z")


@dataclass(frozen=True)
class QuotaSpec:
    """A quota definition; *text* is how it is written (kept byte for byte,
    as maildirmake writes what it was given). A limit of None or 0 is no
    limit."""

    text: str
    bytes: int | None = None
    count: int | None = None

    @property
    def unlimited(self) -> bool:
        return not self.bytes and not self.count

    def canonical(self) -> "QuotaSpec":
        """The definition as Courier's maildirmake writes it: ``<n>S`` then
        ``<n>C``, without leading zeros, a zero limit left out
        (``10C,0100S`` → ``100S,10C``)."""
        parts = [f"{self.bytes}S"] if self.bytes else []
        parts += [f"{self.count}C"] if self.count else []
        return QuotaSpec(",".join(parts), self.bytes, self.count)


def parse_quota(text: str) -> QuotaSpec:
    """Parse ``NNNS``, ``NNNC`` or ``NNNS,MMMC``; ValueError when it is not
    one (empty, an unknown letter, a sign, a letter twice)."""
    text = text.strip()
    if not text:
        raise ValueError("empty quota definition")
    limits: dict[str, int] = {}
    for item in text.split(","):
        m = _ITEM.match(item.strip())
        if m is None:
            raise ValueError(f"bad quota definition: {text!r}")
        letter = m.group(2)
        if letter in limits:
            raise ValueError(f"bad quota definition: {text!r} ({letter} given twice)")
        limits[letter] = int(m.group(1))
    return QuotaSpec(text, limits.get("S"), limits.get("C"))


@dataclass(frozen=True)
class Usage:
    bytes: int = 0
    count: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.bytes + other.bytes, self.count + other.count)


@dataclass
class SizeFile:
    """A parsed maildirsize: the quota line (None when it does not parse),
    the summed usage, how many usage lines were summed, and what was wrong."""

    quota_text: str
    quota: QuotaSpec | None
    usage: Usage
    lines: int
    problems: list[str] = field(default_factory=list)


def parse_maildirsize(data: bytes) -> SizeFile:
    """Sum a maildirsize. Blank lines and padding are fine; a line that is
    not two integers is a problem (and is not summed), as is a negative
    total."""
    text = data.decode("ascii", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    problems: list[str] = []
    first = lines[0].strip() if lines else ""
    quota: QuotaSpec | None
    try:
        quota = parse_quota(first)
    except ValueError:
        quota = None
        problems.append(f"bad quota definition {first[:40]!r}" if first
                        else "no quota definition")
    total_bytes = total_count = 0
    counted = 0
    for number, line in enumerate(lines[1:], start=2):
        words = line.split()
        if not words:
            continue
        if len(words) != 2 or not all(_INT.match(w) for w in words):
            problems.append(f"line {number} is not <bytes> <count>: {line.strip()[:40]!r}")
            continue
        total_bytes += int(words[0])
        total_count += int(words[1])
        counted += 1
    if counted == 0:
        problems.append("no usage line")
    if total_bytes < 0 or total_count < 0:
        problems.append(f"negative total ({total_bytes} bytes, {total_count} messages)")
    return SizeFile(first, quota, Usage(total_bytes, total_count), counted, problems)


def format_usage_line(size: int, count: int) -> bytes:
    """One usage line, padded as Courier pads it (``%12d %12d``)."""
    return b"%12d %12d\n" % (size, count)


def format_maildirsize(quota_text: str, usage: Usage) -> bytes:
    """A whole new maildirsize: the quota line and one usage line."""
    return quota_text.encode("ascii") + b"\n" + format_usage_line(usage.bytes, usage.count)


def over_quota(quota: QuotaSpec, usage: Usage, size: int, count: int = 1) -> bool:
    """Would adding *count* messages of *size* bytes go over *quota*?"""
    if quota.bytes and usage.bytes + size > quota.bytes:
        return True
    if quota.count and usage.count + count > quota.count:
        return True
    return False


def recalculation_reason(sf: SizeFile | None, *, file_size: int, age: float,
                         quota: QuotaSpec | None, size: int, count: int = 1) -> str | None:
    """Why the usage must be counted again from the Maildir, or None when
    the file can be trusted. *age* is now minus the file's mtime; *quota*
    the quota in force; *size*/*count* what is about to be added."""
    if sf is None:
        return "maildirsize is missing"
    if file_size >= RECALC_SIZE:
        return f"maildirsize has {file_size} bytes"
    if sf.problems:
        return "; ".join(sf.problems)
    if quota is not None and over_quota(quota, sf.usage, size, count) \
            and (sf.lines > 1 or age >= STALE_SECONDS):
        return "over quota"
    return None


def size_from_name(name: str) -> int | None:
    """The ``,S=<size>`` a Maildir file name carries (before the ``:2,``
    flags), or None."""
    base = name.split(":", 1)[0]
    at = base.rfind(",S=")
    if at < 0:
        return None
    digits = ""
    for ch in base[at + 3:]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits) if digits else None


def counts_toward_quota(folder: str) -> bool:
    """Is the Maildir++ sub-folder *folder* (a name like ``.Sent``) counted?
    Every ``.Folder`` is, except ``.Trash``."""
    return folder.startswith(".") and folder not in (".", "..", TRASH)


__all__ = ["QuotaSpec", "Usage", "SizeFile", "parse_quota", "parse_maildirsize",
           "format_usage_line", "format_maildirsize", "over_quota", "recalculation_reason",
           "size_from_name", "counts_toward_quota", "RECALC_SIZE", "STALE_SECONDS", "TRASH"]

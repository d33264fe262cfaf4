"""Queue ids in Postfix's two forms, and where a queue id lives on disk.

A queue id names a queue file. Like Postfix (``mail_queue.c``), hato derives
it from the time the file was created and the file's inode number, so two
files that exist at the same time never share an id: the file system will
not hand out one inode twice.

Short form (``enable_long_queue_ids = no``, Postfix's default)::

    %05X of the microseconds  +  %X of the inode number      e.g. 3F2A1C4D5E

Upper-case hexadecimal. Short ids repeat in the course of time (the same
microsecond value with a recycled inode), exactly as Postfix's do; they are
unique among the messages present at any one moment, and the store refuses
to overwrite an existing name (rename without overwrite) should that ever
fail to hold.

Long form (``enable_long_queue_ids = yes``)::

    seconds (base 52, at least 6 chars) + microseconds (base 52, exactly 4)
    + 'z' + inode number (base 51, so it never contains 'z')

in Postfix's "safe" alphabet (digits and consonants, no vowels:
``0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz``). The seconds make
long ids unique across restarts for as long as the clock does not run
backwards.

Hashed queues (``hash_queue_names``, ``hash_queue_depth``) put a file in one
subdirectory level per depth, named by successive characters of the short
id, as Postfix's ``dir_forest()`` does. For a long id Postfix first converts
its microseconds back to the five hex digits of the short form, so both
forms spread over the same sixteen subdirectories; :func:`hash_dirs` does the
same.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

SAFE_CHARS = "0123456789BCDFGHJKLMNPQRSTVWXYZbcdfghjklmnpqrstvwxyz"
_SAFE_VALUE = {c: i for i, c in enumerate(SAFE_CHARS)}

# Postfix's MQID_* constants (mail_queue.h).
LG_SEC_BASE = 52
LG_SEC_PAD = 6
LG_USEC_BASE = 52
LG_USEC_PAD = 4
LG_TIME_PAD = LG_SEC_PAD + LG_USEC_PAD
LG_INUM_SEP = "z"
LG_INUM_BASE = 51
SH_USEC_PAD = 5

_HEX = frozenset("0123456789ABCDEF")
#: Postfix's VALID_HOSTNAME_LEN bound for a queue file name.
MAX_ID_LENGTH = 255


def safe_encode(value: int, base: int, pad: int = 0) -> str:
    """``safe_ultostr()``: *value* in *base* over the safe alphabet, left-padded
    with ``0`` to at least *pad* characters."""
    if value < 0 or not 2 <= base <= len(SAFE_CHARS):
        raise ValueError(f"cannot encode {value} in base {base}")
    digits = []
    while True:
        value, rem = divmod(value, base)
        digits.append(SAFE_CHARS[rem])
        if value == 0:
            break
    text = "".join(reversed(digits))
    return text.rjust(pad, "0")


def safe_decode(text: str, base: int) -> int | None:
    """The inverse of :func:`safe_encode`; ``None`` for an empty string or a
    character outside the first *base* characters of the safe alphabet."""
    if not text:
        return None
    value = 0
    for ch in text:
        digit = _SAFE_VALUE.get(ch)
        if digit is None or digit >= base:
            return None
        value = value * base + digit
    return value


def short_queue_id(usec: int, inode: int) -> str:
    """Postfix's short queue id: ``%05X`` microseconds then ``%X`` inode."""
    if not 0 <= usec < 1_000_000 or inode <= 0:
        raise ValueError(f"bad queue id parts usec={usec} inode={inode}")
    return f"{usec:05X}{inode:X}"


def long_queue_id(sec: int, usec: int, inode: int) -> str:
    """Postfix's long queue id (``enable_long_queue_ids = yes``)."""
    if sec < 0 or not 0 <= usec < 1_000_000 or inode <= 0:
        raise ValueError(f"bad queue id parts sec={sec} usec={usec} inode={inode}")
    return (safe_encode(sec, LG_SEC_BASE, LG_SEC_PAD)
            + safe_encode(usec, LG_USEC_BASE, LG_USEC_PAD)
            + LG_INUM_SEP + safe_encode(inode, LG_INUM_BASE))


def make_queue_id(sec: int, usec: int, inode: int, long_form: bool) -> str:
    return long_queue_id(sec, usec, inode) if long_form else short_queue_id(usec, inode)


@dataclass(frozen=True)
class QueueIdParts:
    """What a queue id says. ``sec`` is ``None`` for the short form, which
    does not record the seconds."""

    long_form: bool
    sec: int | None
    usec: int
    inode: int


@lru_cache(maxsize=4096)  # the queue's paths ask for the same ids again and again
def parse_queue_id(text: str) -> QueueIdParts | None:
    """Decode a queue id of either form; ``None`` when *text* is neither."""
    if not text or len(text) > MAX_ID_LENGTH:
        return None
    sep = text.rfind(LG_INUM_SEP)
    if sep >= LG_TIME_PAD:
        sec = safe_decode(text[: sep - LG_USEC_PAD], LG_SEC_BASE)
        usec = safe_decode(text[sep - LG_USEC_PAD: sep], LG_USEC_BASE)
        inode = safe_decode(text[sep + 1:], LG_INUM_BASE)
        if sec is None or usec is None or inode is None or usec >= 1_000_000 or inode == 0:
            return None
        return QueueIdParts(True, sec, usec, inode)
    if len(text) <= SH_USEC_PAD or not _HEX.issuperset(text):
        return None
    usec = int(text[:SH_USEC_PAD], 16)
    inode = int(text[SH_USEC_PAD:], 16)
    if usec >= 1_000_000 or inode == 0:
        return None
    return QueueIdParts(False, None, usec, inode)


def is_short_queue_id(text: str) -> bool:
    parts = parse_queue_id(text)
    return parts is not None and not parts.long_form


def is_long_queue_id(text: str) -> bool:
    parts = parse_queue_id(text)
    return parts is not None and parts.long_form


def is_queue_id(text: str) -> bool:
    """True when *text* is a well-formed queue id of either form. Temporary
    file names (``usec.pid.n``) and fast-flush log names are not."""
    return parse_queue_id(text) is not None


def hash_key(queue_id: str) -> str:
    """The string whose leading characters name the hash subdirectories: the
    short id itself, or for a long id its microseconds as five hex digits
    (Postfix's ``MQID_LG_GET_HEX_USEC``)."""
    parts = parse_queue_id(queue_id)
    if parts is None:
        raise ValueError(f"bad queue id: {queue_id!r}")
    if parts.long_form:
        return f"{parts.usec:05X}"
    return queue_id


@lru_cache(maxsize=4096)
def _hash_dirs(queue_id: str, depth: int) -> tuple[str, ...]:
    key = hash_key(queue_id)
    return tuple(key[i] if i < len(key) else "_" for i in range(depth))


def hash_dirs(queue_id: str, depth: int) -> list[str]:
    """Postfix's ``dir_forest()``: one directory name per level, each the next
    character of :func:`hash_key`, ``_`` past its end."""
    if depth < 1:
        raise ValueError(f"hash depth {depth}")
    return list(_hash_dirs(queue_id, depth))

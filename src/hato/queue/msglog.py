"""The text of per-message logs: defer/, bounce/ and trace/ files.

Like Postfix's bounce logs, a log file holds one entry per recipient event:
``name=value`` lines closed by an empty line::

    recipient=user@example.com
    orig_rcpt=alias@example.com
    status=4.4.1
    action=delayed
    reason=connect to mx.example.com[192.0.2.1]:25: Connection refused

Values are escaped (``\\`` → ``\\\\``, newline → ``\\n``, CR → ``\\r``) so an
entry is always whole lines and the only empty line is its end. An entry
that a crash cut short has no closing empty line: readers drop it and the
next writer cuts it off before appending (see QueueStore.append_log).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_UNESCAPE = re.compile(r"\\(.)")
_UNESCAPES = {"n": "\n", "r": "\r", "\\": "\\"}


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")


def unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), value)


def encode_entry(entry: Mapping[str, object]) -> bytes:
    lines = []
    for name, value in entry.items():
        if not _NAME.fullmatch(name):
            raise ValueError(f"bad log attribute name {name!r}")
        lines.append(f"{name}={escape(str(value))}\n")
    if not lines:
        raise ValueError("empty log entry")
    return ("".join(lines) + "\n").encode("utf-8", "surrogateescape")


def complete_length(data: bytes) -> int:
    """Length of the prefix of *data* made of whole entries."""
    end = data.rfind(b"\n\n")
    return 0 if end < 0 else end + 2


def parse_log(data: bytes) -> list[dict[str, str]]:
    """The whole entries of a log file, in order; a cut-off last entry and
    lines that are not ``name=value`` are dropped."""
    text = data[: complete_length(data)].decode("utf-8", "surrogateescape")
    entries = []
    for block in text.split("\n\n"):
        entry: dict[str, str] = {}
        for line in block.split("\n"):
            name, sep, value = line.partition("=")
            if sep and _NAME.fullmatch(name):
                entry[name] = unescape(value)
        if entry:
            entries.append(entry)
    return entries

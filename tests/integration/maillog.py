"""Reading delivery status lines from an instance's maillog, as pflogsumm
reads them: ``QID: to=<rcpt>, [orig_to=<...>, ]relay=..., [conn_use=N, ]
delay=..., delays=a/b/c/d, dsn=X.Y.Z, status=word (text)``."""

from __future__ import annotations

import re

STATUS = re.compile(r"^.*? (?:postfix/)?(?P<agent>[\w/-]+)\[\d+\]: (?P<qid>\w+): "
                    r"to=<(?P<to>[^>]*)>, (?:orig_to=<[^>]*>, )?relay=(?P<relay>\S+), "
                    r"(?:conn_use=(?P<use>\d+), )?delay=[\d.]+, delays=[\d./]+, "
                    r"dsn=(?P<dsn>[\d.]+), status=(?P<status>[\w-]+) \((?P<text>.*)\)$",
                    re.MULTILINE)


def statuses(log, rcpt: str) -> list[dict[str, str]]:
    """Every status line for *rcpt*, oldest first; *log* is the log's text
    or an instance (tests/integration/instance.py)."""
    text = log if isinstance(log, str) else log.log_text()
    return [m.groupdict() for m in STATUS.finditer(text) if m["to"] == rcpt]


def wait_status(inst, rcpt: str, count: int = 1, timeout: float = 30.0) -> dict[str, str]:
    """The *count*-th status line for *rcpt*, waiting for it."""
    inst.wait_for(lambda: len(statuses(inst, rcpt)) >= count, timeout,
                  f"{count} status line(s) for {rcpt}")
    return statuses(inst, rcpt)[count - 1]

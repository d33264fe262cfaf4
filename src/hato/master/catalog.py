"""What hato does with each daemon a master.cf may name.

A stock Postfix master.cf must start unchanged on hato, so every Postfix
daemon is listed here with how hato handles it:

* RUNS — hato runs this service;
* FOLDED — hato does this work inside another service (named in the note),
  so the entry is accepted and nothing separate is started;
* PLANNED — hato does not do this yet: ``hato check`` names the entry.

Later work moves entries from PLANNED to RUNS or FOLDED as it lands.
"""

from __future__ import annotations

from enum import Enum


class Status(Enum):
    RUNS = "runs"
    FOLDED = "folded"
    PLANNED = "not implemented yet"


DAEMONS: dict[str, tuple[Status, str]] = {
    "smtpd": (Status.PLANNED, "the SMTP server"),
    "postscreen": (Status.PLANNED, "the zombie filter in front of smtpd"),
    "pickup": (Status.PLANNED, "picks up mail from maildrop/"),
    "cleanup": (Status.PLANNED, "header and address processing"),
    "qmgr": (Status.PLANNED, "the queue manager"),
    "oqmgr": (Status.PLANNED, "the queue manager"),
    "local": (Status.PLANNED, "local delivery"),
    "virtual": (Status.PLANNED, "virtual mailbox delivery"),
    "smtp": (Status.PLANNED, "the SMTP/LMTP client"),
    "lmtp": (Status.PLANNED, "the LMTP client"),
    "pipe": (Status.PLANNED, "delivery to external commands"),
    "error": (Status.PLANNED, "the error/retry transport"),
    "discard": (Status.PLANNED, "the discard transport"),
    "bounce": (Status.PLANNED, "delivery status notifications"),
    "anvil": (Status.PLANNED, "per-client connection and rate limits"),
    "showq": (Status.PLANNED, "the queue listing service"),
    "flush": (Status.PLANNED, "ETRN and fast flush"),
    "trivial-rewrite": (Status.PLANNED, "address resolution"),
    "tlsmgr": (Status.PLANNED, "TLS session cache and key rotation"),
    "proxymap": (Status.PLANNED, "shared table access"),
    "verify": (Status.PLANNED, "address verification"),
    "scache": (Status.PLANNED, "the outbound connection cache"),
    "dnsblog": (Status.PLANNED, "postscreen's DNSBL lookups"),
    "tlsproxy": (Status.PLANNED, "postscreen's TLS proxy"),
    "postlogd": (Status.PLANNED, "logging to a file"),
    "spawn": (Status.PLANNED, "runs a command per connection"),
}


def describe(command: str) -> tuple[Status, str] | None:
    return DAEMONS.get(command)

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
    "smtpd": (Status.RUNS, "the SMTP server"),
    "postscreen": (Status.RUNS, "the zombie filter in front of smtpd"),
    "pickup": (Status.RUNS, "picks up mail from maildrop/"),
    "cleanup": (Status.FOLDED, "header and address processing, done inside pickup and smtpd"),
    "qmgr": (Status.RUNS, "the queue manager"),
    "oqmgr": (Status.RUNS, "the queue manager"),
    "local": (Status.RUNS, "local delivery"),
    "virtual": (Status.RUNS, "virtual mailbox delivery"),
    "smtp": (Status.RUNS, "the SMTP/LMTP client"),
    "lmtp": (Status.RUNS, "the LMTP client"),
    "pipe": (Status.RUNS, "delivery to external commands"),
    "error": (Status.RUNS, "the error/retry transport"),
    "discard": (Status.RUNS, "the discard transport"),
    "bounce": (Status.FOLDED, "delivery status notifications, sent by qmgr"),
    "anvil": (Status.RUNS, "per-client connection and rate limits"),
    "showq": (Status.RUNS, "the queue listing for users who may not read the queue"),
    "flush": (Status.RUNS, "postqueue -i and -s for users who may not touch the queue"),
    "trivial-rewrite": (Status.FOLDED, "address rewriting and resolution, done inside cleanup and qmgr"),
    "tlsmgr": (Status.FOLDED, "TLS session caches, kept by each smtpd and smtp process"),
    "proxymap": (Status.PLANNED, "shared table access"),
    "verify": (Status.RUNS, "address verification"),
    "scache": (Status.FOLDED, "the outbound connection cache, kept by each smtp/lmtp agent"),
    "dnsblog": (Status.FOLDED, "postscreen's DNSBL lookups, made inside postscreen"),
    "tlsproxy": (Status.FOLDED, "STARTTLS in postscreen's SMTP engine, done inside postscreen"),
    "postlogd": (Status.PLANNED, "logging to a file"),
    "spawn": (Status.RUNS, "runs a command per connection (policy servers)"),
}


def describe(command: str) -> tuple[Status, str] | None:
    return DAEMONS.get(command)

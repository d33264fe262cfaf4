"""Asking for deliveries now: a deferred message, or the deferred mail of
one destination, goes back to incoming/ due now (what Postfix's flush(8)
server does for ``postqueue -i`` and ``-s``, and for ETRN)."""

from __future__ import annotations

import errno
import os

from .directories import DEFERRED, INCOMING
from .errors import NoSuchMessage, QueueError


def flush_one(store, queue_id: str, now: float) -> bool:
    """Make deferred message *queue_id* due now and hand it back to the
    queue manager through incoming/ (Postfix's flush_one_file()). False
    when it is not in the deferred queue."""
    try:
        os.utime(store.path(DEFERRED, queue_id), (now, now), follow_symlinks=False)
    except FileNotFoundError:
        pass
    try:
        store.move(queue_id, DEFERRED, INCOMING)
    except NoSuchMessage:
        return False
    except QueueError as err:
        if err.errno == errno.ENOENT:  # gone between the look and the rename
            return False
        raise
    return True


def _domain(address: str) -> str:
    at = address.rfind("@")
    return address[at + 1:].lower() if at >= 0 else ""


def deferred_for_site(store, site: str) -> list[str]:
    """Queue ids of deferred messages with a recipient still to deliver in
    domain *site* (compared without case)."""
    from .listing import read_message

    site = site.lower()
    found = []
    for queue_id, path in store.scan(DEFERRED):
        msg = read_message(store, DEFERRED, queue_id, path)
        if msg is not None and any(_domain(r.address) == site for r in msg.recipients):
            found.append(queue_id)
    return found


def valid_site(site: str) -> bool:
    if site.startswith("["):
        from ..policy.address import valid_mailhost_literal

        return valid_mailhost_literal(site)
    from ..proto.hostname import valid_hostname

    return valid_hostname(site)


def eligible_site(settings, site: str) -> bool:
    """Is *site* in ``fast_flush_domains`` (Postfix's rule for ``postqueue
    -s`` and ETRN)? A table that fails: no."""
    from ..policy.rewrite import MatchList
    from ..tables.base import TableRetry

    try:
        domains = MatchList.from_settings(settings, "fast_flush_domains", hostname=True)
        try:
            return bool(domains.match(site.lower()))
        finally:
            domains.close()
    except TableRetry:
        return False

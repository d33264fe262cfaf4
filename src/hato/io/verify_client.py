"""The clients of the verify service (:mod:`hato.services.verify`) on
``private/$address_verify_service_name``, in the attribute protocol:

* ``request=query, address=ADDR`` → ``status=0, recipient_status=N,
  reason=TEXT`` (N: 0 deliverable, 1 deferred, 2 bounced, 3 in progress);
* ``request=update, address=ADDR, recipient_status=N, reason=TEXT`` →
  ``status=0``.

:class:`VerifyQuery` is smtpd's: a blocking call (smtpd runs its
restrictions in a worker thread when they may block) that asks, and while
the answer is "in progress" asks again up to ``address_verify_poll_count``
times, ``address_verify_poll_delay`` apart, as Postfix's smtpd does. A
service that cannot be reached answers ``STAT_FAIL`` (smtpd then says
``address verification problem``).

:class:`VerifyUpdater` is qmgr's: it reports each probe's result.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from ..policy.verify import STAT_FAIL, STAT_OK, TODO
from ..proto.attr import AttrError, Attrs
from .ipc import Client, request_sync

#: how long one request may take
TIMEOUT = 10.0


def service_path(settings) -> str:
    return os.path.join(settings.str("queue_directory"), "private",
                        settings.str("address_verify_service_name"))


class VerifyQuery:
    """``query(address) -> (request status, recipient status, text)``."""

    def __init__(self, path: str, *, poll_count: int = 3, poll_delay: float = 3.0,
                 timeout: float = TIMEOUT, sleep: Callable[[float], None] = time.sleep):
        self.path = path
        self.poll_count = poll_count  # smtpd changes it with stress mode
        self.poll_delay = poll_delay
        self.timeout = timeout
        self.sleep = sleep

    @classmethod
    def from_settings(cls, settings) -> "VerifyQuery":
        return cls(service_path(settings), poll_count=settings.int("address_verify_poll_count"),
                   poll_delay=float(settings.time("address_verify_poll_delay")))

    def ask(self, address: str) -> tuple[int, int, str]:
        """One query, no polling."""
        try:
            reply = request_sync(self.path, Attrs.of(request="query", address=address),
                                 timeout=self.timeout)
            status = int(reply.get("status") or STAT_FAIL)
            if status != STAT_OK:
                return status, TODO, ""
            return status, int(reply.get("recipient_status") or TODO), \
                reply.get("reason", "") or ""
        except (OSError, ValueError, AttrError):
            return STAT_FAIL, TODO, ""

    def __call__(self, address: str) -> tuple[int, int, str]:
        count = 0
        while True:
            status, rcpt_status, text = self.ask(address)
            if status != STAT_OK or rcpt_status != TODO:
                return status, rcpt_status, text
            count += 1
            if count >= self.poll_count:
                return status, rcpt_status, text
            self.sleep(self.poll_delay)


class VerifyUpdater:
    """qmgr's reports of probe results (one persistent connection)."""

    def __init__(self, path: str, *, timeout: float = TIMEOUT):
        self.client = Client(path, timeout=timeout)

    @classmethod
    def from_settings(cls, settings) -> "VerifyUpdater":
        return cls(service_path(settings))

    async def update(self, address: str, status: int, text: str) -> int:
        try:
            reply = await self.client.request(Attrs.of(request="update", address=address,
                                                       recipient_status=status, reason=text))
            return int(reply.get("status") or STAT_FAIL)
        except (OSError, ConnectionError, asyncio.TimeoutError, ValueError, AttrError):
            return STAT_FAIL

    def close(self) -> None:
        self.client.close()


__all__ = ["VerifyQuery", "VerifyUpdater", "service_path"]

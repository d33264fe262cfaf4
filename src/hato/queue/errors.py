"""The errors of the queue store.

Every failure of a queue operation is a :class:`QueueError`, an ``OSError``
whose ``errno`` says why (ENOSPC, EIO, ...): a service answers 451 4.3.0 or
defers, and nothing is lost.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable


class QueueError(OSError):
    """A queue operation failed. ``errno`` says why (ENOSPC, EIO, ...); a
    service answers 451 4.3.0 or defers, and nothing is lost."""


class CorruptQueueFile(QueueError):
    """A queue file that cannot be read: truncated, garbled, or without END."""

    def __init__(self, path: str, reason: str):
        super().__init__(errno.EBADMSG, f"corrupt queue file: {reason}", path)
        self.reason = reason


class NoSuchMessage(QueueError):
    def __init__(self, queue: str, queue_id: str):
        super().__init__(errno.ENOENT, f"no message {queue_id} in {queue}", queue_id)


def wrap_os_error(exc: OSError, what: str) -> QueueError:
    if isinstance(exc, QueueError):
        return exc
    code = exc.errno or errno.EIO
    err = QueueError(code, f"{what}: {exc.strerror or os.strerror(code)}", exc.filename)
    err.__cause__ = exc
    return err


def best_effort(fn: Callable, *args) -> None:
    """Best-effort cleanup step: an OSError is ignored (a simulated crash
    still propagates)."""
    try:
        fn(*args)
    except OSError:
        pass

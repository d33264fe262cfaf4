"""Group commit: concurrent committers share one directory fsync.

Every commit must make its new directory entry durable with an fsync of the
directory before it acknowledges the message. When many threads commit into
the same directory at once, one fsync issued *after* all their renames covers
them all. :class:`GroupSync` arranges that with a lock and a condition:

* A committer that arrives when no fsync of that directory is running
  becomes the leader: it runs the fsync (without holding the lock) and then
  wakes everyone.
* A committer that arrives while an fsync is running cannot count on it (the
  fsync may have started before its rename), so it waits for the *next*
  attempt; whoever arrived in that window shares that next attempt, and the
  first of them to wake leads it.

So at most two fsyncs are ever in line for a directory, and under load one
fsync serves every commit that arrived while the previous one ran. An error
from an fsync is reported to every committer it was meant to cover (after a
failed fsync the kernel may have dropped the dirty state, so a later
success proves nothing for them); each gets its own OSError.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class GroupSync:
    """Batches calls of one sync function (an fsync of one directory)."""

    def __init__(self, sync: Callable[[], None]):
        self._sync = sync
        self._cond = threading.Condition()
        self._running = False
        self._next = 0  # number of the next attempt to start
        self._results: dict[int, BaseException | None] = {}
        self._waiting: dict[int, int] = {}
        self.attempts = 0  # fsyncs actually run (for tests and statistics)

    def sync(self) -> None:
        """Return once an fsync that started after this call began has
        succeeded; raise if it failed."""
        with self._cond:
            # The attempt that will start next is the first that is sure to
            # begin after this caller's rename: lead it or wait for it.
            mine = self._next
            self._waiting[mine] = self._waiting.get(mine, 0) + 1
            while mine not in self._results:
                if not self._running and self._next == mine:
                    self._lead(mine)
                else:
                    self._cond.wait()
            exc = self._results[mine]
            left = self._waiting[mine] - 1
            if left:
                self._waiting[mine] = left
            else:
                del self._waiting[mine]
                del self._results[mine]
        if exc is not None:
            if isinstance(exc, OSError):
                raise OSError(exc.errno, exc.strerror, exc.filename) from exc
            raise exc

    def _lead(self, attempt: int) -> None:
        # Called with the lock held; releases it around the fsync.
        self._running = True
        self._next = attempt + 1
        self.attempts += 1
        self._cond.release()
        exc: BaseException | None = None
        try:
            self._sync()
        except BaseException as e:  # noqa: BLE001 - handed to every waiter
            exc = e
        finally:
            self._cond.acquire()
            self._running = False
            self._results[attempt] = exc
            self._cond.notify_all()

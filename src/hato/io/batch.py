"""Blocking work handed to a thread in batches.

Every hand-off from the event loop to a worker thread and back costs thread
switches and, in CPython, turns of the GIL between the two threads; under
load these cost more than the work (a rename, an open, a small read). A
:class:`Batcher` gathers the items submitted during one turn of the loop, and
those submitted while a batch runs, and hands each gathered batch to a
thread in one go: one hand-off for many messages. A batch may also share one
expensive step among its items (the queue manager moves every message of a
batch into active/ and then fsyncs that directory once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class Failed:
    """What a batch function returns for an item that failed."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException):
        self.error = error


class Batcher:
    """Runs ``fn(items)`` in a worker thread for gathered *items*; *fn*
    returns one result per item, in order (a :class:`Failed` for an item
    that failed: its submitter gets the exception). At most one batch runs
    at a time."""

    def __init__(self, fn: Callable[[Sequence[Any]], Sequence[Any]]):
        self.fn = fn
        self._pending: list[tuple[Any, asyncio.Future]] = []
        self._busy = False
        self.batches = 0  # batches run (for tests and statistics)

    async def submit(self, item: Any) -> Any:
        return await self.submit_future(item)

    def submit_future(self, item: Any) -> asyncio.Future:
        """The future of *item*'s result (for :func:`run_to_end`, which then
        needs no task of its own)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending.append((item, fut))
        if not self._busy:
            self._busy = True
            loop.call_soon(self._start)  # after this turn's other submissions
        return fut

    def _start(self) -> None:
        batch, self._pending = self._pending, []
        asyncio.get_running_loop().create_task(self._run(batch))

    async def _run(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        self.batches += 1
        try:
            try:
                results = await asyncio.to_thread(self.fn, [item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
            except asyncio.CancelledError:
                for _, fut in batch:
                    fut.cancel()
                raise
            except Exception as err:  # noqa: BLE001 - every submitter gets it
                results = [Failed(err)] * len(batch)
            for (_, fut), result in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(result, Failed):
                    fut.set_exception(result.error)
                else:
                    fut.set_result(result)
        finally:
            if self._pending:
                asyncio.get_running_loop().call_soon(self._start)
            else:
                self._busy = False


async def run_to_end(aw: Awaitable[T]) -> T:
    """Await *aw* to its end even when the awaiting task is cancelled
    meanwhile, then pass the cancellation on. For work a thread does with
    an object the caller would tear down on cancellation (a queue file being
    committed): the caller's clean-up must not run while the thread still
    uses it. The work is bounded (file writes and fsyncs), so waiting for
    it delays the cancellation only that long."""
    fut = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            try:
                await asyncio.wait([fut])
            except asyncio.CancelledError:
                pass  # cancelled again: still wait for the work to end
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what goes on
        raise

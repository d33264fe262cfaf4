"""Batcher: blocking work handed to a thread in gathered batches."""

from __future__ import annotations

import asyncio
import threading

import pytest

from hato.io.batch import Batcher, Failed, run_to_end


def test_one_turn_of_submissions_is_one_batch_and_results_keep_their_order():
    seen: list[list[int]] = []
    threads: set[int] = set()

    def work(items):
        threads.add(threading.get_ident())
        seen.append(list(items))
        return [i * 10 for i in items]

    async def main():
        b = Batcher(work)
        results = await asyncio.gather(*(b.submit(i) for i in range(5)))
        return b, results

    b, results = asyncio.run(main())
    assert results == [0, 10, 20, 30, 40]
    assert seen == [[0, 1, 2, 3, 4]]
    assert b.batches == 1
    assert threading.get_ident() not in threads  # the work ran in a worker thread


def test_submissions_while_a_batch_runs_form_the_next_batch():
    release = threading.Event()
    seen: list[list[str]] = []

    def work(items):
        seen.append(list(items))
        if items == ["first"]:
            release.wait(5)
        return [f"{i}!" for i in items]

    async def main():
        b = Batcher(work)
        first = asyncio.ensure_future(b.submit("first"))
        await asyncio.sleep(0.05)  # the first batch is running in its thread
        later = [asyncio.ensure_future(b.submit(x)) for x in ("a", "b")]
        await asyncio.sleep(0.05)
        assert seen == [["first"]]  # at most one batch at a time
        release.set()
        return await first, await asyncio.gather(*later), b.batches

    first, later, batches = asyncio.run(main())
    assert (first, later, batches) == ("first!", ["a!", "b!"], 2)
    assert seen == [["first"], ["a", "b"]]


def test_a_failed_item_raises_for_its_submitter_only():
    def work(items):
        return [Failed(ValueError(f"bad {i}")) if i == 2 else i for i in items]

    async def main():
        b = Batcher(work)
        return await asyncio.gather(*(b.submit(i) for i in range(4)), return_exceptions=True)

    out = asyncio.run(main())
    assert out[0:2] == [0, 1] and out[3] == 3
    assert isinstance(out[2], ValueError) and str(out[2]) == "bad 2"


def test_a_failing_batch_function_fails_every_item_and_the_batcher_goes_on():
    calls = []

    def work(items):
        calls.append(list(items))
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return list(items)

    async def main():
        b = Batcher(work)
        first = await asyncio.gather(b.submit(1), b.submit(2), return_exceptions=True)
        second = await b.submit(3)
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(e, OSError) for e in first)
    assert second == 3


def test_a_wrong_number_of_results_is_an_error_not_a_silent_mismatch():
    async def main():
        b = Batcher(lambda items: [1])
        return await asyncio.gather(b.submit("x"), b.submit("y"), return_exceptions=True)

    out = asyncio.run(main())
    assert all(isinstance(e, RuntimeError) for e in out)


def test_cancelled_submitter_does_not_break_the_batch():
    release = threading.Event()

    def work(items):
        release.wait(5)
        return list(items)

    async def main():
        b = Batcher(work)
        a = asyncio.ensure_future(b.submit("a"))
        c = asyncio.ensure_future(b.submit("c"))
        await asyncio.sleep(0.05)
        a.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await a
        return await c

    assert asyncio.run(main()) == "c"


def test_run_to_end_outlasts_cancellation():
    # The awaiting task is cancelled (twice) while the work runs: the work
    # still ends, and only then does the cancellation go on.
    ended: list[str] = []

    async def work():
        await asyncio.sleep(0.2)
        ended.append("work")
        return 42

    async def caller():
        try:
            return await run_to_end(work())
        finally:
            ended.append("caller")

    async def scenario():
        task = asyncio.get_running_loop().create_task(caller())
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await run_to_end(work())  # not cancelled: the work's result

    assert asyncio.run(scenario()) == 42
    assert ended == ["work", "caller", "work"]

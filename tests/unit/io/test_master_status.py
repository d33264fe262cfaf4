"""The status channel between master and a worker (hato.io.master_status):
message parsing, line splitting, and both ends over a real socketpair."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hato.io import master_status
from hato.io.master_status import (Busy, LineSplitter, StatusChannel, Stress, WorkerStatus,
                                   format_message, parse_message)


@pytest.mark.parametrize("line,msg", [
    ("busy 0", Busy(0)), ("busy 17", Busy(17)), ("stress yes", Stress(True)),
    ("stress no", Stress(False)), ("busy  3", Busy(3)),
])
def test_parse(line, msg):
    assert parse_message(line) == msg
    assert parse_message(format_message(msg).decode().rstrip("\n")) == msg


@pytest.mark.parametrize("line", ["", "busy", "busy -1", "busy x", "busy 1 2", "stress",
                                  "stress maybe", "stress YES", "hello 1", "busy ١"])
def test_parse_rejects(line):
    assert parse_message(line) is None


def test_format():
    assert format_message(Busy(3)) == b"busy 3\n"
    assert format_message(Stress(True)) == b"stress yes\n"
    assert format_message(Stress(False)) == b"stress no\n"


def test_line_splitter_joins_pieces_and_drops_long_lines():
    split = LineSplitter(limit=10)
    assert split.feed(b"bu") == []
    assert split.feed(b"sy 1\nbusy 2\nbu") == ["busy 1", "busy 2"]
    assert split.feed(b"sy 3\n") == ["busy 3"]
    assert split.feed(b"x" * 30) == []
    assert split.feed(b"xxx\nbusy 4\n") == ["busy 4"]


def _status_pair(**kw):
    master_end, worker_end = socket.socketpair()
    lines: list[str] = []
    closed = asyncio.Event()
    master = StatusChannel(master_end, lines.append, closed.set)
    master.start()
    status = WorkerStatus(worker_end, **kw)
    status.start()
    return status, lines, closed


def test_worker_status_coalesces_and_master_reads(monkeypatch):
    monkeypatch.setattr(master_status, "REPORT_DELAY", 0.05)

    async def run():
        status, lines, closed = _status_pair()  # no share: no stress mode to detect
        for n in (1, 2, 3, 2):  # one burst: one line with the last value
            status.report_busy(n)
        await asyncio.sleep(0.02)
        assert lines == []  # not yet: changes wait REPORT_DELAY
        await asyncio.sleep(0.1)
        assert lines == ["busy 2"]
        status.report_busy(3)
        status.report_busy(2)  # back where master last heard it: nothing sent
        await asyncio.sleep(0.1)
        status.report_busy(0)
        await asyncio.sleep(0.1)
        assert status.busy == 0
        status.close()
        await asyncio.wait_for(closed.wait(), 2)
        return lines
    assert asyncio.run(run()) == ["busy 2", "busy 0"]


def test_worker_status_reports_its_share_at_once(monkeypatch):
    """Reaching the worker's share of maxproc, and leaving it, are what
    master's stress mode turns on: sent in the same loop iteration, while
    changes below the share wait."""
    monkeypatch.setattr(master_status, "REPORT_DELAY", 60.0)

    async def run():
        status, lines, closed = _status_pair(share=3)
        status.report_busy(1)
        status.report_busy(2)
        await asyncio.sleep(0.02)
        assert lines == []  # below the share: held back
        status.report_busy(3)
        await asyncio.sleep(0.02)
        assert lines == ["busy 3"]  # reached the share: at once, the wait dropped
        status.report_busy(4)  # (a share is not a hard cap of the count)
        await asyncio.sleep(0.02)
        status.report_busy(2)
        await asyncio.sleep(0.02)
        assert lines == ["busy 3", "busy 4", "busy 2"]  # left it: at once too
        status.report_busy(1)
        await asyncio.sleep(0.02)
        assert lines[-1] == "busy 2"  # below the share again: held back
        status.close()
        await asyncio.wait_for(closed.wait(), 2)
        return lines
    asyncio.run(run())


def test_worker_status_share_from_env(monkeypatch):
    monkeypatch.delenv("HATO_STATUS_FD", raising=False)
    monkeypatch.setenv("HATO_SESSION_LIMIT", "7")
    assert WorkerStatus.from_env().share == 7
    monkeypatch.delenv("HATO_SESSION_LIMIT")
    assert WorkerStatus.from_env().share == 0


def test_worker_status_receives_stress_and_tells_subscribers():
    async def run():
        master_end, worker_end = socket.socketpair()
        master = StatusChannel(master_end, lambda line: None)
        master.start()
        status = WorkerStatus(worker_end)
        status.start()
        seen: list[bool] = []
        status.subscribe(seen.append)
        assert seen == []  # not under stress: no call at subscription
        master.send(format_message(Stress(True)))
        await asyncio.sleep(0.05)
        assert status.stress
        master.send(b"stress yes\nnonsense\n")  # no change, and a bad line: ignored
        master.send(format_message(Stress(False)))
        await asyncio.sleep(0.05)
        master.close()
        status.close()
        return seen
    assert asyncio.run(run()) == [True, False]


def test_worker_started_under_stress_calls_subscriber_at_once():
    status = WorkerStatus(stress=True)
    seen: list[bool] = []
    status.subscribe(seen.append)
    assert seen == [True]
    status.set_stress(False)
    assert seen == [True, False]


def test_worker_status_from_env(monkeypatch):
    a, b = socket.socketpair()
    try:
        monkeypatch.setenv("HATO_STATUS_FD", str(b.fileno()))
        monkeypatch.setenv("HATO_STRESS", "yes")
        status = WorkerStatus.from_env()
        assert status.stress
        assert status._channel is not None and status._channel.sock.fileno() == b.fileno()
        status._channel.sock.detach()
        monkeypatch.delenv("HATO_STATUS_FD")
        monkeypatch.delenv("HATO_STRESS")
        plain = WorkerStatus.from_env()
        assert not plain.stress and plain._channel is None
        plain.report_busy(5)  # no channel: only kept
        assert plain.busy == 5
    finally:
        a.close()
        b.close()


def test_send_buffers_when_the_peer_is_slow():
    async def run():
        a, b = socket.socketpair()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        got: list[str] = []
        sender = StatusChannel(a, lambda line: None)
        sender.start()
        for i in range(20000):
            sender.send(f"busy {i}\n".encode())
        assert sender._out  # more than the socket buffers
        receiver = StatusChannel(b, got.append)
        receiver.start()
        for _ in range(200):
            await asyncio.sleep(0.01)
            if len(got) == 20000:
                break
        sender.close()
        receiver.close()
        return got
    got = asyncio.run(run())
    assert got == [f"busy {i}" for i in range(20000)]

"""master's side of stress mode (Master.status_line/assess) with stand-in
worker channels: busy counts summed per service, warnings rate-limited,
``stress yes``/``no`` to every worker, a dead worker counting as 0."""

from __future__ import annotations

import asyncio

from hato.config.mastercf import MasterCf
from hato.master.stress import StressGauge
from hato.master.supervisor import Master, Slot

from ..policy.conftest import make_settings


class Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, text):
        self.lines.append(text)

    def warning(self, text):
        self.lines.append("warning: " + text)

    error = warning


class Link:
    def __init__(self):
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def close(self) -> None:
        pass


def make_slot(maxproc: int, hold: float) -> Slot:
    svc = MasterCf.parse("smtp inet n - n - 3 smtpd\n", "master.cf").services[0]
    slot = Slot(svc, [], 2, maxproc, title='service "smtp" (25)',
                gauge=StressGauge(maxproc, hold))
    slot.links = {1: Link(), 2: Link()}
    return slot


def make_master() -> tuple[Master, Log]:
    log = Log()
    return Master(make_settings().config, log), log


def test_busy_summed_over_workers_and_stress_both_ways():
    async def run():
        master, log = make_master()
        slot = make_slot(3, hold=0.2)
        master.status_line(slot, 1, "busy 2")
        assert not slot.stressed
        master.status_line(slot, 2, "busy 1")
        assert slot.stressed
        for link in slot.links.values():
            assert link.sent == [b"stress yes\n"]
        master.status_line(slot, 1, "busy 0")  # low, but the hold has not passed
        assert slot.stressed
        await asyncio.sleep(0.4)  # master comes back by itself
        assert not slot.stressed
        for link in slot.links.values():
            assert link.sent == [b"stress yes\n", b"stress no\n"]
        # A second episode: no second round of warnings, but it is logged.
        master.status_line(slot, 1, "busy 3")
        assert slot.stressed
        master.status_line(slot, 1, "bogus")
        return log.lines
    lines = asyncio.run(run())
    assert lines[:4] == [
        'warning: service "smtp" (25) has reached its process limit "3": '
        "new clients may experience noticeable delays",
        "warning: to avoid this condition, increase the process count in master.cf or "
        "reduce the service time per client",
        "warning: see http://www.postfix.org/STRESS_README.html for examples of "
        "stress-adapting configuration settings",
        'service "smtp" (25): stress mode started',
    ]
    assert lines[4:6] == ['service "smtp" (25): stress mode ended',
                          'service "smtp" (25): stress mode started']
    assert lines[6].startswith('warning: service "smtp" (25): unexpected status from pid 1')
    assert len(lines) == 7


def test_a_dead_worker_holds_no_sessions():
    async def run():
        master, _log = make_master()
        slot = make_slot(2, hold=0)
        master.status_line(slot, 1, "busy 1")
        master.status_line(slot, 2, "busy 1")
        assert slot.stressed
        slot.busy.pop(2)
        master.assess(slot)
        return slot
    slot = asyncio.run(run())
    assert not slot.stressed
    assert slot.links[1].sent == [b"stress yes\n", b"stress no\n"]


def test_unlimited_service_never_stresses():
    async def run():
        master, log = make_master()
        slot = make_slot(0, hold=0)
        master.status_line(slot, 1, "busy 5000")
        return slot, log
    slot, log = asyncio.run(run())
    assert not slot.stressed and log.lines == []


def test_bind_waits_for_a_port_the_old_workers_still_hold(monkeypatch):
    """After a crash the previous master's workers may hold the listening
    port for a moment: master waits for it rather than failing to start."""
    import socket
    import threading

    from hato.master import supervisor

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    threading.Timer(0.5, holder.close).start()
    sock = supervisor.bind_inet("127.0.0.1", port, 10)
    assert sock.getsockname()[1] == port
    sock.close()
    # a port that stays taken is still an error, after BIND_WAIT
    other = socket.socket()
    other.bind(("127.0.0.1", 0))
    other.listen(1)
    monkeypatch.setattr(supervisor, "BIND_WAIT", 0.3)
    try:
        supervisor.bind_inet("127.0.0.1", other.getsockname()[1], 10)
    except OSError as err:
        assert err.errno == 98  # EADDRINUSE
    else:
        raise AssertionError("bound a port in use")
    finally:
        other.close()

"""The status channel between master and each of its worker processes.

master creates a socketpair per worker and passes one end to it (its file
descriptor in ``HATO_STATUS_FD``). Messages are text lines:

    worker → master   ``busy N``         sessions in progress now; sent only
                                          when the number changed, a burst of
                                          changes coalesced into one line
                                          (see below)
    master → worker   ``stress yes``     the service reached its maxproc
                      ``stress no``      stress mode ended

master needs the busy counts for one thing: stress mode, which starts when
every worker of the service holds its share of maxproc (so the sum reaches
maxproc) and ends after the sum has stayed low for seconds. A worker
therefore reports a number at once (in the same loop iteration) only when
it reaches its share or leaves it; other changes are sent at most every
REPORT_DELAY seconds, so that a busy smtpd does not send master a line for
every connection. What master sees is then exact wherever it decides: a
worker below its share is below it in master's sum too.

A worker started while its service is under stress gets ``HATO_STRESS=yes``
in its environment. Lines that do not parse are ignored (master logs them).
This is the counterpart of the status pipe Postfix's master shares with its
daemons, kept per worker so that master can sum sessions per service.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass

STATUS_FD_ENV = "HATO_STATUS_FD"
STRESS_ENV = "HATO_STRESS"
SHARE_ENV = "HATO_SESSION_LIMIT"
MAX_LINE = 200
#: Seconds a change of the busy count away from the worker's share of
#: maxproc may wait before it is sent, together with the changes after it.
REPORT_DELAY = 0.25


@dataclass(frozen=True)
class Busy:
    count: int


@dataclass(frozen=True)
class Stress:
    on: bool


Message = Busy | Stress


def parse_message(line: str) -> Message | None:
    """One line of the channel (without its newline) → a message, or None
    when it is not one."""
    words = line.split()
    if len(words) != 2:
        return None
    verb, arg = words
    if verb == "busy" and arg.isdigit() and arg.isascii():
        return Busy(int(arg))
    if verb == "stress" and arg in ("yes", "no"):
        return Stress(arg == "yes")
    return None


def format_message(msg: Message) -> bytes:
    if isinstance(msg, Busy):
        return f"busy {msg.count}\n".encode()
    return f"stress {'yes' if msg.on else 'no'}\n".encode()


class LineSplitter:
    """Bytes in, complete lines out; an over-long line is dropped whole."""

    def __init__(self, limit: int = MAX_LINE):
        self.limit = limit
        self._buf = b""
        self._skipping = False

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        lines: list[str] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > self.limit:
                    self._buf = b""
                    self._skipping = True
                return lines
            line, self._buf = self._buf[:nl], self._buf[nl + 1:]
            if self._skipping:
                self._skipping = False
                continue
            if len(line) <= self.limit:
                lines.append(line.decode("ascii", "replace"))


class StatusChannel:
    """One end of the socketpair on the running asyncio loop: each line
    read goes to *on_line*; :meth:`send` writes, buffering while the peer
    is slow. *on_close* runs once at EOF or on an error."""

    def __init__(self, sock: socket.socket, on_line: Callable[[str], None],
                 on_close: Callable[[], None] | None = None):
        sock.setblocking(False)
        self.sock = sock
        self.on_line = on_line
        self.on_close = on_close
        self._split = LineSplitter()
        self._out = b""
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            return
        for line in self._split.feed(data):
            self.on_line(line)

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        if self._out:
            self._out += data
            return
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self._out = data[sent:]
            if self._loop is not None:
                self._loop.add_writer(self.sock.fileno(), self._writable)

    def _writable(self) -> None:
        try:
            sent = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self._out = self._out[sent:]
        if not self._out and self._loop is not None:
            self._loop.remove_writer(self.sock.fileno())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.sock.fileno())
            if self._out:
                self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        if self.on_close is not None:
            self.on_close()


class WorkerStatus:
    """A worker's side of the channel: :meth:`report_busy` tells master how
    many sessions are in progress; ``stress yes/no`` from master sets
    :attr:`stress` and calls every subscriber. A service subscribes with
    :meth:`subscribe` (called at once when stress is already on). Without
    a channel (a service run in-process by a test) it only keeps state."""

    def __init__(self, sock: socket.socket | None = None, *, stress: bool = False,
                 share: int = 0):
        self.stress = stress
        #: This worker's share of the service's maxproc (master's
        #: HATO_SESSION_LIMIT; 0: no limit, so no stress mode to detect).
        self.share = share
        self._subscribers: list[Callable[[bool], None]] = []
        self._channel = StatusChannel(sock, self._line) if sock is not None else None
        self._busy = 0
        self._sent = 0
        self._soon = False  # a flush is due in this loop iteration
        self._later: asyncio.TimerHandle | None = None

    @classmethod
    def from_env(cls) -> WorkerStatus:
        fd = os.environ.get(STATUS_FD_ENV, "")
        sock = socket.socket(fileno=int(fd)) if fd.isdigit() else None
        share = os.environ.get(SHARE_ENV, "")
        return cls(sock, stress=os.environ.get(STRESS_ENV, "") == "yes",
                   share=int(share) if share.isdigit() else 0)

    def start(self) -> None:
        """Attach to the running loop (call from inside it)."""
        if self._channel is not None:
            self._channel.start()

    def subscribe(self, callback: Callable[[bool], None]) -> None:
        self._subscribers.append(callback)
        if self.stress:
            callback(True)

    def _line(self, line: str) -> None:
        msg = parse_message(line)
        if isinstance(msg, Stress):
            self.set_stress(msg.on)

    def set_stress(self, on: bool) -> None:
        if on == self.stress:
            return
        self.stress = on
        for callback in list(self._subscribers):
            callback(on)

    @property
    def busy(self) -> int:
        return self._busy

    def report_busy(self, count: int) -> None:
        """Called on every change. A count that reaches this worker's share
        of maxproc, or leaves it, is sent in this loop iteration; others
        within REPORT_DELAY seconds. One line at most per sending, and none
        when the number is back where master last heard it."""
        self._busy = count
        if self._channel is None or self._soon:
            return
        share = self.share
        if share and (count >= share or self._sent >= share):
            self._soon = True
            asyncio.get_running_loop().call_soon(self._flush)
        elif self._later is None:
            self._later = asyncio.get_running_loop().call_later(REPORT_DELAY, self._flush)

    def _flush(self) -> None:
        self._soon = False
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._channel is not None and self._busy != self._sent:
            self._sent = self._busy
            self._channel.send(format_message(Busy(self._busy)))

    def close(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._channel is not None:
            self._channel.close()

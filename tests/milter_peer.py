"""A scripted milter for tests: speaks the Sendmail 8 milter protocol on its
own loopback TCP port (or a unix socket), records every packet it receives,
and answers as its :class:`Script` says.

It has its own small codec on purpose (nothing from ``hato.proto.milter``),
so that a bug shared by encoder and decoder cannot hide, and it runs in
threads so the MTA under test may be hato (asyncio) or Debian's Postfix.

    with MilterPeer(Script(replies={"R": "r"})) as peer:
        ... point the MTA at peer.endpoint ("inet:127.0.0.1:PORT") ...
        peer.sessions[0].commands()   # ['O', 'D', 'C', 'D', 'H', ...]
        peer.sessions[0].macros["C"]  # {'j': 'mx.example', '{daemon_name}': ...}

Recording: each connection is a :class:`Session`; ``session.events`` is
every packet in order as :class:`Event` (``cmd`` letter, decoded ``fields``):

====  ==========================================================
O     (version, actions, protocol)
D     (for_cmd, ((name, value), ...))      — order as sent
C     (hostname, family, port, address) or (hostname, "U")
H U   (text,)
M R   (arg, arg, ...)
L     (name, value)
B     (chunk_bytes,)
T N E A Q K  ()
====  ==========================================================

Replies (``Script.replies[cmd]``, default ``"c"``; ``Script.rcpt[address]``
overrides ``R`` for one recipient, matched on ``args[0]``): a spec is one of

* a letter: ``"c" "a" "r" "t" "d" "s" "4" "f" "p"``;
* ``("y", "550 5.7.1 text")``, ``("q", reason)``;
* edits: ``("h", name, value)``, ``("i", index, name, value)``,
  ``("m", index, name, value)``, ``("+", addr)``, ``("2", addr, args)``,
  ``("-", addr)``, ``("e", addr)``, ``("e", addr, args)``, ``("b", bytes)``;
* ``("raw", bytes)``: bytes written as they are (garbage);
* ``("sleep", seconds)``; ``("close",)``: hang up;
* a list of specs (sent in order), or a callable ``(event, session) -> spec``.

``Script.eom`` is sent before the ``E`` reply (the modification requests).
No reply is sent to D, A, Q, K, nor to an event whose SMFIP_NR_* flag (or
SMFIP_NOHREPL for ``L``) the script's *protocol* has.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from tests.ports import close_listener, free_port

NR_FLAGS = {"C": 0x1000, "H": 0x2000, "M": 0x4000, "R": 0x8000, "T": 0x10000,
            "U": 0x20000, "L": 0x80, "N": 0x40000, "B": 0x80000}
NO_REPLY = set("DAQK")


@dataclass(frozen=True)
class Event:
    cmd: str
    fields: tuple

    def __repr__(self) -> str:
        return f"Event({self.cmd!r}, {self.fields!r})"


@dataclass
class Session:
    events: list[Event] = field(default_factory=list)
    closed: bool = False

    def commands(self) -> list[str]:
        return [e.cmd for e in self.events]

    def of(self, cmd: str) -> list[Event]:
        return [e for e in self.events if e.cmd == cmd]

    @property
    def macros(self) -> dict[str, dict[str, str]]:
        """The last D packet for each command letter, as a dict."""
        out: dict[str, dict[str, str]] = {}
        for e in self.events:
            if e.cmd == "D":
                out[e.fields[0]] = dict(e.fields[1])
        return out

    def body(self) -> bytes:
        return b"".join(e.fields[0] for e in self.events if e.cmd == "B")


@dataclass
class Script:
    version: int = 6
    actions: int = 0x1FF
    protocol: int = 0
    symlists: dict[int, str] = field(default_factory=dict)
    replies: dict[str, Any] = field(default_factory=dict)
    rcpt: dict[str, Any] = field(default_factory=dict)
    eom: list[Any] = field(default_factory=list)
    #: send this O reply instead of the built one (bytes, written as is)
    optneg_raw: bytes | None = None


def _pkt(cmd: str, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data) + 1) + cmd.encode("latin-1") + data


def _z(*items) -> bytes:
    return b"".join((i if isinstance(i, bytes) else str(i).encode("utf-8", "surrogateescape"))
                    + b"\0" for i in items)


def _strings(data: bytes) -> tuple[str, ...]:
    parts = data.split(b"\0")
    if parts and parts[-1] == b"":
        parts = parts[:-1]
    return tuple(p.decode("utf-8", "surrogateescape") for p in parts)


def decode(cmd: str, data: bytes) -> tuple:
    if cmd == "O":
        return struct.unpack(">III", data[:12])
    if cmd == "D":
        items = _strings(data[1:])
        return (chr(data[0]), tuple(zip(items[0::2], items[1::2])))
    if cmd == "C":
        end = data.index(b"\0")
        host = data[:end].decode("utf-8", "surrogateescape")
        fam = chr(data[end + 1])
        if fam == "U":
            return (host, "U")
        (port,) = struct.unpack(">H", data[end + 2:end + 4])
        return (host, fam, port, _strings(data[end + 4:])[0])
    if cmd in "HUMRL":
        return _strings(data)
    if cmd == "B":
        return (data,)
    return ()


def encode_reply(spec) -> bytes:
    if isinstance(spec, str):
        return _pkt(spec)
    kind, *args = spec
    if kind in ("y", "q"):
        return _pkt(kind, _z(args[0]))
    if kind == "h":
        return _pkt("h", _z(args[0], args[1]))
    if kind in ("i", "m"):
        return _pkt(kind, struct.pack(">I", args[0]) + _z(args[1], args[2]))
    if kind in ("+", "-"):
        return _pkt(kind, _z(args[0]))
    if kind in ("2", "e"):
        return _pkt(kind, _z(*args))
    if kind == "b":
        return _pkt("b", args[0])
    if kind == "raw":
        return args[0]
    raise ValueError(f"bad reply spec {spec!r}")


class MilterPeer:
    def __init__(self, script: Script | None = None, unix_path: str | None = None):
        self.script = script or Script()
        self.sessions: list[Session] = []
        self.unix_path = unix_path
        if unix_path:
            if os.path.exists(unix_path):
                os.unlink(unix_path)
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.bind(unix_path)
            self.endpoint = f"unix:{unix_path}"
        else:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(("127.0.0.1", 0))
            self.port = self._sock.getsockname()[1]
            self.endpoint = f"inet:127.0.0.1:{self.port}"
        self._sock.listen(16)
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = False
        self._lock = threading.Lock()
        self._accepter = threading.Thread(target=self._accept, daemon=True)
        self._accepter.start()

    # --- lifecycle ---------------------------------------------------------------
    def __enter__(self) -> "MilterPeer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop = True
        close_listener(self._sock)
        with self._lock:
            for c in self._conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
        for t in self._threads:
            t.join(timeout=5)
        if self.unix_path and os.path.exists(self.unix_path):
            os.unlink(self.unix_path)

    def wait_closed(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until *count* sessions have ended (the MTA hung up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sum(s.closed for s in self.sessions) >= count:
                return
            time.sleep(0.01)

    @property
    def events(self) -> list[Event]:
        return [e for s in self.sessions for e in s.events]

    # --- serving -------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            session = Session()
            with self._lock:
                self.sessions.append(session)
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, session), daemon=True)
            self._threads.append(t)
            t.start()

    @staticmethod
    def _recv(conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, conn: socket.socket, session: Session) -> None:
        try:
            while True:
                head = self._recv(conn, 4)
                if head is None:
                    return
                (length,) = struct.unpack(">I", head)
                body = self._recv(conn, length)
                if body is None:
                    return
                cmd, data = chr(body[0]), body[1:]
                event = Event(cmd, decode(cmd, data))
                session.events.append(event)
                if not self._answer(conn, event, session):
                    return
        except OSError:
            return
        finally:
            session.closed = True
            try:
                conn.close()
            except OSError:
                pass

    def _answer(self, conn: socket.socket, event: Event, session: Session) -> bool:
        s = self.script
        cmd = event.cmd
        if cmd == "O":
            if s.optneg_raw is not None:
                conn.sendall(s.optneg_raw)
                return True
            data = struct.pack(">III", s.version, s.actions, s.protocol)
            for stage, names in s.symlists.items():
                data += struct.pack(">I", stage) + _z(names)
            conn.sendall(_pkt("O", data))
            return True
        if cmd in NO_REPLY:
            return cmd not in "QK"
        if s.protocol & NR_FLAGS.get(cmd, 0):
            return True
        spec = s.replies.get(cmd, "c")
        if cmd == "R" and event.fields and event.fields[0] in s.rcpt:
            spec = s.rcpt[event.fields[0]]
        if cmd == "E" and s.eom:
            spec = list(s.eom) + (spec if isinstance(spec, list) else [spec])
        return self._send(conn, spec, event, session)

    def _send(self, conn: socket.socket, spec, event: Event, session: Session) -> bool:
        if callable(spec):
            spec = spec(event, session)
        if isinstance(spec, list):
            return all(self._send(conn, s, event, session) for s in spec)
        if isinstance(spec, tuple) and spec[0] == "sleep":
            time.sleep(spec[1])
            return True
        if isinstance(spec, tuple) and spec[0] == "close":
            conn.shutdown(socket.SHUT_RDWR)
            return False
        conn.sendall(encode_reply(spec))
        return True


def unused_port() -> int:
    """A loopback port nobody listens on (for "milter not listening")."""
    return free_port()


Spec = Any
Responder = Callable[[Event, Session], Spec]

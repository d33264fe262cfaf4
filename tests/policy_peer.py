"""A scripted SMTPD policy server for tests (the delegation protocol of
SMTPD_POLICY_README): threads, loopback TCP or a UNIX-domain socket.

*behave(connection_no, request_no, attributes)* says what to do with each
request: bytes to send (``b"action=DUNNO\\n\\n"``), :data:`CLOSE` (close the
connection without a word), :data:`HANG` (say nothing until the peer is
closed), or a list of those, done in turn (``[b"action=DU", CLOSE]``). A
plain string is an action: ``"REJECT go away"`` sends ``action=REJECT go
away`` and the empty line::

    with PolicyPeer(lambda c, r, a: "DUNNO") as peer:
        ... check_policy_service inet:127.0.0.1:{peer.port} ...
        peer.requests          # every request, as (name, value) lists in order
        peer.connections       # connections accepted
        peer.closed_by_client  # connections the client closed

:meth:`PolicyPeer.drop` closes the open connections (a server that ends
idle clients).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from tests.ports import close_listener

CLOSE = "<close>"
HANG = "<hang>"

Behaviour = Callable[[int, int, dict[str, str]], "bytes | str | list[bytes | str]"]


class PolicyPeer:
    def __init__(self, behave: Behaviour | None = None, *, path: str | None = None,
                 host: str = "127.0.0.1"):
        self.behave: Behaviour = behave or (lambda c, r, a: "DUNNO")
        self.path = path
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            self.port = 0
        else:
            self.sock = socket.socket()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, 0))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(64)
        self.connections = 0
        self.closed_by_client = 0
        self.requests: list[list[tuple[str, str]]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> PolicyPeer:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def endpoint(self) -> str:
        return f"unix:{self.path}" if self.path else f"inet:127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                number = self.connections
                self.connections += 1
                self.open.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        buf = b""
        served = 0
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    with self.lock:
                        if not self.stopping.is_set():
                            self.closed_by_client += 1
                    return
                buf += data
                while b"\n\n" in buf:
                    raw, buf = buf.split(b"\n\n", 1)
                    items = [tuple(line.split("=", 1)) for line in
                             raw.decode("utf-8", "surrogateescape").split("\n")]
                    with self.lock:
                        self.requests.append(items)  # type: ignore[arg-type]
                    what = self.behave(number, served, dict(items))  # type: ignore[arg-type]
                    served += 1
                    for step in (what if isinstance(what, list) else [what]):
                        if step == CLOSE:
                            return
                        if step == HANG:
                            self.stopping.wait(120)
                            return
                        if isinstance(step, str):
                            step = f"action={step}\n\n".encode()
                        try:
                            conn.sendall(step)
                        except OSError:
                            return

    def drop(self) -> None:
        with self.lock:
            conns, self.open = self.open, []
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait(self, predicate, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.01)

    def close(self) -> None:
        self.stopping.set()
        close_listener(self.sock)
        self.drop()

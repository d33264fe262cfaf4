"""Loopback ports for the tests' servers, and who holds a port when one
misbehaves.

A port the kernel picks with ``bind(("127.0.0.1", 0))`` lies in
``net.ipv4.ip_local_port_range``, the range it also takes the local ports
of outgoing connections from. Between the pick and the server's own bind,
any client connection on the machine may take that port (the server's
bind then fails with EADDRINUSE), and a client that connects before the
server listens may be given that very port and connect to itself. So
ports are handed out from below that range instead, where the kernel
never picks a client port: each one at most once per test process (two
servers of one test never get the same port) and only after a bind on
127.0.0.1 succeeded.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import subprocess
import threading

_FLOOR = 20000
_lock = threading.Lock()
_given: set[int] = set()


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _candidates():
    low = _ephemeral_low()
    if low - _FLOOR < 2000:  # a machine with an unusually wide client range
        return None
    # a different start in each test process: parallel runs collide less
    rng = random.Random(os.getpid())
    ports = list(range(_FLOOR, low))
    rng.shuffle(ports)
    return itertools.cycle(ports)


_ports = _candidates()


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port nothing holds on 127.0.0.1, outside the client-port range."""
    if _ports is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    with _lock:
        for port in _ports:
            if len(_given) > 5000:
                _given.clear()
            if port in _given:
                continue
            _given.add(port)
            if bindable(port):
                return port
    raise RuntimeError("unreachable")  # pragma: no cover - the cycle never ends


def free_port_with(*offsets: int) -> int:
    """A port as :func:`free_port` gives, with port + each offset free and
    handed out too (``hato init -p PORT`` puts submission on PORT + 62:
    another server of the test must not be given that one)."""
    while True:
        port = free_port()
        others = [port + o for o in offsets]
        with _lock:
            if any(o in _given or not bindable(o) for o in others):
                continue
            _given.update(others)
        return port


def port_holders(port: int) -> str:
    """What ``ss`` says holds or talks to *port* (for a failure message)."""
    try:
        r = subprocess.run(["ss", "-tanpH", f"( sport = :{port} or dport = :{port} )"],
                           capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"ss: {e}"
    return f"sockets on port {port}:\n{r.stdout.strip() or '(none)'}{r.stderr.strip()}"


def close_listener(sock: socket.socket) -> None:
    """Close a listening socket that a thread may be blocked in accept() on.
    close() alone does not wake that thread: the kernel keeps the socket
    listening until the accept returns, so the port would take one more
    connection after the server was "closed". shutdown() ends the accept."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # never connected / already shut: fine
    try:
        sock.close()
    except OSError:
        pass

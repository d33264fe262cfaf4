"""The tests' own port helpers (tests/ports.py): ports outside the kernel's
client-port range, never handed out twice, and listeners that really stop."""

from __future__ import annotations

import socket
import threading

from tests import ports


def test_free_ports_are_below_the_client_range_and_distinct():
    low = ports._ephemeral_low()
    got = [ports.free_port() for _ in range(200)]
    assert len(set(got)) == len(got)
    if ports._ports is not None:
        assert all(ports._FLOOR <= p < low for p in got)
    for p in got[:20]:
        assert ports.bindable(p)


def test_a_closed_listener_takes_no_more_connections():
    sock = socket.socket()
    sock.bind(("127.0.0.1", ports.free_port()))
    sock.listen(4)
    port = sock.getsockname()[1]
    outcome: list[str] = []

    def accept() -> None:
        try:
            sock.accept()
            outcome.append("accepted")
        except OSError:
            outcome.append("ended")

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    t.join(0.2)
    ports.close_listener(sock)
    t.join(5)
    assert outcome == ["ended"]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            refused = False
    except ConnectionRefusedError:
        refused = True
    assert refused
    assert "sockets on port" in ports.port_holders(port)

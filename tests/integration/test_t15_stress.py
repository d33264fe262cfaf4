"""t-15: stress mode. The smtp service has maxproc 3 and
``smtpd_timeout = ${stress?{2}:{300}}s``: three idle clients fill it, master
logs Postfix's process-limit warnings and switches the workers to stress
mode, the idle clients are dropped after about 2 s with ``421 4.4.2 ...
Error: timeout exceeded``, a fourth client waits in the listen queue until a
slot frees, and once the load is gone stress mode ends. Below the limit an
idle client keeps its 300 s."""

from __future__ import annotations

import re
import socket
import time

import pytest

from .instance import smtp_ready

pytestmark = pytest.mark.integration

TIMEOUT = "${stress?{2}:{300}}s"


def configure(inst, maxproc: int, monkeypatch) -> str:
    # master's hysteresis: stress ends after 1 s of low load (10 s normally).
    monkeypatch.setenv("HATO_STRESS_HOLD", "1")
    service = f"127.0.0.1:{inst.port}"
    r = inst.cmd("postconf", "-Fe", f"{service}/inet/process_limit={maxproc}")
    assert r.returncode == 0, r.stderr
    inst.postconf(f"smtpd_timeout={TIMEOUT}")
    inst.start()
    inst.wait_for(lambda: smtp_ready(inst.port), what="smtpd listening")
    return service


def idle_client(port: int) -> tuple[socket.socket, float]:
    """Connect and read the 220 greeting; then say nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    greeting = sock.recv(1000)
    assert greeting.startswith(b"220 "), greeting
    return sock, time.monotonic()


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    out = b""
    while True:
        data = sock.recv(1000)
        if not data:
            return out
        out += data


def test_full_service_goes_into_stress_mode(instance, monkeypatch):
    inst = instance
    service = configure(inst, 3, monkeypatch)
    idle = [idle_client(inst.port) for _ in range(3)]
    inst.wait_log("stress mode started", timeout=15)
    log = inst.log_text()
    label = re.escape(f'service "{service}" ({service})')
    assert re.search(rf'master\[\d+\]: warning: {label} has reached its process limit "3": '
                     r"new clients may experience noticeable delays", log), log
    assert re.search(r"master\[\d+\]: warning: to avoid this condition, increase the process "
                     r"count in master\.cf or reduce the service time per client", log), log
    assert re.search(r"master\[\d+\]: warning: see http://www\.postfix\.org/STRESS_README\.html "
                     r"for examples of stress-adapting configuration settings", log), log
    assert re.search(rf"master\[\d+\]: {label}: stress mode started", log), log

    # A fourth client waits in the listen queue: connected, not greeted.
    fourth = socket.create_connection(("127.0.0.1", inst.port), timeout=15)
    fourth.settimeout(0.5)
    with pytest.raises(socket.timeout):
        fourth.recv(1000)

    # The idle clients get the stress smtpd_timeout (2 s), counted from
    # when they began to wait.
    for sock, greeted in idle:
        reply = read_all(sock, 15)
        waited = time.monotonic() - greeted
        assert re.match(rb"421 4\.4\.2 \S+ Error: timeout exceeded\r\n$", reply), reply
        assert waited >= 1.0, waited
        sock.close()
    inst.wait_log("timeout after CONNECT from", count=3, timeout=15)

    # Slots are free again: the fourth client is greeted now.
    fourth.settimeout(15)
    assert fourth.recv(1000).startswith(b"220 ")
    fourth.sendall(b"QUIT\r\n")
    assert b"221 2.0.0 Bye" in read_all(fourth, 15)
    fourth.close()

    # Load gone: after the hold time stress mode ends.
    inst.wait_log("stress mode ended", timeout=20)
    assert re.search(rf"master\[\d+\]: {label}: stress mode ended", inst.log_text())


def test_below_the_limit_idle_clients_keep_their_time(instance, monkeypatch):
    inst = instance
    configure(inst, 10, monkeypatch)
    sock, _greeted = idle_client(inst.port)
    time.sleep(10)
    sock.settimeout(0.2)
    with pytest.raises(socket.timeout):  # still open, nothing said
        sock.recv(1000)
    sock.settimeout(15)
    sock.sendall(b"NOOP\r\n")
    assert sock.recv(1000).startswith(b"250 ")
    sock.sendall(b"QUIT\r\n")
    assert b"221 2.0.0 Bye" in read_all(sock, 15)
    sock.close()
    log = inst.log_text()
    assert "process limit" not in log, log
    assert "stress mode" not in log, log
    assert "timeout after" not in log, log

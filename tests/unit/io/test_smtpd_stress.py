"""Stress mode in an in-process smtpd (SessionServer.set_stress): the
stress values of smtpd_timeout and the error limits reach new sessions and
sessions in progress; an idle session's wait is cut, counted from when it
began."""

from __future__ import annotations

import asyncio
import socket
import time

from hato.io.smtpd_server import SessionServer

from .test_smtpd_session import server_for

STRESS_MAIN = """
smtpd_timeout = ${stress?{1}:{300}}s
smtpd_forbid_bare_newline = normalize
smtpd_forbid_bare_newline_exclusions = 127.0.0.0/8
"""


def stress_settings(server: SessionServer):
    return server.settings.config.settings(stress=True)


async def open_session(server: SessionServer):
    a, b = socket.socketpair()
    a.setblocking(False)
    task = asyncio.get_running_loop().create_task(server.serve_socket(a))
    reader, writer = await asyncio.open_connection(sock=b)
    banner = await asyncio.wait_for(reader.readline(), 5)
    assert banner.startswith(b"220 "), banner
    for _ in range(100):  # until the session waits for a command
        if server.live:
            break
        await asyncio.sleep(0.01)
    return task, reader, writer


def test_set_stress_values(tmp_path):
    server, _log = server_for(tmp_path, STRESS_MAIN)
    assert server.timeout == 300
    assert server.limits.hard_error_limit == 20
    assert server.limits.junk_command_limit == 100
    assert not server.per_request_deadline
    server.set_stress(stress_settings(server))
    assert server.timeout == 1
    assert server.starttls_timeout == 10
    assert server.per_request_deadline
    assert server.limits.hard_error_limit == 1
    assert server.limits.junk_command_limit == 1
    server.set_stress(server.settings)
    assert server.timeout == 300
    assert server.limits.hard_error_limit == 20
    assert not server.per_request_deadline


def test_new_sessions_know_they_run_under_stress(tmp_path):
    """ClientFacts.stress: what policy servers are told (stress=yes)."""
    from hato.io.smtpd_session import Session

    server, _log = server_for(tmp_path, STRESS_MAIN)
    assert not Session(server, None, None, "192.0.2.1", "1").facts.stress
    server.set_stress(stress_settings(server))
    assert Session(server, None, None, "192.0.2.1", "1").facts.stress
    server.set_stress(server.settings)
    assert not Session(server, None, None, "192.0.2.1", "1").facts.stress


def test_idle_session_is_cut_when_stress_begins(tmp_path):
    server, log = server_for(tmp_path, STRESS_MAIN)

    async def run():
        task, reader, writer = await open_session(server)
        await asyncio.sleep(0.3)
        (session,) = server.live
        assert session.conn.limits.forbid_bare_newline == "no"  # its own exclusion
        began = time.monotonic()
        server.set_stress(stress_settings(server))
        # The session's own limits keep their fields; the stress ones change.
        assert session.conn.limits.hard_error_limit == 1
        assert session.conn.limits.junk_command_limit == 1
        assert session.conn.limits.forbid_bare_newline == "no"
        reply = await asyncio.wait_for(reader.readline(), 10)
        waited = time.monotonic() - began
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.wait_for(task, 5)
        writer.close()
        return reply, waited

    reply, waited = asyncio.run(run())
    assert reply.startswith(b"421 4.4.2 ") and reply.rstrip().endswith(
        b"Error: timeout exceeded"), reply
    assert waited < 5  # 1 s from the start of the wait, not 300 s
    text = log.text()
    assert "timeout after CONNECT from unknown[127.0.0.1]" in text, text
    assert not server.live


def test_a_wait_longer_than_the_stress_timeout_ends_at_once(tmp_path):
    server, _log = server_for(tmp_path, STRESS_MAIN)

    async def run():
        task, reader, writer = await open_session(server)
        await asyncio.sleep(1.2)  # already longer than the stress smtpd_timeout
        began = time.monotonic()
        server.set_stress(stress_settings(server))
        reply = await asyncio.wait_for(reader.readline(), 10)
        waited = time.monotonic() - began
        await asyncio.wait_for(task, 5)
        writer.close()
        return reply, waited

    reply, waited = asyncio.run(run())
    assert reply.startswith(b"421 4.4.2 "), reply
    assert waited < 0.9


def test_session_keeps_serving_and_new_sessions_get_stress_limits(tmp_path):
    server, _log = server_for(tmp_path, STRESS_MAIN + "smtpd_timeout = ${stress?{5}:{300}}s\n")

    async def run():
        task, reader, writer = await open_session(server)
        server.set_stress(stress_settings(server))
        writer.write(b"EHLO client.example\r\n")
        ehlo = b""
        while not ehlo.startswith(b"250 ") and b"\n250 " not in ehlo:
            ehlo += await asyncio.wait_for(reader.read(4096), 5)
        # smtpd_hard_error_limit is 1 under stress: the first error ends it.
        writer.write(b"BOGUS\r\n")
        rest = await asyncio.wait_for(reader.read(), 5)
        await asyncio.wait_for(task, 5)
        writer.close()
        # Stress over: a new session has the normal values again.
        server.set_stress(server.settings)
        task2, reader2, writer2 = await open_session(server)
        (session,) = server.live
        limits = session.conn.limits
        writer2.write(b"QUIT\r\n")
        await asyncio.wait_for(reader2.read(), 5)
        await asyncio.wait_for(task2, 5)
        writer2.close()
        return rest, limits

    rest, limits = asyncio.run(run())
    assert rest.startswith(b"500 5.5.2 Error: command not recognized\r\n"), rest
    assert rest.endswith(b"421 4.7.0 mx1.example.com Error: too many errors\r\n"), rest
    assert limits.hard_error_limit == 20 and limits.junk_command_limit == 100

"""smtpd sessions in-process (test tier 2): a SessionServer over a socket
pair, a queue in a temporary directory, and the replies and queue files
that result."""

from __future__ import annotations

import asyncio
import socket

import pytest

from hato.io.smtpd_session import SessionServer, parse_reply
from hato.proto.smtpd import Reply
from hato.queue.store import INCOMING, QueueStore

from ..policy.conftest import make_settings


class Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, text):
        self.lines.append(text)

    def warning(self, text):
        self.lines.append("warning: " + text)

    error = warning

    def exception(self, text):
        self.lines.append("error: " + text)

    def text(self) -> str:
        return "\n".join(self.lines)


def server_for(tmp_path, main: str = "") -> tuple[SessionServer, Log]:
    settings = make_settings(f"""
queue_directory = {tmp_path}/queue
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
{main}
""")
    store = QueueStore.from_settings(settings)
    store.ensure_layout()
    log = Log()
    return SessionServer(settings, log), log


async def _dialogue(server: SessionServer, client_bytes: list[bytes]) -> bytes:
    a, b = socket.socketpair()
    a.setblocking(False)
    task = asyncio.get_running_loop().create_task(server.serve_socket(a))
    reader, writer = await asyncio.open_connection(sock=b)
    out = bytearray()
    out += await asyncio.wait_for(reader.readline(), 5)
    for chunk in client_bytes:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.05)
    writer.write_eof()
    while True:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            break
        out += data
    await asyncio.wait_for(task, 5)
    writer.close()
    return bytes(out)


def talk(server, *chunks: bytes) -> list[str]:
    out = asyncio.run(_dialogue(server, list(chunks)))
    return out.decode("utf-8", "replace").splitlines()


def test_parse_reply():
    assert parse_reply("250 2.0.0 Ok: queued as ABC") == Reply(250, "2.0.0", "Ok: queued as ABC")
    assert parse_reply("220 ready") == Reply(220, "", "ready")


def test_a_message_is_queued_with_received_header(tmp_path):
    server, log = server_for(tmp_path)
    lines = talk(server, b"EHLO client.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
                 b"RCPT TO:<u@mx1.example.com>\r\n", b"DATA\r\n",
                 b"Subject: t\r\n\r\nbody\r\n.\r\n", b"QUIT\r\n")
    assert lines[0].startswith("220 mx1.example.com ESMTP")
    assert "250 2.0.0 Ok" in " ".join(lines)
    queued = [ln for ln in lines if ln.startswith("250 2.0.0 Ok: queued as ")]
    assert len(queued) == 1
    qid = queued[0].rsplit(" ", 1)[1]
    store = QueueStore.from_settings(server.settings)
    qf = store.open(INCOMING, qid, writable=False)
    content = b"".join(qf.content())
    assert qf.envelope.sender == "a@example.org"
    assert [r.address for r in qf.envelope.recipients] == ["u@mx1.example.com"]
    assert content.startswith(b"Received: from client.example (unknown [127.0.0.1])\n"
                              b"\tby mx1.example.com (hato) with ESMTP id " + qid.encode())
    assert b"\tfor <u@mx1.example.com>; " in content
    assert b"\nbody\n" in content
    text = log.text()
    assert "connect from unknown[127.0.0.1]" in text
    assert f"{qid}: client=unknown[127.0.0.1]" in text
    assert "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5" \
        in text


def test_relay_denied_is_logged_as_postfix(tmp_path):
    server, log = server_for(tmp_path, "mynetworks = 192.0.2.0/24")
    lines = talk(server, b"HELO c.example\r\nMAIL FROM:<a@example.org>\r\n"
                 b"RCPT TO:<x@elsewhere.example>\r\nQUIT\r\n")
    assert "554 5.7.1 <x@elsewhere.example>: Relay access denied" in lines
    assert ("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <x@elsewhere.example>: "
            "Relay access denied; from=<a@example.org> to=<x@elsewhere.example> proto=SMTP "
            "helo=<c.example>") in log.text()
    assert "rcpt=0/1" in log.text()


def test_lost_connection_is_logged_and_nothing_is_queued(tmp_path):
    server, log = server_for(tmp_path)
    talk(server, b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<u@mx1.example.com>\r\n"
         b"DATA\r\nSubject: cut\r\n\r\nhalf a mess")
    assert "lost connection after DATA from unknown[127.0.0.1]" in log.text()
    assert "ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4" in log.text()
    store = QueueStore.from_settings(server.settings)
    assert list(store.list(INCOMING)) == []


def test_timeout_ends_the_session(tmp_path):
    server, log = server_for(tmp_path, "smtpd_timeout = 1s")

    async def run() -> bytes:
        a, b = socket.socketpair()
        a.setblocking(False)
        task = asyncio.get_running_loop().create_task(server.serve_socket(a))
        reader, writer = await asyncio.open_connection(sock=b)
        data = await asyncio.wait_for(reader.read(1000), 5)
        writer.write(b"HELO x\r\nMAIL FROM:<a@example.org>\r\n")
        rest = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(1000), 5)
            if not chunk:
                break
            rest += chunk
        await task
        return data + rest

    out = asyncio.run(run())
    assert b"421 4.4.2 mx1.example.com Error: timeout exceeded" in out
    assert "timeout after MAIL from unknown[127.0.0.1]" in log.text()


@pytest.mark.parametrize("variant", [b"\n.\n", b"\n.\r\n", b"\r.\n", b"\r\n.\n", b"\r\n.\r"])
def test_smuggling_never_ends_data_early(tmp_path, variant):
    server, log = server_for(tmp_path, "smtpd_forbid_bare_newline = normalize\n"
                                       "smtpd_forbid_bare_newline_exclusions =")
    lines = talk(server, b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<u@mx1.example.com>\r\n"
                 b"DATA\r\n",
                 b"Subject: s\r\n\r\nhello" + variant + b"MAIL FROM:<evil@example.org>\r\n"
                 b"RCPT TO:<v@mx1.example.com>\r\nDATA\r\nevil\r\n.\r\nQUIT\r\n")
    queued = [ln for ln in lines if "queued as" in ln]
    assert len(queued) == 1, lines
    store = QueueStore.from_settings(server.settings)
    ids = list(store.list(INCOMING))
    assert len(ids) == 1
    env = store.open(INCOMING, ids[0], writable=False).envelope
    assert env.sender == "a@example.org"
    assert [r.address for r in env.recipients] == ["u@mx1.example.com"]

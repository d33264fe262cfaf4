"""smtpd sessions in-process (test tier 2): a SessionServer over a socket
pair, a queue in a temporary directory, and the replies and queue files
that result."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from hato.io.batch import Batcher, Failed
from hato.io.smtpd_message import parse_reply
from hato.io.smtpd_server import SessionServer
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


def test_non_smtp_command_is_logged_as_typed_and_escaped(tmp_path):
    server, log = server_for(tmp_path)
    lines = talk(server, b"\x01\x1b[2Jbogus \x07bell\\\r\n")
    assert lines[-1] == "221 2.7.0 Error: I can break rules, too. Goodbye."
    assert ("warning: non-SMTP command from unknown[127.0.0.1]: "
            "\\001\\033[2Jbogus \\abell\\\\") in log.lines


def test_long_command_lines_are_logged_as_postfix(tmp_path):
    server, log = server_for(tmp_path)
    talk(server, b"EHLO c\r\n", b"X" * 5000 + b"\r\n", b"NOOP \x01" + b"y" * 3000 + b"\r\n",
         b"QUIT\r\n")
    warnings = [ln for ln in log.lines if "request longer" in ln]
    assert warnings == [
        "warning: unknown[127.0.0.1]: request longer than 2048: " + "X" * 30 + "...",
        "warning: unknown[127.0.0.1]: request longer than 2048: NOOP ?" + "y" * 24 + "..."]


def test_refused_rcpt_over_the_limit_counts_as_success(tmp_path):
    server, log = server_for(tmp_path, "smtpd_recipient_limit = 1")
    lines = talk(server, b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n"
                 b"RCPT TO:<u@mx1.example.com>\r\nRCPT TO:<v@mx1.example.com>\r\nQUIT\r\n")
    assert "452 4.5.3 Error: too many recipients" in lines
    assert "disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=2 quit=1 commands=5" \
        in log.text()


def test_xclient_changes_the_client_for_authorized_hosts(tmp_path):
    server, log = server_for(tmp_path, "smtpd_authorized_xclient_hosts = 127.0.0.0/8\n"
                                       "mynetworks = 192.0.2.0/24")
    lines = talk(server, b"EHLO proxy.example\r\n",
                 b"XCLIENT NAME=client.example ADDR=192.0.2.7 HELO=orig.example\r\n",
                 b"EHLO orig.example\r\nMAIL FROM:<a@example.org>\r\n"
                 b"RCPT TO:<x@elsewhere.example>\r\nQUIT\r\n")
    assert any(ln.startswith("250-XCLIENT ") for ln in lines), lines
    assert "220 mx1.example.com ESMTP hato" in lines[1:]
    # now in mynetworks: relaying is allowed
    assert "250 2.1.5 Ok" in lines, lines
    assert "disconnect from client.example[192.0.2.7]" in log.text()


def test_xclient_refused_and_not_offered_elsewhere(tmp_path):
    server, _ = server_for(tmp_path)
    lines = talk(server, b"EHLO c\r\nXCLIENT ADDR=192.0.2.7\r\nXFORWARD NAME=x\r\nQUIT\r\n")
    assert not any("XCLIENT" in ln or "XFORWARD" in ln for ln in lines if ln.startswith("250"))
    assert lines.count("550 5.7.0 Error: insufficient authorization") == 2


def test_xforward_attributes_reach_the_queue_file(tmp_path):
    server, _ = server_for(tmp_path, "smtpd_authorized_xforward_hosts = 127.0.0.1")
    lines = talk(server, b"EHLO filter\r\nXFORWARD NAME=orig.example ADDR=192.0.2.9 "
                 b"HELO=orig-helo.example\r\nMAIL FROM:<a@example.org>\r\n"
                 b"RCPT TO:<u@mx1.example.com>\r\nDATA\r\nSubject: x\r\n\r\nx\r\n.\r\nQUIT\r\n")
    assert "250 2.0.0 Ok" in lines
    qid = [ln for ln in lines if "queued as" in ln][0].rsplit(" ", 1)[1]
    env = QueueStore.from_settings(server.settings).open(INCOMING, qid, writable=False).envelope
    assert env.attributes["log_client_name"] == "orig.example"
    assert env.attributes["log_client_address"] == "192.0.2.9"
    assert env.attributes["log_helo_name"] == "orig-helo.example"


def test_discarded_ehlo_keywords(tmp_path):
    table = tmp_path / "discard"
    table.write_text("127.0.0.1 chunking, dsn\n")
    server, _ = server_for(tmp_path, f"smtpd_discard_ehlo_keywords = pipelining, "
                                     f"enhancedstatuscodes\n"
                                     f"smtpd_discard_ehlo_keyword_address_maps = "
                                     f"texthash:{table}\n")
    lines = talk(server, b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n")
    ehlo = [ln for ln in lines if ln.startswith("250")]
    text = "\n".join(ehlo)
    for gone in ("PIPELINING", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"):
        assert gone not in text, text
    assert "SIZE" in text
    # without ENHANCEDSTATUSCODES the replies carry no enhanced codes
    assert "250 Ok" in lines, lines


def test_a_session_cancelled_during_its_commit_waits_for_it(tmp_path):
    # A stop cancels the session while its commit runs in the committer's
    # thread. The session must not abort its injection under the thread
    # (closing the queue file it writes): it waits for the commit, whose
    # message is then whole in incoming/ (the client had no reply: at least
    # once), and ends cancelled.
    server, log = server_for(tmp_path)
    entered, gate = threading.Event(), threading.Event()
    results: list = []
    commit_batch = server.committer.fn

    def held(commits):
        entered.set()
        gate.wait(10)
        out = commit_batch(commits)
        results.extend(out)
        return out

    server.committer = Batcher(held)

    async def scenario():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        task = loop.create_task(server.serve_socket(a))
        reader, writer = await asyncio.open_connection(sock=b)
        await asyncio.wait_for(reader.readline(), 5)
        writer.write(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<u@mx1.example.com>\r\n"
                     b"DATA\r\nSubject: whole\r\n\r\nbody\r\n.\r\n")
        await writer.drain()
        assert await loop.run_in_executor(None, entered.wait, 5)
        task.cancel()
        await asyncio.sleep(0.2)
        assert not task.done()  # still waiting for its commit
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        writer.close()

    asyncio.run(scenario())
    assert len(results) == 1 and not isinstance(results[0], Failed), results
    qid = results[0].queue_id
    store = QueueStore.from_settings(server.settings)
    assert list(store.list(INCOMING)) == [qid]
    qf = store.open(INCOMING, qid, writable=False)
    try:
        content = b"".join(qf.content())
        assert b"\nSubject: whole\n" in content and content.endswith(b"\n\nbody\n")
    finally:
        qf.close()

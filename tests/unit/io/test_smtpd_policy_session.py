"""check_policy_service in smtpd sessions in-process (test tier 2): a
SessionServer on a real TCP connection, its policy client talking to a
scripted policy server. What the session tells the server (server address,
instance, queue id, counts at DATA and END-OF-MESSAGE), its replies and log
lines, and one connection shared by the sessions of a worker."""

from __future__ import annotations

import asyncio
import re
import socket

from hato.io.smtpd_server import SessionServer
from hato.queue.store import QueueStore
from tests.policy_peer import CLOSE, HANG, PolicyPeer

from ..policy.conftest import make_settings
from .test_smtpd_session import Log


def server_for(tmp_path, main: str) -> tuple[SessionServer, Log]:
    settings = make_settings(f"""
queue_directory = {tmp_path}/queue
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
mynetworks = 127.0.0.0/8
smtpd_peername_lookup = no
smtpd_error_sleep_time = 0
{main}
""")
    QueueStore.from_settings(settings).ensure_layout()
    log = Log()
    return SessionServer(settings, log), log


async def _dialogue(server: SessionServer, lines: list[bytes]) -> tuple[list[str], int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    listener.close()
    accepted.setblocking(False)
    task = asyncio.get_running_loop().create_task(server.serve_socket(accepted))
    reader, writer = await asyncio.open_connection(sock=client)
    out = [(await asyncio.wait_for(reader.readline(), 10)).decode()]
    for line in lines:
        writer.write(line)
        await writer.drain()
        if line.startswith(b"DATA"):
            out.append((await asyncio.wait_for(reader.readline(), 10)).decode())
            continue
        if line.endswith(b"\r\n.\r\n") or not line.startswith(b"Subject"):
            while True:
                reply = (await asyncio.wait_for(reader.readline(), 10)).decode()
                out.append(reply)
                if reply[3:4] != "-":
                    break
    writer.close()
    await asyncio.wait_for(task, 10)
    return [x.rstrip("\r\n") for x in out], port


def talk(server, *lines: bytes) -> tuple[list[str], int]:
    return asyncio.run(_dialogue(server, list(lines)))


def test_requests_at_every_stage_and_one_shared_connection(tmp_path) -> None:
    def behave(c, r, attrs):
        if attrs["recipient"] == "nobody@mx1.example.com":
            return "REJECT No such user"
        if attrs["protocol_state"] == "END-OF-MESSAGE":
            return "PREPEND X-Policy: seen"
        return "DUNNO"

    with PolicyPeer(behave) as peer:
        check = f"check_policy_service {peer.endpoint}"
        server, log = server_for(tmp_path, f"smtpd_recipient_restrictions = {check}\n"
                                           f"smtpd_data_restrictions = {check}\n"
                                           f"smtpd_end_of_data_restrictions = {check}\n")
        replies, port = talk(server, b"EHLO client.example\r\n",
                             b"MAIL FROM:<a@example.org> SIZE=100\r\n",
                             b"RCPT TO:<u@mx1.example.com>\r\n",
                             b"RCPT TO:<nobody@mx1.example.com>\r\n",
                             b"DATA\r\n", b"Subject: t\r\n\r\nbody\r\n.\r\n",
                             b"MAIL FROM:<b@example.org>\r\n",
                             b"RCPT TO:<u@mx1.example.com>\r\n", b"QUIT\r\n")
        assert "554 5.7.1 <nobody@mx1.example.com>: Recipient address rejected: " \
            "No such user" in replies
        queued = [r for r in replies if r.startswith("250 2.0.0 Ok: queued as ")]
        assert len(queued) == 1
        qid = queued[0].rsplit(" ", 1)[1]
        got = [dict(r) for r in peer.requests]
        assert [(g["protocol_state"], g["recipient"], g["recipient_count"]) for g in got] == [
            ("RCPT", "u@mx1.example.com", "0"), ("RCPT", "nobody@mx1.example.com", "0"),
            ("DATA", "u@mx1.example.com", "1"), ("END-OF-MESSAGE", "u@mx1.example.com", "1"),
            ("RCPT", "u@mx1.example.com", "0")]
        # the queue file exists from the first accepted recipient on
        assert [g["queue_id"] for g in got[:4]] == ["", qid, qid, qid]
        assert got[4]["queue_id"] == ""
        # one instance per mail transaction
        assert len({g["instance"] for g in got[:4]}) == 1
        assert re.fullmatch(r"[0-9a-f]+\.[0-9a-f]+\.[0-9a-f]+\.0", got[0]["instance"])
        assert got[4]["instance"].endswith(".1") and got[4]["instance"] != got[0]["instance"]
        # SIZE= until the end of the message; then its size as received, CRLF counted
        assert [g["size"] for g in got[:4]] == ["100", "100", "100", "20"]
        first = got[0]
        assert (first["server_address"], first["server_port"], first["client_address"]) == \
            ("127.0.0.1", str(port), "127.0.0.1")
        assert first["client_port"].isdigit() and first["client_port"] != "0"
        assert (first["protocol_name"], first["helo_name"], first["sender"]) == \
            ("ESMTP", "client.example", "a@example.org")
        assert got[4]["sender"] == "b@example.org"
        # a second session of the same worker uses the same connection
        talk(server, b"HELO c2.example\r\n", b"MAIL FROM:<>\r\n",
             b"RCPT TO:<u@mx1.example.com>\r\n", b"QUIT\r\n")
        assert len(peer.requests) == 6 and dict(peer.requests[5])["protocol_name"] == "SMTP"
        assert peer.connections == 1
    assert ("reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <nobody@mx1.example.com>: "
            "Recipient address rejected: No such user; from=<a@example.org> "
            "to=<nobody@mx1.example.com> proto=ESMTP helo=<client.example>") in log.text()


def test_policy_server_trouble_is_logged_and_the_default_action_applies(tmp_path) -> None:
    with PolicyPeer(lambda c, r, a: CLOSE) as peer:
        server, log = server_for(
            tmp_path, "smtpd_recipient_restrictions = check_policy_service "
                      f"{{ {peer.endpoint}, retry_delay=1s, "
                      "{ default_action = 450 4.7.1 Policy down } }\n")
        replies, _ = talk(server, b"HELO c\r\n", b"MAIL FROM:<a@example.org>\r\n",
                          b"RCPT TO:<u@mx1.example.com>\r\n", b"QUIT\r\n")
        assert "450 4.7.1 <u@mx1.example.com>: Recipient address rejected: Policy down" \
            in replies
        assert peer.connections == 2
    text = log.text()
    server_name = f"127.0.0.1:{peer.port}"
    assert text.count(f"warning: premature end-of-input on {server_name} while reading "
                      "input attribute name") == 2
    assert f"warning: problem talking to server {server_name}: Success" in text
    assert ("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 4.7.1 <u@mx1.example.com>: "
            "Recipient address rejected: Policy down; from=<a@example.org> "
            "to=<u@mx1.example.com> proto=SMTP helo=<c>") in text


def test_a_hanging_policy_server_holds_only_the_sessions_that_ask_it(tmp_path) -> None:
    """Restriction checks run in the worker's own threads, one per session
    slot: many sessions stuck on a hanging policy server leave the others
    (here: at MAIL, with no policy server in the sender list) alone."""
    with PolicyPeer(lambda c, r, a: HANG) as peer:
        server, log = server_for(
            tmp_path, "smtpd_recipient_restrictions = check_policy_service "
                      f"{{ {peer.endpoint}, timeout=4s, try_limit=1 }}\n"
                      "smtpd_sender_restrictions = reject_non_fqdn_sender\n")

        async def scenario() -> tuple[list, float]:
            stuck = [asyncio.ensure_future(_dialogue(server, [
                b"HELO c\r\n", b"MAIL FROM:<a@example.org>\r\n",
                b"RCPT TO:<u@mx1.example.com>\r\n", b"QUIT\r\n"])) for _ in range(12)]
            while len(peer.requests) < 12:
                await asyncio.sleep(0.05)
            started = asyncio.get_running_loop().time()
            replies, _ = await _dialogue(server, [b"HELO c\r\n", b"MAIL FROM:<a@example.org>\r\n",
                                                  b"RSET\r\n", b"QUIT\r\n"])
            took = asyncio.get_running_loop().time() - started
            assert replies[2].startswith("250"), replies
            return await asyncio.gather(*stuck), took

        results, took = asyncio.run(scenario())
    assert took < 3, took
    for replies, _ in results:
        assert any(r.startswith("451 4.3.5 ") for r in replies), replies
    assert log.text().count("warning: timeout on 127.0.0.1:") == 12

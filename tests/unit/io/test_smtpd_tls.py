"""TLS in smtpd sessions, in-process: STARTTLS, the injection defence,
wrapper mode, encrypt level, protocol lists, and the Received: header."""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest

from hato.config.errors import ConfigError
from hato.io.tls import protocol_range
from hato.queue.store import INCOMING, QueueStore
from tests.certs import TestCA

from .test_smtpd_session import Log, server_for  # noqa: F401 - shared helpers


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


def tls_server(tmp_path, ca, extra: str = ""):
    issued = ca.issue("mx1.example.com")
    return server_for(tmp_path, f"smtpd_tls_security_level = may\n"
                                f"smtpd_tls_cert_file = {issued.cert}\n"
                                f"smtpd_tls_key_file = {issued.key}\n"
                                f"smtpd_tls_loglevel = 1\n{extra}")


def client_context(ca) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca.path))
    ctx.check_hostname = False
    return ctx


async def _reply(reader) -> bytes:
    out = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        out += line
        if not line or line[3:4] != b"-":
            return out


async def _session(server, steps, ca, *, wrapper=False):
    """Run *steps*: bytes to send (then read one reply), "TLS" to start TLS."""
    a, b = socket.socketpair()
    a.setblocking(False)
    task = asyncio.get_running_loop().create_task(server.serve_socket(a))
    reader, writer = await asyncio.open_connection(sock=b)
    replies: list[bytes] = []
    if wrapper:
        await writer.start_tls(client_context(ca))
    replies.append(await _reply(reader))
    for step in steps:
        if step == "TLS":
            await writer.start_tls(client_context(ca))
            continue
        writer.write(step)
        await writer.drain()
        replies.append(await _reply(reader))
    writer.close()
    await asyncio.wait_for(task, 10)
    return replies


def run(server, steps, ca, **kw):
    return asyncio.run(_session(server, steps, ca, **kw))


def test_protocol_lists():
    assert protocol_range(">=TLSv1.2") == (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert protocol_range("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1") == (
        ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)
    assert protocol_range("<=TLSv1.2")[1] == ssl.TLSVersion.TLSv1_2
    with pytest.raises(ConfigError):
        protocol_range(">=TLSv9")


def test_starttls_then_mail_gets_esmtps_received_header(tmp_path, ca):
    server, log = tls_server(tmp_path, ca, "smtpd_tls_received_header = yes")
    replies = run(server, [b"EHLO c.example\r\n", b"STARTTLS\r\n", "TLS",
                           b"EHLO c.example\r\n", b"MAIL FROM:<a@example.org>\r\n",
                           b"RCPT TO:<u@mx1.example.com>\r\n", b"DATA\r\n",
                           b"Subject: tls\r\n\r\nx\r\n.\r\n", b"QUIT\r\n"], ca)
    assert b"250-STARTTLS" in replies[1]
    assert replies[2].startswith(b"220 2.0.0 Ready to start TLS")
    assert b"STARTTLS" not in replies[3]  # not offered again under TLS
    assert replies[7].startswith(b"250 2.0.0 Ok: queued as ")
    qid = replies[7].split()[-1].decode()
    store = QueueStore.from_settings(server.settings)
    content = b"".join(store.open(INCOMING, qid, writable=False).content())
    assert b"with ESMTPS id " + qid.encode() in content
    assert b"\t(using TLSv1.3 with cipher " in content
    assert b"\t(No client certificate requested)" in content
    assert "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher" \
        in log.text()


def test_injected_commands_after_starttls_are_dropped(tmp_path, ca):
    server, log = tls_server(tmp_path, ca)

    async def go():
        a, b = socket.socketpair()
        a.setblocking(False)
        task = asyncio.get_running_loop().create_task(server.serve_socket(a))
        reader, writer = await asyncio.open_connection(sock=b)
        await _reply(reader)
        writer.write(b"EHLO c\r\n")
        await _reply(reader)
        # STARTTLS and an injected command in one write (CVE-2011-0411).
        writer.write(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\n")
        await writer.drain()
        assert (await _reply(reader)).startswith(b"220 ")
        await writer.start_tls(client_context(ca))
        writer.write(b"NOOP\r\n")
        await writer.drain()
        first = await _reply(reader)
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await _reply(reader)
        writer.close()
        await asyncio.wait_for(task, 10)
        return first

    first = asyncio.run(go())
    # The first reply after the handshake answers NOOP: the MAIL was dropped.
    assert first.startswith(b"250 2.0.0 Ok"), first


def test_encrypt_level_demands_starttls(tmp_path, ca):
    server, _ = tls_server(tmp_path, ca, "smtpd_tls_security_level = encrypt")
    replies = run(server, [b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n", b"QUIT\r\n"], ca)
    assert replies[2].startswith(b"530 5.7.0 Must issue a STARTTLS command first")


def test_wrapper_mode_speaks_tls_from_the_first_byte(tmp_path, ca):
    server, log = tls_server(tmp_path, ca, "smtpd_tls_wrappermode = yes")
    replies = run(server, [b"EHLO c\r\n", b"QUIT\r\n"], ca, wrapper=True)
    assert replies[0].startswith(b"220 mx1.example.com ESMTP")
    assert b"STARTTLS" not in replies[1]


def test_handshake_garbage_is_logged_not_fatal(tmp_path, ca):
    server, log = tls_server(tmp_path, ca)

    async def go():
        a, b = socket.socketpair()
        a.setblocking(False)
        task = asyncio.get_running_loop().create_task(server.serve_socket(a))
        reader, writer = await asyncio.open_connection(sock=b)
        await _reply(reader)
        writer.write(b"EHLO c\r\nSTARTTLS\r\n")
        await _reply(reader)
        await _reply(reader)
        writer.write(b"\x16\x03\x01 this is not a client hello" * 10)
        await writer.drain()
        writer.close()
        await asyncio.wait_for(task, 10)

    asyncio.run(go())
    assert "SSL_accept error from unknown[127.0.0.1]" in log.text()
    assert "lost connection after STARTTLS from unknown[127.0.0.1]" in log.text()


def test_tls_without_certificate_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no certificate"):
        server_for(tmp_path, "smtpd_tls_security_level = may")


def test_rsa_and_ecdsa_certificates_at_once(tmp_path, ca):
    rsa = ca.issue("mx1.example.com", kind="rsa")
    ecc = ca.issue("mx1.example.com", kind="ec")
    server, _ = server_for(tmp_path, f"smtpd_tls_security_level = may\n"
                                     f"smtpd_tls_chain_files = {rsa.chain}, {ecc.chain}\n")
    replies = run(server, [b"EHLO c\r\n", b"STARTTLS\r\n", "TLS", b"NOOP\r\n"], ca)
    assert replies[-1].startswith(b"250")


def test_sni_maps_choose_the_certificate(tmp_path, ca):
    other = ca.issue("other.example", kind="ec")
    sni = tmp_path / "sni"
    sni.write_text(f"other.example {other.chain}\n")
    server, _ = tls_server(tmp_path, ca, f"tls_server_sni_maps = texthash:{sni}\n")

    async def go(name):
        a, b = socket.socketpair()
        a.setblocking(False)
        task = asyncio.get_running_loop().create_task(server.serve_socket(a))
        reader, writer = await asyncio.open_connection(sock=b)
        await _reply(reader)
        writer.write(b"EHLO c\r\nSTARTTLS\r\n")
        await _reply(reader)
        await _reply(reader)
        await writer.start_tls(client_context(ca), server_hostname=name)
        cert = writer.get_extra_info("ssl_object").getpeercert()
        writer.write(b"QUIT\r\n")
        await writer.drain()
        await _reply(reader)
        writer.close()
        await asyncio.wait_for(task, 10)
        return dict(x[0] for x in cert["subject"])["commonName"]

    assert asyncio.run(go("other.example")) == "other.example"
    assert asyncio.run(go("mx1.example.com")) == "mx1.example.com"


def test_client_renegotiation_is_off(ca):
    from hato.io.tls import tls_policy

    from ..policy.conftest import make_settings

    issued = ca.issue("mx1.example.com")
    policy = tls_policy(make_settings(f"smtpd_tls_security_level = may\n"
                                      f"smtpd_tls_cert_file = {issued.cert}\n"
                                      f"smtpd_tls_key_file = {issued.key}\n"))
    assert policy.context.options & ssl.OP_NO_RENEGOTIATION

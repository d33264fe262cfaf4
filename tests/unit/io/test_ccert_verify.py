"""hato.io.ccert_verify: a server context that takes a client certificate
which does not verify, and tells trusted from untrusted afterwards."""

from __future__ import annotations

import socket
import ssl
import threading

import pytest

from hato.io.ccert_verify import accept_unverified, verify_result
from tests.certs import TestCA


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    base = tmp_path_factory.mktemp("ccert")
    ca = TestCA(base / "ca")
    other = TestCA(base / "other", "unknown CA")
    return ca, ca.issue("mx.test"), ca.issue("good.test", client=True), \
        other.issue("stranger.test", client=True)


def handshake(server_ctx: ssl.SSLContext, client_cert) -> tuple[dict, int | None]:
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    client_ctx.load_cert_chain(client_cert.cert, client_cert.key)
    a, b = socket.socketpair()
    out: dict = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                out["cert"] = s.getpeercert()
                out["result"] = verify_result(s)
        except ssl.SSLError as err:
            out["error"] = err

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b):
            pass
    except (ssl.SSLError, OSError):
        pass
    t.join(10)
    return out, out.get("result")


def server_context(pki) -> ssl.SSLContext:
    ca, server, _good, _stranger = pki
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(server.cert, server.key)
    ctx.load_verify_locations(cafile=str(ca.path))
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def test_without_the_callback_an_unknown_certificate_fails(pki):
    out, _ = handshake(server_context(pki), pki[3])
    assert "error" in out and "CERTIFICATE_VERIFY_FAILED" in str(out["error"])


def test_an_unknown_certificate_is_taken_and_untrusted(pki):
    ctx = server_context(pki)
    assert accept_unverified(ctx)
    out, result = handshake(ctx, pki[3])
    assert "error" not in out, out
    assert out["cert"]["subject"] == ((("commonName", "stranger.test"),),)
    assert result not in (None, 0)


def test_a_certificate_from_the_ca_is_trusted(pki):
    ctx = server_context(pki)
    assert accept_unverified(ctx)
    # the ssl module keeps the callback when the verify mode changes later
    ctx.verify_mode = ssl.CERT_OPTIONAL
    out, result = handshake(ctx, pki[2])
    assert "error" not in out and result == 0, out

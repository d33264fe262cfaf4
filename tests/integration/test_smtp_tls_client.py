"""The smtp client's TLS (hato.io.smtp_tls) over real TLS sockets on
loopback: a tiny Python TLS server with TestCA certificates, and client
contexts built from policies the way the smtp delivery agent will."""

from __future__ import annotations

import hashlib
import socket
import ssl
import textwrap
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.io.smtp_tls import (
    HANDSHAKE_FAILURE,
    NOT_TRUSTED,
    NOT_VERIFIED,
    TlsVerifyError,
    check_peer,
    client_context,
    handshake_error,
    trust_locations,
)
from hato.policy.smtp_tls_policy import TlsDefaults, resolve_policy
from tests.certs import TestCA
from tests.ports import close_listener

HOST = "mx.example.com"


class TinyTlsServer:
    """Accepts connections, does the TLS handshake, writes a banner, closes.
    Records the SNI names clients sent."""

    def __init__(self, chain_file, *, max_version=None):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(chain_file))
        if max_version is not None:
            self.ctx.maximum_version = max_version
        self.sni: list[str | None] = []
        self.ctx.sni_callback = lambda sock, name, ctx: self.sni.append(name)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            conn.settimeout(5)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"220 ok\r\n")
                tls.recv(10)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self):
        self._stop = True
        close_listener(self.sock)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca = TestCA(d / "ca")
    other = TestCA(d / "other", name="someone else's CA")
    issued = ca.issue(HOST)
    leaf = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    server = TinyTlsServer(issued.chain)
    yield {"ca": ca, "other": other, "leaf": leaf, "server": server}
    server.close()


def settings(main: str = ""):
    text = textwrap.dedent("""
        myhostname = client.example.org
        mydomain = example.org
        compatibility_level = 3.6
    """) + textwrap.dedent(main)
    config = Config("/etc/hato", MainCf.parse(text, "/etc/hato/main.cf"),
                    MasterCf.parse("", "/etc/hato/master.cf"), HostFacts("client"))
    return config.settings()


def connect(s, policy, port, *, system_ca=True, tlsa=()):
    """Connect, handshake and check as the smtp client will; the result
    or the TlsVerifyError."""
    ctx = client_context(s, policy, system_ca=system_ca)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        try:
            tls = ctx.wrap_socket(raw, server_hostname=policy.sni_name())
        except ssl.SSLError as err:
            raise handshake_error(err, policy) from err
        with tls:
            cafile, capath = trust_locations(s)
            result = check_peer(tls, policy, tlsa=tlsa, cafile=cafile, capath=capath,
                                system_ca=system_ca)
            assert tls.recv(100).startswith(b"220")
            return result
    finally:
        raw.close()


def policy_for(s, dest=HOST, hostname=HOST, table=None):
    return resolve_policy(dest, hostname, TlsDefaults.from_settings(s),
                          lookup=None if table is None else table.get)


def test_verify_ok_logs_verified(pki):
    s = settings(f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {pki['ca'].path}\n"
                 "smtp_tls_servername = hostname\n")
    p = policy_for(s)
    r = connect(s, p, pki["server"].port)
    assert r.kind == "Verified" and r.matched == HOST
    assert r.protocol == "TLSv1.3"
    line = r.log_line(HOST, "127.0.0.1", pki["server"].port)
    assert line.startswith(f"Verified TLS connection established to {HOST}[127.0.0.1]:"
                           f"{pki['server'].port}: TLSv1.3 with cipher TLS_")
    assert line.endswith(" bits)")
    assert HOST in pki["server"].sni


def test_secure_with_nexthop_match(pki):
    s = settings(f"smtp_tls_security_level = secure\nsmtp_tls_CAfile = {pki['ca'].path}\n")
    # secure: nexthop, dot-nexthop → mx.example.com is a subdomain of example.com
    r = connect(s, policy_for(s, dest="example.com"), pki["server"].port)
    assert r.kind == "Verified"
    # policy table: match=.example.org only → mismatch
    p = policy_for(s, dest="example.com", table={"example.com": "secure match=.example.org"})
    with pytest.raises(TlsVerifyError) as info:
        connect(s, p, pki["server"].port)
    assert info.value.reason == NOT_VERIFIED


def test_wrong_hostname_refused(pki):
    s = settings(f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {pki['ca'].path}\n")
    p = policy_for(s, dest="other.example", hostname="mx.other.example")
    with pytest.raises(TlsVerifyError) as info:
        connect(s, p, pki["server"].port)
    assert info.value.reason == NOT_VERIFIED and info.value.dsn == "4.7.5"
    assert HOST in info.value.detail


def test_untrusted_ca_refused_at_verify_fine_at_encrypt_and_may(pki):
    s = settings(f"smtp_tls_security_level = verify\nsmtp_tls_CAfile = {pki['other'].path}\n")
    with pytest.raises(TlsVerifyError) as info:
        connect(s, policy_for(s), pki["server"].port)
    assert info.value.reason == NOT_TRUSTED
    for level in ("encrypt", "may"):
        s = settings(f"smtp_tls_security_level = {level}\n"
                     f"smtp_tls_CAfile = {pki['other'].path}\n")
        r = connect(s, policy_for(s), pki["server"].port)
        assert r.kind == "Untrusted", level
        assert r.log_line(HOST, "127.0.0.1", 25).startswith(
            f"Untrusted TLS connection established to {HOST}[127.0.0.1]:25: TLSv1.")


def test_encrypt_with_our_ca_logs_trusted(pki):
    s = settings(f"smtp_tls_security_level = encrypt\nsmtp_tls_CAfile = {pki['ca'].path}\n")
    r = connect(s, policy_for(s, dest="elsewhere.example", hostname="elsewhere.example"),
                pki["server"].port)
    # the chain is trusted; names are not checked at encrypt
    assert r.kind == "Trusted"


def test_no_ca_files_system_store_does_not_trust_test_ca(pki):
    s = settings("smtp_tls_security_level = verify\n")
    with pytest.raises(TlsVerifyError) as info:
        connect(s, policy_for(s), pki["server"].port)
    assert info.value.reason == NOT_TRUSTED


def _digest(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in hashlib.sha256(data).digest())


def test_fingerprint_match_and_mismatch(pki):
    leaf = pki["leaf"]
    cert_fp = _digest(leaf.public_bytes(serialization.Encoding.DER))
    pkey_fp = _digest(leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo))
    s = settings("smtp_tls_security_level = may\n")
    for fp in (cert_fp, pkey_fp, cert_fp.lower()):
        p = policy_for(s, table={HOST: f"fingerprint match=00:11|{fp}"})
        r = connect(s, p, pki["server"].port)
        assert r.kind == "Verified" and r.matched.upper() == fp.upper()
        assert r.fingerprint == cert_fp and r.pkey_fingerprint == pkey_fp
    # main.cf's smtp_tls_fingerprint_cert_match
    s2 = settings(f"smtp_tls_security_level = fingerprint\n"
                  f"smtp_tls_fingerprint_cert_match = {cert_fp}\n")
    assert connect(s2, policy_for(s2), pki["server"].port).kind == "Verified"
    p = policy_for(s, table={HOST: "fingerprint match=00:11:22"})
    with pytest.raises(TlsVerifyError) as info:
        connect(s, p, pki["server"].port)
    assert info.value.reason == NOT_VERIFIED


def test_dane_ee_3_1_1_match_and_mismatch(pki):
    spki = pki["leaf"].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    s = settings("smtp_tls_security_level = dane\n")
    p = policy_for(s, dest="example.com")
    assert p.level == "dane"
    r = connect(s, p, pki["server"].port, tlsa=[(3, 1, 1, hashlib.sha256(spki).digest())])
    assert r.kind == "Verified"
    assert HOST in pki["server"].sni  # DANE always sends SNI = the host name
    with pytest.raises(TlsVerifyError) as info:
        connect(s, p, pki["server"].port, tlsa=[(3, 1, 1, b"\0" * 32)])
    assert info.value.reason == NOT_VERIFIED


def test_dane_ta_2_0_1(pki):
    ca_der = pki["ca"].cert.public_bytes(serialization.Encoding.DER)
    # The tiny server sends only its leaf: a DANE-TA record needs the TA in
    # the chain, so this one cannot match (as with OpenSSL's DANE, where a
    # TA certificate must be sent unless the record is a full 2 0 0 / 2 1 0).
    s = settings("smtp_tls_security_level = dane\n")
    p = policy_for(s)
    with pytest.raises(TlsVerifyError):
        connect(s, p, pki["server"].port, tlsa=[(2, 0, 1, hashlib.sha256(ca_der).digest())])


def test_dane_ta_with_chain_sent(pki, tmp_path):
    ca = pki["ca"]
    issued = ca.issue("mx2.example.com")
    chain_file = tmp_path / "chain.pem"
    chain_file.write_bytes(issued.chain.read_bytes() + ca.path.read_bytes())
    server = TinyTlsServer(chain_file)
    try:
        ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
        s = settings("smtp_tls_security_level = dane\n")
        p = policy_for(s, dest="example.com", hostname="mx2.example.com")
        r = connect(s, p, server.port, tlsa=[(2, 0, 1, hashlib.sha256(ca_der).digest())])
        assert r.kind == "Verified"
        # the leaf's name must be the host's (or the next hop's)
        p = policy_for(s, dest="other.example", hostname="mx.other.example")
        with pytest.raises(TlsVerifyError):
            connect(s, p, server.port, tlsa=[(2, 0, 1, hashlib.sha256(ca_der).digest())])
    finally:
        server.close()


def test_mandatory_protocols_refuse_old_server(pki, tmp_path):
    issued = pki["ca"].issue("old.example.com")
    server = TinyTlsServer(issued.chain, max_version=ssl.TLSVersion.TLSv1_2)
    try:
        s = settings("smtp_tls_security_level = encrypt\n"
                     "smtp_tls_mandatory_protocols = >=TLSv1.3\n")
        with pytest.raises(TlsVerifyError) as info:
            connect(s, policy_for(s, "old.example.com", "old.example.com"), server.port)
        assert info.value.reason == HANDSHAKE_FAILURE
        s = settings("smtp_tls_security_level = encrypt\n")
        r = connect(s, policy_for(s, "old.example.com", "old.example.com"), server.port)
        assert r.protocol == "TLSv1.2"
    finally:
        server.close()


def test_level_none_has_no_context():
    s = settings("")
    assert client_context(s, policy_for(s)) is None

"""t-22: DANE in the smtp delivery agent (smtp_tls_security_level = dane,
smtp_dns_support_level = dnssec): TLSA records from the test DNS server
(tests/dnsserver.py), whose names marked secure are answered with the AD
bit as a validating resolver would, and MX hosts that are small STARTTLS
servers on loopback addresses 127.0.0.4x, all on one port
(``smtp_tcp_port``), with a self-signed certificate (DANE-EE) or one from a
test CA that they send with its CA (DANE-TA).

The outcome is read from hato's log (Postfix's ``to=<...>, relay=...,
status=...`` lines and its "TLS connection established" lines) and from
what the servers received: a failed DANE check never falls back to
plaintext.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.certs import TestCA
from tests.dnsserver import DnsServer
from tests.ports import close_listener

from .instance import Instance, common_port
from .maillog import wait_status

pytestmark = pytest.mark.integration

SENDER = "demo@hato.test"

# -- a STARTTLS server -----------------------------------------------------------------------


class TlsPeer:
    """A minimal SMTP server with STARTTLS (no PIPELINING): records each
    session's commands, whether TLS was on, and the messages received."""

    def __init__(self, host: str, port: int, chain_file: Path, name: str):
        self.name = name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(chain_file))
        self.sessions: list[list[tuple[bool, str]]] = []  # (tls, command) per session
        self.messages: list[tuple[bool, list[str]]] = []  # (tls, recipients)
        self.errors: list[BaseException] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(8)
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        close_listener(self.sock)

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        commands: list[tuple[bool, str]] = []
        self.sessions.append(commands)
        sock: socket.socket = conn
        tls = False
        buf = b""
        try:
            conn.settimeout(20)

            def line() -> str:
                nonlocal buf
                while b"\r\n" not in buf:
                    chunk = sock.recv(4096)
                    if not chunk:
                        raise ConnectionError("closed")
                    buf += chunk
                text, _, buf = buf.partition(b"\r\n")
                return text.decode("utf-8", "replace")

            def say(text: str) -> None:
                sock.sendall(text.encode() + b"\r\n")

            say(f"220 {self.name} ESMTP")
            rcpts: list[str] = []
            while True:
                cmd = line()
                commands.append((tls, cmd))
                verb = cmd.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    keywords = ["SIZE 10240000", "8BITMIME"] + ([] if tls else ["STARTTLS"])
                    say("\r\n".join([f"250-{self.name}"]
                                    + [f"250-{k}" for k in keywords[:-1]]
                                    + [f"250 {keywords[-1]}"]))
                elif verb == "STARTTLS" and not tls:
                    say("220 2.0.0 Ready to start TLS")
                    sock = self.ctx.wrap_socket(conn, server_side=True)
                    tls, buf = True, b""
                elif verb == "MAIL":
                    rcpts = []
                    say("250 2.1.0 Ok")
                elif verb == "RCPT":
                    rcpts.append(cmd.split(":", 1)[1].strip().strip("<>"))
                    say("250 2.1.5 Ok")
                elif verb == "DATA":
                    say("354 End data with <CR><LF>.<CR><LF>")
                    while line() != ".":
                        pass
                    self.messages.append((tls, rcpts))
                    say("250 2.0.0 Ok: queued as TLSPEER")
                elif verb in ("RSET", "NOOP"):
                    say("250 2.0.0 Ok")
                elif verb == "QUIT":
                    say("221 2.0.0 Bye")
                    return
                else:
                    say("502 5.5.2 Error: command not recognized")
        except (OSError, ConnectionError, ssl.SSLError):
            pass
        except BaseException as err:  # noqa: BLE001 - shown by the test
            self.errors.append(err)
        finally:
            try:
                sock.close()
            except OSError:
                pass

    @property
    def plaintext_mail(self) -> bool:
        """Did any session send MAIL without TLS?"""
        return any(not tls and cmd.upper().startswith("MAIL")
                   for s in self.sessions for tls, cmd in s)


# -- certificates ----------------------------------------------------------------------------


def self_signed(directory: Path, name: str) -> tuple[Path, bytes]:
    """(chain file: key + certificate, the SubjectPublicKeyInfo DER)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .sign(key, hashes.SHA256()))
    path = directory / f"{name}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption())
                     + cert.public_bytes(serialization.Encoding.PEM))
    spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)
    return path, spki


def tlsa_311(spki: bytes) -> str:
    return "3 1 1 " + hashlib.sha256(spki).hexdigest()


# -- the site ----------------------------------------------------------------------------------

# MX host name → address (DNS: the domain without "mx." has it as its MX)
HOSTS = {
    "mx.ee.test": "127.0.0.41",           # DANE-EE 3 1 1 that matches
    "mx.wrong.test": "127.0.0.42",        # DANE-EE with a wrong digest
    "mx.unsigned.test": "127.0.0.43",     # TLSA without the AD bit
    "mx.insecure-mx.test": "127.0.0.44",  # matching TLSA, the MX RRset unsigned
    "mx.servfail.test": "127.0.0.45",     # the TLSA lookup fails
    "mx.ta.test": "127.0.0.46",           # DANE-TA 2 0 1 against the test CA
    "mx.nomx.test": "127.0.0.47",         # wrong TLSA, reached through an unsigned MX
    "literal.test": "127.0.0.48",         # a [127.0.0.48]:port next hop
    "mx.daneonly.test": "127.0.0.49",     # dane-only, a matching TLSA without the AD bit
}


@pytest.fixture(scope="module")
def dane_site(tmp_path_factory):
    d = tmp_path_factory.mktemp("dane")
    port = common_port(range(41, 50))
    ca = TestCA(d / "ca")
    peers: dict[str, TlsPeer] = {}
    spkis: dict[str, bytes] = {}
    for host, addr in HOSTS.items():
        if host == "mx.ta.test":
            issued = ca.issue(host)
            chain = d / "ta-chain.pem"
            chain.write_bytes(issued.chain.read_bytes() + ca.path.read_bytes())
        else:
            chain, spkis[host] = self_signed(d, host)
        peers[host] = TlsPeer(addr, port, chain, host)
    ca_der = ca.cert.public_bytes(serialization.Encoding.DER)
    zones: dict = {}
    for host, addr in HOSTS.items():
        domain = host.removeprefix("mx.")
        if host != "literal.test":
            zones[domain] = {"MX": [f"10 {host}."], "SECURE": True}
        zones[host] = {"A": [addr], "SECURE": True}
    zones["_25._tcp.mx.ee.test"] = {"TLSA": [tlsa_311(spkis["mx.ee.test"])], "SECURE": True}
    zones["_25._tcp.mx.wrong.test"] = {"TLSA": ["3 1 1 " + "00" * 32], "SECURE": True}
    zones["_25._tcp.mx.unsigned.test"] = {"TLSA": ["3 1 1 " + "00" * 32]}
    zones["insecure-mx.test"]["SECURE"] = False
    zones["_25._tcp.mx.insecure-mx.test"] = {
        "TLSA": [tlsa_311(spkis["mx.insecure-mx.test"])], "SECURE": True}
    zones["_25._tcp.mx.servfail.test"] = "SERVFAIL"
    zones["_25._tcp.mx.ta.test"] = {"TLSA": ["2 0 1 " + hashlib.sha256(ca_der).hexdigest()],
                                    "SECURE": True}
    zones["nomx.test"]["SECURE"] = False
    zones["_25._tcp.mx.nomx.test"] = {"TLSA": ["3 1 1 " + "00" * 32], "SECURE": True}
    zones["_25._tcp.mx.daneonly.test"] = {"TLSA": [tlsa_311(spkis["mx.daneonly.test"])]}
    # the connections go to smtp_tcp_port: the TLSA records are at that port
    for name in list(zones):
        if name.startswith("_25._tcp."):
            zones[f"_{port}._tcp.{name[9:]}"] = zones[name]
    dns = DnsServer(zones).start()
    inst = Instance("t22dane")
    try:
        (inst.root / "transport").write_text(
            f"literal.test smtp:[127.0.0.48]:{port}\n"
            "nomx.test smtp_insecure_may:\n")
        (inst.root / "tls_policy").write_text(
            f"[127.0.0.48]:{port} dane-only\n"
            "daneonly.test dane-only\n")
        with open(inst.root / "master.cf", "a") as f:
            f.write("smtp_insecure_may unix - - n - - smtp\n"
                    "  -o smtp_tls_dane_insecure_mx_policy=may\n")
        inst.postconf(f"hato_dns_servers = {dns.spec}", f"smtp_tcp_port = {port}",
                      f"transport_maps = texthash:{inst.root / 'transport'}",
                      f"smtp_tls_policy_maps = texthash:{inst.root / 'tls_policy'}",
                      "smtp_dns_support_level = dnssec", "smtp_tls_security_level = dane",
                      "smtp_tls_loglevel = 1", "smtp_connect_timeout = 5s",
                      "smtp_helo_timeout = 10s", "smtp_starttls_timeout = 10s")
        inst.start()
        yield inst, peers, port
    finally:
        inst.cleanup()
        dns.stop()
        for p in peers.values():
            p.close()


def send(inst: Instance, rcpt: str) -> None:
    msg = f"From: {SENDER}\nTo: {rcpt}\nSubject: t22 dane\n\nhello\n".encode()
    r = inst.sendmail("-f", SENDER, rcpt, message=msg)
    assert r.returncode == 0, r.stderr


def status(inst: Instance, rcpt: str, timeout: float = 30.0) -> dict:
    return wait_status(inst, rcpt, timeout=timeout)


def tls_line(kind: str, host: str, port: int) -> re.Pattern:
    addr = re.escape(HOSTS[host])
    return re.compile(rf"smtp\[\d+\]: {kind} TLS connection established to "
                      rf"{re.escape(host)}\[{addr}\]:{port}: TLSv1\.[23] with cipher ")


def test_dane_ee_match_is_verified(dane_site):
    inst, peers, port = dane_site
    send(inst, "a@ee.test")
    st = status(inst, "a@ee.test")
    assert (st["status"], st["relay"]) == ("sent", f"mx.ee.test[127.0.0.41]:{port}"), st
    assert tls_line("Verified", "mx.ee.test", port).search(inst.log_text()), inst.log_text()
    assert peers["mx.ee.test"].messages == [(True, ["a@ee.test"])]


def test_wrong_digest_defers_and_never_sends_in_plaintext(dane_site):
    inst, peers, port = dane_site
    send(inst, "a@wrong.test")
    st = status(inst, "a@wrong.test")
    assert (st["status"], st["dsn"], st["text"]) == \
        ("deferred", "4.7.5", "Server certificate not verified"), st
    log = inst.log_text()
    assert (f"server certificate verification failed for mx.wrong.test[127.0.0.42]:{port}: "
            "num=65:No matching DANE TLSA records") in log, log
    assert tls_line("Untrusted", "mx.wrong.test", port).search(log), log
    peer = peers["mx.wrong.test"]
    assert peer.messages == [] and not peer.plaintext_mail
    assert any(cmd.upper() == "STARTTLS" for s in peer.sessions for _tls, cmd in s)
    assert not inst.queue_empty()


def test_tlsa_without_ad_falls_back_to_may(dane_site):
    inst, peers, port = dane_site
    send(inst, "a@unsigned.test")
    st = status(inst, "a@unsigned.test")
    assert st["status"] == "sent", st
    assert tls_line("Untrusted", "mx.unsigned.test", port).search(inst.log_text())
    assert peers["mx.unsigned.test"].messages == [(True, ["a@unsigned.test"])]


def test_insecure_mx_with_matching_tlsa_is_trusted_not_verified(dane_site):
    """smtp_tls_dane_insecure_mx_policy = dane (its default at level dane):
    the TLSA records still count, but the session is only "Trusted"."""
    inst, peers, port = dane_site
    send(inst, "a@insecure-mx.test")
    st = status(inst, "a@insecure-mx.test")
    assert st["status"] == "sent", st
    assert tls_line("Trusted", "mx.insecure-mx.test", port).search(inst.log_text())


def test_insecure_mx_with_policy_may_is_not_dane(dane_site):
    """-o smtp_tls_dane_insecure_mx_policy=may: an unsigned MX RRset means no
    DANE; the wrong TLSA digest of the host does not matter."""
    inst, peers, port = dane_site
    send(inst, "a@nomx.test")
    st = status(inst, "a@nomx.test")
    assert (st["status"], st["relay"]) == ("sent", f"mx.nomx.test[127.0.0.47]:{port}"), st
    assert tls_line("Untrusted", "mx.nomx.test", port).search(inst.log_text())


def test_tlsa_servfail_defers(dane_site):
    inst, peers, port = dane_site
    send(inst, "a@servfail.test")
    st = status(inst, "a@servfail.test")
    assert (st["status"], st["dsn"], st["text"]) == \
        ("deferred", "4.7.5", f"TLSA lookup error for mx.servfail.test:{port}"), st
    assert (f"warning: DANE TLSA lookup problem: Host or domain name not found. Name service "
            f"error for name=_{port}._tcp.mx.servfail.test type=TLSA: Host not found, try "
            "again") in inst.log_text()
    assert peers["mx.servfail.test"].messages == []


def test_dane_ta_against_the_test_ca(dane_site):
    inst, peers, port = dane_site
    send(inst, "a@ta.test")
    st = status(inst, "a@ta.test")
    assert st["status"] == "sent", st
    assert tls_line("Verified", "mx.ta.test", port).search(inst.log_text())


def test_dane_only_without_validated_tlsa_defers(dane_site):
    inst, peers, port = dane_site
    send(inst, "a@daneonly.test")
    st = status(inst, "a@daneonly.test")
    assert (st["status"], st["dsn"], st["text"]) == \
        ("deferred", "4.7.5", "no TLSA records found"), st
    assert peers["mx.daneonly.test"].messages == []


def test_dane_only_for_an_address_literal_defers(dane_site):
    """An address literal has no DNSSEC-validated name: no TLSA lookup, so
    dane-only cannot be satisfied (dane would fall back to may)."""
    inst, peers, port = dane_site
    send(inst, "a@literal.test")
    st = status(inst, "a@literal.test")
    assert (st["status"], st["text"]) == ("deferred", "no TLSA records found"), st
    assert peers["literal.test"].messages == []


"""SASL servers from settings (hato.auth.server), the saslauthd client and
the Dovecot client, against small fake servers on UNIX sockets in tmp_path,
and ``hato check``'s SASL report."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import textwrap
import threading
import time

import pytest

from hato.auth import Challenge, Failure, Success
from hato.auth.backend import AuthTempFail
from hato.auth.dovecot import DovecotAuthClient, DovecotSaslServer, resolve_auth_path
from hato.auth.saslauthd import SaslauthdClient, libsasl_login
from hato.auth.server import ChainVerifier, CyrusSaslServer, plan_sasl, sasl_server_from_settings
from hato.config.defaults import HostFacts
from hato.config.errors import ConfigError
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.proto.dovecot_auth import LineReader
from hato.proto.saslauthd import RequestReader, SaslauthdRequest, encode_reply
from tests.ports import close_listener

FACTS = HostFacts("mx1", (("127.0.0.1", 8),), ())


def make_config(tmp_path, main: str = "", master: str = "") -> Config:
    text = textwrap.dedent(f"""\
        myhostname = mx1.example.com
        queue_directory = {tmp_path}/queue
        config_directory = {tmp_path}
        cyrus_sasl_config_path = {tmp_path}/sasl
        """) + textwrap.dedent(main)
    return Config(str(tmp_path), MainCf.parse(text, f"{tmp_path}/main.cf"),
                  MasterCf.parse(textwrap.dedent(master), f"{tmp_path}/master.cf"), FACTS)


def settings_for(tmp_path, main: str = "", smtpd_conf: str | None = None):
    if smtpd_conf is not None:
        (tmp_path / "sasl").mkdir(exist_ok=True)
        (tmp_path / "sasl" / "smtpd.conf").write_text(textwrap.dedent(smtpd_conf))
    return make_config(tmp_path, main).settings()


# -- a fake saslauthd ----------------------------------------------------------

class FakeSaslauthd:
    def __init__(self, path: str, users: dict[bytes, bytes], *, mode: str = "answer"):
        self.path = path
        self.users = users
        self.mode = mode
        self.requests: list[SaslauthdRequest] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(5)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                reader = RequestReader()
                result = None
                while result is None:
                    data = conn.recv(4096)
                    if not data:
                        break
                    result = reader.feed(data)
                if not isinstance(result, SaslauthdRequest):
                    continue
                self.requests.append(result)
                if self.mode == "close":
                    continue
                if self.mode == "hang":
                    time.sleep(1.0)
                    continue
                if self.mode == "garbage":
                    conn.sendall(b"\x00\x01O")
                    continue
                ok = self.users.get(result.login) == result.password
                # Sent in two pieces, as a slow server might.
                reply = encode_reply(ok, "" if ok else "Incorrect password")
                conn.sendall(reply[:3])
                conn.sendall(reply[3:])

    def close(self) -> None:
        close_listener(self.sock)


@pytest.fixture
def saslauthd(tmp_path):
    servers: list[FakeSaslauthd] = []

    def start(users=None, mode="answer") -> FakeSaslauthd:
        server = FakeSaslauthd(str(tmp_path / f"mux{len(servers)}"),
                               users or {b"bob": b"s3cret"}, mode=mode)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_saslauthd_client_ok_and_no(saslauthd):
    server = saslauthd()
    client = SaslauthdClient(server.path, 5)
    assert client.check_password("bob", "s3cret") is True
    assert client.check_password("bob", "wrong") is False
    assert server.requests[0] == SaslauthdRequest(b"bob", b"s3cret", b"smtp", b"")


def test_saslauthd_client_service_and_realm(saslauthd):
    server = saslauthd()
    client = SaslauthdClient(server.path, 5, service="submission", realm="example.org")
    client.check_password("bob", "s3cret")
    client.check_password("bob@other.example", "s3cret", service="smtp", realm="")
    assert server.requests[0] == SaslauthdRequest(b"bob", b"s3cret", b"submission",
                                                  b"example.org")
    assert server.requests[1] == SaslauthdRequest(b"bob", b"s3cret", b"smtp",
                                                  b"other.example")


def test_libsasl_login_split():
    assert libsasl_login("bob", "") == ("bob", "")
    assert libsasl_login(" bob ", "example.org") == ("bob", "example.org")
    assert libsasl_login("bob@a.example", "example.org") == ("bob", "a.example")
    assert libsasl_login("bob@x@a.example", "") == ("bob@x", "a.example")


def test_saslauthd_client_fields_saslauthd_cannot_carry_are_false(saslauthd):
    server = saslauthd()
    client = SaslauthdClient(server.path, 5)
    assert client.check_password("bob", "s3cret\0junk") is False
    assert client.check_password("b" * 300, "s3cret") is False
    assert server.requests == []  # never sent


def test_saslauthd_client_temporary_failures(saslauthd, tmp_path):
    with pytest.raises(AuthTempFail, match="No such file"):
        SaslauthdClient(str(tmp_path / "missing"), 5).check_password("bob", "s3cret")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "dead"))
    dead.close()  # a socket file nobody listens on: connection refused
    with pytest.raises(AuthTempFail, match="refused"):
        SaslauthdClient(str(tmp_path / "dead"), 5).check_password("bob", "s3cret")
    with pytest.raises(AuthTempFail):
        SaslauthdClient(saslauthd(mode="close").path, 5).check_password("bob", "s3cret")
    with pytest.raises(AuthTempFail):
        SaslauthdClient(saslauthd(mode="garbage").path, 5).check_password("bob", "s3cret")
    with pytest.raises(AuthTempFail, match="timed out"):
        SaslauthdClient(saslauthd(mode="hang").path, 0.2).check_password("bob", "s3cret")


class Verifier:
    def __init__(self, answer):
        self.answer = answer
        self.calls = 0

    def check_password(self, user, password):
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_chain_verifier_tries_each_in_order():
    first, second = Verifier(False), Verifier(True)
    assert ChainVerifier([first, second]).check_password("u", "p") is True
    assert first.calls == second.calls == 1
    assert ChainVerifier([Verifier(True), second]).check_password("u", "p") is True
    assert second.calls == 1
    assert ChainVerifier([Verifier(AuthTempFail("down")), Verifier(True)]).check_password(
        "u", "p") is True
    with pytest.raises(AuthTempFail):
        ChainVerifier([Verifier(AuthTempFail("down")), Verifier(False)]).check_password("u", "p")
    assert ChainVerifier([Verifier(False)]).check_password("u", "p") is False


# -- a fake Dovecot auth service -----------------------------------------------

HANDSHAKE = (b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n"
             b"MECH\tCRAM-MD5\tdictionary\tactive\nMECH\tANONYMOUS\tanonymous\n"
             b"MECH\tXPRIV\tprivate\nSPID\t1\nCUID\t1\nCOOKIE\tabc\nDONE\n")


class FakeDovecot:
    """Answers AUTH/CONT for user alice / wonderland (PLAIN, LOGIN) and
    delays failures, as Dovecot does."""

    def __init__(self, path: str, *, fail_delay: float = 0.0, handshake: bytes = HANDSHAKE):
        self.path = path
        self.fail_delay = fail_delay
        self.handshake = handshake
        self.lines: list[str] = []
        self.connections = 0
        self.drop_after_handshake = False
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(5)
        self.conns: list[socket.socket] = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.conns.append(conn)
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn: socket.socket) -> None:
        reader = LineReader()
        lock = threading.Lock()
        state: dict[str, str] = {}
        try:
            conn.sendall(self.handshake)
            if self.drop_after_handshake:
                self.drop_after_handshake = False
                conn.close()
                return
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                for line in reader.feed(data):
                    self.lines.append(line)
                    self.handle(conn, lock, state, line)
        except OSError:
            return

    def send(self, conn, lock, line: str, delay: float = 0.0) -> None:
        def go():
            time.sleep(delay)
            with lock:
                try:
                    conn.sendall(line.encode() + b"\n")
                except OSError:
                    pass
        if delay:
            threading.Thread(target=go, daemon=True).start()
        else:
            go()

    def handle(self, conn, lock, state, line: str) -> None:
        fields = line.split("\t")
        if fields[0] == "AUTH":
            rid, mech = fields[1], fields[2]
            params = dict(f.split("=", 1) for f in fields[3:] if "=" in f)
            if mech == "PLAIN":
                if "resp" in params and params["resp"]:
                    self.check_plain(conn, lock, rid, base64.b64decode(params["resp"]))
                else:
                    state[rid] = "PLAIN"
                    self.send(conn, lock, f"CONT\t{rid}\t")
            elif mech == "LOGIN":
                state[rid] = "LOGIN-user"
                self.send(conn, lock, f"CONT\t{rid}\t{base64.b64encode(b'Username:').decode()}")
            elif mech == "ANONYMOUS":
                self.send(conn, lock, f"FAIL\t{rid}\treason=backend down\ttemp")
            else:
                self.send(conn, lock, f"FAIL\t{rid}")
        elif fields[0] == "CONT":
            rid, data = fields[1], base64.b64decode(fields[2])
            step = state.pop(rid, "")
            if step == "PLAIN":
                self.check_plain(conn, lock, rid, data)
            elif step == "LOGIN-user":
                state[rid] = "LOGIN-pass:" + data.decode()
                self.send(conn, lock, f"CONT\t{rid}\t{base64.b64encode(b'Password:').decode()}")
            elif step.startswith("LOGIN-pass:"):
                self.verdict(conn, lock, rid, step[11:], data.decode())
            else:
                self.send(conn, lock, f"FAIL\t{rid}\treason=unknown request")

    def check_plain(self, conn, lock, rid, data: bytes) -> None:
        _, user, password = data.split(b"\0")
        self.verdict(conn, lock, rid, user.decode(), password.decode())

    def verdict(self, conn, lock, rid, user, password) -> None:
        if user == "alice" and password == "wonderland":
            self.send(conn, lock, f"OK\t{rid}\tuser={user}")
        else:
            self.send(conn, lock, f"FAIL\t{rid}\tuser={user}", delay=self.fail_delay)

    def kill_connections(self) -> None:
        for conn in self.conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self.conns = []

    def close(self) -> None:
        self.kill_connections()
        close_listener(self.sock)


@pytest.fixture
def dovecot(tmp_path):
    servers: list[FakeDovecot] = []
    clients: list[DovecotSaslServer] = []

    def start(**kwargs) -> tuple[FakeDovecot, DovecotSaslServer]:
        server = FakeDovecot(str(tmp_path / f"auth{len(servers)}"), **kwargs)
        servers.append(server)
        sasl = DovecotSaslServer(DovecotAuthClient(server.path, timeout=5),
                                 security_options={"noanonymous"},
                                 tls_security_options=set())
        clients.append(sasl)
        return server, sasl

    yield start
    for sasl in clients:
        sasl.close()
    for server in servers:
        server.close()


def test_dovecot_mechanisms_filtered_and_private_dropped(dovecot):
    server, sasl = dovecot()
    assert sasl.mechanisms(tls_active=False) == ["PLAIN", "LOGIN", "CRAM-MD5"]
    assert sasl.mechanisms(tls_active=True) == ["PLAIN", "LOGIN", "CRAM-MD5", "ANONYMOUS"]
    assert server.connections == 1  # one shared connection
    assert sasl.start("XPRIV", tls_active=True) is None
    assert sasl.start("ANONYMOUS", tls_active=False) is None


def test_dovecot_plain_with_initial_response(dovecot):
    server, sasl = dovecot()
    ex = sasl.start("plain", tls_active=True, client_addr="192.0.2.7", local_addr="192.0.2.1")
    assert ex.step(b"\0alice\0wonderland") == Success("alice")
    auth = [line for line in server.lines if line.startswith("AUTH")][0]
    assert auth.startswith("AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\t"
                           "rip=192.0.2.7\tsecured\tresp=")


def test_dovecot_plain_without_initial_response(dovecot):
    _, sasl = dovecot()
    ex = sasl.start("PLAIN", tls_active=False)
    assert ex.step(None) == Challenge(b"")
    assert ex.step(b"\0alice\0wonderland") == Success("alice")


def test_dovecot_login_and_failure(dovecot):
    _, sasl = dovecot()
    ex = sasl.start("LOGIN", tls_active=False)
    assert ex.step(None) == Challenge(b"Username:")
    assert ex.step(b"alice") == Challenge(b"Password:")
    result = ex.step(b"nope")
    assert isinstance(result, Failure) and not result.temporary
    assert ex.step(b"again") == result  # finished stays finished


def test_dovecot_temporary_failure(dovecot):
    _, sasl = dovecot()
    ex = sasl.start("ANONYMOUS", tls_active=True)
    assert ex.step(b"") == Failure("backend down", temporary=True)


def test_dovecot_never_reached_offers_plain_and_login_and_fails_temporarily(tmp_path):
    """A worker that starts while Dovecot is down offers PLAIN and LOGIN
    (subject to the security options) and an attempt fails with a temporary
    failure (454), like a worker that reached Dovecot before it went away."""
    sasl = DovecotSaslServer(DovecotAuthClient(str(tmp_path / "nothing"), timeout=1))
    assert sasl.mechanisms(tls_active=False) == ["PLAIN", "LOGIN"]
    result = sasl.start("PLAIN", tls_active=False).step(b"\0alice\0wonderland")
    assert isinstance(result, Failure) and result.temporary, result
    assert sasl.start("CRAM-MD5", tls_active=False) is None
    strict = DovecotSaslServer(DovecotAuthClient(str(tmp_path / "nothing"), timeout=1),
                               security_options=["noanonymous", "noplaintext"])
    assert strict.mechanisms(tls_active=False) == []
    sasl.close()
    strict.close()


def test_dovecot_gone_keeps_its_mechanisms_and_fails_temporarily(dovecot):
    """Dovecot stops: the mechanisms it offered are still offered (smtpd
    keeps AUTH in its EHLO reply) and an attempt fails temporarily (454),
    instead of AUTH vanishing and a client that tries getting a 503."""
    server, sasl = dovecot()
    offered = sasl.mechanisms(tls_active=False)
    assert offered == ["PLAIN", "LOGIN", "CRAM-MD5"]
    server.close()
    os.unlink(server.path)  # gone for good: nothing to connect to
    time.sleep(0.1)
    assert sasl.mechanisms(tls_active=False) == offered
    result = sasl.start("PLAIN", tls_active=False).step(b"\0alice\0wonderland")
    assert isinstance(result, Failure) and result.temporary, result


def test_dovecot_delayed_failure_does_not_hold_up_others(dovecot):
    """A failure Dovecot delays must not block another session's exchange on
    the shared connection (replies are matched by id)."""
    server, sasl = dovecot(fail_delay=0.6)
    sasl.mechanisms(tls_active=False)
    results: dict[str, object] = {}

    def bad():
        results["bad"] = sasl.start("PLAIN", tls_active=False).step(b"\0alice\0bad")
        results["bad_done"] = time.monotonic()

    t = threading.Thread(target=bad)
    t.start()
    time.sleep(0.1)
    assert sasl.start("PLAIN", tls_active=False).step(b"\0alice\0wonderland") == Success("alice")
    results["good_done"] = time.monotonic()
    t.join()
    assert isinstance(results["bad"], Failure)
    assert results["good_done"] < results["bad_done"]
    assert server.connections == 1


def test_dovecot_many_threads(dovecot):
    server, sasl = dovecot()
    out: list[object] = []

    def run(i):
        ex = sasl.start("LOGIN", tls_active=False)
        ex.step(None)
        ex.step(b"alice")
        out.append(ex.step(b"wonderland" if i % 2 else b"x"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(r, Success) for r in out) == 10
    assert sum(isinstance(r, Failure) for r in out) == 10
    assert server.connections == 1


def test_dovecot_reconnects_after_the_connection_is_lost(dovecot):
    server, sasl = dovecot()
    assert sasl.mechanisms(tls_active=False)
    server.kill_connections()
    time.sleep(0.1)
    assert sasl.start("PLAIN", tls_active=False).step(b"\0alice\0wonderland") == Success("alice")
    assert server.connections == 2


def test_dovecot_exchange_whose_connection_is_lost_fails_temporarily(dovecot):
    server, sasl = dovecot()
    ex = sasl.start("LOGIN", tls_active=False)
    assert ex.step(None) == Challenge(b"Username:")
    server.kill_connections()
    time.sleep(0.1)
    result = ex.step(b"alice")
    assert isinstance(result, Failure) and result.temporary


def test_dovecot_wrong_socket(tmp_path):
    server = FakeDovecot(str(tmp_path / "master"), handshake=b"VERSION\t1\t2\nSPID\t5\n")
    client = DovecotAuthClient(server.path, timeout=2)
    assert client.connection() is None
    assert "wrong auth socket" in client.last_error
    assert [m.name for m in client.mechanisms()] == ["PLAIN", "LOGIN"]
    client.close()
    server.close()


def test_inet_addresses():
    from hato.auth.dovecot import _inet_address

    assert _inet_address("inet:127.0.0.1:12345") == ("127.0.0.1", 12345)
    assert _inet_address("inet:[::1]:12345") == ("::1", 12345)
    assert _inet_address("inet:localhost:1") == ("localhost", 1)
    with pytest.raises(ValueError):
        _inet_address("inet:127.0.0.1")


def test_resolve_auth_path():
    assert resolve_auth_path("private/auth", "/var/spool/hato") == "/var/spool/hato/private/auth"
    assert resolve_auth_path("/run/dovecot/auth-client", "/q") == "/run/dovecot/auth-client"
    assert resolve_auth_path("unix:private/auth", "/q") == "/q/private/auth"
    assert resolve_auth_path("inet:127.0.0.1:12345", "/q") == "inet:127.0.0.1:12345"


# -- from settings -------------------------------------------------------------

def test_unknown_sasl_type(tmp_path):
    with pytest.raises(ConfigError, match="unsupported SASL server implementation: gsasl"):
        sasl_server_from_settings(settings_for(tmp_path, "smtpd_sasl_type = gsasl\n"))


def test_unknown_security_option(tmp_path):
    with pytest.raises(ConfigError, match="smtpd_sasl_security_options: unknown SASL"):
        plan_sasl(settings_for(tmp_path, "smtpd_sasl_security_options = noanonymous, nope\n",
                               smtpd_conf=""))


def test_cyrus_saslauthd_reference_setup(tmp_path, saslauthd):
    server = saslauthd()
    s = settings_for(tmp_path, "smtpd_sasl_local_domain = example.org\n", smtpd_conf=f"""\
        pwcheck_method: saslauthd
        mech_list: PLAIN LOGIN
        saslauthd_path: {server.path}
        """)
    sasl = sasl_server_from_settings(s)
    try:
        assert sasl.mechanisms(tls_active=False) == ["PLAIN", "LOGIN"]
        assert sasl.start("PLAIN", tls_active=False).step(b"\0bob\0s3cret") == Success("bob")
        ex = sasl.start("LOGIN", tls_active=False)
        assert isinstance(ex.step(None), Challenge)
        assert isinstance(ex.step(b"bob"), Challenge)
        assert isinstance(ex.step(b"bad"), Failure)
        assert sasl.start("CRAM-MD5", tls_active=False) is None
        assert server.requests[0] == SaslauthdRequest(b"bob", b"s3cret", b"smtp", b"example.org")
    finally:
        sasl.close()


def test_cyrus_saslauthd_down_is_temporary(tmp_path):
    s = settings_for(tmp_path, smtpd_conf=f"""\
        pwcheck_method: saslauthd
        saslauthd_path: {tmp_path}/nothing
        """)
    sasl = sasl_server_from_settings(s)
    result = sasl.start("PLAIN", tls_active=False).step(b"\0bob\0s3cret")
    assert isinstance(result, Failure) and result.temporary
    sasl.close()


def test_cram_md5_through_saslauthd_is_named_and_not_offered(tmp_path):
    plan = plan_sasl(settings_for(tmp_path, smtpd_conf="""\
        pwcheck_method: saslauthd
        mech_list: PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 DIGEST-MD5 FOO
        """))
    assert plan.mechanisms == ["PLAIN", "LOGIN"]
    text = "\n".join(plan.warnings)
    assert "line 2: CRAM-MD5 cannot work through saslauthd" in text
    assert "SCRAM-SHA-256 cannot work through saslauthd" in text
    assert "mechanism DIGEST-MD5 is not supported by hato" in text
    assert "unknown mechanism FOO" in text
    assert plan.errors == []


def test_saslauthd_without_mech_list_offers_what_works(tmp_path):
    plan = plan_sasl(settings_for(tmp_path, smtpd_conf="pwcheck_method: saslauthd\n"))
    assert plan.mechanisms == ["PLAIN", "LOGIN"]


def test_no_mechanism_left_is_an_error(tmp_path):
    plan = plan_sasl(settings_for(tmp_path, smtpd_conf="pwcheck_method: saslauthd\n"
                                                       "mech_list: CRAM-MD5\n"))
    assert plan.errors and plan.errors[0].message == "no SASL authentication mechanisms"
    with pytest.raises(ConfigError):
        sasl_server_from_settings(settings_for(tmp_path))


def test_unsupported_pwcheck_is_an_error_with_file_and_line(tmp_path):
    with pytest.raises(ConfigError) as info:
        sasl_server_from_settings(settings_for(tmp_path, smtpd_conf="# x\n"
                                                                    "pwcheck_method: authdaemond\n"))
    assert info.value.path == f"{tmp_path}/sasl/smtpd.conf" and info.value.line == 2


def test_cyrus_auxprop_sasldb_serves_every_mechanism(tmp_path):
    from hato.auth.sasldb import Sasldb

    db = tmp_path / "users.lmdb"
    writer = Sasldb(str(db), writable=True)
    writer.set_password("bob", "example.org", "s3cret")
    writer.close()
    s = settings_for(tmp_path, "smtpd_sasl_local_domain = example.org\n"
                               "smtpd_sasl_security_options = noanonymous\n"
                               "smtpd_sasl_tls_security_options = noanonymous\n",
                     smtpd_conf=f"""\
        pwcheck_method: auxprop
        auxprop_plugin: sasldb
        sasldb_path: {db}
        """)
    sasl = sasl_server_from_settings(s)
    try:
        assert sasl.mechanisms(tls_active=False) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5",
                                                     "PLAIN", "LOGIN"]
        assert sasl.start("PLAIN", tls_active=False).step(b"\0bob\0s3cret") == Success("bob")
        assert isinstance(sasl.start("PLAIN", tls_active=False).step(b"\0bob\0x"), Failure)
        ex = sasl.start("CRAM-MD5", tls_active=False)
        challenge = ex.step(None)
        digest = hmac.new(b"s3cret", challenge.data, hashlib.md5).hexdigest()
        assert ex.step(b"bob " + digest.encode()) == Success("bob")
    finally:
        sasl.close()


def test_default_sasldb_is_hatos(tmp_path):
    plan = plan_sasl(settings_for(tmp_path, smtpd_conf="pwcheck_method: auxprop\n"))
    assert plan.sasldb_path == f"{tmp_path}/sasldb.lmdb"


def test_security_options_apply(tmp_path):
    s = settings_for(tmp_path, "smtpd_sasl_security_options = noanonymous, noplaintext\n"
                               "smtpd_sasl_tls_security_options = noanonymous\n",
                     smtpd_conf="pwcheck_method: auxprop\n")
    sasl = sasl_server_from_settings(s)
    assert sasl.mechanisms(tls_active=False) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"]
    assert "PLAIN" in sasl.mechanisms(tls_active=True)
    assert sasl.start("PLAIN", tls_active=False) is None
    sasl.close()


def test_tls_security_options_default_to_the_plain_ones(tmp_path):
    plan = plan_sasl(settings_for(tmp_path, "smtpd_sasl_security_options = noplaintext\n",
                                  smtpd_conf=""))
    assert plan.tls_security_options == plan.security_options == {"noplaintext"}


def test_mech_list_orders(tmp_path):
    plan = plan_sasl(settings_for(tmp_path, smtpd_conf="mech_list: login plain login\n"))
    assert plan.mechanisms == ["LOGIN", "PLAIN"]


def test_dovecot_from_settings(tmp_path, dovecot):
    fake, _ = dovecot()
    s = settings_for(tmp_path, f"smtpd_sasl_type = dovecot\nsmtpd_sasl_path = {fake.path}\n"
                               "smtpd_sasl_service = submission\n")
    sasl = sasl_server_from_settings(s)
    try:
        assert sasl.mechanisms(tls_active=False) == ["PLAIN", "LOGIN", "CRAM-MD5"]
        assert sasl.start("PLAIN", tls_active=False).step(b"\0alice\0wonderland") \
            == Success("alice")
        assert "service=submission" in [ln for ln in fake.lines if ln.startswith("AUTH")][0]
    finally:
        sasl.close()


def test_dovecot_relative_path_is_under_the_queue_directory(tmp_path):
    plan = plan_sasl(settings_for(tmp_path, "smtpd_sasl_type = dovecot\n"
                                            "smtpd_sasl_path = private/auth\n"))
    assert plan.dovecot_path == f"{tmp_path}/queue/private/auth"


def test_cyrus_server_is_a_sasl_server():
    server = CyrusSaslServer(["PLAIN"], password_verifier=Verifier(True), secret_verifier=None,
                             hostname="mx1.example.com")
    assert server.mechanisms(tls_active=False) == ["PLAIN"]
    assert server.start("CRAM-MD5", tls_active=False) is None
    assert server.start("plain", tls_active=False).step(b"\0u\0p") == Success("u")
    server.close()


# -- hato check ------------------------------------------------------------------

class Report:
    def __init__(self):
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, text):
        self.errors.append(text)

    def warn(self, text):
        self.warnings.append(text)


def test_check_sasl_reports_with_file_and_line(tmp_path):
    from hato.cli.check import check_sasl

    (tmp_path / "sasl").mkdir()
    (tmp_path / "sasl" / "smtpd.conf").write_text(
        "pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN CRAM-MD5\n"
        f"saslauthd_path: {tmp_path}/nothing/mux\n")
    (tmp_path / "sasl" / "other.conf").write_text("pwcheck_method: authdaemond\n")
    cfg = make_config(tmp_path, "smtpd_sasl_auth_enable = yes\n", master="""\
        smtp      inet  n       -       n       -       -       smtpd
        submission inet n       -       n       -       -       smtpd
          -o smtpd_sasl_path=other
        smtps     inet  n       -       n       -       -       smtpd
          -o smtpd_sasl_auth_enable=no
          -o smtpd_sasl_type=bogus
        """)
    report = Report()
    check_sasl(cfg, report)
    conf = f"{tmp_path}/sasl/smtpd.conf"
    assert report.errors == [
        f"{tmp_path}/sasl/other.conf, line 1: pwcheck_method authdaemond is not supported by "
        f"hato (Courier authdaemond)"]
    assert any(w.startswith(f"{conf}, line 2: CRAM-MD5 cannot work through saslauthd")
               for w in report.warnings)
    assert any(w.startswith(f"{conf}, line 3: saslauthd socket {tmp_path}/nothing/mux does "
                            f"not exist") for w in report.warnings)
    assert len(report.warnings) == len(set(report.warnings))


def test_check_sasl_bad_type_names_the_line(tmp_path):
    from hato.cli.check import check_sasl

    cfg = make_config(tmp_path, "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = gsasl\n",
                      master="smtp inet n - n - - smtpd\n")
    report = Report()
    check_sasl(cfg, report)
    # Once: the service inherits main.cf's value.
    assert report.errors == [f"{tmp_path}/main.cf, line 6: smtpd_sasl_type: unsupported SASL "
                             f"server implementation: gsasl; hato has cyrus and dovecot"]


def test_check_sasl_missing_smtpd_conf_and_disabled(tmp_path):
    from hato.cli.check import check_sasl

    report = Report()
    check_sasl(make_config(tmp_path), report)  # smtpd_sasl_auth_enable = no
    assert report.errors == report.warnings == []
    check_sasl(make_config(tmp_path, "smtpd_sasl_auth_enable = yes\n"), report)
    assert report.errors == []
    assert any("no smtpd.conf in" in w for w in report.warnings)
    assert any("sasldb.lmdb does not exist" in w for w in report.warnings)


def test_check_sasl_dovecot_socket_missing(tmp_path):
    from hato.cli.check import check_sasl

    report = Report()
    check_sasl(make_config(tmp_path, "smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n"
                                     "smtpd_sasl_path = private/auth\n"), report)
    assert report.errors == []
    assert report.warnings == [f"smtpd_sasl_path: Dovecot auth socket {tmp_path}/queue/private/"
                               f"auth does not exist (is Dovecot running?)"]

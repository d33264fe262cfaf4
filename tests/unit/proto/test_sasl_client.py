"""Client-side SASL mechanisms, each run against hato's own server side in
memory (hato.proto.sasl)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from hato.proto.md5state import HmacMd5State
from hato.proto.sasl import (
    Challenge,
    Failure,
    ScramKeys,
    Success,
    make_exchange,
    scram_keys_from_password,
)
from hato.proto.sasl_client import (
    CLIENT_MECHANISMS,
    CramMd5Client,
    LoginClient,
    PlainClient,
    SaslClientError,
    ScramClient,
    make_client,
)


class Verifier:
    def __init__(self, passwords: dict[str, str]):
        self.passwords = passwords

    def check_password(self, user: str, password: str) -> bool:
        return self.passwords.get(user) == password

    def cram_md5_secret(self, user: str) -> HmacMd5State | None:
        p = self.passwords.get(user)
        return None if p is None else HmacMd5State.from_key(p.encode())

    def scram_keys(self, user: str, mechanism: str) -> ScramKeys | None:
        p = self.passwords.get(user)
        if p is None:
            return None
        salt = hashlib.sha256(user.encode()).digest()[:16]
        return scram_keys_from_password(mechanism, p.encode(), salt, 4096)


USERS = Verifier({"alice": "s3cret", "bob@example.org": "pässwörd"})


def run(mechanism: str, user: str, password: str, *, use_initial: bool = True):
    """Drive client and server as smtpd and the smtp client would; return
    the server's last result and the client."""
    client = make_client(mechanism, user, password)
    server = make_exchange(mechanism, USERS, hostname="mx.example", now=1700000000)
    assert server is not None
    initial = client.initial_response() if use_initial else None
    result = server.step(initial)
    rounds = 0
    while isinstance(result, Challenge):
        rounds += 1
        assert rounds < 10
        # the wire: base64 both ways
        challenge = base64.b64decode(base64.b64encode(result.data))
        response = client.step(challenge)
        result = server.step(base64.b64decode(base64.b64encode(response)))
    if isinstance(result, Success) and result.data is not None:
        # RFC 4954: the server's final data in a last 334, answered empty.
        assert client.step(result.data) == b""
    return result, client


@pytest.mark.parametrize("mech", CLIENT_MECHANISMS)
@pytest.mark.parametrize("user,password", [("alice", "s3cret"), ("bob@example.org", "pässwörd")])
def test_each_mechanism_against_hato_server(mech, user, password):
    result, client = run(mech, user, password)
    assert isinstance(result, Success), result
    assert result.username == user
    assert client.complete


@pytest.mark.parametrize("mech", CLIENT_MECHANISMS)
def test_wrong_password_fails_at_server(mech):
    if mech.startswith("SCRAM"):
        client = make_client(mech, "alice", "wrong")
        server = make_exchange(mech, USERS, hostname="mx", now=0)
        first = server.step(client.initial_response())
        assert isinstance(first, Challenge)
        final = server.step(client.step(first.data))
        assert isinstance(final, Failure)
        return
    result, _ = run(mech, "alice", "wrong")
    assert isinstance(result, Failure)


def test_plain_without_initial_response():
    result, client = run("PLAIN", "alice", "s3cret", use_initial=False)
    assert isinstance(result, Success)


def test_plain_message_and_authzid():
    assert PlainClient("u", "p").initial_response() == b"\0u\0p"
    assert PlainClient("u", "p", authzid="z").initial_response() == b"z\0u\0p"
    c = PlainClient("u", "p")
    c.initial_response()
    with pytest.raises(SaslClientError):
        c.step(b"")
    with pytest.raises(SaslClientError):
        PlainClient("u", "p").step(b"unexpected")


def test_login_sequence():
    c = LoginClient("alice", "s3cret")
    assert c.initial_response() is None
    assert c.step(b"Username:") == b"alice"
    assert not c.complete
    assert c.step(b"Password:") == b"s3cret"
    assert c.complete
    with pytest.raises(SaslClientError):
        c.step(b"What?")


def test_cram_md5_rfc2195_example():
    # RFC 2195 section 2
    c = CramMd5Client("tim", "tanstaaftanstaaf")
    assert c.initial_response() is None
    out = c.step(b"<1896.697170952@postoffice.reston.mci.net>")
    assert out == b"tim b913a602c7eda7a495b4e6e7334d3890"
    with pytest.raises(SaslClientError):
        c.step(b"<again@x>")
    with pytest.raises(SaslClientError):
        CramMd5Client("tim", "x").step(b"")


def test_scram_rfc7677_example():
    # RFC 7677 section 3: user/pencil with the client nonce fixed.
    c = ScramClient("user", "pencil", "SCRAM-SHA-256", nonce="rOprNGfwEbeRWgbNEkqO")
    assert c.initial_response() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    server_first = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert c.step(server_first) == (
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert not c.complete
    assert c.step(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") == b""
    assert c.complete


def test_scram_bad_server_signature_raises():
    c = ScramClient("user", "pencil", "SCRAM-SHA-256", nonce="rOprNGfwEbeRWgbNEkqO")
    c.initial_response()
    c.step(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
           b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    with pytest.raises(SaslClientError, match="signature"):
        c.step(b"v=" + base64.b64encode(b"\0" * 32))
    assert not c.complete


def test_scram_server_error_and_bad_first():
    c = ScramClient("user", "pencil", nonce="abc")
    c.initial_response()
    with pytest.raises(SaslClientError):
        c.step(b"r=zzz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")  # nonce not ours
    c = ScramClient("user", "pencil", nonce="abc")
    c.initial_response()
    with pytest.raises(SaslClientError):
        c.step(b"garbage")
    c = ScramClient("user", "pencil", nonce="abc")
    c.initial_response()
    c.step(b"r=abcdef,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    with pytest.raises(SaslClientError, match="server error"):
        c.step(b"e=invalid-proof")


def test_scram_against_server_with_mismatched_keys_fails_mutual_auth():
    """A server that accepts anything but does not know the password cannot
    produce the right signature: the client refuses."""
    client = ScramClient("alice", "s3cret", "SCRAM-SHA-1")
    server = make_exchange("SCRAM-SHA-1", USERS, hostname="mx", now=0)
    first = server.step(client.initial_response())
    final = client.step(first.data)
    result = server.step(final)
    assert isinstance(result, Success)
    with pytest.raises(SaslClientError):
        client.step(b"v=" + base64.b64encode(b"x" * 20))


def test_make_client_unknown():
    with pytest.raises(ValueError):
        make_client("GSSAPI", "u", "p")
    assert make_client("scram-sha-1", "u", "p").name == "SCRAM-SHA-1"

"""Server-side SASL mechanisms: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/256."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
import scramp
from hypothesis import given
from hypothesis import strategies as st

from hato.proto import md5state
from hato.proto.md5state import HmacMd5State
from hato.proto.sasl import (
    MECHANISM_PROPERTIES,
    SERVER_MECHANISMS,
    AuthTempFail,
    Challenge,
    CramMd5,
    Failure,
    Login,
    Plain,
    Scram,
    ScramKeys,
    Success,
    allowed,
    allowed_properties,
    make_exchange,
    scram_keys_from_password,
)


class FakeVerifier:
    """Passwords in a dict; 'down' makes every call a temporary failure."""

    def __init__(self, passwords: dict[str, str], *, down: bool = False):
        self.passwords = passwords
        self.down = down
        self.asked: list[str] = []

    def _get(self, user: str) -> str | None:
        self.asked.append(user)
        if self.down:
            raise AuthTempFail("backend down")
        return self.passwords.get(user)

    def check_password(self, user: str, password: str) -> bool:
        stored = self._get(user)
        return stored is not None and hmac.compare_digest(stored.encode(), password.encode(
            "utf-8", "surrogateescape"))

    def cram_md5_secret(self, user: str) -> HmacMd5State | None:
        stored = self._get(user)
        return None if stored is None else HmacMd5State.from_key(stored.encode())

    def scram_keys(self, user: str, mechanism: str) -> ScramKeys | None:
        stored = self._get(user)
        if stored is None:
            return None
        return scram_keys_from_password(mechanism, stored.encode(), hashlib.sha256(user.encode()).digest()[:16],
                                        4096)


USERS = FakeVerifier({"alice": "s3cret", "bob@example.org": "pässwörd"})


def assert_malformed(result):
    assert isinstance(result, Failure) and result.reason.startswith("malformed"), result
    assert not result.temporary


# --------------------------------------------------------------------- MD5


@given(st.binary(max_size=300))
def test_md5_finish_matches_hashlib(data):
    assert md5state.finish(md5state._IV, data, 0) == hashlib.md5(data).digest()


@given(st.binary(max_size=150), st.binary(max_size=200))
def test_hmac_md5_state_matches_hmac(key, message):
    state = HmacMd5State.from_key(key)
    assert state.digest(message) == hmac.new(key, message, "md5").digest()
    again = HmacMd5State.from_bytes(state.to_bytes())
    assert again.hexdigest(message) == hmac.new(key, message, "md5").hexdigest()


def test_hmac_md5_state_rejects_bad_sizes():
    with pytest.raises(ValueError):
        HmacMd5State(b"x", b"y")
    with pytest.raises(ValueError):
        HmacMd5State.from_bytes(b"\0" * 31)
    with pytest.raises(ValueError):
        md5state.compress(md5state._IV, b"short")


# --------------------------------------------------------------------- PLAIN


def test_plain_initial_response():
    assert Plain(USERS).step(b"\0alice\0s3cret") == Success("alice")


def test_plain_without_initial_response():
    ex = Plain(USERS)
    assert ex.step(None) == Challenge(b"")
    assert ex.step(b"\0alice\0s3cret") == Success("alice")


def test_plain_utf8_and_realm_in_name():
    assert Plain(USERS).step("\0bob@example.org\0pässwörd".encode()) == \
        Success("bob@example.org")


def test_plain_wrong_password_and_unknown_user():
    r = Plain(USERS).step(b"\0alice\0wrong")
    assert isinstance(r, Failure) and not r.temporary and "wrong" not in r.reason
    assert isinstance(Plain(USERS).step(b"\0nobody\0s3cret"), Failure)


def test_plain_authzid():
    assert Plain(USERS).step(b"alice\0alice\0s3cret") == Success("alice")
    r = Plain(USERS).step(b"root\0alice\0s3cret")
    assert isinstance(r, Failure) and "not authorized" in r.reason
    # a different authzid never helps a wrong password
    r = Plain(USERS, authorize=lambda c, z: True).step(b"root\0alice\0nope")
    assert isinstance(r, Failure)
    ok = Plain(USERS, authorize=lambda c, z: (c, z) == ("alice", "root"))
    assert ok.step(b"root\0alice\0s3cret") == Success("root")


@pytest.mark.parametrize("data", [
    b"", b"alice", b"\0alice", b"\0alice\0s3cret\0", b"\0\0s3cret", b"\0alice\0",
    b"\0\xff\xfe\0s3cret", b"\xff\0alice\0s3cret",
])
def test_plain_malformed(data):
    assert_malformed(Plain(USERS).step(data))


def test_plain_temporary_failure():
    r = Plain(FakeVerifier({}, down=True)).step(b"\0alice\0s3cret")
    assert isinstance(r, Failure) and r.temporary


def test_plain_non_utf8_password_reaches_verifier_intact():
    v = FakeVerifier({})
    seen = []
    v.check_password = lambda user, pw: seen.append(pw.encode("utf-8", "surrogateescape"))
    Plain(v).step(b"\0alice\0caf\xe9")
    assert seen == [b"caf\xe9"]


def test_exchange_over_refuses_more():
    ex = Plain(USERS)
    assert ex.step(b"\0alice\0s3cret") == Success("alice")
    assert_malformed(ex.step(b"\0alice\0s3cret"))
    ex = Plain(USERS)
    ex.step(None)
    assert_malformed(ex.step(None))


# --------------------------------------------------------------------- LOGIN


def test_login_dialogue():
    ex = Login(USERS)
    assert ex.step(None) == Challenge(b"Username:")
    assert ex.step(b"alice") == Challenge(b"Password:")
    assert ex.step(b"s3cret") == Success("alice")


def test_login_initial_response_is_the_user_name():
    ex = Login(USERS)
    assert ex.step(b"alice") == Challenge(b"Password:")
    assert ex.step(b"s3cret") == Success("alice")


def test_login_wrong_password():
    ex = Login(USERS)
    ex.step(b"alice")
    r = ex.step(b"nope")
    assert isinstance(r, Failure) and not r.temporary


def test_login_malformed_and_temporary():
    assert_malformed(Login(USERS).step(b""))
    assert_malformed(Login(USERS).step(b"\xff"))
    ex = Login(USERS)
    ex.step(b"alice")
    assert_malformed(ex.step(b""))
    ex = Login(FakeVerifier({}, down=True))
    ex.step(b"alice")
    r = ex.step(b"pw")
    assert isinstance(r, Failure) and r.temporary


# --------------------------------------------------------------------- CRAM-MD5


def cram(verifier=USERS, **kw):
    kw.setdefault("hostname", "mx.example.org")
    kw.setdefault("now", 1700000000.5)
    kw.setdefault("random", 12345)
    return CramMd5(verifier, **kw)


def test_cram_md5_challenge_and_success():
    ex = cram()
    ch = ex.step(None)
    assert ch == Challenge(b"<12345.1700000000@mx.example.org>")
    digest = hmac.new(b"s3cret", ch.data, "md5").hexdigest()
    assert ex.step(f"alice {digest}".encode()) == Success("alice")


def test_cram_md5_uppercase_digest_and_realm_user():
    ex = cram()
    ch = ex.step(None)
    digest = hmac.new("pässwörd".encode(), ch.data, "md5").hexdigest().upper()
    assert ex.step(f"bob@example.org {digest}".encode()) == Success("bob@example.org")


def test_cram_md5_challenges_differ():
    assert cram(random=None).challenge != cram(random=None).challenge


def test_cram_md5_wrong_and_unknown():
    ex = cram()
    ch = ex.step(None)
    bad = hmac.new(b"wrong", ch.data, "md5").hexdigest()
    assert isinstance(ex.step(f"alice {bad}".encode()), Failure)
    ex = cram()
    ex.step(None)
    r = ex.step(f"nobody {bad}".encode())
    assert isinstance(r, Failure) and not r.temporary


@pytest.mark.parametrize("data", [
    b"alice", b" 0123456789abcdef0123456789abcdef", b"alice 0123",
    b"alice 0123456789abcdef0123456789abcdeg", b"\xff 0123456789abcdef0123456789abcdef",
    b"alice 0123456789abcdef0123456789abcdef0",
])
def test_cram_md5_malformed(data):
    ex = cram()
    ex.step(None)
    assert_malformed(ex.step(data))


def test_cram_md5_refuses_initial_response_and_temporary():
    assert_malformed(cram().step(b"alice 0123456789abcdef0123456789abcdef"))
    ex = cram(FakeVerifier({}, down=True))
    ex.step(None)
    r = ex.step(b"alice 0123456789abcdef0123456789abcdef")
    assert isinstance(r, Failure) and r.temporary


# --------------------------------------------------------------------- SCRAM


def run_scramp(mech, user, password, verifier=USERS, server=None):
    client = scramp.ScramClient([mech], user, password)
    ex = server or Scram(verifier, mech)
    first = ex.step(client.get_client_first().encode())
    if not isinstance(first, Challenge):
        return first, client
    client.set_server_first(first.data.decode())
    final = ex.step(client.get_client_final().encode())
    if isinstance(final, Success):
        client.set_server_final(final.data.decode())  # raises if the server lies
    return final, client


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_against_scramp_client(mech):
    r, _ = run_scramp(mech, "alice", "s3cret")
    assert r.username == "alice" and r.data.startswith(b"v=")
    r, _ = run_scramp(mech, "bob@example.org", "pässwörd")
    assert isinstance(r, Success)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scram_wrong_password_and_unknown_user(mech):
    r, _ = run_scramp(mech, "alice", "wrong")
    assert isinstance(r, Failure) and not r.temporary
    # an unknown user gets a server-first message all the same
    client = scramp.ScramClient([mech], "nobody", "x")
    ex = Scram(USERS, mech)
    client_first = client.get_client_first().encode()
    first = ex.step(client_first)
    assert isinstance(first, Challenge)
    again = Scram(USERS, mech).step(client_first)
    salt = lambda c: c.data.split(b",")[1]
    assert salt(first) == salt(again)  # stable: no enumeration by salt
    client.set_server_first(first.data.decode())
    assert isinstance(ex.step(client.get_client_final().encode()), Failure)


def test_scram_rfc7677_vector():
    keys = scram_keys_from_password("SCRAM-SHA-256", b"pencil",
                                    base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096)

    class V:
        def scram_keys(self, user, mech):
            return keys if user == "user" else None

    ex = Scram(V(), "SCRAM-SHA-256", nonce="%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
    first = ex.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first.data == (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                          b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    final = ex.step(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    assert final == Success("user", b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


def test_scram_rfc5802_vector():
    keys = scram_keys_from_password("SCRAM-SHA-1", b"pencil",
                                    base64.b64decode("QSXCR+Q6sek8bf92"), 4096)

    class V:
        def scram_keys(self, user, mech):
            return keys

    ex = Scram(V(), "SCRAM-SHA-1", nonce="3rfcNHYJY1ZVvWVs7j")
    ex.step(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")
    final = ex.step(b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,"
                    b"p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
    assert final == Success("user", b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")


def test_scram_no_initial_response_and_y_flag():
    ex = Scram(USERS, "SCRAM-SHA-256")
    assert ex.step(None) == Challenge(b"")
    r, _ = run_scramp("SCRAM-SHA-256", "alice", "s3cret", server=ex)
    assert isinstance(r, Success)
    # "y,," : the client could do channel binding but we offer no -PLUS
    keys = USERS.scram_keys("alice", "SCRAM-SHA-1")
    ex = Scram(USERS, "SCRAM-SHA-1", nonce="srv")
    first = ex.step(b"y,,n=alice,r=cli")
    assert first.data.startswith(b"r=clisrv,")
    without = "c=" + base64.b64encode(b"y,,").decode() + ",r=clisrv"
    auth = f"n=alice,r=cli,{first.data.decode()},{without}".encode()
    salted = hashlib.pbkdf2_hmac("sha1", b"s3cret", keys.salt, keys.iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    sig = hmac.digest(keys.stored_key, auth, "sha1")
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    final = ex.step(f"{without},p={base64.b64encode(proof).decode()}".encode())
    assert isinstance(final, Success)


def _scram_final(user, password, mech, gs2, authz_check):
    keys = USERS.scram_keys(user, mech)
    h = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech]
    ex = Scram(USERS, mech, nonce="srv", authorize=authz_check)
    bare = f"n={user},r=cli"
    first = ex.step(f"{gs2}{bare}".encode())
    without = f"c={base64.b64encode(gs2.encode()).decode()},r=clisrv"
    auth = f"{bare},{first.data.decode()},{without}".encode()
    salted = hashlib.pbkdf2_hmac(h, password.encode(), keys.salt, keys.iterations)
    client_key = hmac.digest(salted, b"Client Key", h)
    proof = bytes(a ^ b for a, b in zip(client_key, hmac.digest(keys.stored_key, auth, h)))
    return ex.step(f"{without},p={base64.b64encode(proof).decode()}".encode())


def test_scram_authzid_policy():
    r = _scram_final("alice", "s3cret", "SCRAM-SHA-256", "n,a=alice,", None)
    assert isinstance(r, Success) and r.username == "alice"
    r = _scram_final("alice", "wrong", "SCRAM-SHA-1", "n,,", None)
    assert isinstance(r, Failure) and not r.reason.startswith("malformed")
    # a different authzid is refused after the proof is checked
    r = _scram_final("alice", "s3cret", "SCRAM-SHA-256", "n,a=root,", None)
    assert isinstance(r, Failure) and "not authorized" in r.reason
    r = _scram_final("alice", "s3cret", "SCRAM-SHA-256", "n,a=root,", lambda c, z: True)
    assert isinstance(r, Success) and r.username == "root"


@pytest.mark.parametrize("data", [
    b"", b"n,,", b"x,,n=alice,r=abc", b"p=tls-unique,,n=alice,r=abc",
    b"n,,m=ext,n=alice,r=abc", b"n,,r=abc,n=alice", b"n,,n=,r=abc", b"n,,n=alice,r=",
    b"n,,n=al=2Xice,r=abc", b"n,b=alice,n=alice,r=abc", b"n,,n=alice,r=a\x7fc",
    b"n,,n=\xff,r=abc", b"n,a=,n=alice,r=abc",
])
def test_scram_malformed_client_first(data):
    assert_malformed(Scram(USERS, "SCRAM-SHA-256").step(data))


@pytest.mark.parametrize("data", [
    b"", b"c=biws,r=clisrv", b"r=clisrv,c=biws,p=AAAA", b"c=biws,r=other,p=AAAA",
    b"c=eSws,r=clisrv,p=AAAA", b"c=biws,r=clisrv,p=!!!", b"c=biws,r=clisrv,p=AAAA",
    b"c=biws,r=clisrv,p=\xff",
])
def test_scram_malformed_client_final(data):
    ex = Scram(USERS, "SCRAM-SHA-256", nonce="srv")
    assert isinstance(ex.step(b"n,,n=alice,r=cli"), Challenge)
    assert_malformed(ex.step(data))


def test_scram_saslname_escapes():
    seen = []
    v = FakeVerifier({"a,b=c": "pw"})
    orig = v.scram_keys
    v.scram_keys = lambda user, mech: (seen.append(user), orig(user, mech))[1]
    assert isinstance(Scram(v, "SCRAM-SHA-1").step(b"n,,n=a=2Cb=3Dc,r=x"), Challenge)
    assert seen == ["a,b=c"]


def test_scram_temporary_failure_and_bad_mechanism():
    r = Scram(FakeVerifier({}, down=True), "SCRAM-SHA-1").step(b"n,,n=alice,r=abc")
    assert isinstance(r, Failure) and r.temporary
    with pytest.raises(ValueError):
        Scram(USERS, "SCRAM-MD5")


# --------------------------------------------------------------------- catalogue


def test_make_exchange():
    for mech in SERVER_MECHANISMS:
        assert make_exchange(mech.lower(), USERS, hostname="h", now=0) is not None
    assert make_exchange("GSSAPI", USERS, hostname="h", now=0) is None
    assert isinstance(make_exchange("SCRAM-SHA-1", USERS, hostname="h", now=0), Scram)


def test_security_options():
    ours = list(SERVER_MECHANISMS)
    pick = lambda opts: [m for m in ours if allowed(m, opts)]
    assert pick(["noanonymous"]) == ours
    assert pick([]) == ours
    assert pick(["noanonymous", "noplaintext"]) == ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5"]
    assert pick(["noactive"]) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert pick(["nodictionary"]) == []
    assert pick(["mutual_auth"]) == ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    assert pick(["forward_secrecy"]) == []
    assert not allowed("ANONYMOUS", ["noanonymous"])
    assert allowed("ANONYMOUS", [""])
    assert not allowed("X-UNKNOWN", ["noplaintext"])
    assert allowed("EXTERNAL", ["nodictionary", "noplaintext"])
    with pytest.raises(ValueError):
        allowed("PLAIN", ["noplaintxt"])
    assert set(MECHANISM_PROPERTIES["PLAIN"]) >= {"plaintext"}


def test_security_options_over_dovecot_flags():
    assert allowed_properties(["plaintext"], ["noanonymous"])
    assert not allowed_properties(["plaintext"], ["noplaintext"])
    assert not allowed_properties(["anonymous"], ["noanonymous"])
    assert allowed_properties(["mutual-auth"], ["mutual_auth", "noplaintext"])

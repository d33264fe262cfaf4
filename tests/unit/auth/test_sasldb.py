"""hato's SASL user database: secrets per mechanism, never the password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stat
import threading

import pytest
import scramp

from hato.auth.backend import AuthTempFail, split_user
from hato.auth.sasldb import (
    ALL_MECHANISMS,
    DEFAULT_NAME,
    Sasldb,
    SasldbError,
    default_path,
    permission_warning,
)
from hato.proto.sasl import Challenge, CramMd5, Failure, Login, Plain, Scram, Success

PASSWORD = "correct horse battery staple"


@pytest.fixture
def db(tmp_path):
    d = Sasldb(str(tmp_path / "sasldb.lmdb"), writable=True, default_realm="example.org")
    yield d
    d.close()


def test_default_path_and_split_user():
    assert default_path("/etc/hato") == "/etc/hato/sasldb.lmdb"
    assert DEFAULT_NAME == "sasldb.lmdb"
    assert split_user("bob", "example.org") == ("bob", "example.org")
    assert split_user("bob@other.net", "example.org") == ("bob", "other.net")
    assert split_user("a@b@c", "x") == ("a", "b@c")


def test_set_check_list_delete(db):
    db.set_password("alice", "example.org", PASSWORD)
    db.set_password("bob", "other.net", "pw2", ["PLAIN", "SCRAM-SHA-256"])
    assert db.check_password("alice", PASSWORD)
    assert db.check_password("alice@example.org", PASSWORD)
    assert not db.check_password("alice", PASSWORD + "x")
    assert not db.check_password("alice@other.net", PASSWORD)
    assert db.check_password("bob@other.net", "pw2")
    assert not db.check_password("bob", "pw2")  # default realm is example.org
    assert not db.check_password("nobody", "pw")
    assert db.users() == [
        ("alice", "example.org", list(ALL_MECHANISMS)),
        ("bob", "other.net", ["PLAIN", "LOGIN", "SCRAM-SHA-256"]),
    ]
    assert db.cram_md5_secret("bob@other.net") is None
    assert db.scram_keys("bob@other.net", "SCRAM-SHA-1") is None
    assert db.delete("alice", "example.org")
    assert not db.delete("alice", "example.org")
    assert not db.check_password("alice", PASSWORD)
    assert [u for u, _, _ in db.users()] == ["bob"]


def test_new_password_replaces_every_secret(db):
    db.set_password("alice", "example.org", "old")
    db.set_password("alice", "example.org", "new", ["PLAIN"])
    assert db.check_password("alice", "new") and not db.check_password("alice", "old")
    assert db.users() == [("alice", "example.org", ["PLAIN", "LOGIN"])]


def test_no_plaintext_or_unsalted_secret_is_stored(db, tmp_path):
    no_cram = [m for m in ALL_MECHANISMS if m != "CRAM-MD5"]
    db.set_password("alice", "example.org", PASSWORD, no_cram)
    db.set_password("carol", "example.org", PASSWORD, no_cram)
    raw = (tmp_path / "sasldb.lmdb").read_bytes()
    pw = PASSWORD.encode()
    forbidden = [pw, pw.hex().encode(), base64.b64encode(pw)]
    for name in ("md5", "sha1", "sha256", "sha512"):
        digest = hashlib.new(name, pw).digest()
        forbidden += [digest, digest.hex().encode(), base64.b64encode(digest)]
    for name in ("sha1", "sha256"):  # unsalted SCRAM-style keys
        forbidden.append(base64.b64encode(hmac.digest(pw, b"Client Key", name)))
    for item in forbidden:
        assert item not in raw
    # the same password gives different secrets for two users (salted)
    a, c = db.get("alice", "example.org"), db.get("carol", "example.org")
    assert a["argon2id"].startswith("$argon2id$") and a["argon2id"] != c["argon2id"]
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        assert a[mech]["salt"] != c[mech]["salt"]
        assert a[mech]["stored_key"] != c[mech]["stored_key"]


def test_cram_md5_secret_is_the_hmac_state_not_the_password(db, tmp_path):
    db.set_password("alice", "example.org", PASSWORD)
    assert PASSWORD.encode() not in (tmp_path / "sasldb.lmdb").read_bytes()
    state = db.cram_md5_secret("alice")
    challenge = b"<1.2@mx>"
    assert state.digest(challenge) == hmac.new(PASSWORD.encode(), challenge, "md5").digest()


def test_mechanisms_end_to_end(db):
    db.set_password("alice", "example.org", PASSWORD)
    assert Plain(db).step(f"\0alice\0{PASSWORD}".encode()) == Success("alice")
    assert isinstance(Plain(db).step(b"\0alice\0nope"), Failure)
    ex = Login(db)
    ex.step(b"alice@example.org")
    assert ex.step(PASSWORD.encode()) == Success("alice@example.org")
    ex = CramMd5(db, hostname="mx", now=0)
    ch = ex.step(None)
    digest = hmac.new(PASSWORD.encode(), ch.data, "md5").hexdigest()
    assert ex.step(f"alice {digest}".encode()) == Success("alice")
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        client = scramp.ScramClient([mech], "alice", PASSWORD)
        ex = Scram(db, mech)
        first = ex.step(client.get_client_first().encode())
        assert isinstance(first, Challenge)
        client.set_server_first(first.data.decode())
        final = ex.step(client.get_client_final().encode())
        assert isinstance(final, Success)
        client.set_server_final(final.data.decode())


def test_scram_password_is_saslprepped(db):
    # U+00AD (soft hyphen) is mapped to nothing by SASLprep, as clients do
    db.set_password("alice", "example.org", "pass\u00adword", ["SCRAM-SHA-256"])
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", "pass\u00adword")
    ex = Scram(db, "SCRAM-SHA-256")
    client.set_server_first(ex.step(client.get_client_first().encode()).data.decode())
    assert isinstance(ex.step(client.get_client_final().encode()), Success)


def test_non_utf8_password_bytes(db):
    pw = b"caf\xe9".decode("utf-8", "surrogateescape")
    db.set_password("alice", "example.org", pw)
    assert Plain(db).step(b"\0alice\0caf\xe9") == Success("alice")
    assert isinstance(Plain(db).step("\0alice\0café".encode()), Failure)


def test_created_0640_regardless_of_umask(tmp_path):
    old = os.umask(0)
    try:
        d = Sasldb(str(tmp_path / "db"), writable=True)
        d.set_password("u", "r", "pw", ["PLAIN"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "db").st_mode) == 0o640
    assert permission_warning(str(tmp_path / "db")) is None
    assert sorted(os.listdir(tmp_path)) == ["db"]  # no lock or temporary files left


def test_rewrite_keeps_mode_and_world_readable_warns(tmp_path, caplog):
    path = str(tmp_path / "db")
    d = Sasldb(path, writable=True)
    d.set_password("u", "r", "pw", ["PLAIN"])
    os.chmod(path, 0o644)
    d.set_password("v", "r", "pw", ["PLAIN"])
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    warning = permission_warning(path)
    assert warning and path in warning and "chmod o-rwx" in warning
    with caplog.at_level("WARNING", logger="hato.auth.sasldb"):
        reader = Sasldb(path)
    assert reader.warning == warning
    assert any("accessible by others" in r.getMessage() for r in caplog.records)
    assert permission_warning(str(tmp_path / "missing")) is None


def test_reader_sees_updates_and_read_only_refuses_writes(tmp_path):
    path = str(tmp_path / "db")
    writer = Sasldb(path, writable=True, default_realm="r")
    reader = Sasldb(path, default_realm="r")
    assert not reader.check_password("u", "pw")  # missing file: no users
    assert reader.users() == []
    writer.set_password("u", "r", "pw", ["PLAIN"])
    assert reader.check_password("u", "pw")
    writer.set_password("u", "r", "pw2", ["PLAIN"])
    assert reader.check_password("u", "pw2") and not reader.check_password("u", "pw")
    writer.delete("u", "r")
    assert not reader.check_password("u", "pw2")
    with pytest.raises(SasldbError, match="read-only"):
        reader.set_password("x", "r", "pw")


def test_concurrent_writers_lose_nothing(tmp_path):
    path = str(tmp_path / "db")
    errors = []

    def add(n):
        try:
            Sasldb(path, writable=True).set_password(f"user{n}", "r", "pw", ["CRAM-MD5"])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(u for u, _, _ in Sasldb(path).users()) == sorted(f"user{n}" for n in range(8))


def test_corrupt_database_is_a_temporary_failure(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(b"this is not an lmdb file" * 300)
    d = Sasldb(str(path))
    with pytest.raises(AuthTempFail):
        d.check_password("u", "pw")
    r = Plain(d).step(b"\0u\0pw")
    assert isinstance(r, Failure) and r.temporary
    with pytest.raises(SasldbError):
        d.users()
    with pytest.raises(SasldbError):
        Sasldb(str(path), writable=True).set_password("u", "r", "pw")


def test_unwritable_location(tmp_path):
    d = Sasldb(str(tmp_path / "no" / "such" / "dir" / "db"), writable=True)
    with pytest.raises(SasldbError, match="cannot create"):
        d.set_password("u", "r", "pw")


def test_bad_arguments(db):
    with pytest.raises(ValueError):
        db.set_password("u", "r", "")
    with pytest.raises(ValueError):
        db.set_password("", "r", "pw")
    with pytest.raises(ValueError):
        db.set_password("u", "r", "pw", ["GSSAPI"])
    with pytest.raises(ValueError):
        db.set_password("u\0x", "r", "pw")
    assert not db.check_password("u\0x", "pw")

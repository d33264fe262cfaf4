"""The password checks of hato saslauthd: crypt(3) through ctypes, shadow,
getpwent, sasldb, rimap (against a tiny IMAP server on loopback)."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from hato.auth.backend import AuthTempFail
from hato.auth.pwcheck import (
    MechanismError,
    Rimap,
    SasldbMech,
    Shadow,
    available_mechanisms,
    get_crypt,
    make_mechanism,
)
from hato.auth.sasldb import Sasldb
from tests.ports import close_listener

SETTINGS = {
    "yescrypt": b"$y$j9T$F5Jx5fExrKuPp53xLKQ..1",
    "sha512-crypt": b"$6$saltsaltsalt",
    "sha256-crypt": b"$5$saltsaltsalt",
    "md5-crypt": b"$1$saltsalt",
}


@pytest.mark.parametrize("method", sorted(SETTINGS))
def test_crypt_methods(method):
    crypt = get_crypt()
    stored = crypt.crypt(b"good pw", SETTINGS[method])
    assert stored is not None and stored.startswith(SETTINGS[method][:3])
    assert crypt.verify(b"good pw", stored)
    assert not crypt.verify(b"good pw ", stored)
    assert not crypt.verify(b"", stored)


def test_crypt_known_vector():
    # from glibc's sha512-crypt test vectors
    stored = (b"$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJu"
              b"esI68u4OTLiBFdcbYEdFCoEOfaS35inz1")
    assert get_crypt().verify(b"Hello world!", stored)


def test_crypt_refuses_locked_and_bad():
    crypt = get_crypt()
    stored = crypt.crypt(b"pw", SETTINGS["sha512-crypt"])
    assert not crypt.verify(b"pw", b"!" + stored)
    assert not crypt.verify(b"pw", b"*")
    assert not crypt.verify(b"pw", b"")
    assert not crypt.verify(b"pw\0x", stored)
    assert crypt.crypt(b"pw", b"$unknown$x") is None


def _shadow(tmp_path, lines):
    path = tmp_path / "shadow"
    path.write_text("".join(line + "\n" for line in lines))
    return Shadow(str(path))


def test_shadow(tmp_path):
    crypt = get_crypt()
    good = crypt.crypt(b"good pw", SETTINGS["yescrypt"]).decode()
    md5 = crypt.crypt("pässword".encode(), SETTINGS["md5-crypt"]).decode()
    today = int(time.time() // 86400)
    mech = _shadow(tmp_path, [
        "root:*:19000:0:99999:7:::",
        f"alice:{good}:19000:0:99999:7:::",
        f"locked:!{good}:19000:0:99999:7:::",
        f"old:{good}:19000:0:99999:7::{today - 2}:",
        f"later:{good}:19000:0:99999:7::{today + 30}:",
        f"uni:{md5}:19000::::::",
    ])
    assert mech("alice", "good pw", "smtp", "").ok
    assert mech("alice", "bad", "smtp", "").reason == "Incorrect password"
    assert not mech("alic", "good pw", "smtp", "").ok
    assert not mech("locked", "good pw", "smtp", "").ok
    assert mech("old", "good pw", "smtp", "").reason == "Account expired"
    assert mech("later", "good pw", "smtp", "").ok
    assert mech("uni", "pässword", "smtp", "").ok
    assert not mech("root", "", "smtp", "").ok
    assert not mech("alice:x", "good pw", "smtp", "").ok


def test_shadow_unreadable_is_temporary(tmp_path):
    with pytest.raises(AuthTempFail):
        Shadow(str(tmp_path / "missing"))("alice", "x", "smtp", "")


def test_sasldb_mechanism(tmp_path):
    path = str(tmp_path / "sasldb.lmdb")
    db = Sasldb(path, writable=True, default_realm="mx.example")
    db.set_password("carol", "hato.test", "sasl db pw", ["PLAIN"])
    db.set_password("dave", "mx.example", "dave pw", ["PLAIN"])
    mech = SasldbMech(path, default_realm="mx.example")
    assert mech("carol", "sasl db pw", "smtp", "hato.test").ok
    assert mech("carol@hato.test", "sasl db pw", "smtp", "").ok
    assert not mech("carol", "sasl db pw", "smtp", "elsewhere.test").ok
    assert not mech("carol", "wrong", "smtp", "hato.test").ok
    assert mech("dave", "dave pw", "smtp", "").ok
    assert isinstance(make_mechanism("sasldb", path), SasldbMech)


class FakeImap(threading.Thread):
    """Answers LOGIN alice "wonder land" with OK, anything else with NO."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]
        self.logins: list[str] = []

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                f.write(b"* OK fake IMAP ready\r\n")
                f.flush()
                for line in f:
                    tag, _, rest = line.decode().rstrip("\r\n").partition(" ")
                    cmd = rest.split(" ", 1)[0].upper()
                    if cmd == "CAPABILITY":
                        f.write(b"* CAPABILITY IMAP4rev1\r\n" + f"{tag} OK done\r\n".encode())
                    elif cmd == "LOGIN":
                        self.logins.append(rest)
                        ok = rest == 'LOGIN alice "wonder land"'
                        f.write(f"{tag} {'OK' if ok else 'NO'} login\r\n".encode())
                    elif cmd == "LOGOUT":
                        f.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                        f.flush()
                        break
                    else:
                        f.write(f"{tag} BAD what\r\n".encode())
                    f.flush()

    def close(self):
        close_listener(self.sock)


def test_rimap():
    server = FakeImap()
    server.start()
    try:
        mech = Rimap(f"127.0.0.1:{server.port}", timeout=10)
        assert mech("alice", "wonder land", "imap", "").ok
        assert not mech("alice", "nope", "imap", "").ok
        assert not mech("alice", "wonder land", "imap", "example.org").ok
        assert server.logins[-1] == 'LOGIN alice@example.org "wonder land"'
    finally:
        server.close()
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with pytest.raises(AuthTempFail):
            Rimap(f"127.0.0.1:{port}", timeout=2)("alice", "x", "imap", "")


def test_rimap_needs_a_host():
    with pytest.raises(MechanismError):
        Rimap(None)
    assert (Rimap("[::1]:993").host, Rimap("[::1]:993").port) == ("::1", 993)
    assert Rimap("imap.example").port == 143


def test_make_mechanism_unknown():
    with pytest.raises(MechanismError):
        make_mechanism("kerberos5")
    assert {"shadow", "sasldb", "getpwent", "rimap"} <= set(available_mechanisms())

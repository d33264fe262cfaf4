"""hato saslpasswd / sasldblistusers (saslpasswd2 / sasldblistusers2)."""

from __future__ import annotations

import getpass
import io
import os
import socket
import stat
import subprocess
import sys

import argon2
import pytest

from hato.auth.sasldb import Sasldb
from tests.conftest import hato_env
from tests.hatorun import hato_inprocess


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch):
    from hato.auth import sasldb

    monkeypatch.setattr(sasldb, "PASSWORD_HASHER",
                        argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture
def stdin(monkeypatch):
    def feed(data: bytes) -> None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    return feed


def mechs(path, user, realm):
    for u, r, m in Sasldb(str(path)).users():
        if (u, r) == (user, realm):
            return m
    return None


def test_create_with_pipe_and_list(tmp_path, stdin):
    db = tmp_path / "sasldb.lmdb"
    stdin(b"s3cret\nignored second line\n")
    r = hato_inprocess("saslpasswd", "-f", str(db), "-p", "-c", "-u", "example.org", "alice")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o640
    d = Sasldb(str(db), default_realm="example.org")
    assert d.check_password("alice", "s3cret")
    assert not d.check_password("alice", "ignored second line")
    stdin(b"pw2\n")
    assert hato_inprocess("saslpasswd", "-f", str(db), "-p", "-c", "bob@other.net").returncode == 0
    r = hato_inprocess("sasldblistusers", "-f", str(db))
    assert r.returncode == 0
    assert r.stdout == "alice@example.org: userPassword\nbob@other.net: userPassword\n"
    # the database as a positional argument, as sasldblistusers2 allows
    assert hato_inprocess("sasldblistusers", str(db)).stdout == r.stdout


def test_user_at_realm_wins_over_u_and_default_realm_is_hostname(tmp_path, stdin):
    db = tmp_path / "db"
    stdin(b"pw\n")
    hato_inprocess("saslpasswd", "-f", str(db), "-p", "-u", "ignored.net", "gina@ex.net")
    stdin(b"pw\n")
    hato_inprocess("saslpasswd", "-f", str(db), "-p", "carl")
    assert [(u, r) for u, r, _ in Sasldb(str(db)).users()] == sorted(
        [("gina", "ex.net"), ("carl", socket.gethostname())], key=lambda t: (t[1], t[0]))


def test_n_leaves_out_the_cram_md5_secret(tmp_path, stdin):
    db = tmp_path / "db"
    stdin(b"pw\n")
    assert hato_inprocess("saslpasswd", "-f", str(db), "-p", "-c", "-n", "-u", "r",
                          "u").returncode == 0
    assert mechs(db, "u", "r") == ["PLAIN", "LOGIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]
    stdin(b"pw\n")
    hato_inprocess("saslpasswd", "-f", str(db), "-p", "-u", "r", "u")
    assert "CRAM-MD5" in mechs(db, "u", "r")


def test_delete(tmp_path, stdin):
    db = tmp_path / "db"
    stdin(b"pw\n")
    hato_inprocess("saslpasswd", "-f", str(db), "-p", "-c", "-u", "r", "u")
    r = hato_inprocess("saslpasswd", "-f", str(db), "-d", "-u", "r", "u")
    assert r.returncode == 0 and mechs(db, "u", "r") is None
    # deleting a user that is not there is quiet, as saslpasswd2 is
    r = hato_inprocess("saslpasswd", "-f", str(db), "-d", "-u", "r", "u")
    assert r.returncode == 0 and r.stderr == ""
    assert hato_inprocess("sasldblistusers", "-f", str(db)).stdout == ""


def test_empty_password_and_usage_errors(tmp_path, stdin):
    db = tmp_path / "db"
    stdin(b"\n")
    r = hato_inprocess("saslpasswd", "-f", str(db), "-p", "-c", "u")
    assert r.returncode == 7 and "invalid parameter supplied" in r.stderr
    stdin(b"")
    assert hato_inprocess("saslpasswd", "-f", str(db), "-p", "-c", "u").returncode == 7
    for argv in (["-f", str(db)], ["-f", str(db), "a", "b"], ["-c", "-d", "u"], ["-x", "u"]):
        r = hato_inprocess("saslpasswd", *argv)
        assert r.returncode == 1 and "usage: saslpasswd" in r.stderr, argv
    r = hato_inprocess("sasldblistusers", "-f", str(db), "extra")
    assert r.returncode == 1 and "usage: sasldblistusers" in r.stderr
    assert not db.exists()


def test_version():
    r = hato_inprocess("saslpasswd", "-v")
    assert r.returncode == 0 and "hato" in r.stdout
    assert hato_inprocess("sasldblistusers", "-v").returncode == 0


def test_prompts_twice(tmp_path, monkeypatch):
    db = tmp_path / "db"
    prompts = []
    answers = iter(["s3cret", "s3cret", "one", "two"])

    def fake_getpass(prompt="Password: ", stream=None):
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    r = hato_inprocess("saslpasswd", "-f", str(db), "-c", "-u", "r", "u")
    assert r.returncode == 0, r.stderr
    assert prompts == ["Password: ", "Again (for verification): "]
    assert Sasldb(str(db), default_realm="r").check_password("u", "s3cret")
    r = hato_inprocess("saslpasswd", "-f", str(db), "-c", "-u", "r", "u")
    assert r.returncode == 7 and "don't match" in r.stderr
    assert Sasldb(str(db), default_realm="r").check_password("u", "s3cret")


def test_default_path_follows_mail_config(tmp_path, stdin):
    stdin(b"pw\n")
    r = hato_inprocess("saslpasswd", "-p", "-c", "-u", "r", "u",
                       env={"MAIL_CONFIG": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sasldb.lmdb").exists()
    r = hato_inprocess("sasldblistusers", env={"MAIL_CONFIG": str(tmp_path)})
    assert r.stdout == "u@r: userPassword\n"


def test_a_appname_reads_sasldb_path(tmp_path, stdin):
    target = tmp_path / "elsewhere.lmdb"
    (tmp_path / "sasl").mkdir()
    (tmp_path / "sasl" / "smtpd.conf").write_text(
        f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {target}\n")
    stdin(b"pw\n")
    r = hato_inprocess("saslpasswd", "-a", "smtpd", "-p", "-c", "-u", "r", "u",
                       env={"MAIL_CONFIG": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert target.exists() and not (tmp_path / "sasldb.lmdb").exists()


def test_missing_or_foreign_database(tmp_path):
    r = hato_inprocess("sasldblistusers", "-f", str(tmp_path / "none"))
    assert r.returncode == 1 and "sasldblistusers: fatal:" in r.stderr
    foreign = tmp_path / "sasldb2"
    foreign.write_bytes(b"\0" * 8192)
    r = hato_inprocess("sasldblistusers", "-f", str(foreign))
    assert r.returncode == 1 and "not a hato sasldb" in r.stderr


def test_world_readable_warns(tmp_path, stdin):
    db = tmp_path / "db"
    stdin(b"pw\n")
    hato_inprocess("saslpasswd", "-f", str(db), "-p", "-u", "r", "u")
    os.chmod(db, 0o644)
    r = hato_inprocess("sasldblistusers", "-f", str(db))
    assert r.returncode == 0 and "sasldblistusers: warning:" in r.stderr


def test_argv0_names(tmp_path):
    db = tmp_path / "db"
    code = ("import sys; from hato.cli.main import main; "
            "sys.exit(main([sys.argv[1], '-f', sys.argv[2], '-p', '-c', '-u', 'r', 'u']))")
    r = subprocess.run([sys.executable, "-c", code, "/usr/sbin/saslpasswd2", str(db)],
                       input=b"pw\n", capture_output=True, env=hato_env())
    assert r.returncode == 0, r.stderr
    code = "import sys; from hato.cli.main import main; sys.exit(main(sys.argv[1:]))"
    r = subprocess.run([sys.executable, "-c", code, "sasldblistusers2", "-f", str(db)],
                       capture_output=True, text=True, env=hato_env())
    assert r.returncode == 0 and r.stdout == "u@r: userPassword\n"
    r = subprocess.run([sys.executable, "-c", code, "saslpasswd2", "-f", str(db)],
                       capture_output=True, text=True, env=hato_env())
    assert r.returncode == 1 and "usage: saslpasswd2" in r.stderr

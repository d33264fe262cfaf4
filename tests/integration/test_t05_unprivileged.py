"""t-05: an instance started by an ordinary user runs entirely as that user;
one started by root refuses to run when mail_owner does not exist; reload
keeps the mail system running with the new configuration."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import pytest

from .instance import free_port, hato_command, hato_env

pytestmark = pytest.mark.integration

USER = "hatot05"


@pytest.fixture
def ordinary_user():
    if os.geteuid() != 0:
        pytest.fail("this test creates a system user and must run as root")
    if subprocess.run(["getent", "passwd", USER], capture_output=True).returncode:
        subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/bin/sh", USER],
                       check=True)
    yield USER
    subprocess.run(["userdel", USER], capture_output=True)


def as_user(user: str, *args: str, input: bytes | None = None):
    return subprocess.run(["runuser", "-u", user, "--", *hato_command(), *args],
                          capture_output=True, input=input, env=hato_env(), timeout=120,
                          cwd="/")


def test_instance_of_an_ordinary_user(ordinary_user):
    root = tempfile.mkdtemp(prefix="hato-user-", dir="/tmp")
    os.chmod(root, 0o755)
    shutil.chown(root, ordinary_user)
    d = os.path.join(root, "inst")
    try:
        r = as_user(ordinary_user, "init", "-p", str(free_port()), d)
        assert r.returncode == 0, r.stderr
        r = as_user(ordinary_user, "-c", d, "start")
        assert r.returncode == 0, r.stderr
        r = as_user(ordinary_user, "-c", d, "sendmail", "-f", "demo@hato.test",
                    "demo@hato.test", input=b"Subject: mine\n\nx\n")
        assert r.returncode == 0, r.stderr
        new = os.path.join(d, "mail", "hato.test", "demo", "new")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (os.path.isdir(new) and os.listdir(new)):
            time.sleep(0.1)
        files = os.listdir(new)
        assert len(files) == 1
        uid = int(subprocess.run(["id", "-u", ordinary_user], capture_output=True,
                                 text=True).stdout)
        assert os.stat(os.path.join(new, files[0])).st_uid == uid
        # Every process of the instance runs as the user.
        pid = int(open(os.path.join(d, "queue", "pid", "master.pid")).read())
        assert os.stat(f"/proc/{pid}").st_uid == uid
    finally:
        as_user(ordinary_user, "-c", d, "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_root_refuses_a_missing_mail_owner(instance):
    if os.geteuid() != 0:
        pytest.fail("this test must run as root")
    instance.postconf("mail_owner = nosuchhatouser")
    r = instance.cmd("start")
    assert r.returncode != 0
    assert b"mail_owner = nosuchhatouser: unknown user" in r.stderr


def test_reload_applies_new_configuration(instance):
    inst = instance
    inst.start()
    pid = int((inst.root / "queue" / "pid" / "master.pid").read_text())
    inst.postconf("virtual_mailbox_maps = texthash:" + str(inst.root / "vmailbox2"))
    (inst.root / "vmailbox2").write_text("other@hato.test hato.test/other/\n")
    assert inst.cmd("reload").returncode == 0
    inst.wait_log("reload -- version hato")
    r = inst.sendmail("-f", "demo@hato.test", "other@hato.test", message=b"Subject: r\n\nx\n")
    assert r.returncode == 0
    inst.wait_log("to=<other@hato.test>, relay=virtual")
    assert int((inst.root / "queue" / "pid" / "master.pid").read_text()) == pid

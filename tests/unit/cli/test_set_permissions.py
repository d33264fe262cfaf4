"""``hato check`` names unsafe owners and modes in postfix-script's words,
and ``hato set-permissions`` repairs them (hato.master.layout)."""

from __future__ import annotations

import os
import pwd
import grp

import pytest

from tests.hatorun import hato_inprocess

# Accounts every Debian system has: the instance's mail_owner and setgid_group.
OWNER, SETGID = "daemon", "mail"

#: the warnings hato.master.layout speaks, as postfix-script's
WORDS = ("not owned by", "group or other writable:", "wrong mode", "damaged message:")


@pytest.fixture
def as_root():
    if os.geteuid() != 0:
        if os.environ.get("HATO_REQUIRE_TOOLS"):  # tools/run-tests: CI runs as root
            pytest.fail("these tests change owners and must run as root")
        pytest.skip("needs root")


def instance(tmp_path) -> str:
    d = str(tmp_path / "inst")
    r = hato_inprocess("init", "-u", OWNER, "-g", SETGID, d)
    assert r.returncode == 0, r.stderr
    r = hato_inprocess("-c", d, "set-permissions")
    assert r.returncode == 0, r.stderr
    return d


def permission_warnings(d: str) -> list[str]:
    r = hato_inprocess("-c", d, "check")
    assert r.returncode == 0, r.stderr  # warnings, not errors
    return [line.split("warning: ", 1)[1] for line in r.stderr.splitlines()
            if "warning: " in line and any(w in line for w in WORDS)]


def test_a_fresh_instance_is_clean(tmp_path, as_root):
    d = instance(tmp_path)
    assert permission_warnings(d) == []
    q = os.path.join(d, "queue")
    owner, setgid = pwd.getpwnam(OWNER), grp.getgrnam(SETGID)
    modes = {name: (os.stat(os.path.join(q, name)).st_mode & 0o7777,
                    os.stat(os.path.join(q, name)).st_uid,
                    os.stat(os.path.join(q, name)).st_gid)
             for name in ("maildrop", "public", "incoming", "pid")}
    assert modes["maildrop"] == (0o1733, owner.pw_uid, setgid.gr_gid)
    assert modes["public"] == (0o711, owner.pw_uid, setgid.gr_gid)
    assert modes["incoming"] == (0o700, owner.pw_uid, owner.pw_gid)
    assert modes["pid"][:2] == (0o755, 0)
    assert os.stat(q).st_uid == 0
    assert os.stat(os.path.join(d, "data")).st_uid == owner.pw_uid


def test_check_names_each_unsafe_path_and_set_permissions_fixes_it(tmp_path, as_root):
    d = instance(tmp_path)
    q = os.path.join(d, "queue")
    owner = pwd.getpwnam(OWNER)
    j = os.path.join
    # break them on purpose
    os.chmod(j(d, "main.cf"), 0o664)
    os.chown(j(d, "master.cf"), owner.pw_uid, -1)
    os.chown(q, owner.pw_uid, -1)
    os.chmod(j(q, "pid"), 0o777)
    os.chmod(j(q, "incoming"), 0o755)
    os.chown(j(q, "deferred"), 0, -1)
    os.chown(j(d, "data"), 0, -1)
    os.chown(j(q, "maildrop"), 0, -1)
    os.chown(j(q, "public"), -1, 0)
    os.makedirs(j(q, "active", "A"), exist_ok=True)  # made by root: owned by root
    with open(j(q, "active", "A", "ABC123"), "w") as f:
        f.write("x")
    with open(j(q, "corrupt", "DEF456"), "w") as f:
        f.write("x")
    os.chown(j(q, "corrupt", "DEF456"), owner.pw_uid, owner.pw_gid)
    expected = [
        f"group or other writable: {j(d, 'main.cf')}",
        f"not owned by root: {j(d, 'master.cf')}",
        f"not owned by root: {q}",
        f"group or other writable: {j(q, 'pid')}",
        f"wrong mode 0755 (expected 0700): {j(q, 'incoming')}",
        f"not owned by {OWNER}: {j(q, 'deferred')}",
        f"not owned by {OWNER}: {j(d, 'data')}",
        f"not owned by {OWNER}: {j(q, 'maildrop')}",
        f"not owned by group {SETGID}: {j(q, 'public')}",
        f"not owned by {OWNER}: {j(q, 'active', 'A')}",
        f"not owned by {OWNER}: {j(q, 'active', 'A', 'ABC123')}",
        f"damaged message: {j(q, 'corrupt', 'DEF456')}",
    ]
    found = permission_warnings(d)
    for line in expected:
        assert line in found, (line, found)
    assert len(found) == len(expected) + 1, found  # pid/ is also "wrong mode 0777"
    r = hato_inprocess("-c", d, "set-permissions")
    assert r.returncode == 0, r.stderr
    # only the damaged message remains: set-permissions never touches mail
    assert permission_warnings(d) == [f"damaged message: {j(q, 'corrupt', 'DEF456')}"]
    assert os.stat(j(d, "main.cf")).st_mode & 0o777 == 0o644
    assert os.stat(j(q, "active", "A", "ABC123")).st_uid == owner.pw_uid
    with open(j(q, "active", "A", "ABC123")) as f:
        assert f.read() == "x"  # and the message stayed where it was


def test_config_files_keep_their_group(tmp_path, as_root):
    """A key or sasldb may be readable through a group (root:sasl 0640):
    set-permissions makes it root's again without taking the group away."""
    d = instance(tmp_path)
    key = os.path.join(d, "smtpd.key")
    with open(key, "w") as f:
        f.write("key")
    setgid = grp.getgrnam(SETGID)
    os.chown(key, pwd.getpwnam(OWNER).pw_uid, setgid.gr_gid)
    os.chmod(key, 0o660)
    assert set(permission_warnings(d)) == {f"not owned by root: {key}",
                                           f"group or other writable: {key}"}
    assert hato_inprocess("-c", d, "set-permissions").returncode == 0
    st = os.stat(key)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, setgid.gr_gid, 0o640)
    assert permission_warnings(d) == []


def test_set_permissions_takes_only_the_plain_form(tmp_path, as_root):
    d = instance(tmp_path)
    r = hato_inprocess("-c", d, "set-permissions", "upgrade-configuration")
    assert r.returncode == 1
    assert "usage: hato [-c config_dir] set-permissions" in r.stderr
    assert "'upgrade-configuration' is not supported" in r.stderr


def test_an_ordinary_user_s_instance(tmp_path, monkeypatch):
    """Run by another user than root, the instance is that user's: hato
    check looks only at main.cf and master.cf, set-permissions only at modes."""
    d = str(tmp_path / "inst")
    assert hato_inprocess("init", d).returncode == 0
    monkeypatch.setattr(os, "geteuid", lambda: 4242)  # as the layout code sees it
    main_cf = os.path.join(d, "main.cf")
    os.chmod(main_cf, 0o646)
    assert permission_warnings(d) == [f"group or other writable: {main_cf}"]
    assert hato_inprocess("-c", d, "set-permissions").returncode == 0
    assert os.stat(main_cf).st_mode & 0o777 == 0o644
    assert permission_warnings(d) == []
    assert os.stat(os.path.join(d, "queue", "maildrop")).st_mode & 0o7777 == 0o700

"""Maildir delivery, read back with Python's mailbox.Maildir."""

from __future__ import annotations

import errno
import mailbox
import os
import re
import stat
import threading
import time

import pytest

from hato.delivery import maildir as maildir_mod
from hato.delivery.dsn import DeliveryError
from hato.delivery.maildir import deliver_maildir, maildir_hostname
from hato.delivery.mbox import envelope_headers

from .conftest import AS_ROOT, FAKE_UID, expected_owner

MESSAGE = b"From: a@example.com\nTo: b@example.org\nSubject: hello\n\nline one\nFrom here\n.\n"
NAME = re.compile(r"^(\d+)\.M(\d+)P(\d+)Q(\d+)\.([^,/:]+),S=(\d+)$")


def chunks(data: bytes, size: int = 7):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def headers() -> list[bytes]:
    return envelope_headers(sender="a@example.com", original_recipient="B@example.org",
                            delivered_to="b@example.org")


def test_deliver_and_read_back(user_dir, recipient_ids):
    uid, gid = recipient_ids
    md = user_dir / "Maildir"
    name = deliver_maildir(md, chunks(MESSAGE), prepend_headers=headers(), uid=uid, gid=gid,
                           hostname="mx.example.com")
    box = mailbox.Maildir(md, factory=None, create=False)
    keys = box.keys()
    assert len(keys) == 1
    msg = box[keys[0]]
    assert msg["Return-Path"] == "<a@example.com>"
    assert msg["X-Original-To"] == "B@example.org"
    assert msg["Delivered-To"] == "b@example.org"
    assert msg["Subject"] == "hello"
    # The body is copied untouched: no From_ quoting in a Maildir.
    assert msg.get_payload() == "line one\nFrom here\n.\n"
    raw = (md / "new" / name).read_bytes()
    assert raw == b"".join(headers()) + MESSAGE
    m = NAME.match(name)
    assert m, name
    assert int(m.group(6)) == len(raw) == (md / "new" / name).stat().st_size
    assert m.group(3) == str(os.getpid())
    assert m.group(5) == "mx.example.com"
    # Postfix's order of the prepended lines.
    assert raw.startswith(b"Return-Path: <a@example.com>\nX-Original-To: B@example.org\n"
                          b"Delivered-To: b@example.org\n")


def test_modes_and_owner(user_dir, recipient_ids):
    uid, gid = recipient_ids
    md = user_dir / "deep" / "Maildir"
    name = deliver_maildir(md, [MESSAGE], uid=uid, gid=gid, hostname="h")
    path = md / "new" / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (user_dir / "deep", md, md / "tmp", md / "new", md / "cur"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
        assert d.stat().st_uid == expected_owner(recipient_ids)
    assert path.stat().st_uid == expected_owner(recipient_ids)
    assert list((md / "tmp").iterdir()) == []


def test_incomplete_last_line_and_empty_message(tmp_path):
    md = tmp_path / "M"
    n1 = deliver_maildir(md, [b"Subject: x\n\nno newline"], hostname="h")
    assert (md / "new" / n1).read_bytes() == b"Subject: x\n\nno newline\n"
    n2 = deliver_maildir(md, [], prepend_headers=[b"Delivered-To: x@y"], hostname="h")
    assert (md / "new" / n2).read_bytes() == b"Delivered-To: x@y\n"


def test_hostname_escaped():
    assert maildir_hostname("a/b:c,d") == "a\\057b\\072c\\054d"


def test_unique_names_under_1000_threads(tmp_path):
    md = tmp_path / "M"
    count = 1000
    barrier = threading.Barrier(count)
    names: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            barrier.wait()
            body = b"Subject: %d\n\nbody %d\n" % (i, i)
            name = deliver_maildir(md, [body], hostname="h", now=1700000000.0)
            with lock:
                names.append(name)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(names) == len(set(names)) == count
    box = mailbox.Maildir(md, factory=None, create=False)
    subjects = sorted(int(box[k]["Subject"]) for k in box.keys())  # noqa: SIM118 - a Maildir, not a dict
    assert subjects == list(range(count))
    assert list((md / "tmp").iterdir()) == []


@pytest.mark.parametrize("err, status", [
    (errno.ENOSPC, "4.3.0"),
    (errno.EDQUOT, "4.2.2"),
    (errno.EFBIG, "4.2.2"),
    (errno.EIO, "4.3.0"),
    (errno.EROFS, "5.2.0"),
])
def test_write_errors(tmp_path, monkeypatch, err, status):
    md = tmp_path / "M"
    calls = {"n": 0}

    def failing_write(fd, data):
        calls["n"] += 1
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(maildir_mod, "_write", failing_write)
    with pytest.raises(DeliveryError) as info:
        deliver_maildir(md, [MESSAGE], hostname="h")
    assert info.value.dsn == status
    assert info.value.temporary == status.startswith("4")
    assert info.value.text == f"maildir delivery failed: error writing message: {os.strerror(err)}"
    assert calls["n"] == 1
    assert list((md / "tmp").iterdir()) == []
    assert list((md / "new").iterdir()) == []


def test_fsync_error_is_temporary(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(maildir_mod, "_fsync", failing_fsync)
    with pytest.raises(DeliveryError) as info:
        deliver_maildir(tmp_path / "M", [MESSAGE], hostname="h")
    assert info.value.temporary and info.value.dsn == "4.3.0"
    assert list((tmp_path / "M" / "tmp").iterdir()) == []
    assert list((tmp_path / "M" / "new").iterdir()) == []


def test_read_error_from_the_queue_is_temporary(tmp_path):
    def broken():
        yield b"Subject: x\n\n"
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(DeliveryError) as info:
        deliver_maildir(tmp_path / "M", broken(), hostname="h")
    assert info.value.dsn == "4.3.0"
    assert "error reading message" in info.value.text
    assert list((tmp_path / "M" / "tmp").iterdir()) == []


def test_path_is_a_regular_file(tmp_path):
    (tmp_path / "M").write_text("not a directory")
    # local(8): the user controls the location, so this bounces.
    with pytest.raises(DeliveryError) as info:
        deliver_maildir(tmp_path / "M", [MESSAGE], hostname="h")
    assert info.value.dsn == "5.2.0" and not info.value.temporary
    assert info.value.text.startswith("maildir delivery failed: create maildir file ")
    # virtual(8): the administrator controls it, so this is retried.
    with pytest.raises(DeliveryError) as info:
        deliver_maildir(tmp_path / "M", [MESSAGE], hostname="h", error_dsn="4.2.0")
    assert info.value.dsn == "4.2.0" and info.value.temporary


def test_permission_denied(tmp_path, recipient_ids):
    """Root delivering for a user into a directory the user may not write
    is refused just like the user being refused by the kernel."""
    uid, gid = recipient_ids
    parent = tmp_path / "locked"
    parent.mkdir()
    if not AS_ROOT:
        parent.chmod(0o500)
    try:
        with pytest.raises(DeliveryError) as info:
            deliver_maildir(parent / "Maildir", [MESSAGE], uid=uid, gid=gid, hostname="h")
        assert info.value.dsn == "5.2.0"
        assert info.value.text.endswith("Permission denied")
        with pytest.raises(DeliveryError) as info:
            deliver_maildir(parent / "Maildir", [MESSAGE], uid=uid, gid=gid, hostname="h",
                            error_dsn="4.2.0")
        assert info.value.temporary
    finally:
        parent.chmod(0o700)
    assert not (parent / "Maildir").exists()


def test_root_refuses_symlinked_directory_elsewhere(tmp_path, user_dir, recipient_ids):
    """A Maildir that is a symlink to a directory the user cannot write."""
    uid, gid = recipient_ids
    target = tmp_path / "system"
    target.mkdir()
    (target / "tmp").mkdir()
    (target / "new").mkdir()
    (target / "cur").mkdir()
    if not AS_ROOT:
        for d in ("tmp", "new"):
            (target / d).chmod(0o500)
    (user_dir / "Maildir").symlink_to(target)
    try:
        with pytest.raises(DeliveryError):
            deliver_maildir(user_dir / "Maildir", [MESSAGE], uid=uid, gid=gid, hostname="h")
    finally:
        for d in ("tmp", "new"):
            (target / d).chmod(0o700)
    assert list((target / "new").iterdir()) == []


def test_link_not_supported_falls_back_to_rename(tmp_path, monkeypatch):
    def no_link(*args, **kwargs):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(maildir_mod, "_link", no_link)
    name = deliver_maildir(tmp_path / "M", [MESSAGE], hostname="h")
    assert (tmp_path / "M" / "new" / name).read_bytes() == MESSAGE
    assert list((tmp_path / "M" / "tmp").iterdir()) == []


def test_quota_hook(tmp_path):
    """check() gets the exact size once the message is in tmp/; a refusal
    leaves nothing behind; release() ends every delivery."""
    class Quota:
        def __init__(self, limit):
            self.limit = limit
            self.checked = []
            self.added = []
            self.released = 0

        def check(self, maildir, size):
            self.checked.append((maildir, size))
            assert len(os.listdir(os.path.join(maildir, "tmp"))) == 1
            if size > self.limit:
                raise DeliveryError("maildir delivery failed: over quota", dsn="4.2.2")

        def add(self, maildir, size, count):
            self.added.append((maildir, size, count))

        def release(self):
            self.released += 1

    q = Quota(len(MESSAGE))
    md = str(tmp_path / "M")
    name = deliver_maildir(md, [MESSAGE], hostname="h", quota=q)
    assert q.checked == [(md, len(MESSAGE))]
    assert q.added == [(md, len(MESSAGE), 1)]
    assert name.endswith(f",S={len(MESSAGE)}")
    with pytest.raises(DeliveryError) as info:
        deliver_maildir(md, [MESSAGE, MESSAGE], hostname="h", quota=q)
    assert info.value.dsn == "4.2.2"
    assert q.checked[-1] == (md, 2 * len(MESSAGE))
    assert len(q.added) == 1 and q.released == 2
    assert len(os.listdir(tmp_path / "M" / "new")) == 1
    assert os.listdir(tmp_path / "M" / "tmp") == []


def test_uid_without_root_changes_nothing(tmp_path):
    """Not root: uid/gid are recorded nowhere, files belong to us."""
    name = deliver_maildir(tmp_path / "M", [MESSAGE], uid=FAKE_UID if not AS_ROOT else None,
                           hostname="h")
    assert (tmp_path / "M" / "new" / name).stat().st_uid == os.geteuid()


def test_size_limit(tmp_path):
    with pytest.raises(DeliveryError) as info:
        deliver_maildir(tmp_path / "M", [MESSAGE] * 10, hostname="h", size_limit=100)
    assert info.value.dsn == "4.2.2"
    assert list((tmp_path / "M" / "new").iterdir()) == []
    assert list((tmp_path / "M" / "tmp").iterdir()) == []
    deliver_maildir(tmp_path / "M", [MESSAGE], hostname="h", size_limit=len(MESSAGE))


def test_first_deliveries_racing_to_create_the_maildir(user_dir, recipient_ids, monkeypatch):
    """Two first deliveries into a Maildir that does not exist yet, the
    second starting while the first has made a directory but not yet given
    it to the recipient: the second waits for that instead of finding the
    directory unwritable (seen with concurrent virtual deliveries). Both the
    Maildir itself and a missing parent are raced for."""
    uid, gid = recipient_ids
    real_fchown = os.fchown

    def slow_fchown(fd, owner, group):
        time.sleep(0.3)  # the first delivery gives each new directory away late
        real_fchown(fd, owner, group)

    monkeypatch.setattr(maildir_mod.os, "fchown", slow_fchown)
    for target in (user_dir / "Maildir", user_dir / "parent" / "Maildir"):
        errors: list[BaseException] = []
        names: list[str] = []

        def one() -> None:
            try:
                names.append(deliver_maildir(target, [MESSAGE], uid=uid, gid=gid,
                                             hostname="h"))
            except BaseException as err:  # noqa: BLE001
                errors.append(err)

        threads = [threading.Thread(target=one) for _ in range(2)]
        threads[0].start()
        time.sleep(0.1)
        threads[1].start()
        for t in threads:
            t.join(30)
        assert errors == [], (target, errors)
        assert len(names) == 2
        assert target.stat().st_uid == expected_owner(recipient_ids)


def test_a_subdirectory_found_before_it_was_given_away(user_dir, recipient_ids):
    """The second of two first deliveries finds tmp/ already made by the
    first but not yet given to the recipient (still root's, 0700): it waits
    for the owner rather than fail with "Permission denied" (which local(8)
    would have bounced; seen in full-suite runs)."""
    uid, gid = recipient_ids
    if uid is None:
        pytest.skip("needs root: the race is between root-made and recipient-owned")
    target = user_dir / "Maildir"
    for name in ("", "new", "cur"):
        (target / name).mkdir(exist_ok=True)
        os.chown(target / name, uid, gid)
    (target / "tmp").mkdir(mode=0o700)  # made by the other delivery, root's for now
    os.chmod(target / "tmp", 0o700)

    def give_away() -> None:
        time.sleep(0.2)
        os.chown(target / "tmp", uid, gid)

    t = threading.Thread(target=give_away)
    t.start()
    try:
        name = deliver_maildir(target, [MESSAGE], uid=uid, gid=gid, hostname="h")
    finally:
        t.join()
    assert (target / "new" / name).stat().st_uid == uid

"""mbox delivery, read back with Python's mailbox.mbox."""

from __future__ import annotations

import errno
import mailbox
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from hato.delivery import mbox as mbox_mod
from hato.delivery.dsn import DeliveryError
from hato.delivery.mbox import LineCopier, deliver_mbox, dot_lock, envelope_headers, from_line

from .conftest import AS_ROOT, expected_owner

MESSAGE = (b"From: a@example.com\nSubject: test\n\nHello\nFrom the start\n"
           b">From already quoted\n From with a blank\nFromage\n.\n")


def chunks(data: bytes, size: int = 3):
    for i in range(0, len(data), size):
        yield data[i:i + size]


def no_sleep(_):
    return None


def test_append_and_read_back(user_dir, recipient_ids):
    uid, gid = recipient_ids
    path = user_dir / "mbox"
    hdrs = envelope_headers(sender="a@example.com", original_recipient="u@example.org",
                            delivered_to="u@example.org")
    deliver_mbox(path, chunks(MESSAGE), sender="a@example.com", arrival=0,
                 prepend_headers=hdrs, uid=uid, gid=gid)
    deliver_mbox(path, [b"Subject: second\n\nFrom again"], sender="", arrival=0, uid=uid,
                 gid=gid)
    box = mailbox.mbox(path, create=False)
    msgs = list(box)
    assert len(msgs) == 2
    first, second = msgs
    assert first.get_from().startswith("a@example.com  ")
    assert first["Return-Path"] == "<a@example.com>"
    assert first["Delivered-To"] == "u@example.org"
    assert first["X-Original-To"] == "u@example.org"
    assert first["Subject"] == "test"
    # Only lines starting with "From " are quoted, as Postfix does.
    assert first.get_payload() == ("Hello\n>From the start\n>From already quoted\n"
                                   " From with a blank\nFromage\n.\n")
    assert second.get_from().startswith("MAILER-DAEMON  ")
    assert second.get_payload() == ">From again\n"
    raw = path.read_bytes()
    # Postfix's From_ line: two blanks, asctime() of the delivery time.
    assert raw.startswith(b"From a@example.com  " + time.asctime(time.localtime(0)).encode()
                          + b"\n")
    # A blank line ends every message.
    assert raw.endswith(b">From again\n\n")
    assert b"Fromage\n.\n\nFrom MAILER-DAEMON  " in raw


def test_created_0600_owned_by_recipient(user_dir, recipient_ids):
    uid, gid = recipient_ids
    path = user_dir / "inbox"
    deliver_mbox(path, [MESSAGE], sender="s@x", uid=uid, gid=gid)
    st = path.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == expected_owner(recipient_ids)
    assert not (user_dir / "inbox.lock").exists()


def _other_process_can_lock(path) -> bool:
    code = ("import fcntl, sys\n"
            "f = open(sys.argv[1], 'a')\n"
            "try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
            "except OSError:\n    sys.exit(1)\n")
    return subprocess.run([sys.executable, "-c", code, str(path)],
                          check=False).returncode == 0


def test_locks_released(tmp_path):
    path = tmp_path / "mbox"
    deliver_mbox(path, [MESSAGE], sender="s@x", lock_methods=("fcntl", "flock", "dotlock"))
    assert not (tmp_path / "mbox.lock").exists()
    assert _other_process_can_lock(path)


def test_fresh_dotlock_defers(tmp_path):
    path = tmp_path / "mbox"
    path.write_bytes(b"")
    (tmp_path / "mbox.lock").write_bytes(b"")
    with pytest.raises(DeliveryError) as info:
        deliver_mbox(path, [MESSAGE], sender="s@x", lock_attempts=3, lock_delay=0,
                     sleep=no_sleep)
    assert info.value.dsn == "4.2.0" and info.value.temporary
    assert "unable to create lock file" in info.value.text
    assert path.read_bytes() == b""
    # The lock belongs to someone else: it stays.
    assert (tmp_path / "mbox.lock").exists()


def test_stale_dotlock_is_broken(tmp_path):
    path = tmp_path / "mbox"
    (tmp_path / "mbox.lock").write_bytes(b"")
    deliver_mbox(path, [MESSAGE], sender="s@x", lock_attempts=3, lock_delay=0,
                 stale_lock_time=-1, sleep=no_sleep)
    assert len(mailbox.mbox(path)) == 1
    assert not (tmp_path / "mbox.lock").exists()


def test_dot_lock_helper(tmp_path):
    target = str(tmp_path / "f")
    name = dot_lock(target, attempts=1)
    assert name == target + ".lock" and os.path.exists(name)
    with pytest.raises(OSError) as info:
        dot_lock(target, attempts=2, delay=0, sleep=no_sleep)
    assert info.value.errno == errno.EEXIST


def test_fcntl_lock_held_elsewhere_defers(tmp_path):
    path = tmp_path / "mbox"
    path.write_bytes(b"")
    code = ("import fcntl, sys, time\n"
            "f = open(sys.argv[1], 'a')\n"
            "fcntl.lockf(f, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        with pytest.raises(DeliveryError) as info:
            deliver_mbox(path, [MESSAGE], sender="s@x", lock_methods=("fcntl",),
                         lock_attempts=2, lock_delay=0, sleep=no_sleep)
        assert info.value.dsn == "4.2.0"
        assert "unable to lock for exclusive access" in info.value.text
    finally:
        holder.stdin.close()
        holder.wait()
    assert path.read_bytes() == b""


@pytest.mark.parametrize("err, status", [
    (errno.ENOSPC, "4.3.0"),
    (errno.EIO, "4.3.0"),
    (errno.EDQUOT, "4.2.2"),
    (errno.EROFS, "5.2.0"),
])
def test_truncated_back_on_write_error(tmp_path, monkeypatch, err, status):
    path = tmp_path / "mbox"
    deliver_mbox(path, [MESSAGE], sender="s@x")
    before = path.read_bytes()
    real_write = os.write
    state = {"calls": 0}

    def half_then_fail(fd, data):
        state["calls"] += 1
        if state["calls"] == 1:
            return real_write(fd, bytes(data[:len(data) // 2]))
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(mbox_mod, "_write", half_then_fail)
    with pytest.raises(DeliveryError) as info:
        deliver_mbox(path, [MESSAGE], sender="s@x")
    assert state["calls"] == 2  # something was written before the failure
    assert info.value.dsn == status
    assert info.value.temporary == status.startswith("4")
    assert "error writing message" in info.value.text
    assert path.read_bytes() == before
    assert not (tmp_path / "mbox.lock").exists()
    assert _other_process_can_lock(path)


def test_truncated_back_on_read_error(tmp_path):
    path = tmp_path / "mbox"
    deliver_mbox(path, [MESSAGE], sender="s@x")
    before = path.read_bytes()

    def broken():
        yield b"Subject: x\n\n" + b"y" * 200000
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(DeliveryError) as info:
        deliver_mbox(path, broken(), sender="s@x")
    assert info.value.dsn == "4.3.0"
    assert path.read_bytes() == before


def test_size_limit(tmp_path):
    path = tmp_path / "mbox"
    deliver_mbox(path, [MESSAGE], sender="s@x")
    before = path.read_bytes()
    with pytest.raises(DeliveryError) as info:
        deliver_mbox(path, [MESSAGE * 100], sender="s@x", size_limit=len(before) + 100)
    assert info.value.dsn == "4.2.2"
    assert path.read_bytes() == before


def test_concurrent_appends_stay_whole(tmp_path):
    path = tmp_path / "mbox"
    errors = []

    def work(i):
        try:
            deliver_mbox(path, chunks(b"Subject: %d\n\nFrom %d\n" % (i, i), 5), sender="s@x",
                         lock_delay=0.01, lock_attempts=1000)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    msgs = list(mailbox.mbox(path))
    assert sorted(int(m["Subject"]) for m in msgs) == list(range(50))
    for m in msgs:
        assert m.get_payload() == f">From {m['Subject']}\n"


def test_refuses_symlink_and_hard_link(tmp_path):
    target = tmp_path / "target"
    target.write_bytes(b"precious\n")
    linked = tmp_path / "linked"
    linked.write_bytes(b"precious\n")
    (tmp_path / "sym").symlink_to(target)
    if AS_ROOT:  # symlinks owned by root are trusted, as in Postfix
        os.lchown(tmp_path / "sym", 4242, 4242)
    os.link(linked, tmp_path / "hard")
    for name, words in (("sym", "file is a symbolic link"), ("hard", "file has 2 hard links")):
        with pytest.raises(DeliveryError) as info:
            deliver_mbox(tmp_path / name, [MESSAGE], sender="s@x")
        assert info.value.text.endswith(words)
        assert info.value.dsn == "5.2.0"
    assert target.read_bytes() == linked.read_bytes() == b"precious\n"


def test_mailbox_must_be_regular_and_owned(tmp_path):
    with pytest.raises(DeliveryError) as info:
        deliver_mbox("/dev/null", [MESSAGE], sender="s@x")
    assert info.value.text == "destination /dev/null is not a regular file"
    path = tmp_path / "mbox"
    path.write_bytes(b"")
    other = os.geteuid() + 1
    with pytest.raises(DeliveryError) as info:
        deliver_mbox(path, [MESSAGE], sender="s@x", uid=other, spool=True)
    assert info.value.dsn == "4.2.0"
    assert info.value.text == f"destination {path} is not owned by recipient"


def test_file_destinations(tmp_path):
    # /dev/null is fine for a /file destination: no locks, nothing to truncate.
    deliver_mbox("/dev/null", [MESSAGE], sender="s@x", kind="file")
    exe = tmp_path / "script"
    exe.write_bytes(b"")
    exe.chmod(0o700)
    with pytest.raises(DeliveryError) as info:
        deliver_mbox(exe, [MESSAGE], sender="s@x", kind="file")
    assert info.value.dsn == "5.7.1"
    assert info.value.text.endswith("file is executable")


def test_root_does_not_append_to_files_the_user_cannot_write(tmp_path, recipient_ids):
    """A .forward naming /etc/something must fail as it would for the user."""
    uid, gid = recipient_ids
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep\n")
    victim.chmod(0o644 if AS_ROOT else 0o444)
    with pytest.raises(DeliveryError) as info:
        deliver_mbox(victim, [MESSAGE], sender="s@x", kind="file", uid=uid, gid=gid)
    assert "Permission denied" in info.value.text
    assert victim.read_bytes() == b"keep\n"


def test_line_copier_across_chunk_boundaries():
    data = b"From a\nxFrom b\nFro" + b"m c\n.dot\nF" + b"rom" + b" d"
    for size in range(1, len(data) + 1):
        copier = LineCopier(quote_from=True, dot=True, eol=b"\r\n")
        out = b"".join(copier.feed(data[i:i + size]) for i in range(0, len(data), size))
        out += copier.finish()
        assert out == b">From a\r\nxFrom b\r\n>From c\r\n..dot\r\n>From d\r\n", size


def test_from_line_and_headers():
    assert from_line("", 0) == b"From MAILER-DAEMON  " + time.asctime(
        time.localtime(0)).encode() + b"\n"
    assert from_line("a b@x", 0).startswith(b'From "a b"@x  ')
    assert envelope_headers(sender="", delivered_to="U@X") == [
        b"Return-Path: <>\n", b"Delivered-To: U@X\n"]
    assert envelope_headers(original_recipient="") == []

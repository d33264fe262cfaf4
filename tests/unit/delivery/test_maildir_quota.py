"""Maildir++ quota at delivery: maildirsize read, recalculated and appended
as Courier's tools keep it (hato.delivery.maildir_quota)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from hato.delivery.dsn import DeliveryError
from hato.delivery.maildir import deliver_maildir
from hato.delivery.maildir_quota import (
    MaildirsizeKeeper,
    QuotaPolicy,
    QuotaSettings,
    make_maildirsize,
    quota_answer,
    scan_usage,
)
from hato.policy.maildir_quota import Usage, format_usage_line, parse_maildirsize, parse_quota
from hato.tables.registry import open_table

MESSAGE = b"Subject: hi\n\n" + b"x" * 86 + b"\n"  # 100 bytes


def make(path, quota=None):
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    if quota is not None:
        with open(os.path.join(path, "maildirsize"), "wb") as f:
            f.write(quota.encode() + b"\n" + format_usage_line(0, 0))
    return str(path)


def put(path, folder, name, size):
    with open(os.path.join(path, folder, name), "wb") as f:
        f.write(b"y" * size)


class Log:
    def __init__(self):
        self.lines = []

    def __call__(self, text):
        self.lines.append(text)


def deliver(box, policy=QuotaPolicy(), log=None, message=MESSAGE, clock=time.time):
    keeper = MaildirsizeKeeper(policy, warn=log, clock=clock)
    return deliver_maildir(box, [message], hostname="h", quota=keeper)


def sizefile(box):
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        return parse_maildirsize(f.read())


def test_delivery_appends_one_line(tmp_path):
    box = make(tmp_path / "M", "1000S")
    name = deliver(box)
    assert name.endswith(",S=100")
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        assert f.read() == b"1000S\n" + format_usage_line(0, 0) + format_usage_line(100, 1)


@pytest.mark.parametrize("bounce,dsn", [(False, "4.2.2"), (True, "5.2.2")])
def test_over_quota_refused_and_nothing_left(tmp_path, bounce, dsn):
    box = make(tmp_path / "M", "250S")
    policy = QuotaPolicy(bounce=bounce, message="Mailbox full")
    deliver(box, policy)
    deliver(box, policy)
    with pytest.raises(DeliveryError) as info:
        deliver(box, policy)
    assert info.value.dsn == dsn and info.value.text == "maildir delivery failed: Mailbox full"
    assert len(os.listdir(os.path.join(box, "new"))) == 2
    assert os.listdir(os.path.join(box, "tmp")) == []
    assert sizefile(box).usage == Usage(200, 2)


def test_message_count_limit(tmp_path):
    box = make(tmp_path / "M", "100000S,2C")
    deliver(box)
    deliver(box)
    with pytest.raises(DeliveryError):
        deliver(box)


def test_recalculation_excludes_trash_and_counts_folders(tmp_path):
    box = make(tmp_path / "M")
    put(box, "new", "1.a.h,S=300", 7)       # the name says 300: trusted
    put(box, "cur", "2.b.h:2,S", 40)        # no size in the name: stat()
    make(os.path.join(box, ".Sent"))
    put(box, ".Sent/cur", "3.c.h,S=25:2,S", 25)
    make(os.path.join(box, ".Trash"))
    put(box, ".Trash/cur", "4.d.h,S=5000:2,S", 1)
    usage, mtimes = scan_usage(box)
    assert usage == Usage(365, 3)
    assert os.path.join(box, ".Trash", "cur") not in mtimes
    make_maildirsize(box, parse_quota("10000S"))
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        assert f.read() == b"10000S\n" + format_usage_line(365, 3)


def test_big_file_is_recalculated(tmp_path):
    """A 6 KB maildirsize (many appends) is counted again and shrinks."""
    box = make(tmp_path / "M")
    put(box, "cur", "1.a.h,S=120:2,S", 120)
    make(os.path.join(box, ".Trash"))
    put(box, ".Trash/cur", "2.b.h,S=99999:2,S", 1)
    lines = b"".join(format_usage_line(10, 1) for _ in range(240))  # says 2400 bytes
    with open(os.path.join(box, "maildirsize"), "wb") as f:
        f.write(b"5000S\n" + lines)
    assert os.path.getsize(os.path.join(box, "maildirsize")) > 6000
    deliver(box)
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        assert f.read() == b"5000S\n" + format_usage_line(120, 1) + format_usage_line(100, 1)


def test_deleted_file_is_recreated_from_the_table_quota(tmp_path):
    box = make(tmp_path / "M")
    put(box, "cur", "1.a.h,S=120:2,S", 120)
    policy = QuotaPolicy(quota=parse_quota("1000S"), create=True)
    deliver(box, policy)
    assert sizefile(box).usage == Usage(220, 2) and sizefile(box).quota_text == "1000S"
    os.unlink(os.path.join(box, "maildirsize"))
    deliver(box, policy)
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        assert f.read() == b"1000S\n" + format_usage_line(220, 2) + format_usage_line(100, 1)


def test_table_quota_without_create_counts_but_writes_nothing(tmp_path):
    box = make(tmp_path / "M")
    policy = QuotaPolicy(quota=parse_quota("150S"), create=False)
    deliver(box, policy)
    assert not os.path.exists(os.path.join(box, "maildirsize"))
    with pytest.raises(DeliveryError):
        deliver(box, policy)


def test_no_quota_anywhere_writes_nothing(tmp_path):
    box = make(tmp_path / "M")
    for _ in range(3):
        deliver(box)
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]


def test_changed_table_quota_rewrites_the_first_line(tmp_path):
    box = make(tmp_path / "M", "1000S")
    deliver(box)
    deliver(box, QuotaPolicy(quota=parse_quota("2000S,10C")))
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        assert f.read() == b"2000S,10C\n" + format_usage_line(100, 1) + format_usage_line(100, 1)


def test_stale_over_quota_file_is_recalculated(tmp_path):
    """One line saying over quota: trusted while fresh, counted again once
    15 minutes old (messages were removed meanwhile, with .Trash ignored)."""
    box = make(tmp_path / "M")
    with open(os.path.join(box, "maildirsize"), "wb") as f:
        f.write(b"1000S\n" + format_usage_line(990, 9))
    make(os.path.join(box, ".Trash"))
    put(box, ".Trash/cur", "1.a.h,S=900:2,S", 900)
    with pytest.raises(DeliveryError):
        deliver(box)
    old = time.time() - 16 * 60
    os.utime(os.path.join(box, "maildirsize"), (old, old))
    deliver(box)
    assert sizefile(box).usage == Usage(100, 1) and sizefile(box).lines == 2


def test_multi_line_over_quota_file_is_recalculated_at_once(tmp_path):
    box = make(tmp_path / "M")
    with open(os.path.join(box, "maildirsize"), "wb") as f:
        f.write(b"1000S\n" + format_usage_line(500, 5) + format_usage_line(490, 4))
    deliver(box)  # the directory is empty: there is room
    assert sizefile(box).usage == Usage(100, 1)


def test_garbage_lines_warn_and_recalculate(tmp_path):
    box = make(tmp_path / "M")
    put(box, "cur", "1.a.h,S=50:2,S", 50)
    with open(os.path.join(box, "maildirsize"), "wb") as f:
        f.write(b"1000S\nxyz abc\n\x00\xff\n" + format_usage_line(10, 1))
    log = Log()
    deliver(box, log=log)
    assert any("is not <bytes> <count>" in line for line in log.lines)
    assert sizefile(box).usage == Usage(150, 2) and not sizefile(box).problems


def test_negative_total_warns_and_recalculates(tmp_path):
    box = make(tmp_path / "M")
    with open(os.path.join(box, "maildirsize"), "wb") as f:
        f.write(b"1000S\n" + format_usage_line(-500, -3))
    log = Log()
    deliver(box, log=log)
    assert any("negative total" in line for line in log.lines)
    with open(os.path.join(box, "maildirsize"), "rb") as f:
        assert f.read() == b"1000S\n" + format_usage_line(0, 0) + format_usage_line(100, 1)


def test_zero_quota_warns_and_means_no_limit(tmp_path):
    box = make(tmp_path / "M", "0S")
    log = Log()
    for _ in range(3):
        deliver(box, log=log)
    assert any("0S" in line and "no limit" in line for line in log.lines)
    assert sizefile(box).usage == Usage(300, 3)


def test_bad_quota_line_defers_without_loss(tmp_path):
    box = make(tmp_path / "M")
    with open(os.path.join(box, "maildirsize"), "wb") as f:
        f.write(b"lots of space\n" + format_usage_line(0, 0))
    log = Log()
    with pytest.raises(DeliveryError) as info:
        deliver(box, log=log)
    assert info.value.temporary and info.value.dsn == "4.3.0"
    assert any("bad quota definition" in line for line in log.lines)
    assert os.listdir(os.path.join(box, "new")) == [] and os.listdir(os.path.join(box, "tmp")) == []
    # A table quota makes it usable again: the file is rewritten.
    deliver(box, QuotaPolicy(quota=parse_quota("1000S")))
    assert sizefile(box).quota_text == "1000S" and sizefile(box).usage == Usage(100, 1)


def test_maildir_without_tmp(tmp_path):
    """tmp/ gone: the delivery makes it again and the quota still holds."""
    box = make(tmp_path / "M", "150S")
    os.rmdir(os.path.join(box, "tmp"))
    deliver(box)
    assert sizefile(box).usage == Usage(100, 1)
    os.rmdir(os.path.join(box, "tmp"))
    with pytest.raises(DeliveryError):
        deliver(box)
    assert len(os.listdir(os.path.join(box, "new"))) == 1


def test_parent_without_tmp_warns_and_still_counts(tmp_path):
    """A sub-folder's quota is its parent's; the parent lacks tmp/, so a
    new maildirsize cannot be written: a warning, and the usage is counted
    from the directory (the message is neither lost nor let over quota)."""
    box = make(tmp_path / "M")
    folder = make(os.path.join(box, ".Lists"))
    open(os.path.join(folder, "maildirfolder"), "wb").close()
    os.rmdir(os.path.join(box, "tmp"))
    log = Log()
    policy = QuotaPolicy(quota=parse_quota("150S"))
    deliver(folder, policy, log=log)
    assert any("cannot write" in line for line in log.lines)
    with pytest.raises(DeliveryError):
        deliver(folder, policy, log=log)
    assert len(os.listdir(os.path.join(folder, "new"))) == 1


def test_sub_folder_delivery_counts_at_the_parent(tmp_path):
    box = make(tmp_path / "M", "10000S")
    folder = make(os.path.join(box, ".Lists"))
    open(os.path.join(folder, "maildirfolder"), "wb").close()
    deliver(folder)
    assert not os.path.exists(os.path.join(folder, "maildirsize"))
    assert sizefile(box).usage == Usage(100, 1)


def test_unreadable_maildirsize_defers(tmp_path):
    box = make(tmp_path / "M")
    os.mkdir(os.path.join(box, "maildirsize"))  # not a file: read() fails
    log = Log()
    with pytest.raises(DeliveryError) as info:
        deliver(box, log=log)
    assert info.value.temporary and log.lines
    assert os.listdir(os.path.join(box, "new")) == []


def test_parallel_deliveries_never_overshoot(tmp_path):
    """20 threads deliver into one Maildir with room for 7 messages: 7 get
    in, 13 are refused, and the file agrees with the directory."""
    box = make(tmp_path / "M", "750S")
    results = []
    lock = threading.Lock()

    def one():
        try:
            deliver(box)
            outcome = "ok"
        except DeliveryError as err:
            outcome = err.dsn
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=one) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 7 and results.count("4.2.2") == 13
    assert sizefile(box).usage == scan_usage(box)[0] == Usage(700, 7)


def test_quota_answer_reads_only(tmp_path):
    box = make(tmp_path / "M", "150S")
    keeper = MaildirsizeKeeper(QuotaPolicy())
    assert quota_answer(keeper, box, 0)[0] == "sent"
    deliver(box)
    assert quota_answer(keeper, box, 0)[0] == "sent"
    assert quota_answer(keeper, box, 60) == ("deferred", "4.2.2", "Mailbox full")
    bouncing = MaildirsizeKeeper(QuotaPolicy(bounce=True, message="Postfach voll"))
    assert quota_answer(bouncing, box, 60) == ("bounced", "5.2.2", "Postfach voll")
    before = os.stat(os.path.join(box, "maildirsize"))
    os.unlink(os.path.join(box, "maildirsize"))
    table = MaildirsizeKeeper(QuotaPolicy(quota=parse_quota("100S")))
    assert quota_answer(table, box, 0)[1] == "4.2.2"  # counted from the directory
    assert not os.path.exists(os.path.join(box, "maildirsize")) and before


def test_quota_settings_lookup(tmp_path):
    table = tmp_path / "quota"
    table.write_text("big@example.com 5000000S,100C\nuser 10S\n@example.com 1000S\n"
                     "bad@example.com lots\n")
    maps = [open_table(f"texthash:{table}")]
    qs = QuotaSettings(maps=maps, default="2000S", recipient_delimiter="+")
    assert qs.policy_for("big+x@example.com").quota.text == "5000000S,100C"
    assert qs.policy_for("other@example.com").quota.text == "1000S"
    assert qs.policy_for("user@localhost", local_domain=True).quota.text == "10S"
    assert qs.policy_for("user@localhost").quota.text == "2000S"
    log = Log()
    with pytest.raises(DeliveryError) as info:
        qs.policy_for("bad@example.com", warn=log)
    assert info.value.dsn == "4.3.0" and "hato_mailbox_quota_maps" in log.lines[0]
    assert QuotaSettings().policy_for("x@y").quota is None


def test_no_quota_anywhere_takes_no_lock(tmp_path):
    """Without a table quota and without maildirsize there is nothing to
    keep: a delivery does not wait for a lock on the Maildir (concurrent
    deliveries to one big mailbox do not take turns)."""
    import fcntl

    box = make(tmp_path / "M")
    fd = os.open(box, os.O_RDONLY | os.O_DIRECTORY)
    done = threading.Event()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as a delivery with a quota would hold it
        worker = threading.Thread(target=lambda: (deliver(box), done.set()))
        worker.start()
        assert done.wait(10), "the delivery waited for the Maildir's lock"
    finally:
        os.close(fd)  # drops the lock: a waiting delivery ends
        worker.join()
    assert len(os.listdir(os.path.join(box, "new"))) == 1
    assert sorted(os.listdir(box)) == ["cur", "new", "tmp"]


def test_a_maildirsize_without_table_quota_still_takes_the_lock(tmp_path):
    """A maildirsize (another program's quota) is kept up to date under the
    lock, as before."""
    import fcntl

    box = make(tmp_path / "M", "1000S")
    fd = os.open(box, os.O_RDONLY | os.O_DIRECTORY)
    done = threading.Event()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: (deliver(box), done.set()))
        worker.start()
        assert not done.wait(0.5), "the delivery did not wait for the lock"
    finally:
        os.close(fd)
        worker.join()
    assert done.is_set()
    assert sizefile(box).usage == Usage(100, 1)

"""A full queue file system: the queue lives on a small tmpfs the test
mounts. With too little room smtpd refuses MAIL with Postfix's
``452 4.3.1 Insufficient system storage`` (queue_minfree and 1.5 times
message_size_limit); a message that fills the disk while it arrives gets a
451 and leaves nothing behind; once there is room again, mail flows."""

from __future__ import annotations

import os
import smtplib
import subprocess

import pytest

from tests.integration.instance import Instance, smtp_ready

pytestmark = pytest.mark.integration

RCPT = "demo@hato.test"


@pytest.fixture
def small_queue():
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and must run as root")
    inst = Instance("rel-disk")
    mount = inst.root / "smallqueue"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs", str(mount)],
                   check=True)
    try:
        yield inst, mount
    finally:
        try:
            inst.stop()
            inst.cmd("abort")
            inst.kill_strays()
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
            inst.cleanup()


def free_bytes(path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, leave: int) -> None:
    """Fill the file system of *path* until about *leave* bytes are free."""
    filler = path / "filler"
    size = max(0, free_bytes(path) - leave + (filler.stat().st_size if filler.exists() else 0))
    with open(filler, "wb") as f:
        f.truncate(0)
        f.write(b"\0" * size)
        f.flush()
        os.fsync(f.fileno())


def in_queue(queue) -> int:
    return sum(len(files) for name in ("incoming", "active", "deferred", "maildrop")
               for _d, _s, files in os.walk(queue / name))


def send(inst: Instance, body: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.test")
        code, text = s.mail(RCPT)
        if code != 250:
            return code, text
        code, text = s.rcpt(RCPT)
        if code != 250:
            return code, text
        try:
            code, text = s.data(body)
        except smtplib.SMTPDataError as err:
            return err.smtp_code, err.smtp_error
        return code, text


def delivered(inst: Instance, marker: bytes) -> bool:
    new = inst.root / "mail" / "hato.test" / "demo" / "new"
    return new.is_dir() and any(marker in f.read_bytes() for f in new.iterdir())


def test_a_full_queue_file_system_defers_and_loses_nothing(small_queue):
    inst, mount = small_queue
    queue = mount / "queue"
    inst.postconf(f"queue_directory = {queue}", "message_size_limit = 1000000",
                  "queue_minfree = 0", "mynetworks = 127.0.0.0/8")
    os.chown(mount, 0, 0)
    inst.start()
    inst.wait_for(lambda: smtp_ready(inst.port), 60, "smtpd's greeting")

    # Room: a message is accepted and delivered.
    code, _ = send(inst, b"Subject: before\r\n\r\nfirst message\r\n")
    assert code == 250
    inst.wait_for(lambda: delivered(inst, b"first message"), 60, "the first delivery")

    # Less room than 1.5 x message_size_limit: MAIL is refused with a 4xx.
    fill(mount, 1_200_000)
    code, text = send(inst, b"Subject: no room\r\n\r\nsecond\r\n")
    assert (code, text) == (452, b"4.3.1 Insufficient system storage"), (code, text)
    inst.wait_log("NOQUEUE: reject: MAIL from localhost[127.0.0.1]: 452 4.3.1 "
                  "Insufficient system storage; proto=ESMTP helo=<client.test>")
    inst.wait_log("warning: not enough free space in mail queue: ")

    # With no size limit MAIL passes; a message bigger than what is left
    # fails while it is written: 451, and no queue file stays behind.
    inst.postconf("message_size_limit = 0")
    inst.cmd("reload")
    inst.wait_log("reload -- version")
    fill(mount, 300_000)
    before = in_queue(queue)
    big = b"Subject: too big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1000  # about 1 MB
    for _ in range(50):  # a worker from before the reload may answer first
        code, text = send(inst, big)
        if code != 452:
            break
    assert code == 451 and text.startswith(b"4.3.0"), (code, text)
    assert in_queue(queue) == before
    assert not delivered(inst, b"too big")

    # Room again: mail flows, nothing of the refused ones was queued.
    (mount / "filler").unlink()
    code, _ = send(inst, b"Subject: after\r\n\r\nthird message\r\n")
    assert code == 250
    inst.wait_for(lambda: delivered(inst, b"third message"), 60, "delivery after the space returned")
    log = inst.log_text()
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]
    assert " 5" not in "".join(line for line in log.splitlines() if "reject:" in line)

"""t-34: Debian's spamass-milter (with SpamAssassin's spamd behind it) as
hato's milter: a GTUBE message is refused with the milter's own 5xx reply
(``-r``), an ordinary one is delivered with the X-Spam-* headers the milter
adds at the end of the message."""

from __future__ import annotations

import mailbox
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from tests.conftest import require_tool
from tests.ports import free_port

from .instance import Instance

pytestmark = pytest.mark.integration

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"


def _port() -> int:
    return free_port()


def _wait_port(port: int, proc: subprocess.Popen | None, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} does not listen on {port}")


@pytest.fixture(scope="module")
def site():
    spamd_bin = require_tool("spamd", "spamd")
    milter_bin = require_tool("spamass-milter", "spamass-milter")
    work = tempfile.mkdtemp(prefix="hato-t34-")
    spamd_port, milter_port = _port(), _port()
    spamd = subprocess.Popen([spamd_bin, f"--listen=127.0.0.1:{spamd_port}",
                              f"--pidfile={work}/spamd.pid", "--nouser-config",
                              "--max-children=2", "-L", "-s", "stderr"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    milter = None
    inst = None
    try:
        _wait_port(spamd_port, spamd, "spamd")
        milter = subprocess.Popen([milter_bin, "-p", f"inet:{milter_port}@127.0.0.1",
                                   "-r", "15", "-i", "192.0.2.99",
                                   "--", "-d", "127.0.0.1", "-p", str(spamd_port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_port(milter_port, milter, "spamass-milter")
        inst = Instance("t34")
        uid = pwd.getpwnam("hato").pw_uid if os.geteuid() == 0 else os.getuid()
        gid = pwd.getpwnam("hato").pw_gid if os.geteuid() == 0 else os.getgid()
        inst.postconf("virtual_mailbox_domains = example.com",
                      "virtual_mailbox_maps = inline:{ bob@example.com=example.com/bob/ }",
                      f"virtual_uid_maps = static:{uid}", f"virtual_gid_maps = static:{gid}",
                      "virtual_minimum_uid = 1",
                      f"smtpd_milters = inet:127.0.0.1:{milter_port}",
                      "milter_content_timeout = 60s")
        inst.start()
        yield inst
    finally:
        if inst is not None:
            inst.cleanup()
        for proc in (milter, spamd):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(work, ignore_errors=True)


def _bob(inst) -> list[bytes]:
    path = inst.root / "mail" / "example.com" / "bob"
    if not (path / "new").is_dir():
        return []
    box = mailbox.Maildir(str(path), factory=None, create=False)
    return [box.get_bytes(k) for k in box.keys()]


def test_gtube_is_rejected_with_the_milters_reply(site):
    with smtplib.SMTP("127.0.0.1", site.port, timeout=120) as c:
        c.ehlo("client.test")
        c.mail("spammer@client.test")
        c.rcpt("bob@example.com")
        code, text = c.data(f"Subject: buy now\r\n\r\n{GTUBE}\r\n".encode())
    assert code == 550, text
    assert b"5.7.1" in text and b"SpamAssassin" in text, text
    site.wait_log("milter-reject: END-OF-MESSAGE from ")


def test_ham_is_delivered_with_spamassassin_headers(site):
    with smtplib.SMTP("127.0.0.1", site.port, timeout=120) as c:
        c.ehlo("client.test")
        c.mail("friend@client.test")
        c.rcpt("bob@example.com")
        code, text = c.data(b"Subject: lunch\r\nFrom: friend@client.test\r\n"
                            b"To: bob@example.com\r\n\r\nLunch at noon?\r\n")
    assert code == 250, text
    found: list[bytes] = []

    def there() -> bool:
        found[:] = [m for m in _bob(site) if b"Subject: lunch" in m]
        return bool(found)
    site.wait_for(there, timeout=60, what="the ham in bob's Maildir")
    assert b"X-Spam-Checker-Version: SpamAssassin" in found[0], found[0][:2000]
    assert b"X-Spam-Status: No" in found[0]

"""File-descriptor exhaustion: hato started under a low RLIMIT_NOFILE
(`prlimit`), then flooded with idle connections. smtpd must tell the
clients it has no room for ``421 4.3.2 No system resources`` (Postfix's
words) instead of leaving them unanswered, keep the sessions it has, and
serve mail again once the idle connections are gone."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import time

import pytest

from tests.conftest import require_tool
from tests.integration.instance import (GROUP, OWNER, Instance, hato_command, hato_env,
                                        smtp_ready)

pytestmark = pytest.mark.integration

LIMIT = 160  # descriptors per process


@pytest.fixture
def instance():
    inst = Instance("rel-fd")
    yield inst
    inst.cleanup()


def test_out_of_descriptors_gives_421_and_recovers(instance):
    prlimit = require_tool("prlimit", "util-linux")
    inst = instance
    # sessions limited by descriptors, not by the process limit
    inst.postconf("mynetworks = 127.0.0.0/8", "smtpd_timeout = 60s",
                  "default_process_limit = 1000")
    # The whole instance under the limit (the master needs its own
    # descriptors for every service, so the limit leaves it enough).
    shutil.chown(inst.root / "mail", OWNER, GROUP)  # as Instance.start()
    r = subprocess.run([prlimit, f"--nofile={LIMIT}:{LIMIT}", "--",
                        *hato_command(), "-c", str(inst.root), "start"],
                       capture_output=True, env=hato_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    inst.running = True
    inst.wait_for(lambda: smtp_ready(inst.port), 60, "smtpd's greeting")

    # A session that is under way before the flood.
    early = smtplib.SMTP("127.0.0.1", inst.port, timeout=30)
    early.ehlo("early.test")

    idle: list[socket.socket] = []
    answers: list[bytes] = []
    try:
        for _ in range(3 * LIMIT):
            s = socket.create_connection(("127.0.0.1", inst.port), timeout=5)
            s.settimeout(5)
            try:
                first = s.recv(200)
            except OSError:
                first = b""
            answers.append(first)
            idle.append(s)
            if first.startswith(b"421 4.3.2 No system resources"):
                break
        assert any(a.startswith(b"421 4.3.2 No system resources") for a in answers), \
            f"no 421 after {len(answers)} connections: {sorted(set(answers))[:5]}"
        assert all(a.startswith(b"220 ") or a.startswith(b"421 4.3.2") for a in answers), \
            sorted(set(answers))[:5]

        # The session from before still works (a queue file needs a
        # descriptor: a 4xx is allowed, never a 5xx).
        code, _ = early.mail("demo@hato.test")
        assert code < 500
        early.rset()
    finally:
        for s in idle:
            s.close()
    try:
        early.quit()
    except smtplib.SMTPException:
        pass

    # Room again: a new client is served and its mail delivered.
    deadline = time.monotonic() + 30
    while True:
        try:
            with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
                s.sendmail("demo@hato.test", ["demo@hato.test"],
                           b"Subject: after\r\n\r\nafter the flood\r\n")
            break
        except (smtplib.SMTPException, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    new = inst.root / "mail" / "hato.test" / "demo" / "new"
    inst.wait_for(lambda: new.is_dir() and any(b"after the flood" in f.read_bytes()
                                               for f in new.iterdir()),
                  60, "delivery after the flood")
    log = inst.log_text()
    assert "client(s) turned away with 421 4.3.2 No system resources" in log
    assert "Traceback" not in log and "unexpected error" not in log, log[-3000:]

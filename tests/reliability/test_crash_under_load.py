"""Crash safety under load: SMTP clients (several sessions at once, messages
of 1 to 64 KiB) and sendmail submit without pause while every kind of hato
process — the master, smtpd workers, qmgr, the delivery agents, anvil,
pickup, cleanup's users — is killed with SIGKILL at random moments, the
master restarted whenever it died, and smtp-source adds a background load.

Afterwards every message that got its 250 (or whose sendmail exited 0) must
be delivered at least once, and no delivered copy may differ from what was
sent (SHA-256 of the body). Duplicates are allowed (a delivery that was
under way when its agent or qmgr died is repeated) and reported."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import smtplib
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.integration.instance import Instance, smtp_ready

pytestmark = pytest.mark.integration

DURATION = 30.0  # seconds of load and kills
CLIENTS = 5      # SMTP client threads
RCPT = "demo@hato.test"


@pytest.fixture
def instance():
    inst = Instance("rel-crash")
    yield inst
    inst.cleanup()


def make_message(tag: str, rng: random.Random) -> tuple[bytes, str]:
    """A message with an id header and a body of 1 to 64 KiB; the body's
    digest (LF line ends, as it lands in the Maildir)."""
    lines = []
    size = rng.choice([1024, 4096, 20000, 65536])
    n = 0
    while n < size:
        line = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(70))
        lines.append(line)
        n += len(line) + 1
    body = "\n".join(lines) + f"\nEND {tag}\n"
    head = f"From: <{RCPT}>\nTo: <{RCPT}>\nSubject: load {tag}\nX-Hato-Test: {tag}\n"
    return (head + "\n" + body).encode(), hashlib.sha256(body.encode()).hexdigest()


def delivered(box: Path) -> dict[str, list[str]]:
    """test id -> digests of the delivered copies (new/ and cur/)."""
    out: dict[str, list[str]] = {}
    for sub in ("new", "cur"):
        d = box / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                continue
            head, sep, body = data.partition(b"\n\n")
            tag = None
            for line in head.split(b"\n"):
                if line.startswith(b"X-Hato-Test: "):
                    tag = line[13:].decode()
            if tag is None:
                continue  # smtp-source's background load goes to discard
            out.setdefault(tag, []).append(hashlib.sha256(body).hexdigest() if sep else "")
    return out


def queue_state(inst: Instance) -> str:
    """What is left in the queue and what went wrong, for a failure message."""
    counts = {}
    for name in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
        counts[name] = sum(len(files) for _d, _s, files in os.walk(inst.root / "queue" / name))
    mailq = inst.cmd("postqueue", "-p").stdout.decode(errors="replace")
    troubles = [line for line in inst.log_text().splitlines()
                if any(w in line for w in ("warning:", "error:", "fatal:", "panic:", "status=def"))]
    return (f"queue files: {counts}\n--- mailq (start):\n{mailq[:2000]}\n"
            f"--- log troubles (last 60 of {len(troubles)}):\n" + "\n".join(troubles[-60:]))


def test_sigkill_under_load_loses_and_corrupts_nothing(instance):
    require_tool("smtp-source", "postfix")
    inst = instance
    inst.postconf("minimal_backoff_time = 1s", "maximal_backoff_time = 2s",
                  "queue_run_delay = 1s", "mynetworks = 127.0.0.0/8",
                  "default_transport = discard", "smtpd_timeout = 30s",
                  # a worker killed while it starts counts as a bad start:
                  # master pauses its service this long, as Postfix's does
                  "service_throttle_time = 1s")
    inst.start()
    inst.wait_for(lambda: smtp_ready(inst.port), 60, "smtpd's greeting")
    box = inst.root / "mail" / "hato.test" / "demo"
    stop = threading.Event()
    lock = threading.Lock()
    acked: dict[str, str] = {}  # tag -> body digest
    kills: list[str] = []
    restarts = [0]
    errors: list[str] = []
    failures: list[str] = []  # what the SMTP clients met (a sample is printed)

    def client(k: int) -> None:
        rng = random.Random(100 + k)
        i = 0
        while not stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", inst.port, timeout=5) as s:
                    for _ in range(rng.randint(1, 3)):
                        tag = f"c{k}-{i}"
                        i += 1
                        msg, digest = make_message(tag, rng)
                        s.sendmail(RCPT, [RCPT], msg.replace(b"\n", b"\r\n"))
                        with lock:
                            acked[tag] = digest
            except (smtplib.SMTPException, OSError) as err:
                failures.append(f"{type(err).__name__}: {err}")
                time.sleep(0.05)  # refused, reset, 4xx: not acknowledged

    def submitter() -> None:
        rng = random.Random(7)
        i = 0
        while not stop.is_set():
            tag = f"s-{i}"
            i += 1
            msg, digest = make_message(tag, rng)
            r = inst.sendmail("-f", RCPT, RCPT, message=msg)
            if r.returncode == 0:
                with lock:
                    acked[tag] = digest

    def background() -> None:
        source = require_tool("smtp-source", "postfix")
        while not stop.is_set():
            subprocess.run([source, "-4", "-s", "5", "-m", "50", "-l", "2048",
                            "-f", "load@client.test", "-t", "load@discard.test",
                            f"127.0.0.1:{inst.port}"], capture_output=True, timeout=60)

    def killer() -> None:
        rng = random.Random(4)
        # the processes that matter most each die at least once, in a
        # random order; then any process at random
        first = ["smtpd", "qmgr", "virtual", "pickup", "master", "smtpd", "qmgr"]
        rng.shuffle(first)
        while not stop.is_set():
            time.sleep(rng.uniform(0.8, 2.0))
            pids = inst.pids()
            if not pids:
                continue
            pid = rng.choice(sorted(pids))
            if first:
                role = first.pop()
                chosen = [p for p, r in pids.items()
                          if (r if ":" not in r else "smtpd") == role]
                if chosen:
                    pid = rng.choice(chosen)
            try:
                os.kill(pid, signal.SIGKILL)
                # an inet service is named by its address: that is smtpd
                kills.append("smtpd" if ":" in pids[pid] else pids[pid])
            except ProcessLookupError:
                pass

    def keeper() -> None:
        while not stop.is_set():
            time.sleep(0.3)
            ensure_running()

    def ensure_running(tries: int = 10) -> None:
        for _ in range(tries):
            if inst.cmd("status").returncode == 0:
                return
            r = inst.cmd("start")
            if r.returncode == 0:
                restarts[0] += 1
                return
            if b"already running" in r.stderr:
                return
            time.sleep(0.2)
        errors.append(f"hato does not start again:\n{inst.log_text()[-3000:]}")

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    threads += [threading.Thread(target=f, daemon=True)
                for f in (submitter, background, killer, keeper)]
    for t in threads:
        t.start()
    time.sleep(DURATION)
    stop.set()
    for t in threads:
        t.join(90)
    assert not errors, errors[0]
    roles = sorted(set(kills))
    print(f"\nkilled {len(kills)} times: {roles}; master restarted {restarts[0]} times; "
          f"acknowledged {len(acked)} messages; SMTP client failures: {len(failures)}, "
          f"e.g. {sorted(set(failures))[:5]}")
    by_smtp = sum(1 for tag in acked if tag.startswith("c"))
    assert by_smtp >= 20 and len(acked) - by_smtp >= 5, \
        f"the load did not get through ({by_smtp} by SMTP): {inst.log_text()[-3000:]}"
    assert {"master", "smtpd", "qmgr", "virtual"} <= set(roles), roles

    # Every acknowledged message arrives; nothing delivered is damaged.
    deadline = time.monotonic() + 180
    seen: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        ensure_running()
        seen = delivered(box)
        if set(acked) <= set(seen):
            break
        inst.cmd("flush")
        time.sleep(1)
    missing = sorted(set(acked) - set(seen))
    assert not missing, (f"{len(missing)} acknowledged but never delivered: {missing[:20]}\n"
                         f"{queue_state(inst)}")
    damaged = [tag for tag, digests in seen.items()
               if tag in acked and any(d != acked[tag] for d in digests)]
    assert not damaged, f"delivered copies that differ from what was sent: {damaged[:20]}"
    dups = {tag: len(d) for tag, d in seen.items() if len(d) > 1}
    extra = sorted(set(seen) - set(acked))
    print(f"delivered {len(seen)} distinct messages; duplicates: {len(dups)} "
          f"({sum(dups.values()) - len(dups)} extra copies); delivered without a 250 "
          f"the client saw: {len(extra)}")

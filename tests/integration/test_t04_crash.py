"""t-04: crash safety. Messages are sent with sendmail while hato's
processes (workers and the master itself) are killed with SIGKILL at random
moments; the master is restarted whenever it died. Every message whose
sendmail call exited 0 must be delivered at least once, and no delivered
file may be truncated."""

from __future__ import annotations

import os
import random
import signal
import threading
import time

import pytest

from .instance import instance_pids

pytestmark = pytest.mark.integration

N = 40


def test_kill_minus_nine_loses_nothing(instance):
    inst = instance
    inst.postconf("minimal_backoff_time = 1s", "maximal_backoff_time = 2s",
                  "queue_run_delay = 1s")
    inst.start()
    root = str(inst.root)
    box = inst.root / "mail" / "hato.test" / "demo"
    rng = random.Random(4)
    stop = threading.Event()
    kills: list[str] = []

    def killer() -> None:
        while not stop.is_set():
            time.sleep(rng.uniform(0.05, 0.4))
            pids = instance_pids(root)
            if not pids:
                continue
            pid = rng.choice(sorted(pids))
            try:
                os.kill(pid, signal.SIGKILL)
                kills.append(pids[pid])
            except ProcessLookupError:
                pass

    def ensure_running(tries: int = 5) -> None:
        # While the killer runs, a master may die again while it starts.
        for _ in range(tries):
            if inst.cmd("status").returncode == 0:
                return
            r = inst.cmd("start")
            if r.returncode == 0 or b"already running" in r.stderr:
                return
        raise AssertionError(f"hato does not start again:\n{inst.log_text()[-3000:]}")

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    acked = []
    try:
        for i in range(N):
            body = f"Subject: crash-{i}\n\nmessage {i}\nEND-OF-MESSAGE-{i}\n".encode()
            r = inst.sendmail("-f", "demo@hato.test", "demo@hato.test", message=body)
            if r.returncode == 0:
                acked.append(i)
            ensure_running()
    finally:
        stop.set()
        t.join()
    print(f"killed: {sorted(set(kills))} {len(kills)} times; acknowledged {len(acked)}")
    assert "master" in kills or len(kills) > 5, kills
    deadline = time.monotonic() + 120
    seen: set[int] = set()
    while time.monotonic() < deadline:
        ensure_running()
        seen = set()
        new = box / "new"
        for name in (os.listdir(new) if new.is_dir() else []):
            data = (new / name).read_bytes()
            for i in acked:
                if f"Subject: crash-{i}\n".encode() in data:
                    assert data.endswith(f"END-OF-MESSAGE-{i}\n".encode()), name
                    seen.add(i)
        if set(acked) <= seen:
            break
        inst.cmd("flush")
        time.sleep(0.5)
    missing = sorted(set(acked) - seen)
    if missing:
        new = box / "new"
        names = os.listdir(new) if new.is_dir() else []
        print("FILES", len(names), [(n, (new / n).read_bytes()[-40:]) for n in names[:5]])
    assert not missing, f"acknowledged but never delivered: {missing}\n{inst.log_text()[-5000:]}"
    assert len(acked) >= N // 2

"""kill -9 while committing: every acknowledged message survives whole.

A child process commits messages in a loop (and moves some to active/ and
deferred/, marks recipients done, appends defer logs); after each commit()
returns it reports the queue id over a pipe, as smtpd would answer "250 Ok:
queued as ...". The parent kills it with SIGKILL at a random moment,
restarts the store with recover() and checks:

* every acknowledged message is in the queue, with its envelope and its
  content intact, and recipients reported done are still done;
* nothing listed in any queue is incomplete; at most the one message that
  was being committed when the kill came is there without having been
  acknowledged (at-least-once: it will be delivered, never half);
* no temporary file is left.
"""

from __future__ import annotations

import os
import random
import signal
import time

from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import MESSAGE_QUEUES, QueueStore

ROUNDS = 14
SIZES = [0, 1, 100, 5_000, 70_000, 300_000]


def _body(tag: str, size: int) -> bytes:
    line = f"{tag} the quick brown fox jumps over the lazy dog\r\n".encode()
    return (line * (size // len(line) + 1))[:size]


def _child(qdir: str, wfd: int, seed: int) -> None:
    rnd = random.Random(seed)
    store = QueueStore(qdir)
    i = 0
    while True:
        tag = f"{seed}-{i}"
        size = rnd.choice(SIZES)
        body = _body(tag, size)
        w = store.create()
        w.write_envelope(Envelope(sender=f"s{tag}@example.com",
                                  recipients=[Recipient(f"r{j}@example.org") for j in range(3)],
                                  attributes={"tag": tag, "size": str(size)}))
        for k in range(0, len(body), 65536):
            w.write_content(body[k: k + 65536])
        qid = w.commit()
        os.write(wfd, f"A {qid} {tag} {size}\n".encode())
        step = i % 4
        if step == 1:
            store.move(qid, "incoming", "active")
        elif step == 2:
            store.move(qid, "incoming", "deferred")
            store.append_log("defer", qid, {"recipient": "r0@example.org", "status": "4.0.0"})
        elif step == 3:
            with store.open("incoming", qid) as f:
                f.mark_done(f.envelope.recipients[1])
            os.write(wfd, f"D {qid}\n".encode())
        i += 1


def _run_and_kill(qdir: str, seed: int, delay: float) -> list[list[str]]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            os.close(r)
            _child(qdir, w, seed)
        finally:
            os._exit(0)
    os.close(w)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    return [line.split() for line in data.decode().splitlines()]


def _check_message(store: QueueStore, queue: str, qid: str) -> str:
    """Open a listed message, prove it whole; its tag."""
    with store.open(queue, qid) as f:
        env = f.envelope
        tag, size = env.attributes["tag"], int(env.attributes["size"])
        assert env.sender == f"s{tag}@example.com" and len(env.recipients) == 3
        assert env.size == size
        assert f.read_content() == _body(tag, size)
    return tag


def test_sigkill_at_random_moments(tmp_path):
    qdir = str(tmp_path / "queue")
    QueueStore(qdir).ensure_layout()
    rnd = random.Random(20240611)
    acked: dict[str, tuple[str, int]] = {}
    done: set[str] = set()
    unacked_seen: set[str] = set()
    for rnd_no in range(ROUNDS):
        lines = _run_and_kill(qdir, rnd_no, rnd.uniform(0.02, 0.35))
        for parts in lines:
            if parts[0] == "A":
                acked[parts[1]] = (parts[2], int(parts[3]))
            else:
                done.add(parts[1])
        store = QueueStore(qdir)
        report = store.recover()
        assert report.corrupt == [] and report.errors == []
        everywhere = {}
        for queue in MESSAGE_QUEUES:
            for qid in store.list(queue):
                assert qid not in everywhere, f"{qid} in two queues"
                everywhere[qid] = queue
        # nothing is left in active/, and no temporary files anywhere
        assert "active" not in everywhere.values()
        for queue in MESSAGE_QUEUES:
            names = os.listdir(os.path.join(qdir, queue))
            assert not [n for n in names if "." in n], names
        # every acknowledged message is there, whole
        for qid, (tag, size) in acked.items():
            assert qid in everywhere, f"acknowledged {qid} ({tag}) lost"
            if rnd_no == ROUNDS - 1 or tag.startswith(f"{rnd_no}-"):
                assert _check_message(store, everywhere[qid], qid) == tag
        for qid in done:
            with store.open(everywhere[qid], qid) as f:
                assert [r.done for r in f.envelope.recipients] == [False, True, False]
        # what was not acknowledged is at most the one message in flight
        extra = set(everywhere) - set(acked) - unacked_seen
        assert len(extra) <= 1, extra
        for qid in extra:
            _check_message(store, everywhere[qid], qid)
        unacked_seen |= extra
    assert len(acked) > ROUNDS  # the child did get work done

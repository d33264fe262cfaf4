"""Power loss at every step, on a file system that keeps only what was fsynced.

kill -9 (test_crash.py) leaves the kernel's page cache intact; a power loss
does not. :class:`PowerLossModel` watches the store's FileOps and remembers,
for every moment, what a pessimistic file system would still have after the
power went out: a file's data only as of its last fsync/fdatasync (nothing
before the first), a directory's entries only as of its last fsync. For each
step of a run of commits, moves, done marks, logs and removals, the test
builds that surviving tree, runs recover() on it and checks that every
message acknowledged by then is there, whole, with its done recipients.
"""

from __future__ import annotations

import os

from hato.queue.envelope import Envelope, Recipient
from hato.queue.fileops import FileOps
from hato.queue.store import MESSAGE_QUEUES, QueueStore


class PowerLossModel(FileOps):
    def __init__(self, root: str, keep: str):
        self.root = root
        self.keep = keep  # hard links that stop inode numbers being reused
        self.fd_inode: dict[int, int] = {}
        self.data: dict[int, bytes] = {}  # inode -> durable content
        self.dirs: dict[str, dict[str, tuple[int, bool]]] = {}  # durable entries
        self.snapshots: list[tuple[dict, dict, dict]] = []
        self.acked: dict[str, tuple[bytes, frozenset[int]]] = {}
        self._n = 0
        for d, subdirs, files in os.walk(root):  # what exists now is durable
            self._sync_dir(d)
            for f in files:
                p = os.path.join(d, f)
                with open(p, "rb") as fh:
                    self.data[os.stat(p).st_ino] = fh.read()
        self._snap()

    # the model
    def _snap(self) -> None:
        self.snapshots.append((dict(self.data), {k: dict(v) for k, v in self.dirs.items()},
                               dict(self.acked)))

    def _sync_dir(self, path: str) -> None:
        entries = {}
        with os.scandir(path) as it:
            for e in it:
                entries[e.name] = (e.inode(), e.is_dir(follow_symlinks=False))
        self.dirs[path] = entries

    def ack(self, qid: str, body: bytes, done: frozenset[int] = frozenset()) -> None:
        self.acked[qid] = (body, done)
        self._snap()

    def materialize(self, snap, target: str) -> None:
        data, dirs, _ = snap
        made: dict[int, str] = {}

        def build(src: str, dst: str) -> None:
            os.makedirs(dst, exist_ok=True)
            for name, (ino, is_dir) in dirs.get(src, {}).items():
                s, d = os.path.join(src, name), os.path.join(dst, name)
                if is_dir:
                    build(s, d)
                elif ino in made:
                    os.link(made[ino], d)
                else:
                    with open(d, "wb") as f:
                        f.write(data.get(ino, b""))
                    made[ino] = d

        build(self.root, target)

    # the operations that change what survives
    def open(self, path: str, flags: int, mode: int = 0o600) -> int:
        fd = super().open(path, flags, mode)
        ino = os.fstat(fd).st_ino
        self.fd_inode[fd] = ino
        if flags & os.O_CREAT:
            self._n += 1
            try:
                os.link(path, os.path.join(self.keep, str(self._n)))
            except FileExistsError:
                pass
        self._snap()
        return fd

    def fsync(self, fd: int) -> None:
        super().fsync(fd)
        self.data[os.fstat(fd).st_ino] = _read(fd)
        self._snap()

    def fdatasync(self, fd: int) -> None:
        super().fdatasync(fd)
        self.data[os.fstat(fd).st_ino] = _read(fd)
        self._snap()

    def fsync_dir(self, path: str) -> None:
        super().fsync_dir(path)
        self._sync_dir(path)
        self._snap()

    def write(self, fd, data):
        super().write(fd, data)
        self._snap()

    def pwrite(self, fd, data, offset):
        super().pwrite(fd, data, offset)
        self._snap()

    def rename_noreplace(self, src, dst):
        super().rename_noreplace(src, dst)
        self._snap()

    def rename(self, src, dst):
        super().rename(src, dst)
        self._snap()

    def unlink(self, path):
        super().unlink(path)
        self._snap()

    def mkdir(self, path, mode=0o700):
        super().mkdir(path, mode)
        self._snap()


def _read(fd: int) -> bytes:
    # through /proc, so that write-only descriptors can be read too
    with open(f"/proc/self/fd/{fd}", "rb") as f:
        return f.read()


def _commit(store: QueueStore, model: PowerLossModel, i: int, hold: bool = False) -> str:
    body = f"message {i}\n".encode() * (1 + i * 3000)
    w = store.create()
    env = Envelope(sender=f"s{i}@x", recipients=[Recipient(f"r{j}@x") for j in range(3)],
                   attributes={"i": str(i)}, hold=hold)
    w.write_envelope(env)
    for k in range(0, len(body), 65536):
        w.write_content(body[k: k + 65536])
    qid = w.commit()
    model.ack(qid, body)
    return qid


def test_power_loss_at_every_step(tmp_path):
    root = str(tmp_path / "queue")
    keep = str(tmp_path / "keep")
    os.mkdir(keep)
    QueueStore(root).ensure_layout()
    model = PowerLossModel(root, keep)
    store = QueueStore(root, model)
    a = _commit(store, model, 1)
    b = _commit(store, model, 2)
    store.move(a, "incoming", "active")
    with store.open("active", a) as f:
        f.mark_done(f.envelope.recipients[0])
    model.ack(a, model.acked[a][0], frozenset({0}))
    store.append_log("defer", a, {"recipient": "r1@x", "status": "4.0.0"})
    store.move(a, "active", "deferred")  # a hashed queue: a new subdirectory
    c = _commit(store, model, 3, hold=True)
    d = _commit(store, model, 4)
    store.move(b, "incoming", "active")
    model.acked.pop(b)  # delivered: from now on it may come back, never half
    model._snap()
    store.remove("active", b)
    e = _commit(store, model, 5)
    assert len({a, b, c, d, e}) == 5

    assert len(model.snapshots) > 60
    for n, snap in enumerate(model.snapshots):
        target = str(tmp_path / f"after{n}")
        model.materialize(snap, target)
        s = QueueStore(target)
        report = s.recover()
        assert report.corrupt == [] and report.errors == [], (n, report)
        where = {}
        for q in MESSAGE_QUEUES:
            for qid in s.list(q):
                assert qid not in where, (n, qid)
                where[qid] = q
        for qid, (body, done) in snap[2].items():
            assert qid in where, f"step {n}: acknowledged {qid} lost"
            with s.open(where[qid], qid) as f:
                assert f.read_content() == body
                assert {i for i, r in enumerate(f.envelope.recipients) if r.done} >= done
        for qid, q in where.items():  # whatever else is there is whole
            with s.open(q, qid) as f:
                assert f.read_content() == _expected(f.envelope)


def _expected(env: Envelope) -> bytes:
    i = int(env.attributes["i"])
    return f"message {i}\n".encode() * (1 + i * 3000)

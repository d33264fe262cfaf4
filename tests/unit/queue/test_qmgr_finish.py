"""qmgr's last step for a message (QueueManager._finish): which writes it
syncs. Done marks that finish a message are not synced, since the file is
removed next (Postfix never syncs them); marks on a message that stays in
the queue are."""

from __future__ import annotations

import types

from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.delivery.request import BOUNCED, DEFERRED, SENT, RcptRequest, RcptStatus
from hato.queue.envelope import Envelope, Recipient
from hato.queue.fileops import FaultyFileOps
from hato.queue.store import ACTIVE, DEFERRED as DEFERRED_Q, QueueStore
from hato.services.qmgr import QueueManager

FACTS = HostFacts("mx1", (("127.0.0.1", 8),), (("::1", 128),))


class Log:
    def __init__(self):
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    warning = error = exception = info


def manager(qdir: str) -> tuple[QueueManager, FaultyFileOps]:
    config = Config("/etc/hato", MainCf.parse(f"myhostname = mail.example.com\n"
                                              f"queue_directory = {qdir}\n",
                                              "/etc/hato/main.cf"),
                    MasterCf.parse("", "/etc/hato/master.cf"), FACTS)
    ctx = types.SimpleNamespace(settings=config.settings(), log=Log(), config=config)
    qm = QueueManager(ctx)
    ops = FaultyFileOps()  # records every call, fails none
    qm.store = QueueStore.from_settings(ctx.settings, ops)
    qm.store.ensure_layout()
    return qm, ops


def active_message(store: QueueStore, n: int):
    env = Envelope(sender="sender@example.com",
                   recipients=[Recipient(f"r{i}@example.org", f"r{i}@example.org")
                               for i in range(n)])
    with store.create(ACTIVE) as w:
        w.write_envelope(env)
        w.write_content(b"Subject: hi\n\nhello\n")
        qid = w.commit()
    return qid, store.open(ACTIVE, qid)


def finish(qm, qf, qid, statuses):
    env = qf.envelope
    requests = {i: RcptRequest(i, r.address, r.orig_address)
                for i, r in enumerate(env.recipients)}
    results = {i: RcptStatus(i, st, "2.0.0" if st == SENT else "4.0.0",
                             "ok" if st == SENT else "try again", "none")
               for i, st in enumerate(statuses)}
    qm._finish(qf, qid, env, results, requests)


def synced(ops: FaultyFileOps, fd: int) -> list[str]:
    """The syncs of the queue file itself (its calls name its descriptor,
    *fd*, which _finish closes)."""
    return [op for op, f in ops.calls if op in ("fsync", "fdatasync") and f == str(fd)]


def test_marks_that_finish_the_message_are_not_synced(tmp_path):
    qm, ops = manager(str(tmp_path / "queue"))
    qid, qf = active_message(qm.store, 2)
    try:
        ops.calls.clear()
        fd = qf._fd
        finish(qm, qf, qid, [SENT, SENT])
        assert synced(ops, fd) == []
        assert any(op == "pwrite" for op, _ in ops.calls)  # the marks were written
        # closed on the finishing thread, after the removal: not on qmgr's loop
        assert qf._fd == -1 and ops.calls[-1] == ("close", str(fd))
    finally:
        qf.close()
    assert qm.store.find(qid, [ACTIVE, DEFERRED_Q]) is None
    assert f"{qid}: removed" in qm.ctx.log.lines


def test_marks_on_a_message_that_stays_are_synced(tmp_path):
    qm, ops = manager(str(tmp_path / "queue"))
    qid, qf = active_message(qm.store, 2)
    try:
        ops.calls.clear()
        fd = qf._fd
        finish(qm, qf, qid, [SENT, DEFERRED])
        assert "fdatasync" in synced(ops, fd)
        assert qf._fd == -1
    finally:
        qf.close()
    assert qm.store.find(qid, [ACTIVE, DEFERRED_Q]) == DEFERRED_Q
    again = qm.store.open(DEFERRED_Q, qid, writable=False)
    try:
        assert [r.done for r in again.envelope.recipients] == [True, False]
    finally:
        again.close()


def test_a_queued_notice_asks_for_a_scan_and_nothing_else_does(tmp_path):
    # qmgr looks at incoming/ again at once only when it queued a notice there
    # itself; a delivery that merely ended does not cost a directory scan.
    qm, _ops = manager(str(tmp_path / "queue"))
    qid, qf = active_message(qm.store, 1)
    try:
        finish(qm, qf, qid, [SENT])
    finally:
        qf.close()
    assert qm._notices is False
    qid, qf = active_message(qm.store, 1)
    try:
        env = qf.envelope
        requests = {0: RcptRequest(0, env.recipients[0].address)}
        results = {0: RcptStatus(0, BOUNCED, "5.1.1", "User unknown", "none")}
        qm._finish(qf, qid, env, results, requests)
    finally:
        qf.close()
    assert qm._notices is True
    assert any("sender non-delivery notification" in line for line in qm.ctx.log.lines)

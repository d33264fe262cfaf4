"""t-26: postsuper on a live queue.

One hato instance relays through transport_maps to scripted peers
(tests/smtp_peer.py): ``defer.test`` answers 450 to every recipient (its
mail is deferred), ``busy.test`` holds its reply to the dot until the test
lets it go (its mail stays in the active queue), ``good.test`` accepts.
header_checks puts mail with ``Subject: hold me`` on hold as it arrives.
"""

from __future__ import annotations

import mailbox
import os
import re
import threading

import pytest

from tests.smtp_peer import SmtpPeer

from .instance import Instance
from .maillog import statuses, wait_status

pytestmark = pytest.mark.integration

SENDER = "demo@hato.test"
GATE = threading.Event()
SLOW_GATE = threading.Event()


def _held_dot(session, arg) -> None:
    GATE.wait(60)


def _slow_dot(session, arg) -> None:
    SLOW_GATE.wait(60)


@pytest.fixture(scope="module")
def site():
    inst = Instance("t26")
    peers = {"defer.test": SmtpPeer(name="peer.defer.test", rcpt="450 4.2.0 try again later"),
             "busy.test": SmtpPeer(name="peer.busy.test", dot=_held_dot),
             "good.test": SmtpPeer(name="peer.good.test"),
             "slow.test": SmtpPeer(name="peer.slow.test", dot=_slow_dot)}
    try:
        inst.transport = inst.root / "transport"
        routes = {dom: f"smtp:[127.0.0.1]:{p.port}" for dom, p in peers.items()}
        routes["moved.test"] = routes["defer.test"]
        inst.routes = routes
        write_routes(inst)
        (inst.root / "header_checks").write_text("/^Subject: hold me/ HOLD\n")
        inst.postconf(f"transport_maps = texthash:{inst.transport}",
                      f"header_checks = regexp:{inst.root / 'header_checks'}",
                      "smtp_connect_timeout = 5s", "smtp_helo_timeout = 10s")
        inst.start()
        yield inst, peers
    finally:
        GATE.set()
        SLOW_GATE.set()
        inst.cleanup()
        for p in peers.values():
            p.close()


def write_routes(inst: Instance) -> None:
    inst.transport.write_text("".join(f"{d} {r}\n" for d, r in inst.routes.items()))


def send(inst: Instance, rcpt: str, subject: str = "t26") -> None:
    msg = f"From: {SENDER}\nTo: {rcpt}\nSubject: {subject}\n\nbody for {rcpt}\n".encode()
    r = inst.sendmail("-f", SENDER, rcpt, message=msg)
    assert r.returncode == 0, r.stderr


def postsuper(inst: Instance, *args: str, input: str | None = None):
    r = inst.cmd("postsuper", *args, input=input.encode() if input is not None else None)
    return r.returncode, r.stderr.decode()


def qid_of(inst: Instance, rcpt: str) -> str:
    return statuses(inst, rcpt)[0]["qid"]


def held_qid(inst: Instance, subject_rcpt: str) -> str:
    """The queue id of a message header_checks put on hold."""
    pat = re.compile(r"(\w+): hold: header Subject: hold me .*to=<" + re.escape(subject_rcpt))
    inst.wait_for(lambda: pat.search(inst.log_text()), 30, f"hold of {subject_rcpt}")
    return pat.search(inst.log_text()).group(1)


def queue_files(inst: Instance, *names: str) -> list[str]:
    q = inst.root / "queue"
    out = []
    for name in names:
        for dirpath, _dirs, files in os.walk(q / name):
            out += [os.path.relpath(os.path.join(dirpath, f), q) for f in files]
    return sorted(out)


def where(inst: Instance, qid: str) -> list[str]:
    return [f for f in queue_files(inst, "maildrop", "incoming", "active", "deferred", "hold")
            if os.path.basename(f) == qid]


def wait_deferred(inst: Instance, rcpt: str) -> str:
    st = wait_status(inst, rcpt)
    assert st["status"] == "deferred", st
    qid = st["qid"]
    inst.wait_for(lambda: any(p.startswith("deferred/") for p in where(inst, qid)), 30,
                  f"{qid} in the deferred queue")
    return qid


def flush(inst: Instance) -> None:
    r = inst.cmd("flush")
    assert r.returncode == 0, r.stderr


def sender_mail(inst: Instance) -> dict[str, bytes]:
    """The messages in the sender's Maildir, by key."""
    path = inst.root / "mail" / "hato.test" / "demo"
    if not (path / "new").is_dir():
        return {}
    return {k: bytes(m) for k, m in mailbox.Maildir(str(path), create=False).items()}


def new_mail(inst: Instance, before: dict[str, bytes]) -> bytes:
    return b"\n".join(m for k, m in sender_mail(inst).items() if k not in before)


def assert_clean_log(inst: Instance) -> None:
    text = inst.log_text()
    assert "Traceback" not in text and "unexpected error" not in text, text


def test_delete_all_deferred_while_deliveries_run(site):
    inst, peers = site
    deferred = [f"d{n}@defer.test" for n in range(4)]
    busy = [f"b{n}@busy.test" for n in range(6)]
    for rcpt in deferred:
        send(inst, rcpt)
    qids = [wait_deferred(inst, rcpt) for rcpt in deferred]
    for q in qids:
        assert os.path.exists(inst.root / "queue" / "defer" / q[0] / q)
    for rcpt in busy:
        send(inst, rcpt)
    inst.wait_for(lambda: len(peers["busy.test"].sessions) >= 1, 30, "a session at busy.test")
    inst.wait_for(lambda: queue_files(inst, "active"), 30, "mail in the active queue")
    active_before = queue_files(inst, "active")
    code, err = postsuper(inst, "-d", "ALL", "deferred")
    assert code == 0, err
    assert err == "postsuper: Deleted: 4 messages\n"
    assert queue_files(inst, "deferred", "defer", "bounce") == []
    assert set(active_before) <= set(queue_files(inst, "active", "incoming"))
    GATE.set()
    for rcpt in busy:
        assert wait_status(inst, rcpt, timeout=60)["status"] == "sent"
    inst.wait_for(lambda: not queue_files(inst, "maildrop", "incoming", "active", "deferred",
                                          "hold", "defer", "bounce", "trace"),
                  30, "an empty queue")
    delivered = sorted(r for m in peers["busy.test"].messages for r in m.recipients)
    assert delivered == sorted(busy)
    assert "postfix/postsuper" in inst.log_text()
    assert_clean_log(inst)


def test_hold_and_release(site):
    inst, peers = site
    send(inst, "h0@good.test", subject="hold me")
    qid = held_qid(inst, "h0@good.test")
    assert where(inst, qid) == [f"hold/{qid}"]
    code, err = postsuper(inst, "-H", qid)
    assert (code, err) == (0, f"postsuper: {qid}: released from hold\n"
                              "postsuper: Released from hold: 1 message\n")
    flush(inst)
    assert wait_status(inst, "h0@good.test")["status"] == "sent"
    # a deferred message put on hold is not tried, not even on a flush
    send(inst, "h1@defer.test")
    qid = wait_deferred(inst, "h1@defer.test")
    code, err = postsuper(inst, "-h", qid)
    assert err == f"postsuper: {qid}: placed on hold\npostsuper: Placed on hold: 1 message\n"
    assert f"{qid}: placed on hold" in inst.log_text()
    flush(inst)
    send(inst, "h2@good.test")  # comes through after the flush was handled
    assert wait_status(inst, "h2@good.test")["status"] == "sent"
    assert len(statuses(inst, "h1@defer.test")) == 1
    assert where(inst, qid) == [f"hold/{qid}"]
    peers["defer.test"].rcpt = {"h1@defer.test": "250 2.1.5 Ok"}
    try:
        code, err = postsuper(inst, "-H", "-", input=f"{qid}\n")
        assert err.endswith("Released from hold: 1 message\n")
        flush(inst)
        assert wait_status(inst, "h1@defer.test", 2)["status"] == "sent"
    finally:
        peers["defer.test"].rcpt = "450 4.2.0 try again later"
    assert_clean_log(inst)


def test_requeue_after_transport_change(site):
    inst, peers = site
    send(inst, "r0@moved.test")
    qid = wait_deferred(inst, "r0@moved.test")
    inst.routes["moved.test"] = inst.routes["good.test"]
    write_routes(inst)
    r = inst.cmd("reload")
    assert r.returncode == 0, r.stderr
    code, err = postsuper(inst, "-r", qid)
    assert (code, err) == (0, f"postsuper: {qid}: requeued\npostsuper: Requeued: 1 message\n")
    st = wait_status(inst, "r0@moved.test", 2)
    assert st["status"] == "sent" and st["qid"] != qid
    assert re.search(rf"{st['qid']}: uid=\d+ from=<{SENDER}> orig_id={qid}", inst.log_text())
    [msg] = [m for m in peers["good.test"].messages if m.recipients == ["r0@moved.test"]]
    assert b"body for r0@moved.test" in msg.data
    assert where(inst, qid) == []
    assert not os.path.exists(inst.root / "queue" / "defer" / qid[0] / qid)
    assert_clean_log(inst)


def test_expire_returns_deferred_mail_with_its_reason(site):
    inst, _ = site
    before = sender_mail(inst)
    send(inst, "e0@defer.test")
    qid = wait_deferred(inst, "e0@defer.test")
    code, err = postsuper(inst, "-e", qid)
    assert (code, err) == (0, f"postsuper: {qid}: expired\npostsuper: Force-expired: 1 message\n")
    flush(inst)
    inst.wait_log(f"{qid}: from=<{SENDER}>, status=expired, returned to sender")
    inst.wait_log(f"{qid}: removed")
    inst.wait_for(lambda: new_mail(inst, before), 30, "the bounce to the sender")
    notice = new_mail(inst, before)
    assert b"e0@defer.test" in notice and b"try again later" in notice
    assert len(statuses(inst, "e0@defer.test")) == 1  # not tried again
    assert_clean_log(inst)


def test_force_expire_of_held_mail(site):
    inst, _ = site
    before = sender_mail(inst)
    send(inst, "f0@good.test", subject="hold me")
    qid = held_qid(inst, "f0@good.test")
    code, err = postsuper(inst, "-f", qid)
    assert (code, err) == (0, f"postsuper: {qid}: expired\n"
                              f"postsuper: {qid}: released from hold\n"
                              "postsuper: Force-expired: 1 message\n"
                              "postsuper: Released from hold: 1 message\n")
    flush(inst)
    st = wait_status(inst, "f0@good.test")
    assert (st["status"], st["dsn"], st["text"]) == (
        "deferred", "4.7.0", "message is administratively expired")
    inst.wait_log(f"{qid}: from=<{SENDER}>, status=expired, returned to sender")
    inst.wait_for(lambda: new_mail(inst, before), 30, "the bounce to the sender")
    notice = new_mail(inst, before)
    assert b"message is administratively expired" in notice
    assert_clean_log(inst)


def test_structure_repair_and_purge(site):
    inst, peers = site
    send(inst, "s0@moved.test")  # moved.test now goes to good.test
    assert wait_status(inst, "s0@moved.test")["status"] == "sent"
    send(inst, "s1@defer.test")
    qid = wait_deferred(inst, "s1@defer.test")
    q = inst.root / "queue"
    right = q / "deferred" / qid[0] / qid
    wrong = q / "deferred" / qid
    os.rename(right, wrong)  # as after a change of hash_queue_names
    stale = q / "incoming" / "123456.99.0"
    stale.write_bytes(b"")
    os.chmod(stale, 0o600)
    os.utime(stale, (1, 1))
    alien = q / "incoming" / "X"
    alien.mkdir()
    code, err = postsuper(inst, "-s", "-p")
    assert (code, err) == (0, "")
    assert right.exists() and not wrong.exists()
    assert not stale.exists() and not alien.exists()
    peers["defer.test"].rcpt = {"s1@defer.test": "250 2.1.5 Ok"}
    try:
        flush(inst)
        assert wait_status(inst, "s1@defer.test", 2)["status"] == "sent"
    finally:
        peers["defer.test"].rcpt = "450 4.2.0 try again later"
    assert_clean_log(inst)


def test_bad_ids_and_names(site):
    inst, _ = site
    outside = inst.root / "precious"
    outside.write_text("keep me\n")
    code, err = postsuper(inst, "-d", "../../precious", "-d", "ABCDE1")
    assert (code, err) == (0, "postsuper: warning: invalid mail queue id: ../../precious\n"
                              "postsuper: Deleted: 0 messages\n")
    code, err = postsuper(inst, "-d", "-", input="../precious\n\n")
    assert err == ("postsuper: warning: invalid mail queue id: ../precious\n"
                   "postsuper: warning: invalid mail queue id: \n"
                   "postsuper: Deleted: 0 messages\n")
    assert outside.read_text() == "keep me\n"
    code, err = postsuper(inst, "-h", "ALL", "../..")
    assert (code, err) == (1, "postsuper: fatal: invalid directory name: ../..\n")
    assert "warning: invalid mail queue id: ../../precious" in inst.log_text()


def test_delete_a_message_being_delivered(site):
    inst, peers = site
    send(inst, "a0@slow.test")
    inst.wait_for(lambda: len(peers["slow.test"].sessions) >= 1, 30, "a session at slow.test")
    [path] = queue_files(inst, "active")
    qid = os.path.basename(path)
    code, err = postsuper(inst, "-d", qid)
    assert (code, err) == (0, f"postsuper: {qid}: removed\npostsuper: Deleted: 1 message\n")
    SLOW_GATE.set()  # the agent has the file open: this delivery completes
    assert wait_status(inst, "a0@slow.test")["status"] == "sent"
    inst.wait_log(f"{qid}: no longer in the active queue")
    assert where(inst, qid) == []
    assert queue_files(inst, "defer", "bounce", "trace") == []
    assert_clean_log(inst)

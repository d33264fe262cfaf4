"""t-27: looking into the queue of a real instance: postcat, qshape, postlog.

One hato instance relays three domains through transport_maps to a scripted
peer (tests/smtp_peer.py) that answers 450 to every recipient, so a message
sent over SMTP with 8-bit header bytes, DSN parameters (RET, ENVID, NOTIFY,
ORCPT) and 1,000 recipients stays in the deferred queue. Then:

* ``hato postcat -q ID`` shows its envelope with every recipient, in
  Postfix's layout; ``-e``, ``-h`` and ``-b`` show the envelope, the header
  and the body alone, the 8-bit bytes as they are;
* ``hato postlog`` lines reach the instance's maillog in the format of its
  other lines, while hato runs;
* with the instance stopped, more deferred messages of known ages are put in
  the queue with the store API, and ``hato qshape`` shows per domain and
  age bucket exactly the pending recipients the test counts itself.
"""

from __future__ import annotations

import os
import re
import smtplib
import time
from collections import Counter

import pytest

from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import QueueStore
from tests.smtp_peer import SmtpPeer

from .instance import Instance

pytestmark = pytest.mark.integration

DOMAINS = {"a.t27.test": 600, "b.t27.test": 300, "c.t27.test": 100}
SENDER = "sender@origin.test"
HEADER = (b"From: Se\xc3\xb1or <sender@origin.test>\r\n"
          b"To: undisclosed-recipients:;\r\n"
          b"Subject: caf\xc3\xa9 \xe9t\xe9 raw 8-bit\r\n"
          b"X-Folded: first\r\n\tsecond\r\n")
BODY = b"\r\nbody line one\r\nnot-a-header: in the body\r\n"
#: qshape's default bucket limits, in minutes (the last bucket has none)
LIMITS = [5, 10, 20, 40, 80, 160, 320, 640, 1280]


def recipients() -> list[str]:
    return [f"u{i}@{dom}" for dom, n in DOMAINS.items() for i in range(n)]


@pytest.fixture(scope="module")
def site():
    inst = Instance("t27")
    peer = SmtpPeer(name="peer.t27.test", rcpt=lambda s, a: "450 4.2.0 Try again later")
    try:
        table = inst.root / "transport"
        table.write_text("".join(f"{d} smtp:[127.0.0.1]:{peer.port}\n" for d in DOMAINS))
        inst.postconf(f"transport_maps = texthash:{table}", "smtp_connect_timeout = 5s")
        inst.start()
        yield inst, peer
    finally:
        inst.cleanup()
        peer.close()


def queue_files(inst: Instance, queue: str) -> list[str]:
    out = []
    for top, _dirs, files in os.walk(inst.root / "queue" / queue):
        out.extend(os.path.join(top, f) for f in files)
    return out


@pytest.fixture(scope="module")
def deferred(site):
    inst, _ = site
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as s:
        s.ehlo("client.t27.test")
        s.mail(SENDER, ["RET=HDRS", "ENVID=T27-ENVID", "BODY=8BITMIME"])
        for n, rcpt in enumerate(recipients()):
            opts = (["NOTIFY=SUCCESS,DELAY", f"ORCPT=rfc822;Orig-{rcpt}"] if n % 2 == 0
                    else ["NOTIFY=NEVER"])
            code, _ = s.rcpt(rcpt, opts)
            assert code == 250, (rcpt, code)
        code, reply = s.data(HEADER + BODY)
        assert code == 250, reply
    qid = re.search(rb"queued as (\w+)", reply).group(1).decode()
    # every delivery attempt was answered 450: the message waits in deferred/
    inst.wait_for(lambda: any(p.endswith("/" + qid) for p in queue_files(inst, "deferred")),
                  timeout=120, what=f"{qid} in the deferred queue")
    inst.wait_log(f"{qid}: to=<u0@c.t27.test>")
    return inst, qid


def postcat(inst: Instance, *args: str) -> bytes:
    r = inst.cmd("postcat", *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_postcat_shows_the_whole_envelope(deferred):
    inst, qid = deferred
    out = postcat(inst, "-q", qid)
    lines = out.split(b"\n")
    [path] = [p for p in queue_files(inst, "deferred") if p.endswith("/" + qid)]
    rel = os.path.relpath(path, inst.root / "queue").encode()
    assert lines[0] == b"*** ENVELOPE RECORDS " + rel + b" ***"
    assert lines[1].startswith(b"message_size: ")
    assert b"sender: " + SENDER.encode() in lines
    assert b"dsn_return_flags: 2" in lines
    assert b"dsn_envelope_id: T27-ENVID" in lines
    shown = [line.split(b": ", 1)[1].decode() for line in lines
             if line.startswith((b"recipient: ", b"done_recipient: "))]
    assert len(shown) == 1000
    assert sorted(shown) == sorted(recipients())
    assert lines.count(b"dsn_notify_flags: 10") == 500  # SUCCESS,DELAY
    assert lines.count(b"dsn_notify_flags: 1") == 500  # NEVER
    assert b"dsn_original_recipient: rfc822;Orig-u0@a.t27.test" in lines
    # the ORCPT the client gave, else (as Postfix's smtpd) the address itself
    assert sum(line.startswith(b"dsn_original_recipient: rfc822;Orig-") for line in lines) == 500
    assert b"*** MESSAGE CONTENTS " + rel + b" ***" in lines
    assert lines[-2] == b"*** MESSAGE FILE END " + rel + b" ***" and lines[-1] == b""


def test_postcat_envelope_header_and_body(deferred):
    inst, qid = deferred
    envelope = postcat(inst, "-e", "-q", qid)
    assert b"Subject:" not in envelope and b"body line one" not in envelope
    assert envelope.count(b"recipient: ") >= 1000
    header = postcat(inst, "-h", "-q", qid)
    # hato's Received: line first, then the client's header, 8-bit bytes as sent
    assert header.startswith(b"Received: ")
    assert HEADER.replace(b"\r\n", b"\n") in header or HEADER in header
    assert b"caf\xc3\xa9 \xe9t\xe9" in header
    body = postcat(inst, "-b", "-q", qid)
    assert body in (BODY, BODY.replace(b"\r\n", b"\n"))
    assert postcat(inst, "-bh", "-q", qid) == header + body


def test_postcat_errors(deferred):
    inst, _ = deferred
    r = inst.cmd("postcat", "-q", "../../etc/passwd")
    assert r.returncode == 1
    assert r.stderr == b"postcat: fatal: bad mail queue ID: ../../etc/passwd\n"
    r = inst.cmd("postcat", "-q", "ABCDEF0123")
    assert r.returncode == 1
    assert r.stderr == b"postcat: fatal: open queue file ABCDEF0123: No such file or directory\n"


def test_postlog_writes_the_maillog(site):
    inst, _ = site
    r = inst.cmd("postlog", "-p", "warn", "t27", "hello")
    assert r.returncode == 0, r.stderr
    r = inst.cmd("postlog", "-t", "t27-script", input=b"line one\nline two\n")
    assert r.returncode == 0, r.stderr
    lines = inst.log_text().splitlines()
    ours = [line for line in lines if "t27" in line and ("postlog" in line or "t27-script" in line)]
    stamp = r"[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d"
    assert len(ours) == 3, ours
    assert re.fullmatch(stamp + r" \S+ postfix/postlog\[\d+\]: warning: t27 hello", ours[0])
    assert re.fullmatch(stamp + r" \S+ t27-script\[(\d+)\]: line one", ours[1])
    assert re.fullmatch(stamp + r" \S+ t27-script\[(\d+)\]: line two", ours[2])
    # the same host name as the lines of hato's own daemons
    host = ours[0].split()[3]
    assert any(re.match(stamp + rf" {re.escape(host)} postfix/smtpd\[", line) for line in lines)


def bucket_of(age_minutes: float) -> int:
    for n, limit in enumerate(LIMITS, start=1):
        if age_minutes < limit:
            return n
    return len(LIMITS) + 1


def test_qshape_counts_what_the_queue_holds(site, deferred):
    inst, _ = deferred
    inst.stop()
    store = QueueStore(str(inst.root / "queue"))
    now = time.time()
    # ages in the middle of buckets, recipients over a few domains, some done
    ages = [7, 15, 30, 60, 120, 240, 480, 960, 3000]
    for n, age in enumerate(ages):
        w = store.create("deferred")
        rcpts = [Recipient(f"x{i}@{dom}", done=(i % 3 == 0))
                 for i, dom in enumerate(["d.t27.test", "a.t27.test", "e.other.test"] * (n + 1))]
        w.write_envelope(Envelope(sender="" if n % 2 else "s@origin.test",
                                  arrival_time=now - age * 60, recipients=rcpts))
        w.write_content(b"Subject: aged\n\nbody\n")
        w.commit()
    # what the queue holds, counted here: pending recipients by domain and age
    expected: dict[str, Counter] = {}
    senders: dict[str, Counter] = {}
    now = time.time()
    for q in ("deferred",):
        for name in store.list(q):
            with store.open(q, name, writable=False) as f:
                env = f.envelope
            b = bucket_of((now - env.arrival_time) / 60)
            pending = [r for r in env.recipients if not r.done]
            if not pending:
                continue
            for r in pending:
                for key in ("TOTAL", r.address.rsplit("@", 1)[1].lower()):
                    expected.setdefault(key, Counter())[b] += 1
            sender = env.sender.rsplit("@", 1)[1] if env.sender else "MAILER-DAEMON"
            for key in ("TOTAL", sender):
                senders.setdefault(key, Counter())[b] += 1
    r = inst.cmd("qshape", "deferred")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["T", "5", "10", "20", "40", "80", "160", "320", "640",
                                "1280", "1280+"]
    table = {line.split()[0]: [int(v) for v in line.split()[1:]] for line in lines[1:]}
    assert table == {d: [sum(c.values())] + [c[b] for b in range(1, 11)]
                     for d, c in expected.items()}
    totals = [row[0] for row in table.values()]
    assert totals == sorted(totals, reverse=True)
    assert lines[1].split()[0] == "TOTAL"
    r = inst.cmd("qshape", "-s", "deferred")
    table = {line.split()[0]: [int(v) for v in line.split()[1:]]
             for line in r.stdout.decode().splitlines()[1:]}
    assert table == {d: [sum(c.values())] + [c[b] for b in range(1, 11)]
                     for d, c in senders.items()}

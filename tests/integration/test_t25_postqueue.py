"""t-25: postqueue -p/-j/-f/-i/-s, mailq and sendmail -bp on a live queue.

One hato instance for the module; mail goes in over SMTP and is relayed
(transport_maps) to scripted peers (tests/smtp_peer.py):

* ``defer.test``: 450 to every recipient but ``c-ok@``, with a short and a
  long reason, so deferred mail has its reasons in the defer log;
* ``slow.test``: holds its reply to the end of data until the test has
  listed the queue (a delivery in progress: the message is in active/);
* ``flip.test``, ``flop.test``: 450 until the test lets them accept, for
  ``-i`` and ``-s``.

A held message is made by moving a deferred one into hold/ with the store
API (what ``postsuper -h`` does). The comparison with Debian's Postfix for
the same states is tests/differential/test_postqueue.py.
"""

from __future__ import annotations

import json
import os
import re
import smtplib
import subprocess
import sys
import threading

import pytest

from hato.queue import envelope as E
from hato.queue import records as R
from hato.queue.store import QueueStore
from tests.smtp_peer import SmtpPeer

from .instance import Instance, hato_command, hato_env
from .maillog import statuses, wait_status

pytestmark = pytest.mark.integration

SHORT = "450 wait"
LONG = ("450 4.7.1 <b-long@defer.test>: Recipient address rejected: this is a long "
        "explanation of why the mail cannot be delivered now, please try again later")
HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
INDENT = " " * 41
MSG_LINE = re.compile(r"^(?P<id>[0-9A-F]+)(?P<mark>[*!#]*) +(?P<size>\d+) "
                      r"(?P<date>\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d)  (?P<sender>\S+)$")


def defer_rcpt(session, addr: str) -> str | None:
    if addr.startswith("a-short@"):
        return SHORT
    if addr.startswith("b-long@") or addr.startswith("null@") or addr.startswith("held@"):
        return LONG if addr.startswith("b-long@") else "450 4.2.0 not now"
    return None


class Switch:
    """A peer's RCPT hook: 450 until opened."""

    def __init__(self):
        self.open = False

    def __call__(self, session, addr: str) -> str | None:
        return None if self.open else "450 4.3.2 closed for now"


@pytest.fixture(scope="module")
def site():
    release = threading.Event()
    flip, flop = Switch(), Switch()
    peers = {
        "defer.test": SmtpPeer(name="defer.test", rcpt=defer_rcpt),
        "slow.test": SmtpPeer(name="slow.test", dot=lambda s, a: release.wait(120) and None),
        "flip.test": SmtpPeer(name="flip.test", rcpt=flip),
        "flop.test": SmtpPeer(name="flop.test", rcpt=flop),
    }
    inst = Instance("t25")
    try:
        table = inst.root / "transport"
        table.write_text("".join(f"{dom} smtp:[127.0.0.1]:{p.port}\n" for dom, p in peers.items()))
        inst.postconf(f"transport_maps = texthash:{table}", "fast_flush_domains = flip.test",
                      "smtp_connect_timeout = 5s")
        inst.start()
        yield inst, peers, release, (flip, flop)
    finally:
        release.set()
        inst.cleanup()
        for p in peers.values():
            p.close()


def smtp_send(inst: Instance, sender: str, *rcpts: str, subject: str = "t25") -> str:
    """Send over SMTP; the queue id from the 250 reply."""
    body = f"From: demo@hato.test\nSubject: {subject}\n\nhello\n"
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail(sender)
        for r in rcpts:
            code, _ = s.rcpt(r)
            assert code == 250
        code, reply = s.data(body.encode())
    assert code == 250, reply
    m = re.search(rb"queued as (\w+)", reply)
    assert m, reply
    return m.group(1).decode()


def store_of(inst: Instance) -> QueueStore:
    return QueueStore(str(inst.root / "queue"))


def where(inst: Instance, qid: str) -> str | None:
    return store_of(inst).find(qid)


def postqueue(inst: Instance, *args: str) -> subprocess.CompletedProcess:
    r = inst.cmd("postqueue", *args)
    r.stdout = r.stdout.decode()
    r.stderr = r.stderr.decode()
    return r


def blocks(listing: str) -> dict[str, list[str]]:
    """postqueue -p output → {queue id: its lines}, checking the layout."""
    lines = listing.splitlines()
    assert lines[0] == HEADER
    assert re.fullmatch(r"-- \d+ Kbytes in \d+ Requests?\.", lines[-1]), lines[-1]
    assert lines[-2] == ""
    out: dict[str, list[str]] = {}
    for chunk in "\n".join(lines[1:-2]).split("\n\n"):
        first = chunk.split("\n")[0]
        m = MSG_LINE.match(first)
        assert m, first
        out[m["id"]] = chunk.split("\n")
    return out


def segment_size(path: str) -> int:
    with open(path, "rb") as f:
        data = f.read(4096)
    first = next(R.read_records(lambda off, n: data[off:off + n], 0))
    return E.parse_size_record(first.data)[0]


def test_listing_of_a_live_queue(site):
    inst, peers, release, _switches = site
    deferred = smtp_send(inst, "demo@hato.test", "a-short@defer.test", "b-long@defer.test",
                         "c-ok@defer.test")
    null = smtp_send(inst, "", "null@defer.test")
    held = smtp_send(inst, "held@hato.test", "held@defer.test")
    for rcpt in ("a-short@defer.test", "b-long@defer.test", "null@defer.test",
                 "held@defer.test"):
        assert wait_status(inst, rcpt)["status"] == "deferred"
    assert wait_status(inst, "c-ok@defer.test")["status"] == "sent"
    inst.wait_for(lambda: all(where(inst, q) == "deferred" for q in (deferred, null, held)),
                  what="three deferred messages")
    store_of(inst).move(held, "deferred", "hold")
    active = smtp_send(inst, "slow@hato.test", "s@slow.test")
    inst.wait_for(lambda: any("DATA" in s.commands for s in peers["slow.test"].sessions),
                  what="the slow peer to have the data")
    try:
        assert where(inst, active) == "active"
        r = postqueue(inst, "-p")
        assert r.returncode == 0 and r.stderr == "", r.stderr
        got = blocks(r.stdout)
        assert set(got) >= {deferred, null, held, active}
        # active: the marker, no reason
        assert MSG_LINE.match(got[active][0])["mark"] == "*"
        assert got[active][0].endswith("  slow@hato.test")
        assert got[active][1:] == [INDENT + "s@slow.test"]
        # deferred: reasons above their recipients; the delivered one is gone
        why_a = statuses(inst, "a-short@defer.test")[-1]["text"]
        why_b = statuses(inst, "b-long@defer.test")[-1]["text"]
        assert len(why_b) > 76 and len(why_a) < 76
        assert MSG_LINE.match(got[deferred][0])["mark"] == ""
        assert sorted(zip(got[deferred][1::2], got[deferred][2::2])) == sorted([
            (" " * (76 - len(why_a)) + f"({why_a})", INDENT + "a-short@defer.test"),
            (f"({why_b})", INDENT + "b-long@defer.test")])
        # the null sender
        assert got[null][0].endswith("  MAILER-DAEMON")
        assert got[null][2] == INDENT + "null@defer.test"
        # hold: the marker, the reason still shown
        assert MSG_LINE.match(got[held][0])["mark"] == "!"
        assert got[held][2] == INDENT + "held@defer.test" and "(" in got[held][1]
        total = sum(int(MSG_LINE.match(b[0])["size"]) for b in got.values())
        assert r.stdout.splitlines()[-1] == (f"-- {total // 1024} Kbytes in {len(got)} "
                                             f"Request{'s' if len(got) > 1 else ''}.")

        # -j: every member checked against the queue and the log
        r = postqueue(inst, "-j")
        assert r.returncode == 0, r.stderr
        objs = {o["queue_id"]: o for o in map(json.loads, r.stdout.splitlines())}
        assert set(objs) == set(got)
        store = store_of(inst)
        for qid, o in objs.items():
            assert list(o) == ["queue_name", "queue_id", "arrival_time", "message_size",
                               "forced_expire", "sender", "recipients"]
            queue = o["queue_name"]
            assert store.find(qid) == queue
            with store.open(queue, qid, writable=False) as f:
                env = f.envelope
                path = f.path
            assert o["arrival_time"] == int(env.arrival_time)
            assert o["message_size"] == segment_size(path)
            assert o["message_size"] == int(MSG_LINE.match(got[qid][0])["size"])
            assert o["forced_expire"] is False
            assert o["sender"] == (env.sender or "MAILER-DAEMON")
            assert sorted(x["address"] for x in o["recipients"]) == \
                sorted(x.address for x in env.recipients if not x.done)
            for x in o["recipients"]:
                sts = statuses(inst, x["address"])
                if sts and sts[-1]["status"] == "deferred":
                    assert x["delay_reason"] == sts[-1]["text"]
                else:
                    assert "delay_reason" not in x
        assert {objs[q]["queue_name"] for q in (deferred, null)} == {"deferred"}
        assert (objs[held]["queue_name"], objs[active]["queue_name"]) == ("hold", "active")
        assert objs[null]["sender"] == "MAILER-DAEMON"

        # mailq under its own name, hato mailq and sendmail -bp say the same
        r_mailq = subprocess.run(
            [sys.executable, "-c", "import sys; from hato.cli.main import main; "
             "sys.exit(main(['/usr/bin/mailq']))"],
            capture_output=True, text=True, env={**hato_env(), "MAIL_CONFIG": str(inst.root)})
        r_hato = inst.cmd("mailq")
        r_bp = inst.cmd("sendmail", "-bp")
        r_p = postqueue(inst, "-p")
        assert r_mailq.returncode == r_hato.returncode == r_bp.returncode == 0
        assert r_mailq.stdout == r_hato.stdout.decode() == r_bp.stdout.decode() == r_p.stdout
    finally:
        release.set()
    assert wait_status(inst, "s@slow.test")["status"] == "sent"


def test_flush_one_message(site):
    inst, peers, _release, (flip, _flop) = site
    one = smtp_send(inst, "demo@hato.test", "x@flip.test", subject="one")
    two = smtp_send(inst, "demo@hato.test", "y@flip.test", subject="two")
    for rcpt in ("x@flip.test", "y@flip.test"):
        assert wait_status(inst, rcpt)["status"] == "deferred"
    inst.wait_for(lambda: where(inst, one) == where(inst, two) == "deferred", what="deferred")
    flip.open = True
    try:
        r = postqueue(inst, "-i", one)
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert wait_status(inst, "x@flip.test", 2)["status"] == "sent"
        inst.wait_for(lambda: where(inst, one) is None, what=f"{one} to leave the queue")
        assert where(inst, two) == "deferred"
        assert len(statuses(inst, "y@flip.test")) == 1
        assert [m.recipients for m in peers["flip.test"].messages] == [["x@flip.test"]]
        # an id that is not in the queue: nothing happens, as with Postfix
        before = sorted(os.walk(inst.root / "queue"))
        r = postqueue(inst, "-i", "3F2A1C4D5E")
        assert (r.returncode, r.stderr) == (0, "")
        r = postqueue(inst, "-i", "../../etc/passwd")
        assert r.returncode == 69
        assert r.stderr == ('postqueue: fatal: Cannot flush queue ID - invalid name: '
                            '"../../etc/passwd"\n')
        assert sorted(os.walk(inst.root / "queue")) == before
        assert where(inst, two) == "deferred"
        # -s for the domain sends the rest
        r = postqueue(inst, "-s", "FLIP.test")
        assert (r.returncode, r.stderr) == (0, "")
        assert wait_status(inst, "y@flip.test", 2)["status"] == "sent"
    finally:
        flip.open = False


def test_flush_site(site):
    inst, peers, _release, (flip, flop) = site
    a = smtp_send(inst, "demo@hato.test", "a@flip.test", subject="site a")
    b = smtp_send(inst, "demo@hato.test", "b@flop.test", subject="site b")
    for rcpt in ("a@flip.test", "b@flop.test"):
        assert wait_status(inst, rcpt)["status"] == "deferred"
    inst.wait_for(lambda: where(inst, a) == where(inst, b) == "deferred", what="deferred")
    flip.open = flop.open = True
    try:
        # flop.test is not in fast_flush_domains
        r = postqueue(inst, "-s", "flop.test")
        assert r.returncode == 69
        assert r.stderr == ('postqueue: fatal: Flush service is not configured for '
                            'destination "flop.test"\n')
        r = postqueue(inst, "-s", "flip.test")
        assert (r.returncode, r.stderr) == (0, "")
        assert wait_status(inst, "a@flip.test", 2)["status"] == "sent"
        inst.wait_for(lambda: where(inst, a) is None, what=f"{a} to leave the queue")
        assert where(inst, b) == "deferred" and len(statuses(inst, "b@flop.test")) == 1
        # -f sends everything
        r = postqueue(inst, "-f")
        assert (r.returncode, r.stderr) == (0, "")
        assert wait_status(inst, "b@flop.test", 2)["status"] == "sent"
        assert peers["flop.test"].messages[-1].recipients == ["b@flop.test"]
    finally:
        flip.open = flop.open = False


def as_nobody(inst: Instance, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["runuser", "-u", "nobody", "--", *hato_command(), "-c",
                           str(inst.root), *args], capture_output=True, text=True,
                          env=hato_env(), timeout=120, cwd="/")


def test_permissions_of_an_unprivileged_user(site):
    inst, _peers, _release, _switches = site
    if os.geteuid() != 0:
        pytest.fail("this test runs commands as the user nobody and must run as root")
    uid = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
    main_cf = (inst.root / "main.cf").read_text()
    try:
        inst.postconf("authorized_mailq_users = root", "authorized_flush_users = root")
        for args, what in ((("-p",), "view"), (("-j",), "view"), (("mailq",), "view"),
                           (("-f",), "flush"), (("-i", "3F2A1C4D5E"), "flush"),
                           (("-s", "flip.test"), "flush")):
            cmd = args if args[0] == "mailq" else ("postqueue", *args)
            r = as_nobody(inst, *cmd)
            assert r.returncode == 69, (args, r.stderr)
            assert r.stderr == (f"postqueue: fatal: User nobody({uid}) is not allowed to "
                                f"{what} the mail queue\n"), args
        # root is always allowed
        assert postqueue(inst, "-p").returncode == 0
        # allowed by the lists: the showq and flush services (running as the
        # mail owner) answer for the user, who cannot read the queue itself
        inst.postconf("authorized_mailq_users = !root, nobody",
                      "authorized_flush_users = nobody")
        r = as_nobody(inst, "postqueue", "-p")
        assert r.returncode == 0, r.stderr
        mine = postqueue(inst, "-p").stdout
        mine = mine.decode() if isinstance(mine, bytes) else mine
        assert r.stdout.splitlines()[0] == mine.splitlines()[0]
        assert r.stdout.rstrip().splitlines()[-1] == mine.rstrip().splitlines()[-1]
        r = as_nobody(inst, "postqueue", "-j")
        assert r.returncode == 0 and all(json.loads(line) for line in r.stdout.splitlines())
        r = as_nobody(inst, "postqueue", "-i", "3F2A1C4D5E")  # not deferred: nothing to do
        assert (r.returncode, r.stderr) == (0, "")
        r = as_nobody(inst, "postqueue", "-f")
        assert (r.returncode, r.stderr) == (0, "")
        r = as_nobody(inst, "postqueue", "-s", "elsewhere.test")  # the flush service's answer
        assert (r.returncode, r.stderr) == (69, 'postqueue: fatal: Flush service is not '
                                                'configured for destination "elsewhere.test"\n')
        # the services check the user themselves: a client that skips
        # postqueue's own check is refused by showq once the list says so
        inst.postconf("authorized_mailq_users = root")
        assert inst.cmd("reload").returncode == 0
        sock = inst.root / "queue" / "public" / "showq"
        probe = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                 "s.sendall(b'request=list\\nformat=p\\n\\n'); "
                 "print(s.recv(4096).decode())")
        answers: list[str] = []

        def refused() -> bool:
            r = subprocess.run(["runuser", "-u", "nobody", "--", sys.executable, "-c", probe,
                                str(sock)], capture_output=True, text=True, timeout=30)
            answers.append(r.stdout + r.stderr)
            return r.stdout.startswith("status=1\n")
        inst.wait_for(refused, 30, "showq refusing the user after the reload")
        assert f"reason=User nobody({uid}) is not allowed to view the mail queue" in answers[-1]
    finally:
        (inst.root / "main.cf").write_text(main_cf)


def test_usage(site):
    inst, _peers, _release, _switches = site
    r = postqueue(inst)
    assert r.returncode == 69
    assert r.stderr == ("postqueue: fatal: usage: postqueue -f | postqueue -i queueid | "
                        "postqueue -j | postqueue -p | postqueue -s site\n")
    r = inst.cmd("sendmail", "-bp", "someone@x.test")
    assert r.returncode == 75
    assert r.stderr.decode() == "sendmail: fatal: display queue mode requires no recipient\n"

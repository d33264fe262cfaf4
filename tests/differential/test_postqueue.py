"""postqueue -p and -j, asked of Debian's Postfix and of hato with the same
queue states: a message deferred by a peer that answers 450 (one recipient
with a short reason, one with a reason longer than a line, one delivered),
a deferred message from the null sender, a held message (``postsuper -h``
on Postfix, a move into hold/ with the store API on hato), and a delivery in
progress (a peer that holds its reply to the end of data until both queues
are listed).

Queue ids, arrival times and sizes differ and are masked; the layout
(columns, markers, the reason lines and their alignment, recipients, blank
lines, the footer's wording) must be the same. Messages of one queue come in
directory order, which differs; they are compared as a set, the order of the
queues as it is.
"""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import threading

import pytest

from hato.queue.store import QueueStore
from tests.integration.instance import Instance
from tests.integration.maillog import wait_status
from tests.postfix_instance import PostfixInstance
from tests.smtp_peer import SmtpPeer

pytestmark = [pytest.mark.differential, pytest.mark.integration]

LONG = ("450 4.7.1 <b-long@defer.test>: Recipient address rejected: this is a long "
        "explanation of why the mail cannot be delivered now, please try again later")
RCPT_REPLIES = {"a-short@defer.test": "450 wait", "b-long@defer.test": LONG,
                "null@defer.test": "450 4.2.0 not now", "held@defer.test": "450 4.2.0 not now"}
MSG_LINE = re.compile(r"(?P<id>[0-9A-F]+)(?P<mark>[*!#]*) +(?P<size>\d+) "
                      r"(?P<date>\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d ) (?P<sender>\S.*)")
RANK = {"*": 0, "": 1, "!": 2}


class Site:
    """The peers of one MTA: defer.test (450s) and slow.test (holds the dot)."""

    def __init__(self):
        self.release = threading.Event()
        self.defer = SmtpPeer(name="defer.test", rcpt=RCPT_REPLIES)
        self.slow = SmtpPeer(name="slow.test", dot=lambda s, a: self.release.wait(120) and None)

    def routes(self) -> dict[str, str]:
        return {"defer.test": f"smtp:[127.0.0.1]:{self.defer.port}",
                "slow.test": f"smtp:[127.0.0.1]:{self.slow.port}"}

    def close(self) -> None:
        self.release.set()
        self.defer.close()
        self.slow.close()


def smtp_send(port: int, sender: str, *rcpts: str) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail(sender)
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, reply = s.data(b"From: demo@hato.test\nSubject: t\n\nhello\n")
    assert code == 250, reply
    return re.search(rb"queued as (\w+)", reply).group(1).decode()


def normalise(listing: str) -> tuple[str, list[tuple[str, ...]], str]:
    """(header, message blocks with ids, sizes and times masked, footer),
    checking each message line's columns on the way."""
    lines = listing.splitlines()
    header, footer = lines[0], lines[-1]
    assert lines[-2] == ""
    footer = re.sub(r"^-- \d+ Kbytes", "-- N Kbytes", footer)
    out = []
    for chunk in "\n".join(lines[1:-2]).split("\n\n"):
        first, *rest = chunk.split("\n")
        m = MSG_LINE.fullmatch(first)
        assert m, first
        # printf's "%-11s %7ld %20.20s %s" of those fields gives the line back
        assert first == f"{m['id'] + m['mark']:<11} {m['size']:>7} {m['date']} {m['sender']}"
        out.append((m["mark"], m["sender"], *rest))
    ranks = [RANK[b[0]] for b in out]
    assert ranks == sorted(ranks), "messages are listed queue by queue"
    return header, sorted(out), footer


def masked_json(listing: str) -> list[dict]:
    objs = []
    for line in listing.splitlines():
        o = json.loads(line)
        assert isinstance(o["arrival_time"], int) and isinstance(o["message_size"], int)
        o["queue_id"] = o["arrival_time"] = o["message_size"] = "*"
        objs.append(o)
    return sorted(objs, key=lambda o: json.dumps(o, sort_keys=True))


def make_states(port: int, site: Site, deferred_ok, hold, active_ok) -> None:
    ids = [smtp_send(port, "demo@hato.test", "a-short@defer.test", "b-long@defer.test",
                     "c-ok@defer.test"),
           smtp_send(port, "", "null@defer.test"),
           smtp_send(port, "held@hato.test", "held@defer.test")]
    deferred_ok(ids)
    hold(ids[2])
    smtp_send(port, "slow@hato.test", "s@slow.test")
    active_ok()


def wait(pred, what: str, timeout: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def slow_has_data(site: Site) -> bool:
    return any("DATA" in s.commands for s in site.slow.sessions)


def postfix_side() -> tuple[str, str, str]:
    site = Site()
    routes = ", ".join(f"{d}={t}" for d, t in site.routes().items())
    main = {"default_transport": "smtp", "relay_transport": "smtp",
            "transport_maps": f"inline:{{{routes}}}"}
    try:
        with PostfixInstance(main, master_cf_extra="smtp unix - - n - - smtp\n",
                             name="pq") as pf:
            def pq(*args: str) -> str:
                r = subprocess.run(["/usr/sbin/postqueue", "-c", str(pf.conf), *args],
                                   capture_output=True, text=True, env=pf.env, timeout=60)
                assert r.returncode == 0, r.stderr
                return r.stdout

            empty = pq("-p")

            def deferred_ok(ids):
                def all_deferred():
                    queues = {o["queue_id"]: o["queue_name"] for o in map(json.loads,
                                                                         pq("-j").splitlines())}
                    return all(queues.get(q) == "deferred" for q in ids)
                wait(all_deferred, "Postfix to defer the messages")

            def hold(qid):
                r = subprocess.run(["/usr/sbin/postsuper", "-c", str(pf.conf), "-h", qid],
                                   capture_output=True, text=True, env=pf.env, timeout=60)
                assert r.returncode == 0, r.stderr

            make_states(pf.port, site, deferred_ok, hold,
                        lambda: wait(lambda: slow_has_data(site), "Postfix's slow delivery"))
            listing, js = pq("-p"), pq("-j")
            site.release.set()
            return empty, listing, js
    finally:
        site.close()


def hato_side() -> tuple[str, str, str]:
    site = Site()
    inst = Instance("pqdiff")
    try:
        table = inst.root / "transport"
        table.write_text("".join(f"{d} {t}\n" for d, t in site.routes().items()))
        inst.postconf(f"transport_maps = texthash:{table}")
        inst.start()
        store = QueueStore(str(inst.root / "queue"))

        def pq(*args: str) -> str:
            r = inst.cmd("postqueue", *args)
            assert r.returncode == 0 and not r.stderr, r.stderr
            return r.stdout.decode()

        empty = pq("-p")

        def deferred_ok(ids):
            for rcpt in ("a-short@defer.test", "b-long@defer.test", "null@defer.test",
                         "held@defer.test"):
                wait_status(inst, rcpt)
            wait(lambda: all(store.find(q) == "deferred" for q in ids), "hato to defer them")

        make_states(inst.port, site, deferred_ok, lambda q: store.move(q, "deferred", "hold"),
                    lambda: wait(lambda: slow_has_data(site), "hato's slow delivery"))
        listing, js = pq("-p"), pq("-j")
        site.release.set()
        return empty, listing, js
    finally:
        site.close()
        inst.cleanup()


def test_postqueue_listing_as_postfix():
    pf_empty, pf_listing, pf_json = postfix_side()
    h_empty, h_listing, h_json = hato_side()
    assert h_empty == pf_empty == "Mail queue is empty\n"
    pf = normalise(pf_listing)
    assert len(pf[1]) == 4 and pf[2] == "-- N Kbytes in 4 Requests."
    assert normalise(h_listing) == pf
    assert masked_json(h_json) == masked_json(pf_json)

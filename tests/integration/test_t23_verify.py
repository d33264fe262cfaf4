"""t-23: address verification — the verify service, probes through qmgr and
the smtp agent, and smtpd's reject_unverified_recipient.

One hato instance: ``known.test`` is routed by transport_maps to a scripted
peer (tests/smtp_peer.py) that answers 550 for nobody@ and ghost@ and 250
for everyone else; ``down.test`` to a loopback port where nothing listens.
smtpd (main.cf) has ``smtpd_recipient_restrictions =
reject_unverified_recipient`` and ``address_verify_poll_count = 1``, so the
first RCPT for an unknown address is answered at once with "Address
verification in progress" while the probe goes out; the test waits for the
probe's result in the log, then asks again. A second smtpd on its own port
has ``-o unverified_recipient_reject_code=550``.

Probes must never be delivered: the peer never sees DATA from a probe, the
probe is removed after its attempt, and no bounce goes anywhere.
"""

from __future__ import annotations

import smtplib

import pytest

from tests.ports import port_holders
from tests.smtp_peer import SmtpPeer

from .instance import Instance, free_port, smtp_ready
from .maillog import statuses, wait_status

pytestmark = pytest.mark.integration

UNKNOWN = "550 5.1.1 Recipient address rejected: User unknown"

def rcpt_reply(port: int, rcpt: str, *, data: bytes | None = None) -> tuple[int, str]:
    """RCPT TO at hato's smtpd: (code, text with the enhanced status code);
    with *data* and a 250, the message is sent too."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.test")
        code, _ = c.mail("sender@client.test")
        assert code == 250
        code, text = c.rcpt(rcpt)
        if data is not None and code == 250:
            dcode, dtext = c.data(data)
            assert dcode == 250, dtext
        return code, text.decode()


@pytest.fixture(scope="module")
def site():
    peer = SmtpPeer(name="peer.known.test",
                    rcpt={"nobody@known.test": f"{UNKNOWN}",
                          "ghost@known.test": f"{UNKNOWN}"})
    down_port = free_port()  # nothing listens there
    inst = Instance("t23")
    port550 = free_port()
    try:
        table = inst.root / "transport"
        table.write_text(f"known.test smtp:[127.0.0.1]:{peer.port}\n"
                         f"down.test smtp:[127.0.0.1]:{down_port}\n")
        with open(inst.root / "master.cf", "a") as f:
            f.write(f"127.0.0.1:{port550} inet n - n - - smtpd\n"
                    f"  -o unverified_recipient_reject_code=550\n")
        inst.postconf(f"transport_maps = texthash:{table}",
                      "relay_domains = known.test, down.test",
                      "smtpd_recipient_restrictions = reject_unverified_recipient",
                      "address_verify_poll_count = 1",
                      "smtp_connect_timeout = 5s")
        r = inst.cmd("check")
        assert b"reject_unverified_recipient" not in r.stderr, r.stderr
        inst.start()
        inst.wait_for(lambda: smtp_ready(port550), 30, "the second smtpd")
        yield inst, peer, port550, down_port
    finally:
        inst.cleanup()
        peer.close()


def in_progress(rcpt: str) -> str:
    return (f"4.1.1 <{rcpt}>: Recipient address rejected: unverified address: "
            "Address verification in progress")


#: the peer's answer as the smtp client reports it
SAID = ("host 127.0.0.1[127.0.0.1] said: 550 5.1.1 Recipient address rejected: User unknown "
        "(in reply to RCPT TO command)")


def assert_probe_removed(inst: Instance, qid: str) -> None:
    inst.wait_log(f"{qid}: removed")
    inst.wait_for(inst.queue_empty, 30, "an empty queue")


def test_unknown_recipient_is_rejected_from_the_cache(site):
    inst, peer, _port550, _down = site
    rcpt = "nobody@known.test"
    before = peer.connections
    assert rcpt_reply(inst.port, rcpt) == (450, in_progress(rcpt))
    st = wait_status(inst, rcpt)
    assert (st["agent"].endswith("smtp"), st["status"], st["dsn"]) == \
        (True, "undeliverable", "5.1.1"), st
    assert st["relay"] == f"127.0.0.1[127.0.0.1]:{peer.port}", st
    assert st["text"] == SAID, st
    assert_probe_removed(inst, st["qid"])
    assert peer.connections == before + 1
    # the probe's sender and recipient, and no DATA
    probe_session = peer.sessions[before]
    assert "DATA" not in [c.split()[0].upper() for c in probe_session.commands]
    assert any(c.upper().startswith("MAIL FROM:<DOUBLE-BOUNCE@") for c in
               probe_session.commands), probe_session.commands
    # asked again: answered from the cache, no new probe
    code, text = rcpt_reply(inst.port, rcpt)
    assert (code, text) == (450, f"4.1.1 <{rcpt}>: Recipient address rejected: unverified "
                                 f"address: {SAID}")
    assert peer.connections == before + 1
    assert len(statuses(inst, rcpt)) == 1
    log = inst.log_text()
    assert f"NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 450 {text}; " \
           f"from=<sender@client.test> to=<{rcpt}> proto=ESMTP helo=<client.test>" in log, \
        log[-3000:]


def test_reject_code_550_says_undeliverable(site):
    inst, peer, port550, _down = site
    rcpt = "ghost@known.test"
    assert rcpt_reply(port550, rcpt) == (450, in_progress(rcpt))
    st = wait_status(inst, rcpt)
    assert (st["status"], st["dsn"]) == ("undeliverable", "5.1.1"), \
        (f"{dict(st)}\npeer on port {peer.port}, its sessions:\n"
         + "".join(f"  {x.number}: {list(zip(x.commands, x.replies[1:]))}\n"
                   for x in peer.sessions)
         + f"{port_holders(peer.port)}\n{inst.log_text()[-4000:]}")
    assert_probe_removed(inst, st["qid"])
    assert rcpt_reply(port550, rcpt) == (550, f"5.1.1 <{rcpt}>: Recipient address rejected: "
                                              f"undeliverable address: "
                                              f"{SAID}")
    # the other smtpd keeps the default 450
    assert rcpt_reply(inst.port, rcpt)[0] == 450


def test_known_recipient_is_accepted_and_mail_delivered_once(site):
    inst, peer, _port550, _down = site
    rcpt = "joe@known.test"
    before = peer.connections
    assert rcpt_reply(inst.port, rcpt) == (450, in_progress(rcpt))
    st = wait_status(inst, rcpt)
    # the peer's answer to RCPT TO, as Postfix's smtp logs it for a probe
    assert (st["status"], st["dsn"], st["text"]) == ("deliverable", "2.1.5", "250 2.1.5 Ok"), st
    assert_probe_removed(inst, st["qid"])
    assert peer.messages == []  # the probe was not delivered
    msg = b"From: sender@client.test\r\nTo: joe@known.test\r\nSubject: t23\r\n\r\nhello\r\n"
    assert rcpt_reply(inst.port, rcpt, data=msg)[0] == 250
    st = wait_status(inst, rcpt, 2)
    assert st["status"] == "sent", st
    assert [m.recipients for m in peer.messages] == [[rcpt]]
    assert b"Subject: t23" in peer.messages[0].data
    # the probe session, then the delivery: two connections in all
    assert peer.connections == before + 2


def test_peer_down_gives_a_deferred_result(site):
    inst, _peer, _port550, down_port = site
    rcpt = "x@down.test"
    assert rcpt_reply(inst.port, rcpt) == (450, in_progress(rcpt))
    st = wait_status(inst, rcpt)
    assert st["status"] == "undeliverable" and st["dsn"].startswith("4."), st
    assert f"127.0.0.1[127.0.0.1]:{down_port}" in st["text"], st
    assert "Connection refused" in st["text"], st
    # never deferred in the queue: removed after its attempt
    assert_probe_removed(inst, st["qid"])
    code, text = rcpt_reply(inst.port, rcpt)
    assert (code, text) == (450, f"4.1.1 <{rcpt}>: Recipient address rejected: unverified "
                                 f"address: {st['text']}")


def test_probes_never_bounce(site):
    inst, _peer, _port550, _down = site
    inst.wait_for(inst.queue_empty, 30, "an empty queue")
    log = inst.log_text()
    assert "non-delivery notification" not in log
    assert "status=bounced" not in log and "status=deferred" not in log
    assert not (inst.root / "mail" / "hato.test" / "demo" / "new").is_dir() or \
        not any((inst.root / "mail" / "hato.test" / "demo" / "new").iterdir())

"""t-20: the smtp delivery agent against scripted peers (tests/smtp_peer.py)
and MX routing through the test DNS server (tests/dnsserver.py).

Each mail goes into a hato instance with ``sendmail``; the smtp agent
relays it; the outcome is read from hato's log (Postfix's ``to=<...>,
relay=..., dsn=..., status=... (...)`` lines), its queue and the peers'
transcripts. Bounce notices go to demo@hato.test (the sender), whose
Maildir is read back for the DSN.

All tests share one hato instance. Part 1: every scenario is a domain
routed by transport_maps to its own scripted peer on 127.0.0.1
(``smtp_noskip`` and ``smtp_fast`` are master.cf smtp services with ``-o``
overrides). Part 2: the other domains are routed by MX lookup at the test
DNS server (``hato_dns_servers``) to ``smtp_tcp_port``: the MX hosts are
peers on distinct loopback addresses 127.0.0.x, all on that one port.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import re
import time

import pytest

from tests.dnsserver import DnsServer
from tests.smtp_peer import DROP, SmtpPeer

from .instance import Instance, common_port
from .maillog import statuses, wait_status

pytestmark = pytest.mark.integration

SENDER = "demo@hato.test"

# -- helpers -------------------------------------------------------------------------------

def send(inst: Instance, *rcpts: str, subject: str = "t20", body: bytes = b"hello there\n",
         headers: bytes = b"") -> None:
    msg = (f"From: {SENDER}\nTo: {', '.join(rcpts)}\nSubject: {subject}\n".encode()
           + headers + b"\n" + body)
    r = inst.sendmail("-f", SENDER, *rcpts, message=msg)
    assert r.returncode == 0, r.stderr


def bounce_notices(inst: Instance) -> list[email.message.Message]:
    box = inst.root / "mail" / "hato.test" / "demo"
    # the first delivery makes the Maildir: wait until all three folders exist
    if not all((box / d).is_dir() for d in ("tmp", "new", "cur")):
        return []
    md = mailbox.Maildir(str(box), create=False)
    return [email.message_from_bytes(md.get_bytes(key), policy=email.policy.compat32)
            for key in md.iterkeys()]


def notice_for(inst: Instance, rcpt: str, timeout: float = 30.0) -> str:
    """The text of the DSN (bounce or delay notice) that names *rcpt*."""
    found: list[str] = []

    def look() -> bool:
        for m in bounce_notices(inst):
            text = m.as_string()
            if f"Final-Recipient: rfc822; {rcpt}" in text or \
                    f"Final-Recipient: rfc822;{rcpt}" in text:
                found.append(text)
                return True
        return False
    inst.wait_for(look, timeout, f"a DSN for {rcpt}")
    return found[0]


def flush(inst: Instance) -> None:
    assert inst.cmd("flush").returncode == 0


# -- part 1: scripted peers ----------------------------------------------------------------

SLOW_DOT = 4.0  # the peer's delay before answering the dot (> smtp_data_done_timeout = 2s)


def _slow_dot(session, arg) -> None:
    """Wait, then the usual 250."""
    time.sleep(SLOW_DOT)


PEERS = {
    # domain: (transport, peer options)
    "g554.test": ("smtp", {"greeting": "554 5.7.1 peer.test no service for you"}),
    "g554hard.test": ("smtp_noskip", {"greeting": "554 5.7.1 peer.test no service for you"}),
    "mail421.test": ("smtp", {"mail": "421 4.3.2 peer.test shutting down"}),
    "rcpt421.test": ("smtp", {"rcpt": lambda s, a: "421 4.3.2 peer.test closing now"
                              if a.startswith("c@") else None}),
    "mixed.test": ("smtp", {"rcpt": {"b@mixed.test": "452 4.5.3 Too many recipients for now",
                                     "c@mixed.test": "550 5.1.1 <c@mixed.test>: no such user"}}),
    "slowdot.test": ("smtp_fast", {"dot": _slow_dot}),
    "nopipe.test": ("smtp", {"ehlo": ("SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES")}),
    "no8bit.test": ("smtp", {"ehlo": ("PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES")}),
    "dropdot.test": ("smtp", {"dot": DROP}),
    "dropdata.test": ("smtp", {"data": DROP}),
}


def assert_no_peer_errors(peer: SmtpPeer) -> None:
    assert not peer.errors, peer.errors


def test_greeting_554_with_skip_5xx_greeting_defers(site):
    inst, peers = site
    send(inst, "a@g554.test")
    st = wait_status(inst, "a@g554.test")
    where = r"127\.0\.0\.1\[127\.0\.0\.1\]"
    assert st["status"] == "deferred", st
    assert st["dsn"] == "4.7.1", st
    assert re.fullmatch(rf"host {where} refused to talk to me: 554 5\.7\.1 peer\.test no "
                        r"service for you", st["text"]), st
    assert not inst.queue_empty()
    # the peer recovers: a flush delivers (a dead destination is tried again)
    peer = peers["g554.test"]
    peer.greeting = None
    flush(inst)
    st = wait_status(inst, "a@g554.test", 2, timeout=60)
    assert (st["status"], st["dsn"]) == ("sent", "2.0.0"), st
    assert [m.recipients for m in peer.messages] == [["a@g554.test"]]
    assert_no_peer_errors(peer)


def test_greeting_554_without_skip_5xx_greeting_bounces(site):
    inst, _peers = site
    send(inst, "a@g554hard.test")
    st = wait_status(inst, "a@g554hard.test")
    assert (st["status"], st["dsn"]) == ("bounced", "5.7.1"), st
    assert re.fullmatch(r"host 127\.0\.0\.1\[127\.0\.0\.1\] refused to talk to me: 554 5\.7\.1 "
                        r"peer\.test no service for you", st["text"]), st
    dsn = notice_for(inst, "a@g554hard.test")
    assert "Action: failed" in dsn and "Status: 5.7.1" in dsn, dsn
    assert "554 5.7.1 peer.test no service for you" in dsn, dsn


def test_421_after_mail_defers_everything(site):
    inst, peers = site
    send(inst, "a@mail421.test", "b@mail421.test")
    for rcpt in ("a@mail421.test", "b@mail421.test"):
        st = wait_status(inst, rcpt)
        assert (st["status"], st["dsn"]) == ("deferred", "4.3.2"), st
        assert st["text"] == ("host 127.0.0.1[127.0.0.1] said: 421 4.3.2 peer.test shutting "
                              "down (in reply to MAIL FROM command)"), st
    assert peers["mail421.test"].messages == []


def test_421_after_some_rcpts_defers_all_pending(site):
    """a and b were accepted, c got 421, d was never asked: all deferred."""
    inst, peers = site
    rcpts = [f"{x}@rcpt421.test" for x in "abcd"]
    send(inst, *rcpts)
    for rcpt in rcpts:
        st = wait_status(inst, rcpt)
        assert (st["status"], st["dsn"]) == ("deferred", "4.3.2"), (rcpt, st)
        assert st["text"] == ("host 127.0.0.1[127.0.0.1] said: 421 4.3.2 peer.test closing "
                              "now (in reply to RCPT TO command)"), (rcpt, st)
    assert peers["rcpt421.test"].messages == []


def test_mixed_replies_then_retry_after_recovery(site):
    """250, 452 and 550 in one message: sent, deferred (retried once the
    peer recovers, after a flush) and bounced with the peer's words."""
    inst, peers = site
    peer = peers["mixed.test"]
    send(inst, "a@mixed.test", "b@mixed.test", "c@mixed.test")
    a = wait_status(inst, "a@mixed.test")
    b = wait_status(inst, "b@mixed.test")
    c = wait_status(inst, "c@mixed.test")
    relay = f"127.0.0.1[127.0.0.1]:{peer.port}"
    assert (a["status"], a["dsn"], a["relay"]) == ("sent", "2.0.0", relay), a
    assert re.fullmatch(r"250 2\.0\.0 Ok: queued as PEER\d+", a["text"]), a
    assert (b["status"], b["dsn"], b["relay"]) == ("deferred", "4.5.3", relay), b
    assert b["text"] == ("host 127.0.0.1[127.0.0.1] said: 452 4.5.3 Too many recipients for "
                         "now (in reply to RCPT TO command)"), b
    assert (c["status"], c["dsn"], c["relay"]) == ("bounced", "5.1.1", relay), c
    assert c["text"] == ("host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <c@mixed.test>: no such "
                         "user (in reply to RCPT TO command)"), c
    assert a["qid"] == b["qid"] == c["qid"]
    # one transaction, pipelined (the peer offers PIPELINING)
    assert len(peer.messages) == 1 and peer.messages[0].recipients == ["a@mixed.test"]
    assert any(cmd.startswith("MAIL FROM:") for cmd in peer.sessions[0].pipelined), \
        peer.sessions[0].commands
    # the DSN for c, with the peer's reply as the diagnostic
    dsn = notice_for(inst, "c@mixed.test")
    assert "Status: 5.1.1" in dsn and "Action: failed" in dsn, dsn
    assert re.search(r"Diagnostic-Code: smtp; 550 5\.1\.1 <c@mixed\.test>: no such user", dsn), dsn
    assert "Remote-MTA: dns; 127.0.0.1" in dsn, dsn
    assert not inst.queue_empty()  # b waits in the deferred queue
    # the peer recovers; a flush delivers b, and only b
    peer.rcpt = None
    flush(inst)
    b2 = wait_status(inst, "b@mixed.test", 2, timeout=60)
    assert (b2["status"], b2["dsn"]) == ("sent", "2.0.0"), b2
    assert b2["qid"] == b["qid"]
    assert [m.recipients for m in peer.messages] == [["a@mixed.test"], ["b@mixed.test"]]
    assert len(statuses(inst, "a@mixed.test")) == 1
    assert len(statuses(inst, "c@mixed.test")) == 1
    assert_no_peer_errors(peer)


def test_slow_end_of_data_times_out(site):
    inst, peers = site
    t0 = time.monotonic()
    send(inst, "a@slowdot.test")
    st = wait_status(inst, "a@slowdot.test")
    assert time.monotonic() - t0 < SLOW_DOT + 10
    assert (st["status"], st["dsn"]) == ("deferred", "4.4.2"), st
    assert st["text"] == ("conversation with 127.0.0.1[127.0.0.1] timed out while sending "
                          "end of data -- message may be sent more than once"), st
    assert st["relay"] == f"127.0.0.1[127.0.0.1]:{peers['slowdot.test'].port}", st


def test_no_pipelining(site):
    """A peer without PIPELINING: one command at a time, and it works."""
    inst, peers = site
    peer = peers["nopipe.test"]
    send(inst, "a@nopipe.test", "b@nopipe.test")
    for rcpt in ("a@nopipe.test", "b@nopipe.test"):
        st = wait_status(inst, rcpt)
        assert (st["status"], st["dsn"]) == ("sent", "2.0.0"), st
    assert peer.sessions[0].pipelined == [], peer.sessions[0].commands
    verbs = [c.split()[0].upper() for c in peer.sessions[0].commands]
    assert verbs[:5] == ["EHLO", "MAIL", "RCPT", "RCPT", "DATA"], verbs
    assert len(peer.messages) == 1
    assert sorted(peer.messages[0].recipients) == ["a@nopipe.test", "b@nopipe.test"]


EIGHT_BIT = "Grüße aus Köln — ça va?\n".encode()


def test_no_8bitmime_still_delivers_8bit_mail(site):
    """The peer lacks 8BITMIME: no BODY= on MAIL FROM, the mail is delivered
    and its text survives."""
    inst, peers = site
    peer = peers["no8bit.test"]
    send(inst, "a@no8bit.test", body=EIGHT_BIT,
         headers=b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                 b"Content-Transfer-Encoding: 8bit\n")
    st = wait_status(inst, "a@no8bit.test")
    assert (st["status"], st["dsn"]) == ("sent", "2.0.0"), st
    (got,) = peer.messages
    assert "BODY=" not in got.mail_args, got.mail_args
    msg = email.message_from_bytes(got.data, policy=email.policy.default)
    assert msg.get_content().replace("\r\n", "\n") == EIGHT_BIT.decode()
    # and to a peer with 8BITMIME, BODY=8BITMIME
    mixed = peers["mixed.test"]
    n = len(mixed.messages)
    send(inst, "eight@mixed.test", body=EIGHT_BIT)
    st = wait_status(inst, "eight@mixed.test")
    assert st["status"] == "sent", st
    assert "BODY=8BITMIME" in mixed.messages[n].mail_args, mixed.messages[n]


def test_no_8bitmime_downgrades_to_quoted_printable(site):
    """A server without 8BITMIME gets the 8bit part as quoted-printable
    (disable_mime_output_conversion = no), which decodes to the original."""
    inst, peers = site
    peer = peers["no8bit.test"]
    n = len(peer.messages)
    send(inst, "qp@no8bit.test", body=EIGHT_BIT,
         headers=b"MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n"
                 b"Content-Transfer-Encoding: 8bit\n")
    st = wait_status(inst, "qp@no8bit.test")
    assert st["status"] == "sent", st
    data = peer.messages[n].data
    assert max(data) < 128, data
    assert b"Content-Transfer-Encoding: quoted-printable" in data, data
    assert b"Content-Transfer-Encoding: 8bit" not in data, data
    assert "BODY=" not in peer.messages[n].mail_args
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg.get_payload(decode=True).replace(b"\r\n", b"\n") == EIGHT_BIT


def test_peer_drops_connection_after_the_dot(site):
    inst, _peers = site
    send(inst, "a@dropdot.test", "b@dropdot.test")
    for rcpt in ("a@dropdot.test", "b@dropdot.test"):
        st = wait_status(inst, rcpt)
        assert (st["status"], st["dsn"]) == ("deferred", "4.4.2"), st
        assert st["text"] == ("lost connection with 127.0.0.1[127.0.0.1] while sending end "
                              "of data -- message may be sent more than once"), st


def test_peer_drops_connection_after_data_command(site):
    inst, _peers = site
    send(inst, "a@dropdata.test")
    st = wait_status(inst, "a@dropdata.test")
    assert (st["status"], st["dsn"]) == ("deferred", "4.4.2"), st
    assert st["text"] == ("lost connection with 127.0.0.1[127.0.0.1] while sending DATA "
                          "command"), st


# -- part 2: MX routing with the test DNS server ------------------------------------------

ZONES = {
    # the best MX is down: the next one delivers
    "pref.test": {"MX": ["20 mx2.pref.test.", "10 mx1.pref.test."]},
    "mx1.pref.test": {"A": ["127.0.0.11"]},  # nothing listens there
    "mx2.pref.test": {"A": ["127.0.0.12"]},
    # both up: the best one gets the mail
    "order.test": {"MX": ["10 mxa.order.test.", "20 mxb.order.test."]},
    "mxa.order.test": {"A": ["127.0.0.13"]},
    "mxb.order.test": {"A": ["127.0.0.14"]},
    # the best MX greets 554 (smtp_skip_5xx_greeting = yes): the next one delivers
    "greet.test": {"MX": ["10 mx1.greet.test.", "20 mx2.greet.test."]},
    "mx1.greet.test": {"A": ["127.0.0.15"]},
    "mx2.greet.test": {"A": ["127.0.0.16"]},
    # the best MX says 452 to one recipient: the backup MX gets it
    "soft.test": {"MX": ["10 mx1.soft.test.", "20 mx2.soft.test."]},
    "mx1.soft.test": {"A": ["127.0.0.17"]},
    "mx2.soft.test": {"A": ["127.0.0.18"]},
    # no MX: the domain's own address
    "amx.test": {"A": ["127.0.0.19"]},
    "nullmx.test": {"MX": ["0 ."], "A": ["127.0.0.19"]},
    "broken.test": "SERVFAIL",
    # nx.test: unknown (NXDOMAIN)
}


MX_PEERS = {
    # name: (address, peer options)
    "mx2.pref.test": ("127.0.0.12", {}),
    "mxa.order.test": ("127.0.0.13", {}),
    "mxb.order.test": ("127.0.0.14", {}),
    "mx1.greet.test": ("127.0.0.15", {"greeting": "554 5.3.2 mx1.greet.test not now"}),
    "mx2.greet.test": ("127.0.0.16", {}),
    "mx1.soft.test": ("127.0.0.17", {"rcpt": {"b@soft.test": "452 4.2.2 mailbox full for now"}}),
    "mx2.soft.test": ("127.0.0.18", {}),
    "amx.test": ("127.0.0.19", {}),
}


@pytest.fixture(scope="module")
def hato_site():
    """One hato instance for the whole module (starting one is slow): the
    part 1 domains go through transport_maps to their scripted peers on
    127.0.0.1; every other domain is routed by MX lookup at the test DNS
    server to port smtp_tcp_port of the peers of part 2."""
    port = common_port(range(10, 40))
    peers = {dom: SmtpPeer(name=f"peer.{dom}", **opts) for dom, (_t, opts) in PEERS.items()}
    peers.update({name: SmtpPeer(addr, port, name=name, **opts)
                  for name, (addr, opts) in MX_PEERS.items()})
    dns = DnsServer(ZONES).start()
    inst = Instance("t20")
    try:
        table = inst.root / "transport"
        table.write_text("".join(f"{dom} {transport}:[127.0.0.1]:{peers[dom].port}\n"
                                 for dom, (transport, _o) in PEERS.items()))
        with open(inst.root / "master.cf", "a") as f:
            f.write("smtp_noskip unix - - n - - smtp\n  -o smtp_skip_5xx_greeting=no\n"
                    "smtp_fast unix - - n - - smtp\n  -o smtp_data_done_timeout=2s\n")
        inst.postconf(f"transport_maps = texthash:{table}",
                      f"hato_dns_servers = {dns.spec}", f"smtp_tcp_port = {port}",
                      "smtp_connect_timeout = 5s", "smtp_helo_timeout = 10s",
                      "smtp_rcpt_timeout = 10s", "smtp_data_done_timeout = 20s",
                      "smtp_quit_timeout = 5s")
        inst.start()
        yield inst, peers, port
    finally:
        inst.cleanup()
        dns.stop()
        for p in peers.values():
            p.close()


@pytest.fixture
def site(hato_site):
    inst, peers, _port = hato_site
    return inst, peers


@pytest.fixture
def mxsite(hato_site):
    return hato_site


def test_mx_best_down_next_delivers(mxsite):
    inst, peers, port = mxsite
    send(inst, "a@pref.test")
    st = wait_status(inst, "a@pref.test")
    assert (st["status"], st["relay"]) == ("sent", f"mx2.pref.test[127.0.0.12]:{port}"), st
    log = inst.log_text()
    refused = f"connect to mx1.pref.test[127.0.0.11]:{port}: Connection refused"
    assert refused in log, log[-3000:]
    assert log.index(refused) < log.index("to=<a@pref.test>")
    assert [m.recipients for m in peers["mx2.pref.test"].messages] == [["a@pref.test"]]


def test_mx_preference_order(mxsite):
    inst, peers, port = mxsite
    send(inst, "a@order.test", "b@order.test")
    for rcpt in ("a@order.test", "b@order.test"):
        st = wait_status(inst, rcpt)
        assert (st["status"], st["relay"]) == ("sent", f"mxa.order.test[127.0.0.13]:{port}"), st
    assert peers["mxb.order.test"].connections == 0


def test_mx_554_greeting_tries_the_next_mx(mxsite):
    inst, peers, port = mxsite
    send(inst, "a@greet.test")
    st = wait_status(inst, "a@greet.test")
    assert peers["mx1.greet.test"].connections == 1
    assert (st["status"], st["relay"]) == ("sent", f"mx2.greet.test[127.0.0.16]:{port}"), st
    assert "host mx1.greet.test[127.0.0.15] refused to talk to me: 554 5.3.2 mx1.greet.test " \
           "not now" in inst.log_text()


def test_mx_452_recipient_tried_at_the_backup_mx(mxsite):
    """Postfix (smtp_rcpt_fail): a soft recipient error at a server that is
    not the last one keeps the recipient for the next server."""
    inst, _peers, port = mxsite
    send(inst, "a@soft.test", "b@soft.test")
    a = wait_status(inst, "a@soft.test")
    b = wait_status(inst, "b@soft.test")
    assert (a["status"], a["relay"]) == ("sent", f"mx1.soft.test[127.0.0.17]:{port}"), a
    assert (b["status"], b["relay"]) == ("sent", f"mx2.soft.test[127.0.0.18]:{port}"), b


def test_no_mx_uses_the_a_record(mxsite):
    inst, peers, port = mxsite
    send(inst, "a@amx.test")
    st = wait_status(inst, "a@amx.test")
    assert (st["status"], st["relay"]) == ("sent", f"amx.test[127.0.0.19]:{port}"), st
    assert [m.recipients for m in peers["amx.test"].messages] == [["a@amx.test"]]


def test_null_mx_bounces(mxsite):
    inst, peers, _port = mxsite
    n = peers["amx.test"].connections
    send(inst, "a@nullmx.test")
    st = wait_status(inst, "a@nullmx.test")
    assert (st["status"], st["dsn"], st["relay"]) == ("bounced", "5.1.0", "none"), st
    assert st["text"] == "Domain nullmx.test does not accept mail (nullMX)", st
    assert peers["amx.test"].connections == n  # its A record was not used
    dsn = notice_for(inst, "a@nullmx.test")
    assert "Status: 5.1.0" in dsn, dsn


def test_nxdomain_bounces(mxsite):
    inst, _peers, _port = mxsite
    send(inst, "a@nx.test")
    st = wait_status(inst, "a@nx.test")
    assert (st["status"], st["dsn"], st["relay"]) == ("bounced", "5.4.4", "none"), st
    assert st["text"] == ("Host or domain name not found. Name service error for name=nx.test "
                          "type=A: Host not found"), st


def test_servfail_defers(mxsite):
    inst, _peers, _port = mxsite
    send(inst, "a@broken.test")
    st = wait_status(inst, "a@broken.test")
    assert (st["status"], st["dsn"], st["relay"]) == ("deferred", "4.4.3", "none"), st
    assert st["text"] == ("Host or domain name not found. Name service error for "
                          "name=broken.test type=MX: Host not found, try again"), st

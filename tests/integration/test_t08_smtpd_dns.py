"""t-08: hato's smtpd and the DNS, with a test DNS server on loopback.

The client's name is found as Postfix finds it (PTR, then a forward
confirmation: ``connect from name[addr]`` and the Received: header, or
``unknown`` when the name's addresses do not include the client's, or when
smtpd_peername_lookup = no); reject_unknown_client_hostname, reject_rbl_client
and reject_unknown_sender_domain give Postfix's replies; a DNS failure is
never a 5xx.

One instance serves the module, with one smtpd service per configuration
(master.cf ``-o`` overrides, each on its own loopback port, each with its own
syslog_name). The DNS server's answers carry TTL 0 so that hato caches
nothing, and every test first sets the records it relies on. mynetworks =
192.0.2.0/24 where the loopback client must not be trusted.
"""

from __future__ import annotations

import email
import os
import re
import smtplib
import threading
from collections.abc import Iterator

import pytest

from tests.dnsserver import DnsServer

from .instance import Instance, free_port, smtp_ready

pytestmark = pytest.mark.integration

BOX = ("mail", "hato.test", "demo")
PTR = "1.0.0.127.in-addr.arpa"
CLIENT = "client.hato-test.example"
RBL = "zen.test.example"
RBL_QUERY = f"1.0.0.127.{RBL}"
RBL_TXT = "Listed in the hato test list, see https://zen.test.example/lookup?ip=127.0.0.1"
UNTRUSTED = "-o mynetworks=192.0.2.0/24"

#: The extra smtpd services: name → master.cf daemon options.
SERVICES = {
    "nolookup": "-o smtpd_peername_lookup=no",
    "unknownclient": f"{UNTRUSTED} -o smtpd_client_restrictions=reject_unknown_client_hostname",
    "rbl": (f"{UNTRUSTED} -o {{ smtpd_recipient_restrictions = reject_rbl_client {RBL}, "
            "permit_mynetworks, reject_unauth_destination }"),
    "sender": f"{UNTRUSTED} -o smtpd_sender_restrictions=reject_unknown_sender_domain",
}


class Setup:
    def __init__(self, inst: Instance, dns: DnsServer, ports: dict[str, int]):
        self.inst = inst
        self.dns = dns
        self.ports = ports




def sessions_ended(inst) -> bool:
    log = inst.log_text()
    return log.count("]: connect from ") == log.count("]: disconnect from ")


def wait_sessions_ended(inst) -> None:
    """Wait until every smtpd session that began has ended (and is logged)."""
    inst.wait_for(lambda: sessions_ended(inst), what="every smtpd session to end")


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    with DnsServer(ttl=0, negative_ttl=0) as dns:
        inst = Instance("t08-dns")
        try:
            inst.postconf(f"hato_dns_servers = {dns.spec}")
            ports = {"main": inst.port}
            with open(inst.root / "master.cf", "a") as f:
                for name, options in SERVICES.items():
                    ports[name] = port = free_port()
                    f.write(f"127.0.0.1:{port} inet n - n - - smtpd\n"
                            f"  -o syslog_name=postfix/{name} {options}\n")
            inst.start()
            for port in ports.values():
                inst.wait_for(lambda p=port: smtp_ready(p), what=f"smtpd on port {port}")
            wait_sessions_ended(inst)
            yield Setup(inst, dns, ports)
        finally:
            inst.cleanup()


@pytest.fixture
def s(setup: Setup) -> Setup:
    """The module's set-up, with DNS records of earlier tests forgotten."""
    for name in (PTR, CLIENT, RBL_QUERY, "known.test.example", "mx.known.test.example",
                 "slow.test.example"):
        setup.dns.delete(name)
    setup.dns.reset_counts()
    return setup


def demo_messages(inst) -> list[email.message.Message]:
    path = inst.root.joinpath(*BOX)
    out = []
    for sub in ("new", "cur"):
        d = path / sub
        if d.is_dir():
            for n in sorted(os.listdir(d)):
                try:
                    out.append(email.message_from_bytes((d / n).read_bytes()))
                except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                    continue
    return out


def wait_subject(inst, subject: str) -> email.message.Message:
    def find():
        return [m for m in demo_messages(inst) if m["Subject"] == subject]
    inst.wait_for(lambda: find(), what=f"the message {subject!r} in the Maildir")
    return find()[0]


def confirmed_client(dns: DnsServer, address: str = "127.0.0.1") -> None:
    dns.set(PTR, "PTR", [f"{CLIENT}."])
    dns.set(CLIENT, "A", [address])


def transaction(port: int, sender: str, subject: str | None = None,
                rcpt: str = "demo@hato.test",
                timeout: float = 30) -> tuple[tuple[int, bytes], tuple[int, bytes]]:
    """MAIL and RCPT in a fresh session; with *subject*, send the message too
    (the RCPT must be accepted)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as c:
        c.ehlo("client.example")
        mail = c.mail(sender)
        rc = c.rcpt(rcpt)
        if subject is not None:
            assert rc[0] == 250, rc
            code, text = c.data(f"Subject: {subject}\r\n\r\nbody\r\n".encode())
            assert code == 250, text
        return mail, rc


def new_log(inst, mark: int) -> str:
    return inst.log_text()[mark:]


def assert_no_5xx_for_dns(log: str) -> None:
    assert not re.search(r"reject: RCPT from \S+: 5\d\d ", log), log


# -- the client's name ---------------------------------------------------------------------


def test_client_name_is_forward_confirmed(s):
    inst, dns, port = s.inst, s.dns, s.ports["main"]
    confirmed_client(dns)
    # PTR and A agree: the name is used.
    mark = len(inst.log_text())
    transaction(port, "sender@example.org", subject="confirmed")
    msg = wait_subject(inst, "confirmed")
    received = msg.get_all("Received")[0]
    assert re.match(rf"from client\.example \({re.escape(CLIENT)} \[127\.0\.0\.1\]\)",
                    received), received
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    assert f"connect from {CLIENT}[127.0.0.1]" in log, log
    assert re.search(rf": \w+: client={re.escape(CLIENT)}\[127\.0\.0\.1\]", log), log
    assert dns.count(PTR, "PTR") >= 1 and dns.count(CLIENT, "A") >= 1
    # The name's address is another one: the client is unknown (forward-confirmed rule).
    dns.set(CLIENT, "A", ["127.0.0.2"])
    mark = len(inst.log_text())
    transaction(port, "sender@example.org", subject="forged")
    msg = wait_subject(inst, "forged")
    received = msg.get_all("Received")[0]
    assert re.match(r"from client\.example \(unknown \[127\.0\.0\.1\]\)", received), received
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    assert "connect from unknown[127.0.0.1]" in log, log
    assert f"{CLIENT}[" not in log, log
    # The warning, as Postfix's smtpd_peer.c logs it.
    assert re.search(rf"postfix/smtpd\[\d+\]: warning: hostname {re.escape(CLIENT)} does not "
                     rf"resolve to address 127\.0\.0\.1\n", log), log


def test_no_lookup_with_smtpd_peername_lookup_no(s):
    inst, dns, port = s.inst, s.dns, s.ports["nolookup"]
    confirmed_client(dns)
    mark = len(inst.log_text())
    transaction(port, "sender@example.org", subject="no lookup")
    msg = wait_subject(inst, "no lookup")
    received = msg.get_all("Received")[0]
    assert re.match(r"from client\.example \(unknown \[127\.0\.0\.1\]\)", received), received
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    assert re.search(r"postfix/nolookup/smtpd\[\d+\]: connect from unknown\[127\.0\.0\.1\]\n",
                     log), log
    assert dns.count(PTR, "PTR") == 0


def test_reject_unknown_client_hostname(s):
    inst, dns, port = s.inst, s.dns, s.ports["unknownclient"]
    # No PTR record for 127.0.0.1 (NXDOMAIN).
    mark = len(inst.log_text())
    mail, rcpt = transaction(port, "sender@example.org")
    assert mail[0] == 250  # smtpd_delay_reject: the client is refused at RCPT
    text = b"Client host rejected: cannot find your hostname, [127.0.0.1]"
    code, (dsn, _, rest) = rcpt[0], rcpt[1].partition(b" ")
    assert (code, rest) == (450, text), rcpt  # unknown_client_reject_code = 450
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    assert re.search(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 450 [\d.]+ "
                     + re.escape(text.decode()) + "; from=<sender@example.org> "
                     "to=<demo@hato.test> proto=ESMTP helo=<client.example>\n", log), log
    # With a forward-confirmed name the same restriction lets the client in.
    confirmed_client(dns)
    transaction(port, "sender@example.org", subject="known now")
    wait_subject(inst, "known now")
    # Postfix 3.7's smtpd_check.c gives RFC 7372's "4.7.25" (reverse DNS
    # validation failed) for reject_unknown_client_hostname.
    assert dsn == b"4.7.25", rcpt


# -- DNS block lists -----------------------------------------------------------------------


def test_reject_rbl_client(s):
    inst, dns, port = s.inst, s.dns, s.ports["rbl"]
    dns.set(RBL_QUERY, "A", ["127.0.0.2"])
    dns.set(RBL_QUERY, "TXT", [RBL_TXT])
    mark = len(inst.log_text())
    mail, rcpt = transaction(port, "sender@example.org")
    assert mail[0] == 250
    # Postfix's default_rbl_reply.
    text = f"Service unavailable; Client host [127.0.0.1] blocked using {RBL}; {RBL_TXT}"
    assert rcpt == (554, f"5.7.1 {text}".encode()), rcpt
    wait_sessions_ended(inst)
    assert (f"NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 {text}; "
            "from=<sender@example.org> to=<demo@hato.test> proto=ESMTP "
            "helo=<client.example>\n") in new_log(inst, mark)
    # Not listed (NXDOMAIN): accepted.
    dns.delete(RBL_QUERY)
    mail, rcpt = transaction(port, "sender@example.org", subject="rbl clean")
    wait_subject(inst, "rbl clean")
    # The list's server fails (SERVFAIL): as in Postfix, a DNSBL lookup error
    # counts as "not listed" (with a warning), and the mail goes through.
    dns.set(RBL_QUERY, "A", "SERVFAIL")
    dns.reset_counts()
    mark = len(inst.log_text())
    mail, rcpt = transaction(port, "sender@example.org", subject="rbl down")
    assert rcpt == (250, b"2.1.5 Ok"), rcpt
    wait_subject(inst, "rbl down")
    assert dns.count(RBL_QUERY, "A") >= 1
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    assert f"warning: {RBL_QUERY}: RBL lookup error" in log, log
    assert "reject:" not in log, log


# -- the sender's domain -------------------------------------------------------------------


def test_reject_unknown_sender_domain(s):
    inst, dns, port = s.inst, s.dns, s.ports["sender"]
    dns.set("known.test.example", "MX", ["10 mx.known.test.example."])
    dns.set("mx.known.test.example", "A", ["192.0.2.25"])
    dns.set("slow.test.example", "A", "TIMEOUT")  # never answered, for every type
    mark = len(inst.log_text())
    # The timeout takes the resolver's whole time limit for each of MX, A and
    # AAAA: run it beside the other cases.
    slow: dict[str, object] = {}

    def slow_session() -> None:
        try:
            slow["result"] = transaction(port, "a@slow.test.example", timeout=120)
        except Exception as err:  # noqa: BLE001  reported below
            slow["error"] = err

    thread = threading.Thread(target=slow_session)
    thread.start()
    try:
        mail, rcpt = transaction(port, "a@nosuch.test.example")
        assert mail[0] == 250
        # unknown_address_reject_code = 450 by default.
        assert rcpt == (450, (b"4.1.8 <a@nosuch.test.example>: Sender address rejected: "
                              b"Domain not found")), rcpt
        transaction(port, "a@known.test.example", subject="known sender domain")
        wait_subject(inst, "known sender domain")
    finally:
        thread.join(150)
    assert "error" not in slow, slow
    mail, rcpt = slow["result"]  # type: ignore[misc]
    assert mail[0] == 250
    # A temporary failure: 4xx (defer_if_permit), never 5xx.
    assert rcpt == (450, (b"4.1.8 <a@slow.test.example>: Sender address rejected: "
                          b"Domain not found")), rcpt
    assert dns.count("slow.test.example") >= 1
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    assert "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 450 4.1.8 <a@nosuch.test.example>: " \
           "Sender address rejected: Domain not found; from=<a@nosuch.test.example> " \
           "to=<demo@hato.test> proto=ESMTP helo=<client.example>\n" in log, log
    assert_no_5xx_for_dns(log)

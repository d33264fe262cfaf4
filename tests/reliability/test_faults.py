"""The fault battery: one live hato with the peers it leans on (a DNS
server, lookup tables, Debian's saslauthd, Dovecot's auth service,
OpenDKIM as a milter), each taken away in turn while clients talk to it.

For every fault the rule is the same as Postfix's: a temporary cause gets a
4xx reply or a deferral, never a 5xx and never an acknowledged message that
goes missing; the processes do not crash; once the peer is back, mail flows
again and what was deferred is delivered.

Each fault has an smtpd service of its own (master.cf ``-o`` overrides), so
one instance serves the whole battery:

=============  ===========================================================
service        what it leans on
=============  ===========================================================
dns            ``reject_unknown_sender_domain`` and ``reject_rbl_client`` on
               ``hato_dns_servers``; the smtp client's MX lookups
unknownclient  ``reject_unknown_client_hostname`` on ``hato_dns_servers``
tables         ``check_recipient_access hash:``; ``virtual_mailbox_maps`` and
               ``alias_maps`` of the whole instance
saslauthd      ``pwcheck_method: saslauthd``
dovecot        ``smtpd_sasl_type = dovecot``
milter         ``smtpd_milters`` = OpenDKIM, ``milter_default_action = tempfail``
policy         ``check_policy_service`` on a port where nobody listens
=============  ===========================================================
"""

from __future__ import annotations

import base64
import mailbox
import os
import re
import smtplib
import socket
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.dnsserver import DnsServer
from tests.integration.instance import Instance, free_port, smtp_ready
from tests.integration.sasl_daemons import Dovecot, Saslauthd
from tests.opendkim import OpenDkim

pytestmark = pytest.mark.integration

BOX = "demo@hato.test"
SERVICES = ("dns", "unknownclient", "tables", "saslauthd", "dovecot", "milter", "policy")


class Battery:
    """The instance and its peers; ``port[name]`` is each smtpd service."""

    def __init__(self) -> None:
        self.inst = Instance("rel-faults")
        self.dns = DnsServer({
            "hato.test": {"MX": ["10 mx.hato.test."], "A": ["127.0.0.1"]},
            "mx.hato.test": {"A": ["127.0.0.1"]},
            "sender.example": {"MX": ["10 mx.hato.test."]},
            # the client's name, both ways, for reject_unknown_client_hostname
            "1.0.0.127.in-addr.arpa": {"PTR": ["client.hato.test."]},
            "client.hato.test": {"A": ["127.0.0.1"]},
            # asked only once DNS is down: nothing cached helps
            "fresh.example": {"MX": ["10 mx.hato.test."]},
            "2.0.0.127.in-addr.arpa": {"PTR": ["fresh.hato.test."]},
            "fresh.hato.test": {"A": ["127.0.0.2"]},
        }).start()
        self.saslauthd = Saslauthd(mechanism="shadow")
        self.dovecot = Dovecot(failure_delay="0")
        self.milter = OpenDkim(domain="example.test")
        self.port = {name: free_port() for name in SERVICES}
        self.dead = free_port()  # nothing listens here
        root = self.inst.root
        sasl = root / "sasl-saslauthd"
        sasl.mkdir()
        (sasl / "smtpd.conf").write_text(
            f"pwcheck_method: saslauthd\nsaslauthd_path: {self.saslauthd.mux}\n"
            "mech_list: PLAIN LOGIN\n")
        self.access = root / "access"
        self.access.write_text("blocked@hato.test REJECT no thanks\n")
        r = self.inst.cmd("postmap", f"hash:{self.access}")
        assert r.returncode == 0, r.stderr
        with open(root / "aliases", "a") as f:
            f.write(f"fault: {BOX}\n")
        r = self.inst.cmd("newaliases")
        assert r.returncode == 0, r.stderr
        self.inst.postconf(f"hato_dns_servers = {self.dns.spec}",
                           "smtpd_sasl_auth_enable = no",
                           "maximal_backoff_time = 10s", "minimal_backoff_time = 5s",
                           "queue_run_delay = 5s")
        p = self.port
        lines = {
            "dns": ["smtpd_client_restrictions=reject_rbl_client,bl.hato.test",
                    "smtpd_sender_restrictions=reject_unknown_sender_domain"],
            # the client-name check on a service of its own, apart from the
            # DNSBL (which never rejects when DNS is down) and the sender check
            "unknownclient": ["smtpd_client_restrictions=reject_unknown_client_hostname"],
            "tables": [f"smtpd_recipient_restrictions=check_recipient_access,"
                       f"hash:{self.access},permit_mynetworks,reject_unauth_destination"],
            "saslauthd": ["smtpd_sasl_auth_enable=yes", f"cyrus_sasl_config_path={sasl}"],
            "dovecot": ["smtpd_sasl_auth_enable=yes", "smtpd_sasl_type=dovecot",
                        f"smtpd_sasl_path={self.dovecot.socket}"],
            "milter": [f"smtpd_milters={self.milter.endpoint}",
                       "milter_default_action=tempfail"],
            "policy": ["smtpd_recipient_restrictions=check_policy_service,"
                       f"inet:127.0.0.1:{self.dead},permit_mynetworks,reject"],
        }
        with open(root / "master.cf", "a") as f:
            for name, overrides in lines.items():
                f.write(f"127.0.0.1:{p[name]} inet n - n - - smtpd\n"
                        f"  -o syslog_name=postfix/{name}\n")
                f.write("".join(f"  -o {o}\n" for o in overrides))

    def start(self) -> None:
        self.saslauthd.setup()
        self.dovecot.start()
        self.milter.start()
        self.inst.start()
        for port in self.port.values():
            self.inst.wait_for(lambda port=port: smtp_ready(port), timeout=120,
                               what=f"port {port}")
        self.master_pid = self.master()

    def master(self) -> int:
        return next(pid for pid, role in self.inst.pids().items() if role == "master")

    def cleanup(self) -> None:
        try:
            self.inst.cleanup()
        finally:
            self.dns.stop()
            self.saslauthd.cleanup()
            self.dovecot.cleanup()
            self.milter.stop()


@pytest.fixture(scope="module")
def battery():
    if os.geteuid() != 0:
        pytest.fail("the fault battery runs saslauthd and Dovecot, and must run as root")
    b = Battery()
    try:
        b.start()
        yield b
        # never a crash: the master is the one that started, no process died
        # of anything but its own decision, nothing panicked
        log = b.inst.log_text()
        assert b.master() == b.master_pid
        bad = [line for line in log.splitlines()
               if re.search(r"killed by signal|exit status [1-9]|panic:|Traceback", line)]
        assert not bad, "\n".join(bad[:20])
    finally:
        b.cleanup()


# -- the client side ---------------------------------------------------------------

def transcript(port: int, *steps: str, source: str = "127.0.0.1") -> list[tuple[int, str]]:
    """Run *steps* (SMTP commands; ``DATA`` sends a small message) after
    EHLO from *source* and return each reply, stopping after the first that
    is not 2xx/3xx."""
    replies = []
    with smtplib.SMTP("127.0.0.1", port, timeout=60, source_address=(source, 0)) as s:
        s.ehlo("client.hato.test")
        for step in steps:
            if step == "DATA":
                code, text = s.docmd("DATA")
                if code == 354:
                    s.send(b"Subject: fault battery\r\n\r\nbody\r\n.\r\n")
                    code, text = s.getreply()
            else:
                code, text = s.docmd(step)
            replies.append((code, text.decode(errors="replace")))
            if code >= 400:
                break
    return replies


def mail(port: int, rcpt: str = BOX, sender: str = "someone@sender.example",
         source: str = "127.0.0.1"):
    return transcript(port, f"MAIL FROM:<{sender}>", f"RCPT TO:<{rcpt}>", "DATA",
                      source=source)


def assert_temporary(replies) -> tuple[int, str]:
    """The session ended in a 4xx (never a 5xx, never an accepted DATA)."""
    code, text = replies[-1]
    assert 400 <= code < 500, replies
    assert not any(500 <= c < 600 for c, _ in replies), replies
    return code, text


def assert_accepted(replies) -> None:
    assert [c for c, _ in replies] == [250, 250, 250], replies


def auth_plain(port: int, user: str, password: str) -> tuple[int, str]:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.hato.test")
        assert s.has_extn("auth"), s.esmtp_features
        code, text = s.docmd("AUTH", f"PLAIN {token}")
        return code, text.decode(errors="replace")


def box_count(inst: Instance, marker: bytes) -> int:
    path = inst.root / "mail" / "hato.test" / "demo"
    if not (path / "new").is_dir():
        return 0
    box = mailbox.Maildir(str(path), factory=None, create=False)
    return sum(marker in box.get_bytes(k) for k in box.keys())


def send_marked(port: int, rcpt: str, marker: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.sendmail("someone@sender.example", [rcpt],
                   f"Subject: {marker}\r\n\r\n{marker}\r\n".encode())


def reload(inst: Instance) -> None:
    """hato reload, and wait until the new workers greet."""
    before = inst.log_text().count("reload -- version")
    r = inst.cmd("reload")
    assert r.returncode == 0, r.stderr
    inst.wait_log("reload -- version", count=before + 1)
    inst.wait_for(lambda: smtp_ready(inst.port), timeout=120, what="smtpd after the reload")


def flush(inst: Instance) -> None:
    r = inst.cmd("postqueue", "-f")
    assert r.returncode == 0, r.stderr


# -- DNS ---------------------------------------------------------------------------

def test_dns_down(battery):
    b = battery
    assert_accepted(mail(b.port["dns"]))
    assert [c for c, _ in mail(b.port["unknownclient"])] == [250, 250, 250]
    b.dns.stop()
    try:
        # The DNSBL cannot answer: not listed, as in Postfix. The sender's
        # domain cannot be looked up: 450 4.1.8, not 550.
        # (Names never asked before: hato's resolver caches answers.)
        code, text = assert_temporary(mail(b.port["dns"], sender="a@fresh.example",
                                           source="127.0.0.2"))
        assert code == 450 and text.startswith("4.1.8 "), text
        assert "Sender address rejected: Domain not found" in text
        # The client's name cannot be looked up: 450 4.7.25, not 550.
        code, text = assert_temporary(mail(b.port["unknownclient"], source="127.0.0.2"))
        assert code == 450 and text.startswith("4.7.25 "), text
        # Mail for a domain whose MX cannot be looked up is deferred, not
        # bounced, and stays in the queue.
        marker = "dns-down-relay"
        send_marked(b.inst.port, "someone@remote.example", marker)
        b.inst.wait_log("to=<someone@remote.example>")
        log = b.inst.log_text()
        line = next(x for x in log.splitlines() if "to=<someone@remote.example>" in x)
        assert "status=deferred" in line and "dsn=4." in line, line
        assert "status=bounced" not in log
    finally:
        b.dns.start(b.dns.port)
    assert_accepted(mail(b.port["dns"], sender="a@fresh.example", source="127.0.0.2"))
    assert_accepted(mail(b.port["unknownclient"], source="127.0.0.2"))
    r = b.inst.cmd("postsuper", "-d", "ALL", "deferred")
    assert r.returncode == 0, r.stderr


# -- tables ------------------------------------------------------------------------

def test_tables_unreadable(battery):
    b = battery
    inst = b.inst
    db = [p for p in inst.root.iterdir() if p.name.startswith("access") and p != b.access]
    assert db, list(inst.root.iterdir())
    aliases_db = [p for p in inst.root.iterdir() if p.name.startswith("aliases.")]
    vmailbox = inst.root / "vmailbox"
    assert transcript(b.port["tables"], "MAIL FROM:<a@sender.example>",
                      "RCPT TO:<blocked@hato.test>")[-1][0] == 554
    # smtpd, cleanup and local open their tables as root before they drop
    # privileges, as Postfix's daemons do: a file root cannot read is one
    # that is not there.
    moved = {p: p.with_name(p.name + ".away") for p in (*db, *aliases_db, vmailbox)}
    for p, away in moved.items():
        p.rename(away)
    try:
        reload(inst)  # fresh processes open the tables anew
        # An access table that cannot be opened: Postfix's 451 4.3.5 for
        # every recipient, never the table's REJECT nor an accept.
        for rcpt in ("blocked@hato.test", BOX):
            code, text = assert_temporary(
                transcript(b.port["tables"], "MAIL FROM:<a@sender.example>",
                           f"RCPT TO:<{rcpt}>"))
            assert (code, text) == (451, f"4.3.5 <{rcpt}>: Recipient address rejected: "
                                         "Server configuration error"), text
        # virtual_mailbox_maps that cannot be opened: the recipient is not
        # "unknown" (550) but a temporary lookup failure.
        code, text = assert_temporary(mail(inst.port))
        assert (code, text) == (451, f"4.3.0 <{BOX}>: Temporary lookup failure"), text
        # alias_maps that cannot be opened: smtpd cannot tell whether a
        # local recipient exists (451 4.3.0), and local delivery of mail
        # that came another way (sendmail) defers.
        code, text = assert_temporary(mail(inst.port, rcpt="fault@localhost"))
        assert (code, text) == (451, "4.3.0 <fault@localhost>: Temporary lookup failure"), text
        marker = "alias-table-unavailable"
        r = inst.sendmail("fault@localhost", message=f"Subject: {marker}\n\n{marker}\n".encode())
        assert r.returncode == 0, r.stderr
        inst.wait_for(lambda: any("to=<fault@localhost>" in x and "status=deferred" in x
                                  for x in inst.log_text().splitlines()),
                      what="the local delivery deferred")
        assert "to=<fault@localhost>, status=bounced" not in inst.log_text()
        assert "fault@localhost" in inst.cmd("postqueue", "-p").stdout.decode()
        assert "is unavailable" in inst.log_text()
    finally:
        for p, away in moved.items():
            away.rename(p)
    reload(inst)
    assert transcript(b.port["tables"], "MAIL FROM:<a@sender.example>",
                      "RCPT TO:<blocked@hato.test>")[-1][0] == 554
    assert_accepted(mail(inst.port))
    flush(inst)
    inst.wait_for(lambda: box_count(inst, marker.encode()) == 1, timeout=60,
                  what="the deferred message delivered")


# -- SASL --------------------------------------------------------------------------

def test_saslauthd_gone(battery):
    b = battery
    user, password = b.saslauthd.user, b.saslauthd.password
    assert auth_plain(b.port["saslauthd"], user, password)[0] == 235
    b.saslauthd.stop()
    try:
        code, text = auth_plain(b.port["saslauthd"], user, password)
        assert code == 454 and text.startswith("4.7.0 Temporary authentication failure"), text
    finally:
        b.saslauthd.start()
    assert auth_plain(b.port["saslauthd"], user, password)[0] == 235


def test_dovecot_gone(battery):
    b = battery
    assert auth_plain(b.port["dovecot"], "alice", "wonderland")[0] == 235
    b.dovecot.stop()
    try:
        code, text = auth_plain(b.port["dovecot"], "alice", "wonderland")
        assert code == 454 and text.startswith("4.7.0 Temporary authentication failure"), text
        # sessions at once: workers started while Dovecot is down answer the same
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: auth_plain(b.port["dovecot"], "alice",
                                                         "wonderland")[0], range(4)))
        assert answers == [454] * 4, answers
    finally:
        b.dovecot.start()
    assert auth_plain(b.port["dovecot"], "alice", "wonderland")[0] == 235


# -- milter and policy ---------------------------------------------------------------

def test_milter_gone(battery):
    b = battery
    assert_accepted(mail(b.port["milter"]))
    b.milter.kill()
    try:
        code, text = assert_temporary(mail(b.port["milter"]))
        assert code == 451 and text.startswith("4.7.1 "), text
    finally:
        b.milter.start()
    assert_accepted(mail(b.port["milter"]))


def test_milter_dies_mid_session(battery):
    """OpenDKIM goes away between MAIL and DATA: the message is refused with
    a 4xx at the end of DATA, not accepted unfiltered and not 5xx."""
    b = battery
    try:
        with smtplib.SMTP("127.0.0.1", b.port["milter"], timeout=60) as s:
            s.ehlo("client.hato.test")
            assert s.docmd("MAIL FROM:<someone@sender.example>")[0] == 250
            assert s.docmd(f"RCPT TO:<{BOX}>")[0] == 250
            b.milter.kill()
            code, text = s.docmd("DATA")
            if code == 354:
                s.send(b"Subject: milter gone\r\n\r\nbody\r\n.\r\n")
                code, text = s.getreply()
            assert 400 <= code < 500, (code, text)
    finally:
        b.milter.start()
    assert_accepted(mail(b.port["milter"]))


def test_policy_server_gone(battery):
    code, text = assert_temporary(mail(battery.port["policy"]))
    assert (code, text) == (451, f"4.3.5 <{BOX}>: Recipient address rejected: "
                                 "Server configuration problem"), text


def test_every_service_still_answers(battery):
    """After the battery every service still greets and takes mail."""
    for name, port in battery.port.items():
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            assert s.recv(100).startswith(b"220 "), name


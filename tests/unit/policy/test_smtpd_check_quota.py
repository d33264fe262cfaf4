"""hato_mailbox_quota_rcpt_check: smtpd refuses a recipient whose Maildir
is full, with the injected question answered by the delivery agent."""

from __future__ import annotations

from hato.policy.dnsquery import StaticDns
from hato.policy.smtpd_check import ClientFacts, SmtpdChecks
from hato.proto.smtpd import Reply

from .conftest import make_settings

RELAY_OK = "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"


class Agent:
    """The question smtpd asks, and a fixed answer per recipient."""

    def __init__(self, full: dict[str, str]):
        self.full = full
        self.asked: list[tuple] = []

    def __call__(self, recipient, transport, nexthop, sender, size):
        self.asked.append((recipient, transport, nexthop, sender, size))
        dsn = self.full.get(recipient)
        return (dsn, "mailbox full") if dsn else None


def session(main: str, agent: Agent):
    settings = make_settings(RELAY_OK + main)
    checks = SmtpdChecks(settings, StaticDns({}), mailbox_quota=agent)
    sess = checks.session(ClientFacts(name="client.example", addr="198.51.100.1"))
    sess.helo("client.example")
    return checks, sess


def test_full_mailbox_is_refused_at_rcpt():
    agent = Agent({"joe@mx1.example.com": "4.2.2"})
    checks, sess = session("hato_mailbox_quota_rcpt_check = yes\n", agent)
    assert checks.may_block  # the question blocks: the service runs it in a thread
    sess.mail("a@example.org", size=1234)
    d = sess.rcpt("joe@mx1.example.com")
    assert d.reply == Reply(452, "4.2.2",
                            "<joe@mx1.example.com>: Recipient address rejected: Mailbox full")
    assert [e.action for e in d.logs] == ["reject"]
    assert agent.asked == [("joe@mx1.example.com", "local", "mx1.example.com",
                            "a@example.org", 1234)]
    assert sess.rcpt("ann@mx1.example.com").ok


def test_bounce_setting_and_message_text():
    agent = Agent({"joe@mx1.example.com": "5.2.2"})
    _, sess = session("hato_mailbox_quota_rcpt_check = yes\n"
                      "hato_mailbox_quota_message = Sorry, no room\n", agent)
    sess.mail("a@example.org")
    d = sess.rcpt("joe@mx1.example.com")
    assert d.reply == Reply(552, "5.2.2",
                            "<joe@mx1.example.com>: Recipient address rejected: Sorry, no room")
    # soft_bounce turns it into a 4xx, as every 5xx
    _, sess = session("hato_mailbox_quota_rcpt_check = yes\nsoft_bounce = yes\n", agent)
    sess.mail("a@example.org")
    assert sess.rcpt("joe@mx1.example.com").reply.code == 452


def test_off_by_default_and_not_for_remote_or_rejected_recipients():
    agent = Agent({"joe@mx1.example.com": "4.2.2", "x@remote.example": "4.2.2"})
    checks, sess = session("", agent)
    assert checks.mailbox_quota is None
    sess.mail("a@example.org")
    assert sess.rcpt("joe@mx1.example.com").ok and agent.asked == []
    _, sess = session("hato_mailbox_quota_rcpt_check = yes\nmynetworks = 198.51.100.0/24\n",
                      agent)
    sess.mail("a@example.org")
    assert sess.rcpt("x@remote.example").ok  # relayed: not ours to check
    assert agent.asked == []
    _, sess = session("hato_mailbox_quota_rcpt_check = yes\n"
                      "smtpd_recipient_restrictions = reject\n", agent)
    sess.mail("a@example.org")
    assert sess.rcpt("joe@mx1.example.com").reply.code == 554
    assert agent.asked == []
    # VRFY does not ask.
    _, sess = session("hato_mailbox_quota_rcpt_check = yes\n", agent)
    assert sess.vrfy("joe@mx1.example.com").ok and agent.asked == []

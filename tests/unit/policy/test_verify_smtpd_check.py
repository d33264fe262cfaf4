"""reject_unverified_recipient and reject_unverified_sender in smtpd's
restrictions (policy.smtpd_check), with the verify service's answers
injected: Postfix's reply codes and texts (smtpd_check.c,
reject_unverified_address)."""

from __future__ import annotations

from hato.policy import verify as V
from hato.policy.dnsquery import StaticDns
from hato.policy.smtpd_check import ClientFacts, Decision, SmtpdChecks

from tests.unit.policy.conftest import make_settings

RELAY_OK = "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"


class FakeVerify:
    def __init__(self, answers: dict[str, tuple[int, int, str]]):
        self.answers = answers
        self.asked: list[str] = []

    def __call__(self, address: str) -> tuple[int, int, str]:
        self.asked.append(address)
        return self.answers.get(address, (V.STAT_FAIL, V.TODO, ""))


def checks(main: str, verify) -> SmtpdChecks:
    return SmtpdChecks(make_settings(RELAY_OK + main), StaticDns({}), verify=verify)


def rcpt(main: str, verify, recipient: str = "joe@mx1.example.com",
         sender: str = "a@example.org") -> Decision:
    sess = checks(main, verify).session(ClientFacts(name="client.example",
                                                    addr="198.51.100.1"))
    sess.helo("client.example")
    sess.mail(sender)
    return sess.rcpt(recipient)


R = "smtpd_recipient_restrictions = reject_unverified_recipient\n"
SAID = "host mx.example.com[192.0.2.25] said: 550 5.1.1 no such user (in reply to RCPT TO command)"


def test_deliverable_continues() -> None:
    v = FakeVerify({"joe@mx1.example.com": (V.STAT_OK, V.OK, "250 2.1.5 Ok")})
    d = rcpt(R, v)
    assert d.ok and v.asked == ["joe@mx1.example.com"]


def test_undeliverable_default_is_450_unverified() -> None:
    v = FakeVerify({"joe@mx1.example.com": (V.STAT_OK, V.BOUNCE, SAID)})
    d = rcpt(R, v)
    assert str(d) == ("450 4.1.1 <joe@mx1.example.com>: Recipient address rejected: "
                      f"unverified address: {SAID}")
    assert [e.action for e in d.logs] == ["reject"]


def test_undeliverable_with_5xx_code() -> None:
    v = FakeVerify({"joe@mx1.example.com": (V.STAT_OK, V.BOUNCE, SAID)})
    d = rcpt(R + "unverified_recipient_reject_code = 550\n", v)
    assert str(d) == ("550 5.1.1 <joe@mx1.example.com>: Recipient address rejected: "
                      f"undeliverable address: {SAID}")


def test_in_progress_and_deferred_use_the_defer_code() -> None:
    v = FakeVerify({"joe@mx1.example.com": (V.STAT_OK, V.TODO, V.IN_PROGRESS),
                    "ann@mx1.example.com": (V.STAT_OK, V.DEFER, "connect timed out")})
    d = rcpt(R + "unverified_recipient_reject_code = 550\n", v)
    assert str(d) == ("450 4.1.1 <joe@mx1.example.com>: Recipient address rejected: "
                      "unverified address: Address verification in progress")
    d = rcpt(R + "unverified_recipient_defer_code = 451\n", v, "ann@mx1.example.com")
    assert str(d) == ("451 4.1.1 <ann@mx1.example.com>: Recipient address rejected: "
                      "unverified address: connect timed out")


def test_reject_reason_replaces_the_text() -> None:
    v = FakeVerify({"joe@mx1.example.com": (V.STAT_OK, V.BOUNCE, SAID)})
    d = rcpt(R + "unverified_recipient_reject_reason = Address lookup failed\n", v)
    assert str(d) == ("450 4.1.1 <joe@mx1.example.com>: Recipient address rejected: "
                      "unverified address: Address lookup failed")


def test_service_failure() -> None:
    d = rcpt(R, FakeVerify({}))
    assert str(d) == ("450 4.1.1 <joe@mx1.example.com>: Recipient address rejected: "
                      "address verification problem")
    assert any(e.action == "warning" and e.text == "verify service failure" for e in d.logs)
    # no client at all: the same
    d = rcpt(R, None)
    assert str(d).endswith("address verification problem")


def test_tempfail_action_defer_if_permit_lets_a_later_reject_win() -> None:
    v = FakeVerify({"joe@mx1.example.com": (V.STAT_OK, V.TODO, V.IN_PROGRESS)})
    later = "smtpd_recipient_restrictions = reject_unverified_recipient, reject\n"
    d = rcpt(later, v)
    assert str(d) == ("554 5.7.1 <joe@mx1.example.com>: Recipient address rejected: "
                      "Access denied")
    # ... while with "defer" the 4xx is final at once
    d = rcpt(later + "unverified_recipient_tempfail_action = defer\n", v)
    assert str(d).startswith("450 4.1.1 <joe@mx1.example.com>: Recipient address rejected: "
                             "unverified address:")
    # a permit after it is turned into the deferral
    d = rcpt("smtpd_recipient_restrictions = reject_unverified_recipient, permit\n", v)
    assert str(d).startswith("450 4.1.1 ")


def test_unverified_sender() -> None:
    v = FakeVerify({"a@example.org": (V.STAT_OK, V.BOUNCE, "said 550 no")})
    main = "smtpd_sender_restrictions = reject_unverified_sender\n"
    d = rcpt(main, v)
    assert str(d) == ("450 4.1.7 <a@example.org>: Sender address rejected: "
                      "unverified address: said 550 no")
    d = rcpt(main + "unverified_sender_reject_code = 550\n"
             "unverified_sender_reject_reason = Sender unknown\n", v)
    assert str(d) == ("550 5.1.7 <a@example.org>: Sender address rejected: "
                      "undeliverable address: Sender unknown")
    # the null sender is not verified
    v.asked.clear()
    assert rcpt(main, v, sender="").ok and v.asked == []


def test_verify_restrictions_run_in_a_thread() -> None:
    assert checks(R, None).may_block
    assert not checks("", None).may_block

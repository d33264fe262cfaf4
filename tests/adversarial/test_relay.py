"""Open-relay battery on every port of the reference setup: the plain
smtpd (25), submission (587) after STARTTLS and smtps (465), each as a
client outside mynetworks and not authenticated. Every trick that has
turned a mail server into an open relay — the ``%`` hack, bang paths,
source routes, quoted local parts, a second ``@``, IP literals, trailing
dots, upper case — must be refused with a 5xx, and nothing may reach the
queue. Authenticated on 587 and 465, relaying is allowed: that is what
submission is for.

main.cf here (conftest.py) says ``smtpd_relay_restrictions = permit_mynetworks,
permit_sasl_authenticated, reject_unauth_destination`` (Postfix's
recommended form; its default ``defer_unauth_destination`` answers 454).
"""

from __future__ import annotations

import smtplib

import pytest

from .conftest import PASSWORD, USER

pytestmark = pytest.mark.integration

FOREIGN = [
    "user@foreign.example",
    "user%foreign.example@hato.test",
    "user%foreign.example@localhost",
    "user%foreign.example@localhost.localdomain",
    "foreign.example!user@hato.test",
    "foreign.example!user@localhost",
    "foreign!user",
    "foreign.example!user",
    "@hato.test:user@foreign.example",
    "@localhost:user@foreign.example",
    "@localhost,@hato.test:user@foreign.example",
    '"user@foreign.example"@hato.test',
    '"user@foreign.example"@localhost',
    '"user%foreign"@localhost',
    '"foreign!user"@localhost',
    "user@foreign.example@localhost",
    "user@foreign.example@hato.test",
    "user@[10.1.2.3]",
    "user%foreign.example@[127.0.0.1]",
    "user@[127.0.0.1]",
    "user@foreign.example.",
    "user%foreign.example@localhost.",
    "USER@FOREIGN.EXAMPLE",
    "USER%FOREIGN.EXAMPLE@LOCALHOST",
    "user@FOREIGN.example.",
    "user@foreign.example\t",
]


def client(live, service: str, *, login: bool = False) -> smtplib.SMTP:
    if service == "smtps":
        c = smtplib.SMTP_SSL("127.0.0.1", live.smtps, timeout=30, context=live.context())
        c.ehlo("relay.example")
    else:
        c = smtplib.SMTP("127.0.0.1", getattr(live, service), timeout=30)
        c.ehlo("relay.example")
        if service == "sub":
            c.starttls(context=live.context())
            c.ehlo("relay.example")
    if login:
        c.login(USER, PASSWORD)
    return c


@pytest.mark.parametrize("service", ["smtpd", "sub", "smtps"])
def test_no_relay_for_strangers(live, service):
    mark = live.mark()
    queued = set(live.queued_files())
    accepted = []
    # ten recipients a session: each refusal counts toward smtpd_hard_error_limit
    for start in range(0, len(FOREIGN), 10):
        c = client(live, service)
        try:
            assert c.docmd("MAIL FROM:<stranger@example.org>")[0] == 250
            for rcpt in FOREIGN[start:start + 10]:
                code, text = c.docmd(f"RCPT TO:<{rcpt}>")
                if not 500 <= code <= 599:
                    accepted.append((rcpt, code, text))
            # DATA finds no recipient: nothing is queued
            code, text = c.docmd("DATA")
            assert code == 554, (code, text)
            c.quit()
        finally:
            c.close()
    assert not accepted, accepted
    assert set(live.queued_files()) <= queued
    # the refusals are logged (all but the two local unknown users)
    live.inst.wait_for(lambda: live.log(mark).count("Relay access denied; from=<stranger@")
                       >= len(FOREIGN) - 2, what="a log line for each refusal")
    log = live.log(mark)
    assert "queued as" not in log and "client=" not in log, log


@pytest.mark.parametrize("service", ["sub", "smtps"])
def test_authenticated_clients_may_relay(live, service):
    mark = live.mark()
    c = client(live, service, login=True)
    try:
        assert c.docmd("MAIL FROM:<alice@hato.test>")[0] == 250
        for rcpt in ("user@foreign.example", "USER@FOREIGN.EXAMPLE"):
            code, text = c.docmd(f"RCPT TO:<{rcpt}>")
            assert code == 250, (rcpt, code, text)
        assert c.docmd("RSET")[0] == 250  # nothing sent: the queue stays clean
        c.quit()
    finally:
        c.close()
    assert "Relay access denied" not in live.log(mark)

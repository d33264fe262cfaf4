"""smtpd's per-client limits, asked of Debian's Postfix and of hato: the
same dialogue with the same limits gives the same replies and the same
warning lines (hato's smtpd counts through its anvil service, Postfix's
through its own)."""

from __future__ import annotations

import re
import smtplib
import socket
import time

import pytest

from tests.integration.instance import Instance
from tests.integration.test_t14_anvil import started
from tests.postfix_instance import PostfixInstance

pytestmark = [pytest.mark.differential, pytest.mark.integration]

LIMITS = {"smtpd_client_event_limit_exceptions": "",
          "smtpd_client_connection_count_limit": "2",
          "smtpd_client_connection_rate_limit": "0",
          "smtpd_client_message_rate_limit": "2",
          "smtpd_client_recipient_rate_limit": "3"}


def dialogue(port: int) -> list[str]:
    """Three connections held (the third refused), then MAIL and RCPT
    until their rates run out."""
    out = []
    held = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.append(s)
        out.append(s.makefile("rb").readline().decode().rstrip())
        time.sleep(0.2)
    for s in held:
        s.close()
    time.sleep(1)  # both servers hear of the ends a moment later
    c = smtplib.SMTP("127.0.0.1", port, timeout=30)
    c.ehlo("client.example")
    for _ in range(3):
        code, text = c.mail("sender@example.org")
        out.append(f"{code} {text.decode()}")
        for _ in range(2):
            code, text = c.rcpt("postmaster@mx.hato.test")
            out.append(f"{code} {text.decode()}")
        c.rset()
    c.quit()
    # the greeting names the software; the rest must be the same
    return [re.sub(r"ESMTP (hato|Postfix)$", "ESMTP", line.replace("\n", " ")) for line in out]


def warnings(log: str) -> list[str]:
    found = re.findall(r"warning: ((?:Connection|Message|Recipient)[^:]*): (\d+) from", log)
    return [f"{what}: {n}" for what, n in found]


def test_limits_answer_as_postfix():
    instance = Instance("anvil-diff")
    try:
        instance.postconf("myhostname = mx.hato.test", "mydestination = $myhostname, localhost")
        started(instance, LIMITS)
        hato = dialogue(instance.limited)
        instance.wait_log("Message delivery request rate limit exceeded")
        hato_log = instance.log_text()
    finally:
        instance.cleanup()
    with PostfixInstance(LIMITS) as pf:
        time.sleep(1)  # the readiness probe's session ends
        postfix = dialogue(pf.port)
        time.sleep(0.5)
        pf_log = pf.log_text()
    assert hato == postfix
    assert hato[2] == "421 4.7.0 mx.hato.test Error: too many connections from 127.0.0.1"
    assert "450 4.7.1 Error: too much mail from 127.0.0.1" in hato
    assert "450 4.7.1 Error: too many recipients from 127.0.0.1" in hato
    assert warnings(hato_log) == warnings(pf_log), pf_log[-2000:]

"""t-38: what the smtp client does to mail on its way out, differential: the
same message, submitted over SMTP, leaves Debian's Postfix and hato through
their smtp clients with the same tables to the same recording server
(tests/smtp_peer.py).

* smtp_generic_maps (texthash): the envelopes must match, and so must the
  headers (Received lines aside) and the body: addresses rewritten in the
  envelope and in the primary header block, in the same folding, and
  nothing else touched (the body, a Subject that holds an address, the
  headers of an attached message);
* smtp_header_checks, smtp_mime_header_checks, smtp_nested_header_checks
  and smtp_body_checks (regexp): the same content out, and the same log
  lines for the actions."""

from __future__ import annotations

import re
import shutil
import smtplib
import tempfile
import time
from pathlib import Path

import pytest

from tests.postfix_instance import PostfixInstance
from tests.smtp_peer import SmtpPeer

from .instance import smtp_ready

pytestmark = pytest.mark.integration

GENERIC = """\
joe@mx.hato.test      joe.public@isp.example
bob                   bob.smith@isp.example
@localhost            @isp.example
dave@example.net      dave@isp.example
"""

SITE = {"myhostname": "mx.hato.test", "mydomain": "hato.test", "myorigin": "$myhostname",
        "mydestination": "$myhostname, localhost", "mynetworks": "127.0.0.0/8"}

MESSAGE = """\
From: "Joe User" <joe@mx.hato.test>
To: friend@example.org, bob@mx.hato.test,
  Dave <dave@example.net>
Cc: carol@localhost
Reply-To: bob@localhost
Subject: a note for joe@mx.hato.test
Date: Mon, 30 Nov 2026 10:00:00 +0000
Message-ID: <t38.1@mx.hato.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

From: joe@mx.hato.test is not a header here
--b1
Content-Type: message/rfc822

From: joe@mx.hato.test
To: bob@localhost
Subject: attached

inner body
--b1--
"""

ENVELOPE = ("joe@mx.hato.test", ["friend@example.org", "dave@example.net"])


def submit(port: int, message: str = MESSAGE) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.hato.test")
        refused = s.sendmail(ENVELOPE[0], ENVELOPE[1], message.replace("\n", "\r\n").encode())
        assert not refused


def wait_messages(peer: SmtpPeer, n: int, log) -> None:
    deadline = time.monotonic() + 60
    while len(peer.messages) < n:
        assert time.monotonic() < deadline, f"nothing relayed to the peer:\n{log()[-3000:]}"
        time.sleep(0.1)


def headers_and_body(data: bytes) -> tuple[list[str], bytes]:
    """The logical headers of the primary block (as sent, folding kept),
    Received lines left out, and the body."""
    head, _, body = data.partition(b"\r\n\r\n")
    headers: list[str] = []
    for line in head.decode().split("\r\n"):
        if line[:1] in (" ", "\t") and headers:
            headers[-1] += "\r\n" + line
        else:
            headers.append(line)
    return [h for h in headers if not h.lower().startswith("received:")], body


@pytest.fixture
def table():
    """The generic table, where both mail systems' unprivileged smtp
    processes can read it (pytest's own tmp_path is root's alone)."""
    where = Path(tempfile.mkdtemp(prefix="hato-t38-", dir="/tmp"))
    where.chmod(0o755)
    path = where / "generic"
    path.write_text(GENERIC)
    path.chmod(0o644)
    yield path
    shutil.rmtree(where, ignore_errors=True)


def test_generic_maps_like_postfix(instance, table):
    with SmtpPeer() as peer:
        relay = f"[127.0.0.1]:{peer.port}"
        with PostfixInstance({**SITE, "default_transport": "smtp", "relayhost": relay,
                              "smtp_generic_maps": f"texthash:{table}"},
                             master_cf_extra="smtp unix - - n - - smtp\n") as pf:
            submit(pf.port)
            wait_messages(peer, 1, pf.log_text)
        inst = instance
        inst.postconf(*(f"{k} = {v}" for k, v in SITE.items()), "virtual_mailbox_domains =",
                      f"relayhost = {relay}", f"smtp_generic_maps = texthash:{table}")
        inst.start()
        inst.wait_for(lambda: smtp_ready(inst.port), what="hato's smtpd")
        submit(inst.port)
        wait_messages(peer, 2, inst.log_text)
        postfix, hato = peer.messages[0], peer.messages[1]

    # the envelope: the sender and the one mapped recipient rewritten
    assert postfix.sender == "joe.public@isp.example"
    assert sorted(postfix.recipients) == ["dave@isp.example", "friend@example.org"]
    assert (hato.sender, sorted(hato.recipients)) == (postfix.sender,
                                                       sorted(postfix.recipients))
    p_headers, p_body = headers_and_body(postfix.data)
    h_headers, h_body = headers_and_body(hato.data)
    assert 'From: "Joe User" <joe.public@isp.example>' in p_headers  # it did rewrite
    assert h_headers == p_headers, (h_headers, p_headers)
    assert h_body == p_body
    assert b"From: joe@mx.hato.test\r\nTo: bob@localhost\r\n" in h_body  # attached: as it was
    # the log names the recipient as queued, not as rewritten
    log = inst.log_text()
    assert "to=<dave@example.net>" in log and "status=sent" in log, log[-3000:]


CHECKS = {
    "smtp_header_checks": ("/^Received: from inside\\./ IGNORE\n"
                           "/^Subject: (.*)/ WARN subject was $1\n"
                           "/^X-Secret:/ STRIP\n"
                           "/^X-Mark:/ REPLACE X-Mark: replaced\n"
                           "/^X-Other:/ PREPEND X-Added: yes\n"
                           "/^X-Refuse:/ REJECT not here\n"),
    "smtp_mime_header_checks": "/^Content-Type: text/ INFO a text part\n",
    "smtp_nested_header_checks": "/^X-Secret:/ IGNORE\n",
    "smtp_body_checks": ("/^password:/ REPLACE password: ***\n"
                         "/^drop me$/ IGNORE\n"),
}

CHECKED = """\
Received: from inside.example (inside.example [192.168.1.5])
\tby mx.hato.test
Subject: hello there
X-Secret: 42
X-Mark: old
X-Other: 1
X-Refuse: 1
Date: Mon, 30 Nov 2026 10:00:00 +0000
Message-ID: <t38.2@mx.hato.test>
From: joe@mx.hato.test
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

password: hunter2
drop me
kept
--b1
Content-Type: message/rfc822

Subject: inner
X-Secret: inner

inner body
--b1--
"""


def actions(log: str, qid_pattern: str = r"[0-9A-Za-z]+") -> list[str]:
    """The smtp client's action lines, without the program and queue id."""
    out = []
    for line in log.splitlines():
        m = re.search(r"/smtp\[\d+\]: " + qid_pattern +
                      r": ((warning|info|replace|prepend|strip): (header|body) .*)", line)
        if m:
            out.append(m.group(1))
        m = re.search(r"/smtp\[\d+\]: (warning: unsupported command in .*)", line)
        if m:
            out.append(m.group(1))
    return out


def test_header_and_body_checks_like_postfix(instance, table):
    tables = {}
    for name, text in CHECKS.items():
        path = table.parent / name
        path.write_text(text)
        path.chmod(0o644)
        tables[name] = f"regexp:{path}"
    with SmtpPeer() as peer:
        relay = f"[127.0.0.1]:{peer.port}"
        with PostfixInstance({**SITE, "default_transport": "smtp", "relayhost": relay,
                              **tables},
                             master_cf_extra="smtp unix - - n - - smtp\n") as pf:
            submit(pf.port, CHECKED)
            wait_messages(peer, 1, pf.log_text)
            postfix_log = pf.log_text()
        inst = instance
        inst.postconf(*(f"{k} = {v}" for k, v in SITE.items()), "virtual_mailbox_domains =",
                      f"relayhost = {relay}", *(f"{k} = {v}" for k, v in tables.items()))
        inst.start()
        inst.wait_for(lambda: smtp_ready(inst.port), what="hato's smtpd")
        submit(inst.port, CHECKED)
        wait_messages(peer, 2, inst.log_text)
        postfix, hato = peer.messages[0], peer.messages[1]
    p_headers, p_body = headers_and_body(postfix.data)
    h_headers, h_body = headers_and_body(hato.data)
    assert "X-Mark: replaced" in p_headers and "X-Secret: 42" not in p_headers  # it acted
    assert h_headers == p_headers, (h_headers, p_headers)
    assert h_body == p_body, (h_body, p_body)
    assert b"password: ***" in h_body and b"drop me" not in h_body
    p_actions = actions(postfix_log)
    assert len(p_actions) >= 6, postfix_log[-3000:]
    assert actions(inst.log_text()) == p_actions, (actions(inst.log_text()), p_actions)

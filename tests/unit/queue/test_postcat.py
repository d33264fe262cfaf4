"""Debian's Postfix reads hato's queue files: ``postcat`` on a committed file.

The record format is Postfix's, so Postfix's own queue file printer must
show the same envelope, the same content and the same done recipients.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from hato.queue.envelope import Envelope, Recipient
from tests.conftest import require_tool

pytestmark = pytest.mark.differential


def _postcat(tmp_path, path: str, *flags: str) -> str:
    postcat = require_tool("postcat", "postfix")
    conf = tmp_path / "postfix-conf"
    conf.mkdir(exist_ok=True)
    main_cf = conf / "main.cf"
    main_cf.write_text("")
    os.utime(main_cf, (1_600_000_000, 1_600_000_000))  # Postfix waits on a fresh main.cf
    out = subprocess.run([postcat, "-c", str(conf), *flags, path], capture_output=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout.decode("utf-8", "replace")


def test_postcat_reads_a_hato_queue_file(tmp_path, store):
    w = store.create()
    env = Envelope(
        sender="sender@example.com",
        recipients=[Recipient("one@example.org", "One@Example.org",
                              frozenset({"SUCCESS", "FAILURE"}), "rfc822;One@Example.org"),
                    Recipient("two@example.org")],
        ret="FULL", envid="QQ314159",
        attributes={"log_client_name": "client.example.com", "sasl_username": "joe"})
    w.write_envelope(env)
    w.write_content(b"Subject: postcat\r\n\r\nfirst line\r\n" + b"x" * 5000 + b"\r\nlast")
    qid = w.commit()
    with store.open("incoming", qid) as f:
        f.mark_done(f.envelope.recipients[0])
    text = _postcat(tmp_path, store.path("incoming", qid), "-e", "-b", "-h")
    lines = [line.strip() for line in text.splitlines()]
    assert "sender: sender@example.com" in lines
    assert "named_attribute: log_client_name=client.example.com" in lines
    assert "named_attribute: sasl_username=joe" in lines
    assert "dsn_return_flags: 1" in lines
    assert "dsn_envelope_id: QQ314159" in lines
    assert "dsn_original_recipient: rfc822;One@Example.org" in lines
    assert "dsn_notify_flags: 6" in lines
    assert "original_recipient: One@Example.org" in lines
    assert "done_recipient: one@example.org" in lines
    assert "recipient: two@example.org" in lines
    assert any(line.startswith("*** MESSAGE CONTENTS") for line in lines)
    assert any(line.startswith("*** MESSAGE FILE END") for line in lines)
    assert "Subject: postcat" in text and "first line" in text
    # postcat -q style content only (-b -h without -e) is the message itself
    body = _postcat(tmp_path, store.path("incoming", qid), "-b", "-h")
    assert "x" * 5000 in body and body.rstrip().endswith("last")

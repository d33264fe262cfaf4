"""The ``encoding`` attribute cleanup records (7bit or 8bit): what the smtp
client reads to choose BODY= and whether to convert the content for a
server without 8BITMIME."""

from __future__ import annotations

import datetime

import pytest

from hato.queue.cleanup import Cleanup, Submission, cleanup_message
from hato.queue.envelope import ATTR_ENCODING
from hato.queue.inject import clean_into_queue
from hato.queue.store import INCOMING, QueueStore
from tests.unit.io.test_smtpd_session import server_for, talk
from tests.unit.policy.conftest import make_settings

UTC = datetime.UTC
BODY_7BIT = b"".join(b"line %d of plain text\n" % i for i in range(2000))


def encoding(content: bytes, main: str = "", chunk: int = 65536, **kw) -> str:
    svc = Cleanup(make_settings(main))
    sub = Submission("4ABC", "joe@example.net", ["ann@example.org"],
                     arrival_time=1700000000.0, tz=UTC, **kw)
    result, _ = cleanup_message(svc, sub, content, chunk=chunk)
    assert result.ok
    return result.encoding


def test_7bit_content():
    assert encoding(b"Subject: s\n\n" + BODY_7BIT) == "7bit"
    assert encoding(b"") == "7bit"


@pytest.mark.parametrize("chunk", [1, 7, 4096, 65536])
def test_8bit_anywhere_in_the_content(chunk):
    # late in a long body (lines that take cleanup's short cut), in chunks
    assert encoding(b"Subject: s\n\n" + BODY_7BIT + b"caf\xc3\xa9\n", chunk=chunk) == "8bit"
    # in a header only
    assert encoding(b"Subject: caf\xc3\xa9\n\nplain\n", chunk=chunk) == "8bit"
    # in the last line, without a line end
    assert encoding(b"Subject: s\n\nplain\n\xff", chunk=chunk) == "8bit"


def test_the_clients_word():
    # BODY=8BITMIME counts even for 7-bit content; BODY=7BIT does not hide 8-bit.
    assert encoding(b"Subject: s\n\nplain\n", encoding="8bit") == "8bit"
    assert encoding(b"Subject: s\n\nplain\n", encoding="7bit") == "7bit"
    assert encoding(b"Subject: s\n\n\xe9\n", encoding="7bit") == "8bit"


def test_text_cleanup_adds_counts(tmp_path):
    (tmp_path / "hc").write_bytes(b"/^Subject:/ PREPEND X-Note: caf\xc3\xa9\n")
    main = f"header_checks = regexp:{tmp_path / 'hc'}\n"
    assert encoding(b"Subject: s\n\nplain\n", main) == "8bit"
    assert encoding(b"To: ann@example.org\n\nplain\n", main) == "7bit"


# -- in the queue file -------------------------------------------------------------------------

def queued(tmp_path, content: bytes, attributes: dict[str, str] | None = None) -> dict[str, str]:
    settings = make_settings(f"queue_directory = {tmp_path}/queue\n")
    store = QueueStore.from_settings(settings)
    store.ensure_layout()
    svc = Cleanup(settings)
    # the way pickup queues what sendmail dropped
    got = clean_into_queue(svc, store, [content[:10], content[10:]], log=lambda *a: None,
                           attributes={"rewrite_context": "local", "uid": "1000",
                                       **(attributes or {})},
                           sender="joe", recipients=["ann@example.org"],
                           rewrite_context="local", userid=1000)
    assert got.queue_id is not None
    qf = store.open(INCOMING, got.queue_id, writable=False)
    try:
        return qf.envelope.attributes
    finally:
        qf.close()


def test_local_submission_records_the_encoding(tmp_path):
    assert queued(tmp_path, b"Subject: s\n\nplain\n")[ATTR_ENCODING] == "7bit"
    assert queued(tmp_path, b"Subject: s\n\ncaf\xc3\xa9\n")[ATTR_ENCODING] == "8bit"


def test_declared_encoding_in_the_attributes(tmp_path):
    # smtpd may pass the client's BODY= as the encoding attribute, as
    # Postfix's does; what cleanup decides is what the queue file says.
    attrs = queued(tmp_path, b"Subject: s\n\nplain\n", {ATTR_ENCODING: "8bit"})
    assert attrs[ATTR_ENCODING] == "8bit"
    attrs = queued(tmp_path, b"Subject: s\n\n\xe9\n", {ATTR_ENCODING: "7bit"})
    assert attrs[ATTR_ENCODING] == "8bit"


def test_smtpd_message_records_the_encoding(tmp_path):
    server, _ = server_for(tmp_path)
    lines = talk(server, b"EHLO client.example\r\n",
                 b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n",
                 b"RCPT TO:<u@mx1.example.com>\r\n", b"DATA\r\n",
                 b"Subject: t\r\n\r\ncaf\xc3\xa9\r\n.\r\n",
                 b"MAIL FROM:<a@example.org>\r\n",
                 b"RCPT TO:<u@mx1.example.com>\r\n", b"DATA\r\n",
                 b"Subject: t\r\n\r\nplain\r\n.\r\n", b"QUIT\r\n")
    ids = [ln.rsplit(" ", 1)[1] for ln in lines if ln.startswith("250 2.0.0 Ok: queued as ")]
    assert len(ids) == 2
    store = QueueStore.from_settings(server.settings)
    got = []
    for qid in ids:
        qf = store.open(INCOMING, qid, writable=False)
        got.append(qf.envelope.attributes[ATTR_ENCODING])
        qf.close()
    assert got == ["8bit", "7bit"]

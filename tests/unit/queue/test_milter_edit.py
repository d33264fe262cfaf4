"""The message milters see at the end of DATA and the changes they make
(hato.queue.milter_edit): read back from the queue file being written,
changed as Postfix's cleanup changes it, written anew under the same queue
id and read back from the committed file."""

from __future__ import annotations

import datetime

import pytest

from hato.proto import milter as M
from hato.queue.cleanup import Cleanup
from hato.queue.inject import Injection
from hato.queue.store import INCOMING, HOLD, QueueStore
from hato.tables.registry import open_table
from tests.unit.policy.conftest import make_settings

UTC = datetime.UTC
RECEIVED = ("Received: from client.test (client.test [192.0.2.1])\n"
            "\tby mx.hato.test (hato) with ESMTP id QID\n\tfor <ann@example.org>")
CONTENT = (b"Subject: hello\r\nFrom: joe@example.org\r\nX-Two: 1\r\nX-Two: 2\r\n"
           b"To: ann@example.org\r\n\r\nline one\r\nline two\r\n")


def start(tmp_path, content: bytes = CONTENT, extra: str = "", received: str | None = RECEIVED,
          recipients=("ann@example.org", "bob@example.org")):
    settings = make_settings(f"queue_directory = {tmp_path}/q\n" + extra)
    store = QueueStore(str(tmp_path / "q"))
    store.ensure_layout()
    inj = Injection(Cleanup(settings), store)
    inj.start(log=lambda level, text: None, sender="joe@example.org",
              recipients=list(recipients), rewrite_context="remote", received=received,
              origin="client.test[192.0.2.1]", proto="ESMTP", helo="client.test", tz=UTC)
    inj.feed(content)
    assert inj.end_content().ok
    return store, inj


def committed(store, inj, queue=INCOMING):
    result = inj.commit()
    assert result.queue_id == inj.queue_id
    with store.open(queue, inj.queue_id, writable=False) as qf:
        return result, qf.envelope, qf.read_content()


def test_headers_and_body_as_written_with_our_received_hidden(tmp_path):
    store, inj = start(tmp_path)
    edit = inj.milter_message()
    headers = list(edit.headers())
    assert headers[0][1] is True and headers[0][0].startswith("Received: from client.test")
    assert "\n\tby mx.hato.test" in headers[0][0]
    assert [h for h, hidden in headers[1:]] == [
        "Subject: hello", "From: joe@example.org", "X-Two: 1", "X-Two: 2",
        "To: ann@example.org"]
    assert not any(hidden for _, hidden in headers[1:])
    assert list(edit.body_lines()) == [b"line one", b"line two"]
    # nothing changed: the file is committed as it was written
    result, env, content = committed(store, inj)
    assert not edit.rewritten
    assert content.startswith(b"Received: from client.test")
    assert content.endswith(b"\n\nline one\nline two\n")


def test_header_changes_follow_postfix_indexes(tmp_path):
    store, inj = start(tmp_path)
    edit = inj.milter_message()
    edit.apply("m1", [
        M.AddHeader("X-Added", " yes"),
        M.InsertHeader(0, "X-First", " top"),  # before our own Received:
        M.InsertHeader(2, "X-Third", " three"),
        M.ChangeHeader(2, "X-TWO", " changed"),  # the second X-Two
        M.ChangeHeader(1, "Subject", None),  # deleted
        M.ChangeHeader(1, "Received", None),  # ours is not counted: nothing to delete
        M.ChangeHeader(3, "X-Two", " appended"),  # no third X-Two: added
        M.AddHeader("X-Folded", " a\r\n\tb"),
    ])
    names = [h.split(":")[0] for h, _ in edit.headers()]
    assert names == ["X-First", "Received", "X-Third", "From", "X-Two", "X-TWO", "To",
                     "X-Added", "X-Two", "X-Folded"]
    result, env, content = committed(store, inj)
    assert edit.rewritten
    head, _, body = content.partition(b"\n\n")
    assert head.split(b"\n")[0] == b"X-First: top"
    assert b"X-Two: 1\nX-TWO: changed\n" in head
    assert b"Subject:" not in head
    assert head.endswith(b"X-Two: appended\nX-Folded: a\n\tb")
    assert body == b"line one\nline two\n"
    assert env.queue_id == inj.queue_id
    assert env.size == len(content)


def test_body_replaced_and_next_milter_sees_it(tmp_path):
    store, inj = start(tmp_path)
    edit = inj.milter_message()
    edit.apply("m1", [M.ReplaceBody(b"new body\r\nsecond "), M.ReplaceBody(b"half\r\nlast")])
    assert list(edit.body_lines()) == [b"new body", b"second half", b"last"]
    edit.apply("m2", [M.AddHeader("X-Seen", " by m2")])
    assert list(edit.body_lines()) == [b"new body", b"second half", b"last"]
    _, _, content = committed(store, inj)
    assert content.endswith(b"X-Seen: by m2\n\nnew body\nsecond half\nlast\n")


def test_envelope_changes(tmp_path):
    store, inj = start(tmp_path)
    edit = inj.milter_message()
    edit.apply("m1", [
        M.ChangeSender("<new@example.org>", "RET=HDRS ENVID=abc+2Bd"),
        M.AddRecipient("<carol@example.org>", None),
        M.AddRecipient("<dave@example.org>", "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;d+40x"),
        M.DeleteRecipient("<bob@example.org>"),
        M.DeleteRecipient("<nobody@example.org>"),
    ])
    result, env, _ = committed(store, inj)
    assert env.sender == "new@example.org"
    assert env.ret == "HDRS" and env.envid == "abc+d"
    assert [r.address for r in env.recipients] == ["ann@example.org", "carol@example.org",
                                                    "dave@example.org"]
    dave = env.recipients[2]
    assert dave.notify == frozenset({"SUCCESS", "FAILURE"}) and dave.orcpt == "rfc822;d@x"


def test_quarantine_holds(tmp_path):
    store, inj = start(tmp_path)
    edit = inj.milter_message()
    edit.apply("m1", [M.Quarantine("suspicious")])
    result = inj.commit()
    assert store.exists(HOLD, inj.queue_id)
    assert result.result.hold


@pytest.mark.parametrize("action,expect", [
    ("REJECT bad header", "reject"), ("DISCARD", "discard"), ("HOLD", "hold"),
    ("IGNORE", "ignore")])
def test_milter_header_checks(tmp_path, action, expect):
    (tmp_path / "hc").write_text(f"/^X-Spam: yes/ {action}\n")
    store, inj = start(tmp_path)
    table = open_table(f"regexp:{tmp_path}/hc")
    from hato.tables.search import TableList
    edit = inj.milter_message(header_checks=TableList([table], title="milter_header_checks"))
    edit.apply("m1", [M.AddHeader("X-Spam", " yes"), M.AddHeader("X-Other", " fine")])
    result = inj.commit()
    logs = [t for _, t in result.result.log]
    if expect == "reject":
        assert result.queue_id is None and not result.result.ok
        assert result.result.smtp_reply() == "550 5.7.1 bad header"
        assert any(": milter-header-reject: header X-Spam: yes from client.test[192.0.2.1];"
                   in t for t in logs), logs
    elif expect == "discard":
        assert result.queue_id is None and result.result.discard
    elif expect == "hold":
        assert store.exists(HOLD, inj.queue_id)
    else:
        with store.open(INCOMING, inj.queue_id, writable=False) as qf:
            content = qf.read_content()
        assert b"X-Spam" not in content and b"X-Other: fine" in content


def test_no_received_nothing_hidden_and_no_blank_line(tmp_path):
    store, inj = start(tmp_path, content=b"Subject: x\nbody without blank line? no: header\n",
                       received=None)
    edit = inj.milter_message()
    assert [hidden for _, hidden in edit.headers()] == [False]
    assert list(edit.body_lines()) == [b"body without blank line? no: header"]

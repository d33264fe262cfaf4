"""postqueue -p / -j output (Postfix's showq_compat.c and showq_json.c
formats), option handling, ids and the access lists, in process."""

from __future__ import annotations

import json
import os
import time

import pytest

from hato.cli.postqueue import json_line, printable, queue_listing
from hato.queue.envelope import Envelope, Recipient
from hato.queue.listing import ListedMessage, ListedRecipient
from hato.queue.store import QueueStore
from tests.hatorun import hato_inprocess

T0 = 1700000000  # Tue Nov 14 22:13:20 2023 UTC


def utc(t: float) -> time.struct_time:
    return time.gmtime(t)


def msg(qid="3F2A1C4D5E", queue="deferred", size=1234, sender="demo@hato.test",
        rcpts=(("a@x.test", ""),), expire=False) -> ListedMessage:
    return ListedMessage(queue, qid, T0, size, expire, sender,
                         [ListedRecipient(a, r) for a, r in rcpts])


def listing(*messages, **kw) -> str:
    return "".join(queue_listing(messages, localtime=utc, **kw))


HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n"
INDENT = " " * 41


def test_empty_queue():
    assert listing() == "Mail queue is empty\n"


def test_one_message_layout():
    out = listing(msg())
    assert out == (HEADER
                   + "3F2A1C4D5E     1234 Tue Nov 14 22:13:20  demo@hato.test\n"
                   + INDENT + "a@x.test\n"
                   + "\n-- 1 Kbytes in 1 Request.\n")


def test_markers_and_footer_plural():
    out = listing(msg("A1", "active", 1000), msg("B2", "hold", 1000),
                  msg("C3", "deferred", 1000, expire=True), msg("D4", "incoming", 1000))
    lines = out.splitlines()
    assert lines[1].startswith("A1*" + " " * 12 + "1000 Tue")
    assert "\nB2!" + " " * 12 + "1000 " in out and "\nC3#" + " " * 12 + "1000 " in out
    assert "\nD4" + " " * 13 + "1000 " in out
    # blank line between messages, none after the header
    assert lines[0] + "\n" == HEADER and lines[3] == "" and lines[2] == INDENT + "a@x.test"
    # 4000 bytes: Kbytes are rounded down
    assert out.endswith("\n\n-- 3 Kbytes in 4 Requests.\n")


def test_held_and_forced_to_expire():
    out = listing(msg("E5", "hold", 10, expire=True))
    assert "\nE5!#" + " " * 13 + "10 Tue" in out


def test_null_sender_and_quoted_local_part():
    out = listing(msg(sender="", rcpts=(('john smith@x.test', ""), ("", ""))))
    assert " Tue Nov 14 22:13:20  MAILER-DAEMON\n" in out
    assert INDENT + '"john smith"@x.test\n' in out
    assert INDENT + "MAILER-DAEMON\n" in out
    out = "".join(queue_listing([msg(sender="")], localtime=utc, empty="postmaster"))
    assert " postmaster\n" in out


def test_short_reason_is_right_aligned_to_column_78():
    out = listing(msg(rcpts=(("a@x.test", "connect to x.test: Connection refused"),)))
    line = out.splitlines()[2]
    assert line == " " * (76 - 37) + "(connect to x.test: Connection refused)"
    assert len(line) == 78


def test_long_reason_is_not_wrapped():
    why = ("host 127.0.0.1[127.0.0.1] said: 450 4.7.1 <long@defer.test>: Recipient address "
           "rejected: this is a very long explanation (in reply to RCPT TO command)")
    out = listing(msg(rcpts=(("a@x.test", why),)))
    assert out.splitlines()[2] == f"({why})"
    exactly = "x" * 76
    assert listing(msg(rcpts=(("a@x.test", exactly),))).splitlines()[2] == f"({exactly})"
    one_less = "x" * 75
    assert listing(msg(rcpts=(("a@x.test", one_less),))).splitlines()[2] == f" ({one_less})"


def test_reason_shown_once_per_run_and_reason_unavailable():
    out = listing(msg(rcpts=(("a@x.test", "busy"), ("b@x.test", "busy"), ("c@x.test", ""),
                             ("d@x.test", ""), ("e@x.test", "busy"))))
    lines = out.splitlines()[2:-2]
    assert lines == [" " * 72 + "(busy)", INDENT + "a@x.test", INDENT + "b@x.test",
                     " " * 58 + "(reason unavailable)", INDENT + "c@x.test",
                     INDENT + "d@x.test", " " * 72 + "(busy)", INDENT + "e@x.test"]


def test_no_reason_line_when_no_recipient_has_one():
    out = listing(msg(rcpts=(("a@x.test", ""), ("b@x.test", ""))))
    assert "(" not in out


def test_long_queue_ids_layout():
    out = "".join(queue_listing([msg("4SQhsX0JpTzJh7z", "active", 99)], long_ids=True,
                                localtime=utc))
    lines = out.splitlines()
    assert lines[0] == "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------"
    assert lines[1] == "4SQhsX0JpTzJh7z*        99 Tue Nov 14 22:13:20 demo@hato.test"
    assert lines[2] == " " * 47 + "a@x.test"


def test_printable():
    assert printable("a\tb\x7fc\udcff") == "a?b?c?"
    assert printable("grüße") == "grüße"
    assert printable("grüße", utf8=False) == "gr??e"


def test_json_line_members():
    m = msg(rcpts=(("a@x.test", 'said "no" \\ later'), ("b@x.test", "")), sender="")
    line = json_line(m)
    assert line.endswith("}\n") and line.count("\n") == 1
    obj = json.loads(line)
    assert list(obj) == ["queue_name", "queue_id", "arrival_time", "message_size",
                         "forced_expire", "sender", "recipients"]
    assert obj["queue_name"] == "deferred" and obj["queue_id"] == "3F2A1C4D5E"
    assert obj["arrival_time"] == T0 and obj["message_size"] == 1234
    assert obj["forced_expire"] is False and obj["sender"] == "MAILER-DAEMON"
    assert obj["recipients"] == [{"address": "a@x.test", "delay_reason": 'said "no" \\ later'},
                                 {"address": "b@x.test"}]
    # Postfix's spacing
    assert line.startswith('{"queue_name": "deferred", "queue_id": "3F2A1C4D5E", ')
    assert json.loads(json_line(msg(rcpts=())))["recipients"] == []


# -- the command, in process -------------------------------------------------------------

@pytest.fixture
def inst(tmp_path):
    d = tmp_path / "inst"
    r = hato_inprocess("init", str(d))
    assert r.returncode == 0, r.stderr
    return d


def put(d, queue: str, sender: str, rcpts: list[str], body: bytes = b"Subject: t\n\nhi\n"):
    store = QueueStore(str(d / "queue"))
    w = store.create(queue)
    w.write_envelope(Envelope(sender=sender, recipients=[Recipient(r) for r in rcpts]))
    w.write_content(body)
    return w.commit()


def pq(d, *args: str):
    return hato_inprocess("-c", str(d), "postqueue", *args)


def test_usage_errors_exit_69(inst):
    usage = ("postqueue: fatal: usage: postqueue -f | postqueue -i queueid | postqueue -j | "
             "postqueue -p | postqueue -s site\n")
    for args in ((), ("-p", "x"), ("-p", "-j"), ("-f", "-s", "x.test")):
        r = pq(inst, *args)
        assert (r.returncode, r.stderr) == (69, usage), args
    r = pq(inst, "-x")
    assert r.returncode == 69 and r.stderr == "postqueue: invalid option -- 'x'\n" + usage
    r = pq(inst, "-i")
    assert r.stderr == "postqueue: option requires an argument -- 'i'\n" + usage


def test_listing_in_process(inst):
    assert pq(inst, "-p").stdout == "Mail queue is empty\n"
    assert pq(inst, "-j").stdout == ""
    qid = put(inst, "hold", "", ["x@y.test"])
    r = pq(inst, "-p")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(HEADER + f"{qid}!")
    assert "MAILER-DAEMON\n" + INDENT + "x@y.test\n" in r.stdout
    assert r.stdout.endswith("\n-- 0 Kbytes in 1 Request.\n")
    obj = json.loads(pq(inst, "-j").stdout)
    assert (obj["queue_name"], obj["queue_id"], obj["sender"]) == ("hold", qid, "MAILER-DAEMON")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC/DEF", "", "x" * 300])
def test_malformed_ids_are_refused_before_anything(inst, bad):
    before = sorted(os.walk(inst / "queue"))
    r = pq(inst, "-i", bad)
    assert r.returncode == 69
    shown = bad[:100] + ("..." if len(bad) > 100 else "")
    assert r.stderr == f'postqueue: fatal: Cannot flush queue ID - invalid name: "{shown}"\n'
    assert sorted(os.walk(inst / "queue")) == before


@pytest.mark.parametrize("bad", ["bad..site", "-x.test", "[300.1.2.3]", "a b"])
def test_malformed_sites_are_refused(inst, bad):
    r = pq(inst, "-s", bad)
    assert r.returncode == 69
    assert r.stderr == f'postqueue: fatal: Cannot flush mail queue - invalid destination: "{bad}"\n'


def test_flush_when_the_mail_system_is_down(inst):
    for args in (("-f",), ("-i", "3F2A1C4D5E"), ("-s", "x.test")):
        r = pq(inst, *args)
        assert r.returncode == 69, args
        assert r.stderr == "postqueue: fatal: Cannot flush mail queue - mail system is down\n"


def test_access_lists(inst, monkeypatch):
    """Users other than root and mail_owner: the lists decide (the real
    unprivileged user is in tests/integration/test_t25_postqueue.py)."""
    import pwd

    nobody = pwd.getpwnam("nobody")
    with open(inst / "main.cf", "a") as f:
        f.write("authorized_mailq_users = root, !nobody, static:anyone\n"
                "authorized_flush_users = root\n")
    monkeypatch.setattr(os, "getuid", lambda: nobody.pw_uid)
    r = pq(inst, "-p")
    assert r.returncode == 69
    assert r.stderr == (f"postqueue: fatal: User nobody({nobody.pw_uid}) is not allowed to "
                        "view the mail queue\n")
    r = pq(inst, "-f")
    assert r.stderr == (f"postqueue: fatal: User nobody({nobody.pw_uid}) is not allowed to "
                        "flush the mail queue\n")
    with open(inst / "main.cf", "a") as f:
        f.write("authorized_mailq_users = nobody\n")
    r = pq(inst, "-p")
    assert (r.returncode, r.stdout) == (0, "Mail queue is empty\n"), r.stderr


def test_mailq_and_sendmail_bp(inst):
    qid = put(inst, "deferred", "demo@hato.test", ["a@b.test"])
    for args in (("mailq",), ("mailq", "-v"), ("sendmail", "-bp"), ("mailq", "-oi")):
        r = hato_inprocess("-c", str(inst), *args)
        assert r.returncode == 0, (args, r.stderr)
        assert r.stdout.startswith(HEADER + f"{qid} "), args
    r = hato_inprocess("-c", str(inst), "mailq", "someone")
    assert (r.returncode, r.stderr) == (75, "mailq: fatal: display queue mode requires no "
                                            "recipient\n")
    r = hato_inprocess("mailq", "-C", str(inst))
    assert r.returncode == 0 and f"{qid} " in r.stdout
    r = hato_inprocess("-c", str(inst), "mailq", "-Q")
    assert r.returncode == 75
    assert r.stderr == "mailq: invalid option -- 'Q'\nmailq: fatal: usage: mailq [options]\n"

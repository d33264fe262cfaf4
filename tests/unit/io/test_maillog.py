"""Logging in Postfix's format, to a file and to a syslog socket, without
ever blocking the caller."""

from __future__ import annotations

import logging
import re
import socket
import threading
import time

from hato.io.maillog import MailLog, MaillogFileHandler, SyslogHandler, syslog_timestamp

LINE = re.compile(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d mail postfix/submission/smtpd\[\d+\]: ")


def test_file_lines_look_like_postfix(tmp_path):
    path = tmp_path / "maillog"
    log = MailLog(syslog_name="postfix/submission", daemon="smtpd", maillog_file=str(path),
                  hostname="mail.example.com")
    log.info("connect from client.example[192.0.2.1]")
    log.warning("hostname nope does not resolve")
    log.error("bad thing")
    log.fatal("worse thing")
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4
    assert all(LINE.match(line) for line in lines), lines
    assert lines[0].endswith(": connect from client.example[192.0.2.1]")
    assert lines[1].endswith(": warning: hostname nope does not resolve")
    assert lines[2].endswith(": error: bad thing")
    assert lines[3].endswith(": fatal: worse thing")


def test_timestamp_day_is_space_padded():
    when = time.mktime((2026, 11, 2, 3, 4, 5, 0, 0, -1))
    assert syslog_timestamp(when) == "Nov  2 03:04:05"


def test_timestamp_follows_the_time_zone_within_one_second(monkeypatch):
    """The timestamp of the last second is kept for the next lines, but
    not across a change of time zone (time.tzset())."""
    when = 1700000000.25
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        assert syslog_timestamp(when) == "Nov 14 22:13:20"
        assert syslog_timestamp(when + 0.5) == "Nov 14 22:13:20"
        assert syslog_timestamp(when + 1) == "Nov 14 22:13:21"
        monkeypatch.setenv("TZ", "Asia/Kolkata")
        time.tzset()
        assert syslog_timestamp(when + 1) == "Nov 15 03:43:21"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_reopens_a_rotated_file(tmp_path):
    path = tmp_path / "maillog"
    log = MailLog(syslog_name="postfix", daemon="qmgr", maillog_file=str(path), hostname="h")
    log.info("one")
    log.close()
    path.rename(tmp_path / "maillog.1")
    log = MailLog(syslog_name="postfix", daemon="qmgr", maillog_file=str(path), hostname="h")
    log.info("two")
    log.close()
    assert "two" in path.read_text() and "one" in (tmp_path / "maillog.1").read_text()


def test_syslog_datagrams(tmp_path):
    address = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(5)
    handler = SyslogHandler("local5", address)
    from hato.io.maillog import PostfixFormatter

    handler.setFormatter(PostfixFormatter("postfix-deux/smtpd"))
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "disk %s", ("full",), None)
    handler.emit(rec)
    data = server.recv(4096).decode()
    handler.close()
    server.close()
    # local5 = 21, warning = 4 → <172>
    assert re.match(r"<172>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d postfix-deux/smtpd\[\d+\]: "
                    r"warning: disk full$", data), data


def test_a_stalled_writer_never_blocks_the_caller(tmp_path, monkeypatch):
    release = threading.Event()
    original = MaillogFileHandler.write_batch

    def stalled(self, batch):
        release.wait(10)
        original(self, batch)

    monkeypatch.setattr(MaillogFileHandler, "write_batch", stalled)
    monkeypatch.setattr("hato.io.maillog.QUEUE_SIZE", 50)
    path = tmp_path / "maillog"
    log = MailLog(syslog_name="postfix", daemon="smtpd", maillog_file=str(path), hostname="h")
    for i in range(500):  # far more than the queue holds: must not block
        log.info(f"line {i}")
    assert log._writer.dropped > 0
    release.set()
    log.close()
    text = path.read_text()
    assert "line 0" in text


def test_missing_syslog_is_not_an_error(tmp_path):
    handler = SyslogHandler("mail", str(tmp_path / "no-such-socket"))
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    handler.emit(rec)  # dropped silently: there is nobody to tell
    handler.close()


def test_lines_logged_in_an_event_loop_are_written_at_the_end_of_its_turn(tmp_path):
    """A file log: the loop writes its own lines once its turn ends (no
    thread switch), in order with lines that worker threads log."""
    import asyncio

    path = tmp_path / "maillog"
    log = MailLog(syslog_name="postfix", daemon="smtpd", maillog_file=str(path),
                  hostname="mail.example.com")

    async def main():
        log.info("one")
        log.info("two")
        assert "one" not in path.read_text()  # not yet: the turn goes on
        await asyncio.sleep(0)
        after_turn = path.read_text()
        await asyncio.to_thread(log.info, "three (a worker thread)")
        for _ in range(200):  # the writer thread writes that one
            if "three" in path.read_text():
                break
            await asyncio.sleep(0.01)
        log.info("four")
        await asyncio.sleep(0)
        return after_turn

    after_turn = asyncio.run(main())
    assert ": one\n" in after_turn and ": two\n" in after_turn
    assert log._writer.is_alive()
    texts = [line.split(": ", 1)[1] for line in path.read_text().splitlines()]
    assert texts == ["one", "two", "three (a worker thread)", "four"]
    log.close()


def test_lines_of_a_loop_that_stopped_mid_turn_are_not_lost(tmp_path):
    import asyncio

    path = tmp_path / "maillog"
    log = MailLog(syslog_name="postfix", daemon="pickup", maillog_file=str(path),
                  hostname="mail.example.com")
    loop = asyncio.new_event_loop()
    loop.call_soon(log.info, "logged in the last turn")
    loop.call_soon(loop.stop)
    loop.run_forever()  # stops before the end-of-turn callback runs
    loop.close()
    log.info("logged after the loop")  # no loop: the thread writes both
    log.close()
    texts = [line.split(": ", 1)[1] for line in path.read_text().splitlines()]
    assert texts == ["logged in the last turn", "logged after the loop"]


def test_a_loop_turn_that_logs_more_than_the_queue_holds_loses_nothing(tmp_path):
    """Thousands of sessions ending in one turn of the loop (a client that
    closes them all at once): the lines are written as they gather, none
    dropped."""
    import asyncio

    path = tmp_path / "maillog"
    log = MailLog(syslog_name="postfix", daemon="smtpd", maillog_file=str(path), hostname="h")

    async def main():
        for i in range(25_000):  # more than QUEUE_SIZE, all in one turn
            log.info(f"disconnect {i}")
        await asyncio.sleep(0)

    asyncio.run(main())
    log.close()
    assert log._writer.dropped == 0
    texts = [line.split(": ", 1)[1] for line in path.read_text().splitlines()]
    assert texts == [f"disconnect {i}" for i in range(25_000)]

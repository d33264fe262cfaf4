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

"""t-07: hato's smtpd against hostile and broken clients.

A slow-drip client is cut off at smtpd_timeout; 500 concurrent connections
sending garbage neither crash a worker, nor queue anything, nor grow the
workers' memory without bound, nor keep a well-behaved client out; maxproc
holds a sixth connection back until a session ends; the 1001st recipient
of a transaction is refused; NUL bytes, 10,000-byte lines and non-ASCII in
commands get clean replies and leave the session usable; pipelining
without PIPELINING is refused under smtpd_forbid_unauth_pipelining; and
SMTP smuggling with every fake end-of-data variant queues exactly one
message under smtpd_forbid_bare_newline = normalize, while ``reject``
refuses a bare <LF> as Postfix does.

Every instance asks its DNS questions (the client's PTR) of a test DNS
server on loopback, which knows no names. To keep the module quick, three
instances serve it: ``shared`` (Postfix's defaults, room for 600 sessions,
bare newlines normalized for every client), ``strict`` (a 3 s
smtpd_timeout with a per-request deadline, smtpd_forbid_unauth_pipelining,
bare newlines rejected) and one with maxproc 5; tests on a shared instance
look only at their own messages and log lines.
"""

from __future__ import annotations

import asyncio
import email
import os
import random
import re
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from tests.dnsserver import (
    DnsServer,
    dns_server,  # noqa: F401  (a pytest fixture)
)

from .instance import Instance, smtp_ready

pytestmark = pytest.mark.integration

BOX = ("mail", "hato.test", "demo")
HOSTNAME = "localhost.localdomain"  # myhostname of a `hato init` instance in tests


# -- helpers -------------------------------------------------------------------------------




def sessions_ended(inst) -> bool:
    log = inst.log_text()
    return log.count("]: connect from ") == log.count("]: disconnect from ")


def wait_sessions_ended(inst, mark: int = 0, count: int = 0) -> None:
    """Wait until every smtpd session that began has ended (and is logged),
    and at least *count* have ended since log offset *mark*: a session
    served by the other worker may not be in the log yet at all."""
    inst.wait_for(lambda: sessions_ended(inst)
                  and inst.log_text()[mark:].count("]: disconnect from ") >= count,
                  what="every smtpd session to end")


def start(inst, dns, *settings: str) -> None:
    """Configure (DNS from the test server, then *settings*), start, wait for the banner."""
    inst.postconf(f"hato_dns_servers = {dns.spec}", *settings)
    inst.start()
    inst.wait_for(lambda: smtp_ready(inst.port), what="smtpd listening")


def set_smtp_maxproc(inst, maxproc: int) -> None:
    """Set the maxproc column of the instance's smtp (inet) line in master.cf."""
    path = inst.root / "master.cf"
    text = path.read_text()
    pattern = re.compile(rf"^(127\.0\.0\.1:{inst.port}\s+inet(?:\s+\S+){{4}}\s+)\S+(\s+smtpd)",
                         re.MULTILINE)
    new, n = pattern.subn(rf"\g<1>{maxproc}\g<2>", text)
    assert n == 1, text
    path.write_text(new)


def maildir_names(inst) -> set[Path]:
    path = inst.root.joinpath(*BOX)
    return {d / name for d in (path / "new", path / "cur") if d.is_dir()
            for name in os.listdir(d)}


def new_messages(inst, before: set[Path]) -> list[bytes]:
    """The messages delivered to demo since the snapshot *before*."""
    out = []
    for path in sorted(maildir_names(inst) - before):
        try:
            out.append(path.read_bytes())
        except FileNotFoundError:  # moved from new/ to cur/ meanwhile
            continue
    return out


def wait_delivered(inst, before: set[Path], n: int) -> list[bytes]:
    """Wait for n new messages and an empty queue; give a moment more for
    anything delivered by mistake; return the new messages."""
    inst.wait_for(lambda: len(new_messages(inst, before)) >= n,
                  what=f"{n} new message(s) in the Maildir")
    inst.wait_for(inst.queue_empty, what="an empty queue")
    time.sleep(1)
    inst.wait_for(inst.queue_empty, what="an empty queue")
    return new_messages(inst, before)


def new_log(inst, mark: int) -> str:
    return inst.log_text()[mark:]


def smtpd_pids(inst) -> set[int]:
    """The smtpd workers of this instance (the smtp inet service on inst.port)."""
    service = f"127.0.0.1:{inst.port}".encode()
    marker = f"MAIL_CONFIG={inst.root}".encode()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            if b"hato.master.worker" not in argv or service not in argv:
                continue
            if marker not in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                continue
        except OSError:
            continue
        pids.add(int(entry))
    return pids


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def assert_no_crash(inst) -> None:
    log = inst.log_text()
    for bad in ("killed by signal", "exit status", "unexpected error", "Traceback",
                "internal error", "bad command startup"):
        assert bad not in log, f"{bad!r} in the mail log:\n{log}"


class Wire:
    """A raw SMTP client on a socket: send bytes, read whole replies."""

    def __init__(self, port: int, timeout: float = 30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def reply(self) -> bytes:
        """One reply, all its lines; b"" at EOF."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                return b"".join(lines)
            lines.append(line)
            if line[3:4] != b"-":
                return b"".join(lines)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, data: bytes) -> bytes:
        self.send(data)
        return self.reply()

    def closed_by_peer(self) -> bool:
        """True when the server closed the connection (EOF, nothing more to read)."""
        try:
            return self.file.read(1) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@pytest.fixture(scope="module")
def shared() -> Iterator[Instance]:
    """Postfix's defaults, room for 600 sessions (default_process_limit),
    and bare newlines normalized for the loopback client too (it is in
    mynetworks, which smtpd_forbid_bare_newline_exclusions names by default)."""
    with DnsServer() as dns:
        inst = Instance("t07-shared")
        try:
            start(inst, dns, "default_process_limit = 600",
                  "smtpd_forbid_bare_newline = normalize",
                  "smtpd_forbid_bare_newline_exclusions =")
            yield inst
        finally:
            inst.cleanup()


TIMEOUT = 3


@pytest.fixture(scope="module")
def strict() -> Iterator[Instance]:
    with DnsServer() as dns:
        inst = Instance("t07-strict")
        try:
            start(inst, dns, f"smtpd_timeout = {TIMEOUT}s", "smtpd_per_request_deadline = yes",
                  "smtpd_forbid_unauth_pipelining = yes",
                  "smtpd_forbid_bare_newline = reject",
                  "smtpd_forbid_bare_newline_exclusions =")
            yield inst
        finally:
            inst.cleanup()


# -- slowloris -----------------------------------------------------------------------------


def test_slow_drip_client_is_cut_off_at_the_deadline(strict):
    inst = strict
    mark = len(inst.log_text())
    command = b"EHLO slow-drip.example.org.with.a.long.name.that.takes.long\r\n"
    with Wire(inst.port, timeout=TIMEOUT * 5) as w:
        assert w.reply().startswith(b"220 ")
        w.sock.settimeout(0.05)
        began = time.monotonic()
        got = b""
        sent = 0
        # One byte a second: without a per-request deadline every byte would
        # restart the read timer and the session would last len(command) s.
        while time.monotonic() - began < TIMEOUT * 3 and sent < len(command):
            try:
                w.sock.send(command[sent:sent + 1])
                sent += 1
            except OSError:
                break
            until = time.monotonic() + 1
            eof = False
            while time.monotonic() < until:
                try:
                    chunk = w.sock.recv(4096)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    eof = True
                    break
                if not chunk:
                    eof = True
                    break
                got += chunk
            if eof:
                break
        ended = time.monotonic() - began
    assert got == f"421 4.4.2 {HOSTNAME} Error: timeout exceeded\r\n".encode(), got
    assert sent < len(command), "the whole command went through: no deadline applied"
    assert ended < TIMEOUT * 3, f"the session lasted {ended:.1f}s, smtpd_timeout is {TIMEOUT}s"
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    assert re.search(r"smtpd\[\d+\]: timeout after CONNECT from unknown\[127\.0\.0\.1\]\n.*"
                     r"smtpd\[\d+\]: disconnect from unknown\[127\.0\.0\.1\] commands=0/0\n",
                     log, re.DOTALL), log
    assert_no_crash(inst)


# -- floods --------------------------------------------------------------------------------


def garbage_payloads(n: int, seed: int = 7) -> list[bytes]:
    """n payloads of junk: random bytes, NULs, 10,000-byte lines, HTTP requests."""
    rnd = random.Random(seed)
    kinds = [
        lambda: rnd.randbytes(rnd.randint(1, 4000)),
        lambda: b"\0" * rnd.randint(1, 3000) + b"\r\n" + b"NOOP\0\0\0\r\n" * 5,
        lambda: b"A" * 10_000 + b"\r\n" + b"X" * 10_000 + b"\n" + b"\0" * 10_000 + b"\r\n",
        lambda: (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: flood\r\n"
                 b"Accept: */*\r\n\r\n"),
        lambda: (b"POST /cgi-bin/x HTTP/1.0\r\nContent-Length: 10\r\n\r\n0123456789"),
        lambda: b"".join(rnd.randbytes(rnd.randint(0, 50)) + b"\r\n" for _ in range(30)),
        lambda: b"MAIL FROM:<" + rnd.randbytes(200) + b">\r\nRCPT TO:<\0>\r\nDATA\r\n",
        lambda: b"\xff\xfe\xfd" * 3000 + b"\n\r\n\r" * 100,
    ]
    return [kinds[i % len(kinds)]() for i in range(n)]


async def _garbage_client(port: int, payload: bytes, opened: asyncio.Event,
                          go: asyncio.Event, results: list) -> None:
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port), 30)
    except (TimeoutError, OSError) as err:
        results.append(("connect", repr(err)))
        return
    try:
        banner = await asyncio.wait_for(reader.readline(), 60)
        results.append(("banner", banner[:4]))
        opened.set()
        await go.wait()
        writer.write(payload)
        await writer.drain()
        # Read whatever comes back for a while (replies, or the server closing).
        try:
            while True:
                data = await asyncio.wait_for(reader.read(65536), 3)
                if not data:
                    break
        except TimeoutError:
            pass
    except (TimeoutError, OSError) as err:
        results.append(("error", repr(err)))
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def test_garbage_flood_does_not_stop_good_mail(shared):
    inst = shared
    n = 500
    wait_sessions_ended(inst)
    mark = len(inst.log_text())
    before = maildir_names(inst)
    pids = smtpd_pids(inst)
    assert pids, "no smtpd worker found"
    payloads = garbage_payloads(n)
    rss_peak: dict[int, int] = {}
    good: dict[str, object] = {}

    def sample_rss() -> None:
        for pid in smtpd_pids(inst):
            rss_peak[pid] = max(rss_peak.get(pid, 0), rss_kb(pid))

    def good_client() -> None:
        try:
            with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as s:
                s.ehlo("good.example")
                good["refused"] = s.sendmail("sender@example.org", ["demo@hato.test"],
                                             b"Subject: the good one\r\n\r\nstill here\r\n")
        except Exception as err:  # noqa: BLE001  reported by the assertion below
            good["error"] = err

    async def flood() -> list:
        results: list = []
        gos = asyncio.Event()
        opened = [asyncio.Event() for _ in range(n)]
        tasks = [asyncio.create_task(_garbage_client(inst.port, payloads[i], opened[i], gos,
                                                     results)) for i in range(n)]
        # All 500 connected and greeted before anyone sends garbage.
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 90)
        sample_rss()
        gos.set()
        thread = threading.Thread(target=good_client)
        thread.start()
        while not all(t.done() for t in tasks):
            sample_rss()
            await asyncio.sleep(0.2)
        await asyncio.to_thread(thread.join, 60)
        sample_rss()
        return results

    results = asyncio.run(flood())
    banners = [r for r in results if r[0] == "banner"]
    assert len(banners) == n, [r for r in results if r[0] != "banner"][:5]
    assert all(b == b"220 " for _, b in banners), {b for _, b in banners}
    assert "error" not in good, good.get("error")
    assert good.get("refused") == {}, good
    msgs = wait_delivered(inst, before, 1)
    assert len(msgs) == 1, [m[:300] for m in msgs]  # nothing queued by mistake
    assert b"Subject: the good one" in msgs[0]
    for pid, kb in rss_peak.items():
        assert kb < 300 * 1024, f"smtpd worker {pid} grew to {kb} kB"
    # The same workers served it all: none crashed and was restarted.
    assert smtpd_pids(inst) == pids
    wait_sessions_ended(inst, mark, n + 1)
    log = new_log(inst, mark)
    assert log.count("]: disconnect from ") >= n + 1
    gets = sum(1 for p in payloads if p.startswith(b"GET "))
    assert log.count("warning: non-SMTP command from unknown[127.0.0.1]: GET") == gets
    assert "too many errors after" in log
    assert_no_crash(inst)


def test_non_smtp_commands_are_refused_and_logged_as_postfix(shared):
    """smtpd_forbidden_commands (CONNECT GET POST, and anything not starting
    with a letter) and header-like words (Postfix's is_header()) end the
    session with Postfix's 221; the log names the whole line (``%.100s``),
    as typed, non-printable characters escaped (as Debian's Postfix 3.7.11
    logs them to maillog_file)."""
    inst = shared
    mark = len(inst.log_text())
    goodbye = b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"
    cases = {
        b"GET / HTTP/1.1": "GET / HTTP/1.1",
        b"CONNECT 127.0.0.1:25 HTTP/1.0": "CONNECT 127.0.0.1:25 HTTP/1.0",
        b"Subject: hello": "Subject: hello",
        b"get / http/1.1": "get / http/1.1",
        b"\x01\x1b[2Jbogus \x07bell": "\\001\\033[2Jbogus \\abell",
    }
    problems = []
    for line in cases:
        with Wire(inst.port) as w:
            assert w.reply().startswith(b"220 ")
            r = w.cmd(line + b"\r\nHost: x\r\n\r\n")
            if r != goodbye or not w.closed_by_peer():
                problems.append(f"{line!r}: {r!r}, session not ended")
    wait_sessions_ended(inst)
    inst.wait_for(lambda: new_log(inst, mark).count("warning: non-SMTP command from ")
                  >= len(cases), what="a log line for each non-SMTP command")
    log = new_log(inst, mark)
    for logged in cases.values():
        if f"warning: non-SMTP command from unknown[127.0.0.1]: {logged}\n" not in log:
            problems.append(f"no log line for {logged!r}")
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log):
        problems.append("control characters in the mail log")
    assert not problems, "\n".join(problems) + "\n--- maillog:\n" + log
    assert_no_crash(inst)


def test_maxproc_holds_back_the_sixth_connection(instance, dns_server):  # noqa: F811
    inst = instance
    set_smtp_maxproc(inst, 5)
    start(inst, dns_server)
    wait_sessions_ended(inst)
    five = [Wire(inst.port) for _ in range(5)]
    sixth = None
    try:
        for w in five:
            assert w.reply().startswith(b"220 ")
        sixth = Wire(inst.port)  # the kernel completes the connection ...
        sixth.sock.settimeout(3)
        with pytest.raises(TimeoutError):  # ... but no smtpd serves it yet
            sixth.sock.recv(100)
        assert five[2].cmd(b"QUIT\r\n").startswith(b"221 ")
        sixth.sock.settimeout(30)
        assert sixth.reply().startswith(b"220 ")
        assert sixth.cmd(b"EHLO sixth.example\r\n").startswith(b"250-")
        assert sixth.cmd(b"QUIT\r\n").startswith(b"221 ")
    finally:
        for w in five + ([sixth] if sixth else []):
            w.close()
    assert_no_crash(inst)


# -- limits and odd commands ---------------------------------------------------------------


def test_recipient_limit_1000(shared):
    inst = shared
    mark = len(inst.log_text())
    before = maildir_names(inst)
    with Wire(inst.port, timeout=60) as w:
        assert w.reply().startswith(b"220 ")
        assert b"PIPELINING" in w.cmd(b"EHLO many.example\r\n")
        assert w.cmd(b"MAIL FROM:<sender@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
        replies = []
        for _batch in range(10):  # 1,000 RCPTs, pipelined 100 at a time
            w.send(b"RCPT TO:<demo@hato.test>\r\n" * 100)
            replies += [w.reply() for _ in range(100)]
        assert replies == [b"250 2.1.5 Ok\r\n"] * 1000, set(replies)
        assert w.cmd(b"RCPT TO:<postmaster@hato.test>\r\n") == \
            b"452 4.5.3 Error: too many recipients\r\n"
        assert w.cmd(b"DATA\r\n").startswith(b"354 ")
        r = w.cmd(b"Subject: a thousand\r\n\r\nonce\r\n.\r\n")
        assert r.startswith(b"250 2.0.0 Ok: queued as "), r
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    msgs = wait_delivered(inst, before, 1)
    assert len(msgs) == 1, len(msgs)  # duplicates suppressed: delivered once
    assert b"Subject: a thousand" in msgs[0]
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    # Postfix 3.7 (Debian's 3.7.11, asked the same) counts the refused 1001st
    # RCPT as a success: rcpt=1001 commands=1005.
    assert re.search(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1001 "
                     r"data=1 quit=1 commands=1005\n", log), log
    assert_no_crash(inst)


def test_nul_long_and_non_ascii_commands(shared):
    inst = shared
    mark = len(inst.log_text())
    before = maildir_names(inst)
    pids = smtpd_pids(inst)
    with Wire(inst.port) as w:
        assert w.reply().startswith(b"220 ")
        assert w.cmd(b"EHLO odd.example\r\n").startswith(b"250-")
        # A NUL ends the command, as a C string does in Postfix.
        assert w.cmd(b"NOOP\0 trailing junk\r\n") == b"250 2.0.0 Ok\r\n"
        assert w.cmd(b"\0EHLO odd.example\r\n") == b"500 5.5.2 Error: bad syntax\r\n"
        assert w.cmd(b"NO\0OP\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
        # A 10,000-byte line: truncated at line_length_limit and answered once.
        assert w.cmd(b"X" * 10_000 + b"\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
        assert w.cmd(b"NOOP " + b"y" * 10_000 + b"\r\n") == b"250 2.0.0 Ok\r\n"
        assert w.cmd(b"MAIL FROM:<" + b"a" * 10_000 + b"@example.org>\r\n") == \
            b"501 5.1.7 Bad sender address syntax\r\n"
        # Not UTF-8, then UTF-8.
        assert w.cmd(b"EHLO h\xe9llo.example\r\n") == b"500 5.5.2 Error: bad UTF-8 syntax\r\n"
        assert w.cmd(b"\xff\xfe\r\n") == b"500 5.5.2 Error: bad UTF-8 syntax\r\n"
        assert w.cmd("NOOP h\u00e9llo\r\n".encode()) == b"250 2.0.0 Ok\r\n"
        assert w.cmd("EHLO h\u00e9llo.example\r\n".encode()).startswith(b"250-")
        # Still usable: a whole transaction, in UTF-8 (SMTPUTF8).
        assert w.cmd(b"RSET\r\n") == b"250 2.0.0 Ok\r\n"
        assert w.cmd("MAIL FROM:<j\u00f6rg@example.org> SMTPUTF8\r\n".encode()) == \
            b"250 2.1.0 Ok\r\n"
        assert w.cmd(b"RCPT TO:<demo@hato.test>\r\n") == b"250 2.1.5 Ok\r\n"
        assert w.cmd(b"DATA\r\n").startswith(b"354 ")
        r = w.cmd("Subject: after the junk \u2713\r\n\r\nfine\r\n.\r\n".encode())
        assert r.startswith(b"250 2.0.0 Ok: queued as "), r
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    msgs = wait_delivered(inst, before, 1)
    assert len(msgs) == 1 and "Subject: after the junk \u2713".encode() in msgs[0]
    assert "Return-Path: <j\u00f6rg@example.org>".encode() in msgs[0]
    assert smtpd_pids(inst) == pids
    wait_sessions_ended(inst)
    # As Postfix 3.7 counts them: bad syntax and bad UTF-8 are no commands.
    assert re.search(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=2 mail=1/2 rcpt=1 data=1 "
                     r"rset=1 noop=3 quit=1 unknown=0/2 commands=10/13\n",
                     new_log(inst, mark)), new_log(inst, mark)
    assert_no_crash(inst)


def test_long_command_lines_are_logged_as_postfix(shared):
    """Postfix warns about each command line over line_length_limit, quoting
    its first 30 characters."""
    inst = shared
    mark = len(inst.log_text())
    with Wire(inst.port) as w:
        assert w.reply().startswith(b"220 ")
        assert w.cmd(b"X" * 10_000 + b"\r\n") == b"500 5.5.2 Error: command not recognized\r\n"
        assert w.cmd(b"NOOP " + b"y" * 10_000 + b"\r\n") == b"250 2.0.0 Ok\r\n"
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    wait_sessions_ended(inst)
    log = new_log(inst, mark)
    for start in ("X" * 30, "NOOP " + "y" * 25):
        assert (f"warning: unknown[127.0.0.1]: request longer than 2048: {start}...\n"
                in log), log


# -- pipelining ----------------------------------------------------------------------------


def test_unauthorized_pipelining_is_refused(strict):
    inst = strict
    mark = len(inst.log_text())
    before = maildir_names(inst)
    with Wire(inst.port) as w:
        assert w.reply().startswith(b"220 ")
        # HELO: no PIPELINING was offered.
        assert w.cmd(b"HELO pipe.example\r\n") == f"250 {HOSTNAME}\r\n".encode()
        w.send(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<demo@hato.test>\r\nDATA\r\n"
               b"Subject: pipelined\r\n\r\nshould not be queued\r\n.\r\nQUIT\r\n")
        assert w.reply() == b"554 5.5.0 Error: SMTP protocol synchronization\r\n"
        assert w.closed_by_peer()
    wait_sessions_ended(inst)
    time.sleep(1)
    assert new_messages(inst, before) == []
    assert inst.queue_empty()
    log = new_log(inst, mark)
    assert "client=" not in log and "queued as" not in log, log
    assert re.search(r"disconnect from unknown\[127\.0\.0\.1\] helo=1 mail=0/1 "
                     r"commands=1/2\n", log), log
    # Postfix's smtpd logs the command and (escaped) what was pipelined after it.
    assert ("improper command pipelining after MAIL from unknown[127.0.0.1]: "
            "RCPT TO:<demo@hato.test>\\r\\nDATA\\r\\nSubject: pipelined\\r\\n") in log, log
    assert_no_crash(inst)


# -- SMTP smuggling ------------------------------------------------------------------------

FAKE_ENDS = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-lf": b"\r.\n",
    "crlf-dot-lf": b"\r\n.\n",
    "crlf-dot-cr": b"\r\n.\r",
}


@pytest.mark.parametrize("name", list(FAKE_ENDS))
def test_smuggling_queues_one_message(shared, name):
    inst = shared
    before = maildir_names(inst)
    fake = FAKE_ENDS[name]
    body = (b"Subject: smuggle-" + name.encode() + b"\r\n\r\nbefore" + fake
            + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<demo@hato.test>\r\nDATA\r\n"
            + b"Subject: smuggled-" + name.encode() + b"\r\n\r\nevil payload\r\n.\r\n")
    with Wire(inst.port) as w:
        assert w.reply().startswith(b"220 ")
        assert w.cmd(b"EHLO smuggler.example\r\n").startswith(b"250-")
        assert w.cmd(b"MAIL FROM:<sender@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
        assert w.cmd(b"RCPT TO:<demo@hato.test>\r\n") == b"250 2.1.5 Ok\r\n"
        assert w.cmd(b"DATA\r\n").startswith(b"354 ")
        r = w.cmd(body)
        assert r.startswith(b"250 2.0.0 Ok: queued as "), r
        qid = r.split()[-1].decode()
        # Nothing more was answered: the next reply is QUIT's.
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    marker = b"smuggled-" + name.encode()

    msgs = wait_delivered(inst, before, 1)
    assert len(msgs) == 1, msgs  # never two
    msg = msgs[0]
    assert marker in msg
    assert b"Subject: smuggle-" + name.encode() in msg
    assert b"MAIL FROM:<evil@example.org>" in msg and b"evil payload" in msg
    parsed = email.message_from_bytes(msg)
    assert parsed["Subject"] == f"smuggle-{name}"
    assert f"id {qid}" in parsed["Received"]
    assert inst.log_text().count(f"{qid}: client=") == 1
    assert_no_crash(inst)


def test_bare_lf_rejected(strict):
    """As Debian's Postfix 3.7.11 (asked the same): in message content the
    message is refused and the session goes on; in a command the session
    ends. Both are logged with log_whatsup()'s format."""
    inst = strict
    mark = len(inst.log_text())
    before = maildir_names(inst)
    bare_lf = f"550 5.5.2 {HOSTNAME} Error: bare <LF> received\r\n".encode()
    with Wire(inst.port) as w:
        assert w.reply().startswith(b"220 ")
        assert w.cmd(b"EHLO lf.example\r\n").startswith(b"250-")
        assert w.cmd(b"MAIL FROM:<sender@example.org>\r\n") == b"250 2.1.0 Ok\r\n"
        assert w.cmd(b"RCPT TO:<demo@hato.test>\r\n") == b"250 2.1.5 Ok\r\n"
        assert w.cmd(b"DATA\r\n").startswith(b"354 ")
        r = w.cmd(b"Subject: bare lf\r\n\r\nline one\nline two\r\n.\n"
                  b"MAIL FROM:<evil@example.org>\r\n.\r\n")
        assert r == bare_lf
        assert w.cmd(b"NOOP\r\n") == b"250 2.0.0 Ok\r\n"
        assert w.cmd(b"QUIT\r\n") == b"221 2.0.0 Bye\r\n"
    with Wire(inst.port) as w:  # the first command
        assert w.reply().startswith(b"220 ")
        assert w.cmd(b"EHLO lf.example\n") == bare_lf
        assert w.closed_by_peer()
    with Wire(inst.port) as w:  # a later command
        assert w.reply().startswith(b"220 ")
        assert w.cmd(b"EHLO lf.example\r\n").startswith(b"250-")
        assert w.cmd(b"NOOP\n") == bare_lf
        assert w.closed_by_peer()
    wait_sessions_ended(inst)
    time.sleep(1)
    assert new_messages(inst, before) == []
    assert inst.queue_empty()
    log = new_log(inst, mark)
    expected = [
        (r"\w+: reject: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: bare <LF> received; "
         r"from=<sender@example\.org> to=<demo@hato\.test> proto=ESMTP helo=<lf\.example>\n"),
        (r"disconnect from unknown\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=1 data=0/1 noop=1 quit=1 "
         r"commands=5/6\n"),
        (r"NOQUEUE: reject: CONNECT from unknown\[127\.0\.0\.1\]: bare <LF> received; "
         r"proto=SMTP\n"),
        r"disconnect from unknown\[127\.0\.0\.1\] commands=0/0\n",
        (r"NOQUEUE: reject: EHLO from unknown\[127\.0\.0\.1\]: bare <LF> received; "
         r"proto=ESMTP helo=<lf\.example>\n"),
        r"disconnect from unknown\[127\.0\.0\.1\] ehlo=1 commands=1\n",
    ]
    for pattern in expected:
        assert re.search(pattern, log), (pattern, log)
    assert_no_crash(inst)

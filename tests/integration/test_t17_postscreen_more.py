"""t-17: more of postscreen end to end, on the reference setup of t-16
(its master.cf lines, clients on their own 127.0.0.x source addresses):

- weighted DNSBL scoring over several lists with filters and a
  negative-weight allowlist, against the test DNS server, at each edge of
  postscreen_dnsbl_threshold and postscreen_dnsbl_allowlist_threshold,
  with the enforce and drop actions and postscreen_dnsbl_reply_map;
- the deep protocol tests with the reconnect (450 at RCPT, PASS NEW, then
  PASS OLD and delivery by smtpd), pipelining and non-SMTP clients, and
  the cache across a restart;
- the PROXY protocol v1 and v2 in front of postscreen, and bad headers;
- 2,000 connections that never send a byte and 200 clients that read but
  never talk: postscreen keeps serving, its memory stays bounded, the time
  limits end the silent sessions;
- the hand-off to smtpd while the ``smtpd pass`` workers are killed.
"""

from __future__ import annotations

import mailbox
import os
import re
import resource
import select
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hato.proto.proxy_protocol import ProxyHeader, encode_v1, encode_v2
from tests.dnsserver import DnsServer

from .instance import free_port, smtp_ready
from .test_t16_postscreen import postscreen_instance, wait_log_re

pytestmark = pytest.mark.integration

FROM = b"MAIL FROM:<a@example.org>"
RCPT = b"RCPT TO:<demo@hato.test>"


class Client:
    """An SMTP client on source address *src*; replies as lists of lines."""

    def __init__(self, port: int, src: str = "127.0.0.1", timeout: float = 20.0):
        self.sock = socket.socket()
        self.sock.bind((src, 0))
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> list[bytes]:
        lines = []
        while True:
            line = self.file.readline()
            lines.append(line)
            if line[3:4] != b"-":
                return lines

    def cmd(self, line: bytes) -> list[bytes]:
        self.send(line + b"\r\n")
        return self.reply()

    def at_eof(self) -> bool:
        return self.file.read() == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def dialog(port: int, src: str, *commands: bytes, first: bytes = b"") -> list[list[bytes]]:
    """The greeting and the reply to each command, as a client on *src*."""
    c = Client(port, src)
    out: list[list[bytes]] = []
    try:
        if first:
            c.send(first)
        out = [c.reply()]
        for command in commands:
            out.append(c.cmd(command))
    except OSError as err:
        out.append([repr(err).encode()])
    finally:
        c.close()
    return out


def code(reply: list[bytes]) -> bytes:
    return reply[-1][:3]


def worker_pids(inst, service: str, type_: str) -> list[int]:
    """The worker processes of this instance for master.cf entry *service*/*type_*."""
    marker = f"MAIL_CONFIG={inst.root}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if b"hato.master.worker" not in argv or argv[-3:-1] != [service.encode(),
                                                                   type_.encode()]:
                continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def postscreen_pids(inst) -> list[int]:
    return worker_pids(inst, f"127.0.0.1:{inst.port}", "inet")


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def nofile_limit(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError(f"no open-file limit for {pid}")


def delivered(inst, count: int) -> None:
    box = inst.root / "mail" / "hato.test" / "demo"
    inst.wait_for(lambda: (box / "new").is_dir() and
                  len(mailbox.Maildir(str(box), create=False)) >= count, what="delivery")


# -- 1. weighted DNSBL --------------------------------------------------------------------

SITES = ("all.rbl.test=127.0.0.[2;4]*2, zen.test=127.0.0.[2..7;10;11], "
         "list.dnswl.test=127.0.[0..255].1*-3")


def rev(last: int, zone: str) -> str:
    return f"{last}.0.0.127.{zone}"


DNSBL_ZONES = {
    # .20: all.rbl.test only → 2
    rev(20, "all.rbl.test"): {"A": ["127.0.0.2"]},
    # .21: zen.test only → 1
    rev(21, "zen.test"): {"A": ["127.0.0.10"]},
    # .22: listed, but no record passes the filters → 0
    rev(22, "all.rbl.test"): {"A": ["127.0.0.3"]},
    rev(22, "zen.test"): {"A": ["127.0.0.8", "127.0.0.9"]},
    # .23: 2 + 1 - 3 → 0
    rev(23, "all.rbl.test"): {"A": ["127.0.0.4"]},
    rev(23, "zen.test"): {"A": ["127.0.0.2", "127.0.0.11"]},
    rev(23, "list.dnswl.test"): {"A": ["127.0.5.1"]},
    # .24: 2 + 1 → 3 (several records each)
    rev(24, "all.rbl.test"): {"A": ["127.0.0.2", "127.0.0.4"]},
    rev(24, "zen.test"): {"A": ["127.0.0.7", "127.0.0.99"]},
    # .25: 2, the allowlist record misses its filter → 2
    rev(25, "all.rbl.test"): {"A": ["127.0.0.4"]},
    rev(25, "list.dnswl.test"): {"A": ["127.0.5.2"]},
    # .26: allowlist only → -3
    rev(26, "list.dnswl.test"): {"A": ["127.0.9.1"]},
    # .27: 1 - 3 → -2
    rev(27, "zen.test"): {"A": ["127.0.0.5"]},
    rev(27, "list.dnswl.test"): {"A": ["127.0.0.1"]},
    # .28: 2 - 3 → -1
    rev(28, "all.rbl.test"): {"A": ["127.0.0.2"]},
    rev(28, "list.dnswl.test"): {"A": ["127.0.3.1"]},
}


def test_weighted_dnsbl(instance):
    port2 = free_port()
    (instance.root / "dnsbl_reply").write_text("all.rbl.test dnsbl.example.net\n")
    with (instance.root / "master.cf").open("a") as f:
        f.write(f"127.0.0.1:{port2} inet n - n - 1 postscreen\n"
                "  -o postscreen_dnsbl_threshold=3 -o postscreen_dnsbl_action=drop\n"
                f"  -o postscreen_dnsbl_reply_map=texthash:{instance.root}/dnsbl_reply\n")
    with DnsServer(DNSBL_ZONES, ttl=300, negative_ttl=300) as dns:
        inst = postscreen_instance(
            instance, f"hato_dns_servers = {dns.spec}",
            "postscreen_greet_wait = 1s",
            f"postscreen_dnsbl_sites = {SITES}",
            "postscreen_dnsbl_threshold = 2",
            "postscreen_dnsbl_allowlist_threshold = -2",
            "postscreen_dnsbl_action = enforce",
            "postscreen_pipelining_enable = yes")
        port = inst.port
        inst.wait_for(lambda: smtp_ready(port2), what="the second postscreen")

        def run(last: int) -> list[list[bytes]]:
            return dialog(port, f"127.0.0.{last}", b"EHLO client.example", FROM, RCPT,
                          b"QUIT")

        with ThreadPoolExecutor(9) as pool:
            got = dict(zip(range(20, 29), pool.map(run, range(20, 29))))
        log = inst.log_text()

        def blocked(last: int, zone: str, reply_code: int = 550) -> bytes:
            return (f"{reply_code} 5.7.1 Service unavailable; client [127.0.0.{last}] "
                    f"blocked using {zone}\r\n").encode()

        # At or over the threshold: DNSBL rank, the RCPT refused (enforce).
        for last, score in ((20, 2), (25, 2), (24, 3)):
            r = got[last]
            assert r[0][0].startswith(b"220-") and r[0][-1].startswith(b"220 "), r
            assert r[3] == [blocked(last, "all.rbl.test")], (last, r)
            assert re.search(rf"postscreen\[\d+\]: DNSBL rank {score} for "
                             rf"\[127\.0\.0\.{last}\]:\d+\n", log), (last, log[-3000:])
        assert re.search(r"NOQUEUE: reject: RCPT from \[127\.0\.0\.24\]:\d+: 550 5\.7\.1 "
                         r"Service unavailable; client \[127\.0\.0\.24\] blocked using "
                         r"all\.rbl\.test; from=<a@example\.org>, to=<demo@hato\.test>, "
                         r"proto=ESMTP, helo=<client\.example>", log)
        assert "addr 127.0.0.24 listed by domain zen.test as 127.0.0.7" in log
        # Below the threshold, above the allowlist threshold: the deep test
        # runs (450 at RCPT, PASS NEW).
        for last in (21, 22, 23, 28):
            r = got[last]
            assert r[3] == [b"450 4.3.2 Service currently unavailable\r\n"], (last, r)
            assert not re.search(rf"DNSBL rank -?\d+ for \[127\.0\.0\.{last}\]", log)
            inst.wait_log(f"PASS NEW [127.0.0.{last}]:")
        # At or under the allowlist threshold: every other test is skipped,
        # smtpd gets the client at once (it announces PIPELINING, postscreen
        # never does).
        for last in (26, 27):
            r = got[last]
            assert any(b"PIPELINING" in line for line in r[1]), (last, r)
            assert code(r[3]) == b"250", (last, r)
            inst.wait_log(f"PASS NEW [127.0.0.{last}]:")
            wait_log_re(inst, rf"smtpd\[\d+\]: connect from \S+\[127\.0\.0\.{last}\]")
        # Each zone asked once per client.
        assert dns.count(rev(24, "zen.test"), "A") == 1

        # A second postscreen (its own master.cf entry, started with the
        # first): threshold 3, action drop, the zone name hidden by the
        # reply map.
        with ThreadPoolExecutor(2) as pool:
            dropped, passed = pool.map(lambda last: dialog(
                port2, f"127.0.0.{last}", b"EHLO client.example", FROM, RCPT, b"QUIT"),
                (24, 20))
        # 521 after the greet wait, then the connection is closed
        assert dropped[0][0].startswith(b"220-"), dropped
        assert dropped[0][1:] == [blocked(24, "dnsbl.example.net", 521)], dropped
        assert len(dropped) == 2 and b"Error" in dropped[1][0] or dropped[1] == [b""], dropped
        assert passed[3] == [b"450 4.3.2 Service currently unavailable\r\n"], passed
        log = inst.log_text()
        assert re.search(r"DNSBL rank 3 for \[127\.0\.0\.24\]:\d+", log), log
        assert len(re.findall(r"DNSBL rank 2 for \[127\.0\.0\.20\]", log)) == 1, log


# -- 2 and 4. deep protocol tests, reconnect, cache across a restart ----------------------

def test_deep_protocol_tests(instance):
    inst = postscreen_instance(instance, "postscreen_greet_wait = 1s",
                               "postscreen_pipelining_enable = yes",
                               "postscreen_non_smtp_command_enable = yes",
                               "postscreen_bare_newline_enable = yes",
                               "postscreen_pipelining_action = enforce",
                               "postscreen_non_smtp_command_action = drop",
                               "postscreen_bare_newline_action = enforce")
    port = inst.port

    def good() -> list[list[bytes]]:
        return dialog(port, "127.0.0.40", b"EHLO good.example", FROM, RCPT, b"QUIT")

    def pipelining() -> list[list[bytes]]:
        c = Client(port, "127.0.0.41")
        try:
            out = [c.reply()]
            out.append(c.cmd(b"EHLO pipe.example"))
            c.send(FROM + b"\r\n" + RCPT + b"\r\nDATA\r\n")
            out += [c.reply(), c.reply(), c.reply()]
            out.append([b"EOF"] if c.at_eof() else [b"open"])
            return out
        finally:
            c.close()

    def non_smtp() -> list[list[bytes]]:
        c = Client(port, "127.0.0.42")
        try:
            out = [c.reply()]
            out.append(c.cmd(b"GET / HTTP/1.0"))
            out.append([b"EOF"] if c.at_eof() else [b"open"])
            return out
        finally:
            c.close()

    def bare_newline() -> list[list[bytes]]:
        c = Client(port, "127.0.0.43")
        try:
            out = [c.reply(), c.cmd(b"EHLO bare.example")]
            c.send(b"NOOP\n")
            out.append(c.reply())
            for command in (FROM, RCPT, b"QUIT"):
                out.append(c.cmd(command))
            return out
        finally:
            c.close()

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(f) for f in (good, pipelining, non_smtp, bare_newline)]
        r_good, r_pipe, r_http, r_bare = (f.result() for f in futures)

    # The good client: told to come back at RCPT, PASS NEW.
    assert r_good[0][0].startswith(b"220-") and r_good[0][-1].startswith(b"220 "), r_good
    assert not any(b"PIPELINING" in line for line in r_good[1]), r_good
    assert r_good[3] == [b"450 4.3.2 Service currently unavailable\r\n"], r_good
    assert code(r_good[4]) == b"221", r_good
    inst.wait_log("PASS NEW [127.0.0.40]:")
    # The pipelining client: logged, its RCPT refused (enforce).
    assert r_pipe[2] == [b"250 2.1.0 Ok\r\n"], r_pipe
    assert r_pipe[3] == [b"550 5.5.1 Protocol error\r\n"], r_pipe
    assert code(r_pipe[4]) == b"554", r_pipe
    log = inst.log_text()
    assert re.search(r"postscreen\[\d+\]: COMMAND PIPELINING from \[127\.0\.0\.41\]:\d+ "
                     r"after MAIL: RCPT TO:<demo@hato\.test>\\r\\nDATA\\r\\n", log), log[-3000:]
    # The HTTP client: dropped.
    assert r_http[1] == [b"521 5.7.0 Error: I can break rules, too. Goodbye.\r\n"], r_http
    assert r_http[2] == [b"EOF"], r_http
    assert re.search(r"postscreen\[\d+\]: NON-SMTP COMMAND from \[127\.0\.0\.42\]:\d+ after "
                     r"CONNECT: GET / HTTP/1\.0", log), log[-3000:]
    # The bare newline: logged, enforced.
    assert r_bare[2] == [b"250 2.0.0 Ok\r\n"], r_bare
    assert r_bare[4] == [b"550 5.5.1 Protocol error\r\n"], r_bare
    assert re.search(r"BARE NEWLINE from \[127\.0\.0\.43\]:\d+ after NOOP", log), log[-3000:]
    for last in (41, 42, 43):
        inst.wait_log(f"DISCONNECT [127.0.0.{last}]:")
        assert f"PASS NEW [127.0.0.{last}]" not in inst.log_text()

    def send_mail(subject: bytes) -> list[list[bytes]]:
        return dialog(port, "127.0.0.40", b"EHLO good.example", FROM, RCPT, b"DATA",
                      b"Subject: " + subject + b"\r\n\r\nhello\r\n.", b"QUIT")

    # The good client comes back: PASS OLD, smtpd greets and delivers.
    r = send_mail(b"after the deep tests")
    assert r[0] == [r[0][0]] and r[0][0].startswith(b"220 "), r
    assert code(r[3]) == b"250" and code(r[4]) == b"354", r
    assert r[5][0].startswith(b"250 2.0.0 Ok: queued as"), r
    inst.wait_log("PASS OLD [127.0.0.40]:")
    delivered(inst, 1)
    # The pipelining client failed a test: as with Postfix, every pass it
    # had is forgotten, so it meets the pre-greet test (the 220- teaser)
    # and the deep tests again in postscreen's engine.
    r = dialog(port, "127.0.0.41", b"EHLO pipe.example", b"QUIT")
    assert r[0][0].startswith(b"220-") and r[0][-1].startswith(b"220 "), r
    assert not any(b"PIPELINING" in line for line in r[1]), r
    assert "PASS OLD [127.0.0.41]" not in inst.log_text()

    # A reload: the session in progress goes on with the old postscreen,
    # new ones meet the new one.
    c = Client(port, "127.0.0.44")
    try:
        greeting = c.reply()
        assert greeting[-1].startswith(b"220 "), greeting
        [old] = postscreen_pids(inst)
        assert inst.cmd("reload").returncode == 0
        inst.wait_for(lambda: set(postscreen_pids(inst)) - {old}, what="a new postscreen")
        [new] = set(postscreen_pids(inst)) - {old}
        r = dialog(port, "127.0.0.45", b"QUIT")
        assert r[0][0].startswith(b"220-") and code(r[1]) == b"221", r
        assert not any(b"PIPELINING" in line for line in c.cmd(b"EHLO reload.example"))
        assert c.cmd(FROM) == [b"250 2.1.0 Ok\r\n"]
        assert c.cmd(RCPT) == [b"450 4.3.2 Service currently unavailable\r\n"]
        assert code(c.cmd(b"QUIT")) == b"221"
    finally:
        c.close()
    wait_log_re(inst, rf"postscreen\[{old}\]: PASS NEW \[127\.0\.0\.44\]")
    assert re.search(rf"postscreen\[{new}\]: CONNECT from \[127\.0\.0\.45\]", inst.log_text())
    inst.wait_for(lambda: old not in postscreen_pids(inst), what="the old postscreen's exit")

    # 4. The cache outlives a restart (postscreen_cache_map default: btree
    # in $data_directory).
    inst.stop()
    inst.start()
    inst.wait_for(lambda: postscreen_pids(inst), what="postscreen")
    r = send_mail(b"after the restart")
    assert r[0][0].startswith(b"220 "), r
    assert r[5][0].startswith(b"250 2.0.0 Ok: queued as"), r
    inst.wait_log("PASS OLD [127.0.0.40]:", 2)
    delivered(inst, 2)


# -- 3. PROXY protocol ---------------------------------------------------------------------

def test_proxy_protocol(instance):
    def ready(port: int) -> bool:
        """A permitted client behind the proxy reaches smtpd."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(encode_v1(ProxyHeader(1, "PROXY", "tcp4", "127.0.0.1", 1,
                                                "127.0.0.1", port)))
                return s.recv(100).startswith(b"220 ")
        except OSError:
            return False

    inst = postscreen_instance(instance, "postscreen_greet_wait = 1s",
                               "postscreen_upstream_proxy_protocol = haproxy",
                               "postscreen_upstream_proxy_timeout = 1s", ready=ready)
    port = inst.port

    def proxied(header: bytes, *commands: bytes) -> list[list[bytes]]:
        return dialog(port, "127.0.0.1", *commands, first=header)

    v1 = encode_v1(ProxyHeader(1, "PROXY", "tcp4", "127.0.0.50", 40001, "127.0.0.1", port))
    v2 = encode_v2(ProxyHeader(2, "PROXY", "tcp4", "127.0.0.51", 40002, "127.0.0.1", port))
    permit = encode_v2(ProxyHeader(2, "PROXY", "tcp4", "127.0.0.5", 40003, "127.0.0.1", port))
    deny = encode_v1(ProxyHeader(1, "PROXY", "tcp4", "127.0.0.6", 40004, "127.0.0.1", port))
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(proxied, h, b"EHLO proxied.example", b"QUIT")
                   for h in (v1, v2, permit, deny)]
        r1, r2, r_permit, r_deny = (f.result() for f in futures)
    for r in (r1, r2):
        assert r[0][0].startswith(b"220-") and r[0][-1].startswith(b"220 "), r
        assert code(r[2]) == b"221", r
    assert r_permit[0][0].startswith(b"220 "), r_permit
    assert r_deny[0] == [b"521 5.3.2 Service currently unavailable\r\n"], r_deny
    log = inst.log_text()
    for last, client_port in ((50, 40001), (51, 40002)):
        assert re.search(rf"postscreen\[\d+\]: CONNECT from \[127\.0\.0\.{last}\]:{client_port} "
                         rf"to \[127\.0\.0\.1\]:{port}\n", log), log[-3000:]
        inst.wait_log(f"PASS NEW [127.0.0.{last}]:{client_port}")
        wait_log_re(inst, rf"smtpd\[\d+\]: connect from \S+\[127\.0\.0\.{last}\]")
    inst.wait_log("ALLOWLISTED [127.0.0.5]:40003")
    wait_log_re(inst, r"smtpd\[\d+\]: connect from \S+\[127\.0\.0\.5\]")
    inst.wait_log("DENYLISTED [127.0.0.6]:40004")
    # Bytes right behind the header (one segment) stay for whoever reads
    # the client next: here smtpd, for an allowlisted client that talks
    # first (Postfix reads no further than the header).
    c = Client(port, "127.0.0.1")
    try:
        c.send(permit + b"EHLO eager.example\r\n")
        assert c.reply()[0].startswith(b"220 ")
        assert code(c.reply()) == b"250"
        assert code(c.cmd(b"QUIT")) == b"221"
    finally:
        c.close()
    # PASS OLD with the proxied address.
    r = proxied(v2, b"QUIT")
    assert r[0][0].startswith(b"220 "), r
    inst.wait_log("PASS OLD [127.0.0.51]:40002")

    # Bad headers: logged, the connection closed without a word (reset
    # when unread bytes are left, as with Postfix, which peeks too).
    def bad(data: bytes) -> bytes:
        c = Client(port, "127.0.0.1", timeout=10)
        try:
            if data:
                c.send(data)
            return c.file.read()
        except ConnectionResetError:
            return b""
        finally:
            c.close()

    mark = len(inst.log_text())
    assert bad(b"PROXY TCP4 127.0.0.300 127.0.0.1 1 25\r\n") == b""
    assert bad(b"EHLO client.example\r\n") == b""
    assert bad(b"") == b""  # nothing within postscreen_upstream_proxy_timeout
    inst.wait_log("haproxy read: time limit exceeded")
    log = inst.log_text()[mark:]
    warnings = re.findall(r"postscreen\[\d+\]: warning: haproxy read: (.*)", log)
    assert len(warnings) == 3, log
    assert "CONNECT from" not in log, log


# -- 5. silent clients -----------------------------------------------------------------------

HALF_OPEN = 2000
SILENT = 200


def test_silent_clients(instance):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = HALF_OPEN + SILENT + 500
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(want, soft), hard), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft >= want, f"RLIMIT_NOFILE {soft}: too low for {HALF_OPEN + SILENT} connections"
    inst = postscreen_instance(instance, "postscreen_greet_wait = 1s",
                               "postscreen_command_time_limit = 6s",
                               "postscreen_pipelining_enable = yes",
                               "postscreen_pre_queue_limit = 3000",
                               "postscreen_client_connection_count_limit = 50")
    port = inst.port
    [pid] = postscreen_pids(inst)
    assert nofile_limit(pid) >= want, "the postscreen worker's open-file limit is too low"
    rss_before = rss_kb(pid)

    # 2,000 connections that never send nor read (40 per source address)
    # and 200 clients that read but never talk (one per address).
    half_open: list[socket.socket] = []
    silent: list[Client] = []
    try:
        for i in range(HALF_OPEN):
            s = socket.socket()
            s.bind((f"127.0.1.{i // 40}", 0))
            s.settimeout(30)
            s.connect(("127.0.0.1", port))
            half_open.append(s)
        peak = rss_kb(pid)
        for i in range(SILENT):
            # One address each: a client whose address already passed the
            # pre-greet test (another silent client of that address, screened
            # a second earlier on a loaded machine) rightly skips it and gets
            # no 220- first.
            silent.append(Client(port, f"127.0.2.{i}", timeout=30))
        # A polite client is still served meanwhile, by postscreen's engine
        # and, once allowlisted, by smtpd.
        r = dialog(port, "127.0.0.60", b"EHLO polite.example", FROM, RCPT, b"QUIT")
        assert r[3] == [b"450 4.3.2 Service currently unavailable\r\n"], r
        r = dialog(port, "127.0.0.5", b"EHLO polite.example", FROM, RCPT, b"QUIT")
        assert r[0][0].startswith(b"220 ") and code(r[3]) == b"250", r
        peak = max(peak, rss_kb(pid))
        # Postscreen ends the silent sessions: 220-, then 220 after the
        # greet wait, then the command time limit.
        for c in silent:
            greeting = c.reply()
            assert greeting[0].startswith(b"220-") and greeting[-1].startswith(b"220 "), greeting
            assert c.reply()[0].startswith(b"421 4.4.2 "), "no time limit reply"
            assert c.at_eof()
        deadline = time.monotonic() + 30
        poller = select.poll()
        by_fd = {s.fileno(): s for s in half_open}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while by_fd and time.monotonic() < deadline:
            for fd, _event in poller.poll(1000):
                try:
                    data = by_fd[fd].recv(65536)
                except OSError:
                    data = b""
                if not data:
                    poller.unregister(fd)
                    del by_fd[fd]
        assert not by_fd, f"{len(by_fd)} silent connections still open"
    finally:
        for s in half_open:
            s.close()
        for c in silent:
            c.close()
    log = inst.log_text()
    assert log.count("COMMAND TIME LIMIT from [127.0.") >= HALF_OPEN + SILENT, log[-3000:]
    assert "too many connections" not in log and "ports are busy" not in log
    assert peak < 200 * 1024, f"postscreen RSS {peak} kB with {HALF_OPEN + SILENT} clients"
    rss_after = rss_kb(pid)
    assert rss_after < 200 * 1024, (rss_before, peak, rss_after)
    # Still serving.
    r = dialog(port, "127.0.0.60", b"EHLO polite.example", FROM, RCPT, b"QUIT")
    assert r[0][0].startswith(b"220 ") and code(r[3]) == b"250", r
    inst.wait_log("PASS OLD [127.0.0.60]:")


# -- 6. the hand-off while smtpd workers die ---------------------------------------------------

def test_handoff_survives_smtpd_restarts(instance):
    inst = postscreen_instance(instance, "postscreen_greet_wait = 1s")
    port = inst.port
    r = dialog(port, "127.0.0.5", b"EHLO permitted.example", b"QUIT")
    assert r[0][0].startswith(b"220 "), r
    first = worker_pids(inst, "smtpd", "pass")
    assert first
    # One worker killed: the other ones take the clients.
    os.kill(first[0], signal.SIGKILL)
    inst.wait_log("killed by signal 9")
    r = dialog(port, "127.0.0.5", b"EHLO permitted.example", b"QUIT")
    assert r[0][0].startswith(b"220 "), r
    # Every worker killed: each client is handed over once master restarted
    # one, or told 421; never left hanging.
    for pid in worker_pids(inst, "smtpd", "pass"):
        os.kill(pid, signal.SIGKILL)
    served = 0
    deadline = time.monotonic() + 30
    replies = []
    while time.monotonic() < deadline and served < 2:
        started = time.monotonic()
        r = dialog(port, "127.0.0.5", b"EHLO permitted.example", b"QUIT")
        assert time.monotonic() - started < 15, r
        replies.append(r[0])
        if r[0][0].startswith(b"220 "):
            assert code(r[2]) == b"221", r
            served += 1
        else:
            assert r[0] == [b"421 4.3.2 All server ports are busy\r\n"], r
            time.sleep(0.2)
    assert served == 2, replies
    assert set(worker_pids(inst, "smtpd", "pass")).isdisjoint(first)
    # A new client through the tests, handed over after PASS NEW, delivered.
    r = dialog(port, "127.0.0.61", b"EHLO new.example", FROM, RCPT, b"DATA",
               b"Subject: after the restart\r\n\r\nhi\r\n.", b"QUIT")
    assert r[0][0].startswith(b"220-") and r[5][0].startswith(b"250 2.0.0 Ok: queued as"), r
    delivered(inst, 1)


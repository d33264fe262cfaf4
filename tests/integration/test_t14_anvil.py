"""t-14: anvil and smtpd's per-client limits, with real sockets.

The reference setup's tuning, scaled down (connection count 3, connection
rate 5, message rate 5 and recipient rate 10 per anvil_rate_time_unit 60s)
with ``smtpd_client_event_limit_exceptions =`` empty so that loopback is
limited: the (N+1)th connection, message or recipient gets Postfix's reply
(compared with Debian's Postfix in tests/differential), the exception list
lifts the limits, the limits hold across smtpd's worker processes, new TLS
sessions and AUTH commands are limited too, anvil logs Postfix's
statistics, survives malformed requests and floods, and smtpd goes on
serving without limits when anvil is not there."""

from __future__ import annotations

import base64
import os
import re
import smtplib
import socket
import threading
import time

import pytest

from tests.certs import TestCA

from .instance import free_port, smtp_ready
from .test_t10_submission import Site

pytestmark = pytest.mark.integration

TUNING = {"smtpd_client_event_limit_exceptions": "",
          "smtpd_client_connection_count_limit": "3",
          "smtpd_client_connection_rate_limit": "5",
          "smtpd_client_message_rate_limit": "5",
          "smtpd_client_recipient_rate_limit": "10"}


def tuning(**changes: str) -> dict[str, str]:
    """The scaled-down tuning with *changes*."""
    return {**TUNING, **changes}


def myhostname(inst) -> str:
    r = inst.cmd("postconf", "-h", "myhostname")
    return r.stdout.decode().strip()


def banner(port: int) -> tuple[socket.socket, bytes]:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return s, s.makefile("rb").readline()


def started(inst, limits: dict[str, str], *main_cf: str):
    """The instance started with *main_cf* settings and a second smtpd
    service on ``inst.limited`` with *limits* as its ``-o`` overrides (the
    start-up probes of the first service must not count)."""
    if main_cf:
        inst.postconf(*main_cf)
    inst.limited = free_port()
    master = inst.root / "master.cf"
    master.write_text(master.read_text()
                      + f"127.0.0.1:{inst.limited} inet n - n - - smtpd\n"
                      + "".join(f"  -o {k}={v}\n" for k, v in limits.items()))
    inst.start()
    inst.wait_for(lambda: smtp_ready(inst.port), what="smtpd listening")
    return inst


def wait_greeted(port: int, timeout: float = 10) -> tuple[socket.socket, bytes]:
    """A connection that is greeted with 220 (anvil hears of ended sessions
    a moment after they end)."""
    deadline = time.monotonic() + timeout
    while True:
        s, line = banner(port)
        if line.startswith(b"220") or time.monotonic() > deadline:
            return s, line
        s.close()
        time.sleep(0.2)


def test_connection_count_limit_across_workers(instance):
    inst = started(instance, tuning())
    host = myhostname(inst)
    held = [banner(inst.limited) for _ in range(3)]
    assert all(line.startswith(b"220") for _, line in held), (held, inst.log_text()[-3000:])
    s, line = banner(inst.limited)
    assert line == f"421 4.7.0 {host} Error: too many connections from 127.0.0.1\r\n".encode()
    assert s.recv(100) == b""  # and the connection is closed
    s.close()
    # the service is master.cf's name for it: 127.0.0.1:PORT
    warning = re.compile(r"smtpd\[\d+\]: warning: Connection concurrency limit exceeded: 4 "
                         r"from \S+\[127\.0\.0\.1\] for service "
                         + re.escape(f"127.0.0.1:{inst.limited}") + "\n")
    inst.wait_for(lambda: warning.search(inst.log_text()), what="the concurrency warning")
    # One session ends: the next client is served again.
    held.pop()[0].close()
    s, line = wait_greeted(inst.limited)
    assert line.startswith(b"220"), line
    s.close()
    for sock, _ in held:
        sock.close()


def test_count_limit_holds_across_worker_processes(instance):
    inst = started(instance, tuning(smtpd_client_connection_count_limit="10",
                                           smtpd_client_connection_rate_limit="0"))
    conns = [banner(inst.limited) for _ in range(20)]
    greeted = [line for _, line in conns if line.startswith(b"220")]
    assert len(greeted) == 10, [line for _, line in conns]
    for s, _ in conns:
        s.close()
    pids = set(re.findall(r"smtpd\[(\d+)\]: connect from", inst.log_text()))
    if (os.cpu_count() or 1) > 1:  # master runs one smtpd worker per core
        assert len(pids) >= 2, inst.log_text()[-3000:]


def test_connection_rate_limit(instance):
    # (no count limit: a session just ended may not have told anvil yet)
    inst = started(instance, tuning(smtpd_client_connection_count_limit="0"))
    host = myhostname(inst)
    lines = []
    for _ in range(6):
        s, line = banner(inst.limited)
        lines.append(line)
        s.sendall(b"QUIT\r\n")
        s.close()
        time.sleep(0.1)
    assert [x[:3] for x in lines[:5]] == [b"220"] * 5, lines
    assert lines[-1] == f"421 4.7.0 {host} Error: too many connections from 127.0.0.1\r\n" \
        .encode(), lines
    assert "warning: Connection rate limit exceeded: 6 from" in inst.log_text()


def test_message_and_recipient_rate_limits(instance):
    inst = started(instance, tuning())
    c = smtplib.SMTP("127.0.0.1", inst.limited, timeout=30)
    c.ehlo("client.example")
    mails, rcpts = [], []
    for _ in range(6):
        mails.append(c.mail("sender@example.org"))
        if mails[-1][0] == 250:
            for _ in range(2):
                rcpts.append(c.rcpt("demo@hato.test"))
        c.rset()
    c.quit()
    assert [m[0] for m in mails] == [250] * 5 + [450], mails
    assert mails[-1] == (450, b"4.7.1 Error: too much mail from 127.0.0.1")
    assert [r[0] for r in rcpts] == [250] * 10, rcpts
    c = smtplib.SMTP("127.0.0.1", inst.limited, timeout=30)
    c.ehlo("client.example")
    # the message rate is used up too; the recipient rate answers first in RCPT
    assert c.mail("sender@example.org")[0] == 450
    c.quit()
    inst.wait_log("warning: Message delivery request rate limit exceeded: 6 from")
    inst.wait_for(lambda: re.search(r"disconnect from \S+ ehlo=1 mail=5/6 rcpt=10 rset=6 "
                                    r"quit=1 commands=23/24", inst.log_text()),
                  what="the first session's disconnect line")


def test_recipient_rate_limit(instance):
    inst = started(instance, tuning())
    c = smtplib.SMTP("127.0.0.1", inst.limited, timeout=30)
    c.ehlo("client.example")
    c.mail("sender@example.org")
    replies = [c.rcpt("demo@hato.test") for _ in range(11)]
    assert [r[0] for r in replies] == [250] * 10 + [450], replies
    assert replies[-1] == (450, b"4.7.1 Error: too many recipients from 127.0.0.1")
    c.rset()
    c.quit()
    assert "warning: Recipient address rate limit exceeded: 11 from" in inst.log_text()


def test_exceptions_lift_the_limits(instance):
    """smtpd_client_event_limit_exceptions defaults to $mynetworks, which
    holds loopback: no limit applies and anvil is not asked."""
    limits = tuning()
    del limits["smtpd_client_event_limit_exceptions"]
    inst = started(instance, limits, "mynetworks = 127.0.0.0/8")
    held = [banner(inst.limited) for _ in range(5)]
    assert all(line.startswith(b"220") for _, line in held)
    c = smtplib.SMTP("127.0.0.1", inst.limited, timeout=30)
    c.ehlo("client.example")
    for _ in range(7):
        assert c.mail("sender@example.org")[0] == 250
        c.rset()
    c.quit()
    for s, _ in held:
        s.close()
    assert "limit exceeded" not in inst.log_text()


def test_statistics_are_logged(instance):
    inst = started(instance, tuning(), "anvil_status_update_time = 1s")
    c = smtplib.SMTP("127.0.0.1", inst.limited, timeout=30)
    c.ehlo("client.example")
    c.mail("sender@example.org")
    c.quit()
    ident = f"127.0.0.1:{inst.limited}:127.0.0.1"  # service name (hato init's) and address
    inst.wait_log(f"statistics: max message rate 1/60s for ({ident}) at ")
    log = inst.log_text()
    assert re.search(r"anvil\[\d+\]: statistics: max connection rate \d+/60s for "
                     r"\(" + re.escape(ident) + r"\) at \w{3} [ \d]\d \d\d:\d\d:\d\d\n", log), log[-2000:]
    assert "statistics: max connection count " in log
    assert re.search(r"statistics: max cache size \d+ at ", log)


def test_smtpd_serves_without_anvil(instance):
    inst = started(instance, tuning(smtpd_client_connection_count_limit="1"),
                   "master_service_disable = anvil.unix")
    held = [banner(inst.limited) for _ in range(3)]
    assert all(line.startswith(b"220") for _, line in held), held
    for s, _ in held:
        s.close()
    log = inst.log_text()
    assert re.search(r"smtpd\[\d+\]: warning: connect to private/anvil: ", log), log[-2000:]
    # one warning per worker, not one per session
    assert log.count("connect to private/anvil") <= 4


def anvil_socket(inst) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(inst.root / "queue" / "private" / "anvil"))
    return s


def ask(s: socket.socket, text: str) -> dict[str, str]:
    s.sendall(text.encode())
    data = b""
    while not data.endswith(b"\n\n"):
        chunk = s.recv(4096)
        assert chunk, "anvil closed the connection"
        data += chunk
    return dict(line.split("=", 1) for line in data.decode().split("\n") if line)


def test_anvil_protocol_and_flood(instance):
    inst = started(instance, {}, "anvil_rate_time_unit = 2s")
    s = anvil_socket(inst)
    assert ask(s, "request=connect\nident=smtp:192.0.2.1\n\n") == \
        {"status": "0", "count": "1", "rate": "1"}
    assert ask(s, "request=nonsense\nident=smtp:192.0.2.1\n\n") == {"status": "-1"}
    assert ask(s, "request=message\n\n") == {"status": "-1"}
    assert ask(s, "request=lookup\nident=smtp:192.0.2.1\n\n") == \
        {"status": "0", "count": "1", "rate": "1", "mail": "0", "rcpt": "0", "newtls": "0",
         "auth": "0"}
    # A requester that goes away takes its connections with it.
    s.close()
    s = anvil_socket(inst)
    inst.wait_for(lambda: ask(s, "request=lookup\nident=smtp:192.0.2.1\n\n")["count"] == "0",
                  what="the connection of the closed requester dropped")
    # Garbage on a connection ends that connection only.
    bad = anvil_socket(inst)
    bad.sendall(b"\xff\xfe not attributes\0\n\n")
    time.sleep(0.2)
    assert ask(s, "request=status\n\n")["status"] == "0"
    bad.close()
    # 5000 clients in a few seconds: the table grows, then entries expire.
    batch = "".join(f"request=connect\nident=smtp:10.{n // 65536}.{n // 256 % 256}.{n % 256}"
                    f"\n\nrequest=disconnect\nident=smtp:10.{n // 65536}.{n // 256 % 256}."
                    f"{n % 256}\n\n" for n in range(5000))
    s.sendall(batch.encode())
    got = b""
    while got.count(b"\n\n") < 10000:
        got += s.recv(65536)
    assert int(ask(s, "request=status\n\n")["size"]) >= 5000
    inst.wait_for(lambda: int(ask(s, "request=status\n\n")["size"]) < 10, timeout=20,
                  what="anvil's table emptied by expiry")
    s.close()
    assert "warning: unrecognized request: \"nonsense\", ignored" in inst.log_text()


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


def test_new_tls_session_and_auth_rate_limits(instance, ca):
    site = Site(instance, ca, "sasldb")
    # (connection limits off: they would count the start-up probes)
    instance.postconf("smtpd_client_event_limit_exceptions =",
                      "smtpd_client_connection_count_limit = 0",
                      "smtpd_client_new_tls_session_rate_limit = 1",
                      "smtpd_client_auth_rate_limit = 1")
    site.start()
    host = myhostname(instance)
    c = smtplib.SMTP("127.0.0.1", site.sub, timeout=30)
    c.ehlo("client.example")
    c.starttls(context=site.context())
    c.ehlo("client.example")
    wrong = "PLAIN " + base64.b64encode(b"\0alice@hato.test\0wrong").decode()
    assert c.docmd("AUTH", wrong)[0] == 535
    assert c.docmd("AUTH", wrong) == \
        (450, b"4.7.1 Error: too many AUTH commands from 127.0.0.1")
    c.quit()
    c = smtplib.SMTP("127.0.0.1", site.sub, timeout=30)
    c.ehlo("client.example")
    c.starttls(context=site.context())  # a new TLS session: nothing to resume
    reply = c.ehlo("client.example")
    assert reply[0] == 421 and reply[1].startswith(
        f"4.7.0 {host} Error: too many new TLS sessions from ".encode()), reply
    instance.wait_log("warning: AUTH command rate limit exceeded: 2 from")
    instance.wait_log("warning: New TLS session rate limit exceeded: 2 from")
    instance.wait_for(lambda: re.search(r"disconnect from \S+ ehlo=1 starttls=0/1 commands=1/2",
                                        instance.log_text()), what="the disconnect line")


# -- shared counters -----------------------------------------------------------------------

def messages(inst, n: int) -> list[int]:
    """The replies to *n* MAIL commands in one session to ``inst.limited``."""
    c = smtplib.SMTP("127.0.0.1", inst.limited, timeout=30)
    c.ehlo("client.example")
    codes = []
    for _ in range(n):
        codes.append(c.mail("sender@example.org")[0])
        c.rset()
    c.quit()
    return codes


def test_two_instances_share_counters_through_redis():
    """Two instances (two ports, one Redis started here) share one client's
    message-rate budget; Redis stopped → each falls back to its own counters
    with a warning; Redis back → shared again."""
    from tests.redis_server import running_redis

    from .instance import Instance

    with running_redis() as redis:
        a, b = Instance("redis-a"), Instance("redis-b")
        try:
            for inst in (a, b):
                # the two services have different master.cf names (their ports):
                # hato_anvil_service_name makes them one service for anvil
                started(inst, tuning(hato_anvil_service_name="smtp",
                                     smtpd_client_connection_count_limit="0",
                                     smtpd_client_connection_rate_limit="0"),
                        f"hato_anvil_backend = redis:{redis.url}")
            assert messages(a, 3) == [250] * 3
            assert messages(b, 3) == [250, 250, 450]
            b.wait_log("warning: Message delivery request rate limit exceeded: 6 from")
            redis.stop()
            # a's own counters saw 3 messages: the 4th passes, with a warning
            assert messages(a, 1) == [250]
            a.wait_log(f"warning: anvil: redis backend {redis.url}: ")
            assert "using local counters" in a.log_text()
            redis.restart()  # empty: a new window for everyone
            a.wait_log(f"anvil: redis backend {redis.url} is back; counters shared again")
            assert messages(a, 3) == [250] * 3
            assert messages(b, 3) == [250, 250, 450]
        finally:
            a.cleanup()
            b.cleanup()


def test_clients_reconnecting_at_the_count_limit_are_never_refused(instance, ca):
    """COUNT clients, each ending a session with QUIT and opening the next
    at once, stay within smtpd_client_connection_count_limit = COUNT: anvil
    must hear of an ended session before its client can have read the 221
    (found by the submission benchmark: 51 of 50 under TLS, 421 4.7.0)."""
    count, rounds = 3, 25
    site = Site(instance, ca, "sasldb")
    instance.postconf("smtpd_client_event_limit_exceptions =",
                      f"smtpd_client_connection_count_limit = {count}",
                      "smtpd_client_connection_rate_limit = 0")
    site.start()

    def probes_ended() -> bool:  # the start-up probes' sessions: anvil counts them too
        log = instance.log_text()
        return log.count(": connect from") == log.count(": disconnect from")

    instance.wait_for(probes_ended, what="the start-up probes' sessions to end")
    before = len(instance.log_text())  # (probes close at once: they may exceed the limit)
    refused: list[str] = []

    def client() -> None:
        for _ in range(rounds):
            try:
                c = smtplib.SMTP("127.0.0.1", site.sub, timeout=30)
            except smtplib.SMTPConnectError as err:
                refused.append(f"{err.smtp_code} {err.smtp_error!r}")
                continue
            c.ehlo("client.example")
            c.starttls(context=site.context())
            c.ehlo("client.example")
            c.quit()

    threads = [threading.Thread(target=client) for _ in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    log = instance.log_text()[before:]
    assert not refused, (refused, log[-6000:])
    assert "Connection concurrency limit exceeded" not in log, log[-6000:]

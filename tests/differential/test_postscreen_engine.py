"""postscreen's built-in SMTP engine against Debian's Postfix postscreen: the
same client writes (after the greet wait, with the deep protocol tests on)
give the same replies and the same engine log lines from
hato.proto.postscreen_smtp.PostscreenSmtp as from Postfix.

Postfix's postscreen listens on a second loopback port of a private
instance (``postscreen`` inet service, ``smtpd`` pass service); each dialog
comes from its own 127.0.8.x source address so that no cached verdict
interferes."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from hato.policy.address import log_form
from hato.proto import postscreen_smtp as ps
from tests.postfix_instance import PostfixInstance, free_port

pytestmark = [pytest.mark.differential]

GREET_WAIT = 1.0
KEYWORDS = ("SIZE 10240000", "VRFY", "ETRN", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
            "SMTPUTF8", "CHUNKING")

DIALOGS = {
    "polite": [b"EHLO x\r\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n", b"QUIT\r\n"],
    "pipelined": [b"EHLO x\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n", b"DATA\r\n"],
    "non_smtp": [b"GET / HTTP/1.0\r\n", b"User-Agent: x\r\n", b"HELO x\r\n",
                 b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<\"q x\"@d>\r\n", b"QUIT\r\n"],
    "bare_newline": [b"EHLO x\n", b"MAIL FROM:<a@b>\r\n", b"RCPT TO:<c@d>\r\n",
                     b"VRFY x\r\n", b"QUIT\r\n"],
    "commands": [b"NOOP\r\n", b"VRFY\r\n", b"ETRN x\r\n", b"HELO\r\n", b"AUTH PLAIN\r\n",
                 b"STARTTLS\r\n", b"XYZ\r\n", b"RSET\r\n", b"RCPT TO:<a@b>\r\n",
                 b"MAIL FROM <a>\r\n", b"MAIL FROM:<>\r\n", b"MAIL FROM:<x>\r\n",
                 b"RCPT x\r\n", b"BDAT 10\r\n"],
    "count_limit": [b"NOOP\r\n"] * 21,
}
ENGINE_LOG = ("NOQUEUE:", "COMMAND ", "NON-SMTP", "BARE NEWLINE", "DATA without",
              "BDAT without")


def _session(port: int, src: str, writes: list[bytes]) -> tuple[int, bytes]:
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(0.2)
    s.connect(("127.0.0.1", port))
    sport = s.getsockname()[1]
    out = bytearray()
    closed = False

    def drain(seconds: float) -> None:
        nonlocal closed
        end = time.monotonic() + seconds
        while time.monotonic() < end and not closed:
            try:
                data = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                closed = True
                break
            if not data:
                closed = True
            out.extend(data)

    drain(GREET_WAIT + 0.6)
    for w in writes:
        if closed:
            break
        s.sendall(w)
        drain(0.3)
    drain(1.0)
    s.close()
    return sport, bytes(out)


@pytest.fixture(scope="module")
def postfix_dialogs():
    port = free_port()
    extra = (f"127.0.0.1:{port} inet n - n - 1 postscreen\n"
             "smtpd pass - - n - - smtpd\n"
             "dnsblog unix - - n - 0 dnsblog\n"
             "tlsproxy unix - - n - 0 tlsproxy\n")
    cf = {"postscreen_access_list": "", "postscreen_greet_wait": f"{int(GREET_WAIT)}s",
          "postscreen_cache_map": "btree:$data_directory/psc",
          "postscreen_pipelining_enable": "yes", "postscreen_pipelining_action": "enforce",
          "postscreen_non_smtp_command_enable": "yes",
          "postscreen_non_smtp_command_action": "enforce",
          "postscreen_bare_newline_enable": "yes", "postscreen_bare_newline_action": "enforce"}
    results: dict[str, tuple[str, int, bytes]] = {}
    with PostfixInstance(cf, master_cf_extra=extra) as pf:
        time.sleep(1)

        def one(i: int, name: str) -> None:
            ip = f"127.0.8.{10 + i}"
            results[name] = (ip, *_session(port, ip, DIALOGS[name]))

        threads = [threading.Thread(target=one, args=(i, n)) for i, n in enumerate(DIALOGS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        time.sleep(1.5)
        log = pf.log_text()
    return results, log


@pytest.mark.parametrize("name", list(DIALOGS))
def test_engine_matches_postfix(postfix_dialogs, name):
    results, log = postfix_dialogs
    ip, port, raw = results[name]
    client = f"[{ip}]:{port}"
    text = raw.decode("utf-8", "surrogateescape")
    banner, _, replies = text.partition("\r\n220 ")
    assert banner.startswith("220-"), text
    banner_line, _, replies = ("220 " + replies).partition("\r\n")
    pf_logs = [line.split("]: ", 1)[1] for line in log.splitlines()
               if "postscreen[" in line and client in line
               and line.split("]: ", 1)[1].startswith(ENGINE_LOG)]

    config = ps.EngineConfig(hostname="mx.hato.test", ehlo_keywords=KEYWORDS,
                             pipelining="enforce", non_smtp="enforce", bare_newline="enforce",
                             log_address=log_form)
    eng = ps.PostscreenSmtp(config, client, banner_line=banner_line)
    out = eng.data_to_send()
    for w in DIALOGS[name]:
        if eng.closed:
            break
        eng.receive_data(w)
        out += eng.data_to_send()
    assert out.decode("utf-8", "surrogateescape") == banner_line + "\r\n" + replies
    assert eng.logs() == pf_logs

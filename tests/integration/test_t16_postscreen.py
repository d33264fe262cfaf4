"""t-16: postscreen in front of smtpd, with the reference setup's master.cf
lines and main.cf settings (greet wait shortened): clients on their own
127.0.0.x source addresses meet the access list (permit, reject with
drop and enforce), the pre-greet test (enforce and drop), PASS NEW with
hand-off to smtpd over the ``pass`` service (the client never
reconnects; smtpd sees its real address), PASS OLD from the cache."""

from __future__ import annotations

import mailbox
import re
import socket
import time

import pytest

from .instance import smtp_ready

pytestmark = pytest.mark.integration

REFERENCE_MASTER = """\
127.0.0.1:{port} inet  n       -       n       -     1     postscreen
smtpd     pass  -       -       n       -     -     smtpd
dnsblog   unix  -       -       n       -     0     dnsblog
"""


def postscreen_instance(inst, *main_cf: str, ready=smtp_ready):
    """*inst* with the reference setup's postscreen; *ready(port)* says
    when it answers."""
    access = inst.root / "postscreen_access.cidr"
    access.write_text("#\n127.0.0.5               permit\n#\n127.0.0.6/32            reject\n")
    inst.postconf("postscreen_access_list = permit_mynetworks, cidr:" + str(access),
                  "postscreen_blacklist_action = drop",
                  "postscreen_greet_action = enforce",
                  "postscreen_greet_wait = ${stress?1}${stress:2}s",
                  "mynetworks = 127.0.0.1/32",
                  *main_cf)
    master = inst.root / "master.cf"
    text = master.read_text()
    text = re.sub(rf"^127\.0\.0\.1:{inst.port} +inet .*smtpd\n",
                  REFERENCE_MASTER.format(port=inst.port), text, flags=re.MULTILINE)
    master.write_text(text)
    inst.start()
    inst.wait_for(lambda: ready(inst.port), what="postscreen listening")
    return inst


def wait_log_re(inst, pattern: str) -> None:
    """Until a line of the mail log matches *pattern*."""
    inst.wait_for(lambda: re.search(pattern, inst.log_text()), what=pattern)


def talk(port: int, src: str, *, first: bytes = b"", wait: float = 0.0,
         commands: tuple[bytes, ...] = ()) -> list[bytes]:
    """Replies (one line each), as a client on source address *src*."""
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(20)
    s.connect(("127.0.0.1", port))
    out: list[bytes] = []
    f = s.makefile("rb")

    def reply() -> None:
        while True:
            line = f.readline()
            out.append(line)
            if line[3:4] != b"-":
                return
    try:
        if first:
            s.sendall(first)
        time.sleep(wait)
        reply()
        for c in commands:
            s.sendall(c + b"\r\n")
            reply()
    except OSError as err:
        out.append(repr(err).encode())
    finally:
        s.close()
    return out


def test_reference_setup(instance):
    inst = postscreen_instance(instance)
    port = inst.port
    # permit: straight to smtpd, whose 220 is the only greeting
    r = talk(port, "127.0.0.5", commands=(b"EHLO client.example", b"QUIT"))
    assert r[0].startswith(b"220 ") and b"ESMTP" in r[0], r
    assert r[-1].startswith(b"221"), r
    inst.wait_log("ALLOWLISTED [127.0.0.5]:")
    wait_log_re(inst, r"smtpd\[\d+\]: connect from \S+\[127\.0\.0\.5\]")
    # reject + drop: 521 at once
    r = talk(port, "127.0.0.6")
    assert r[0] == b"521 5.3.2 Service currently unavailable\r\n", r
    inst.wait_log("DENYLISTED [127.0.0.6]:")
    # pre-greet + enforce: the engine refuses RCPT with 550 5.5.1
    r = talk(port, "127.0.0.7", first=b"EHLO early.example\r\n", wait=3,
             commands=(b"MAIL FROM:<a@example.org>", b"RCPT TO:<demo@hato.test>", b"DATA"))
    assert r[0].startswith(b"220-"), r
    assert b"550 5.5.1 Protocol error\r\n" in r, r
    assert b"554 5.5.1 Error: no valid recipients\r\n" in r, r
    log = inst.log_text()
    assert re.search(r"postscreen\[\d+\]: PREGREET 20 after \S+ from \[127\.0\.0\.7\]:\d+: "
                     r"EHLO early\.example\\r\\n", log), log[-2000:]
    # a polite client: PASS NEW, its mail delivered through the hand-off
    r = talk(port, "127.0.0.8", commands=(
        b"EHLO polite.example", b"MAIL FROM:<a@example.org>", b"RCPT TO:<demo@hato.test>",
        b"DATA", b"Subject: through postscreen\r\n\r\nhello\r\n.", b"QUIT"))
    assert r[0].startswith(b"220-") and any(x.startswith(b"220 ") for x in r), r
    assert any(x.startswith(b"250 2.0.0 Ok: queued as") for x in r), r
    inst.wait_log("PASS NEW [127.0.0.8]:")
    wait_log_re(inst, r"smtpd\[\d+\]: connect from \S+\[127\.0\.0\.8\]")
    box = inst.root / "mail" / "hato.test" / "demo"
    inst.wait_for(lambda: (box / "new").is_dir() and
                  len(mailbox.Maildir(str(box), create=False)) == 1, what="delivery")
    # second connection: PASS OLD, no 220- line
    r = talk(port, "127.0.0.8", commands=(b"QUIT",))
    assert r[0].startswith(b"220 "), r
    inst.wait_log("PASS OLD [127.0.0.8]:")


def test_drop_on_pregreet(instance):
    inst = postscreen_instance(instance, "postscreen_greet_action = drop")
    r = talk(inst.port, "127.0.0.9", first=b"HELO x\r\n", wait=0.5)
    assert r[0].startswith(b"220-") and r[1] == b"521 5.5.1 Protocol error\r\n", r
    inst.wait_log("DISCONNECT [127.0.0.9]:")


def test_old_words_without_respectful_logging(instance):
    """A main.cf from before compatibility_level 3.6 (respectful_logging =
    no) gets Postfix's old words in the log."""
    inst = postscreen_instance(instance, "respectful_logging = no")
    talk(inst.port, "127.0.0.5", commands=(b"QUIT",))
    talk(inst.port, "127.0.0.6")
    inst.wait_log("WHITELISTED [127.0.0.5]:")
    inst.wait_log("BLACKLISTED [127.0.0.6]:")
    assert "ALLOWLISTED" not in inst.log_text()

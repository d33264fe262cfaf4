"""cleanup(8) against Debian's Postfix cleanup, with address rewriting and
resolution done by Postfix's trivial-rewrite.

Postfix's cleanup daemon runs stand-alone (``-S``) on a socket pair with a
private configuration and queue directory. Its address rewriting requests
go to ``private/rewrite``, where this test answers each with a stand-alone
``trivial-rewrite -S`` process — so every decision on the Postfix side is
Postfix's own. The message is sent as smtpd/pickup would send it (envelope
records, content records cut at line_length_limit, end marker); the queue
file Postfix writes is read back and compared with what hato's
:class:`~hato.queue.cleanup.Cleanup` makes of the same message and
main.cf: the content records, the envelope sender and recipients, and the
status. The Message-Id time stamp (Postfix takes it from the clock) is
masked on both sides.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import subprocess
import textwrap
import threading
from pathlib import Path

import pytest

from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.queue.cleanup import Cleanup, Submission, cleanup_message
from hato.queue.envelope import notify_mask
from tests.ports import close_listener

pytestmark = pytest.mark.differential

SBIN = "/usr/lib/postfix/sbin"
T0 = 1700000000

COMMON = """
compatibility_level = 3.6
myhostname = mx1.example.com
mydomain = example.com
myorigin = $myhostname
mydestination = $myhostname, localhost.$mydomain, localhost
inet_interfaces = loopback-only
alias_maps =
local_recipient_maps =
"""

QUEUE_DIRS = ("incoming", "active", "deferred", "hold", "corrupt", "bounce", "defer", "trace",
              "maildrop", "private", "public", "saved", "pid", "flush")


# -- records ------------------------------------------------------------------------------------

def _record(rtype: str, data: bytes) -> bytes:
    n = len(data)
    out = bytearray([ord(rtype)])
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out) + data


def _records(data: bytes) -> list[tuple[str, bytes]]:
    out = []
    i = 0
    while i < len(data):
        rtype = chr(data[i])
        i += 1
        n = shift = 0
        while True:
            byte = data[i]
            i += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        out.append((rtype, data[i:i + n]))
        i += n
    return out


def _content_records(content: bytes, limit: int) -> list[tuple[str, bytes]]:
    """The message as smtpd hands it to cleanup: one record per line, lines
    longer than line_length_limit cut into CONT pieces."""
    out = []
    lines = content.split(b"\n")
    last = lines.pop()
    for line in lines + ([last] if last else []):
        if line.endswith(b"\r"):
            line = line[:-1]
        while len(line) > limit:
            out.append(("L", line[:limit]))
            line = line[limit:]
        out.append(("N", line))
    return out


def _attr0(attrs: dict[str, str]) -> bytes:
    return b"".join(k.encode() + b"\0" + v.encode("utf-8", "surrogateescape") + b"\0"
                    for k, v in attrs.items()) + b"\0"


def _read_attr0(sock: socket.socket, buf: bytearray) -> dict[str, str] | None:
    """One attribute list (name\\0value\\0... then \\0)."""
    while True:
        parts = bytes(buf).split(b"\0")
        items: dict[str, str] = {}
        i = 0
        while i < len(parts) - 1:
            if parts[i] == b"":
                consumed = sum(len(p) + 1 for p in parts[:i + 1])
                del buf[:consumed]
                return items
            if i + 1 >= len(parts) - 1:
                break
            items[parts[i].decode()] = parts[i + 1].decode("utf-8", "surrogateescape")
            i += 2
        data = sock.recv(65536)
        if not data:
            return None
        buf += data


# -- the private Postfix ---------------------------------------------------------------------------

class PostfixCleanup:
    def __init__(self, root: Path, main: str):
        for prog in ("cleanup", "trivial-rewrite"):
            if not os.path.exists(f"{SBIN}/{prog}"):
                pytest.fail(f"{SBIN}/{prog} is missing: install the Debian package postfix "
                            f"(tools/run-tests installs every tool the tests use)")
        self.conf = root / "conf"
        self.queue = root / "queue"
        self.conf.mkdir(parents=True)
        for d in QUEUE_DIRS:
            (self.queue / d).mkdir(parents=True)
        (self.conf / "main.cf").write_text(main + f"queue_directory = {self.queue}\n")
        self.env = dict(os.environ, MAIL_CONFIG=str(self.conf), TZ="UTC")
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(self.queue / "private" / "rewrite"))
        self.listener.listen(8)
        self.thread = threading.Thread(target=self._serve_rewrite, daemon=True)
        self.thread.start()

    def _serve_rewrite(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._rewrite_conn, args=(conn,), daemon=True).start()

    def _rewrite_conn(self, conn: socket.socket) -> None:
        with conn:
            conn.sendall(_attr0({"protocol": "trivial_rewrite_protocol"}))
            buf = bytearray()
            while (req := _read_attr0(conn, buf)) is not None:
                proc = subprocess.run([f"{SBIN}/trivial-rewrite", "-S"], input=_attr0(req),
                                      capture_output=True, env=self.env, timeout=60,
                                      check=False)
                conn.sendall(proc.stdout)

    def close(self) -> None:
        close_listener(self.listener)

    def run(self, envelope: list[tuple[str, bytes]], content: list[tuple[str, bytes]],
            flags: int) -> tuple[str, int, str, list[tuple[str, bytes]]]:
        ours, theirs = socket.socketpair()
        with ours:
            proc = subprocess.Popen([f"{SBIN}/cleanup", "-S"], stdin=theirs.fileno(),
                                    stdout=theirs.fileno(), stderr=subprocess.DEVNULL,
                                    env=self.env)
            theirs.close()
            ours.settimeout(60)
            buf = bytearray()
            hello = _read_attr0(ours, buf)
            assert hello is not None
            qid = hello["queue_id"]
            ours.sendall(_attr0({"flags": str(flags)}))
            stream = b"".join(_record(t, d) for t, d in envelope)
            stream += _record("M", b"") + b"".join(_record(t, d) for t, d in content)
            stream += _record("X", b"") + _record("E", b"")
            ours.sendall(stream)
            reply = _read_attr0(ours, buf)
            proc.wait(timeout=60)
        assert reply is not None
        status = int(reply["status"])
        path = self.queue / "incoming" / qid
        records = _records(path.read_bytes()) if path.exists() else []
        for f in (self.queue / "incoming").iterdir():
            f.unlink()
        return qid, status, reply.get("reason", ""), records


# -- comparing ---------------------------------------------------------------------------------

_STAMP = re.compile(rb"<\d{14}\.")


def _mask(data: bytes) -> bytes:
    return _STAMP.sub(b"<STAMP.", data)


def _postfix_result(records: list[tuple[str, bytes]]) -> dict:
    content, sender, rcpts, orig, orcpt, notify = [], None, [], "", "", 0
    state = "env"
    for t, d in records:
        if t == "M":
            state = "content"
        elif t == "X":
            state = "extracted"
        elif state == "content" and t in "NL":
            content.append((t, _mask(d)))
        elif t == "S":
            sender = d.decode("utf-8", "surrogateescape")
        elif t == "O":
            orig = d.decode("utf-8", "surrogateescape")
        elif t == "A" and d.startswith(b"dsn_orig_rcpt="):
            orcpt = d.split(b"=", 1)[1].decode("utf-8", "surrogateescape")
        elif t == "A" and d.startswith(b"notify_flags="):
            notify = int(d.split(b"=", 1)[1])
        elif t == "R":
            rcpts.append((d.decode("utf-8", "surrogateescape"), orig, orcpt, notify))
            orig, orcpt, notify = "", "", 0
    return {"content": content, "sender": sender, "recipients": rcpts}


class Pair:
    def __init__(self, root: Path, extra: str):
        main = textwrap.dedent(COMMON) + textwrap.dedent(extra)
        self.postfix = PostfixCleanup(root, main)
        config = Config(str(self.postfix.conf), MainCf.parse(main, "main.cf"),
                        MasterCf.parse("", "master.cf"),
                        HostFacts("mx1", (("127.0.0.1", 8),), (("::1", 128),)))
        self.settings = config.settings()
        self.cleanup = Cleanup(self.settings)

    def compare(self, content: bytes, *, sender: str = "joe",
                recipients: tuple[str, ...] = ("ann@example.org",), context: str = "local",
                full_name: str | None = None, flags: int = 0x32) -> dict:
        """Run both; return Postfix's view (after asserting hato's equals it)."""
        limit = self.settings.int("line_length_limit")
        env = [("T", f"{T0} 0".encode()), ("A", f"rewrite_context={context}".encode())]
        if full_name:
            env.append(("F", full_name.encode()))
        env.append(("S", sender.encode("utf-8", "surrogateescape")))
        env += [("R", r.encode("utf-8", "surrogateescape")) for r in recipients]
        qid, status, reason, records = self.postfix.run(env, _content_records(content, limit),
                                                        flags)
        sub = Submission(qid, sender, list(recipients), float(T0), rewrite_context=context,
                         full_name=full_name, flags=flags, tz=datetime.UTC)
        result, ours = cleanup_message(self.cleanup, sub, content)
        mine = {"content": [(t, _mask(d)) for t, d in ours] if not result.status else [],
                "sender": result.sender,
                "recipients": [(r.address, r.orig_address, r.orcpt, notify_mask(r.notify))
                               for r in result.recipients] if not result.status else []}
        theirs = _postfix_result(records) if status == 0 else {
            "content": [], "sender": result.sender, "recipients": []}
        assert (int(result.status), mine) == (status, theirs)
        if status:
            assert (result.reason or "") == reason
        return theirs

    def close(self) -> None:
        self.postfix.close()


@pytest.fixture
def pair(tmp_path):
    made: list[Pair] = []

    def make(extra: str = "") -> Pair:
        p = Pair(tmp_path / f"p{len(made)}", extra)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


RECEIVED = b"Received: by mx1.example.com (Postfix, from userid 1000)\n\tid QID; x\n"


def test_local_submission_headers(pair):
    p = pair()
    p.compare(RECEIVED + b"Subject: hi\n\nbody\n")
    p.compare(RECEIVED + b"Subject: hi\n\nbody\n", full_name="Joe User")
    p.compare(RECEIVED + b"Subject: hi\n\nbody\n", full_name="Joe Q. User")
    p.compare(RECEIVED + b"Subject: hi\n\nbody\n", sender="")
    p.compare(RECEIVED)
    p.compare(RECEIVED + b"no header here\n")
    p.compare(RECEIVED + b"Resent-From: x@example.org\nFrom: a@b.example\n\n")


def test_address_header_rewriting(pair):
    p = pair("append_dot_mydomain = yes\n")
    p.compare(RECEIVED + b"From: joe\nTo: ann, Bob <bob>, carl@example.org\nCc: dave@host\n"
              b"Reply-To: group: a, b@c;\nSender: \"joe smith\"@host (comment)\n\n")
    many = ", ".join(f"user{i}" for i in range(12)).encode()
    p.compare(RECEIVED + b"To: " + many + b"\n\n")
    p.compare(RECEIVED + b"To: ann\nBcc: hidden\nReturn-Path: <x@y>\nContent-Length: 3\n\n")


def test_remote_context(pair):
    p = pair()
    p.compare(RECEIVED + b"From: joe\nTo: ann\n\n", context="remote")
    p = pair("remote_header_rewrite_domain = domain.invalid\n")
    p.compare(RECEIVED + b"From: joe\nTo: ann@host\n\n", context="remote")


def test_canonical_masquerade_virtual(pair):
    p = pair("""
        recipient_delimiter = +
        canonical_maps = inline:{ {joe@mx1.example.com = Joe.User@example.com} }
        sender_canonical_maps = inline:{ {bob@example.com = robert@example.com} }
        masquerade_domains = !keep.example.com, example.com
        masquerade_exceptions = root
        virtual_alias_maps = inline:{ {info@example.com = ann@example.org, bob@example.org}, \
            {team@example.com = info@example.com, ann@example.org}, \
            {self@example.com = self@example.com, copy@example.org} }
    """)
    p.compare(RECEIVED + b"From: joe\nTo: x@host.example.com, root@host.example.com, "
              b"y@a.keep.example.com\n\n")
    p.compare(RECEIVED + b"\n", sender="bob@example.com",
              recipients=("team@example.com", "info+x@example.com", "self@example.com",
                          "ann@example.org", "ANN@example.org", "joe", "joe smith@example.org",
                          "x@a.example.com"))


def test_header_checks(pair, tmp_path):
    checks = tmp_path / "header_checks"
    checks.write_text("/^Subject: reject/ REJECT go away\n/^Subject: ignore/ IGNORE\n"
                      "/^Subject: replace(.*)/ REPLACE Subject: replaced$1\n"
                      "/^Subject: prepend/ PREPEND X-Added: yes\n/^Subject: discard/ DISCARD\n"
                      "/^Subject: defer/ REJECT 4.7.1 later\n/^X-Body:/ WARN x\n")
    body = tmp_path / "body_checks"
    body.write_text("/^drop this$/ IGNORE\n/^change (.*)$/ REPLACE changed $1\n")
    p = pair(f"header_checks = regexp:{checks}\nbody_checks = regexp:{body}\n")
    for subject in (b"reject", b"ignore", b"replace me", b"prepend", b"defer", b"plain"):
        p.compare(RECEIVED + b"Subject: " + subject + b"\n\nline\ndrop this\nchange it\n")


def test_limits_and_odd_input(pair):
    p = pair("header_size_limit = 1000\nline_length_limit = 600\nhopcount_limit = 5\n")
    folded = b"Subject: " + b"\n\t".join([b"word" * 20] * 20)
    p.compare(RECEIVED + folded + b"\n\nbody\n")
    p.compare(RECEIVED + b"Subject: " + b"y" * 5000 + b"\n\nbody\n")
    p.compare(RECEIVED + b"X-Long: " + b"z" * 1500 + b"\n\n" + b"b" * 2000 + b"\n")
    p.compare(RECEIVED + b"Received: x\n" * 4 + b"\n")
    p.compare(RECEIVED + "Subject: caf\u00e9\n\nbody\x00nul\n".encode())


def test_mime(pair, tmp_path):
    checks = tmp_path / "checks"
    checks.write_text("/^Subject: inner/ REPLACE Subject: inner replaced\n"
                      "/^Content-Type: application/ PREPEND X-Attachment: yes\n")
    p = pair(f"header_checks = regexp:{checks}\n")
    p.compare(RECEIVED + b"""Subject: parts
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain

hello
--outer
Content-Type: application/octet-stream

AAAA
--outer
Content-Type: message/rfc822

Subject: inner subject
From: someone@example.org

inner
--outer--
""")


def test_rejections(pair):
    p = pair("""
        message_size_limit = 20000
        strict_7bit_headers = yes
        virtual_alias_maps = inline:{ {big@example.com = a@x.example, b@x.example, c@x.example} }
        virtual_alias_expansion_limit = 2
        message_reject_characters = \\001
    """)
    p.compare(RECEIVED + b"Subject: big\n\n" + b"x" * 100 + b"\n" * 1 + (b"y" * 99 + b"\n") * 400)
    p.compare(RECEIVED + "Subject: café\n\n".encode())
    p.compare(RECEIVED + b"Subject: s\n\n", recipients=("big@example.com",))
    p.compare(RECEIVED + b"Subject: s\n\nctl\x01char\n")


def test_odd_headers(pair):
    p = pair()
    p.compare(RECEIVED + b"Subject : spaced\nTo:\nCc: ,,\nFrom: <>\nX-Empty:\n\nbody")
    p.compare(RECEIVED + b"To: a@b.example\n\tcontinued@c.example\n \nSubject: x")
    p.compare(RECEIVED + b"From joe Tue Nov 14 2023\nSubject: mbox\n\n")
    p.compare(RECEIVED + b"To: undisclosed-recipients:;\nFrom: Joe <joe>\n\n")
    p.compare(RECEIVED + b"To: \"quoted name\" <a@b.example>, (only comment)\n\n",
              recipients=("\"q\"@example.org", "a@b@example.org"))


def test_random_headers(pair):
    """Address headers full of odd syntax, folded lines, 8-bit text and long
    values: the same bytes out of both."""
    import random

    rnd = random.Random(20261129)
    p = pair("append_dot_mydomain = yes\nheader_size_limit = 300\nline_length_limit = 512\n"
             "canonical_maps = inline:{ {a@mx1.example.com = Alpha@example.com} }\n"
             "masquerade_domains = example.com\nmasquerade_exceptions = root\n")
    names = ["From", "To", "Cc", "Bcc", "Reply-To", "Sender", "Subject", "X-Foo", "Resent-To",
             "Return-Path", "Received", "Content-Type", "Message-ID", "Date", "Errors-To"]
    atoms = ["a", "b@c", "Joe <d>", '"x y"@z', "(c)", ",", ";", "g:", "<", ">", "@", "root@h",
             "e@f.example.com", "h!i", "j%k", '"', "[1.2.3.4]", "\u00e9", " ", "\t", "\\", ".",
             "..", "l.m@n.", "<@r:s@t>"]
    for _ in range(30):
        headers = []
        for _ in range(rnd.randint(0, 6)):
            value = " ".join(rnd.choice(atoms) for _ in range(rnd.randint(0, 8)))
            if rnd.random() < 0.2:
                value += "\n\t" + " ".join(rnd.choice(atoms) for _ in range(3))
            if rnd.random() < 0.1:
                value += "q" * rnd.randint(200, 700)
            headers.append(f"{rnd.choice(names)}:{value}")
        content = RECEIVED + ("\n".join(headers) + "\n\nbody\n").encode()
        p.compare(content, recipients=("a", "x@y.example.com"),
                  full_name=rnd.choice([None, "Joe", "A. B", "x<y"]))

"""t-30: policy delegation (check_policy_service) with real policy servers,
scripted ones that misbehave, and Debian's Postfix side by side.

One hato instance, one smtpd service per policy server (master.cf entries
on ports of their own, ``-o smtpd_recipient_restrictions=$t30_NAME`` with
the lists in main.cf), most with maxproc 1, so one worker serves them all
and its connection reuse is exact:

* **postgrey** (Debian's, run by the test on a loopback port with
  ``--delay=2`` and a database directory of its own): the first attempt is
  deferred with postgrey's text, a retry after the delay is accepted and the
  message carries postgrey's X-Greylist header.
* **policyd-spf** (Debian's postfix-policyd-spf-python, unchanged): spawned
  for each connection on ``unix:private/policyd-spf`` (relative to the
  queue directory) the way Postfix's spawn(8) runs it, with the connection as
  its stdin and stdout. Its DNS: pyspf asks dnspython, which reads
  /etc/resolv.conf; each policyd-spf runs in a private mount namespace
  (``unshare --mount``) where a resolv.conf naming the test DNS server (on
  port 53 of a loopback address of its own) is bind-mounted over
  /etc/resolv.conf. The system's file is never touched. An SPF fail is
  rejected with policyd-spf's text; a pass gets its Received-SPF header.
* **faults** (tests/policy_peer.py): nobody listening, a server that hangs
  past ``timeout=2s``, one that closes in the middle of its reply, one that
  answers garbage (with ``default_action=DUNNO``): the default action
  applies and the log has Postfix's warnings.
* **reuse**: sessions one after the other share one connection; concurrent
  sessions in a worker each get one, and later sessions reuse them.

The differential part attaches the same scripted policy server (recording,
answering DUNNO) to a private Debian Postfix (tests/postfix_instance.py) and
to a hato instance with the same settings, plays the same SMTP sessions on
both, and compares the recorded request streams: the attribute names in
order and their values, with what legitimately differs masked (ports, queue
ids and instances — which must still repeat where Postfix's repeat —,
mail_version). Postfix 3.7 does not send compatibility_level and
mail_version (Postfix 3.8 does); hato sends them, last.
"""

from __future__ import annotations

import contextlib
import mailbox
import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.differential.test_postscreen_verdicts import Port53DnsServer
from tests.policy_peer import CLOSE, HANG, PolicyPeer
from tests.ports import close_listener
from tests.postfix_instance import COMMON_MAIN_CF, PostfixInstance

from .instance import Instance, free_port, smtp_ready

pytestmark = pytest.mark.integration

POSTGREY = "/usr/sbin/postgrey"
POLICYD_SPF = "/usr/bin/policyd-spf"
RCPT = "demo@hato.test"  # the instance's virtual mailbox (hato init)
HELO = "client.t30.test"
GREY_DELAY = 2

SPF_CONF = """\
debugLevel = 1
TestOnly = 1
HELO_reject = Fail
Mail_From_reject = Fail
PermError_reject = False
TempError_Defer = False
skip_addresses = 192.0.2.255/32
"""

DNS_ZONES = {
    "spf-fail.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
    "spf-pass.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]},
}


class Spawner:
    """What Postfix's spawn(8) does for a policy server: for each connection
    to a UNIX-domain socket, run *argv* with the connection as its stdin and
    stdout."""

    def __init__(self, path: str, argv: list[str], log: Path):
        self.argv = argv
        self.log = log
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.listen(16)
        self.procs: list[subprocess.Popen] = []
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, open(self.log, "ab") as err:
                self.procs.append(subprocess.Popen(self.argv, stdin=conn.fileno(),
                                                   stdout=conn.fileno(), stderr=err,
                                                   cwd="/"))

    def close(self) -> None:
        self.stop.set()
        close_listener(self.sock)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait(10)


def wait_listening(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Site:
    inst: Instance
    ports: dict[str, int]
    peers: dict[str, PolicyPeer]
    down_port: int
    postgrey_port: int
    spawner: Spawner | None = None
    cleanups: list = field(default_factory=list)


#: service name -> (its smtpd_recipient_restrictions, PORT being its policy
#: server's port; maxproc)
SERVICES = {
    "postgrey": ("reject_unauth_destination, check_policy_service inet:127.0.0.1:PORT", 1),
    "spf": ("check_policy_service unix:private/policyd-spf", 1),
    "down": ("check_policy_service inet:127.0.0.1:PORT", 1),
    "hang": ("check_policy_service { inet:127.0.0.1:PORT, timeout=2s }", 1),
    "closer": ("check_policy_service inet:127.0.0.1:PORT", 1),
    "garbage": ("check_policy_service { inet:127.0.0.1:PORT, default_action=DUNNO }", 1),
    "reuse": ("check_policy_service inet:127.0.0.1:PORT", 1),
    "busy": ("check_policy_service inet:127.0.0.1:PORT", 8),
}


def _busy(c, r, attrs):
    time.sleep(0.5)
    return "DUNNO"


@pytest.fixture(scope="module")
def site():
    for tool, package in ((POSTGREY, "postgrey"), (POLICYD_SPF, "postfix-policyd-spf-python"),
                          ("unshare", "util-linux")):
        require_tool(tool, package)
    tmp = Path(tempfile.mkdtemp(prefix="hato-t30-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    cleanups: list = [lambda: shutil.rmtree(tmp, ignore_errors=True)]
    try:
        # postgrey, as its own user, on a loopback port
        dbdir = tmp / "postgrey"
        dbdir.mkdir()
        shutil.chown(dbdir, "postgrey", "postgrey")
        pg_port = free_port()
        pg_log = open(tmp / "postgrey.log", "wb")  # noqa: SIM115 - closed by the cleanups
        cleanups.append(pg_log.close)
        postgrey = subprocess.Popen(
            [POSTGREY, f"--inet=127.0.0.1:{pg_port}", f"--delay={GREY_DELAY}",
             f"--dbdir={dbdir}", "--user=postgrey", "--group=postgrey",
             "--hostname=t30.test", "--auto-whitelist-clients=0",
             f"--pidfile={tmp}/postgrey.pid"],
            stdout=subprocess.DEVNULL, stderr=pg_log, cwd="/")
        cleanups.append(lambda: (postgrey.kill(), postgrey.wait(10)))
        # the test DNS server for policyd-spf
        dns = Port53DnsServer(DNS_ZONES).start()
        cleanups.append(dns.stop)
        resolv = tmp / "resolv.conf"
        resolv.write_text(f"nameserver {dns.host}\noptions timeout:2 attempts:2\n")
        resolv.chmod(0o644)
        (tmp / "policyd-spf.conf").write_text(SPF_CONF)
        # scripted policy servers
        peers = {
            "hang": PolicyPeer(lambda c, r, a: HANG),
            "closer": PolicyPeer(lambda c, r, a: [b"action=DUN", CLOSE]),
            "garbage": PolicyPeer(lambda c, r, a: b"220 this is not a policy server\n\n"),
            "reuse": PolicyPeer(lambda c, r, a: "DUNNO"),
            "busy": PolicyPeer(_busy),
        }
        for peer in peers.values():
            cleanups.append(peer.close)
        down = free_port()
        inst = Instance("t30")
        cleanups.append(inst.cleanup)
        ports = {name: free_port() for name in SERVICES}
        where = {"postgrey": pg_port, "down": down,
                 **{name: p.port for name, p in peers.items()}}
        settings = []
        with open(inst.root / "master.cf", "a") as f:
            for name, (restrictions, maxproc) in SERVICES.items():
                settings.append(f"t30_{name} = "
                                + restrictions.replace("PORT", str(where.get(name, 0))))
                # maxproc 1: one worker; its one session is "all busy", so
                # the stress-mode error limit (1) and timeout (10s: a slow
                # policy exchange on a loaded machine) are pinned to the
                # normal ones
                f.write(f"127.0.0.1:{ports[name]} inet n - n - {maxproc} smtpd\n"
                        f"  -o syslog_name=postfix/{name}\n"
                        f"  -o smtpd_hard_error_limit=20\n"
                        f"  -o smtpd_timeout=300s\n"
                        f"  -o smtpd_recipient_restrictions=$t30_{name}\n")
        inst.postconf(*settings)
        inst.start()
        for port in ports.values():
            inst.wait_for(lambda port=port: smtp_ready(port), 30, f"smtpd on {port}")
        spawner = Spawner(str(inst.root / "queue" / "private" / "policyd-spf"),
                          ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv),
                           POLICYD_SPF, str(tmp / "policyd-spf.conf")],
                          tmp / "policyd-spf.log")
        cleanups.append(spawner.close)
        wait_listening(pg_port)
        yield Site(inst, ports, peers, down, pg_port, spawner, cleanups)
    finally:
        for fn in reversed(cleanups):
            with contextlib.suppress(Exception):  # clean up everything else anyway
                fn()


def attempt(port: int, sender: str, *, rcpt: str = RCPT, data: bytes | None = None,
            helo: str = HELO) -> tuple[int, str]:
    """MAIL and RCPT (and with *data* and a 250, the message): RCPT's reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo(helo)
        code, text = c.mail(sender)
        assert code == 250, text
        code, text = c.rcpt(rcpt)
        if data is not None and code == 250:
            dcode, dtext = c.data(data)
            assert dcode == 250, dtext
        return code, text.decode()


def delivered(inst: Instance, marker: str, timeout: float = 30) -> bytes:
    """The delivered message (demo@hato.test's Maildir) whose body has *marker*."""
    path = inst.root / "mail" / "hato.test" / "demo"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (path / "new").is_dir() and (path / "cur").is_dir():
            box = mailbox.Maildir(str(path), factory=None, create=False)
            for key in box.iterkeys():
                data = box.get_bytes(key)
                if marker.encode() in data:
                    return data
        time.sleep(0.1)
    raise AssertionError(f"no delivered message with {marker}\n{inst.log_text()[-3000:]}")


def logged_reject(inst: Instance, reply: str, sender: str) -> str:
    """The NOQUEUE line Postfix writes for a refused RCPT."""
    line = (f"NOQUEUE: reject: RCPT from localhost[127.0.0.1]: {reply}; from=<{sender}> "
            f"to=<{RCPT}> proto=ESMTP helo=<{HELO}>")
    inst.wait_log(line)
    return line


# -- real policy servers ------------------------------------------------------------------------


def test_postgrey_defers_then_accepts(site):
    port = site.ports["postgrey"]
    sender = "grey@client.t30.test"
    code, text = attempt(port, sender)
    expected = (f"4.2.0 <{RCPT}>: Recipient address rejected: Greylisted, see "
                "http://postgrey.schweikert.ch/help/hato.test.html")
    assert (code, text) == (450, expected)
    logged_reject(site.inst, f"450 {expected}", sender)
    # too early: still greylisted
    assert attempt(port, sender)[0] == 450
    time.sleep(GREY_DELAY + 1)
    body = b"Subject: greylisted\r\n\r\npostgrey-retry\r\n"
    code, text = attempt(port, sender, data=body)
    assert code == 250, text
    msg = delivered(site.inst, "postgrey-retry")
    assert b"\nX-Greylist: delayed " in msg or msg.startswith(b"X-Greylist: delayed ")
    assert b"by postgrey-1.37 at t30.test;" in msg


def test_policyd_spf_rejects_a_fail_and_marks_a_pass(site):
    port = site.ports["spf"]
    code, text = attempt(port, "someone@spf-fail.test")
    why = ("Message rejected due to: SPF fail - not authorized. Please see "
           "http://www.openspf.net/Why?s=mfrom;id=someone@spf-fail.test;ip=127.0.0.1;"
           "r=hato.test")
    assert (code, text) == (550, f"5.7.23 <{RCPT}>: Recipient address rejected: {why}"), \
        (tmp_log(site), site.inst.log_text()[-2000:])
    logged_reject(site.inst, f"550 5.7.23 <{RCPT}>: Recipient address rejected: {why}",
                  "someone@spf-fail.test")
    code, text = attempt(port, "someone@spf-pass.test",
                         data=b"Subject: spf\r\n\r\nspf-pass-body\r\n")
    assert code == 250, text
    msg = delivered(site.inst, "spf-pass-body")
    assert (b"Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=127.0.0.1; "
            b"helo=client.t30.test; envelope-from=someone@spf-pass.test;") in msg


def tmp_log(site) -> str:
    if site.spawner is None:
        return ""
    try:
        return site.spawner.log.read_text(errors="replace")[-2000:]
    except OSError:
        return ""


# -- faults ---------------------------------------------------------------------------------------


DEFAULT_REPLY = f"451 4.3.5 <{RCPT}>: Recipient address rejected: Server configuration problem"


def warnings_of(inst: Instance, service: str) -> list[str]:
    out = []
    for line in inst.log_text().splitlines():
        if f"postfix/{service}/smtpd[" in line and ": warning: " in line:
            out.append(line.split(": warning: ", 1)[1])
    return out


def test_policy_server_not_listening(site):
    code, text = attempt(site.ports["down"], "down@client.t30.test")
    assert f"{code} {text}" == DEFAULT_REPLY
    logged_reject(site.inst, DEFAULT_REPLY, "down@client.t30.test")
    server = f"127.0.0.1:{site.down_port}"
    assert warnings_of(site.inst, "down") == [
        f"connect to {server}: Connection refused",
        f"problem talking to server {server}: Connection refused"] * 2


def test_policy_server_hanging_past_the_timeout(site):
    started = time.monotonic()
    code, text = attempt(site.ports["hang"], "hang@client.t30.test")
    took = time.monotonic() - started
    assert f"{code} {text}" == DEFAULT_REPLY
    assert 4 <= took < 30  # two tries of 2 s, 1 s apart
    logged_reject(site.inst, DEFAULT_REPLY, "hang@client.t30.test")
    server = f"127.0.0.1:{site.peers['hang'].port}"
    assert warnings_of(site.inst, "hang") == [
        f"timeout on {server} while reading input attribute name",
        f"problem talking to server {server}: Connection timed out"] * 2


def test_policy_server_closing_mid_reply(site):
    code, text = attempt(site.ports["closer"], "closer@client.t30.test")
    assert f"{code} {text}" == DEFAULT_REPLY
    logged_reject(site.inst, DEFAULT_REPLY, "closer@client.t30.test")
    server = f"127.0.0.1:{site.peers['closer'].port}"
    assert warnings_of(site.inst, "closer") == [
        f"premature end-of-input on {server} while reading input attribute value",
        f"premature end-of-input on {server} while reading input attribute value",
        f"problem talking to server {server}: Success"]
    assert site.peers["closer"].connections == 2


def test_policy_server_answering_garbage(site):
    # default_action=DUNNO in the per-use settings: the mail goes on
    code, text = attempt(site.ports["garbage"], "garbage@client.t30.test")
    assert code == 250, text
    server = f"127.0.0.1:{site.peers['garbage'].port}"
    site.inst.wait_log(f"problem talking to server {server}: Success")
    assert warnings_of(site.inst, "garbage") == [
        f"missing attribute action in input from {server}",
        f"missing attribute action in input from {server}",
        f"problem talking to server {server}: Success"]


# -- connection reuse -----------------------------------------------------------------------------


def test_sessions_share_the_connection_of_their_worker(site):
    peer = site.peers["reuse"]
    for i in range(5):
        assert attempt(site.ports["reuse"], f"reuse{i}@client.t30.test")[0] == 250
    assert len(peer.requests) == 5
    assert peer.connections == 1 and peer.closed_by_client == 0
    assert [dict(r)["sender"] for r in peer.requests] == \
        [f"reuse{i}@client.t30.test" for i in range(5)]


def test_concurrent_sessions_then_reuse(site):
    peer = site.peers["busy"]
    port = site.ports["busy"]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: attempt(port, f"busy{i}@client.t30.test")[0],
                              range(8)))
    assert codes == [250] * 8
    opened = peer.connections
    assert 2 <= opened <= 8  # several at once, in one or two workers
    for i in range(8):
        assert attempt(port, f"later{i}@client.t30.test")[0] == 250
    assert peer.connections == opened and len(peer.requests) == 16


# -- differential: the request stream, Postfix and hato ------------------------------------------


DIFF_MAIN = {
    "local_recipient_maps": "",
    "smtpd_client_port_logging": "no",
}

#: the restriction lists of each configuration; POLICY is the scripted server
DIFF_CONFIGS = {
    "delayed": {
        "smtpd_recipient_restrictions": "check_policy_service POLICY",
        "smtpd_data_restrictions": "check_policy_service POLICY",
        "smtpd_end_of_data_restrictions": "check_policy_service POLICY",
        "smtpd_etrn_restrictions": "check_policy_service POLICY",
    },
    "immediate": {
        "smtpd_delay_reject": "no",
        "smtpd_client_restrictions": "check_policy_service { POLICY, policy_context=ctx }",
        "smtpd_helo_restrictions": "check_policy_service POLICY",
        "smtpd_sender_restrictions": "check_policy_service POLICY",
        "smtpd_recipient_restrictions": "check_policy_service POLICY",
    },
}

#: attributes whose values differ by nature: masked (queue ids and instances
#: keep their pattern of repeats)
MASKED = ("client_port", "server_port", "mail_version")
NUMBERED = ("queue_id", "instance")
#: what Postfix 3.7 does not send and hato does (Postfix 3.8 sends them)
HATO_ONLY = ("compatibility_level", "mail_version")


def play(port: int) -> None:
    """The same SMTP sessions for both servers."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.ehlo("client.example")
        assert c.mail("sender@example.org", ["SIZE=321"])[0] == 250
        assert c.rcpt("one@mx.hato.test")[0] == 250
        assert c.rcpt("two@mx.hato.test")[0] == 250
        code, _ = c.data(b"Subject: two recipients\r\n\r\nbody\r\n")
        assert code == 250
        assert c.mail("")[0] == 250
        assert c.rcpt("one@mx.hato.test")[0] == 250
        code, _ = c.data(b"Subject: one recipient\r\n\r\nline 1\r\nline 2\r\n")
        assert code == 250
        assert c.mail("later@example.org")[0] == 250
        assert c.rcpt("two@mx.hato.test")[0] == 250
        c.rset()
        c.docmd("ETRN", "mx.hato.test")
        c.docmd("VRFY", "one@mx.hato.test")
        # BDAT: the DATA protocol state
        assert c.mail("chunks@example.org")[0] == 250
        assert c.rcpt("two@mx.hato.test")[0] == 250
        body = b"Subject: chunks\r\n\r\nin two chunks\r\n"
        c.send(b"BDAT 10\r\n" + body[:10])
        assert c.getreply()[0] == 250
        c.send(b"BDAT %d LAST\r\n" % (len(body) - 10) + body[10:])
        assert c.getreply()[0] == 250
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
        c.helo("old.example")
        assert c.mail("x@example.org")[0] == 250
        assert c.rcpt("one@mx.hato.test")[0] == 250


def normalized(stream: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    numbers: dict[tuple[str, str], str] = {}
    out = []
    for request in stream:
        items = []
        for name, value in request:
            if name in MASKED:
                value = "*"
            elif name in NUMBERED and value:
                key = (name, value)
                numbers.setdefault(key, f"{name}#{sum(k[0] == name for k in numbers) + 1}")
                value = numbers[key]
            items.append((name, value))
        out.append(items)
    return out


def run_postfix(settings: dict[str, str], peer: PolicyPeer) -> list:
    main = {k: v.replace("POLICY", peer.endpoint) for k, v in settings.items()}
    with PostfixInstance({**DIFF_MAIN, **main}, name="t30") as pf:
        settle(peer)  # the start-up probe is a session too
        before = len(peer.requests)
        play(pf.port)
        time.sleep(0.2)
    return list(peer.requests[before:])


def settle(peer: PolicyPeer) -> None:
    """Wait until the peer has had no new request for a while."""
    seen, quiet = -1, 0
    while quiet < 5:
        time.sleep(0.1)
        quiet = quiet + 1 if len(peer.requests) == seen else 0
        seen = len(peer.requests)


def run_hato(settings: dict[str, str], peer: PolicyPeer) -> list:
    inst = Instance("t30d")
    try:
        common = {}
        for line in COMMON_MAIN_CF.splitlines():
            k, _, v = line.partition("=")
            common[k.strip()] = v.strip()
        main = {k: v.replace("POLICY", peer.endpoint) for k, v in settings.items()}
        inst.postconf(*(f"{k} = {v}" for k, v in {**common, **DIFF_MAIN, **main}.items()))
        inst.start()
        inst.wait_for(lambda: smtp_ready(inst.port), 30, "hato's smtpd")
        settle(peer)
        before = len(peer.requests)
        play(inst.port)
        time.sleep(0.2)
        return list(peer.requests[before:])
    finally:
        inst.cleanup()


@pytest.mark.differential
@pytest.mark.parametrize("config", list(DIFF_CONFIGS))
def test_request_streams_match_postfix(config):
    settings = DIFF_CONFIGS[config]
    with PolicyPeer(lambda c, r, a: "DUNNO") as pf_peer, \
            PolicyPeer(lambda c, r, a: "DUNNO") as hato_peer, ThreadPoolExecutor(2) as pool:
        pf = pool.submit(run_postfix, settings, pf_peer)
        ours = pool.submit(run_hato, settings, hato_peer)
        postfix_stream, hato_stream = pf.result(), ours.result()
    assert postfix_stream, "Postfix sent no policy request"
    for request in hato_stream:
        names = [n for n, _ in request]
        assert names[-2:] == list(HATO_ONLY), names
    for request in postfix_stream:
        assert not {n for n, _ in request} & set(HATO_ONLY)
    hato_trimmed = [[(n, v) for n, v in r if n not in HATO_ONLY] for r in hato_stream]
    want, got = normalized(postfix_stream), normalized(hato_trimmed)
    states = [dict(r)["protocol_state"] for r in want]
    assert [dict(r)["protocol_state"] for r in got] == states, (want, got)
    for i, (w, g) in enumerate(zip(want, got)):
        assert g == w, f"request {i} ({states[i]}) differs"

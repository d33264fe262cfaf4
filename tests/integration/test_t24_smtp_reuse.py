"""t-24: the smtp client's connection cache and TLS wrapper mode.

One hato instance relays through transport_maps to scripted peers
(tests/smtp_peer.py) on 127.0.0.1:

* ``cached.test``: its next hop is in smtp_connection_cache_destinations,
  so the agent keeps the session and the next message goes over it (RSET
  first, ``conn_use=N`` in the log);
* ``burst.test``: a burst of mail through a service whose destination
  concurrency is 2 (the peer holds its reply to the dot until the whole
  burst is queued): qmgr marks the requests (more mail waiting) and the
  sessions are reused on demand;
* ``wrapped.test``: a peer that speaks TLS from the first byte, reached with
  ``-o smtp_tls_wrappermode=yes``; ``plainwrap.test``: wrapper mode to a
  peer without TLS, deferred and never sent in plaintext.
"""

from __future__ import annotations

import re
import ssl
import threading

import pytest

from tests.certs import TestCA
from tests.smtp_peer import SmtpPeer

from .instance import Instance
from .maillog import wait_status

pytestmark = pytest.mark.integration

SENDER = "demo@hato.test"
def send(inst: Instance, rcpt: str, n: int = 0) -> None:
    msg = f"From: {SENDER}\nTo: {rcpt}\nSubject: t24 {n}\n\nmessage {n}\n".encode()
    r = inst.sendmail("-f", SENDER, rcpt, message=msg)
    assert r.returncode == 0, r.stderr


GATE = threading.Event()  # the burst peer answers the dot once it is set


def _held_dot(session, arg) -> None:
    GATE.wait(60)


@pytest.fixture(scope="module")
def site():
    inst = Instance("t24")
    ca = TestCA(inst.root / "ca")
    cert = ca.issue("wrapped.test")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert.cert, cert.key)
    peers = {"cached.test": SmtpPeer(name="peer.cached.test"),
             "burst.test": SmtpPeer(name="peer.burst.test", dot=_held_dot),
             "wrapped.test": SmtpPeer(name="peer.wrapped.test", tls=server_ctx),
             "plainwrap.test": SmtpPeer(name="peer.plainwrap.test"),
             "split.test": SmtpPeer(name="peer.split.test")}
    routes = {"cached.test": "smtp", "burst.test": "burst", "wrapped.test": "wrapped",
              "plainwrap.test": "wrapped", "split.test": "split"}
    try:
        table = inst.root / "transport"
        table.write_text("".join(f"{dom} {routes[dom]}:[127.0.0.1]:{peer.port}\n"
                                 for dom, peer in peers.items()))
        with open(inst.root / "master.cf", "a") as f:
            f.write("burst unix - - n - - smtp\nsplit unix - - n - - smtp\n"
                    "wrapped unix - - n - - smtp\n  -o smtp_tls_wrappermode=yes\n"
                    "  -o smtp_tls_security_level=encrypt\n  -o smtp_tls_loglevel=1\n"
                    "  -o smtp_tls_session_cache_database=btree:${data_directory}/smtp_scache\n")
        inst.postconf(f"transport_maps = texthash:{table}",
                      f"smtp_connection_cache_destinations = {peers['cached.test'].address}",
                      # long enough that the next message always finds the session
                      "smtp_connection_cache_time_limit = 60s",
                      "burst_destination_concurrency_limit = 2",
                      "split_destination_recipient_limit = 2",
                      "smtp_connect_timeout = 5s", "smtp_helo_timeout = 10s")
        inst.start()
        yield inst, peers
    finally:
        inst.cleanup()
        for p in peers.values():
            p.close()


def test_cached_destination_reuses_the_session(site):
    inst, peers = site
    peer = peers["cached.test"]
    for n in range(3):
        send(inst, f"u{n}@cached.test", n)
        st = wait_status(inst, f"u{n}@cached.test")
        assert (st["status"], st["dsn"]) == ("sent", "2.0.0"), st
        assert st["use"] == (str(n + 1) if n else None), st
    assert peer.connections == 1, [s.commands for s in peer.sessions]
    commands = [c.split()[0].upper() for c in peer.sessions[0].commands]
    assert commands.count("EHLO") == 1
    assert commands.count("MAIL") == 3
    # each reuse starts with RSET, to learn that the session still works
    assert commands.count("RSET") == 2
    assert [m.recipients for m in peer.messages] == [[f"u{n}@cached.test"] for n in range(3)]
    assert not peer.errors


def test_a_session_the_server_dropped_is_replaced(site):
    inst, peers = site
    peer = peers["cached.test"]
    send(inst, "d0@cached.test")
    assert wait_status(inst, "d0@cached.test")["status"] == "sent"
    before = peer.connections
    peer.drop_connections()  # the idle cached session dies under the agent
    send(inst, "d1@cached.test")
    st = wait_status(inst, "d1@cached.test")
    assert (st["status"], st["use"]) == ("sent", None), st
    assert peer.connections == before + 1
    assert "status=deferred" not in "".join(
        line for line in inst.log_text().splitlines() if "d1@cached.test" in line)


def test_burst_reuses_sessions_on_demand(site):
    inst, peers = site
    peer = peers["burst.test"]
    rcpts = [f"b{n}@burst.test" for n in range(10)]
    active = inst.log_text().count("(queue active)")
    for n, rcpt in enumerate(rcpts):
        send(inst, rcpt, n)
    # all ten in qmgr's hands (two at the peer, held at the dot): a backlog
    inst.wait_for(lambda: inst.log_text().count("(queue active)") >= active + 10, 60,
                  "the burst in the active queue")
    inst.wait_for(lambda: peer.connections >= 2, 30, "two sessions at the peer")
    # burst_destination_concurrency_limit = 2: no third session while both wait
    assert peer.connections == 2
    GATE.set()
    uses = []
    for rcpt in rcpts:
        st = wait_status(inst, rcpt, timeout=60)
        assert st["status"] == "sent", st
        uses.append(int(st["use"] or 1))
    assert sorted(m.recipients[0] for m in peer.messages) == sorted(rcpts)
    # two deliveries at a time, and the sessions carried the rest
    assert peer.connections < len(rcpts), peer.connections
    assert max(uses) > 1, uses
    assert sum(1 for u in uses if u == 1) == peer.connections
    assert not peer.errors


def test_wrappermode_speaks_tls_from_the_first_byte(site):
    inst, peers = site
    peer = peers["wrapped.test"]
    send(inst, "w@wrapped.test")
    st = wait_status(inst, "w@wrapped.test")
    assert (st["status"], st["dsn"]) == ("sent", "2.0.0"), st
    assert [m.recipients for m in peer.messages] == [["w@wrapped.test"]]
    assert "STARTTLS" not in " ".join(peer.sessions[0].commands)
    assert re.search(r"Untrusted TLS connection established to 127\.0\.0\.1\[127\.0\.0\.1\]:"
                     rf"{peer.port}: TLSv1\.[23] with cipher ", inst.log_text())
    # a second message: a new connection (TLS sessions are not cached without
    # smtp_tls_connection_reuse) that resumes the TLS session of the first
    send(inst, "w2@wrapped.test")
    assert wait_status(inst, "w2@wrapped.test")["status"] == "sent"
    assert peer.connections == 2
    assert [s.tls_resumed for s in peer.sessions] == [False, True]


def test_wrappermode_to_a_plaintext_server_defers(site):
    inst, peers = site
    peer = peers["plainwrap.test"]
    send(inst, "p@plainwrap.test")
    st = wait_status(inst, "p@plainwrap.test")
    assert (st["status"], st["dsn"]) == ("deferred", "4.7.5"), st
    assert st["text"].startswith("Cannot start TLS: handshake failure with "
                                 "127.0.0.1[127.0.0.1]"), st
    # the peer greeted, the agent answered with a TLS hello, never a command
    assert peer.messages == []
    assert all(not s.commands or not s.commands[0].startswith(("EHLO", "HELO", "MAIL"))
               for s in peer.sessions)
    assert not inst.queue_empty()


def test_destination_recipient_limit_splits_the_message(site):
    """split_destination_recipient_limit = 2: five recipients of one message
    go in three transactions of at most two."""
    inst, peers = site
    peer = peers["split.test"]
    rcpts = [f"s{n}@split.test" for n in range(5)]
    msg = f"From: {SENDER}\nTo: {', '.join(rcpts)}\nSubject: split\n\nsplit\n".encode()
    r = inst.sendmail("-f", SENDER, *rcpts, message=msg)
    assert r.returncode == 0, r.stderr
    for rcpt in rcpts:
        assert wait_status(inst, rcpt)["status"] == "sent"
    sizes = sorted(len(m.recipients) for m in peer.messages)
    assert sizes == [1, 2, 2], [m.recipients for m in peer.messages]
    assert sorted(a for m in peer.messages for a in m.recipients) == rcpts

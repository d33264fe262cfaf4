"""The asyncio milter chain against the scripted milter (tests/milter_peer.py)
and against a real libmilter milter (Debian's python3-milter)."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from hato.io.milter_client import MilterChain, MilterSettings
from hato.proto import milter as mp
from hato.proto.milter import (
    AddHeader, AddRecipient, ChangeHeader, ChangeSender, DeleteRecipient, InsertHeader,
    ReplaceBody, Verdict)
from tests.milter_peer import MilterPeer, Script, unused_port

FAST = MilterSettings(connect_timeout=2, command_timeout=2, content_timeout=2)
MAC = {"{j}": "mx.example", "{daemon_name}": "mx.example", "{v}": "Postfix 3.7.11",
       "{_}": "client.example [192.0.2.1]", "{i}": "4F2A1", "{mail_addr}": "a@example.com",
       "{rcpt_addr}": "b@example.com"}


class Log:
    def __init__(self):
        self.warnings: list[str] = []
        self.infos: list[str] = []

    def warning(self, text):
        self.warnings.append(text)

    def info(self, text):
        self.infos.append(text)


class Source:
    """A message in memory; apply() edits it the way cleanup does."""

    def __init__(self, headers=("Subject: hi", "X-Multi: a\n\tb"), body=(b"hello", b"", b"world"),
                 received="Received: from client.example by mx.example"):
        self.received = received
        self.hdrs = list(headers)
        self.body = list(body)
        self.applied: list[tuple[str, list]] = []
        self.fail = None

    def headers(self):
        yield (self.received, True)
        yield from self.hdrs

    def body_lines(self):
        return iter(self.body)

    def apply(self, name, edits):
        if self.fail:
            raise self.fail
        self.applied.append((name, edits))
        for e in edits:
            if isinstance(e, AddHeader):
                self.hdrs.append(f"{e.name}:{e.value}")
            elif isinstance(e, ChangeHeader):
                idx = [i for i, h in enumerate(self.hdrs)
                       if h.split(":", 1)[0].lower() == e.name.lower()]
                if len(idx) >= e.index:
                    if e.value is None:
                        del self.hdrs[idx[e.index - 1]]
                    else:
                        self.hdrs[idx[e.index - 1]] = f"{e.name}:{e.value}"
            elif isinstance(e, ReplaceBody):
                self.body = e.lines()


def run(coro):
    return asyncio.run(coro)


async def session(chain, source=None, rcpts=("<b@example.com>",), quit=True):
    out = [await chain.connect("client.example", "192.0.2.1", 4321, "4", MAC),
           await chain.helo("client.example", MAC),
           await chain.mail(["<a@example.com>", "SIZE=100"], MAC)]
    for r in rcpts:
        out.append(await chain.rcpt([r], MAC))
    out.append(await chain.data(MAC))
    out.append(await chain.message(source or Source(), MAC))
    await chain.abort()
    if quit:
        await chain.quit()
    return out


OK = Verdict("continue")


def test_packet_stream_of_a_session():
    with MilterPeer() as peer:
        log = Log()
        chain = MilterChain(peer.endpoint, FAST, log)
        assert run(session(chain)) == [OK] * 6
        peer.wait_closed()
    ev = peer.sessions[0].events
    assert [(e.cmd, e.fields) for e in ev] == [
        ("O", (6, 0x1FF, 0x1FFFFF)),
        ("D", ("C", (("j", "mx.example"), ("{daemon_name}", "mx.example"),
                     ("v", "Postfix 3.7.11"), ("_", "client.example [192.0.2.1]")))),
        ("C", ("client.example", "4", 4321, "192.0.2.1")),
        ("D", ("H", ())), ("H", ("client.example",)),
        ("D", ("M", (("i", "4F2A1"), ("{mail_addr}", "a@example.com")))),
        ("M", ("<a@example.com>", "SIZE=100")),
        ("D", ("R", (("i", "4F2A1"), ("{rcpt_addr}", "b@example.com")))),
        ("R", ("<b@example.com>",)),
        ("D", ("T", (("i", "4F2A1"),))), ("T", ()),
        ("D", ("L", (("i", "4F2A1"),))), ("L", ("Subject", "hi")),
        ("D", ("L", (("i", "4F2A1"),))), ("L", ("X-Multi", "a\n\tb")),
        ("D", ("N", (("i", "4F2A1"),))), ("N", ()),
        ("D", ("B", (("i", "4F2A1"),))), ("B", (b"hello\r\n\r\nworld\r\n",)),
        ("D", ("E", (("i", "4F2A1"),))), ("E", ()),
        ("A", ()), ("Q", ())]
    assert log.warnings == []


def test_unknown_hostname_and_families():
    with MilterPeer() as peer:
        chain = MilterChain(peer.endpoint, FAST)

        async def go():
            await chain.connect("unknown", "2001:db8::1", "587", "6")
            await chain.unknown("XYZZY plugh")
            await chain.quit()
        run(go())
        chain2 = MilterChain(peer.endpoint, FAST, Log())
        log = chain2.log

        async def go2():
            await chain2.connect("localhost", "/run/sock", "bogus", "L")
            await chain2.quit()
        run(go2())
        peer.wait_closed(2)
    assert peer.sessions[0].of("C")[0].fields == ("[2001:db8::1]", "6", 587, "2001:db8::1")
    assert ("D", ("U", ())) in [(e.cmd, e.fields) for e in peer.sessions[0].events]
    assert peer.sessions[0].of("U")[0].fields == ("XYZZY plugh",)
    assert peer.sessions[1].of("C")[0].fields == ("localhost", "L", 0, "/run/sock")
    assert log.warnings == [f"milter {peer.endpoint}: bad client port number bogus"]


@pytest.mark.parametrize("version, missing", [(2, {"T", "U"}), (3, {"T"}), (4, set()), (6, set())])
def test_downgrade_to_the_milter_version(version, missing):
    with MilterPeer(Script(version=version, actions=0x3F)) as peer:
        chain = MilterChain(peer.endpoint, FAST)

        async def go():
            await chain.connect("h", "192.0.2.1", 1, "4", MAC)
            await chain.unknown("FOO", MAC)
            await chain.mail(["<a@b>"], MAC)
            await chain.data(MAC)
            await chain.quit()
        run(go())
        peer.wait_closed()
    cmds = peer.sessions[0].commands()
    fors = [e.fields[0] for e in peer.sessions[0].of("D")]
    for cmd in "UT":
        assert (cmd in cmds) == (cmd not in missing)
        assert (cmd in fors) == (cmd not in missing)


def test_mta_protocol_2_offers_version_2():
    settings = MilterSettings(protocol="2", command_timeout=2)
    with MilterPeer(Script(version=2)) as peer:
        chain = MilterChain(peer.endpoint, settings)

        async def go():
            await chain.connect("h", "192.0.2.1", 1, "4")
            await chain.data()
            await chain.quit()
        run(go())
        peer.wait_closed()
    assert peer.sessions[0].events[0].fields == (2, 0x1FF, 0x7F)
    assert "T" not in peer.sessions[0].commands()


def test_no_reply_and_no_event_flags():
    proto = (mp.SMFIP_NR_CONN | mp.SMFIP_NR_HDR | mp.SMFIP_NR_BODY | mp.SMFIP_NOHELO
             | mp.SMFIP_NOEOH | mp.SMFIP_HDR_LEADSPC)
    with MilterPeer(Script(protocol=proto)) as peer:
        chain = MilterChain(peer.endpoint, FAST)
        assert run(session(chain)) == [OK] * 6
        peer.wait_closed()
    s = peer.sessions[0]
    assert "H" not in s.commands() and ("D", ("H", ())) in [(e.cmd, e.fields) for e in s.events]
    assert "N" not in s.commands()
    assert s.of("L")[0].fields == ("Subject", " hi")      # leading space kept


def test_milter_macro_lists_and_defaults():
    script = Script(symlists={mp.SMFIM_HELO: "{client_addr} j", mp.SMFIM_ENVRCPT: "{rcpt_addr}",
                              mp.SMFIM_EOH: "{auth_type}"})
    settings = MilterSettings(command_timeout=2, macro_defaults="auth_type=none")
    with MilterPeer(script) as peer:
        chain = MilterChain(peer.endpoint, settings)
        mac = dict(MAC, **{"{client_addr}": "192.0.2.1"})

        async def go():
            await chain.connect("h", "192.0.2.1", 1, "4", mac)
            await chain.helo("h", mac)
            await chain.mail(["<a@b>"], mac)
            await chain.rcpt(["<b@c>"], mac)
            await chain.data(mac)
            await chain.message(Source(headers=["Subject: x"]), mac)
            await chain.quit()
        run(go())
        peer.wait_closed()
    m = peer.sessions[0].macros
    assert list(m["H"].items()) == [("{client_addr}", "192.0.2.1"), ("j", "mx.example")]
    assert m["R"] == {"{rcpt_addr}": "b@example.com"}
    assert m["M"] == {"i": "4F2A1", "{mail_addr}": "a@example.com", "{auth_type}": "none"}
    assert m["L"] == m["N"] == {"{auth_type}": "none"}
    assert m["E"] == {"i": "4F2A1"}


def test_per_recipient_reject_and_custom_replies():
    script = Script(rcpt={"<bad@x>": "r", "<tmp@x>": "t", "<pct@x>": ("y", "550 5.7.1 100%% no"),
                          "<multi@x>": ("y", "451-4.7.1 one\r\n451 4.7.1 two")})
    with MilterPeer(script) as peer:
        chain = MilterChain(peer.endpoint, FAST)
        out = run(session(chain, rcpts=["<bad@x>", "<ok@x>", "<tmp@x>", "<pct@x>", "<multi@x>"]))
        peer.wait_closed()
    assert out[3:8] == [Verdict("reject", "550 5.7.1 Command rejected"), OK,
                        Verdict("tempfail", "451 4.7.1 Service unavailable - try again later"),
                        Verdict("reject", "550 5.7.1 100% no"),
                        Verdict("tempfail", "451-4.7.1 one\r\n451 4.7.1 two")]
    assert out[8:] == [OK, OK]


def test_malformed_custom_reply_is_a_configuration_error():
    with MilterPeer(Script(replies={"M": ("y", "250 2.0.0 fine")})) as peer:
        log = Log()
        chain = MilterChain(peer.endpoint, FAST, log)
        out = run(session(chain, quit=False))
    conf = Verdict("tempfail", "451 4.3.5 Server configuration problem - try again later")
    assert out[2:] == [conf] * 4
    assert log.warnings == [f"milter {peer.endpoint}: malformed reply: 250 2.0.0 fine"]
    assert chain.other() == conf
    run(chain.quit())
    assert chain.other() == OK


def test_accept_at_connect_and_at_mail():
    with MilterPeer(Script(replies={"C": "a"})) as p1, \
            MilterPeer(Script(replies={"M": "a"})) as p2:
        chain = MilterChain(f"{p1.endpoint} {p2.endpoint}", FAST)

        async def go():
            out = await session(chain, quit=False)
            out.append(await chain.mail(["<x@y>"], MAC))
            out.append(await chain.rcpt(["<z@y>"], MAC))
            await chain.quit()
            return out
        assert run(go()) == [OK] * 8
        p1.wait_closed()
        p2.wait_closed()
    assert p1.sessions[0].commands() == ["O", "D", "C"]
    # accepted at MAIL: no RCPT, DATA, content until the abort; the next MAIL
    # is accepted again, so the RCPT after it is not sent either
    assert p2.sessions[0].commands() == ["O", "D", "C", "D", "H", "D", "M", "A",
                                         "D", "M", "Q"]


def test_reject_at_connect_stops_the_chain():
    with MilterPeer(Script(replies={"C": "r"})) as p1, MilterPeer() as p2:
        chain = MilterChain(f"{p1.endpoint},{p2.endpoint}", FAST)

        async def go():
            a = await chain.connect("h", "192.0.2.1", 1, "4", MAC)
            b = await chain.helo("h", MAC)
            await chain.quit()
            return a, b
        rejected = Verdict("reject", "550 5.7.1 Command rejected")
        assert run(go()) == (rejected, rejected)
    assert p2.sessions == []


@pytest.mark.parametrize("stage, reply, verdict", [
    ("M", "t", Verdict("tempfail", "451 4.7.1 Service unavailable - try again later")),
    ("R", "d", Verdict("discard")),
    ("T", "4", Verdict("shutdown")),
    ("E", ["p", ("q", "spam"), "c"], Verdict("quarantine", reason="spam")),
    ("E", "d", Verdict("discard")),
])
def test_decisions(stage, reply, verdict):
    with MilterPeer(Script(replies={stage: reply})) as peer:
        chain = MilterChain(peer.endpoint, FAST)
        out = run(session(chain))
    assert verdict in out


def test_discard_at_connect_is_refused():
    with MilterPeer(Script(replies={"C": "d"})) as peer:
        log = Log()
        chain = MilterChain(peer.endpoint, FAST, log)
        assert run(session(chain)) == [OK] * 6
    assert log.warnings == [f"milter {peer.endpoint}: DISCARD action is not allowed for connect or helo"]


def test_quarantine_by_first_milter_hides_message_from_second():
    with MilterPeer(Script(eom=[("q", "virus")])) as p1, MilterPeer() as p2:
        chain = MilterChain([mp.MilterSpec(p1.endpoint), mp.MilterSpec(p2.endpoint)], FAST)
        out = run(session(chain))
        p2.wait_closed()
    assert out[-1] == Verdict("quarantine", reason="virus")
    assert "E" not in p2.sessions[0].commands()


def test_skip_rest_of_body():
    with MilterPeer(Script(replies={"B": "s"})) as peer:
        chain = MilterChain(peer.endpoint, FAST)
        out = run(session(chain, Source(body=[b"x" * 100000, b"y" * 100000])))
        peer.wait_closed()
    assert out[-1] == OK
    s = peer.sessions[0]
    assert len(s.of("B")) == 1 and len(s.of("B")[0].fields[0]) == 65535
    assert s.commands()[-4:] == ["D", "E", "A", "Q"]


def test_body_chunks():
    with MilterPeer() as peer:
        chain = MilterChain(peer.endpoint, FAST)
        run(session(chain, Source(body=[b"x" * 70000])))
        peer.wait_closed()
    assert [len(e.fields[0]) for e in peer.sessions[0].of("B")] == [65535, 4467]
    assert peer.sessions[0].body() == b"x" * 70000 + b"\r\n"


def test_every_edit_and_the_next_milter_sees_them():
    edits = [("h", "X-Added", "yes"), ("i", 0, "X-Top", "t"), ("m", 1, "Subject", "changed"),
             ("m", 1, "X-Multi", ""), ("+", "<new@x>"), ("2", "<new2@x>", "NOTIFY=NEVER"),
             ("-", "<b@example.com>"), ("e", "<s@x>", "SIZE=5"), ("b", b"new\r\n"),
             ("b", b"body")]
    with MilterPeer(Script(eom=edits)) as p1, MilterPeer(Script(protocol=mp.SMFIP_HDR_LEADSPC)) as p2:
        src = Source()
        chain = MilterChain([mp.MilterSpec(p1.endpoint), mp.MilterSpec(p2.endpoint)], FAST)
        out = run(session(chain, src))
        p2.wait_closed()
    assert out[-1] == OK
    assert src.applied == [(p1.endpoint, [
        AddHeader("X-Added", " yes"), InsertHeader(0, "X-Top", " t"),
        ChangeHeader(1, "Subject", " changed"), ChangeHeader(1, "X-Multi", None),
        AddRecipient("<new@x>"), AddRecipient("<new2@x>", "NOTIFY=NEVER"),
        DeleteRecipient("<b@example.com>"), ChangeSender("<s@x>", "SIZE=5"),
        ReplaceBody(b"new\r\nbody")])]
    s2 = p2.sessions[0]
    assert [e.fields for e in s2.of("L")] == [("Subject", " changed"), ("X-Added", " yes")]
    assert s2.body() == b"new\r\nbody\r\n"


def test_edit_failure_is_a_tempfail():
    with MilterPeer(Script(eom=[("h", "X", "y")])) as peer:
        src = Source()
        src.fail = OSError("disk full")
        chain = MilterChain(peer.endpoint, FAST)
        out = run(session(chain, src))
    assert out[-1] == Verdict("tempfail", "451 4.3.0 Queue file write error")


def test_progress_keeps_a_slow_milter_alive():
    slow = [("sleep", 0.6), "p", ("sleep", 0.6), "p", ("sleep", 0.6), "c"]
    settings = MilterSettings(command_timeout=1, content_timeout=1)
    with MilterPeer(Script(replies={"M": slow, "E": slow})) as peer:
        log = Log()
        chain = MilterChain(peer.endpoint, settings, log)
        assert run(session(chain)) == [OK] * 6
    assert log.warnings == []


@pytest.mark.parametrize("action, verdict", [
    ("accept", OK),
    ("tempfail", Verdict("tempfail", "451 4.7.1 Service unavailable - try again later")),
    ("reject", Verdict("reject", "550 5.5.0 Service unavailable")),
    ("quarantine", Verdict("quarantine", reason="default_action")),
    ("bogus", Verdict("tempfail", "451 4.3.5 Server configuration problem - try again later")),
])
def test_milter_not_listening(action, verdict):
    port = unused_port()
    log = Log()
    chain = MilterChain(f"{{ inet:127.0.0.1:{port}, default_action={action} }}", FAST, log)
    out = run(session(chain))
    assert out == [verdict] * 6
    name = f"inet:127.0.0.1:{port}"
    assert log.warnings[0] == f"connect to Milter service {name}: Connection refused"
    if action == "bogus":
        assert log.warnings[1] == f"milter {name}: unrecognized default action: bogus"


def test_accepting_default_action_skips_the_broken_milter():
    port = unused_port()
    with MilterPeer(Script(replies={"R": "r"})) as peer:
        chain = MilterChain(f"{{ inet:127.0.0.1:{port}, default_action=accept }} {peer.endpoint}",
                            FAST, Log())
        out = run(session(chain))
    assert out[3] == Verdict("reject", "550 5.7.1 Command rejected")


def test_milter_closes_mid_body():
    with MilterPeer(Script(replies={"B": ("close",)})) as peer:
        log = Log()
        chain = MilterChain(peer.endpoint, FAST, log)
        out = run(session(chain, Source(body=[b"x" * 200000])))
    assert out[-1] == Verdict("tempfail", "451 4.7.1 Service unavailable - try again later")
    assert log.warnings[0].startswith(f"milter {peer.endpoint}: can't read SMFIC_BODY reply packet header: ")


def test_milter_answers_garbage():
    with MilterPeer(Script(replies={"R": ("raw", b"GARBAGE!GARBAGE!")})) as peer:
        log = Log()
        chain = MilterChain(peer.endpoint, FAST, log)
        out = run(session(chain))
    assert out[3:] == [Verdict("tempfail", "451 4.7.1 Service unavailable - try again later")] * 3
    assert log.warnings == [f"milter {peer.endpoint}: unreasonable packet length: "
                            f"{int.from_bytes(b'GARB', 'big')} > 1073741823"]


def test_milter_sleeps_past_the_timeout():
    settings = MilterSettings(command_timeout=0.3)
    with MilterPeer(Script(replies={"M": ("sleep", 2)})) as peer:
        log = Log()
        chain = MilterChain(peer.endpoint, settings, log)
        t0 = time.monotonic()
        out = run(session(chain))
        assert time.monotonic() - t0 < 1.5
    assert out[2] == Verdict("tempfail", "451 4.7.1 Service unavailable - try again later")
    assert log.warnings == [f"milter {peer.endpoint}: can't read SMFIC_MAIL reply packet header: "
                            "Connection timed out"]


def test_negotiation_failures():
    bad_version = Script(version=7)
    with MilterPeer(bad_version) as peer:
        log = Log()
        out = run(session(MilterChain(peer.endpoint, FAST, log)))
    assert out[0].action == "tempfail"
    assert log.warnings == [f"milter {peer.endpoint}: protocol version 7 conflict with MTA protocol version 6"]
    with MilterPeer(Script(optneg_raw=b"\0\0\0\1c")) as peer:
        log = Log()
        run(session(MilterChain(peer.endpoint, FAST, log)))
    assert log.warnings == [f'milter {peer.endpoint}: unexpected reply "c" in initial handshake']


def test_configuration_problems():
    log = Log()
    chain = MilterChain("nocolon {inet:127.0.0.1:1, protocol=5}", FAST, log)
    conf = Verdict("tempfail", "451 4.3.5 Server configuration problem - try again later")
    assert run(session(chain)) == [conf] * 6
    assert log.warnings == ['Milter service needs transport:endpoint instead of "nocolon"']


def test_unix_socket_and_relative_path(tmp_path):
    path = tmp_path / "milter.sock"
    with MilterPeer(Script(), unix_path=str(path)) as peer:
        settings = MilterSettings(command_timeout=2, base_dir=str(tmp_path))
        assert run(session(MilterChain("unix:milter.sock", settings))) == [OK] * 6
        assert run(session(MilterChain(f"local:{path}", settings))) == [OK] * 6
        peer.wait_closed(2)
    assert len(peer.sessions) == 2


def test_rejected_recipients_go_only_to_milters_that_want_them():
    with MilterPeer(Script(protocol=mp.SMFIP_RCPT_REJ)) as p1, MilterPeer() as p2:
        chain = MilterChain(f"{p1.endpoint} {p2.endpoint}", FAST)

        async def go():
            await chain.connect("h", "192.0.2.1", 1, "4")
            await chain.mail(["<a@b>"])
            await chain.rcpt(["<rejected@x>"], {"{rcpt_mailer}": "error"}, rejected=True)
            await chain.quit()
        run(go())
        p1.wait_closed()
        p2.wait_closed()
    assert p1.sessions[0].of("R")[0].fields == ("<rejected@x>",)
    assert p2.sessions[0].of("R") == []


# --- a real libmilter milter -------------------------------------------------------

PYMILTER = textwrap.dedent('''
    import sys, Milter

    class Edits(Milter.Base):
        def __init__(self):
            self.id = Milter.uniqueID()

        @Milter.noreply
        def connect(self, hostname, family, hostaddr):
            return Milter.CONTINUE

        def header(self, name, value):
            return Milter.CONTINUE

        def eom(self):
            self.addheader("X-Pymilter", "added")
            self.chgheader("Subject", 1, "changed by pymilter")
            self.addrcpt("<added@example.com>")
            self.delrcpt("<b@example.com>")
            self.chgfrom("<new-sender@example.com>")
            self.replacebody(b"replaced body\\r\\n")
            self.quarantine("held by pymilter")
            return Milter.ACCEPT

    Milter.factory = Edits
    Milter.set_flags(Milter.ADDHDRS | Milter.CHGHDRS | Milter.ADDRCPT | Milter.DELRCPT
                     | Milter.CHGFROM | Milter.CHGBODY | Milter.QUARANTINE)
    Milter.runmilter("hatotest", "inet:%s@127.0.0.1" % sys.argv[1], timeout=30)
''')


def test_real_libmilter_milter(tmp_path):
    script = tmp_path / "edits_milter.py"
    script.write_text(PYMILTER)
    port = unused_port()
    proc = subprocess.Popen(["/usr/bin/python3", str(script), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(proc.stderr.read().decode()) from None
                time.sleep(0.05)
        log = Log()
        src = Source()
        chain = MilterChain(f"inet:127.0.0.1:{port}", FAST, log)
        out = run(session(chain, src))
        versions = (chain.milters[0].version, chain.milters[0].events)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert log.warnings == []
    assert versions[0] == 6 and versions[1] & mp.SMFIP_NR_CONN
    assert out[:5] == [OK] * 5
    assert out[5] == Verdict("quarantine", reason="held by pymilter")
    [(name, edits)] = src.applied
    assert edits == [AddHeader("X-Pymilter", " added"),
                     ChangeHeader(1, "Subject", " changed by pymilter"),
                     AddRecipient("<added@example.com>"), DeleteRecipient("<b@example.com>"),
                     ChangeSender("<new-sender@example.com>", ""),
                     ReplaceBody(b"replaced body\r\n")]


def test_pymilter_is_the_system_python():
    assert os.path.exists("/usr/bin/python3")
    assert sys.version_info >= (3, 10)
    assert struct.calcsize(">I") == 4

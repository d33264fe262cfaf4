"""Driver for the SMTP server core tests: feed scripts whole, byte by byte or
at given split points, answer paused events with a policy, and collect the
transcript and the (normalized) events."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from hato.proto import smtpd as s

HOST = "mx.example.com"
BANNER = s.Reply(220, "", f"{HOST} ESMTP hato")
KEYWORDS = ["PIPELINING", "SIZE 10240000", "VRFY", "ETRN", "STARTTLS", "AUTH PLAIN LOGIN",
            "ENHANCEDSTATUSCODES", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"]
QUEUED = s.Reply(250, "2.0.0", "Ok: queued as 4XyZ")

Policy = Callable[[s.ServerConnection, s.Event], None]


def default_policy(conn: s.ServerConnection, ev: s.Event) -> None:
    if isinstance(ev, s.Helo):
        conn.accept(ehlo_keywords=KEYWORDS if ev.extended else None)
    elif isinstance(ev, (s.MessageEnd, s.BdatChunk)) and (
            isinstance(ev, s.MessageEnd) or ev.last):
        conn.accept(QUEUED)
    elif isinstance(ev, s.StartTls):
        conn.accept()
    else:
        conn.accept()


PAUSING = (s.Helo, s.MailFrom, s.RcptTo, s.DataCommand, s.MessageEnd, s.BdatChunk, s.Vrfy,
           s.Etrn, s.StartTls, s.Auth, s.AuthResponse, s.Xclient, s.Xforward)


class Session:
    def __init__(self, limits: s.Limits | None = None, policy: Policy | None = None,
                 banner: s.Reply = BANNER):
        self.conn = s.ServerConnection(limits or s.Limits(), hostname=HOST)
        self.policy = policy or default_policy
        self.events: list[s.Event] = []
        self.out = bytearray()
        self.conn.greet(banner)
        self.out += self.conn.data_to_send()
        self.max_buffer = 0

    def pump(self) -> None:
        conn = self.conn
        if self.events and isinstance(self.events[-1], s.Closed):
            return
        while True:
            ev = conn.next_event()
            self.max_buffer = max(self.max_buffer, len(conn._in))
            if ev is s.NEED_DATA:
                break
            if ev is s.PAUSED:
                if conn.state is s.State.STARTTLS:
                    conn.starttls_done()
                    continue
                raise AssertionError("paused without an event to answer")
            self.events.append(ev)
            if isinstance(ev, s.Closed):
                break
            if (isinstance(ev, s.MessageEnd) and ev.reply is not None):
                continue
            if isinstance(ev, PAUSING):
                self.policy(conn, ev)
        self.out += conn.data_to_send()

    def feed(self, data: bytes, split: Iterable[int] | str | None = None) -> None:
        for piece in pieces(data, split):
            if not piece:
                continue  # b"" would mean EOF
            self.conn.receive_data(piece)
            self.pump()

    def eof(self) -> None:
        self.conn.receive_data(b"")
        self.pump()

    @property
    def replies(self) -> list[str]:
        """Reply lines after the banner."""
        text = self.out.decode("utf-8", "replace")
        return text.split("\r\n")[1:-1]

    def codes(self) -> list[str]:
        """'CODE DSN' of every final reply line after the banner."""
        res = []
        for line in self.replies:
            if line[3:4] == "-":
                continue
            parts = line.split(" ")
            dsn = parts[1] if len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1] \
                else ""
            res.append(f"{line[:3]} {dsn}".strip())
        return res


def pieces(data: bytes, split: Iterable[int] | str | None) -> list[bytes]:
    if split is None or split == "whole":
        return [data]
    if split == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted({c for c in split if 0 < c < len(data)})  # type: ignore[union-attr]
    out, prev = [], 0
    for c in cuts:
        out.append(data[prev:c])
        prev = c
    out.append(data[prev:])
    return out


def normalized(events: list[s.Event]) -> list[s.Event]:
    """Merge MessageData pieces and forget split-dependent flags."""
    res: list[s.Event] = []
    for ev in events:
        ev = replace(ev, pipelined=False)
        if isinstance(ev, s.BdatChunk) or isinstance(ev, s.MessageEnd):
            pass
        if isinstance(ev, s.MessageData) and res and isinstance(res[-1], s.MessageData):
            res[-1] = replace(res[-1], data=res[-1].data + ev.data)
            continue
        res.append(ev)
    return res


def run(writes: list[bytes] | bytes, limits: s.Limits | None = None,
        policy: Policy | None = None, split: Iterable[int] | str | None = None,
        eof: bool = False) -> Session:
    if isinstance(writes, bytes):
        writes = [writes]
    sess = Session(limits, policy)
    for w in writes:
        sess.feed(w, split)
    if eof:
        sess.eof()
    return sess


def run_all_ways(writes: list[bytes] | bytes, limits: s.Limits | None = None,
                 policy: Policy | None = None, eof: bool = False) -> Session:
    """Run whole and byte by byte; assert identical transcripts and events."""
    whole = run(writes, limits, policy, "whole", eof)
    by_byte = run(writes, limits, policy, "bytes", eof)
    assert bytes(by_byte.out) == bytes(whole.out)
    assert normalized(by_byte.events) == normalized(whole.events)
    return whole


def content(sess: Session) -> bytes:
    return b"".join(ev.data for ev in sess.events if isinstance(ev, s.MessageData))


def test_driver_splits():
    assert pieces(b"abcd", [1, 3]) == [b"a", b"bc", b"d"]
    assert pieces(b"ab", "bytes") == [b"a", b"b"]

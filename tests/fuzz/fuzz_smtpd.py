"""Fuzz the SMTP server core (hato.proto.smtpd.ServerConnection) with
arbitrary client bytes: commands, DATA content, BDAT chunks, AUTH lines.

Option bytes choose the limits (bare-newline policy, small line and size
limits, unknown commands as events...), how the input is split into reads
and how the "service" answers each paused event (accept, reject, reject and
close, an AUTH challenge). The core documents no exception for bad client
input: every byte sequence must end as replies and events. Checks:

* every reply line the core sends is ``NNN[ -]text`` CRLF with no CR or LF
  inside the text (no reply injection);
* the driver loop ends (no event storm, no stuck core);
* a Closed event ends the session for good.
"""

from __future__ import annotations

import re

from tests.fuzz.harness import Input, chunks, instrumented, run, steps

with instrumented():
    from hato.proto import smtpd as S

_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][^\r\n]*\r\n")
_BARE = ("no", "normalize", "yes", "reject")


def _limits(inp: Input) -> S.Limits:
    f = inp.bits(8)
    g = inp.bits(8)
    return S.Limits(
        line_length_limit=64 if f[0] else 2048,
        message_size_limit=(0, 200, 4096, 10240000)[f[1] + 2 * f[2]],
        recipient_limit=3 if f[3] else 1000,
        hard_error_limit=5 if f[4] else 20,
        junk_command_limit=4 if f[4] else 100,
        forbid_bare_newline=_BARE[f[5] + 2 * f[6]],
        forbid_unauth_pipelining=f[7],
        disable_vrfy=g[0],
        helo_required=g[1],
        smtputf8_enable=not g[2],
        strict_rfc821_envelopes=g[3],
        sasl_response_limit=40 if g[4] else 12288,
        enforce_tls=g[5],
        ask_unknown=g[6],
        extensions=frozenset(S.DEFAULT_EXTENSIONS | {"STARTTLS", "AUTH", "XCLIENT",
                                                     "XFORWARD"}) if g[7] else None,
    )


def _check_output(out: bytes) -> None:
    pos = 0
    while pos < len(out):
        m = _REPLY_LINE.match(out, pos)
        if m is None:
            raise AssertionError(f"malformed reply bytes: {out[pos:pos + 200]!r}")
        pos = m.end()


class Service:
    """Answers the core's paused events from a cycle of decision bytes."""

    def __init__(self, conn: S.ServerConnection, decisions: bytes):
        self.conn = conn
        self.decisions = decisions or b"\0"
        self.i = 0
        self.last: S.Event | None = None
        self.closed = False

    def _decide(self) -> int:
        d = self.decisions[self.i % len(self.decisions)]
        self.i += 1
        return d

    def drive(self) -> None:
        conn = self.conn
        for _ in steps():
            ev = conn.next_event()
            _check_output(conn.data_to_send())
            if ev is S.NEED_DATA:
                return
            if isinstance(ev, S.Closed):
                self.closed = True
                if not conn.closed:
                    raise AssertionError("Closed event on an open session")
                return
            if ev is S.PAUSED:
                self._answer()
                _check_output(conn.data_to_send())
                continue
            if self.closed:
                raise AssertionError(f"event after Closed: {ev!r}")
            if isinstance(ev, S.MessageData) and not isinstance(ev.data, bytes):
                raise AssertionError("MessageData without bytes")
            self.last = ev

    def _answer(self) -> None:
        conn = self.conn
        if conn.state is S.State.STARTTLS:
            conn.starttls_done()
            return
        d = self._decide()
        ev = self.last
        if isinstance(ev, (S.Auth, S.AuthResponse)):
            if d % 3 == 0:
                conn.reply(S.Reply(334, "", "VXNlcm5hbWU6"))
            else:
                conn.auth_done(d % 3 == 1)
            return
        if d % 8 == 7:
            conn.reject(S.Reply(421, "4.7.0", "mx.example Service not available"), close=True)
        elif d % 8 >= 5:
            conn.reject(S.Reply(550, "5.7.1", "Rejected"))
        elif d % 8 == 4 and isinstance(ev, S.Helo) and ev.extended:
            conn.accept(ehlo_keywords=["PIPELINING", "SIZE 1000", "CHUNKING", "AUTH PLAIN",
                                       "STARTTLS", "8BITMIME"])
        else:
            conn.accept()


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    limits = _limits(inp)
    split = inp.byte()
    ndec = inp.byte() % 8
    decisions = bytes(inp.byte() for _ in range(ndec))
    payload = inp.rest()
    conn = S.ServerConnection(limits, hostname="mx.example")
    if split & 0x80:
        conn.receive_data(payload[:5])  # talks before the banner
        payload = payload[5:]
    conn.greet(S.Reply(220, "", "mx.example ESMTP hato"))
    svc = Service(conn, decisions)
    svc.drive()
    for piece in chunks(payload, split & 0x7F):
        conn.receive_data(piece)
        svc.drive()
    conn.receive_data(b"")
    svc.drive()
    conn.disconnect_stats()


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

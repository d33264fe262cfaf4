"""Fuzz the SMTP/LMTP client core (hato.proto.smtp_client.ClientConnection)
with arbitrary server replies.

Option bytes choose the client parameters (LMTP, STARTTLS policy, AUTH,
PIPELINING, CHUNKING, line limits), the message (recipients, 8-bit body,
DSN options), how the replies are split into reads and what the driver
does at each event. A misbehaving server is the client's daily bread: the
core documents no exception for it (a bad reply is a deferral), so any
exception escaping is a crash. Checks: the driver loop ends, every
recipient of a finished message has exactly one result, the session ends
with a Closed event once the server has closed.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, chunks, instrumented, run, steps

with instrumented():
    from hato.proto import smtp_client as C
    from hato.proto.sasl_client import LoginClient, PlainClient

_BODY = (b"From: a@example.com\nSubject: test\n\n.leading dot\r\n..two\n"
         b"\xc3\xa9t\xc3\xa9 8bit\r\n.\r\nlast line without end")


def _params(inp: Input) -> C.ClientParams:
    f = inp.bits(8)
    g = inp.bits(8)
    return C.ClientParams(
        helo_name="client.example",
        server_name="mx.example[192.0.2.1]",
        lmtp=f[0],
        try_ehlo=not f[1],
        skip_5xx_greeting=f[2],
        starttls=("none", "may", "encrypt", "may")[f[3] + 2 * f[4]],
        auth=f[5],
        auth_soft_bounce=f[6],
        pipelining=not f[7],
        chunking=not g[0],
        line_length_limit=(998, 20, 0, 1)[g[1] + 2 * g[2]],
        reply_line_limit=40 if g[3] else 2048,
        discard_ehlo_keywords=frozenset({"PIPELINING"}) if g[4] else frozenset(),
        myhostname="client.example" if g[5] else None,
    )


def _message(inp: Input) -> C.Message:
    f = inp.bits(8)
    n = 1 + inp.byte() % 5
    rcpts = tuple(C.Recipient(f"r{i}@example.org",
                              frozenset({"SUCCESS", "FAILURE"}) if f[0] else frozenset(),
                              "rfc822;r@example.org" if f[1] else None)
                  if i % 2 else f"r{i}@example.org" for i in range(n))
    return C.Message(sender="" if f[2] else "s@example.com", recipients=rcpts,
                     size=len(_BODY), body="8BITMIME" if f[3] else ("7BIT" if f[4] else None),
                     smtputf8=f[5], ret="HDRS" if f[6] else None,
                     envid="id+1" if f[6] else None, verify_only=f[7])


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    params = _params(inp)
    msg = _message(inp)
    split = inp.byte()
    acts = inp.byte()
    replies = inp.rest()
    conn = C.ClientConnection(params, msg)
    pieces = list(chunks(replies, split % 64))
    sent = 1
    done: list[C.MessageDone] = []
    for _ in steps():
        ev = conn.next_event()
        conn.data_to_send()
        if ev is C.NEED_DATA:
            if conn.closed:
                break
            if pieces:
                conn.receive_data(pieces.pop(0))
            else:
                conn.receive_data(b"")  # the server hangs up
            continue
        if isinstance(ev, C.Closed):
            break
        if isinstance(ev, C.NeedTls):
            if acts & 1:
                conn.tls_done()
            else:
                conn.abort("TLS handshake failed")
        elif isinstance(ev, C.NeedAuth):
            if acts & 2:
                conn.authenticate(None)
            elif acts & 4:
                conn.authenticate(LoginClient("user", "pass"))
            else:
                conn.authenticate(PlainClient("user", "pass"))
        elif isinstance(ev, C.NeedBody):
            for piece in chunks(_BODY, 1 + (acts >> 3)):
                conn.send_body(piece)
            conn.end_body()
        elif isinstance(ev, C.MessageDone):
            done.append(ev)
        elif ev is C.READY:
            if sent < 2 and acts & 0x80:
                sent += 1
                conn.send_message(msg)
            elif acts & 0x40 and sent < 3:
                sent += 3
                conn.check()
            else:
                conn.quit()
        else:
            raise AssertionError(f"unexpected event {ev!r}")
    for ev in done:
        indexes = sorted(r.index for r in ev.results)
        if indexes != list(range(len(msg.recipients))):
            raise AssertionError(f"results for recipients {indexes} of {len(msg.recipients)}")


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

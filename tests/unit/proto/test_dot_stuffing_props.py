"""Property tests: what the SMTP client core dot-stuffs, the server core
un-stuffs to the same content (hypothesis).

The client side is BodyEncoder (hato.proto.smtp_client_replies), used by
ClientConnection for DATA; the server side is DotReader
(hato.proto.smtpd_data), used by ServerConnection. Both are also run
through the whole cores: a message sent by ClientConnection arrives at
ServerConnection byte for byte.
"""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from hato.proto import smtp_client as C, smtpd as S
from hato.proto.smtp_client_replies import BodyEncoder
from hato.proto.smtpd_data import DotReader

FAST = settings(max_examples=150, deadline=None)

# Lines without CR or LF, rich in dots (the interesting byte here).
line = st.lists(st.sampled_from([b".", b"..", b"a", b" ", b"\xc3\xa9", b"\t", b"x.y", b"\0"]),
                max_size=8).map(b"".join)
message = st.lists(line, max_size=12).map(lambda lines: b"".join(x + b"\r\n" for x in lines))


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)] or [b""]


def _unstuff(wire: bytes, mode: str, size: int) -> tuple[bytes, int]:
    reader = DotReader(mode, 0)
    buf = bytearray()
    out = []
    for piece in _pieces(wire, size):
        buf += piece
        while buf and not reader.done:
            content, used = reader.read(buf)
            out.append(content)
            del buf[:used]
            if not used:
                break
    assert reader.done
    return b"".join(out), len(buf)


@FAST
@given(message, st.integers(min_value=1, max_value=40), st.integers(min_value=1, max_value=40),
       st.sampled_from(["no", "normalize", "yes", "reject"]))
def test_stuff_unstuff(content, enc_split, dec_split, mode):
    enc = BodyEncoder(stuff=True)
    wire = b"".join(enc.encode(p) for p in _pieces(content, enc_split)) + enc.finish()
    assert not any(ln.startswith(b".") and not ln.startswith(b"..")
                   for ln in wire.split(b"\r\n")[:-1] if ln), wire
    got, left = _unstuff(wire + b".\r\nQUIT\r\n", mode, dec_split)
    assert got == content
    assert left == len(b"QUIT\r\n")


@FAST
@given(st.lists(line, max_size=10).map(lambda ls: b"\n".join(ls)),
       st.integers(min_value=1, max_value=30))
def test_bare_lf_content_arrives_with_crlf(content, split):
    """LF line ends (what sendmail and the queue hold) go out as CRLF and an
    unfinished last line is ended: the server sees every line with CRLF."""
    enc = BodyEncoder(stuff=True)
    wire = b"".join(enc.encode(p) for p in _pieces(content, split)) + enc.finish()
    got, _ = _unstuff(wire + b".\r\n", "yes", 7)
    expected = b"".join(x + b"\r\n" for x in content.split(b"\n")) if content else b""
    if content.endswith(b"\n"):
        expected = expected[:-2]
    assert got == expected


@settings(max_examples=60, deadline=None)
@given(message, st.integers(min_value=1, max_value=64))
def test_client_core_to_server_core(content, split):
    """ClientConnection's DATA, read by ServerConnection: the same content."""
    client = C.ClientConnection(C.ClientParams(helo_name="c.example", chunking=False),
                                C.Message("a@example.com", ("b@example.org",)))
    server = S.ServerConnection(hostname="mx.example")
    server.greet(S.Reply(220, "", "mx.example ESMTP"))
    received = bytearray()
    for _ in range(1000):
        ev = client.next_event()
        if isinstance(ev, C.NeedBody):
            for p in _pieces(content, split):
                client.send_body(p)
            client.end_body()
            continue
        if isinstance(ev, C.MessageDone):
            assert [r.code for r in ev.results] == [250]
            client.quit()
            continue
        if isinstance(ev, C.Closed) or client.closed:
            break
        if ev is C.READY:
            client.quit()
            continue
        for p in _pieces(client.data_to_send(), split):
            if p:  # b"" would mean the client closed
                server.receive_data(p)
        while True:
            sev = server.next_event()
            if sev is S.NEED_DATA or isinstance(sev, S.Closed):
                break
            if sev is S.PAUSED:
                server.accept()
            elif isinstance(sev, S.MessageData):
                received += sev.data
        reply = server.data_to_send()
        if reply:  # b"" would mean the server closed
            client.receive_data(reply)
    assert bytes(received) == content


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200).map(lambda b: b.replace(b"\x00", b"")), max_size=8)
       .map(lambda parts: [p + sep for p, sep in zip(parts, [b"\n", b"\r\n", b".", b"\r", b"..\n",
                                                              b"", b"\n.", b"\r\n.."] * 2)]),
       st.booleans(), st.sampled_from([0, 1, 2, 5, 40, 990]))
def test_body_encoder_runs_of_lines_match_the_line_by_line_path(chunks, stuff, limit):
    """BodyEncoder's short cut for runs of lines gives the bytes the
    per-line path gives, chunk by chunk."""
    from hato.proto.smtp_client_replies import BodyEncoder

    def encode(fast: bool) -> list[bytes]:
        BodyEncoder.FAST = fast
        try:
            enc = BodyEncoder(stuff, limit)
            out = [enc.encode(c) for c in chunks]
            out.append(enc.finish())
            return out + [str(enc.size).encode()]
        finally:
            BodyEncoder.FAST = True

    assert encode(True) == encode(False)

"""Fuzz the policy delegation codec (hato.proto.policy): the reply reader
smtpd uses on a policy server's answer (check_policy_service).

Documented error: PolicyReplyError. Anything else escaping is a crash.
Checks: a complete reply has an action; a request encoded from the reply's
attributes is one ``name=value`` line per attribute and an empty line.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, chunks, instrumented, run

with instrumented():
    from hato.proto.policy import PolicyReplyError, ReplyReader, encode_request, xtext


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    reader = ReplyReader(max_line=64 if opts & 1 else 4096, max_lines=4 if opts & 2 else 1000)
    reply = None
    try:
        for piece in chunks(inp.rest(), opts >> 2):
            reply = reader.receive_data(piece)
        if opts & 2:
            reader.eof()
    except PolicyReplyError as e:
        e.text("inet:127.0.0.1:10023")
        return
    if reply is None:
        return
    if reply.action is None:
        raise AssertionError("a reply without an action")
    reply.valid_utf8
    request = encode_request(reply.attributes)
    lines = request.split(b"\n")
    if lines[-2:] != [b"", b""] or len(lines) != len(reply.attributes) + 2:
        raise AssertionError(f"request framing broken: {request[:200]!r}")
    for _, value in reply.attributes:
        xtext(value)


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

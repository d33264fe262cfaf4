"""Fuzz the Dovecot auth client codec (hato.proto.dovecot_auth, which
hato.auth.dovecot drives over the socket) with arbitrary server bytes.

The bytes are split into lines (LineReader), fed to the handshake until
DONE, then each later line is parsed as a reply (OK/CONT/FAIL). Documented
error: DovecotProtocolError. Anything else escaping is a crash.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, chunks, instrumented, run

with instrumented():
    from hato.proto.dovecot_auth import (
        DovecotProtocolError,
        Handshake,
        LineReader,
        filter_mechanisms,
        parse_reply,
        tabescape,
        tabunescape,
    )

_OPTIONS = (["noanonymous"], ["noplaintext", "noactive"], ["nodictionary", "mutual_auth"], [])


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    reader = LineReader(max_line=(64 if opts & 1 else 8192))
    hs = Handshake()
    try:
        for piece in chunks(inp.rest(), opts >> 2):
            for line in reader.feed(piece):
                if not hs.done:
                    hs.feed_line(line)
                    if hs.done:
                        filter_mechanisms(hs.offered(), _OPTIONS[opts >> 1 & 3])
                    continue
                reply = parse_reply(line)
                if reply is not None:
                    reply.user, reply.reason, reply.temporary
                    for value in reply.params.values():
                        if tabunescape(tabescape(value)) != value:
                            raise AssertionError(f"tab escaping does not round-trip {value!r}")
    except DovecotProtocolError:
        return


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

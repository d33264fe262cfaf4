"""Fuzz the saslauthd codec (hato.proto.saslauthd): the request reader the
hato saslauthd server uses on what a client sends, and the reply parser
the SASL server side uses on what saslauthd answers.

Documented outcomes: RequestReader.feed returns None (more bytes needed),
a SaslauthdRequest or a RequestError; parse_reply raises
SaslauthdProtocolError for a reply that does not parse. Anything else
escaping is a crash. Checks: a request read back re-encodes to the bytes it
came from.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, chunks, instrumented, run

with instrumented():
    from hato.proto.saslauthd import (
        RequestError,
        RequestReader,
        SaslauthdProtocolError,
        SaslauthdRequest,
        encode_request,
        parse_reply,
        reply_length,
    )


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    payload = inp.rest()
    reader = RequestReader(max_field=32 if opts & 1 else 256)
    result = None
    used = 0
    for piece in chunks(payload, opts >> 1):
        result = reader.feed(piece)
        used += len(piece)
        if result is not None:
            break
    if result is None:
        result = reader.eof()
    if not isinstance(result, (SaslauthdRequest, RequestError)):
        raise AssertionError(f"reader gave {result!r}")
    if isinstance(result, SaslauthdRequest):
        again = encode_request(result.login, result.password, result.service, result.realm)
        if not payload.startswith(again):
            raise AssertionError("request does not re-encode to its bytes")
    reply_length(payload)
    try:
        parse_reply(payload)
    except SaslauthdProtocolError:
        pass


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

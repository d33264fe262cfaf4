"""Fuzz the PROXY protocol reader (hato.proto.proxy_protocol.ProxyReader),
what postscreen and smtpd read first with ``*_upstream_proxy_protocol =
haproxy``.

Documented error: ProxyError (a ValueError) for a malformed header, raised
as soon as the bytes decide it. Anything else escaping is a crash. Checks:
a header that was read encodes again (v1 for TCP, v2 for all) and the
encoding reads back as the same header; bytes after the header are kept.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, chunks, instrumented, not_unicode, run

with instrumented():
    from hato.proto.proxy_protocol import ProxyError, ProxyReader, encode_v1, encode_v2


def _read(data: bytes, size: int, max_header: int):
    reader = ProxyReader(max_header)
    for piece in chunks(data, size):
        reader.receive_data(piece)
    return reader


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    payload = inp.rest()
    max_header = 536 if opts & 1 else 107
    try:
        reader = _read(payload, opts >> 1, max_header)
    except ProxyError as e:
        not_unicode(e)
        return
    header = reader.header()
    if header is None:
        return
    encoded = []
    # The encoders refuse (ValueError, documented) what has no wire form: a
    # unix path whose text is too long, a v4-mapped tcp6 address that reads
    # as IPv4 text.
    if header.family in ("tcp4", "tcp6") and header.command == "PROXY":
        try:
            encoded.append(encode_v1(header))
        except ValueError as e:
            not_unicode(e)
    # A Linux abstract socket name ("@...") may hold NULs its text form
    # cannot give back: no exact round trip for those.
    abstract = header.family == "unix" and any(
        (a or "").startswith("@") for a in (header.client_addr, header.server_addr))
    if header.family != "unknown" and not abstract:
        try:
            encoded.append(encode_v2(header))
        except ValueError as e:
            not_unicode(e)
    for blob in encoded:
        again = _read(blob + b"rest", 0, 536)
        back = again.header()
        if back is None or (back.command, back.family, back.client_addr, back.client_port,
                            back.server_addr, back.server_port) != (
                header.command, header.family, header.client_addr, header.client_port,
                header.server_addr, header.server_port):
            raise AssertionError(f"{header!r} encodes as {blob!r}, which reads as {back!r}")
        if again.remaining() != b"rest":
            raise AssertionError("bytes after the header were lost")


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

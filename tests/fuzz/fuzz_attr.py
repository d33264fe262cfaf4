"""Fuzz hato's internal attribute protocol reader (hato.proto.attr), what
every service reads from the others (qmgr, cleanup, anvil, bounce...).

Documented error: AttrError (a ValueError). Anything else escaping is a
crash. Checks: every message read re-encodes and reads back the same.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, chunks, instrumented, not_unicode, run

with instrumented():
    from hato.proto.attr import AttrError, AttrReader, encode


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    reader = AttrReader(max_message=256 if opts & 1 else 1 << 20)
    messages = []
    try:
        for piece in chunks(inp.rest(), opts >> 1):
            reader.receive_data(piece)
            messages.extend(reader.messages())
    except AttrError as e:
        not_unicode(e)
        return
    for attrs in messages:
        try:
            blob = encode(attrs)
        except AttrError as e:
            not_unicode(e)
            continue
        again = AttrReader()
        again.receive_data(blob)
        back = again.next_message()
        if back is None or list(back.items) != list(attrs.items):
            raise AssertionError(f"{attrs!r} encodes as {blob!r}, reads back as {back!r}")


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

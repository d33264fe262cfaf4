"""Fuzz the milter protocol codec (hato.proto.milter), the MTA side, with
arbitrary milter bytes.

The bytes are framed by PacketDecoder; the first packet answers the option
negotiation (negotiate), the rest are the replies to one event, fed to
EventReplies until it decides (the event is chosen by an option byte, so
end-of-message modification requests are reached too). Documented errors:
MilterProtocolError (a communication error; EventReplies turns it into a
``comm_error`` outcome). Anything else escaping is a crash. Checks: every
Outcome has one of the documented kinds.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, chunks, instrumented, run

with instrumented():
    from hato.proto import milter as M

_EVENTS = "CHMRTULNBE"
_KINDS = frozenset({"continue", "accept", "discard", "reject", "tempfail", "shutdown",
                    "reply", "skip", "comm_error", "conf_error", "discard_refused"})


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    event = _EVENTS[inp.byte() % len(_EVENTS)]
    decoder = M.PacketDecoder(max_data=256 if opts & 1 else M.MAX_DATA)
    replies: M.EventReplies | None = None
    negotiated = not opts & 2
    try:
        for piece in chunks(inp.rest(), opts >> 2):
            decoder.feed(piece)
            while (packet := decoder.next_packet()) is not None:
                if not negotiated:
                    neg = M.negotiate(6, M.SMFIP_NOSEND_MASK, packet.cmd, packet.data)
                    negotiated = True
                    replies = M.EventReplies(event, leadspc=neg.leadspc, event_len=3,
                                             soft_bounce=bool(opts & 4))
                    continue
                if replies is None:
                    replies = M.EventReplies(event, event_len=3, soft_bounce=bool(opts & 4))
                outcome = replies.receive(packet.cmd, packet.data)
                if outcome is None:
                    continue
                if outcome.kind not in _KINDS:
                    raise AssertionError(f"unknown outcome kind {outcome.kind!r}")
                if outcome.text is not None:
                    M.Verdict.from_raw(outcome.text)
                replies = None
    except M.MilterProtocolError:
        return


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

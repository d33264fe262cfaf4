"""Property tests: queue records and queue files written by hato read back
exactly (hypothesis)."""

from __future__ import annotations

import tempfile

from hypothesis import given, settings, strategies as st

from hato.queue import records as R
from hato.queue.envelope import Envelope, Recipient
from hato.queue.store import QueueStore

FAST = settings(max_examples=80, deadline=None)
RTYPES = st.sampled_from([R.TIME, R.FULL, R.FROM, R.RCPT, R.ORCP, R.ATTR, R.WARN, R.MESG,
                          R.NORM, R.CONT, R.XTRA, R.END, R.DSN_ORCPT, R.DSN_ENVID])


@FAST
@given(st.lists(st.tuples(RTYPES, st.binary(max_size=600)), max_size=12),
       st.integers(min_value=1, max_value=97))
def test_records_round_trip(records, split):
    blob = b"".join(R.encode_record(t, d) for t, d in records)
    assert [(r.type, r.data) for r in R.decode_records(blob)] == records
    # the push decoder gives the same records however the bytes arrive
    dec = R.RecordDecoder()
    got = []
    for i in range(0, len(blob), split):
        dec.feed(blob[i:i + split])
        while (rec := dec.next()) is not None:
            got.append((rec.type, rec.data))
    dec.close()
    assert got == records


@FAST
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=200))
def test_content_round_trip(chunks, max_size):
    """encode_content in any split, decode_content: the same bytes."""
    blob = b"".join(R.encode_content(c, max_size) for c in chunks)
    out: list[bytes] = []
    assert R.decode_content(blob, 0, out, final=True) == len(blob)
    assert b"".join(out) == b"".join(chunks)


addresses = st.from_regex(r"[a-z0-9.+_-]{1,12}@[a-z0-9-]{1,10}\.example", fullmatch=True)


@settings(max_examples=30, deadline=None)
@given(sender=st.one_of(st.just(""), addresses),
       rcpts=st.lists(st.tuples(addresses, st.sets(st.sampled_from(
           ["SUCCESS", "FAILURE", "DELAY"]))), min_size=1, max_size=5),
       full_name=st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
       content=st.binary(max_size=3000), pieces=st.integers(min_value=1, max_value=5))
def test_queue_file_write_read(sender, rcpts, full_name, content, pieces):
    """QueueWriter → QueueFile: the envelope and the content come back."""
    with tempfile.TemporaryDirectory() as qdir:
        store = QueueStore(qdir)
        store.ensure_layout()
        env = Envelope(sender=sender,
                       recipients=[Recipient(a, a, frozenset(n)) for a, n in rcpts],
                       full_name=full_name, attributes={"log_client_name": "c.example"})
        writer = store.create()
        writer.write_envelope(env)
        step = max(1, len(content) // pieces)
        for i in range(0, len(content), step):
            writer.write_content(content[i:i + step])
        qid = writer.commit()
        with store.open(store.find(qid) or "incoming", qid, writable=False) as qf:
            back = qf.envelope
            assert qf.read_content() == content
        assert back.sender == sender
        assert back.full_name == full_name
        assert [(r.address, r.notify) for r in back.recipients] == \
            [(a, frozenset(n)) for a, n in rcpts]
        assert back.attributes["log_client_name"] == "c.example"
        assert back.size == len(content)

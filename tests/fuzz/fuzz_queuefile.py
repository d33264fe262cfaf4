"""Fuzz the queue file reader (hato.queue.queuefile.QueueFile over
hato.queue.records), what qmgr, the delivery agents, postcat and
postsuper read: a queue file damaged by a crash, a bad disk or a hand.

The input is the file. It is put in the active queue of a scratch queue
directory and opened as qmgr opens it; the envelope and the content are
read, and the records are decoded again as a whole (decode_records).
Documented errors: CorruptQueueFile (a QueueError) from the queue file
reader, RecordError (a ValueError) from the record decoder. Anything else
escaping is a crash. Checks: the content read has the size the file claims.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile

from tests.fuzz.harness import Input, instrumented, not_unicode, run

with instrumented():
    from hato.queue import records as R
    from hato.queue.errors import CorruptQueueFile
    from hato.queue.store import ACTIVE, QueueStore

_QDIR = tempfile.mkdtemp(prefix="hato-fuzz-queue-")  # tools/fuzz sets TMPDIR
atexit.register(shutil.rmtree, _QDIR, True)
_STORE = QueueStore(_QDIR)
_STORE.ensure_layout()
_QUEUE_ID = "4F2A3B1C0D"


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    body = inp.rest()
    with open(_STORE.path(ACTIVE, _QUEUE_ID), "wb") as fh:
        fh.write(body)
    try:
        with _STORE.open(ACTIVE, _QUEUE_ID, writable=False) as qf:
            env = qf.envelope
            env.pending
            content = b"".join(qf.content(chunk_size=64 if opts & 1 else 65536))
            if len(content) != env.size:
                raise AssertionError(f"content of {len(content)} bytes, size says {env.size}")
    except CorruptQueueFile:
        pass
    try:
        R.decode_records(body)
    except R.RecordError as e:
        not_unicode(e)


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

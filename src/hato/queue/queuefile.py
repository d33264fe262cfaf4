"""Queue files: one being written (:class:`QueueWriter`) and one committed
and opened for reading (:class:`QueueFile`). The store hands them out
(``QueueStore.create()``, ``QueueStore.open()``); docs/queue.md has the
format and the durability argument.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Self

from . import envelope as E
from . import records as R
from .directories import HOLD, MAILDROP
from .envelope import Envelope, EnvelopeBuilder, Recipient
from .errors import CorruptQueueFile, QueueError, best_effort, wrap_os_error

if TYPE_CHECKING:
    from .store import QueueStore

#: Queue file modes: 0600 while written, 0700 once committed (Postfix's
#: MAIL_QUEUE_STAT_READY).
MODE_WRITING = 0o600
MODE_READY = 0o700
#: The group-execute bit on a committed queue file: ``postsuper -e``/``-f``
#: asked that the message be returned to its sender at the next delivery
#: attempt (Postfix's MAIL_QUEUE_STAT_EXPIRE).
MODE_EXPIRE = 0o010


def is_ready_mode(mode: int) -> bool:
    """A committed queue file (Postfix's READY_MESSAGE()): the owner bits
    are rwx; a file being written has 0600."""
    return mode & 0o700 == MODE_READY

_BLOCK = 64 * 1024
_C_DATA_AT = 2  # offset of the C record's data: type byte + one length byte


class QueueWriter:
    """A queue file being written; see :meth:`QueueStore.create`.

    Call order: :meth:`write_envelope` once, :meth:`write_content` any
    number of times, optionally :meth:`add_recipient` (recipients found
    after the content, as with ``sendmail -t``), then :meth:`commit` or
    :meth:`abort`. Any failure removes the file and raises
    :class:`QueueError`; the writer is then dead. As a context manager it
    aborts unless committed.
    """

    def __init__(self, store: QueueStore, queue: str, queue_id: str, temp: str, fd: int,
                 arrival: tuple[int, int]):
        self.store = store
        self.queue = queue
        self.queue_id = queue_id
        self.arrival_time = arrival[0] + arrival[1] / 1_000_000
        self._arrival = arrival
        self._temp = temp
        self._fd = fd
        self._buf = bytearray()
        self._pos = 0  # file offset of the end of self._buf
        self._env: Envelope | None = None
        self._data_offset = 0  # 0 until the M record is written
        self._content_length = 0
        self._extracted: list[Recipient] = []
        self._attributes: dict[str, str] = {}
        self._state = "new"  # new, envelope, content, published, committed, dead
        self._error: BaseException | None = None

    # context manager
    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        if self._state not in ("committed", "dead"):
            self.abort()

    @property
    def committed(self) -> bool:
        return self._state == "committed"

    @property
    def content_length(self) -> int:
        return self._content_length

    def _check(self, *states: str) -> None:
        if self._state == "dead":
            raise QueueError(errno.EIO, f"queue file {self.queue_id} was abandoned "
                             f"after an error: {self._error}", self._temp)
        if self._state not in states:
            raise RuntimeError(f"queue file {self.queue_id}: not allowed in state {self._state}")

    def _put(self, rtype: str, data: bytes = b"") -> int:
        """Buffer one record; its file offset."""
        offset = self._pos
        rec = R.encode_record(rtype, data)
        self._buf += rec
        self._pos += len(rec)
        return offset

    def _flush(self) -> None:
        if self._buf:
            data = bytes(self._buf)
            self._buf.clear()
            self.store.ops.write(self._fd, data)

    def _fail(self, exc: OSError, what: str) -> QueueError:
        self._discard(exc)
        return wrap_os_error(exc, f"{what} {self.queue_id}")

    def _discard(self, exc: BaseException | None) -> None:
        self._state = "dead"
        self._error = exc
        ops = self.store.ops
        if self._fd >= 0:
            best_effort(ops.close, self._fd)
            self._fd = -1
        best_effort(ops.unlink, self._temp)

    def write_envelope(self, env: Envelope) -> None:
        """Write the envelope segment. Sets ``env.queue_id`` and, when it is
        0, ``env.arrival_time``; records each recipient's offset."""
        self._check("new")
        env.queue_id = self.queue_id
        if env.arrival_time:
            arrival = E.format_time(env.arrival_time)
        else:
            arrival = self._arrival
            env.arrival_time = self.arrival_time
        records = E.envelope_records(env, arrival)  # validates before writing
        self._env = env
        self._attributes = dict(env.attributes)
        self._put(R.SIZE, E.size_record_data(0, 0, 0))
        for rtype, data in records:
            self._put(rtype, data)
        self._put(R.WARN, E.warn_record_data(env.warn_time))
        for rcpt in env.recipients:
            self._put_recipient(rcpt)
        self._state = "envelope"
        try:
            if len(self._buf) >= _BLOCK:
                self._flush()
        except OSError as e:
            raise self._fail(e, "write envelope of") from e

    def _put_recipient(self, rcpt: Recipient) -> None:
        for rtype, data in E.recipient_records(rcpt):
            offset = self._put(rtype, data)
        rcpt.offset = offset

    def write_content(self, data: bytes) -> None:
        """Append message content. Chunks may split lines anywhere; they go
        to disk as they come, in 64 KiB writes."""
        self._check("envelope", "content")
        try:
            if self._state == "envelope":
                self._put(R.MESG)
                self._data_offset = self._pos
                self._state = "content"
            if not data:
                return
            encoded = R.encode_content(bytes(data))
            self._content_length += len(data)
            if len(self._buf) + len(encoded) < _BLOCK:
                self._buf += encoded
                self._pos += len(encoded)
                return
            self._flush()
            self._pos += len(encoded)
            if len(encoded) < _BLOCK:
                self._buf += encoded
            else:
                self.store.ops.write(self._fd, encoded)
        except OSError as e:
            raise self._fail(e, "write content of") from e

    def add_recipient(self, rcpt: Recipient) -> None:
        """Add a recipient after the envelope was written (before content it
        joins the envelope segment, after content the extracted segment)."""
        self._check("envelope", "content")
        assert self._env is not None
        self._env.recipients.append(rcpt)
        if self._state == "envelope":
            self._put_recipient(rcpt)
        else:
            self._extracted.append(rcpt)

    def written_content(self, chunk_size: int = _BLOCK) -> Iterator[bytes]:
        """The content written so far, read back from the file before the
        commit (a milter inspects the message as it will be queued)."""
        self._check("envelope", "content")
        if self._state == "envelope":
            return
        try:
            self._flush()
            pos, end = self._data_offset, self._pos
            rest = b""
            while pos < end:
                data = self.store.ops.pread(self._fd, min(chunk_size, end - pos), pos)
                if not data:
                    raise OSError(errno.EIO, "queue file ends inside the content")
                pos += len(data)
                buf = rest + data if rest else data
                out: list[bytes] = []
                used = R.decode_content(buf, 0, out, final=pos >= end)
                rest = buf[used:]
                if out:
                    yield b"".join(out)
        except R.RecordError as e:
            raise self._fail(OSError(errno.EIO, e.reason), "read back") from None
        except OSError as e:
            raise self._fail(e, "read back") from e

    def restart(self, env: Envelope) -> None:
        """Empty the file and start again with *env*: the message is written
        anew (as a milter changed it) under the same queue id, for the
        file is the same. Then :meth:`write_content` and :meth:`commit`."""
        self._check("envelope", "content")
        try:
            self._buf.clear()
            self.store.ops.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
        except OSError as e:
            raise self._fail(e, "rewrite") from e
        self._pos = 0
        self._data_offset = 0
        self._content_length = 0
        self._extracted = []
        self._state = "new"
        self.write_envelope(env)

    def commit(self) -> str:
        """Make the message durable and visible under its queue id; return
        the id. Only after this returns may the message be acknowledged.
        Raises :class:`QueueError` (and leaves nothing behind) on failure."""
        self.publish()
        try:
            self.store.sync_dir(os.path.dirname(self.final_path))
        except OSError as e:
            self.withdraw(e)
            raise wrap_os_error(e, f"commit {self.queue_id}") from e
        return self.published_durably()

    # The commit in its phases, for a caller that commits several files and
    # syncs their directory once for all (QueueStore.commit_batch()):
    # publish() each, then one fsync of the directory, then
    # published_durably() for each, or withdraw() for each when it failed.

    @property
    def published(self) -> bool:
        """Published, its directory not yet synced."""
        return self._state == "published"

    @property
    def final_path(self) -> str:
        """Where :meth:`publish` puts (or put) the file."""
        assert self._env is not None, "write_envelope() first"
        return self.store.path(HOLD if self._env.hold else self.queue, self.queue_id)

    def publish(self) -> str:
        """The commit up to its last step: the file completed, made
        durable (fsync) and renamed to its final name; that name is durable
        only once its directory is synced. Returns the final path. Raises
        :class:`QueueError` (and leaves nothing behind) on failure."""
        self._check("envelope", "content")
        env = self._env
        assert env is not None
        store, ops = self.store, self.store.ops
        final = self.final_path
        # Attributes set on the envelope after it was written (a
        # content_filter found in the headers, say) go into the extracted
        # segment, where they override the earlier ones.
        late_attributes = E.changed_attributes(self._attributes, env.attributes)
        try:
            if self._state == "envelope":
                self._put(R.MESG)
                self._data_offset = self._pos
            xtra = self._put(R.XTRA)
            for _, data in late_attributes:
                self._put(R.ATTR, data)
            for rcpt in self._extracted:
                self._put_recipient(rcpt)
            self._put(R.END)
            self._flush()
            env.size = self._content_length
            size = E.size_record_data(xtra - self._data_offset, self._data_offset,
                                      len(env.recipients), 0, self._content_length)
            ops.pwrite(self._fd, size, _C_DATA_AT)
            # maildrop files are written by the submitting user and read by
            # pickup running as mail_owner: readable by all (the directory
            # itself is not listable).
            ops.fchmod(self._fd, MODE_READY | (0o044 if self.queue == MAILDROP else 0))
            ops.fsync(self._fd)
        except OSError as e:
            raise self._fail(e, "commit") from e
        try:
            store._rename(self._temp, final, f"commit {self.queue_id}")
        except OSError as e:
            raise self._fail(e, "commit") from e
        self._state = "published"
        return final

    def published_durably(self) -> str:
        """The directory of the published file was synced: committed."""
        self._check("published")
        self._state = "committed"
        best_effort(self.store.ops.close, self._fd)  # the data is on disk already
        self._fd = -1
        return self.queue_id

    def withdraw(self, exc: BaseException) -> None:
        """The directory of the published file could not be synced: the
        name may not be durable, so it is taken away (a message that is
        not acknowledged is not delivered either) and the writer is dead."""
        self._check("published")
        best_effort(self.store.ops.unlink, self.final_path)
        self._discard(exc)

    def abort(self) -> None:
        """Give up the message: close and remove the file."""
        if self._state == "committed":
            raise RuntimeError(f"queue file {self.queue_id} is already committed")
        if self._state == "published":
            best_effort(self.store.ops.unlink, self.final_path)
        if self._state != "dead":
            self._discard(None)


class QueueFile:
    """An open, committed queue file; see :meth:`QueueStore.open`."""

    def __init__(self, store: QueueStore, queue: str, queue_id: str, path: str, fd: int,
                 writable: bool):
        self.store = store
        self.queue = queue
        self.queue_id = queue_id
        self.path = path
        self.writable = writable
        self._fd = fd
        self._data_offset = 0
        self._xtra_offset = 0
        self._warn_offset: int | None = None
        self.envelope = self._load()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            best_effort(self.store.ops.close, fd)

    def _read_at(self, offset: int, size: int) -> bytes:
        return self.store.ops.pread(self._fd, size, offset)

    @property
    def forced_expire(self) -> bool:
        """``postsuper -e`` or ``-f`` marked the message: it is returned to
        its sender at the next delivery attempt (:data:`MODE_EXPIRE`)."""
        try:
            return bool(self.store.ops.fstat(self._fd).st_mode & MODE_EXPIRE)
        except OSError as e:
            raise wrap_os_error(e, f"stat {self.path}") from e

    def _corrupt(self, reason: str) -> CorruptQueueFile:
        return CorruptQueueFile(self.path, reason)

    def _load(self) -> Envelope:
        builder = EnvelopeBuilder()
        try:
            recs = R.read_records(self._read_at, 0, block=8192)
            first = next(recs, None)
            if first is None or first.type != R.SIZE:
                raise self._corrupt("no size record")
            try:
                seg_size, data_offset, _, _, content_length = E.parse_size_record(first.data)
            except ValueError as e:
                raise self._corrupt(str(e)) from None
            for rec in recs:
                if rec.type == R.MESG:
                    break
                builder.add(rec)
            else:
                raise self._corrupt("no message content record")
            if data_offset != rec.offset + 2:
                raise self._corrupt(f"size record data offset {data_offset} is not "
                                    f"{rec.offset + 2}")
            self._data_offset = data_offset
            self._xtra_offset = data_offset + seg_size
            recs = R.read_records(self._read_at, self._xtra_offset, block=8192)
            first = next(recs, None)
            if first is None or first.type != R.XTRA:
                raise self._corrupt("no extracted segment record where the size record "
                                    "says")
            for rec in recs:
                if rec.type == R.END:
                    break
                builder.add(rec)
            else:
                raise self._corrupt("no END record")
        except R.RecordError as e:
            raise self._corrupt(str(e)) from None
        except OSError as e:
            raise wrap_os_error(e, f"read {self.path}") from e
        env = builder.env
        env.queue_id = self.queue_id
        env.size = content_length
        env.hold = self.queue == HOLD
        self._warn_offset = builder.warn_offset
        return env

    def content(self, chunk_size: int = _BLOCK) -> Iterator[bytes]:
        """The message content, exactly as written, in chunks of about
        *chunk_size* bytes; read from disk as it is consumed."""
        pos, end = self._data_offset, self._xtra_offset
        rest = b""  # an incomplete record carried over to the next read
        total = 0
        while pos < end or rest:
            if pos >= end:
                raise self._corrupt("the content ends inside a record")
            try:
                data = self._read_at(pos, min(max(chunk_size, 4096), end - pos))
            except OSError as e:
                raise wrap_os_error(e, f"read {self.path}") from e
            if not data:
                raise self._corrupt("file ends inside the content")
            base = pos - len(rest)
            pos += len(data)
            buf = rest + data if rest else data
            out: list[bytes] = []
            try:
                used = R.decode_content(buf, 0, out, final=pos >= end)
            except R.RecordError as e:
                raise self._corrupt(f"{e.reason} (at offset {base + e.offset})") from None
            rest = buf[used:]
            if out:
                chunk = b"".join(out)
                total += len(chunk)
                yield chunk
        if total != self.envelope.size:
            raise self._corrupt(f"content is {total} bytes, the size record says "
                                f"{self.envelope.size}")

    def read_content(self) -> bytes:
        """The whole content at once (small messages, tests)."""
        return b"".join(self.content())

    def _need_writable(self) -> None:
        if not self.writable or self._fd < 0:
            raise RuntimeError(f"queue file {self.queue_id} is not open for writing")

    def mark_done(self, *recipients: Recipient, sync: bool = True) -> None:
        """Durably record that these recipients are finished: Postfix's
        in-place flip of each R record to D (one pwrite of one byte each),
        then one fdatasync for them all."""
        self._need_writable()
        ops = self.store.ops
        try:
            for rcpt in recipients:
                if rcpt.offset is None:
                    raise ValueError(f"recipient {rcpt.address} has no file offset")
                current = ops.pread(self._fd, 1, rcpt.offset)
                if current not in (b"R", b"D", b"/"):
                    raise self._corrupt(f"no recipient record at offset {rcpt.offset}")
                if current == b"R":
                    ops.pwrite(self._fd, b"D", rcpt.offset)
            if sync:
                ops.fdatasync(self._fd)
        except OSError as e:
            raise wrap_os_error(e, f"mark done in {self.queue_id}") from e
        for rcpt in recipients:
            rcpt.done = True

    def update_warn_time(self, t: int, sync: bool = True) -> None:
        """Rewrite the W record in place (qmgr: 0 after the delay warning
        was sent)."""
        self._need_writable()
        if self._warn_offset is None:
            raise QueueError(errno.EINVAL, f"{self.queue_id} has no warning time record",
                             self.path)
        ops = self.store.ops
        try:
            ops.pwrite(self._fd, E.warn_record_data(t), self._warn_offset)
            if sync:
                ops.fdatasync(self._fd)
        except OSError as e:
            raise wrap_os_error(e, f"update warning time of {self.queue_id}") from e
        self.envelope.warn_time = t

"""Run one message through cleanup into incoming/: the path every way into
the queue shares (pickup for sendmail, smtpd for SMTP, bounce notices).

:class:`Injection` streams the content through
:class:`~hato.queue.cleanup.CleanupState` straight into a
:class:`~hato.queue.store.QueueWriter` (never holding the message whole) and
commits it only when cleanup accepted it; a rejected, discarded or failed
message leaves nothing behind. smtpd creates the injection at the first
accepted recipient (the queue id is known from then on, for its
``QID: client=...`` line), :meth:`Injection.start` at DATA, feeds the
content piece by piece as it arrives and calls :meth:`Injection.finish`
at the end of the message. :func:`clean_into_queue` does all of that at
once for content that is already at hand.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from . import records as R
from .cleanup import Cleanup, CleanupResult, CleanupState, Submission
from .envelope import ATTR_ENCODING, Envelope, Recipient
from .errors import wrap_os_error
from .store import INCOMING, QueueError, QueueStore, QueueWriter

if TYPE_CHECKING:
    from .milter_edit import MilterMessage

LogFn = Callable[[str, str], None]  # (level, text)


@dataclass
class Injected:
    result: CleanupResult
    queue_id: str | None  # None when nothing was queued
    #: the queue file's writer when something was queued (commit_together())
    writer: QueueWriter | None = field(default=None, repr=False, compare=False)


class Committed(Protocol):
    """What a commit of :func:`commit_together` returns: an :class:`Injected`
    or another result of the same shape (a maildrop submission's)."""

    @property
    def queue_id(self) -> str | None: ...

    @property
    def writer(self) -> QueueWriter | None: ...


class Injection:
    """One message on its way into incoming/."""

    def __init__(self, cleanup: Cleanup, store: QueueStore):
        self.cleanup = cleanup
        self.writer: QueueWriter = store.create(INCOMING)
        self.queue_id = self.writer.queue_id
        self.arrival_time = self.writer.arrival_time
        self.state: CleanupState | None = None
        self.env: Envelope | None = None
        self._initial: list[Recipient] = []
        self._pending: list[tuple[str, bytes]] | None = []
        self.result: CleanupResult | None = None
        self.edit: MilterMessage | None = None  # once a milter looks at the message
        self.done = False

    def _out_lines(self, lines: list[bytes]) -> None:
        """A run of plain body lines (NORM records), in one write."""
        if self._pending is not None:
            self._pending.extend((R.NORM, line) for line in lines)
        else:
            self.writer.write_content(b"\n".join(lines) + b"\n")

    def _out(self, rec_type: str, data: bytes) -> None:
        if self._pending is not None:
            self._pending.append((rec_type, data))
        elif rec_type == R.NORM:
            self.writer.write_content(data + b"\n")
        elif rec_type == R.CONT:
            self.writer.write_content(data)

    def start(self, *, log: LogFn, attributes: dict[str, str] | None = None,
              ret: str | None = None, envid: str = "", arrival: float = 0.0,
              **submission: object) -> None:
        """Open cleanup for the message. *submission* are the fields of
        :class:`Submission` other than queue_id and arrival_time;
        *attributes* go into the queue file's envelope (client facts, SASL
        user, ...)."""
        try:
            arrival_time = arrival or self.arrival_time
            if attributes and ATTR_ENCODING in attributes:
                # what the client declared (BODY=), as the envelope says
                submission.setdefault("encoding", attributes[ATTR_ENCODING])
            sub = Submission(queue_id=self.queue_id, arrival_time=arrival_time,
                             **submission)  # type: ignore[arg-type]
            state = self.state = self.cleanup.open(sub, output=self._out, log=log,
                                                   output_lines=self._out_lines)
            self._initial = list(state.recipients)
            warn = self.cleanup.delay_warning_time
            env = self.env = Envelope(
                sender=state.sender, recipients=list(self._initial), ret=ret, envid=envid,
                attributes=dict(attributes or {}), arrival_time=arrival_time,
                # when qmgr's delay warning is due (0: never)
                warn_time=int(arrival_time + warn) if warn > 0 else 0)
            self.writer.write_envelope(env)
            pending, self._pending = self._pending or [], None
            for rec_type, data in pending:
                self._out(rec_type, data)
        except BaseException:
            self.abort()
            raise

    def feed(self, chunk: bytes) -> None:
        assert self.state is not None, "start() first"
        try:
            self.state.feed(chunk)
        except BaseException:
            self.abort()
            raise

    def end_content(self) -> CleanupResult:
        """The end of the content: cleanup's verdict, nothing committed yet.
        A milter may now inspect and change the message
        (:meth:`milter_message`) before :meth:`commit`."""
        assert self.state is not None and self.env is not None, "start() first"
        if self.result is None:
            try:
                self.result = self.state.finish()
            except BaseException:
                self.abort()
                raise
        return self.result

    def milter_message(self, *, header_checks=None) -> MilterMessage:
        """The message as milters see and change it
        (:class:`~hato.queue.milter_edit.MilterMessage`); after
        :meth:`end_content` accepted it."""
        from .milter_edit import MilterMessage

        assert self.result is not None and self.result.ok, "end_content() first"
        if self.edit is None:
            self.edit = MilterMessage(self, header_checks=header_checks)
        return self.edit

    def finish(self, *, hold: bool = False, filter: str | None = None,
               redirect: str | None = None, discard: bool = False,
               sync_dir: bool = True) -> Injected:
        """End the content; commit (fsync) when cleanup accepted the message.
        *hold*, *filter*, *redirect* and *discard* are smtpd's access(5)
        actions, added to what header/body checks decided."""
        self.end_content()
        return self.commit(hold=hold, filter=filter, redirect=redirect, discard=discard,
                           sync_dir=sync_dir)

    def commit(self, *, hold: bool = False, filter: str | None = None,
               redirect: str | None = None, discard: bool = False,
               sync_dir: bool = True) -> Injected:
        """Commit what :meth:`end_content` accepted (with a milter's changes).
        Without *sync_dir* the queue file is only published
        (:meth:`QueueWriter.publish`): the caller syncs its directory, then
        calls ``writer.published_durably()`` or ``writer.withdraw()``."""
        assert self.result is not None and self.env is not None, "end_content() first"
        try:
            if self.edit is not None and self.result.ok:
                self.edit.finish()  # writes the changed message; may decide more
            elif self.state is not None:
                self.result = self.state.result()  # a milter may have decided more
            result = self.result
            env = self.env
            if not result.ok or result.discard or discard:
                self.abort()
                if result.ok:
                    result.discard = True
                return Injected(result, None)
            if self.edit is None or not self.edit.rewritten:
                known = {id(r) for r in self._initial}
                for rcpt in result.recipients:
                    if id(rcpt) not in known:
                        self.writer.add_recipient(rcpt)
            if not env.recipients:
                self.abort()
                return Injected(result, None)
            env.hold = result.hold or hold
            env.attributes[ATTR_ENCODING] = result.encoding
            if result.filter or filter:
                env.attributes["content_filter"] = result.filter or filter or ""
            if result.redirect or redirect:
                env.attributes["redirect"] = result.redirect or redirect or ""
            if sync_dir:
                qid = self.writer.commit()
            else:
                self.writer.publish()
                qid = self.writer.queue_id
            self.done = True
            return Injected(result, qid, self.writer)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Remove the unfinished file (nothing of the message stays)."""
        if not self.done:
            self.done = True
            if not self.writer.committed:
                self.writer.abort()


def clean_into_queue(cleanup: Cleanup, store: QueueStore, chunks: Iterable[bytes], *,
                     log: LogFn, attributes: dict[str, str] | None = None,
                     ret: str | None = None, envid: str = "", arrival: float = 0.0,
                     **submission: object) -> Injected:
    """Clean one message whose content is at hand into incoming/."""
    inj = Injection(cleanup, store)
    inj.start(log=log, attributes=attributes, ret=ret, envid=envid, arrival=arrival,
              **submission)
    for chunk in chunks:
        inj.feed(chunk)
    return inj.finish()


__all__ = ["clean_into_queue", "Injected", "Injection", "QueueError"]


def commit_together(commits: Sequence[Callable[[], Committed]]
                    ) -> list[Committed | BaseException]:
    """Several commits with one fsync per queue directory: each callable
    commits one :class:`Injection` with ``sync_dir=False`` (publishing its
    queue file, fsynced and renamed); then each directory that received a
    file is synced once, and each file is either committed or, when its
    directory's fsync failed, taken away again. Per callable, in order: its
    :class:`Injected` or the exception it ended with. Nothing is reported
    committed before its name is durable."""
    out: list[Committed | BaseException] = []
    published: dict[str, list[tuple[int, QueueWriter]]] = {}
    for i, commit in enumerate(commits):
        try:
            injected = commit()
        except Exception as err:  # noqa: BLE001 - that commit's own failure
            out.append(err)
            continue
        out.append(injected)
        writer = injected.writer
        if writer is not None and writer.published:
            published.setdefault(os.path.dirname(writer.final_path), []).append((i, writer))
    for directory, group in published.items():
        try:
            group[0][1].store.sync_dir(directory)
        except OSError as err:
            for i, writer in group:
                writer.withdraw(err)
                out[i] = wrap_os_error(err, f"commit {writer.queue_id}")
            continue
        for _, writer in group:
            writer.published_durably()
    return out

"""Run one message through cleanup into incoming/: the path every way into
the queue shares (pickup for sendmail, smtpd for SMTP, bounce notices).

:func:`clean_into_queue` streams the content through
:class:`~hato.queue.cleanup.CleanupState` straight into a
:class:`~hato.queue.store.QueueWriter` (never holding the message whole) and
commits it only when cleanup accepted it; a rejected, discarded or failed
message leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import records as R
from .cleanup import Cleanup, CleanupResult, Submission
from .envelope import Envelope
from .store import INCOMING, QueueError, QueueStore

LogFn = Callable[[str, str], None]  # (level, text)


@dataclass
class Injected:
    result: CleanupResult
    queue_id: str | None  # None when nothing was queued


def clean_into_queue(cleanup: Cleanup, store: QueueStore, chunks: Iterable[bytes], *,
                     log: LogFn, attributes: dict[str, str] | None = None,
                     ret: str | None = None, envid: str = "", arrival: float = 0.0,
                     **submission: object) -> Injected:
    """Clean one message into incoming/. *submission* are the fields of
    :class:`Submission` other than queue_id; *attributes* go into the queue
    file's envelope (client facts, SASL user, ...)."""
    writer = store.create(INCOMING)
    pending: list[tuple[str, bytes]] = []
    ready = False

    def out(rec_type: str, data: bytes) -> None:
        if not ready:
            pending.append((rec_type, data))
        elif rec_type == R.NORM:
            writer.write_content(data + b"\n")
        elif rec_type == R.CONT:
            writer.write_content(data)

    try:
        sub = Submission(queue_id=writer.queue_id, arrival_time=arrival or writer.arrival_time,
                         **submission)  # type: ignore[arg-type]
        state = cleanup.open(sub, output=out, log=log)
        initial = list(state.recipients)
        arrival_time = arrival or writer.arrival_time
        warn = cleanup.settings.time("delay_warning_time")
        env = Envelope(sender=state.sender, recipients=list(initial), ret=ret, envid=envid,
                       attributes=dict(attributes or {}), arrival_time=arrival_time,
                       # when qmgr's delay warning is due (0: never)
                       warn_time=int(arrival_time + warn) if warn > 0 else 0)
        writer.write_envelope(env)
        ready = True
        for rec_type, data in pending:
            out(rec_type, data)
        for chunk in chunks:
            state.feed(chunk)
        result = state.finish()
        if not result.ok or result.discard:
            writer.abort()
            return Injected(result, None)
        known = {id(r) for r in initial}
        for rcpt in result.recipients:
            if id(rcpt) not in known:
                writer.add_recipient(rcpt)
        if not env.recipients:
            writer.abort()
            return Injected(result, None)
        env.hold = result.hold
        if result.filter:
            env.attributes["content_filter"] = result.filter
        if result.redirect:
            env.attributes["redirect"] = result.redirect
        qid = writer.commit()
        return Injected(result, qid)
    except BaseException:
        if not writer.committed:
            writer.abort()
        raise


__all__ = ["clean_into_queue", "Injected", "QueueError"]

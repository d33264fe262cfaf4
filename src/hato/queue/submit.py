"""Local submission into maildrop/: what Postfix's postdrop does for
sendmail.

The file holds the envelope as given (sender, recipients, DSN options, the
submitting uid, whether recipients are to be extracted from the headers) and
the raw message; pickup later feeds it through cleanup. The function returns
only after the file is durable in maildrop/.
"""

from __future__ import annotations

from collections.abc import Iterable

from .envelope import Envelope, Recipient
from .store import MAILDROP, QueueStore

CHUNK = 64 * 1024


def submit_to_maildrop(settings, *, sender: str, recipients: Iterable[str],
                       content: bytes | Iterable[bytes], uid: int, full_name: str | None = None,
                       extract: bool = False, notify: str | None = None,
                       ret: str | None = None, envid: str | None = None,
                       arrival: float | None = None,
                       store: QueueStore | None = None, verify: bool = False) -> str:
    """Write one local submission into maildrop/; its queue id. *verify*
    (``sendmail -bv``) asks for a report on each recipient instead of
    delivery."""
    store = store or QueueStore.from_settings(settings)
    notify_set = frozenset(notify.split(",")) if notify else frozenset()
    env = Envelope(
        sender=sender,
        recipients=[Recipient(address=r, orig_address=r, notify=notify_set)
                    for r in recipients],
        ret=ret,
        envid=envid or "",
        full_name=full_name or "",
        attributes={"rewrite_context": "local", "uid": str(uid),
                    **({"extract_recipients": "yes"} if extract else {}),
                    **({"verify": "yes"} if verify else {})},
    )
    with store.create(MAILDROP) as writer:
        writer.write_envelope(env)
        if isinstance(content, (bytes, bytearray)):
            for i in range(0, len(content), CHUNK):
                writer.write_content(bytes(content[i:i + CHUNK]))
        else:
            for chunk in content:
                writer.write_content(chunk)
        return writer.commit()


class _Accepted:
    """What :meth:`MaildropSubmission.finish` returns, shaped as
    :class:`hato.queue.inject.Injected` so smtpd's session code takes both."""

    def __init__(self, queue_id: str):
        self.queue_id = queue_id
        self.result = self
        self.writer = None  # committed whole already: nothing for commit_together()

    def smtp_reply(self) -> str:
        return f"250 2.0.0 Ok: queued as {self.queue_id}"


class MaildropSubmission:
    """One message received by ``sendmail -bs`` on its way into maildrop/,
    with the same steps as :class:`hato.queue.inject.Injection` (start at
    DATA, feed content pieces, finish or abort). pickup runs cleanup later,
    as for any local submission."""

    def __init__(self, store: QueueStore, uid: int):
        self.uid = uid
        self.writer = store.create(MAILDROP)
        self.queue_id = self.writer.queue_id
        self.arrival_time = self.writer.arrival_time
        self.done = False

    def start(self, *, sender: str, recipients: Iterable[Recipient], ret: str | None = None,
              envid: str = "", **_ignored: object) -> None:
        env = Envelope(
            sender=sender,
            recipients=[Recipient(address=r.address, orig_address=r.address,
                                  notify=r.notify, orcpt=r.orcpt) for r in recipients],
            ret=ret, envid=envid or "",
            attributes={"rewrite_context": "local", "uid": str(self.uid)})
        try:
            self.writer.write_envelope(env)
        except BaseException:
            self.abort()
            raise

    def feed(self, chunk: bytes) -> None:
        try:
            self.writer.write_content(chunk)
        except BaseException:
            self.abort()
            raise

    def finish(self, **_ignored: object) -> _Accepted:
        try:
            qid = self.writer.commit()
        except BaseException:
            self.abort()
            raise
        self.done = True
        return _Accepted(qid)

    def abort(self) -> None:
        if not self.done:
            self.done = True
            if not self.writer.committed:
                self.writer.abort()

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
                       store: QueueStore | None = None) -> str:
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
                    **({"extract_recipients": "yes"} if extract else {})},
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

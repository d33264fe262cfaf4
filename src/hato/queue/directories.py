"""The directories under $queue_directory: Postfix's names and modes."""

from __future__ import annotations

# Postfix's queue directory names (mail_queue.h).
MAILDROP = "maildrop"
INCOMING = "incoming"
ACTIVE = "active"
DEFERRED = "deferred"
HOLD = "hold"
CORRUPT = "corrupt"
SAVED = "saved"
BOUNCE = "bounce"
DEFER = "defer"
TRACE = "trace"
FLUSH = "flush"

MESSAGE_QUEUES = (MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT, SAVED)
LOG_QUEUES = (BOUNCE, DEFER, TRACE)
#: every directory ensure_layout() makes, with its mode (Postfix's postfix-files)
LAYOUT = {
    MAILDROP: 0o730, INCOMING: 0o700, ACTIVE: 0o700, DEFERRED: 0o700, HOLD: 0o700,
    CORRUPT: 0o700, SAVED: 0o700, BOUNCE: 0o700, DEFER: 0o700, TRACE: 0o700,
    FLUSH: 0o700, "pid": 0o755, "public": 0o710, "private": 0o700,
}
SETGID_DIRS = (MAILDROP, "public")
#: Which name recover() keeps when one file is in two queues.
PRECEDENCE = (CORRUPT, HOLD, DEFERRED, ACTIVE, INCOMING, SAVED, MAILDROP)

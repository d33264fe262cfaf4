"""The instance's directories, created (and owned) before services start."""

from __future__ import annotations

import grp
import os
import pwd

from ..config.settings import Settings
from ..queue.store import QueueStore


def ensure_layout(settings: Settings) -> QueueStore:
    """Create queue_directory with Postfix's subdirectories, and
    data_directory. Started by root, they belong to mail_owner. hato has
    no set-group-id postdrop program, so in an instance started by root
    maildrop/ is world-writable with the sticky bit (1733) and public/ is
    0711 (any local user may submit with sendmail and wake pickup): the
    configuration Postfix documents for systems without set-gid postdrop.
    pickup trusts only the file's owner, never its contents, for the uid."""
    store = QueueStore.from_settings(settings)
    data_dir = settings.str("data_directory")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        pw = pwd.getpwnam(settings.str("mail_owner"))
        setgid = grp.getgrnam(settings.str("setgid_group")).gr_gid
        store.ensure_layout(pw.pw_uid, pw.pw_gid, setgid)
        os.chown(data_dir, pw.pw_uid, pw.pw_gid)
        os.chmod(store.queue_dir("maildrop"), 0o1733)
        os.chmod(store.queue_dir("public"), 0o711)
    else:
        store.ensure_layout()
    # Before any service runs: remove what a crash left half-written, send
    # active/ back to incoming/, quarantine unreadable files.
    store.recover()
    return store

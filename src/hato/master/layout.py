"""The instance's directories: created (and owned) before services start,
checked by ``hato check`` and repaired by ``hato set-permissions``.

Started by root, an instance's files belong to three owners, as Postfix's:

* root: the configuration directory (main.cf, master.cf, tables, keys),
  the queue directory itself and its ``pid/``; none of it group or other
  writable (a key or a sasldb may be group *readable*);
* mail_owner: every other queue subdirectory and what is in it (mode 0700),
  and the data directory;
* setgid_group: the group of ``maildrop/`` and ``public/``. hato has no
  set-group-id postdrop program, so maildrop/ is world-writable with the
  sticky bit (1733) and public/ is 0711 (any local user may submit with
  sendmail and wake pickup): the configuration Postfix documents for
  systems without set-gid postdrop. pickup trusts only the file's owner,
  never its contents, for the uid.

:func:`permission_problems` lists what is wrong in the words of Postfix's
``postfix check`` (postfix-script ``check-warn``): ``not owned by root:
PATH``, ``group or other writable: PATH``, ``not owned by MAIL_OWNER:
PATH``, ``not owned by group SETGID_GROUP: PATH``, ``damaged message:
PATH``, plus hato's ``wrong mode 0755 (expected 0700): PATH`` for a queue
subdirectory. :func:`set_permissions` repairs all of it except damaged
messages. The walk of the configuration directory leaves out the
directories an instance made by ``hato init`` keeps inside it and that
belong to others: queue_directory, data_directory, virtual_mailbox_base
and the directory of maillog_file.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ..config.settings import Settings
from ..queue.directories import CORRUPT, LAYOUT, MAILDROP, SETGID_DIRS
from ..queue.store import QueueStore

#: Modes of maildrop/ and public/ in an instance started by root.
ROOT_SETGID_MODES = {MAILDROP: 0o1733, "public": 0o711}
#: Queue subdirectories owned by mail_owner all the way down (postfix-script).
OWNED_TREES = ("saved", "incoming", "active", "defer", "deferred", "bounce", "hold",
               "trace", "corrupt", "public", "private", "flush")


@dataclass(frozen=True)
class Owners:
    """Who owns what in an instance started by root."""

    mail_owner: str
    uid: int
    gid: int
    setgid_group: str
    setgid_gid: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Owners:
        """Raises KeyError for an unknown mail_owner or setgid_group."""
        pw = pwd.getpwnam(settings.str("mail_owner"))
        group = settings.str("setgid_group")
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, group, grp.getgrnam(group).gr_gid)


def queue_modes(as_root: bool) -> dict[str, int]:
    """Mode of each queue subdirectory."""
    modes = dict(LAYOUT)
    if as_root:
        modes.update(ROOT_SETGID_MODES)
    else:  # no setgid group to share them with
        modes.update({name: 0o700 for name in SETGID_DIRS})
    return modes


def fix_layout(settings: Settings) -> QueueStore:
    """Create queue_directory with Postfix's subdirectories, and
    data_directory, with their owners and modes (root's process: owned as
    described above; an ordinary user's: that user's)."""
    store = QueueStore.from_settings(settings)
    data_dir = settings.str("data_directory")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        who = Owners.from_settings(settings)
        store.ensure_layout(who.uid, who.gid, who.setgid_gid)
        os.chown(data_dir, who.uid, who.gid)
        for name, mode in ROOT_SETGID_MODES.items():
            os.chmod(store.queue_dir(name), mode)
    else:
        store.ensure_layout()
    return store


def ensure_layout(settings: Settings) -> QueueStore:
    """:func:`fix_layout`, then, before any service runs, recovery: remove
    what a crash left half-written, send active/ back to incoming/,
    quarantine unreadable files."""
    store = fix_layout(settings)
    store.recover()
    return store


# -- checking -------------------------------------------------------------------


def _walk(top: str, prune: frozenset[str] = frozenset()) -> Iterator[tuple[str, os.stat_result]]:
    """*top* and everything below it (symbolic links not followed), with
    lstat results; directories in *prune* are left out with their contents."""
    try:
        st = os.lstat(top)
    except OSError:
        return
    yield top, st
    if not stat.S_ISDIR(st.st_mode):
        return
    try:
        names = sorted(os.listdir(top))
    except OSError:
        return
    for name in names:
        path = os.path.join(top, name)
        if prune and os.path.realpath(path) in prune:
            continue
        yield from _walk(path, prune)


def _writable(path: str, st: os.stat_result) -> bool:
    """Group or other writable, following a symbolic link (``find -L``)."""
    if stat.S_ISLNK(st.st_mode):
        try:
            st = os.stat(path)
        except OSError:
            return False
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _config_prune(settings: Settings) -> frozenset[str]:
    paths = [settings.str("queue_directory"), settings.str("data_directory")]
    for name in ("virtual_mailbox_base",):
        if settings.str(name).strip():
            paths.append(settings.str(name).strip())
    log = settings.str("maillog_file").strip()
    if log.startswith("/"):
        paths.append(os.path.dirname(log))
    return frozenset(os.path.realpath(p) for p in paths if p.startswith("/"))


def _config_tree(settings: Settings, config_dir: str):
    prune = _config_prune(settings) - {os.path.realpath(config_dir)}
    return _walk(config_dir, prune)


def permission_problems(settings: Settings, config_dir: str) -> list[str]:
    """Unsafe owners and modes, one Postfix-worded warning per path. Run
    by root, the whole layout is checked; run by another user (an instance
    of that user), only that main.cf and master.cf are not group or other
    writable."""
    out: list[str] = []
    if os.geteuid() != 0:
        for name in ("main.cf", "master.cf"):
            path = os.path.join(config_dir, name)
            try:
                if os.stat(path).st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                    out.append(f"group or other writable: {path}")
            except OSError:
                pass
        return out
    who = Owners.from_settings(settings)
    queue = settings.str("queue_directory")
    data = settings.str("data_directory")
    # root-owned: the queue directory and pid/, the configuration tree
    roots = [(queue, os.lstat(queue)) if os.path.isdir(queue) else None]
    pid = os.path.join(queue, "pid")
    roots.append((pid, os.lstat(pid)) if os.path.isdir(pid) else None)
    for path, st in [r for r in roots if r] + list(_config_tree(settings, config_dir)):
        if st.st_uid != 0:
            out.append(f"not owned by root: {path}")
        if _writable(path, st):
            out.append(f"group or other writable: {path}")
    # mail_owner-owned: the data directory tree
    for path, st in _walk(data):
        if st.st_uid != who.uid:
            out.append(f"not owned by {who.mail_owner}: {path}")
        if _writable(path, st):
            out.append(f"group or other writable: {path}")
    # mail_owner-owned: the queue subdirectories (sockets and fifos aside)
    for name in OWNED_TREES:
        for path, st in _walk(os.path.join(queue, name)):
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                continue
            if st.st_uid != who.uid:
                out.append(f"not owned by {who.mail_owner}: {path}")
    maildrop = os.path.join(queue, MAILDROP)
    try:
        if os.lstat(maildrop).st_uid != who.uid:
            out.append(f"not owned by {who.mail_owner}: {maildrop}")
    except OSError:
        pass
    for name in (*SETGID_DIRS,):
        path = os.path.join(queue, name)
        try:
            if os.lstat(path).st_gid != who.setgid_gid:
                out.append(f"not owned by group {who.setgid_group}: {path}")
        except OSError:
            pass
    for name, mode in queue_modes(True).items():
        path = os.path.join(queue, name)
        try:
            have = stat.S_IMODE(os.lstat(path).st_mode)
        except OSError:
            continue
        if have != mode:
            out.append(f"wrong mode {have:04o} (expected {mode:04o}): {path}")
    for path, st in _walk(os.path.join(queue, CORRUPT)):
        if stat.S_ISREG(st.st_mode):
            out.append(f"damaged message: {path}")
    return out


# -- repairing ------------------------------------------------------------------


def _no_group_other_write(path: str, st: os.stat_result) -> None:
    if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~(stat.S_IWGRP | stat.S_IWOTH))


def set_permissions(settings: Settings, config_dir: str) -> None:
    """Postfix's ``postfix set-permissions``: create what is missing of
    the queue and data directories and give everything the owner and mode
    :func:`permission_problems` expects. Run by another user than root,
    only modes change. Messages in the queue stay where they are (no
    recovery: the instance may be running)."""
    fix_layout(settings)
    queue = settings.str("queue_directory")
    if os.geteuid() != 0:
        for name in ("main.cf", "master.cf"):
            path = os.path.join(config_dir, name)
            try:
                _no_group_other_write(path, os.lstat(path))
            except FileNotFoundError:
                pass
        return
    who = Owners.from_settings(settings)
    for path in (queue, os.path.join(queue, "pid")):
        st = os.lstat(path)
        if st.st_uid != 0:
            os.lchown(path, 0, -1)
        _no_group_other_write(path, st)
    for path, st in _config_tree(settings, config_dir):
        if st.st_uid != 0:
            os.lchown(path, 0, -1)  # the group stays: a key or sasldb may be group-readable
        _no_group_other_write(path, st)
    for path, st in _walk(settings.str("data_directory")):
        if st.st_uid != who.uid:
            os.lchown(path, who.uid, who.gid)
        _no_group_other_write(path, st)
    for name in OWNED_TREES:
        for path, st in _walk(os.path.join(queue, name)):
            if stat.S_ISSOCK(st.st_mode) or stat.S_ISFIFO(st.st_mode):
                continue
            if st.st_uid != who.uid:  # (fix_layout() did the directories themselves)
                os.lchown(path, who.uid, who.gid)

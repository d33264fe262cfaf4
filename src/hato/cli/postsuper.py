"""``postsuper``: queue maintenance for the superuser, as postsuper(1).

    postsuper [-psSv] [-c config_dir] [-d queue_id] [-e queue_id]
              [-f queue_id] [-h queue_id] [-H queue_id] [-r queue_id]
              [directory ...]

``-d`` deletes a message (and its defer, bounce and trace logs), ``-h``
puts it on hold, ``-H`` releases it to the deferred queue, ``-e`` marks it
to be returned to its sender at the next delivery attempt, ``-f`` does
that and releases it from hold, ``-r`` requeues it: the message goes
through cleanup again (address rewriting, virtual aliases, header checks,
content_filter) into a new queue file, its delivered recipients left out,
its arrival time, rewriting context and client facts kept. Each takes a
queue id, ``-`` (queue ids on standard input, one a line) or ``ALL``.
``-s`` checks and repairs the queue's structure (files in the wrong hashed
subdirectory, names that do not match their inode numbers, alien
directories), ``-p`` removes temporary files older than a day that a crash
left behind; the two are the default when nothing else is asked, and run
before the other operations, which run in command-line order. Queue names
(``maildrop incoming active deferred hold``, and the log directories
``defer bounce trace flush``) restrict every operation.

Output as Postfix's: per-message lines (``QID: removed``, ``QID: placed on
hold``, ``QID: released from hold``, ``QID: expired``, ``QID: requeued``)
and the totals (``Deleted: 3 messages``) on standard error and in the mail
log (``postfix/postsuper[pid]``); warnings for invalid queue ids and bogus
file names; exit status 0 unless a fatal error.

Started by root, the command works as ``mail_owner`` (files it makes belong
to the mail system); otherwise only ``mail_owner`` may run it. It is safe
on a live queue: qmgr notices a message that left the active queue during
delivery and leaves it where it went.
"""

from __future__ import annotations

import errno
import getopt
import os
import pwd
import stat
import sys
import time
from collections.abc import Callable, Iterable

from ..queue.directories import (
    ACTIVE, BOUNCE, DEFER, DEFERRED, FLUSH, HOLD, INCOMING, LOG_QUEUES, MAILDROP, TRACE,
)
from ..queue.ids import LG_INUM_BASE, LG_INUM_SEP, is_queue_id, parse_queue_id, safe_encode
from ..queue.queuefile import MODE_EXPIRE, is_ready_mode
from .common import Fatal, Messages, load_config, run

PROG = "postsuper"
USAGE = ("usage: postsuper [-c config_dir] [-d queue_id (delete)] [-e queue_id (expire)] "
         "[-f queue_id (expire and/or un-hold)] [-h queue_id (hold)] "
         "[-H queue_id (un-hold)] [-p (purge temporary files)] [-r queue_id (requeue)] "
         "[-s (structure fix)] [-S (redundant structure fix)][-v (verbose)] [queue...]")
GETOPT = "c:d:e:f:h:H:pr:sSv"

#: name -> (holds message files, steps into subdirectories): Postfix's
#: queue_info table. maildrop is never entered below its top.
QUEUE_INFO = {
    MAILDROP: (True, False), INCOMING: (True, True), ACTIVE: (True, True),
    DEFERRED: (True, True), HOLD: (True, True), TRACE: (False, True),
    DEFER: (False, True), BOUNCE: (False, True), FLUSH: (False, True),
}
#: Log directories first, so that their files are in place before message
#: files are renamed to match their inode numbers.
DEFAULT_QUEUES = (DEFER, BOUNCE, TRACE, MAILDROP, INCOMING, ACTIVE, DEFERRED, HOLD, FLUSH)
MAX_TEMP_AGE = 60 * 60 * 24
SUFFIX = "#FIX"  # never a queue id, so no service touches a file half renamed

STRUCT = 1 << 0
PURGE = 1 << 1
DELETE_ONE = 1 << 2
DELETE_ALL = 1 << 3
REQUEUE_ONE = 1 << 4
REQUEUE_ALL = 1 << 5
HOLD_ONE = 1 << 6
HOLD_ALL = 1 << 7
RELEASE_ONE = 1 << 8
RELEASE_ALL = 1 << 9
STRUCT_RED = 1 << 10
EXPIRE_ONE = 1 << 11
EXPIRE_ALL = 1 << 12
EXP_REL_ONE = 1 << 13
EXP_REL_ALL = 1 << 14
BY_QUEUE_ID = DELETE_ONE | REQUEUE_ONE | HOLD_ONE | RELEASE_ONE | EXPIRE_ONE | EXP_REL_ONE
BY_WILDCARD = DELETE_ALL | REQUEUE_ALL | HOLD_ALL | RELEASE_ALL | EXPIRE_ALL | EXP_REL_ALL
FOR_REPAIR = PURGE | STRUCT | STRUCT_RED
_ACTIONS = {"-d": (DELETE_ONE, DELETE_ALL), "-e": (EXPIRE_ONE, EXPIRE_ALL),
            "-f": (EXP_REL_ONE, EXP_REL_ALL), "-h": (HOLD_ONE, HOLD_ALL),
            "-H": (RELEASE_ONE, RELEASE_ALL), "-r": (REQUEUE_ONE, REQUEUE_ALL)}


class Request:
    """What the command line asks for."""

    def __init__(self) -> None:
        self.config_dir: str | None = None
        self.action = 0
        self.verbose = 0
        self.ops: list[tuple[str, str]] = []  # (option, queue id / ALL / -) in order
        self.queues: list[str] = []


def parse_args(argv: list[str]) -> Request:
    """Postfix's getopt loop; raises :class:`Fatal` with Postfix's texts."""
    try:
        opts, args = getopt.getopt(argv, GETOPT)
    except getopt.GetoptError as err:
        if "requires argument" in err.msg:
            print(f"{PROG}: option requires an argument -- '{err.opt}'", file=sys.stderr)
        else:
            print(f"{PROG}: invalid option -- '{err.opt}'", file=sys.stderr)
        raise Fatal(USAGE) from None
    req = Request()
    for opt, val in opts:
        if opt == "-c":
            if not val.startswith("/"):
                raise Fatal("-c requires absolute pathname")
            req.config_dir = val
        elif opt in _ACTIONS:
            one, every = _ACTIONS[opt]
            req.action |= every if val == "ALL" else one
            req.ops.append((opt, val))
        elif opt == "-p":
            req.action |= PURGE
        elif opt == "-S":
            req.action |= STRUCT_RED | STRUCT
        elif opt == "-s":
            req.action |= STRUCT
        elif opt == "-v":
            req.verbose += 1
    for name in args:
        if name not in QUEUE_INFO:
            raise Fatal(f"invalid directory name: {name}")
    req.queues = list(args) or list(DEFAULT_QUEUES)
    if not req.action:
        req.action = STRUCT | PURGE
    return req


def name_ok(name: str) -> bool:
    """A file name the queue may hold: a queue id, or (in flush/) a site
    name as Postfix's mail_queue_id_ok() allows (letters, digits, ``_``)."""
    return 0 < len(name) <= 255 and all(c.isascii() and (c.isalnum() or c == "_")
                                        for c in name)


def fixed_queue_id(queue_id: str, inode: int, long_ids: bool) -> str:
    """The name a file should have after a restore from elsewhere: the time
    part of *queue_id* and the file's inode number; a long id becomes a
    short one when long ids are off (Postfix's fix_queue_id())."""
    parts = parse_queue_id(queue_id)
    if parts is None:
        raise ValueError(f"bad queue id {queue_id!r}")
    if not parts.long_form:
        return f"{queue_id[:5]}{inode:X}"
    if long_ids:
        return queue_id[:queue_id.rfind(LG_INUM_SEP)] + LG_INUM_SEP + \
            safe_encode(inode, LG_INUM_BASE)
    return f"{parts.usec:05X}{inode:X}"


class Superintendent:
    """The operations, over one queue store; counts as Postfix counts."""

    def __init__(self, settings, store, msgs: Messages, log, verbose: int = 0,
                 clock: Callable[[], float] = time.time):
        self.s = settings
        self.store = store
        self.msgs = msgs
        self.log = log
        self.verbose = verbose
        self.clock = clock
        self.requeued = self.held = self.released = self.deleted = self.expired = 0
        self.inode_fixed = self.inode_mismatch = self.position_mismatch = 0
        self._cleanup = None
        self._external = settings.str("info_log_address_format").lower() != "internal"

    # -- messages -----------------------------------------------------------------

    def info(self, text: str) -> None:
        self.msgs.info(text)
        self.log.info(text)

    def warn(self, text: str) -> None:
        self.msgs.warn(text)
        self.log.warning(text)

    def vinfo(self, text: str) -> None:
        if self.verbose:
            self.info(text)

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.store.directory)

    # -- file operations, as Postfix's postremove/postrename -----------------------

    def queue_path(self, queue: str, name: str) -> str:
        """Where *name* belongs in *queue* (Postfix's mail_queue_path())."""
        if is_queue_id(name):
            return self.store.path(queue, name)
        base = self.store.queue_dir(queue)
        if self.store.is_hashed(queue):
            padded = name.ljust(self.store.hash_queue_depth, "_")
            return os.path.join(base, *padded[:self.store.hash_queue_depth], name)
        return os.path.join(base, name)

    def remove(self, path: str) -> bool:
        try:
            self.store.ops.unlink(path)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise Fatal(f"remove file {self.rel(path)}: {e.strerror}") from None
        self.vinfo(f"removed file {self.rel(path)}")
        return True

    def rename(self, old: str, new: str) -> bool:
        """Rename, making the target directory when needed; False when the
        source is gone (a race with the queue manager). Never replaces a
        file: a clash is fatal, as any other error."""
        ops = self.store.ops
        try:
            try:
                ops.rename_noreplace(old, new)
            except FileNotFoundError:
                try:
                    ops.stat(old)
                except FileNotFoundError:
                    return False
                os.makedirs(os.path.dirname(new), 0o700, exist_ok=True)
                ops.rename_noreplace(old, new)
        except FileNotFoundError:
            return False
        except OSError as e:
            raise Fatal(f"rename file {self.rel(old)} as {self.rel(new)}: "
                        f"{e.strerror or os.strerror(e.errno or errno.EIO)}") from None
        self.vinfo(f"renamed file {self.rel(old)} as {self.rel(new)}")
        return True

    def rmdir(self, path: str) -> None:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return
        except OSError as e:
            self.warn(f"remove directory {self.rel(path)}: {e.strerror}")
            return
        self.vinfo(f"remove directory {self.rel(path)}")

    def remove_logs(self, queue_id: str) -> None:
        for kind in LOG_QUEUES:
            path = self.store.log_path(kind, queue_id)
            self.remove(path)

    def open_ok(self, queue: str, queue_id: str) -> str | None:
        """The path of a committed message file *queue_id* in *queue*, or
        None (Postfix's mail_open_ok())."""
        try:
            path = self.store.locate(queue, queue_id)
            st = os.lstat(path)
        except (OSError, ValueError):
            return None
        if not stat.S_ISREG(st.st_mode) or not is_ready_mode(st.st_mode):
            return None
        if st.st_nlink > 1:
            self.warn(f"{self.rel(path)}: uid {st.st_uid}: file has {st.st_nlink} links")
            return None
        return path

    # -- by queue id ----------------------------------------------------------------

    def _valid(self, queue_id: str) -> bool:
        if is_queue_id(queue_id):
            return True
        self.warn(f"invalid mail queue id: {queue_id}")
        return False

    def delete_one(self, queues: list[str], queue_id: str) -> None:
        if not self._valid(queue_id):
            return
        for _ in range(2):  # the queue manager may move it meanwhile
            for q in queues:
                if not QUEUE_INFO[q][0]:
                    continue
                path = self.open_ok(q, queue_id)
                if path and self.remove(path):
                    self.remove_logs(queue_id)
                    self.info(f"{queue_id}: removed")
                    self.deleted += 1
                    return

    def hold_one(self, queues: list[str], queue_id: str) -> None:
        if not self._valid(queue_id):
            return
        for _ in range(2):
            for q in queues:
                # maildrop mail is not yet sanitized: it must not mix with held mail
                if q in (MAILDROP, HOLD) or not QUEUE_INFO[q][0]:
                    continue
                path = self.open_ok(q, queue_id)
                if path and self.rename(path, self.store.path(HOLD, queue_id)):
                    self.info(f"{queue_id}: placed on hold")
                    self.held += 1
                    return

    def release_one(self, queues: list[str], queue_id: str) -> None:
        if not self._valid(queue_id):
            return
        if HOLD not in queues:
            return
        path = self.open_ok(HOLD, queue_id)
        if path and self.rename(path, self.store.path(DEFERRED, queue_id)):
            self.info(f"{queue_id}: released from hold")
            self.released += 1

    def expire_one(self, queues: list[str], queue_id: str) -> None:
        if not self._valid(queue_id):
            return
        for _ in range(2):
            for q in queues:
                if q == MAILDROP or not QUEUE_INFO[q][0]:
                    continue
                if self.open_ok(q, queue_id) and self.store.set_forced_expire(q, queue_id):
                    self.info(f"{queue_id}: expired")
                    self.expired += 1
                    return

    def exp_rel_one(self, queues: list[str], queue_id: str) -> None:
        self.expire_one(queues, queue_id)
        self.release_one(queues, queue_id)

    def requeue_one(self, queues: list[str], queue_id: str) -> None:
        if not self._valid(queue_id):
            return
        for _ in range(2):
            for q in queues:
                if q == MAILDROP or not QUEUE_INFO[q][0]:
                    continue
                path = self.open_ok(q, queue_id)
                if path and self.requeue(q, queue_id, path):
                    self.info(f"{queue_id}: requeued")
                    return

    # -- requeue: the message goes through cleanup again ------------------------------

    def requeue(self, queue: str, queue_id: str, path: str) -> bool:
        """Copy the message through cleanup into a new queue file, as
        Postfix's pickup does with a requeued file, and remove the old one.
        True when the old file is gone (requeued, or refused and returned
        to its sender); False when it stays (gone already, unreadable, or
        cleanup said try again)."""
        from ..queue.envelope import Recipient
        from ..queue.errors import CorruptQueueFile, NoSuchMessage
        from ..queue.inject import clean_into_queue
        from ..tables.base import TableRetry

        store = self.store
        try:
            st = os.stat(path)
            qf = store.open(queue, queue_id, writable=False)
        except (FileNotFoundError, NoSuchMessage):
            return False
        except CorruptQueueFile as err:
            self.warn(f"{queue_id}: {err}; not requeued")
            return False
        try:
            env = qf.envelope
            pending = [Recipient(address=r.address, orig_address=r.orig_address,
                                 notify=r.notify, orcpt=r.orcpt)
                       for r in env.recipients if not r.done]
            new_id = None
            if pending:
                # As Postfix's pickup for a requeued file: the content filter
                # and redirect that were decided before are dropped.
                attrs = {k: v for k, v in env.attributes.items()
                         if k not in ("content_filter", "redirect")}
                context = attrs.get("rewrite_context") or "local"
                try:
                    result = clean_into_queue(
                        self.cleanup(), store, qf.content(), log=lambda level, text: None,
                        attributes=attrs, ret=env.ret, envid=env.envid,
                        arrival=env.arrival_time, sender=env.sender, recipients=pending,
                        rewrite_context=context, userid=st.st_uid, submit_time=self.clock(),
                        full_name=env.full_name or None)
                except TableRetry as err:
                    self.warn(f"{queue_id}: {err}; not requeued")
                    return False
                res = result.result
                if not result.queue_id and res.temporary:
                    self.warn(f"{queue_id}: {res.smtp_reply()}; not requeued")
                    return False
                new_id = result.queue_id
                if new_id or res.discard:
                    who = f"uid={st.st_uid} from=<{self._addr(env.sender)}>"
                    self.log.info(f"{new_id or queue_id}: {who} orig_id={queue_id}")
                    for level, text in res.log:
                        (self.log.warning if level == "warning" else self.log.info)(text)
                else:
                    for level, text in res.log:
                        (self.log.warning if level == "warning" else self.log.info)(text)
                    self._return_to_sender(queue_id, env, qf, pending, res)
        finally:
            qf.close()
        # Gone meanwhile (the queue manager finished with it)? The copy
        # stays, as after Postfix's requeue of a message in flight.
        self.remove(path)
        self.remove_logs(queue_id)
        self.requeued += 1
        return True

    def _addr(self, address: str) -> str:
        from ..policy.address import log_form

        return log_form(address, self._external)

    def _return_to_sender(self, queue_id: str, env, qf, pending, res) -> None:
        from ..queue.bounce import send_bounce

        code, dsn, text = res.detail()
        reason = res.reason or f"{dsn} {text}"
        if reason[:1].isdigit() and " " in reason:
            dsn, _, text = reason.partition(" ")
        entries = [{"recipient": r.address, "orig_rcpt": r.orig_address,
                    "notify": ",".join(sorted(r.notify)), "orcpt": r.orcpt,
                    "status": dsn if dsn[:1] == "5" else "5.3.0", "reason": text}
                   for r in pending]
        notice = send_bounce(self.s, self.store, env, qf, entries)
        if notice:
            self.log.info(f"{queue_id}: sender non-delivery notification: {notice}")

    def cleanup(self):
        if self._cleanup is None:
            from ..queue.cleanup import Cleanup

            self._cleanup = Cleanup(self.s)
        return self._cleanup

    def close(self) -> None:
        if self._cleanup is not None:
            self._cleanup.close()

    # -- over whole queues: repair and the ALL operations ------------------------------

    def super(self, queues: Iterable[str], action: int) -> None:
        """Walk the queues: remove alien directories and non-files, purge old
        temporary files, put files where the hashing parameters want them,
        rename files to match their inode numbers, and do the ALL
        operations (Postfix's super())."""
        for queue in queues:
            self.vinfo(f"queue: {queue}")
            message_queue, recurse = QUEUE_INFO[queue]
            wanted_depth = self.store.hash_queue_depth if self.store.is_hashed(queue) else 0
            if wanted_depth and not recurse:
                raise Fatal(f"{queue} queue must not be hashed")
            self._walk(queue, self.store.queue_dir(queue), 0, wanted_depth, action,
                       message_queue, recurse)

    def _walk(self, queue: str, directory: str, depth: int, wanted_depth: int, action: int,
              message_queue: bool, recurse: bool) -> int:
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return action
        except OSError as e:
            raise Fatal(f"open directory {self.rel(directory)}: {e.strerror}") from None
        for name in names:
            path = os.path.join(directory, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if len(name) == 1 and recurse:
                    action = self._walk(queue, path, depth + 1, wanted_depth, action,
                                        message_queue, recurse)
                    if depth + 1 > wanted_depth:
                        self.rmdir(path)
                    continue
                # an alien directory
                try:
                    os.rmdir(path)
                    self.vinfo(f"remove subdirectory {self.rel(path)}")
                except FileNotFoundError:
                    pass
                except OSError as e:
                    self.warn(f"remove subdirectory {self.rel(path)}: {e.strerror}")
                continue
            action = self._one_file(queue, path, name, st, action, message_queue)
        return action

    def _one_file(self, queue: str, path: str, name: str, st: os.stat_result, action: int,
                  message_queue: bool) -> int:
        ready = is_ready_mode(st.st_mode)
        if action & DELETE_ALL:
            if self.remove(path) and message_queue and ready:
                self.deleted += 1
                if is_queue_id(name):
                    self.remove_logs(name)
            return action
        if not stat.S_ISREG(st.st_mode) or (
                action & PURGE and message_queue and not ready
                and self.clock() > st.st_mtime + MAX_TEMP_AGE):
            self.remove(path)
            return action
        if action & STRUCT and name.endswith(SUFFIX):
            base = name[:-len(SUFFIX)]
            if not name_ok(base):
                self.warn(f"bogus file name: {self.rel(path)}")
                return action
            if message_queue:
                parts = parse_queue_id(base)
                if parts is None:
                    self.warn(f"bogus file name: {self.rel(path)}")
                    return action
                if parts.inode != st.st_ino:
                    self.warn(f"name/inode mismatch: {self.rel(path)}")
                    return action
            wanted = self.queue_path(queue, base)
            if not self.rename(path, wanted):
                return action
            if message_queue:
                self.inode_fixed += 1
            path, name = wanted, base
        if not (is_queue_id(name) if message_queue else name_ok(name)):
            self.warn(f"bogus file name: {self.rel(path)}")
            return action
        if action & STRUCT and message_queue:
            parts = parse_queue_id(name)
            assert parts is not None
            if (parts.long_form and not self.store.long_ids) or (
                    parts.inode != st.st_ino and (not parts.long_form or action & STRUCT_RED)):
                self.inode_mismatch += 1
                self._fix_queue_id(path, queue, name, st)
                return action & ~BY_WILDCARD
        if action & REQUEUE_ALL and message_queue and queue != MAILDROP:
            if ready and self.requeue(queue, name, path):
                pass
            return action
        if action & (EXPIRE_ALL | EXP_REL_ALL) and message_queue and ready \
                and queue != MAILDROP and not st.st_mode & MODE_EXPIRE \
                and self.store.set_forced_expire(queue, name):
            self.expired += 1
        if action & HOLD_ALL and message_queue and queue not in (MAILDROP, HOLD):
            if self.rename(path, self.store.path(HOLD, name)):
                self.held += 1
            return action
        if action & (RELEASE_ALL | EXP_REL_ALL) and queue == HOLD:
            if self.rename(path, self.store.path(DEFERRED, name)):
                self.released += 1
            return action
        if action & STRUCT:
            wanted = self.queue_path(queue, name)
            if path != wanted:
                self.position_mismatch += 1
                self.rename(path, wanted)
        return action

    def _fix_queue_id(self, path: str, queue: str, queue_id: str, st: os.stat_result) -> None:
        """Rename the logs, then the message, to NEWID#FIX; the next pass
        strips the suffix (so an interrupted run can be resumed)."""
        new_id = fixed_queue_id(queue_id, st.st_ino, self.store.long_ids)
        for kind in (BOUNCE, DEFER, TRACE):
            self.rename(self.store.log_path(kind, queue_id),
                        self.store.log_path(kind, new_id) + SUFFIX)
        self.rename(path, self.store.path(queue, new_id) + SUFFIX)

    # -- report -------------------------------------------------------------------------

    def report(self, action: int) -> None:
        def n(count: int) -> str:
            return f"{count} message{'s' if count != 1 else ''}"

        if action & (REQUEUE_ONE | REQUEUE_ALL):
            self.info(f"Requeued: {n(self.requeued)}")
        if action & (DELETE_ONE | DELETE_ALL):
            self.info(f"Deleted: {n(self.deleted)}")
        if action & (EXPIRE_ONE | EXPIRE_ALL | EXP_REL_ONE | EXP_REL_ALL):
            self.info(f"Force-expired: {n(self.expired)}")
        if action & (HOLD_ONE | HOLD_ALL):
            self.info(f"Placed on hold: {n(self.held)}")
        if action & (RELEASE_ONE | RELEASE_ALL | EXP_REL_ONE | EXP_REL_ALL):
            self.info(f"Released from hold: {n(self.released)}")
        if self.inode_fixed > 0:
            self.info(f"Renamed to match inode number: {n(self.inode_fixed)}")
        if self.inode_mismatch > 0 or self.inode_fixed > 0:
            self.warn("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")


def execute(sup: Superintendent, req: Request, stdin=None) -> None:
    """Repair first, then the operations in command-line order."""
    queues = req.queues
    if req.action & FOR_REPAIR:
        sup.super(queues, req.action & FOR_REPAIR)
        if sup.inode_mismatch > 0:
            sup.super(queues, req.action & FOR_REPAIR)
    if req.action & BY_QUEUE_ID and (sup.inode_mismatch > 0 or sup.inode_fixed > 0):
        sup.msgs.info("error: QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")
        sup.log.error("QUEUE FILE NAMES WERE CHANGED TO MATCH INODE NUMBERS")
        raise Fatal("CHECK YOUR QUEUE IDS AND RE-ISSUE THE COMMAND")
    one = {"-d": sup.delete_one, "-e": sup.expire_one, "-f": sup.exp_rel_one,
           "-h": sup.hold_one, "-H": sup.release_one, "-r": sup.requeue_one}
    for opt, val in req.ops:
        if val == "ALL":
            sup.super(queues, _ACTIONS[opt][1])
        elif val == "-":
            for line in (stdin if stdin is not None else sys.stdin):
                one[opt](queues, line.rstrip("\n"))
        else:
            one[opt](queues, val)
    sup.report(req.action)


def _become_mail_owner(settings) -> None:
    """Root works as mail_owner, as Postfix's postsuper does; anyone else
    must be mail_owner."""
    owner = settings.str("mail_owner")
    try:
        pw = pwd.getpwnam(owner)
    except KeyError:
        raise Fatal(f"unknown mail_owner: {owner}") from None
    if os.getuid() == 0:
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
    elif os.getuid() != pw.pw_uid:
        raise Fatal("use of this command is reserved for the superuser")


def body(msgs: Messages, argv: list[str]) -> int:
    from ..io.ipc import notify
    from ..io.maillog import MailLog
    from ..proto.attr import Attrs
    from ..queue.store import QueueStore

    os.umask(0o022)
    req = parse_args(argv)
    cfg = load_config(req.config_dir, process_name=PROG)
    settings = cfg.settings()
    try:
        log = MailLog.from_settings(settings, PROG)
    except OSError:
        log = MailLog(syslog_name=settings.str("syslog_name"), daemon=PROG,
                      maillog_file="/dev/null")
    try:
        try:
            _become_mail_owner(settings)
            store = QueueStore.from_settings(settings)
            sup = Superintendent(settings, store, msgs, log, req.verbose)
            try:
                execute(sup, req)
            finally:
                sup.close()
        except Fatal as err:
            log.fatal(str(err))
            raise
        if sup.requeued:
            notify(os.path.join(settings.str("queue_directory"), "public", "qmgr"),
                   Attrs.of(request="wakeup"))
    finally:
        log.close()
    return 0


def main(argv: list[str]) -> int:
    return run(PROG, body, argv)


__all__ = ["main", "parse_args", "Superintendent", "execute", "fixed_queue_id"]

"""Maildir++ quota at delivery: reading, recalculating and appending to
``maildirsize`` the way Courier's deliverquota, maildrop and Dovecot do
(the rules are in :mod:`hato.policy.maildir_quota`; PROTOCOLS.md §3.5).

:class:`MaildirsizeKeeper` is the quota hook of
:func:`hato.delivery.maildir.deliver_maildir`:

* ``check(maildir, size)`` runs once the message is written in ``tmp/``
  (so *size* is exact, the ``S=`` of its name) and before it is moved into
  ``new/``. It finds the quota root (a Maildir with a ``maildirfolder``
  file is a sub-folder: its parent holds ``maildirsize``); when no table
  gives a quota and there is no ``maildirsize`` it is done (no quota, no
  lock: hato creates the file only from a table quota). Otherwise it takes
  an exclusive flock() on that directory — so hato's own concurrent
  deliveries to one Maildir check and append one after the other and never
  overshoot the quota — reads ``maildirsize``, recalculates it when the
  rules say so, and raises :class:`~hato.delivery.dsn.DeliveryError` when
  the message does not fit: ``5.2.2`` with ``hato_mailbox_quota_bounce =
  yes``, else ``4.2.2`` (deferred until space frees), with the text of
  ``hato_mailbox_quota_message``.
* ``add(maildir, size, count)`` appends ``<size> <count>`` in one write()
  to the file opened with O_APPEND, which is what makes concurrent
  appends by different programs safe. It never fails the delivery (the
  message is already in ``new/``): a problem is a warning, and the next
  delivery recalculates.
* ``release()`` drops the lock.

The quota in force is the one the tables give (``hato_mailbox_quota_maps``,
then ``hato_mailbox_quota_default``: :class:`QuotaPolicy.quota`), else
the first line of ``maildirsize``; without either there is no quota. A
table quota that differs from the file's first line rewrites the file
(recalculated), as Dovecot does; a table quota without a file creates one
with ``hato_mailbox_quota_create = yes``, otherwise the usage is counted
from the Maildir for every delivery.

Recalculation sums ``new/`` and ``cur/`` of the Maildir and of each
``.Folder`` but ``.Trash``, taking sizes from ``,S=`` in the names and
stat() otherwise (a file that vanishes is skipped); writes the new file in
``tmp/`` and renames it over ``maildirsize``; then checks that no scanned
directory changed meanwhile, else counts again (three times at most, then
removes the file so that the next reader counts). A ``maildirsize`` that
cannot be read, or whose quota line does not parse while no table gives
one, defers the delivery (4.3.0) with a warning: never a loss.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..policy.maildir_quota import (
    QuotaSpec,
    SizeFile,
    Usage,
    counts_toward_quota,
    format_maildirsize,
    format_usage_line,
    over_quota,
    parse_maildirsize,
    parse_quota,
    recalculation_reason,
    size_from_name,
)
from ..tables.base import Table
from ..tables.search import find_address_mapping
from .dsn import DeliveryError
from .mbox import privileged_for

FILENAME = "maildirsize"
_COUNTER = itertools.count(1)
_READ_LIMIT = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

Warn = Callable[[str], None]


@dataclass(frozen=True)
class QuotaPolicy:
    """What the hato_mailbox_quota_* parameters say for one recipient."""

    quota: QuotaSpec | None = None  # from the tables or the default; None: the file's
    create: bool = True
    bounce: bool = False
    message: str = "Mailbox full"

    @property
    def full_dsn(self) -> str:
        return "5.2.2" if self.bounce else "4.2.2"


def quota_root(maildir: str) -> str:
    """The Maildir whose ``maildirsize`` counts for *maildir*: its parent
    when *maildir* is a Maildir++ sub-folder (has ``maildirfolder``)."""
    path = os.path.normpath(maildir)
    if os.path.exists(os.path.join(path, "maildirfolder")):
        return os.path.dirname(path)
    return path


def scan_usage(root: str) -> tuple[Usage, dict[str, int]]:
    """Count the Maildir *root*: (usage, mtime in ns of each directory read)."""
    folders = [root]
    try:
        with os.scandir(root) as it:
            for entry in it:
                if counts_toward_quota(entry.name) and entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
    except FileNotFoundError:
        return Usage(), {}
    size = count = 0
    mtimes: dict[str, int] = {}
    for folder in sorted(folders):
        for sub in ("new", "cur"):
            d = os.path.join(folder, sub)
            try:
                mtimes[d] = os.stat(d).st_mtime_ns
                names = os.listdir(d)
            except (FileNotFoundError, NotADirectoryError):
                continue
            for name in names:
                if name.startswith("."):
                    continue
                n = size_from_name(name)
                if n is None:
                    try:
                        n = os.lstat(os.path.join(d, name)).st_size
                    except FileNotFoundError:
                        continue  # gone while we counted
                size += n
                count += 1
    return Usage(size, count), mtimes


def _unchanged(mtimes: dict[str, int]) -> bool:
    for d, ns in mtimes.items():
        try:
            if os.stat(d).st_mtime_ns != ns:
                return False
        except FileNotFoundError:
            return False
    return True


def read_maildirsize(root: str) -> tuple[SizeFile | None, int, float]:
    """(parsed file or None when missing, its size, its mtime); OSError
    for anything but a missing file."""
    try:
        fd = os.open(os.path.join(root, FILENAME),
                     os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, 0, 0.0
    try:
        st = os.fstat(fd)
        chunks = []
        got = 0
        while got < min(st.st_size, _READ_LIMIT):
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    return parse_maildirsize(b"".join(chunks)), max(st.st_size, got), st.st_mtime


class MaildirsizeKeeper:
    """The quota hook for one delivery (see the module documentation)."""

    def __init__(self, policy: QuotaPolicy, *, uid: int | None = None,
                 gid: int | None = None, warn: Warn | None = None,
                 clock: Callable[[], float] = time.time):
        self.policy = policy
        self.uid = uid
        self.gid = gid
        self.warn: Warn = warn or (lambda text: None)
        self.clock = clock
        self._lock_fd: int | None = None
        self._append_to: str | None = None

    # -- the hook ----------------------------------------------------------------

    def check(self, maildir: str, size: int) -> None:
        root = quota_root(maildir)
        if self.policy.quota is None and not os.path.lexists(os.path.join(root, FILENAME)):
            # No quota from the tables and no maildirsize: nothing to check
            # or keep up to date, and hato creates the file only from a
            # table quota, so concurrent deliveries need not take turns.
            self.release()
            self._append_to = None
            return
        self._lock(root)
        quota, usage, keep = self.current(root, size, write=True)
        self._append_to = root if keep else None
        if quota is not None and over_quota(quota, usage, size):
            self.release()
            raise DeliveryError(f"maildir delivery failed: {self.policy.message}",
                                dsn=self.policy.full_dsn)

    def add(self, maildir: str, size: int, count: int) -> None:
        root = self._append_to
        if root is None:
            return
        path = os.path.join(root, FILENAME)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
                         | os.O_NONBLOCK)
        except FileNotFoundError:
            return  # removed meanwhile: the next delivery counts again
        except OSError as err:
            self.warn(f"{path}: cannot append: {err.strerror or err}")
            return
        try:
            line = format_usage_line(size, count)
            if os.write(fd, line) != len(line):
                self.warn(f"{path}: short write; it will be recalculated")
        except OSError as err:
            self.warn(f"{path}: cannot append: {err.strerror or err}")
        finally:
            os.close(fd)

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    # -- the decisions -----------------------------------------------------------

    def status(self, maildir: str, size: int) -> tuple[QuotaSpec | None, Usage]:
        """The quota and usage of *maildir*, without writing anything
        (smtpd's RCPT-time question)."""
        quota, usage, _keep = self.current(quota_root(maildir), size, write=False)
        return quota, usage

    def current(self, root: str, size: int, *,
                write: bool) -> tuple[QuotaSpec | None, Usage, bool]:
        """(quota in force or None, usage, whether maildirsize is kept up to
        date), recalculating when the rules say so (and, with *write*,
        rewriting the file)."""
        path = os.path.join(root, FILENAME)
        try:
            sf, file_size, mtime = read_maildirsize(root)
        except OSError as err:
            self.warn(f"{path}: cannot read: {err.strerror or err}")
            raise DeliveryError(f"maildir delivery failed: cannot read {path}: "
                                f"{err.strerror or err}", dsn="4.3.0") from err
        if self.policy.quota is not None:
            quota = self.policy.quota
        elif sf is not None and sf.quota is not None:
            quota = sf.quota
        elif sf is not None:
            self.warn(f"{path}: {sf.problems[0]}; deferring delivery")
            raise DeliveryError(f"maildir delivery failed: bad quota definition in {path}",
                                dsn="4.3.0")
        else:
            return None, Usage(), False
        if quota.bytes == 0 or quota.count == 0:
            self.warn(f"{path}: quota {quota.text}: a limit of 0 means no limit")
        changed = sf is not None and self.policy.quota is not None \
            and sf.quota_text != self.policy.quota.text
        if changed:
            reason: str | None = f"quota changed to {quota.text}"
        else:
            reason = recalculation_reason(sf, file_size=file_size,
                                          age=self.clock() - mtime, quota=quota, size=size)
        if reason is None:
            assert sf is not None
            return quota, sf.usage, True
        if sf is not None and sf.problems:
            self.warn(f"{path}: {reason}; recalculating")
        keep = write and (sf is not None or self.policy.create)
        if not keep:
            usage, _ = scan_usage(root)
            return quota, usage, False
        usage, kept = self.recalculate(root, quota.text)
        return quota, usage, kept

    def recalculate(self, root: str, quota_text: str) -> tuple[Usage, bool]:
        """Count *root* and write a new maildirsize; (usage, whether the
        file now exists)."""
        path = os.path.join(root, FILENAME)
        usage = Usage()
        for _attempt in range(3):
            usage, mtimes = scan_usage(root)
            try:
                self._replace(root, format_maildirsize(quota_text, usage))
            except OSError as err:
                self.warn(f"{path}: cannot write a new one: {err.strerror or err}")
                return usage, False
            if _unchanged(mtimes):
                return usage, True
        try:
            os.unlink(path)  # still racing: let the next reader count
        except OSError:
            pass
        return usage, False

    # -- file work ---------------------------------------------------------------

    def _lock(self, root: str) -> None:
        self.release()
        try:
            fd = os.open(root, _DIR_FLAGS)
        except OSError as err:
            raise DeliveryError(f"maildir delivery failed: open {root}: "
                                f"{err.strerror or err}", dsn="4.2.0") from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as err:
            os.close(fd)
            raise DeliveryError(f"maildir delivery failed: lock {root}: "
                                f"{err.strerror or err}", dsn="4.2.0") from err
        self._lock_fd = fd

    def _replace(self, root: str, data: bytes) -> None:
        name = f"{int(self.clock())}.{os.getpid()}_{next(_COUNTER)}.{FILENAME}"
        tmp = os.path.join(root, "tmp", name)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            try:
                if privileged_for(self.uid):
                    os.fchown(fd, self.uid, -1 if self.gid is None else self.gid)  # type: ignore[arg-type]
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, os.path.join(root, FILENAME))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise


def quota_answer(keeper: MaildirsizeKeeper, maildir: str, size: int) -> tuple[str, str, str]:
    """The answer to smtpd's RCPT-time question for *maildir*: (status,
    dsn, text) as in a delivery status — ``sent`` when a message of *size*
    bytes (at least one) fits, else ``deferred`` 4.2.2 or ``bounced``
    5.2.2 with hato_mailbox_quota_message. Nothing is written."""
    quota, usage = keeper.status(maildir, max(size, 1))
    if quota is not None and over_quota(quota, usage, max(size, 1)):
        policy = keeper.policy
        return ("bounced" if policy.bounce else "deferred"), policy.full_dsn, policy.message
    return "sent", "2.0.0", "mailbox has room"


def make_maildirsize(root: str, quota: QuotaSpec, *, uid: int | None = None,
                     gid: int | None = None, warn: Warn | None = None) -> Usage:
    """Install *quota* on the Maildir *root*: a new maildirsize with the
    quota line and the usage counted from the directory (maildirmake -q)."""
    keeper = MaildirsizeKeeper(QuotaPolicy(quota=quota), uid=uid, gid=gid, warn=warn)
    keeper._lock(root)
    try:
        usage, kept = keeper.recalculate(root, quota.text)
        if not kept:
            raise OSError(errno.EAGAIN, f"cannot write {os.path.join(root, FILENAME)}")
        return usage
    finally:
        keeper.release()


@dataclass
class QuotaSettings:
    """The hato_mailbox_quota_* parameters of a delivery agent.

    :meth:`policy_for` looks the recipient up in ``hato_mailbox_quota_maps``
    as virtual(5) tables are searched (``user+ext@domain``,
    ``user@domain``, with *local_domain* also ``user+ext`` and ``user``,
    then ``@domain``), then takes ``hato_mailbox_quota_default``; a table
    that fails raises TableRetry (the caller defers), a value that is not
    ``NNNS[,MMMC]`` defers with 4.3.0 and a warning."""

    maps: Iterable[Table] = ()
    default: str = ""
    create: bool = True
    bounce: bool = False
    message: str = "Mailbox full"
    recipient_delimiter: str = ""
    rcpt_check: bool = False

    @classmethod
    def from_settings(cls, settings, maps: Iterable[Table]) -> "QuotaSettings":
        s = settings
        return cls(maps=maps, default=s.str("hato_mailbox_quota_default"),
                   create=s.bool("hato_mailbox_quota_create"),
                   bounce=s.bool("hato_mailbox_quota_bounce"),
                   message=s.str("hato_mailbox_quota_message") or "Mailbox full",
                   recipient_delimiter=s.str("recipient_delimiter"),
                   rcpt_check=s.bool("hato_mailbox_quota_rcpt_check"))

    def refresh(self) -> None:
        """See a rebuilt table at once (a TableList refreshes its tables)."""
        refresh = getattr(self.maps, "refresh", None)
        if refresh is not None:
            refresh()

    def policy_for(self, address: str, *, local_domain: bool = False,
                   warn: Warn | None = None) -> QuotaPolicy:
        found = find_address_mapping(self.maps, address,
                                     recipient_delimiter=self.recipient_delimiter,
                                     local_domain=local_domain) if address else None
        text, where = (found.value, "hato_mailbox_quota_maps") if found is not None \
            else (self.default, "hato_mailbox_quota_default")
        quota = None
        if text.strip():
            try:
                quota = parse_quota(text)
            except ValueError:
                if warn is not None:
                    warn(f"{where}: bad quota {text.strip()[:40]!r} for {address}; "
                         "expected NNNS, NNNC or NNNS,MMMC")
                raise DeliveryError(f"maildir delivery failed: bad quota in {where}",
                                    dsn="4.3.0") from None
        return QuotaPolicy(quota=quota, create=self.create, bounce=self.bounce,
                           message=self.message)


__all__ = ["FILENAME", "MaildirsizeKeeper", "QuotaPolicy", "QuotaSettings", "make_maildirsize",
           "quota_answer", "quota_root",
           "read_maildirsize", "scan_usage"]

"""hato maildirmake: create Maildirs, Maildir++ folders and quotas, as
Courier's maildirmake(1).

    maildirmake [-S] [-q quota] [-f folder | -F folder] [-s mode] maildir

* ``maildirmake DIR`` creates DIR with ``tmp/``, ``new/`` and ``cur/``
  (mode 0700; with ``-S`` a sharable Maildir, whose top directory is 0755).
  An existing DIR is an error (``maildirmake: DIR: File exists``).
* ``-f folder`` creates the folder ``.folder`` (with its ``maildirfolder``
  file) in the existing Maildir DIR; ``-F folder`` takes the name in the
  locale's character set and writes it in IMAP's modified UTF-7, as ``-f``
  expects. Sub-folders use ``.`` as the separator (``-f Drafts.Urgent``).
* ``-s mode`` with ``-f``: a folder of a sharable Maildir that others may
  read (``read``) or also write (``write``), or only the group
  (``read,group``, ``write,group``), with Courier's permissions.
* ``-q quota`` installs a Maildir++ quota (``NNNS``, ``NNNC``,
  ``NNNS,MMMC``): ``maildirsize`` gets the quota line as Courier writes
  it (``S`` before ``C``, no leading zeros, a zero limit left out; a quota
  of zero changes nothing) and the usage counted from the Maildir
  (``.Trash`` excluded), in the
  format Courier's tools write, so that deliverquota, maildrop, Dovecot
  and hato's local and virtual agents all honour it. On an existing
  Maildir this changes its quota and recalculates; a Maildir that does
  not exist yet is created first (Courier's ``maildirmake -q`` needs an
  existing one).

Exit status 0 on success, 1 with a message on standard error otherwise.
The shared-folder links (``--add``, ``--del``) are not supported.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Sequence

from ..delivery.dsn import DeliveryError
from ..delivery.maildir_quota import make_maildirsize
from ..policy.maildir_quota import parse_quota
from .common import UsageError, parse_options

USAGE = "Usage: maildirmake [ options ] maildir"

#: -s mode -> (folder directory mode, tmp/new/cur mode), as Courier sets them
SHARED_MODES = {
    frozenset({"read"}): (0o755, 0o755),
    frozenset({"write"}): (0o1755, 0o1777),
    frozenset({"read", "group"}): (0o750, 0o750),
    frozenset({"write", "group"}): (0o1750, 0o1770),
}


def modified_utf7(name: str) -> str:
    """IMAP's modified UTF-7 (RFC 3501 5.1.3): printable ASCII as is, ``&``
    as ``&-``, anything else as ``&`` + base64 of UTF-16BE (``,`` for
    ``/``, no padding) + ``-``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode("ascii").rstrip("=")
                       .replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


class _Failed(Exception):
    pass


def _mkdir(path: str, mode: int) -> None:
    try:
        os.mkdir(path, 0o700)
        os.chmod(path, mode)  # exact, whatever the umask
    except OSError as err:
        raise _Failed(f"maildirmake: {path}: {err.strerror}") from err


def make_maildir(path: str, *, mode: int = 0o700, sub_mode: int = 0o700) -> None:
    """Create the Maildir *path* with tmp/, new/ and cur/; the top
    directory gets *mode*, the three *sub_mode*."""
    _mkdir(path, mode)
    for sub in ("tmp", "new", "cur"):
        _mkdir(os.path.join(path, sub), sub_mode)


def make_folder(maildir: str, folder: str, *, shared: frozenset[str] | None = None) -> str:
    """Create the Maildir++ folder ``.folder`` in *maildir*; return its path."""
    if not folder or "/" in folder or folder.startswith(".") or folder.endswith(".") \
            or ".." in folder:
        raise _Failed(f"maildirmake: invalid folder name: {folder}")
    if not os.path.isdir(os.path.join(maildir, "new")):
        raise _Failed(f"maildirmake: {maildir}: not a maildir")
    mode, sub_mode = (0o700, 0o700) if shared is None else SHARED_MODES[shared]
    path = os.path.join(maildir, "." + folder)
    make_maildir(path, mode=mode, sub_mode=sub_mode)
    try:
        fd = os.open(os.path.join(path, "maildirfolder"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.close(fd)
    except OSError as err:
        raise _Failed(f"maildirmake: {path}/maildirfolder: {err.strerror}") from err
    return path


def main(argv: Sequence[str]) -> int:
    try:
        opts, args = parse_options(argv, "Sq:f:F:s:")
    except UsageError:
        print(USAGE, file=sys.stderr)
        return 1
    sharable = False
    quota_text: str | None = None
    folder: str | None = None
    shared: frozenset[str] | None = None
    for opt, val in opts:
        if opt == "-S":
            sharable = True
        elif opt == "-q":
            quota_text = val
        elif opt == "-f":
            folder = val
        elif opt == "-F":
            folder = modified_utf7(val)
        elif opt == "-s":
            shared = frozenset(w.strip().lower() for w in val.split(",") if w.strip())
            if shared not in SHARED_MODES:
                print(f"maildirmake: invalid -s mode: {val}", file=sys.stderr)
                return 1
    if len(args) != 1 or (shared is not None and folder is None):
        print(USAGE, file=sys.stderr)
        return 1
    maildir = args[0]
    quota = None
    if quota_text is not None:
        try:
            quota = parse_quota(quota_text).canonical()
        except ValueError:
            print(f"maildirmake: invalid quota: {quota_text} "
                  "(expected NNNS, NNNC or NNNS,MMMC)", file=sys.stderr)
            return 1
    try:
        if folder is not None:
            make_folder(maildir, folder, shared=shared)
        elif quota is None or not os.path.exists(maildir):
            make_maildir(maildir, mode=0o755 if sharable else 0o700)
        if quota is not None and not quota.unlimited:
            try:
                make_maildirsize(os.path.normpath(maildir), quota,
                                 warn=lambda text: print(f"maildirmake: warning: {text}",
                                                         file=sys.stderr))
            except OSError as err:
                raise _Failed(f"maildirmake: {maildir}/maildirsize: "
                              f"{err.strerror or err}") from err
            except DeliveryError as err:
                raise _Failed(f"maildirmake: {err.text}") from err
    except _Failed as failed:
        print(str(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``unix:passwd.byname`` and ``unix:group.byname``: the system's user and
group databases, through the C library (so NSS sources count), as Postfix's
dict_unix.

``unix:passwd.byname`` answers a login name with the passwd(5) line
``name:passwd:uid:gid:gecos:dir:shell``; ``unix:group.byname`` answers a
group name with the group(5) line ``name:passwd:gid:member,member``. Keys are
folded like any fixed-string table's (``ROOT`` finds ``root``). When the
database cannot be read at all (not even uid or gid 0 is found), a lookup is
a temporary failure, as in Postfix.
"""

from __future__ import annotations

import grp
import pwd

from .base import OpenFlags, Table, TableError, TableRetry
from .patternfile import fold, utf8_mode
from .simple import require_name


def passwd_line(key: str) -> str | None:
    try:
        pw = pwd.getpwnam(key)
    except (KeyError, ValueError):
        return None
    return (f"{pw.pw_name}:{pw.pw_passwd}:{pw.pw_uid}:{pw.pw_gid}:"
            f"{pw.pw_gecos}:{pw.pw_dir}:{pw.pw_shell}")


def group_line(key: str) -> str | None:
    try:
        gr = grp.getgrnam(key)
    except (KeyError, ValueError):
        return None
    return f"{gr.gr_name}:{gr.gr_passwd}:{gr.gr_gid}:{','.join(gr.gr_mem)}"


def _passwd_readable() -> bool:
    try:
        pwd.getpwuid(0)
    except KeyError:
        return False
    return True


def _group_readable() -> bool:
    try:
        grp.getgrgid(0)
    except KeyError:
        return False
    return True


_MAPS = {
    "passwd.byname": (passwd_line, _passwd_readable, "cannot access UNIX password database"),
    "group.byname": (group_line, _group_readable, "cannot access UNIX group database"),
}


class UnixTable(Table):
    """``unix:passwd.byname`` / ``unix:group.byname``."""

    type_name = "unix"

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags()):
        super().__init__(spec, flags)
        require_name(self.type_name, spec)
        if spec not in _MAPS:
            raise TableError(f"unknown table: unix:{spec}")
        self._lookup, self._readable, self._why = _MAPS[spec]
        self.utf8 = utf8_mode(flags)

    def get(self, key: str) -> str | None:
        if self.flags.fold_case:
            key = fold(key, self.utf8)
        try:
            value = self._lookup(key)
        except OSError as err:
            raise TableRetry(self.name, f"{self._why}: {err}") from None
        if value is None and not self._readable():
            raise TableRetry(self.name, self._why)
        return value


__all__ = ["UnixTable", "group_line", "passwd_line"]

"""hato's SASL user database: per-mechanism secrets, never the password.

The database is one LMDB file (default ``$config_directory/sasldb.lmdb``,
i.e. ``/etc/hato/sasldb.lmdb``; Cyrus' ``sasldb_path`` in smtpd.conf points
elsewhere). It is not Cyrus' ``/etc/sasldb2``, whose format stores plaintext
passwords; hato never writes there. ``hato saslpasswd`` and
``hato sasldblistusers`` manage it.

One record per (user, realm): the key is ``user NUL realm`` (UTF-8), the
value a JSON object holding, for the mechanisms asked for:

``argon2id``
    an argon2id hash (argon2-cffi's encoded form) of the password, for PLAIN
    and LOGIN;
``SCRAM-SHA-1``, ``SCRAM-SHA-256``
    salt, StoredKey, ServerKey and iteration count (RFC 5802 §3) computed
    from the SASLprep'ed password;
``CRAM-MD5``
    the two HMAC-MD5 states after absorbing ``password ^ ipad`` and
    ``password ^ opad`` (:class:`~hato.proto.md5state.HmacMd5State`), as
    Cyrus' old ``cmusaslsecretCRAM-MD5``. It does not reveal the password,
    but it is enough to answer CRAM-MD5: ``saslpasswd -n`` leaves it out.

Updates are atomic: a writer takes an exclusive ``flock`` on the current
file, writes a complete new LMDB file next to it, fsyncs it and renames it
over the old one (keeping its mode and owner). Readers open the file
read-only without LMDB's lock table and so need only read permission; they
notice a rename (inode, size, mtime) and reopen. A new database is created
with mode 0640; :func:`permission_warning` complains about one that others
may read.

Realms follow Cyrus: a login name ``bob@example.org`` is user ``bob`` in
realm ``example.org``; a name without ``@`` is in the *default realm*
(``smtpd_sasl_local_domain``, else the host name).
"""

from __future__ import annotations

import base64
import errno
import fcntl
import json
import logging
import os
import secrets
import socket
import stat
import tempfile
import threading
from collections.abc import Iterable

import argon2
import lmdb

from ..proto.md5state import HmacMd5State
from ..proto.sasl import SCRAM_HASHES, AuthTempFail, ScramKeys, scram_keys_from_password
from ..tables.lmdb_table import open_env, write_file
from .backend import split_user

log = logging.getLogger("hato.auth.sasldb")

#: The file name under $config_directory.
DEFAULT_NAME = "sasldb.lmdb"
#: Mode of a newly created database.
CREATE_MODE = 0o640
#: Every mechanism the database can hold a secret for.
ALL_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256")
#: Mechanisms whose secret lets its holder authenticate (with that mechanism)
#: without knowing the password; ``saslpasswd -n`` leaves them out.
PLAINTEXT_EQUIVALENT = ("CRAM-MD5",)
#: Cyrus' default scram_iteration_counter.
DEFAULT_ITERATIONS = 4096
FORMAT_VERSION = 1
NOT_OURS = ("not a hato sasldb; Cyrus' sasldb2 files cannot be read: create the users "
            "again with hato saslpasswd")

#: argon2id with argon2-cffi's defaults (RFC 9106's second recommendation).
PASSWORD_HASHER = argon2.PasswordHasher()


class SasldbError(Exception):
    """The database cannot be read or written (message says which file, why)."""


def default_path(config_directory: str) -> str:
    return os.path.join(config_directory, DEFAULT_NAME)


def permission_warning(path: str) -> str | None:
    """A warning when the database at *path* is readable or writable by
    others, or None (also when it does not exist)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if st.st_mode & 0o007:
        return (f"{path} is accessible by others (mode {stat.S_IMODE(st.st_mode):04o}): "
                f"it holds password hashes; chmod o-rwx {path}")
    return None


def saslprep_password(password: str) -> bytes:
    """The password as SCRAM clients hash it: SASLprep'ed (RFC 4013) when
    that succeeds, else as given; UTF-8."""
    try:
        from scramp.utils import saslprep

        prepared = saslprep(password)
    except Exception:  # noqa: BLE001 - prohibited characters: use it raw, as Cyrus does
        prepared = password
    return prepared.encode("utf-8", "surrogateescape")


def _key(user: str, realm: str) -> bytes:
    if "\0" in user or "\0" in realm:
        raise ValueError("user and realm may not contain NUL")
    return f"{user}\0{realm}".encode("utf-8", "surrogateescape")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def make_entry(password: str, mechanisms: Iterable[str] = ALL_MECHANISMS, *,
               iterations: int = DEFAULT_ITERATIONS) -> dict:
    """The record for *password*, with secrets for *mechanisms*."""
    mechs = {m.upper() for m in mechanisms}
    unknown = mechs - set(ALL_MECHANISMS)
    if unknown:
        raise ValueError(f"unknown mechanism(s): {', '.join(sorted(unknown))}")
    raw = password.encode("utf-8", "surrogateescape")
    entry: dict = {"version": FORMAT_VERSION}
    if mechs & {"PLAIN", "LOGIN"}:
        entry["argon2id"] = PASSWORD_HASHER.hash(raw)
    if "CRAM-MD5" in mechs:
        entry["CRAM-MD5"] = HmacMd5State.from_key(raw).to_bytes().hex()
    for mech in SCRAM_HASHES:
        if mech in mechs:
            keys = scram_keys_from_password(mech, saslprep_password(password),
                                            secrets.token_bytes(16), iterations)
            entry[mech] = {"salt": _b64(keys.salt), "stored_key": _b64(keys.stored_key),
                           "server_key": _b64(keys.server_key),
                           "iterations": keys.iterations}
    return entry


def entry_mechanisms(entry: dict) -> list[str]:
    """The mechanisms a record can serve, in :data:`ALL_MECHANISMS` order."""
    have = set()
    if "argon2id" in entry:
        have |= {"PLAIN", "LOGIN"}
    have |= {m for m in ("CRAM-MD5", *SCRAM_HASHES) if m in entry}
    return [m for m in ALL_MECHANISMS if m in have]


_DUMMY_HASH: str | None = None


def _dummy_verify(password: bytes) -> None:
    """Spend an argon2 verification, so an unknown user takes as long as a
    wrong password."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = PASSWORD_HASHER.hash(secrets.token_bytes(16))
    try:
        PASSWORD_HASHER.verify(_DUMMY_HASH, password)
    except argon2.exceptions.VerificationError:
        pass


class Sasldb:
    """hato's sasldb at *path*; implements the verifier protocols of
    :mod:`hato.auth.backend` (check_password, cram_md5_secret, scram_keys).

    *default_realm* is the realm of login names without ``@``
    (``smtpd_sasl_local_domain``, else ``myhostname``); None means the host
    name, as Cyrus' saslpasswd2 uses. Safe to share between threads.
    """

    def __init__(self, path: str, *, writable: bool = False,
                 default_realm: str | None = None):
        self.path = path
        self.writable = writable
        self.default_realm = default_realm if default_realm else socket.gethostname()
        self.warning = permission_warning(path)
        if self.warning:
            log.warning("%s", self.warning)
        self._lock = threading.Lock()
        self._env: lmdb.Environment | None = None
        self._ident: tuple[int, int, int, int] | None = None
        self._missing_logged = False

    # ---------------------------------------------------------------- reading

    def _refresh(self) -> bool:
        """(Re)open the file if it changed; False when it does not exist.
        Called with self._lock held."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._close_env()
            if not self._missing_logged:
                log.warning("SASL database %s does not exist: no users", self.path)
                self._missing_logged = True
            return False
        except OSError as err:
            raise AuthTempFail(f"SASL database {self.path}: {err.strerror}") from None
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        if ident == self._ident and (self._env is not None or st.st_size == 0):
            return True
        self._close_env()
        self._ident = ident
        self._missing_logged = False
        if st.st_size == 0:
            return True
        try:
            self._env = open_env(self.path)
        except lmdb.Error as err:
            self._ident = None
            raise AuthTempFail(f"SASL database {self.path}: cannot open: {err} "
                               f"({NOT_OURS})") from None
        return True

    def _close_env(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
        self._ident = None

    def get(self, user: str, realm: str) -> dict | None:
        """The record of (*user*, *realm*), or None. Raises AuthTempFail when
        the file cannot be read."""
        key = _key(user, realm)
        with self._lock:
            if not self._refresh() or self._env is None:
                return None
            try:
                with self._env.begin(buffers=False) as txn:
                    raw = txn.get(key)
            except lmdb.BadValsizeError:
                return None
            except lmdb.Error as err:
                self._close_env()
                raise AuthTempFail(f"SASL database {self.path}: {err}") from None
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:
            log.error("SASL database %s: corrupt record for %s@%s", self.path, user, realm)
            return None
        return entry if isinstance(entry, dict) else None

    def _lookup(self, login: str) -> tuple[str, str, dict | None]:
        user, realm = split_user(login, self.default_realm)
        try:
            entry = self.get(user, realm)
        except ValueError:
            entry = None
        return user, realm, entry

    def check_password(self, user: str, password: str) -> bool:
        raw = password.encode("utf-8", "surrogateescape")
        name, realm, entry = self._lookup(user)
        hashed = entry.get("argon2id") if entry else None
        if not isinstance(hashed, str):
            _dummy_verify(raw)
            return False
        try:
            return bool(PASSWORD_HASHER.verify(hashed, raw))
        except argon2.exceptions.VerifyMismatchError:
            return False
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            log.error("SASL database %s: bad password hash for %s@%s", self.path, name, realm)
            return False

    def cram_md5_secret(self, user: str) -> HmacMd5State | None:
        name, realm, entry = self._lookup(user)
        value = entry.get("CRAM-MD5") if entry else None
        if not isinstance(value, str):
            return None
        try:
            return HmacMd5State.from_bytes(bytes.fromhex(value))
        except ValueError:
            log.error("SASL database %s: bad CRAM-MD5 secret for %s@%s", self.path, name, realm)
            return None

    def scram_keys(self, user: str, mechanism: str) -> ScramKeys | None:
        name, realm, entry = self._lookup(user)
        value = entry.get(mechanism.upper()) if entry else None
        if not isinstance(value, dict):
            return None
        try:
            return ScramKeys(base64.b64decode(value["salt"], validate=True),
                             base64.b64decode(value["stored_key"], validate=True),
                             base64.b64decode(value["server_key"], validate=True),
                             int(value["iterations"]))
        except (KeyError, TypeError, ValueError):
            log.error("SASL database %s: bad %s keys for %s@%s", self.path, mechanism,
                      name, realm)
            return None

    def _all(self) -> dict[bytes, bytes]:
        with self._lock:
            try:
                present = self._refresh()
            except AuthTempFail as err:
                raise SasldbError(str(err)) from None
            if not present or self._env is None:
                return {}
            try:
                with self._env.begin(buffers=False) as txn:
                    return dict(txn.cursor())
            except lmdb.Error as err:
                raise SasldbError(f"SASL database {self.path}: {err}") from None

    def users(self) -> list[tuple[str, str, list[str]]]:
        """Every (user, realm, mechanisms), sorted by realm then user."""
        out = []
        for key, value in self._all().items():
            user, _, realm = key.decode("utf-8", "surrogateescape").partition("\0")
            try:
                entry = json.loads(value)
            except ValueError:
                entry = {}
            out.append((user, realm, entry_mechanisms(entry if isinstance(entry, dict) else {})))
        return sorted(out, key=lambda t: (t[1], t[0]))

    def exists(self) -> bool:
        return os.path.exists(self.path)

    # ---------------------------------------------------------------- writing

    def set_password(self, user: str, realm: str, password: str,
                     mechanisms: Iterable[str] = ALL_MECHANISMS, *,
                     iterations: int = DEFAULT_ITERATIONS) -> None:
        """Create or replace (*user*, *realm*) with secrets for *mechanisms*
        (a new password drops every old secret)."""
        if not user:
            raise ValueError("empty user name")
        if not password:
            raise ValueError("empty password")
        key = _key(user, realm)
        entry = make_entry(password, mechanisms, iterations=iterations)
        value = json.dumps(entry, sort_keys=True).encode("ascii")

        def change(records: dict[bytes, bytes]) -> bool:
            records[key] = value
            return True

        self._update(change)

    def delete(self, user: str, realm: str) -> bool:
        """Remove (*user*, *realm*); False when it was not there."""
        key = _key(user, realm)
        found = False

        def change(records: dict[bytes, bytes]) -> bool:
            nonlocal found
            found = records.pop(key, None) is not None
            return found

        if os.path.exists(self.path):
            self._update(change)
        return found

    def _update(self, change) -> None:
        if not self.writable:
            raise SasldbError(f"SASL database {self.path}: opened read-only")
        fd, st = self._lock_current()
        try:
            records: dict[bytes, bytes] = {}
            if st.st_size:
                try:
                    env = open_env(self.path)
                    try:
                        with env.begin(buffers=False) as txn:
                            records = dict(txn.cursor())
                    finally:
                        env.close()
                except lmdb.Error as err:
                    raise SasldbError(f"SASL database {self.path}: cannot read: {err} "
                                      f"({NOT_OURS})") from None
            if not change(records):
                return
            self._replace(records, st)
        finally:
            os.close(fd)  # also releases the lock

    def _lock_current(self) -> tuple[int, os.stat_result]:
        """An fd on the current file, exclusively locked (creating an empty
        database file when there is none)."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                try:
                    fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                 CREATE_MODE)
                except FileExistsError:
                    continue
                except OSError as err:
                    raise SasldbError(f"cannot create {self.path}: {err.strerror}") from None
                os.fchmod(fd, CREATE_MODE)
                os.close(fd)
                continue
            except OSError as err:
                raise SasldbError(f"cannot open {self.path}: {err.strerror}") from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            st = os.fstat(fd)
            try:
                now = os.stat(self.path)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                return fd, st
            os.close(fd)

    def _replace(self, records: dict[bytes, bytes], st: os.stat_result) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        base = os.path.basename(self.path)
        try:
            tfd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".tmp", dir=directory)
        except OSError as err:
            raise SasldbError(f"cannot write in {directory}: {err.strerror}") from None
        try:
            os.fchmod(tfd, stat.S_IMODE(st.st_mode))
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(tfd, st.st_uid, st.st_gid)
                except PermissionError:
                    pass
            os.close(tfd)
            tfd = -1
            write_file(tmp, records)
            os.rename(tmp, self.path)
            tmp = ""
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except lmdb.Error as err:
            raise SasldbError(f"error writing {self.path}: {err}") from None
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise SasldbError(f"error writing {self.path}: no space left on device") from None
            raise SasldbError(f"error writing {self.path}: {err.strerror}") from None
        finally:
            if tfd >= 0:
                os.close(tfd)
            if tmp:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass

    def close(self) -> None:
        with self._lock:
            self._close_env()


__all__ = [
    "ALL_MECHANISMS", "CREATE_MODE", "DEFAULT_ITERATIONS", "DEFAULT_NAME", "PASSWORD_HASHER",
    "PLAINTEXT_EQUIVALENT", "Sasldb", "SasldbError", "default_path", "entry_mechanisms",
    "make_entry", "permission_warning", "saslprep_password",
]

"""Password checks behind ``hato saslauthd`` (its ``-a`` mechanisms).

Each mechanism is a callable object ``check(login, password, service,
realm) -> Verdict``; *login*, *password*, *service* and *realm* are the
request's fields as text. A mechanism never raises for a wrong password or
an unknown user; it raises :class:`AuthTempFail` when it cannot answer now
(the daemon then answers ``NO`` with a temporary-failure text, as saslauthd
does). A check may block (PAM sleeps ~2 s after a failure; argon2 and
yescrypt are slow on purpose): the daemon runs it in a worker thread.

``shadow``
    crypt(3) hashes of ``/etc/shadow`` (yescrypt, sha512-crypt,
    sha256-crypt, md5-crypt, bcrypt — whatever the system's libxcrypt
    knows), through ``crypt_rn`` of ``libcrypt.so.1`` with ctypes (Python
    3.13 has no ``crypt`` module). A locked (``!``, ``*``) or empty hash
    never matches; an account past its expiry date (field 8) is refused,
    as Cyrus' ``auth_shadow`` does.
``getpwent``
    the same crypt(3) check against the passwd entry (``getpwnam``) — only
    useful where passwords are still in /etc/passwd.
``pam``
    ``pam_authenticate`` + ``pam_acct_mgmt`` with the request's service
    name as the PAM service (Cyrus' rule; an empty service is ``imap``,
    testsaslauthd's default), through python-pam (``pip install
    hato[pam]``). One PAM handle per request; the conversation answers
    echo-off prompts with the password and echo-on prompts with the login.
``sasldb``
    hato's own user database (:mod:`hato.auth.sasldb`, argon2id), path from
    ``-O`` (default ``/etc/hato/sasldb.lmdb``). A request realm makes the
    key ``login@realm``; without one, hato's realm rules apply.
``rimap``
    IMAP ``LOGIN`` against ``-O host[:port]`` (default port 143, plaintext,
    as Cyrus' ``auth_rimap``); the IMAP server's ``OK`` is the answer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hmac
import imaplib
import pwd
import socket
import threading
import time
from dataclasses import dataclass

from .backend import AuthTempFail

MECHANISMS = ("getpwent", "pam", "rimap", "sasldb", "shadow")
SHADOW_FILE = "/etc/shadow"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""  # for the log and the NO reply ("Incorrect password")


OK = Verdict(True)
WRONG = Verdict(False, "Incorrect password")
UNKNOWN = Verdict(False, "Unknown user")


class MechanismError(Exception):
    """The mechanism cannot be used (missing library, bad -O option)."""


# -- crypt(3) through libxcrypt ---------------------------------------------------------

class Crypt:
    """``crypt_rn`` of libxcrypt: thread-safe (each call has its own
    ``struct crypt_data``) and releases the GIL while it hashes."""

    DATA_SIZE = 65536  # ≥ sizeof(struct crypt_data) (32768 in libxcrypt 4.4)

    def __init__(self) -> None:
        name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError:
            try:
                lib = ctypes.CDLL("libcrypt.so.1", use_errno=True)
            except OSError as err:
                raise MechanismError(f"cannot load libcrypt: {err}") from None
        self._rn = getattr(lib, "crypt_rn", None)
        if self._rn is not None:
            self._rn.restype = ctypes.c_char_p
            self._rn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
            self._lock = None
        else:  # a libcrypt without crypt_rn: plain crypt(), one call at a time
            self._plain = lib.crypt
            self._plain.restype = ctypes.c_char_p
            self._plain.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
            self._lock = threading.Lock()

    def crypt(self, phrase: bytes, setting: bytes) -> bytes | None:
        """The hash of *phrase* with *setting* (a whole stored hash will do),
        or None when libcrypt refuses (unknown method, bad salt)."""
        if self._lock is None:
            data = ctypes.create_string_buffer(self.DATA_SIZE)
            out = self._rn(phrase, setting, data, self.DATA_SIZE)
        else:
            with self._lock:
                out = self._plain(phrase, setting)
        if not out or out.startswith(b"*"):
            return None
        return bytes(out)

    def verify(self, phrase: bytes, stored: bytes) -> bool:
        if not stored or stored[:1] in (b"!", b"*") or b"\0" in phrase:
            return False
        out = self.crypt(phrase, stored)
        return out is not None and hmac.compare_digest(out, stored)


_CRYPT: Crypt | None = None
_CRYPT_LOCK = threading.Lock()


def get_crypt() -> Crypt:
    global _CRYPT
    with _CRYPT_LOCK:
        if _CRYPT is None:
            _CRYPT = Crypt()
        return _CRYPT


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# -- the mechanisms ---------------------------------------------------------------------

class Shadow:
    name = "shadow"

    def __init__(self, path: str = SHADOW_FILE) -> None:
        self.path = path
        self.crypt = get_crypt()

    def entry(self, login: str) -> list[str] | None:
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise AuthTempFail(f"cannot read {self.path}: {err.strerror}") from None
        prefix = _enc(login) + b":"
        for line in data.split(b"\n"):
            if line.startswith(prefix):
                return line.decode("utf-8", "surrogateescape").split(":")
        return None

    def __call__(self, login: str, password: str, service: str, realm: str) -> Verdict:
        if ":" in login or "\n" in login:
            return UNKNOWN
        fields = self.entry(login)
        if fields is None or len(fields) < 2:
            return UNKNOWN
        if len(fields) > 7 and fields[7].strip().isascii() and fields[7].strip().isdigit():
            expire = int(fields[7])
            if expire > 0 and time.time() // 86400 > expire:
                return Verdict(False, "Account expired")
        if self.crypt.verify(_enc(password), _enc(fields[1])):
            return OK
        return WRONG


class Getpwent:
    name = "getpwent"

    def __init__(self) -> None:
        self.crypt = get_crypt()

    def __call__(self, login: str, password: str, service: str, realm: str) -> Verdict:
        try:
            entry = pwd.getpwnam(login)
        except (KeyError, ValueError):
            return UNKNOWN
        if self.crypt.verify(_enc(password), _enc(entry.pw_passwd)):
            return OK
        return WRONG


class Pam:
    name = "pam"

    def __init__(self) -> None:
        try:
            import pam  # noqa: F401 - python-pam, the hato[pam] extra
            from pam.__internals import PamAuthenticator
        except ImportError:
            raise MechanismError("-a pam needs python-pam (pip install 'hato[pam]')") from None
        self._factory = PamAuthenticator

    def __call__(self, login: str, password: str, service: str, realm: str) -> Verdict:
        if "\0" in login or "\0" in password:
            return WRONG
        handle = self._factory()  # one per request: the object keeps state
        ok = handle.authenticate(login, password, service=service or "imap",
                                 resetcreds=False, encoding="utf-8")
        if ok:
            return OK
        reason = getattr(handle, "reason", "") or "PAM authentication failed"
        return Verdict(False, str(reason))


class SasldbMech:
    name = "sasldb"

    def __init__(self, path: str | None = None, default_realm: str | None = None) -> None:
        from .sasldb import Sasldb, default_path

        self.path = path or default_path("/etc/hato")
        self.db = Sasldb(self.path, default_realm=default_realm)

    def __call__(self, login: str, password: str, service: str, realm: str) -> Verdict:
        name = f"{login}@{realm}" if realm else login
        if self.db.check_password(name, password):
            return OK
        return WRONG


class Rimap:
    name = "rimap"

    def __init__(self, option: str | None, timeout: float = 30.0) -> None:
        if not option:
            raise MechanismError("-a rimap needs -O host[:port]")
        host, port = option, 143
        if option.startswith("["):
            host, _, rest = option[1:].partition("]")
            if rest.startswith(":"):
                port = self._port(rest[1:])
        elif option.count(":") == 1:
            host, _, p = option.partition(":")
            port = self._port(p)
        self.host, self.port, self.timeout = host, port, timeout

    @staticmethod
    def _port(text: str) -> int:
        if text.isascii() and text.isdigit():
            return int(text)
        try:
            return socket.getservbyname(text, "tcp")
        except OSError:
            raise MechanismError(f"-O: unknown port {text!r}") from None

    def __call__(self, login: str, password: str, service: str, realm: str) -> Verdict:
        name = f"{login}@{realm}" if realm else login
        try:
            imap = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except (OSError, imaplib.IMAP4.error) as err:
            raise AuthTempFail(f"rimap {self.host}:{self.port}: {err}") from None
        try:
            try:
                imap.login(name, password)
            except imaplib.IMAP4.abort as err:
                raise AuthTempFail(f"rimap {self.host}:{self.port}: {err}") from None
            except imaplib.IMAP4.error:
                return Verdict(False, "remote authentication server refused")
            except OSError as err:
                raise AuthTempFail(f"rimap {self.host}:{self.port}: {err}") from None
            try:
                imap.logout()
            except (OSError, imaplib.IMAP4.error):
                pass
            return OK
        finally:
            try:
                imap.shutdown()
            except OSError:
                pass


def available_mechanisms() -> list[str]:
    """The mechanisms this installation can run (``pam`` needs python-pam)."""
    out = []
    for name in MECHANISMS:
        if name == "pam":
            try:
                import pam  # noqa: F401
            except ImportError:
                continue
        out.append(name)
    return out


def make_mechanism(name: str, option: str | None = None):
    """The mechanism *name* with its ``-O`` option; MechanismError when it
    cannot run here."""
    if name == "shadow":
        return Shadow(option or SHADOW_FILE)
    if name == "getpwent":
        return Getpwent()
    if name == "pam":
        return Pam()
    if name == "sasldb":
        return SasldbMech(option)
    if name == "rimap":
        return Rimap(option)
    raise MechanismError(f"unknown authentication mechanism: {name}")


__all__ = ["Crypt", "Getpwent", "MECHANISMS", "MechanismError", "OK", "Pam", "Rimap",
           "SasldbMech", "Shadow", "Verdict", "available_mechanisms", "get_crypt",
           "make_mechanism"]

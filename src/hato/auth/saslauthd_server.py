"""``hato saslauthd``: a saslauthd-compatible authentication daemon.

Serves the saslauthd socket protocol (:mod:`hato.proto.saslauthd`) on
``RUNDIR/mux``: one request (login, password, service, realm) per
connection, one ``OK``/``NO`` reply, then the connection is closed. Cyrus
libsasl (``pwcheck_method: saslauthd``), Debian's ``testsaslauthd`` and
hato's own smtpd are its clients.

Shape: one asyncio loop reads requests and writes replies; the password
checks (:mod:`hato.auth.pwcheck`, which may block — PAM sleeps after a
failure, argon2 and yescrypt are slow on purpose) run in a pool of ``-n``
worker threads, so one slow check never holds up another client's request.
Each client has ``read_timeout`` seconds to send a whole request; a request
that does not parse is answered ``NO`` (as saslauthd answers it) or the
connection is closed, always with a log line, never with the password.

Files in RUNDIR, as Cyrus saslauthd 2.1.28 keeps them:

``saslauthd.pid.lock``
    held with an fcntl lock for the daemon's lifetime: a second daemon on
    the same RUNDIR refuses to start (and leaves the socket alone);
``saslauthd.pid``
    the daemon's pid (written after the lock is taken);
``mux``
    the socket, mode 0777: access is controlled by RUNDIR's permissions
    (a RUNDIR the daemon has to create gets mode 0710, group ``sasl`` when
    that group exists, as Debian's package sets /run/saslauthd up).

The credential cache (``-c``) keeps, per (login, realm, service), a salted
keyed BLAKE2b hash of the last good password — never the password — for
``-t`` seconds; a failed check flushes the entry.
"""

from __future__ import annotations

import asyncio
import grp
import hashlib
import hmac
import logging
import os
import secrets
import socket
import stat
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..proto.saslauthd import MAX_REQ_LEN, RequestError, RequestReader, encode_reply
from .backend import AuthTempFail
from .pwcheck import Verdict

log = logging.getLogger("hato.saslauthd")

DEFAULT_RUN_PATH = "/var/run/saslauthd"
SOCKET_NAME = "mux"
PID_NAME = "saslauthd.pid"
LOCK_NAME = "saslauthd.pid.lock"
DEFAULT_WORKERS = 5
DEFAULT_CACHE_TTL = 28800  # Cyrus' -t default (8 hours)
DEFAULT_CACHE_KB = 64  # Cyrus' -s default
CACHE_ENTRY_BYTES = 128  # what one entry is taken to cost, for -s
UNLIMITED_WORKERS = 64  # -n 0 (Cyrus: a process per connection)
DEFAULT_READ_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 4096
LISTEN_BACKLOG = 1024
RUN_DIR_MODE = 0o710


class StartupError(Exception):
    """The daemon cannot start (message says why)."""


def printable(data: bytes | str, limit: int = 64) -> str:
    """A field as it may appear in a log line: non-printables escaped, cut."""
    if isinstance(data, bytes):
        data = data.decode("utf-8", "backslashreplace")
    text = "".join(c if c.isprintable() and c not in "[]" else f"\\x{ord(c):02x}"
                   if ord(c) < 256 else c.encode("unicode_escape").decode("ascii")
                   for c in data[:limit])
    return text + ("..." if len(data) > limit else "")


# -- credential cache --------------------------------------------------------------------

class CredentialCache:
    """(login, realm, service) → salted hash of the last good password.

    The hash is BLAKE2b keyed with a secret drawn when the daemon starts and
    salted per entry: neither the cache nor a memory dump of one entry gives
    the password or lets one compare entries. *clock* is a monotonic clock
    (a test passes its own)."""

    def __init__(self, ttl: float = DEFAULT_CACHE_TTL, max_entries: int = 512,
                 clock=time.monotonic):
        self.ttl = ttl
        self.max_entries = max(1, max_entries)
        self.clock = clock
        self._key = secrets.token_bytes(32)
        self._entries: OrderedDict[tuple[bytes, bytes, bytes], tuple[bytes, bytes, float]] = \
            OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _digest(self, salt: bytes, password: bytes) -> bytes:
        return hashlib.blake2b(password, key=self._key, salt=salt, digest_size=32).digest()

    def lookup(self, ident: tuple[bytes, bytes, bytes], password: bytes) -> bool:
        """True when *password* is the cached good password of *ident*."""
        now = self.clock()
        with self._lock:
            entry = self._entries.get(ident)
            if entry is None:
                self.misses += 1
                return False
            salt, digest, expires = entry
            if now >= expires:
                del self._entries[ident]
                self.misses += 1
                return False
        if hmac.compare_digest(self._digest(salt, password), digest):
            self.hits += 1
            return True
        self.misses += 1
        return False

    def store(self, ident: tuple[bytes, bytes, bytes], password: bytes) -> None:
        salt = secrets.token_bytes(16)
        entry = (salt, self._digest(salt, password), self.clock() + self.ttl)
        with self._lock:
            self._entries[ident] = entry
            self._entries.move_to_end(ident)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def flush(self, ident: tuple[bytes, bytes, bytes]) -> None:
        with self._lock:
            self._entries.pop(ident, None)

    def __len__(self) -> int:
        return len(self._entries)

    def values(self) -> list[tuple[bytes, bytes, float]]:
        """What the cache holds (for tests: salts, digests, expiry times)."""
        with self._lock:
            return list(self._entries.values())


# -- the server --------------------------------------------------------------------------

@dataclass
class Stats:
    requests: int = 0
    ok: int = 0
    no: int = 0
    protocol_errors: int = 0
    timeouts: int = 0
    refused: int = 0


class SaslauthdServer:
    """Answers saslauthd requests with *mechanism* (a pwcheck callable named
    *mech_name*). *workers* threads run the checks. *realm_join* (``-r``)
    passes ``login@realm`` to the mechanism when the realm is not empty."""

    def __init__(self, mechanism, mech_name: str, *, workers: int = DEFAULT_WORKERS,
                 cache: CredentialCache | None = None, realm_join: bool = False,
                 read_timeout: float = DEFAULT_READ_TIMEOUT,
                 max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 max_field: int = MAX_REQ_LEN):
        self.mechanism = mechanism
        self.mech_name = mech_name
        self.workers = workers if workers > 0 else UNLIMITED_WORKERS
        self.cache = cache
        self.realm_join = realm_join
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.max_field = max_field
        self.executor = ThreadPoolExecutor(max_workers=self.workers,
                                           thread_name_prefix="saslauthd-worker")
        self.stats = Stats()
        self._connections = 0
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.AbstractServer | None = None

    # ---------------------------------------------------------------- checking

    def authenticate(self, login: bytes, password: bytes, service: bytes,
                     realm: bytes) -> tuple[bool, str]:
        """One check (blocking: runs in a worker) → (ok, reply text)."""
        ident = (login, realm, service)
        who = (f"[user={printable(login)}] [service={printable(service)}] "
               f"[realm={printable(realm)}] [mech={self.mech_name}]")
        if self.cache is not None and self.cache.lookup(ident, password):
            log.debug("auth success: %s [cache hit]", who)
            return True, ""
        text_login = login.decode("utf-8", "surrogateescape")
        text_realm = realm.decode("utf-8", "surrogateescape")
        if self.realm_join and text_realm:
            text_login = f"{text_login}@{text_realm}"
        try:
            verdict = self.mechanism(text_login, password.decode("utf-8", "surrogateescape"),
                                     service.decode("utf-8", "surrogateescape"), text_realm)
        except AuthTempFail as err:
            verdict = Verdict(False, "temporary failure")
            log.warning("auth failure: %s [reason=temporary failure: %s]", who, err)
            if self.cache is not None:
                self.cache.flush(ident)
            return False, verdict.reason
        except Exception:  # noqa: BLE001 - a bug in a mechanism: NO, and the traceback
            log.exception("auth failure: %s [reason=internal error]", who)
            if self.cache is not None:
                self.cache.flush(ident)
            return False, "internal error"
        if verdict.ok:
            log.debug("auth success: %s", who)
            if self.cache is not None:
                self.cache.store(ident, password)
            return True, ""
        log.warning("auth failure: %s [reason=%s]", who, verdict.reason or "Incorrect password")
        if self.cache is not None:
            self.cache.flush(ident)
        return False, verdict.reason or "authentication failed"

    # ---------------------------------------------------------------- serving

    async def _read_request(self, reader: asyncio.StreamReader):
        parser = RequestReader(self.max_field)
        while True:
            data = await reader.read(4096)
            if not data:
                return parser.eof()
            result = parser.feed(data)
            if result is not None:
                return result

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections > self.max_connections:
                self.stats.refused += 1
                log.warning("too many connections (%d): closing a new one", self._connections)
                return
            try:
                result = await asyncio.wait_for(self._read_request(reader), self.read_timeout)
            except asyncio.TimeoutError:
                self.stats.timeouts += 1
                log.warning("client sent no complete request within %gs: connection closed",
                            self.read_timeout)
                return
            except OSError as err:
                log.warning("reading request: %s", err)
                return
            if isinstance(result, RequestError):
                self.stats.protocol_errors += 1
                if result.reply is None:
                    log.warning("bad request: %s", result.message)
                    return
                log.warning("bad request: %s: answered NO", result.message)
                reply = result.reply
            else:
                self.stats.requests += 1
                loop = asyncio.get_running_loop()
                ok, text = await loop.run_in_executor(
                    self.executor, self.authenticate, result.login, result.password,
                    result.service, result.realm)
                if ok:
                    self.stats.ok += 1
                else:
                    self.stats.no += 1
                reply = encode_reply(ok, text)
            try:
                writer.write(reply)
                await asyncio.wait_for(writer.drain(), self.read_timeout)
            except (OSError, asyncio.TimeoutError) as err:
                log.warning("sending reply: %s", err or "timed out")
        finally:
            self._connections -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass

    async def start(self, sock: socket.socket) -> None:
        """Serve on a bound, listening UNIX socket."""

        async def on_connect(reader, writer):
            task = asyncio.current_task()
            if task is not None:
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            await self.handle(reader, writer)

        self._server = await asyncio.start_unix_server(on_connect, sock=sock,
                                                       backlog=LISTEN_BACKLOG)

    async def stop(self, grace: float = 5.0) -> None:
        if self._server is not None:
            self._server.close()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


# -- files in RUNDIR ---------------------------------------------------------------------

def prepare_run_dir(path: str) -> None:
    """Make RUNDIR when it is missing (mode 0710, group sasl if there is one)."""
    if os.path.isdir(path):
        return
    try:
        os.makedirs(path, RUN_DIR_MODE)
        os.chmod(path, RUN_DIR_MODE)
        try:
            gid = grp.getgrnam("sasl").gr_gid
            os.chown(path, -1, gid)
        except (KeyError, PermissionError):
            pass
    except OSError as err:
        raise StartupError(f"cannot create {path}: {err.strerror}") from None


class PidFile:
    """``saslauthd.pid`` with its ``saslauthd.pid.lock`` companion."""

    def __init__(self, run_path: str):
        self.path = os.path.join(run_path, PID_NAME)
        self.lock_path = os.path.join(run_path, LOCK_NAME)
        self.fd = -1
        self.pid = 0

    def acquire(self) -> None:
        import fcntl

        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StartupError(f"cannot open pid lock file {self.lock_path}: "
                               f"{err.strerror}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            other = read_pid(self.path)
            raise StartupError(f"cannot get exclusive lock on {self.lock_path}: another "
                               f"saslauthd is running" + (f" (pid {other})" if other else ""))
        self.fd = fd
        self.pid = os.getpid()
        tmp = f"{self.path}.{self.pid}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{self.pid}\n")
            os.chmod(tmp, 0o644)
            os.rename(tmp, self.path)
        except OSError as err:
            self.release()
            raise StartupError(f"cannot write pid file {self.path}: {err.strerror}") from None

    def release(self) -> None:
        if self.fd < 0:
            return
        if read_pid(self.path) == self.pid:
            _unlink(self.path)
        _unlink(self.lock_path)
        os.close(self.fd)
        self.fd = -1


def read_pid(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() else None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        log.warning("cannot remove %s: %s", path, err.strerror)


def bind_socket(path: str) -> socket.socket:
    """The listening socket at *path*, mode 0777 (a stale socket is
    replaced: call this only with the pid lock held)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise StartupError(f"{path} exists and is not a socket")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o777)
        sock.listen(LISTEN_BACKLOG)
    except OSError as err:
        sock.close()
        raise StartupError(f"cannot listen on {path}: {err.strerror}") from None
    sock.setblocking(False)
    return sock


__all__ = ["CredentialCache", "DEFAULT_RUN_PATH", "PidFile", "SaslauthdServer",
           "StartupError", "bind_socket", "prepare_run_dir", "printable", "read_pid"]

"""postscreen's verdict cache: per client address, until when each test's pass holds.

Where it lives (Postfix 3.7's postscreen_cache_map semantics):

``postscreen_cache_map = btree:$data_directory/postscreen_cache`` (default)
    A file. hato's table registry has no update API (its indexed tables are
    rebuilt whole by ``postmap`` and renamed into place), so the cache is
    stored through LMDB directly, at the path the table type would read:
    ``btree:/x`` and ``hash:/x`` → ``/x.hato.db`` (:mod:`hato.tables.hashdb`),
    ``lmdb:/x`` → ``/x.lmdb``; ``proxy:TYPE:/x`` is the same file (hato has
    no proxymap writer; several processes share the file safely). The layout
    is that of the table type — keys and values with a trailing NUL, the
    unnamed database, one file without LMDB's lock file — so ``hato postmap
    -s btree:/x`` lists it, and ``lmdb:`` files are Postfix's format.
    Concurrent access is serialised with ``flock`` on the file (shared to
    read, exclusive to write), as Postfix's dict locking does; each update
    is one LMDB transaction with one fsync (no meta-page sync: a crash may
    lose the last verdict, never the file). A new file is
    created with mode 0600, owned by the running user (postscreen runs as
    mail_owner). Other table types are a configuration error.
``postscreen_cache_map =`` (empty)
    No cache: verdicts are kept in this process's memory only.
``hato_postscreen_cache = redis:URL`` (hato)
    Replaces postscreen_cache_map: one Redis shared by several hato
    instances, like Postfix's memcache sharing. Keys ``hato:postscreen:ADDR``
    hold the same value and expire ``max(retention, last expiry − now +
    retention)`` seconds after they are written, so Redis forgets a client
    no sooner than Postfix's clean-up would.

Values are Postfix's ``%lu;%lu;%lu;%lu;%lu`` expiry stamps
(:mod:`hato.policy.postscreen_cache_entry`); keys are the client address as
postscreen logs it (``192.0.2.1``, ``2001:db8::1``; an IPv4-mapped IPv6
address is its IPv4 form).

Clean-up (Postfix's dict_cache.c): a pass over every entry drops those that
:meth:`CacheEntry.retain` rejects for the enabled tests at ``now -
postscreen_cache_retention_time`` and logs::

    cache btree:/var/lib/hato/postscreen_cache full cleanup: retained=N dropped=N entries

(``partial`` when the scan stopped on an error). The time of the last full
run is kept in the cache itself under ``_LAST_CACHE_CLEANUP_COMPLETED_``;
the next run is due ``postscreen_cache_cleanup_interval`` after it (at once
when there is none, so a fresh cache is cleaned at start-up); an interval
of 0 disables clean-up. :meth:`PostscreenCache.run_cleanup` schedules it;
callers with their own timer use :meth:`due` and :meth:`cleanup`.

Errors never reach the caller: an unwritable file, a full disk, Redis down
or slow (``timeout``, 1 s) log one warning, :meth:`get` answers "no entry"
unless the in-memory fallback has one, :meth:`put` goes to the in-memory
fallback, and the store is tried again after ``retry_after`` seconds (30 s);
``... works again`` is logged when it does. The fallback holds at most
``memory_limit`` entries (oldest dropped first).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from ..config.errors import ConfigError
from ..policy.postscreen_cache_entry import CacheEntry, PscTest

#: Postfix's dict_cache.c key for the time of the last full clean-up
LAST_CLEANUP_KEY = "_LAST_CACHE_CLEANUP_COMPLETED_"
#: the Redis key prefix (shared by every instance pointing at one Redis)
REDIS_PREFIX = "hato:postscreen:"
#: entries examined per clean-up step
BATCH = 1000
#: LMDB's initial map size (Postfix's lmdb_map_size default)
LMDB_MAP_SIZE = 16 * 1024 * 1024


class StoreError(Exception):
    """The cache store could not be used (the text says why)."""


class Log(Protocol):
    def info(self, text: str) -> None: ...
    def warning(self, text: str) -> None: ...


def cache_key(addr: str) -> str:
    """The cache key of a client address: ``[2001:DB8::1]`` → ``2001:db8::1``,
    ``::ffff:192.0.2.1`` → ``192.0.2.1``; anything else unchanged."""
    text = addr.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if text[:5].lower() == "ipv6:":
        text = text[5:]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def enabled_tests(settings) -> frozenset[PscTest]:
    """The tests postscreen runs with *settings*, as postscreen_tests.c
    decides: pre-greet when postscreen_greet_banner is not empty, DNSBL when
    postscreen_dnsbl_sites is not empty, the deep tests by their ``_enable``."""
    tests = set()
    if settings.str("postscreen_greet_banner").strip():
        tests.add(PscTest.PREGREET)
    if settings.list("postscreen_dnsbl_sites"):
        tests.add(PscTest.DNSBL)
    if settings.bool("postscreen_pipelining_enable"):
        tests.add(PscTest.PIPELINING)
    if settings.bool("postscreen_non_smtp_command_enable"):
        tests.add(PscTest.NON_SMTP)
    if settings.bool("postscreen_bare_newline_enable"):
        tests.add(PscTest.BARE_NEWLINE)
    return frozenset(tests)


def fixed_ttls(settings) -> dict[PscTest, int]:
    """How long a pass of each test with a fixed TTL holds, in seconds. The
    DNSBL pass holds for the DNS TTL bounded by postscreen_dnsbl_min_ttl and
    postscreen_dnsbl_max_ttl (:func:`hato.policy.postscreen_dnsbl.clamp_ttl`)."""
    return {
        PscTest.PREGREET: settings.time("postscreen_greet_ttl"),
        PscTest.PIPELINING: settings.time("postscreen_pipelining_ttl"),
        PscTest.NON_SMTP: settings.time("postscreen_non_smtp_command_ttl"),
        PscTest.BARE_NEWLINE: settings.time("postscreen_bare_newline_ttl"),
    }


# -- stores ---------------------------------------------------------------------------------


class _Store:
    """key → value text; raises StoreError."""

    def get(self, key: str) -> str | None:
        raise NotImplementedError

    def put(self, key: str, value: str, ttl: int | None) -> None:
        raise NotImplementedError

    def delete(self, keys: list[str]) -> None:
        raise NotImplementedError

    def batches(self, count: int) -> Iterator[list[tuple[str, str]]]:
        """Every (key, value), *count* at a time; the store may change between batches."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _MemoryStore(_Store):
    def __init__(self, limit: int | None = None):
        self.data: dict[str, str] = {}
        self.limit = limit

    def get(self, key: str) -> str | None:
        return self.data.get(key)

    def put(self, key: str, value: str, ttl: int | None) -> None:
        self.data.pop(key, None)
        self.data[key] = value
        if self.limit is not None:
            while len(self.data) > self.limit:
                del self.data[next(iter(self.data))]

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.data.pop(key, None)

    def batches(self, count: int) -> Iterator[list[tuple[str, str]]]:
        items = list(self.data.items())
        for i in range(0, len(items), count):
            yield items[i:i + count]


class _LmdbStore(_Store):
    """One LMDB file (no subdirectory, no lock file), keys and values NUL-terminated."""

    def __init__(self, path: str):
        self.path = path
        self._env = None
        self._fd: int | None = None

    def _open(self):
        if self._env is not None:
            return self._env
        import lmdb
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as err:
            raise StoreError(f"open database {self.path}: {err.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = max(LMDB_MAP_SIZE, os.fstat(fd).st_size)
                self._env = lmdb.open(self.path, subdir=False, lock=False, create=True,
                                      mode=0o600, max_dbs=0, readahead=False,
                                      map_size=size, metasync=False, sync=True)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except (OSError, lmdb.Error) as err:
            os.close(fd)
            raise StoreError(f"open database {self.path}: {err}") from None
        self._fd = fd
        return self._env

    def _txn(self, op: Callable, write: bool):
        import lmdb
        env = self._open()
        assert self._fd is not None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH)
        except OSError as err:
            raise StoreError(f"lock database {self.path}: {err.strerror}") from None
        try:
            for _attempt in range(8):
                try:
                    with env.begin(write=write, buffers=False) as txn:
                        return op(txn)
                except lmdb.MapResizedError:
                    env.set_mapsize(0)  # another process grew the file
                except lmdb.MapFullError:
                    env.set_mapsize(env.info()["map_size"] * 2)
            raise StoreError(f"database {self.path}: cannot grow the map")
        except lmdb.Error as err:
            self.close()
            raise StoreError(f"database {self.path}: {err}") from None
        finally:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def get(self, key: str) -> str | None:
        raw = key.encode()

        def op(txn):
            value = txn.get(raw + b"\0")
            if value is None:
                value = txn.get(raw)
            return value

        value = self._txn(op, write=False)
        if value is None:
            return None
        return value.rstrip(b"\0").decode("ascii", "replace")

    def put(self, key: str, value: str, ttl: int | None) -> None:
        raw = key.encode()

        def op(txn):
            txn.delete(raw)
            txn.put(raw + b"\0", value.encode() + b"\0")

        self._txn(op, write=True)

    def delete(self, keys: list[str]) -> None:
        def op(txn):
            for key in keys:
                raw = key.encode()
                txn.delete(raw + b"\0")
                txn.delete(raw)

        if keys:
            self._txn(op, write=True)

    def batches(self, count: int) -> Iterator[list[tuple[str, str]]]:
        last: bytes | None = None
        while True:
            def op(txn, last=last):
                out = []
                cursor = txn.cursor()
                ok = cursor.first() if last is None else cursor.set_range(last)
                while ok and len(out) < count:
                    k, v = cursor.item()
                    if k != last:
                        out.append((k, v))
                    ok = cursor.next()
                return out

            rows = self._txn(op, write=False)
            if not rows:
                return
            last = rows[-1][0]
            yield [(k.rstrip(b"\0").decode("utf-8", "replace"),
                    v.rstrip(b"\0").decode("ascii", "replace")) for k, v in rows]

    def close(self) -> None:
        if self._env is not None:
            with contextlib.suppress(Exception):  # closing a broken environment
                self._env.close()
            self._env = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class _RedisStore(_Store):
    def __init__(self, url: str, timeout: float):
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError as err:
            raise StoreError(f"redis support is not available: {err}") from None
        self._errors = (redis.RedisError, OSError)
        try:
            self._client = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"hato_postscreen_cache: bad Redis URL: {err}") from None

    def _call(self, fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except self._errors as err:
            raise StoreError(str(err).rstrip(".") or type(err).__name__) from None

    def get(self, key: str) -> str | None:
        value = self._call(self._client.get, REDIS_PREFIX + key)
        return None if value is None else value.decode("ascii", "replace")

    def put(self, key: str, value: str, ttl: int | None) -> None:
        self._call(self._client.set, REDIS_PREFIX + key, value,
                   ex=max(1, int(ttl)) if ttl is not None else None)

    def delete(self, keys: list[str]) -> None:
        if keys:
            self._call(self._client.delete, *[REDIS_PREFIX + k for k in keys])

    def batches(self, count: int) -> Iterator[list[tuple[str, str]]]:
        cursor = 0
        seen: set[bytes] = set()
        pattern = REDIS_PREFIX.replace("*", r"\*") + "*"
        while True:
            cursor, keys = self._call(self._client.scan, cursor, match=pattern, count=count)
            keys = [k for k in keys if k not in seen]
            seen.update(keys)
            if keys:
                values = self._call(self._client.mget, keys)
                rows = [(k.decode("utf-8", "replace")[len(REDIS_PREFIX):],
                         v.decode("ascii", "replace"))
                        for k, v in zip(keys, values) if v is not None]
                if rows:
                    yield rows
            if cursor == 0:
                return

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


# -- the cache ------------------------------------------------------------------------------


def _lmdb_path(type_name: str, path: str) -> str:
    if type_name == "lmdb":
        from ..tables.lmdb_table import LmdbTable
        return path + LmdbTable.suffix
    from ..tables.hashdb import SUFFIX
    return path + SUFFIX


class PostscreenCache:
    """postscreen's cache (see the module doc)."""

    def __init__(self, settings, log: Log, *, clock: Callable[[], float] = time.time,
                 timeout: float = 1.0, retry_after: float = 30.0,
                 memory_limit: int = 100_000):
        self._lock = threading.RLock()
        self.log = log
        self.clock = clock
        self.retry_after = retry_after
        self.retention = settings.time("postscreen_cache_retention_time")
        self.interval = settings.time("postscreen_cache_cleanup_interval")
        self.enabled = enabled_tests(settings)
        self.memory = _MemoryStore(memory_limit)
        self._store: _Store | None = None
        self._down_until = 0.0
        self._down = False
        self._redis = False
        self._last_local: float | None = None  # last clean-up run by this object
        self.last_result: tuple[int, int] | None = None
        #: the file of a btree:/hash:/lmdb: cache
        self.path: str | None = None
        #: the cache's name in log lines: the configured table or redis:URL
        self.name = ""
        redis_spec = settings.str("hato_postscreen_cache").strip()
        map_spec = settings.str("postscreen_cache_map").strip()
        if redis_spec:
            if not redis_spec.startswith("redis:"):
                raise ConfigError(f'hato_postscreen_cache: need "redis:URL", got "{redis_spec}"')
            from .anvil_redis import backend_url, display_url
            url = backend_url(redis_spec)
            self.name = "redis:" + display_url(url)
            self._redis = True
            try:
                self._store = _RedisStore(url, timeout)
            except StoreError as err:
                self._fail(f"cache {self.name}: {err}")
        elif map_spec:
            self.name = map_spec
            spec = map_spec
            while spec.startswith("proxy:"):
                spec = spec[len("proxy:"):]
            type_name, sep, path = spec.partition(":")
            if not sep or not type_name:
                raise ConfigError(f'postscreen_cache_map: need dictionary type:name, '
                                  f'got "{map_spec}"')
            if type_name not in ("btree", "hash", "lmdb"):
                raise ConfigError(
                    f"postscreen_cache_map = {map_spec}: hato can keep the postscreen cache "
                    f"in btree:, hash: or lmdb: files, not {type_name}: (to share the cache "
                    f"between instances use hato_postscreen_cache = redis:URL)")
            if not path.startswith("/"):
                raise ConfigError(f"postscreen_cache_map = {map_spec}: need an absolute path")
            self.path = _lmdb_path(type_name, path)
            self._store = _LmdbStore(self.path)
        # else: no cache, memory only

    # -- state of the store -------------------------------------------------------------

    @property
    def persistent(self) -> bool:
        """A file or Redis is configured (it may be failing right now)."""
        return self._store is not None

    def _usable(self) -> _Store | None:
        if self._store is None:
            return None
        if self._down and self.clock() < self._down_until:
            return None
        return self._store

    def _fail(self, text: str) -> None:
        if not self._down:
            self.log.warning(f"{text}; using an in-memory cache until it works again")
        self._down = True
        self._down_until = self.clock() + self.retry_after

    def _ok(self) -> None:
        if self._down:
            self._down = False
            self.log.info(f"cache {self.name}: works again")

    def _op(self, what: str, method: str, *args):
        """Run the store's *method*; (True, result), or (False, None) after a warning."""
        store = self._usable()
        if store is None:
            return False, None
        try:
            with self._lock:  # one store operation at a time, whatever the thread
                result = getattr(store, method)(*args)
        except StoreError as err:
            self._fail(f"cache {self.name}: {what}: {err}")
            return False, None
        self._ok()
        return True, result

    # -- lookups and updates ------------------------------------------------------------

    def get(self, addr: str) -> CacheEntry | None:
        """The entry of client *addr*, or None (none, unreadable, or store failing)."""
        key = cache_key(addr)
        if key == LAST_CLEANUP_KEY:
            return None
        ok, value = self._op(f"lookup {key}", "get", key)
        if not ok or value is None:
            value = self.memory.get(key)
        return CacheEntry.parse(value)

    def put(self, addr: str, entry: CacheEntry) -> None:
        """Store the entry of client *addr* (tests not enabled and never
        passed are written as disabled, as Postfix does)."""
        key = cache_key(addr)
        if key == LAST_CLEANUP_KEY:
            return
        value = entry.format(self.enabled)
        now = self.clock()
        ttl = None
        if self._redis:
            ttl = int(max(self.retention, entry.latest() - now + self.retention))
        ok, _ = self._op(f"update {key}", "put", key, value, ttl)
        if ok:
            self.memory.delete([key])
        else:
            self.memory.put(key, value, None)

    # -- clean-up -----------------------------------------------------------------------

    def _last_cleanup(self) -> float | None:
        ok, value = self._op("lookup " + LAST_CLEANUP_KEY, "get", LAST_CLEANUP_KEY)
        if not ok or value is None:
            return None
        try:
            return float(int(value.strip()))
        except ValueError:
            return None

    def next_cleanup(self, now: float | None = None) -> float | None:
        """Seconds until the next clean-up is due (0 = now); None when never
        (postscreen_cache_cleanup_interval = 0)."""
        if self.interval <= 0:
            return None
        now = self.clock() if now is None else now
        last = self._last_cleanup() if self._store is not None else None
        if self._last_local is not None and (last is None or self._last_local > last):
            last = self._last_local
        if last is None:
            return 0.0
        return min(float(self.interval), max(0.0, last + self.interval - now))

    def due(self, now: float | None = None) -> bool:
        wait = self.next_cleanup(now)
        return wait is not None and wait <= 0

    def _cleanup_steps(self, now: float) -> Iterator[None]:
        """Clean the fallback, then the store, yielding between batches;
        the result is in ``self.last_result``."""
        self.last_result = None
        for batch in list(self.memory.batches(BATCH)):
            self.memory.delete([k for k, v in batch if not self._keep(k, v, now)])
        store = self._usable()
        if store is None:
            if self._store is None:
                self._last_local = now
            return
        retained = dropped = 0
        batches = store.batches(BATCH)
        try:
            while True:
                try:
                    batch = next(batches)
                except StopIteration:
                    break
                drop = [k for k, v in batch if k != LAST_CLEANUP_KEY
                        and not self._keep(k, v, now)]
                retained += sum(1 for k, _ in batch if k != LAST_CLEANUP_KEY) - len(drop)
                store.delete(drop)
                dropped += len(drop)
                yield
            store.put(LAST_CLEANUP_KEY, str(int(now)), None)
        except StoreError as err:
            self._fail(f"cache {self.name}: cache cleanup scan terminated due to error: {err}")
            self.log.info(f"cache {self.name} partial cleanup: "
                          f"retained={retained} dropped={dropped} entries")
            return
        self._ok()
        self._last_local = now
        self.log.info(f"cache {self.name} full cleanup: "
                      f"retained={retained} dropped={dropped} entries")
        self.last_result = (retained, dropped)

    def _keep(self, key: str, value: str, now: float) -> bool:
        entry = CacheEntry.parse(value)
        return entry is not None and entry.retain(self.enabled, now, self.retention)

    def cleanup(self, now: float | None = None) -> tuple[int, int] | None:
        """One full clean-up pass now; (retained, dropped) of the store, or
        None when there is no store or it failed (a warning was logged)."""
        now = self.clock() if now is None else now
        with self._lock:
            for _ in self._cleanup_steps(now):
                pass
        return self.last_result

    async def run_cleanup(self, stop: asyncio.Event, run=None) -> None:
        """Clean up when due, then every postscreen_cache_cleanup_interval,
        until *stop* is set. *run* (``await run(fn, *args)``) executes the
        blocking calls elsewhere, e.g. on the thread that owns the cache;
        without it a pass runs here, other tasks running between batches."""
        if self.interval <= 0:
            await stop.wait()
            return

        async def call(fn, *args):
            return fn(*args) if run is None else await run(fn, *args)

        async def stopped_within(seconds: float) -> bool:
            try:
                await asyncio.wait_for(stop.wait(), seconds)
                return True
            except TimeoutError:
                return False

        while not stop.is_set():
            wait = await call(self.next_cleanup)
            if wait is None:
                await stop.wait()
                return
            if wait > 0 and await stopped_within(wait):
                return
            if run is not None:
                result = await run(self.cleanup)
            else:
                for _ in self._cleanup_steps(self.clock()):
                    await asyncio.sleep(0)
                    if stop.is_set():
                        return
                result = self.last_result
            if result is None and self._store is not None:
                # the store failed: try again after the retry delay, not at once
                if await stopped_within(max(self.retry_after, 1.0)):
                    return

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()


__all__ = ["LAST_CLEANUP_KEY", "REDIS_PREFIX", "PostscreenCache", "cache_key", "enabled_tests",
           "fixed_ttls"]

"""The address verification cache (``address_verify_map``) of the verify
service.

``address_verify_map = btree:$data_directory/verify_cache`` (default)
    A file, stored through LMDB as the postscreen cache is
    (:mod:`hato.io.postscreen_cache`): ``btree:/x`` and ``hash:/x`` →
    ``/x.hato.db``, ``lmdb:/x`` → ``/x.lmdb``, ``proxy:`` in front is the
    same file; keys and values NUL-terminated, so ``hato postmap -s
    btree:/x`` lists it. Other table types are a configuration error.
``address_verify_map =`` (empty)
    In this process's memory only, as Postfix's ``internal:verify``: the
    results are gone when the service restarts.

Values are Postfix's ``status:probed:updated:text``
(:class:`hato.policy.verify.CacheEntry`).

Clean-up (``address_verify_cache_cleanup_interval``, 0: never) is Postfix's
dict_cache clean-up with verify's validator: entries with neither a probe
under way nor an unexpired result are dropped, and verify logs::

    cache btree:/var/lib/hato/verify_cache full cleanup: retained=N dropped=N entries

The time of the last full run is kept in the cache under
``_LAST_CACHE_CLEANUP_COMPLETED_``. A store that fails (unwritable file,
full disk) logs one warning; the service then keeps results in memory and
tries the file again after ``retry_after`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ..config.errors import ConfigError
from ..policy.verify import CacheEntry, Freshness, retain
from .postscreen_cache import (
    BATCH,
    LAST_CLEANUP_KEY,
    StoreError,
    _lmdb_path,
    _LmdbStore,
    _MemoryStore,
)


class VerifyCache:
    def __init__(self, settings, log, *, clock: Callable[[], float] = time.time,
                 retry_after: float = 30.0, memory_limit: int = 1_000_000):
        self.log = log
        self.clock = clock
        self.retry_after = retry_after
        self.rules = Freshness.from_settings(settings)
        self.interval = settings.time("address_verify_cache_cleanup_interval")
        self.memory = _MemoryStore(memory_limit)
        self._lock = threading.RLock()
        self._store: _LmdbStore | None = None
        self._down = False
        self._down_until = 0.0
        self._last_local: float | None = None
        self.path: str | None = None
        spec = settings.str("address_verify_map").strip()
        self.name = spec or "internal:verify"
        if spec:
            inner = spec
            while inner.startswith("proxy:"):
                inner = inner[len("proxy:"):]
            type_name, sep, path = inner.partition(":")
            if not sep or not type_name:
                raise ConfigError(f'address_verify_map: need dictionary type:name, '
                                  f'got "{spec}"')
            if type_name not in ("btree", "hash", "lmdb"):
                raise ConfigError(f"address_verify_map = {spec}: hato can keep the address "
                                  f"verification cache in btree:, hash: or lmdb: files, not "
                                  f"{type_name}:")
            if not path.startswith("/"):
                raise ConfigError(f"address_verify_map = {spec}: need an absolute path")
            self.path = _lmdb_path(type_name, path)
            self._store = _LmdbStore(self.path)

    # -- the store ------------------------------------------------------------------------

    def _op(self, what: str, method: str, *args):
        """(True, result) from the file, or (False, None) when there is none
        or it fails (one warning, then the in-memory cache for a while)."""
        store = self._store
        if store is None or (self._down and self.clock() < self._down_until):
            return False, None
        try:
            with self._lock:
                result = getattr(store, method)(*args)
        except StoreError as err:
            if not self._down:
                self.log.warning(f"cache {self.name}: {what}: {err}; using an in-memory "
                                 f"cache until it works again")
            self._down = True
            self._down_until = self.clock() + self.retry_after
            return False, None
        if self._down:
            self._down = False
            self.log.info(f"cache {self.name}: works again")
        return True, result

    def get_raw(self, key: str) -> str | None:
        if key == LAST_CLEANUP_KEY:
            return None
        ok, value = self._op(f"lookup {key}", "get", key)
        if not ok or value is None:
            value = self.memory.get(key)
        return value

    def get(self, key: str) -> CacheEntry | None:
        return CacheEntry.parse(self.get_raw(key))

    def put(self, key: str, entry: CacheEntry) -> None:
        if key == LAST_CLEANUP_KEY:
            return
        ok, _ = self._op(f"update {key}", "put", key, entry.format(), None)
        if ok:
            self.memory.delete([key])
        else:
            self.memory.put(key, entry.format(), None)

    def delete(self, key: str) -> None:
        self._op(f"delete {key}", "delete", [key])
        self.memory.delete([key])

    # -- clean-up -------------------------------------------------------------------------

    def next_cleanup(self, now: float | None = None) -> float | None:
        """Seconds until the next clean-up (0: now); None: never."""
        if self.interval <= 0:
            return None
        now = self.clock() if now is None else now
        last = None
        ok, value = self._op("lookup " + LAST_CLEANUP_KEY, "get", LAST_CLEANUP_KEY)
        if ok and value is not None and value.strip().isdigit():
            last = float(value.strip())
        if self._last_local is not None and (last is None or self._last_local > last):
            last = self._last_local
        if last is None:
            return 0.0
        return min(float(self.interval), max(0.0, last + self.interval - now))

    def _keep(self, value: str, now: int) -> bool:
        return retain(CacheEntry.parse(value), now, self.rules)

    def cleanup(self, now: float | None = None) -> tuple[int, int] | None:
        """One full pass; (retained, dropped), or None when the file failed."""
        now = int(self.clock() if now is None else now)
        with self._lock:
            retained = dropped = 0
            for batch in list(self.memory.batches(BATCH)):
                drop = [k for k, v in batch if not self._keep(v, now)]
                self.memory.delete(drop)
                retained += len(batch) - len(drop)
                dropped += len(drop)
            if self._store is None:
                self._last_local = now
                self.log.info(f"cache {self.name} full cleanup: retained={retained} "
                              f"dropped={dropped} entries")
                return retained, dropped
            retained = dropped = 0
            try:
                for batch in self._store.batches(BATCH):
                    drop = [k for k, v in batch if k != LAST_CLEANUP_KEY
                            and not self._keep(v, now)]
                    retained += sum(1 for k, _ in batch if k != LAST_CLEANUP_KEY) - len(drop)
                    self._store.delete(drop)
                    dropped += len(drop)
                self._store.put(LAST_CLEANUP_KEY, str(now), None)
            except StoreError as err:
                self.log.warning(f"cache {self.name}: cache cleanup scan terminated due to "
                                 f"error: {err}")
                self.log.info(f"cache {self.name} partial cleanup: retained={retained} "
                              f"dropped={dropped} entries")
                return None
            self._last_local = now
            self.log.info(f"cache {self.name} full cleanup: retained={retained} "
                          f"dropped={dropped} entries")
            return retained, dropped

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()


__all__ = ["VerifyCache"]

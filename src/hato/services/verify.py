"""verify: the address verification server, as verify(8).

One verify per instance (master.cf ``verify unix - - n - 1 verify``)
keeps a record of which addresses are known to be deliverable or
undeliverable, for smtpd's ``reject_unverified_recipient`` and
``reject_unverified_sender``. Requests on
``private/$address_verify_service_name`` (attribute protocol,
:mod:`hato.io.verify_client`):

``request=query, address=ADDR``
    The cached status and text (``status=0, recipient_status=N,
    reason=TEXT``: 0 deliverable, 1 and 2 undeliverable, 3 nothing known
    yet). An unknown or expired address is answered ``3, Address
    verification in progress``; when its result is older than the refresh
    time a probe goes out (the rules are in :mod:`hato.policy.verify`).
``request=update, address=ADDR, recipient_status=N, reason=TEXT``
    A probe's result, from qmgr.

A probe is a message from ``address_verify_sender`` (``$double_bounce_sender``;
empty or ``<>``: the null sender; with ``address_verify_sender_ttl`` a time
stamp in its local part) to the address, queued through cleanup (so
canonical and virtual alias rewriting apply) with the envelope attribute
``probe=yes``. qmgr routes it with the ``address_verify_*`` transports and
maps and no content filter, the delivery agents go as far as they can
without delivering (the SMTP client stops after RCPT TO) and log
``status=deliverable`` or ``status=undeliverable``, and qmgr sends the
results here and removes the probe: it is never delivered, deferred or
bounced.

The cache is ``address_verify_map`` (:mod:`hato.io.verify_cache`; empty:
in memory, lost at restart), cleaned every
``address_verify_cache_cleanup_interval``.

Parameters: address_verify_map, address_verify_sender,
address_verify_sender_ttl, address_verify_positive_expire_time,
address_verify_positive_refresh_time, address_verify_negative_cache,
address_verify_negative_expire_time, address_verify_negative_refresh_time,
address_verify_cache_cleanup_interval, address_verify_service_name, and
everything cleanup reads.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ..config.errors import ConfigError
from ..io.ipc import attr_session, notify, serve_sessions
from ..io.verify_cache import VerifyCache
from ..policy import verify as V
from ..policy.address import log_form
from ..proto.attr import Attrs
from ..queue.cleanup import Cleanup
from ..queue.envelope import Recipient
from ..queue.errors import QueueError
from ..queue.inject import clean_into_queue
from ..queue.store import QueueStore
from ..tables.base import TableRetry


class Verify:
    def __init__(self, settings, log):
        self.s = settings
        self.log = log
        self.external = settings.str("info_log_address_format").lower() != "internal"
        self.cache = VerifyCache(settings, log)
        self.rules = self.cache.rules
        self.sender = settings.str("address_verify_sender")
        self.sender_ttl = settings.time("address_verify_sender_ttl")
        try:
            V.probe_sender(self.sender, self.sender_ttl, int(time.time()))
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.cleanup = Cleanup(settings)
        self.store = QueueStore.from_settings(settings)
        self.qmgr = os.path.join(settings.str("queue_directory"), "public", "qmgr")
        # the cache and the probes are touched by one thread, in request order
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="verify")
        self.tasks: set[asyncio.Future] = set()

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # -- requests ---------------------------------------------------------------------------

    async def answer(self, req: Attrs) -> Attrs:
        kind = req.get("request") or ""
        address = req.get("address")
        if kind == "query" and address is not None:
            reply, probe = await self._run(self.query, address)
            if probe:
                # the client has its answer first; the probe follows
                fut = asyncio.get_running_loop().run_in_executor(self.pool, self.probe,
                                                                  address)
                self.tasks.add(fut)
                fut.add_done_callback(self.tasks.discard)
            return reply
        if kind == "update" and address is not None:
            try:
                status = int(req.get("recipient_status") or "")
            except ValueError:
                status = -1
            return await self._run(self.update, address, status, req.get("reason") or "")
        self.log.warning(f'unrecognized request: "{kind}", ignored')
        return Attrs.of(status=V.STAT_BAD)

    def query(self, address: str) -> tuple[Attrs, bool]:
        key = V.cache_key(address)
        raw = self.cache.get_raw(key)
        entry = V.CacheEntry.parse(raw)
        if raw is not None and entry is None:
            self.log.warning(f"bad address verify table entry: {raw[:100]}")
        out = V.query(entry, int(time.time()), self.rules, present=raw is not None)
        if out.delete:
            self.cache.delete(key)
        if out.store is not None:
            self.cache.put(key, out.store)
        return Attrs.of(status=V.STAT_OK, recipient_status=out.status, reason=out.text), \
            out.probe

    def update(self, address: str, status: int, text: str) -> Attrs:
        if V.status_name(status) is None:
            self.log.warning(f"bad recipient status {status} for recipient {address}")
            return Attrs.of(status=V.STAT_BAD)
        key = V.cache_key(address)
        entry = V.update(self.cache.get(key), status, text, int(time.time()))
        if entry is not None:
            self.cache.put(key, entry)
        return Attrs.of(status=V.STAT_OK)

    def probe(self, address: str) -> str | None:
        """Queue a probe for *address*; its queue id, or None (logged)."""
        sender = V.probe_sender(self.sender, self.sender_ttl, int(time.time()))
        try:
            injected = clean_into_queue(
                self.cleanup, self.store, [], log=lambda level, text: None,
                attributes={"rewrite_context": "local", "probe": "yes"},
                sender=sender, recipients=[Recipient(address=address, orig_address=address)],
                rewrite_context="local", userid=os.getuid())
        except (TableRetry, QueueError, OSError) as err:
            self.log.warning(f"probe for <{log_form(address, self.external)}>: {err}")
            return None
        res = injected.result
        for level, text in res.log:
            {"warning": self.log.warning, "error": self.log.error}.get(level, self.log.info)(text)
        if injected.queue_id is None:
            if not res.discard:
                self.log.warning(f"probe for <{log_form(address, self.external)}>: "
                                 f"{res.reason or 'not queued'}")
            return None
        notify(self.qmgr, Attrs.of(request="wakeup"))
        return injected.queue_id

    # -- housekeeping -----------------------------------------------------------------------

    async def housekeeping(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            wait = await self._run(self.cache.next_cleanup)
            if wait is None:
                await stop.wait()
                return
            if wait > 0:
                try:
                    await asyncio.wait_for(stop.wait(), wait)
                    return
                except asyncio.TimeoutError:
                    pass
            if await self._run(self.cache.cleanup) is None:
                try:  # the file failed: not again at once
                    await asyncio.wait_for(stop.wait(), max(self.cache.retry_after, 1.0))
                    return
                except asyncio.TimeoutError:
                    pass

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await attr_session(reader, writer, self.answer, self.log.warning,
                           max_message=64 * 1024)

    async def close(self) -> None:
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        await self._run(self.cache.close)
        self.pool.shutdown(wait=True)


async def serve(ctx) -> int:
    try:
        verify = Verify(ctx.settings, ctx.log)
    except ConfigError as err:
        ctx.log.fatal(str(err))
        return 1
    try:
        await serve_sessions(ctx.listeners, verify.session, ctx.stop, verify.housekeeping)
    finally:
        await verify.close()
    return 0

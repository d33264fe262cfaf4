"""anvil: per-client connection counts and request rates, as anvil(8).

One anvil per instance (master.cf ``anvil unix - - n - 1 anvil``) owns the
counters that every smtpd worker asks about on ``private/anvil``: how many
connections a (service, client address) pair has open and how many
connections, messages, recipients, new TLS sessions and AUTH commands it
made in the current window of ``anvil_rate_time_unit``. The requests and
the counting rules are in :mod:`hato.proto.anvil`; smtpd compares the
answers with its limits (smtpd_client_*_limit) and refuses the client.

The connections a requester registered are dropped when its connection to
anvil closes (an smtpd worker that dies leaves no phantom sessions).

Every ``anvil_status_update_time`` and on exit, anvil logs the peaks it saw
as Postfix does: ``statistics: max connection rate 5/60s for
(smtp:192.0.2.1) at Nov 29 12:59:36``, ``max connection count``, ``max
message rate``, ``max recipient rate``, ``max newtls rate``, ``max auth
rate``, ``max cache size``.

``hato_anvil_backend = redis:URL`` (hato) keeps the counters in Redis, so
that several hato machines enforce one limit per client
(:mod:`hato.io.anvil_redis`; docs/scale-out.md). The local table is kept
as well: when Redis cannot be reached anvil answers from it (warning
``anvil: redis backend URL: ERROR; using local counters``), tries Redis
again every few seconds, and when it is back sends it this instance's live
connection counts and logs ``anvil: redis backend URL is back; counters
shared again``.

Parameters: anvil_rate_time_unit, anvil_status_update_time,
hato_anvil_backend.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from ..proto import anvil as A
from ..io.ipc import attr_session, serve_sessions
from ..proto.attr import Attrs

RETRY_INTERVAL = 5.0  # seconds between attempts to reach Redis again
PING_INTERVAL = 60.0  # seconds between "still alive" pings to Redis


def postfix_clock(when: float) -> str:
    """ctime()'s "Nov 29 12:59:36" (the day space-padded)."""
    return time.ctime(when)[4:19]


class Anvil:
    def __init__(self, settings, log):
        self.log = log
        self.unit = max(1, int(settings.time("anvil_rate_time_unit")))
        self.status_every = max(1, int(settings.time("anvil_status_update_time")))
        self.table = A.AnvilTable(self.unit)
        self.redis = None
        self.redis_url = ""
        self.shared = False
        self._recovering: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()  # Redis disconnects in flight
        backend = settings.str("hato_anvil_backend").strip()
        if backend and backend != "local":
            from ..io.anvil_redis import RedisCounters

            # a bad URL raises ValueError: the service stops with a fatal line
            self.redis = RedisCounters(backend, rate_time_unit=self.unit,
                                       instance=instance_id(settings))
            self.redis_url = self.redis.display_url  # never the password
            self.shared = True

    # -- requests ---------------------------------------------------------------------------

    async def answer(self, req: Attrs, held: Counter) -> Attrs:
        now = time.time()
        reply, warning = A.handle(self.table, req, now, held)
        if warning:
            self.log.warning(warning)
            return reply
        if self.redis is None or not self.shared:
            return reply
        request, ident = req.get("request") or "", req.get("ident") or ""
        try:
            if request in A.RATE_OF:
                count, rate = await self.redis.event(request, ident)
                self._see(request, ident, count, rate, now)
                if request == "connect":
                    return Attrs.of(status=A.STATUS_OK, count=count, rate=rate)
                return Attrs.of(status=A.STATUS_OK, rate=rate)
            if request == "disconnect":
                # Answered at once: the next request on this connection (often a
                # connect from the same client) must not queue behind Redis.
                self._background(self.redis.disconnect(ident))
            elif request in ("lookup", "newtls_report"):
                got = await self.redis.lookup(ident)
                if request == "newtls_report":
                    return Attrs.of(status=A.STATUS_OK, rate=got.get("newtls", 0))
                return Attrs.of(status=A.STATUS_OK, count=got.get("count", 0),
                                rate=got.get("rate", 0), mail=got.get("message", 0),
                                rcpt=got.get("recipient", 0), newtls=got.get("newtls", 0),
                                auth=got.get("auth", 0))
        except Exception as err:  # RedisUnavailable, and anything a client library raises
            self._lost_redis(err)
        return reply

    def _background(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)

        def done(t: asyncio.Task) -> None:
            self._pending.discard(t)
            if not t.cancelled() and t.exception() is not None:
                self._lost_redis(t.exception())
        task.add_done_callback(done)

    def _see(self, request: str, ident: str, count: int, rate: int, now: float) -> None:
        """Shared answers go into the statistics too."""
        stats = self.table.stats
        if request == "connect":
            stats.count.see(count, ident, now)
        stats.rates[A.RATE_OF[request]].see(rate, ident, now)

    def _lost_redis(self, err: Exception) -> None:
        if not self.shared:
            return
        self.shared = False
        self.log.warning(f"anvil: redis backend {self.redis_url}: {err}; using local counters")
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        while not self.shared:
            await asyncio.sleep(RETRY_INTERVAL)
            try:
                if await self.redis.ping():
                    await self.redis.resync(self.table.live_counts())
                    self.shared = True
                    self.log.info(f"anvil: redis backend {self.redis_url} is back; "
                                  f"counters shared again")
            except Exception:
                continue

    async def start(self) -> None:
        if self.redis is None:
            return
        try:
            await self.redis.resync({})  # what this instance left before a restart
        except Exception as err:
            self._lost_redis(err)

    # -- housekeeping -----------------------------------------------------------------------

    def report(self) -> None:
        for line in self.table.stats.report(self.unit, postfix_clock):
            self.log.info(line)

    async def housekeeping(self, stop: asyncio.Event) -> None:
        next_report = time.monotonic() + self.status_every
        next_ping = time.monotonic() + PING_INTERVAL
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), min(1.0, self.unit))
            except asyncio.TimeoutError:
                pass
            self.table.expire(time.time())
            now = time.monotonic()
            if now >= next_report:
                self.report()
                next_report = now + self.status_every
            if self.redis is not None and self.shared and now >= next_ping:
                # a quiet instance stays counted among the live ones
                next_ping = now + PING_INTERVAL
                try:
                    alive = await self.redis.ping()
                except Exception as err:
                    self._lost_redis(err)
                else:
                    if not alive:
                        self._lost_redis(ConnectionError("no answer to ping"))

    # -- connections --------------------------------------------------------------------------

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held: Counter = Counter()  # the connections this requester registered

        async def answer(req: Attrs) -> Attrs:
            return await self.answer(req, held)
        try:
            await attr_session(reader, writer, answer, self.log.warning, max_message=64 * 1024)
        finally:
            await self._drop(held)

    async def _drop(self, held: Counter) -> None:
        """The requester went away: its connections end with it."""
        now = time.time()
        for ident, n in held.items():
            for _ in range(n):
                self.table.disconnect(ident, now)
                if self.redis is not None and self.shared:
                    try:
                        await self.redis.disconnect(ident)
                    except Exception as err:
                        self._lost_redis(err)


def instance_id(settings) -> str:
    """How this instance names itself in shared counters."""
    return f"{settings.str('myhostname')}:{settings.str('queue_directory')}"


async def serve(ctx) -> int:
    try:
        anvil = Anvil(ctx.settings, ctx.log)
    except ValueError as err:
        ctx.log.fatal(f"hato_anvil_backend: {err}")
        return 1
    await anvil.start()
    try:
        await serve_sessions(ctx.listeners, anvil.session, ctx.stop, anvil.housekeeping)
    finally:
        anvil.report()
        if anvil.redis is not None:
            try:
                await anvil.redis.close()
            except Exception:
                pass
    return 0

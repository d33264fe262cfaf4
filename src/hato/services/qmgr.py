"""qmgr: the queue manager, as qmgr(8).

Moves mail from incoming/ to active/, resolves every recipient (what
trivial-rewrite does: local, virtual, relay or default transport, with
transport_maps), groups recipients by transport and next hop, and hands
each group to the delivery agent on ``$queue_directory/private/<transport>``
(the attribute protocol of hato.delivery.request). It then records the
outcome in the queue file: delivered and bounced recipients are marked done,
deferred ones are logged in defer/. A message with nothing left is removed
(``QID: removed``); one with deferred recipients goes to deferred/, whose
file time is the time of the next attempt (``minimal_backoff_time`` doubled
up to ``maximal_backoff_time``). Messages older than
``maximal_queue_lifetime`` (``bounce_queue_lifetime`` for bounces) are
returned. Failed recipients produce a delivery status notification to the
sender (``QID: sender non-delivery notification: QID2``) through the bounce
module, never for a bounce itself.

Address verification probes (envelope attribute ``probe=yes``, queued by
the verify service) are routed with the ``address_verify_*`` transports
and maps and no content filter; their results go to the verify service
and the probe is removed, never bounced or deferred (a deferred probe is
an "undeliverable" result, as in Postfix). ``sendmail -bv`` messages
(``verify=yes``) are not delivered either: their sender gets a report.

A message ``postsuper -e`` or ``-f`` marked (the queue file's expire bit)
is not delivered: at its next attempt every pending recipient is returned
to the sender, with the reason of its last deferral when the message has a
defer log, else ``message is administratively expired``
(``QID: from=<sender>, status=expired, returned to sender``). The hold
queue is never scanned. A message that leaves the active queue while it is
being delivered (``postsuper -d``, ``-h`` or ``-r``) is left where it went:
qmgr logs ``QID: no longer in the active queue`` and records nothing more;
the logs of a deleted message are removed.

A transport whose master.cf service is a plain ``discard`` (type unix, no
options) is run inside qmgr: the recipients are logged as discard(8) logs
them (``$syslog_name/discard``, ``status=sent``) without a request to a separate
process — the same outcome, one inter-process round trip less per message.

Requests on ``public/qmgr``: ``request=wakeup`` (new mail in incoming/),
``request=flush`` (try every deferred message now: ``hato flush``,
``postqueue -f``). The master.cf wakeup time and ``queue_run_delay``
schedule the scan of deferred/. incoming/ is scanned on each wake-up, at
least every SCAN_INTERVAL, and at once after qmgr queued a notice there
itself; a delivery that ended does not trigger a scan (every message found
already has its task, waiting for a slot).

Parameters: queue_run_delay, minimal_backoff_time, maximal_backoff_time,
maximal_queue_lifetime, bounce_queue_lifetime, qmgr_message_active_limit,
default_destination_concurrency_limit, <transport>_destination_concurrency_limit,
default_destination_recipient_limit, <transport>_destination_recipient_limit,
delay_warning_time, notify_classes, bounce_notice_recipient, mydestination etc.
(through the resolver).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import defaultdict
from collections.abc import Sequence

from ..config.errors import ConfigError
from ..delivery.request import (
    BOUNCED,
    DEFERRED,
    SENT,
    DeliveryRequest,
    RcptRequest,
    RcptStatus,
    decode_statuses,
    format_delay,
)
from ..io.agent import log_statuses
from ..io.batch import Batcher, Failed
from ..io.ipc import ClientPool, serve_requests
from ..io.maillog import DaemonLog
from ..io.verify_client import VerifyUpdater
from ..policy.address import log_form
from ..policy import verify as V
from ..policy.resolve import Resolver, parse_transport
from ..proto.attr import Attrs
from ..queue.bounce import send_bounce, send_notice, send_verify_report
from ..queue.store import ACTIVE, INCOMING, MESSAGE_QUEUES, CorruptQueueFile, NoSuchMessage
from ..queue.errors import best_effort, wrap_os_error
from ..queue.store import QueueStore
from ..queue.store import DEFERRED as DEFERRED_Q
from ..tables.base import TableRetry
from . import discard

SCAN_INTERVAL = 1.0  # incoming/ is scanned at least this often, wake-ups or not


class QueueManager:
    def __init__(self, ctx):
        self.ctx = ctx
        self.s = ctx.settings
        self._ints: dict[tuple[str, str], int] = {}  # _transport_int's answers
        self._lifetime = self.s.time("maximal_queue_lifetime")
        self._bounce_lifetime = self.s.time("bounce_queue_lifetime")
        self.external = self.s.str("info_log_address_format").lower() != "internal"
        self.log = ctx.log
        self.store = QueueStore.from_settings(self.s)
        self.queue_dir = self.s.str("queue_directory")
        self.resolver = Resolver(self.s)
        self._probe_resolver: Resolver | None = None  # address_verify_* routing
        self._verify: VerifyUpdater | None = None
        self.wake = asyncio.Event()
        self.flush_requested = False
        self.in_flight: set[str] = set()
        self.tasks: set[asyncio.Task] = set()
        self.active = asyncio.Semaphore(max(1, self.s.int("qmgr_message_active_limit")))
        self.clients: dict[str, ClientPool] = {}
        self.dest_limits: dict[tuple[str, str], asyncio.Semaphore] = {}
        self.dest_jobs: dict[tuple[str, str], int] = {}  # deliveries waiting or under way
        self.last_deferred_scan = 0.0
        # file work goes to a thread in batches: one hand-off (and one fsync
        # of active/) for the messages taken in together
        self._intake = Batcher(self._take_in)
        self._finishing = Batcher(self._finish_all)
        self._notices = False  # a notice went into incoming/ since the last scan
        #: plain discard services, run here: name -> their log (made on first use)
        self._inline: dict[str, DaemonLog | None] = {
            svc.name: None for svc in ctx.config.master.services
            if svc.type == "unix" and svc.command == "discard" and not svc.args}

    # -- configuration helpers ------------------------------------------------------

    def _transport_int(self, transport: str, suffix: str) -> int:
        """$transport_suffix, else $default_suffix (asked for each message:
        read once; a reload starts a new qmgr)."""
        key = (transport, suffix)
        value = self._ints.get(key)
        if value is None:
            try:
                value = self.s.int(f"{transport}_{suffix}")
            except ConfigError:
                value = self.s.int(f"default_{suffix}")
            self._ints[key] = value
        return value

    def _dest_limit(self, transport: str, nexthop: str) -> asyncio.Semaphore:
        key = (transport, nexthop)
        sem = self.dest_limits.get(key)
        if sem is None:
            limit = self._transport_int(transport, "destination_concurrency_limit")
            sem = self.dest_limits[key] = asyncio.Semaphore(limit if limit > 0 else 1000)
        return sem

    def _client(self, transport: str) -> ClientPool:
        client = self.clients.get(transport)
        if client is None:
            path = os.path.join(self.queue_dir, "private", transport)
            # as many deliveries at once as the transport may run processes
            # (Postfix: master.cf maxproc, default_process_limit)
            client = self.clients[transport] = ClientPool(
                path, self.s.int("default_process_limit"), timeout=3600)
        return client

    def _discard_inline(self, transport: str, req: DeliveryRequest) -> list[RcptStatus]:
        """A plain discard service's delivery, done here: what the discard
        agent would answer and log."""
        log = self._inline[transport]
        if log is None:
            svc = self.ctx.config.master.find(transport, "unix")[0]
            name = self.ctx.config.settings(svc).str("syslog_name")
            log = self._inline[transport] = DaemonLog(self.log, f"{name}/discard")
        started = time.time()
        statuses = discard.deliver(req, {})
        log_statuses(log, req, statuses, started=started, connected=started,
                     finished=time.time(), external=self.external,
                     negative_cache=self.s.bool("address_verify_negative_cache"))
        return statuses

    # -- scanning ------------------------------------------------------------------

    def _start(self, queue_id: str, src: str) -> None:
        if queue_id in self.in_flight:
            return
        self.in_flight.add(queue_id)
        task = asyncio.get_running_loop().create_task(self._process(queue_id, src))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def scan(self) -> None:
        for qid in self.store.list(INCOMING):
            self._start(qid, INCOMING)
        now = time.time()
        delay = self.s.time("queue_run_delay")
        if self.flush_requested or now - self.last_deferred_scan >= delay:
            flush, self.flush_requested = self.flush_requested, False
            self.last_deferred_scan = now
            for qid in self.store.list(DEFERRED_Q):
                try:
                    due = os.stat(self.store.path(DEFERRED_Q, qid)).st_mtime
                except OSError:
                    continue
                if flush or due <= now:
                    self._start(qid, DEFERRED_Q)

    async def run(self) -> int:
        for sock in self.ctx.listeners:
            t = asyncio.get_running_loop().create_task(
                serve_requests(sock, self._request, self.ctx.stop, self.log.warning))
            self.tasks.add(t)
        # Messages a previous queue manager had in active/ when it died go
        # back to incoming/ (at least once: a delivery may be repeated).
        for qid in self.store.list(ACTIVE):
            try:
                self.store.move(qid, ACTIVE, INCOMING)
            except (NoSuchMessage, FileNotFoundError):
                pass
        self.log.info("queue manager started")
        while not self.ctx.stop.is_set():
            try:
                self.scan()
            except OSError as err:
                self.log.warning(f"queue scan: {err}")
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), SCAN_INTERVAL)
            except asyncio.TimeoutError:
                pass
        # Let deliveries in progress finish; their messages stay consistent
        # in any case (an interrupted one is retried from active/).
        pending = [t for t in self.tasks if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=30)
        for client in self.clients.values():
            client.close()
        if self._verify is not None:
            self._verify.close()
        return 0

    async def _request(self, req: Attrs) -> Attrs | None:
        kind = req.get("request")
        if kind == "flush":
            self.flush_requested = True
        self.wake.set()
        return Attrs.of(status="0") if req.get("reply") == "yes" else None

    # -- one message ------------------------------------------------------------------

    async def _process(self, queue_id: str, src: str) -> None:
        try:
            async with self.active:
                await self._deliver_message(queue_id, src)
        except NoSuchMessage:
            await asyncio.to_thread(self._vanished, queue_id)
        except Exception:
            self.log.exception(f"{queue_id}: unexpected error in the queue manager")
        finally:
            self.in_flight.discard(queue_id)
            if self._notices:
                self._notices = False
                self.wake.set()  # a notice it queued: look again now

    def _vanished(self, queue_id: str) -> None:
        """The message left the active queue while it was being delivered
        (postsuper deleted it, put it on hold or requeued it). It stays where
        it went; a message that is gone takes its logs with it."""
        where = self.store.find(queue_id, [q for q in MESSAGE_QUEUES if q != ACTIVE])
        if where is None:
            self.store.remove_logs(queue_id)
            self.log.info(f"{queue_id}: no longer in the active queue")
        else:
            self.log.info(f"{queue_id}: no longer in the active queue; now in {where}")

    def _backoff(self, arrival: float, now: float) -> float:
        lo = self.s.time("minimal_backoff_time")
        hi = self.s.time("maximal_backoff_time")
        return float(min(max(lo, now - arrival), hi))

    def _take_in(self, items: Sequence[tuple[str, str]]) -> list:
        """In a worker thread, the file work of taking messages in, for a
        batch of (queue id, source queue) at once (one hand-off, see
        :class:`Batcher`): move each to active/, then one fsync of
        active/ for all of them; then open each, see whether postsuper
        asked for it to expire, and if not, remove the old defer log (this
        attempt writes the reasons anew: mailq shows the last ones, as
        Postfix's qmgr does) and resolve its recipients. Per message:
        (file, resolutions); (file, True) when it is to expire; (None, None)
        when it went away meanwhile (postsuper -d or -h); (None, error) when
        corrupt; Failed(error) when the move failed."""
        store = self.store
        out: list = [None] * len(items)
        moved: dict[str, list[tuple[int, str, str]]] = defaultdict(list)  # dir -> moves
        for i, (queue_id, src) in enumerate(items):
            try:
                old = store.path(src, queue_id)
                store.move(queue_id, src, ACTIVE, sync=False)
            except (NoSuchMessage, FileNotFoundError):
                out[i] = (None, None)
                continue
            except Exception as err:  # noqa: BLE001 - that message's submitter gets it
                out[i] = Failed(err)
                continue
            new = store.path(ACTIVE, queue_id)
            moved[os.path.dirname(new)].append((i, old, new))
        for directory, moves in moved.items():
            try:
                store.sync_dir(directory)
            except OSError as e:
                # As QueueStore.move(): the moves are undone and refused.
                for i, old, new in moves:
                    best_effort(store.ops.rename_noreplace, new, old)
                    out[i] = Failed(wrap_os_error(e, f"move {items[i][0]} from {items[i][1]} "
                                                     f"to {ACTIVE}: fsync"))
                continue
            for i, _old, _new in moves:
                try:
                    out[i] = self._open_active(items[i][0])
                except Exception as err:  # noqa: BLE001
                    out[i] = Failed(err)
        return out

    def _open_active(self, queue_id: str):
        store = self.store
        try:
            qf = store.open(ACTIVE, queue_id)
        except NoSuchMessage:
            return None, None
        except CorruptQueueFile as err:
            store.quarantine(ACTIVE, queue_id)
            return None, err
        try:
            expire = qf.forced_expire
            if not expire:
                store.remove_log("defer", queue_id)
                if qf.envelope.attributes.get("probe") != "yes":
                    # the usual case: resolved in the same hand-off
                    return qf, self._resolve_all(self.resolver, qf.envelope)
        except BaseException:
            qf.close()
            raise
        return qf, expire

    async def _deliver_message(self, queue_id: str, src: str) -> None:
        qf, outcome = await self._intake.submit((queue_id, src))
        if qf is None:
            if outcome is not None:
                self.log.warning(f"{queue_id}: {outcome}; moved to the corrupt queue")
            return
        try:
            if isinstance(outcome, list):
                await self._deliver_open(qf, queue_id, src, resolved=outcome)
            else:
                await self._deliver_open(qf, queue_id, src, bool(outcome))
        finally:
            qf.close()

    def _resolve_all(self, resolver, env) -> list:
        """Each recipient's Resolution (or the TableRetry of its lookup), in
        one worker-thread hand-off; None for those already done."""
        out: list = []
        for rcpt in env.recipients:
            if rcpt.done:
                out.append(None)
                continue
            # header_checks REDIRECT sends the message to one address instead.
            target = env.attributes.get("redirect") or rcpt.address
            try:
                out.append(resolver.resolve(target, env.sender))
            except TableRetry as err:
                out.append(err)
        return out

    async def _deliver_open(self, qf, queue_id: str, src: str, expire: bool = False, *,
                            resolved: list | None = None) -> None:
        """Deliver an open message: *resolved* are its recipients'
        resolutions when _take_in() made them already."""
        env = qf.envelope
        active_time = time.time()
        if src == INCOMING:
            self.log.info(f"{queue_id}: from=<{log_form(env.sender, self.external)}>, "
                          f"size={env.size}, "
                          f"nrcpt={len(env.recipients)} (queue active)")
        groups: dict[tuple[str, str], list[RcptRequest]] = defaultdict(list)
        results: dict[int, RcptStatus] = {}
        requests: dict[int, RcptRequest] = {}
        if expire:
            await asyncio.to_thread(self._force_expire, qf, queue_id, env, active_time)
            return
        # An address verification probe takes the address_verify_* routes
        # and no content filter, and is never delivered (_finish_probe).
        probe = env.attributes.get("probe") == "yes"
        resolver = self.resolver
        if probe:
            if self._probe_resolver is None:
                self._probe_resolver = await asyncio.to_thread(Resolver, self.s, verify=True)
            resolver = self._probe_resolver
        if resolved is None:
            resolved = await asyncio.to_thread(self._resolve_all, resolver, env)
        for i, rcpt in enumerate(env.recipients):
            res = resolved[i]
            if res is None:
                continue
            if isinstance(res, TableRetry):
                results[i] = RcptStatus(i, DEFERRED, "4.3.0", f"address resolver failure: "
                                                              f"{res.reason}")
                requests[i] = RcptRequest(i, rcpt.address, rcpt.orig_address)
                continue
            rr = RcptRequest(i, res.recipient, rcpt.orig_address or rcpt.address,
                             ",".join(sorted(rcpt.notify)), rcpt.orcpt)
            requests[i] = rr
            if res.failed:
                results[i] = RcptStatus(i, DEFERRED, "4.3.0", "address resolver failure")
                continue
            transport, nexthop = res.transport, res.nexthop
            content_filter = env.attributes.get("content_filter") if not probe else None
            if content_filter:
                # header_checks FILTER: the message goes to that transport
                # (and next hop) for every recipient, as Postfix does.
                ftransport, fnexthop = parse_transport(content_filter,
                                                       res.recipient.rpartition("@")[2])
                transport, nexthop = ftransport or transport, fnexthop or nexthop
            groups[(transport, nexthop)].append(rr)

        async def dispatch(transport: str, nexthop: str, batch: list[RcptRequest]) -> None:
            key = (transport, nexthop)
            self.dest_jobs[key] = self.dest_jobs.get(key, 0) + 1
            try:
                async with self._dest_limit(transport, nexthop):
                    await send(transport, nexthop, batch)
            finally:
                self.dest_jobs[key] -= 1
                if not self.dest_jobs[key]:
                    del self.dest_jobs[key]

        async def send(transport: str, nexthop: str, batch: list[RcptRequest]) -> None:
            # Other deliveries to this destination waiting or under way: the
            # agent may keep its connection for them (Postfix's
            # DEL_REQ_FLAG_CONN_LOAD, smtp_connection_cache_on_demand).
            busy = self.dest_jobs.get((transport, nexthop), 0) > 1
            req = DeliveryRequest(ACTIVE, queue_id, transport, nexthop, env.sender,
                                  env.arrival_time, active_time, batch, envid=env.envid,
                                  ret=env.ret or "", size=env.size,
                                  attributes=dict(env.attributes),
                                  flags=frozenset({"CONN_LOAD"}) if busy else frozenset())
            if transport in self._inline:
                for st in self._discard_inline(transport, req):
                    results[st.index] = st
                return
            try:
                reply = await self._client(transport).request(req.encode())
                statuses = decode_statuses(reply)
            except (OSError, ConnectionError, asyncio.TimeoutError) as err:
                reason = f"delivery temporarily suspended: connect to transport " \
                         f"private/{transport}: {getattr(err, 'strerror', None) or err}"
                self.log.warning(f"{queue_id}: {reason}")
                statuses = [RcptStatus(r.index, DEFERRED, "4.3.0", reason) for r in batch]
            for st in statuses:
                results[st.index] = st

        if env.attributes.get("verify") == "yes":
            await asyncio.to_thread(self._verify_report, qf, queue_id, env, groups, results,
                                    requests, active_time)
            return
        jobs = []
        for (transport, nexthop), rcpts in groups.items():
            limit = self._transport_int(transport, "destination_recipient_limit")
            limit = limit if limit > 0 else len(rcpts)
            for k in range(0, len(rcpts), limit):
                jobs.append(dispatch(transport, nexthop, rcpts[k:k + limit]))
        await asyncio.gather(*jobs)
        if probe:
            await self._finish_probe(qf, queue_id, env, results, requests, active_time)
            return
        await self._finishing.submit((qf, queue_id, env, results, requests))

    async def _finish_probe(self, qf, queue_id: str, env, results: dict[int, RcptStatus],
                            requests: dict[int, RcptRequest], active_time: float) -> None:
        """An address verification probe: each result goes to the verify
        service (for the address the probe was for and, when the resolver
        changed it, for the final address too, as Postfix's verify_append
        does), and the probe is removed: never bounced, deferred or
        delivered. The delivery agents logged ``status=deliverable`` or
        ``status=undeliverable``; results qmgr made itself (resolver
        failures) are logged here. A result the verify service did not take
        stays: the probe is deferred and tried again."""
        if self._verify is None:
            self._verify = VerifyUpdater.from_settings(self.s)
        negative_cache = self.s.bool("address_verify_negative_cache")
        done, deferred = [], False
        for i, st in sorted(results.items()):
            rcpt = env.recipients[i]
            address = requests[i].address
            orig = rcpt.orig_address or rcpt.address
            vstat = {SENT: V.OK, BOUNCED: V.BOUNCE}.get(st.status, V.DEFER)
            ok = True
            if negative_cache or vstat == V.OK:
                ok = await self._verify.update(orig, vstat, st.reason) == V.STAT_OK
                if ok and address.lower() != orig.lower():
                    ok = await self._verify.update(address, vstat, st.reason) == V.STAT_OK
            if not ok:
                self.log.warning(f"{queue_id}: {self.s.str('address_verify_service_name')} "
                                 f"service failure")
                deferred = True
                continue
            if st.relay == "none" and st.reason.startswith("address resolver failure"):
                action = V.status_name(vstat) if negative_cache or vstat == V.OK \
                    else "undeliverable-but-not-cached"
                delay = max(0.0, time.time() - env.arrival_time)
                self.log.info(f"{queue_id}: to=<{log_form(address, self.external)}>, "
                              f"relay=none, delay={delay:.2g}, "
                              f"delays={max(0.0, active_time - env.arrival_time):.2g}/0/0/0, "
                              f"dsn={st.dsn}, status={action} ({st.reason})")
            done.append(rcpt)

        def finish() -> None:
            if done:
                qf.mark_done(*done)
            lifetime = self._bounce_lifetime if not env.sender else self._lifetime
            if not deferred or time.time() - env.arrival_time >= lifetime:
                self._remove(queue_id)
            else:
                self._defer(queue_id, env, time.time())
        await asyncio.to_thread(finish)

    def _force_expire(self, qf, queue_id: str, env, active_time: float) -> None:
        """postsuper -e/-f: no delivery; every pending recipient goes back
        to the sender, for the reason of its last deferral (the defer log)
        or, without one, because the message is administratively expired."""
        last: dict[str, dict[str, str]] = {}
        for entry in self.store.read_log("defer", queue_id):
            last[entry.get("recipient", "")] = entry
        results: dict[int, RcptStatus] = {}
        requests: dict[int, RcptRequest] = {}
        now = time.time()
        for i, rcpt in enumerate(env.recipients):
            if rcpt.done:
                continue
            requests[i] = RcptRequest(i, rcpt.address, rcpt.orig_address or rcpt.address)
            entry = last.get(rcpt.address)
            if entry is not None:
                results[i] = RcptStatus(i, DEFERRED, entry.get("status") or "4.7.0",
                                        entry.get("reason") or "message is administratively "
                                                               "expired",
                                        entry.get("relay") or "none")
                continue
            st = RcptStatus(i, DEFERRED, "4.7.0", "message is administratively expired")
            results[i] = st
            delay = format_delay(max(0.0, now - env.arrival_time))
            before = format_delay(max(0.0, active_time - env.arrival_time))
            self.log.info(f"{queue_id}: to=<{log_form(rcpt.address, self.external)}>, "
                          f"relay=none, delay={delay}, delays={before}/0/0/0, "
                          f"dsn={st.dsn}, status=deferred ({st.reason})")
        self.store.remove_log("defer", queue_id)
        self.log.info(f"{queue_id}: from=<{log_form(env.sender, self.external)}>, "
                      f"status=expired, returned to sender")
        self._finish(qf, queue_id, env, results, requests, forced=True)

    def _finish_all(self, items: Sequence[tuple]) -> list:
        """_finish() for a batch of messages (one hand-off)."""
        out: list = []
        for item in items:
            try:
                out.append(self._finish(*item))
            except Exception as err:  # noqa: BLE001 - that message's submitter gets it
                out.append(Failed(err))
        return out

    def _finish(self, qf, queue_id: str, env, results: dict[int, RcptStatus],
                requests: dict[int, RcptRequest], forced: bool = False) -> None:
        store = self.store
        now = time.time()
        lifetime = self._bounce_lifetime if not env.sender else self._lifetime
        expired = forced or now - env.arrival_time >= lifetime
        done, bounced, succeeded, delayed = [], [], [], []
        deferred = False
        for i, st in results.items():
            rcpt = env.recipients[i]
            entry = {"recipient": requests[i].address, "orig_rcpt": rcpt.orig_address,
                     "notify": ",".join(sorted(rcpt.notify)), "orcpt": rcpt.orcpt,
                     "status": st.dsn, "action": st.action, "reason": st.reason,
                     "relay": st.relay, "offset": str(rcpt.offset or 0),
                     **st.log_fields()}  # Remote-MTA, Diagnostic-Code of the DSN
            if st.status == DEFERRED and expired:
                st = RcptStatus(i, BOUNCED, "5" + st.dsn[1:] if st.dsn[:1] == "4" else st.dsn,
                                st.reason if forced else f"message expired: {st.reason}",
                                st.relay, "failed")
                entry.update(status=st.dsn, action="failed", reason=st.reason)
                if not forced:  # _force_expire logged it for the message
                    self.log.info(f"{queue_id}: to=<{log_form(requests[i].address, self.external)}>, "
                                  f"relay={st.relay}, "
                                  f"dsn={st.dsn}, status=expired, returned to sender")
            if st.status == SENT:
                done.append(rcpt)
                if "SUCCESS" in rcpt.notify:
                    succeeded.append(entry)
            elif st.status == BOUNCED:
                done.append(rcpt)
                bounced.append(entry)
            else:
                deferred = True
                delayed.append(entry)
                store.append_log("defer", queue_id, entry)
        for entry in bounced:
            store.append_log("bounce", queue_id, entry)
        finished = {id(r) for r in done}
        removing = not deferred and all(r.done or id(r) in finished for r in env.recipients)
        if done:
            # A message that goes away next needs no fdatasync of its marks
            # (as Postfix: a crash before the removal is durable repeats a
            # delivery at worst).
            qf.mark_done(*done, sync=not removing)
        if bounced:
            self._notify_sender(queue_id, env, qf)
        if succeeded:
            self._notice("success", queue_id, env, qf, succeeded)
        if delayed and env.warn_time and now >= env.warn_time:
            self._notice("delay", queue_id, env, qf, delayed)
            qf.update_warn_time(0)
        if removing:
            self._remove(queue_id)
        else:
            self._defer(queue_id, env, now)
        # Closed here, on the finishing thread: the close of a removed file
        # is when the kernel frees it, which takes longer than the unlink
        # (about 0.1 ms here) and would hold up the event loop.
        qf.close()

    def _remove(self, queue_id: str) -> None:
        """Nothing is left to do: the message and its logs go."""
        self.store.remove(ACTIVE, queue_id)
        for kind in ("defer", "bounce", "trace"):
            self.store.remove_log(kind, queue_id)
        self.log.info(f"{queue_id}: removed")

    def _defer(self, queue_id: str, env, now: float) -> None:
        """To deferred/, due after the back-off (the file's mtime)."""
        self.store.move(queue_id, ACTIVE, DEFERRED_Q)
        due = now + self._backoff(env.arrival_time, now)
        try:
            os.utime(self.store.path(DEFERRED_Q, queue_id), (due, due))
        except OSError:
            pass

    def _verify_report(self, qf, queue_id: str, env, groups, results, requests,
                       active_time: float) -> None:
        """sendmail -bv: nothing is delivered; each recipient's resolution
        (transport and next hop) goes into a report to the sender."""
        verdicts: dict[int, tuple[str, str, str, str]] = {}
        for (transport, nexthop), rcpts in groups.items():
            for rr in rcpts:
                if transport in ("error", "retry"):
                    dsn, _, text = nexthop.partition(" ")
                    if not (dsn[:1].isdigit() and dsn.count(".") == 2):
                        dsn, text = ("5.0.0" if transport == "error" else "4.0.0"), nexthop
                    verdicts[rr.index] = ("undeliverable", dsn, transport, text)
                else:
                    where = f"{transport}:{nexthop}" if nexthop else transport
                    verdicts[rr.index] = ("deliverable", "2.0.0", transport,
                                          f"delivery via {where}")
        for i, st in results.items():
            verdicts[i] = ("undeliverable", st.dsn, "none", st.reason)
        now = time.time()
        entries = []
        for i, (action, dsn, relay, reason) in sorted(verdicts.items()):
            rcpt = env.recipients[i]
            address = requests[i].address
            delay = max(0.0, now - env.arrival_time)
            self.log.info(f"{queue_id}: to=<{log_form(address, self.external)}>, relay={relay}, "
                          f"delay={delay:.2g}, delays={max(0.0, active_time - env.arrival_time):.2g}"
                          f"/0/0/0, dsn={dsn}, status={action} ({reason})")
            entries.append({"recipient": address, "orig_rcpt": rcpt.orig_address,
                            "orcpt": rcpt.orcpt, "status": dsn, "reason": reason,
                            "action": action})
        try:
            new_id = send_verify_report(self.s, self.store, env, qf, entries)
        except Exception:
            self.log.exception(f"{queue_id}: cannot send the delivery status report")
            return
        if new_id:
            self.log.info(f"{queue_id}: sender delivery status notification: {new_id}")
        self.store.remove(ACTIVE, queue_id)
        self.log.info(f"{queue_id}: removed")

    def _notice(self, kind: str, queue_id: str, env, qf, entries: list[dict]) -> None:
        try:
            new_id = send_notice(kind, self.s, self.store, env, qf, entries)
        except Exception:
            self.log.exception(f"{queue_id}: cannot send the {kind} notification")
            return
        if new_id:
            self._notices = True
            what = "delivery status notification" if kind == "success" else \
                "sender delay notification"
            self.log.info(f"{queue_id}: {what}: {new_id}")

    def _notify_sender(self, queue_id: str, env, qf) -> None:
        """A delivery status notification for the bounced recipients."""
        entries = self.store.read_log("bounce", queue_id)
        try:
            new_id = send_bounce(self.s, self.store, env, qf, entries)
        except Exception:
            self.log.exception(f"{queue_id}: cannot send the non-delivery notification")
            return
        self.store.remove_log("bounce", queue_id)
        if new_id:
            self._notices = True
            self.log.info(f"{queue_id}: sender non-delivery notification: {new_id}")


async def serve(ctx) -> int:
    return await QueueManager(ctx).run()

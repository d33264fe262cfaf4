"""pickup: takes what sendmail dropped in maildrop/ and feeds it through
cleanup into incoming/, as pickup(8).

The submitting user is the file's owner (never what the file says); the
log line is Postfix's ``QID: uid=N from=<sender>``, followed by cleanup's
``QID: message-id=<...>``. A file that cannot be read is moved to
corrupt/. A message cleanup rejects (message_size_limit, header_checks
REJECT) is returned to the sender with a notice, as Postfix does for
local submissions. Afterwards qmgr is woken through ``public/qmgr``.

Requests on ``public/pickup``: any message wakes pickup (sendmail sends one
after each submission); the master.cf wakeup time (60 s by default) makes it
look anyway.

Parameters: queue_directory, and everything cleanup reads.
"""

from __future__ import annotations

import asyncio
import errno
import os

from ..io.cleanup_milter import NonSmtpdMilters
from ..io.ipc import notify, serve_requests
from ..policy.address import log_form
from ..proto.attr import Attrs
from ..queue.bounce import send_bounce
from ..queue.cleanup import Cleanup
from ..queue.inject import Injection
from ..queue.store import MAILDROP, CorruptQueueFile, NoSuchMessage, QueueStore
from ..tables.base import TableRetry


class Pickup:
    def __init__(self, ctx):
        self.ctx = ctx
        self.log = ctx.log
        self.s = ctx.settings
        self.external = self.s.str("info_log_address_format").lower() != "internal"
        self.store = QueueStore.from_settings(self.s)
        self.cleanup = Cleanup(self.s)
        self.wake = asyncio.Event()
        self.qmgr = os.path.join(self.s.str("queue_directory"), "public", "qmgr")
        wakeup, _ = ctx.service.wakeup()
        self.interval = float(wakeup or 60)
        milters = NonSmtpdMilters(self.s, self.log)
        self.milters = milters if milters.active else None
        self.loop: asyncio.AbstractEventLoop | None = None

    def _logger(self, level: str, text: str) -> None:
        {"warning": self.log.warning, "error": self.log.error}.get(level, self.log.info)(text)

    def one(self, maildrop_id: str) -> bool:
        """Move one maildrop file into the queue; True when it is gone."""
        store = self.store
        path = store.path(MAILDROP, maildrop_id)
        try:
            st = os.stat(path)
            qf = store.open(MAILDROP, maildrop_id, writable=False)
        except (FileNotFoundError, NoSuchMessage):
            return True
        except CorruptQueueFile as err:
            self.log.warning(f"{maildrop_id}: {err}; moved to the corrupt queue")
            store.quarantine(MAILDROP, maildrop_id)
            return True
        except OSError as err:
            if err.errno == errno.EACCES:
                return False  # not readable yet: its submitter is still writing it
            raise
        try:
            env = qf.envelope
            attrs = env.attributes
            uid = st.st_uid
            try:
                inj = Injection(self.cleanup, store)
                inj.start(
                    log=lambda level, text: None,
                    attributes={"rewrite_context": "local", "uid": str(uid),
                                **({"verify": "yes"} if attrs.get("verify") == "yes"
                                   else {})},
                    ret=env.ret, envid=env.envid,
                    sender=env.sender, recipients=env.recipients, rewrite_context="local",
                    userid=uid, submit_time=st.st_mtime, pickup_id=None,
                    full_name=env.full_name or None,
                    extract_recipients=attrs.get("extract_recipients") == "yes")
                for chunk in qf.content():
                    inj.feed(chunk)
                if inj.end_content().ok and self.milters is not None \
                        and attrs.get("verify") != "yes" and self.loop is not None:
                    # non_smtpd_milters: the chain runs in the service's loop
                    try:
                        asyncio.run_coroutine_threadsafe(self.milters.inspect(inj),
                                                         self.loop).result()
                    except BaseException:
                        inj.abort()
                        raise
                result = inj.commit()
            except TableRetry as err:
                self.log.warning(f"{maildrop_id}: {err}; will try again")
                return False
            res = result.result
            if result.queue_id:
                self.log.info(f"{result.queue_id}: uid={uid} from=<{log_form(env.sender, self.external)}>")
                for level, text in res.log:
                    self._logger(level, text)
            elif res.temporary:
                self.log.warning(f"{maildrop_id}: {res.smtp_reply()}; will try again")
                return False
            elif res.discard:
                self.log.info(f"{maildrop_id}: uid={uid} from=<{log_form(env.sender, self.external)}>")
                for level, text in res.log:
                    self._logger(level, text)
            else:
                for level, text in res.log:
                    self._logger(level, text)
                self._return_to_sender(maildrop_id, uid, env, qf, res)
        finally:
            qf.close()
        store.remove(MAILDROP, maildrop_id)
        return True

    def _return_to_sender(self, maildrop_id: str, uid: int, env, qf, res) -> None:
        """A local submission cleanup refused (too big, header_checks REJECT)
        goes back to its sender, as Postfix's pickup does: nothing vanishes."""
        code, dsn, text = res.detail()
        reason = res.reason or f"{dsn} {text}"
        if reason[:1].isdigit() and " " in reason:
            dsn, _, text = reason.partition(" ")
        self.log.info(f"{maildrop_id}: uid={uid} from=<{log_form(env.sender, self.external)}>: rejected: {dsn} {text}")
        entries = [{"recipient": r.address, "orig_rcpt": r.orig_address,
                    "notify": ",".join(sorted(r.notify)), "orcpt": r.orcpt,
                    "status": dsn if dsn[:1] == "5" else "5.3.0", "reason": text}
                   for r in env.recipients] or [{"recipient": "(none)", "status": dsn,
                                                 "reason": text}]
        env.queue_id = maildrop_id
        notice = send_bounce(self.s, self.store, env, qf, entries)
        if notice:
            self.log.info(f"{maildrop_id}: sender non-delivery notification: {notice}")
            notify(self.qmgr, Attrs.of(request="wakeup"))

    def scan(self) -> int:
        moved = 0
        for qid in self.store.list(MAILDROP):
            if self.ctx.stop.is_set():
                break
            try:
                if self.one(qid):
                    moved += 1
            except Exception:
                self.log.exception(f"{qid}: cannot pick up")
        return moved

    async def _request(self, req: Attrs) -> Attrs | None:
        self.wake.set()
        return None

    async def run(self) -> int:
        loop = self.loop = asyncio.get_running_loop()
        for sock in self.ctx.listeners:
            loop.create_task(serve_requests(sock, self._request, self.ctx.stop,
                                            self.log.warning))
        while not self.ctx.stop.is_set():
            moved = await asyncio.to_thread(self.scan)
            if moved:
                notify(self.qmgr, Attrs.of(request="wakeup"))
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), min(self.interval, 1.0))
            except asyncio.TimeoutError:
                pass
        self.cleanup.close()
        return 0


async def serve(ctx) -> int:
    return await Pickup(ctx).run()

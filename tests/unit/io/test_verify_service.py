"""The verify service (services.verify) with its cache (io.verify_cache) and
its clients (io.verify_client), in process: queries that queue a probe,
updates, the cache file and its clean-up, and smtpd's polling client over a
real socket."""

from __future__ import annotations

import asyncio
import os
import threading

from hato.io.agent import probe_log_status
from hato.io.verify_cache import VerifyCache
from hato.io.verify_client import VerifyQuery, VerifyUpdater
from hato.delivery.request import BOUNCED, SENT, RcptStatus
from hato.policy import verify as V
from hato.queue.store import INCOMING, QueueStore
from hato.services.verify import Verify

from tests.unit.policy.conftest import make_settings


class Log:
    def __init__(self):
        self.lines: list[tuple[str, str]] = []

    def info(self, text: str) -> None:
        self.lines.append(("info", text))

    def warning(self, text: str) -> None:
        self.lines.append(("warning", text))

    def error(self, text: str) -> None:
        self.lines.append(("error", text))

    fatal = error


def settings(tmp_path, extra: str = ""):
    return make_settings(f"queue_directory = {tmp_path}/q\ndata_directory = {tmp_path}/d\n"
                         f"address_verify_map = btree:{tmp_path}/d/verify_cache\n" + extra)


def service(tmp_path, extra: str = "") -> tuple[Verify, Log, QueueStore]:
    os.makedirs(f"{tmp_path}/d", exist_ok=True)
    s = settings(tmp_path, extra)
    store = QueueStore.from_settings(s)
    store.ensure_layout()
    log = Log()
    return Verify(s, log), log, store


def test_query_queues_one_probe_then_answers_from_the_cache(tmp_path) -> None:
    v, log, store = service(tmp_path)
    reply, probe = v.query("joe@example.net")
    assert (reply.get("status"), reply.get("recipient_status"), reply.get("reason")) == \
        ("0", "3", "Address verification in progress")
    assert probe
    qid = v.probe("joe@example.net")
    assert qid is not None and store.list(INCOMING) == [qid]
    qf = store.open(INCOMING, qid, writable=False)
    try:
        env = qf.envelope
        assert env.attributes.get("probe") == "yes"
        assert env.sender == "double-bounce@mx1.example.com"
        assert [(r.address, r.orig_address) for r in env.recipients] == \
            [("joe@example.net", "joe@example.net")]
    finally:
        qf.close()
    # asked again while the probe is out: no second probe
    reply, probe = v.query("joe@example.net")
    assert reply.get("recipient_status") == "3" and not probe
    # the result arrives
    assert v.update("joe@example.net", V.BOUNCE, "said 550").get("status") == "0"
    reply, probe = v.query("joe@example.net")
    assert (reply.get("recipient_status"), reply.get("reason"), probe) == ("2", "said 550",
                                                                           False)
    assert v.update("joe@example.net", 7, "x").get("status") == str(V.STAT_BAD)
    assert ("warning", "bad recipient status 7 for recipient joe@example.net") in log.lines
    v.cache.close()
    v.pool.shutdown(wait=True)
    # the file outlives the service
    cache = VerifyCache(settings(tmp_path), Log())
    entry = cache.get("joe@example.net")
    assert entry is not None and (entry.status, entry.text) == (V.BOUNCE, "said 550")
    cache.close()


def test_null_probe_sender_and_memory_cache(tmp_path) -> None:
    v, _log, store = service(tmp_path, "address_verify_sender = <>\naddress_verify_map =\n")
    assert v.cache.path is None
    qid = v.probe("ann@example.net")
    qf = store.open(INCOMING, qid, writable=False)
    try:
        assert qf.envelope.sender == ""
    finally:
        qf.close()
    v.update("ann@example.net", V.OK, "250 2.1.5 Ok")
    reply, probe = v.query("ann@example.net")
    assert (reply.get("recipient_status"), probe) == ("0", False)
    v.pool.shutdown(wait=True)


def test_cleanup_drops_expired_entries(tmp_path) -> None:
    os.makedirs(f"{tmp_path}/d", exist_ok=True)
    log = Log()
    cache = VerifyCache(settings(tmp_path, "address_verify_negative_expire_time = 1h\n"), log)
    now = 10_000_000
    cache.put("old@x", V.CacheEntry(V.BOUNCE, 0, now - 7200, "550"))
    cache.put("new@x", V.CacheEntry(V.BOUNCE, 0, now - 60, "550"))
    cache.put("probing@x", V.CacheEntry(V.TODO, now - 5, 0, V.IN_PROGRESS))
    assert cache.next_cleanup(now) == 0.0
    assert cache.cleanup(now) == (2, 1)
    assert cache.get("old@x") is None and cache.get("new@x") is not None
    assert ("info", f"cache btree:{tmp_path}/d/verify_cache full cleanup: retained=2 "
                    f"dropped=1 entries") in log.lines
    assert cache.next_cleanup(now + 60) == 12 * 3600 - 60
    cache.close()


def test_smtpd_client_polls_over_the_socket(tmp_path) -> None:
    v, _log, store = service(tmp_path)
    path = f"{tmp_path}/verify.sock"
    ready = threading.Event()
    loop = asyncio.new_event_loop()
    server_box = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start():
            server_box["s"] = await asyncio.start_unix_server(v.session, path=path)
            ready.set()
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        sleeps: list[float] = []

        updater = VerifyUpdater(path)

        def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 2:  # the probe's result comes in meanwhile
                fut = asyncio.run_coroutine_threadsafe(
                    updater.update("joe@example.net", V.OK, "250 2.1.5 Ok"), loop)
                assert fut.result(10) == V.STAT_OK

        q = VerifyQuery(path, poll_count=3, poll_delay=3.0, sleep=sleep)
        assert q("joe@example.net") == (V.STAT_OK, V.OK, "250 2.1.5 Ok")
        assert sleeps == [3.0, 3.0]
        # in progress after poll_count tries: the last answer
        sleeps.clear()
        q.poll_count = 1
        assert q("ann@example.net") == (V.STAT_OK, V.TODO, V.IN_PROGRESS)
        assert sleeps == []
        # no service there
        assert VerifyQuery(f"{tmp_path}/none.sock")("x@y") == (V.STAT_FAIL, V.TODO, "")
        loop.call_soon_threadsafe(updater.close)
    finally:
        async def stop() -> None:
            server_box["s"].close()
            await server_box["s"].wait_closed()
        asyncio.run_coroutine_threadsafe(stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        v.pool.shutdown(wait=True)
        v.cache.close()
    # one probe per address, the first was queued by the service itself
    assert len(store.list(INCOMING)) == 2


def test_probe_status_words() -> None:
    sent = RcptStatus(0, SENT, "2.1.5", "250 2.1.5 Ok")
    bounced = RcptStatus(0, BOUNCED, "5.1.1", "said 550")
    assert probe_log_status(sent).status == "deliverable"
    assert probe_log_status(bounced).status == "undeliverable"
    assert probe_log_status(bounced, negative_cache=False).status == \
        "undeliverable-but-not-cached"

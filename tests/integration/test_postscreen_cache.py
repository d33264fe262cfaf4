"""postscreen's cache (hato.io.postscreen_cache) on real files and a real redis-server.

* btree:/hash:/lmdb: files: an entry written by one PostscreenCache is read
  by the next one (a new process would do the same), in the table type's
  own file (``.hato.db`` / ``.lmdb``) with mode 0600, readable through
  hato's table registry; IPv4 and IPv6 keys.
* Clean-up: Postfix's rule and its log line ``cache NAME full cleanup:
  retained=N dropped=N entries``, the ``_LAST_CACHE_CLEANUP_COMPLETED_``
  stamp that makes the next run due one interval later, interval 0.
* An unusable file: one warning, answers from the in-memory fallback.
* Redis (``hato_postscreen_cache = redis:URL``): two caches share verdicts;
  keys expire; clean-up over Redis; Redis down → one warning, the fallback,
  and "works again" once Redis is back.
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from hato.config.defaults import HostFacts
from hato.config.errors import ConfigError
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config, Settings
from hato.io.postscreen_cache import (
    LAST_CLEANUP_KEY,
    PostscreenCache,
    cache_key,
    enabled_tests,
    fixed_ttls,
)
from hato.policy.postscreen_cache_entry import CacheEntry, PscTest
from hato.tables.base import OpenFlags
from hato.tables.registry import open_table
from tests.ports import free_port

pytestmark = pytest.mark.integration

NOW = 1_700_000_000
DAY = 86400


class Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, text: str) -> None:
        self.lines.append(text)

    def warning(self, text: str) -> None:
        self.lines.append("warning: " + text)

    def warnings(self) -> list[str]:
        return [x for x in self.lines if x.startswith("warning: ")]


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(main: str) -> Settings:
    facts = HostFacts("mx1", (("127.0.0.1", 8),), (("::1", 128),))
    config = Config("/etc/hato", MainCf.parse("myhostname = mx1.example.com\n" + main,
                                              "/etc/hato/main.cf"),
                    MasterCf.parse("", "/etc/hato/master.cf"), facts)
    return config.settings()


def cache(main: str, log: Log | None = None, clock: Clock | None = None, **kw) -> PostscreenCache:
    return PostscreenCache(settings(main), log if log is not None else Log(),
                           clock=clock or Clock(), **kw)


def passed(*tests: str, until: int = NOW + DAY) -> CacheEntry:
    entry = CacheEntry.new()
    for t in tests:
        entry.update(t, until)
    return entry


# -- settings ----------------------------------------------------------------------------------


def test_defaults_are_postfix_ones(tmp_path: Path):
    s = settings(f"data_directory = {tmp_path}\n")
    assert s.str("postscreen_cache_map") == f"btree:{tmp_path}/postscreen_cache"
    assert s.str("hato_postscreen_cache") == ""
    c = PostscreenCache(s, Log())
    assert c.name == f"btree:{tmp_path}/postscreen_cache"
    assert c.path == f"{tmp_path}/postscreen_cache.hato.db"
    assert c.retention == 7 * DAY and c.interval == 12 * 3600
    # the default banner enables the pre-greet test; the others are off
    assert c.enabled == {PscTest.PREGREET}
    assert fixed_ttls(s) == {PscTest.PREGREET: DAY, PscTest.PIPELINING: 30 * DAY,
                             PscTest.NON_SMTP: 30 * DAY, PscTest.BARE_NEWLINE: 30 * DAY}


def test_enabled_tests_follow_the_settings():
    s = settings("postscreen_greet_banner =\npostscreen_dnsbl_sites = zen.example\n"
                 "postscreen_pipelining_enable = yes\npostscreen_bare_newline_enable = yes\n")
    assert enabled_tests(s) == {PscTest.DNSBL, PscTest.PIPELINING, PscTest.BARE_NEWLINE}


@pytest.mark.parametrize("spec", ["cdb:/tmp/x", "texthash:/tmp/x", "memcache:/tmp/x",
                                  "btree:relative/path", "nocolon"])
def test_unusable_map_types_are_configuration_errors(spec: str):
    with pytest.raises(ConfigError):
        cache(f"postscreen_cache_map = {spec}\n")


def test_hato_postscreen_cache_must_be_redis():
    with pytest.raises(ConfigError):
        cache("hato_postscreen_cache = memcache:127.0.0.1\n")


@pytest.mark.parametrize("addr,key", [
    ("192.0.2.1", "192.0.2.1"), ("[192.0.2.1]", "192.0.2.1"),
    ("2001:DB8:0:0::1", "2001:db8::1"), ("[2001:db8::1]", "2001:db8::1"),
    ("IPv6:2001:db8::1", "2001:db8::1"), ("::ffff:192.0.2.7", "192.0.2.7"),
    ("not-an-address", "not-an-address"),
])
def test_cache_key(addr: str, key: str):
    assert cache_key(addr) == key


# -- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name,suffix", [("btree", ".hato.db"), ("hash", ".hato.db"),
                                              ("lmdb", ".lmdb")])
def test_entries_persist_across_instances(tmp_path: Path, type_name: str, suffix: str):
    main = f"postscreen_cache_map = {type_name}:{tmp_path}/psc\n"
    first = cache(main)
    assert first.get("192.0.2.1") is None
    first.put("192.0.2.1", passed("pregreet"))
    first.put("2001:db8::1", passed("pregreet", until=NOW + 5))
    first.close()

    path = tmp_path / f"psc{suffix}"
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.getuid()
    assert not (tmp_path / f"psc{suffix}-lock").exists()

    second = cache(main)
    entry = second.get("192.0.2.1")
    assert entry is not None and entry.stamp("pregreet") == NOW + DAY
    assert entry.valid_for(second.enabled, NOW)
    six = second.get("[2001:DB8::1]")
    assert six is not None and six.stamp("pregreet") == NOW + 5
    assert not six.valid_for(second.enabled, NOW + 6)
    assert second.get("192.0.2.2") is None
    second.close()

    # the file is the table type's own: hato's table reader sees Postfix's value
    table = open_table(f"{type_name}:{tmp_path}/psc")
    try:
        assert table.get("192.0.2.1") == f"{NOW + DAY};1;1;1;1"
        assert table.get("2001:db8::1") == f"{NOW + 5};1;1;1;1"
    finally:
        table.close()


def test_put_replaces_and_many_entries_grow_the_file(tmp_path: Path, monkeypatch):
    import hato.io.postscreen_cache as mod
    monkeypatch.setattr(mod, "LMDB_MAP_SIZE", 64 * 1024)
    c = cache(f"postscreen_cache_map = lmdb:{tmp_path}/psc\n")
    big = 3000
    for i in range(big):
        c.put(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", passed("pregreet"))
    c.put("10.0.0.1", passed("pregreet", until=NOW + 7))
    assert c.get("10.0.0.1").stamp("pregreet") == NOW + 7
    assert c.get("10.0.11.183") is not None
    assert (tmp_path / "psc.lmdb").stat().st_size > 64 * 1024
    assert c.cleanup(NOW) == (big, 0)
    c.close()
    # another process opening the grown file reads it all
    c2 = cache(f"postscreen_cache_map = lmdb:{tmp_path}/psc\n")
    assert c2.get("10.0.11.183") is not None
    c2.close()


def test_two_open_caches_on_one_file_see_each_other(tmp_path: Path):
    main = f"postscreen_cache_map = btree:{tmp_path}/psc\n"
    a, b = cache(main), cache(main)
    a.put("192.0.2.1", passed("pregreet"))
    assert b.get("192.0.2.1") is not None
    b.put("192.0.2.2", passed("pregreet"))
    assert a.get("192.0.2.2") is not None
    a.close()
    b.close()


def test_cleanup_drops_by_postfix_rule_and_logs_the_line(tmp_path: Path):
    log, clock = Log(), Clock()
    main = (f"postscreen_cache_map = btree:{tmp_path}/psc\n"
            "postscreen_dnsbl_sites = zen.example\n")
    c = cache(main, log, clock)
    week = 7 * DAY
    c.put("192.0.2.1", passed("pregreet", "dnsbl"))                        # valid
    c.put("192.0.2.2", passed("pregreet", "dnsbl", until=NOW - week + 1))  # expired, retained
    c.put("192.0.2.3", passed("pregreet", "dnsbl", until=NOW - week - 1))  # dropped
    old = passed("pregreet", "dnsbl")
    old.update("dnsbl", NOW - week - 100)                                   # one test too old
    c.put("2001:db8::3", old)
    c.put("192.0.2.4", passed("pregreet"))                # dnsbl never passed: dropped
    c.put("192.0.2.5", passed("pregreet", "dnsbl", until=NOW - week))       # edge: retained

    assert c.due(NOW)
    assert c.cleanup(NOW) == (3, 3)
    name = f"btree:{tmp_path}/psc"
    assert log.lines[-1] == f"cache {name} full cleanup: retained=3 dropped=3 entries"
    for addr, present in [("192.0.2.1", True), ("192.0.2.2", True), ("192.0.2.3", False),
                          ("2001:db8::3", False), ("192.0.2.4", False), ("192.0.2.5", True)]:
        assert (c.get(addr) is not None) is present, addr
    # the completion time is kept in the cache, as Postfix's dict_cache does
    table = open_table(name, OpenFlags(fold_case=False))
    assert table.get(LAST_CLEANUP_KEY) == str(NOW)
    table.close()
    assert not c.due(NOW + 1)
    assert c.next_cleanup(NOW + 3600) == 11 * 3600
    c.close()

    # a new instance (a restart) waits for the rest of the interval
    c2 = cache(main, Log(), clock)
    assert c2.next_cleanup(NOW + 3600) == 11 * 3600
    assert c2.due(NOW + 12 * 3600)
    assert c2.get(LAST_CLEANUP_KEY) is None
    assert c2.cleanup(NOW + 12 * 3600) == (1, 2)   # the two expired ones are now too old
    c2.close()


def test_empty_cache_logs_zero_counts_like_postfix_at_start(tmp_path: Path):
    log = Log()
    c = cache(f"data_directory = {tmp_path}\n", log)
    assert c.cleanup(NOW) == (0, 0)
    line = f"cache btree:{tmp_path}/postscreen_cache full cleanup: retained=0 dropped=0 entries"
    assert log.lines == [line]


def test_interval_zero_means_never(tmp_path: Path):
    c = cache(f"postscreen_cache_map = btree:{tmp_path}/psc\n"
              "postscreen_cache_cleanup_interval = 0\n")
    assert c.next_cleanup(NOW) is None
    assert not c.due(NOW)

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(c.run_cleanup(stop))
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(go())


def test_run_cleanup_runs_at_start_then_waits(tmp_path: Path):
    log = Log()
    c = PostscreenCache(settings(f"postscreen_cache_map = btree:{tmp_path}/psc\n"
                                 "postscreen_cache_cleanup_interval = 1s\n"), log)
    c.put("192.0.2.1", passed("pregreet", until=10))   # long expired: dropped

    async def go():
        stop = asyncio.Event()
        task = asyncio.create_task(c.run_cleanup(stop))
        await asyncio.sleep(0.3)
        first = list(log.lines)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(task, 2)
        return first

    first = asyncio.run(go())
    assert first == [f"cache btree:{tmp_path}/psc full cleanup: retained=0 dropped=1 entries"]
    assert len([x for x in log.lines if "full cleanup" in x]) >= 2
    assert log.warnings() == []


def test_no_map_keeps_verdicts_in_memory(tmp_path: Path):
    log = Log()
    c = cache("postscreen_cache_map =\n", log)
    assert not c.persistent and c.name == ""
    c.put("192.0.2.1", passed("pregreet"))
    c.put("192.0.2.2", passed("pregreet", until=1))
    assert c.get("192.0.2.1") is not None
    assert c.cleanup(NOW) is None
    assert c.get("192.0.2.2") is None and c.get("192.0.2.1") is not None
    assert log.lines == []
    assert not c.due(NOW + 1)


def test_a_directory_in_the_way_warns_falls_back_and_recovers(tmp_path: Path):
    (tmp_path / "psc.hato.db").mkdir()
    log, clock = Log(), Clock()
    c = cache(f"postscreen_cache_map = btree:{tmp_path}/psc\n", log, clock, retry_after=30)
    assert c.get("192.0.2.1") is None
    c.put("192.0.2.1", passed("pregreet"))
    c.put("192.0.2.2", passed("pregreet"))
    assert c.get("192.0.2.1") is not None
    assert c.cleanup(NOW) is None
    assert len(log.warnings()) == 1 and "Is a directory" in log.warnings()[0], log.lines
    (tmp_path / "psc.hato.db").rmdir()
    clock.now += 10
    c.put("192.0.2.3", passed("pregreet"))   # still within retry_after: fallback
    assert not (tmp_path / "psc.hato.db").exists()
    clock.now += 21
    c.put("192.0.2.4", passed("pregreet"))
    assert log.lines[-1] == f"cache btree:{tmp_path}/psc: works again"
    assert (tmp_path / "psc.hato.db").is_file()
    assert c.get("192.0.2.1") is not None and c.get("192.0.2.4") is not None
    assert len(log.warnings()) == 1
    c.close()


def test_missing_directory_warns_and_falls_back(tmp_path: Path):
    log = Log()
    c = cache(f"postscreen_cache_map = lmdb:{tmp_path}/nonexistent/psc\n", log)
    c.put("2001:db8::1", passed("pregreet"))
    assert c.get("2001:db8::1") is not None
    assert len(log.warnings()) == 1 and "No such file or directory" in log.warnings()[0]


def test_a_corrupt_file_warns_and_falls_back(tmp_path: Path):
    (tmp_path / "psc.hato.db").write_bytes(b"this is not an lmdb file" * 1000)
    log = Log()
    c = cache(f"postscreen_cache_map = btree:{tmp_path}/psc\n", log)
    assert c.get("192.0.2.1") is None
    c.put("192.0.2.1", passed("pregreet"))
    assert c.get("192.0.2.1") is not None
    assert len(log.warnings()) == 1, log.lines


def test_bad_values_in_the_file_are_no_entry(tmp_path: Path):
    import lmdb
    c = cache(f"postscreen_cache_map = lmdb:{tmp_path}/psc\n")
    c.put("192.0.2.9", passed("pregreet"))
    c.close()
    env = lmdb.open(f"{tmp_path}/psc.lmdb", subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(b"192.0.2.1\0", b"garbage\0")
        txn.put(b"192.0.2.2", b"1700086400;x\0")          # Postfix -n form (no NUL key)
    env.close()
    log = Log()
    c = cache(f"postscreen_cache_map = lmdb:{tmp_path}/psc\n", log)
    assert c.get("192.0.2.1") is None
    e = c.get("192.0.2.2")
    assert e is not None and e.format() == "1700086400;1;1;1;1"
    assert c.cleanup(NOW) == (2, 1)   # garbage dropped; the rest are valid pregreet passes
    assert c.get("192.0.2.1") is None
    assert log.warnings() == []


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def server():
    from tests.redis_server import running_redis
    with running_redis() as s:
        yield s


def redis_main(url: str) -> str:
    # postscreen_cache_map stays at its default: hato_postscreen_cache replaces it
    return f"hato_postscreen_cache = redis:{url}\n"


def test_two_caches_share_verdicts_through_redis(server, tmp_path: Path):
    main = f"data_directory = {tmp_path}\n" + redis_main(server.url)
    log_a, log_b = Log(), Log()
    a = cache(main, log_a)
    b = cache(main, log_b)
    assert a.name == f"redis:{server.url}"
    assert a.get("192.0.2.1") is None
    a.put("192.0.2.1", passed("pregreet"))
    b.put("2001:db8::1", passed("pregreet", until=NOW + 60))
    got = b.get("192.0.2.1")
    assert got is not None and got.valid_for(b.enabled, NOW)
    six = a.get("[2001:db8::1]")
    assert six is not None and six.stamp("pregreet") == NOW + 60
    # Postfix's value under a hato key; no file was made
    assert server.command("GET", "hato:postscreen:192.0.2.1") == f"{NOW + DAY};1;1;1;1"
    assert not list(tmp_path.iterdir())
    assert log_a.warnings() == [] and log_b.warnings() == []
    a.close()
    b.close()


def test_redis_keys_expire_no_sooner_than_postfix_cleanup(server):
    clock = Clock(NOW)
    c = cache(redis_main(server.url), clock=clock)
    c.put("192.0.2.1", passed("pregreet", until=NOW + DAY))
    c.put("192.0.2.2", passed("pregreet", until=NOW - 30 * DAY))
    week = 7 * DAY
    ttl1 = server.command("TTL", "hato:postscreen:192.0.2.1")
    ttl2 = server.command("TTL", "hato:postscreen:192.0.2.2")
    assert DAY + week - 5 <= ttl1 <= DAY + week
    assert week - 5 <= ttl2 <= week            # at least the retention time
    c.close()


def test_cleanup_over_redis_logs_and_records_completion(server):
    log = Log()
    url = server.url
    c = cache(redis_main(url), log)
    c.put("192.0.2.1", passed("pregreet"))
    c.put("192.0.2.2", passed("pregreet", until=NOW - 8 * DAY))
    c.put("2001:db8::2", passed("pregreet", until=NOW - 8 * DAY))
    assert c.due(NOW)
    assert c.cleanup(NOW) == (1, 2)
    assert log.lines[-1] == f"cache redis:{url} full cleanup: retained=1 dropped=2 entries"
    assert server.command("EXISTS", "hato:postscreen:192.0.2.2") == 0
    assert server.command("GET", f"hato:postscreen:{LAST_CLEANUP_KEY}") == str(NOW)
    # the other instance sharing this Redis is not due before the interval is over
    other = cache(redis_main(url))
    assert not other.due(NOW + 60)
    assert other.due(NOW + 12 * 3600)
    c.close()
    other.close()


def test_redis_password_is_not_logged(tmp_path: Path):
    from tests.redis_server import running_redis
    with running_redis(password="s3cret") as s:
        log = Log()
        c = cache(redis_main(s.url), log)
        assert "s3cret" not in c.name and "***" in c.name
        c.put("192.0.2.1", passed("pregreet"))
        assert c.get("192.0.2.1") is not None
        assert c.cleanup(NOW) == (1, 0)
        assert all("s3cret" not in x for x in log.lines)
        c.close()


def test_redis_down_warns_once_falls_back_and_recovers(server):
    log, clock = Log(), Clock()
    c = cache(redis_main(server.url), log, clock, timeout=0.5, retry_after=30)
    c.put("192.0.2.1", passed("pregreet"))
    server.stop()
    assert c.get("192.0.2.1") is None               # Redis down: no entry, no exception
    c.put("192.0.2.2", passed("pregreet"))          # kept in memory
    assert c.get("192.0.2.2") is not None
    assert c.cleanup(NOW) is None
    warnings = log.warnings()
    assert len(warnings) == 1, log.lines
    assert warnings[0].startswith(f"warning: cache redis:{server.url}: lookup 192.0.2.1: ")
    assert warnings[0].endswith("; using an in-memory cache until it works again")

    server.start()                                   # empty again (no persistence)
    clock.now += 10
    assert c.get("192.0.2.2") is not None           # not retried yet: memory
    assert server.command("DBSIZE") == 0
    clock.now += 21
    c.put("192.0.2.3", passed("pregreet"))
    assert log.lines[-1] == f"cache redis:{server.url}: works again"
    assert server.command("EXISTS", "hato:postscreen:192.0.2.3") == 1
    assert c.get("192.0.2.2") is not None           # Redis lacks it; the fallback has it
    assert len(log.warnings()) == 1
    c.close()


def test_redis_frozen_is_bounded_by_the_timeout(server):
    import time
    log = Log()
    c = cache(redis_main(server.url), log, timeout=0.3)
    c.put("192.0.2.1", passed("pregreet"))
    server.pause()
    try:
        start = time.monotonic()
        assert c.get("192.0.2.1") is None
        assert c.get("192.0.2.1") is None           # second call does not wait again
        assert time.monotonic() - start < 2
        assert len(log.warnings()) == 1
    finally:
        server.resume()
    c.close()


def test_redis_unreachable_at_start(tmp_path: Path):
    port = free_port()  # nothing listens there
    log = Log()
    c = cache(redis_main(f"redis://127.0.0.1:{port}/0"), log, timeout=0.3)
    assert c.get("192.0.2.1") is None
    c.put("192.0.2.1", passed("pregreet"))
    assert c.get("192.0.2.1") is not None
    assert len(log.warnings()) == 1, log.lines
    assert "Connection refused" in log.warnings()[0] or "111" in log.warnings()[0]
    c.close()


def test_proxy_prefix_uses_the_same_file(tmp_path: Path):
    log = Log()
    c = cache(f"postscreen_cache_map = proxy:btree:{tmp_path}/psc\n", log)
    assert c.name == f"proxy:btree:{tmp_path}/psc"
    assert c.path == f"{tmp_path}/psc.hato.db"
    c.put("192.0.2.1", passed("pregreet"))
    assert c.cleanup(NOW) == (1, 0)
    assert log.lines == [f"cache proxy:btree:{tmp_path}/psc full cleanup: "
                         "retained=1 dropped=0 entries"]
    c.close()

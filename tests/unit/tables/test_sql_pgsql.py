"""pgsql: tables against a real PostgreSQL server the test starts on loopback
(tests/integration/pg_server.py): lookups, escaping, the connection pool,
fail-over between hosts, a server that is down or restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hato.tables.base import TableError, TableRetry
from hato.tables.pgsql import PgsqlTable
from hato.tables.registry import open_table
from tests.integration.pg_server import PgServer, pg_server  # noqa: F401 (fixture)
from tests.ports import free_port

DB = "hato_unit"


@pytest.fixture(scope="module")
def pg(pg_server: PgServer) -> PgServer:  # noqa: F811
    pg_server.create_database(DB)
    pg_server.execute(DB, "CREATE TABLE alias (k TEXT, v TEXT, n INT)")
    rows = [("alice@example.com", "alice@mail.example.com"), ("o'brien", "obrien"),
            ("back\\slash", "bs"), ("multi", "one"), ("multi", "two"), ("holes", None),
            ("holes", ""), ("holes", "solid"), ("münchen@bayern.de", "grüß gott"),
            ("number", "12")]
    pg_server.execute(DB, "INSERT INTO alias VALUES (%s, %s, %s)",
                      [(k, v, i) for i, (k, v) in enumerate(rows)])
    pg_server.execute(DB, "CREATE FUNCTION lookup(text) RETURNS text LANGUAGE sql AS "
                          "$$ SELECT 'fn:' || $1 $$")
    return pg_server


def closed_port() -> int:
    return free_port()  # nothing listens there


def make(tmp_path: Path, pg: PgServer, body: str, hosts: str | None = None,
         name: str = "t.cf") -> PgsqlTable:
    cf = tmp_path / name
    cf.write_text(f"hosts = {hosts or f'inet:{pg.host}:{pg.port}'}\nuser = {pg.user}\n"
                  f"password = {pg.password}\ndbname = {DB}\n{body}")
    table = open_table(f"pgsql:{cf}")
    assert isinstance(table, PgsqlTable)
    return table


PLAIN = "query = SELECT v FROM alias WHERE k='%s' ORDER BY n\n"


@pytest.fixture
def table(tmp_path: Path, pg: PgServer) -> Iterator[PgsqlTable]:
    t = make(tmp_path, pg, PLAIN)
    yield t
    t.close()


def test_lookups(table: PgsqlTable) -> None:
    assert table.get("alice@example.com") == "alice@mail.example.com"
    assert table.get("ALICE@EXAMPLE.COM") == "alice@mail.example.com"
    assert table.get("nobody") is None
    assert table.get("multi") == "one,two"
    assert table.get("holes") == "solid"
    assert table.get("MÜNCHEN@bayern.de") == "grüß gott"  # UTF8 both ways by default


def test_escaping(table: PgsqlTable) -> None:
    assert table.get("o'brien") == "obrien"
    assert table.get("back\\slash") == "bs"
    for attempt in ["x' OR '1'='1", "' OR 1=1 --", "x'; DROP TABLE alias; --",
                    "\\' OR 1=1 --", "' UNION SELECT k FROM alias --"]:
        assert table.get(attempt) is None
    assert table.get("multi") == "one,two"


def test_every_column_counts(tmp_path: Path, pg: PgServer) -> None:
    t = make(tmp_path, pg, "query = SELECT v, upper(v) FROM alias WHERE k='%s' ORDER BY n\n")
    assert t.get("multi") == "one,ONE,two,TWO"
    t.close()


def test_select_function_and_result_format(tmp_path: Path, pg: PgServer) -> None:
    t = make(tmp_path, pg, "select_function = lookup\nresult_format = <%s>\n")
    assert t.get("Key") == "<fn:key>"
    t.close()


def test_pool_reuses_connections(table: PgsqlTable, tmp_path: Path, pg: PgServer) -> None:
    t = make(tmp_path, pg, "query = SELECT pg_backend_pid()::text || '%s'\n", name="pid.cf")
    first = t.get("")  # an empty key is never queried
    assert first is None
    pids = {t.get("x") for _ in range(10)}
    assert len(pids) == 1
    assert len(t.hosts[0].idle) == 1
    t.close()


def test_idle_connections_are_closed(tmp_path: Path, pg: PgServer) -> None:
    t = make(tmp_path, pg, "query = SELECT pg_backend_pid()::text || '%s'\nidle_interval = 1\n")
    before = t.get("x")
    time.sleep(1.3)
    assert t.get("x") != before
    t.close()


def test_concurrent_lookups(tmp_path: Path, pg: PgServer) -> None:
    t = make(tmp_path, pg, PLAIN + "hato_pool_size = 3\n")
    errors: list[str] = []

    def worker(n: int) -> None:
        for i in range(30):
            key, want = ("multi", "one,two") if (n + i) % 2 else ("o'brien", "obrien")
            got = t.get(key)
            if got != want:
                errors.append(f"{key}: {got}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert len(t.hosts[0].idle) <= 3
    t.close()


def test_a_host_put_aside_loses_its_pool(tmp_path: Path, pg: PgServer) -> None:
    t = make(tmp_path, pg, PLAIN)
    conns = [t._connect(t.hosts[0]) for _ in range(3)]
    for conn in conns:
        t._checkin(t.hosts[0], conn)
    assert len(t.hosts[0].idle) == 3
    t._mark_down(t.hosts[0], "test")
    assert t.hosts[0].idle == [] and t.hosts[0].down_until > time.monotonic()
    assert all(conn.status != 0 for conn in conns)  # finished: CONNECTION_BAD
    with pytest.raises(TableRetry):
        t.get("multi")
    t.close()


def test_failover_to_the_next_host(tmp_path: Path, pg: PgServer) -> None:
    dead = closed_port()
    t = make(tmp_path, pg, PLAIN, hosts=f"inet:127.0.0.1:{dead}, {pg.host}:{pg.port}")
    assert t.get("multi") == "one,two"
    assert t.hosts[0].down_until > time.monotonic()  # left alone for retry_interval
    assert t.hosts[1].down_until == 0
    assert t.get("o'brien") == "obrien"
    t.close()


def test_server_down_is_a_retry(tmp_path: Path, pg: PgServer) -> None:
    t = make(tmp_path, pg, PLAIN, hosts=f"127.0.0.1:{closed_port()}")
    with pytest.raises(TableRetry, match="no pgsql server answered"):
        t.get("multi")
    with pytest.raises(TableRetry):  # still down: not even tried
        t.get("multi")
    t.close()


def test_bad_password_is_a_retry(tmp_path: Path, pg: PgServer) -> None:
    cf = tmp_path / "badpw.cf"
    cf.write_text(f"hosts = {pg.host}:{pg.port}\nuser = {pg.user}\npassword = wrong\n"
                  f"dbname = {DB}\n{PLAIN}")
    t = open_table(f"pgsql:{cf}")
    with pytest.raises(TableRetry, match="password authentication failed"):
        t.get("multi")
    t.close()


def test_sql_errors_are_retries_without_blaming_the_server(tmp_path: Path,
                                                           pg: PgServer) -> None:
    t = make(tmp_path, pg, "query = SELECT '%s'::int + 1\n")
    assert t.get("41") == "42"
    with pytest.raises(TableRetry, match="invalid input syntax"):
        t.get("forty-one")
    assert t.hosts[0].down_until == 0
    assert t.get("1") == "2"
    t.close()
    t = make(tmp_path, pg, "query = SELECT v FROM no_such_table WHERE k='%s'\n", name="bad.cf")
    with pytest.raises(TableRetry, match="no_such_table"):
        t.get("x")
    t.close()


def test_unix_socket_host(tmp_path: Path, pg: PgServer, monkeypatch) -> None:
    monkeypatch.setenv("PGPORT", str(pg.port))
    cf = tmp_path / "unix.cf"
    cf.write_text(f"hosts = unix:{pg.socket_dir}\nuser = {pg.user}\ndbname = {DB}\n{PLAIN}")
    t = open_table(f"pgsql:{cf}")
    assert t.get("multi") == "one,two"
    t.close()


def test_uri_host(tmp_path: Path, pg: PgServer) -> None:
    cf = tmp_path / "uri.cf"
    cf.write_text(f"hosts = postgresql://{pg.user}:{pg.password}@{pg.host}:{pg.port}/{DB}\n"
                  f"{PLAIN}")
    t = open_table(f"pgsql:{cf}")  # no dbname needed with a URI
    assert t.get("multi") == "one,two"
    t.close()


def test_configuration_errors(tmp_path: Path) -> None:
    cf = tmp_path / "nodb.cf"
    cf.write_text(f"hosts = 127.0.0.1:5432\n{PLAIN}")
    with pytest.raises(TableError, match="requires dbname"):
        open_table(f"pgsql:{cf}")
    cf.write_text(f"dbname = x\n{PLAIN}retry_interval = 0\n")
    with pytest.raises(TableError, match="retry_interval") as info:
        open_table(f"pgsql:{cf}")
    assert info.value.line == 3


def test_latin1_encoding_as_postfix_3_7(tmp_path: Path, pg: PgServer) -> None:
    """encoding = LATIN1 gives Postfix 3.7's behaviour: UTF-8 key bytes are
    taken for LATIN1 by the server, and a non-ASCII result is refused."""
    t = make(tmp_path, pg, PLAIN + "encoding = LATIN1\n")
    assert t.get("multi") == "one,two"
    assert t.get("münchen@bayern.de") is None
    t.close()
    t = make(tmp_path, pg, "query = SELECT v FROM alias WHERE k=convert_from("
                           "convert_to('%s', 'LATIN1'), 'UTF8')\nencoding = LATIN1\n",
             name="latin1.cf")
    with pytest.raises(TableRetry, match="non-UTF-8"):
        t.get("münchen@bayern.de")
    t.close()


def test_server_restart_and_outage(tmp_path: Path, pg: PgServer) -> None:
    """A restart costs no failed lookup; while the server is down lookups
    are retries; after it is back (and retry_interval passed) they work."""
    t = make(tmp_path, pg, PLAIN + "retry_interval = 1\n")
    try:
        assert t.get("multi") == "one,two"
        pg.restart()
        assert t.get("multi") == "one,two"  # the pooled connection broke: a fresh one
        pg.stop()
        with pytest.raises(TableRetry):
            t.get("multi")
        pg.start()
        pg.wait_ready()
        deadline = time.monotonic() + 15
        while True:
            try:
                assert t.get("multi") == "one,two"
                break
            except TableRetry:
                assert time.monotonic() < deadline, "no recovery after the restart"
                time.sleep(0.2)
    finally:
        if not pg.running():
            pg.start()
            pg.wait_ready()
        t.close()


def test_closed_table(table: PgsqlTable) -> None:
    assert table.get("multi") == "one,two"
    table.close()
    with pytest.raises(TableRetry):
        table.get("multi")

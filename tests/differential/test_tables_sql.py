"""sqlite: and pgsql: tables against Debian's Postfix.

The same sql_table configuration file is queried by Debian's ``postmap -q -``
(``sqlite:/x.cf``, ``pgsql:/x.cf``) and by hato's table classes, for a few
thousand random keys: mixed case, ``user+ext@domain``, odd domains, quotes,
backslashes and SQL injection attempts. The answers must be identical.

The SQLite database is a file the test writes; PostgreSQL is a private
server on loopback (tests/integration/pg_server.py).
"""

from __future__ import annotations

import os
import random
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hato.tables.base import OpenFlags, TableRetry
from hato.tables.registry import open_table
from tests.conftest import require_tool
from tests.integration.pg_server import PgServer, pg_server  # noqa: F401 (fixture)

pytestmark = pytest.mark.differential

N_KEYS = 2500
RETRY = "<retry>"

# -- the data --------------------------------------------------------------------

DOMAINS = ["example.com", "example.org", "mail.example.net", "bad.example.org", "a.b.c.d.e",
           "ex'ample.com", "back\\slash.org", "münchen.de", "x.y", "sub.example.com"]
NASTY = [
    "x' OR '1'='1", "' OR 1=1 --", "\\' OR 1=1 --", "x'); DROP TABLE alias; --",
    "%' OR k LIKE '%", "x\\", "\\\\'", "''", "'", "\\", "o'brien@example.com",
    "back\\slash@example.com", "\\'; drop table alias; --@example.com", "%s", "%%", "%u@%d",
    "a\"b@example.com", "'@example.com", "x@'", "user@example.com' --", "é'\\@münchen.de",
    "u@a..example.com", "u@.example.com", "u@example.com.", "@example.com", "user@", "@",
    "a@b@example.com", "UPPER@EXAMPLE.COM", "Mixed.Case+Ext@Example.Org", "plain", "ÄÖÜ@X.Y",
    "sub.example.com", "a.b.c.d.e", "u@a.b.c.d.e", "u@e", "u@d.e", "u@c.d.e",
    "semi;colon@example.org", "per%cent@example.org", "under_score@example.org",
    "x' UNION SELECT k FROM alias --@example.com",
]
LOCAL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-+'\\\"%;= ()éß"


def _local(rng: random.Random) -> str:
    n = rng.randint(1, 10)
    text = "".join(rng.choice(LOCAL_CHARS) for _ in range(n)).strip()
    return text or "x"


def _mixcase(rng: random.Random, text: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in text)


@dataclass
class Dataset:
    alias: list[tuple[str, str | None]] = field(default_factory=list)  # (k, v)
    users: list[tuple[str, str, str]] = field(default_factory=list)  # (local, domain, dest)
    doms: list[tuple[str, str, str]] = field(default_factory=list)  # (tld, sld, v)


def make_dataset(seed: int = 20240601) -> Dataset:
    rng = random.Random(seed)
    ds = Dataset()
    stored: list[str] = []
    for i in range(600):
        kind = rng.random()
        if kind < 0.6:
            key = f"{_local(rng)}@{rng.choice(DOMAINS)}"
        elif kind < 0.75:
            key = f"{_local(rng)}+{_local(rng)}@{rng.choice(DOMAINS)}"
        elif kind < 0.85:
            key = f"@{rng.choice(DOMAINS)}"
        else:
            key = _local(rng)
        stored.append(key)
    stored += [k.casefold() for k in NASTY if k]
    stored = list(dict.fromkeys(stored))
    for key in stored:
        nvalues = rng.choice([1, 1, 1, 1, 2, 3])
        for j in range(nvalues):
            r = rng.random()
            if r < 0.05:
                value: str | None = None
            elif r < 0.08:
                value = ""
            elif r < 0.5:
                value = f"{_local(rng)}@{rng.choice(DOMAINS)}"
            else:
                value = f"{_local(rng)}{j}"
            ds.alias.append((key, value))
    # a key that was stored with upper case can never match a folded key
    ds.alias.append(("Upper@Example.COM", "never"))
    for key in stored:
        if "@" in key and rng.random() < 0.5:
            local, _, domain = key.rpartition("@")
            ds.users.append((local, domain, f"{local.replace(' ', '')}@relay.{domain}"))
    for domain in DOMAINS:
        labels = domain.split(".")
        if len(labels) >= 2:
            ds.doms.append((labels[-1], labels[-2], f"transport-for-{domain}"))
    return ds


DATASET = make_dataset()


def _keys() -> list[str]:
    """The lookup keys: stored keys in mixed case, user+ext forms, unknown
    addresses, injection attempts; postmap -q - reads one key a line."""
    rng = random.Random(7)
    ds = DATASET
    stored = sorted({k for k, _ in ds.alias})
    keys: list[str] = list(NASTY)
    while len(keys) < N_KEYS + 200:
        r = rng.random()
        if r < 0.45:
            keys.append(_mixcase(rng, rng.choice(stored)))
        elif r < 0.6:
            local = rng.choice(stored).partition("@")[0] or _local(rng)
            keys.append(f"{local}+{_local(rng)}@{rng.choice(DOMAINS)}")
        elif r < 0.8:
            keys.append(_mixcase(rng, f"{_local(rng)}@{rng.choice(DOMAINS)}"))
        elif r < 0.9:
            keys.append(rng.choice(NASTY) + _local(rng))
        else:
            keys.append(_local(rng))
    return [k for k in dict.fromkeys(keys) if k and "\t" not in k and not k[0].isspace()]


KEYS = _keys()


# -- the configurations (the same for both databases) ---------------------------------

CONFIGS: dict[str, dict[str, str]] = {
    "plain": {"query": "SELECT v FROM alias WHERE k='%s' ORDER BY v"},
    "reflect": {"query": "SELECT '%s|%u|%%|%S'"},
    "reflect-domain": {"query": "SELECT '[%u] [%d] [%U] [%D]'"},
    "labels": {"query": "SELECT '%1|%2|%3' || v FROM doms WHERE tld='%1' AND sld='%2'"},
    "user-domain": {"query": "SELECT dest FROM users WHERE local='%u' AND domain='%d' "
                             "ORDER BY dest",
                    "result_format": "%s <%U> {%D} [%S]"},
    "value-parts": {"query": "SELECT v FROM alias WHERE k='%s' ORDER BY v",
                    "result_format": "%u at %d"},
    "result-labels": {"query": "SELECT v FROM alias WHERE k='%s' ORDER BY v",
                      "result_format": "smtp:[%s] via %2.%1"},
    "domain-filter": {"query": "SELECT v FROM alias WHERE k='%s' ORDER BY v",
                      "domain": "!bad.example.org example.org, ex'ample.com {DOMAINFILE}"},
    "two-columns": {"query": "SELECT v, upper(k) FROM alias WHERE k='%s' ORDER BY v"},
    "legacy": {"table": "alias", "select_field": "v", "where_field": "k",
               "additional_conditions": "AND v <> 'never' ORDER BY v"},
}
LIMIT_CONFIG = {"query": "SELECT v FROM alias WHERE k='%s' ORDER BY v", "expansion_limit": "1"}


def write_cf(path: Path, head: dict[str, str], params: dict[str, str], domainfile: Path) -> str:
    lines = [f"# written by {__name__}"]
    for name, value in {**head, **params}.items():
        lines.append(f"{name} = {value.replace('{DOMAINFILE}', str(domainfile))}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


# -- running both sides ---------------------------------------------------------------


@pytest.fixture(scope="module")
def postfix_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("postmap", "postfix")
    d = tmp_path_factory.mktemp("postfix-config")
    (d / "main.cf").write_text("compatibility_level = 3.7\n")
    (d / "master.cf").write_text("")
    return d


def require_map_type(postfix_dir: Path, type_name: str) -> None:
    postconf = require_tool("postconf", "postfix")
    proc = subprocess.run([postconf, "-m"], capture_output=True, text=True, check=False,
                          env={**os.environ, "MAIL_CONFIG": str(postfix_dir)}, timeout=60)
    if type_name not in proc.stdout.split():
        package = "postfix" if type_name == "socketmap" else f"postfix-{type_name}"
        pytest.fail(f"Postfix lacks the {type_name} table type: install the Debian package "
                    f"{package}")


def postmap_batch(postfix_dir: Path, spec: str, keys: list[str],
                  env: dict[str, str] | None = None) -> dict[str, str]:
    postmap = require_tool("postmap", "postfix")
    proc = subprocess.run([postmap, "-q", "-", spec], input="\n".join(keys) + "\n",
                          capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "MAIL_CONFIG": str(postfix_dir), **(env or {})})
    assert proc.returncode == 0, f"postmap -q - {spec} failed: {proc.stderr[-2000:]}"
    found: dict[str, str] = {}
    for line in proc.stdout.split("\n"):
        if line:
            key, sep, value = line.partition("\t")
            assert sep, f"unexpected postmap output line {line!r}"
            found[key] = value
    return found


def postmap_one(postfix_dir: Path, spec: str, key: str) -> str | None:
    postmap = require_tool("postmap", "postfix")
    proc = subprocess.run([postmap, "-q", key, spec], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, "MAIL_CONFIG": str(postfix_dir)})
    if "fatal:" in proc.stderr or proc.returncode > 1:
        return RETRY
    return proc.stdout.rstrip("\n") if proc.returncode == 0 else None


def hato_batch(spec: str, keys: list[str]) -> dict[str, str]:
    table = open_table(spec, OpenFlags())
    found: dict[str, str] = {}
    try:
        for key in keys:
            try:
                value = table.get(key)
            except TableRetry:
                value = RETRY
            if value is not None:
                found[key] = value
    finally:
        table.close()
    return found


def compare(postfix_dir: Path, spec: str, keys: list[str]) -> dict[str, str]:
    theirs = postmap_batch(postfix_dir, spec, keys)
    ours = hato_batch(spec, keys)
    diffs = [(k, theirs.get(k), ours.get(k)) for k in keys if theirs.get(k) != ours.get(k)]
    assert not diffs, (f"{len(diffs)} of {len(keys)} keys differ for {spec} "
                       f"(key, postfix, hato): {diffs[:15]}")
    return ours


# -- SQLite -------------------------------------------------------------------------------


def write_sqlite(path: Path, ds: Dataset) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute("CREATE TABLE alias (k TEXT, v TEXT)")
        db.execute("CREATE TABLE users (local TEXT, domain TEXT, dest TEXT)")
        db.execute("CREATE TABLE doms (tld TEXT, sld TEXT, v TEXT)")
        db.executemany("INSERT INTO alias VALUES (?, ?)", ds.alias)
        db.executemany("INSERT INTO users VALUES (?, ?, ?)", ds.users)
        db.executemany("INSERT INTO doms VALUES (?, ?, ?)", ds.doms)
    db.close()


@pytest.fixture(scope="module")
def sql_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sqltables")
    (d / "domains").write_text("# domains for the filter\nmail.example.net\n"
                               "  !a.b.c.d.e, münchen.DE\n")
    write_sqlite(d / "data.db", DATASET)
    return d


def test_dataset_is_big_enough() -> None:
    assert len(KEYS) >= 2000
    assert any("'" in k for k in KEYS) and any("\\" in k for k in KEYS)
    assert any("+" in k for k in KEYS) and any(k != k.lower() for k in KEYS)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_sqlite_matches_postfix(config: str, postfix_dir: Path, sql_dir: Path) -> None:
    require_map_type(postfix_dir, "sqlite")
    spec = "sqlite:" + write_cf(sql_dir / f"sqlite-{config}.cf",
                                {"dbpath": str(sql_dir / "data.db")}, CONFIGS[config],
                                sql_dir / "domains")
    found = compare(postfix_dir, spec, KEYS)
    if config in ("plain", "reflect", "legacy", "two-columns"):
        assert len(found) > 100, "too few keys found for a meaningful comparison"


def test_sqlite_expansion_limit_matches_postfix(postfix_dir: Path, sql_dir: Path) -> None:
    require_map_type(postfix_dir, "sqlite")
    spec = "sqlite:" + write_cf(sql_dir / "sqlite-limit.cf", {"dbpath": str(sql_dir / "data.db")},
                                LIMIT_CONFIG, sql_dir / "domains")
    _limit_cases(postfix_dir, spec)


def _limit_cases(postfix_dir: Path, spec: str) -> None:
    counts: dict[str, int] = {}
    for k, v in DATASET.alias:
        if v:
            counts[k] = counts.get(k, 0) + 1
    many = sorted(k for k, n in counts.items() if n > 1)[:6]
    one = sorted(k for k, n in counts.items() if n == 1)[:6]
    assert many and one
    table = open_table(spec)
    try:
        for key in many + one + ["no-such-key"]:
            theirs = postmap_one(postfix_dir, spec, key)
            try:
                ours = table.get(key)
            except TableRetry:
                ours = RETRY
            assert theirs == ours, key
            assert (ours == RETRY) == (key in many)
    finally:
        table.close()


# -- PostgreSQL -----------------------------------------------------------------------------


def load_pg(server: PgServer, dbname: str, ds: Dataset) -> None:
    server.create_database(dbname)
    server.execute(dbname, "CREATE TABLE alias (k TEXT, v TEXT)")
    server.execute(dbname, "CREATE TABLE users (local TEXT, domain TEXT, dest TEXT)")
    server.execute(dbname, "CREATE TABLE doms (tld TEXT, sld TEXT, v TEXT)")
    server.execute(dbname, "INSERT INTO alias VALUES (%s, %s)", ds.alias)
    server.execute(dbname, "INSERT INTO users VALUES (%s, %s, %s)", ds.users)
    server.execute(dbname, "INSERT INTO doms VALUES (%s, %s, %s)", ds.doms)


def ascii_values(ds: Dataset) -> Dataset:
    """Postfix 3.7 talks LATIN1 to PostgreSQL and sends the key's UTF-8 bytes
    as they are: a non-ASCII result comes back as LATIN1, which Postfix then
    refuses as non-UTF-8 (postmap -q - stops there). Keep results ASCII;
    keys stay as they are."""
    def fix(v: str | None) -> str | None:
        return v.encode("ascii", "replace").decode() if v is not None else None
    return Dataset(alias=[(k, fix(v)) for k, v in ds.alias],
                   users=[(u, d, fix(x) or "") for u, d, x in ds.users],
                   doms=[(t, s, fix(v) or "") for t, s, v in ds.doms])


PG_DATASET = ascii_values(DATASET)


@pytest.fixture(scope="module")
def pg_db(pg_server: PgServer) -> PgServer:  # noqa: F811
    load_pg(pg_server, "hato_diff", PG_DATASET)
    return pg_server


def pg_head(server: PgServer, dbname: str = "hato_diff") -> dict[str, str]:
    # encoding = LATIN1 is what Postfix 3.7 always uses (3.8 made it a
    # parameter, default UTF8, as hato's default).
    return {"hosts": f"inet:{server.host}:{server.port}", "user": server.user,
            "password": server.password, "dbname": dbname, "encoding": "LATIN1"}


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_pgsql_matches_postfix(config: str, postfix_dir: Path, sql_dir: Path,
                               pg_db: PgServer) -> None:
    require_map_type(postfix_dir, "pgsql")
    spec = "pgsql:" + write_cf(sql_dir / f"pgsql-{config}.cf", pg_head(pg_db), CONFIGS[config],
                               sql_dir / "domains")
    found = compare(postfix_dir, spec, KEYS)
    if config in ("plain", "reflect", "legacy", "two-columns"):
        assert len(found) > 100, "too few keys found for a meaningful comparison"


def test_pgsql_without_standard_conforming_strings(postfix_dir: Path, sql_dir: Path,
                                                   pg_db: PgServer) -> None:
    """With standard_conforming_strings off, a backslash in a literal is an
    escape: PQescapeStringConn doubles it, on both sides."""
    require_map_type(postfix_dir, "pgsql")
    load_pg(pg_db, "hato_diff_nonstd", PG_DATASET)
    pg_db.execute("postgres", 'ALTER DATABASE "hato_diff_nonstd" '
                              "SET standard_conforming_strings = off")
    pg_db.execute("postgres", 'ALTER DATABASE "hato_diff_nonstd" SET escape_string_warning = off')
    for config in ("plain", "reflect"):
        spec = "pgsql:" + write_cf(sql_dir / f"pgsql-nonstd-{config}.cf",
                                   pg_head(pg_db, "hato_diff_nonstd"), CONFIGS[config],
                                   sql_dir / "domains")
        found = compare(postfix_dir, spec, KEYS)
        assert found.get("x\\") == "x\\|x\\|%|x\\" or config != "reflect"


def test_pgsql_expansion_limit_matches_postfix(postfix_dir: Path, sql_dir: Path,
                                               pg_db: PgServer) -> None:
    require_map_type(postfix_dir, "pgsql")
    spec = "pgsql:" + write_cf(sql_dir / "pgsql-limit.cf", pg_head(pg_db), LIMIT_CONFIG,
                               sql_dir / "domains")
    _limit_cases(postfix_dir, spec)


def test_pgsql_unix_socket_and_uri_hosts(postfix_dir: Path, sql_dir: Path,
                                         pg_db: PgServer) -> None:
    """hosts = unix:/dir (port from $PGPORT) and a postgresql:// URI."""
    require_map_type(postfix_dir, "pgsql")
    keys = KEYS[:300]
    unix = {"hosts": f"unix:{pg_db.socket_dir}", "user": pg_db.user, "dbname": "hato_diff",
            "encoding": "LATIN1"}
    spec = "pgsql:" + write_cf(sql_dir / "pgsql-unix.cf", unix, CONFIGS["plain"],
                               sql_dir / "domains")
    old = os.environ.get("PGPORT")
    os.environ["PGPORT"] = str(pg_db.port)
    try:
        found = compare(postfix_dir, spec, keys)
    finally:
        if old is None:
            os.environ.pop("PGPORT", None)
        else:
            os.environ["PGPORT"] = old
    assert found
    uri = {"hosts": f"postgresql://{pg_db.user}:{pg_db.password}@{pg_db.host}:{pg_db.port}"
                    f"/hato_diff", "encoding": "LATIN1",
           "dbname": "ignored-with-a-uri"}  # Postfix 3.7 insists on a dbname
    spec = "pgsql:" + write_cf(sql_dir / "pgsql-uri.cf", uri, CONFIGS["plain"],
                               sql_dir / "domains")
    assert compare(postfix_dir, spec, keys) == found

"""socketmap: tables against Debian's Postfix.

The same socketmap server (a small netstring server this test starts on
127.0.0.1) is queried by Debian's ``postmap -q`` and by hato's
SocketmapTable; answers, keys as the server sees them (no case folding),
and the failures must agree.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.differential.test_tables_sql import (  # noqa: F401
    RETRY,
    hato_batch,
    postfix_dir,
    postmap_batch,
    postmap_one,
    require_map_type,
)
from tests.unit.tables.test_socketmap import SocketmapServer

pytestmark = pytest.mark.differential

SPECIAL = {
    "temp-key": b"TEMP backend down",
    "perm-key": b"PERM broken",
    "timeout-key": b"TIMEOUT slow",
    "odd-key": b"WHATEVER x",
    "bare-ok": b"OK",
    "empty-ok": b"OK ",
    "spaces-ok": b"OK  two  spaces ",
}


def answer(name: str, key: str) -> bytes:
    if key in SPECIAL:
        return SPECIAL[key]
    digest = hashlib.sha256(f"{name} {key}".encode()).digest()
    if digest[0] % 3 == 0:
        return b"NOTFOUND "
    return b"OK " + f"{name}:{key[::-1]}:{digest[1]}".encode()


@pytest.fixture(scope="module")
def server() -> Iterator[SocketmapServer]:
    srv = SocketmapServer(answer)
    yield srv
    srv.close()


def keys() -> list[str]:
    rng = random.Random(99)
    alphabet = "abcXYZ019@.+-_'\"\\%ÄéßÜ €"
    out = ["alice@example.com", "Alice@Example.COM", "ALICE@EXAMPLE.COM", "MÜNCHEN.de",
           "straße", "STRASSE", "x' OR 1=1", "a\\b", "with space", "100%"]
    while len(out) < 2200:
        n = rng.randint(1, 24)
        key = "".join(rng.choice(alphabet) for _ in range(n)).strip()
        if key:
            out.append(key)
    return list(dict.fromkeys(out))


def test_socketmap_matches_postfix(server: SocketmapServer, postfix_dir: Path) -> None:  # noqa: F811
    require_map_type(postfix_dir, "socketmap")
    spec = "socketmap:" + server.spec("virtual")
    all_keys = keys()
    assert len(all_keys) >= 2000
    theirs = postmap_batch(postfix_dir, spec, all_keys)
    seen_by_server = [k for n, k in server.requests]
    ours = hato_batch(spec, all_keys)
    diffs = [(k, theirs.get(k), ours.get(k)) for k in all_keys if theirs.get(k) != ours.get(k)]
    assert not diffs, f"{len(diffs)} keys differ (key, postfix, hato): {diffs[:10]}"
    assert len(theirs) > 1000
    # Both sent the keys exactly as given: no case folding on either side.
    assert seen_by_server == all_keys
    assert [k for n, k in server.requests][len(all_keys):] == all_keys


@pytest.mark.parametrize("key", sorted(SPECIAL))
def test_socketmap_special_replies_match_postfix(key: str, server: SocketmapServer,
                                                 postfix_dir: Path) -> None:  # noqa: F811
    require_map_type(postfix_dir, "socketmap")
    spec = "socketmap:" + server.spec("virtual")
    theirs = postmap_one(postfix_dir, spec, key)
    ours = hato_batch(spec, [key]).get(key)
    assert theirs == ours
    if SPECIAL[key].startswith(b"OK"):
        assert ours != RETRY
    else:
        assert ours == RETRY

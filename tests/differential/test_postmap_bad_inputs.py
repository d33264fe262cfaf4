"""Bad table sources: a 100 KB line, binary garbage, a missing file, an
unwritable directory. hato gives a clear error naming the file (and the line
where there is one), never crashes, and leaves the old index untouched.
Where Postfix's accept/reject decision is sensible, hato's is the same.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from tests.conftest import hato_env, require_tool
from tests.differential.test_postmap_lookups import config, hato, postfix

pytestmark = pytest.mark.differential

SUFFIX = {"lmdb": ".lmdb", "cdb": ".cdb", "hash": ".hato.db"}


def _prepare(tmp_path, name: str, type_name: str, conf: str):
    src = tmp_path / name
    src.write_text("old value\nother x\n")
    res = hato("-c", conf, f"{type_name}:{src}")
    assert res.returncode == 0, res.stderr
    index = tmp_path / (name + SUFFIX[type_name])
    return src, index, index.read_bytes()


@pytest.mark.parametrize("type_name", ["lmdb", "hash"])
def test_100k_key_is_refused_old_index_kept(tmp_path, type_name):
    conf = str(config(tmp_path, False))
    src, index, before = _prepare(tmp_path, "t", type_name, conf)
    src.write_text("old new\n" + "k" * 100_000 + " value\nlast x\n")
    res = hato("-c", conf, f"{type_name}:{src}")
    assert res.returncode == 1
    assert f"{src}, line 2: key is 100001 bytes long" in res.stderr
    assert "Traceback" not in res.stderr
    assert index.read_bytes() == before
    assert hato("-c", conf, "-q", "old", f"{type_name}:{src}").stdout == b"value\n"
    if type_name == "lmdb":  # Postfix refuses it too, and keeps its old index
        pf_src = tmp_path / "pf"
        pf_src.write_text("old value\n")
        assert postfix("postmap", "-c", conf, f"lmdb:{pf_src}").returncode == 0
        pf_src.write_text(src.read_text())
        assert postfix("postmap", "-c", conf, f"lmdb:{pf_src}").returncode == 1
        assert postfix("postmap", "-c", conf, "-q", "old", f"lmdb:{pf_src}").stdout == b"value\n"


@pytest.mark.parametrize("type_name", ["lmdb", "cdb"])
def test_100k_value_accepted_as_postfix(tmp_path, type_name):
    conf = str(config(tmp_path, False))
    text = "k1 v1\nbigkey " + "x" * 100_000 + "\nk2 v2\n"
    if type_name == "cdb":
        text += "y" * 100_000 + " longkey\n"  # cdb has no key size limit
    answers = {}
    for side in ("pf", "hato"):
        src = tmp_path / side
        src.write_text(text)
        run = (lambda *a: postfix("postmap", *a)) if side == "pf" else hato
        build = run("-c", conf, f"{type_name}:{src}")
        q = run("-c", conf, "-q", "-", f"{type_name}:{src}")
        big = run("-c", conf, "-q", "bigkey", f"{type_name}:{src}")
        answers[side] = (build.returncode, q.returncode, big.stdout)
        if type_name == "cdb":
            answers[side] += (run("-c", conf, "-q", "Y" * 100_000, f"cdb:{src}").stdout,)
    assert answers["hato"] == answers["pf"]
    assert answers["hato"][0] == 0
    assert len(answers["hato"][2]) == 100_001


def test_aliases_100k_line(tmp_path):
    conf = str(config(tmp_path, False))
    text = "big: " + ", ".join(f"user{i}" for i in range(15000)) + "\nsmall: x\n"
    text += "long: " + "x" * 100_000 + "\n"
    out = {}
    for side in ("pf", "hato"):
        src = tmp_path / side
        src.write_text(text)
        if side == "pf":
            b = postfix("postalias", "-c", conf, f"lmdb:{src}")
        else:
            b = hato("-c", conf, f"lmdb:{src}", prog="postalias")
        q = postfix("postalias", "-c", conf, "-q", "-", f"lmdb:{src}", input=b"big\nlong\nsmall\n")
        out[side] = (b.returncode, q.stdout)
    assert out["hato"] == out["pf"]


@pytest.mark.parametrize("type_name", ["lmdb", "cdb", "hash"])
def test_binary_garbage_with_nul_refused(tmp_path, type_name):
    """A source with NUL bytes is not text: Postfix cuts such lines short
    without a word; hato refuses the file, naming the line."""
    conf = str(config(tmp_path, False))
    src, index, before = _prepare(tmp_path, "t", type_name, conf)
    rng = random.Random(7)
    src.write_bytes(b"k1 v1\nk2 v2\n" + bytes(rng.randrange(256) for _ in range(5000)))
    res = hato("-c", conf, f"{type_name}:{src}")
    assert res.returncode == 1
    assert f"{src}, line " in res.stderr and "NUL byte in input" in res.stderr
    assert "Traceback" not in res.stderr
    assert index.read_bytes() == before
    # texthash refuses it as well, as a table error
    res = hato("-c", conf, "-q", "k1", f"texthash:{src}")
    assert res.returncode == 1 and "NUL byte in input" in res.stderr


@pytest.mark.parametrize("utf8", [False, True], ids=["ascii", "utf8"])
def test_binary_garbage_without_nul_as_postfix(tmp_path, utf8):
    """Control characters and 8-bit bytes (no NUL): the same records and the
    same number of warnings as Postfix (UTF-8 mode: invalid lines skipped)."""
    conf = str(config(tmp_path, utf8))
    rng = random.Random(11)
    data = b"k1 v1\n" + bytes(rng.randrange(1, 256) for _ in range(20000)) + b"\nk2 v2\n"
    out = {}
    for side in ("pf", "hato"):
        src = tmp_path / side
        src.write_bytes(data)
        run = (lambda *a: postfix("postmap", *a)) if side == "pf" else hato
        b = run("-c", conf, f"lmdb:{src}")
        dump = postfix("postmap", "-c", conf, "-s", f"lmdb:{src}")
        out[side] = (b.returncode, len(b.stderr.splitlines()), sorted(dump.stdout.split(b"\n")))
    assert out["hato"] == out["pf"]


def test_missing_source(tmp_path):
    conf = str(config(tmp_path, False))
    for type_name in ("lmdb", "cdb"):
        missing = tmp_path / "nothere"
        pf = postfix("postmap", "-c", conf, f"{type_name}:{missing}")
        ht = hato("-c", conf, f"{type_name}:{missing}")
        assert (ht.returncode, ht.stderr) == (pf.returncode, pf.stderr)
        assert f"open {missing}: No such file or directory" in ht.stderr
    res = hato("-c", conf, "-q", "x", f"hash:{tmp_path}/nothere")
    assert res.returncode == 1
    assert f'build it with "hato postmap hash:{tmp_path}/nothere"' in res.stderr


@pytest.mark.parametrize("type_name", ["lmdb", "cdb", "hash"])
def test_unwritable_directory(tmp_path, type_name):
    """The directory refuses new files (root without CAP_DAC_OVERRIDE in a
    0555 directory): a clear error, and the old index still answers."""
    setpriv = require_tool("setpriv", "util-linux")
    conf = str(config(tmp_path, False))
    d = tmp_path / "ro"
    d.mkdir()
    src, index, before = _prepare(d, "t", type_name, conf)
    src.write_text("old new\n")
    os.chmod(d, 0o555)
    try:
        cmd = [sys.executable, "-m", "hato", "postmap", "-c", conf, f"{type_name}:{src}"]
        if os.geteuid() == 0:
            cmd = [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", *cmd]
        p = subprocess.run(cmd, capture_output=True, text=True, env=hato_env(), timeout=120,
                           check=False)
    finally:
        os.chmod(d, 0o755)
    assert p.returncode == 1
    assert f"postmap: fatal: cannot create a new {index} in {d}: Permission denied" in p.stderr
    assert index.read_bytes() == before
    assert hato("-c", conf, "-q", "old", f"{type_name}:{src}").stdout == b"value\n"

"""hato postmap against Debian's Postfix 3.7 postmap: lmdb, cdb, texthash.

For each type, a random table (mixed-case keys, user+ext@domain, IPv4 and
IPv6-looking keys, UTF-8 keys, continuation lines, comments, duplicates) is
built by both postmaps from identical sources, then at least 2,000 random
keys are asked with ``postmap -q -`` four ways: Postfix on Postfix's index,
hato on hato's, and each on the other's. Every answer and exit status must
be the same. Both configurations are tried: smtputf8_enable = no (ASCII case
folding) and yes (Unicode case folding, non-UTF-8 lines ignored).
"""

from __future__ import annotations

import io
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.differential

TYPES = ["lmdb", "cdb", "texthash"]
QUERIES = 2000


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: str


def hato(*argv: str, input: bytes = b"", prog: str = "postmap") -> Result:
    """``hato PROG ARGV`` in this process, bytes in and out."""
    from hato.cli.main import main

    stdin = io.TextIOWrapper(io.BytesIO(input), encoding="utf-8", errors="surrogateescape")
    out = io.BytesIO()
    stdout = io.TextIOWrapper(out, encoding="utf-8", errors="surrogateescape")
    err = io.StringIO()
    saved = sys.stdin, sys.stdout, sys.stderr, os.environ.pop("MAIL_CONFIG", None)
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, err
    try:
        code = main(["hato", prog, *argv])
        stdout.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved[0], saved[1], saved[2]
        if saved[3] is not None:
            os.environ["MAIL_CONFIG"] = saved[3]
    return Result(code, out.getvalue(), err.getvalue())


def postfix(tool: str, *argv: str, input: bytes = b"") -> Result:
    import subprocess

    from tests.conftest import require_tool
    path = require_tool(tool, "postfix")
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    p = subprocess.run([path, *argv], input=input, capture_output=True, env=env, timeout=120,
                       check=False)
    return Result(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))


def config(tmp_path: Path, utf8: bool) -> Path:
    conf = tmp_path / ("conf-utf8" if utf8 else "conf")
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("compatibility_level = 3.6\n" if utf8 else
                                  "compatibility_level = 0\n")
    return conf


# -- random tables ------------------------------------------------------------------

LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
UNICODE = "äöüßÄÖÜẞσςΣİıéÉçÇñÑøØ漢字кирилКИРИЛ"


def _word(rng: random.Random, lo: int = 1, hi: int = 10, alphabet: str = LETTERS) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def _ipv6(rng: random.Random) -> str:
    groups = [f"{rng.randrange(0, 65536):x}" for _ in range(8)]
    if rng.random() < 0.5:
        i = rng.randrange(0, 7)
        j = rng.randrange(i + 1, 8)
        text = ":".join(groups[:i]) + "::" + ":".join(groups[j:])
    else:
        text = ":".join(groups)
    return "".join(c.upper() if rng.random() < 0.3 else c for c in text)


def random_key(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.25:
        return _word(rng, 1, 12, LETTERS + "0123456789-._")
    if r < 0.45:
        user = _word(rng, 1, 8)
        ext = "+" + _word(rng, 1, 5) if rng.random() < 0.5 else ""
        return f"{user}{ext}@{_word(rng, 2, 8)}.{rng.choice(['COM', 'org', 'Net', 'de'])}"
    if r < 0.55:
        return f"@{_word(rng, 2, 8)}.{_word(rng, 2, 3)}"
    if r < 0.65:
        return ".".join(str(rng.randrange(0, 256)) for _ in range(rng.randint(1, 4)))
    if r < 0.8:
        return _ipv6(rng)
    return _word(rng, 1, 4) + _word(rng, 1, 4, UNICODE) + _word(rng, 0, 3)


def random_value(rng: random.Random) -> str:
    words = [_word(rng, 1, 8, LETTERS + "0123456789@.:[]" + UNICODE[:6])
             for _ in range(rng.randint(1, 4))]
    return "".join(w + rng.choice([" ", "  ", "\t", " \t "]) for w in words).rstrip()


def random_source(rng: random.Random, n: int = 400) -> tuple[str, list[str]]:
    lines: list[str] = []
    keys: list[str] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.05:
            lines.append("# " + random_value(rng))
            continue
        if r < 0.08:
            lines.append(rng.choice(["", "   ", "\t"]))
            continue
        if r < 0.12 and keys:
            key = rng.choice(keys)  # a duplicate, maybe in another case
            key = key.upper() if rng.random() < 0.5 else key
        else:
            key = random_key(rng)
        keys.append(key)
        line = key + rng.choice([" ", "\t", "   "]) + random_value(rng)
        if rng.random() < 0.1:
            line += "\n" + rng.choice([" ", "\t", "  "]) + random_value(rng)
        if rng.random() < 0.03:
            line += "\n  # a comment between continuation lines\n\t" + random_value(rng)
        lines.append(line)
    return "\n".join(lines) + "\n", keys


def _recase(rng: random.Random, key: str) -> str:
    r = rng.random()
    if r < 0.3:
        return key
    if r < 0.5:
        return key.upper()
    if r < 0.65:
        return key.lower()
    return "".join(c.swapcase() if rng.random() < 0.5 else c for c in key)


def random_queries(rng: random.Random, keys: list[str], n: int = QUERIES) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        r = rng.random()
        key = rng.choice(keys)
        if r < 0.55:
            q = _recase(rng, key)
        elif r < 0.65 and "@" in key:
            user, _, domain = key.partition("@")
            q = rng.choice([user.split("+")[0] + "@" + domain, "@" + domain, user,
                            user + "+x@" + domain])
        elif r < 0.7:
            q = key.replace("ß", "ss").replace("ẞ", "SS")
        elif r < 0.75:
            q = key + rng.choice(["x", ".", " "])
        else:
            q = random_key(rng)
        if q:
            out.append(q)
    return out


def _norm(text: str, *dirs: Path) -> str:
    for d in dirs:
        text = text.replace(str(d) + "/", "")
    return text


@pytest.mark.parametrize("utf8", [False, True], ids=["ascii", "utf8"])
@pytest.mark.parametrize("type_name", TYPES)
def test_random_queries(tmp_path, type_name, utf8):
    rng = random.Random(f"{type_name}-{utf8}-20240601")
    conf = str(config(tmp_path, utf8))
    text, keys = random_source(rng)
    pf_dir, h_dir = tmp_path / "pf", tmp_path / "hato"
    pf_dir.mkdir()
    h_dir.mkdir()
    pf_src, h_src = pf_dir / "table", h_dir / "table"
    pf_src.write_text(text)
    h_src.write_text(text)

    if type_name != "texthash":
        pf = postfix("postmap", "-c", conf, f"{type_name}:{pf_src}")
        ht = hato("-c", conf, f"{type_name}:{h_src}")
        assert (ht.returncode, _norm(ht.stderr, h_dir)) == (pf.returncode,
                                                            _norm(pf.stderr, pf_dir))
        assert pf.returncode == 0
        if type_name == "cdb":
            # same records in the same order: the very same file
            assert (h_dir / "table.cdb").read_bytes() == (pf_dir / "table.cdb").read_bytes()
        else:
            dump_pf = postfix("postmap", "-c", conf, "-s", f"{type_name}:{pf_src}")
            dump_h = postfix("postmap", "-c", conf, "-s", f"{type_name}:{h_src}")
            assert dump_h.stdout == dump_pf.stdout
            assert hato("-c", conf, "-s", f"{type_name}:{pf_src}").stdout == dump_pf.stdout

    queries = random_queries(rng, keys)
    stdin = ("\n".join(queries) + "\n").encode()
    answers = {
        "postfix on postfix": postfix("postmap", "-c", conf, "-q", "-",
                                      f"{type_name}:{pf_src}", input=stdin),
        "hato on hato": hato("-c", conf, "-q", "-", f"{type_name}:{h_src}", input=stdin),
        "postfix on hato": postfix("postmap", "-c", conf, "-q", "-",
                                   f"{type_name}:{h_src}", input=stdin),
        "hato on postfix": hato("-c", conf, "-q", "-", f"{type_name}:{pf_src}", input=stdin),
    }
    ref = answers["postfix on postfix"]
    assert ref.returncode == 0
    found = ref.stdout.count(b"\n")
    assert 300 < found < len(queries) - 300, "the queries should both hit and miss"
    for how, res in answers.items():
        assert res.returncode == ref.returncode, how
        if res.stdout != ref.stdout:
            a, b = ref.stdout.splitlines(), res.stdout.splitlines()
            diff = [(x, y) for x, y in zip(a, b) if x != y][:5]
            pytest.fail(f"{how}: answers differ from Postfix's: {diff} "
                        f"({len(a)} vs {len(b)} lines)")

    # single -q queries: the value and the exit status
    for q in rng.sample(queries, 25):
        pf1 = postfix("postmap", "-c", conf, "-q", q, f"{type_name}:{pf_src}")
        ht1 = hato("-c", conf, "-q", q, f"{type_name}:{h_src}")
        assert (ht1.returncode, ht1.stdout) == (pf1.returncode, pf1.stdout), q


@pytest.mark.parametrize("type_name", ["lmdb", "cdb"])
def test_nul_options_cross_read(tmp_path, type_name):
    """-N and -n files, written by each side, read by the other."""
    conf = str(config(tmp_path, False))
    for opt in ("-N", "-n"):
        for side in ("pf", "hato"):
            src = tmp_path / f"{side}{opt}"
            src.write_text("Key value\nother  two words\n")
            if side == "pf":
                assert postfix("postmap", "-c", conf, opt, f"{type_name}:{src}").returncode == 0
            else:
                assert hato("-c", conf, opt, f"{type_name}:{src}").returncode == 0
            for q in ("key", "KEY", "other", "none"):
                for flags in ((), (opt,)):
                    pf = postfix("postmap", "-c", conf, *flags, "-q", q, f"{type_name}:{src}")
                    ht = hato("-c", conf, *flags, "-q", q, f"{type_name}:{src}")
                    assert (ht.returncode, ht.stdout) == (pf.returncode, pf.stdout), (
                        side, opt, flags, q)


def test_options_and_multiple_tables(tmp_path):
    """-f, -r, -w, several tables in order, -d, -i: as Postfix."""
    conf = str(config(tmp_path, False))
    text = "a 1\nB 2\na 3\nb 4\nC 5\n"
    for opts in ((), ("-r",), ("-w",), ("-f",), ("-f", "-r")):
        res = {}
        for side in ("pf", "hato"):
            d = tmp_path / f"{side}{''.join(opts)}"
            d.mkdir()
            (d / "t").write_text(text)
            (d / "u").write_text("c 9\nz 26\n")
            run = postfix if side == "pf" else (lambda tool, *a, **k: hato(*a, **k))
            build = run("postmap", "-c", conf, *opts, f"lmdb:{d}/t", f"cdb:{d}/u")
            q = run("postmap", "-c", conf, *opts, "-q", "-", f"lmdb:{d}/t", f"cdb:{d}/u",
                    f"texthash:{d}/t", input=b"a\nA\nb\nB\nc\nC\nz\nnone\n")
            dump = run("postmap", "-c", conf, *opts, "-s", f"lmdb:{d}/t")
            # (Postfix sometimes repeats texthash's warnings; compare them as a set)
            res[side] = (build.returncode, _norm(build.stderr, d), q.returncode, q.stdout,
                         set(_norm(q.stderr, d).splitlines()), dump.stdout)
        assert res["hato"] == res["pf"], opts

    # -d and -i
    res = {}
    for side in ("pf", "hato"):
        d = tmp_path / f"upd-{side}"
        d.mkdir()
        (d / "t").write_text("a 1\nb 2\n")
        run = postfix if side == "pf" else (lambda tool, *a, **k: hato(*a, **k))
        steps = [
            run("postmap", "-c", conf, f"lmdb:{d}/t"),
            run("postmap", "-c", conf, "-d", "A", f"lmdb:{d}/t"),
            run("postmap", "-c", conf, "-d", "A", f"lmdb:{d}/t"),
            run("postmap", "-c", conf, "-d", "-", f"lmdb:{d}/t", input=b"x\nb\n"),
            run("postmap", "-c", conf, "-i", f"lmdb:{d}/t", input=b"C 3\nb 9\nbad\nc 4\n"),
            run("postmap", "-c", conf, "-s", f"lmdb:{d}/t"),
        ]
        res[side] = [(r.returncode, r.stdout, _norm(r.stderr, d)) for r in steps]
    assert res["hato"] == res["pf"]


def test_errors_as_postfix(tmp_path):
    conf = str(config(tmp_path, False))
    missing = tmp_path / "missing"
    for args in (["-q", "x", f"lmdb:{missing}"], ["-q", "x", f"cdb:{missing}"],
                 ["-q", "x", f"texthash:{missing}"], [f"lmdb:{missing}"],
                 [f"cdb:{missing}"], ["-q", "x", f"nosuchtype:{missing}"],
                 ["-q", "x"], ["-Z", "x"], ["-q", "x", "-s", "lmdb:x"],
                 ["-h", "-q", "x", f"lmdb:{missing}"], ["-d", "x", f"texthash:{missing}"]):
        pf = postfix("postmap", "-c", conf, *args)
        ht = hato("-c", conf, *args)
        assert (ht.returncode, ht.stdout, ht.stderr) == (pf.returncode, pf.stdout,
                                                         pf.stderr), args


def test_header_and_body_queries(tmp_path):
    """-q - with -h / -b / -m: the message's lines as keys, as Postfix.
    ``static:`` answers every key, so the output lists every key made."""
    conf = str(config(tmp_path, False))
    messages = [
        b"From: a\nSubject: hello\n  world\nX-Long:\tx\n\nbody1\n\nbody2\nSubject: fake\n",
        b"From: a\nnot a header\nTo: b\n\nbody\n",
        (b"From: a\nContent-Type: multipart/mixed; boundary=\"XX\"\n\npreamble\n--XX\n"
         b"Content-Type: text/plain\nX-Part: 1\n\npart one\n--XX\n"
         b"Content-Type: message/rfc822\n\nSubject: inner\nTo: b\n\ninner body\n--XX--\n"
         b"epilogue\n"),
        b"Content-Type: multipart/mixed; boundary=XX\nFrom: a\n--XX\nX-A: b\nnon\n--XX--\n",
        b" leading\nFrom: a\n",
        b"From: a\n--XX\n",
    ]
    for msg in messages:
        for opts in (["-h"], ["-b"], ["-h", "-b"], ["-h", "-m"], ["-b", "-m"],
                     ["-h", "-b", "-m"], ["-m", "-h"]):
            args = ["-c", conf, *opts, "-q", "-", "static:hit"]
            pf = postfix("postmap", *args, input=msg)
            ht = hato(*args, input=msg)
            assert (ht.returncode, ht.stdout) == (pf.returncode, pf.stdout), (opts, msg)

"""Lookups per second: hato's tables in-process against Postfix's
``postmap -q -`` reading the same keys from standard input.

    python3 bench/tables.py [--keys N] [--entries N] [--repeat N]

For each type (lmdb, hash, cdb; cidr with 1,000 rules and pcre with 100
rules when those modules are there) the same table is built by both sides
(Postfix's postmap writes ``file.db`` for hash:, hato its ``file.hato.db``)
and the same keys are asked, half of them present. Postfix's time includes
its start-up, so the keys are many; hato's is the in-process ``Table.get``
loop a daemon would run. Printed: lookups/second for each side and the
ratio hato/Postfix (above 1: hato is faster per lookup). Not a test: no
timing is ever asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from hato.cli.main import main as hato_main
from hato.tables import registry
from hato.tables.base import TableError


def postmap_path() -> str:
    path = shutil.which("postmap") or "/usr/sbin/postmap"
    if not os.path.exists(path):
        sys.exit("postmap is missing: install Debian's postfix (and postfix-lmdb, postfix-cdb, "
                 "postfix-pcre)")
    return path


def words(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        user = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 10)))
        dom = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))
        out.add(f"{user}@{dom}.example")
    return sorted(out)


def time_postfix(postmap: str, conf: str, spec: str, keys: list[str]) -> float:
    data = ("\n".join(keys) + "\n").encode()
    t0 = time.perf_counter()
    p = subprocess.run([postmap, "-c", conf, "-q", "-", spec], input=data,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - t0
    if p.returncode not in (0, 1):
        raise RuntimeError(f"postmap -q - {spec}: {p.stderr.decode()}")
    return len(keys) / elapsed


def time_hato(spec: str, keys: list[str], repeat: int) -> float:
    table = registry.open_table(spec)
    best = 0.0
    for _ in range(repeat):
        get = table.get
        t0 = time.perf_counter()
        for k in keys:
            get(k)
        elapsed = time.perf_counter() - t0
        best = max(best, len(keys) / elapsed)
    table.close()
    return best


def hato_build(conf: str, spec: str) -> None:
    code = hato_main(["hato", "postmap", "-c", conf, spec])
    if code != 0:
        raise RuntimeError(f"hato postmap {spec} failed")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    postmap = postmap_path()
    rng = random.Random(1)
    work = Path(tempfile.mkdtemp(prefix="hato-bench-tables-"))
    try:
        conf = work / "conf"
        conf.mkdir()
        (conf / "main.cf").write_text("")
        present = words(rng, args.entries)
        absent = words(random.Random(2), args.entries)
        keys = [rng.choice(present) if rng.random() < 0.5 else rng.choice(absent)
                for _ in range(args.keys)]
        src = work / "table"
        src.write_text("".join(f"{k} value-{i}\n" for i, k in enumerate(present)))
        rows = []
        for type_name in ("lmdb", "hash", "cdb"):
            spec = f"{type_name}:{src}"
            subprocess.run([postmap, "-c", str(conf), spec], check=True)
            hato_build(str(conf), spec)
            rows.append((type_name, time_hato(spec, keys, args.repeat),
                         time_postfix(postmap, str(conf), spec, keys)))

        # cidr with 1,000 rules, pcre with 100 rules, if those modules exist
        cidr = work / "clients.cidr"
        cidr.write_text("".join(
            f"10.{i // 256}.{i % 256}.0/24 REJECT rule {i}\n" for i in range(999))
            + "0.0.0.0/0 OK\n")
        ips = [f"10.{rng.randrange(8)}.{rng.randrange(256)}.{rng.randrange(256)}"
               for _ in range(args.keys // 4)]
        pcre = work / "checks.pcre"
        pcre.write_text("".join(f"/^Subject:.*word{i}\\b/i REJECT rule {i}\n"
                                for i in range(100)))
        subjects = [f"Subject: hello word{rng.randrange(200)} there" for _ in range(args.keys // 20)]
        for type_name, path, qkeys in (("cidr", cidr, ips), ("pcre", pcre, subjects)):
            spec = f"{type_name}:{path}"
            try:
                registry.open_table(spec).close()
            except TableError as err:
                print(f"{type_name}: skipped ({err})")
                continue
            rows.append((f"{type_name} ({'1000' if type_name == 'cidr' else '100'} rules)",
                         time_hato(spec, qkeys, args.repeat),
                         time_postfix(postmap, str(conf), spec, qkeys)))

        print(f"{'type':<20} {'hato/s':>12} {'postfix/s':>12} {'ratio':>7}")
        for name, h, p in rows:
            print(f"{name:<20} {h:>12,.0f} {p:>12,.0f} {h / p:>7.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

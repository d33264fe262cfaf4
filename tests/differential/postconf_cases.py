"""Shared set-up for the postconf differential tests: configuration
directories written the same way for hato and for Debian's Postfix."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from tests.conftest import ROOT, run_postfix
from tests.hatorun import hato_inprocess

REFERENCE = ROOT / "tests" / "data" / "reference"
DEBIAN_MASTER = Path("/etc/postfix/master.cf.proto")


def write_config(directory: Path, main: str, master: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in (("main.cf", main), ("master.cf", master)):
        path = directory / name
        path.write_text(text.replace("@DIR@", str(directory)))
        # Postfix's commands pause ~2 s when main.cf changed within the last
        # second; date the files back so the differential tests run quickly.
        old = time.time() - 60
        os.utime(path, (old, old))
    return directory


def reference_config(directory: Path, which: str = "") -> Path:
    prefix = f"{which}-" if which else ""
    return write_config(directory, (REFERENCE / f"{prefix}main.cf").read_text(),
                        (REFERENCE / f"{prefix}master.cf").read_text())


def both(directory: Path, *args: str):
    """Run postconf -c DIR ARGS with Postfix and with hato."""
    pf = run_postfix("postconf", "-c", str(directory), *args)
    ht = hato_inprocess("postconf", "-c", str(directory), *args)
    return pf, ht


def assert_same(directory: Path, *args: str) -> str:
    pf, ht = both(directory, *args)
    assert ht.stdout == pf.stdout, (
        f"postconf {' '.join(args)} differs\n--- postfix:\n{pf.stdout}\n--- hato:\n{ht.stdout}"
        f"\n--- hato stderr:\n{ht.stderr}")
    assert (ht.returncode == 0) == (pf.returncode == 0), (pf.stderr, ht.stderr)
    return pf.stdout


# -- random configurations ----------------------------------------------------

WORDS = ["alpha", "beta", "example.com", "10", "300s", "yes", "no", "a,b", "x y",
         "permit_mynetworks", "reject", "hash:/etc/x", "{ a b }"]


def random_value(rng: random.Random, names: list[str], depth: int = 0) -> str:
    kind = rng.randrange(12 if depth < 2 else 3)
    if kind == 0:
        return rng.choice(WORDS)
    if kind == 1:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4)))
    if kind == 2:
        return f"${rng.choice(names)}"
    if kind == 3:
        return f"${{{rng.choice(names)}}}"
    if kind == 4:
        return f"$({rng.choice(names)})"
    if kind == 5:
        return f"${{{rng.choice(names)}?{random_value(rng, names, depth + 1)}}}"
    if kind == 6:
        return f"${{{rng.choice(names)}:{random_value(rng, names, depth + 1)}}}"
    if kind == 7:
        return (f"${{{rng.choice(names)}?{{{random_value(rng, names, depth + 1)}}}:"
                f"{{{random_value(rng, names, depth + 1)}}}}}")
    if kind == 8:
        op = rng.choice(["==", "!=", "<", "<=", ">", ">="])
        a = rng.choice(["1", "2", "10", "abc", "$mail_owner", "${stress}", ""])
        b = rng.choice(["1", "2", "10", "abd", "postfix", ""])
        return (f"${{{{{a}}} {op} {{{b}}} ? {{{random_value(rng, names, depth + 1)}}} : "
                f"{{{random_value(rng, names, depth + 1)}}}}}")
    if kind == 9:
        return "$$" + rng.choice(WORDS)
    if kind == 10 or depth > 0:
        # (A <level form nested inside another expression trips a quirk of
        # Postfix's own scanner, so level forms stand at the top only.)
        return f"pre-{random_value(rng, names, depth + 1)}-post"
    op = rng.choice(["<level", "<=level", ">level", ">=level"])
    return (f"${{{{$compatibility_level}} {op} {{{rng.choice(['1', '2', '3.6', '3.10'])}}} ? "
            f"{{yes}} : {{no}}}}")

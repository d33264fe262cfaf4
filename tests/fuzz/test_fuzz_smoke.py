"""The fuzz harnesses in CI: a short, time-boxed atheris run of each one,
and a replay of every seed and saved regression input in-process.

The atheris run goes through ``tools/fuzz`` (the command developers use),
two harnesses at a time, a few seconds each: about 30 seconds of wall time
for all of them on two cores. A harness that crashes, hangs or finds an
exception its parser does not document fails the test with libFuzzer's
report and the crashing input. Longer runs: ``tools/fuzz --seconds 600``
(docs/fuzzing.md).
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from tests.fuzz.harness import CORPUS, ROOT

TOOL = os.path.join(ROOT, "tools", "fuzz")
TARGETS = sorted(name[len("fuzz_"):-3] for name in os.listdir(os.path.dirname(__file__))
                 if name.startswith("fuzz_") and name.endswith(".py"))
#: seconds of fuzzing per harness in CI (17 harnesses, 2 at a time)
SECONDS = 2


def test_every_harness_has_seeds():
    assert len(TARGETS) >= 17
    for target in TARGETS:
        seeds = os.path.join(CORPUS, target)
        assert os.path.isdir(seeds) and os.listdir(seeds), f"no seed corpus for {target}"


@pytest.mark.parametrize("target", TARGETS)
def test_seeds_replay(target):
    """Every committed input runs through its harness without a crash (no
    atheris needed: the harnesses are plain functions)."""
    harness = importlib.import_module(f"tests.fuzz.fuzz_{target}")
    seeds = os.path.join(CORPUS, target)
    for name in sorted(os.listdir(seeds)):
        with open(os.path.join(seeds, name), "rb") as fh:
            harness.test_one_input(fh.read())


def test_atheris_smoke(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        pytest.fail("atheris is missing: install hato's test extra (pip install -e '.[test]')")
    proc = subprocess.run(
        [sys.executable, TOOL, "--python", sys.executable, "--no-install", "--quiet",
         "--seconds", str(SECONDS), "--jobs", "2", "--corpus", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, errors="replace", timeout=300)
    report = proc.stdout + proc.stderr
    assert proc.returncode == 0, report
    for target in TARGETS:
        assert f"== {target}: ok" in report, report

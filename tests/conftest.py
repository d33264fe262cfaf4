"""Shared test fixtures.

Tools the tests use are required: when one is missing the test fails with a
message naming the Debian package (CI installs them all through
tools/run-tests). Nothing here skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"


def require_tool(name: str, package: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        pytest.fail(f"{name} is missing: install the Debian package {package} "
                    f"(tools/run-tests installs every tool the tests use)")
    return path


@pytest.fixture(scope="session")
def postfix_postconf() -> str:
    return require_tool("postconf", "postfix")


def hato_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("MAIL_CONFIG", None)
    if extra:
        env.update(extra)
    return env


def run_hato(*args: str, input: str | bytes | None = None, env: dict[str, str] | None = None,
             check: bool = False) -> subprocess.CompletedProcess:
    """Run ``hato ARGS`` in a subprocess, as a user would."""
    text = not isinstance(input, bytes)
    return subprocess.run([sys.executable, "-m", "hato", *args], input=input,
                          capture_output=True, text=text, env=hato_env(env), check=check,
                          timeout=120)


def run_postfix(tool: str, *args: str, input: str | None = None,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    path = require_tool(tool, "postfix")
    e = dict(os.environ)
    e.pop("MAIL_CONFIG", None)
    if env:
        e.update(env)
    return subprocess.run([path, *args], input=input, capture_output=True, text=True,
                          env=e, timeout=120)

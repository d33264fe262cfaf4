"""Run hato's commands in-process (fast) or as a subprocess (as users do)."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def hato_inprocess(*argv: str, env: dict[str, str] | None = None) -> Result:
    """Call ``hato ARGV`` in this process, capturing its output."""
    from hato.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = dict(os.environ)
    os.environ.pop("MAIL_CONFIG", None)
    if env:
        os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(["hato", *argv])
            except SystemExit as exc:  # pragma: no cover - commands return codes
                code = int(exc.code or 0)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Result(code, out.getvalue(), err.getvalue())

"""What every fuzz harness in this directory shares.

A harness is a module ``fuzz_<target>.py`` with

* ``test_one_input(data: bytes)`` — feeds *data* to one of hato's parsers
  and lets every exception escape except the ones that parser documents for
  bad input (those are caught inside the harness);
* ``main()`` — runs it under atheris (libFuzzer), with hato's modules
  instrumented for coverage.

``tools/fuzz`` runs the harnesses (see docs/fuzzing.md); the CI smoke test
``tests/fuzz/test_fuzz_smoke.py`` runs each one for a few seconds and
replays the seed corpus in ``tests/fuzz/corpus/<target>/``.

The module names do not start with ``test_`` so pytest does not collect
``test_one_input`` itself; the harnesses are importable without atheris
(the replay tests use that).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")

def instrumented() -> contextlib.AbstractContextManager:
    """Import hato's modules with atheris coverage instrumentation when the
    harness runs as a fuzzer (``python -m tests.fuzz.fuzz_x`` or the file);
    plainly when imported (pytest, replay)."""
    main = sys.modules.get("__main__")
    main_file = os.path.basename(getattr(main, "__file__", "") or "")
    if not main_file.startswith("fuzz_"):
        return contextlib.nullcontext()
    try:
        import atheris
    except ImportError:
        return contextlib.nullcontext()
    return atheris.instrument_imports(include=["hato"])


def run(test_one_input: Callable[[bytes], None], argv: list[str] | None = None) -> None:
    """Fuzz *test_one_input* with libFuzzer's command line (``-runs=N``,
    ``-max_total_time=S``, corpus directories...)."""
    import atheris

    # Parsers warn through logging about the lines they skip; under a fuzzer
    # that is millions of lines of noise.
    logging.disable(logging.CRITICAL)
    atheris.Setup(list(sys.argv if argv is None else argv), test_one_input)
    atheris.Fuzz()


class Input:
    """Takes the fuzzer's bytes apart: a few option bytes from the front,
    the rest as the payload. Deterministic and independent of atheris, so a
    crashing input replays the same way under plain Python."""

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        b = self.data[self.pos]
        self.pos += 1
        return b

    def bits(self, n: int) -> list[bool]:
        value = self.byte()
        return [bool(value >> i & 1) for i in range(n)]

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    """*data* in pieces of *size* bytes (0: all at once)."""
    if size <= 0:
        yield data
        return
    for i in range(0, len(data), size):
        yield data[i:i + size]


class Hang(AssertionError):
    """A loop that should end did not: a core that makes no progress."""


def steps(limit: int = 100_000) -> Iterator[int]:
    """``for _ in steps():`` a bounded driver loop; raises :class:`Hang`."""
    yield from range(limit)
    raise Hang(f"no end after {limit} steps")


def not_unicode(exc: ValueError) -> None:
    """Re-raise *exc* when it is a UnicodeError: where ValueError is the
    documented error, a decoding error escaping is still a crash."""
    if isinstance(exc, UnicodeError):
        raise exc

"""Fuzz regexp: pattern files (hato.tables.regexp, hato.tables.patternfile): IF/ENDIF, /pattern/flags result with $1 substitutions, the combined-pattern speed-up.

See tests/fuzz/tables.py for the input layout and the documented errors.
"""

from __future__ import annotations

from tests.fuzz.harness import run
from tests.fuzz.tables import fuzz_table


def test_one_input(data: bytes) -> None:
    fuzz_table("regexp", data, inline=True)


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

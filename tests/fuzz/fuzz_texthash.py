"""Fuzz texthash: postmap(1) source files (hato.tables.textfile.parse_source, the parser every postmap source goes through: key whitespace value, continuation lines, quotes).

See tests/fuzz/tables.py for the input layout and the documented errors.
"""

from __future__ import annotations

from tests.fuzz.harness import run
from tests.fuzz.tables import fuzz_table


def test_one_input(data: bytes) -> None:
    fuzz_table("texthash", data)


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

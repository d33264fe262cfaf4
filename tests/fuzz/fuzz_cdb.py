"""Fuzz cdb: constant database files (hato.tables.cdb): a corrupt or hostile .cdb file.

See tests/fuzz/tables.py for the input layout and the documented errors.
"""

from __future__ import annotations

from tests.fuzz.harness import run
from tests.fuzz.tables import fuzz_table


def test_one_input(data: bytes) -> None:
    fuzz_table("cdb", data, suffix=".cdb")


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

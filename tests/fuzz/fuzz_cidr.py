"""Fuzz cidr: network tables (hato.tables.cidr): IF/ENDIF, IPv4 and IPv6 networks, lookups by address.

See tests/fuzz/tables.py for the input layout and the documented errors.
"""

from __future__ import annotations

from tests.fuzz.harness import run
from tests.fuzz.tables import fuzz_table


def test_one_input(data: bytes) -> None:
    fuzz_table("cidr", data, inline=True)


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

"""Fuzz the aliases(5) parser (hato.tables.aliases.parse_aliases), what
``newaliases``/``postalias`` read.

The input is an aliases file. Documented error: TableError (a NUL byte in
the file, SourceError); lines that do not parse are skipped with a warning.
Anything else escaping is a crash. Checks: every record's value, in its
external form, scans again as an address list.
"""

from __future__ import annotations

from tests.fuzz.harness import Input, instrumented, run

with instrumented():
    from hato.tables.aliases import parse_aliases, scan
    from hato.tables.base import TableError


def test_one_input(data: bytes) -> None:
    inp = Input(data)
    opts = inp.byte()
    warnings: list[str] = []
    try:
        aliases = list(parse_aliases(inp.rest(), "/etc/aliases", warnings.append,
                                     utf8=bool(opts & 1)))
    except TableError:
        return
    for alias in aliases:
        if not isinstance(alias.name, bytes) or not isinstance(alias.value, bytes):
            raise AssertionError(f"alias record of the wrong type {alias!r}")
        scan(alias.value)


def main() -> None:
    run(test_one_input)


if __name__ == "__main__":
    main()

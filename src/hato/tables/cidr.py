"""``cidr:`` tables: cidr_table(5), IPv4 and IPv6 networks.

Each rule is ``network/prefix result`` or a bare address (``/32``, ``/128``),
optionally in brackets (``[::1]/128``, ``[10.0.0.0/8]``) and negated with
``!``; ``if network`` … ``endif`` blocks nest and take ``!`` too. The first
matching rule wins. A key is an address; IPv4 rules match IPv4 keys and IPv6
rules IPv6 keys (``::ffff:1.2.3.4`` is IPv6), parsed by the C library's
``inet_pton()`` as in Postfix (so ``01.2.3.4`` is not an address).

Rules Postfix rejects are skipped with Postfix's warning naming file and
line, and the rest of the table still works: ``10.0.0.0/33`` ("bad mask
length"), ``10.0.0.1/8`` ("non-null host address bits …, perhaps you should
use "10.0.0.0/8" instead"), a missing result, unbalanced ``if``/``endif``.
The warnings are logged and kept in ``table.warnings``; ``strict=True``
raises the first one instead.
"""

from __future__ import annotations

import socket
import threading

from .base import OpenFlags, Table, TableError
from .patternfile import (
    ReloadingRuleFile,
    SPACE,
    Report,
    key_bytes,
    logical_lines,
    printable,
    read_file,
    result_text,
    utf8_mode,
)

_SPACE = frozenset(SPACE)
_ALNUM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

OP_MATCH, OP_IF, OP_ENDIF = 0, 1, 2
_AF_INET, _AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
_BITS: dict[int, int] = {_AF_INET: 32, _AF_INET6: 128}


class _Bad(Exception):
    """A rule Postfix skips; the text is Postfix's reason."""


def _family(text: str) -> int:
    return _AF_INET6 if ":" in text else _AF_INET


def _pton(family: int, text: str) -> int | None:
    try:
        return int.from_bytes(socket.inet_pton(family, text), "big")
    except (OSError, ValueError):
        return None


def _ntop(family: int, value: int) -> str:
    return socket.inet_ntop(family, value.to_bytes(_BITS[family] // 8, "big"))


def parse_network(pattern: str) -> tuple[int, int, int]:
    """``addr``, ``addr/len``, ``[addr]/len`` or ``[addr/len]`` →
    (family, network, prefix length); _Bad with Postfix's reason."""
    mask_search = pattern
    mask_in_pattern = True
    if pattern.startswith("["):
        pattern = pattern[1:]
        close = pattern.find("]")
        if close < 0:
            raise _Bad(f"missing ']' character after \"[{pattern}\"")
        after = pattern[close + 1:]
        pattern = pattern[:close]
        if after.startswith("/"):
            mask_search = after
            mask_in_pattern = False
        elif after:
            raise _Bad(f'garbage after "[{pattern}]"')
        else:
            mask_search = pattern
    slash = mask_search.find("/")
    if slash >= 0:
        mask = mask_search[slash + 1:]
        if mask_in_pattern:
            pattern = pattern[:slash]
        family = _family(pattern)
        bits = _BITS[family]
        if not mask or not mask.isascii() or not mask.isdigit():
            raise _Bad(f'bad mask value in "{pattern}/{mask}"')
        length = int(mask)
        if length > bits:
            raise _Bad(f'bad mask length in "{pattern}/{mask}"')
        net = _pton(family, pattern)
        if net is None:
            raise _Bad(f'bad network value in "{pattern}/{mask}"')
        netmask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
        if net & ~netmask:
            raise _Bad(f'non-null host address bits in "{pattern}/{mask}", perhaps you '
                       f'should use "{_ntop(family, net & netmask)}/{length}" instead')
        return family, net, length
    family = _family(pattern)
    net = _pton(family, pattern)
    if net is None:
        raise _Bad(f'bad address pattern: "{pattern}"')
    return family, net, _BITS[family]


class _Rule:
    __slots__ = ("end", "family", "length", "lineno", "mask", "match", "net", "op", "value")

    def __init__(self, op: int, lineno: int, family: int = 0, net: int = 0, length: int = 0,
                 match: bool = True, value: bytes = b""):
        self.op = op
        self.lineno = lineno
        self.family = family
        self.net = net
        self.length = length
        bits = _BITS.get(family, 0)
        self.mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1) if family else 0
        self.match = match
        self.value = value
        self.end: int | None = None  # IF: index of the matching ENDIF


def _skip_negation(line: bytes, pos: int) -> tuple[bool, int]:
    match = True
    while pos < len(line):
        c = line[pos]
        if c == 0x21:  # '!'
            match = not match
        elif c not in _SPACE:
            break
        pos += 1
    return match, pos


def _text(data: bytes) -> str:
    return data.decode("latin-1")


def parse_rule(line: bytes, lineno: int, nesting: int) -> _Rule:
    """One logical line → rule; _Bad with Postfix's reason."""
    head = line[:5].lower()
    if head[:2] == b"if" and (len(line) == 2 or line[2] not in _ALNUM):
        match, pos = _skip_negation(line, 2)
        rest = line[pos:].rstrip(SPACE)
        if not rest:
            raise _Bad("no address pattern")
        family, net, length = parse_network(_text(rest))
        return _Rule(OP_IF, lineno, family, net, length, match)
    if head == b"endif" and (len(line) == 5 or line[5] not in _ALNUM):
        if line[5:].strip(SPACE):
            raise _Bad("garbage after ENDIF")
        if nesting == 0:
            raise _Bad("ENDIF without IF")
        return _Rule(OP_ENDIF, lineno)
    match, pos = _skip_negation(line, 0)
    end = pos
    while end < len(line) and line[end] not in _SPACE:
        end += 1
    pattern = line[pos:end]
    value = line[end:].strip(SPACE)
    if not pattern:
        raise _Bad("no address pattern")
    family, net, length = parse_network(_text(pattern))
    if not value:
        raise _Bad("no lookup result")
    return _Rule(OP_MATCH, lineno, family, net, length, match, value)


class CidrTable(ReloadingRuleFile, Table):
    """``cidr:/path``: first matching network wins."""

    type_name = "cidr"
    pattern_table = True

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags(), *, strict: bool = False):
        super().__init__(spec, flags)
        self.utf8 = utf8_mode(flags)
        self.strict = strict
        self.rules: list[_Rule] = []
        self.warnings: list[TableError] = []
        self._fast: dict[int, list[tuple[int, dict[int, int]]]] | None = None
        self._stamp: tuple[int, int, int, int] | None = None
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        data, st = read_file(self.spec, "cidr")
        report = Report("cidr", self.spec, self.utf8)
        rules: list[_Rule] = []
        stack: list[int] = []
        for lineno, line in logical_lines(data, report):
            try:
                rule = parse_rule(line, lineno, len(stack))
            except _Bad as why:
                report.warn(lineno, f"{printable(_text_bytes(str(why)))}: skipping this rule")
                continue
            if rule.op == OP_IF:
                stack.append(len(rules))
            elif rule.op == OP_ENDIF:
                rules[stack.pop()].end = len(rules)
            rules.append(rule)
        while stack:
            report.warn(rules[stack.pop()].lineno, "IF has no matching ENDIF")
        if self.strict and report.warnings:
            raise report.warnings[0]
        self.rules = rules
        self.warnings = report.warnings
        self._fast = self._index(rules)
        self._stamp = None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    @staticmethod
    def _index(rules: list[_Rule]) -> dict[int, list[tuple[int, dict[int, int]]]] | None:
        """For tables without ``!`` and ``if``: per family and prefix length,
        network → index of the first rule; a lookup takes the smallest index
        over the prefix lengths. None when the table needs the rule walk."""
        if any(r.op != OP_MATCH or not r.match for r in rules):
            return None
        by_family: dict[int, dict[int, dict[int, int]]] = {}
        for index, rule in enumerate(rules):
            per_len = by_family.setdefault(rule.family, {}).setdefault(rule.length, {})
            per_len.setdefault(rule.net, index)
        return {fam: sorted(((_BITS[fam] - length, nets) for length, nets in lens.items()),
                            key=lambda item: item[0])
                for fam, lens in by_family.items()}

    def get(self, key: str) -> str | None:
        raw = key_bytes(self, key, self.utf8)
        if raw is None:
            return None
        text = _text(raw)
        family = _family(text)
        addr = _pton(family, text)
        if addr is None:
            return None
        rule = self._find(family, addr)
        if rule is None:
            return None
        return result_text(self, raw, rule.value, self.utf8)

    def _find(self, family: int, addr: int) -> _Rule | None:
        rules = self.rules
        fast = self._fast
        if fast is not None:
            best = None
            for shift, nets in fast.get(family, ()):
                index = nets.get((addr >> shift) << shift)
                if index is not None and (best is None or index < best):
                    best = index
            return None if best is None else rules[best]
        i, n = 0, len(rules)
        while i < n:
            rule = rules[i]
            if rule.op == OP_MATCH:
                if rule.family == family and ((addr & rule.mask) == rule.net) == rule.match:
                    return rule
                i += 1
            elif rule.op == OP_IF:
                if rule.family == family and ((addr & rule.mask) == rule.net) == rule.match:
                    i += 1
                elif rule.end is None:
                    return None
                else:
                    i = rule.end + 1
            else:
                i += 1
        return None


def _text_bytes(text: str) -> bytes:
    return text.encode("latin-1")


__all__ = ["CidrTable", "parse_network"]

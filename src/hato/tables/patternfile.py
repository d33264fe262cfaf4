"""The file syntax shared by ``regexp:`` and ``pcre:`` tables.

regexp_table(5) and pcre_table(5) files are read the way Postfix reads
them (``dict_regexp.c``, ``dict_pcre.c``, ``readlline.c``, ``mac_parse.c``):

* logical lines: blank lines and lines whose first non-blank character is
  ``#`` are dropped; a line that starts with whitespace continues the
  previous logical line (its bytes are appended as they are);
* ``/pattern/flags result``: any non-alphanumeric character may be the
  delimiter, a backslash protects the next character, ``!`` before the
  pattern negates it; ``regexp:`` also accepts ``/pat1/!/pat2/ result``;
* ``if /pattern/`` … ``endif`` blocks, nested, with ``!``;
* ``$1``..``$99``, ``${n}`` and ``$(n)`` in results, ``$$`` for a dollar; an
  unmatched or empty group expands to nothing;
* Postfix 3.7's inline form ``regexp:{ {/a/ x}, {/b/ y} }`` (also used by
  ``cidr:``), one rule per brace group.

Runs of plain rules are matched through combined patterns (a tree of
``(p1)|(p2)|...``) so that a lookup costs about log2(n) matches instead of n;
a rule is reported only after its own pattern matched, so the answers are
the rule-by-rule walk's.

A rule Postfix cannot use is skipped with Postfix's warning text, naming the
file and the line, and the rest of the table still works, as in Postfix.
The warnings are logged (logger ``hato.tables``) and kept on the table as
:class:`~hato.tables.base.TableError` objects (``table.warnings``); open the
table with ``strict=True`` to turn the first one into an exception.

Patterns, keys and results are handled as bytes, as Postfix does: keys are
matched byte-wise in the "C" locale, so ``.`` is one byte.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from .base import OpenFlags, Table, TableError, TableRetry

log = logging.getLogger("hato.tables")

#: isspace() in the "C" locale: Postfix's ISSPACE().
SPACE = b" \t\n\v\f\r"
_SPACE = frozenset(SPACE)
_ALNUM = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME = _ALNUM | {ord("_")}

OP_MATCH, OP_IF, OP_ENDIF = 0, 1, 2


# -- text helpers -----------------------------------------------------------------


def printable(data: bytes | str, utf8: bool = True) -> str:
    """Text for a log line as Postfix writes it: unprintable characters
    become '?'; without SMTPUTF8, so does every byte that is not ASCII."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogateescape")
    if utf8:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return "".join(c if c.isprintable() else "?" for c in text)
    return "".join(chr(b) if 32 <= b < 127 else "?" for b in data)


def utf8_mode(flags: OpenFlags) -> bool:
    """True when the opener asked for Postfix's SMTPUTF8 table behaviour
    (``smtputf8_enable = yes``): keys must be UTF-8, folding is Unicode."""
    return flags.utf8


def fold(key: str, utf8: bool) -> str:
    """Fold a key as Postfix's dict layer does for fixed-string tables."""
    if key.isascii():
        return key.lower()
    if utf8:
        return key.casefold()
    raw = key.encode("utf-8", "surrogateescape").lower()  # ASCII letters only
    return raw.decode("utf-8", "surrogateescape")


def key_bytes(table: Table, key: str, utf8: bool) -> bytes | None:
    """The lookup key as bytes; None (not found) for a key Postfix would
    refuse: not UTF-8 in UTF-8 mode. A NUL ends the key, as in C."""
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raw = key.encode("utf-8", "surrogateescape")
        if utf8:
            log.warning('%s: non-UTF-8 key "%s": malformed UTF-8 or invalid codepoint',
                        table.name, printable(raw))
            return None
    nul = raw.find(b"\0")
    return raw if nul < 0 else raw[:nul]


def result_text(table: Table, key: bytes, value: bytes, utf8: bool) -> str:
    """A lookup result as str; a non-UTF-8 result in UTF-8 mode is a table
    configuration error (Postfix: DICT_ERR_CONFIG), reported as TableRetry."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        if utf8:
            reason = (f'key "{printable(key)}": non-UTF-8 value "{printable(value)}": '
                      f'malformed UTF-8 or invalid codepoint')
            log.warning("%s: %s", table.name, reason)
            raise TableRetry(table.name, reason) from None
        return value.decode("utf-8", "surrogateescape")


# -- reading the file --------------------------------------------------------------


# -- Postfix's brace syntax (balpar, extpar, mystrtokq) ------------------------------


def balpar(text: str, parens: str = "{}") -> int:
    """Length of the balanced ``{…}`` group at the start of *text*; 0 if none."""
    if not text or text[0] != parens[0]:
        return 0
    level = 1
    for i in range(1, len(text)):
        ch = text[i]
        if ch == parens[1]:
            level -= 1
            if level == 0:
                return i + 1
        elif ch == parens[0]:
            level += 1
    return 0


def extpar(text: str, parens: str = "{}", strip: bool = True) -> tuple[str, str | None]:
    """Postfix's extpar(): the text inside the braces, and an error or None."""
    err = None
    if not text.startswith(parens[0]):
        err = f"no '{parens[0]}' at start of text in \"{text}\""
        inner = text
    else:
        length = balpar(text, parens)
        if length == 0:
            err = f"missing '{parens[1]}' in \"{text}\""
            inner = text[1:]
        else:
            if length != len(text):
                err = f"syntax error after '{parens[1]}' in \"{text}\""
            inner = text[1:length - 1]
    if strip:
        inner = inner.strip(" \t\n\v\f\r")
    return inner, err


def split_braced(text: str, separators: str = ", \t\r\n", parens: str = "{}") -> list[str]:
    """Postfix's mystrtokq() loop: split on separators, not inside braces."""
    out: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in separators:
            i += 1
        if i >= n:
            return out
        start, level = i, 0
        while i < n:
            ch = text[i]
            if ch == parens[0]:
                level += 1
            elif level > 0 and ch == parens[1]:
                level -= 1
            elif level == 0 and ch in separators:
                break
            i += 1
        out.append(text[start:i])
        i += 1


def inline_rules(kind: str, spec: str) -> bytes:
    """Postfix 3.7's inline form ``type:{ {rule}, {rule} }`` as file text:
    one line per rule (so "line N" in warnings is the N-th rule)."""
    inner, err = extpar(spec)
    if err is not None:
        raise TableError(f"{kind} map: {err}")
    lines = []
    for item in split_braced(inner):
        body, err = extpar(item)
        if err is not None:
            raise TableError(f"{kind} map: {err}")
        lines.append(body)
    return "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")


def read_file(path: str, kind: str = "") -> tuple[bytes, os.stat_result | None]:
    """The bytes of a table file and its stat; TableError "open PATH: why".

    A *path* in braces is Postfix 3.7's inline form (no file, no stat)."""
    if not path:
        raise TableError("open dictionary: expecting \"type:name\" form")
    if path.startswith("{") and kind:
        return inline_rules(kind, path), None
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            return fh.read(), st
    except OSError as err:
        raise TableError(f"open {path}: {err.strerror}", path) from None


def logical_lines(data: bytes, report: Report) -> Iterator[tuple[int, bytes]]:
    """Postfix's readllines(): (number of the first line, logical line).

    Blank lines, whitespace-only lines and comment lines are dropped and do
    not end a logical line; a line that starts with whitespace continues the
    previous one, its bytes appended as they are. Text that continues nothing
    is dropped with Postfix's warning. As in C, a NUL byte ends the line's
    text.
    """
    parts: list[bytes] | None = None
    first = 0
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for lineno, raw in enumerate(lines, 1):
        stripped = raw.lstrip(SPACE)
        if not stripped or stripped[0] == 0x23:  # '#'
            continue
        if raw[0] in _SPACE and parts is not None:
            parts.append(raw)
            continue
        if parts is not None:
            yield from _emit(parts, first, report)
        parts, first = [raw], lineno
    if parts is not None:
        yield from _emit(parts, first, report)


def _emit(parts: list[bytes], first: int, report: Report) -> Iterator[tuple[int, bytes]]:
    text = b"".join(parts)
    if text[0] in _SPACE:
        more = "..." if len(text) > 30 else ""
        report.plain(f'{report.path}: logical line must not start with whitespace: '
                     f'"{printable(text[:30])}{more}"', first)
        return
    nul = text.find(b"\0")
    yield first, (text if nul < 0 else text[:nul])


@dataclass
class Report:
    """Collects the problems found while reading one table file."""

    kind: str  # "regexp", "pcre", "cidr": Postfix's "<kind> map FILE, line N"
    path: str
    utf8: bool = True  # how the log line shows non-ASCII text
    warnings: list[TableError] = field(default_factory=list)

    def warn(self, line: int, message: str) -> None:
        """A problem with one rule, logged as Postfix words it."""
        log.warning("%s", printable(f"{self.kind} map {self.path}, line {line}: {message}",
                                    self.utf8))
        self.warnings.append(TableError(message, self.path, line))

    def plain(self, message: str, line: int = 0) -> None:
        """A warning Postfix prints without the "map FILE, line N" prefix."""
        log.warning("%s", printable(message, self.utf8))
        self.warnings.append(TableError(message, self.path, line or None))


# -- $number substitution (mac_parse) ------------------------------------------------

LITERAL, VARNAME = 0, 1


def mac_parse(value: bytes) -> Iterator[tuple[int, bytes]]:
    """Split *value* into (LITERAL, text) and (VARNAME, name) items, as
    Postfix's mac_parse(): ``$name``, ``${text}``, ``$(text)``, ``$$``.

    A syntax error is reported by raising ValueError with Postfix's warning
    text, after the items before it were produced.
    """
    buf = bytearray()
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c != 0x24:  # '$'
            buf.append(c)
            i += 1
            continue
        if i + 1 < n and value[i + 1] == 0x24:
            buf.append(c)
            i += 2
            continue
        if buf:
            yield LITERAL, bytes(buf)
            buf.clear()
        i += 1
        if i < n and value[i] in b"({":
            open_c = value[i]
            close_c = 0x29 if open_c == 0x28 else 0x7D
            i += 1
            level, j = 1, i
            while level > 0:
                if j >= n:
                    raise ValueError(f'truncated macro reference: "{printable(value)}"')
                if value[j] == open_c:
                    level += 1
                if value[j] == close_c:
                    level -= 1
                j += 1
            buf += value[i:j - 1]
            i = j
        else:
            j = i
            while j < n and value[j] in _NAME:
                j += 1
            buf += value[i:j]
            i = j
        if not buf:
            raise ValueError(f'empty macro name: "{printable(value)}"')
        yield VARNAME, bytes(buf)
        buf.clear()
    if buf:
        yield LITERAL, bytes(buf)


#: A parsed result: literal bytes, or a tuple of items (bytes or group numbers).
Replacement = bytes | tuple[bytes | int, ...]


def prescan(report: Report, line: int, text: bytes) -> tuple[Replacement, int] | None:
    """Check the $number references in a result; (replacement, max group).

    None when the rule must be skipped (the warnings were given)."""
    items: list[bytes | int] = []
    max_sub = 0
    bad = False
    try:
        for kind, item in mac_parse(text):
            if kind == LITERAL:
                items.append(item)
                continue
            if not item.isdigit():
                report.warn(line, f'non-numeric replacement index "{printable(item)}"')
                bad = True
                continue
            num = int(item)
            if num < 1:
                dash = "-" if report.kind == "regexp" else " "  # sic: the two differ
                report.warn(line, f'out{dash}of{dash}range replacement index '
                                  f'"{printable(item)}"')
                bad = True
                continue
            max_sub = max(max_sub, num)
            items.append(num)
    except ValueError as err:
        report.plain(str(err), line)
        bad = True
    if bad:
        report.warn(line, "bad replacement syntax: skipping this rule")
        return None
    if max_sub == 0:
        return b"".join(x for x in items if isinstance(x, bytes)), 0
    return tuple(items), max_sub


def expand(replacement: tuple[bytes | int, ...], key: bytes,
           spans: list[tuple[int, int]]) -> bytes:
    """Substitute matched groups; an unmatched or empty group gives nothing."""
    out = []
    for item in replacement:
        if isinstance(item, bytes):
            out.append(item)
        else:
            start, end = spans[item] if item < len(spans) else (-1, -1)
            if 0 <= start < end:
                out.append(key[start:end])
    return b"".join(out)


# -- the rules -------------------------------------------------------------------------


@dataclass
class Pattern:
    """One ``/regex/flags`` before it is compiled."""

    regex: bytes
    options: int
    match: bool  # False when negated with '!'


@dataclass
class Rule:
    op: int
    lineno: int
    expr: object = None  # the compiled pattern (engine-specific)
    match: bool = True
    second: object = None  # regexp's /pat1/!/pat2/
    second_match: bool = True
    replacement: Replacement = b""
    max_sub: int = 0
    endif: int | None = None  # IF: index of the matching ENDIF
    pattern: Pattern | None = None  # the source, for combined patterns
    groups: int = 0  # capture groups in the pattern


class _Node:
    """A node of a run's tree: *expr* matches a key when (and only when) one
    of the rules lo..hi-1 matches it; None when no combined pattern could be
    made (then the children decide)."""

    __slots__ = ("expr", "finder", "hi", "left", "lo", "right")

    def __init__(self, lo: int, hi: int, expr: object = None,
                 left: _Node | None = None, right: _Node | None = None):
        self.lo, self.hi, self.expr, self.left, self.right = lo, hi, expr, left, right
        self.finder: object = None  # engine-specific: names the first match at once


class ReloadingRuleFile:
    """refresh() for tables whose rules are read from a file into memory
    (cidr, regexp, pcre): re-read the file when it changed; the old rules
    stay when the new file has errors. The table keeps ``_stamp`` (None for
    inline rules), ``_lock`` and ``_load()``."""

    _stamp: tuple[int, int, int, int] | None
    _lock: threading.Lock
    spec: str
    name: str

    def _load(self) -> None:
        raise NotImplementedError

    def refresh(self) -> bool:
        if self._stamp is None:
            return False
        try:
            st = os.stat(self.spec)
        except OSError:
            return False
        if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == self._stamp:
            return False
        try:
            with self._lock:
                self._load()
        except TableError as err:
            log.warning("%s: keeping the previous rules: %s", self.name, err)
            return False
        return True


class PatternFileTable(ReloadingRuleFile, Table):
    """Base of ``regexp:`` and ``pcre:``: parses the file, runs the rules.

    Subclasses provide the engine: :meth:`parse_option`, :meth:`compile`,
    :meth:`execute`, :meth:`free`, and optionally :meth:`combinable` and
    :meth:`combine` for the combined-pattern speed-up; class attributes say
    how the dialects differ (``/pat1/!/pat2/``, a trailing backslash).
    """

    pattern_table = True
    #: the options a pattern has before its flags are applied
    default_options = 0
    #: regexp: flags end at '!', and "/pat1/!/pat2/" is accepted
    second_pattern = False
    #: the word Postfix uses for an unterminated pattern
    no_delimiter_action = "skipping"
    #: regexp: a backslash at the very end of the line closes the pattern
    trailing_backslash_closes = False
    #: the shortest run of plain rules that gets a tree of combined patterns
    min_run = 4

    def __init__(self, spec: str, flags: OpenFlags = OpenFlags(), *, strict: bool = False):
        super().__init__(spec, flags)
        self.utf8 = utf8_mode(flags)
        self.strict = strict
        self._lock = threading.Lock()
        self.rules: list[Rule] = []
        self.runs: dict[int, _Node] = {}
        self._combined: list[object] = []
        self.warnings: list[TableError] = []
        self._stamp: tuple[int, int, int, int] | None = None
        self._load()

    # -- engine hooks -------------------------------------------------------------

    def parse_option(self, options: int, ch: int, report: Report, line: int) -> int | None:
        """Apply one flag letter; None for an unknown flag (rule skipped)."""
        raise NotImplementedError

    def compile(self, pattern: Pattern, want_groups: bool) -> tuple[object, int]:
        """Compile; (compiled, number of groups). ValueError(message) on error."""
        raise NotImplementedError

    def execute(self, expr: object, key: bytes, groups: int) -> list[tuple[int, int]] | bool | None:
        """Match *key*: spans of groups 0..groups when groups > 0, else True;
        False when there is no match; None when the engine failed (warned)."""
        raise NotImplementedError

    def free(self, expr: object) -> None:
        """Release a compiled pattern."""

    def combinable(self, pattern: Pattern) -> bool:
        """Can this pattern be an alternative of a combined pattern, with
        exactly its own meaning? (No back-references, no syntax that could
        leak out of a group.)"""
        return False

    def combine(self, rules: list[Rule]) -> object | None:
        """One compiled pattern that matches when any of *rules* matches
        (all have the same options); None when that cannot be made."""
        return None

    # -- loading ------------------------------------------------------------------

    def _load(self) -> None:
        data, st = read_file(self.spec, self.type_name)
        report = Report(self.type_name, self.spec, self.utf8)
        rules = self._parse(data, report)
        if self.strict and report.warnings:
            for rule in rules:
                self._free_rule(rule)
            raise report.warnings[0]
        old, old_combined = self.rules, self._combined
        self._combined = []
        self.runs = self._build_runs(rules)
        self.rules = rules
        self.warnings = report.warnings
        self._stamp = None if st is None else (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        for rule in old:
            self._free_rule(rule)
        for expr in old_combined:
            self.free(expr)

    def _plain(self, rule: Rule) -> bool:
        return (rule.op == OP_MATCH and rule.match and rule.second is None
                and rule.pattern is not None and self.combinable(rule.pattern))

    def _build_runs(self, rules: list[Rule]) -> dict[int, _Node]:
        """Trees of combined patterns over runs of consecutive plain rules
        (positive, one pattern, same options): a lookup then needs about
        log2(n) matches to find the first matching rule of a run of n, or
        one to learn that none matches. The answers are the same as when
        every rule is tried in turn."""
        runs: dict[int, _Node] = {}
        i, n = 0, len(rules)
        while i < n:
            if not self._plain(rules[i]):
                i += 1
                continue
            options = rules[i].pattern.options  # type: ignore[union-attr]
            j = i + 1
            while (j < n and self._plain(rules[j])
                   and rules[j].pattern.options == options):  # type: ignore[union-attr]
                j += 1
            if j - i >= self.min_run:
                runs[i] = self._tree(rules, i, j)
            i = j
        return runs

    def _tree(self, rules: list[Rule], lo: int, hi: int) -> _Node:
        if hi - lo == 1:
            return _Node(lo, hi)
        mid = (lo + hi) // 2
        expr = self.combine(rules[lo:hi])
        if expr is not None:
            self._combined.append(expr)
        return _Node(lo, hi, expr, self._tree(rules, lo, mid), self._tree(rules, mid, hi))

    def _verify(self, index: int, key: bytes) -> bool:
        """Match rule *index* itself; keep its groups for the result."""
        rule = self.rules[index]
        got = self.execute(rule.expr, key, rule.max_sub)
        self._spans = got if isinstance(got, list) else None
        return bool(got)

    _spans: list[tuple[int, int]] | None = None

    def _first_in_run(self, node: _Node, key: bytes, known: bool = False) -> int | None:
        """Index of the first rule under *node* that matches *key*, or None.

        Only a combined pattern's "no match" prunes; a rule is reported only
        after its own pattern matched. *known*: the node is known to match
        (its parent matched and its left sibling did not), so its combined
        pattern need not be asked."""
        if node.left is None:
            return node.lo if self._verify(node.lo, key) else None
        if node.expr is None:
            known = False
        elif not known:
            got = self.execute(node.expr, key, 0)
            if got is False:
                return None
            known = got is True
        found = self._first_in_run(node.left, key)
        if found is not None:
            return found
        return self._first_in_run(node.right, key, known)  # type: ignore[arg-type]

    def _free_rule(self, rule: Rule) -> None:
        if rule.expr is not None:
            self.free(rule.expr)
        if rule.second is not None:
            self.free(rule.second)

    def close(self) -> None:
        with self._lock:
            for rule in self.rules:
                self._free_rule(rule)
            for expr in self._combined:
                self.free(expr)
            self.rules, self._combined, self.runs = [], [], {}

    def __del__(self) -> None:
        try:
            for rule in getattr(self, "rules", []):
                self._free_rule(rule)
            for expr in getattr(self, "_combined", []):
                self.free(expr)
        except Exception:  # interpreter shutdown: the library may be gone
            pass

    def _parse(self, data: bytes, report: Report) -> list[Rule]:
        rules: list[Rule] = []
        stack: list[int] = []
        for lineno, line in logical_lines(data, report):
            line = line.rstrip(SPACE)
            if not line:
                continue
            rule = self._parse_line(report, lineno, line, len(stack))
            if rule is None:
                continue
            if rule.op == OP_IF:
                stack.append(len(rules))
            elif rule.op == OP_ENDIF:
                rules[stack.pop()].endif = len(rules)
            rules.append(rule)
        while stack:
            report.warn(rules[stack.pop()].lineno, "IF has no matching ENDIF")
        return rules

    def _get_pattern(self, report: Report, lineno: int, line: bytes,
                     pos: int) -> tuple[Pattern, int] | None:
        n = len(line)
        match = True
        while pos < n:
            c = line[pos]
            if c == 0x21:  # '!'
                match = not match
            elif c not in _SPACE:
                break
            pos += 1
        if pos >= n:
            report.warn(lineno, "no regexp: skipping this rule")
            return None
        delim = line[pos]
        pos += 1
        start = pos
        while pos < n:
            c = line[pos]
            if c == 0x5C:  # backslash
                if pos + 1 >= n:
                    if self.trailing_backslash_closes:
                        break
                    pos = n
                    break
                pos += 1
            elif c == delim:
                break
            pos += 1
        if pos >= n:
            report.warn(lineno, f'no closing regexp delimiter "{printable(bytes([delim]))}": '
                                f'{self.no_delimiter_action} this rule')
            return None
        regex = line[start:pos]
        pos += 1
        options = self.default_options
        while pos < n and line[pos] not in _SPACE:
            if self.second_pattern and line[pos] == 0x21:
                break
            new = self.parse_option(options, line[pos], report, lineno)
            if new is None:
                return None
            options = new
            pos += 1
        return Pattern(regex, options, match), pos

    def _compile(self, report: Report, lineno: int, pattern: Pattern,
                 want_groups: bool) -> tuple[object, int] | None:
        try:
            return self.compile(pattern, want_groups)
        except ValueError as err:
            report.warn(lineno, str(err))
            return None

    def _parse_line(self, report: Report, lineno: int, line: bytes, nesting: int) -> Rule | None:
        if line[0] not in _ALNUM:
            return self._parse_match(report, lineno, line)
        word = line[:5].lower()
        if word[:2] == b"if" and (len(line) == 2 or line[2] not in _ALNUM):
            pos = 2
            while pos < len(line) and line[pos] in _SPACE:
                pos += 1
            got = self._get_pattern(report, lineno, line, pos)
            if got is None:
                return None
            pattern, pos = got
            extra = line[pos:].lstrip(SPACE)
            if extra:
                report.warn(lineno, f'ignoring extra text after IF statement: "{printable(extra)}"')
                report.warn(lineno, "do not prepend whitespace to statements between IF and ENDIF")
            compiled = self._compile(report, lineno, pattern, False)
            if compiled is None:
                return None
            return Rule(OP_IF, lineno, compiled[0], pattern.match)
        if word == b"endif" and (len(line) == 5 or line[5] not in _ALNUM):
            if nesting == 0:
                report.warn(lineno, "ignoring ENDIF without matching IF")
                return None
            if line[5:].lstrip(SPACE):
                report.warn(lineno, "ignoring extra text after ENDIF")
            return Rule(OP_ENDIF, lineno)
        report.warn(lineno, "ignoring unrecognized request")
        return None

    def _parse_match(self, report: Report, lineno: int, line: bytes) -> Rule | None:
        got = self._get_pattern(report, lineno, line, 0)
        if got is None:
            return None
        first, pos = got
        second: Pattern | None = None
        if self.second_pattern and pos < len(line) and line[pos] == 0x21:
            got = self._get_pattern(report, lineno, line, pos)
            if got is None:
                return None
            second, pos = got
        text = line[pos:].lstrip(SPACE)
        if not text:
            report.warn(lineno, "no replacement text: using empty string")
        scanned = prescan(report, lineno, text)
        if scanned is None:
            return None
        replacement, max_sub = scanned
        if max_sub > 0 and not first.match:
            report.warn(lineno, "$number found in negative match replacement text: "
                                "skipping this rule")
            return None
        compiled = self._compile(report, lineno, first, max_sub > 0)
        if compiled is None:
            return None
        expr, groups = compiled
        if max_sub > groups:
            self.free(expr)
            report.warn(lineno, f'out of range replacement index "{max_sub}": '
                                f'skipping this rule')
            return None
        rule = Rule(OP_MATCH, lineno, expr, first.match, replacement=replacement,
                    max_sub=max_sub, pattern=first, groups=groups)
        if second is not None:
            compiled = self._compile(report, lineno, second, False)
            if compiled is None:
                self.free(expr)
                return None
            rule.second, rule.second_match = compiled[0], second.match
        return rule

    # -- lookups ------------------------------------------------------------------

    def get(self, key: str) -> str | None:
        raw = key_bytes(self, key, self.utf8)
        if raw is None:
            return None
        with self._lock:
            value = self._run(raw)
        if value is None:
            return None
        return result_text(self, raw, value, self.utf8)

    def _run(self, key: bytes) -> bytes | None:
        rules = self.rules
        runs = self.runs
        execute = self.execute
        i, n = 0, len(rules)
        while i < n:
            rule = rules[i]
            op = rule.op
            if op == OP_MATCH:
                run = runs.get(i) if runs else None
                if run is not None:
                    j = self._first_in_run(run, key)
                    if j is None:
                        i = run.hi
                        continue
                    rule = rules[j]
                    if rule.max_sub == 0:
                        return rule.replacement  # type: ignore[return-value]
                    spans = self._spans  # from _verify() of rule j
                    if spans is not None:
                        return expand(rule.replacement, key, spans)  # type: ignore[arg-type]
                    i = j  # pragma: no cover - cannot happen: ask rule j again below
                rule = rules[i]
                i += 1
                got = execute(rule.expr, key, rule.max_sub)
                if got is None or (not got) == rule.match:
                    continue
                if rule.second is not None:
                    got2 = execute(rule.second, key, 0)
                    if got2 is None or (not got2) == rule.second_match:
                        continue
                if rule.max_sub == 0:
                    return rule.replacement  # type: ignore[return-value]
                return expand(rule.replacement, key, got)  # type: ignore[arg-type]
            if op == OP_IF:
                got = execute(rule.expr, key, 0)
                if got is not None and bool(got) == rule.match:
                    i += 1
                    continue
                if rule.endif is None:
                    return None
                i = rule.endif + 1
                continue
            i += 1  # ENDIF
        return None

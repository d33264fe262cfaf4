"""``regexp:`` tables: regexp_table(5) with POSIX regular expressions.

Postfix compiles regexp tables with the C library's ``regcomp()`` and
matches with ``regexec()``; so does this module (through ctypes), so that
matching is exactly Postfix's: POSIX extended syntax, leftmost-longest
matching (``^(a|ab)`` against ``abc`` sets ``$1`` to ``ab``), POSIX classes
such as ``[[:alpha:]]``, and byte-wise matching in the "C" locale.

Flags after the closing delimiter toggle regcomp() options, starting from
``REG_EXTENDED | REG_ICASE``: ``i`` (case), ``m`` (``REG_NEWLINE``), ``x``
(extended syntax: ``/re/x`` is a basic regular expression). The file syntax
(``if``/``endif``, ``!``, ``$1`` substitution, ``/pat1/!/pat2/``) is in
:mod:`hato.tables.patternfile`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import re

from .base import TableError, TableRetry
from .patternfile import Pattern, PatternFileTable, Report, Rule, log, printable
from .regcost import PROBE_SECONDS, TOO_BIG, Cost, bracket_end, cost_of, simple
from .regmatch import MatchHelper

REG_EXTENDED = 1
REG_ICASE = 2
REG_NEWLINE = 4
REG_NOSUB = 8
REG_NOMATCH = 1

_REGEX_T_SIZE = 256  # glibc's regex_t is 64 bytes; leave room
_LC_ALL_MASK = 8127  # glibc: every LC_*_MASK bit except LC_ALL's


def _load_libc() -> ctypes.CDLL:
    name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(name)
    libc.regcomp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    libc.regcomp.restype = ctypes.c_int
    libc.regexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                             ctypes.c_void_p, ctypes.c_int]
    libc.regexec.restype = ctypes.c_int
    libc.regerror.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    libc.regerror.restype = ctypes.c_size_t
    libc.regfree.argtypes = [ctypes.c_void_p]
    libc.regfree.restype = None
    libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
    libc.newlocale.restype = ctypes.c_void_p
    libc.uselocale.argtypes = [ctypes.c_void_p]
    libc.uselocale.restype = ctypes.c_void_p
    return libc


try:
    _libc = _load_libc()
except (OSError, AttributeError) as _err:  # pragma: no cover - not glibc
    raise ImportError(f"the C library's POSIX regex functions are not available: {_err}") \
        from None

_regcomp = _libc.regcomp
_regexec = _libc.regexec
_regerror = _libc.regerror
_regfree = _libc.regfree
_uselocale = _libc.uselocale
#: Postfix runs in the "C" locale: regcomp()/regexec() must too, whatever
#: LC_CTYPE Python set at start-up (C.UTF-8 would make '.' match a character).
_C_LOCALE = _libc.newlocale(_LC_ALL_MASK, b"C", None)
if not _C_LOCALE:  # pragma: no cover
    raise ImportError("newlocale(C) failed")


class _Regex:
    """One compiled regex_t."""

    __slots__ = ("addr", "buf", "source")

    def __init__(self, buf: ctypes.Array):
        self.buf = buf
        self.addr = ctypes.addressof(buf)
        #: (regex, options) of a pattern with back-references, which is
        #: matched in the table's helper process (hato.tables.regmatch)
        self.source: tuple[bytes, int] | None = None


def _compile_raw(regex: bytes, options: int) -> tuple[_Regex | None, int, str]:
    buf = ctypes.create_string_buffer(_REGEX_T_SIZE)
    prev = _uselocale(_C_LOCALE)
    try:
        err = _regcomp(ctypes.addressof(buf), regex, options)
    finally:
        _uselocale(prev)
    if err != 0:
        msg = ctypes.create_string_buffer(256)
        _regerror(err, ctypes.addressof(buf), msg, 256)
        return None, 0, msg.value.decode("utf-8", "replace")
    return _Regex(buf), 0, ""


def _find_nsub_offset() -> int:
    """Where regex_t keeps re_nsub (size_t): found by compiling probes."""
    probes = [(b"(a)", 1), (b"(a)(b)(c)", 3), (b"((a)(b))(c)(d)(e)(f)", 7)]
    compiled = []
    for text, _count in probes:
        rx = _compile_raw(text, REG_EXTENDED)[0]
        if rx is None:  # pragma: no cover
            raise ImportError("regcomp() does not work")
        compiled.append(rx)
    size = ctypes.sizeof(ctypes.c_size_t)
    try:
        for off in range(0, _REGEX_T_SIZE - size + 1, size):
            if all(int.from_bytes(rx.buf.raw[off:off + size], "little") == count
                   for rx, (_t, count) in zip(compiled, probes, strict=True)):
                return off
    finally:
        for rx in compiled:
            _regfree(rx.addr)
    raise ImportError("cannot find re_nsub in regex_t")  # pragma: no cover


_NSUB_OFFSET = _find_nsub_offset()
_SIZE_T = ctypes.sizeof(ctypes.c_size_t)


def regex_compile(regex: bytes, options: int) -> tuple[_Regex, int]:
    """regcomp() in the "C" locale: (compiled, number of groups);
    ValueError with regerror()'s text."""
    rx, _unused, err = _compile_raw(regex, options)
    if rx is None:
        raise ValueError(err)
    nsub = int.from_bytes(rx.buf.raw[_NSUB_OFFSET:_NSUB_OFFSET + _SIZE_T], "little")
    return rx, nsub


_BACKREF = re.compile(rb"\\[0-9]")

#: the most the patterns of one table may take to compile, combined
#: patterns included (see :mod:`hato.tables.regcost`): memory, and CPU time
#: (probes and compilations; a refused pattern counts its probe's limit)
TABLE_LIMIT = 256 << 20
TABLE_SECONDS = 2.0


def balanced_ere(regex: bytes) -> bool:
    """True when the parentheses of a POSIX ERE balance (outside bracket
    expressions and escapes), so that ``(regex)`` groups exactly *regex*."""
    depth, i, n = 0, 0, len(regex)
    while i < n:
        c = regex[i]
        if c == 0x5C:  # backslash
            i += 2
            continue
        if c == 0x5B:  # '[': a bracket expression
            i = bracket_end(regex, i)
            if i < 0:
                return False
            continue
        if c == 0x28:
            depth += 1
        elif c == 0x29:
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


class RegexpTable(PatternFileTable):
    """``regexp:/path``: first matching rule wins, as in Postfix."""

    type_name = "regexp"
    default_options = REG_EXTENDED | REG_ICASE
    second_pattern = True
    trailing_backslash_closes = True
    no_delimiter_action = "skipping"

    _pmatch: ctypes.Array | None = None
    _pmatch_len = 0
    #: what compiling this table's patterns took (estimated or measured)
    _spent = 0
    _seconds = 0.0
    #: matches back-reference patterns under a time limit (started when needed)
    _helper: MatchHelper | None = None

    def _load(self) -> None:
        self._spent, self._seconds = 0, 0.0
        self._stop_helper()
        super()._load()

    def _stop_helper(self) -> None:
        helper, self._helper = self._helper, None
        if helper is not None:
            helper.stop()

    def close(self) -> None:
        super().close()
        self._stop_helper()

    def __del__(self) -> None:
        super().__del__()
        with contextlib.suppress(Exception):  # interpreter shutdown
            self._stop_helper()

    @staticmethod
    def _cost(regex: bytes, options: int) -> Cost | None:
        return cost_of(regex, options & ~REG_NOSUB, bool(options & REG_EXTENDED),
                       _libc._name)

    def _too_big(self) -> str:
        return (f"table too big: its patterns would take more than {TABLE_LIMIT >> 20} MB "
                f"or {TABLE_SECONDS:g} CPU seconds to compile")

    def _afford(self, regex: bytes, options: int) -> None:
        """Charge compiling *regex* to this table; ValueError with the
        warning when the pattern or the table is too big."""
        if self._seconds >= TABLE_SECONDS and not simple(regex, bool(options & REG_EXTENDED)):
            raise ValueError(self._too_big())  # no time left even to probe
        cost = self._cost(regex, options)
        if cost is None:
            self._seconds += PROBE_SECONDS
            raise ValueError(TOO_BIG)
        # the probe's time, then this process's own compilation
        if (self._spent + cost.bytes > TABLE_LIMIT
                or self._seconds + 2 * cost.seconds > TABLE_SECONDS):
            self._seconds += cost.seconds
            raise ValueError(self._too_big())
        self._spent += cost.bytes
        self._seconds += 2 * cost.seconds

    def parse_option(self, options: int, ch: int, report: Report, line: int) -> int | None:
        if ch == 0x69:  # i
            return options ^ REG_ICASE
        if ch == 0x6D:  # m
            return options ^ REG_NEWLINE
        if ch == 0x78:  # x
            return options ^ REG_EXTENDED
        report.warn(line, f'unknown regexp option "{printable(bytes([ch]))}": '
                          f'skipping this rule')
        return None

    def compile(self, pattern: Pattern, want_groups: bool) -> tuple[object, int]:
        options = pattern.options if want_groups else pattern.options | REG_NOSUB
        self._afford(pattern.regex, options)
        rx, nsub = regex_compile(pattern.regex, options)
        if _BACKREF.search(pattern.regex):
            rx.source = (pattern.regex, options)
        return rx, nsub

    def combinable(self, pattern: Pattern) -> bool:
        regex = pattern.regex
        return bool(pattern.options & REG_EXTENDED and regex and regex[0] not in b"*+?{|"
                    and not _BACKREF.search(regex) and balanced_ere(regex))

    def combine(self, rules: list[Rule]) -> object | None:
        text = b"|".join(b"(" + r.pattern.regex + b")" for r in rules)  # type: ignore[union-attr]
        options = rules[0].pattern.options | REG_NOSUB  # type: ignore[union-attr]
        # a combined pattern costs about what its parts cost together
        size, seconds = 0, 0.0
        for rule in rules:
            part = self._cost(rule.pattern.regex, options)  # type: ignore[union-attr]
            if part is None:
                return None
            size += part.bytes
            seconds += part.seconds
        if self._spent + size > TABLE_LIMIT or self._seconds + seconds > TABLE_SECONDS:
            return None
        try:
            rx, nsub = regex_compile(text, options)
        except ValueError:
            return None
        if nsub != len(rules) + sum(r.groups for r in rules):
            self.free(rx)
            return None
        self._spent += size
        self._seconds += seconds
        return rx

    def free(self, expr: object) -> None:
        if isinstance(expr, _Regex) and expr.addr:
            _regfree(expr.addr)
            expr.addr = 0

    def execute(self, expr: object, key: bytes,
                groups: int) -> list[tuple[int, int]] | bool | None:
        assert isinstance(expr, _Regex)
        if expr.source is not None:
            return self._execute_elsewhere(expr.source, key, groups)
        if groups == 0:
            err = _regexec(expr.addr, key, 0, None, 0)
            if err == 0:
                return True
        else:
            count = groups + 1
            if count > self._pmatch_len:
                self._pmatch = (ctypes.c_int * (2 * count))()
                self._pmatch_len = count
            pm = self._pmatch
            assert pm is not None
            err = _regexec(expr.addr, key, count, pm, 0)
            if err == 0:
                return [(pm[2 * i], pm[2 * i + 1]) for i in range(count)]
        if err == REG_NOMATCH:
            return False
        msg = ctypes.create_string_buffer(256)
        _regerror(err, expr.addr, msg, 256)
        log.warning("regexp map %s: %s", self.spec, msg.value.decode("utf-8", "replace"))
        return None

    def _execute_elsewhere(self, source: tuple[bytes, int], key: bytes,
                           groups: int) -> list[tuple[int, int]] | bool | None:
        """:meth:`execute` for a back-reference pattern, in the helper
        process; TableRetry when the match takes too long."""
        if self._helper is None:
            self._helper = MatchHelper(_libc._name, self.name)
        count = groups + 1 if groups else 0
        try:
            err, offsets = self._helper.match(source[0], source[1], key, count)
        except TableRetry as exc:
            log.warning("regexp map %s: %s", self.spec, exc.reason)
            raise
        if err == 0:
            if not groups:
                return True
            return [(offsets[2 * i], offsets[2 * i + 1]) for i in range(count)]
        if err == REG_NOMATCH:
            return False
        log.warning("regexp map %s: regexec() failed with error %d", self.spec, err)
        return None

    def _run(self, key: bytes) -> bytes | None:
        prev = _uselocale(_C_LOCALE)
        try:
            return super()._run(key)
        finally:
            _uselocale(prev)


__all__ = ["RegexpTable", "TableError", "regex_compile"]

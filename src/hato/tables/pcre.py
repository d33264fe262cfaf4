"""``pcre:`` tables: pcre_table(5) with the PCRE2 library.

Postfix 3.7 matches pcre tables with libpcre2-8; this module calls the same
library (Debian's ``libpcre2-8-0``) through ctypes, with the options Postfix
uses, so that matching is exactly Postfix's: ``\\Q…\\E``, ``[[:alpha:]]``,
``(?i)``, lookarounds, and byte-wise matching (no UTF mode).

Flags after the closing delimiter toggle compile options, starting from
``PCRE2_CASELESS | PCRE2_DOTALL``: ``i`` (case), ``m`` (multiline), ``s``
(dot matches newline), ``x`` (extended), ``A`` (anchored), ``E`` (dollar
matches only at the end), ``U`` (ungreedy); ``X`` is accepted with Postfix's
"obsolete option" warning. The file syntax (``if``/``endif``, ``!``, ``$1``
substitution) is in :mod:`hato.tables.patternfile`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re

from .patternfile import Pattern, PatternFileTable, Report, Rule, _Node, log, printable

PCRE2_CASELESS = 0x00000008
PCRE2_DOLLAR_ENDONLY = 0x00000010
PCRE2_DOTALL = 0x00000020
PCRE2_EXTENDED = 0x00000080
PCRE2_MULTILINE = 0x00000400
PCRE2_UNGREEDY = 0x00040000
PCRE2_ANCHORED = 0x80000000
PCRE2_ERROR_NOMATCH = -1
PCRE2_INFO_CAPTURECOUNT = 4

_FLAGS = {
    ord("i"): PCRE2_CASELESS,
    ord("m"): PCRE2_MULTILINE,
    ord("s"): PCRE2_DOTALL,
    ord("x"): PCRE2_EXTENDED,
    ord("A"): PCRE2_ANCHORED,
    ord("E"): PCRE2_DOLLAR_ENDONLY,
    ord("U"): PCRE2_UNGREEDY,
}


def _load() -> ctypes.CDLL:
    names = ["libpcre2-8.so.0", ctypes.util.find_library("pcre2-8")]
    last: Exception | None = None
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as err:
            last = err
    else:
        raise ImportError(f"libpcre2-8 is not installed (Debian package libpcre2-8-0): {last}")
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.pcre2_compile_8.argtypes = [ctypes.c_char_p, sz, ctypes.c_uint32,
                                    ctypes.POINTER(ctypes.c_int), ctypes.POINTER(sz), vp]
    lib.pcre2_compile_8.restype = vp
    lib.pcre2_code_free_8.argtypes = [vp]
    lib.pcre2_code_free_8.restype = None
    lib.pcre2_get_error_message_8.argtypes = [ctypes.c_int, ctypes.c_char_p, sz]
    lib.pcre2_get_error_message_8.restype = ctypes.c_int
    lib.pcre2_pattern_info_8.argtypes = [vp, ctypes.c_uint32, vp]
    lib.pcre2_pattern_info_8.restype = ctypes.c_int
    lib.pcre2_match_data_create_8.argtypes = [ctypes.c_uint32, vp]
    lib.pcre2_match_data_create_8.restype = vp
    lib.pcre2_match_data_free_8.argtypes = [vp]
    lib.pcre2_match_data_free_8.restype = None
    lib.pcre2_get_ovector_pointer_8.argtypes = [vp]
    lib.pcre2_get_ovector_pointer_8.restype = ctypes.POINTER(sz)
    lib.pcre2_match_8.argtypes = [vp, ctypes.c_char_p, sz, sz, ctypes.c_uint32, vp, vp]
    lib.pcre2_match_8.restype = ctypes.c_int
    lib.pcre2_get_mark_8.argtypes = [vp]
    lib.pcre2_get_mark_8.restype = ctypes.c_char_p
    try:
        lib.pcre2_jit_compile_8.argtypes = [vp, ctypes.c_uint32]
        lib.pcre2_jit_compile_8.restype = ctypes.c_int
    except AttributeError:  # pragma: no cover - a build without JIT
        pass
    return lib


_lib = _load()
_match = _lib.pcre2_match_8
_jit = getattr(_lib, "pcre2_jit_compile_8", None)
PCRE2_JIT_COMPLETE = 1
_UNSET = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1


def error_message(code: int) -> str:
    buf = ctypes.create_string_buffer(256)
    if _lib.pcre2_get_error_message_8(code, buf, 256) > 0:
        return buf.value.decode("utf-8", "replace")
    return f"unexpected pcre2 error code {code}"


def pcre_compile(regex: bytes, options: int) -> tuple[int, int]:
    """pcre2_compile(): (code pointer, number of groups); ValueError with
    Postfix's text on error."""
    err = ctypes.c_int(0)
    offset = ctypes.c_size_t(0)
    code = _lib.pcre2_compile_8(regex, len(regex), options, ctypes.byref(err),
                                ctypes.byref(offset), None)
    if not code:
        raise ValueError(f"error in regex at offset {offset.value}: {error_message(err.value)}")
    count = ctypes.c_uint32(0)
    if _lib.pcre2_pattern_info_8(code, PCRE2_INFO_CAPTURECOUNT, ctypes.byref(count)) != 0:
        _lib.pcre2_code_free_8(code)  # pragma: no cover
        raise ValueError("pcre2_pattern_info failed")  # pragma: no cover
    return code, count.value


class _MatchData:
    """A pcre2_match_data block with room for *pairs* offsets."""

    def __init__(self, pairs: int):
        self.pairs = pairs
        self.ptr = _lib.pcre2_match_data_create_8(pairs, None)
        if not self.ptr:  # pragma: no cover
            raise MemoryError("pcre2_match_data_create")
        self.ovector = _lib.pcre2_get_ovector_pointer_8(self.ptr)

    def __del__(self) -> None:
        try:
            if self.ptr:
                _lib.pcre2_match_data_free_8(self.ptr)
                self.ptr = None
        except Exception:  # pragma: no cover - interpreter shutdown
            pass


#: Syntax that refers to groups by number or name, changes the matching
#: process, or sets options for the whole pattern: such a pattern is matched
#: on its own, never as part of a combined pattern.
_NOT_COMBINABLE = re.compile(
    rb"\(\*|\(\?(?:<[A-Za-z_]|P|'|&|R|\(|C|[0-9]|[+-][0-9])|\\[gk0-9]")


class PcreTable(PatternFileTable):
    """``pcre:/path``: first matching rule wins, as in Postfix."""

    type_name = "pcre"
    default_options = PCRE2_CASELESS | PCRE2_DOTALL
    second_pattern = False
    trailing_backslash_closes = False
    no_delimiter_action = "ignoring"

    _md: _MatchData | None = None

    def parse_option(self, options: int, ch: int, report: Report, line: int) -> int | None:
        bit = _FLAGS.get(ch)
        if bit is not None:
            return options ^ bit
        if ch == 0x58:  # X: PCRE_EXTRA, gone in PCRE2
            report.warn(line, 'ignoring obsolete regexp option "X"')
            return options
        report.warn(line, f'unknown regexp option "{printable(bytes([ch]))}": '
                          f'skipping this rule')
        return None

    def compile(self, pattern: Pattern, want_groups: bool) -> tuple[object, int]:
        code, groups = pcre_compile(pattern.regex, pattern.options)
        if self._md is None or self._md.pairs < groups + 1:
            self._md = _MatchData(max(groups + 1, 10))
        return code, groups

    def combinable(self, pattern: Pattern) -> bool:
        regex = pattern.regex
        if _NOT_COMBINABLE.search(regex):
            return False
        # a '#' comment (extended mode) would swallow the closing parenthesis
        return not (b"#" in regex and (pattern.options & PCRE2_EXTENDED or b"(?" in regex))

    def combine(self, rules: list[Rule]) -> object | None:
        # \E ends a \Q...\E quote left open (and is ignored otherwise)
        text = b"|".join(b"(?:" + r.pattern.regex + b"\\E)" for r in rules)  # type: ignore[union-attr]
        try:
            code, groups = pcre_compile(text, rules[0].pattern.options)  # type: ignore[union-attr]
        except ValueError:
            return None
        if groups != sum(r.groups for r in rules):
            self.free(code)
            return None
        # Only combined patterns are JIT-compiled: they are a pre-filter, so
        # a JIT resource limit just means "look closer"; each rule itself is
        # matched by the interpreter, as in Postfix.
        if _jit is not None:
            _jit(code, PCRE2_JIT_COMPLETE)
        return code

    def _build_runs(self, rules: list[Rule]) -> dict[int, _Node]:
        runs = super()._build_runs(rules)
        for start, node in runs.items():
            node.finder = self._finder(rules[start:node.hi], start)
            if node.finder is not None:
                self._combined.append(node.finder)
        return runs

    def _finder(self, rules: list[Rule], start: int) -> int | None:
        """A pattern whose k-th alternative matches where rule start+k
        matches, tried in order from the start of the key, each marked with
        its rule's index: one match names the first rule that matches."""
        options = rules[0].pattern.options  # type: ignore[union-attr]
        anywhere = b"" if options & PCRE2_ANCHORED else b"(?s:.*?)"
        text = b"|".join(b"(*MARK:%d)%s(?:%s\\E)" % (start + k, anywhere, r.pattern.regex)  # type: ignore[union-attr]
                         for k, r in enumerate(rules))
        try:
            code, groups = pcre_compile(text, options | PCRE2_ANCHORED)
        except ValueError:
            return None
        if groups != sum(r.groups for r in rules):
            self.free(code)
            return None
        if _jit is not None:
            _jit(code, PCRE2_JIT_COMPLETE)
        return code

    def _first_in_run(self, node: _Node, key: bytes, known: bool = False) -> int | None:
        finder = node.finder
        if finder is None:
            return super()._first_in_run(node, key, known)
        if node.expr is not None and self.execute(node.expr, key, 0) is False:
            return None  # a quick "none of them" first
        md = self._md
        assert md is not None
        rc = _match(finder, key, len(key), 0, 0, md.ptr, None)
        if rc >= 0:
            mark = _lib.pcre2_get_mark_8(md.ptr)
            index = int(mark) if mark and mark.isdigit() else -1
            if node.lo <= index < node.hi and self._verify(index, key):
                return index
        elif rc == PCRE2_ERROR_NOMATCH and node.expr is None:
            return None
        return super()._first_in_run(node, key, known)  # the finder could not tell

    def free(self, expr: object) -> None:
        if isinstance(expr, int) and expr:
            _lib.pcre2_code_free_8(expr)

    def execute(self, expr: object, key: bytes,
                groups: int) -> list[tuple[int, int]] | bool | None:
        md = self._md
        assert md is not None
        rc = _match(expr, key, len(key), 0, 0, md.ptr, None)
        if rc > 0 or rc == 0:
            if groups == 0:
                return True
            ov = md.ovector
            spans = []
            for i in range(groups + 1):
                start, end = ov[2 * i], ov[2 * i + 1]
                spans.append((-1, -1) if start == _UNSET or i >= rc else (start, end))
            return spans
        if rc == PCRE2_ERROR_NOMATCH:
            return False
        log.warning("pcre map %s: %s", self.spec, error_message(rc))
        return None


__all__ = ["PcreTable", "pcre_compile"]

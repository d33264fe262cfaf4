"""Postfix's ``$name`` expansion language, as main.cf and master.cf use it.

Supported forms (postconf(5)): ``$name``, ``${name}``, ``$(name)``,
``${name?value}``, ``${name:value}``, ``${name?{value}}``, ``${name:{value}}``,
``${name?{value1}:{value2}}``, the relational forms
``${{a} OP {b}?{x}:{y}}`` with OP one of ``== != < <= >= >`` (numeric when
both sides are decimal numbers) and the compatibility-level forms ``<level``,
``<=level``, ``>=level``, ``>level``, and ``$$`` for a literal ``$``.

The module is pure: values come from a ``lookup(name) -> str | None``
callable (``None`` means "undefined"), and nothing here reads files.
Parameters that refer back to themselves raise :class:`ExpansionLoop`
naming the whole chain, never a RecursionError.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from .errors import ExpandError, ExpansionLoop

Lookup = Callable[[str], "str | None"]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_WS = " \t\r\n"
_TRUE = "true"
_FALSE = ""
_MAX_DEPTH = 100
_DIGITS = re.compile(r"\d+\Z")
_LEVEL = re.compile(r"\d+(\.\d+){0,2}\Z")


def _compat_level(text: str) -> tuple[int, int, int]:
    if not _LEVEL.match(text):
        raise ExpandError(f'malformed compatibility level: "{text}"')
    parts = [int(p) for p in text.split(".")] + [0, 0]
    return parts[0], parts[1], parts[2]


def _compare(op: str, left: str, right: str) -> bool:
    if op.endswith("level"):
        a: object = _compat_level(left)
        b: object = _compat_level(right)
        op = op[: -len("level")]
    elif op in ("==", "!="):
        a, b = left, right
    elif _DIGITS.match(left) and _DIGITS.match(right):
        a, b = int(left), int(right)
    else:
        a, b = left, right
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b  # type: ignore[operator]
    if op == "<=":
        return a <= b  # type: ignore[operator]
    if op == ">":
        return a > b  # type: ignore[operator]
    if op == ">=":
        return a >= b  # type: ignore[operator]
    raise ExpandError(f'unknown operator: "{op}"')


_OPERATORS = ("<=level", ">=level", "<level", ">level", "==", "!=", "<=", ">=", "<", ">")


def references(text: str) -> Iterator[tuple[str, str]]:
    """Yield ``(kind, body)`` for each ``$`` reference in *text*.

    kind is ``"name"`` for ``$name`` and ``"expr"`` for ``${...}``/``$(...)``.
    Raises ExpandError for a truncated ``${``.
    """
    i, n = 0, len(text)
    while i < n:
        j = text.find("$", i)
        if j < 0:
            return
        if j + 1 >= n:
            raise ExpandError(f'empty macro name: "{text}"')
        c = text[j + 1]
        if c == "$":
            i = j + 2
        elif c in "{(":
            body, i = _balanced(text, j + 1)
            yield "expr", body
        elif c in _NAME_CHARS:
            k = j + 1
            while k < n and text[k] in _NAME_CHARS:
                k += 1
            yield "name", text[j + 1 : k]
            i = k
        else:
            raise ExpandError(f'empty macro name: "{text}"')


def _balanced(text: str, start: int) -> tuple[str, int]:
    """text[start] is '{' or '('; return (body, index after the closer)."""
    open_c = text[start]
    close_c = "}" if open_c == "{" else ")"
    level = 0
    for k in range(start, len(text)):
        ch = text[k]
        if ch == open_c:
            level += 1
        elif ch == close_c:
            level -= 1
            if level == 0:
                return text[start + 1 : k], k + 1
    raise ExpandError(f'truncated macro reference: "{text[start - 1:]}"')


def _curly(body: str, i: int) -> tuple[str, int] | None:
    """If body[i:] starts (after blanks) with '{', return (payload, next index
    after trailing blanks); else None."""
    k = i
    while k < len(body) and body[k] in _WS:
        k += 1
    if k >= len(body) or body[k] != "{":
        return None
    level = 0
    for m in range(k, len(body)):
        if body[m] == "{":
            level += 1
        elif body[m] == "}":
            level -= 1
            if level == 0:
                end = m + 1
                while end < len(body) and body[end] in _WS:
                    end += 1
                return body[k + 1 : m], end
    raise ExpandError(f'unbalanced {{}} in attribute expression: "{body[k:]}"')


class Expander:
    """Expand text against a lookup, recursively, with loop detection.

    ``recurse=False`` substitutes one level only (values are not re-expanded),
    as Postfix does for service-level variables such as ``$recipient``.
    ``undefined`` collects the names that were referenced but not defined.
    """

    def __init__(self, lookup: Lookup, *, recurse: bool = True):
        self.lookup = lookup
        self.recurse = recurse
        self.undefined: list[str] = []
        self._chain: list[str] = []

    def expand(self, text: str) -> str:
        if "$" not in text:
            return text
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            j = text.find("$", i)
            if j < 0:
                out.append(text[i:])
                break
            out.append(text[i:j])
            if j + 1 >= n:
                raise ExpandError(f'empty macro name: "{text}"')
            c = text[j + 1]
            if c == "$":
                out.append("$")
                i = j + 2
            elif c in "{(":
                body, i = _balanced(text, j + 1)
                out.append(self._expr(body))
            elif c in _NAME_CHARS:
                k = j + 1
                while k < n and text[k] in _NAME_CHARS:
                    k += 1
                out.append(self._use(text[j + 1 : k]))
                i = k
            else:
                raise ExpandError(f'empty macro name: "{text}"')
        return "".join(out)

    def expand_param(self, name: str, value: str) -> str:
        """Expand *value*, the value of parameter *name*: a reference back to
        *name* is reported as a loop that starts at *name*."""
        self._chain.append(name)
        try:
            return self.expand(value)
        finally:
            self._chain.pop()

    # -- pieces -------------------------------------------------------------

    def _value(self, name: str) -> str | None:
        return self.lookup(name)

    def _use(self, name: str) -> str:
        value = self._value(name)
        if value is None:
            if name not in self.undefined:
                self.undefined.append(name)
            return ""
        if not self.recurse or "$" not in value:
            return value
        if name in self._chain:
            loop = " -> ".join(self._chain[self._chain.index(name):] + [name])
            raise ExpansionLoop(f"parameter expansion loop: {loop}")
        if len(self._chain) >= _MAX_DEPTH:
            raise ExpansionLoop(f'unreasonable macro call nesting: "{name}"')
        self._chain.append(name)
        try:
            return self.expand(value)
        finally:
            self._chain.pop()

    def _expr(self, body: str) -> str:
        k = 0
        while k < len(body) and body[k] in _WS:
            k += 1
        if k < len(body) and body[k] == "{":
            truth, rest = self._logical(body, k)
            if not rest:
                return _TRUE if truth else _FALSE
            if rest[0] not in "?:":
                raise ExpandError(f'"?" or ":" expected at: "...}}>>>{rest[:20]}"')
            return self._conditional(truth, rest[0], rest[1:])
        for pos, ch in enumerate(body):
            if ch in "?:":
                name = body[:pos]
                self._check_name(name, body)
                value = self._value(name)
                truth = value is not None and value != ""
                return self._conditional(truth, ch, body[pos + 1 :])
        self._check_name(body, body)
        return self._use(body)

    @staticmethod
    def _check_name(name: str, body: str) -> None:
        for pos, ch in enumerate(name):
            if ch not in _NAME_CHARS:
                raise ExpandError(
                    f'attribute name syntax error at: "...{body[:pos]}>>>{body[pos:pos + 20]}"'
                )
        if not name:
            raise ExpandError(f'empty attribute name in: "{body}"')

    def _logical(self, body: str, k: int) -> tuple[bool, str]:
        left = _curly(body, k)
        assert left is not None
        left_text, i = left
        for op in _OPERATORS:
            if body.startswith(op, i):
                break
        else:
            raise ExpandError(
                f'"==" or "!=" expected at: "...{left_text}}}>>>{body[i:i + 20]}"'
            )
        right = _curly(body, i + len(op))
        if right is None:
            raise ExpandError(
                f'"{{expression}}" expected at: "...{{{left_text}}} {op}>>>'
                f'{body[i + len(op):i + len(op) + 20]}"'
            )
        right_text, i = right
        truth = _compare(op, self.expand(left_text), self.expand(right_text))
        return truth, body[i:]

    def _conditional(self, truth: bool, op: str, rest: str) -> str:
        result = ""
        if op == "?":
            got = _curly(rest, 0)
            if got is None:
                return self.expand(rest) if truth else ""
            if_true, i = got
            rest = rest[i:]
            if truth:
                result = self.expand(if_true)
            if not rest:
                return result
            if rest[0] != ":":
                raise ExpandError(f'":" expected at: "...{if_true}}}>>>{rest[:20]}"')
            rest = rest[1:]
        got = _curly(rest, 0)
        if got is None:
            if_false, rest = rest, ""
        else:
            if_false, i = got
            rest = rest[i:]
            if rest:
                raise ExpandError(f'unexpected input at: "...{if_false}}}>>>{rest[:20]}"')
        if not truth:
            result = self.expand(if_false)
        return result


def expand(text: str, lookup: Lookup, *, recurse: bool = True) -> str:
    """Expand *text* once with a fresh :class:`Expander`."""
    return Expander(lookup, recurse=recurse).expand(text)


def referenced_names(text: str, strict: bool = False) -> list[str]:
    """Every parameter name *text* refers to, in any branch of any condition.
    With *strict*, a syntax error raises ExpandError instead of ending the scan."""
    names: list[str] = []

    def scan(t: str) -> None:
        for kind, body in references(t):
            if kind == "name":
                names.append(body)
                continue
            k = 0
            while k < len(body) and body[k] in _WS:
                k += 1
            if k < len(body) and body[k] == "{":
                # logical: operands and results are all text to scan
                depth, start = 0, None
                for pos, ch in enumerate(body):
                    if ch == "{":
                        if depth == 0:
                            start = pos + 1
                        depth += 1
                    elif ch == "}":
                        depth -= 1
                        if depth == 0 and start is not None:
                            scan(body[start:pos])
                continue
            for pos, ch in enumerate(body):
                if ch in "?:":
                    names.append(body[:pos])
                    scan(body[pos + 1 :])
                    break
            else:
                names.append(body)

    try:
        scan(text)
    except ExpandError:
        if strict:
            raise
    return names

"""The sql_table configuration file shared by ``sqlite:`` and ``pgsql:``.

A table named ``sqlite:/etc/postfix/virtual.cf`` or ``pgsql:/etc/postfix/x.cf``
points at a small file in main.cf syntax (``name = value``, continuation
lines start with blanks, ``#`` comments, the last definition wins, no
``$name`` expansion) that says where the database is and how to ask it, as
sqlite_table(5) and pgsql_table(5) describe:

``query``
    The SQL template. ``%s`` is the whole key, ``%u`` its local part (the
    whole key when it has no ``@``), ``%d`` its domain, ``%1`` … ``%9`` the
    domain's labels counted from the right, ``%S %U %D`` the same as their
    lower-case forms, ``%%`` a percent sign. Every substitution is SQL-quoted
    by the database's own escaper. A key that lacks a part the templates use
    (no domain for ``%d``, an empty local part for ``%u``, too few labels
    for ``%3``) is not looked up: the answer is "not found".
``result_format`` (default ``%s``)
    Applied to every result value: ``%s %u %d`` are the value and its parts,
    ``%S %U %D %1``… are the key's. Values are joined with commas; empty and
    NULL values are skipped.
``expansion_limit`` (default 0, no limit)
    More result values than this is a temporary failure.
``domain``
    A list of domains, files (``/path``) and ``type:table`` lookups; when
    set, only ``user@domain`` keys with a non-empty local part and a listed
    domain are looked up.
legacy ``table``, ``select_field``, ``where_field``, ``additional_conditions``
(and pgsql's ``select_function``)
    Build ``SELECT select_field FROM table WHERE where_field='%s'
    additional_conditions`` when ``query`` is not set.

This module owns the file parser, the template expansion (Postfix's
``db_common.c`` rules, case by case) and :class:`SqlTable`, the lookup
pipeline both database types share: UTF-8 check, key folding, domain filter,
query expansion, result expansion, expansion limit. The database modules
only run a query and hand back the column values.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..config.maincf import MainCf
from ..config.values import C_SPACE
from .base import OpenFlags, Table, TableError, TableRetry

log = logging.getLogger("hato.tables")
DEFAULT_FLAGS = OpenFlags()

Quote = Callable[[str], str]

# db_common.c's context flags.
KEY_DOMAIN = 1 << 0  # the templates need the key's domain
KEY_USER = 1 << 1  # ... the key's local part
VALUE_DOMAIN = 1 << 2  # the result format needs the value's domain
VALUE_USER = 1 << 3  # ... the value's local part

_QUERY_CODES = frozenset("%sudSUD123456789")


# -- the configuration file ----------------------------------------------------


@dataclass
class SqlConfig:
    """The parameters of one sql_table file, with where each was set."""

    path: str
    type_name: str
    values: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    @classmethod
    def read(cls, spec: str, type_name: str) -> SqlConfig:
        if not spec:
            raise TableError(f"{type_name}: missing configuration file name "
                             f"(use {type_name}:/path/to/file.cf)")
        if spec[0] not in "/.":
            # Postfix also reads "name_query" etc. from main.cf when the table
            # name is not a path; that form is deprecated and not supported.
            raise TableError(
                f"{type_name}:{spec}: parameters in main.cf ({spec}_query, {spec}_...) are "
                f"not supported; put them in a file and use {type_name}:/path/to/file.cf")
        try:
            with open(spec, "rb") as f:
                data = f.read()
        except OSError as err:
            raise TableError(f"{type_name}:{spec}: open {spec}: {err.strerror}") from None
        return cls.parse(data, spec, type_name)

    @classmethod
    def parse(cls, data: bytes | str, path: str, type_name: str) -> SqlConfig:
        try:
            main = MainCf.parse(data, path)
        except ConfigError as err:
            raise TableError(err.message, err.path, err.line) from None
        cf = cls(path, type_name)
        for d in main.definitions:
            cf.values[d.name] = d.value
            cf.lines[d.name] = d.lineno
        return cf

    def error(self, name: str, message: str) -> TableError:
        return TableError(message, self.path, self.lines.get(name))

    def get_str(self, name: str, default: str | None = "", min_len: int = 0,
                max_len: int = 0) -> str | None:
        """cfg_get_str(): a missing or empty value with no default is None."""
        value = self.values.get(name, default if default is not None else "")
        if min_len and len(value) < min_len:
            raise self.error(name, f"bad string length {len(value)} < {min_len}: "
                                   f"{name} = {value}")
        if max_len and len(value) > max_len:
            raise self.error(name, f"bad string length {len(value)} > {max_len}: "
                                   f"{name} = {value}")
        if default is None and not value:
            return None
        return value

    def get_int(self, name: str, default: int, lo: int = 0, hi: int = 0) -> int:
        """cfg_get_int(): a whole decimal number (strtol), optional bounds."""
        text = self.values.get(name)
        if text is None:
            value = default
        else:
            if not re.fullmatch(r"[ \t\n\r\f\v]*[+-]?[0-9]+", text):
                raise self.error(name, f"bad numerical configuration: {name} = {text}")
            value = int(text)
            if not -2**31 <= value < 2**31:
                raise self.error(name, f"bad numerical configuration: {name} = {text}")
        if lo and value < lo:
            raise self.error(name, f"invalid {name} parameter value {value} < {lo}")
        if hi and value > hi:
            raise self.error(name, f"invalid {name} parameter value {value} > {hi}")
        return value

    def query(self, *, select_function: bool = False) -> str:
        """The query template, built from the legacy parameters when unset."""
        text = self.get_str("query", None)
        if text is not None:
            return text
        if select_function:
            function = self.get_str("select_function", None)
            if function is not None:
                return f"SELECT {function}('%s')"
        parts = {}
        for name in ("table", "select_field", "where_field"):
            value = self.get_str(name, None)
            if value is None:
                raise TableError(f"neither 'query' nor the legacy '{name}' parameter is "
                                 f"defined", self.path)
            parts[name] = value
        extra = self.get_str("additional_conditions", "") or ""
        return (f"SELECT {parts['select_field']} FROM {parts['table']} "
                f"WHERE {parts['where_field']}='%s' {extra}")


# -- query and result templates (db_common.c) ---------------------------------


class Subst(str):
    """One substitution of a template: the letter or digit after its ``%``.
    A template's other pieces are plain strings, so literal text such as
    the ``%2`` that ``%%2`` stands for is never taken for one."""


Piece = str  # a literal run, or a Subst


@dataclass
class Expander:
    """Parses the query and result templates of one table and expands them.

    As in Postfix, both templates share one set of flags: a ``%D`` in the
    result format means keys without a domain are not even queried.
    """

    name: str
    flags: int = 0
    nparts: int = 0

    def parse(self, text: str, query: bool) -> list[Piece]:
        pieces: list[Piece] = []
        literal: list[str] = []
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch != "%":
                literal.append(ch)
                i += 1
                continue
            code = text[i + 1] if i + 1 < n else ""
            if code not in _QUERY_CODES or not code:
                kind = "query" if query else "result"
                raise ValueError(f"invalid {kind} template: {text}")
            i += 2
            if code == "%":
                literal.append("%")
                continue
            if code == "u":
                self.flags |= KEY_USER if query else VALUE_USER
            elif code == "d":
                self.flags |= KEY_DOMAIN if query else VALUE_DOMAIN
            elif code == "U":
                self.flags |= KEY_USER
            elif code in "D123456789":
                self.flags |= KEY_DOMAIN
                if code != "D":
                    self.nparts = max(self.nparts, int(code))
            if literal:
                pieces.append("".join(literal))
                literal = []
            pieces.append(Subst(code))
        if literal:
            pieces.append("".join(literal))
        return pieces

    def expand(self, pieces: list[Piece], value: str | None, key: str | None = None,
               quote: Quote | None = None) -> str | None:
        """Expand a query template (``key`` None, ``value`` the lookup key)
        or a result template (``value`` a result, ``key`` the lookup key).
        None means: skip this query or this result."""
        if value is None:
            return None
        if value == "":
            if key is not None:
                log.warning('table "%s": empty lookup result for: "%s" -- ignored',
                            self.name, key)
            else:
                log.warning('table "%s": empty query string -- ignored', self.name)
            return None
        flags = self.flags
        v_at = k_at = -1
        vdomain = kdomain = None
        if key is not None:
            if flags & (VALUE_DOMAIN | VALUE_USER):
                v_at = value.rfind("@")
                if v_at >= 0:
                    vdomain = value[v_at + 1:]
            if ((not vdomain and flags & VALUE_DOMAIN)
                    or (v_at == 0 and flags & VALUE_USER)):
                return None
            if flags & (KEY_DOMAIN | KEY_USER):
                k_at = key.rfind("@")
                if k_at >= 0:
                    kdomain = key[k_at + 1:]
            if (not kdomain and flags & KEY_DOMAIN) or (k_at == 0 and flags & KEY_USER):
                log.warning("%s: lookup key '%s' skipped after query", self.name, value)
                return None
        else:
            if flags & (KEY_DOMAIN | KEY_USER):
                v_at = value.rfind("@")
                if v_at >= 0:
                    vdomain = value[v_at + 1:]
            if (not vdomain and flags & KEY_DOMAIN) or (v_at == 0 and flags & KEY_USER):
                return None
        parts: list[str] = []
        if self.nparts:
            # argv_split(): empty labels (a..b, .com) are not counted.
            labels = kdomain if key is not None else vdomain
            parts = [p for p in (labels or "").split(".") if p]
            if len(parts) < self.nparts:
                return None

        def q(text: str) -> str:
            return quote(text) if quote else text

        out: list[str] = []
        for piece in pieces:
            if type(piece) is not Subst:
                out.append(piece)
                continue
            code = piece
            if code == "s":
                out.append(q(value))
            elif code == "u":
                out.append(q(value[:v_at] if v_at >= 0 else value))
            elif code == "d":
                out.append(q(vdomain or ""))
            elif code == "S":
                out.append(q(key if key is not None else value))
            elif code == "U":
                if key is not None:
                    out.append(q(key[:k_at] if k_at >= 0 else key))
                else:
                    out.append(q(value[:v_at] if v_at >= 0 else value))
            elif code == "D":
                out.append(q((kdomain if key is not None else vdomain) or ""))
            else:
                out.append(q(parts[len(parts) - int(code)]))
        return "".join(out)


# -- the domain filter (a Postfix string list) ----------------------------------


class DomainFilter:
    """The ``domain`` parameter, a Postfix string list: literal names
    (compared case-insensitively), ``/file`` (its words, inline), ``type:table``
    (the domain is a key of the table), ``!`` negation; first match wins."""

    def __init__(self, text: str, where: SqlConfig):
        self._where = where
        self._tables: dict[str, Table] = {}
        # (verdict when matched, casefolded literal or "type:table")
        self.patterns: list[tuple[bool, str]] = []
        self._add(text, True, 0)

    def _add(self, text: str, init: bool, depth: int) -> None:
        for word in _split_list(text):
            verdict, item = init, word
            while item.startswith("!"):
                verdict, item = not verdict, item[1:]
            if not item:
                raise self._where.error("domain", f"no pattern after '!': {text.strip()}")
            if item.startswith("/"):
                if depth > 20:
                    raise self._where.error("domain", f"{item}: files include each other")
                for line in self._read(item):
                    self._add(line, verdict, depth + 1)
            elif not item.startswith("[") and ":" in item:
                self._table(item)  # open it now, so mistakes show at start
                self.patterns.append((verdict, item))
            else:
                self.patterns.append((verdict, item.casefold()))

    def _read(self, path: str) -> list[str]:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as err:
            raise self._where.error("domain", f"open file {path}: {err.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise self._where.error("domain", f"{path}: not UTF-8") from None
        # readllines(): comments, blank lines, indented continuation lines.
        lines: list[str] = []
        # (lines end at \n only; C's isspace() trims and continues them)
        for raw in text.split("\n"):
            stripped = raw.strip(C_SPACE)
            if not stripped or stripped.startswith("#"):
                continue
            if raw[0] in C_SPACE and lines:
                lines[-1] += " " + stripped
            else:
                lines.append(stripped)
        return lines

    def _table(self, spec: str) -> Table:
        table = self._tables.get(spec)
        if table is None:
            from .registry import open_table  # the registry imports us lazily
            try:
                # The domain is case-folded before the lookup (match_list).
                table = open_table(spec, OpenFlags(fold_case=False))
            except TableError as err:
                raise self._where.error("domain", f"table {spec}: {err}") from None
            self._tables[spec] = table
        return table

    def match(self, domain: str) -> bool:
        folded = domain.lower() if domain.isascii() else domain.casefold()
        for verdict, item in self.patterns:
            if not item.startswith("[") and ":" in item:
                if self._table(item).get(folded) is not None:
                    return verdict
            elif folded == item:
                return verdict
        return False

    def close(self) -> None:
        for table in self._tables.values():
            table.close()


def _split_list(text: str) -> list[str]:
    return [word for word in re.split(r"[, \t\r\n]+", text) if word]


# -- the lookup pipeline -----------------------------------------------------------


class SqlTable(Table):
    """What sqlite: and pgsql: share; subclasses implement :meth:`fetch`."""

    pattern_table = False
    #: pgsql accepts the legacy select_function parameter, sqlite does not.
    select_function = False

    def __init__(self, spec: str, flags: OpenFlags = DEFAULT_FLAGS):
        super().__init__(spec, flags)
        cf = self.cf = SqlConfig.read(spec, self.type_name)
        self.expander = Expander(self.name)
        query = cf.query(select_function=self.select_function)
        try:
            self.query_pieces = self.expander.parse(query, True)
        except ValueError as err:
            raise cf.error("query", str(err)) from None
        result_format = cf.get_str("result_format", "%s", 1) or "%s"
        try:
            self.result_pieces = self.expander.parse(result_format, False)
        except ValueError as err:
            raise cf.error("result_format", str(err)) from None
        self.expansion_limit = cf.get_int("expansion_limit", 0)
        domain = cf.get_str("domain", "") or ""
        self.domain = DomainFilter(domain, cf) if domain.strip() else None

    # -- pieces the subclasses use ------------------------------------------

    def expand_query(self, key: str, quote: Quote | None) -> str | None:
        return self.expander.expand(self.query_pieces, key, None, quote)

    def fetch(self, key: str) -> Iterable[str | None]:
        """Run the query for ``key``; yield each result value (None for SQL
        NULL). Raise TableRetry when the database fails."""
        raise NotImplementedError

    # -- the lookup -------------------------------------------------------------

    def prepare_key(self, key: str) -> str | None:
        if "\0" in key:
            return None
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            log.warning("%s: non-UTF-8 key \"%s\" -- ignored", self.name,
                        key.encode("utf-8", "replace").decode())
            return None
        if self.flags.fold_case:
            key = key.lower() if key.isascii() else key.casefold()
        return key

    def domain_ok(self, key: str) -> bool:
        if self.domain is None:
            return True
        at = key.rfind("@")
        if at <= 0:
            return False
        try:
            return self.domain.match(key[at + 1:])
        except TableRetry as err:
            raise TableRetry(self.name, f"domain list: {err}") from None

    def get(self, key: str) -> str | None:
        folded = self.prepare_key(key)
        if folded is None or not self.domain_ok(folded):
            return None
        if self.expand_query(folded, None) is None:
            return None
        results: list[str] = []
        count = 0
        for value in self.fetch(folded):
            text = self.expander.expand(self.result_pieces, value, folded)
            if text is None:
                continue
            results.append(text)
            count += 1
            if 0 < self.expansion_limit < count:
                log.warning("%s: Expansion limit exceeded for key '%s'", self.name, folded)
                raise TableRetry(self.name, f"expansion limit {self.expansion_limit} "
                                            f"exceeded for key '{folded}'")
        if not results:
            return None
        value = ",".join(results)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Postfix's UTF-8 check of table results: a lookup error.
            shown = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            log.warning('%s: key "%s": non-UTF-8 value "%s"', self.name, folded, shown)
            raise TableRetry(self.name, f"non-UTF-8 value for key '{folded}'") from None
        return value

    def close(self) -> None:
        if self.domain is not None:
            self.domain.close()

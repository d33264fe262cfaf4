"""``smtpd_milters`` / ``non_smtpd_milters`` values, as Postfix's milter_new()
parses them, and ``milter_macro_defaults``.

A list element is an endpoint (``inet:host:port``, ``unix:/path``,
``local:/path``) or, since Postfix 3.0, ``{ endpoint, name=value, ... }``
with per-milter overrides of the global settings.  The names are the
main.cf parameter names without ``milter_``: ``connect_timeout``,
``command_timeout``, ``content_timeout`` (times, minimum 1s), ``protocol``
and ``default_action`` (non-empty strings).  A setting may itself be braced
to hold blanks: ``{ default_action = accept }``.

Syntax errors raise :class:`ConfigError` with Postfix's fatal texts.  The
endpoint, the protocol and the default action are checked only when the
milter is used, as Postfix does (a warning, then the milter behaves as
unavailable): see :meth:`MilterSpec.endpoint` and
:func:`hato.proto.milter.parse_protocol`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..config.errors import ConfigError

SEPARATORS = ", \t\r\n"
TIME_KEYS = ("connect_timeout", "command_timeout", "content_timeout")
STR_KEYS = ("protocol", "default_action")
_TIME = re.compile(r"(\d+)([smhdw]?)\Z")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class MilterSpec:
    """One milter: its endpoint *name* and overrides (None: the global value)."""
    name: str
    connect_timeout: int | None = None
    command_timeout: int | None = None
    content_timeout: int | None = None
    protocol: str | None = None
    default_action: str | None = None

    def endpoint(self) -> tuple[str, str, int | None]:
        """``(transport, host_or_path, port)``: ``("inet", host, port)`` or
        ``("unix", path, None)`` (``local:`` is ``unix:``).  Raises
        :class:`~hato.proto.milter.MilterConfigError` with Postfix's
        warning."""
        from .milter import MilterConfigError

        transport, sep, where = self.name.partition(":")
        if not sep or not where or not transport:
            raise MilterConfigError(
                f'Milter service needs transport:endpoint instead of "{self.name}"')
        if transport in ("unix", "local"):
            return "unix", where, None
        if transport != "inet":
            raise MilterConfigError(
                f"invalid transport name: {transport} in Milter service: {self.name}")
        if where.startswith("["):
            host, close, rest = where[1:].partition("]")
            if not close or not rest.startswith(":"):
                raise MilterConfigError(f"{where}: missing \":port\"")
            port = rest[1:]
        else:
            host, sep, port = where.rpartition(":")
            if not sep:
                host, port = "localhost", where
        host = host or "localhost"
        if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
            raise MilterConfigError(f'{where}: bad port "{port}"')
        return "inet", host, int(port)


def tokens(text: str, separators: str = SEPARATORS) -> list[str]:
    """Postfix's mystrtokq(): split on *separators* outside ``{}`` groups;
    the braces stay in the token."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in separators:
            i += 1
        if i >= n:
            break
        j, depth = i, 0
        while j < n and (depth > 0 or text[j] not in separators):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}" and depth > 0:
                depth -= 1
            j += 1
        out.append(text[i:j])
        i = j
    return out


def extpar(token: str) -> str:
    """Postfix's extpar(): the text between a token's outer braces, or raise
    ValueError with its message."""
    depth = 0
    for i, ch in enumerate(token):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                if token[i + 1:].strip():
                    raise ValueError(f"syntax error after '}}' in \"{token}\"")
                return token[1:i]
    raise ValueError(f"missing '}}' in \"{token}\"")


def split_nameval(text: str) -> tuple[str, str]:
    """Postfix's split_nameval(): ``name = value`` → (name, value)."""
    s = text.lstrip()
    if not s:
        raise ValueError("missing attribute name")
    m = re.match(r"([^\s=]*)\s*=", s)
    if not m:
        raise ValueError("missing '=' after attribute name")
    return m.group(1), s[m.end():].strip()


def _time(key: str, value: str) -> int:
    m = _TIME.match(value)
    if not m:
        raise ConfigError(f"{key}: bad time value or unit: {value}")
    seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"]
    if seconds < 1:
        raise ConfigError(f"invalid {key}: {seconds} (min 1)")
    return seconds


def parse_milter_list(value: str) -> list[MilterSpec]:
    """``smtpd_milters = inet:127.0.0.1:8891, { unix:/run/x.sock,
    default_action=accept }`` → [MilterSpec, ...] in order."""
    specs: list[MilterSpec] = []
    for token in tokens(value or ""):
        if not token.startswith("{"):
            specs.append(MilterSpec(token))
            continue
        try:
            inner = extpar(token)
        except ValueError as e:
            raise ConfigError(f"milter service syntax error: {e}") from None
        parts = tokens(inner)
        if not parts:
            raise ConfigError(f'empty milter definition: "{value}"')
        name, settings = parts[0], {}
        for item in parts[1:]:
            nameval = item
            if item.startswith("{"):
                try:
                    nameval = extpar(item)
                except ValueError as e:
                    raise ConfigError(f'{e} in "{item}"') from None
            try:
                key, val = split_nameval(nameval)
            except ValueError as e:
                raise ConfigError(f'malformed option: {e}: "...{nameval}..."') from None
            if key in TIME_KEYS:
                settings[key] = _time(key, val)
            elif key in STR_KEYS:
                if not val:
                    raise ConfigError(f"bad string length 0 < 1: {key} = {val}")
                settings[key] = val
            else:
                raise ConfigError(f'unknown option: "{key} = {val}"')
        specs.append(MilterSpec(name, **settings))
    return specs


def split_macro_names(value: str) -> list[str]:
    """A ``milter_*_macros`` value (or a milter's SETSYMLIST list) → names,
    split on commas and blanks, braces kept (``{daemon_name}``, ``j``)."""
    return [w for w in re.split(r"[, \t\r\n]+", value or "") if w]


def canonical_macro(name: str) -> str:
    """The form a macro is looked up in: ``j`` → ``{j}``."""
    return name if name.startswith("{") else "{" + name + "}"


def macro_defaults(value: str) -> dict[str, str]:
    """``milter_macro_defaults`` (``name=value`` or ``{ name = value }``,
    comma/blank separated) → {canonical ``{name}``: value}.  Raises
    ConfigError with Postfix's text; a repeated name keeps the first value
    (Postfix warns "ignoring multiple default macro entries")."""
    table: dict[str, str] = {}
    for token in tokens(value or ""):
        nameval = token
        if token.startswith("{"):
            # "{name}=value" is a braced name, "{ name = value }" a braced entry
            close = _balanced_end(token)
            if close is None or not token[close + 1:].startswith("="):
                try:
                    nameval = extpar(token)
                except ValueError as e:
                    raise ConfigError(
                        f'malformed default macro entry: {e} in "{value}"') from None
        try:
            key, val = split_nameval(nameval)
        except ValueError as e:
            raise ConfigError(f'malformed default macro entry: {e} in "{value}"') from None
        table.setdefault(canonical_macro(key), val)
    return table


def _balanced_end(token: str) -> int | None:
    depth = 0
    for i, ch in enumerate(token):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
    return None

"""Table types by name: ``open_table("cidr:/etc/hato/clients")``.

Each table module registers its classes with :func:`register`; the registry
imports them lazily so that a type whose library is missing fails only when
a configuration uses it, with a clear error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .base import OpenFlags, Table, TableError

# type name -> "module:Class" in hato.tables. Table modules are added here
# as they are written.
_BUILTIN: dict[str, str] = {
    "lmdb": "lmdb_table:LmdbTable",
    "hash": "hashdb:HashTable",
    "btree": "hashdb:BtreeTable",
    "cdb": "cdb:CdbTable",
    "texthash": "texthash:TexthashTable",
    "cidr": "cidr:CidrTable",
    "pcre": "pcre:PcreTable",
    "regexp": "regexp:RegexpTable",
    "inline": "simple:InlineTable",
    "static": "simple:StaticTable",
    "fail": "simple:FailTable",
    "environ": "simple:EnvironTable",
    "unionmap": "composite:UnionTable",
    "pipemap": "composite:PipeTable",
    "proxy": "composite:ProxyTable",
    "unix": "unix:UnixTable",
    "sqlite": "sqlite:SqliteTable",
    "pgsql": "pgsql:PgsqlTable",
    "socketmap": "socketmap:SocketmapTable",
}
_LOADED: dict[str, Callable[..., Table]] = {}


def register(type_name: str, factory: Callable[..., Table]) -> None:
    _LOADED[type_name] = factory


def declare(type_name: str, target: str) -> None:
    """Declare that *type_name* is implemented by ``module:Class``."""
    _BUILTIN[type_name] = target


def type_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_LOADED))


def split_spec(text: str) -> tuple[str, str]:
    """``type:rest`` → (type, rest); a bare path is an error as in Postfix."""
    type_name, sep, rest = text.partition(":")
    if not sep or not type_name:
        raise TableError(f'need dictionary type:name, got "{text}"')
    return type_name, rest


def open_table(text: str, flags: OpenFlags = OpenFlags()) -> Table:
    type_name, rest = split_spec(text)
    factory = _LOADED.get(type_name)
    if factory is None:
        target = _BUILTIN.get(type_name)
        if target is None:
            raise TableError(f"unsupported dictionary type: {type_name}")
        module, _, cls = target.partition(":")
        try:
            mod = importlib.import_module(f"hato.tables.{module}")
        except ImportError as err:
            raise TableError(f"{type_name}: table support is not available: {err}") from None
        factory = getattr(mod, cls)
        _LOADED[type_name] = factory
    return factory(rest, flags)

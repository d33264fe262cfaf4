"""An instance's configuration and the frozen Settings services read.

:class:`Config` is main.cf + master.cf + the parameter table + the host facts
that computed defaults need. :meth:`Config.settings` gives a frozen
:class:`Settings` snapshot for one service: defaults ∪ main.cf ∪ the
service's ``-o`` overrides ∪ ``stress=yes`` when master says so. Services
read typed values from it and never from globals.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

from . import values
from .defaults import HostFacts, default_mydomain, default_myhostname, default_mynetworks
from .errors import ConfigError, ExpansionLoop
from .expand import Expander, referenced_names
from .maincf import MainCf
from .mastercf import MasterCf, Service
from .params import PARAMS, RAW_PARAMS, Kind, Param

DEFAULT_CONFIG_DIRECTORY = "/etc/hato"
#: The computed defaults being worked out in this thread/task (Settings.raw):
#: main.cf can make one depend on itself (``mydomain = $myhostname`` on a host
#: whose name is unqualified, ``inet_protocols = $mynetworks``).
_COMPUTING: ContextVar[tuple[str, ...]] = ContextVar("hato_computing_defaults", default=())

# Per-transport parameters that exist for every delivery service in master.cf
# (Postfix names them <service>_<suffix>), with the parameter they default to.
TRANSPORT_SUFFIXES: dict[str, str] = {
    "delivery_slot_cost": "$default_delivery_slot_cost",
    "delivery_slot_discount": "$default_delivery_slot_discount",
    "delivery_slot_loan": "$default_delivery_slot_loan",
    "destination_concurrency_failed_cohort_limit":
        "$default_destination_concurrency_failed_cohort_limit",
    "destination_concurrency_limit": "$default_destination_concurrency_limit",
    "destination_concurrency_negative_feedback":
        "$default_destination_concurrency_negative_feedback",
    "destination_concurrency_positive_feedback":
        "$default_destination_concurrency_positive_feedback",
    "destination_rate_delay": "$default_destination_rate_delay",
    "destination_recipient_limit": "$default_destination_recipient_limit",
    "extra_recipient_limit": "$default_extra_recipient_limit",
    "initial_destination_concurrency": "$initial_destination_concurrency",
    "minimum_delivery_slots": "$default_minimum_delivery_slots",
    "recipient_limit": "$default_recipient_limit",
    "recipient_refill_delay": "$default_recipient_refill_delay",
    "recipient_refill_limit": "$default_recipient_refill_limit",
    "transport_rate_delay": "$default_transport_rate_delay",
}
DELIVERY_COMMANDS = frozenset({"smtp", "lmtp", "local", "virtual", "pipe", "error"})
_SUFFIX_KIND = {
    "delivery_slot_cost": Kind.INT, "delivery_slot_discount": Kind.INT,
    "delivery_slot_loan": Kind.INT, "destination_concurrency_failed_cohort_limit": Kind.INT,
    "destination_concurrency_limit": Kind.INT,
    "destination_concurrency_negative_feedback": Kind.STR,
    "destination_concurrency_positive_feedback": Kind.STR,
    "destination_rate_delay": Kind.TIME, "destination_recipient_limit": Kind.INT,
    "extra_recipient_limit": Kind.INT, "initial_destination_concurrency": Kind.INT,
    "minimum_delivery_slots": Kind.INT, "recipient_limit": Kind.INT,
    "recipient_refill_delay": Kind.TIME, "recipient_refill_limit": Kind.INT,
    "transport_rate_delay": Kind.TIME, "time_limit": Kind.TIME,
}


@lru_cache(maxsize=1)
def _names_in_defaults() -> frozenset[str]:
    """Names the built-in defaults refer to. Legacy names such as
    postscreen_blacklist_action are used this way: a default of a newer
    parameter refers to them, so setting them is not "unused"."""
    names: set[str] = set()
    for p in PARAMS.values():
        names.update(referenced_names(p.default))
    return frozenset(names)


def config_directory_from_env(option: str | None) -> tuple[str, bool]:
    """The configuration directory: ``-c DIR``, else $MAIL_CONFIG, else the
    default. The flag says whether it was given explicitly."""
    if option:
        return option, True
    env = os.environ.get("MAIL_CONFIG")
    if env:
        return env, True
    return DEFAULT_CONFIG_DIRECTORY, False


@dataclass
class Config:
    config_dir: str
    main: MainCf
    master: MasterCf
    facts: HostFacts
    explicit_dir: bool = False
    process_name: str = "hato"
    process_id: int = field(default_factory=os.getpid)

    @classmethod
    def load(cls, config_dir: str, facts: HostFacts, *, explicit_dir: bool = True,
             main_missing_ok: bool = False, master_missing_ok: bool = True,
             process_name: str = "hato") -> "Config":
        main = MainCf.read(os.path.join(config_dir, "main.cf"), missing_ok=main_missing_ok)
        master = MasterCf.read(os.path.join(config_dir, "master.cf"),
                               missing_ok=master_missing_ok)
        return cls(config_dir, main, master, facts, explicit_dir, process_name)

    # -- what is set and what is known ---------------------------------------

    def main_values(self) -> dict[str, str]:
        vals = self.main.values()
        if self.explicit_dir and "config_directory" not in vals:
            vals["config_directory"] = self.config_dir
        return vals

    def derived_params(self) -> dict[str, Param]:
        """Per-transport parameters for the delivery services in master.cf."""
        out: dict[str, Param] = {}
        for svc in self.master.services:
            if svc.command == "spawn":  # spawn(8): only its command time limit
                name = f"{svc.name}_time_limit"
                if name not in PARAMS and name not in out:
                    out[name] = Param(name, _SUFFIX_KIND["time_limit"], "$command_time_limit",
                                      f"time limit for the {svc.name} service's command",
                                      unit="s")
                continue
            if svc.command not in DELIVERY_COMMANDS:
                continue
            suffixes = dict(TRANSPORT_SUFFIXES)
            if svc.command == "pipe":
                suffixes["time_limit"] = "$command_time_limit"
            for suffix, default in suffixes.items():
                name = f"{svc.name}_{suffix}"
                if name in PARAMS or name in out:
                    continue
                out[name] = Param(name, _SUFFIX_KIND[suffix], default,
                                  f"{suffix.replace('_', ' ')} for the {svc.name} transport",
                                  unit="s")
        return out

    def _all_texts(self) -> Iterator[str]:
        yield from self.main.values().values()
        for svc in self.master.services:
            yield from svc.overrides().values()

    def user_defined(self) -> set[str]:
        """Names that main.cf or master.cf define and something refers to
        (``$name``), or that smtpd_restriction_classes lists."""
        defined = set(self.main.values())
        for svc in self.master.services:
            defined |= set(svc.overrides())
        referenced: set[str] = set(_names_in_defaults())
        for text in self._all_texts():
            referenced.update(referenced_names(text))
        classes = self.main.values().get("smtpd_restriction_classes", "")
        referenced.update(values.split_list(classes))
        return {n for n in defined & referenced}

    def syntax_errors(self) -> list[ConfigError]:
        """``$name`` syntax errors anywhere in main.cf values and master.cf
        ``-o`` values, each with file and line (Postfix refuses to work with
        such a configuration at all)."""
        errors: list[ConfigError] = []
        for name, value in self.main.values().items():
            try:
                referenced_names(value, strict=True)
            except ConfigError as err:
                errors.append(ConfigError(f"{name}: {err.message}", self.main.path,
                                          self.main.lineno(name)))
        for svc in self.master.services:
            for name, value in svc.overrides().items():
                try:
                    referenced_names(value, strict=True)
                except ConfigError as err:
                    errors.append(ConfigError(f"{svc.key}: {name}: {err.message}",
                                              self.master.path, svc.lineno))
        if not errors:
            errors += self._referenced_default_errors()
        return errors

    def _referenced_default_errors(self) -> list[ConfigError]:
        """Postfix scans what main.cf values refer to, down to the default
        values of parameters main.cf does not set: a reference to one whose
        default is not valid macro text (``$(smtpd_expansion_filter)``) is
        as fatal as a syntax error in main.cf itself."""
        main = self.main.values()
        seen: set[str] = set()
        for name, value in main.items():
            todo = list(referenced_names(value))
            while todo:
                ref = todo.pop()
                if ref in seen or ref in main:
                    continue
                seen.add(ref)
                param = PARAMS.get(ref)
                if param is None or param.computed:
                    continue
                try:
                    todo += referenced_names(param.default, strict=True)
                except ConfigError as err:
                    return [ConfigError(f"{name}: ${ref}: {err.message}", self.main.path,
                                        self.main.lineno(name))]
        return []

    def known(self) -> dict[str, Param]:
        known = dict(PARAMS)
        known.update(self.derived_params())
        for name in self.user_defined():
            if name not in known:
                known[name] = Param(name, Kind.STR, "", "user-defined parameter")
        return known

    def unused(self) -> list[tuple[str, str, int | None]]:
        """main.cf definitions nothing uses: (name, value, line)."""
        known = self.known()
        out = []
        for name, value in self.main.values().items():
            if name not in known:
                out.append((name, value, self.main.lineno(name)))
        return out

    def unused_master(self) -> list[tuple[Service, str, str]]:
        known = self.known()
        return [(svc, n, v) for svc in self.master.services
                for n, v in svc.overrides().items() if n not in known]

    def undefined_references(self) -> list[tuple[str, str]]:
        """(file, name) for $name references in master.cf that nothing defines."""
        known = self.known()
        defined = set(self.main.values())
        out: list[tuple[str, str]] = []
        for svc in self.master.services:
            local = set(svc.overrides())
            for text in svc.overrides().values():
                for name in referenced_names(text):
                    if (name not in known and name not in defined and name not in local
                            and (self.master.path, name) not in out):
                        out.append((self.master.path, name))
        return out

    # -- values ---------------------------------------------------------------

    def default(self, name: str, known: Mapping[str, Param] | None = None) -> str | None:
        """The default value in Postfix syntax, computed ones computed from
        the host facts and *defaults only* (as ``postconf -d`` shows them)."""
        return self._default(name, self.default_lookup, known)

    def _default(self, name: str, lookup, known: Mapping[str, Param] | None) -> str | None:
        table = known if known is not None else self.known()
        param = table.get(name)
        if param is None:
            return None
        if not param.computed:
            return param.default
        return self._computed(name, lookup)

    def _computed(self, name: str, lookup) -> str:
        from .. import __version__
        if name == "myhostname":
            # $mydomain is consulted only for an unqualified host name, as
            # Postfix's check_myhostname() does (main.cf may define mydomain
            # in terms of $myhostname).
            domain = None if "." in self.facts.hostname else lookup("mydomain", raw_main=True)
            return default_myhostname(self.facts, domain)
        if name == "mydomain":
            return default_mydomain(lookup("myhostname") or "")
        if name == "mynetworks":
            style = lookup("mynetworks_style") or "subnet"
            protos = values.split_list(lookup("inet_protocols") or "all")
            return default_mynetworks(self.facts, style, protos)
        if name == "config_directory":
            return self.config_dir if self.explicit_dir else DEFAULT_CONFIG_DIRECTORY
        if name == "mail_version":
            return __version__
        if name == "mail_release_date":
            return RELEASE_DATE
        if name == "process_id":
            return str(self.process_id)
        if name == "process_name":
            return self.process_name
        return PARAMS[name].default if name in PARAMS else ""

    def default_lookup(self, name: str, raw_main: bool = False) -> str | None:
        """Expanded default values only (no main.cf)."""
        if raw_main:
            return None
        value = self.default(name)
        if value is None:
            return None
        return Expander(lambda n: self.default_lookup(n)).expand(value)

    def settings(self, service: Service | None = None, *, stress: bool = False,
                 overrides: Mapping[str, str] | None = None) -> "Settings":
        layer = self.main_values()
        if service is not None:
            layer["service_name"] = service.name
            layer.update(service.overrides())
        if overrides:
            layer.update(overrides)
        if stress:
            layer["stress"] = "yes"
        return Settings(self, layer)


RELEASE_DATE = "20261129"


class Settings(Mapping[str, str]):
    """A frozen view of every parameter for one service: ``settings[name]``
    is the fully expanded value; typed getters parse it."""

    def __init__(self, config: Config, layer: Mapping[str, str]):
        self._config = config
        self._layer = MappingProxyType(dict(layer))
        self._known = config.known()
        self._cache: dict[str, str] = {}

    # Mapping interface over every known parameter.
    def __getitem__(self, name: str) -> str:
        value = self.expanded(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(set(self._known) | set(self._layer)))

    def __len__(self) -> int:
        return len(set(self._known) | set(self._layer))

    @property
    def config(self) -> Config:
        return self._config

    def with_values(self, values: Mapping[str, str]) -> "Settings":
        """This snapshot with *values* set on top: a view for one purpose
        (postscreen's TLS policy built as smtpd's, one table of a list)."""
        return Settings(self._config, {**self._layer, **values})

    def raw(self, name: str) -> str | None:
        """The unexpanded value: the service's layer, else the default."""
        if name in self._layer:
            return self._layer[name]
        param = self._known.get(name)
        if param is None or not param.computed:
            return self._config._default(name, self._raw_lookup, self._known)
        chain = _COMPUTING.get()
        if name in chain:
            loop = " -> ".join(chain[chain.index(name):] + (name,))
            raise ExpansionLoop(f"parameter expansion loop: {loop}")
        token = _COMPUTING.set(chain + (name,))
        try:
            return self._config._default(name, self._raw_lookup, self._known)
        finally:
            _COMPUTING.reset(token)

    def _raw_lookup(self, name: str, raw_main: bool = False) -> str | None:
        if raw_main:
            value = self._layer.get(name)
            return None if value is None else self._expand(value)
        return self.expanded(name)

    def _expand(self, text: str) -> str:
        return Expander(self._lookup).expand(text)

    def _lookup(self, name: str) -> str | None:
        return self.raw(name)

    def expanded(self, name: str) -> str | None:
        if name in self._cache:
            return self._cache[name]
        raw = self.raw(name)
        if raw is None:
            return None
        if name in RAW_PARAMS:
            # Expanded later by the program that uses it, with its own macros.
            self._cache[name] = raw
            return raw
        value = Expander(self._lookup).expand_param(name, raw).strip()
        self._cache[name] = value
        return value

    def _param(self, name: str) -> Param:
        param = self._known.get(name)
        if param is None:
            raise ConfigError(f"unknown parameter: {name}")
        return param

    def _text(self, name: str) -> str:
        value = self.expanded(name)
        if value is None:
            raise ConfigError(f"unknown parameter: {name}")
        return value

    # Typed getters.
    def str(self, name: str) -> str:
        return self._text(name)

    def bool(self, name: str) -> bool:
        return values.parse_bool(name, self._text(name))

    def int(self, name: str) -> int:
        p = self._param(name)
        return values.parse_int(name, self._text(name), p.lo, p.hi)

    def size(self, name: str) -> int:
        p = self._param(name)
        return values.parse_size(name, self._text(name), p.lo, p.hi)

    def time(self, name: str) -> int:
        p = self._param(name)
        return values.parse_time(name, self._text(name), p.unit, p.lo, p.hi)

    def list(self, name: str) -> list[str]:
        return values.split_list(self._text(name))

    def check(self, name: str) -> None:
        """Parse *name* by its type; raise ConfigError when it does not parse."""
        kind = self._param(name).kind
        getter = {Kind.BOOL: self.bool, Kind.INT: self.int, Kind.SIZE: self.size,
                  Kind.TIME: self.time, Kind.LIST: self.list, Kind.MAPS: self.list,
                  Kind.RESTRICTIONS: self.list}.get(kind, self.str)
        getter(name)

"""The instances of a multi-instance site, as Postfix's postmulti keeps
them in the primary main.cf (``multi_instance_directories``,
``multi_instance_name``, ``_group``, ``_enable``): the model, the name
rules, which directory is the primary, and the hato command postmulti runs
on each. :mod:`hato.cli.postmulti` is the command; ``hato start`` asks
:func:`start_refusal`.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..config.settings import DEFAULT_CONFIG_DIRECTORY, Config, Settings

PRIMARY_ENV = "HATO_PRIMARY_CONFIG"

#: Instance names must start with one of these (Postfix: "postfix-" only).
NAME_PREFIXES = ("postfix-", "hato-")
SAFE_PUNCT = "!@%-_=+:./"


# -- instances -------------------------------------------------------------------


@dataclass
class Instance:
    config_dir: str
    queue_dir: str = ""
    data_dir: str = ""
    name: str = ""  # "" for a nameless instance
    group: str = ""
    enabled: bool = False
    primary: bool = False

    @property
    def label(self) -> str:
        return self.name or self.config_dir


@dataclass
class Selection:
    kind: str = "none"  # none, all, name, group
    value: str = ""


@dataclass
class Assignment:
    name: str | None = None  # None: no change; "": make nameless
    group: str | None = None


@dataclass
class Claims:
    """Each instance name and private directory belongs to one instance:
    ``value -> "config_dir, parameter"``."""

    owners: dict[str, str] = field(default_factory=dict)

    def owner(self, value: str) -> str | None:
        return self.owners.get(value)

    def register(self, config_dir: str, param: str, value: str) -> None:
        requestor = f"{config_dir}, {param}"
        owner = self.owners.get(value)
        if owner is None:
            self.owners[value] = requestor
        elif owner != requestor:
            raise PostmultiError(f"instance {config_dir}, {param}={value} conflicts with "
                                 f"instance {owner}={value}")


class PostmultiError(Exception):
    """A fatal error, in Postfix's words."""


def has_prefix(name: str) -> bool:
    return name.startswith(NAME_PREFIXES)


def name_suffix(name: str) -> str:
    for prefix in NAME_PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def safe_name(text: str) -> bool:
    return bool(text) and all(c.isascii() and (c.isalnum() or c in SAFE_PUNCT) for c in text)


def check_name_assignments(assignment: Assignment) -> None:
    """The syntax of a new instance name (it also names directories) and
    group name; "" (from "-") is always valid."""
    name = assignment.name
    if name:
        if not safe_name(name):
            raise PostmultiError(f"Unsafe characters in new instance name: '{name}'")
        if "/" in name:
            raise PostmultiError(f"Illegal '/' character in new instance name: '{name}'")
        if not has_prefix(name):
            raise PostmultiError("New instance name must start with "
                                 + " or ".join(f"'{p}'" for p in NAME_PREFIXES))
    if assignment.group and not safe_name(assignment.group):
        raise PostmultiError(f"Unsafe characters in '-G {assignment.group}'")


def private_path(param: str, primary_value: str, name: str | None) -> str:
    """The default directory of a new instance: the primary's, with its
    last component replaced by the instance name (/etc/hato ->
    /etc/postfix-deux, /var/spool/hato -> /var/spool/hato-deux)."""
    if not name:
        raise PostmultiError(f"Missing {param} parameter value")
    if not primary_value.startswith("/"):
        raise PostmultiError(f"Invalid default {param} parameter value: '{primary_value}': "
                             "specify an absolute pathname")
    parent = primary_value.rstrip("/").rsplit("/", 1)[0].rstrip("/")
    return f"{parent}/{name}"


def parse_setting(arg: str, action: str) -> tuple[str, str]:
    """A ``name=value`` argument of create/import: which private directory,
    and its absolute path without trailing slashes."""
    name, sep, value = arg.partition("=")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise PostmultiError(f"Malformed parameter setting '{arg}'")
    allowed = ("config_directory",) if action == "import" else (
        "config_directory", "queue_directory", "data_directory")
    if name not in allowed:
        raise PostmultiError(f"Parameter '{name}' not valid with action {action}")
    if not value.startswith("/"):
        raise PostmultiError(f"Parameter setting '{name}' is not an absolute path")
    value = value.rstrip("/")
    if not value:
        raise PostmultiError(f"Parameter setting '{name}' is the root directory")
    return name, value


def matches(ip: Instance, sel: Selection) -> bool:
    """Select by instance name (also without its prefix: "deux" selects
    postfix-deux), configuration directory (an absolute path), group, or
    "-" for the primary."""
    if sel.kind == "all":
        return True
    if sel.kind == "group":
        return bool(ip.group) and ip.group == sel.value
    if sel.kind == "name":
        wanted = sel.value
        if wanted.startswith("/") or not ip.name:
            have = ip.config_dir
        elif not has_prefix(wanted) and has_prefix(ip.name):
            have = name_suffix(ip.name)
        else:
            have = ip.name
        return wanted == have or (ip.primary and wanted == "-")
    return False


def split_dirs(value: str) -> list[str]:
    return [d for d in value.replace(",", " ").split() if d]


class Cluster:
    """The primary and its secondary instances, in order, with their claims."""

    def __init__(self, primary_dir: str, config: Config):
        self.primary_dir = primary_dir
        self.config = config
        self.settings: Settings = config.settings()
        self.instances: list[Instance] = []
        self.claims = Claims()

    @property
    def secondaries(self) -> list[Instance]:
        return self.instances[1:]

    def primary_instance(self) -> Instance:
        s = self.settings
        return Instance(self.primary_dir, s.str("queue_directory"), s.str("data_directory"),
                        s.str("multi_instance_name"), s.str("multi_instance_group"),
                        s.bool("multi_instance_enable"), primary=True)

    def claim(self, ip: Instance) -> None:
        if ip.name:
            self.claims.register(ip.config_dir, "multi_instance_name", ip.name)
        self.claims.register(ip.config_dir, "config_directory", ip.config_dir)
        self.claims.register(ip.config_dir, "queue_directory", ip.queue_dir)
        self.claims.register(ip.config_dir, "data_directory", ip.data_dir)

    def insert(self, ip: Instance, where: Selection | None = None) -> None:
        """Add *ip* before the first secondary that *where* selects (at the
        end without a selection)."""
        self.claim(ip)
        if where is not None and where.kind != "none":
            for pos, old in enumerate(self.instances):
                if pos > 0 and matches(old, where):
                    self.instances.insert(pos, ip)
                    return
            if where.kind != "all":
                raise PostmultiError("No matching secondary instances")
        self.instances.append(ip)

    def load(self) -> None:
        """The primary (enabled when there is no secondary: single-instance
        mode), then every directory of multi_instance_directories."""
        for param in ("command_directory", "daemon_directory"):
            self.claims.register(self.primary_dir, param, self.settings.str(param))
        dirs = split_dirs(self.settings.str("multi_instance_directories"))
        primary = self.primary_instance()
        if not dirs:
            primary.enabled = True
        self.insert(primary)
        for d in dirs:
            self.insert(load_instance(d))

    def select(self, sel: Selection, unlink: bool = False) -> Instance:
        """The instance that ``-i`` names for an edit; with *unlink* it
        leaves the list (it must be a disabled secondary)."""
        if sel.kind != "name":
            raise PostmultiError("Select an instance via '-i name'")
        for pos, ip in enumerate(self.instances):
            if matches(ip, sel):
                if unlink:
                    if pos == 0:
                        raise PostmultiError("Cannot remove the primary instance")
                    if ip.enabled:
                        raise PostmultiError("Cannot remove enabled instances")
                    del self.instances[pos]
                return ip
        raise PostmultiError(f"No instance named {sel.value}")

    def directories_value(self) -> str:
        return " ".join(ip.config_dir for ip in self.secondaries)


def load_instance(config_dir: str) -> Instance:
    """A secondary instance's private settings, from its main.cf."""
    try:
        s = load_config(config_dir).settings()
        return Instance(config_dir, s.str("queue_directory"), s.str("data_directory"),
                        s.str("multi_instance_name"), s.str("multi_instance_group"),
                        s.bool("multi_instance_enable"))
    except ConfigError as err:
        raise PostmultiError(f"Cannot parse {config_dir}/main.cf file: {err}") from None


def load_config(config_dir: str) -> Config:
    from ..io.hostinfo import host_facts

    return Config.load(config_dir, host_facts(), explicit_dir=True)


# -- which primary ---------------------------------------------------------------


def default_primary() -> str:
    return os.environ.get(PRIMARY_ENV) or DEFAULT_CONFIG_DIRECTORY


def same_dir(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def listed_secondary(primary_dir: str, config_dir: str) -> bool:
    """Does the primary in *primary_dir* list *config_dir* as a secondary?"""
    if same_dir(primary_dir, config_dir):
        return False
    path = os.path.join(primary_dir, "main.cf")
    if not os.path.exists(path):
        return False
    try:
        dirs = split_dirs(load_config(primary_dir).settings().str("multi_instance_directories"))
    except ConfigError:
        return False
    return any(same_dir(d, config_dir) for d in dirs)


def primary_directory() -> str:
    """``hato -c DIR`` or $MAIL_CONFIG, else $HATO_PRIMARY_CONFIG, else
    /etc/hato; never a secondary of the default primary."""
    default = default_primary()
    given = os.environ.get("MAIL_CONFIG")
    if given:
        if listed_secondary(default, given):
            raise PostmultiError(f"Non-default configuration directory: MAIL_CONFIG={given}")
        return os.path.abspath(given)
    return os.path.abspath(default)


def start_refusal(config: Config) -> str | None:
    """Why ``hato start`` must not start the instance of *config*: it is a
    secondary instance of the primary and multi_instance_enable is off."""
    primary = default_primary()
    if not listed_secondary(primary, config.config_dir):
        return None
    s = config.settings()
    if s.bool("multi_instance_enable"):
        return None
    name = s.str("multi_instance_name") or config.config_dir
    return (f"multi_instance_enable!=yes in secondary instance {config.config_dir}, "
            f"run 'hato postmulti -i {name} -e enable' first")


# -- the hato commands that postmulti runs -------------------------------------------


def hato_command() -> list[str]:
    """How to run hato itself: the ``hato`` program this process runs as,
    else this interpreter with ``-m hato``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "hato" and os.access(argv0, os.X_OK):
        return [os.path.abspath(argv0)]
    return [sys.executable, "-m", "hato"]


def hato_bin_directory() -> str:
    return os.path.dirname(hato_command()[0])


def wrapper_value() -> str:
    """multi_instance_wrapper for ``-e init``: hato's postmulti -p."""
    return " ".join([*hato_command(), "postmulti", "-p", "--"])

"""Cyrus SASL's application configuration file (``smtpd.conf``).

With ``smtpd_sasl_type = cyrus`` Postfix's smtpd asks libsasl, which reads
``$smtpd_sasl_path.conf`` (``smtpd.conf`` by default) from the first
directory that has it:

* ``cyrus_sasl_config_path`` (colon-separated) when it is set;
* otherwise, as Debian's Postfix does, ``$config_directory/sasl`` and
  ``/usr/lib/sasl`` — hato adds ``/etc/postfix/sasl`` after its own
  configuration directory, so an existing Postfix setup is found — then
  libsasl's own list on Debian (``/etc/sasl2``, ``/etc/sasl``,
  ``/usr/lib/x86_64-linux-gnu/sasl2``, ``/usr/lib/sasl2``) and
  ``/usr/local/lib/sasl2``.

Syntax, as libsasl's ``sasl_config_init``: ``key: value`` lines; blank lines
and lines whose first non-blank is ``#`` are skipped; the key (letters,
digits, ``-``, ``_``; case-insensitive) must be followed directly by ``:``
and a non-empty value; libsasl refuses the whole file otherwise. When a
key appears twice the first one counts.

Options hato uses: ``pwcheck_method`` (``saslauthd``, ``auxprop``, several
separated by blanks, tried in order; default ``auxprop``), ``mech_list``
(default: every mechanism), ``saslauthd_path`` (default
``/var/run/saslauthd/mux``), ``auxprop_plugin`` (``sasldb``; ``sql`` and
``ldapdb`` are named as unsupported), ``sasldb_path`` (default: hato's own
database, ``$config_directory/sasldb.lmdb``; hato does not read Cyrus'
Berkeley DB ``/etc/sasldb2``), ``log_level``. Other keys are kept and
reported.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..config.values import C_SPACE
from .saslauthd import DEFAULT_SASLAUTHD_PATH

DEFAULT_SASLDB_PATH = "/etc/sasldb2"
LIBSASL_CONFIG_PATH = ("/etc/sasl2", "/etc/sasl", "/usr/lib/x86_64-linux-gnu/sasl2",
                       "/usr/lib/sasl2", "/usr/local/lib/sasl2")

PWCHECK_METHODS = ("saslauthd", "auxprop")
#: pwcheck_method values libsasl knows and hato does not do.
UNSUPPORTED_PWCHECK = {"authdaemond": "Courier authdaemond", "pwcheck": "the old pwcheck daemon",
                       "alwaystrue": "it accepts every password", "sasldb": "use auxprop"}
AUXPROP_PLUGINS = ("sasldb",)
UNSUPPORTED_AUXPROP = {"sql": "SQL databases", "ldapdb": "LDAP", "sasldb2": "spell it sasldb"}
USED_KEYS = frozenset({"pwcheck_method", "mech_list", "saslauthd_path", "auxprop_plugin",
                       "sasldb_path", "log_level"})

_LINE = re.compile(r"([A-Za-z0-9_-]*)(.*)", re.DOTALL)


@dataclass
class CyrusConf:
    """One parsed file (or the defaults when *path* is None). *errors* are
    problems that keep SASL from working as configured; *warnings* the
    rest; each names the file and line."""

    path: str | None
    options: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    errors: list[ConfigError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def line(self, key: str) -> int | None:
        return self.lines.get(key)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        if self.path and line:
            return f"{self.path}, line {line}"
        return self.path or "Cyrus SASL defaults"

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.options.get(key, default)

    @property
    def pwcheck_methods(self) -> list[str]:
        return (self.options.get("pwcheck_method") or "auxprop").lower().split()

    @property
    def mech_list(self) -> list[str] | None:
        """The mechanisms to offer (upper case), None when not restricted."""
        value = self.options.get("mech_list")
        if value is None:
            return None
        return [m.upper() for m in value.replace(",", " ").split()]

    @property
    def saslauthd_path(self) -> str:
        return self.options.get("saslauthd_path") or DEFAULT_SASLAUTHD_PATH

    @property
    def auxprop_plugins(self) -> list[str]:
        """Named plugins; libsasl without the option tries every installed
        one, which on Debian is sasldb."""
        value = self.options.get("auxprop_plugin")
        return value.lower().split() if value else ["sasldb"]

    @property
    def sasldb_path(self) -> str | None:
        """The option, or None: hato's own default (libsasl's would be
        :data:`DEFAULT_SASLDB_PATH`, a Berkeley DB hato does not read)."""
        return self.options.get("sasldb_path")

    @property
    def log_level(self) -> int:
        value = self.options.get("log_level", "")
        try:
            return int(value)
        except ValueError:
            return 1  # libsasl's SASL_LOG_ERR default

    def unknown_keys(self) -> list[tuple[str, int | None]]:
        return [(k, self.lines.get(k)) for k in self.options if k not in USED_KEYS]

    def check(self) -> None:
        """Raise the first error."""
        if self.errors:
            raise self.errors[0]


def search_path(cyrus_sasl_config_path: str = "", config_directory: str = "") -> list[str]:
    """The directories to look in, in order."""
    if cyrus_sasl_config_path.strip():
        dirs = [d for d in cyrus_sasl_config_path.split(":") if d]
    else:
        dirs = []
        if config_directory:
            dirs.append(os.path.join(config_directory, "sasl"))
        dirs += ["/etc/postfix/sasl", "/usr/lib/sasl", *LIBSASL_CONFIG_PATH]
    out: list[str] = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def find_conf(app_name: str, dirs: list[str]) -> str | None:
    """The first ``DIR/app_name.conf`` that exists."""
    for d in dirs:
        path = os.path.join(d, app_name + ".conf")
        if os.path.isfile(path):
            return path
    return None


def parse_cyrus_conf(text: str, path: str) -> CyrusConf:
    conf = CyrusConf(path)
    # libsasl reads with fgets() (lines end at \n only) and skips and trims
    # with isspace()
    for lineno, raw in enumerate(text.split("\n"), 1):
        stripped = raw.strip(C_SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        m = _LINE.match(stripped)
        assert m is not None
        key, rest = m.group(1).lower(), m.group(2)
        if not key or not rest.startswith(":"):
            conf.errors.append(ConfigError(
                "syntax error: expected \"option: value\" (libsasl refuses the whole file)",
                path, lineno))
            continue
        value = rest[1:].strip(C_SPACE)
        if not value:
            conf.errors.append(ConfigError(f"{key}: empty value (libsasl refuses the whole "
                                           f"file)", path, lineno))
            continue
        if key in conf.options:
            conf.warnings.append(f"{path}, line {lineno}: {key} is already set at line "
                                 f"{conf.lines[key]}; the first setting counts")
            continue
        conf.options[key] = value
        conf.lines[key] = lineno
    _validate(conf)
    return conf


def _validate(conf: CyrusConf) -> None:
    path = conf.path
    for method in conf.pwcheck_methods:
        if method in PWCHECK_METHODS:
            continue
        why = UNSUPPORTED_PWCHECK.get(method)
        text = (f"pwcheck_method {method} is not supported by hato ({why})" if why
                else f"unknown pwcheck_method \"{method}\"")
        conf.errors.append(ConfigError(text, path, conf.line("pwcheck_method")))
    if "auxprop" in conf.pwcheck_methods:
        for plugin in conf.auxprop_plugins:
            if plugin in AUXPROP_PLUGINS:
                continue
            why = UNSUPPORTED_AUXPROP.get(plugin)
            text = (f"auxprop_plugin {plugin} is not supported by hato ({why}); "
                    f"hato reads sasldb only" if why
                    else f"unknown auxprop_plugin \"{plugin}\"; hato reads sasldb only")
            conf.errors.append(ConfigError(text, path, conf.line("auxprop_plugin")))
    if "log_level" in conf.options and not (conf.options["log_level"].lstrip("-").isascii()
                                          and conf.options["log_level"].lstrip("-").isdigit()):
        conf.errors.append(ConfigError(f"log_level: not a number: {conf.options['log_level']}",
                                       path, conf.line("log_level")))
    if "saslauthd_path" in conf.options and not os.path.isabs(conf.options["saslauthd_path"]):
        conf.errors.append(ConfigError("saslauthd_path: must be an absolute path",
                                       path, conf.line("saslauthd_path")))
    for key, line in conf.unknown_keys():
        where = f"{path}, line {line}" if path and line else (path or "")
        conf.warnings.append(f"{where}: Cyrus SASL option {key} is not used by hato")


def read_cyrus_conf(path: str) -> CyrusConf:
    """Parse *path*; an unreadable file is a ConfigError."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as err:
        raise ConfigError(f"cannot read Cyrus SASL configuration: {err.strerror}", path) from None
    return parse_cyrus_conf(text, path)


def load_cyrus_conf(app_name: str = "smtpd", *, cyrus_sasl_config_path: str = "",
                    config_directory: str = "") -> CyrusConf:
    """Find and read ``app_name.conf``. When there is none, the result has
    *path* None, libsasl's defaults and a warning naming where hato looked."""
    if not app_name or "/" in app_name:
        raise ConfigError(f"smtpd_sasl_path: bad Cyrus application name \"{app_name}\"")
    dirs = search_path(cyrus_sasl_config_path, config_directory)
    path = find_conf(app_name, dirs)
    if path is None:
        conf = CyrusConf(None)
        conf.warnings.append(
            f"no {app_name}.conf in {':'.join(dirs)}; using Cyrus SASL's defaults "
            f"(pwcheck_method: auxprop, auxprop_plugin: sasldb — hato's own sasldb —, "
            f"every mechanism)")
        return conf
    return read_cyrus_conf(path)


__all__ = ["CyrusConf", "DEFAULT_SASLAUTHD_PATH", "DEFAULT_SASLDB_PATH", "find_conf",
           "load_cyrus_conf", "parse_cyrus_conf", "read_cyrus_conf", "search_path"]

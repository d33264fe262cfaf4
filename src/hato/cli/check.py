"""``hato check``: validate an instance's configuration before anything runs,
as ``postfix check`` does.

It reads main.cf and master.cf and reports, each with file and line:

* syntax errors (a line without ``=``, a master.cf entry with too few
  columns, an unbalanced ``${``) — errors;
* values that do not parse as their parameter's type or lie outside its
  bounds — errors;
* parameters nothing uses (typos) — warnings;
* Postfix parameters hato does not implement — named as such;
* master.cf services whose daemon hato does not run (yet) — named as such;
* TLS: a security level or wrapper mode without a certificate, files that
  do not load, bad protocol or cipher lists — errors;
* smtpd restriction lists (main.cf and each smtpd service's ``-o``
  overrides): unknown restriction names — errors; restrictions hato does
  not do yet — named as such; no relay protection — an error, as Postfix's
  smtpd refuses to run without it; reject_unverified_sender/recipient
  without a verify service in master.cf — a warning;
* address verification: an address_verify_map hato cannot keep, an
  address_verify_sender that starts or ends with ``@`` — errors;
* SASL (main.cf and each smtpd service with smtpd_sasl_auth_enable = yes):
  the server configuration built without connecting — unknown
  smtpd_sasl_type or security options, smtpd.conf problems (missing file,
  unsupported pwcheck_method or auxprop plugin, CRAM-MD5 via saslauthd) —
  with file and line;
* missing or unsafe paths, unknown mail_owner/setgid_group when run as root;
* unsafe owners and modes (:func:`hato.master.layout.permission_problems`,
  with postfix-script's wording: ``not owned by root: PATH``, ``group or
  other writable: PATH``, ``not owned by MAIL_OWNER: PATH``, ``not owned
  by group SETGID_GROUP: PATH``) — warnings; ``hato set-permissions``
  repairs them.

Exit status 0 when there are no errors, 1 otherwise.
"""

from __future__ import annotations

import grp
import os
import pwd

from ..config.errors import ConfigError
from ..config.expand import Expander
from ..config.params import NO_EFFECT
from ..config.postfix_names import postfix_parameter_names
from ..config.settings import Config, Settings
from ..master.catalog import Status, describe
from .common import Messages, load_config, parse_options, run


class Report:
    def __init__(self, msgs: Messages):
        self.msgs = msgs
        self.errors = 0

    def error(self, text: str) -> None:
        self.errors += 1
        self.msgs.info(f"error: {text}")

    def warn(self, text: str) -> None:
        self.msgs.warn(text)


def _where(path: str, line: int | None) -> str:
    return f"{path}, line {line}" if line else path


def check_parameters(cfg: Config, report: Report) -> None:
    known = cfg.known()
    postfix_names = postfix_parameter_names()
    main = cfg.main
    for name, value, line in cfg.unused():
        where = _where(main.path, line)
        if name in postfix_names:
            report.warn(f"{where}: Postfix parameter {name} is not implemented by hato "
                        f"and has no effect: {name}={value}")
        else:
            report.warn(f"{where}: unused parameter: {name}={value}")
    settings = cfg.settings()
    for name in main.values():
        if name not in known:
            continue
        where = _where(main.path, main.lineno(name))
        if name in NO_EFFECT:
            report.warn(f"{where}: {name} is accepted but has no effect in hato: "
                        f"{NO_EFFECT[name]}")
        try:
            settings.check(name)
        except ConfigError as err:
            report.error(f"{where}: {err.message}")
    for svc in cfg.master.services:
        overrides = svc.overrides()
        svc_settings = cfg.settings(svc)
        where = _where(cfg.master.path, svc.lineno)
        for name, value in overrides.items():
            if name not in known:
                if name in postfix_names:
                    report.warn(f"{where}: service {svc.key}: Postfix parameter {name} is not "
                                f"implemented by hato and has no effect: {name}={value}")
                else:
                    report.warn(f"{where}: service {svc.key}: unused parameter: {name}={value}")
                continue
            if name in NO_EFFECT:
                report.warn(f"{where}: service {svc.key}: {name} is accepted but has no "
                            f"effect in hato: {NO_EFFECT[name]}")
            try:
                svc_settings.check(name)
            except ConfigError as err:
                report.error(f"{where}: service {svc.key}: {err.message}")
    for path, name in cfg.undefined_references():
        report.warn(f"{path}: undefined parameter: {name}")


# Every lookup table type Postfix knows (postconf -m, plus the ones Debian
# builds as plugins): a value "type:name" with one of these types is a table.
POSTFIX_DICT_TYPES = frozenset({
    "btree", "cdb", "cidr", "environ", "fail", "hash", "inline", "internal", "ldap",
    "lmdb", "memcache", "mysql", "nis", "nisplus", "pcre", "pgsql", "pipemap", "proxy",
    "randmap", "regexp", "sdbm", "socketmap", "sqlite", "static", "tcp", "texthash",
    "unionmap", "unix",
})
# Types whose opening would talk to a server: check their type only.
_NETWORK_TYPES = frozenset({"pgsql", "socketmap", "memcache", "ldap", "mysql", "tcp"})


def _table_specs(value: str) -> list[str]:
    from ..tables.patternfile import split_braced

    specs = []
    last = ""
    for item in split_braced(value):
        type_name, sep, _ = item.partition(":")
        # check_policy_service names a policy server, not a table
        if sep and type_name in POSTFIX_DICT_TYPES \
                and last.lower() != "check_policy_service":
            specs.append(item)
        last = item
    return specs


#: Tables a service creates and writes itself: they need not exist yet.
WRITTEN_TABLES = frozenset({"postscreen_cache_map", "address_verify_map",
                            # the TLS session caches live in the agents' memory
                            "smtp_tls_session_cache_database",
                            "lmtp_tls_session_cache_database"})


def check_tables(cfg: Config, report: Report) -> None:
    """Every table a parameter names: a type hato supports, and a file that
    opens (syntax problems reported with the table's file and line)."""
    from ..config.params import Kind
    from ..tables.base import TableError
    from ..tables.registry import open_table, type_names

    supported = set(type_names())
    known = cfg.known()
    places: list[tuple[str, str, str, Settings]] = []
    main_settings = cfg.settings()
    for name in cfg.main.values():
        places.append((_where(cfg.main.path, cfg.main.lineno(name)), name, "", main_settings))
    for svc in cfg.master.services:
        svc_settings = cfg.settings(svc)
        for name in svc.overrides():
            places.append((_where(cfg.master.path, svc.lineno), name,
                           f"service {svc.key}: ", svc_settings))
    seen: set[str] = set()
    for where, name, prefix, settings in places:
        param = known.get(name)
        if param is None or param.kind not in (Kind.MAPS, Kind.RESTRICTIONS):
            continue
        if name in WRITTEN_TABLES:
            continue  # the service creates it (only its type is checked there)
        try:
            value = settings.str(name)
        except ConfigError:
            continue  # reported by check_parameters
        for spec in _table_specs(value):
            type_name = spec.partition(":")[0]
            inner = spec
            while type_name == "proxy":
                inner = inner.partition(":")[2]
                type_name = inner.partition(":")[0]
            if type_name not in supported:
                report.error(f"{where}: {prefix}{name}: table {spec}: dictionary type "
                             f"{type_name} is not supported by hato (see docs/compat.md)")
                continue
            if type_name in _NETWORK_TYPES or spec in seen:
                continue
            seen.add(spec)
            try:
                table = open_table(spec)
            except TableError as err:
                report.error(f"{where}: {prefix}{name}: table {spec}: {err}")
                continue
            except OSError as err:
                report.error(f"{where}: {prefix}{name}: table {spec}: {err}")
                continue
            table.close()  # problems inside the file were logged as warnings


def check_services(cfg: Config, report: Report) -> None:
    seen: dict[str, int] = {}
    for svc in cfg.master.services:
        where = _where(cfg.master.path, svc.lineno)
        if svc.key in seen:
            report.error(f"{where}: duplicate service {svc.key} (first at line {seen[svc.key]})")
        seen.setdefault(svc.key, svc.lineno)
        if svc.type == "inet":
            try:
                svc.endpoint()
            except ConfigError as err:
                report.error(f"{where}: service {svc.key}: {err.message}")
        info = describe(svc.command)
        if info is None:
            report.warn(f"{where}: service {svc.key}: unknown daemon \"{svc.command}\"; "
                        f"hato cannot run it")
        elif info[0] is Status.PLANNED:
            report.warn(f"{where}: service {svc.key}: daemon {svc.command} ({info[1]}) is "
                        f"{Status.PLANNED.value} in hato")
        if svc.command == "spawn":
            from ..config.mastercf import daemon_options
            from ..services.spawn import parse_command, resolve_user

            try:
                user, _argv = parse_command(svc.args[daemon_options(svc.args)[1]:])
                resolve_user(user, cfg.settings().str("mail_owner"))
            except ConfigError as err:
                report.error(f"{where}: service {svc.key}: spawn: {err.message}")


RESTRICTION_PARAMS = (
    "smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
    "smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions", "smtpd_etrn_restrictions")

#: Restrictions Postfix has that hato names but does not do yet.
NOT_YET: dict[str, str] = {}


def _restriction_words(value: str) -> list[str]:
    """The restriction names of a list (table and argument words skipped)."""
    from ..config.values import split_list
    from ..policy.smtpd_restrictions import ARG_COMMANDS, MAP_COMMANDS

    words = split_list(value)  # a { ... } argument stays one word
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
            continue
        low = word.lower()
        if low in MAP_COMMANDS or low in ARG_COMMANDS:
            skip = True
        if ":" in word or "=" in word or word.startswith("/") or " " in word:
            continue
        out.append(word)
    return out


def check_restrictions(cfg: Config, report: Report) -> None:
    """smtpd restriction lists: unknown names, names hato does not do yet,
    and what would stop smtpd from starting (no relay protection, an
    undefined restriction class), for main.cf and every smtpd service."""
    from ..policy.dnsquery import StaticDns
    from ..policy.smtpd_check import KNOWN_RESTRICTIONS, SmtpdChecks

    targets: list[tuple[str | None, Settings]] = [(None, cfg.settings())]
    for svc in cfg.master.services:
        if svc.command == "smtpd" and svc.overrides:
            targets.append((f"{_where(cfg.master.path, svc.lineno)}: service {svc.key}",
                            cfg.settings(svc)))
    reported: set[tuple[str, str, str]] = set()
    fatal: set[str] = set()
    for where, settings in targets:
        classes = {c.lower() for c in settings.list("smtpd_restriction_classes")}
        for param in RESTRICTION_PARAMS + tuple(sorted(classes)):
            here = where or _where(cfg.main.path, cfg.main.lineno(param))
            try:
                value = settings.str(param)
            except ConfigError:
                continue
            for word in _restriction_words(value):
                low = word.lower()
                key = (param, low, value)
                if key in reported:
                    continue
                if low in NOT_YET:
                    reported.add(key)
                    report.warn(f"{here}: {param}: {word} is not implemented by hato yet "
                                f"({NOT_YET[low]})")
                elif low not in KNOWN_RESTRICTIONS and low not in classes:
                    reported.add(key)
                    report.error(f"{here}: {param}: unknown smtpd restriction \"{word}\"")
        try:
            SmtpdChecks(settings, StaticDns({})).close()
        except ConfigError as err:
            if err.message not in fatal:  # a service inherits main.cf's problem
                fatal.add(err.message)
                report.error(f"{where or cfg.main.path}: {err.message}")
        except Exception:
            pass  # table problems are check_tables' to report


def check_tls(cfg: Config, report: Report) -> None:
    """The TLS policy of main.cf and of every smtpd service, built as smtpd
    builds it: a security level or wrapper mode without a certificate,
    certificates or keys that do not load, bad protocol or cipher lists."""
    from ..io.tls import tls_policy

    seen: set[str] = set()
    targets: list[tuple[str | None, Settings]] = [(None, cfg.settings())]
    for svc in cfg.master.services:
        if svc.command == "smtpd":
            targets.append((f"{_where(cfg.master.path, svc.lineno)}: service {svc.key}",
                            cfg.settings(svc)))
    for where, settings in targets:
        try:
            tls_policy(settings)
        except ConfigError as err:
            if err.message in seen:  # a service inherits main.cf's problem
                continue
            seen.add(err.message)
            name = err.message.split(":", 1)[0].split()[0]
            report.error(f"{where or _where(cfg.main.path, cfg.main.lineno(name))}: "
                         f"{err.message}")


def check_anvil(cfg: Config, report: Report) -> None:
    """hato_anvil_backend: local, or a Redis URL that redis-py accepts."""
    value = cfg.settings().str("hato_anvil_backend").strip()
    if value in ("", "local"):
        return
    where = _where(cfg.main.path, cfg.main.lineno("hato_anvil_backend"))
    if not value.startswith(("redis:", "rediss:", "unix:")):
        report.error(f"{where}: hato_anvil_backend: expected local or redis:URL, "
                     f"not {value!r}")
        return
    from ..io.anvil_redis import RedisCounters

    try:
        RedisCounters(value, rate_time_unit=60, instance="check")
    except ValueError as err:
        report.error(f"{where}: {err}")


def check_verify(cfg: Config, report: Report) -> None:
    """Address verification: reject_unverified_sender/recipient need the
    verify service in master.cf; its cache must be a btree:, hash: or lmdb:
    file (or empty), and address_verify_sender a usable address."""
    from ..io.verify_cache import VerifyCache
    from ..policy.verify import probe_sender

    settings = cfg.settings()
    used: list[tuple[str, str]] = []
    targets: list[tuple[str | None, Settings]] = [(None, settings)]
    for svc in cfg.master.services:
        if svc.command == "smtpd":
            targets.append((f"{_where(cfg.master.path, svc.lineno)}: service {svc.key}",
                            cfg.settings(svc)))
    for where, s in targets:
        classes = [c for c in s.list("smtpd_restriction_classes")]
        for param in RESTRICTION_PARAMS + tuple(classes):
            try:
                words = _restriction_words(s.str(param))
            except ConfigError:
                continue
            for word in words:
                if word.lower() in ("reject_unverified_sender", "reject_unverified_recipient"):
                    used.append((where or _where(cfg.main.path, cfg.main.lineno(param)),
                                 word.lower()))
    if used:
        name = settings.str("address_verify_service_name")
        if not any(svc.command == "verify" and svc.name == name and svc.type == "unix"
                   for svc in cfg.master.services):
            where, word = used[0]
            report.warn(f"{where}: {word} needs the {name} service: add \"{name} unix - - n "
                        f"- 1 verify\" to {cfg.master.path}; until then it answers "
                        f"\"address verification problem\"")
    try:
        VerifyCache(settings, report).close()
    except ConfigError as err:
        report.error(f"{_where(cfg.main.path, cfg.main.lineno('address_verify_map'))}: "
                     f"{err.message}")
    try:
        probe_sender(settings.str("address_verify_sender"),
                     settings.time("address_verify_sender_ttl"), 0)
    except ValueError as err:
        report.error(f"{_where(cfg.main.path, cfg.main.lineno('address_verify_sender'))}: "
                     f"{err}")
    except ConfigError:
        pass  # a bad time value is check_parameters' to report


def check_postscreen(cfg: Config, report: Report) -> None:
    """postscreen's own syntax, for main.cf and each postscreen service:
    postscreen_dnsbl_sites entries, postscreen_access_list items, the
    actions and the upstream proxy protocol."""
    from ..policy.postscreen_dnsbl import parse_sites

    targets = [(None, cfg.settings())] + [
        (f"{_where(cfg.master.path, svc.lineno)}: service {svc.key}", cfg.settings(svc))
        for svc in cfg.master.services if svc.command == "postscreen"]
    seen: set[str] = set()
    for where, s in targets:
        problems: list[tuple[str, str]] = []
        try:
            parse_sites(s.list("postscreen_dnsbl_sites"))
        except ValueError as err:
            problems.append(("postscreen_dnsbl_sites", str(err)))
        for item in s.list("postscreen_access_list"):
            if ":" not in item and item.lower() not in ("permit_mynetworks", "permit",
                                                         "reject", "dunno"):
                problems.append(("postscreen_access_list",
                                 f"postscreen_access_list: unknown item: {item}"))
        for name in ("postscreen_denylist_action", "postscreen_greet_action",
                     "postscreen_dnsbl_action", "postscreen_pipelining_action",
                     "postscreen_non_smtp_command_action", "postscreen_bare_newline_action"):
            if s.str(name).lower() not in ("ignore", "enforce", "drop"):
                problems.append((name, f"{name}: expected ignore, enforce or drop, "
                                       f"not {s.str(name)!r}"))
        proxy = s.str("postscreen_upstream_proxy_protocol").lower()
        if proxy not in ("", "haproxy"):
            problems.append(("postscreen_upstream_proxy_protocol",
                             f"postscreen_upstream_proxy_protocol: unsupported protocol "
                             f"{proxy!r} (expected haproxy or nothing)"))
        for name, text in problems:
            if text in seen:
                continue
            seen.add(text)
            report.error(f"{where or _where(cfg.main.path, cfg.main.lineno(name))}: {text}")


def check_milters(cfg: Config, report: Report) -> None:
    """The milter lists, their per-milter settings, milter_protocol,
    milter_default_action and milter_macro_defaults, for main.cf and each
    smtpd or pickup service (their -o overrides)."""
    from ..proto import milter as M

    targets = [(None, cfg.settings())] + [
        (f"{_where(cfg.master.path, svc.lineno)}: service {svc.key}", cfg.settings(svc))
        for svc in cfg.master.services if svc.command in ("smtpd", "pickup")]
    seen: set[str] = set()
    for where, s in targets:
        problems: list[tuple[str, str]] = []
        specs = []
        for name in ("smtpd_milters", "non_smtpd_milters"):
            try:
                specs += [(name, spec) for spec in M.parse_milter_list(s.str(name))]
            except Exception as err:  # noqa: BLE001 - ConfigError with Postfix's text
                problems.append((name, f"{name}: {err}"))
        actions = ("accept", "reject", "tempfail", "quarantine")
        for name, value in [("milter_default_action", s.str("milter_default_action"))] + [
                (name, spec.default_action) for name, spec in specs]:
            if value is not None and value.lower() not in actions:
                problems.append((name, f"{name}: unknown milter default action {value!r} "
                                       f"(expected accept, reject, tempfail or quarantine)"))
        for name, value in [("milter_protocol", s.str("milter_protocol"))] + [
                (name, spec.protocol) for name, spec in specs]:
            if value is None:
                continue
            try:
                M.parse_protocol(value)
            except M.MilterConfigError as err:
                problems.append((name, f"{name}: {str(err).replace('milter {name}: ', '')}"))
        for name, spec in specs:
            try:
                spec.endpoint()
            except M.MilterConfigError as err:
                problems.append((name, f"{name}: " + str(err).replace("{name}", spec.name)))
        try:
            M.macro_defaults(s.str("milter_macro_defaults"))
        except Exception as err:  # noqa: BLE001
            problems.append(("milter_macro_defaults", f"milter_macro_defaults: {err}"))
        for name, text in problems:
            if text in seen:
                continue
            seen.add(text)
            report.error(f"{where or _where(cfg.main.path, cfg.main.lineno(name))}: {text}")


def check_sasl(cfg: Config, report: Report) -> None:
    """SASL server configuration of main.cf and of every smtpd service with
    smtpd_sasl_auth_enable = yes, built as smtpd would build it but without
    connecting: bad smtpd_sasl_type or security options, smtpd.conf
    problems (missing file, unsupported pwcheck_method or auxprop plugin,
    CRAM-MD5 through saslauthd), and sockets or databases that are not
    there (yet)."""
    from ..auth.server import plan_sasl

    targets: list[tuple[str | None, Settings]] = [(None, cfg.settings())]
    for svc in cfg.master.services:
        if svc.command == "smtpd":
            targets.append((f"{_where(cfg.master.path, svc.lineno)}: service {svc.key}",
                            cfg.settings(svc)))
    seen: set[str] = set()

    def say(kind: str, text: str, key: str | None = None) -> None:
        key = key or text
        if key in seen:  # a service inherits main.cf's problem
            return
        seen.add(key)
        (report.error if kind == "error" else report.warn)(text)

    for where, settings in targets:
        try:
            if not settings.bool("smtpd_sasl_auth_enable"):
                continue
        except ConfigError:
            continue  # check_parameters reports the value
        try:
            plan = plan_sasl(settings)
        except ConfigError as err:
            if err.path:
                say("error", str(err))
                continue
            name = err.message.split(":", 1)[0]
            here = where or _where(cfg.main.path, cfg.main.lineno(name))
            say("error", f"{here}: {err.message}", err.message)
            continue
        for error in plan.errors:
            say("error", str(error))
        for warning in plan.warnings:
            say("warn", warning)
        prefix = f"{where}: " if where else ""
        if plan.dovecot_path and not plan.dovecot_path.startswith("inet:") \
                and not os.path.exists(plan.dovecot_path):
            text = (f"smtpd_sasl_path: Dovecot auth socket {plan.dovecot_path} does not "
                    f"exist (is Dovecot running?)")
            say("warn", prefix + text, text)
        if plan.saslauthd_path and not os.path.exists(plan.saslauthd_path):
            say("warn", f"{plan.cyrus.where('saslauthd_path') if plan.cyrus else prefix}: "
                        f"saslauthd socket {plan.saslauthd_path} does not exist "
                        f"(is saslauthd running?)")
        if plan.sasldb_path and not os.path.exists(plan.sasldb_path):
            say("warn", f"{plan.cyrus.where('sasldb_path') if plan.cyrus else prefix}: "
                        f"SASL database {plan.sasldb_path} does not exist: no users can "
                        f"authenticate (create it with hato saslpasswd)")


def check_paths(cfg: Config, report: Report) -> None:
    path = os.path.join(cfg.config_dir, "master.cf")
    if not os.path.exists(path):
        report.warn(f"{path}: file not found; no services are defined")
    settings = cfg.settings()
    for name in ("queue_directory", "data_directory"):
        try:
            directory = settings.str(name)
        except ConfigError as err:
            report.error(str(err))
            continue
        if not os.path.isabs(directory):
            report.error(f"{name} = {directory}: must be an absolute path")
        elif not os.path.isdir(directory):
            parent = os.path.dirname(directory.rstrip("/")) or "/"
            if not os.access(parent, os.W_OK):
                report.error(f"{name} = {directory}: does not exist and cannot be created")
    if os.geteuid() == 0:
        owner = settings.str("mail_owner")
        group = settings.str("setgid_group")
        try:
            pw = pwd.getpwnam(owner)
            if pw.pw_uid == 0:
                report.error(f"mail_owner = {owner}: must not be the super-user")
        except KeyError:
            report.error(f"mail_owner = {owner}: unknown user; create it or set mail_owner")
        try:
            grp.getgrnam(group)
        except KeyError:
            report.error(f"setgid_group = {group}: unknown group; create it or set setgid_group")
    check_permissions(cfg, report)


def check_permissions(cfg: Config, report: Report) -> None:
    """Unsafe owners and modes of the configuration, queue and data
    directories, in postfix-script's words (``not owned by root: PATH``);
    ``hato set-permissions`` repairs them."""
    from ..master.layout import permission_problems

    try:
        problems = permission_problems(cfg.settings(), cfg.config_dir)
    except (KeyError, ConfigError, OSError):
        return  # an unknown mail_owner or setgid_group, a bad path: reported above
    for text in problems:
        report.warn(text)


def check_expansions(cfg: Config, report: Report) -> None:
    settings = cfg.settings()
    for name, value in cfg.main.values().items():
        try:
            Expander(settings.raw).expand(value)
        except ConfigError as err:
            report.error(f"{_where(cfg.main.path, cfg.main.lineno(name))}: {name}: {err.message}")


def body(msgs: Messages, argv: list[str]) -> int:
    opts, args = parse_options(argv, "c:v")
    config_dir = None
    for opt, val in opts:
        if opt == "-c":
            config_dir = val
    if args:
        msgs.fatal("usage: hato [-c config_dir] check")
    cfg = load_config(config_dir, process_name="check")
    report = Report(msgs)
    for w in cfg.main.warnings + cfg.master.warnings:
        report.warn(w)
    check_expansions(cfg, report)
    check_parameters(cfg, report)
    check_tables(cfg, report)
    check_services(cfg, report)
    check_restrictions(cfg, report)
    check_tls(cfg, report)
    check_sasl(cfg, report)
    check_anvil(cfg, report)
    check_verify(cfg, report)
    check_postscreen(cfg, report)
    check_milters(cfg, report)
    check_paths(cfg, report)
    if report.errors:
        msgs.info(f"{report.errors} error(s) in the configuration in {cfg.config_dir}")
        return 1
    return 0


def main(argv: list[str]) -> int:
    return run("hato", body, argv)

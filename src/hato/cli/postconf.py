"""``hato postconf``: show and edit main.cf and master.cf, as postconf(1).

    postconf [-dfhHnpvx] [-c dir] [-o name=value] [name ...]
    postconf -e [-c dir] name=value ...       postconf -X name ...
    postconf -# name ...
    postconf -M[fx] [service[/type] ...]      postconf -Me service/type='entry'
    postconf -MX service/type ...             postconf -M# service/type ...
    postconf -F[fhHx] [service[/type[/field]] ...]
    postconf -Fe service/type/field=value ...
    postconf -P[fhHx] [service[/type[/name]] ...]
    postconf -Pe service/type/name=value ...  postconf -PX service/type/name ...
    postconf -a | -A | -l | -m

Output, warnings and exit statuses follow Postfix's postconf.
"""

from __future__ import annotations

import sys

from ..config.expand import Expander
from ..config.maincf import split_nameval
from ..config.params import RAW_PARAMS
from ..config.postfix_names import postfix_parameter_names
from ..config.mastercf import FIELD_NAMES, MasterCf, Service, format_command, format_entry
from ..config.settings import Config, Settings
from .common import Fatal, Messages, load_config, parse_options, run

LINE_LIMIT = 80
INDENT = "    "

SERVER_SASL_TYPES = ("cyrus", "dovecot")
CLIENT_SASL_TYPES = ("cyrus",)
MAILBOX_LOCKS = ("flock", "fcntl", "dotlock")


def fold_line(text: str, fold: bool) -> str:
    """Postfix's -f: break lines longer than 80 columns at blanks."""
    if not fold or len(text) <= LINE_LIMIT:
        return text
    words = text.split(" ")
    lines: list[str] = []
    cur = ""
    for word in words:
        if cur and len(cur) + 1 + len(word) > LINE_LIMIT:
            lines.append(cur)
            cur = INDENT + word
        else:
            cur = f"{cur} {word}" if cur else word
    lines.append(cur)
    return "\n".join(lines)


class Postconf:
    def __init__(self, msgs: Messages):
        self.msgs = msgs
        self.mode: set[str] = set()
        self.config_dir: str | None = None
        self.overrides: dict[str, str] = {}
        self.out: list[str] = []

    # -- helpers ---------------------------------------------------------------

    def emit(self, text: str) -> None:
        self.out.append(fold_line(text, "f" in self.mode))

    def show(self, name: str, value: str) -> None:
        if "h" in self.mode:
            self.emit(value)
        elif "H" in self.mode:
            self.emit(name)
        else:
            self.emit(f"{name} = {value}" if value else f"{name} =")

    def load(self) -> Config:
        cfg = load_config(self.config_dir, process_name="postconf",
                          main_missing_ok="d" in self.mode)
        for w in cfg.main.warnings + cfg.master.warnings:
            self.msgs.warn(w)
        errors = cfg.syntax_errors()
        if errors:
            for err in errors[1:]:
                self.msgs.warn(str(err))
            raise errors[0]
        return cfg

    def warn_unused(self, cfg: Config) -> None:
        for path, name in cfg.undefined_references():
            self.msgs.warn(f"{path}: undefined parameter: {name}")
        postfix_names = postfix_parameter_names()
        for name, value, _line in cfg.unused():
            if name in postfix_names:
                self.msgs.warn(f"{cfg.main.path}: Postfix parameter not implemented by hato: "
                               f"{name}={value}")
            else:
                self.msgs.warn(f"{cfg.main.path}: unused parameter: {name}={value}")
        for svc, name, value in cfg.unused_master():
            if name in postfix_names:
                self.msgs.warn(f"{cfg.master.path}: Postfix parameter not implemented by hato: "
                               f"{name}={value}")
            else:
                self.msgs.warn(f"{cfg.master.path}: unused parameter: {name}={value}")

    def expand_value(self, settings: Settings, cfg: Config, value: str, where: str,
                     name: str | None = None) -> str:
        exp = Expander(settings.raw)
        value = (exp.expand_param(name, value) if name else exp.expand(value)).strip()
        for name in exp.undefined:
            self.msgs.warn(f"{where}: undefined parameter: {name}")
        return value

    # -- main.cf ---------------------------------------------------------------

    def show_params(self, names: list[str]) -> int:
        cfg = self.load()
        self.warn_unused(cfg)
        if "d" in self.mode:
            settings = None
        else:
            settings = cfg.settings(overrides=self.overrides)
        known = cfg.known()
        set_here = cfg.main_values()
        set_here.update(self.overrides)
        # Postfix parameters hato does not implement are still shown where
        # they are set, so that postconf -n lists the whole configuration.
        foreign = {n for n in set_here if n not in known and n in postfix_parameter_names()}

        def value_of(name: str) -> str | None:
            if name in foreign:
                if "d" in self.mode:
                    return None
                value = set_here[name]
                if "x" in self.mode and settings is not None:
                    value = self.expand_value(settings, cfg, value, cfg.main.path)
                return value
            if "d" in self.mode:
                value = cfg.default(name, known)
                if value is not None and "x" in self.mode and name not in RAW_PARAMS:
                    value = Expander(cfg.default_lookup).expand(value).strip()
                return value
            assert settings is not None
            if "n" in self.mode and name not in set_here:
                return None
            value = settings.raw(name)
            if value is not None and "x" in self.mode and name not in RAW_PARAMS:
                value = self.expand_value(settings, cfg, value, cfg.main.path, name)
            return value

        if names:
            for name in names:
                value = value_of(name) if name in known or name in foreign else None
                if value is None:
                    if name not in known or "n" not in self.mode:
                        self.msgs.warn(f"{name}: unknown parameter")
                    continue
                self.show(name, value)
            return 0
        if "n" in self.mode:
            candidates = sorted(n for n in set_here if n in known or n in foreign)
        else:
            candidates = sorted(known)
        for name in candidates:
            value = value_of(name)
            if value is not None:
                self.show(name, value)
        return 0

    def edit_main(self, args: list[str]) -> int:
        cfg = self.load()
        main = cfg.main
        if "e" in self.mode:
            pairs = []
            for arg in args:
                name, value = split_nameval(arg, "", 0)
                pairs.append((name, value))
            main.set_many(pairs)
        elif "X" in self.mode:
            for name in args:
                main.remove(name)
        elif "#" in self.mode:
            for name in args:
                main.comment_out(name)
        main.write()
        return 0

    # -- master.cf -------------------------------------------------------------

    @staticmethod
    def _pattern(text: str, parts: int, what: str) -> list[str]:
        pieces = text.split("/")
        if not pieces or len(pieces) > parts or any(p == "" for p in pieces):
            raise Fatal(f"-{what} option requires service_name[/type"
                        + ("[/" + ("field" if what == "F" else "parameter") + "]]" if parts == 3 else "]"))
        return pieces

    @staticmethod
    def _match(pattern: list[str], svc: Service) -> bool:
        def ok(pat: str, value: str) -> bool:
            return pat == "*" or pat == value
        if not ok(pattern[0], svc.name):
            return False
        return len(pattern) < 2 or ok(pattern[1], svc.type)

    def _settings_for(self, cfg: Config, svc: Service) -> Settings:
        return cfg.settings(svc, overrides=self.overrides)

    def show_master(self, args: list[str]) -> int:
        cfg = self.load()
        self.warn_unused(cfg)
        patterns = [self._pattern(a, 2, "M") for a in args]
        matched = [0] * len(patterns)
        for svc in cfg.master.services:
            hits = [i for i, p in enumerate(patterns) if self._match(p, svc)] if patterns else [-1]
            for i in hits:
                if i >= 0:
                    matched[i] += 1
                fields = svc.fields
                if "x" in self.mode:
                    fields = self._expand_fields(cfg, svc)
                self.out.append(format_entry(fields, "f" in self.mode))
        for i, count in enumerate(matched):
            if not count:
                self.msgs.warn(f'unmatched request: "{args[i]}"')
        return 0

    def _expand_fields(self, cfg: Config, svc: Service) -> list[str]:
        settings = self._settings_for(cfg, svc)
        fields = list(svc.fields)
        k = 8
        while k < len(fields):
            if fields[k] == "-o" and k + 1 < len(fields):
                name, sep, value = fields[k + 1].partition("=")
                if sep:
                    fields[k + 1] = name + "=" + self.expand_value(
                        settings, cfg, value, cfg.master.path)
                k += 2
                continue
            if not fields[k].startswith("-"):
                break
            k += 1
        return fields

    def show_fields(self, args: list[str]) -> int:
        cfg = self.load()
        self.warn_unused(cfg)
        reqs = []
        for a in args:
            pat = self._pattern(a, 3, "F")
            if len(pat) == 3 and pat[2] != "*" and pat[2] not in FIELD_NAMES:
                raise Fatal(f'invalid field name: "{pat[2]}"')
            reqs.append(pat)
        matched = [0] * len(reqs)

        def print_field(svc: Service, idx: int) -> None:
            fields = self._expand_fields(cfg, svc) if "x" in self.mode else svc.fields
            if idx == 7:
                prefix = "" if "h" in self.mode else f"{svc.name}/{svc.type}/{FIELD_NAMES[idx]} = "
                self.out.append(prefix + format_command(fields, "f" in self.mode, len(prefix)))
            elif "h" in self.mode:
                self.out.append(fields[idx])
            else:
                self.out.append(f"{svc.name}/{svc.type}/{FIELD_NAMES[idx]} = {fields[idx]}")

        for svc in cfg.master.services:
            if not reqs:
                for idx in range(8):
                    print_field(svc, idx)
                continue
            for i, pat in enumerate(reqs):
                if self._match(pat, svc):
                    matched[i] += 1
                    if len(pat) < 3 or pat[2] == "*":
                        for idx in range(8):
                            print_field(svc, idx)
                    else:
                        print_field(svc, FIELD_NAMES.index(pat[2]))
        for i, count in enumerate(matched):
            if not count:
                self.msgs.warn(f'unmatched request: "{args[i]}"')
        return 0

    def show_master_params(self, args: list[str]) -> int:
        cfg = self.load()
        self.warn_unused(cfg)
        reqs = [self._pattern(a, 3, "P") for a in args]
        matched = [0] * len(reqs)

        def print_param(svc: Service, name: str, value: str) -> None:
            if "x" in self.mode:
                value = self.expand_value(self._settings_for(cfg, svc), cfg, value,
                                          cfg.master.path)
            if "h" in self.mode:
                self.emit(value)
            else:
                self.emit(f"{svc.name}/{svc.type}/{name} = {value}")

        for svc in cfg.master.services:
            params = svc.overrides()
            if not reqs:
                for name in sorted(params):
                    print_param(svc, name, params[name])
                continue
            for i, pat in enumerate(reqs):
                if not self._match(pat, svc):
                    continue
                if len(pat) < 3 or pat[2] == "*":
                    for name in sorted(params):
                        print_param(svc, name, params[name])
                    matched[i] += 1
                elif pat[2] in params:
                    print_param(svc, pat[2], params[pat[2]])
                    matched[i] += 1
        for i, count in enumerate(matched):
            if not count:
                self.msgs.warn(f'unmatched request: "{args[i]}"')
        return 0

    def edit_master(self, args: list[str]) -> int:
        cfg = self.load()
        master: MasterCf = cfg.master
        if not args:
            raise Fatal("-Me, -MX, -M#, -Fe, -Pe and -PX require arguments")
        for arg in args:
            if "M" in self.mode:
                if "e" in self.mode:
                    key, sep, text = arg.partition("=")
                    if not sep:
                        raise Fatal(f'-Me requires service/type=entry: "{arg}"')
                    name, type_ = self._service_type(key.strip())
                    master.set_entry(name, type_, text.strip())
                else:
                    name, type_ = self._service_type(arg)
                    ok = master.remove(name, type_) if "X" in self.mode else \
                        master.comment_out(name, type_)
                    if not ok:
                        self.msgs.warn(f'unmatched request: "{arg}"')
            elif "F" in self.mode:
                key, sep, value = arg.partition("=")
                pieces = key.strip().split("/")
                if not sep or len(pieces) != 3 or pieces[2] not in FIELD_NAMES:
                    raise Fatal(f'-Fe requires service/type/field=value: "{arg}"')
                if pieces[2] in ("service", "type"):
                    raise Fatal(f'-Fe cannot change the {pieces[2]} field: "{arg}"')
                if not master.set_field(pieces[0], pieces[1], FIELD_NAMES.index(pieces[2]),
                                        value.strip()):
                    self.msgs.warn(f'unmatched service: "{pieces[0]}/{pieces[1]}"')
            elif "P" in self.mode:
                if "e" in self.mode:
                    key, sep, value = arg.partition("=")
                    pieces = key.strip().split("/")
                    if not sep or len(pieces) != 3:
                        raise Fatal(f'-Pe requires service/type/parameter=value: "{arg}"')
                    if not master.set_param(pieces[0], pieces[1], pieces[2], value.strip()):
                        self.msgs.warn(f'unmatched service: "{pieces[0]}/{pieces[1]}"')
                else:
                    pieces = arg.split("/")
                    if len(pieces) != 3:
                        raise Fatal(f'-PX requires service/type/parameter: "{arg}"')
                    master.set_param(pieces[0], pieces[1], pieces[2], None)
        master.write()
        return 0

    @staticmethod
    def _service_type(text: str) -> tuple[str, str]:
        pieces = text.split("/")
        if len(pieces) != 2 or not all(pieces):
            raise Fatal(f'service/type expected: "{text}"')
        return pieces[0], pieces[1]


def body(msgs: Messages, argv: list[str]) -> int:
    pc = Postconf(msgs)
    opts, args = parse_options(argv, "aAbc:C:dDeEfFhHlmMno:pPtTvxX#")
    for opt, val in opts:
        flag = opt[1:]
        if flag == "c":
            pc.config_dir = val
        elif flag == "o":
            name, sep, value = val.partition("=")
            if not sep:
                raise Fatal(f'-o option requires name=value: "{val}"')
            pc.overrides[name.strip()] = value.strip()
        elif flag in ("C", "v", "D"):
            continue
        else:
            pc.mode.add(flag)
    mode = pc.mode
    try:
        if "a" in mode:
            pc.out.extend(SERVER_SASL_TYPES)
        elif "A" in mode:
            pc.out.extend(CLIENT_SASL_TYPES)
        elif "l" in mode:
            pc.out.extend(MAILBOX_LOCKS)
        elif "m" in mode:
            pc.out.extend(supported_table_types())
        elif mode & {"b", "t", "T"}:
            raise Fatal("-b, -t and -T (template files) are not supported by hato; "
                        "see docs/compat.md")
        elif "M" in mode and mode & {"e", "X", "#"}:
            return pc.edit_master(args)
        elif "F" in mode and "e" in mode:
            return pc.edit_master(args)
        elif "P" in mode and mode & {"e", "X"}:
            return pc.edit_master(args)
        elif "M" in mode:
            return pc.show_master(args)
        elif "F" in mode:
            return pc.show_fields(args)
        elif "P" in mode:
            return pc.show_master_params(args)
        elif mode & {"e", "X", "#"}:
            if not args:
                raise Fatal("-e, -X and -# require parameter arguments")
            return pc.edit_main(args)
        else:
            return pc.show_params(args)
        return 0
    finally:
        if pc.out:
            sys.stdout.write("\n".join(pc.out) + "\n")


def supported_table_types() -> list[str]:
    try:
        from ..tables.registry import type_names
    except ImportError:
        return []
    return sorted(type_names())


def main(argv: list[str]) -> int:
    return run("postconf", body, argv)

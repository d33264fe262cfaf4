"""master.cf: the service table, read and written as Postfix does.

Each logical line (continuation and comment rules as in main.cf) has eight
columns — service, type, private, unpriv, chroot, wakeup, maxproc, command —
followed by the command's arguments. Arguments are split on blanks; ``{ … }``
keeps blanks inside one argument. The daemon options are the arguments up to
the first one that does not start with ``-``; among them ``-o name=value``
(also ``-o { name = value }``) overrides a main.cf parameter for this service.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .errors import ConfigError
from .maincf import MAX_LOGICAL_LINE, decode, write_atomic
from .values import C_SPACE

TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
FIELD_NAMES = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
               "process_limit", "command")
_BLANKS = " \t\r\n"
#: what starts a continuation line and is trimmed from a line (readlline())
_LINE_SPACE = C_SPACE
_COLUMN_GOAL = (0, 11, 17, 25, 33, 41, 49, 57)
LINE_LIMIT = 80
INDENT = "    "
_WAKEUP = re.compile(r"(-|\d+\??)\Z")
_MAXPROC = re.compile(r"(-|\d+)\Z")

# Standard ports for the service names hato must know even when /etc/services
# lacks them (the reference setup had to add smtps by hand).
STANDARD_PORTS = {"smtp": 25, "submission": 587, "smtps": 465, "submissions": 465, "lmtp": 24}


def _services_port(name: str, path: str) -> int | None:
    """The tcp port of *name* (or one of its aliases) in an /etc/services file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.split("#", 1)[0].split()
                if len(fields) < 2 or not fields[1].endswith("/tcp"):
                    continue
                if name == fields[0] or name in fields[2:]:
                    port = fields[1].split("/", 1)[0]
                    if port.isascii() and port.isdigit():
                        return int(port)
    except OSError:
        return None
    return None


def inet_endpoint(name: str, services_file: str = "/etc/services") -> tuple[str | None, int]:
    """An inet service name as master.cf writes it — ``port``, ``host:port``,
    ``[ipv6]:port``, where port is a number or a service name — as (host,
    port); host None means "every address in inet_interfaces". Service names
    come from /etc/services, falling back to the standard ports of smtp,
    submission, smtps and lmtp when the file lacks them."""
    host: str | None
    if name.startswith("["):
        end = name.find("]")
        if end < 0 or not name[end + 1 :].startswith(":"):
            raise ConfigError(f'bad inet service name: "{name}"')
        host, port_text = name[1:end], name[end + 2 :]
    elif ":" in name:
        host, _, port_text = name.rpartition(":")
    else:
        host, port_text = None, name
    if host == "":
        host = None
    if port_text.isascii() and port_text.isdigit():
        port = int(port_text)
        if not 0 < port < 65536:
            raise ConfigError(f'bad port number in inet service name: "{name}"')
        return host, port
    found = _services_port(port_text, services_file)
    if found is None:
        found = STANDARD_PORTS.get(port_text)
    if found is None:
        raise ConfigError(f"unknown service: {port_text}/tcp")
    return host, found


def split_args(text: str, warnings: list[str] | None = None, where: str = "master.cf") -> list[str]:
    """Split a command line on blanks, keeping ``{ … }`` groups whole.
    A group is returned *with* its braces so that normalization can tell."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in _BLANKS:
            i += 1
        if i >= n:
            break
        if text[i] == "{":
            depth, j = 0, i
            while j < n:
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if depth != 0:
                if warnings is not None:
                    warnings.append(f"{where}: missing '}}' in \"{text[i:]}\"")
                out.append(text[i:] + "}")
                break
            out.append(text[i : j + 1])
            i = j + 1
            continue
        j = i
        while j < n and text[j] not in _BLANKS:
            j += 1
        out.append(text[i:j])
        i = j
    return out


def normalize_args(args: list[str], warnings: list[str] | None = None,
                   where: str = "master.cf") -> list[str]:
    """Remove braces; in daemon options turn ``-o { name = value }`` into
    ``-o name=value`` (blanks inside the value kept)."""
    out: list[str] = []
    in_options = True
    i = 0
    while i < len(args):
        arg = args[i]
        if in_options and (not arg.startswith("-") or arg == "--"):
            in_options = False
        if in_options and arg == "-o" and i + 1 < len(args):
            out.append(arg)
            value = args[i + 1]
            if value.startswith("{") and value.endswith("}"):
                inner = value[1:-1].strip()
                if "=" in inner:
                    name, _, val = inner.partition("=")
                    value = f"{name.strip()}={val.strip()}"
                else:
                    if warnings is not None:
                        warnings.append(f"{where}: missing '=' after attribute name: \"{inner}\"")
                    value = inner
            out.append(value)
            i += 2
            continue
        if arg.startswith("{") and arg.endswith("}"):
            arg = arg[1:-1].strip()
        out.append(arg)
        i += 1
    return out


def daemon_options(args: list[str]) -> tuple[list[tuple[str, str | None]], int]:
    """The daemon options as (option, value) pairs and the index of the
    first non-option argument."""
    opts: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-") or arg == "--":
            break
        if arg == "-o" and i + 1 < len(args):
            opts.append((arg, args[i + 1]))
            i += 2
        else:
            opts.append((arg, None))
            i += 1
    return opts, i


@dataclass
class Service:
    """One master.cf entry."""

    fields: list[str]  # the 8 columns, then the command arguments (normalized)
    first: int = -1  # physical line index of the entry, -1 when not from a file
    last: int = -1

    @property
    def name(self) -> str:
        return self.fields[0]

    @property
    def type(self) -> str:
        return self.fields[1]

    @property
    def key(self) -> str:
        return f"{self.fields[0]}/{self.fields[1]}"

    @property
    def command(self) -> str:
        return self.fields[7]

    @property
    def args(self) -> list[str]:
        return self.fields[8:]

    @property
    def lineno(self) -> int:
        return self.first + 1

    def overrides(self) -> dict[str, str]:
        """``-o name=value`` daemon options, last one winning."""
        result: dict[str, str] = {}
        for opt, value in daemon_options(self.args)[0]:
            if opt == "-o" and value is not None and "=" in value:
                name, _, val = value.partition("=")
                result[name] = val
        return result

    def endpoint(self, services_file: str = "/etc/services") -> tuple[str | None, int]:
        """(host, port) of an inet service; see :func:`inet_endpoint`."""
        if self.type != "inet":
            raise ConfigError(f"{self.key}: not an inet service")
        return inet_endpoint(self.name, services_file)

    def private(self, default: bool = True) -> bool:
        return _flag(self.fields[2], default)

    def unprivileged(self, default: bool = True) -> bool:
        return _flag(self.fields[3], default)

    def chroot(self, default: bool = False) -> bool:
        return _flag(self.fields[4], default)

    def wakeup(self) -> tuple[int, bool]:
        """(seconds, only-if-used); (0, False) when none."""
        w = self.fields[5]
        if w == "-":
            return 0, False
        return int(w.rstrip("?")), w.endswith("?")

    def maxproc(self, default_process_limit: int) -> int:
        m = self.fields[6]
        return default_process_limit if m == "-" else int(m)

    def format(self, fold: bool = False) -> str:
        return format_entry(self.fields, fold)


def _flag(text: str, default: bool) -> bool:
    if text == "-":
        return default
    return text == "y"


def check_fields(fields: list[str], path: str | None, lineno: int | None, raw: str) -> None:
    """Postfix's per-column checks, with Postfix's words."""
    checks = (
        (1, lambda v: v in TYPES, "type"),
        (2, lambda v: v in ("y", "n", "-"), "private"),
        (3, lambda v: v in ("y", "n", "-"), "unprivileged"),
        (4, lambda v: v in ("y", "n", "-"), "chroot"),
        (5, lambda v: bool(_WAKEUP.match(v)), "wakeup"),
        (6, lambda v: bool(_MAXPROC.match(v)), "process_limit"),
    )
    for idx, ok, label in checks:
        if not ok(fields[idx]):
            raise ConfigError(f'invalid {label} field "{fields[idx]}" in "{raw}"', path, lineno)


def parse_entry(text: str, path: str | None = None, lineno: int | None = None,
                warnings: list[str] | None = None) -> list[str]:
    where = path or "master.cf"
    raw = split_args(text, warnings, where)
    if len(raw) < 8:
        raise ConfigError("bad field count", path, lineno)
    fields = raw[:8] + normalize_args(raw[8:], warnings, where)
    check_fields(fields, path, lineno, " ".join(text.split()))
    return fields


def format_entry(fields: list[str], fold: bool = False) -> str:
    """One entry as ``postconf -M`` prints it (``-Mf`` when *fold*)."""
    out: list[str] = []
    line_len = 0
    for idx in range(8):
        if line_len > 0:
            while True:
                out.append(" ")
                line_len += 1
                if line_len >= _COLUMN_GOAL[idx]:
                    break
        out.append(fields[idx])
        line_len += len(fields[idx])
    return "".join(out) + _format_args(fields[8:], fold, line_len)


def format_command(fields: list[str], fold: bool = False, line_len: int = 0) -> str:
    """The command column with its arguments, as ``postconf -F`` prints it."""
    return fields[7] + _format_args(fields[8:], fold, line_len + len(fields[7]))


def _format_args(args: list[str], fold: bool, line_len: int) -> str:
    out: list[str] = []
    in_options = True
    k = 0
    while k < len(args):
        arg = args[k]
        arg_len = len(arg)
        aval: str | None = None
        need_braces = False
        if in_options:
            if not arg.startswith("-") or arg == "--":
                in_options = False
            elif arg == "-o" and k + 1 < len(args):
                aval = args[k + 1]
                line_len = LINE_LIMIT
                arg_len += len(aval) + 1
                # an empty value or one with blanks is written in braces ("{}")
                need_braces = not aval or any(c in _BLANKS for c in aval)
                if need_braces:
                    arg_len += 2
        if aval is None:  # any argument but a "-o" value: braces when it has blanks
            need_braces = not arg or any(c in _BLANKS for c in arg)
        if line_len > len(INDENT):
            if not fold or line_len + 1 + arg_len < LINE_LIMIT:
                out.append(" ")
                line_len += 1
            else:
                out.append("\n" + INDENT)
                line_len = len(INDENT)
        text = "{" + arg + "}" if (aval is None and need_braces) else arg
        out.append(text)
        line_len += len(text)
        if aval is not None:
            out.append(" " + ("{" + aval + "}" if need_braces else aval))
            k += 1
            line_len = LINE_LIMIT
        k += 1
    return "".join(out)


@dataclass
class MasterCf:
    path: str
    lines: list[str]
    services: list[Service] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, path: str, *, missing_ok: bool = False) -> "MasterCf":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if missing_ok:
                return cls(path, [])
            raise ConfigError(f"open {path}: No such file or directory") from None
        except OSError as err:
            raise ConfigError(f"open {path}: {err.strerror}") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: bytes | str, path: str = "master.cf") -> "MasterCf":
        lines = decode(data, path) if isinstance(data, bytes) else data.splitlines(True)
        self = cls(path, lines)
        self._scan()
        return self

    def _scan(self) -> None:
        self.services = []
        start: int | None = None
        parts: list[str] = []
        last = 0

        def flush() -> None:
            if start is None:
                return
            fields = parse_entry(" ".join(parts), self.path, start + 1, self.warnings)
            self.services.append(Service(fields, start, last))

        for idx, raw in enumerate(self.lines):
            body = raw.rstrip("\r\n")
            stripped = body.strip(_LINE_SPACE)
            if not stripped or stripped.startswith("#"):
                # Comments up to the next entry belong to this entry's span,
                # as in Postfix's editor (they are kept when it is rewritten).
                if start is not None:
                    last = idx
                continue
            if len(body) > MAX_LOGICAL_LINE:
                raise ConfigError(f"line longer than {MAX_LOGICAL_LINE} characters",
                                  self.path, idx + 1)
            if body[0] in _LINE_SPACE:
                if start is None:
                    self.warnings.append(
                        f'{self.path}: logical line must not start with whitespace: "{body}"')
                    continue
                parts.append(stripped)
                last = idx
                continue
            flush()
            start, parts, last = idx, [stripped], idx
        flush()

    # -- lookups ------------------------------------------------------------

    def find(self, name: str, type_: str | None = None) -> list[Service]:
        return [s for s in self.services
                if s.name == name and (type_ is None or s.type == type_)]

    # -- edits (postconf -Me/-MX/-M#/-Fe/-Pe/-PX) ---------------------------

    def _replace(self, svc: Service, new_lines: list[str], comments_first: bool = True) -> None:
        """Replace an entry's lines; comment and blank lines that stood
        between its continuation lines are kept, before the new text (after
        it for a whole new entry, -Me), as Postfix's editor does."""
        if svc.last == len(self.lines) - 1 and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"  # the file's last line (a comment) had no line end
        kept = [line for line in self.lines[svc.first : svc.last + 1]
                if not line.strip() or line.lstrip().startswith("#")]
        self.lines[svc.first : svc.last + 1] = (
            kept + new_lines if comments_first else new_lines + kept)
        self.warnings = []
        self._scan()

    def set_entry(self, name: str, type_: str, text: str) -> None:
        fields = parse_entry(text, self.path)
        if (fields[0], fields[1]) != (name, type_):
            raise ConfigError(f'service name/type mismatch: "{name}/{type_}" vs "{text}"')
        entry = format_entry(fields, fold=True) + "\n"
        found = self.find(name, type_)
        if found:
            self._replace(found[0], [entry], comments_first=False)
        else:
            if self.lines and not self.lines[-1].endswith("\n"):
                self.lines[-1] += "\n"
            self.lines.append(entry)
            self._scan()

    def remove(self, name: str, type_: str) -> bool:
        found = self.find(name, type_)
        for svc in reversed(found):
            self._replace(svc, [])
        return bool(found)

    def comment_out(self, name: str, type_: str) -> bool:
        found = self.find(name, type_)
        for svc in reversed(found):
            span = self.lines[svc.first : svc.last + 1]
            self.lines[svc.first : svc.last + 1] = [
                line if not line.strip() or line.lstrip().startswith("#") else "#" + line
                for line in span]
            self.warnings = []
            self._scan()
        return bool(found)

    def set_field(self, name: str, type_: str, index: int, value: str) -> bool:
        found = self.find(name, type_)
        for svc in reversed(found):
            if index == 7:
                fields = svc.fields[:7] + normalize_args(split_args(value))
            else:
                fields = list(svc.fields)
                fields[index] = value
            check_fields(fields, self.path, svc.lineno, " ".join(fields))
            self._replace(svc, [format_entry(fields, fold=True) + "\n"])
        return bool(found)

    def set_param(self, name: str, type_: str, param: str, value: str | None) -> bool:
        """Add, update (value) or remove (value None) ``-o param=value``."""
        found = self.find(name, type_)
        for svc in reversed(found):
            args = list(svc.args)
            opts_end = daemon_options(args)[1]
            new: list[str] = []
            matched = False
            i = 0
            while i < opts_end:
                if args[i] == "-o" and i + 1 < opts_end:
                    if args[i + 1].split("=", 1)[0] == param:
                        matched = True
                        if value is not None:
                            new += ["-o", f"{param}={value}"]
                    else:
                        new += args[i : i + 2]
                    i += 2
                else:
                    new.append(args[i])
                    i += 1
            if value is not None and not matched:
                new += ["-o", f"{param}={value}"]
            fields = svc.fields[:8] + new + args[opts_end:]
            self._replace(svc, [format_entry(fields, fold=True) + "\n"])
        return bool(found)

    def render(self) -> str:
        return "".join(self.lines)

    def write(self) -> None:
        write_atomic(self.path, self.render())

"""``hato postmap``, ``hato postalias`` and ``hato newaliases``.

    postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [type:]file ...
    postalias [-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [type:]file ...
    newaliases [-c config_dir] [-v]

As Postfix's postmap(1) and postalias(1):

* build: ``postmap [type:]file`` reads the source ``file`` and writes its
  index (``lmdb:`` → ``file.lmdb``, ``cdb:`` → ``file.cdb``, ``hash:`` and
  ``btree:`` → hato's ``file.hato.db``); the type defaults to
  ``default_database_type``. Keys are folded to lower case (``-f``: not);
  duplicate keys keep the first value with a warning (``-w``: silently,
  ``-r``: the last value wins). ``-i`` adds records read from standard
  input to an existing index. ``-N``/``-n``: store keys and values with /
  without a trailing NUL. ``-F``: the values name files whose contents are
  stored base64-encoded. ``-p``: do not copy the source's group/other
  permissions; ``-o``: do not give the index to the source file's owner
  (hato chowns the result, where Postfix drops privileges to that owner).
* ``-q key``: look the key up in each table in turn, print the first value
  found. ``-q -``: read keys from standard input, print ``key<TAB>value``
  for each key found (postalias: ``key:<TAB>value``); with ``-h``/``-b``
  the input is a message whose header lines / body lines are the keys
  (``-m``: with MIME parsing). Works on every table type of the registry.
* ``-s``: list the first table. ``-d key`` / ``-d -``: delete keys.

Every build and update writes a new file and renames it over the old index:
a running hato sees the old table or the new one, never a half-built one, and
a build that fails leaves the old index untouched.

Exit status, as Postfix: 0 when a lookup or delete found something or a
build succeeded; 1 when nothing was found, and also (as Postfix's
``msg_fatal()``) after a fatal error.

``newaliases`` builds every file-based table listed in ``alias_database``.
"""

from __future__ import annotations

import base64
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..config.expand import Expander
from ..config.values import split_list
from ..tables import registry
from ..tables.base import Table, TableError, TableRetry
from ..tables.textfile import (
    BuildOptions,
    DupMode,
    FileOpenFlags,
    IndexWriter,
    NulMode,
    fold_key,
    parse_source,
    printable,
    read_source,
    to_bytes,
    to_text,
)
from .common import Fatal, Messages, load_config, run

POSTMAP_OPTIONS = "bc:d:fFhimnNopq:rsuUvw"
POSTALIAS_OPTIONS = "Nc:d:finopq:rsuvw"
USAGE = {
    "postmap": "[-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key] [map_type:]file...",
    "postalias": "[-Nfinoprsuvw] [-c config_dir] [-d key] [-q key] [map_type:]file...",
    "newaliases": "[-c config_dir] [-v]",
}

#: Defaults for parameters the command needs, in Postfix syntax, used when
#: the parameter table does not know them.
FALLBACK_DEFAULTS = {
    "default_database_type": "hash",
    "alias_database": "hash:/etc/aliases",
    "smtputf8_enable": "${{$compatibility_level} <level {1} ? {no} : {yes}}",
    "lmdb_map_size": "16777216",
}

WRITABLE_TYPES = ("lmdb", "cdb", "hash", "btree")


class Usage(Exception):
    pass


def getopt_postfix(prog: str, argv: list[str], spec: str,
                   msgs: Messages) -> tuple[list[tuple[str, str]], list[str]]:
    """glibc's non-permuting getopt ("+spec"), with its messages."""
    opts: list[tuple[str, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            ch = arg[j]
            pos = spec.find(ch)
            if ch == ":" or pos < 0:
                print(f"{prog}: invalid option -- '{ch}'", file=sys.stderr)
                raise Usage()
            if pos + 1 < len(spec) and spec[pos + 1] == ":":
                if j + 1 < len(arg):
                    opts.append((ch, arg[j + 1:]))
                else:
                    i += 1
                    if i >= len(argv):
                        print(f"{prog}: option requires an argument -- '{ch}'", file=sys.stderr)
                        raise Usage()
                    opts.append((ch, argv[i]))
                break
            opts.append((ch, ""))
            j += 1
        i += 1
    return opts, argv[i:]


# -- output -----------------------------------------------------------------------


class Output:
    """Bytes to standard output, buffered as Postfix's vstream."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def write(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > 65536:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        binary = getattr(sys.stdout, "buffer", None)
        if binary is not None:
            sys.stdout.flush()
            binary.write(bytes(self.buf))
            binary.flush()
        else:
            sys.stdout.write(to_text(bytes(self.buf)))
        self.buf.clear()


def read_stdin() -> bytes:
    binary = getattr(sys.stdin, "buffer", None)
    if binary is not None:
        return binary.read()
    return to_bytes(sys.stdin.read())


def stdin_lines() -> Iterator[bytes]:
    """vstring_get_nonl(): lines without their newline; a last line without
    one counts."""
    data = read_stdin()
    if not data:
        return
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    yield from lines


# -- the command ------------------------------------------------------------------


@dataclass
class Options:
    query: str | None = None
    delkey: str | None = None
    sequence: bool = False
    fold: bool = True
    incremental: bool = False
    nul: str = NulMode.DEFAULT
    dup: str = DupMode.WARN
    rhs_is_file: bool = False
    header: bool = False
    body: bool = False
    mime: bool = False
    utf8_request: bool = True
    force_utf8: bool = False
    save_perm: bool = True
    as_owner: bool = True
    verbose: int = 0
    config_dir: str | None = None
    maps: list[str] = field(default_factory=list)


class Command:
    """One run of postmap or postalias."""

    def __init__(self, prog: str, msgs: Messages, aliases: bool):
        self.prog = prog
        self.msgs = msgs
        self.aliases = aliases
        self.out = Output()
        self.opts = Options()
        self.db_type = "hash"
        self.utf8 = False
        self.map_size = 16777216
        self.myhostname = "localhost"
        self.alias_database = "hash:/etc/aliases"

    # -- configuration --
    def parse(self, argv: list[str], spec: str) -> None:
        o = self.opts
        opts, args = getopt_postfix(self.prog, argv, spec, self.msgs)
        for ch, val in opts:
            if ch == "N":
                o.nul = NulMode.WITH
            elif ch == "n":
                o.nul = NulMode.WITHOUT
            elif ch == "b":
                o.body = True
            elif ch == "h":
                o.header = True
            elif ch == "m":
                o.mime = True
            elif ch == "c":
                o.config_dir = val
            elif ch in ("d", "q"):
                if o.sequence or o.query is not None or o.delkey is not None:
                    raise Fatal("specify only one of -s -q or -d")
                if ch == "d":
                    o.delkey = val
                else:
                    o.query = val
            elif ch == "s":
                if o.query is not None or o.delkey is not None:
                    raise Fatal("specify only one of -s or -q or -d")
                o.sequence = True
            elif ch == "f":
                o.fold = False
            elif ch == "F":
                o.rhs_is_file = True
            elif ch == "i":
                o.incremental = True
            elif ch == "o":
                o.as_owner = False
            elif ch == "p":
                o.save_perm = False
            elif ch == "r":
                o.dup = DupMode.REPLACE
            elif ch == "w":
                o.dup = DupMode.IGNORE
            elif ch == "u":
                o.utf8_request = False
            elif ch == "U":
                o.force_utf8 = True
            elif ch == "v":
                o.verbose += 1
        o.maps = args

    def load(self) -> None:
        cfg = load_config(self.opts.config_dir, process_name=self.prog, main_missing_ok=True)
        settings = cfg.settings()

        def param(name: str) -> str:
            value = None
            try:
                if settings.raw(name) is not None:
                    value = settings.expanded(name)
            except ConfigError:
                value = None
            if value is None:
                value = Expander(settings.expanded, recurse=False).expand(
                    FALLBACK_DEFAULTS.get(name, ""))
            return value.strip()

        self.db_type = param("default_database_type") or "hash"
        self.alias_database = param("alias_database")
        self.utf8 = param("smtputf8_enable").lower() in ("yes", "true", "on", "1")
        try:
            self.map_size = max(int(param("lmdb_map_size")), 1 << 20)
        except ValueError:
            self.map_size = 16777216
        try:
            self.myhostname = settings.expanded("myhostname") or "localhost"
        except ConfigError:
            self.myhostname = "localhost"
        o = self.opts
        if o.utf8_request is False:
            self.utf8 = False
        if (o.header or o.body) and not o.force_utf8:
            self.utf8 = False

    def flags(self) -> FileOpenFlags:
        o = self.opts
        return FileOpenFlags(fold_case=o.fold, utf8=self.utf8, nul=o.nul, dup=o.dup)

    def split(self, arg: str) -> tuple[str, str]:
        type_name, sep, name = arg.partition(":")
        if not sep:
            return self.db_type, arg
        return type_name, name

    # -- opening tables --
    def open(self, arg: str) -> Table:
        type_name, name = self.split(arg)
        try:
            return registry.open_table(f"{type_name}:{name}", self.flags())
        except TableError as err:
            raise Fatal(str(err)) from None
        except OSError as err:
            raise Fatal(f"open {name}: {err.strerror}") from None

    def lookup(self, table: Table, key: str) -> str | None:
        try:
            value = table.get(key)
        except TableRetry:
            raise Fatal(f"table {table.name}: query error") from None
        if value is not None and self.opts.rhs_is_file:
            try:
                value = to_text(base64.b64decode(to_bytes(value), validate=True))
            except ValueError:
                raise Fatal(f"table {table.name}: key {key}: malformed BASE64 value: "
                            f"{value}") from None
        if value == "":
            self.msgs.warn(f"table {table.name}: key {key}: empty string result is not allowed")
            self.msgs.warn(f"table {table.name} should return NO RESULT in case of NOT FOUND")
        return value

    # -- modes --
    def main(self) -> int:
        o = self.opts
        if (o.header or o.body or o.mime) and o.query != "-":
            raise Fatal('specify -b -h or -m only with "-q -"')
        if o.mime and not (o.header or o.body):
            self.msgs.warn("ignoring -m option without -b or -h")
        if o.delkey is not None:
            self.need_maps()
            return self.delete()
        if o.query is not None:
            self.need_maps()
            if o.query == "-":
                return self.queries()
            return self.query(o.query)
        if o.sequence:
            if not o.maps:
                return 1
            return self.dump(o.maps[0])
        self.need_maps()
        for arg in o.maps:
            self.build(arg)
        return 0

    def need_maps(self) -> None:
        if not self.opts.maps:
            raise Fatal(f"usage: {self.prog} {USAGE[self.prog]}")

    def query(self, key: str) -> int:
        for arg in self.opts.maps:
            table = self.open(arg)
            try:
                value = self.lookup(table, key)
            finally:
                table.close()
            if value is not None:
                self.out.write(to_bytes(value) + b"\n")
                self.out.flush()
                return 0
        return 1

    def queries(self) -> int:
        tables: list[Table | None] = [None] * len(self.opts.maps)
        found = False
        sep = b":\t" if self.aliases else b"\t"
        o = self.opts
        try:
            keys: Iterator[bytes]
            if o.header or o.body:
                keys = message_keys(stdin_lines(), header=o.header, body=o.body, mime=o.mime)
            else:
                keys = stdin_lines()
            for kb in keys:
                key = to_text(kb)
                for n, arg in enumerate(o.maps):
                    table = tables[n]
                    if table is None:
                        table = tables[n] = self.open(arg)
                    value = self.lookup(table, key)
                    if value is not None:
                        self.out.write(kb + sep + to_bytes(value) + b"\n")
                        found = True
                        break
            self.out.flush()
        finally:
            # after a fatal error, output still buffered is lost, as in Postfix
            for t in tables:
                if t is not None:
                    t.close()
        return 0 if found else 1

    def dump(self, arg: str) -> int:
        table = self.open(arg)
        items = getattr(table, "items_bytes", None)
        if items is None:
            raise Fatal(f"table {table.name}: sequence operation is not supported")
        sep = b":\t" if self.aliases else b"\t"
        try:
            for key, value in items():
                if not key:
                    self.msgs.warn(f"table {table.name}: empty lookup key value is not allowed")
                elif not value:
                    self.msgs.warn(f"table {table.name}: key {printable(key)}: "
                                   f"empty string result is not allowed")
                    self.msgs.warn(f"table {table.name} should return NO RESULT "
                                   f"in case of NOT FOUND")
                if self.opts.rhs_is_file:
                    try:
                        value = base64.b64decode(value, validate=True)
                    except ValueError:
                        self.msgs.warn(f"table {table.name}: key {printable(key)}: "
                                       f"malformed BASE64 value")
                        continue
                self.out.write(key + sep + value + b"\n")
        except TableRetry:
            raise Fatal(f"table {table.name}: sequence error") from None
        finally:
            self.out.flush()
            table.close()
        return 0

    # -- writing --
    def writer(self, arg: str, *, incremental: bool,
               options: BuildOptions | None = None) -> IndexWriter:
        type_name, name = self.split(arg)
        if type_name == "proxy":
            raise Fatal("can't create maps via the proxy service")
        if type_name not in WRITABLE_TYPES:
            if type_name not in registry.type_names():
                raise Fatal(f"unsupported dictionary type: {type_name}")
            if incremental and self.opts.delkey is not None:
                raise Fatal(f"{type_name}:{name} map requires O_RDONLY access mode")
            raise Fatal(f"unsupported dictionary type: {type_name} does not support "
                        f"bulk-mode creation.")
        if not name:
            raise Fatal(f"{type_name}: missing file name")
        try:
            if type_name == "lmdb":
                from ..tables.lmdb_table import LmdbWriter
                return LmdbWriter(name, incremental=incremental, options=options,
                                  map_size=self.map_size)
            if type_name == "cdb":
                from ..tables.cdb import CdbWriter
                return CdbWriter(name, incremental=incremental, options=options)
            from ..tables.hashdb import HashWriter
            return HashWriter(name, incremental=incremental, options=options,
                              map_size=self.map_size, type_name=type_name)
        except TableError as err:
            raise Fatal(str(err)) from None

    def fold(self, key: bytes) -> bytes:
        if not self.opts.fold:
            return key
        folded = fold_key(key, self.utf8)
        return key if folded is None else folded

    def put(self, writer: IndexWriter, key: bytes, value: bytes, *, line: int = 0,
            path: str = "", nul: bool | None = None, dup: str | None = None) -> None:
        dup = dup or self.opts.dup
        if nul is None and self.opts.nul != NulMode.DEFAULT:
            nul = self.opts.nul == NulMode.WITH
        try:
            existed = writer.put(key, value, replace=dup == DupMode.REPLACE, nul=nul,
                                 where=(path, line) if line else None)
        except TableError as err:
            raise Fatal(str(err)) from None
        if existed and dup == DupMode.WARN:
            self.msgs.warn(f'{writer.label}: duplicate entry: "{printable(key, self.utf8)}"')

    def build(self, arg: str) -> None:
        o = self.opts
        type_name, name = self.split(arg)
        if o.incremental:
            path = "stdin"
            data = read_stdin()
            st = None
        else:
            if type_name == "proxy":
                raise Fatal("can't create maps via the proxy service")
            path = name
            try:
                data = read_source(name)
                st = os.stat(name)
            except (TableError, OSError) as err:
                msg = str(err) if isinstance(err, TableError) else f"open {name}: {err.strerror}"
                raise Fatal(msg) from None
        options = BuildOptions(source_stat=st, save_perm=o.save_perm, as_owner=o.as_owner)
        writer = self.writer(arg, incremental=o.incremental, options=options)
        warn = self.msgs.warn
        try:
            if self.aliases:
                self.build_aliases(writer, data, path, warn)
            else:
                for entry in parse_source(data, path, warn, utf8=self.utf8):
                    value = entry.value
                    if o.rhs_is_file:
                        encoded = files_to_base64(value)
                        if isinstance(encoded, str):
                            warn(f"{path}, line {entry.line}: {encoded}: skipping this entry")
                            continue
                        value = encoded
                    self.put(writer, self.fold(entry.key), value, line=entry.line, path=path)
        except TableError as err:
            raise Fatal(str(err)) from None
        try:
            writer.commit()
        except TableError as err:
            raise Fatal(str(err)) from None

    def build_aliases(self, writer: IndexWriter, data: bytes, path: str,
                      warn: Callable[[str], None]) -> None:
        from ..tables.aliases import parse_aliases, signature_records
        for alias in parse_aliases(data, path, warn, utf8=self.utf8):
            self.put(writer, self.fold(alias.name), alias.value, line=alias.line, path=path)
        dup = DupMode.REPLACE if self.opts.incremental else None
        for key, value, normal in signature_records(self.myhostname):
            if normal:
                self.put(writer, self.fold(key), value, dup=dup)
            else:
                self.put(writer, key, value, nul=False, dup=dup)

    def delete(self) -> int:
        o = self.opts
        assert o.delkey is not None
        if o.delkey == "-":
            keys = [self.fold(k) for k in stdin_lines()]
        else:
            keys = [self.fold(to_bytes(o.delkey))]
        found = False
        for arg in o.maps:
            writer = self.writer(arg, incremental=True)
            changed = False
            for key in keys:
                if writer.delete(key, o.nul):
                    changed = True
            if changed:
                found = True
                try:
                    writer.commit()
                except TableError as err:
                    raise Fatal(str(err)) from None
        return 0 if found else 1


def files_to_base64(value: bytes) -> bytes | str:
    """postmap -F: the named files' contents, newline-joined, base64."""
    names = [n for n in value.replace(b",", b" ").split() if n]
    parts = []
    for n in names:
        try:
            with open(n, "rb") as fh:
                parts.append(fh.read())
        except OSError as err:
            return f"open {to_text(n)}: {err.strerror}"
    return base64.b64encode(b"\n".join(parts))


# -- message keys (-h / -b) --------------------------------------------------------


def header_name_length(line: bytes) -> int:
    """Postfix's is_header(): the length of the header name, 0 if the line
    is not a header line."""
    state = 0
    length = 0
    for c in line:
        if c == 0x3A:
            return length if state else 0
        if c in (0x20, 0x09):
            if state == 0:
                return 0
            state = 2
            continue
        if c >= 0x80 or c < 32 or c == 127:
            return 0
        if state == 2:
            return 0
        state = 1
        length += 1
    return 0


def message_keys(lines: Iterator[bytes], *, header: bool, body: bool,
                 mime: bool = False) -> Iterator[bytes]:
    """The lookup keys of a message: each logical header line (continuation
    lines joined with newlines) and/or each body line, as postmap -h / -b.
    Without *mime*, only the primary header is header text; with it, MIME
    part headers and attached message/rfc822 headers are header text too,
    and every other line (boundaries, the blank line after each header
    block) is body text, as Postfix's mime_state does."""
    if not mime:
        yield from _simple_message_keys(lines, header=header, body=body)
        return
    boundaries: list[bytes] = []
    in_header = True
    primary = True
    cur: bytes | None = None
    ctype: tuple[bytes, bytes, bytes | None] | None = None  # type, subtype, boundary
    for line in lines:
        if in_header:
            if cur is not None and line[:1] in (b" ", b"\t"):
                cur += b"\n" + line
                continue
            if cur is not None:
                ctype = _content_type(cur) or ctype
                if header:
                    yield cur
                cur = None
            if header_name_length(line):
                cur = line
                continue
            # end of a header block: this line is body text
            in_header = False
            nested = False
            if ctype is not None:
                if ctype[0] == b"multipart" and ctype[2]:
                    boundaries.append(ctype[2])
                elif ctype[0] == b"message" and ctype[1] == b"rfc822":
                    nested = True
            ctype = None
            if body:
                if primary and line:
                    yield b""  # Postfix separates header and body with an empty line
                yield line
            primary = False
            if nested and line == b"":
                in_header = True
            elif _boundary(line, boundaries) is not None:
                in_header = _enter_part(line, boundaries)
            continue
        if body:
            yield line
        if line.startswith(b"--") and boundaries:
            in_header = _enter_part(line, boundaries)
    if cur is not None and header:
        yield cur


def _boundary(line: bytes, boundaries: list[bytes]) -> int | None:
    if not line.startswith(b"--"):
        return None
    for level in range(len(boundaries) - 1, -1, -1):
        if line[2:].startswith(boundaries[level]):
            return level
    return None


def _enter_part(line: bytes, boundaries: list[bytes]) -> bool:
    """A boundary line: True when part headers follow."""
    level = _boundary(line, boundaries)
    if level is None:
        return False
    b = boundaries[level]
    del boundaries[level + 1:]
    if line[2 + len(b):].startswith(b"--"):
        boundaries.pop()
        return False
    return True


def _content_type(header_text: bytes) -> tuple[bytes, bytes, bytes | None] | None:
    import re
    m = re.match(rb"(?is)content-type[ \t]*:[ \t\n]*([^/\s;]+)[ \t\n]*/[ \t\n]*([^\s;]+)(.*)",
                 header_text)
    if not m:
        return None
    b = re.search(rb'(?is);[ \t\n]*boundary[ \t\n]*=[ \t\n]*(?:"([^"]*)"|([^\s;]+))',
                  m.group(3))
    boundary = None
    if b:
        boundary = b.group(1) if b.group(1) is not None else b.group(2)
    return m.group(1).lower(), m.group(2).lower(), boundary


def _simple_message_keys(lines: Iterator[bytes], *, header: bool,
                         body: bool) -> Iterator[bytes]:
    cur: bytes | None = None
    in_header = True
    for line in lines:
        if in_header:
            if cur is not None and line[:1] in (b" ", b"\t"):
                cur += b"\n" + line
                continue
            if cur is not None:
                if header:
                    yield cur
                cur = None
            if header_name_length(line):
                cur = line
                continue
            in_header = False
            if not body:
                return
            if line:
                yield b""  # Postfix separates header and body with an empty line
        yield line
    if cur is not None and header:
        yield cur


# -- entry points -------------------------------------------------------------------


def _run(prog: str, argv: list[str], aliases: bool, spec: str) -> int:
    def body(msgs: Messages, args: list[str]) -> int:
        cmd = Command(prog, msgs, aliases)
        try:
            cmd.parse(args, spec)
        except Usage:
            raise Fatal(f"usage: {prog} {USAGE[prog]}") from None
        cmd.load()
        return cmd.main()

    return run(prog, body, argv)


def postmap_main(argv: list[str]) -> int:
    return _run("postmap", list(argv), False, POSTMAP_OPTIONS)


def postalias_main(argv: list[str]) -> int:
    return _run("postalias", list(argv), True, POSTALIAS_OPTIONS)


def newaliases_main(argv: list[str]) -> int:
    def body(msgs: Messages, args: list[str]) -> int:
        cmd = Command("newaliases", msgs, True)
        try:
            opts, _rest = getopt_postfix("newaliases", args, "c:C:vo:", msgs)
        except Usage:
            raise Fatal(f"usage: newaliases {USAGE['newaliases']}") from None
        for ch, val in opts:
            if ch in ("c", "C"):
                cmd.opts.config_dir = val
            elif ch == "v":
                cmd.opts.verbose += 1
        cmd.load()
        built = 0
        for spec in split_list(cmd.alias_database):
            type_name, _ = cmd.split(spec)
            if type_name not in WRITABLE_TYPES:
                msgs.warn(f"alias_database: {spec}: not a file-based table type hato can "
                          f"build -- skipped")
                continue
            cmd.build(spec)
            built += 1
        return 0

    return run("newaliases", body, list(argv))


def main(argv: list[str]) -> int:
    return postmap_main(argv)

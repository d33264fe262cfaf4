"""main.cf: read it, and edit it in place keeping every other byte.

Postfix's rules (postconf(5)): a logical line starts at a non-blank first
column; lines that start with whitespace continue it (joined with one space);
lines whose first non-blank character is ``#`` are comments and blank lines
are skipped, neither ends a logical line. ``name = value`` with blanks around
``=`` and at the end ignored; the last definition of a name wins.

Edits (``postconf -e/-X/-#``) replace only the physical lines of the logical
line they touch, and the file is replaced atomically, so a concurrent reader
sees the old file or the new one.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

from .errors import ConfigError

MAX_LOGICAL_LINE = 256 * 1024


@dataclass(frozen=True, slots=True)
class Definition:
    name: str
    value: str
    first: int  # index of the first physical line
    last: int  # index of the last physical line (inclusive)

    @property
    def lineno(self) -> int:
        return self.first + 1


def decode(data: bytes, path: str) -> list[str]:
    """Split *data* into physical lines (keeping line ends), checking UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"invalid UTF-8 byte 0x{data[err.start]:02x} (configuration files must be UTF-8)",
            path, line) from None
    return text.splitlines(keepends=True)


def split_nameval(text: str, path: str, lineno: int) -> tuple[str, str]:
    """Split ``name = value`` the way Postfix does, with Postfix's errors."""
    i, n = 0, len(text)
    while i < n and not text[i].isspace() and text[i] != "=":
        i += 1
    name = text[:i]
    j = i
    while j < n and text[j].isspace():
        j += 1
    if not name:
        raise ConfigError(f'missing attribute name: "{text}"', path, lineno)
    if j >= n or text[j] != "=":
        raise ConfigError(f"missing '=' after attribute name: \"{name}\"", path, lineno)
    return name, text[j + 1 :].strip()


class MainCf:
    """A parsed main.cf that remembers where each definition stands."""

    def __init__(self, path: str, lines: list[str], definitions: list[Definition],
                 warnings: list[str]):
        self.path = path
        self.lines = lines
        self.definitions = definitions
        self.warnings = warnings

    # -- reading ------------------------------------------------------------

    @classmethod
    def read(cls, path: str, *, missing_ok: bool = False) -> "MainCf":
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if missing_ok:
                return cls(path, [], [], [])
            raise ConfigError(f"open {path}: No such file or directory") from None
        except OSError as err:
            raise ConfigError(f"open {path}: {err.strerror}") from None
        return cls.parse(data, path)

    @classmethod
    def parse(cls, data: bytes | str, path: str = "main.cf") -> "MainCf":
        lines = decode(data, path) if isinstance(data, bytes) else data.splitlines(True)
        definitions: list[Definition] = []
        warnings: list[str] = []
        start: int | None = None
        parts: list[str] = []
        last = 0
        size = 0

        def flush() -> None:
            if start is None:
                return
            text = " ".join(parts)
            name, value = split_nameval(text, path, start + 1)
            definitions.append(Definition(name, value, start, last))

        for idx, raw in enumerate(lines):
            body = raw.rstrip("\r\n")
            stripped = body.strip()
            if not stripped or stripped.startswith("#"):
                continue
            size = size + len(body) if body[0].isspace() else len(body)
            if size > MAX_LOGICAL_LINE:
                raise ConfigError(
                    f"logical line longer than {MAX_LOGICAL_LINE} characters", path,
                    (start if start is not None and body[0].isspace() else idx) + 1)
            if body[0].isspace():
                if start is None:
                    warnings.append(
                        f'{path}: logical line must not start with whitespace: "{body}"')
                    continue
                parts.append(stripped)
                last = idx
                continue
            flush()
            start, parts, last = idx, [body.rstrip()], idx
        flush()
        return cls(path, lines, definitions, warnings)

    def values(self) -> dict[str, str]:
        """name → value, the last definition winning."""
        return {d.name: d.value for d in self.definitions}

    def lineno(self, name: str) -> int | None:
        found = None
        for d in self.definitions:
            if d.name == name:
                found = d.lineno
        return found

    # -- editing ------------------------------------------------------------

    def _kept(self, d: Definition) -> list[str]:
        """Comment and blank lines inside a definition's continuation lines:
        an edit keeps them, before the new text, as Postfix does."""
        return [line for line in self.lines[d.first : d.last + 1]
                if not line.strip() or line.lstrip().startswith("#")]

    def _spans(self, name: str) -> list[Definition]:
        return [d for d in self.definitions if d.name == name]

    def _reparse(self) -> None:
        again = MainCf.parse("".join(self.lines), self.path)
        self.definitions = again.definitions

    def _eol(self) -> str:
        for line in self.lines:
            if line.endswith("\r\n"):
                return "\r\n"
        return "\n"

    def set(self, name: str, value: str) -> None:
        """``postconf -e``: replace every definition of *name*, or append one."""
        eol = self._eol()
        text = f"{name} = {value}{eol}"
        spans = self._spans(name)
        if spans:
            for d in reversed(spans):
                self.lines[d.first : d.last + 1] = self._kept(d) + [text]
            self._reparse()
        else:
            if self.lines and not self.lines[-1].endswith(("\n", "\r")):
                self.lines[-1] += eol
            self.lines.append(text)
            self._reparse()

    def set_many(self, pairs: list[tuple[str, str]]) -> None:
        """``postconf -e a=1 b=2``: names already defined are replaced in
        place, new names appended in the order given (Postfix appends them in
        its hash table's order, which varies from run to run)."""
        for name, value in pairs:
            self.set(name, value)

    def remove(self, name: str) -> bool:
        """``postconf -X``: delete every definition of *name*."""
        spans = self._spans(name)
        for d in reversed(spans):
            self.lines[d.first : d.last + 1] = self._kept(d)
        if spans:
            self._reparse()
        return bool(spans)

    def comment_out(self, name: str) -> bool:
        """``postconf -#``: comment out every definition of *name*."""
        spans = self._spans(name)
        for d in spans:
            for i in range(d.first, d.last + 1):
                if self.lines[i].strip() and not self.lines[i].lstrip().startswith("#"):
                    self.lines[i] = "#" + self.lines[i]
        if spans:
            self._reparse()
        return bool(spans)

    def render(self) -> str:
        return "".join(self.lines)

    def write(self) -> None:
        write_atomic(self.path, self.render())


def write_atomic(path: str, text: str) -> None:
    """Replace *path* with *text*: a temporary file in the same directory,
    fsync, rename over the old file, fsync the directory. The file keeps its
    mode; a reader sees the old contents or the new, never half of either."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        mode = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

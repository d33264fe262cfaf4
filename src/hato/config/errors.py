"""Configuration errors: each names the file, the line and what is wrong."""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration problem, reported the way ``postfix check`` reports it.

    ``str(err)`` is one line: ``FILE, line N: message`` (or ``FILE: message``
    when no line applies, or just the message).
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self) -> str:
        if self.path and self.line:
            return f"{self.path}, line {self.line}: {self.message}"
        if self.path:
            return f"{self.path}: {self.message}"
        return self.message


class ExpandError(ConfigError):
    """A syntax error in a ``$name`` / ``${...}`` expression."""


class ExpansionLoop(ExpandError):
    """A parameter that refers back to itself, directly or through others."""

"""What every command shares: Postfix-style messages, option parsing, and
finding the configuration directory.

Options are parsed as Postfix parses them: non-permuting getopt (options stop
at the first non-option argument), repeated options allowed, exact flags.
"""

from __future__ import annotations

import getopt
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..config.errors import ConfigError
from ..config.settings import Config, config_directory_from_env


class UsageError(Exception):
    pass


class Fatal(Exception):
    """A fatal error: the message is printed as ``PROG: fatal: MESSAGE``."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class Messages:
    """``prog: warning: …`` / ``prog: fatal: …`` on standard error."""

    def __init__(self, prog: str):
        self.prog = prog
        self.warned = 0

    def warn(self, text: str) -> None:
        self.warned += 1
        print(f"{self.prog}: warning: {text}", file=sys.stderr)

    def info(self, text: str) -> None:
        print(f"{self.prog}: {text}", file=sys.stderr)

    def fatal(self, text: str, status: int = 1) -> NoReturn:
        raise Fatal(text, status)


def parse_options(argv: Sequence[str], spec: str) -> tuple[list[tuple[str, str]], list[str]]:
    """Non-permuting getopt, as Postfix's commands use."""
    try:
        opts, args = getopt.getopt(list(argv), spec)
    except getopt.GetoptError as err:
        raise UsageError(str(err)) from None
    return opts, args


def load_config(config_option: str | None, *, process_name: str,
                main_missing_ok: bool = False) -> Config:
    from ..io.hostinfo import host_facts

    directory, explicit = config_directory_from_env(config_option)
    return Config.load(directory, host_facts(), explicit_dir=explicit,
                       main_missing_ok=main_missing_ok, process_name=process_name)


class _WarningsToMessages(logging.Handler):
    """Library warnings (a table's skipped rule, a duplicate key) reach the
    user as ``prog: warning: …`` lines."""

    def __init__(self, msgs: Messages):
        super().__init__(logging.WARNING)
        self.msgs = msgs

    def emit(self, record: logging.LogRecord) -> None:
        self.msgs.warn(record.getMessage())


def run(prog: str, func, argv: Sequence[str]) -> int:
    """Run a command body, turning errors into Postfix-style exits."""
    msgs = Messages(prog)
    logger = logging.getLogger("hato")
    handler = _WarningsToMessages(msgs)
    logger.addHandler(handler)
    saved = logger.propagate
    logger.propagate = False
    try:
        return int(func(msgs, list(argv)) or 0)
    except UsageError as err:
        print(f"{prog}: fatal: usage: {err}", file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"{prog}: fatal: {err}", file=sys.stderr)
        return 1
    except Fatal as err:
        print(f"{prog}: fatal: {err}", file=sys.stderr)
        return err.status
    except BrokenPipeError:
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved

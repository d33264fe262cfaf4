"""header_checks, mime_header_checks, nested_header_checks and body_checks.

The tables map a whole logical header (folded lines joined with their line
breaks, as Postfix matches them) or one body line to an action, as in
header_checks(5). :func:`parse_action` turns a table value into an
:class:`Action`, with Postfix's rules for each command:

``REJECT [text]`` (the text gets DSN ``5.7.1`` unless it starts with one; a
``4.x.x`` text defers), ``WARN``, ``INFO``, ``HOLD``, ``DISCARD``,
``PASS`` (no more checks), ``FILTER transport:destination``,
``REDIRECT user@domain``, ``BCC user@domain``, ``PREPEND text``, ``REPLACE
text`` (for headers both must be ``name: value``), ``IGNORE`` and ``STRIP``
(drop the line), ``DUNNO`` and ``OK`` (nothing). Bad entries give Postfix's
warning and act as ``DUNNO``.

:meth:`Action.log_text` gives the line cleanup logs, as Postfix's
cleanup_act_log() writes it::

    QID: warning: header Subject: hi from host[192.0.2.1]; from=<a@b> to=<c@d>
        proto=ESMTP helo=<h>: text

The caller applies the action to the message; :class:`HeaderChecks` holds
the four tables of a service, opened once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import IntEnum

from ..config.settings import Settings
from ..tables.search import TableList
from .rewrite import open_maps

HEADER = "header"
BODY = "body"
CONTENT = "content"


class HeaderClass(IntEnum):
    """Which header block a header belongs to (Postfix's MIME_HDR_*)."""

    PRIMARY = 1  # the message headers
    MULTIPART = 2  # MIME part headers (and primary Content-* headers)
    NESTED = 3  # headers of an attached message/rfc822


_DSN = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")
_IS_HEADER = re.compile(r"^[\x21-\x39\x3b-\x7e]+[ \t]*:")

_LOG_WORD = {"REJECT": "reject", "WARN": "warning", "INFO": "info", "FILTER": "filter",
             "PASS": "pass", "DISCARD": "discard", "HOLD": "hold", "PREPEND": "prepend",
             "REPLACE": "replace", "REDIRECT": "redirect", "BCC": "bcc", "STRIP": "strip"}


def is_header(text: str) -> bool:
    """Postfix's is_header(): ``name:`` or ``name :`` at the start."""
    return _IS_HEADER.match(text) is not None


def dsn_prepend(default: str, text: str) -> str:
    """Postfix's dsn_prepend(): keep a leading ``X.Y.Z`` status, else put
    *default* in front."""
    m = _DSN.match(text)
    if m:
        return m.group(0) + " " + text[m.end():].lstrip()
    return f"{default} {text}"


@dataclass(frozen=True)
class Action:
    """One header/body check decision.

    ``command`` is the upper-case action (``""`` for a value that is not
    one), ``text`` the optional text after it. ``reason`` is the DSN reason
    of a REJECT; ``warning`` a complaint about the table entry (Postfix's
    ``warning:`` text, the entry then does nothing); ``note`` a warning
    about an entry that still acts (REJECT with a 2.x.x status rejects
    with 4.x.x)."""

    command: str
    text: str = ""
    reason: str = ""
    warning: str | None = None
    note: str | None = None  # a warning that goes with a valid action

    @property
    def valid(self) -> bool:
        return self.warning is None and bool(self.command)

    @property
    def drop(self) -> bool:
        """IGNORE and STRIP remove the line."""
        return self.command in ("IGNORE", "STRIP")

    @property
    def reject(self) -> bool:
        return self.command == "REJECT"

    @property
    def defer(self) -> bool:
        """A REJECT whose reason is a 4.x.x status."""
        return self.command == "REJECT" and self.reason.startswith("4")

    @property
    def log_word(self) -> str | None:
        """The word cleanup logs for this action; None when nothing is logged."""
        if not self.valid:
            return None
        return _LOG_WORD.get(self.command)

    def log_text(self, queue_id: str, context: str, content: str, *, origin: str = "unknown",
                 sender: str | None = None, recipient: str | None = None,
                 proto: str | None = None, helo: str | None = None) -> str | None:
        """The log line for this action (None when it logs nothing)."""
        word = self.log_word
        if word is None:
            return None
        text = self.reason if self.command == "REJECT" else self.text
        return act_log_text(queue_id, word, context, content, text, origin=origin,
                            sender=sender, recipient=recipient, proto=proto, helo=helo)


def act_log_text(queue_id: str, word: str, context: str, content: str, text: str = "", *,
                 origin: str = "unknown", sender: str | None = None,
                 recipient: str | None = None, proto: str | None = None,
                 helo: str | None = None) -> str:
    """Postfix's cleanup_act_log() line (the content cut at 200 bytes)."""
    shown = content.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "surrogateescape")
    out = f"{queue_id}: {word}: {context} {shown} from {origin};"
    if sender is not None:
        out += f" from=<{sender}>"
    if recipient is not None:
        out += f" to=<{recipient}>"
    if proto:
        out += f" proto={proto}"
    if helo:
        out += f" helo=<{helo}>"
    if text:
        out += f": {text}"
    return out


def parse_action(value: str, context: str = HEADER, map_class: str = "header_checks") -> Action:
    """Postfix's cleanup_act(): a table value as an :class:`Action`."""
    cut = len(value)
    for i, ch in enumerate(value):
        if ch in " \t":
            cut = i
            break
    command = value[:cut].upper()
    text = value[cut:].lstrip(" \t\n\r\f\v")

    if command == "REJECT":
        if text:
            reason = dsn_prepend("5.7.1", text)
            if reason[0] not in "45":
                # Postfix warns and turns the status into a 4.x.x one.
                return Action(command, text, "4" + reason[1:],
                              note=f"bad DSN action in {text} -- need 4.x.x or 5.x.x")
            return Action(command, text, reason)
        return Action(command, "", "5.7.1 message content rejected")
    if command in ("WARN", "INFO", "PASS", "DISCARD", "HOLD", "IGNORE", "DUNNO", "OK", "STRIP"):
        return Action(command, text)
    if command == "FILTER":
        if not text:
            return Action(command, text, warning=f"missing FILTER command argument in "
                                                 f"{map_class} map")
        if ":" not in text:
            return Action(command, text, warning=f"bad FILTER command {text} in {map_class} -- "
                                                 f"need transport:destination")
        return Action(command, text)
    if command in ("PREPEND", "REPLACE"):
        if not text:
            return Action(command, text, warning=f"{command} action without text in "
                                                 f"{map_class} map")
        if context == HEADER and not is_header(text):
            return Action(command, text, warning=f'bad {command} header text "{text}" in '
                                                 f'{map_class} map -- need "headername: '
                                                 f'headervalue"')
        return Action(command, text)
    if command in ("REDIRECT", "BCC"):
        if "@" not in text:
            what = "target" if command == "REDIRECT" else "address"
            return Action(command, text, warning=f'bad {command} {what} "{text}" in {map_class} '
                                                 f'map -- need user@domain')
        return Action(command, text)
    return Action("", text, warning=f"unknown command in {map_class} map: {value}")


class HeaderChecks:
    """The content check tables of one cleanup service (or, with *prefix*
    ``smtp_`` or ``lmtp_``, of a delivery agent: smtp_header_checks,
    smtp_mime_header_checks, smtp_nested_header_checks, smtp_body_checks)."""

    def __init__(self, settings: Settings, prefix: str = ""):
        opened: dict[str, TableList | None] = {}

        def maps(name: str) -> TableList | None:
            value = settings.str(name)
            # mime_header_checks and nested_header_checks default to
            # $header_checks: share the opened tables, keep the name.
            if value in opened and opened[value] is not None:
                shared = opened[value]
                assert shared is not None
                return TableList(shared.tables, title=name)
            got = open_maps(settings, name, fold_case=False)
            opened[value] = got
            return got

        self.header_checks = maps(prefix + "header_checks")
        self.mime_header_checks = maps(prefix + "mime_header_checks")
        self.nested_header_checks = maps(prefix + "nested_header_checks")
        self.body_checks = maps(prefix + "body_checks")
        self.body_checks_size_limit = settings.int("body_checks_size_limit")
        self._opened = [m for m in opened.values() if m is not None]

    def tables_for(self, header_class: HeaderClass) -> TableList | None:
        if header_class == HeaderClass.PRIMARY:
            return self.header_checks
        if header_class == HeaderClass.MULTIPART:
            return self.mime_header_checks
        return self.nested_header_checks

    @property
    def any_header_checks(self) -> bool:
        return any(m is not None for m in (self.header_checks, self.mime_header_checks,
                                            self.nested_header_checks))

    def check_header(self, header_class: HeaderClass, header: str) -> Action | None:
        """The action for one logical header (``Name: value``, folded lines
        joined by ``\\n``); None when no table matches. TableRetry
        propagates."""
        maps = self.tables_for(header_class)
        if maps is None:
            return None
        value = maps.get(header)
        if value is None:
            return None
        return parse_action(value, HEADER, maps.title)

    def check_body(self, line: str, offset: int = 0) -> Action | None:
        """The action for one body line (or a piece of a long line) at
        *offset* bytes into its body part; lines past
        body_checks_size_limit are not inspected."""
        maps = self.body_checks
        if maps is None:
            return None
        if self.body_checks_size_limit and offset >= self.body_checks_size_limit:
            return None
        value = maps.get(line)
        if value is None:
            return None
        return parse_action(value, BODY, maps.title)

    def close(self) -> None:
        for maps in self._opened:
            maps.close()


__all__ = [
    "BODY",
    "CONTENT",
    "HEADER",
    "Action",
    "HeaderChecks",
    "HeaderClass",
    "act_log_text",
    "dsn_prepend",
    "is_header",
    "parse_action",
]

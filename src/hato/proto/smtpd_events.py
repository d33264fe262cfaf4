"""The sans-IO SMTP server core's vocabulary: replies, limits, states and
the events :class:`hato.proto.smtpd.ServerConnection` emits. Every name here
is also importable from :mod:`hato.proto.smtpd`, where the core's contract
is described."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True)
class Reply:
    code: int
    dsn: str  # enhanced status code, "" for none (e.g. 220, 354)
    text: str  # may contain "\n" for a multi-line reply

    def render(self, enhanced: bool = True) -> bytes:
        prefix = f"{self.dsn} " if self.dsn and enhanced else ""
        if "\n" not in self.text:  # (almost every reply)
            return f"{self.code} {prefix}{self.text}\r\n".encode("utf-8", "surrogateescape")
        lines = self.text.split("\n")
        last = len(lines) - 1
        out = [f"{self.code}-{prefix}{line}" for line in lines[:last]]
        out.append(f"{self.code} {prefix}{lines[last]}")
        return ("\r\n".join(out) + "\r\n").encode("utf-8", "surrogateescape")


#: The extensions Postfix offers by default (when no EHLO told otherwise).
DEFAULT_EXTENSIONS = frozenset({"PIPELINING", "SIZE", "VRFY", "ETRN", "ENHANCEDSTATUSCODES",
                                "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"})


@dataclass(frozen=True)
class Limits:
    line_length_limit: int = 2048  # commands longer than this are truncated
    message_size_limit: int = 10240000  # 0: no limit
    recipient_limit: int = 1000  # smtpd_recipient_limit
    recipient_overshoot_limit: int = 1000
    hard_error_limit: int = 20
    soft_error_limit: int = 10
    junk_command_limit: int = 100
    forbid_bare_newline: str = "no"  # no | normalize | yes | reject
    bare_newline_reject_code: int = 550
    forbid_unauth_pipelining: bool = False
    disable_vrfy: bool = False
    helo_required: bool = False
    smtputf8_enable: bool = True
    strict_rfc821_envelopes: bool = False
    resolve_numeric_domain: bool = False  # a@1.2.3.4 is a valid address
    allow_untrusted_routing: bool = False  # not the core's: the service's policy
    # -- additions --
    strict_smtputf8: bool = False  # 553 5.6.7 for unicode addresses without SMTPUTF8
    sasl_response_limit: int = 12288  # smtpd_sasl_response_limit
    forbidden_commands: tuple[str, ...] = ("CONNECT", "GET", "POST")
    forbid_bogus_commands: bool = True  # the default's regexp:{{/^[^A-Z]/ Bogus}}
    enforce_tls: bool = False  # smtpd_tls_security_level=encrypt: 530 before STARTTLS
    ask_unknown: bool = False  # an unknown command is an event (milters see it)
    # Extensions that are available when no EHLO reply said otherwise (a
    # HELO session, or EHLO accepted without a keyword list). None: Postfix's
    # defaults (DEFAULT_EXTENSIONS, no STARTTLS/AUTH/XCLIENT/XFORWARD).
    extensions: frozenset[str] | None = None


class NeedData:
    """next_event(): feed more bytes first."""

    def __repr__(self) -> str:
        return "NEED_DATA"


class Paused:
    """next_event(): answer the last event (accept/reject) first."""

    def __repr__(self) -> str:
        return "PAUSED"


NEED_DATA = NeedData()
PAUSED = Paused()


class ProtocolStateError(RuntimeError):
    """The service used the API out of order (e.g. accept() with nothing paused)."""


class State(Enum):
    INIT = "init"  # before greet()
    READY = "ready"  # greeted; no HELO/EHLO (also after STARTTLS and XCLIENT)
    HELO = "helo"  # HELO/EHLO done, no mail transaction
    MAIL = "mail"  # in a mail transaction (MAIL accepted)
    DATA = "data"  # reading DATA content
    BDAT = "bdat"  # a BDAT transfer is in progress
    AUTH = "auth"  # SASL exchange in progress
    STARTTLS = "starttls"  # STARTTLS accepted, waiting for starttls_done()
    CLOSED = "closed"


@dataclass
class Event:
    verb: str = ""  # the command as the client sent it, upper-cased ("MAIL")
    pipelined: bool = False  # more input was already waiting when the command was read
    # Set on the event of a line that was longer than its limit and was cut
    # (Postfix: "request longer than LIMIT: first 30 chars..."): the limit
    # (line_length_limit, or smtpd_sasl_response_limit for an AUTH response)
    # and the start of the line as received (at most LONG_LINE_KEEP bytes).
    long_line: tuple[int, bytes] | None = None


@dataclass
class Helo(Event):
    hostname: str = ""
    extended: bool = False  # EHLO


@dataclass
class MailFrom(Event):
    address: str = ""  # external form without <>; "" is the null sender
    size: int | None = None
    body: str | None = None  # 7BIT | 8BITMIME
    ret: str | None = None  # FULL | HDRS
    envid: str | None = None  # xtext-decoded
    smtputf8: bool = False
    auth: str | None = None  # xtext-decoded, "<>" for none
    params: dict[str, str] = field(default_factory=dict)  # others, upper-cased keys
    args: list[str] = field(default_factory=list)  # as typed: the path, then each parameter


@dataclass
class RcptTo(Event):
    address: str = ""
    notify: frozenset[str] = frozenset()  # SUCCESS, FAILURE, DELAY or NEVER
    orcpt: str | None = None  # "rfc822;addr" xtext-decoded
    params: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # as typed: the path, then each parameter


@dataclass
class UnknownCommand(Event):
    """A command the core does not know (with ``ask_unknown``); answer with
    :meth:`ServerConnection.reject` (Postfix: 500 5.5.2 Error: command not
    recognized, unless a milter says otherwise)."""

    line: str = ""


UNKNOWN_REPLY = Reply(500, "5.5.2", "Error: command not recognized")


@dataclass
class DataCommand(Event):
    """DATA (or the first BDAT): the service may still refuse the transaction."""


@dataclass
class MessageData(Event):
    data: bytes = b""  # a piece of message content, dot-unstuffed, CRLF kept


@dataclass
class MessageEnd(Event):
    size: int = 0
    bare_newlines: int = 0
    too_big: bool = False  # message_size_limit exceeded (the content was dropped)
    bare_lf_rejected: bool = False  # forbid_bare_newline=reject refused the message
    reply: Reply | None = None  # set: the core answered already (does not pause)


@dataclass
class BdatChunk(Event):
    """One BDAT chunk has been read completely (its data came as MessageData)."""

    size: int = 0
    last: bool = False
    total: int = 0  # message size so far


@dataclass
class Simple(Event):
    """RSET, NOOP, QUIT: answered by the core."""

    argument: str = ""


@dataclass
class Vrfy(Event):
    argument: str = ""  # the address as sent (external form, maybe in <>)
    smtputf8: bool = False  # VRFY address SMTPUTF8


@dataclass
class Etrn(Event):
    argument: str = ""


@dataclass
class StartTls(Event):
    pass


@dataclass
class Auth(Event):
    mechanism: str = ""
    initial: str | None = None  # base64 text, "=" for empty


@dataclass
class AuthResponse(Event):
    line: str = ""  # "*" cancels


@dataclass
class Xclient(Event):
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Xforward(Event):
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class ProtocolError(Event):
    """The core refused a command by itself; reply is what it sent."""

    reply: Reply | None = None
    junk: bool = False  # not a command at all (unknown, empty, bad UTF-8)
    # The command line as received (before any NUL, without CRLF, at most
    # LINE_KEEP bytes), for logging: Postfix names the whole line of a
    # forbidden or non-SMTP command ("non-SMTP command from ...: %.100s").
    line: bytes = b""


@dataclass
class Closed(Event):
    """The peer closed or the core ends the session (after 421/221)."""

    reason: str = ""  # "" after QUIT; see the REASON_* constants


#: How much of a refused command line a ProtocolError keeps (``line``).
LINE_KEEP = 100
#: How much of an over-long line ``Event.long_line`` keeps.
LONG_LINE_KEEP = 100

REASON_EOF = "lost connection"
REASON_ERRORS = "too many errors"
REASON_SYNC = "protocol synchronization"
REASON_FORBIDDEN = "forbidden command"
REASON_BARE_LF = "bare <LF> received"
REASON_GREETING = "greeting"
REASON_REJECTED = "rejected"
REASON_SYNTAX = "syntax error"

# The core's reading modes (what the next input bytes are).
MODE_CMD, MODE_DATA, MODE_BDAT, MODE_AUTH, MODE_TLS, MODE_DONE = range(6)

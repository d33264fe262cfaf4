"""What local(8) decides, as data: the actions a local recipient's
plan is made of (:class:`Maildir`, :class:`Mbox`, :class:`Command`,
:class:`File`, :class:`Forward`, :class:`Transport`, :class:`Bounce`,
:class:`Defer`, :class:`Discard`), the plan (:class:`LocalPlan`), the
passwd facts it uses and the parameters it decides with
(:class:`LocalSettings`). :func:`hato.delivery.local.plan_local_delivery`
makes the plan; every name here is also importable from
:mod:`hato.delivery.local`.
"""

from __future__ import annotations

import pwd
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ..tables.base import Table
from ..tables.patternfile import split_braced

ALIAS, FORWARD, INCLUDE = "alias", "forward", "include"

#: Postfix's default forward_expansion_filter and command_expansion_filter.
EXPANSION_FILTER = "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


# -- users -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passwd:
    """The passwd facts local(8) uses."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str = ""

    @classmethod
    def from_struct(cls, pw: pwd.struct_passwd) -> Passwd:
        return cls(pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir, pw.pw_shell)


def system_getpwnam(name: str) -> Passwd | None:
    try:
        return Passwd.from_struct(pwd.getpwnam(name))
    except KeyError:
        return None


def system_getpwuid(uid: int) -> Passwd | None:
    try:
        return Passwd.from_struct(pwd.getpwuid(uid))
    except KeyError:
        return None


# -- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Action:
    """Something to do for the recipient.

    *recipient* is the address the action is for (after alias expansion);
    *delivered_to* the address for the ``Delivered-To:`` header (with
    frozen_delivered_to, the recipient local(8) was asked to deliver);
    *sender*, when set, replaces the envelope sender: the owner- alias
    address of a mailing list, which also gets the bounces; *via* says
    what expansion produced the action (``alias``, ``forward``,
    ``include`` or "")."""

    recipient: str
    delivered_to: str
    sender: str | None = None
    via: str = ""


@dataclass(frozen=True, kw_only=True)
class Maildir(Action):
    """Deliver to the Maildir *path* as *uid*/*gid* (deliver_maildir)."""

    path: str
    uid: int
    gid: int


@dataclass(frozen=True, kw_only=True)
class Mbox(Action):
    """Append to the mailbox *path* (deliver_mbox, kind "mailbox"); *spool*
    when it is in mail_spool_directory."""

    path: str
    uid: int
    gid: int
    spool: bool = False


@dataclass(frozen=True, kw_only=True)
class Command(Action):
    """Pipe to the shell command *command* (pipe.command_argv, run_pipe with
    LOCAL_COMMAND_FLAGS and an empty null_sender) as *uid*/*gid*, with
    *env* added to the environment, in the directory *cwd* (None: Postfix
    runs commands in the queue directory); *mailbox* is True for
    mailbox_command deliveries."""

    command: str
    uid: int
    gid: int
    home: str | None = None
    shell: str | None = None
    env: tuple[tuple[str, str], ...] = ()
    mailbox: bool = False
    cwd: str | None = None  # command_execution_directory, expanded; None: the default


@dataclass(frozen=True, kw_only=True)
class File(Action):
    """Append to the file *path* as *uid*/*gid* (deliver_mbox, kind
    "file"), or, when *path* ends in ``/``, deliver to it as a Maildir."""

    path: str
    uid: int
    gid: int

    @property
    def is_maildir(self) -> bool:
        return self.path.endswith("/")


@dataclass(frozen=True, kw_only=True)
class Forward(Action):
    """Resubmit the message to *addresses* (envelope sender: *sender* when
    set, else the original). For a *mailing_list* (an alias with an owner-
    alias) the new recipients carry no ORCPT, original recipient, ENVID or
    RET of the original, as RFC 3461 and Postfix require."""

    addresses: tuple[str, ...]
    mailing_list: bool = False


@dataclass(frozen=True, kw_only=True)
class Transport(Action):
    """Hand the recipient to another transport (mailbox_transport,
    fallback_transport and their _maps), e.g. ``lmtp:unix:private/dovecot``."""

    transport: str


@dataclass(frozen=True, kw_only=True)
class Bounce(Action):
    reason: str
    dsn: str


@dataclass(frozen=True, kw_only=True)
class Defer(Action):
    reason: str
    dsn: str


@dataclass(frozen=True, kw_only=True)
class Discard(Action):
    """Delivered nowhere, reported as sent (2.0.0)."""

    reason: str = "discarded"


@dataclass
class LocalPlan:
    """The actions for one recipient, and the warnings local(8) would log."""

    actions: list[Action] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def deferred(self) -> bool:
        return any(isinstance(a, Defer) for a in self.actions)

    @property
    def bounced(self) -> bool:
        return any(isinstance(a, Bounce) for a in self.actions)

    def of_type(self, kind: type) -> list:
        return [a for a in self.actions if isinstance(a, kind)]


# -- settings ----------------------------------------------------------------------------


def _mask(value: str | Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset(x.lower() for x in split_braced(value))
    return frozenset(x.lower() for x in value)


@dataclass(frozen=True)
class LocalSettings:
    """The parameters local(8) decides with (names as in main.cf). Table
    parameters are sequences of opened tables (a TableList works)."""

    alias_maps: Sequence[Table] = ()
    recipient_delimiter: str = ""
    home_mailbox: str = ""
    mail_spool_directory: str = "/var/mail"
    mailbox_command: str = ""
    mailbox_command_maps: Sequence[Table] = ()
    mailbox_transport: str = ""
    mailbox_transport_maps: Sequence[Table] = ()
    fallback_transport: str = ""
    fallback_transport_maps: Sequence[Table] = ()
    forward_path: str = "$home/.forward${recipient_delimiter}${extension}, $home/.forward"
    forward_expansion_filter: str = EXPANSION_FILTER
    command_expansion_filter: str = EXPANSION_FILTER
    command_execution_directory: str = ""
    execution_directory_expansion_filter: str = EXPANSION_FILTER
    allow_mail_to_commands: frozenset[str] = frozenset({ALIAS, FORWARD})
    allow_mail_to_files: frozenset[str] = frozenset({ALIAS, FORWARD})
    luser_relay: str = ""
    default_privs: str = "nobody"
    owner_request_special: bool = True
    expand_owner_alias: bool = False
    reset_owner_alias: bool = False
    propagate_unmatched_extensions: frozenset[str] = frozenset({"canonical", "virtual"})
    frozen_delivered_to: bool = True
    require_home_directory: bool = False
    myorigin: str = ""
    mydestination: frozenset[str] = frozenset()
    line_length_limit: int = 2048

    def __post_init__(self) -> None:
        for name in ("allow_mail_to_commands", "allow_mail_to_files",
                     "propagate_unmatched_extensions"):
            value = getattr(self, name)
            if not isinstance(value, frozenset):
                object.__setattr__(self, name, _mask(value))
        if not isinstance(self.mydestination, frozenset):
            object.__setattr__(self, "mydestination",
                               frozenset(d.lower() for d in self.mydestination))

    @classmethod
    def from_settings(cls, settings, *, open_tables: Callable[[str, str], Sequence[Table]]
                      ) -> LocalSettings:
        """From a :class:`hato.config.settings.Settings` snapshot;
        *open_tables(name, value)* opens a table-list parameter (e.g.
        ``TableList.from_value``). ``mydestination`` is taken as plain
        domain names."""
        def tables(name: str) -> Sequence[Table]:
            value = settings.str(name)
            return open_tables(name, value) if value.strip() else ()
        return cls(
            alias_maps=tables("alias_maps"),
            recipient_delimiter=settings.str("recipient_delimiter"),
            home_mailbox=settings.str("home_mailbox"),
            mail_spool_directory=settings.str("mail_spool_directory"),
            mailbox_command=settings.raw("mailbox_command") or "",
            mailbox_command_maps=tables("mailbox_command_maps"),
            mailbox_transport=settings.str("mailbox_transport"),
            mailbox_transport_maps=tables("mailbox_transport_maps"),
            fallback_transport=settings.str("fallback_transport"),
            fallback_transport_maps=tables("fallback_transport_maps"),
            forward_path=settings.raw("forward_path") or "",
            forward_expansion_filter=settings.str("forward_expansion_filter"),
            command_expansion_filter=settings.str("command_expansion_filter"),
            command_execution_directory=settings.raw("command_execution_directory") or "",
            execution_directory_expansion_filter=settings.str(
                "execution_directory_expansion_filter"),
            allow_mail_to_commands=_mask(settings.list("allow_mail_to_commands")),
            allow_mail_to_files=_mask(settings.list("allow_mail_to_files")),
            luser_relay=settings.raw("luser_relay") or "",
            default_privs=settings.str("default_privs"),
            owner_request_special=settings.bool("owner_request_special"),
            expand_owner_alias=settings.bool("expand_owner_alias"),
            reset_owner_alias=settings.bool("reset_owner_alias"),
            propagate_unmatched_extensions=_mask(settings.list(
                "propagate_unmatched_extensions")),
            frozen_delivered_to=settings.bool("frozen_delivered_to"),
            require_home_directory=settings.bool("require_home_directory"),
            myorigin=settings.str("myorigin"),
            mydestination=frozenset(d.lower() for d in settings.list("mydestination")),
            line_length_limit=settings.int("line_length_limit"),
        )

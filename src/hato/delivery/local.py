"""local(8)'s decisions: what to do with one local recipient.

:func:`plan_local_delivery` runs Postfix's local delivery switch
(local/recipient.c, alias.c, token.c, include.c, dotforward.c, mailbox.c,
unknown.c) without delivering anything, and returns a :class:`LocalPlan`:
the list of actions a local service then carries out with
:mod:`~hato.delivery.maildir`, :mod:`~hato.delivery.mbox` and
:mod:`~hato.delivery.pipe`, or by resubmitting mail.

The switch, for a recipient ``user+ext@domain``:

1. A recipient already named in a ``Delivered-To:`` header of the message
   bounces (5.4.6 ``mail forwarding loop for ...``).
2. The address is folded to lower case; the extension is split off at the
   first ``recipient_delimiter`` character (not for postmaster,
   mailer-daemon, owner-*, *-request; an extension with ``/`` is
   dropped). An empty user name bounces (5.1.3).
3. Aliases (``alias_maps``): first ``user+ext``, then ``user``. A found
   value is cut into destinations (:mod:`~hato.delivery.forward`) and each
   is delivered: ``/file`` and ``~/file`` (if ``allow_mail_to_files``
   allows ``alias``), ``|command`` (``allow_mail_to_commands``),
   ``:include:/file``, or an address — local addresses recurse through
   this switch, others are forwarded (resubmitted). An alias that names
   itself delivers to the user instead; an alias loop stops at 100 levels
   (5.4.6). With ``owner_request_special``, an ``owner-name`` alias makes
   ``owner-name@$myorigin`` the envelope sender of forwarded mail and the
   address that gets bounces. Commands and files from the (root-owned)
   alias database run with ``default_privs``; an :include: file owned by
   an ordinary user lends its owner's rights instead.
4. Mail for a local user that came through an owner- alias, a .forward or
   an :include: file is forwarded (resubmitted), as Postfix does.
5. ``forward_path`` (``$home``, ``$user``, ``$extension``,
   ``$recipient_delimiter``, ``$domain``, ``$local``, ``$recipient``,
   ``$shell``, ``$mailbox``; the ``${name?value}`` forms; an entry with an
   undefined ``$name`` is skipped; values filtered with
   ``forward_expansion_filter``): the first file that exists is the
   .forward. It must be a regular file owned by the user or root and not
   world-writable; an empty one means "deliver to the mailbox". A user
   who lists themself gets a mailbox copy.
6. The mailbox: ``mailbox_transport_maps``/``mailbox_transport``, then
   (for users in passwd) ``mailbox_command_maps``/``mailbox_command``,
   ``home_mailbox`` (ending in ``/``: Maildir), ``mail_spool_directory``
   (ending in ``/``: Maildir), else the spool mbox.
7. Unknown users: ``fallback_transport_maps``/``fallback_transport``,
   ``luser_relay`` (``$name`` expanded; not when it names the recipient
   itself), postmaster and mailer-daemon are discarded with a warning,
   everyone else bounces (5.1.1 ``unknown user: "name"``).

Everything that needs the system comes in as an argument: the alias
tables, ``getpwnam``/``getpwuid`` (so tests need no real users), and
``is_local`` (does an address resolve to this local transport?). Only
.forward and :include: files are read from the file system. The plan's
actions and the settings are data classes of :mod:`hato.delivery.local_plan`
(importable from here too).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace

from ..config.errors import ExpandError
from ..config.expand import Expander
from ..tables.base import Table, TableRetry
from ..tables.patternfile import split_braced
from ..tables.search import split_extension
from .forward import (
    Destination,
    ForwardFileError,
    include_status,
    load_forward_file,
    load_include_file,
    parse_destinations,
)
from .local_plan import (ALIAS, FORWARD, INCLUDE, Action, Bounce, Command, Defer, Discard,
                         File, Forward, LocalPlan, LocalSettings, Maildir, Mbox, Passwd,
                         Transport, system_getpwnam, system_getpwuid)

MAX_LEVEL = 100
_FAILED = object()  # a passwd lookup that failed temporarily


# -- Delivered-To ------------------------------------------------------------------------


def delivered_to_addresses(chunks: Iterable[bytes]) -> set[str]:
    """The addresses in the message's ``Delivered-To:`` headers, folded to
    lower case (delivered_hdr.c). Reads only the header section: the
    iterator is consumed up to the end of the headers and no further."""
    found: set[str] = set()
    pending = b""
    for chunk in chunks:
        pending += bytes(chunk)
        while True:
            nl = pending.find(b"\n")
            if nl < 0:
                break
            line, pending = pending[:nl].rstrip(b"\r"), pending[nl + 1:]
            if _header_done(line):
                return found
            _collect(line, found)
    if pending and not _header_done(pending.rstrip(b"\r")):
        _collect(pending.rstrip(b"\r"), found)
    return found


def _header_done(line: bytes) -> bool:
    if not line:
        return True
    if line[:1] in (b" ", b"\t"):
        return False
    colon = line.find(b":")
    name = line[:colon].rstrip(b" \t") if colon > 0 else b""
    return not name or any(c <= 32 or c >= 127 for c in name)


def _collect(line: bytes, found: set[str]) -> None:
    name, sep, value = line.partition(b":")
    if sep and name.strip().lower() == b"delivered-to":
        text = value.strip().decode("utf-8", "surrogateescape")
        if text:
            found.add(text.lower())


def is_forwarding_loop(recipient: str, delivered_to: Collection[str]) -> bool:
    """delivered_hdr_find(): is *recipient* among the Delivered-To: addresses?"""
    return recipient.lower() in delivered_to


# -- the planner -------------------------------------------------------------------------


@dataclass(frozen=True)
class _User:
    """usr_attr: whose rights /file and |command deliveries use (uid 0:
    none yet; default_privs then)."""

    uid: int = 0
    gid: int = 0
    home: str | None = None
    shell: str | None = None


@dataclass(frozen=True)
class _State:
    level: int
    address: str
    delivered: str = ""
    exp_type: str = ""
    exp_from: str | None = None
    owner: str | None = None
    sender: str | None = None
    mailing_list: bool = False
    unmatched: str | None = None
    local: str = ""
    user: str = ""
    extension: str | None = None
    delimiter: str = ""
    domain: str | None = None


class _ExtensionExpander(Expander):
    """Notes whether ``$extension`` was used (LOCAL_EXP_EXTENSION_MATCHED)."""

    extension_used = False

    def _use(self, name: str) -> str:
        if name == "extension":
            self.extension_used = True
        return super()._use(name)


class _Planner:
    def __init__(self, settings: LocalSettings, *, getpwnam, getpwuid, delivered_to,
                 sender: str, is_local: Callable[[str], bool]):
        self.s = settings
        self.getpwnam = getpwnam
        self.getpwuid = getpwuid
        self.delivered_to = {d.lower() for d in delivered_to}
        self.sender = sender
        self.is_local = is_local
        self.seen: set[tuple] = set()
        self.plan = LocalPlan()
        self._forwards: dict[tuple[str | None, str, bool], list[str]] = {}
        self._forward_at: dict[tuple[str | None, str, bool], int] = {}

    # -- results ----------------------------------------------------------------------

    def warn(self, text: str) -> None:
        self.plan.warnings.append(text)

    def _common(self, st: _State) -> dict:
        return {"recipient": st.address, "delivered_to": st.delivered or st.address,
                "sender": st.sender, "via": st.exp_type}

    def add(self, kind: type, st: _State, **kw) -> None:
        self.plan.actions.append(kind(**self._common(st), **kw))

    def bounce(self, st: _State, dsn: str, reason: str) -> None:
        self.add(Bounce, st, dsn=dsn, reason=reason)

    def defer(self, st: _State, dsn: str, reason: str) -> None:
        self.add(Defer, st, dsn=dsn, reason=reason)

    def once(self, *key) -> bool:
        """been_here(): False when *key* was seen before."""
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def finish(self) -> LocalPlan:
        """Put each forward group where its first address was found."""
        forwards: dict[int, list[Action]] = {}
        for key, index in self._forward_at.items():
            sender, delivered, mailing_list = key
            forwards.setdefault(index, []).append(Forward(
                recipient=delivered, delivered_to=delivered, sender=sender,
                addresses=tuple(self._forwards[key]), mailing_list=mailing_list))
        actions: list[Action] = []
        for i in range(len(self.plan.actions) + 1):
            actions.extend(forwards.get(i, ()))
            if i < len(self.plan.actions):
                actions.append(self.plan.actions[i])
        self.plan.actions = actions
        return self.plan

    # -- deliver_recipient() -------------------------------------------------------------

    def recipient(self, st: _State, usr: _User) -> None:
        if not self.once("recipient", st.level, st.address):
            return
        if is_forwarding_loop(st.address, self.delivered_to):
            self.bounce(st, "5.4.6", f"mail forwarding loop for {st.address}")
            return
        if not st.delivered:
            st = replace(st, delivered=st.address)
        local = st.address.lower()
        at = local.rfind("@")
        domain: str | None = None
        if at < 0:
            self.warn(f"no @ in recipient address: {local}")
        else:
            local, domain = local[:at], local[at + 1:]
        user, extension, delimiter = local, None, ""
        if self.s.recipient_delimiter:
            split = split_extension(local, self.s.recipient_delimiter,
                                    owner_request_special=self.s.owner_request_special)
            if split is not None:
                user, delimiter, extension = split[0], split[1][:1], split[1][1:]
                if "/" in extension:
                    self.warn(f"address with illegal extension: {local}")
                    local, extension, delimiter = user, None, ""
        st = replace(st, local=local, user=user, extension=extension, delimiter=delimiter,
                     domain=domain, unmatched=extension)
        if not user:
            self.bounce(st, "5.1.3", f'null username in "{st.address}"')
            return
        self.switch(st, usr)

    # -- deliver_switch() ----------------------------------------------------------------

    def switch(self, st: _State, usr: _User) -> None:
        if st.local.startswith("\\"):
            # \user: deliver to the mailbox, no alias or .forward expansion.
            st = replace(st, local=st.local[1:], user=st.user[1:],
                         address=st.address[1:])
            if not self.mailbox(st, usr):
                self.unknown(st, usr)
            return
        st = replace(st, unmatched=None)
        if self.alias(st, usr, st.local):
            return
        if st.extension is not None:
            if ALIAS in self.s.propagate_unmatched_extensions:
                st = replace(st, unmatched=st.extension)
            if self.alias(st, usr, st.user):
                return
            st = replace(st, unmatched=st.extension)
        if st.owner is not None and st.owner.lower() != st.user:
            self.indirect(st)
            return
        if st.exp_type == INCLUDE:
            self.indirect(st)
            return
        if self.s.require_home_directory:
            ok, pw = self.lookup_user(st)
            if not ok:
                return
            if pw is not None and not os.path.isdir(pw.home):
                self.defer(st, "4.3.0", f"cannot access home directory {pw.home}: "
                                        f"No such file or directory")
                return
        handled = self.dotforward(st, usr)
        if handled:
            return
        if not self.mailbox(st, usr):
            self.unknown(st, usr)

    def lookup_user(self, st: _State) -> tuple[bool, Passwd | None]:
        """getpwnam(): (True, entry or None), or (False, None) after
        deferring the recipient for a lookup error."""
        pw = self.passwd(self.getpwnam, st.user)
        if pw is _FAILED:
            self.warn(f"error looking up passwd info for {st.user}")
            self.defer(st, "4.0.0", "user lookup error")
            return False, None
        return True, pw  # type: ignore[return-value]

    @staticmethod
    def passwd(lookup: Callable, key: str | int) -> Passwd | None | object:
        """A passwd lookup: the entry, None (unknown; KeyError counts as
        unknown, as in pwd), or _FAILED (OSError or TableRetry: a backend
        that is down)."""
        try:
            return lookup(key)
        except KeyError:
            return None
        except (OSError, TableRetry):
            return _FAILED

    # -- deliver_alias() -----------------------------------------------------------------

    def find(self, tables: Sequence[Table], key: str) -> str | None:
        """maps_find(): first table that has *key*; TableRetry propagates."""
        for table in tables:
            value = table.get(key)
            if value is not None:
                return value
        return None

    def alias(self, st: _State, usr: _User, name: str) -> bool:
        if st.exp_from is not None and st.exp_from.lower() == name:
            return False
        if st.level > MAX_LEVEL:
            self.warn(f"alias database loop for {name}")
            self.bounce(st, "5.4.6", f"alias database loop for {name}")
            return True
        try:
            value = self.find(self.s.alias_maps, name)
        except TableRetry:
            self.defer(st, "4.3.0", "alias database unavailable")
            return True
        if value is None:
            return False
        st2 = replace(st, exp_type=ALIAS, exp_from=name,
                      delivered=st.delivered if self.s.frozen_delivered_to else st.address)
        owner_rhs = None
        if self.s.owner_request_special:
            try:
                owner_rhs = self.find(self.s.alias_maps, f"owner-{name}")
            except TableRetry:
                owner_rhs = None
        if owner_rhs is not None:
            # A mailing list: the owner- alias becomes the envelope sender.
            target = owner_rhs if self.s.expand_owner_alias else f"owner-{name}"
            owner = self.qualify(target.strip())
            st2 = replace(st2, owner=owner, sender=owner, mailing_list=True)
        elif self.s.reset_owner_alias:
            st2 = replace(st2, owner=None)
        dests = parse_destinations(value)
        if not dests:
            self.warn(f"no recipient in alias lookup result for {name}")
            self.defer(st, "4.3.0", "alias database unavailable")
            return True
        for dest in dests:
            self.token(st2, _User(), dest)
        return True

    # -- deliver_token() -----------------------------------------------------------------

    def token(self, st: _State, usr: _User, dest: Destination) -> None:
        if dest.kind == "file":
            self.file(st, usr, dest.value)
        elif dest.kind == "home_file":
            if not dest.value.startswith("~/"):
                self.warn(f"bad home directory syntax for: {dest.value}")
                self.bounce(st, "5.3.5", f"bad home directory syntax for: {dest.value}")
            elif usr.home is None:
                self.bounce(st, "5.3.5", f"unknown home directory for: {dest.value}")
            elif usr.home == "/":
                self.file(st, usr, dest.value[1:])
            else:
                self.file(st, usr, usr.home.rstrip("/") + dest.value[1:])
        elif dest.kind == "command":
            if st.exp_type not in self.s.allow_mail_to_commands:
                self.bounce(st, "5.7.1", "mail to command is restricted")
            else:
                self.command(st, usr, dest.value)
        elif dest.kind == "include":
            self.include(st, usr, dest.value)
        else:
            self.resolve(st, usr, dest.value)

    def rights(self, st: _State, usr: _User) -> _User | None:
        """The delivery rights for /file and |command: the user's, or
        default_privs when there is no user context (or it is root)."""
        if usr.uid != 0:
            return usr
        pw = self.passwd(self.getpwnam, self.s.default_privs)
        if not isinstance(pw, Passwd) or pw.uid == 0 or pw.gid == 0:
            self.warn(f"default_privs: unknown or privileged user: {self.s.default_privs}")
            self.defer(st, "4.3.5", "mail system configuration error")
            return None
        return replace(usr, uid=pw.uid, gid=pw.gid)

    def file(self, st: _State, usr: _User, path: str) -> None:
        if st.exp_type not in self.s.allow_mail_to_files:
            self.bounce(st, "5.7.1", "mail to file is restricted")
            return
        who = self.rights(st, usr)
        if who is None or not self.once("file", who.uid, path):
            return
        self.add(File, st, path=path, uid=who.uid, gid=who.gid)

    def command(self, st: _State, usr: _User, command: str, *, mailbox: bool = False) -> None:
        who = self.rights(st, usr)
        if who is None or not self.once("command", st.user, who.uid, command):
            return
        env = [("HOME", usr.home)] if usr.home else []
        env += [("LOGNAME", st.user), ("USER", st.user), ("SENDER", self.sender),
                ("RECIPIENT", st.address), ("LOCAL", st.local)]
        if usr.shell:
            env.append(("SHELL", usr.shell))
        if st.domain:
            env.append(("DOMAIN", st.domain))
        if st.extension:
            env.append(("EXTENSION", st.extension))
        allowed = set(self.s.command_expansion_filter)
        env = [(k, "".join(ch if ch in allowed else "_" for ch in v)) for k, v in env]
        cwd = None
        if self.s.command_execution_directory.strip():
            cwd, _ = self.expand(self.s.command_execution_directory, st, usr,
                                 self.s.execution_directory_expansion_filter, strict=False)
            if cwd is None:
                self.warn(f"bad parameter value syntax for command_execution_directory: "
                          f"{self.s.command_execution_directory}")
                self.defer(st, "4.3.5", "mail system configuration error")
                return
        self.add(Command, st, command=command, uid=who.uid, gid=who.gid, home=usr.home,
                 shell=usr.shell, env=tuple(env), mailbox=mailbox, cwd=cwd or None)

    # -- deliver_include() ---------------------------------------------------------------

    def include(self, st: _State, usr: _User, path: str) -> None:
        if not self.once("include", usr.uid, path):
            return
        st = replace(st, exp_from=st.local)
        try:
            fst = include_status(path)
        except ForwardFileError as exc:
            self.warn(exc.warning)
            self.bounce(st, exc.dsn, exc.reason)
            return
        st = replace(st, exp_type=INCLUDE)
        if usr.uid == 0:
            owner_pw = self.passwd(self.getpwuid, fst.st_uid)
            if not isinstance(owner_pw, Passwd):
                self.warn(f"cannot find username for uid {fst.st_uid}")
                self.warn(f"{path}: cannot find :include: file owner username")
                self.defer(st, "4.3.5", "mail system configuration error")
                return
            if owner_pw.uid != 0:
                usr = _User(owner_pw.uid, owner_pw.gid, owner_pw.home, owner_pw.shell)
        if st.owner is None:
            st = replace(st, owner=st.address)
        try:
            dests = load_include_file(path, uid=usr.uid, gid=usr.gid,
                                      line_length_limit=self.s.line_length_limit)
        except ForwardFileError as exc:
            self.warn(exc.warning)
            self.bounce(st, exc.dsn, exc.reason)
            return
        if INCLUDE not in self.s.propagate_unmatched_extensions:
            st = replace(st, unmatched=None)
        for dest in dests:
            self.token(st, usr, dest)

    # -- deliver_resolve_addr() / deliver_indirect() ---------------------------------------

    def qualify(self, address: str) -> str:
        """Canonical form: a bare name gets @$myorigin."""
        if "@" not in address and self.s.myorigin:
            return f"{address}@{self.s.myorigin}"
        return address

    def resolve(self, st: _State, usr: _User, address: str) -> None:
        address = self.qualify(address)
        if st.unmatched and self.s.recipient_delimiter:
            delim = self.s.recipient_delimiter[0]
            at = address.rfind("@")
            if at < 0:
                address = f"{address}{delim}{st.unmatched}"
            else:
                address = f"{address[:at]}{delim}{st.unmatched}{address[at:]}"
        st = replace(st, address=address)
        if self.is_local(address):
            self.recipient(replace(st, level=st.level + 1), usr)
        else:
            self.indirect(st)

    def indirect(self, st: _State) -> None:
        key = (st.sender, st.delivered or st.address, st.mailing_list)
        addresses = self._forwards.setdefault(key, [])
        if key not in self._forward_at:
            self._forward_at[key] = len(self.plan.actions)
        if st.address.lower() not in (a.lower() for a in addresses):
            addresses.append(st.address)

    # -- deliver_dotforward() ------------------------------------------------------------

    def expand(self, template: str, st: _State, usr: _User,
               filter_chars: str | None, *, strict: bool = True) -> tuple[str | None, bool]:
        """local_expand(): (result, whether $extension was used). The result
        is None for bad syntax, and with *strict* also when a plain $name
        is undefined (forward_path entries are then skipped)."""
        values: dict[str, str | None] = {
            "user": st.user, "home": usr.home, "shell": usr.shell, "domain": st.domain,
            "local": st.local, "mailbox": st.local, "recipient": st.address,
            "extension": st.extension,
            "recipient_delimiter": st.delimiter or None,
        }
        allowed = set(filter_chars) if filter_chars is not None else None

        def lookup(name: str) -> str | None:
            value = values.get(name)
            if value is None or allowed is None:
                return value
            return "".join(ch if ch in allowed else "_" for ch in value)

        exp = _ExtensionExpander(lookup, recurse=False)
        try:
            result = exp.expand(template)
        except ExpandError:
            return None, False
        if exp.undefined and strict:
            return None, exp.extension_used
        return result, exp.extension_used

    def dotforward(self, st: _State, usr: _User) -> bool:
        if not self.s.forward_path.strip():
            return False
        ok, pw = self.lookup_user(st)
        if not ok:
            return True
        if pw is None:
            return False
        if not self.s.frozen_delivered_to:
            st = replace(st, delivered=st.address)
        usr = _User(pw.uid, pw.gid, pw.home, pw.shell)
        st = replace(st, exp_type=FORWARD, owner=st.user)
        found = None
        for entry in split_braced(self.s.forward_path):
            path, ext_used = self.expand(entry, st, usr, self.s.forward_expansion_filter)
            if path is None:
                continue
            try:
                lst = os.lstat(path)
            except OSError:
                continue
            if ext_used or FORWARD not in self.s.propagate_unmatched_extensions:
                st = replace(st, unmatched=None)
            found = (path, lst)
            break
        if found is None:
            return False
        path, lst = found
        if not self.once("forward", path):
            return ("forward-done", path) in self.seen
        st = replace(st, exp_from=st.local)
        dests, warning = load_forward_file(path, lst, uid=pw.uid, gid=pw.gid,
                                           line_length_limit=self.s.line_length_limit)
        if warning is not None:
            self.warn(warning)
            return False
        if not dests:
            return False
        for dest in dests:
            self.token(st, usr, dest)
        self.seen.add(("forward-done", path))
        return True

    # -- deliver_mailbox() ---------------------------------------------------------------

    def mailbox(self, st: _State, usr: _User) -> bool:
        if not self.once("mailbox", st.local):
            return True
        try:
            transport = self.find(self.s.mailbox_transport_maps, st.user)
        except TableRetry:
            self.defer(st, "4.3.0", "table lookup failure")
            return True
        transport = transport or self.s.mailbox_transport
        if transport:
            self.add(Transport, st, transport=transport.strip())
            return True
        ok, pw = self.lookup_user(st)
        if not ok:
            return True
        if pw is None:
            return False
        if not self.s.frozen_delivered_to:
            st = replace(st, delivered=st.address)
        usr = _User(pw.uid, pw.gid, pw.home, pw.shell)
        try:
            command = self.find(self.s.mailbox_command_maps, st.user)
        except TableRetry:
            self.defer(st, "4.3.0", "table lookup failure")
            return True
        command = command or self.s.mailbox_command
        home_mailbox = self.s.home_mailbox
        spool = self.s.mail_spool_directory
        if command:
            # Mailbox commands are not subject to allow_mail_to_commands.
            self.command(replace(st, exp_type=""), usr, command, mailbox=True)
        elif home_mailbox.endswith("/"):
            self.add(Maildir, st, path=os.path.join(pw.home, home_mailbox),
                     uid=pw.uid, gid=pw.gid)
        elif spool.endswith("/"):
            self.add(Maildir, st, path=f"{spool}{st.user}/", uid=pw.uid, gid=pw.gid)
        elif home_mailbox:
            self.add(Mbox, st, path=os.path.join(pw.home, home_mailbox),
                     uid=pw.uid, gid=pw.gid, spool=False)
        else:
            self.add(Mbox, st, path=os.path.join(spool, st.user), uid=pw.uid, gid=pw.gid,
                     spool=True)
        return True

    # -- deliver_unknown() ---------------------------------------------------------------

    def unknown(self, st: _State, usr: _User) -> None:
        if not self.once("unknown", st.local):
            return
        try:
            transport = self.find(self.s.fallback_transport_maps, st.user)
        except TableRetry:
            self.defer(st, "4.3.0", "table lookup failure")
            return
        transport = transport or self.s.fallback_transport
        if transport:
            self.add(Transport, st, transport=transport.strip())
            return
        if self.s.luser_relay:
            st = replace(st, unmatched=None)
            relay, _ = self.expand(self.s.luser_relay, st, usr, None, strict=False)
            relay = (relay or "").strip()
            if relay and self.qualify(relay).lower() != st.address.lower():
                self.resolve(st, usr, relay)
                return
            self.bounce(st, "5.1.1", f'unknown user: "{st.user}"')
            return
        if st.user in ("mailer-daemon", "postmaster"):
            self.warn(f"required alias not found: {st.user}")
            self.add(Discard, st)
            return
        self.bounce(st, "5.1.1", f'unknown user: "{st.user}"')


def plan_local_delivery(recipient: str, *,
                        settings: LocalSettings,
                        getpwnam: Callable[[str], Passwd | None] = system_getpwnam,
                        getpwuid: Callable[[int], Passwd | None] = system_getpwuid,
                        delivered_to: Collection[str] = (),
                        sender: str = "",
                        is_local: Callable[[str], bool] | None = None) -> LocalPlan:
    """Decide what local(8) does with *recipient* (an address in a local
    domain). *delivered_to* are the message's Delivered-To: addresses
    (:func:`delivered_to_addresses`); *sender* the envelope sender (for
    command environments); *is_local* tells whether an address found in an
    alias or .forward resolves to the local transport (default: no domain,
    $myorigin, or a $mydestination domain). Table lookups that fail
    temporarily become Defer actions."""
    if is_local is None:
        local_domains = set(settings.mydestination)
        if settings.myorigin:
            local_domains.add(settings.myorigin.lower())

        def is_local(address: str) -> bool:
            at = address.rfind("@")
            return at < 0 or address[at + 1:].lower() in local_domains

    planner = _Planner(settings, getpwnam=getpwnam, getpwuid=getpwuid,
                       delivered_to=delivered_to, sender=sender, is_local=is_local)
    planner.recipient(_State(level=0, address=recipient), _User())
    return planner.finish()


__all__ = [
    "ALIAS",
    "FORWARD",
    "INCLUDE",
    "Action",
    "Bounce",
    "Command",
    "Defer",
    "Discard",
    "File",
    "Forward",
    "LocalPlan",
    "LocalSettings",
    "Maildir",
    "Mbox",
    "Passwd",
    "Transport",
    "delivered_to_addresses",
    "is_forwarding_loop",
    "plan_local_delivery",
    "system_getpwnam",
    "system_getpwuid",
]

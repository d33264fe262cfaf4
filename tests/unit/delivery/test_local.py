"""local(8) planning: aliases, :include:, .forward, loops, extensions,
mailboxes and unknown users. No root needed: passwd comes from a dict."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.delivery.local import (
    Bounce,
    Command,
    Defer,
    Discard,
    Forward,
    LocalSettings,
    Maildir,
    Mbox,
    Passwd,
    Transport,
    delivered_to_addresses,
    is_forwarding_loop,
    plan_local_delivery,
)
from hato.tables.base import Table, TableRetry

from .conftest import AS_ROOT

NOBODY = Passwd("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin")
BOB_UID = 4242 if AS_ROOT else os.geteuid()
STRANGER_UID = 4343 if AS_ROOT else os.geteuid() + 1


class DictTable(Table):
    type_name = "test"

    def __init__(self, data: dict[str, str], *, fail: bool = False):
        super().__init__("aliases")
        self.data = data
        self.fail = fail

    def get(self, key: str) -> str | None:
        if self.fail:
            raise TableRetry(self.name, "database down")
        return self.data.get(key)


class World:
    """Users with homes under tmp_path, and a helper to plan."""

    def __init__(self, tmp_path: Path):
        self.root = tmp_path
        self.spool = tmp_path / "spool"
        self.spool.mkdir()
        self.users: dict[str, Passwd] = {"nobody": NOBODY}
        self.add_user("bob", BOB_UID)
        self.add_user("carol", BOB_UID + 1)
        self.add_user("root", 0)
        self.aliases: dict[str, str] = {}
        self.settings = LocalSettings(
            alias_maps=[DictTable(self.aliases)], myorigin="ex.com",
            mydestination=frozenset({"ex.com", "localhost"}),
            mail_spool_directory=str(self.spool))

    def add_user(self, name: str, uid: int) -> Passwd:
        home = self.root / "home" / name
        home.mkdir(parents=True)
        if AS_ROOT:
            os.chown(home, uid, uid)
        pw = Passwd(name, uid, uid, str(home), "/bin/sh")
        self.users[name] = pw
        return pw

    def home(self, name: str) -> Path:
        return Path(self.users[name].home)

    def write(self, path: Path, text: str, *, owner: int | None = None, mode: int = 0o644):
        path.write_text(text)
        path.chmod(mode)
        if AS_ROOT and owner is not None:
            os.chown(path, owner, owner)
        return path

    def forward(self, name: str, text: str, *, suffix: str = "", mode: int = 0o644):
        return self.write(self.home(name) / f".forward{suffix}", text,
                          owner=self.users[name].uid, mode=mode)

    def getpwuid(self, uid: int) -> Passwd | None:
        for pw in self.users.values():
            if pw.uid == uid:
                return pw
        return None

    def plan(self, recipient: str, **kw):
        settings = kw.pop("settings", self.settings)
        return plan_local_delivery(recipient, settings=settings, getpwnam=self.users.get,
                                   getpwuid=self.getpwuid, **kw)


@pytest.fixture
def w(tmp_path) -> World:
    return World(tmp_path)


def kinds(plan):
    return [type(a).__name__ for a in plan.actions]


# -- mailboxes ---------------------------------------------------------------------------


def test_plain_user_gets_the_spool_mailbox(w):
    plan = w.plan("Bob@EX.com", sender="s@x")
    assert plan.actions == [Mbox(recipient="Bob@EX.com", delivered_to="Bob@EX.com",
                                 path=str(w.spool / "bob"), uid=BOB_UID, gid=BOB_UID,
                                 spool=True)]
    assert plan.warnings == []


@pytest.mark.parametrize("home_mailbox, spool, kind, path", [
    ("Maildir/", None, Maildir, "{home}/Maildir/"),
    ("Mailbox", None, Mbox, "{home}/Mailbox"),
    ("", "{spool}/", Maildir, "{spool}/bob/"),
])
def test_mailbox_locations(w, home_mailbox, spool, kind, path):
    settings = replace(w.settings, home_mailbox=home_mailbox,
                       mail_spool_directory=(spool or "").format(spool=w.spool)
                       or str(w.spool))
    plan = w.plan("bob@ex.com", settings=settings)
    (action,) = plan.actions
    assert type(action) is kind
    assert action.path == path.format(home=w.home("bob"), spool=w.spool)
    assert (action.uid, action.gid) == (BOB_UID, BOB_UID)
    if kind is Mbox:
        assert action.spool is False


def test_mailbox_command_runs_as_the_user(w):
    settings = replace(w.settings, mailbox_command="/usr/bin/procmail -a $EXTENSION",
                       recipient_delimiter="+")
    (action,) = w.plan("bob+news@ex.com", settings=settings, sender="s@x").actions
    assert isinstance(action, Command) and action.mailbox
    assert action.command == "/usr/bin/procmail -a $EXTENSION"  # not expanded by hato
    assert (action.uid, action.gid) == (BOB_UID, BOB_UID)
    env = dict(action.env)
    assert env["USER"] == env["LOGNAME"] == "bob"
    assert env["EXTENSION"] == "news"
    assert env["RECIPIENT"] == "bob+news@ex.com"
    assert env["LOCAL"] == "bob+news"
    assert env["DOMAIN"] == "ex.com"
    assert env["SENDER"] == "s@x"
    assert env["HOME"] == str(w.home("bob"))
    # root's mailbox command runs with default_privs.
    (action,) = w.plan("root@ex.com", settings=settings).actions
    assert (action.uid, action.gid) == (NOBODY.uid, NOBODY.gid)


def test_mailbox_and_fallback_transports(w):
    settings = replace(w.settings, mailbox_transport="lmtp:unix:private/dovecot-lmtp",
                       fallback_transport="relay:[backup.example]")
    (a,) = w.plan("bob@ex.com", settings=settings).actions
    assert a == Transport(recipient="bob@ex.com", delivered_to="bob@ex.com",
                          transport="lmtp:unix:private/dovecot-lmtp")
    # mailbox_transport takes every user, known or not.
    (a,) = w.plan("zed@ex.com", settings=settings).actions
    assert isinstance(a, Transport) and a.transport.startswith("lmtp:")
    settings = replace(w.settings, fallback_transport="relay:[backup.example]",
                       mailbox_transport_maps=[DictTable({"carol": "smtp:[carol.example]"})])
    assert w.plan("carol@ex.com", settings=settings).actions[0].transport == \
        "smtp:[carol.example]"
    (a,) = w.plan("zed@ex.com", settings=settings).actions
    assert a.transport == "relay:[backup.example]"


# -- aliases ----------------------------------------------------------------------------


def test_alias_list(w):
    w.aliases["team"] = "bob, carol"
    plan = w.plan("team@ex.com")
    assert kinds(plan) == ["Mbox", "Mbox"]
    assert [a.recipient for a in plan.actions] == ["bob@ex.com", "carol@ex.com"]
    # frozen_delivered_to: the Delivered-To: is the address local(8) was given.
    assert {a.delivered_to for a in plan.actions} == {"team@ex.com"}
    assert {a.via for a in plan.actions} == {"alias"}


def test_alias_files_and_commands_use_default_privs(w):
    w.aliases["log"] = ('"|/usr/bin/logger -t mail", /var/log/mail-archive, /srv/archive/,'
                        ' /var/log/mail-archive')
    plan = w.plan("log@ex.com")
    assert kinds(plan) == ["Command", "File", "File"]
    cmd, file_, maildir = plan.actions
    assert cmd.command == "/usr/bin/logger -t mail"
    assert (cmd.uid, cmd.gid) == (NOBODY.uid, NOBODY.gid)
    assert cmd.home is None
    assert file_.path == "/var/log/mail-archive" and not file_.is_maildir
    assert (file_.uid, file_.gid) == (NOBODY.uid, NOBODY.gid)
    assert maildir.path == "/srv/archive/" and maildir.is_maildir


def test_alias_to_remote_and_recursion(w):
    w.aliases.update({"sales": "info, x@remote.example", "info": "bob",
                      "all": "sales, carol"})
    plan = w.plan("all@ex.com")
    assert kinds(plan) == ["Mbox", "Forward", "Mbox"]
    mbox_bob, fwd, mbox_carol = plan.actions
    assert mbox_bob.recipient == "bob@ex.com"
    assert fwd.addresses == ("x@remote.example",)
    assert fwd.sender is None and not fwd.mailing_list
    assert fwd.delivered_to == "all@ex.com"
    assert mbox_carol.recipient == "carol@ex.com"


def test_alias_naming_itself_delivers_to_the_user(w):
    w.aliases["bob"] = "bob, carol"
    plan = w.plan("bob@ex.com")
    assert [(type(a).__name__, a.recipient) for a in plan.actions] == [
        ("Mbox", "bob@ex.com"), ("Mbox", "carol@ex.com")]


def test_owner_alias_makes_a_mailing_list(w):
    w.aliases.update({"list": "bob, x@remote.example", "owner-list": "admin@ex.com"})
    (fwd,) = w.plan("list@ex.com").actions
    assert isinstance(fwd, Forward)
    assert fwd.addresses == ("bob@ex.com", "x@remote.example")
    assert fwd.sender == "owner-list@ex.com"
    assert fwd.mailing_list
    settings = replace(w.settings, expand_owner_alias=True)
    (fwd,) = w.plan("list@ex.com", settings=settings).actions
    assert fwd.sender == "admin@ex.com"
    settings = replace(w.settings, owner_request_special=False)
    plan = w.plan("list@ex.com", settings=settings)
    assert kinds(plan) == ["Mbox", "Forward"]


def test_alias_loop(w):
    w.aliases.update({"ping": "pong", "pong": "ping"})
    plan = w.plan("ping@ex.com")
    assert kinds(plan) == ["Bounce"]
    assert plan.actions[0].dsn == "5.4.6"
    assert plan.actions[0].reason.startswith("alias database loop for ")
    assert plan.warnings and plan.warnings[0].startswith("alias database loop for ")


def test_alias_database_unavailable(w):
    settings = replace(w.settings, alias_maps=[DictTable({}, fail=True)])
    assert w.plan("bob@ex.com", settings=settings).actions == [
        Defer(recipient="bob@ex.com", delivered_to="bob@ex.com", dsn="4.3.0",
              reason="alias database unavailable")]
    w.aliases["empty"] = ""
    plan = w.plan("empty@ex.com")
    assert kinds(plan) == ["Defer"]
    assert plan.warnings == ["no recipient in alias lookup result for empty"]


def test_commands_and_files_can_be_forbidden(w):
    w.aliases["x"] = '"|/bin/cmd", /tmp/file'
    settings = replace(w.settings, allow_mail_to_commands="forward",
                       allow_mail_to_files="forward")
    plan = w.plan("x@ex.com", settings=settings)
    assert [(a.dsn, a.reason) for a in plan.actions] == [
        ("5.7.1", "mail to command is restricted"), ("5.7.1", "mail to file is restricted")]


def test_home_relative_file_needs_a_user(w):
    w.aliases["x"] = "~/inbox"
    (a,) = w.plan("x@ex.com").actions
    assert isinstance(a, Bounce) and a.reason == "unknown home directory for: ~/inbox"


# -- :include: ----------------------------------------------------------------------------


def test_include_file(w):
    inc = w.write(w.root / "staff",
                  "# the staff list\ncarol, x@remote.example\n"
                  '"|/usr/bin/vacation staff"\n  # not a comment: starts with blanks\n',
                  owner=BOB_UID)
    w.aliases["staff"] = f":include:{inc}"
    plan = w.plan("staff@ex.com")
    # Local members of an :include: list are always forwarded; commands in
    # include files are not allowed by default.
    assert kinds(plan) == ["Forward", "Bounce"]
    fwd, bounce = plan.actions
    assert set(fwd.addresses) >= {"carol@ex.com", "x@remote.example"}
    assert bounce.reason == "mail to command is restricted"
    settings = replace(w.settings, allow_mail_to_commands="alias, forward, include")
    plan = w.plan("staff@ex.com", settings=settings)
    (cmd,) = plan.of_type(Command)
    # The include file's owner lends its rights (root-owned: default_privs).
    assert cmd.uid == (BOB_UID if BOB_UID != 0 else NOBODY.uid)
    assert cmd.via == "include"


def test_include_relative_or_unsafe(w):
    w.aliases["rel"] = ":include:staff"
    plan = w.plan("rel@ex.com")
    assert [(a.dsn, a.reason) for a in plan.actions] == [
        ("5.3.5", "mail system configuration error")]
    assert plan.warnings == [":include:staff uses a relative path"]
    unsafe = w.write(w.root / "open", "carol\n", mode=0o666)
    w.aliases["open"] = f":include:{unsafe}"
    plan = w.plan("open@ex.com")
    assert kinds(plan) == ["Bounce"]
    assert plan.warnings == [f":include: file {unsafe} is world writable"]
    w.aliases["gone"] = f":include:{w.root}/missing"
    plan = w.plan("gone@ex.com")
    assert kinds(plan) == ["Bounce"]
    assert plan.warnings[0].startswith(f"unable to lookup :include: file {w.root}/missing")


def test_include_owner_unknown_defers(w):
    inc = w.write(w.root / "list", "carol\n", owner=99999)
    w.aliases["l"] = f":include:{inc}"
    if not AS_ROOT:
        w.users.pop("bob")  # the owner (us) has no passwd entry
        w.users = {k: v for k, v in w.users.items() if v.uid != os.geteuid()}
    plan = w.plan("l@ex.com")
    assert kinds(plan) == ["Defer"]
    assert plan.actions[0].dsn == "4.3.5"


# -- .forward -------------------------------------------------------------------------------


def test_dot_forward(w):
    w.forward("bob", "# my forward\ncarol, \\bob, x@remote.example\n"
                     '"|/usr/bin/vacation bob", ~/archive\n')
    plan = w.plan("bob@ex.com")
    assert kinds(plan) == ["Forward", "Mbox", "Command", "File"]
    fwd, mbox, cmd, file_ = plan.actions
    # Another local user named in a .forward is forwarded, the user
    # themself gets a mailbox copy.
    assert fwd.addresses == ("carol@ex.com", "x@remote.example")
    assert fwd.sender is None
    assert mbox.recipient == "bob@ex.com" and mbox.via == "forward"
    expected = BOB_UID if BOB_UID != 0 else NOBODY.uid
    assert cmd.uid == expected and cmd.command == "/usr/bin/vacation bob"
    assert file_.path == f"{w.home('bob')}/archive" and file_.uid == expected


def test_dot_forward_with_extension(w):
    settings = replace(w.settings, recipient_delimiter="+")
    w.forward("bob", "x@remote.example\n")
    w.forward("bob", "y@remote.example\n", suffix="+lists")
    (fwd,) = w.plan("bob+lists@ex.com", settings=settings).actions
    assert fwd.addresses == ("y@remote.example",)
    (fwd,) = w.plan("bob+other@ex.com", settings=settings).actions
    assert fwd.addresses == ("x@remote.example",)
    # Unmatched extensions travel on only when asked to.
    settings = replace(settings, propagate_unmatched_extensions="canonical, virtual, forward")
    (fwd,) = w.plan("bob+other@ex.com", settings=settings).actions
    assert fwd.addresses == ("x+other@remote.example",)
    (fwd,) = w.plan("bob+lists@ex.com", settings=settings).actions
    assert fwd.addresses == ("y@remote.example",)


def test_forward_path_expansion(w):
    settings = replace(w.settings, recipient_delimiter="-",
                       forward_path="$home/.fwd/${user}${extension?-$extension}, "
                                    "${home}/.forward")
    (w.home("bob") / ".fwd").mkdir()
    w.write(w.home("bob") / ".fwd" / "bob-work", "x@remote.example\n", owner=BOB_UID)
    (fwd,) = w.plan("bob-work@ex.com", settings=settings).actions
    assert fwd.addresses == ("x@remote.example",)
    w.write(w.home("bob") / ".fwd" / "bob", "z@remote.example\n", owner=BOB_UID)
    (fwd,) = w.plan("bob@ex.com", settings=settings).actions
    assert fwd.addresses == ("z@remote.example",)


def test_empty_or_unusable_forward_means_mailbox(w):
    w.forward("bob", "# nothing but a comment\n\n")
    assert kinds(w.plan("bob@ex.com")) == ["Mbox"]
    w.forward("bob", "x@remote.example\n", mode=0o666)
    plan = w.plan("bob@ex.com")
    assert kinds(plan) == ["Mbox"]
    assert plan.warnings == [f"file {w.home('bob')}/.forward is world writable"]
    f = w.forward("bob", "x@remote.example\n")
    if AS_ROOT:
        os.chown(f, STRANGER_UID, STRANGER_UID)
    else:
        w.users["bob"] = replace(w.users["bob"], uid=STRANGER_UID)
    plan = w.plan("bob@ex.com")
    assert kinds(plan) == ["Mbox"]
    assert plan.warnings[0].startswith(f"file {f} has bad owner uid ")


def test_symlinked_forward_is_ignored(w):
    real = w.write(w.root / "elsewhere", "x@remote.example\n", owner=BOB_UID)
    (w.home("bob") / ".forward").symlink_to(real)
    plan = w.plan("bob@ex.com")
    assert kinds(plan) == ["Mbox"]
    assert plan.warnings == [f"file {w.home('bob')}/.forward is not a regular file"]


def test_no_forward_path(w):
    w.forward("bob", "x@remote.example\n")
    settings = replace(w.settings, forward_path="")
    assert kinds(w.plan("bob@ex.com", settings=settings)) == ["Mbox"]


def test_mutual_forwards(w):
    w.forward("bob", "carol\n")
    w.forward("carol", "bob\n")
    (fwd,) = w.plan("bob@ex.com").actions
    assert fwd.addresses == ("carol@ex.com",)


# -- loops, extensions, unknown users ------------------------------------------------------


def test_delivered_to_loop(w):
    plan = w.plan("bob@ex.com", delivered_to={"bob@ex.com"})
    assert plan.actions == [Bounce(recipient="bob@ex.com", delivered_to="bob@ex.com",
                                   dsn="5.4.6", reason="mail forwarding loop for bob@ex.com")]
    w.aliases["team"] = "bob, carol"
    plan = w.plan("team@ex.com", delivered_to={"carol@ex.com"})
    assert kinds(plan) == ["Mbox", "Bounce"]
    assert plan.actions[1].reason == "mail forwarding loop for carol@ex.com"


def test_delivered_to_header_scan():
    consumed = []

    def message():
        for part in (b"Received: x\nDelivered-To: Bob@EX.com\n", b"delivered-to:",
                     b"  carol@ex.com\nSubject: s\n", b"\nDelivered-To: body@ex.com\n"):
            consumed.append(part)
            yield part
        yield b"never read\n"  # pragma: no cover

    found = delivered_to_addresses(message())
    assert found == {"bob@ex.com", "carol@ex.com"}
    assert len(consumed) == 4
    assert is_forwarding_loop("BOB@ex.com", found)
    assert not is_forwarding_loop("dave@ex.com", found)


def test_extensions(w):
    settings = replace(w.settings, recipient_delimiter="+")
    (a,) = w.plan("bob+Tag@ex.com", settings=settings).actions
    assert isinstance(a, Mbox) and a.path == str(w.spool / "bob")
    assert a.recipient == a.delivered_to == "bob+Tag@ex.com"
    # An alias for the full local part wins over the bare user.
    w.aliases.update({"bob+special": "carol", "sales": "x@remote.example"})
    (a,) = w.plan("bob+special@ex.com", settings=settings).actions
    assert a.recipient == "carol@ex.com"
    (fwd,) = w.plan("sales+q1@ex.com", settings=settings).actions
    assert fwd.addresses == ("x@remote.example",)
    settings2 = replace(settings, propagate_unmatched_extensions="alias")
    (fwd,) = w.plan("sales+q1@ex.com", settings=settings2).actions
    assert fwd.addresses == ("x+q1@remote.example",)


def test_bad_extensions_and_specials(w):
    settings = replace(w.settings, recipient_delimiter="+-")
    plan = w.plan("bob+a/b@ex.com", settings=settings)
    assert kinds(plan) == ["Mbox"]
    assert plan.warnings == ["address with illegal extension: bob+a/b"]
    w.aliases.update({"owner-list": "bob", "list-request": "carol"})
    assert w.plan("owner-list@ex.com", settings=settings).actions[0].recipient == "bob@ex.com"
    assert w.plan("list-request@ex.com", settings=settings).actions[0].recipient == \
        "carol@ex.com"
    plan = w.plan("@ex.com")
    assert [(a.dsn, a.reason) for a in plan.actions] == [
        ("5.1.3", 'null username in "@ex.com"')]


def test_unknown_user(w):
    assert w.plan("Zed@ex.com").actions == [
        Bounce(recipient="Zed@ex.com", delivered_to="Zed@ex.com", dsn="5.1.1",
               reason='unknown user: "zed"')]


def test_luser_relay(w):
    settings = replace(w.settings, luser_relay="catchall@remote.example")
    (fwd,) = w.plan("zed@ex.com", settings=settings).actions
    assert isinstance(fwd, Forward) and fwd.addresses == ("catchall@remote.example",)
    settings = replace(w.settings, luser_relay="$user@other.example",
                       recipient_delimiter="+")
    (fwd,) = w.plan("zed+x@ex.com", settings=settings).actions
    assert fwd.addresses == ("zed@other.example",)  # no extension propagation
    settings = replace(w.settings, luser_relay="bob")
    (a,) = w.plan("zed@ex.com", settings=settings).actions
    assert isinstance(a, Mbox) and a.recipient == "bob@ex.com"
    settings = replace(w.settings, luser_relay="zed")
    (a,) = w.plan("zed@ex.com", settings=settings).actions
    assert isinstance(a, Bounce) and a.reason == 'unknown user: "zed"'


def test_required_aliases_missing(w):
    plan = w.plan("postmaster@ex.com")
    assert plan.actions == [Discard(recipient="postmaster@ex.com",
                                    delivered_to="postmaster@ex.com")]
    assert plan.warnings == ["required alias not found: postmaster"]


def test_default_privs_unknown(w):
    w.aliases["log"] = "/var/log/x"
    settings = replace(w.settings, default_privs="nosuchuser")
    plan = w.plan("log@ex.com", settings=settings)
    assert [(a.dsn, a.reason) for a in plan.actions] == [
        ("4.3.5", "mail system configuration error")]


def test_passwd_errors_and_home(w):
    def broken(name):
        raise OSError("nss backend down")

    plan = plan_local_delivery("bob@ex.com", settings=w.settings, getpwnam=broken)
    assert [(type(a).__name__, a.dsn, a.reason) for a in plan.actions] == [
        ("Defer", "4.0.0", "user lookup error")]
    settings = replace(w.settings, require_home_directory=True)
    w.users["bob"] = replace(w.users["bob"], home=str(w.root / "no-such-home"))
    (a,) = w.plan("bob@ex.com", settings=settings).actions
    assert isinstance(a, Defer) and a.dsn == "4.3.0"


def test_unfrozen_delivered_to(w):
    w.aliases["team"] = "bob"
    settings = replace(w.settings, frozen_delivered_to=False)
    (a,) = w.plan("team@ex.com", settings=settings).actions
    assert a.delivered_to == "bob@ex.com"


def test_settings_from_main_cf(tmp_path):
    facts = HostFacts("mx1", (("127.0.0.1", 8),), ())
    main = ("recipient_delimiter = +\nhome_mailbox = Maildir/\n"
            "alias_maps = test:aliases\nallow_mail_to_commands = alias\n"
            "myorigin = example.com\n")
    config = Config(str(tmp_path), MainCf.parse(main, str(tmp_path / "main.cf")),
                    MasterCf.parse("", str(tmp_path / "master.cf")), facts)
    opened = {}

    def open_tables(name, value):
        opened[name] = value
        return [DictTable({"postmaster": "root"})]

    s = LocalSettings.from_settings(config.settings(), open_tables=open_tables)
    assert s.recipient_delimiter == "+" and s.home_mailbox == "Maildir/"
    assert s.allow_mail_to_commands == frozenset({"alias"})
    assert s.allow_mail_to_files == frozenset({"alias", "forward"})
    assert s.forward_path == "$home/.forward${recipient_delimiter}${extension}, $home/.forward"
    assert s.myorigin == "example.com"
    assert "localhost" in s.mydestination
    assert opened["alias_maps"] == "test:aliases"


def test_command_execution_directory(w):
    settings = replace(w.settings, mailbox_command="/usr/bin/procmail",
                       command_execution_directory="$home/run${extension?/$extension}",
                       recipient_delimiter="+")
    (cmd,) = w.plan("bob+x@ex.com", settings=settings).actions
    assert cmd.cwd == f"{w.home('bob')}/run/x"
    (cmd,) = w.plan("bob@ex.com", settings=replace(
        settings, command_execution_directory="")).actions
    assert cmd.cwd is None
    (a,) = w.plan("bob@ex.com", settings=replace(
        settings, command_execution_directory="${home")).actions
    assert isinstance(a, Defer) and a.dsn == "4.3.5"

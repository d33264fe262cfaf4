"""hato postmulti: instance names, default directories, selection, and the
main.cf edits of each life-cycle action, run in-process on a primary and
instances under a temporary directory."""

from __future__ import annotations

import grp
import os
import pwd

import pytest

from hato.cli.instances import (Assignment, Instance, PostmultiError, Selection,
                                check_name_assignments, matches, parse_setting, private_path)
from hato.config.maincf import MainCf
from tests.conftest import run_hato
from tests.hatorun import hato_inprocess

# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["postfix-deux", "hato-deux", "postfix-a.b:c@d%e=f+g!h_i"])
def test_good_instance_names(name):
    check_name_assignments(Assignment(name, "mta"))


@pytest.mark.parametrize("name, message", [
    ("deux", "New instance name must start with 'postfix-' or 'hato-'"),
    ("hatodeux", "New instance name must start with 'postfix-' or 'hato-'"),
    ("postfix-a/b", "Illegal '/' character in new instance name: 'postfix-a/b'"),
    ("postfix-a b", "Unsafe characters in new instance name: 'postfix-a b'"),
    ("postfix-é", "Unsafe characters in new instance name: 'postfix-é'"),
])
def test_bad_instance_names(name, message):
    with pytest.raises(PostmultiError) as err:
        check_name_assignments(Assignment(name))
    assert str(err.value) == message


def test_nameless_and_bad_group():
    check_name_assignments(Assignment("", ""))  # "-I -" and "-G -": clear
    with pytest.raises(PostmultiError, match=r"^Unsafe characters in '-G a b'$"):
        check_name_assignments(Assignment("postfix-x", "a b"))


# -- default directories ----------------------------------------------------------------

@pytest.mark.parametrize("primary, name, expected", [
    ("/etc/hato", "postfix-deux", "/etc/postfix-deux"),
    ("/etc/hato", "hato-deux", "/etc/hato-deux"),
    ("/var/spool/hato", "hato-deux", "/var/spool/hato-deux"),
    ("/var/lib/hato/", "hato-deux", "/var/lib/hato-deux"),
    ("/tmp/t/etc/postfix", "postfix-deux", "/tmp/t/etc/postfix-deux"),
])
def test_private_path(primary, name, expected):
    assert private_path("queue_directory", primary, name) == expected


def test_private_path_errors():
    with pytest.raises(PostmultiError, match=r"^Missing config_directory parameter value$"):
        private_path("config_directory", "/etc/hato", None)
    with pytest.raises(PostmultiError, match=r"^Invalid default data_directory parameter value: "
                                             r"'lib': specify an absolute pathname$"):
        private_path("data_directory", "lib", "hato-x")


@pytest.mark.parametrize("arg, action, message", [
    ("queue_directory", "create", "Malformed parameter setting 'queue_directory'"),
    ("=/x", "create", "Malformed parameter setting '=/x'"),
    ("foo=/x", "create", "Parameter 'foo' not valid with action create"),
    ("queue_directory=/x", "import", "Parameter 'queue_directory' not valid with action import"),
    ("data_directory=x", "create", "Parameter setting 'data_directory' is not an absolute path"),
    ("config_directory=//", "create", "Parameter setting 'config_directory' is the root directory"),
])
def test_bad_settings(arg, action, message):
    with pytest.raises(PostmultiError) as err:
        parse_setting(arg, action)
    assert str(err.value) == message


def test_setting_trailing_slash():
    assert parse_setting("queue_directory = /q/deux//", "create") == ("queue_directory", "/q/deux")


def test_selection_by_name_suffix_path_group_and_primary():
    primary = Instance("/etc/hato", primary=True)
    deux = Instance("/etc/postfix-deux", name="postfix-deux", group="mta")
    trois = Instance("/etc/hato-trois", name="hato-trois")
    nameless = Instance("/etc/other")
    name = lambda v: Selection("name", v)  # noqa: E731
    assert matches(deux, name("deux")) and matches(deux, name("postfix-deux"))
    assert matches(trois, name("trois")) and not matches(trois, name("postfix-trois"))
    assert matches(deux, name("/etc/postfix-deux")) and not matches(deux, name("/etc/hato"))
    assert matches(nameless, name("/etc/other")) and not matches(nameless, name("other"))
    assert matches(primary, name("-")) and not matches(deux, name("-"))
    assert matches(deux, Selection("group", "mta")) and not matches(trois, Selection("group", "mta"))
    assert matches(nameless, Selection("all")) and not matches(nameless, Selection())


# -- the command on files -------------------------------------------------------------------


@pytest.fixture
def site(tmp_path):
    """A primary in ETC/hato with its queue in SPOOL/hato and data in LIB/hato."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    primary = tmp_path / "etc" / "hato"
    primary.mkdir(parents=True)
    (primary / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool/hato\n"
        f"data_directory = {tmp_path}/lib/hato\n"
        f"mail_owner = {user}\nsetgid_group = {group}\n"
        "inet_interfaces = loopback-only\n")
    (primary / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    return tmp_path


def pm(site, *args):
    return hato_inprocess("-c", str(site / "etc" / "hato"), "postmulti", *args)


def main_cf(path) -> dict[str, str]:
    return MainCf.read(str(path / "main.cf")).values()


def tree(root) -> list[str]:
    return sorted(os.path.join(d, n) for d, dirs, files in os.walk(root) for n in dirs + files)


def test_init_and_create_edit_main_cf(site):
    r = pm(site, "-e", "init")
    assert r.returncode == 0, r.stderr
    primary = main_cf(site / "etc" / "hato")
    assert primary["multi_instance_enable"] == "yes"
    assert primary["multi_instance_wrapper"].endswith(" postmulti -p --")
    r = pm(site, "-I", "postfix-deux", "-G", "mta", "-e", "create")
    assert r.returncode == 0, r.stderr
    deux = site / "etc" / "postfix-deux"
    values = main_cf(deux)
    assert values["queue_directory"] == f"{site}/spool/postfix-deux"
    assert values["data_directory"] == f"{site}/lib/postfix-deux"
    assert values["master_service_disable"] == "inet"
    assert values["authorized_submit_users"] == ""
    assert values["multi_instance_name"] == "postfix-deux"
    assert values["multi_instance_group"] == "mta"
    assert values["mail_owner"] == pwd.getpwuid(os.geteuid()).pw_name  # shared, cloned
    assert "multi_instance_enable" not in values  # disabled until enabled
    assert (deux / "master.cf").read_text().count(" smtpd\n") == 1
    assert (site / "spool" / "postfix-deux" / "maildrop").is_dir()
    assert main_cf(site / "etc" / "hato")["multi_instance_directories"] == str(deux)
    # a second one, placed before the first with -i
    r = pm(site, "-I", "hato-trois", "-i", "deux", "-e", "create")
    assert r.returncode == 0, r.stderr
    assert main_cf(site / "etc" / "hato")["multi_instance_directories"] == \
        f"{site}/etc/hato-trois {deux}"
    r = pm(site, "-l")
    assert r.stdout.splitlines() == [
        f"{'-':<15} {'-':<15} {'y':<9} {site}/etc/hato",
        f"{'hato-trois':<15} {'-':<15} {'n':<9} {site}/etc/hato-trois",
        f"{'postfix-deux':<15} {'mta':<15} {'n':<9} {deux}",
    ]
    assert pm(site, "-l", "-g", "mta").stdout.split()[0] == "postfix-deux"
    assert pm(site, "-l", "-R").stdout.split()[0] == "postfix-deux"


def test_create_before_init_and_bad_input_write_nothing(site):
    before = tree(site)
    r = pm(site, "-I", "postfix-deux", "-e", "create")
    assert r.returncode == 1
    assert r.stderr == ("postmulti: fatal: multi_instance_wrapper is empty, "
                        "run 'postmulti -e init' first.\n")
    assert tree(site) == before
    assert pm(site, "-e", "init").returncode == 0
    before = tree(site)
    primary_text = (site / "etc" / "hato" / "main.cf").read_text()
    for args, message in [
        (("-I", "deux", "-e", "create"), "New instance name must start with 'postfix-' or 'hato-'"),
        (("-e", "create"), "Missing config_directory parameter value"),
        (("-I", "postfix-x", "-e", "create", f"config_directory={site}/etc/hato"),
         f"new config_directory={site}/etc/hato is already in use by instance "
         f"{site}/etc/hato, config_directory={site}/etc/hato"),
        (("-I", "postfix-x", "-e", "create", f"queue_directory={site}/spool/hato"),
         f"instance {site}/etc/postfix-x, queue_directory={site}/spool/hato conflicts with "
         f"instance {site}/etc/hato, queue_directory={site}/spool/hato"),
        (("-I", "postfix-x", "-e", "import"), f"'{site}/etc/postfix-x' lacks a main.cf file"),
        (("-I", "postfix-x", "-i", "nosuch", "-e", "create"), "No matching secondary instances"),
    ]:
        r = pm(site, *args)
        assert (r.returncode, r.stderr) == (1, f"postmulti: fatal: {message}\n"), args
        assert tree(site) == before, args
    assert (site / "etc" / "hato" / "main.cf").read_text() == primary_text
    # an existing main.cf without master.cf is never overwritten
    lone = site / "etc" / "postfix-x"
    lone.mkdir()
    (lone / "main.cf").write_text("# mine\n")
    r = pm(site, "-I", "postfix-x", "-e", "create")
    assert r.stderr == (f"postmulti: fatal: '{lone}' has a main.cf file but lacks a master.cf "
                        "file; not overwriting it\n")
    assert (lone / "main.cf").read_text() == "# mine\n" and not (lone / "master.cf").exists()


def test_duplicate_name(site):
    assert pm(site, "-e", "init").returncode == 0
    assert pm(site, "-I", "postfix-deux", "-e", "create").returncode == 0
    r = pm(site, "-I", "postfix-deux", "-e", "create", f"config_directory={site}/etc/other")
    assert r.stderr == (f"postmulti: fatal: instance {site}/etc/other, "
                        f"multi_instance_name=postfix-deux conflicts with instance "
                        f"{site}/etc/postfix-deux, multi_instance_name=postfix-deux\n")
    assert not (site / "etc" / "other").exists()


def test_enable_disable_assign_deport_import_destroy(site):
    deux = site / "etc" / "postfix-deux"
    assert pm(site, "-e", "init").returncode == 0
    assert pm(site, "-I", "postfix-deux", "-e", "create").returncode == 0
    assert pm(site, "-i", "deux", "-e", "enable").returncode == 0
    assert main_cf(deux)["multi_instance_enable"] == "yes"
    r = pm(site, "-i", "deux", "-e", "destroy")
    assert r.stderr == "postmulti: fatal: Cannot remove enabled instances\n"
    r = pm(site, "-i", "-", "-e", "destroy")
    assert r.stderr == "postmulti: fatal: Cannot remove the primary instance\n"
    assert pm(site, "-i", "deux", "-e", "disable").returncode == 0
    assert main_cf(deux)["multi_instance_enable"] == "no"
    assert pm(site, "-i", "deux", "-e", "assign", "-I", "hato-quatre", "-G", "g1").returncode == 0
    assert (main_cf(deux)["multi_instance_name"], main_cf(deux)["multi_instance_group"]) == \
        ("hato-quatre", "g1")
    assert pm(site, "-i", "quatre", "-e", "assign", "-G", "-").returncode == 0
    assert main_cf(deux)["multi_instance_group"] == ""
    # deport: off the list, onto alternate_config_directories; import: back
    assert pm(site, "-i", "quatre", "-e", "deport").returncode == 0
    primary = main_cf(site / "etc" / "hato")
    assert primary["multi_instance_directories"] == ""
    assert primary["alternate_config_directories"] == str(deux)
    assert deux.joinpath("main.cf").exists()
    r = pm(site, "-G", "mta", "-e", "import", f"config_directory={deux}")
    assert r.returncode == 0, r.stderr
    primary = main_cf(site / "etc" / "hato")
    assert primary["multi_instance_directories"] == str(deux)
    assert primary["alternate_config_directories"] == ""
    assert main_cf(deux)["multi_instance_group"] == "mta"
    # destroy: refused while a message is queued, then everything goes
    held = site / "spool" / "postfix-deux" / "hold" / "4Xyz"
    held.write_text("x")
    r = pm(site, "-i", "quatre", "-e", "destroy")
    assert r.stderr == f"postmulti: fatal: Instance '{deux}' queue is not empty: 1 message\n"
    assert deux.joinpath("main.cf").exists() and \
        main_cf(site / "etc" / "hato")["multi_instance_directories"] == str(deux)
    held.unlink()
    r = pm(site, "-i", "quatre", "-e", "destroy")
    assert (r.returncode, r.stderr) == (0, "")
    assert not deux.exists() and not (site / "spool" / "postfix-deux").exists()
    assert not (site / "lib" / "postfix-deux").exists()
    assert main_cf(site / "etc" / "hato")["multi_instance_directories"] == ""


@pytest.mark.parametrize("args, message", [
    ((), "Specify exactly one of '-e', '-l', '-p', '-x'"),
    (("-l", "-p"), "Specify exactly one of '-e', '-l', '-p', '-x'"),
    (("-l", "foo"), "Command not allowed with '-l'"),
    (("-p",), "Command required with '-p' or '-x' option"),
    (("-i", "a", "-g", "b", "-l"), "Specity no more than one of '-a', '-g', '-i'"),
    (("-p", "-R", "status"), "The '-p' and '-e' options preclude the use of '-R'"),
    (("-l", "-I", "postfix-a"), "Cannot assign instance name or group without '-e assign'"),
    (("-e", "enable", "-G", "g"), "Cannot assign instance name or group with '-e enable'"),
    (("-e", "assign", "-i", "x"), "Specify new instance name or group with '-e assign'"),
    (("-e", "enable", "foo=bar"), "Parameter overrides not valid with '-e enable'"),
    (("-e", "destroy"), "Select an instance via '-i name'"),
    (("-e", "destroy", "-i", "nope"), "No instance named nope"),
    (("-I", "a", "-I", "b", "-e", "create"), "Specify at most one '-I' option"),
    (("-e", "frob"), "Invalid '-e' edit action 'frob'. Specify 'create', 'destroy', 'import', "
                     "'deport', 'enable', 'disable', 'assign' or 'init'"),
    (("-g", "nogroup", "-p", "status"), "No matching instances"),
    (("-p", "frob"), "unknown command: 'frob'. Usage: hato postmulti -p start (or stop, "
                     "reload, abort, flush, check, status)"),
])
def test_usage_errors(site, args, message):
    r = pm(site, *args)
    assert (r.returncode, r.stderr) == (1, f"postmulti: fatal: {message}\n")


def test_secondary_as_primary_is_refused(site):
    assert pm(site, "-e", "init").returncode == 0
    assert pm(site, "-I", "postfix-deux", "-e", "create").returncode == 0
    deux = site / "etc" / "postfix-deux"
    r = hato_inprocess("-c", str(deux), "postmulti", "-l",
                       env={"HATO_PRIMARY_CONFIG": str(site / "etc" / "hato")})
    assert r.stderr == f"postmulti: fatal: Non-default configuration directory: MAIL_CONFIG={deux}\n"
    r = hato_inprocess("postmulti", "-l", env={"HATO_PRIMARY_CONFIG": str(site / "etc" / "hato")})
    assert r.returncode == 0 and r.stdout.split()[-1] == str(deux)


def test_x_runs_commands_with_the_instance_environment(site):
    assert pm(site, "-e", "init").returncode == 0
    assert pm(site, "-I", "postfix-deux", "-G", "mta", "-e", "create").returncode == 0
    primary, deux = site / "etc" / "hato", site / "etc" / "postfix-deux"
    r = run_hato("-c", str(primary), "postmulti", "-x", "sh", "-c",
                 'echo "$MAIL_CONFIG $multi_instance_name $multi_instance_enable '
                 '$queue_directory $HATO_PRIMARY_CONFIG"')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        f"{primary}  yes {site}/spool/hato {primary}",
        f"{deux} postfix-deux no {site}/spool/postfix-deux {primary}",
    ]
    # hato's commands by their Postfix names act on the selected instance
    r = run_hato("-c", str(primary), "postmulti", "-i", "postfix-deux", "-x", "postconf", "-h",
                 "multi_instance_group", "queue_directory")
    assert r.stdout.splitlines() == ["mta", f"{site}/spool/postfix-deux"], r.stderr
    r = run_hato("-c", str(primary), "postmulti", "-g", "mta", "-x", "false")
    assert r.returncode == 1


def test_start_refuses_a_disabled_secondary(site):
    assert pm(site, "-e", "init").returncode == 0
    assert pm(site, "-I", "postfix-deux", "-e", "create").returncode == 0
    deux = site / "etc" / "postfix-deux"
    env = {"HATO_PRIMARY_CONFIG": str(site / "etc" / "hato")}
    r = hato_inprocess("-c", str(deux), "start", env=env)
    assert (r.returncode, r.stderr) == (1, (
        f"hato: fatal: multi_instance_enable!=yes in secondary instance {deux}, "
        "run 'hato postmulti -i postfix-deux -e enable' first\n"))
    assert not (site / "spool" / "postfix-deux" / "pid" / "master.pid").exists()


def test_p_order_and_disabled_instances(site, monkeypatch):
    """-p start: primary first, disabled instances checked instead; stop:
    reverse order, disabled skipped; reload skips disabled; status: all."""
    import subprocess

    import hato.cli.postmulti as postmulti

    assert pm(site, "-e", "init").returncode == 0
    assert pm(site, "-I", "postfix-deux", "-e", "create").returncode == 0
    assert pm(site, "-I", "hato-trois", "-e", "create").returncode == 0
    assert pm(site, "-i", "trois", "-e", "enable").returncode == 0
    ran: list[tuple[str, str]] = []

    def fake_run(argv, env):
        ran.append((os.path.basename(env["MAIL_CONFIG"]), " ".join(argv[3:])))
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(postmulti.subprocess, "run", fake_run)
    expected = {
        "start": [("hato", "start"), ("postfix-deux", "check"), ("hato-trois", "start")],
        "stop": [("hato-trois", "stop"), ("hato", "stop")],
        "abort": [("hato-trois", "abort"), ("hato", "abort")],
        "reload": [("hato", "reload"), ("hato-trois", "reload")],
        "flush": [("hato", "flush"), ("hato-trois", "flush")],
        "status": [("hato", "status"), ("postfix-deux", "status"), ("hato-trois", "status")],
        "check": [("hato", "check"), ("postfix-deux", "check"), ("hato-trois", "check")],
    }
    for verb, order in expected.items():
        ran.clear()
        r = pm(site, "-p", verb)
        assert (r.returncode, ran) == (0, order), (verb, r.stderr)
    ran.clear()
    assert pm(site, "-g", "nogroup", "-x", "true").returncode == 1 and not ran
    assert pm(site, "-i", "deux", "-p", "start").returncode == 0
    assert ran == [("postfix-deux", "check")]
    r = pm(site, "-p", "start-fg")
    assert r.stderr == "postmulti: fatal: start-fg does not support multi_instance_directories\n"

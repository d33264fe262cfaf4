"""``hato postmulti``: the multi-instance manager, with Postfix's options,
semantics and messages.

    postmulti -e init
    postmulti -l [-aR] [-g group] [-i name]
    postmulti -p [-a] [-g group] [-i name] command...
    postmulti -x [-aR] [-g group] [-i name] command...
    postmulti -e create [-a] [-g group] [-i name] [-G group] [-I name] [param=value ...]
    postmulti -e import [-a] [-g group] [-i name] [-G group] [-I name] [config_directory=/path]
    postmulti -e destroy|deport|enable|disable -i name
    postmulti -e assign -i name [-I name] [-G group]

A multi-instance configuration is one primary instance and secondary
instances whose configuration directories the primary's main.cf lists in
``multi_instance_directories``. Each secondary has its own main.cf,
master.cf, queue and data directory, and names itself with
``multi_instance_name`` and ``multi_instance_group``;
``multi_instance_enable`` says whether the manager starts it.

The primary is the configuration directory hato was given (``hato -c DIR
postmulti``, or ``$MAIL_CONFIG``), else ``$HATO_PRIMARY_CONFIG``, else
/etc/hato. Postfix's postmulti accepts only its default directory; hato
accepts another one so that a whole multi-instance set can live anywhere
(tests keep it under a temporary directory) — but not a directory that is a
secondary instance of the default primary. Commands that postmulti runs get
``HATO_PRIMARY_CONFIG`` set to the primary's directory.

Differences from Postfix, on purpose:

* instance names start with ``postfix-`` (Postfix's rule) or ``hato-``;
* the edits of the ``postmulti-script`` helper are made here, in Python;
  new instances get ``$meta_directory/main.cf.proto`` and
  ``master.cf.proto`` when the primary's meta_directory has them, else
  hato's own stock files (:data:`MAIN_CF_PROTO`, :data:`MASTER_CF_PROTO`);
* ``-e create`` never overwrites a main.cf or master.cf it finds alone in
  an existing configuration directory (Postfix replaces it); with both it
  imports the instance as-is, as Postfix does;
* ``-e destroy`` refuses an instance whose queue still holds messages
  (Postfix removes what it can and warns);
* ``-p`` runs ``hato COMMAND`` (start, start-fg, stop, abort, reload,
  status, flush, check) where Postfix runs ``postfix COMMAND``;
* ``-x`` puts hato's own program directory first in PATH, and runs a
  command named as one of hato's (postconf, postmap, newaliases, mailq,
  sendmail, postsuper, ..., and ``hato`` itself) as that hato command, so
  ``postmulti -i NAME -x postmap FILE`` acts on that instance with hato.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

from .. import __version__
from ..config.errors import ConfigError
from ..config.maincf import MainCf, write_atomic
from .common import Messages, UsageError, parse_options, run
from .init import UNIX_SERVICES
from .instances import (
    PRIMARY_ENV, Assignment, Cluster, Instance, PostmultiError, Selection,
    check_name_assignments, hato_bin_directory, hato_command, load_config, load_instance,
    matches, parse_setting, primary_directory, private_path, split_dirs, wrapper_value)

PROG = "postmulti"

EDIT_ACTIONS = ("create", "destroy", "import", "deport", "enable", "disable", "assign", "init")
ADD_ACTIONS = ("create", "import")
ASSIGN_ACTIONS = ("create", "import", "assign")

#: hato commands that ``-p`` runs: postfix(1)'s commands.
POSTFIX_COMMANDS = ("start", "start-fg", "stop", "abort", "reload", "status", "flush", "check")
#: hato commands that are not programs of their own for ``-x``.
CONTROL_COMMANDS = frozenset(POSTFIX_COMMANDS) | {"init"}

#: Installation parameters that new instances share with the primary: set
#: in the new main.cf when the primary sets them, else commented out.
SHARED_PARAMETERS = (
    "command_directory", "daemon_directory", "meta_directory", "mail_owner", "setgid_group",
    "sendmail_path", "mailq_path", "newaliases_path", "html_directory", "manpage_directory",
    "sample_directory", "readme_directory", "shlib_directory",
)

USAGE = ("Usage:{p} -l [-v] [-a] [-g group] [-i instance] | "
         "{p} -p [-v] [-a] [-g group] [-i instance] command... | "
         "{p} -x [-v] [-a] [-i name] [-g group] command... | "
         "{p} -e action [-v] [-a] [-i name] [-g group] [-I name] [-G group] [param=value ...]")

MAIN_CF_PROTO = """\
# main.cf of a hato instance, written by `hato postmulti -e create` {date}.
# Every parameter here is a Postfix parameter; `hato postconf -d` lists the
# defaults and `hato -c {config_dir} check` validates this file. The
# instance starts with its inet services off (master_service_disable) and
# no local submission (authorized_submit_users): change both to use it.

compatibility_level = 3.6
"""

MASTER_CF_PROTO = """\
# master.cf of a hato instance, written by `hato postmulti -e create` {date}.
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
smtp      inet  n       -       n       -       -       smtpd
""" + UNIX_SERVICES


# -- iterator mode ----------------------------------------------------------------


def list_instances(cluster: Cluster, sel: Selection, reverse: bool) -> None:
    order = reversed(cluster.instances) if reverse else cluster.instances
    for ip in order:
        if matches(ip, sel):
            print(f"{ip.name or '-':<15} {ip.group or '-':<15} {'y' if ip.enabled else 'n':<9} "
                  f"{ip.config_dir}")


def iterate(cluster: Cluster, sel: Selection, argv_for, *, reverse: bool = False,
            skip_disabled: bool = False, env_for=None) -> int:
    status = 0
    matched = False
    for ip in (reversed(cluster.instances) if reverse else list(cluster.instances)):
        if skip_disabled and not ip.enabled:
            continue
        if not matches(ip, sel):
            continue
        matched = True
        argv = argv_for(ip)
        env = env_for(ip) if env_for else dict(os.environ)
        env["MAIL_CONFIG"] = ip.config_dir
        env[PRIMARY_ENV] = cluster.primary_dir
        sys.stdout.flush()
        try:
            code = subprocess.run(argv, env=env).returncode
        except OSError as err:
            print(f"{PROG}: fatal: execvp {argv[0]}: {err.strerror}", file=sys.stderr)
            code = 1
        if code != 0:
            status = 1
    if not matched:
        raise PostmultiError("No matching instances")
    return status


def postfix_mode(cluster: Cluster, sel: Selection, command: list[str]) -> int:
    """``-p``: hato COMMAND on each instance. Start commands check disabled
    instances instead; stop commands go in reverse order and, like control
    commands, skip disabled instances."""
    s = cluster.settings
    verb = command[0]
    if verb not in POSTFIX_COMMANDS:
        raise PostmultiError(f"unknown command: '{verb}'. Usage: hato postmulti -p start "
                             f"(or stop, reload, abort, flush, check, status)")
    if verb == "start-fg" and cluster.secondaries:
        raise PostmultiError("start-fg does not support multi_instance_directories")
    hato = hato_command()
    reverse = skip = check_disabled = False
    if verb in s.list("postmulti_start_commands"):
        check_disabled = True
    elif verb in s.list("postmulti_stop_commands"):
        reverse = skip = True
    elif verb in s.list("postmulti_control_commands"):
        skip = True

    def argv_for(ip: Instance) -> list[str]:
        if check_disabled and not ip.enabled:
            return [*hato, "check", *command[1:]]
        return [*hato, *command]

    return iterate(cluster, sel, argv_for, reverse=reverse, skip_disabled=skip)


def command_mode(cluster: Cluster, sel: Selection, command: list[str], reverse: bool) -> int:
    """``-x``: any command, with the instance's MAIL_CONFIG, directories
    and names in the environment; hato's commands by their names."""
    from .main import COMMANDS

    hato = hato_command()
    s = cluster.settings
    bindir = hato_bin_directory()
    if command[0] == "hato":
        argv = [*hato, *command[1:]]
    elif command[0] in COMMANDS and command[0] not in CONTROL_COMMANDS:
        argv = [*hato, *command]
    else:
        argv = list(command)

    def env_for(ip: Instance) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "daemon_directory": s.str("daemon_directory"),
            "command_directory": s.str("command_directory"),
            "config_directory": ip.config_dir,
            "queue_directory": ip.queue_dir,
            "data_directory": ip.data_dir,
            "multi_instance_name": ip.name,
            "multi_instance_group": ip.group,
            "multi_instance_enable": "yes" if ip.enabled else "no",
            "PATH": bindir + os.pathsep + (env.get("PATH") or "/usr/bin:/bin:/usr/sbin:/sbin"),
        })
        return env

    return iterate(cluster, sel, lambda ip: argv, reverse=reverse, env_for=env_for)


# -- life-cycle management ------------------------------------------------------------


def edit_main_cf(config_dir: str, pairs: list[tuple[str, str]]) -> None:
    """``postconf -c DIR -e name=value ...``."""
    main = MainCf.read(os.path.join(config_dir, "main.cf"))
    main.set_many(pairs)
    main.write()


def name_pairs(target: Instance, changed: set[str]) -> list[tuple[str, str]]:
    pairs = []
    if "name" in changed:
        pairs.append(("multi_instance_name", target.name))
    if "group" in changed:
        pairs.append(("multi_instance_group", target.group))
    return pairs


def assign_names(cluster: Cluster, target: Instance, assignment: Assignment) -> set[str]:
    """Give *target* its new name and group; which of the two changed."""
    changed: set[str] = set()
    if assignment.name is not None and assignment.name != target.name:
        if assignment.name:
            cluster.claims.register(target.config_dir, "multi_instance_name", assignment.name)
        target.name = assignment.name
        changed.add("name")
    if assignment.group is not None and assignment.group != target.group:
        target.group = assignment.group
        changed.add("group")
    return changed


def require_init(cluster: Cluster) -> None:
    s = cluster.settings
    if not s.str("multi_instance_wrapper"):
        raise PostmultiError("multi_instance_wrapper is empty, run 'postmulti -e init' first.")
    if not s.bool("multi_instance_enable"):
        raise PostmultiError("multi_instance_enable!=yes, run 'postmulti -e init' first.")


def update_primary_lists(cluster: Cluster, config_dir: str, alternate: str) -> None:
    """multi_instance_directories from the cluster; *config_dir* added to
    ("add") or dropped from ("del") alternate_config_directories."""
    main = MainCf.read(os.path.join(cluster.primary_dir, "main.cf"))
    pairs = [("multi_instance_directories", cluster.directories_value())]
    alt = split_dirs(cluster.settings.str("alternate_config_directories"))
    keep = [d for d in alt if d != config_dir]
    if alternate == "add" and len(keep) == len(alt):
        pairs.append(("alternate_config_directories", " ".join([*keep, config_dir])))
    elif alternate == "del" and len(keep) != len(alt):
        pairs.append(("alternate_config_directories", " ".join(keep)))
    main.set_many(pairs)
    main.write()


def prototype(cluster: Cluster, name: str, config_dir: str) -> str:
    """The stock main.cf or master.cf for a new instance: the primary's
    $meta_directory/NAME.proto when there is one, else hato's."""
    proto = os.path.join(cluster.settings.str("meta_directory"), f"{name}.proto")
    try:
        with open(proto, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        pass
    except OSError as err:
        raise PostmultiError(f"open {proto}: {err.strerror}") from None
    text = MAIN_CF_PROTO if name == "main.cf" else MASTER_CF_PROTO
    return text.format(date=time.strftime("%Y-%m-%d") + f" by hato {__version__}",
                       config_dir=config_dir)


def new_main_cf(cluster: Cluster, new: Instance) -> str:
    """The new instance's main.cf: the prototype, the shared installation
    parameters the primary sets (the others commented out), its private
    directories, and inet services and local submission turned off."""
    main = MainCf.parse(prototype(cluster, "main.cf", new.config_dir),
                        os.path.join(new.config_dir, "main.cf"))
    primary_values = cluster.config.main.values()
    shared = []
    for param in SHARED_PARAMETERS:
        value = primary_values.get(param, "")
        if value:
            shared.append((param, value))
        else:
            main.comment_out(param)
    main.set_many([("queue_directory", new.queue_dir), ("data_directory", new.data_dir),
                   ("authorized_submit_users", ""), ("master_service_disable", "inet"),
                   *shared])
    return main.render()


def set_permissions(msgs: Messages, ip: Instance) -> None:
    """Postfix's ``postfix set-permissions`` for a new instance (``hato
    set-permissions``): the queue and data directories with their
    subdirectories, owners and modes."""
    from ..master.layout import set_permissions as fix

    try:
        fix(load_config(ip.config_dir).settings(), ip.config_dir)
    except (ConfigError, KeyError, OSError) as err:
        msgs.warn(f"{ip.config_dir}: cannot set up the queue and data directories yet "
                  f"({err}); 'hato start' does it")


def install_new_instance(msgs: Messages, cluster: Cluster, action: str, params: list[str],
                         where: Selection, assignment: Assignment) -> None:
    check_name_assignments(assignment)
    new = Instance("")
    given: dict[str, str] = {}
    for arg in params:
        name, value = parse_setting(arg, action)
        given[name] = value
    s = cluster.settings
    new.config_dir = given.get("config_directory") or private_path(
        "config_directory", cluster.primary_dir, assignment.name)
    owner = cluster.claims.owner(new.config_dir)
    if owner:
        raise PostmultiError(f"new config_directory={new.config_dir} is already in use by "
                             f"instance {owner}={new.config_dir}")
    main_path = os.path.join(new.config_dir, "main.cf")
    master_path = os.path.join(new.config_dir, "master.cf")
    has_main, has_master = os.path.isfile(main_path), os.path.isfile(master_path)
    existing = has_main and has_master
    if action == "import":
        if not has_main:
            raise PostmultiError(f"'{new.config_dir}' lacks a main.cf file")
        if not has_master:
            raise PostmultiError(f"'{new.config_dir}' lacks a master.cf file")
    if existing:
        loaded = load_instance(new.config_dir)
        new.queue_dir, new.data_dir = loaded.queue_dir, loaded.data_dir
        new.name, new.group, new.enabled = loaded.name, loaded.group, loaded.enabled
        if action == "create" and ("queue_directory" in given or "data_directory" in given):
            raise PostmultiError(f"'{new.config_dir}' holds an instance already: its main.cf "
                                 "names its queue_directory and data_directory")
    else:
        if has_main or has_master:
            have, lack = ("main.cf", "master.cf") if has_main else ("master.cf", "main.cf")
            raise PostmultiError(f"'{new.config_dir}' has a {have} file but lacks a {lack} "
                                 f"file; not overwriting it")
        new.queue_dir = given.get("queue_directory") or private_path(
            "queue_directory", s.str("queue_directory"), assignment.name)
        new.data_dir = given.get("data_directory") or private_path(
            "data_directory", s.str("data_directory"), assignment.name)
    changed = assign_names(cluster, new, assignment)
    cluster.insert(new, where)
    require_init(cluster)

    if not existing:
        main_text = new_main_cf(cluster, new)
        master_text = prototype(cluster, "master.cf", new.config_dir)
        os.makedirs(new.config_dir, mode=0o755, exist_ok=True)
        os.makedirs(new.queue_dir, mode=0o755, exist_ok=True)
        # data_directory is private; the directories above it are not.
        os.makedirs(os.path.dirname(new.data_dir), mode=0o755, exist_ok=True)
        try:
            os.mkdir(new.data_dir, 0o700)
        except FileExistsError:
            pass
        # master.cf last: once it is there, the instance is complete.
        write_atomic(main_path, main_text)
        write_atomic(master_path, master_text)
    pairs = name_pairs(new, changed)
    if pairs:
        edit_main_cf(new.config_dir, pairs)
    update_primary_lists(cluster, new.config_dir, "del")
    set_permissions(msgs, new)


def queued_messages(queue_dir: str) -> int:
    from ..queue.directories import MESSAGE_QUEUES

    count = 0
    for queue in MESSAGE_QUEUES:
        for _dirpath, _dirs, files in os.walk(os.path.join(queue_dir, queue)):
            count += len(files)
    return count


def running(ip: Instance) -> bool:
    from ..master.pidfile import running_pid

    return bool(running_pid(ip.queue_dir, ip.data_dir))


def remove_instance_files(msgs: Messages, ip: Instance) -> None:
    """What ``-e create`` and hato made, and nothing else: the queue
    subdirectories (empty, with the sockets and pid file a stopped master
    leaves), the master lock, the queue and data directories, main.cf and
    master.cf and the configuration directory. What is left is named."""
    from ..master.pidfile import lock_path, pid_path
    from ..queue.directories import LAYOUT

    def remove_by_hand(path: str) -> None:
        msgs.warn(f"{path}: please verify contents and remove by hand")

    def unlink(path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    unlink(pid_path(ip.queue_dir))
    for sub in ("public", "private"):
        top = os.path.join(ip.queue_dir, sub)
        for entry in os.listdir(top) if os.path.isdir(top) else ():
            path = os.path.join(top, entry)
            if stat.S_ISSOCK(os.lstat(path).st_mode):
                unlink(path)
    for sub in LAYOUT:
        top = os.path.join(ip.queue_dir, sub)
        if not os.path.isdir(top):
            continue
        for dirpath, _dirs, _files in os.walk(top, topdown=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                remove_by_hand(dirpath)
                break
    unlink(lock_path(ip.data_dir))
    for directory in (ip.data_dir, ip.queue_dir):
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass
        except OSError:
            remove_by_hand(directory)
    for name in ("master.cf", "main.cf"):
        unlink(os.path.join(ip.config_dir, name))
    try:
        os.rmdir(ip.config_dir)
    except OSError:
        remove_by_hand(ip.config_dir)


def manage(msgs: Messages, cluster: Cluster, action: str, params: list[str],
           sel: Selection, assignment: Assignment) -> int:
    if action == "init":
        edit_main_cf(cluster.primary_dir, [("multi_instance_wrapper", wrapper_value()),
                                           ("multi_instance_enable", "yes")])
        return 0
    cluster.load()
    if action in ADD_ACTIONS:
        install_new_instance(msgs, cluster, action, params, sel, assignment)
        return 0
    if action == "assign":
        target = cluster.select(sel)
        check_name_assignments(assignment)
        changed = assign_names(cluster, target, assignment)
        if not changed:
            return 0
        require_init(cluster)
        edit_main_cf(target.config_dir, name_pairs(target, changed))
        return 0
    if action in ("destroy", "deport"):
        target = cluster.select(sel, unlink=True)
        require_init(cluster)
        main_cf = os.path.join(target.config_dir, "main.cf")
        if action == "deport" and not os.path.exists(main_cf):
            update_primary_lists(cluster, target.config_dir, "del")
            return 0
        if not os.path.exists(main_cf):
            raise PostmultiError(f"{main_cf} file not found")
        if running(target):
            raise PostmultiError(f"Instance '{target.config_dir}' is not stopped")
        if action == "deport":
            update_primary_lists(cluster, target.config_dir, "add")
            return 0
        queued = queued_messages(target.queue_dir)
        if queued:
            raise PostmultiError(f"Instance '{target.config_dir}' queue is not empty: "
                                 f"{queued} message{'s' if queued != 1 else ''}")
        update_primary_lists(cluster, target.config_dir, "del")
        remove_instance_files(msgs, target)
        return 0
    # enable, disable
    target = cluster.select(sel)
    require_init(cluster)
    edit_main_cf(target.config_dir,
                 [("multi_instance_enable", "yes" if action == "enable" else "no")])
    return 0


# -- the command --------------------------------------------------------------------------


def body(msgs: Messages, argv: list[str]) -> int:
    try:
        opts, args = parse_options(argv, "ae:g:i:G:I:lpRvx")
    except UsageError:
        msgs.fatal(USAGE.format(p=PROG))
    sel = Selection()
    assignment = Assignment()
    select_count = mode_count = 0
    mode = ""
    reverse = False
    try:
        for opt, val in opts:
            if opt == "-a":
                if sel.kind != "all":
                    select_count += 1
                sel = Selection("all")
            elif opt == "-e":
                if val not in EDIT_ACTIONS:
                    raise PostmultiError(
                        f"Invalid '-e' edit action '{val}'. Specify "
                        + ", ".join(f"'{a}'" for a in EDIT_ACTIONS[:-1])
                        + f" or '{EDIT_ACTIONS[-1]}'")
                if mode != val:
                    mode_count += 1
                mode = val
            elif opt in ("-g", "-i"):
                select_count += 1
                sel = Selection("group" if opt == "-g" else "name", val)
            elif opt == "-G":
                if assignment.group is not None:
                    raise PostmultiError("Specify at most one '-G' option")
                assignment.group = "" if val == "-" else val
            elif opt == "-I":
                if assignment.name is not None:
                    raise PostmultiError("Specify at most one '-I' option")
                assignment.name = "" if val == "-" else val
            elif opt in ("-l", "-p", "-x"):
                if mode != opt:
                    mode_count += 1
                mode = opt
            elif opt == "-R":
                reverse = not reverse
            elif opt == "-v":
                os.environ["MAIL_VERBOSE"] = ""
        edit = mode in EDIT_ACTIONS
        # "Specity": Postfix's spelling, kept so that scripts match it.
        if select_count > 1:
            raise PostmultiError("Specity no more than one of '-a', '-g', '-i'")
        if mode_count != 1:
            raise PostmultiError("Specify exactly one of '-e', '-l', '-p', '-x'")
        if mode == "-l" and args:
            raise PostmultiError("Command not allowed with '-l'")
        if mode in ("-p", "-x") and not args:
            raise PostmultiError("Command required with '-p' or '-x' option")
        if (mode == "-p" or edit) and reverse:
            raise PostmultiError("The '-p' and '-e' options preclude the use of '-R'")
        if mode not in ASSIGN_ACTIONS and (assignment.name is not None
                                           or assignment.group is not None):
            if not edit:
                raise PostmultiError("Cannot assign instance name or group without '-e assign'")
            raise PostmultiError(f"Cannot assign instance name or group with '-e {mode}'")
        if edit:
            if mode == "assign" and assignment.name is None and assignment.group is None:
                raise PostmultiError("Specify new instance name or group with '-e assign'")
            if mode not in ADD_ACTIONS and args:
                raise PostmultiError(f"Parameter overrides not valid with '-e {mode}'")

        primary_dir = primary_directory()
        try:
            cluster = Cluster(primary_dir, load_config(primary_dir))
        except ConfigError as err:
            msgs.fatal(str(err))
        if edit:
            return manage(msgs, cluster, mode, args, sel, assignment)
        if sel.kind == "none":
            sel = Selection("all")
        cluster.load()
        if mode == "-l":
            list_instances(cluster, sel, reverse)
            return 0
        if mode == "-p":
            return postfix_mode(cluster, sel, args)
        return command_mode(cluster, sel, args, reverse)
    except PostmultiError as err:
        msgs.fatal(str(err))


def main(argv: list[str]) -> int:
    return run(PROG, body, argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))

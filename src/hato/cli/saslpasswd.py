"""``hato saslpasswd`` (``saslpasswd2``) and ``hato sasldblistusers``
(``sasldblistusers2``): manage hato's SASL user database.

    saslpasswd [-v] [-c [-p] [-n]] [-d] [-a appname] [-f sasldb] [-u DOM] userid
    sasldblistusers [-v] [[-f] sasldb]

The options are Cyrus saslpasswd2's. The database is hato's own
(:mod:`hato.auth.sasldb`, default ``$config_directory/sasldb.lmdb``), which
holds an argon2id hash and SCRAM keys instead of Cyrus' plaintext
``userPassword``; ``-n`` leaves out the CRAM-MD5 secret, the one secret that
is as good as the password (for CRAM-MD5). Without ``-f``, ``-a APP`` takes
the database from ``sasldb_path`` in Cyrus' ``APP.conf`` (found as smtpd
finds it), as saslpasswd2 does; otherwise the default. ``-v`` prints the
version, as in Cyrus.

``userid`` may be ``user@realm``; otherwise the realm is ``-u DOM``, else the
host name (Cyrus' rule). smtpd looks up names without ``@`` in
``smtpd_sasl_local_domain`` (else ``myhostname``): create users with
``-u`` set to that.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..auth.backend import split_user
from ..auth.sasldb import ALL_MECHANISMS, PLAINTEXT_EQUIVALENT, Sasldb, SasldbError, default_path
from ..config.settings import config_directory_from_env
from .common import Fatal, Messages, UsageError, parse_options, run

SASLPASSWD_USAGE = ("usage: {prog} [-v] [-c [-p] [-n]] [-d] [-a appname] [-f sasldb] "
                    "[-u DOM] userid\n"
                    "\t-p\tpipe mode -- no prompt, password read on stdin\n"
                    "\t-c\tcreate -- ask mechs to create the account\n"
                    "\t-d\tdisable -- ask mechs to disable/delete the account\n"
                    "\t-n\tno plaintext-equivalent secret -- don't store the CRAM-MD5 secret\n"
                    "\t-f sasldb\tuse given file as sasldb\n"
                    "\t-a appname\tuse appname as application name\n"
                    "\t-u DOM\tuse DOM for user domain\n"
                    "\t-v\tprint version numbers and exit\n")
LISTUSERS_USAGE = ("usage: {prog} [-v] [[-f] sasldb]\n"
                   "\t-f sasldb\tuse given file as sasldb\n"
                   "\t-v\tprint version numbers and exit\n")

# saslpasswd2 exits with -SASL_BADPARAM (7) for a bad password and
# -SASL_FAIL (1) for other failures.
EXIT_BADPARAM = 7


def _default_db(appname: str | None = None) -> str:
    """``$config_directory/sasldb.lmdb``; with ``-a APP``, the
    ``sasldb_path`` of Cyrus' ``APP.conf`` as smtpd finds it, if set."""
    directory, _explicit = config_directory_from_env(None)
    if appname:
        from ..auth.cyrusconf import load_cyrus_conf

        search = ""
        try:
            from .common import load_config

            config = load_config(None, process_name="saslpasswd", main_missing_ok=True)
            search = config.settings().str("cyrus_sasl_config_path")
        except Exception:  # noqa: BLE001 - no usable main.cf: the default search path
            search = ""
        conf = load_cyrus_conf(appname, cyrus_sasl_config_path=search,
                               config_directory=directory)
        if conf.path and conf.get("sasldb_path"):
            return str(conf.get("sasldb_path"))
    return default_path(directory)


def _read_password(pipe: bool, msgs: Messages) -> str:
    if pipe:
        line = sys.stdin.buffer.readline()
        if line.endswith(b"\n"):
            line = line[:-1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line.decode("utf-8", "surrogateescape")
    try:
        first = getpass.getpass("Password: ")
        again = getpass.getpass("Again (for verification): ")
    except EOFError:
        msgs.fatal("invalid parameter supplied: no password", EXIT_BADPARAM)
    if first != again:
        msgs.fatal("passwords don't match; aborting", EXIT_BADPARAM)
    return first


def _saslpasswd(prog: str, msgs: Messages, argv: list[str]) -> int:
    try:
        opts, args = parse_options(argv, "vcpndf:a:u:h")
    except UsageError as err:
        sys.stderr.write(f"{prog}: {err}\n" + SASLPASSWD_USAGE.format(prog=prog))
        return 1
    flags = {o for o, _ in opts}
    values = dict(opts)
    if "-v" in flags:
        print(f"{prog}: hato {__version__} (hato sasldb, argon2id/SCRAM/CRAM-MD5)")
        return 0
    if "-h" in flags or len(args) != 1 or ("-c" in flags and "-d" in flags):
        sys.stderr.write(SASLPASSWD_USAGE.format(prog=prog))
        return 1
    login = args[0]
    path = values.get("-f") or _default_db(values.get("-a"))
    default_realm = values.get("-u") or ""
    if not default_realm and "@" not in login:
        import socket

        default_realm = socket.gethostname()
    user, realm = split_user(login, default_realm)
    if not user or "\0" in login or "\0" in realm:
        msgs.fatal("invalid parameter supplied: bad user name", EXIT_BADPARAM)
    db = Sasldb(path, writable=True, default_realm=realm)
    if db.warning:
        msgs.warn(db.warning)
    try:
        if "-d" in flags:
            db.delete(user, realm)  # like saslpasswd2: quiet when absent
            return 0
        password = _read_password("-p" in flags, msgs)
        if not password:
            msgs.fatal("invalid parameter supplied: empty password", EXIT_BADPARAM)
        mechanisms = [m for m in ALL_MECHANISMS
                      if "-n" not in flags or m not in PLAINTEXT_EQUIVALENT]
        db.set_password(user, realm, password, mechanisms)
    except SasldbError as err:
        raise Fatal(str(err)) from None
    finally:
        db.close()
    return 0


def _listusers(prog: str, msgs: Messages, argv: list[str]) -> int:
    try:
        opts, args = parse_options(argv, "vf:h")
    except UsageError as err:
        sys.stderr.write(f"{prog}: {err}\n" + LISTUSERS_USAGE.format(prog=prog))
        return 1
    flags = {o for o, _ in opts}
    values = dict(opts)
    if "-v" in flags:
        print(f"{prog}: hato {__version__}")
        return 0
    if "-h" in flags or len(args) > 1 or (args and "-f" in flags):
        sys.stderr.write(LISTUSERS_USAGE.format(prog=prog))
        return 1
    path = values.get("-f") or (args[0] if args else _default_db())
    if not os.path.exists(path):
        msgs.fatal(f"open database {path}: No such file or directory")
    db = Sasldb(path)
    if db.warning:
        msgs.warn(db.warning)
    try:
        users = db.users()
    except SasldbError as err:
        raise Fatal(str(err)) from None
    finally:
        db.close()
    for user, realm, _mechanisms in users:
        # sasldblistusers2 prints one line per stored property; hato's
        # equivalent of Cyrus' userPassword is the set of secrets.
        print(f"{user}@{realm}: userPassword")
    return 0


def saslpasswd_main(argv: Sequence[str], prog: str = "saslpasswd") -> int:
    return run(prog, lambda msgs, args: _saslpasswd(prog, msgs, args), argv)


def saslpasswd2_main(argv: Sequence[str]) -> int:
    return saslpasswd_main(argv, "saslpasswd2")


def sasldblistusers_main(argv: Sequence[str], prog: str = "sasldblistusers") -> int:
    return run(prog, lambda msgs, args: _listusers(prog, msgs, args), argv)


def sasldblistusers2_main(argv: Sequence[str]) -> int:
    return sasldblistusers_main(argv, "sasldblistusers2")

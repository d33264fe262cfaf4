"""``hato init DIR``: write a working default instance under DIR.

The instance runs as the invoking user: queue, data, log and Maildirs live
inside DIR; services listen on loopback only, on unprivileged ports (SMTP on
127.0.0.1:2525, submission on 127.0.0.1:2587, its SASL users in hato's
sasldb as ``sasl/smtpd.conf`` says). Existing files are never overwritten.

    hato init [-p smtp_port] [-u mail_owner] [-g setgid_group] DIR

Run by root, the instance's mail_owner is ``hato`` and its setgid_group
``hatodrop`` (Postfix refuses to run its services as root, and so does
hato); run by another user, both are that user's.
"""

from __future__ import annotations

import grp
import os
import pwd
import time

from .. import __version__
from .common import Messages, parse_options, run

MAIN_CF = """\
# main.cf of a hato instance, written by `hato init` {date}.
# Every parameter here is a Postfix parameter; `hato postconf -d` lists the
# defaults and `hato check` validates this file.

compatibility_level = 3.6

# The instance lives in one directory and runs as {user}.
queue_directory = {root}/queue
data_directory = {root}/data
mail_owner = {user}
setgid_group = {group}
maillog_file = {root}/log/maillog

# Loopback only.
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
myhostname = localhost.localdomain
mydestination = $myhostname, localhost.$mydomain, localhost

# Local users get Maildirs in their home directories; virtual mailboxes
# live under {root}/mail; aliases are the instance's own.
home_mailbox = Maildir/
virtual_mailbox_base = {root}/mail
alias_maps = hash:{root}/aliases
alias_database = hash:{root}/aliases

# A virtual domain of the instance's own, so that mail has somewhere to land
# without system users: demo@hato.test is {root}/mail/hato.test/demo/.
virtual_mailbox_domains = hato.test
virtual_mailbox_maps = texthash:{root}/vmailbox
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = {uid}
"""

VMAILBOX = """\
# virtual(5) mailboxes of this instance: address, then a path under
# virtual_mailbox_base ({root}/mail); a trailing / means Maildir.
demo@hato.test  hato.test/demo/
"""

ALIASES = """\
# aliases(5) of a hato instance; rebuild with: hato -c {root} newaliases
postmaster: root
"""

#: The unix services of a stock master.cf (Postfix 3.7's, with verify,
#: showq and flush), shared by ``hato init`` and ``hato postmulti -e
#: create``; braces doubled for str.format().
UNIX_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
  -o syslog_name=${{multi_instance_name?{{$multi_instance_name}}:{{postfix}}}}/$service_name
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
"""

MASTER_CF = """\
# master.cf of a hato instance, written by `hato init` {date}.
# ==========================================================================
# service type  private unpriv  chroot  wakeup  maxproc command + args
#               (yes)   (yes)   (no)    (never) (100)
# ==========================================================================
127.0.0.1:{smtp_port} inet n    -       n       -       -       smtpd
127.0.0.1:{submission_port} inet n -    n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
""" + UNIX_SERVICES


# Cyrus SASL's application file for smtpd, found in $config_directory/sasl:
# users live in hato's own sasldb (``hato -c DIR saslpasswd -c user@domain``).
SMTPD_CONF = """\
# Cyrus SASL configuration of the submission service (smtpd_sasl_type = cyrus).
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: {root}/sasldb.lmdb
mech_list: SCRAM-SHA-256 SCRAM-SHA-1 CRAM-MD5 PLAIN LOGIN
"""

ROOT_OWNER = "hato"
#: The submission service listens on the smtpd port plus this (2525 → 2587,
#: as 25 → 587).
SUBMISSION_OFFSET = 62
ROOT_GROUP = "hatodrop"


def body(msgs: Messages, argv: list[str]) -> int:
    opts, args = parse_options(argv, "g:p:u:")
    smtp_port = 2525
    owner: str | None = None
    group: str | None = None
    for opt, val in opts:
        if opt == "-u":
            owner = val
        elif opt == "-g":
            group = val
        elif opt == "-p":
            if not val.isdigit() or not 0 < int(val) < 65535:
                msgs.fatal(f"-p: bad port number: {val}")
            smtp_port = int(val)
    if len(args) != 1:
        msgs.fatal("usage: hato init [-p smtp_port] [-u mail_owner] [-g setgid_group] DIR")
    root = os.path.abspath(args[0])
    os.makedirs(root, exist_ok=True)
    for sub in ("queue", "data", "log", "mail", "sasl"):
        os.makedirs(os.path.join(root, sub), mode=0o755, exist_ok=True)
    if owner is None:
        # An instance started by root drops its services to an unprivileged
        # owner, as Postfix does with mail_owner; started by anyone else it
        # runs as that user.
        owner = ROOT_OWNER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if group is None:
        group = ROOT_GROUP if os.geteuid() == 0 else grp.getgrgid(os.getegid()).gr_name
    user = owner
    missing = []
    try:
        pwd.getpwnam(owner)
    except KeyError:
        missing.append(f"user {owner}")
    try:
        grp.getgrnam(group)
    except KeyError:
        missing.append(f"group {group}")
    try:
        pw = pwd.getpwnam(owner)
        uid, gid = pw.pw_uid, pw.pw_gid
    except KeyError:
        uid, gid = os.geteuid(), os.getegid()
    values = {
        "root": root, "user": user, "group": group, "smtp_port": smtp_port,
        "uid": max(uid, 1), "gid": gid,
        "submission_port": smtp_port + SUBMISSION_OFFSET,
        "date": time.strftime("%Y-%m-%d") + f" by hato {__version__}",
    }
    wrote = []
    for name, template in (("main.cf", MAIN_CF), ("master.cf", MASTER_CF),
                           ("aliases", ALIASES), ("vmailbox", VMAILBOX),
                           (os.path.join("sasl", "smtpd.conf"), SMTPD_CONF)):
        path = os.path.join(root, name)
        if os.path.exists(path):
            msgs.info(f"{path} exists; left unchanged")
            continue
        with open(path, "x", encoding="utf-8") as f:
            f.write(template.format(**values))
        wrote.append(path)
    for path in wrote:
        print(f"hato: wrote {path}")
    if os.geteuid() == 0 and not missing:
        # data_directory is mail_owner's, as Postfix installs it (hato check
        # says so otherwise; hato start would fix it)
        data = os.path.join(root, "data")
        if os.stat(data).st_uid == 0:
            os.chown(data, uid, gid)
            os.chmod(data, 0o700)
    if os.path.join(root, "aliases") in wrote:
        from .postmap import postalias_main

        if postalias_main(["-c", root, f"hash:{root}/aliases"]):
            msgs.warn(f"could not build {root}/aliases; run: hato -c {root} newaliases")
    if missing:
        msgs.warn(f"{' and '.join(missing)} do not exist yet; create them before "
                  f"starting the instance, e.g. groupadd --system {group}; "
                  f"useradd --system --gid {group} --home-dir {root} "
                  f"--shell /usr/sbin/nologin {owner}")
    return 0


def main(argv: list[str]) -> int:
    return run("hato", body, argv)

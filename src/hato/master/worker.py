"""The entry point of a service worker process started by master.

    python -m hato.master.worker SERVICE_NAME SERVICE_TYPE

The configuration directory comes in MAIL_CONFIG and the listening sockets
as inherited file descriptors named in HATO_LISTEN_FDS. The worker reads its
Settings (main.cf ∪ the entry's ``-o`` overrides), opens its log, drops
privileges to mail_owner when started by root (unless master.cf's unpriv
column says ``n``), and runs the service module's ``serve(ctx)``. A module
that must read files only root may read (smtpd's TLS private keys) does so
in an optional ``pre_jail_init(ctx)``, called with root's privileges before
they are dropped, as Postfix's daemons do; what it prepares goes into
``ctx.prepared``.

Stress mode: the worker computes its Settings twice, as they are and with
``stress=yes`` (``ctx.settings``, ``ctx.stress_settings``). Its status
channel to master (``ctx.status``, a
:class:`hato.io.master_status.WorkerStatus` on the socket named in
HATO_STATUS_FD) carries the number of busy sessions up (a service calls
``ctx.status.report_busy(n)``) and ``stress yes``/``stress no`` down; a
service that adapts subscribes with ``ctx.status.subscribe(callback)``
(callback(on), at once when the worker started under stress, which master
says with HATO_STRESS=yes). ``ctx.stress`` is the current state. smtpd is
the only subscriber so far.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import pwd
import signal
import socket
import sys
from dataclasses import dataclass, field

from ..config.mastercf import Service
from ..config.settings import Config, Settings
from ..io.hostinfo import host_facts
from ..io.maillog import MailLog
from ..io.master_status import WorkerStatus

# master.cf command → the module in hato.services that runs it.
MODULES = {
    "pickup": "pickup",
    "qmgr": "qmgr",
    "oqmgr": "qmgr",
    "local": "local",
    "virtual": "virtual",
    "pipe": "pipe",
    "discard": "discard",
    "error": "error",
    "smtpd": "smtpd",
    "anvil": "anvil",
    "verify": "verify",
    "showq": "showq",
    "flush": "flush",
    "postscreen": "postscreen",
    "smtp": "smtp",
    "lmtp": "smtp",
    "spawn": "spawn",
}


#: allocations between collections of the youngest generation (Python: 700)
GC_THRESHOLD = 20_000

_PRELOAD = ("concurrent.futures.thread", "email.parser", "email.feedparser",
            "email.policy", "encodings.idna", "subprocess")


@dataclass
class WorkerContext:
    """What a service module's serve() receives."""

    config: Config
    service: Service
    settings: Settings
    log: MailLog
    listeners: list[socket.socket]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    #: The same Settings with stress=yes: what the service uses under stress.
    stress_settings: Settings | None = None
    #: The channel to master: busy sessions up, stress on/off down.
    status: WorkerStatus = field(default_factory=WorkerStatus)
    #: What the service's ``pre_jail_init(ctx)`` prepared with root's
    #: privileges, before the worker dropped them (Postfix's name).
    prepared: object = None

    @property
    def queue_directory(self) -> str:
        return self.settings.str("queue_directory")

    @property
    def stress(self) -> bool:
        return self.status.stress


def tune_gc() -> None:
    """The cyclic garbage collector, set for a long-running server: what the
    start-up made (modules, tables, settings) is frozen out of its scans,
    and its youngest generation is collected after more allocations than
    the default 700, which a mail session reaches many times over
    (sessions make little cyclic garbage; reference counting frees the
    rest at once)."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def drop_privileges(settings: Settings) -> None:
    """Become mail_owner for good, as Postfix's daemons do (chroot_uid()):
    its uid and primary gid as real, effective and saved ids, and the
    supplementary groups /etc/group gives it (initgroups) — so that an
    administrator can let the services read a file through a group, as
    Debian's ``adduser postfix sasl`` does — and nothing of root's: not its
    groups, not setgid_group (which only owns maildrop/ and public/), no
    capabilities (a process whose uids all leave 0 loses them)."""
    pw = pwd.getpwnam(settings.str("mail_owner"))
    os.initgroups(pw.pw_name, pw.pw_gid)
    os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
    os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    if os.getresuid() != (pw.pw_uid,) * 3 or os.getresgid() != (pw.pw_gid,) * 3:
        raise SystemExit(f"hato worker: cannot drop privileges to {pw.pw_name}")


def give_up_root(settings: Settings) -> None:
    """drop_privileges(), then die_with_master() again: the kernel forgets
    the parent-death signal when the credentials change, and a worker that
    outlived a killed master would keep its listening sockets from the
    master that replaces it."""
    drop_privileges(settings)
    die_with_master()


def die_with_master() -> None:
    """Ask the kernel to end this worker when its master goes away (however
    it dies), so that a restarted master never finds old workers still at
    work on the same queue."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    # The master may have died before we asked: then we were handed to init
    # or to a subreaper, and must not go on working on its queue.
    master = os.environ.get("HATO_MASTER_PID", "")
    if os.getppid() == 1 or (master.isdigit() and os.getppid() != int(master)):
        sys.exit(1)


def raise_open_file_limit() -> None:
    """The soft limit on open files up to the hard limit: one smtpd or
    postscreen worker holds thousands of client connections (Postfix's
    processes hold one each)."""
    import resource

    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY:
            hard = 1 << 20
        if soft != resource.RLIM_INFINITY and soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass  # the limit stays as it is


def main(argv: list[str]) -> int:
    die_with_master()
    raise_open_file_limit()
    if len(argv) != 2:
        print("usage: python -m hato.master.worker SERVICE TYPE", file=sys.stderr)
        return 2
    name, type_ = argv
    config_dir = os.environ.get("MAIL_CONFIG", "/etc/hato")
    config = Config.load(config_dir, host_facts(), explicit_dir=True,
                         process_name=name)
    found = config.master.find(name, type_)
    if not found:
        print(f"hato worker: no service {name}/{type_} in master.cf", file=sys.stderr)
        return 1
    svc = found[0]
    settings = config.settings(svc)
    config.process_name = svc.command
    log = MailLog.from_settings(settings, svc.command)
    log.adopt("hato")
    fds = [int(x) for x in os.environ.get("HATO_LISTEN_FDS", "").split(",") if x]
    listeners = [socket.socket(fileno=fd) for fd in fds]
    for sock in listeners:
        sock.setblocking(False)
    module_name = MODULES.get(svc.command)
    if module_name is None:
        log.fatal(f"unsupported service command: {svc.command}")
        return 1
    # Import first: after the privileges are gone the interpreter may not be
    # able to read its own installation.
    module = importlib.import_module(f"hato.services.{module_name}")
    for name in _PRELOAD:  # standard modules asyncio and email load on first use
        importlib.import_module(name)
    try:
        import uvloop  # optional: a pure speed-up when installed
    except ImportError:
        uvloop = None
    ctx = WorkerContext(config, svc, settings, log, listeners,
                        stress_settings=config.settings(svc, stress=True),
                        status=WorkerStatus.from_env())
    # As Postfix's pre_jail_init(): a service reads what only root may read
    # (smtpd's TLS private keys, mode 0600 root) before privileges go.
    pre_jail_init = getattr(module, "pre_jail_init", None)
    if pre_jail_init is not None:
        pre_jail_init(ctx)
    if os.geteuid() == 0 and svc.unprivileged():
        give_up_root(settings)
    tune_gc()

    async def runner() -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, ctx.stop.set)
        loop.add_signal_handler(signal.SIGINT, ctx.stop.set)
        ctx.status.start()
        try:
            return int(await module.serve(ctx) or 0)
        finally:
            ctx.status.close()

    try:
        if uvloop is not None:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        return asyncio.run(runner())
    except Exception:
        log.exception(f"{svc.command}: unexpected error")
        return 1
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

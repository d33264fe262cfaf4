"""``hato start | start-fg | stop | abort | reload | status``: run and
control an instance, with the words Postfix's ``postfix`` command uses.

``start`` checks the configuration (as ``hato check``; errors stop it),
refuses to start a second master on the same queue, detaches and waits until
the master holds its lock. ``start-fg`` runs the master in the foreground,
logging to standard error too. ``stop`` lets the services finish what they
are doing; ``abort`` stops them at once; ``reload`` re-reads the
configuration without dropping sessions in progress.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from ..config.errors import ConfigError
from ..master.pidfile import running_pid
from .common import Messages, load_config, parse_options, run

WAIT_START = 15.0
WAIT_STOP = 60.0


def _dirs(cfg) -> tuple[str, str]:
    s = cfg.settings()
    return s.str("queue_directory"), s.str("data_directory")


def _check(msgs: Messages, config_dir: str | None) -> None:
    from . import check

    code = check.body(Messages("hato"), ["-c", config_dir] if config_dir else [])
    if code:
        msgs.fatal("the configuration has errors (see above); not starting")


def _prepare(cfg) -> None:
    from ..master.layout import ensure_layout

    ensure_layout(cfg.settings())


def cmd_start(msgs: Messages, config_dir: str | None, foreground: bool) -> int:
    from .instances import start_refusal

    cfg = load_config(config_dir, process_name="master")
    # A disabled secondary instance starts only once it is enabled.
    refusal = start_refusal(cfg)
    if refusal:
        msgs.fatal(refusal)
    queue_dir, data_dir = _dirs(cfg)
    pid = running_pid(queue_dir, data_dir)
    if pid:
        msgs.fatal(f"the mail system is already running (pid {pid})")
    _check(msgs, config_dir)
    _prepare(cfg)
    from ..master.supervisor import run_master

    if foreground:
        msgs.info("starting the mail system in the foreground")
        return run_master(cfg, foreground_log=True)
    msgs.info("starting the mail system")
    child = os.fork()
    if child == 0:  # first child: new session, second fork, run the master
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.chdir("/")
            code = run_master(cfg)
        except BaseException:
            code = 1
        os._exit(code)
    os.waitpid(child, 0)
    deadline = time.monotonic() + WAIT_START
    while time.monotonic() < deadline:
        if running_pid(queue_dir, data_dir):
            return 0
        time.sleep(0.05)
    msgs.fatal("the mail system did not start (see the mail log)")


def _signal(msgs: Messages, config_dir: str | None, sig: int, verb: str) -> int:
    cfg = load_config(config_dir, process_name="master")
    queue_dir, data_dir = _dirs(cfg)
    pid = running_pid(queue_dir, data_dir)
    if not pid or pid < 0:
        msgs.fatal("the mail system is not running")
    msgs.info(f"{verb} the mail system")
    os.kill(pid, sig)
    if sig in (signal.SIGTERM, signal.SIGQUIT):
        deadline = time.monotonic() + WAIT_STOP
        while time.monotonic() < deadline and running_pid(queue_dir, data_dir):
            time.sleep(0.05)
        if running_pid(queue_dir, data_dir):
            msgs.fatal("the mail system did not stop")
    return 0


def cmd_status(msgs: Messages, config_dir: str | None) -> int:
    cfg = load_config(config_dir, process_name="master")
    queue_dir, data_dir = _dirs(cfg)
    pid = running_pid(queue_dir, data_dir)
    if pid:
        msgs.info(f"the mail system is running: PID: {pid}")
        return 0
    msgs.info("the mail system is not running")
    return 1


def wake_service(cfg, service: str, request: str) -> str | None:
    """Send ``request=REQUEST`` to public/SERVICE of a running instance;
    None when it was sent, else why not."""
    from ..io.ipc import notify
    from ..proto.attr import Attrs

    queue_dir, data_dir = _dirs(cfg)
    if not running_pid(queue_dir, data_dir):
        return "the mail system is not running"
    if not notify(os.path.join(queue_dir, "public", service), Attrs.of(request=request)):
        return f"cannot reach the {'queue manager' if service == 'qmgr' else service} " \
               f"(public/{service})"
    return None


def cmd_flush(msgs: Messages, config_dir: str | None) -> int:
    """Ask qmgr to try every deferred message now (postqueue -f)."""
    cfg = load_config(config_dir, process_name="postqueue")
    why = wake_service(cfg, "qmgr", "flush")
    if why:
        msgs.fatal(why)
    return 0


def make(command: str):
    def body(msgs: Messages, argv: list[str]) -> int:
        opts, args = parse_options(argv, "c:v")
        config_dir = None
        for opt, val in opts:
            if opt == "-c":
                config_dir = val
        if args:
            msgs.fatal(f"usage: hato [-c config_dir] {command}")
        if command in ("start", "start-fg"):
            return cmd_start(msgs, config_dir, command == "start-fg")
        if command == "stop":
            return _signal(msgs, config_dir, signal.SIGTERM, "stopping")
        if command == "abort":
            return _signal(msgs, config_dir, signal.SIGQUIT, "aborting")
        if command == "reload":
            return _signal(msgs, config_dir, signal.SIGHUP, "refreshing")
        if command == "status":
            return cmd_status(msgs, config_dir)
        if command == "flush":
            return cmd_flush(msgs, config_dir)
        raise ConfigError(f"unknown control command {command}")

    def main(argv: list[str]) -> int:
        return run("hato", body, argv)

    return main


start_main = make("start")
start_fg_main = make("start-fg")
stop_main = make("stop")
abort_main = make("abort")
reload_main = make("reload")
status_main = make("status")
flush_main = make("flush")

if __name__ == "__main__":  # pragma: no cover
    sys.exit(start_fg_main(sys.argv[1:]))


def cmd_set_permissions(msgs: Messages, config_dir: str | None) -> int:
    from ..master.layout import Owners, set_permissions

    cfg = load_config(config_dir, process_name="postfix-script")
    settings = cfg.settings()
    if os.geteuid() == 0:
        try:
            Owners.from_settings(settings)
        except KeyError:
            msgs.fatal(f"unknown mail_owner {settings.str('mail_owner')} or setgid_group "
                       f"{settings.str('setgid_group')}; see 'hato check'")
    try:
        set_permissions(settings, cfg.config_dir)
    except OSError as err:
        msgs.fatal(f"set-permissions: {err}")
    return 0


def set_permissions_main(argv: list[str]) -> int:
    """``hato [-c DIR] set-permissions``: Postfix's ``postfix
    set-permissions`` (its plain form): give the configuration, queue and
    data directories the owners and modes ``hato check`` expects."""

    def body(msgs: Messages, args: list[str]) -> int:
        opts, rest = parse_options(args, "c:v")
        config_dir = None
        for opt, val in opts:
            if opt == "-c":
                config_dir = val
        if rest:
            msgs.fatal("usage: hato [-c config_dir] set-permissions "
                       f"(the form '{' '.join(rest)}' is not supported)")
        return cmd_set_permissions(msgs, config_dir)

    return run("hato", body, argv)

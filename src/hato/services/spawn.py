"""spawn: run an external command for each connection, as spawn(8) — how
Postfix sites run policy servers such as policyd-spf:

    policyd-spf unix - n n - 0 spawn
      user=policyd-spf argv=/usr/bin/policyd-spf

For each client that connects to the service's socket the command runs
with its standard input, output and error connected to the client, as
``user=name[:group]`` (never root and never the mail system owner, as
Postfix refuses both), with a clean environment (``export_environment``)
and a time limit of ``<service>_time_limit`` (by default
``$command_time_limit``); a command over its limit is killed with its
process group. An exit status other than 0 is logged as Postfix logs it:
``warning: command /usr/bin/x exit status 1``.

One hato worker serves many connections at once; the service's process
limit (master.cf maxproc, 0 for none) caps how many commands run at a
time, as it caps Postfix's spawn processes. The worker must run as root
(unpriv ``n``) to run commands as another user; started without root it
runs them as itself.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import signal
import socket
import subprocess

from ..config.errors import ConfigError
from ..config.mastercf import daemon_options
from ..delivery.pipe import clean_environment


def parse_command(args: list[str]) -> tuple[str, list[str]]:
    """``user=`` and ``argv=`` from the master.cf arguments after the daemon
    options; Postfix's errors for anything else."""
    user = None
    for i, arg in enumerate(args):
        name, sep, value = arg.partition("=")
        if sep and name.lower() == "user":
            user = value
        elif sep and name.lower() == "argv":
            argv = [value, *args[i + 1:]] if value else list(args[i + 1:])
            if user is None:
                raise ConfigError("missing user= attribute")
            if not argv:
                raise ConfigError("missing argv= attribute")
            return user, argv
        else:
            raise ConfigError(f"unknown attribute name: {arg}")
    if user is None:
        raise ConfigError("missing user= attribute")
    raise ConfigError("missing argv= attribute")


def resolve_user(user: str, owner: str) -> tuple[int, int]:
    """(uid, gid) for ``name[:group]``; Postfix's refusals for root and the
    mail system owner."""
    name, _, group = user.partition(":")
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(f"unknown user name: {name}") from None
    uid, gid = pw.pw_uid, pw.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise ConfigError(f"unknown group name: {group}") from None
    try:
        opw = pwd.getpwnam(owner)
        owner_uid, owner_gid = opw.pw_uid, opw.pw_gid
    except KeyError:
        owner_uid = owner_gid = -2
    if uid == 0:
        raise ConfigError("request to deliver as root")
    if uid == owner_uid:
        raise ConfigError("request to deliver as mail system owner")
    if gid == 0:
        raise ConfigError(f"request to use privileged group id {gid}")
    if gid == owner_gid:
        raise ConfigError(f"request to use mail system owner group id {gid}")
    return uid, gid


class Spawn:
    def __init__(self, ctx):
        self.ctx = ctx
        self.log = ctx.log
        s = ctx.settings
        svc = ctx.service
        _opts, start = daemon_options(svc.args)
        user, self.argv = parse_command(svc.args[start:])
        uid, gid = resolve_user(user, s.str("mail_owner"))
        self.root = os.geteuid() == 0
        self.uid, self.gid = (uid, gid) if self.root else (None, None)
        try:
            self.time_limit = float(s.time(f"{svc.name}_time_limit"))
        except ConfigError:
            self.time_limit = float(s.time("command_time_limit"))
        self.env = clean_environment(None, export_environment=s.list("export_environment"))
        # this worker's share of the entry's maxproc (master's HATO_SESSION_LIMIT)
        limit = int(os.environ.get("HATO_SESSION_LIMIT", "0") or 0)
        self.slots = asyncio.Semaphore(limit) if limit else None
        self.tasks: set[asyncio.Task] = set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sock in self.ctx.listeners:
            sock.setblocking(False)
            task = loop.create_task(self._accept(sock))
            self.tasks.add(task)
        await self.ctx.stop.wait()
        for task in list(self.tasks):
            task.cancel()
        return 0

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self.slots is not None:
                await self.slots.acquire()
            try:
                conn, _ = await loop.sock_accept(listener)
            except OSError as err:
                if self.slots is not None:
                    self.slots.release()
                self.log.warning(f"accept: {err.strerror or err}")
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self._serve(conn))
            self.tasks.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        if self.slots is not None:
            self.slots.release()

    async def _serve(self, conn: socket.socket) -> None:
        command = self.argv[0]
        try:
            conn.setblocking(True)
            kw = {}
            if self.uid is not None:
                kw = {"user": self.uid, "group": self.gid, "extra_groups": []}
            # subprocess.Popen, not the event loop's subprocess support: it
            # takes user=/group= on every loop (uvloop's does not).
            proc = subprocess.Popen(self.argv, stdin=conn.fileno(), stdout=conn.fileno(),
                                    stderr=conn.fileno(), env=self.env, cwd="/",
                                    start_new_session=True, **kw)
        except (OSError, subprocess.SubprocessError) as err:
            self.log.warning(f"{command}: cannot run: {getattr(err, 'strerror', None) or err}")
            return
        finally:
            conn.close()  # the command has the connection now
        try:
            status = await asyncio.to_thread(self._wait, proc)
        except asyncio.CancelledError:
            _kill(proc, signal.SIGTERM)
            raise
        if status is None:
            self.log.warning(f"{command}: process id {proc.pid}: command time limit exceeded")
            _kill(proc, signal.SIGKILL)
            status = await asyncio.to_thread(proc.wait)
        if status > 0:
            self.log.warning(f"command {command} exit status {status}")
        elif status < 0:
            self.log.warning(f"command {command} killed by signal {-status}")

    def _wait(self, proc: subprocess.Popen) -> int | None:
        """The exit status, or None when the time limit passed first."""
        try:
            return proc.wait(self.time_limit)
        except subprocess.TimeoutExpired:
            return None


def _kill(proc: subprocess.Popen, sig: int) -> None:
    """*sig* to the command and everything it started (its own session)."""
    try:
        os.killpg(proc.pid, sig)
    except OSError:
        pass


async def serve(ctx) -> int:
    try:
        spawn = Spawn(ctx)
    except ConfigError as err:
        ctx.log.fatal(f"{ctx.service.key}: {err}")
        return 1
    return await spawn.run()

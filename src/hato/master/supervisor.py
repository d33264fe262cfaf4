"""master: the supervisor of a hato instance.

Reads master.cf, binds every listening socket itself (inet sockets on the
addresses of ``inet_interfaces`` or the entry's own ``host:port``; unix
sockets under ``$queue_directory/private`` or ``/public``), starts the
services hato runs as worker processes that inherit those sockets, and
restarts a worker that dies, with back-off and Postfix's warning texts.

Signals: SIGTERM stops (workers get SIGTERM and finish what they are doing),
SIGQUIT aborts (workers are killed), SIGHUP reloads (main.cf and master.cf
are read again; new workers start with the new configuration and old ones
are told to finish their sessions and exit).

Busy sessions and stress mode: each worker has a status channel to master
(a socketpair, :mod:`hato.io.master_status`) on which it reports its number
of sessions in progress (``busy N``). master sums them per service; when the
sum reaches the entry's maxproc (0: unlimited, never) it logs Postfix's
three warnings (``service "smtp" (25) has reached its process limit "N":
new clients may experience noticeable delays``, and the two hints; once per
1000 s per service) and ``service "smtp" (25): stress mode started``, and
tells every worker of the service ``stress yes`` (a worker started while
stress is on gets HATO_STRESS=yes). Stress ends when busy has stayed at or
below 80% of maxproc for STRESS_HOLD seconds (:mod:`hato.master.stress`):
``stress no`` to the workers and ``service "smtp" (25): stress mode ended``.
A worker that dies counts as 0 busy. Beyond maxproc, connections wait in
the listen queue: each worker holds its share of maxproc
(HATO_SESSION_LIMIT) and accepts no more.

Parameters: inet_interfaces, inet_protocols, default_process_limit,
master_service_disable, service_throttle_time, queue_directory,
data_directory, mail_owner, setgid_group, syslog_name, maillog_file.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..config.mastercf import Service
from ..config.settings import Config, Settings
from ..io.maillog import MailLog
from ..io.master_status import (STATUS_FD_ENV, STRESS_ENV, Busy, StatusChannel, Stress,
                                format_message, parse_message)
from .catalog import Status, describe
from .pidfile import MasterLock
from .stress import (WARNING_INTERVAL, StressEvent, StressGauge, limit_warnings,
                     service_label, stress_hold)

WORKER_MODULE = "hato.master.worker"
#: Services that are one process holding all their connections.
SINGLE_PROCESS = frozenset({"postscreen"})
MIN_BACKOFF = 0.5
BIND_WAIT = 10.0  # seconds a port in use may take to become free at start


def disabled(svc: Service, patterns: list[str]) -> bool:
    """master_service_disable: "type" or "name/type" (also "name.type")."""
    for pat in patterns:
        pat = pat.replace(".", "/") if "/" not in pat and pat.count(".") == 1 else pat
        if pat == svc.type or pat == svc.key:
            return True
    return False


def interface_addresses(settings: Settings) -> list[str]:
    """Addresses to bind for inet services without their own host."""
    protos = {p.lower() for p in settings.list("inet_protocols")} or {"all"}
    want4 = bool(protos & {"all", "ipv4"})
    want6 = bool(protos & {"all", "ipv6"})
    out: list[str] = []
    for item in settings.list("inet_interfaces"):
        low = item.lower()
        if low == "all":
            out += (["0.0.0.0"] if want4 else []) + (["::"] if want6 else [])
        elif low == "loopback-only":
            out += (["127.0.0.1"] if want4 else []) + (["::1"] if want6 else [])
        else:
            out.append(item.strip("[]"))
    return out or ["127.0.0.1"]


def bind_inet(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if not any(c.isalpha() for c in host) or ":" in host:
        addr = host
    else:
        addr = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    # After a crash the old master's workers may still hold the port for a
    # moment (they are dying, or finishing a write): wait for them a while.
    deadline = time.monotonic() + BIND_WAIT
    while True:
        try:
            sock.bind((addr, port))
            break
        except OSError as err:
            if err.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                sock.close()
                raise
            time.sleep(0.1)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def bind_unix(path: str, backlog: int, mode: int) -> socket.socket:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, mode)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


@dataclass
class Slot:
    """One master.cf service that hato runs: its sockets and workers."""

    service: Service
    sockets: list[socket.socket]
    nworkers: int
    maxproc: int = 0
    procs: dict[int, asyncio.subprocess.Process] = field(default_factory=dict)
    failures: int = 0
    retiring: bool = False
    #: How master names the service in its warnings: service "smtp" (25).
    title: str = ""
    #: Busy sessions per worker pid, and each worker's status channel.
    busy: dict[int, int] = field(default_factory=dict)
    links: dict[int, StatusChannel] = field(default_factory=dict)
    gauge: StressGauge = field(default_factory=lambda: StressGauge(0))
    last_warning: float | None = None
    timer: asyncio.TimerHandle | None = None

    @property
    def label(self) -> str:
        return self.service.key

    @property
    def stressed(self) -> bool:
        return self.gauge.stressed


class Master:
    def __init__(self, config: Config, log: MailLog):
        self.config = config
        self.settings = config.settings()
        self.log = log
        self.slots: list[Slot] = []
        self.stopping = False
        self.aborting = False
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()
        # start-up and reloads one at a time: a SIGHUP while the workers are
        # still being started waits until they all are (then stops them all)
        self._lifecycle = asyncio.Lock()

    # -- set-up -------------------------------------------------------------------

    def plan(self, keep: dict[tuple[str, int], socket.socket] | None = None) -> list[Slot]:
        """The services to run. *keep* holds listening inet sockets of the
        previous configuration by (host, port): a reload reuses them, so
        that no connection is refused while workers change."""
        keep = keep if keep is not None else {}
        cfg, s = self.config, self.settings
        patterns = s.list("master_service_disable")
        limit = s.int("default_process_limit")
        queue_dir = s.str("queue_directory")
        slots: list[Slot] = []
        for svc in cfg.master.services:
            if disabled(svc, patterns):
                continue
            info = describe(svc.command)
            if info is None or info[0] is Status.PLANNED:
                what = info[1] if info else "unknown daemon"
                self.log.warning(f"service {svc.key}: {svc.command} ({what}) is not run by "
                                 f"this version of hato")
                continue
            if info[0] is Status.FOLDED:
                continue
            maxproc = svc.maxproc(limit)
            sockets: list[socket.socket] = []
            title = service_label(svc.name, svc.type, svc.private())
            if svc.type == "inet":
                host, port = svc.endpoint()
                title = service_label(svc.name, svc.type, False, port, host)
                hosts = [host] if host else interface_addresses(s)
                for h in hosts:
                    old = keep.pop((h, port), None)
                    sockets.append(old if old is not None
                                   else bind_inet(h, port, max(maxproc, 100)))
                nworkers = max(1, min(maxproc or 1, os.cpu_count() or 1))
            elif svc.type in ("unix", "pass"):
                # pass: postscreen hands accepted clients over this socket
                sub = "private" if svc.private() else "public"
                path = os.path.join(queue_dir, sub, svc.name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                # As in Postfix: the socket is open to all; private/ (0700) and
                # public/ (0710, setgid_group) decide who reaches it.
                # pass: every client postscreen hands over may queue here
                backlog = socket.SOMAXCONN if svc.type == "pass" else 100
                sockets.append(bind_unix(path, backlog, 0o666))
                if os.geteuid() == 0:
                    import pwd

                    pw = pwd.getpwnam(s.str("mail_owner"))
                    os.chown(path, pw.pw_uid, pw.pw_gid)
                nworkers = 1
                if svc.type == "pass":  # many sessions: one worker per core, as inet
                    cores = os.cpu_count() or 1
                    nworkers = max(1, min(maxproc or cores, cores))
            else:
                nworkers = 1
            if maxproc == 0 and svc.type == "inet":
                nworkers = max(1, os.cpu_count() or 1)
            if svc.command in SINGLE_PROCESS:
                # maxproc counts processes here (Postfix runs one postscreen,
                # which holds every connection): no session limit, no stress
                # from master (postscreen has its own).
                nworkers, maxproc = 1, 0
            slots.append(Slot(svc, sockets, nworkers, maxproc, title=title,
                              gauge=StressGauge(maxproc, stress_hold())))
        return slots

    # -- workers -------------------------------------------------------------------

    async def spawn(self, slot: Slot, index: int = 0) -> None:
        if slot.retiring or self.stopping:
            return  # a reload or stop came while it waited its turn
        fds = [sock.fileno() for sock in slot.sockets]
        env = dict(os.environ)
        if slot.maxproc:
            # Each worker of a multi-session service holds its share of the
            # entry's maxproc, so that together they hold maxproc sessions.
            share, extra = divmod(slot.maxproc, slot.nworkers)
            env["HATO_SESSION_LIMIT"] = str(max(1, share + (1 if index < extra else 0)))
        env["MAIL_CONFIG"] = self.config.config_dir
        env["HATO_LISTEN_FDS"] = ",".join(str(fd) for fd in fds)
        env["HATO_MASTER_PID"] = str(os.getpid())
        # The status channel: busy sessions up, stress mode down.
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        theirs.set_inheritable(True)
        env[STATUS_FD_ENV] = str(theirs.fileno())
        env.pop(STRESS_ENV, None)
        if slot.stressed:
            env[STRESS_ENV] = "yes"
        argv = [sys.executable, "-m", WORKER_MODULE, slot.service.name, slot.service.type]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, pass_fds=[*fds, theirs.fileno()], env=env,
                stdin=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        slot.procs[proc.pid] = proc
        pid = proc.pid
        link = StatusChannel(ours, lambda line: self.status_line(slot, pid, line))
        link.start()
        slot.links[pid] = link
        loop = asyncio.get_running_loop()
        for coro in (self.watch(slot, proc, index), self.relay_stderr(slot, proc)):
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def relay_stderr(self, slot: Slot, proc: asyncio.subprocess.Process) -> None:
        """What a worker prints before its own log is open (an import error,
        a crash in start-up) reaches the mail log."""
        assert proc.stderr is not None
        program = f"{self.settings.str('daemon_directory')}/{slot.service.command}"
        while True:
            line = await proc.stderr.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self.log.warning(f"{program}[{proc.pid}]: {text}")

    async def watch(self, slot: Slot, proc: asyncio.subprocess.Process, index: int) -> None:
        started = time.monotonic()
        status = await proc.wait()
        slot.procs.pop(proc.pid, None)
        link = slot.links.pop(proc.pid, None)
        if link is not None:
            link.close()
        slot.busy.pop(proc.pid, None)  # a dead worker holds no sessions
        if self.stopping or slot.retiring:
            return
        self.assess(slot)
        program = f"{self.settings.str('daemon_directory')}/{slot.service.command}"
        if status < 0:
            self.log.warning(f"process {program} pid {proc.pid} killed by signal {-status}")
        elif status != 0:
            self.log.warning(f"process {program} pid {proc.pid} exit status {status}")
        if status != 0 and time.monotonic() - started < 5:
            slot.failures += 1
            self.log.warning(f"{program}: bad command startup -- throttling")
        else:
            slot.failures = 0
        limit = float(self.settings.time("service_throttle_time"))
        delay = min(limit, MIN_BACKOFF * (2 ** min(slot.failures, 10))) if slot.failures else 0
        if delay:
            await asyncio.sleep(delay)
        if not self.stopping and not slot.retiring:
            await self.spawn(slot, index)

    async def start_all(self) -> None:
        for slot in self.slots:
            for index in range(slot.nworkers):
                await self.spawn(slot, index)
            self.assess(slot)

    # -- busy sessions and stress mode ------------------------------------------------

    def status_line(self, slot: Slot, pid: int, line: str) -> None:
        msg = parse_message(line)
        if not isinstance(msg, Busy):
            self.log.warning(f"{slot.title}: unexpected status from pid {pid}: {line[:60]!r}")
            return
        slot.busy[pid] = msg.count
        if not slot.retiring:
            self.assess(slot)

    def assess(self, slot: Slot) -> None:
        """Feed the service's busy total to its gauge; switch its workers
        when stress starts or ends; come back when stress would end."""
        if slot.timer is not None:
            slot.timer.cancel()
            slot.timer = None
        if slot.retiring or self.stopping:
            return
        now = time.monotonic()
        event = slot.gauge.update(sum(slot.busy.values()), now)
        if event is StressEvent.START:
            if slot.last_warning is None or now - slot.last_warning >= WARNING_INTERVAL:
                slot.last_warning = now
                for text in limit_warnings(slot.title, slot.maxproc):
                    self.log.warning(text)
            self.log.info(f"{slot.title}: stress mode started")
            self.tell_workers(slot, True)
        elif event is StressEvent.END:
            self.log.info(f"{slot.title}: stress mode ended")
            self.tell_workers(slot, False)
        ends_at = slot.gauge.ends_at
        if ends_at is not None:
            loop = asyncio.get_running_loop()
            slot.timer = loop.call_later(max(0.0, ends_at - now), self.assess, slot)

    @staticmethod
    def tell_workers(slot: Slot, on: bool) -> None:
        data = format_message(Stress(on))
        for link in slot.links.values():
            link.send(data)

    # -- control -------------------------------------------------------------------

    def request_stop(self, abort: bool = False) -> None:
        self.stopping = True
        self.aborting = self.aborting or abort
        self._stop.set()

    async def reload(self) -> None:
        async with self._lifecycle:
            await self._reload()

    async def _reload(self) -> None:
        try:
            from ..io.hostinfo import host_facts

            new = Config.load(self.config.config_dir, host_facts(), explicit_dir=True)
        except ConfigError as err:
            self.log.error(f"reload: {err}; keeping the running configuration")
            return
        self.log.info("reload -- version hato, configuration " + self.config.config_dir)
        old_slots = self.slots
        old_config, old_settings = self.config, self.settings
        for slot in old_slots:
            slot.retiring = True
            if slot.timer is not None:
                slot.timer.cancel()
                slot.timer = None
        self.config, self.settings = new, new.settings()
        # Inet sockets whose address stays are handed to the new workers;
        # the old workers are told to stop accepting and to finish the
        # sessions they have.
        keep: dict[tuple[str, int], socket.socket] = {}
        for slot in old_slots:
            if slot.service.type == "inet":
                for sock in slot.sockets:
                    try:
                        host, port = sock.getsockname()[:2]
                    except OSError:
                        continue
                    keep[(host, port)] = sock
        try:
            self.slots = self.plan(keep)
        except OSError as err:
            self.log.error(f"reload: {err}; keeping the running configuration")
            for slot in old_slots:
                slot.retiring = False
            self.config, self.settings = old_config, old_settings
            return
        self.inherit_stress(old_slots)
        for slot in old_slots:
            for proc in list(slot.procs.values()):
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            reused = {id(sock) for new in self.slots for sock in new.sockets}
            for sock in slot.sockets:
                if id(sock) not in reused:
                    sock.close()
        await self.start_all()

    def inherit_stress(self, old_slots: list[Slot]) -> None:
        """After a reload, a service that was under stress stays so (its new
        workers start in stress mode) until its busy count has been low for
        the hold time; the warnings keep their once-per-1000 s pace."""
        old = {slot.label: slot for slot in old_slots}
        for slot in self.slots:
            before = old.get(slot.label)
            if before is None:
                continue
            slot.last_warning = before.last_warning
            if before.stressed and slot.maxproc > 0:
                slot.gauge.stressed = True

    async def shutdown(self) -> None:
        sig = signal.SIGKILL if self.aborting else signal.SIGTERM
        procs = [p for slot in self.slots for p in slot.procs.values()]
        for proc in procs:
            if proc.returncode is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        for proc in procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(proc.wait(), remaining)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        for slot in self.slots:
            for sock in slot.sockets:
                sock.close()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGQUIT, lambda: self.request_stop(abort=True))
        loop.add_signal_handler(signal.SIGHUP,
                                lambda: loop.create_task(self.reload()))
        self.slots = self.plan()
        self.log.info(f"daemon started -- version hato, configuration {self.config.config_dir}")
        async with self._lifecycle:
            await self.start_all()
        await self._stop.wait()
        self.log.info("terminating on signal" + (" (abort)" if self.aborting else ""))
        await self.shutdown()
        return 0


def run_master(config: Config, *, foreground_log: bool = False) -> int:
    """Run the master until it is told to stop (the caller has detached)."""
    settings = config.settings()
    log = MailLog.from_settings(settings, "master", stderr=foreground_log)
    owner = None
    if os.geteuid() == 0:  # data_directory belongs to mail_owner, as Postfix's
        from .layout import Owners

        try:
            who = Owners.from_settings(settings)
            owner = (who.uid, who.gid)
        except KeyError:
            pass  # hato start refused it already
    lock = MasterLock(settings.str("queue_directory"), settings.str("data_directory"), owner)
    try:
        lock.acquire()
    except Exception as err:
        log.fatal(str(err))
        log.close()
        return 1
    try:
        return asyncio.run(Master(config, log).run())
    except Exception as err:  # it could not start (a port in use, ...): say why
        log.fatal(f"master: {err}")
        return 1
    finally:
        lock.release()
        log.close()

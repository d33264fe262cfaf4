"""One SMTP server session over a socket: the asyncio glue between the
sans-IO core (:mod:`hato.proto.smtpd`), the restrictions
(:mod:`hato.policy.smtpd_check`) and the queue (:mod:`hato.queue.inject`).
The smtpd service (:mod:`hato.services.smtpd`) owns a :class:`SessionServer`
per worker; tests drive sessions in-process through the same class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import socket
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..config.settings import Settings
from ..io.tls import TlsFacts, tls_policy
from ..policy import address as A
from ..policy.hostlist import host_list
from ..policy.rewrite import open_maps
from ..policy.smtpd_check import ClientFacts, SmtpdChecks
from ..proto import smtpd as P
from ..proto.escape import escape
from ..queue.cleanup import Cleanup
from ..queue.envelope import Recipient
from ..queue.inject import Injection, commit_together
from ..queue.store import QueueStore
from ..queue.submit import MaildropSubmission
from ..tables.base import TableRetry
from .batch import Batcher, Failed
from .fdreserve import OUT_OF_DESCRIPTORS, SpareDescriptor
from .handoff import HandoffError, receive_client
from .mailbox_quota_client import MailboxQuotaQuery
from .policy_client import PolicyClient
from .maillog import printable
from .smtpd_anvil import ClientLimits, SessionLimits
from .smtpd_commands import CommandHandlers
from .smtpd_message import MessageIntake
from .smtpd_milter import MilterSetup, SessionMilters
from .smtpd_tlsauth import READ_SIZE, SessionEnd, TlsAuth
from .verify_client import VerifyQuery

#: Postfix's order of the counters in the "disconnect from" line (its
#: command table).
COUNTER_ORDER = ("helo", "ehlo", "xclient", "xforward", "starttls", "auth", "mail", "rcpt",
                 "data", "bdat", "rset", "noop", "vrfy", "etrn", "quit", "unknown")

INTERNAL_ERROR = P.Reply(451, "4.3.0", "Error: internal error")


def limits_from_settings(s: Settings) -> P.Limits:
    size = s.int("message_size_limit")
    return P.Limits(
        line_length_limit=s.int("line_length_limit"),
        message_size_limit=size,
        recipient_limit=s.int("smtpd_recipient_limit"),
        recipient_overshoot_limit=s.int("smtpd_recipient_overshoot_limit"),
        hard_error_limit=s.int("smtpd_hard_error_limit"),
        soft_error_limit=s.int("smtpd_soft_error_limit"),
        junk_command_limit=s.int("smtpd_junk_command_limit"),
        forbid_bare_newline=s.str("smtpd_forbid_bare_newline").lower(),
        bare_newline_reject_code=s.int("smtpd_forbid_bare_newline_reject_code"),
        forbid_unauth_pipelining=s.bool("smtpd_forbid_unauth_pipelining"),
        disable_vrfy=s.bool("disable_vrfy_command"),
        helo_required=s.bool("smtpd_helo_required"),
        smtputf8_enable=s.bool("smtputf8_enable"),
        strict_rfc821_envelopes=s.bool("strict_rfc821_envelopes"),
        resolve_numeric_domain=s.bool("resolve_numeric_domain"),
    )


def _commit_batch(commits):
    """In a worker thread: the commits of one batch (each a callable that
    commits one message without syncing its directory), see
    :func:`hato.queue.inject.commit_together`; a failure is that
    message's own."""
    return [Failed(r) if isinstance(r, BaseException) else r
            for r in commit_together(commits)]


@functools.lru_cache(maxsize=16)
def _session_limits(limits: P.Limits, enforce_tls: bool, bare_ok: bool) -> P.Limits:
    """The server's limits as one session has them: TLS required on a
    port where it is not a wrapper, bare newlines allowed for clients in
    smtpd_forbid_bare_newline_exclusions. (Limits are frozen: the few
    combinations are made once, not for every connection.)"""
    if enforce_tls:
        limits = dataclasses.replace(limits, enforce_tls=True)
    if bare_ok:
        limits = dataclasses.replace(limits, forbid_bare_newline="no")
    return limits


class SessionServer:
    """What one smtpd worker shares between its sessions: settings read,
    tables opened, the queue."""

    def __init__(self, settings: Settings, log, *, service=None, dns=None,
                 wake_qmgr: Callable[[], None] | None = None, stand_alone_uid: int | None = None):
        s = self.settings = settings
        # sendmail -bs: the session speaks on stdin/stdout for a local
        # user, without restrictions, into maildrop/ (pickup does the rest).
        self.stand_alone_uid = stand_alone_uid
        self.log = log
        self.service = service
        self.dns = dns
        self.wake_qmgr = wake_qmgr or (lambda: None)
        # The sessions' commits, handed to a thread together: the messages
        # that ended during one turn of the loop (or while the previous
        # batch ran) share one hand-off and one fsync of incoming/.
        self.committer = Batcher(_commit_batch)
        self.hostname = s.str("myhostname")
        self.external = s.str("info_log_address_format").lower() != "internal"
        self.mail_name = s.str("mail_name")
        self.banner = s.str("smtpd_banner")
        self.limits = limits_from_settings(s)
        # smtpd_timeout, smtpd_per_request_deadline, smtpd_starttls_timeout
        # and the error/junk limits change with stress mode: set_stress().
        self.stress = s.str("stress").lower() == "yes"
        self.timeout = float(s.time("smtpd_timeout"))
        self.per_request_deadline = s.bool("smtpd_per_request_deadline")
        self.live: set[Session] = set()  # sessions in their command loop
        self.min_data_rate = max(1, s.int("smtpd_min_data_rate"))
        self.error_sleep = float(s.time("smtpd_error_sleep_time"))
        self.soft_error_limit = s.int("smtpd_soft_error_limit")
        self.delay_reject = s.bool("smtpd_delay_reject")
        self.port_logging = s.bool("smtpd_client_port_logging")
        self.peername_lookup = s.bool("smtpd_peername_lookup")
        self.size_limit = s.int("message_size_limit")
        self.queue_minfree = s.int("queue_minfree")
        if self.queue_minfree and self.size_limit and self.queue_minfree / 1.5 < self.size_limit:
            self.log.warning(f"queue_minfree({self.queue_minfree}) should be at least "
                             f"1.5*message_size_limit({self.size_limit})")
        self.cleanup = Cleanup(s)
        self.store = QueueStore.from_settings(s)
        # reject_unverified_*: the verify service, asked from the checks' thread
        self.verify = VerifyQuery.from_settings(s) if stand_alone_uid is None else None
        # hato_mailbox_quota_rcpt_check: local/virtual asked from the checks' thread
        quota = MailboxQuotaQuery.from_settings(s) \
            if stand_alone_uid is None and s.bool("hato_mailbox_quota_rcpt_check") else None
        # check_policy_service: one client (and its connections) for all sessions
        self.policy = PolicyClient.from_settings(s) if stand_alone_uid is None else None
        self.checks = SmtpdChecks(s, dns=dns, verify=self.verify, mailbox_quota=quota,
                                  policy=self.policy) \
            if stand_alone_uid is None else _NoChecks()
        # smtpd_milters, smtpd_milter_maps (not for sendmail -bs: non_smtpd_milters)
        setup = MilterSetup(s) if stand_alone_uid is None else None
        self.milters = setup if setup is not None and setup.active else None
        if self.milters is not None:  # unknown commands go to the milters too
            self.limits = dataclasses.replace(self.limits, ask_unknown=True)
        self.xclient_hosts = host_list(s, "smtpd_authorized_xclient_hosts")
        self.xforward_hosts = host_list(s, "smtpd_authorized_xforward_hosts")
        self.bare_newline_exclusions = host_list(s, "smtpd_forbid_bare_newline_exclusions")
        self.flush_domains = host_list(s, "fast_flush_domains")
        self.local_rewrite = [r.lower() for r in s.list("local_header_rewrite_clients")]
        self.discard_keywords = {k.lower() for k in s.list("smtpd_discard_ehlo_keywords")}
        self.discard_maps = open_maps(s, "smtpd_discard_ehlo_keyword_address_maps")
        self.tls = tls_policy(s)
        self.starttls_timeout = float(s.time("smtpd_starttls_timeout"))
        self.sasl = None
        if s.bool("smtpd_sasl_auth_enable") and stand_alone_uid is None:
            from ..auth.server import sasl_server_from_settings

            self.sasl = sasl_server_from_settings(s)
            for warning in getattr(self.sasl, "warnings", []):
                log.warning(str(warning))
        self.sasl_exceptions = host_list(s, "smtpd_sasl_exceptions_networks")
        self.broken_auth_clients = s.bool("broken_sasl_auth_clients")
        self.sasl_header = s.bool("smtpd_sasl_authenticated_header")
        self.sasl_failure_delay = 1.0
        self.anvil: ClientLimits | None = None
        if stand_alone_uid is None:
            self.anvil = ClientLimits(s, log, service.name if service is not None else "smtpd")
        self.sessions: set[asyncio.Task] = set()
        self.session_limit = 100
        self._slots: asyncio.Semaphore | None = None
        self._spare: SpareDescriptor | None = None  # see io/fdreserve.py
        self._turned_away = 0
        self._check_threads: ThreadPoolExecutor | None = None

    def check_threads(self) -> ThreadPoolExecutor:
        """The threads for restriction checks that may block (DNS, policy
        servers, verify): as many as the worker has session slots, so a
        slow or hanging server holds only the sessions that wait for it,
        as in Postfix (one process per session)."""
        if self._check_threads is None:
            self._check_threads = ThreadPoolExecutor(max_workers=max(4, self.session_limit),
                                                     thread_name_prefix="smtpd-check")
        return self._check_threads

    def set_stress(self, settings: Settings) -> None:
        """Stress mode on or off: take the stress-dependent values of
        *settings* (the service's Settings with or without ``stress=yes``)
        for new sessions and for those in progress. Their error and junk
        limits change at once; a session waiting for input or output has
        its wait cut to the new smtpd_timeout counted from when the wait
        began, and its per-request deadline likewise (never lengthened)."""
        s = settings
        self.stress = s.str("stress").lower() == "yes"
        self.timeout = float(s.time("smtpd_timeout"))
        self.per_request_deadline = s.bool("smtpd_per_request_deadline")
        self.starttls_timeout = float(s.time("smtpd_starttls_timeout"))
        if self.verify is not None:  # address_verify_poll_count = ${stress?{1}:{3}}
            self.verify.poll_count = s.int("address_verify_poll_count")
        hard, junk = s.int("smtpd_hard_error_limit"), s.int("smtpd_junk_command_limit")
        self.limits = dataclasses.replace(self.limits, hard_error_limit=hard,
                                          junk_command_limit=junk)
        for session in list(self.live):
            conn = session.conn
            conn.limits = dataclasses.replace(conn.limits, hard_error_limit=hard,
                                              junk_command_limit=junk)
            session.deadline = min(session.deadline, session.request_began + self.timeout)
            session.shorten_wait(self.timeout)

    # -- accepting -------------------------------------------------------------------------

    async def accept_loop(self, listener: socket.socket, stop: asyncio.Event, *,
                          passed: bool = False) -> None:
        """Serve the clients of *listener*: connections of an inet (or
        unix) service, or with *passed* the clients that postscreen hands
        over on a ``pass`` service (:mod:`hato.io.handoff`). A worker holds
        at most session_limit sessions; beyond that it stops accepting."""
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.session_limit)
        slots = self._slots
        if self._spare is None:
            self._spare = SpareDescriptor()  # kept for the day descriptors run out
        while not stop.is_set():
            await slots.acquire()
            try:
                sock, _ = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                slots.release()
                raise
            except OSError as err:
                slots.release()
                if err.errno in OUT_OF_DESCRIPTORS and not passed:
                    # out of descriptors: waiting clients hear a 421 at once
                    if self._spare.turn_away(listener):
                        self._turned_away += 1
                        if self._turned_away == 1 or self._turned_away % 100 == 0:
                            self.log.warning(f"accept: {err.strerror}: {self._turned_away} "
                                             f"client(s) turned away with 421 4.3.2 No "
                                             f"system resources")
                        continue
                self.log.warning(f"accept: {err.strerror or err}")
                await asyncio.sleep(0.1)
                continue
            coro = self.serve_passed(sock) if passed else self.serve_socket(sock)
            task = loop.create_task(coro)
            self.sessions.add(task)

            def done(t: asyncio.Task, slots=slots) -> None:
                self.sessions.discard(t)
                slots.release()
            task.add_done_callback(done)

    async def serve_passed(self, link: socket.socket) -> None:
        """A client that postscreen passed: served with the addresses it
        saw (the upstream proxy's when there is one)."""
        try:
            client, attrs = await receive_client(link)
        except HandoffError as err:
            self.log.warning(f"cannot receive client from postscreen: {err}")
            return
        finally:
            link.close()
        await self.serve_socket(client, attrs.get("client_addr"), attrs.get("client_port"),
                                (attrs.get("server_addr"), attrs.get("server_port")))

    async def serve_socket(self, sock: socket.socket, addr: str | None = None,
                           port: str | None = None,
                           server: tuple[str | None, str | None] = (None, None)) -> None:
        try:
            peer = sock.getpeername()
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if addr is None:
                addr, port = str(peer[0]), str(peer[1])
                if addr.startswith("::ffff:") and "." in addr:
                    addr = addr[7:]
        elif addr is None:
            addr, port = "127.0.0.1", "0"
        port = port or "0"
        if self.tls.wrapper:
            # smtps: nothing may read the socket before the TLS layer does,
            # so the session opens its streams after the handshake.
            session = Session(self, None, None, addr, port, sock=sock)
        else:
            reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
            session = Session(self, reader, writer, addr, port)
        session.facts.server_addr, session.facts.server_port = _server_address(sock, *server)
        try:
            await session.run()
        finally:
            await session.close()

    def queue_space_short(self) -> str | None:
        """Postfix's smtpd_check_queue(): when the queue file system has
        no more than queue_minfree bytes free, or less than 1.5 times
        message_size_limit, the warning to log (MAIL is then refused with a
        452); None when there is room. Not for sendmail -bs."""
        if self.stand_alone_uid is not None:
            return None
        try:
            st = os.statvfs(self.store.directory)
        except OSError:
            return None  # the write itself will tell
        size, free = max(1, st.f_frsize), st.f_bavail
        if self.queue_minfree // size >= free or self.size_limit // size >= free / 1.5:
            return (f"not enough free space in mail queue: {free * size} bytes < "
                    f"1.5*message size limit")
        return None

    def new_submission(self):
        """Where an accepted message goes: through cleanup into incoming/,
        or for sendmail -bs into maildrop/."""
        if self.stand_alone_uid is not None:
            return MaildropSubmission(self.store, self.stand_alone_uid)
        return Injection(self.cleanup, self.store)

    async def serve_streams(self, reader, writer, addr: str, port: str) -> None:
        session = Session(self, reader, writer, addr, port)
        try:
            await session.run()
        finally:
            await session.close()

    # -- per-client facts -------------------------------------------------------------------

    async def client_names(self, addr: str) -> tuple[str, int, str, int]:
        if not self.peername_lookup or self.dns is None:
            return "unknown", 5, "unknown", 5
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.dns.client_hostname, addr),
                                          self.timeout)
        except (asyncio.TimeoutError, Exception):
            return "unknown", 4, "unknown", 4

    def auth_mechanisms(self, facts: ClientFacts) -> list[str]:
        """The AUTH mechanisms this client is offered: none before TLS with
        smtpd_tls_auth_only or under encrypt, none for
        smtpd_sasl_exceptions_networks."""
        if self.sasl is None:
            return []
        tls_active = bool(facts.tls_active)
        if not tls_active and (self.tls.auth_only or self.tls.level == "encrypt"):
            return []
        try:
            if self.sasl_exceptions.match(facts.name, facts.addr):
                return []
        except TableRetry:
            return []
        return self.sasl.mechanisms(tls_active=tls_active)

    def ehlo_keywords(self, facts: ClientFacts) -> tuple[list[str], set[str]]:
        """The EHLO reply's keywords, in Postfix's order, less those
        smtpd_discard_ehlo_keywords and the client's entry in
        smtpd_discard_ehlo_keyword_address_maps discard."""
        discard = set(self.discard_keywords)
        if self.discard_maps is not None:
            try:
                found = self.discard_maps.get(facts.addr)
            except TableRetry:
                found = None
            if found:
                discard |= {k.lower() for k in found.replace(",", " ").split()}
        size = f"SIZE {self.size_limit}" if self.size_limit else "SIZE"
        words = ["PIPELINING", size]
        if not self.limits.disable_vrfy:
            words.append("VRFY")
        words.append("ETRN")
        if self.tls.context is not None and not facts.tls_active:
            words.append("STARTTLS")
        mechs = self.auth_mechanisms(facts)
        if mechs:
            words.append("AUTH " + " ".join(mechs))
            if self.broken_auth_clients:
                words.append("AUTH=" + " ".join(mechs))
        if self.authorized(self.xclient_hosts, facts):
            words.append("XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR "
                         "DESTPORT")
        if self.authorized(self.xforward_hosts, facts):
            words.append("XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT")
        words += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if self.limits.smtputf8_enable:
            words.append("SMTPUTF8")
        words.append("CHUNKING")
        return [w for w in words if w.split()[0].split("=")[0].lower() not in discard], discard


    @staticmethod
    def authorized(hosts, facts: ClientFacts) -> bool:
        try:
            return hosts.match(facts.name, facts.addr)
        except TableRetry:
            return False


class Session(TlsAuth, MessageIntake, CommandHandlers):
    """One SMTP session (STARTTLS, smtps and AUTH: :class:`TlsAuth`)."""

    def __init__(self, server: SessionServer, reader: asyncio.StreamReader | None,
                 writer: asyncio.StreamWriter | None, addr: str, port: str, *,
                 sock: socket.socket | None = None):
        self.server = server
        self.sock = sock  # wrapper mode: the socket, until the handshake
        self.log = server.log
        self.reader = reader
        self.writer = writer
        self.facts = ClientFacts(name="unknown", reverse_name="unknown", addr=addr, port=port,
                                 stress=server.stress)  # policy servers see "stress=yes"
        enforce_tls = server.tls.level == "encrypt" and not server.tls.wrapper
        bare_ok = bool(server.bare_newline_exclusions
                       and server.bare_newline_exclusions.match("", addr))
        self.conn = P.ServerConnection(_session_limits(server.limits, enforce_tls, bare_ok),
                                       hostname=server.hostname)
        self.checks = server.checks.session(self.facts)
        self.denied: P.Reply | None = None
        self.xforward: dict[str, str] = {}
        self.where: str | None = None  # overrides the core's last command in log lines
        self.pipelining_logged = False  # "improper command pipelining" is logged once
        self.tls: TlsFacts | None = None
        self.handshake_failed = False
        self.exchange = None  # the SASL exchange in progress
        self.auth_mechanism = ""
        self.auth_final = False  # Success data sent; waiting for the client's empty line
        self.anvil: SessionLimits | None = None
        self.milters: SessionMilters | None = None
        self.transactions = 0  # MAIL commands accepted: the policy "instance" sequence
        # the wait for the client in progress (see _waiting)
        self.wait_began = 0.0
        self.wait_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._task: asyncio.Task | None = None
        self._timed_out = False
        self._new_transaction()

    def _new_transaction(self) -> None:
        f = self.facts  # what policy servers see of the transaction (Postfix's mail_reset)
        f.instance, f.queue_id, f.sasl_sender = "", "", None
        self.mail: P.MailFrom | None = None
        self.sender = ""
        self.recipients: list[Recipient] = []
        self.injection: Injection | None = None
        self.started = False
        self.failed: P.Reply | None = None

    # -- names -----------------------------------------------------------------------------------

    @property
    def client(self) -> str:
        f = self.facts
        text = f"{f.name}[{f.addr}]"
        return f"{text}:{f.port}" if self.server.port_logging and f.port else text

    @property
    def protocol(self) -> str:
        f = self.facts
        proto = "ESMTP" if self.conn.esmtp else "SMTP"
        if getattr(f, "tls_active", False) and proto == "ESMTP":
            proto += "S"
        if getattr(f, "sasl_username", None) and proto.startswith("ESMTP"):
            proto += "A"
        return proto

    def _where(self) -> str:
        return self.where or self.conn.last_command or "CONNECT"

    # -- the session --------------------------------------------------------------------------

    async def run(self) -> None:
        srv = self.server
        f = self.facts
        name, status, rname, rstatus = await srv.client_names(f.addr)
        # Postfix's peer codes: 2 ok, 4 temporary, 5 none, 6 forged.
        f.name, f.name_status = name, 0 if status == 2 else status
        f.reverse_name, f.reverse_name_status = rname, 0 if rstatus == 2 else rstatus
        self.log.info(f"connect from {self.client}")
        if srv.anvil is not None:
            exempt = srv.anvil.exempt(f.name, f.addr) or srv.authorized(srv.xclient_hosts, f)
            self.anvil = srv.anvil.session(f.addr, self.client, exempt)
        if self.sock is not None:
            if not await self._accept_tls():
                self.log.info(f"lost connection after CONNECT from {self.client}")
                self.log.info(f"disconnect from {self.client}{self._counters()}")
                return
            self.conn.tls_active = True
            refused = await self._newtls_refused()
            if refused is not None:
                await self._refuse_session(refused)
                return
        refused = await self.anvil.connect() if self.anvil is not None else None
        if refused is not None:
            await self._refuse_session(refused)
            return
        greeting = P.Reply(220, "", srv.banner)
        if not srv.delay_reject:
            decision = await self._check(self.checks.connect)
            if decision is not None and decision.reply is not None:
                self.denied = decision.reply
                greeting = decision.reply
        if srv.milters is not None and self.denied is None:
            greeting = await self._milter_connect(greeting)
        self.conn.greet(greeting)
        reason = ""
        try:
            reason = await self._loop()
        except (ConnectionError, OSError):
            reason = "lost"
        except asyncio.CancelledError:
            reason = "lost"
            raise
        except Exception:
            self.log.exception(f"{self._qid_or_noqueue()}: unexpected error in session "
                               f"with {self.client}")
            self._send_now(INTERNAL_ERROR)
            reason = "error"
        finally:
            self._abort_transaction()
            if reason == "lost":
                self.log.info(f"lost connection after {self._where()} from {self.client}")
            elif reason == "timeout":
                self.log.info(f"timeout after {self._where()} from {self.client}")
            elif reason == "errors":
                self.log.info(f"too many errors after {self._where()} from {self.client}")
            self.log.info(f"disconnect from {self.client}{self._counters()}")

    async def _milter_connect(self, greeting: P.Reply) -> P.Reply:
        """The milters' CONNECT event. A 5xx makes the greeting a 554 and
        the milter refuses what follows (not HELO/EHLO); a 421 ends the
        session after the greeting."""
        self.milters = self.server.milters.session(self)
        if self.milters is None:
            return greeting
        out = await self.milters.connect()
        if out.reply is not None and out.reply.code // 100 == 5:
            self.conn.error_count += 1
            return P.Reply(554, "", f"{self.server.hostname} ESMTP not accepting connections")
        if out.reply is not None and out.reply.code == 421:
            return P.Reply(421, "", f"{self.server.hostname} Service unavailable - try again "
                                    f"later")
        return greeting

    def whatsup(self, recipient: str | None = None) -> str:
        """Postfix's smtpd_whatsup(): `` from=<s> to=<r> proto=P helo=<h>``."""
        out = ""
        if self.mail is not None or self.sender:
            out += f" from=<{A.log_form(self.sender, self.server.external)}>"
        if recipient is None and self.recipients:
            recipient = self.recipients[-1].address
        if recipient is not None:
            out += f" to=<{A.log_form(recipient, self.server.external)}>"
        out += f" proto={self.protocol}"
        if self.facts.helo_name:
            out += f" helo=<{self.facts.helo_name}>"
        return out

    async def _refuse_session(self, reply: P.Reply) -> None:
        """End the session before it starts (anvil's limits), as Postfix:
        the reply, then ``disconnect from``."""
        self._send_now(reply)
        try:
            await asyncio.wait_for(self.writer.drain(), self.server.timeout)
        except (OSError, asyncio.TimeoutError):
            pass
        self.log.info(f"disconnect from {self.client}{self._counters()}")

    def _counters(self) -> str:
        counts = {k: list(v) for k, v in self.conn.counts.items()}
        if self.started and self.conn.last_command in ("DATA", "BDAT"):
            # cut short inside the message: Postfix counts the command as tried
            counts.setdefault(self.conn.last_command.lower(), [0, 0])[1] += 1
        parts: list[str] = []
        ok_total = all_total = 0
        for name in COUNTER_ORDER:
            if name not in counts:
                continue
            ok, total = counts[name]
            if not total:
                continue
            ok_total += ok
            all_total += total
            parts.append(f"{name}={ok}" if ok == total else f"{name}={ok}/{total}")
        if not parts:
            return " commands=0/0"  # as Postfix 3.7 logs a session without commands
        cmds = f"commands={ok_total}" if ok_total == all_total else \
            f"commands={ok_total}/{all_total}"
        return " " + " ".join(parts + [cmds])

    def _send_now(self, reply: P.Reply) -> None:
        try:
            self.writer.write(reply.render())
        except Exception:
            pass

    async def _flush(self) -> None:
        out = self.conn.data_to_send()
        if not out:
            return
        if self.conn.error_count >= self.server.soft_error_limit and out[:1] in b"45" \
                and self.server.error_sleep:
            await asyncio.sleep(self.server.error_sleep)
        writer = self.writer
        writer.write(out)
        transport = getattr(writer, "transport", None)  # (sendmail -bs writes to a pipe)
        if transport is not None and not transport.get_write_buffer_size():
            return  # all sent: nothing to wait for (the usual case)
        # A timeout raises TimeoutError (an OSError): the connection is lost.
        self.wait_began = asyncio.get_running_loop().time()
        await self._waiting(writer.drain(), self.wait_began + self.server.timeout)

    async def _read(self) -> bytes | None:
        """Bytes from the client; b"" at EOF; None on timeout. With
        smtpd_per_request_deadline the time limit is for the whole request
        (a slow-drip client is cut off at smtpd_timeout), extended while
        message content arrives by one second per smtpd_min_data_rate bytes.
        The wait is watched by the session's timer, which set_stress() may
        bring forward."""
        srv = self.server
        wait = srv.timeout
        if srv.per_request_deadline:
            wait = max(0.0, self.deadline - time.monotonic())
            if wait <= 0:
                return None
        self.wait_began = asyncio.get_running_loop().time()
        try:
            data = await self._waiting(self.reader.read(READ_SIZE), self.wait_began + wait)
        except TimeoutError:
            return None
        if srv.per_request_deadline and self.conn.last_command in ("DATA", "BDAT"):
            self.deadline += len(data) / srv.min_data_rate
        return data

    # -- the session's timer -------------------------------------------------------------
    #
    # One timer per session instead of one per read or write: the timer is
    # armed at the deadline of the wait in progress and, when it fires
    # before a later wait's deadline, moves itself there. A session waiting
    # for its client (seconds to minutes) costs no timer work per command.

    async def _waiting(self, awaitable, deadline: float):
        """Await *awaitable*; TimeoutError once the loop's clock passes
        *deadline* (loop time) first."""
        self.wait_deadline = deadline
        self._task = asyncio.current_task()
        if self._timer is None or self._timer_at > deadline:
            self._arm(deadline)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self._timed_out:
                self._timed_out = False
                task = asyncio.current_task()
                if task is not None and task.uncancel() == 0:
                    raise TimeoutError from None
            raise
        finally:
            self.wait_deadline = None

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = when
        self._timer = loop.call_at(when, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        deadline = self.wait_deadline
        if deadline is None:
            return  # not waiting: the next wait arms the timer again
        if asyncio.get_running_loop().time() < deadline:
            self._arm(deadline)
            return
        if self._task is not None and not self._task.done():
            self._timed_out = True
            self._task.cancel()

    def shorten_wait(self, timeout: float) -> None:
        """Cut the wait in progress to *timeout* seconds from when it began
        (stress mode: never lengthened)."""
        if self.wait_deadline is None or self._timed_out:
            return
        cut = self.wait_began + timeout
        if cut < self.wait_deadline:
            self.wait_deadline = cut
            if self._timer is None or self._timer_at > cut:
                self._arm(cut)

    async def _loop(self) -> str:
        srv = self.server
        srv.live.add(self)  # from here on set_stress() reaches this session
        try:
            return await self._commands()
        finally:
            srv.live.discard(self)

    async def _commands(self) -> str:
        conn, srv = self.conn, self.server
        # The limits that stress mode changes may have changed since the
        # session was made.
        lim = srv.limits
        if (conn.limits.hard_error_limit != lim.hard_error_limit
                or conn.limits.junk_command_limit != lim.junk_command_limit):
            conn.limits = dataclasses.replace(conn.limits,
                                              hard_error_limit=lim.hard_error_limit,
                                              junk_command_limit=lim.junk_command_limit)
        self.request_began = time.monotonic()
        self.deadline = self.request_began + srv.timeout
        while True:
            ev = conn.next_event()
            if ev is P.NEED_DATA:
                await self._flush()
                if conn.closed:
                    return "errors" if conn.error_count >= conn.limits.hard_error_limit else ""
                data = await self._read()
                if data is None:
                    self._send_now(P.Reply(421, "4.4.2",
                                           f"{self.server.hostname} Error: timeout exceeded"))
                    return "timeout"
                conn.receive_data(data)
                if not data:
                    # EOF: let the core report what was cut short
                    continue
                continue
            if ev is P.PAUSED:  # pragma: no cover - every pausing event is answered below
                raise RuntimeError("smtpd core paused without an answer")
            if not isinstance(ev, P.MessageData):
                self.request_began = time.monotonic()
                self.deadline = self.request_began + self.server.timeout
            if isinstance(ev, P.Closed):
                await self._flush()
                if ev.reason == P.REASON_EOF:
                    return "lost"
                if ev.reason == P.REASON_ERRORS:
                    return "errors"
                return ""
            try:
                await self._event(ev)
            except SessionEnd as end:
                return end.reason

    # -- events ----------------------------------------------------------------------------

    async def _event(self, ev: P.Event) -> None:
        conn = self.conn
        if ev.long_line is not None:
            self._log_long_line(*ev.long_line)
        if conn.improper_pipelining is not None and not self.pipelining_logged:
            self.pipelining_logged = True
            verb, pending = conn.improper_pipelining
            self.log.info(f"improper command pipelining after {verb} from {self.client}: "
                          f"{escape(pending)}")
        if not isinstance(ev, (P.MessageData, P.MessageEnd, P.BdatChunk)):
            self.where = None
        if self.denied is not None and isinstance(ev, (P.Helo, P.MailFrom, P.RcptTo,
                                                       P.DataCommand, P.Vrfy, P.Etrn,
                                                       P.UnknownCommand)):
            conn.reject(P.Reply(503, "5.7.0", f"Error: access denied for {self.client}"))
            return
        handler = _HANDLERS.get(type(ev))
        if handler is not None:
            await handler(self, ev)
        elif isinstance(ev, P.StartTls):
            await self._starttls()
        elif isinstance(ev, P.Auth):
            await self._auth(ev)
        elif isinstance(ev, P.AuthResponse):
            await self._auth_response(ev)
        elif isinstance(ev, P.ProtocolError):
            self._protocol_error(ev)
        elif isinstance(ev, P.Simple):
            if ev.verb in ("RSET", "HELO", "EHLO"):
                self._abort_transaction()
                self._new_transaction()
                self.checks.reset()
                if self.milters is not None:
                    await self.milters.abort()

    async def close(self) -> None:
        """Close the connection. After a failed TLS handshake the stream's
        protocol is no longer the transport's, so nothing waits for it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.anvil is not None:
            self.anvil.disconnect()
        if self.milters is not None:
            try:
                if self.facts.helo_name is not None:
                    await self.milters.helo_reset()
                await self.milters.close()
            except Exception:  # noqa: BLE001 - the session is over either way
                pass
        if self.writer is None:
            if self.sock is not None:
                self.sock.close()
            return
        try:
            self.writer.close()
        except Exception:
            return
        if self.handshake_failed:
            return
        transport = getattr(self.writer, "transport", None)
        if self.tls is None and transport is not None \
                and transport.get_extra_info("sslcontext") is None \
                and not transport.get_write_buffer_size():
            return  # all sent, no TLS close_notify to wait for: closed at once
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass

    def _log_long_line(self, limit: int, line: bytes) -> None:
        """Postfix's smtpd_chat_query(): ``request longer than LIMIT: %.30s...``
        of the cut line made printable()."""
        text = printable(line.split(b"\0", 1)[0].decode("utf-8", "surrogateescape"),
                         self.conn.limits.smtputf8_enable)
        start = text.encode("utf-8")[:30].decode("utf-8", "ignore")
        self.log.warning(f"{self.client}: request longer than {limit}: {start}...")

    def _protocol_error(self, ev: P.ProtocolError) -> None:
        if ev.reply is not None and ev.reply.code == 221 and ev.verb:
            # Postfix: "non-SMTP command from %s: %.100s", the line as typed
            self.log.warning(f"non-SMTP command from {self.client}: {escape(ev.line[:100])}")
        elif ev.reply is not None and ev.reply.code == self.conn.limits.bare_newline_reject_code \
                and "bare <LF>" in ev.reply.text:
            self._log_whatsup("reject", self._where(), "bare <LF> received")

    def _log_whatsup(self, action: str, stage: str, text: str) -> None:
        """Postfix's log_whatsup(): ``QID: reject: EHLO from host[addr]: text;
        from=<s> to=<r> proto=ESMTP helo=<h>`` (from/to/helo when known)."""
        parts = [f"{self._qid_or_noqueue()}: {action}: {stage} from {self.client}: {text};"]
        if self.mail is not None:
            parts.append(f"from=<{A.log_form(self.sender, self.server.external)}>")
        if self.recipients:
            parts.append(f"to=<{A.log_form(self.recipients[-1].address, self.server.external)}>")
        parts.append(f"proto={self.protocol}")
        if self.facts.helo_name:
            parts.append(f"helo=<{self.facts.helo_name}>")
        self.log.info(" ".join(parts))

    async def _check(self, fn, *args):
        """Run one restriction stage; a failure is a 4xx, never a crash."""
        try:
            if self.checks.may_block:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(self.server.check_threads(), fn, *args)
            return fn(*args)
        except TableRetry as err:
            self.log.warning(f"{self.client}: {err}")
            return _Refusal(P.Reply(451, "4.3.0", "Temporary lookup failure"))
        except Exception:
            self.log.exception(f"{self.client}: restriction check failed")
            return _Refusal(P.Reply(451, "4.3.5", "Server configuration problem"))

    def _qid_or_noqueue(self) -> str:
        return self.injection.queue_id if self.injection is not None else "NOQUEUE"

    def _log_decision(self, decision) -> None:
        qid = self.injection.queue_id if self.injection is not None else ""
        for entry in decision.logs:
            if entry.action == "warning":
                self.log.warning(entry.text)
            else:
                self.log.info(entry.format(decision.stage, self.client, queue_id=qid,
                                           protocol=self.protocol,
                                           external=self.server.external))

    async def _decide(self, fn, stage: str, *args, rcpt: str | None = None) -> P.Reply | None:
        decision = await self._check(fn, *args)
        if decision is None:
            return None
        if isinstance(decision, _Refusal):
            r = decision.reply
            self.log.info(f"{self._qid_or_noqueue()}: reject: {stage} from {self.client}: "
                          f"{r.code} {r.dsn} {r.text}; "
                          f"from=<{A.log_form(self.sender, self.server.external)}>"
                          + (f" to=<{A.log_form(rcpt, self.server.external)}>"
                             if rcpt is not None else "")
                          + f" proto={self.protocol}"
                          + (f" helo=<{self.facts.helo_name}>" if self.facts.helo_name else ""))
            return r
        self._log_decision(decision)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        return decision.reply

class _NoChecks:
    """The restrictions of a stand-alone session (sendmail -bs): none, as
    for any local submission."""

    may_block = False

    def __init__(self) -> None:
        from ..policy.smtpd_check import MessageActions

        self.actions = MessageActions()

    def session(self, facts: ClientFacts) -> _NoChecks:
        return self

    def connect(self, *args):
        return None

    helo = mail = rcpt = data = end_of_data = etrn = vrfy = connect

    def reset(self) -> None:
        pass

    def in_mynetworks(self) -> bool:
        return True


def _server_address(sock: socket.socket, addr: str | None,
                    port: str | None) -> tuple[str, str]:
    """The server side of a client connection (Postfix's dest_addr and
    dest_port): as postscreen saw it, or the socket's own address."""
    if addr:
        return addr, port or "0"
    try:
        local = sock.getsockname()
    except OSError:
        return "", ""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return "127.0.0.1", "0"
    host = str(local[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, str(local[1])


@dataclasses.dataclass
class _Refusal:
    reply: P.Reply


_HANDLERS = {
    P.Helo: Session._helo,
    P.MailFrom: Session._mail,
    P.RcptTo: Session._rcpt,
    P.DataCommand: Session._data,
    P.MessageData: Session._message_data,
    P.MessageEnd: Session._message_end,
    P.BdatChunk: Session._bdat_chunk,
    P.Vrfy: Session._vrfy,
    P.Etrn: Session._etrn,
    P.Xclient: Session._xclient,
    P.Xforward: Session._xforward,
    P.UnknownCommand: Session._unknown,
}

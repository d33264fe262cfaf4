"""What one smtpd worker shares between its SMTP sessions
(:class:`SessionServer`): settings read, tables opened, the queue, the
commit batcher, the accept loop and the hand-off from postscreen. Each
connection becomes a :class:`hato.io.smtpd_session.Session`. The smtpd
service (:mod:`hato.services.smtpd`) owns one per worker; ``sendmail -bs``
and the tests drive sessions in-process through the same class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ..config.settings import Settings
from ..io.tls import tls_policy
from ..policy.hostlist import host_list
from ..policy.rewrite import open_maps
from ..policy.smtpd_check import ClientFacts, SmtpdChecks
from ..proto import smtpd as P
from ..queue.cleanup import Cleanup
from ..queue.inject import Injection, commit_together
from ..queue.store import QueueStore
from ..queue.submit import MaildropSubmission
from ..tables.base import TableRetry
from .batch import Batcher, Failed
from .fdreserve import OUT_OF_DESCRIPTORS, SpareDescriptor
from .handoff import HandoffError, receive_client
from .mailbox_quota_client import MailboxQuotaQuery
from .policy_client import PolicyClient
from .smtpd_anvil import ClientLimits
from .smtpd_milter import MilterSetup
from .smtpd_session import Session
from .smtpd_tlsauth import READ_SIZE
from .verify_client import VerifyQuery


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
        inet = sock.family in (socket.AF_INET, socket.AF_INET6)
        if inet:
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
        session.facts.server_addr, session.facts.server_port = _server_address(sock, inet,
                                                                                *server)
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


def _server_address(sock: socket.socket, inet: bool, addr: str | None,
                    port: str | None) -> tuple[str, str]:
    """The server side of a client connection (Postfix's dest_addr and
    dest_port): as postscreen saw it, or the socket's own address."""
    if addr:
        return addr, port or "0"
    try:
        local = sock.getsockname()
    except OSError:
        return "", ""
    if not inet:
        return "127.0.0.1", "0"
    host = str(local[0])
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, str(local[1])

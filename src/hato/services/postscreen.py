"""postscreen: the zombie filter in front of smtpd, as postscreen(8).

One postscreen process per instance (master.cf ``smtp inet n - n - 1
postscreen``) accepts every connection of the port and decides, before any
smtpd is involved, whether the client looks like a real mail server:

1. ``CONNECT from [addr]:port to [addr]:port``. Over
   postscreen_client_connection_count_limit connections from the client,
   ``421 4.7.0 Error: too many connections from ADDR``; over
   postscreen_pre_queue_limit connections in postscreen, ``421 4.3.2 All
   screening ports are busy``.
2. **Permanent list** (postscreen_access_list, :mod:`hato.policy.postscreen_access`):
   ``ALLOWLISTED [addr]:port`` → straight to smtpd; ``DENYLISTED`` → the
   (``WHITELISTED``/``BLACKLISTED`` with ``respectful_logging = no``, as
   below compatibility_level 3.6)
   postscreen_denylist_action: drop (``521 5.3.2 Service currently
   unavailable``), enforce (postscreen's SMTP engine rejects every RCPT with
   ``550 5.3.2 Service currently unavailable``) or ignore.
3. **Cache**: a client that passed every enabled test recently is ``PASS
   OLD`` → smtpd (only on postscreen_allowlist_interfaces).
4. **Pre-greet test**: postscreen sends the first line of a multi-line
   greeting (``220-`` postscreen_greet_banner) and waits
   postscreen_greet_wait; a client that talks first is logged ``PREGREET N
   after T from [addr]:port: TEXT`` and met with postscreen_greet_action
   (drop: ``521 5.5.1 Protocol error``; enforce: ``550 5.5.1 Protocol
   error`` for every RCPT). Meanwhile the DNSBL lookups run
   (postscreen_dnsbl_sites, weighted; ``DNSBL rank N for [addr]:port`` at
   or over postscreen_dnsbl_threshold, then postscreen_dnsbl_action).
5. A client that passed is ``PASS NEW [addr]:port`` and handed to smtpd at
   once over the ``pass`` service (``smtpd pass - - n - - smtpd``,
   :mod:`hato.io.handoff`): smtpd sends the last greeting line. With deep
   protocol tests enabled the client talks to postscreen's SMTP engine
   instead, and passes only when it comes back.

Clients that are not handed over end with ``DISCONNECT [addr]:port``; one
that leaves during the tests with ``HANGUP after T from [addr]:port in
tests before SMTP handshake``.

Stress: when postscreen holds 90% of postscreen_pre_queue_limit
connections it logs ``entering STRESS mode with N connections`` and uses
the stress values (postscreen_greet_wait, postscreen_command_time_limit)
until it is down to 70% (``leaving STRESS mode with N connections``).

Parameters: postscreen_access_list, postscreen_denylist_action
(postscreen_blacklist_action), postscreen_allowlist_interfaces,
postscreen_greet_action, postscreen_greet_banner, postscreen_greet_wait,
postscreen_greet_ttl, postscreen_dnsbl_*, postscreen_pipelining_*,
postscreen_non_smtp_command_*, postscreen_bare_newline_*,
postscreen_forbidden_commands, postscreen_command_count_limit,
postscreen_command_time_limit, postscreen_cache_map,
postscreen_cache_retention_time, postscreen_cache_cleanup_interval,
postscreen_pre_queue_limit, postscreen_post_queue_limit,
postscreen_client_connection_count_limit,
postscreen_upstream_proxy_protocol, postscreen_upstream_proxy_timeout,
smtpd_service_name, hato_postscreen_cache, hato_dns_servers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from ..delivery.request import format_delay
from ..io.handoff import HandoffError, pass_client
from ..io.postscreen_cache import PostscreenCache, enabled_tests, fixed_ttls
from ..io.postscreen_tls import Channel, TlsHandshakeError
from ..policy.address import log_form
from ..policy.hostlist import host_list
from ..policy.postscreen_access import DUNNO, PERMIT, PostscreenAccess
from ..policy.postscreen_cache_entry import CacheEntry, PscTest
from ..proto import smtpd as P
from ..proto.attr import Attrs
from ..proto.escape import escape

READ_SIZE = 4096
DEEP_TESTS = frozenset({PscTest.PIPELINING, PscTest.NON_SMTP, PscTest.BARE_NEWLINE})
STRESS_HIGH, STRESS_LOW = 0.9, 0.7


def escape_prefix(data: bytes, limit: int = 100) -> str:
    """The first bytes a client sent, as Postfix logs them (``EHLO x\\r\\n``)."""
    return escape(data[:limit])


def client_label(addr: str, port: str) -> str:
    return f"[{addr}]:{port}"


class Postscreen:
    def __init__(self, ctx):
        s = self.settings = ctx.settings
        self.stress_settings = getattr(ctx, "stress_settings", None) or s
        self.log = ctx.log
        mynetworks = host_list(s, "mynetworks")
        from ..policy.rewrite import open_maps

        def open_one(spec: str):  # each table with open_maps' error handling
            return open_maps(s.with_values({"postscreen_access_list": spec}),
                             "postscreen_access_list")

        self.access = PostscreenAccess(
            [i for i in s.list("postscreen_access_list")],
            in_mynetworks=lambda a: mynetworks.match("", a),
            open_table=open_one, warn=self.log.warning)
        self.deny_action = s.str("postscreen_denylist_action").lower()
        # respectful_logging (yes from compatibility_level 3.6): the words
        respectful = s.bool("respectful_logging")
        self.allowlisted = "ALLOWLISTED" if respectful else "WHITELISTED"
        self.denylisted = "DENYLISTED" if respectful else "BLACKLISTED"
        self.allowlist_interfaces = host_list(s, "postscreen_allowlist_interfaces")
        self.greet_action = s.str("postscreen_greet_action").lower()
        self.greet_banner = s.str("postscreen_greet_banner")
        self.greet_ttl = float(s.time("postscreen_greet_ttl"))
        self.hostname = s.str("myhostname")
        self.external = s.str("info_log_address_format").lower() != "internal"
        self.smtpd_path = os.path.join(s.str("queue_directory"), "private",
                                       s.str("smtpd_service_name"))
        self.pre_queue_limit = s.int("postscreen_pre_queue_limit")
        self.post_queue_limit = s.int("postscreen_post_queue_limit")
        self.count_limit = s.int("postscreen_client_connection_count_limit")
        self._dnsbl_setup(s)
        self.proxy_protocol = s.str("postscreen_upstream_proxy_protocol").lower() == "haproxy"
        # STARTTLS in the engine: smtpd's keys and settings at postscreen's
        # level, loaded while the worker was still root (pre_jail_init)
        prepared = getattr(ctx, "prepared", None)
        if prepared is None:
            prepared = _tls_policy(s)
        if isinstance(prepared, Exception):
            raise prepared
        self.tls = prepared
        self.starttls_timeout = float(s.time("smtpd_starttls_timeout"))
        self.proxy_timeout = float(s.time("postscreen_upstream_proxy_timeout"))
        self.counts: Counter = Counter()
        self.active = 0  # connections in postscreen
        self.handing = 0  # clients being handed to smtpd
        self.sessions: set[asyncio.Task] = set()  # sessions in progress
        self.stressed = False
        self.cache = PostscreenCache(s, self.log)
        # The cache is not thread-safe (one LMDB environment opened without
        # locks: two write transactions at once fail, a read during a write
        # may crash the process): every call to it runs on this one thread.
        self._cache_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache")
        self._cache_closed = False
        self.enabled = enabled_tests(s)
        self.ttls = fixed_ttls(s)
        self._timing(s)

    def _dnsbl_setup(self, s) -> None:
        """postscreen_dnsbl_sites, scored by :class:`hato.io.postscreen_dnsbl.DnsblScorer`."""
        from ..io.postscreen_dnsbl import DnsblScorer, TtlResolver
        from ..policy.postscreen_dnsbl import parse_sites
        from ..policy.rewrite import open_maps

        self.dnsbl = None
        sites = parse_sites(s.list("postscreen_dnsbl_sites"))
        self.dnsbl_action = s.str("postscreen_dnsbl_action").lower()
        self.dnsbl_threshold = s.int("postscreen_dnsbl_threshold")
        self.dnsbl_allow_threshold = s.int("postscreen_dnsbl_allowlist_threshold")
        self.dnsbl_reply_map = open_maps(s, "postscreen_dnsbl_reply_map")
        if sites:
            timeout = float(s.time("postscreen_dnsbl_timeout"))
            self.dnsbl = DnsblScorer(
                sites, TtlResolver.from_settings(s, timeout=timeout),
                min_ttl=int(s.time("postscreen_dnsbl_min_ttl")),
                max_ttl=int(s.time("postscreen_dnsbl_max_ttl")), timeout=timeout,
                info=self.log.info, warn=self.log.warning)

    def _timing(self, s) -> None:
        self.greet_wait = float(s.time("postscreen_greet_wait"))
        self.command_time_limit = float(s.time("postscreen_command_time_limit"))

    # -- cache ----------------------------------------------------------------------------

    async def _cache(self, fn, *args):
        """*fn*(*args*) on the cache's own thread (None once it is closed)."""
        if self._cache_closed:
            return None
        return await asyncio.get_running_loop().run_in_executor(self._cache_thread, fn, *args)

    async def run_cache_cleanup(self, stop: asyncio.Event) -> None:
        """The cache's clean-up passes, on the cache's thread."""
        await self.cache.run_cleanup(stop, run=self._cache)

    async def close_cache(self) -> None:
        await self._cache(self.cache.close)
        self._cache_closed = True
        self._cache_thread.shutdown(wait=True)

    # -- stress ---------------------------------------------------------------------------

    def _load_changed(self) -> None:
        limit = self.pre_queue_limit
        if not limit:
            return
        if not self.stressed and self.active >= int(STRESS_HIGH * limit):
            self.stressed = True
            self._timing(self.stress_settings)
            self.log.info(f"entering STRESS mode with {self.active} connections")
        elif self.stressed and self.active <= int(STRESS_LOW * limit):
            self.stressed = False
            self._timing(self.settings)
            self.log.info(f"leaving STRESS mode with {self.active} connections")

    # -- connections ----------------------------------------------------------------------

    async def accept_loop(self, listener: socket.socket, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                sock, _ = await loop.sock_accept(listener)
            except OSError as err:
                self.log.warning(f"accept: {err.strerror or err}")
                await asyncio.sleep(0.1)
                continue
            task = loop.create_task(self.session(sock))
            self.sessions.add(task)  # a reference: the loop keeps weak ones only
            task.add_done_callback(self.sessions.discard)

    async def session(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            peer, local = sock.getpeername(), sock.getsockname()
        except OSError:
            sock.close()
            return
        addr, port = _addr(peer[0]), str(peer[1])
        saddr, sport = _addr(local[0]), str(local[1])
        early = b""
        if self.proxy_protocol:
            proxied = await self._read_proxy(sock)
            if proxied is None:
                sock.close()
                return
            header, early = proxied
            if header.command == "PROXY" and header.client_addr:
                addr, port = header.client_addr, str(header.client_port)
                saddr, sport = header.server_addr or saddr, str(header.server_port or sport)
        who = client_label(addr, port)
        self.log.info(f"CONNECT from {who} to {client_label(saddr, sport)}")
        self.active += 1
        self.counts[addr] += 1
        self._load_changed()
        passed = False
        try:
            passed = await self._screen(sock, addr, port, saddr, sport, who, early)
        except (ConnectionError, OSError):
            pass
        except Exception:
            self.log.exception(f"postscreen: unexpected error with {who}")
        finally:
            self.active -= 1
            self.counts[addr] -= 1
            if not self.counts[addr]:
                del self.counts[addr]
            self._load_changed()
            if not passed:
                self.log.info(f"DISCONNECT {who}")
            sock.close()

    async def _send(self, sock: socket.socket, text: str) -> None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(10):
            await loop.sock_sendall(sock, text.encode())

    async def _read_proxy(self, sock: socket.socket):
        """postscreen_upstream_proxy_protocol = haproxy: the header (v1 or
        v2) within postscreen_upstream_proxy_timeout, and b"" (what
        follows it stays in the socket); None (logged as Postfix does)
        when there is none."""
        from ..proto.proxy_protocol import EOF_TEXT, TIMEOUT_TEXT, ProxyError, ProxyReader, \
            log_escape

        reader = ProxyReader()
        deadline = time.monotonic() + self.proxy_timeout
        try:
            while (header := reader.header()) is None:
                # Peek, and take no byte past the header: the client's
                # first bytes (a pre-greeting, or what an allowlisted
                # client says to smtpd) stay in the socket, as in Postfix.
                await asyncio.wait_for(_readable(sock),
                                       max(0.0, deadline - time.monotonic()))
                try:
                    data = sock.recv(READ_SIZE, socket.MSG_PEEK)
                except BlockingIOError:
                    continue
                if not data:
                    self.log.warning(f"haproxy read: {EOF_TEXT}")
                    return None
                reader.receive_data(data)
                sock.recv(len(data) - len(reader.remaining()))
        except asyncio.TimeoutError:
            self.log.warning(f"haproxy read: {TIMEOUT_TEXT}")
            return None
        except ProxyError as err:
            self.log.warning(f"haproxy read: {err}: {log_escape(err.data)}")
            return None
        except OSError:
            return None
        return header, b""

    async def _screen(self, sock, addr, port, saddr, sport, who, early: bytes = b"") -> bool:
        """True when the client went on to smtpd."""
        if self.count_limit and self.counts[addr] > self.count_limit:
            self.log.info(f"NOQUEUE: reject: CONNECT from {who}: too many connections")
            await self._send(sock, f"421 4.7.0 Error: too many connections from {addr}\r\n")
            return False
        if self.pre_queue_limit and self.active > self.pre_queue_limit:
            self.log.info(f"NOQUEUE: reject: CONNECT from {who}: all screening ports busy")
            await self._send(sock, "421 4.3.2 All screening ports are busy\r\n")
            return False
        verdict = self.access.evaluate(addr)
        if verdict == PERMIT:
            self.log.info(f"{self.allowlisted} {who}")
            return await self._hand_off(sock, addr, port, saddr, sport)
        reject: P.Reply | None = None
        if verdict != DUNNO:
            self.log.info(f"{self.denylisted} {who}")
            if self.deny_action == "drop":
                await self._send(sock, "521 5.3.2 Service currently unavailable\r\n")
                return False
            if self.deny_action == "enforce":
                reject = P.Reply(550, "5.3.2", "Service currently unavailable")
        now = time.time()
        entry = await self._cache(self.cache.get, addr)
        earns = self.allowlist_interfaces.match("", saddr)  # may earn allowlist status here
        if reject is None and entry is not None and entry.valid_for(self.enabled, now) \
                and earns:
            self.log.info(f"PASS OLD {who}")
            return await self._hand_off(sock, addr, port, saddr, sport)
        entry = entry or CacheEntry.new()
        todo = entry.todo(self.enabled, now) if reject is None else self.enabled
        # The pre-greet test: the first greeting line, then silence; the
        # DNSBL lookups run meanwhile.
        loop = asyncio.get_running_loop()
        scoring = None
        if self.dnsbl is not None and PscTest.DNSBL in todo:
            scoring = loop.create_task(self.dnsbl.score(addr))
            # a client dropped before the score is needed leaves it unread
            scoring.add_done_callback(lambda t: t.cancelled() or t.exception())
        greet = PscTest.PREGREET in todo or scoring is not None
        if PscTest.PREGREET in todo and self.greet_banner:  # (DNSBL alone: a silent wait)
            await self._send(sock, f"220-{self.greet_banner}\r\n")
        started = time.monotonic()
        if greet and not early:
            # Peek: what a client says too early stays in the socket, for
            # smtpd after an "ignore" or for postscreen's engine (Postfix).
            deadline = started + self.greet_wait
            while True:
                try:
                    await asyncio.wait_for(_readable(sock),
                                           max(0.0, deadline - time.monotonic()))
                    early = sock.recv(READ_SIZE, socket.MSG_PEEK)
                except asyncio.TimeoutError:
                    # the wait is over: one last look, so that neither a
                    # hangup nor early talk goes unseen
                    try:
                        early = sock.recv(READ_SIZE, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        early = b""
                        break  # silent, as a polite client is
                except BlockingIOError:
                    continue  # a readiness report that was not for us
                if not early:
                    self.log.info(f"HANGUP after {format_delay(time.monotonic() - started)} "
                                  f"from {who} in tests before SMTP handshake")
                    return False
                break
        pregreeted = bool(early) and (PscTest.PREGREET in todo or reject is not None)
        # A test that fails with "ignore" is neither passed nor failed: no
        # PASS NEW, and it runs again next time. One that fails with
        # "enforce" or "drop" clears every pass the cache held (Postfix).
        ignored = failed = False
        if pregreeted:
            self.log.info(f"PREGREET {len(early)} after {format_delay(time.monotonic() - started)} "
                          f"from {who}: {escape_prefix(early)}")
            if self.greet_action == "drop":
                await self._forget(addr)
                await self._send(sock, "521 5.5.1 Protocol error\r\n")
                return False
            if self.greet_action == "enforce":
                failed = True
                reject = reject or P.Reply(550, "5.5.1", "Protocol error")
            else:
                ignored = True
        elif PscTest.PREGREET in todo:
            entry.update(PscTest.PREGREET, int(now + self.ttls[PscTest.PREGREET]))
        if scoring is not None:
            outcome = await self._dnsbl_outcome(sock, scoring, addr, port, who)
            if outcome == "drop":
                await self._forget(addr)
                return False
            if isinstance(outcome, P.Reply):
                failed = True
                reject = reject or outcome
            elif outcome is None:  # over the threshold, action ignore
                ignored = True
            elif isinstance(outcome, float):
                entry.update(PscTest.DNSBL, int(now + outcome))
            elif isinstance(outcome, tuple):
                # at or under postscreen_dnsbl_allowlist_threshold: a client
                # that failed nothing skips the other tests, which pass for
                # the DNSBL TTL (Postfix's psc_whitelist_non_dnsbl)
                until = int(now + outcome[1])
                entry.update(PscTest.DNSBL, until)
                if reject is None and not failed:
                    skipped = todo & DEEP_TESTS
                    for test in skipped:
                        entry.update(test, until)
                    todo = todo - skipped
        if failed:
            await self._forget(addr)
        deep = todo & DEEP_TESTS
        if reject is None:
            if earns:
                await self._cache(self.cache.put, addr, entry)
            if not deep:
                if not ignored:
                    self.log.info(f"PASS NEW {who}")
                return await self._hand_off(sock, addr, port, saddr, sport)
        # the engine reads what the client sent early itself (it was peeked)
        engine = await self._engine(sock, who, reject, b"", pregreeted,
                                    deep if reject is None else frozenset())
        if engine.close_reason == "eof":
            self.log.info(f"HANGUP after {format_delay(time.monotonic() - started)} from "
                          f"{who} in tests after SMTP handshake")
        if any(v.action in ("enforce", "drop") for v in engine.failed):
            await self._forget(addr)
        elif reject is None and deep and engine.deep_passed():
            # passed the deep tests: allowed in when it comes back
            self.log.info(f"PASS NEW {who}")
            if earns:
                for test in deep:
                    entry.update(test, int(time.time() + self.ttls[test]))
                await self._cache(self.cache.put, addr, entry)
        return False

    async def _forget(self, addr: str) -> None:
        """A test failed: the client's cached passes no longer count."""
        if await self._cache(self.cache.get, addr) is not None:
            await self._cache(self.cache.put, addr, CacheEntry.new())

    async def _dnsbl_outcome(self, sock, scoring: asyncio.Task, addr: str, port: str, who: str):
        """The DNSBL score, once the greet wait is over: "drop" (sent and
        logged), the enforce reply, the TTL of a pass, or ("allow", TTL) at
        or under the allowlist threshold."""
        from ..policy.postscreen_dnsbl import ALLOW, DENY, dnsbl_rank_log, dnsbl_reply, \
            reply_zone, verdict
        from ..tables.base import TableRetry

        result = await scoring
        found = verdict(result.score, self.dnsbl_threshold, self.dnsbl_allow_threshold)
        if found == ALLOW:
            return ("allow", float(result.ttl))
        if found != DENY:
            return float(result.ttl)
        self.log.info(dnsbl_rank_log(result.score, addr, port))
        if self.dnsbl_action == "ignore":
            return None
        try:
            lookup = self.dnsbl_reply_map.get if self.dnsbl_reply_map is not None else None
            zone = reply_zone(result.dnsbl_name or "", lookup)
        except TableRetry as err:
            self.log.warning(f"postscreen_dnsbl_reply_map: {err}")
            await self._send(sock, "421 4.3.0 Server configuration error\r\n")
            return "drop"
        if self.dnsbl_action == "drop":
            await self._send(sock, dnsbl_reply(addr, zone, 521) + "\r\n")
            return "drop"
        code, _, rest = dnsbl_reply(addr, zone, 550).partition(" ")
        dsn, _, text = rest.partition(" ")
        return P.Reply(int(code), dsn, text)

    async def _engine(self, sock, who, reject, early: bytes, pregreeted: bool,
                      deep: frozenset):
        """Talk to the client in postscreen's SMTP engine: with *reject*
        (enforce) every RCPT is refused with it; else the *deep* tests run
        and a client that passes them is told to come back (450). Returns
        the engine once the client is gone."""
        from ..proto.postscreen_smtp import EngineConfig, PostscreenSmtp, Verdict

        s = self.settings

        def action(test: PscTest, name: str) -> str:
            return s.str(name).lower() if test in deep else ""
        forbidden = s.list("postscreen_forbidden_commands")
        engine = PostscreenSmtp(
            EngineConfig(hostname=self.hostname, ehlo_keywords=tuple(self._ehlo_keywords()),
                         command_count_limit=s.int("postscreen_command_count_limit"),
                         pipelining=action(PscTest.PIPELINING, "postscreen_pipelining_action"),
                         non_smtp=action(PscTest.NON_SMTP, "postscreen_non_smtp_command_action"),
                         bare_newline=action(PscTest.BARE_NEWLINE,
                                             "postscreen_bare_newline_action"),
                         # the words; Postfix's default ends in a regexp table
                         # for commands that do not start with a letter
                         forbidden_commands=tuple(c.upper() for c in forbidden
                                                  if ":" not in c),
                         forbid_bogus_commands=any(":" in c for c in forbidden),
                         pipelining_action=s.str("postscreen_pipelining_action").lower(),
                         non_smtp_action=s.str("postscreen_non_smtp_command_action").lower(),
                         bare_newline_action=s.str("postscreen_bare_newline_action").lower(),
                         helo_required=s.bool("postscreen_helo_required"),
                         disable_vrfy=s.bool("postscreen_disable_vrfy_command"),
                         smtputf8_enable=s.bool("smtputf8_enable"),
                         log_address=lambda a: log_form(a, self.external),
                         tls_required=self.tls.level == "encrypt",
                         line_length_limit=s.int("line_length_limit")),
            who, banner_line=None if pregreeted else f"220 {s.str('smtpd_banner')}",
            reject=Verdict("enforce", "enforce", reject) if reject is not None else None)
        channel = Channel(sock)
        data = early
        # postscreen_command_time_limit bounds the reading of a whole
        # command, as in Postfix: the clock starts when the engine has
        # answered and does not restart with every byte that trickles in.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.command_time_limit
        while True:
            if data:
                engine.receive_data(data)
            for line in engine.logs():
                self.log.info(line)
            out = engine.data_to_send()
            if out:
                await channel.send(out)
                deadline = loop.time() + self.command_time_limit
            if engine.closed:
                return engine
            if engine.starttls_pending:
                try:
                    await channel.start_tls(self.tls.context, self.starttls_timeout)
                except TlsHandshakeError as err:
                    self.log.info(f"SSL_accept error from {who}: {err}")
                    return engine
                if self.tls.loglevel >= 1:
                    self.log.info(f"Anonymous TLS connection established from {who}: "
                                  f"{channel.tls_summary()}")
                engine.starttls_done()
                deadline = loop.time() + self.command_time_limit
                data = b""
                continue
            try:
                data = await channel.recv(max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                engine.command_time_limit()
                data = b""
                continue
            if not data:
                engine.receive_data(b"")
                for line in engine.logs():
                    self.log.info(line)
                return engine

    def _ehlo_keywords(self) -> list[str]:
        s = self.settings
        size = s.int("message_size_limit")
        words = [f"SIZE {size}" if size else "SIZE"]
        if not s.bool("postscreen_disable_vrfy_command"):
            words.append("VRFY")
        words.append("ETRN")
        if self.tls.context is not None:
            words.append("STARTTLS")  # the engine drops it once TLS is on
        words += ["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"]
        if s.bool("smtputf8_enable"):
            words.append("SMTPUTF8")
        words.append("CHUNKING")
        discard = {k.lower() for k in s.list("postscreen_discard_ehlo_keywords")}
        return [w for w in words if w.split()[0].lower() not in discard]

    async def _hand_off(self, sock, addr, port, saddr, sport) -> bool:
        """Pass the client to smtpd; postscreen_post_queue_limit clients may
        wait for it at once (then ``421 4.3.2 All server ports are busy``)."""
        who = client_label(addr, port)
        if self.post_queue_limit and self.handing >= self.post_queue_limit:
            self.log.info(f"NOQUEUE: reject: CONNECT from {who}: all server ports busy")
            await self._send(sock, "421 4.3.2 All server ports are busy\r\n")
            return False
        attrs = Attrs.of(client_addr=addr, client_port=port, server_addr=saddr,
                         server_port=sport)
        self.handing += 1
        try:
            await pass_client(self.smtpd_path, sock, attrs)
        except HandoffError as err:
            self.log.warning(f"cannot hand {who} to smtpd: {err}")
            await self._send(sock, "421 4.3.2 All server ports are busy\r\n")
            return False
        finally:
            self.handing -= 1
        return True


async def _readable(sock: socket.socket) -> None:
    """Until *sock* has bytes to read (or EOF)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.add_reader(sock.fileno(), lambda: fut.done() or fut.set_result(None))
    try:
        await fut
    finally:
        loop.remove_reader(sock.fileno())


def _addr(text: str) -> str:
    return text[7:] if text.startswith("::ffff:") and "." in text else text


def _tls_policy(s):
    from ..config.errors import ConfigError
    from ..io.tls import tls_policy

    try:
        return tls_policy(s.with_values({
            "smtpd_tls_security_level": s.str("postscreen_tls_security_level") or "none",
            "smtpd_tls_wrappermode": "no"}))
    except (ConfigError, ValueError) as err:
        return err


def pre_jail_init(ctx) -> None:
    """Before the worker drops root's privileges, as Postfix's postscreen
    does: load the TLS key and certificate (a key may stay readable by
    root alone). Only that: the cache file is opened later, as mail_owner,
    so that it is mail_owner's."""
    ctx.prepared = _tls_policy(ctx.settings)


async def serve(ctx) -> int:
    from ..config.errors import ConfigError

    try:
        screen = Postscreen(ctx)
    except (ConfigError, ValueError) as err:
        ctx.log.fatal(str(err))
        return 1
    loop = asyncio.get_running_loop()
    tasks = [loop.create_task(screen.accept_loop(sock, ctx.stop)) for sock in ctx.listeners]
    tasks.append(loop.create_task(screen.run_cache_cleanup(ctx.stop)))
    await ctx.stop.wait()
    for task in tasks:
        task.cancel()
    for sock in ctx.listeners:
        sock.close()
    # Sessions in progress finish (a reload or stop must not drop them),
    # for at most the greet wait and one command time limit.
    if screen.sessions:
        await asyncio.wait(set(screen.sessions),
                           timeout=screen.greet_wait + screen.command_time_limit)
    await screen.close_cache()
    return 0

"""Delivering one request over SMTP or LMTP: the blocking driver of the
client core (:mod:`hato.proto.smtp_client`) that the smtp and lmtp
delivery agents run in a worker thread (:mod:`hato.services.smtp`).

For each next hop of the request (relayhost or the MX hosts,
:mod:`hato.policy.smtp_route`), each server address in order: connect
(``{smtp,lmtp}_connect_timeout``, ``smtp_bind_address``), greet, STARTTLS
when the TLS policy says so, AUTH when SASL is configured, then one
transaction for the recipients still pending; the replies decide per
recipient (2xx sent, 4xx deferred, 5xx bounced) with the server's own
words in the reason. A server that fails as a whole (connect refused,
4xx/5xx greeting, 421, lost connection, timeout) is logged as Postfix does
(``connect to host[addr]:25: Connection refused``) and the next one is
tried; when no server is left, the pending recipients get the last error.

Timeouts follow the reply awaited: ``*_helo_timeout`` (greeting, EHLO,
STARTTLS, AUTH), ``*_mail_timeout``, ``*_rcpt_timeout``,
``*_data_init_timeout``, ``*_data_done_timeout``, ``*_rset_timeout``,
``*_quit_timeout``; writing the content, ``*_data_xfer_timeout``.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import ssl
import time
from dataclasses import dataclass

from ..delivery.generic import GenericMaps
from ..delivery.request import BOUNCED, DEFERRED, SENT, DeliveryRequest, RcptStatus
from ..delivery.smtp_content import ContentCheckError, OutboundContent
from ..policy.rewrite import LookupDefer
from ..policy.smtp_route import Candidate, NextHopError, RouteFailure
from ..proto import smtp_client as C
from ..proto.mime_downgrade import DowngradeError, downgrade
from ..queue.store import QueueStore
from .smtp_conncache import CachedSession, ConnectionCache, TlsSessionCache

READ_SIZE = 65536
HANDSHAKE_FAILED = "Cannot start TLS: handshake failure"

_TIMEOUT_OF = {"GREETING": "helo", "EHLO": "helo", "HELO": "helo", "LHLO": "lhlo",
               "STARTTLS": "starttls", "AUTH": "helo", "MAIL": "mail", "RCPT": "rcpt",
               "DATA": "data_init", "BDAT": "data_xfer", "DOT": "data_done",
               "DISCARD": "data_done", "RSET": "rset", "QUIT": "quit"}


@dataclass
class _Attempt:
    """What one server gave: per-recipient results, or a site failure."""

    results: tuple[C.RecipientResult, ...] = ()
    failure: str = ""  # the site-level reason (next server)
    failure_dsn: str = "4.4.2"
    connected: bool = False
    tls_failed: bool = False  # the handshake failed where TLS was optional
    conn_use: int = 0  # the transaction's number on its connection
    final: bool = False  # an LMTP server without DSN under lmtp_assume_final: "delivered"


class _Pending(dict):
    """The recipients still to deliver, by their index in the request (as
    they go out: generic maps applied), and the sender as it goes out."""

    sender: str = ""


class SmtpDelivery:
    """Everything an smtp or lmtp agent needs per worker: settings read
    once, the router, the queue."""

    def __init__(self, settings, log, *, lmtp: bool, router, tls=None, sasl=None):
        s = self.settings = settings
        self.log = log
        self.lmtp = lmtp
        self.prefix = p = "lmtp" if lmtp else "smtp"
        self.router = router
        self.tls = tls  # callable(candidate, nexthop) -> (mode, context, check) or None
        self.sasl = sasl  # callable(candidate, nexthop, sender, mechanisms) -> mech or None
        self.store = QueueStore.from_settings(s)
        self.helo_name = s.str("lmtp_lhlo_name" if lmtp else "smtp_helo_name")
        # 0 (lmtp_connect_timeout's default): the system's own limit, a blocking
        # connect; socket.settimeout(0) would make it non-blocking (EINPROGRESS)
        self.connect_timeout = float(s.time(f"{p}_connect_timeout")) or None
        self.timeouts = {}
        for kind in set(_TIMEOUT_OF.values()):
            name = "lmtp_lhlo_timeout" if lmtp and kind == "helo" else f"{p}_{kind}_timeout"
            try:
                self.timeouts[kind] = float(s.time(name))
            except Exception:
                self.timeouts[kind] = 300.0
        self.bind4 = _value(s, f"{p}_bind_address", "smtp_bind_address").strip()
        self.bind6 = _value(s, f"{p}_bind_address6", "smtp_bind_address6").strip()
        self.skip_5xx = s.bool(f"{p}_skip_5xx_greeting")
        self.never_ehlo = (not lmtp) and s.bool("smtp_never_send_ehlo")
        self.line_limit = s.int(f"{p}_line_length_limit")
        self.discard = frozenset(k.upper() for k in s.list(
            "lmtp_discard_lhlo_keywords" if lmtp else "smtp_discard_ehlo_keywords"))
        self.auth_soft_bounce = s.bool(f"{p}_sasl_auth_soft_bounce")
        self.myhostname = s.str("myhostname")
        self.cache = None
        self.cache_on_demand = s.bool(f"{p}_connection_cache_on_demand")
        self.cache_destinations = frozenset(
            d.lower() for d in s.list(f"{p}_connection_cache_destinations"))
        if self.cache_on_demand or self.cache_destinations:
            self.cache = ConnectionCache(
                idle_limit=float(s.time(f"{p}_connection_cache_time_limit")),
                reuse_time_limit=float(s.time(f"{p}_connection_reuse_time_limit")),
                reuse_count_limit=s.int(f"{p}_connection_reuse_count_limit"),
                close=self._end_cached)
        self.tls_reuse = s.bool(f"{p}_tls_connection_reuse")
        self.sender_dependent = (not lmtp) and s.bool("smtp_sender_dependent_authentication")
        self.wrappermode = s.bool(f"{p}_tls_wrappermode")
        self.assume_final = lmtp and s.bool("lmtp_assume_final")
        self.mime_conversion = not s.bool("disable_mime_output_conversion")
        self.mime_limits = dict(header_limit=s.int("header_size_limit"),
                                max_depth=s.int("mime_nesting_limit"),
                                bound_len=s.int("mime_boundary_length_limit"),
                                line_limit=s.int("line_length_limit"))
        self.tls_sessions = TlsSessionCache(float(s.time(f"{p}_tls_session_cache_timeout"))) \
            if s.str(f"{p}_tls_session_cache_database").strip() else None
        # smtp_generic_maps / lmtp_generic_maps: addresses as they leave;
        # smtp_header_checks & co: the content as it leaves
        self.generic = GenericMaps.from_settings(s, p, warn=lambda text: self.log.warning(text))
        outbound = OutboundContent(s, p, generic=self.generic,
                                   log_info=lambda text: self.log.info(text),
                                   log_warning=lambda text: self.log.warning(text))
        self.outbound = outbound if outbound.needed else None

    # -- one request ------------------------------------------------------------------------

    def deliver(self, req: DeliveryRequest, timing: dict) -> list[RcptStatus]:
        pending = _Pending({r.index: r for r in req.recipients})
        pending.sender = req.sender
        if self.generic is not None:
            try:
                pending.sender = self.generic.address(req.sender)
                for i, r in list(pending.items()):
                    mapped = self.generic.address(r.address)
                    if mapped != r.address:
                        pending[i] = dataclasses.replace(r, address=mapped)
            except LookupDefer as err:
                self.log.warning(f"{req.queue_id}: {err.text}")
                return [RcptStatus(i, DEFERRED, "4.3.0", err.text) for i in pending]
        done: list[RcptStatus] = []
        last: RouteFailure | None = None
        relay = "none"
        try:
            hops = list(self.router.hops(req.nexthop))
        except NextHopError as err:
            return [RcptStatus(i, DEFERRED, "4.3.5", str(err)) for i in pending]
        # The servers in the order they are tried, up to the final next hop;
        # a hop whose lookup failed stands as (hop, None).
        plan: list[tuple] = []
        hop = None
        for hop in hops:
            if hop.error is not None:
                plan.append((hop, None))
            else:
                plan += [(hop, cand) for cand in hop.candidates]
            if hop.final:
                break
        # A cached session to this next hop goes first (Postfix's reuse by
        # destination), if its server is still one of the next hop's.
        reused: CachedSession | None = None
        if self.cache is not None:
            reused = self.cache.take(self._dest_key(req))
            if reused is not None:
                at = next((n for n, (_h, cand) in enumerate(plan)
                           if cand is not None and _endpoint(cand) == _endpoint(reused.cand)),
                          None)
                if at is None:
                    self._end_cached(reused)
                    reused = None
                else:
                    plan.insert(0, plan.pop(at))
        servers = [n for n, (_h, cand) in enumerate(plan) if cand is not None]
        final_server = servers[-1] if servers else -1
        sessions: dict[int, int] = {}  # sessions per next hop (smtp_mx_session_limit)
        for n, (hop, cand) in enumerate(plan):
            if not pending:
                break
            if cand is None:
                last = hop.error
                continue
            if hop.session_limit and sessions.get(id(hop), 0) >= hop.session_limit:
                continue
            # After the last server, a soft failure is the recipient's result;
            # before it, the recipient waits for the next server (Postfix's
            # smtp_site_fail()/smtp_rcpt_fail() with a server still to try).
            final = n == final_server or (
                hop.final and hop.session_limit
                and sessions.get(id(hop), 0) + 1 >= hop.session_limit)
            attempt = self._try(cand, req, pending, timing, reused if n == 0 else None)
            if attempt.connected:  # Postfix: relay=none until a server answered
                relay = str(cand)
                sessions[id(hop)] = sessions.get(id(hop), 0) + 1
            if attempt.failure:
                last = RouteFailure(attempt.failure_dsn, attempt.failure)
                if attempt.connected and not final:
                    self.log.info(f"{req.queue_id}: {attempt.failure}")
            for res in attempt.results:
                if res.index not in pending:
                    continue
                if res.disposition is C.Disposition.DEFERRED and not final:
                    last = RouteFailure(res.dsn, res.reason)
                    if not attempt.failure:
                        self.log.info(f"{req.queue_id}: {res.reason}")
                    continue  # the next server may take it
                pending.pop(res.index)
                status = {C.Disposition.SENT: SENT, C.Disposition.DEFERRED: DEFERRED,
                          C.Disposition.BOUNCED: BOUNCED}[res.disposition]
                # A reply from the server gives the DSN's Remote-MTA and
                # Diagnostic-Code ("smtp" for LMTP too), as Postfix's
                # dsb_update(why, ..., "dns", host, "smtp", reply); a
                # success is "relayed" (smtp_rcpt_done()).
                said = res.reply.code > 0
                done.append(RcptStatus(res.index, status, res.dsn, res.reason,
                                       relay=relay,
                                       action=("delivered" if attempt.final else "relayed")
                                       if status == SENT else "",
                                       remote_mta=cand.host if said else "",
                                       diagnostic=res.reply.text if said else "",
                                       conn_use=attempt.conn_use))
        if pending:
            fail = self.router.failure(hop, last) if hop is not None else \
                RouteFailure("4.3.0", "server unavailable or unable to receive mail")
            status = DEFERRED if fail.temporary else BOUNCED
            done += [RcptStatus(i, status, fail.dsn, fail.text, relay=relay) for i in pending]
        return done

    # -- one server -------------------------------------------------------------------------

    def _connect(self, cand: Candidate) -> socket.socket:
        if cand.path is not None:
            path = cand.path
            if not os.path.isabs(path):
                path = os.path.join(self.settings.str("queue_directory"), path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(path)
            except OSError:
                sock.close()
                raise
            return sock
        family = socket.AF_INET6 if ":" in cand.addr else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.connect_timeout)
        bind = self.bind6 if family == socket.AF_INET6 else self.bind4
        try:
            if bind:
                sock.bind((bind, 0))
            sock.connect((cand.addr, cand.port))
        except OSError:
            sock.close()
            raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _try(self, cand: Candidate, req: DeliveryRequest, pending: dict,
             timing: dict, reused: CachedSession | None = None) -> _Attempt:
        where = f"{cand.host}[{cand.addr}]" + (f":{cand.port}" if cand.port else "")
        if reused is None and self.cache is not None:
            reused = self.cache.take(self._endpoint_key(cand, req))
        if reused is not None:
            attempt = self._reuse(reused, req, pending, timing)
            if attempt is not None:
                return attempt
        try:
            sock = self._connect(cand)
        except OSError as err:
            text = f"connect to {where}: {_reason(err)}"
            self.log.info(text)
            return _Attempt(failure=text, failure_dsn="4.4.1")
        timing["connected"] = time.time()  # agent.py presets it to the start: c of delays
        attempt = self._session(sock, cand, req, pending)
        if attempt.tls_failed and not attempt.results:
            # TLS is optional here (may): the same server again, in plaintext
            self.log.info(f"{where}: TLS is optional, trying again in plaintext")
            try:
                sock = self._connect(cand)
            except OSError as err:
                return _Attempt(failure=f"connect to {where}: {_reason(err)}",
                                failure_dsn="4.4.1")
            attempt = self._session(sock, cand, req, pending, plaintext=True)
        return attempt

    def _reuse(self, cached: CachedSession, req: DeliveryRequest, pending: dict,
               timing: dict) -> _Attempt | None:
        """The next transaction on a cached session, after RSET showed it
        still works; None (connect anew) when it does not."""
        conn, sock = cached.conn, cached.sock
        conn.check()
        probe = _Attempt(connected=True)
        sock = self._drive(sock, conn, None, None, cached.cand, req, probe)
        if conn.closed:
            _close(sock)
            return None
        timing["connected"] = time.time()
        return self._transact(sock, conn, cached.cand, req, pending, None, cached.opened)

    def _end_cached(self, cached: CachedSession) -> None:
        """A cached session whose time is up: QUIT, close."""
        try:
            cached.conn.quit()
            out = cached.conn.data_to_send()
            if out:
                cached.sock.settimeout(self.timeouts.get("quit", 300.0))
                cached.sock.sendall(out)
        except Exception:  # noqa: BLE001 - the server may have gone already
            pass
        _close(cached.sock)

    def _dest_key(self, req: DeliveryRequest) -> str:
        return f"dest:{req.nexthop.lower()}"

    def _endpoint_key(self, cand: Candidate, req: DeliveryRequest) -> str:
        """The cache key of one server of the next hop. It stays bound to
        the next hop: the TLS policy and the SASL credentials a session was
        made with are the next hop's, so a session never serves another
        destination (whose policy might ask for TLS the session lacks)."""
        return f"addr:{_endpoint(cand)}/{req.nexthop.lower()}"

    def _cache_wanted(self, req: DeliveryRequest) -> bool:
        if self.cache is None:
            return False
        if self.cache_on_demand and "CONN_LOAD" in req.flags:
            return True
        hop = req.nexthop.lower()
        return hop in self.cache_destinations or hop.strip("[]") in self.cache_destinations

    def _save(self, sock, conn: C.ClientConnection, cand: Candidate, req: DeliveryRequest,
              opened: float) -> bool:
        """Keep an idle session for the next delivery; False: end it."""
        if not self._cache_wanted(req) or conn.closed:
            return False
        if conn.tls_active and not self.tls_reuse:
            return False
        if conn.authenticated and self.sender_dependent:
            return False  # the credentials belong to this sender
        keys = (self._dest_key(req), self._endpoint_key(cand, req))
        assert self.cache is not None
        return self.cache.save(CachedSession(sock, conn, cand, opened), keys)

    def _session(self, sock: socket.socket, cand: Candidate, req: DeliveryRequest,
                 pending: dict, plaintext: bool = False) -> _Attempt:
        """A new connection: TLS policy, the client core, one transaction."""
        server = f"{cand.host}[{cand.addr}]" + (f":{cand.port}" if self.lmtp and cand.port
                                                  else "")
        opened = time.monotonic()
        tls = self.tls(cand, req.nexthop) if self.tls is not None and not plaintext else None
        if tls is not None and tls[0] == "error":
            self.log.warning(f"{req.queue_id}: {tls[2]}")
            _close(sock)
            return _Attempt(failure=tls[2], failure_dsn="4.7.5", connected=True)
        mode = tls[0] if tls else "none"
        wrapped = False
        if self.wrappermode:
            # TLS from the first byte (a port-465 relay): mandatory, whatever
            # the level says, as Postfix requires encrypt or stronger here
            if tls is None:
                text = f"TLS wrapper mode ({self.prefix}_tls_wrappermode = yes) requires " \
                       f"{self.prefix}_tls_security_level = encrypt or stronger"
                self.log.warning(f"{req.queue_id}: {text}")
                _close(sock)
                return _Attempt(failure=text, failure_dsn="4.7.5", connected=True)
            tls = ("encrypt", tls[1], tls[2])
            sock, problem = self._handshake(sock, tls, cand, req, server)
            if problem:
                _close(sock)
                return _Attempt(failure=problem, failure_dsn="4.7.5", connected=True)
            mode, wrapped = "none", True
        params = C.ClientParams(
            helo_name=self.helo_name, server_name=server, lmtp=self.lmtp,
            try_ehlo=not self.never_ehlo, skip_5xx_greeting=self.skip_5xx, starttls=mode,
            tls_active=wrapped, auth=self.sasl is not None,
            auth_soft_bounce=self.auth_soft_bounce,
            line_length_limit=self.line_limit, discard_ehlo_keywords=self.discard,
            myhostname=None if self.lmtp else self.myhostname)
        conn = C.ClientConnection(params)
        return self._transact(sock, conn, cand, req, pending, tls, opened)

    def _transact(self, sock, conn: C.ClientConnection, cand: Candidate, req: DeliveryRequest,
                  pending: dict, tls, opened: float) -> _Attempt:
        """One transaction for the pending recipients; the session then goes
        to the cache or ends."""
        attempt = _Attempt(connected=True)
        try:
            qf = self.store.open(req.queue_name, req.queue_id, writable=False)
        except Exception:
            _close(sock)
            raise
        try:
            message = self._message(req, pending, qf)
            order = list(pending)  # the core numbers recipients in message order
            conn.send_message(message)
            sock = self._drive(sock, conn, qf, tls, cand, req, attempt)
        except BaseException:
            _close(sock)
            raise
        finally:
            qf.close()
        attempt.conn_use = conn.messages
        attempt.final = self.assume_final and "DSN" not in conn.features
        self._remember_session(sock)
        if conn.closed or not self._save(sock, conn, cand, req, opened):
            if not conn.closed:
                conn.quit()
                self._flush(sock, conn)
            _close(sock)
        attempt.results = tuple(
            C.RecipientResult(order[r.index], r.address, r.disposition, r.dsn, r.reply,
                              r.command, r.reason) for r in attempt.results)
        return attempt

    def _message(self, req: DeliveryRequest, pending: dict, qf) -> C.Message:
        return C.Message(
            sender=pending.sender if isinstance(pending, _Pending) else req.sender,
            recipients=tuple(C.Recipient(r.address, frozenset(
                n.strip().upper() for n in r.notify.split(",") if n.strip()),
                r.orcpt or None) for r in pending.values()),
            size=req.size, body="8BITMIME" if _eight_bit(req, qf) else "7BIT",
            smtputf8=req.attributes.get("smtputf8") == "yes",
            ret=req.ret or None, envid=req.envid or None,
            verify_only=req.attributes.get("probe") == "yes")

    def _flush(self, sock, conn: C.ClientConnection) -> None:
        out = conn.data_to_send()
        if out:
            try:
                sock.settimeout(self.timeouts.get("data_xfer", 180.0))
                sock.sendall(out)
            except OSError as err:
                conn.abort(f"lost connection with {conn.params.server_name} while "
                           f"sending: {_reason(err)}")

    def _drive(self, sock, conn: C.ClientConnection, qf, tls, cand, req, attempt):
        """Run the core until the transaction is done (READY: the caller
        caches or quits) or the session closed; the socket in use (TLS may
        have replaced it)."""
        while True:
            self._flush(sock, conn)
            ev = conn.next_event()
            if ev is C.NEED_DATA:
                self._flush(sock, conn)  # what the replies just read made the core say
                if conn.closed:
                    return sock
                kind = conn.waiting_for
                sock.settimeout(self.timeouts.get(_TIMEOUT_OF.get(kind, "helo"), 300.0))
                try:
                    data = sock.recv(READ_SIZE)
                except (TimeoutError, socket.timeout):
                    conn.abort(f"conversation with {conn.params.server_name} timed out "
                               f"while {conn.stage_text(kind)}")
                    continue
                except OSError as err:
                    data = b""
                    self.log.info(f"read from {conn.params.server_name}: {_reason(err)}")
                conn.receive_data(data)
            elif ev is C.READY:
                return sock
            elif isinstance(ev, C.NeedTls):
                sock = self._starttls(sock, conn, tls, cand, req, attempt)
            elif isinstance(ev, C.NeedAuth):
                try:
                    mech = self.sasl(cand, req.nexthop, req.sender, ev.mechanisms,
                                     conn.tls_active) if self.sasl is not None else None
                except Exception as err:  # a password table that fails: try later
                    self.log.warning(f"{req.queue_id}: SASL credentials for {cand.host}: {err}")
                    conn.abort(f"SASL authentication failed; cannot look up credentials for "
                               f"{cand.host}", "4.7.0")
                    continue
                conn.authenticate(mech)
            elif isinstance(ev, C.NeedBody):
                content = qf.content()
                if self.outbound is not None:
                    content = self.outbound.content(content, req.queue_id)
                if ev.downgrade and self.mime_conversion:
                    # no 8BITMIME at the server: 8-bit parts as quoted-printable
                    content = downgrade(content, **self.mime_limits)
                try:
                    for chunk in content:
                        conn.send_body(chunk)
                        self._flush(sock, conn)
                except DowngradeError as err:
                    conn.abort(err.text, err.dsn)
                    continue
                except LookupDefer as err:  # a generic map failed mid-header
                    self.log.warning(f"{req.queue_id}: {err.text}")
                    conn.abort(err.text, "4.3.0")
                    continue
                except ContentCheckError as err:  # a header/body check table failed
                    conn.abort(err.text, "4.3.0")
                    continue
                conn.end_body()
            elif isinstance(ev, C.MessageDone):
                attempt.results = ev.results
            elif isinstance(ev, C.Closed):
                if ev.outcome is not C.Outcome.OK and ev.reason:
                    attempt.failure = ev.reason
                    attempt.failure_dsn = "5.0.0" if ev.outcome is C.Outcome.SITE_HARD \
                        else "4.4.2"
                return sock

    def _starttls(self, sock, conn: C.ClientConnection, tls, cand, req, attempt):
        """The handshake on the connection. Mandatory TLS that fails defers
        (never plaintext); optional TLS (may) that fails is tried again
        without STARTTLS on a new connection, as Postfix does."""
        sock, problem = self._handshake(sock, tls, cand, req, conn.params.server_name)
        if problem:
            attempt.tls_failed = tls[0] == "may" and problem.startswith(HANDSHAKE_FAILED)
            conn.abort(problem, "4.7.5")
            return sock
        conn.tls_done()
        return sock

    def _handshake(self, sock, tls, cand, req, server: str):
        """TLS on *sock* and the policy's checks: (socket, "") or (socket,
        the reason to defer), logged."""
        mode, context, check = tls
        key = (id(context), _endpoint(cand), tls_name(cand))
        cached = self.tls_sessions.get(key) if self.tls_sessions is not None else None
        try:
            sock.settimeout(self.timeouts.get("starttls", 300.0))
            wrapped = context.wrap_socket(sock, server_hostname=tls_name(cand), session=cached)
        except (ssl.SSLError, OSError) as err:
            if self.tls_sessions is not None:
                self.tls_sessions.forget(key)
            text = f"{HANDSHAKE_FAILED} with {server}: {_reason(err)}"
            self.log.info(text)
            return sock, text
        if check is not None:
            problem = check(wrapped, cand, req.nexthop)
            if problem:
                self.log.info(f"{req.queue_id}: {problem}")
                return wrapped, problem
        if self.tls_sessions is not None:
            if wrapped.session_reused:
                self.tls_sessions.resumed += 1
            # TLS 1.3 tickets arrive after the handshake: the session is
            # stored again when the connection ends (_remember_session)
            wrapped.hato_session_key = key
            self.tls_sessions.put(key, wrapped.session)
        return wrapped, ""

    def _remember_session(self, sock) -> None:
        key = getattr(sock, "hato_session_key", None)
        if key is not None and self.tls_sessions is not None:
            try:
                self.tls_sessions.put(key, sock.session)
            except (AttributeError, ValueError, OSError):
                pass


def _value(settings, name: str, fallback: str) -> str:
    """An lmtp_ parameter hato knows, else its smtp_ twin (Postfix has a few
    smtp_ parameters without an lmtp_ form)."""
    from ..config.errors import ConfigError

    try:
        return settings.str(name)
    except ConfigError:
        return settings.str(fallback)


def tls_name(cand: Candidate) -> str | None:
    """SNI: the server's host name, never an address literal."""
    host = cand.host
    if not host or host.replace(".", "").isdigit() or ":" in host:
        return None
    return host


def _endpoint(cand: Candidate) -> str:
    return cand.path if cand.path is not None else f"{cand.addr}:{cand.port}"


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


def _eight_bit(req: DeliveryRequest, qf) -> bool:
    """Is the content 8-bit (BODY=8BITMIME)? cleanup records it in the
    queue file (``encoding``); a queue file without it is read through."""
    encoding = req.attributes.get("encoding")
    if encoding in ("7bit", "8bit"):
        return encoding == "8bit"
    for chunk in qf.content():
        if max(chunk, default=0) > 127:
            return True
    return False


def _reason(err: BaseException) -> str:
    if isinstance(err, (TimeoutError, socket.timeout)):
        return "Connection timed out"
    return getattr(err, "strerror", None) or str(err) or type(err).__name__

"""STARTTLS, smtps and AUTH for smtpd sessions: the part of
:class:`hato.io.smtpd_session.Session` that upgrades the connection to TLS
(with the STARTTLS injection defence and the smtps handshake before any
read) and runs SASL exchanges against :mod:`hato.auth`. Parameters: see
docs/tls.md."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ssl

from .. import auth as sasl
from ..proto import smtpd as P
from .tls import session_facts

READ_SIZE = 65536


class SessionEnd(Exception):
    """Ends the session loop with a reason ("lost", ...)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TlsAuth:
    """Mixed into Session: uses its server, conn, facts, log, reader,
    writer, client and the transaction helpers."""

    # -- TLS ----------------------------------------------------------------------------------

    async def _accept_tls(self) -> bool:
        """smtps (wrapper mode): the handshake comes first, on the raw socket."""
        srv = self.server
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(reader)
        sock, self.sock = self.sock, None
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol, sock, ssl=srv.tls.context,
                ssl_handshake_timeout=srv.starttls_timeout)
        except (ssl.SSLError, OSError, ConnectionError, asyncio.TimeoutError) as err:
            text = getattr(err, "reason", None) or str(err) or type(err).__name__
            self.log.info(f"SSL_accept error from {self.client}: {text}")
            sock.close()
            return False
        self.reader = reader
        self.writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._tls_established(transport)
        return True

    async def _start_tls(self) -> bool:
        """The TLS handshake on the connection; on success the session's
        reader and writer speak TLS. Whatever the client sent before the
        handshake and had not been read yet is dropped with the old reader."""
        srv = self.server
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport = await loop.start_tls(self.writer.transport, protocol, srv.tls.context,
                                             server_side=True,
                                             ssl_handshake_timeout=srv.starttls_timeout)
        except (ssl.SSLError, OSError, ConnectionError, asyncio.TimeoutError) as err:
            text = getattr(err, "reason", None) or str(err) or type(err).__name__
            self.log.info(f"SSL_accept error from {self.client}: {text}")
            self.handshake_failed = True
            return False
        if transport is None:
            self.handshake_failed = True
            return False
        # loop.start_tls() does not introduce the protocol to its transport:
        # without this the reader could not pause reading (no back-pressure)
        # and EOF under TLS would be mishandled.
        protocol.connection_made(transport)
        self.reader = reader
        self.writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        self._tls_established(transport)
        return True

    def _tls_established(self, transport) -> None:
        srv = self.server
        obj = transport.get_extra_info("ssl_object")
        facts = session_facts(obj, srv.tls.fingerprint_digest) if obj is not None else None
        self.tls = facts
        f = self.facts
        f.tls_active = True
        if facts is not None:
            f.tls_protocol, f.tls_cipher, f.tls_cipher_bits = \
                facts.protocol, facts.cipher, facts.bits
            f.tls_ccert_verified = facts.trusted
            f.tls_ccert_fingerprint = facts.fingerprint
            f.tls_ccert_pkey_fingerprint = facts.pkey_fingerprint
            f.tls_ccert_subject, f.tls_ccert_issuer = facts.subject, facts.issuer
            if srv.tls.loglevel >= 1:
                self.log.info(f"{facts.kind()} TLS connection established from {self.client}: "
                              f"{facts.summary()}")

    async def _starttls(self) -> None:
        refused = self._milter_refusal("5")  # Postfix: only a milter's 5xx refuses it
        if refused is not None:
            self.conn.reject(refused)
            return
        # Stop reading before the 220 goes out: the client's ClientHello
        # must reach the TLS layer, not the plaintext stream.
        self.writer.transport.pause_reading()
        self.conn.accept()
        await self._flush()
        if not await self._start_tls():
            raise SessionEnd("lost")
        refused = await self._newtls_refused()
        if refused is not None:
            # Postfix counts the STARTTLS as failed and ends the session
            self.conn.recount_failed("STARTTLS")
            self._send_now(refused)
            await asyncio.wait_for(self.writer.drain(), self.server.timeout)
            raise SessionEnd("")
        self.conn.starttls_done()
        self._abort_transaction()
        self._new_transaction()
        self.facts.helo_name = None
        self.checks.reset()

    async def _newtls_refused(self) -> P.Reply | None:
        """smtpd_client_new_tls_session_rate_limit, counted for sessions
        that were not resumed from the session cache."""
        if self.anvil is None:
            return None
        obj = self.writer.transport.get_extra_info("ssl_object")
        if obj is not None and obj.session_reused:
            return None
        return await self.anvil.newtls()

    def _tls_received(self) -> str | None:
        if self.tls is None or not self.server.tls.received_header:
            return None
        t = self.tls
        line = f"using {t.summary()})"
        if not self.server.tls.ask_ccert:
            who = "(No client certificate requested"
        elif t.peer_cert:
            state = "verified OK" if t.trusted else "not verified"
            who = f'(Client CN "{t.subject}", Issuer "{t.issuer}" ({state})'
        else:
            who = "(Client did not present a certificate"
        return f"{line}\n\t{who}"

    # -- AUTH ---------------------------------------------------------------------------------

    async def _auth(self, ev: P.Auth) -> None:
        srv, f = self.server, self.facts
        refused = await self.anvil.auth() if self.anvil is not None else None
        if refused is not None:
            self.conn.reject(refused)
            return
        mech = ev.mechanism.upper()
        if srv.sasl is None or mech not in srv.auth_mechanisms(f):
            self.conn.reject(P.Reply(535, "5.7.8", "Error: authentication failed: "
                                     "Invalid authentication mechanism"))
            return
        exchange = srv.sasl.start(mech, tls_active=bool(f.tls_active), client_addr=f.addr,
                                  client_name=f.name)
        if exchange is None:
            self.conn.reject(P.Reply(535, "5.7.8", "Error: authentication failed: "
                                     "Invalid authentication mechanism"))
            return
        self.exchange, self.auth_mechanism, self.auth_final = exchange, mech, False
        response: bytes | None = None
        if ev.initial is not None:
            if ev.initial == "=":
                response = b""
            else:
                response = self._decode64(ev.initial)
                if response is None:
                    return
        await self._auth_step(response)

    def _decode64(self, text: str) -> bytes | None:
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            self.exchange = None
            self.conn.auth_done(False, P.Reply(501, "5.5.2", "Cannot decode response"))
            return None

    async def _auth_response(self, ev: P.AuthResponse) -> None:
        if self.exchange is None:
            self.conn.auth_done(False, P.Reply(503, "5.5.1", "Error: no AUTH in progress"))
            return
        if ev.line.strip() == "*":
            self.exchange = None
            self.conn.auth_done(False, P.Reply(501, "5.7.0", "Authentication aborted"))
            return
        response = self._decode64(ev.line.strip())
        if response is None:
            return
        if self.auth_final:
            await self._auth_success(self.auth_user)
            return
        await self._auth_step(response)

    async def _auth_step(self, response: bytes | None) -> None:
        exchange = self.exchange
        try:
            step = await asyncio.to_thread(exchange.step, response)
        except Exception:
            self.log.exception(f"{self.client}: SASL {self.auth_mechanism} exchange failed")
            step = sasl.Failure("internal error", temporary=True)
        if isinstance(step, sasl.Challenge):
            self.conn.reply(P.Reply(334, "", base64.b64encode(step.data).decode("ascii")))
        elif isinstance(step, sasl.Success):
            if step.data:
                self.auth_final, self.auth_user = True, step.username
                self.conn.reply(P.Reply(334, "", base64.b64encode(step.data).decode("ascii")))
            else:
                await self._auth_success(step.username)
        else:
            self.exchange = None
            if step.temporary:
                self.log.warning(f"{self.client}: SASL {self.auth_mechanism} authentication "
                                 f"aborted: {step.reason}")
                self.conn.auth_done(False, P.Reply(454, "4.7.0", "Temporary authentication "
                                                   "failure: " + step.reason))
                return
            self.log.warning(f"{self.client}: SASL {self.auth_mechanism} authentication failed: "
                             f"{step.reason}")
            # A fixed delay on every failure: timing tells nothing.
            await asyncio.sleep(self.server.sasl_failure_delay)
            self.conn.auth_done(False, P.Reply(535, "5.7.8", "Error: authentication failed: "
                                               + step.reason))

    async def _auth_success(self, username: str) -> None:
        self.exchange = None
        f = self.facts
        f.sasl_username, f.sasl_method = username, self.auth_mechanism
        self.conn.auth_done(True, P.Reply(235, "2.7.0", "Authentication successful"))

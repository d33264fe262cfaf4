"""The byte channel between postscreen's SMTP engine and its client, plain
or, after STARTTLS, TLS — done in postscreen's own process (Postfix hands
this to tlsproxy(8); the client sees the same). The TLS layer is an
``ssl.SSLObject`` over memory BIOs on the raw socket, so postscreen keeps
its socket (and could still hand it on) and one event loop serves every
client.

postscreen_tls_security_level (default ``$smtpd_tls_security_level``)
turns STARTTLS on; keys, certificates, protocols and ciphers are smtpd's
(:func:`hato.io.tls.tls_policy`, as tlsproxy's ``tlsproxy_tls_*``
parameters default to smtpd's).
"""

from __future__ import annotations

import asyncio
import socket
import ssl

READ_SIZE = 4096


class TlsHandshakeError(Exception):
    """The handshake failed (the text says why, for the log)."""


class Channel:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()

    @property
    def tls_active(self) -> bool:
        return self._tls is not None

    async def _flush_out(self, timeout: float) -> None:
        data = self._outgoing.read()
        if data:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_sendall(self.sock, data), timeout)

    async def _pull(self, timeout: float) -> bool:
        """Raw bytes into the TLS layer; False at EOF."""
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, READ_SIZE), timeout)
        if not data:
            self._incoming.write_eof()
            return False
        self._incoming.write(data)
        return True

    async def send(self, data: bytes, timeout: float = 10.0) -> None:
        if self._tls is None:
            loop = asyncio.get_running_loop()
            await asyncio.wait_for(loop.sock_sendall(self.sock, data), timeout)
            return
        self._tls.write(data)
        await self._flush_out(timeout)

    async def recv(self, timeout: float) -> bytes:
        """Bytes from the client (b"" at EOF); asyncio.TimeoutError when
        none came in time."""
        if self._tls is None:
            loop = asyncio.get_running_loop()
            return await asyncio.wait_for(loop.sock_recv(self.sock, READ_SIZE), timeout)
        while True:
            try:
                return self._tls.read(READ_SIZE)
            except ssl.SSLWantReadError:
                await self._flush_out(timeout)
                if not await self._pull(timeout):
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError:
                return b""

    async def start_tls(self, context: ssl.SSLContext, timeout: float) -> None:
        """The server side of the handshake, within *timeout* seconds."""
        tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        await self._flush_out(timeout)
                        if not await self._pull(timeout):
                            raise TlsHandshakeError("lost connection") from None
                await self._flush_out(timeout)
        except TimeoutError:
            raise TlsHandshakeError("timeout") from None
        except ssl.SSLError as err:
            raise TlsHandshakeError(getattr(err, "reason", None) or str(err)) from None
        self._tls = tls

    def tls_summary(self) -> str:
        """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``."""
        if self._tls is None:
            return ""
        name, _proto, bits = self._tls.cipher() or ("", "", 0)
        return f"{self._tls.version()} with cipher {name} ({bits}/{bits} bits)"

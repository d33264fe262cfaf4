"""A client for saslauthd's socket (Cyrus ``pwcheck_method: saslauthd``).

:class:`SaslauthdClient` is a password verifier: ``check_password(user,
password)`` opens the socket, sends one request (login, password, service,
realm), reads the ``OK``/``NO`` reply and closes, as libsasl does. A
socket that is missing, refuses the connection, times out or answers
garbage raises :class:`~hato.auth.backend.AuthTempFail`; ``NO`` is False.
It keeps no connection open, so one client object serves every thread.
"""

from __future__ import annotations

import socket
import time

from ..proto.saslauthd import SaslauthdProtocolError, encode_request, parse_reply, reply_length
from .backend import AuthTempFail

DEFAULT_SASLAUTHD_PATH = "/var/run/saslauthd/mux"  # libsasl's PATH_SASLAUTHD_RUNDIR "/mux" on Debian


def libsasl_login(user: str, realm: str) -> tuple[str, str]:
    """(login, realm) as libsasl sends them to saslauthd: blanks around the
    name are stripped; a name with ``@`` is split at the *last* ``@`` into
    login and realm; a name without one goes with *realm*
    (``smtpd_sasl_local_domain``; empty when unset)."""
    name = user.strip()
    login, at, name_realm = name.rpartition("@")
    if at:
        return login, name_realm
    return name, realm


class SaslauthdClient:
    def __init__(self, path: str = DEFAULT_SASLAUTHD_PATH, timeout: float = 30.0, *,
                 service: str = "smtp", realm: str = ""):
        self.path = path
        self.timeout = timeout
        self.service = service
        self.realm = realm

    def check_password(self, user: str, password: str, service: str | None = None,
                       realm: str | None = None) -> bool:
        """Ask saslauthd. *user* is the login name as the client sent it;
        it is split as libsasl 2.1.28 does before it asks saslauthd (see
        :func:`libsasl_login`). *service* and *realm* default to the
        client's."""
        login, user_realm = libsasl_login(user, self.realm if realm is None else realm)
        try:
            request = encode_request(login, password,
                                     self.service if service is None else service, user_realm)
        except SaslauthdProtocolError:
            return False  # a login or password saslauthd cannot carry cannot be right
        deadline = time.monotonic() + self.timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.path)
                sock.sendall(request)
                data = b""
                while True:
                    need = reply_length(data)
                    if need is not None and len(data) >= need:
                        break
                    sock.settimeout(max(0.001, deadline - time.monotonic()))
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except TimeoutError:
                raise AuthTempFail(f"saslauthd {self.path}: timed out") from None
            except OSError as err:
                raise AuthTempFail(f"saslauthd {self.path}: {err.strerror or err}") from None
        finally:
            sock.close()
        try:
            ok, _text = parse_reply(data)
        except SaslauthdProtocolError as err:
            raise AuthTempFail(f"{err} from {self.path}") from None
        return ok

    def close(self) -> None:
        pass


__all__ = ["DEFAULT_SASLAUTHD_PATH", "SaslauthdClient", "libsasl_login"]

"""Client certificates that do not verify, taken as Postfix's smtpd takes
them: the handshake goes on, and the certificate counts as "Untrusted".

With ``smtpd_tls_ask_ccert = yes`` Postfix asks every client for a
certificate and accepts whatever it sends: its OpenSSL verify callback
returns 1, and the result of the verification (``SSL_get_verify_result``)
only decides whether the certificate is trusted
(``permit_tls_all_clientcerts``) or known by its fingerprint alone
(``check_ccert_access``, ``permit_tls_clientcerts`` with
``relay_clientcerts``: the usual way to let self-signed certificates relay).

Python's ssl module has no verify callback: with CERT_OPTIONAL, OpenSSL
ends the handshake on a certificate that does not chain to the CA files.
This module reaches the OpenSSL library the ssl module uses (ctypes) and:

* :func:`accept_unverified` installs a callback that accepts every
  certificate on an SSLContext (``SSL_CTX_set_verify``; the ssl module keeps
  a context's callback when its verify_mode changes later);
* :func:`verify_result` reads a connection's ``SSL_get_verify_result``
  (0, X509_V_OK, means trusted).

The OpenSSL pointers are found in the ssl module's objects and checked
before they are used: the SSL_CTX pointer must give back the context's own
options and verify mode, the SSL pointer must belong to that SSL_CTX. When
anything does not match (another Python, another layout) nothing is
installed, :func:`accept_unverified` returns False, and smtpd keeps the
plain ssl behaviour (an untrusted certificate fails the handshake), with a
warning in the log.
"""

from __future__ import annotations

import ctypes
import logging
import ssl
import threading

log = logging.getLogger("hato.tls")

_SSL_VERIFY_PEER = 0x01

_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


@_VERIFY_CB
def _accept(_preverify_ok: int, _store: int) -> int:
    return 1


class _Lib:
    def __init__(self) -> None:
        import _ssl

        lib = ctypes.CDLL(_ssl.__file__)  # its symbols, and libssl's beneath it

        def fn(name: str, restype, *argtypes):
            f = getattr(lib, name)
            f.restype, f.argtypes = restype, argtypes
            return f

        ptr = ctypes.c_void_p
        self.set_verify = fn("SSL_CTX_set_verify", None, ptr, ctypes.c_int, _VERIFY_CB)
        self.get_verify_mode = fn("SSL_CTX_get_verify_mode", ctypes.c_int, ptr)
        self.get_options = fn("SSL_CTX_get_options", ctypes.c_uint64, ptr)
        self.get_ssl_ctx = fn("SSL_get_SSL_CTX", ptr, ptr)
        self.get_verify_result = fn("SSL_get_verify_result", ctypes.c_long, ptr)


_lib: _Lib | None = None
_lib_failed = False
_lock = threading.Lock()
_HEAD = object.__basicsize__  # PyObject_HEAD: the first field follows it


def _load() -> _Lib | None:
    global _lib, _lib_failed
    with _lock:
        if _lib is None and not _lib_failed:
            try:
                _lib = _Lib()
            except (OSError, AttributeError, ImportError) as err:
                _lib_failed = True
                log.warning("cannot reach OpenSSL for client certificate checks: %s", err)
        return _lib


def _ctx_pointer(lib: _Lib, ctx: ssl.SSLContext) -> int | None:
    """The SSL_CTX* of *ctx* (the first field of CPython's PySSLContext),
    or None when what is there does not answer as *ctx* does."""
    ptr = ctypes.c_void_p.from_address(id(ctx) + _HEAD).value
    if not ptr:
        return None
    want_mode = {ssl.CERT_NONE: 0, ssl.CERT_OPTIONAL: 1, ssl.CERT_REQUIRED: 3}[ctx.verify_mode]
    if lib.get_options(ptr) != int(ctx.options) or lib.get_verify_mode(ptr) & 3 != want_mode:
        return None
    return ptr


def accept_unverified(ctx: ssl.SSLContext) -> bool:
    """Let the handshakes of *ctx* (verify_mode CERT_OPTIONAL or
    CERT_REQUIRED already set) go on with a certificate that does not
    verify. False when that cannot be done here."""
    lib = _load()
    if lib is None:
        return False
    ptr = _ctx_pointer(lib, ctx)
    if ptr is None:
        log.warning("cannot reach OpenSSL for client certificate checks: unknown layout")
        return False
    mode = lib.get_verify_mode(ptr)
    lib.set_verify(ptr, mode | _SSL_VERIFY_PEER, _accept)
    return True


def verify_result(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> int | None:
    """OpenSSL's verification result for the peer's certificate (0: it
    verified), or None when it cannot be read here."""
    lib = _load()
    if lib is None:
        return None
    inner = getattr(ssl_object, "_sslobj", None)
    if inner is None:
        return None
    # CPython's PySSLSocket: PyObject_HEAD, the socket's weak reference,
    # then the SSL*.
    ptr = ctypes.c_void_p.from_address(id(inner) + _HEAD + ctypes.sizeof(ctypes.c_void_p)).value
    if not ptr:
        return None
    ctx_ptr = _ctx_pointer(lib, ssl_object.context)
    if ctx_ptr is None or lib.get_ssl_ctx(ptr) != ctx_ptr:
        return None
    return int(lib.get_verify_result(ptr))


__all__ = ["accept_unverified", "verify_result"]

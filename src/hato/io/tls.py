"""TLS for smtpd: an ``ssl.SSLContext`` built from Postfix's parameters,
and the facts of an established session in Postfix's words.

Parameters: smtpd_tls_security_level (and the legacy smtpd_use_tls /
smtpd_enforce_tls), smtpd_tls_cert_file / _key_file, smtpd_tls_eccert_file /
_eckey_file, smtpd_tls_chain_files (RSA and ECDSA at once),
smtpd_tls_CAfile / _CApath, smtpd_tls_protocols /
smtpd_tls_mandatory_protocols (``>=TLSv1.2``, ``!SSLv3, !TLSv1`` forms),
smtpd_tls_ciphers / _mandatory_ciphers (grades high, medium, low, export,
null through tls_*_cipherlist), smtpd_tls_exclude_ciphers /
_mandatory_exclude_ciphers, smtpd_tls_dh1024_param_file,
smtpd_tls_eecdh_grade (tls_eecdh_strong_curve, tls_eecdh_ultra_curve),
smtpd_tls_ask_ccert, smtpd_tls_req_ccert, smtpd_tls_ccert_verifydepth,
smtpd_tls_session_cache_timeout, tls_preempt_cipherlist, tls_server_sni_maps,
smtpd_tls_fingerprint_digest.

TLS session tickets are on (OpenSSL's per-process keys: a client resumes
with the worker that issued the ticket).
"""

from __future__ import annotations

import hashlib
import ssl
from dataclasses import dataclass

from ..config.errors import ConfigError
from ..config.settings import Settings
from ..tables.base import OpenFlags, TableRetry
from ..tables.search import TableList
from .ccert_verify import accept_unverified, verify_result

_VERSIONS = {
    "SSLV2": None, "SSLV3": ssl.TLSVersion.SSLv3, "TLSV1": ssl.TLSVersion.TLSv1,
    "TLSV1.1": ssl.TLSVersion.TLSv1_1, "TLSV1.2": ssl.TLSVersion.TLSv1_2,
    "TLSV1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = ["SSLV3", "TLSV1", "TLSV1.1", "TLSV1.2", "TLSV1.3"]


def security_level(s: Settings) -> str:
    """none, may or encrypt (smtpd_tls_security_level, else the legacy
    smtpd_enforce_tls / smtpd_use_tls)."""
    level = s.str("smtpd_tls_security_level").strip().lower()
    if level:
        if level not in ("none", "may", "encrypt"):
            raise ConfigError(f"invalid smtpd_tls_security_level value: {level}")
        return level
    if s.bool("smtpd_enforce_tls"):
        return "encrypt"
    if s.bool("smtpd_use_tls"):
        return "may"
    return "none"


def protocol_range(value: str) -> tuple[ssl.TLSVersion | None, ssl.TLSVersion | None]:
    """Postfix's protocol list → (minimum, maximum) versions; None: no bound.
    ``>=TLSv1.2``, ``<=TLSv1.3``, ``TLSv1.2 TLSv1.3`` and ``!SSLv3, !TLSv1``
    forms, case-insensitive."""
    words = value.replace(",", " ").replace(":", " ").split()
    allowed = set(_ORDER)
    lo, hi = 0, len(_ORDER) - 1
    included: set[str] = set()
    for word in words:
        w = word.upper()
        if w.startswith(">="):
            name = w[2:]
            if name in _ORDER:
                lo = max(lo, _ORDER.index(name))
            elif name != "SSLV2":
                raise ConfigError(f"invalid TLS protocol version: {word}")
        elif w.startswith("<="):
            name = w[2:]
            if name in _ORDER:
                hi = min(hi, _ORDER.index(name))
            else:
                raise ConfigError(f"invalid TLS protocol version: {word}")
        elif w.startswith("!"):
            name = w[1:]
            if name in _ORDER:
                allowed.discard(name)
            elif name != "SSLV2":
                raise ConfigError(f"invalid TLS protocol version: {word}")
        elif w in _ORDER:
            included.add(w)
        elif w != "SSLV2":
            raise ConfigError(f"invalid TLS protocol version: {word}")
    if included:
        allowed &= included
    versions = [v for i, v in enumerate(_ORDER) if lo <= i <= hi and v in allowed]
    if not versions:
        raise ConfigError(f"no TLS protocol versions left in: {value}")
    # OpenSSL takes a contiguous range: from the lowest allowed to the highest.
    return _VERSIONS[versions[0]], _VERSIONS[versions[-1]]


def cipher_list(s: Settings, grade: str, exclude: str) -> str:
    grade = grade.strip().lower() or "medium"
    if grade not in ("high", "medium", "low", "export", "null"):
        raise ConfigError(f"invalid TLS cipher grade: {grade}")
    text = s.str(f"tls_{grade}_cipherlist")
    for item in exclude.replace(",", " ").split():
        text += f":!{item}"
    return text


@dataclass
class TlsPolicy:
    level: str  # none, may, encrypt
    wrapper: bool
    context: ssl.SSLContext | None
    ask_ccert: bool
    loglevel: int
    received_header: bool
    auth_only: bool
    fingerprint_digest: str


def _load_keys(ctx: ssl.SSLContext, s: Settings) -> int:
    """Load every certificate/key pair configured; the number loaded."""
    loaded = 0
    chain_files = s.list("smtpd_tls_chain_files")
    if chain_files:
        for path in chain_files:
            try:
                ctx.load_cert_chain(path)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(f"smtpd_tls_chain_files: cannot load {path}: {err}") from None
            loaded += 1
        return loaded
    for cert_p, key_p in (("smtpd_tls_cert_file", "smtpd_tls_key_file"),
                          ("smtpd_tls_eccert_file", "smtpd_tls_eckey_file")):
        cert, key = s.str(cert_p).strip(), s.str(key_p).strip()
        if not cert:
            continue
        try:
            ctx.load_cert_chain(cert, key or cert)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"{cert_p}: cannot load certificate {cert} with key "
                              f"{key or cert}: {err}") from None
        loaded += 1
    return loaded


def _base_context(s: Settings, mandatory: bool, sni_name: str = "") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    proto_param = "smtpd_tls_mandatory_protocols" if mandatory else "smtpd_tls_protocols"
    lo, hi = protocol_range(s.str(proto_param))
    # TLS 1.0 and 1.1 are never offered, whatever the list says: OpenSSL 3
    # refuses them at its default security level anyway.
    if lo is not None and lo < ssl.TLSVersion.TLSv1_2:
        lo = ssl.TLSVersion.TLSv1_2
    if hi is not None and hi < ssl.TLSVersion.TLSv1_2:
        raise ConfigError(f"{proto_param}: hato offers TLSv1.2 and TLSv1.3 only")
    try:
        if lo is not None:
            ctx.minimum_version = lo
        if hi is not None:
            ctx.maximum_version = hi
    except ValueError as err:
        raise ConfigError(f"{proto_param}: {err}") from None
    grade = s.str("smtpd_tls_mandatory_ciphers" if mandatory else "smtpd_tls_ciphers")
    exclude = s.str("smtpd_tls_exclude_ciphers")
    if mandatory:
        exclude += " " + s.str("smtpd_tls_mandatory_exclude_ciphers")
    try:
        ctx.set_ciphers(cipher_list(s, grade, exclude))
    except ssl.SSLError as err:
        raise ConfigError(f"smtpd_tls_ciphers: no usable ciphers: {err}") from None
    if s.bool("tls_preempt_cipherlist"):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    dh = s.str("smtpd_tls_dh1024_param_file").strip()
    if dh:
        try:
            ctx.load_dh_params(dh)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"smtpd_tls_dh1024_param_file: cannot load {dh}: {err}") from None
    grade_ec = s.str("smtpd_tls_eecdh_grade").strip().lower()
    if grade_ec in ("strong", "ultra"):
        try:
            ctx.set_ecdh_curve(s.str(f"tls_eecdh_{grade_ec}_curve"))
        except (ValueError, ssl.SSLError) as err:
            raise ConfigError(f"smtpd_tls_eecdh_grade: {err}") from None
    ctx.options |= ssl.OP_NO_COMPRESSION
    # No client-initiated renegotiation (TLS 1.2): each one costs the server
    # a handshake, and a flood of them a core. OpenSSL 3 refuses it by
    # default; older libraries allow it unless told.
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    return ctx


def _client_certs(ctx: ssl.SSLContext, s: Settings, ask: bool, require: bool) -> None:
    if not (ask or require):
        return
    cafile = s.str("smtpd_tls_CAfile").strip() or None
    capath = s.str("smtpd_tls_CApath").strip() or None
    if cafile or capath:
        try:
            ctx.load_verify_locations(cafile=cafile, capath=capath)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"smtpd_tls_CAfile: cannot load {cafile or capath}: {err}") \
                from None
    ctx.verify_mode = ssl.CERT_REQUIRED if require else ssl.CERT_OPTIONAL
    if not require:
        # As Postfix: a certificate that does not verify is taken, as
        # "Untrusted" (check_ccert_access, relay_clientcerts fingerprints).
        accept_unverified(ctx)


def tls_policy(s: Settings) -> TlsPolicy:
    """The TLS policy of an smtpd service; a ConfigError names what is wrong."""
    level = security_level(s)
    wrapper = s.bool("smtpd_tls_wrappermode")
    loglevel = s.int("smtpd_tls_loglevel")
    digest = s.str("smtpd_tls_fingerprint_digest").strip().lower() or "sha256"
    if level == "none" and not wrapper:
        return TlsPolicy(level, False, None, False, loglevel, False, False, digest)
    mandatory = level == "encrypt" or wrapper
    ctx = _base_context(s, mandatory)
    if not _load_keys(ctx, s):
        raise ConfigError("TLS is enabled (smtpd_tls_security_level or smtpd_tls_wrappermode) "
                          "but no certificate is configured (smtpd_tls_cert_file or "
                          "smtpd_tls_chain_files)")
    ask = s.bool("smtpd_tls_ask_ccert")
    require = s.bool("smtpd_tls_req_ccert") and level == "encrypt"
    _client_certs(ctx, s, ask, require)
    sni = s.str("tls_server_sni_maps").strip()
    if sni:
        ctx.sni_callback = _SniSelector(s, mandatory, ask, require, sni)
    return TlsPolicy(level, wrapper, ctx, ask or require, loglevel,
                     s.bool("smtpd_tls_received_header"), s.bool("smtpd_tls_auth_only"),
                     digest)


class _SniSelector:
    """tls_server_sni_maps: the server name the client asks for selects the
    key and certificate files (the table's value lists files holding keys
    and their chains, as smtpd_tls_chain_files)."""

    def __init__(self, s: Settings, mandatory: bool, ask: bool, require: bool, value: str):
        self.s, self.mandatory, self.ask, self.require = s, mandatory, ask, require
        self.tables = TableList.from_value(value, OpenFlags(fold_case=True),
                                           title="tls_server_sni_maps")
        self.contexts: dict[str, ssl.SSLContext] = {}

    def _lookup(self, name: str) -> str | None:
        found = self.tables.get(name)
        while found is None and "." in name:
            name = name.split(".", 1)[1]
            found = self.tables.get("." + name)
        return found

    def __call__(self, sock: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext):
        if not name:
            return None
        name = name.lower().rstrip(".")
        try:
            if name not in self.contexts:
                files = self._lookup(name)
                if files is None:
                    return None
                new = _base_context(self.s, self.mandatory)
                for path in files.replace(",", " ").split():
                    new.load_cert_chain(path)
                _client_certs(new, self.s, self.ask, self.require)
                self.contexts[name] = new
            sock.context = self.contexts[name]
        except (TableRetry, OSError, ssl.SSLError, ConfigError):
            return ssl.ALERT_DESCRIPTION_INTERNAL_ERROR
        return None


@dataclass
class TlsFacts:
    protocol: str
    cipher: str
    bits: int
    alg_bits: int
    peer_cert: bool
    trusted: bool
    fingerprint: str
    pkey_fingerprint: str
    subject: str
    issuer: str

    def summary(self) -> str:
        """``TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``."""
        return f"{self.protocol} with cipher {self.cipher} ({self.bits}/{self.alg_bits} bits)"

    def kind(self) -> str:
        if not self.peer_cert:
            return "Anonymous"
        return "Trusted" if self.trusted else "Untrusted"


def _colon_hex(data: bytes) -> str:
    return ":".join(f"{b:02X}" for b in data)


def _cn(name) -> str:
    for rdn in name or ():
        for key, value in rdn:
            if key == "commonName":
                return value
    return ""


def session_facts(ssl_object: ssl.SSLObject | ssl.SSLSocket, digest: str = "sha256") -> TlsFacts:
    cipher = ssl_object.cipher() or ("", "", 0)
    name, version, bits = cipher[0], ssl_object.version() or cipher[1], cipher[2] or 0
    der = ssl_object.getpeercert(binary_form=True)
    fingerprint = pkey = subject = issuer = ""
    trusted = False
    if der:
        algo = digest if digest in hashlib.algorithms_available else "sha256"
        fingerprint = _colon_hex(hashlib.new(algo, der).digest())
        try:
            from cryptography import x509
            from cryptography.hazmat.primitives import serialization

            cert = x509.load_der_x509_certificate(der)
            spki = cert.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
            pkey = _colon_hex(hashlib.new(algo, spki).digest())
        except Exception:
            pkey = ""
        info = ssl_object.getpeercert() or {}
        subject = _cn(info.get("subject"))
        issuer = _cn(info.get("issuer"))
        # OpenSSL's verification result; where it cannot be read, a
        # certificate that got through the handshake was verified.
        result = verify_result(ssl_object)
        trusted = result == 0 if result is not None else bool(info)
    return TlsFacts(version, name, bits, bits, bool(der), trusted, fingerprint, pkey,
                    subject, issuer)



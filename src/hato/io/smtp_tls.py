"""TLS for the smtp/lmtp client: an ``ssl.SSLContext`` for a resolved
:class:`~hato.policy.smtp_tls_policy.SmtpTlsPolicy`, the checks after the
handshake, DANE TLSA matching, and Postfix's log lines.

Parameters (``smtp_`` or ``lmtp_`` prefix): smtp_tls_CAfile / _CApath
(when both are empty hato trusts the system's CA store — Postfix trusts
nothing then; pass ``system_ca=False`` for that), smtp_tls_protocols /
_mandatory_protocols and smtp_tls_ciphers / _mandatory_ciphers through the
policy (TLS 1.2 is the floor, as for hato's server), smtp_tls_chain_files
or smtp_tls_cert_file / _key_file / _eccert_file / _eckey_file (client
certificate), smtp_tls_servername (SNI, through the policy).

Checks after the handshake (:func:`check_peer`), by level:

* may, encrypt: no check; the chain is evaluated against the CA store
  only for the log word (Trusted or Untrusted);
* fingerprint: the leaf certificate's digest or its public key's digest
  (smtp_tls_fingerprint_digest) must be one of the policy's;
* verify, secure: OpenSSL verifies the chain during the handshake
  (``CERT_REQUIRED``, a failure raises ``ssl.SSLCertVerificationError``:
  see :func:`handshake_error`), then a DNS subjectAltName (the CN when there
  is none) must match the policy's match list (``.domain`` matches any
  subdomain; ``*.`` wildcards match one or more labels, as Postfix's
  default tls_wildcard_matches_multiple_labels = yes);
* dane: :func:`dane_verify` over the caller's DNSSEC-validated TLSA records
  (:mod:`hato.io.smtp_dane` finds them); a failure carries OpenSSL's
  error (``num=65:No matching DANE TLSA records``) for Postfix's
  ``server certificate verification failed for ...`` line.

Failures raise :class:`TlsVerifyError` with Postfix's reasons (``Server
certificate not trusted``, ``Server certificate not verified``); delivery
defers with 4.7.5.

Log words (Postfix's tls_log_summary): ``Anonymous`` (no certificate),
``Untrusted`` (chain not trusted; at the dane levels: no TLSA match),
``Trusted`` (chain trusted, name not checked or not matched; a DANE match
through an insecure MX RRset), ``Verified`` (name matched at verify/secure,
or a fingerprint or DANE match).

DANE: :func:`dane_verify` ``(records, peer_chain_der, names=...)``
implements DANE-EE (usage 3: the leaf, no name or date checks) and DANE-TA
(usage 2: a certificate the server sent above the leaf, the signatures from
the leaf up to it, and the leaf's name among *names*), selectors 0 (whole
certificate) and 1 (SubjectPublicKeyInfo), matching types 0 (exact), 1
(SHA-256), 2 (SHA-512). Usages 0 and 1 are unusable for SMTP (RFC 7672).
:func:`select_tlsa` keeps the records Postfix would use (valid digest
lengths, ``tls_dane_digests``, digest agility). Fetching TLSA records with
the AD bit (``_25._tcp.mx.example``) and deciding usable / not found /
insecure is :mod:`hato.io.smtp_dane`'s job
(:func:`hato.policy.smtp_tls_policy.dane_level`).
"""

from __future__ import annotations

import functools
import hashlib
import os
import ssl
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..config.errors import ConfigError
from ..policy.smtp_tls_policy import SmtpTlsPolicy, normalize_fingerprint
from .tls import cipher_list, protocol_range

NOT_TRUSTED = "Server certificate not trusted"
NOT_VERIFIED = "Server certificate not verified"
HANDSHAKE_FAILURE = "Cannot start TLS: handshake failure"


class TlsVerifyError(Exception):
    """The peer failed the policy's checks: defer with *dsn* and *reason*.
    *result* is the session as far as it went (for the "Untrusted TLS
    connection established" line); *x509_error* the certificate
    verification error as OpenSSL would number it: (depth, number, text)."""

    def __init__(self, reason: str, *, dsn: str = "4.7.5", detail: str = "",
                 result: ClientTlsResult | None = None,
                 x509_error: tuple[int, int, str] | None = None):
        super().__init__(reason)
        self.reason = reason
        self.dsn = dsn
        self.detail = detail
        self.result = result
        self.x509_error = x509_error

    def verify_log(self, namaddr: str) -> str:
        """Postfix's tls_log_verify_error() line for *namaddr*
        (``mx.example[192.0.2.1]:25``): ``server certificate verification
        failed for mx.example[192.0.2.1]:25: num=65:No matching DANE TLSA
        records``; "" when no certificate verification error is known."""
        if self.x509_error is None:
            return ""
        depth, num, text = self.x509_error
        purpose = "CA" if depth > 0 else "server"
        if num in (X509_CERT_NOT_YET_VALID, X509_CERT_HAS_EXPIRED):
            when = "future date" if num == X509_CERT_NOT_YET_VALID else "expired"
            return f"{purpose} certificate verification failed for {namaddr}: " \
                   f"certificate has {when}"
        return f"{purpose} certificate verification failed for {namaddr}: num={num}:{text}"


# OpenSSL's X509_V_ERR_* numbers and texts that DANE verification reports.
X509_CERT_NOT_YET_VALID = 9
X509_CERT_HAS_EXPIRED = 10
X509_HOSTNAME_MISMATCH = 62
X509_DANE_NO_MATCH = 65
_X509_TEXT = {
    X509_CERT_NOT_YET_VALID: "certificate is not yet valid",
    X509_CERT_HAS_EXPIRED: "certificate has expired",
    X509_HOSTNAME_MISMATCH: "hostname mismatch",
    X509_DANE_NO_MATCH: "No matching DANE TLSA records",
}


# --------------------------------------------------------------------------
# The context


def _param(s, prefix: str, name: str) -> str:
    try:
        return s.str(f"{prefix}_{name}").strip()
    except Exception:
        return ""


def client_context(s, policy: SmtpTlsPolicy, *, prefix: str = "smtp",
                   system_ca: bool = True) -> ssl.SSLContext | None:
    """The context for *policy*; None at level none. *s* is a Settings
    snapshot. ConfigError names a parameter that cannot be used (delivery
    then defers: ``client TLS configuration problem``)."""
    if policy.level == "none":
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # Postfix's name rules, in check_peer()
    lo, hi = protocol_range(policy.protocols or ">=TLSv1.2")
    if lo is None or lo < ssl.TLSVersion.TLSv1_2:
        lo = ssl.TLSVersion.TLSv1_2
    if hi is not None and hi < ssl.TLSVersion.TLSv1_2:
        raise ConfigError(f"{prefix}_tls_protocols: hato speaks TLSv1.2 and TLSv1.3 only "
                          f"({policy.protocols})")
    ctx.minimum_version = lo
    if hi is not None:
        ctx.maximum_version = hi
    try:
        ctx.set_ciphers(cipher_list(s, policy.ciphers or "medium",
                                    policy.exclude.replace(" ", ",")))
    except ssl.SSLError as err:
        raise ConfigError(f"{prefix}_tls_ciphers: no usable ciphers: {err}") from None
    ctx.options |= ssl.OP_NO_COMPRESSION
    cafile, capath = trust_locations(s, prefix=prefix)
    if policy.verify_chain:
        ctx.verify_mode = ssl.CERT_REQUIRED
        if policy.tafiles:
            # Trust anchor files (tafile=, smtp_tls_trust_anchor_file) stand
            # in for the CA files.
            for ta in policy.tafiles:
                try:
                    ctx.load_verify_locations(cafile=ta)
                except (OSError, ssl.SSLError) as err:
                    raise ConfigError(f"{prefix}_tls_trust_anchor_file: cannot load {ta}: "
                                      f"{err}") from None
        elif cafile or capath:
            try:
                ctx.load_verify_locations(cafile=cafile or None, capath=capath or None)
            except (OSError, ssl.SSLError) as err:
                raise ConfigError(f"{prefix}_tls_CAfile: cannot load {cafile or capath}: "
                                  f"{err}") from None
        elif system_ca:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    _client_certificate(ctx, s, prefix)
    return ctx


def trust_locations(s, *, prefix: str = "smtp") -> tuple[str, str]:
    """(smtp_tls_CAfile, smtp_tls_CApath)."""
    return _param(s, prefix, "tls_CAfile"), _param(s, prefix, "tls_CApath")


def _client_pairs(s, prefix: str) -> list[tuple[str, str]]:
    """(certificate file, key file) pairs of the client's own certificates."""
    try:
        chain_files = s.list(f"{prefix}_tls_chain_files")
    except Exception:
        chain_files = []
    pairs: list[tuple[str, str]] = [(f, f) for f in chain_files]
    if not pairs:
        for cert_p, key_p in (("tls_cert_file", "tls_key_file"),
                              ("tls_eccert_file", "tls_eckey_file")):
            cert = _param(s, prefix, cert_p)
            if cert:
                pairs.append((cert, _param(s, prefix, key_p) or cert))
    return pairs


#: file name -> a name that reads the copy made with root's privileges
_held: dict[str, str] = {}


def hold_client_files(s, prefix: str = "smtp") -> None:
    """Before the smtp or lmtp worker drops root's privileges (Postfix's
    smtp loads its keys in pre_init): read the client's certificate and key
    files into memory (an anonymous memfd each), so that the contexts made
    later, one per TLS policy, load them although the key may be readable
    by root alone. A file that cannot be read is left to the context,
    which reports it."""
    for pair in _client_pairs(s, prefix):
        for path in pair:
            if path in _held:
                continue
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fd = os.memfd_create("hato-tls", os.MFD_CLOEXEC)
            os.write(fd, data)
            # the process may reopen its own descriptors after it dropped
            # root's privileges; each open starts at the beginning
            _held[path] = f"/proc/self/fd/{fd}"


def _client_certificate(ctx: ssl.SSLContext, s, prefix: str) -> None:
    for cert, key in _client_pairs(s, prefix):
        try:
            ctx.load_cert_chain(_held.get(cert, cert), _held.get(key, key))
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(f"{prefix}_tls_cert_file: cannot load certificate {cert} with "
                              f"key {key}: {err}") from None


# --------------------------------------------------------------------------
# What the peer sent


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[bytes]:
    """The certificates the server sent, leaf first, DER."""
    getter = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13
    if getter is None:
        inner = getattr(ssl_object, "_sslobj", None)
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is not None:
        try:
            chain = getter() or []
            out = []
            for cert in chain:
                if isinstance(cert, bytes):
                    out.append(cert)
                else:
                    out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
            if out:
                return out
        except Exception:
            pass
    leaf = ssl_object.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def _load(der: bytes):
    from cryptography import x509

    return x509.load_der_x509_certificate(der)


def _spki(cert) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)


def certificate_names(der: bytes) -> list[str]:
    """The names Postfix matches: DNS subjectAltNames, else the CN."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = _load(der)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if names:
        return [n.lower().rstrip(".") for n in names]
    return [str(a.value).lower().rstrip(".")
            for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def name_matches(certid: str, pattern: str, *, multi_label: bool = True) -> bool:
    """Postfix's match_servername() for one certificate name and one match
    list name (already expanded: ``.domain`` = any subdomain)."""
    certid = certid.lower().rstrip(".")
    domain = pattern.lower().rstrip(".")
    if domain.startswith(".") and len(domain) > 1:
        parent = domain[1:]
        return (len(certid) > len(parent) + 1 and certid.endswith(parent)
                and certid[-len(parent) - 1] == ".")
    if certid == domain:
        return True
    if certid.startswith("*.") and len(certid) > 2:
        dot = domain.find(".")
        if dot < 0:
            return False
        parent = domain[dot:]
        suffix = certid[1:]
        if multi_label:
            return len(suffix) <= len(parent) and domain.endswith(suffix) and dot > 0
        return parent == suffix
    return False


def match_names(der: bytes, names: Iterable[str]) -> str | None:
    """The first certificate name that matches one of *names*, or None."""
    patterns = list(names)
    for certid in certificate_names(der):
        for pattern in patterns:
            if name_matches(certid, pattern):
                return certid
    return None


def digests(der: bytes, algorithm: str = "sha256") -> tuple[str, str]:
    """(certificate digest, public key digest), upper-case hex, no colons."""
    algo = algorithm.lower() if algorithm.lower() in hashlib.algorithms_available else "sha256"
    cert_fp = hashlib.new(algo, der).hexdigest().upper()
    try:
        pkey_fp = hashlib.new(algo, _spki(_load(der))).hexdigest().upper()
    except Exception:
        pkey_fp = ""
    return cert_fp, pkey_fp


def colon_hex(hexdigits: str) -> str:
    return ":".join(hexdigits[i:i + 2] for i in range(0, len(hexdigits), 2))


# --------------------------------------------------------------------------
# Trust for the log word at may/encrypt/fingerprint/dane


@functools.lru_cache(maxsize=16)
def _store_certs(cafile: str, capath: str, system: bool) -> tuple:
    from cryptography import x509

    files: list[str] = []
    if cafile:
        files.append(cafile)
    if capath and os.path.isdir(capath):
        files.extend(os.path.join(capath, n) for n in sorted(os.listdir(capath)))
    if not cafile and not capath and system:
        paths = ssl.get_default_verify_paths()
        if paths.cafile:
            files.append(paths.cafile)
    certs = []
    seen = set()
    for path in files:
        try:
            real = os.path.realpath(path)
            if real in seen or not os.path.isfile(real):
                continue
            seen.add(real)
            with open(real, "rb") as fh:
                data = fh.read()
            with warnings.catch_warnings():  # odd serial numbers in system bundles
                warnings.simplefilter("ignore")
                certs.extend(x509.load_pem_x509_certificates(data))
        except (OSError, ValueError):
            continue
    return tuple(certs)


def chain_trusted(chain: Sequence[bytes], *, cafile: str = "", capath: str = "",
                  system_ca: bool = True) -> bool:
    """Whether *chain* leads to a CA of the store (cryptography's verifier;
    False when it cannot tell). Only the log word depends on it."""
    if not chain:
        return False
    try:
        from cryptography import x509
        from cryptography.x509.verification import PolicyBuilder, Store

        roots = _store_certs(cafile, capath, system_ca)
        if not roots:
            return False
        leaf = _load(chain[0])
        names = certificate_names(chain[0])
        if not names:
            return False
        # Any of the certificate's own names: only the chain is in question.
        name = names[0][2:] if names[0].startswith("*.") else names[0]
        builder = PolicyBuilder().store(Store(list(roots)))
        relaxed = _relaxed_policies()
        if relaxed is not None:
            # Like OpenSSL, not the Web PKI profile: no AKI/keyUsage demands.
            builder = builder.extension_policies(ca_policy=relaxed[0], ee_policy=relaxed[1])
        verified = builder.build_server_verifier(x509.DNSName(name)).verify(
            leaf, [_load(d) for d in chain[1:]])
        for cert in verified[1:]:
            if not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
                return False
        return True
    except Exception:
        return False


def _relaxed_policies():
    try:
        from cryptography import x509
        from cryptography.x509.verification import Criticality, ExtensionPolicy
    except ImportError:  # cryptography < 45
        return None
    ca = ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, Criticality.AGNOSTIC, None)
    ee = ExtensionPolicy.permit_all().require_present(
        x509.SubjectAlternativeName, Criticality.AGNOSTIC, None)
    return ca, ee


# --------------------------------------------------------------------------
# DANE


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    @classmethod
    def of(cls, record) -> Tlsa:
        """From a Tlsa, a (usage, selector, mtype, data) tuple (data as bytes
        or hex text), or a dnspython TLSA rdata."""
        if isinstance(record, Tlsa):
            return record
        if hasattr(record, "usage") and hasattr(record, "cert"):
            return cls(int(record.usage), int(record.selector), int(record.mtype),
                       bytes(record.cert))
        usage, selector, mtype, data = record
        if isinstance(data, str):
            data = bytes.fromhex(data.replace(":", "").replace(" ", ""))
        return cls(int(usage), int(selector), int(mtype), bytes(data))

    @property
    def usable(self) -> bool:
        """DANE-TA(2) or DANE-EE(3), selector 0/1, matching type 0/1/2."""
        return self.usage in (2, 3) and self.selector in (0, 1) and self.mtype in (0, 1, 2)

    def matches(self, cert_der: bytes) -> bool:
        body = cert_der if self.selector == 0 else _spki(_load(cert_der))
        if self.mtype == 0:
            value = body
        elif self.mtype == 1:
            value = hashlib.sha256(body).digest()
        else:
            value = hashlib.sha512(body).digest()
        return value == self.data


def tlsa_usable(records: Iterable) -> bool:
    """True when at least one record is usable (else the TLSA RRset is
    "unusable": dane falls back to encrypt)."""
    return any(Tlsa.of(r).usable for r in records)


#: tls_dane_digests names → TLSA matching types (IANA).
_DIGEST_MTYPES = {"sha256": 1, "sha512": 2}
_DIGEST_LENGTHS = {1: 32, 2: 64}


def dane_digests(text: str | Sequence[str]) -> tuple[list[int], list[str]]:
    """``tls_dane_digests`` (``sha512 sha256``, also ``sha256=1``) as the
    matching types in preference order, the full value (0) first, and the
    warnings Postfix logs for elements it cannot use."""
    items = text.replace(",", " ").split() if isinstance(text, str) else list(text)
    order = [0]
    warnings: list[str] = []
    for item in items:
        name, sep, value = item.partition("=")
        mtype = _DIGEST_MTYPES.get(name.lower())
        if sep and (not value.isdigit() or (mtype is not None and int(value) != mtype)):
            warnings.append(f"Non-standard value in tls_dane_digests: {item}")
            continue
        if mtype is None:
            warnings.append(f"Unimplemented digest algorithm in tls_dane_digests: {item}")
            continue
        if mtype in order:
            warnings.append(f"Duplicate element in tls_dane_digests: {item}")
            continue
        order.append(mtype)
    return order, warnings


def select_tlsa(records: Iterable, mtypes: Sequence[int] = (0, 2, 1)) -> list[Tlsa]:
    """The records of a validated TLSA RRset that hato can use, as Postfix
    filters them (tls_dane.c): DANE-TA(2) and DANE-EE(3) only, selectors 0
    and 1, matching types in *mtypes* (tls_dane_digests) with a digest of
    the right length; then digest agility (RFC 7671 section 9): for each
    usage and selector only the most preferred matching type present is
    kept. An empty result is an "unusable" RRset."""
    pref = {m: i for i, m in enumerate(mtypes)}
    kept: list[Tlsa] = []
    for rec in (Tlsa.of(r) for r in records):
        if rec.usage not in (2, 3) or rec.selector not in (0, 1) or rec.mtype not in pref:
            continue
        length = _DIGEST_LENGTHS.get(rec.mtype)
        if length is not None and len(rec.data) != length:
            continue
        if rec.mtype == 0 and not _full_value_ok(rec):
            continue
        kept.append(rec)
    best: dict[tuple[int, int], int] = {}
    for rec in kept:
        key = (rec.usage, rec.selector)
        best[key] = min(best.get(key, len(pref)), pref[rec.mtype])
    return [r for r in kept if pref[r.mtype] == best[(r.usage, r.selector)]]


def _full_value_ok(rec: Tlsa) -> bool:
    """A matching type 0 record holds a whole certificate or public key."""
    try:
        if rec.selector == 0:
            _load(rec.data)
        else:
            from cryptography.hazmat.primitives.serialization import load_der_public_key

            load_der_public_key(rec.data)
    except (ValueError, TypeError):
        return False
    return True


def _issued_chain_ok(chain: Sequence[bytes], top: int) -> bool:
    certs = [_load(d) for d in chain[:top + 1]]
    for child, parent in zip(certs, certs[1:]):
        try:
            child.verify_directly_issued_by(parent)
        except Exception:
            return False
    return True


def _validity_error(chain: Sequence[bytes], below: int, now) -> tuple[int, int] | None:
    """(depth, X509 error) of the first certificate under the trust anchor
    at index *below* that is expired or not yet valid, else None."""
    for depth in range(below):
        cert = _load(chain[depth])
        if now < cert.not_valid_before_utc:
            return depth, X509_CERT_NOT_YET_VALID
        if now > cert.not_valid_after_utc:
            return depth, X509_CERT_HAS_EXPIRED
    return None


def _self_issued(der: bytes) -> bool:
    cert = _load(der)
    return cert.issuer == cert.subject


@dataclass(frozen=True)
class DaneCheck:
    """The outcome of :func:`dane_verify`: *ok*, or the X509 error as
    OpenSSL's DANE verification reports it (*depth*, *error*, *text*), and
    what matched (``DANE-EE`` or ``DANE-TA``)."""

    ok: bool
    matched: str = ""
    depth: int = 0
    error: int = 0
    text: str = ""


def dane_verify(records: Iterable, peer_chain_der: Sequence[bytes], *,
                names: Iterable[str] | None = None, now=None) -> DaneCheck:
    """Check the server's chain (leaf first, DER) against TLSA records, as
    OpenSSL's DANE verification does for SMTP (RFC 7672): DANE-EE (3)
    matches the leaf alone, without name or date checks; DANE-TA (2)
    matches a certificate the server sent above the leaf, whose issuing
    chain down to the leaf must verify, the certificates under it must be
    within their validity, and — when *names* is given (the TLSA base
    domain and the MX names, as Postfix) — the leaf must carry one of them.
    A failure says why: ``No matching DANE TLSA records`` (65),
    ``hostname mismatch`` (62), ``certificate has expired`` (10), ...
    The records must come from a DNSSEC-validated answer (AD bit): that is
    the caller's duty."""
    import datetime

    chain = list(peer_chain_der)
    if not chain:
        return DaneCheck(False, depth=0, error=X509_DANE_NO_MATCH,
                         text=_X509_TEXT[X509_DANE_NO_MATCH])
    when = now or datetime.datetime.now(datetime.timezone.utc)
    recs = [t for t in (Tlsa.of(r) for r in records) if t.usable]
    name_list = list(names) if names is not None else None
    failure: DaneCheck | None = None
    for rec in recs:
        try:
            if rec.usage == 3:
                if rec.matches(chain[0]):
                    return DaneCheck(True, "DANE-EE")
                continue
            for i in range(1, len(chain)):
                if not (rec.matches(chain[i]) and _issued_chain_ok(chain, i)):
                    continue
                bad = _validity_error(chain, i, when)
                if bad is not None:
                    failure = failure or DaneCheck(False, depth=bad[0], error=bad[1],
                                                   text=_X509_TEXT[bad[1]])
                    continue
                if name_list is not None and not match_names(chain[0], name_list):
                    failure = failure or DaneCheck(False, depth=0,
                                                   error=X509_HOSTNAME_MISMATCH,
                                                   text=_X509_TEXT[X509_HOSTNAME_MISMATCH])
                    continue
                return DaneCheck(True, "DANE-TA")
        except ValueError:
            continue
    if failure is not None:
        return failure
    # OpenSSL reports the missing match at the top of the chain it built; a
    # self-signed leaf is the whole chain.
    depth = 0
    try:
        if not _self_issued(chain[0]):
            depth = len(chain) - 1
    except ValueError:
        pass
    return DaneCheck(False, depth=depth, error=X509_DANE_NO_MATCH,
                     text=_X509_TEXT[X509_DANE_NO_MATCH])


def match_tlsa(records: Iterable, peer_chain_der: Sequence[bytes], *,
               names: Iterable[str] | None = None) -> bool:
    """Whether the server's chain matches one usable TLSA record
    (:func:`dane_verify`)."""
    return dane_verify(records, peer_chain_der, names=names).ok


# --------------------------------------------------------------------------
# After the handshake


@dataclass
class ClientTlsResult:
    """An established client TLS session, in Postfix's words."""

    kind: str  # Anonymous, Untrusted, Trusted, Verified
    protocol: str
    cipher: str
    bits: int
    alg_bits: int
    chain: list[bytes] = field(default_factory=list, repr=False)
    fingerprint: str = ""  # colon hex, smtp_tls_fingerprint_digest of the leaf
    pkey_fingerprint: str = ""
    matched: str = ""  # the certificate name, fingerprint or TLSA that matched
    subject: str = ""
    issuer: str = ""

    def summary(self) -> str:
        return f"{self.protocol} with cipher {self.cipher} ({self.bits}/{self.alg_bits} bits)"

    def log_line(self, host: str, addr: str, port: int) -> str:
        """``Verified TLS connection established to mx[1.2.3.4]:25: TLSv1.3
        with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)``."""
        return (f"{self.kind} TLS connection established to {host}[{addr}]:{port}: "
                f"{self.summary()}")


def handshake_error(err: BaseException, policy: SmtpTlsPolicy) -> TlsVerifyError:
    """The deferral for a failed handshake (at may the caller instead
    retries in plaintext): an untrusted chain at verify/secure is ``Server
    certificate not trusted``, anything else ``Cannot start TLS: handshake
    failure``."""
    if isinstance(err, ssl.SSLCertVerificationError) and policy.verify_chain:
        return TlsVerifyError(NOT_TRUSTED, detail=str(getattr(err, "verify_message", err)))
    return TlsVerifyError(HANDSHAKE_FAILURE, detail=str(err))


def _cn(der: bytes, issuer: bool) -> str:
    from cryptography.x509.oid import NameOID

    cert = _load(der)
    name = cert.issuer if issuer else cert.subject
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else ""


def check_peer(ssl_object: ssl.SSLObject | ssl.SSLSocket, policy: SmtpTlsPolicy, *,
               tlsa: Iterable = (), dane_names: Iterable[str] | None = None,
               dane_secured: bool = True,
               cafile: str = "", capath: str = "", system_ca: bool = True) -> ClientTlsResult:
    """Check an established session against *policy* (see the module doc);
    TlsVerifyError when a mandatory check fails. *tlsa*: the records at
    level dane; *dane_names*: the names a DANE-TA leaf may carry (default:
    the policy's host name and next-hop domain); *dane_secured*: False when
    the TLSA records were found through an insecure MX RRset (Postfix's
    "half-dane": a match is logged ``Trusted``, never ``Verified``).
    *cafile*/*capath*/*system_ca* serve only the Trusted/Untrusted word
    below verify."""
    cipher = ssl_object.cipher() or ("", "", 0)
    protocol = ssl_object.version() or cipher[1] or ""
    bits = int(cipher[2] or 0)
    chain = peer_chain(ssl_object)
    result = ClientTlsResult("Anonymous", protocol, cipher[0], bits, bits, chain)
    if not chain:
        if policy.mandatory and policy.level != "encrypt":
            raise TlsVerifyError(NOT_TRUSTED, detail="the server sent no certificate")
        return result
    leaf = chain[0]
    cert_fp, pkey_fp = digests(leaf, policy.fingerprint_digest)
    result.fingerprint = colon_hex(cert_fp)
    result.pkey_fingerprint = colon_hex(pkey_fp)
    try:
        result.subject, result.issuer = _cn(leaf, False), _cn(leaf, True)
    except Exception:
        pass
    level = policy.level
    if policy.verify_chain:
        trusted = True  # CERT_REQUIRED: OpenSSL refused the handshake otherwise
    elif level in ("dane", "dane-only"):
        trusted = False  # DANE alone decides below (the CA store plays no part)
    else:
        trusted = chain_trusted(chain, cafile=cafile, capath=capath, system_ca=system_ca)
    result.kind = "Trusted" if trusted else "Untrusted"
    if level in ("verify", "secure"):
        matched = match_names(leaf, policy.match_names())
        if matched is None:
            raise TlsVerifyError(NOT_VERIFIED, detail="server certificate name mismatch: "
                                 + ", ".join(certificate_names(leaf)))
        result.kind, result.matched = "Verified", matched
    elif level == "fingerprint":
        allowed = {normalize_fingerprint(f) for f in policy.fingerprints}
        hit = cert_fp if cert_fp in allowed else pkey_fp if pkey_fp in allowed else ""
        if not hit:
            raise TlsVerifyError(NOT_VERIFIED, detail=f"fingerprint {colon_hex(cert_fp)} "
                                 "not among the allowed ones")
        result.kind, result.matched = "Verified", colon_hex(hit)
    elif level in ("dane", "dane-only"):
        names = list(dane_names) if dane_names is not None else [
            n for n in (policy.hostname, policy.nexthop) if n]
        outcome = dane_verify(tlsa, chain, names=names)
        if not outcome.ok:
            raise TlsVerifyError(NOT_VERIFIED, detail=outcome.text, result=result,
                                 x509_error=(outcome.depth, outcome.error, outcome.text))
        result.kind = "Verified" if dane_secured else "Trusted"
        result.matched = outcome.matched
    return result


__all__ = [
    "ClientTlsResult", "DaneCheck", "HANDSHAKE_FAILURE", "NOT_TRUSTED", "NOT_VERIFIED",
    "Tlsa", "TlsVerifyError", "certificate_names", "chain_trusted", "check_peer",
    "client_context", "colon_hex", "dane_digests", "dane_verify", "digests",
    "handshake_error", "match_names", "match_tlsa", "name_matches", "peer_chain",
    "select_tlsa", "tlsa_usable", "trust_locations",
]

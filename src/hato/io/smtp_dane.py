"""DANE for the smtp and lmtp clients (RFC 7672): which TLSA records a
server has, from DNSSEC-validated answers, as Postfix's dane_init()
(smtp_tls_policy.c) and tls_dane_resolve() (tls_dane.c) find them.

hato trusts the AD bit of its resolver (``hato_dns_servers``, else
/etc/resolv.conf), which must be a validating resolver, as Postfix does
with ``smtp_dns_support_level = dnssec``. The MX and address lookups of
the route (:mod:`hato.io.smtp_route`) record on each
:class:`~hato.policy.smtp_route.Candidate` whether they were validated;
:class:`DaneResolver` then decides, for one candidate at level ``dane`` or
``dane-only``, one of the ``DANE_*`` outcomes of
:mod:`hato.policy.smtp_tls_policy`:

* ``smtp_dns_support_level`` is not ``dnssec``, or ``smtp_host_lookup``
  has no ``dns``: "dnssec lookups disabled" (dane: may with a warning;
  dane-only: invalid policy). The same for ``ignore_mx_lookup_error =
  yes`` ("MX lookup errors ignored") and an unusable ``tls_dane_digests``;
* the host was named by an MX RRset that is not validated: "non DNSSEC
  destination" with dane-only or ``smtp_tls_dane_insecure_mx_policy =
  may``; otherwise the TLSA records are still looked up, and with records
  the policy decides: ``dane`` checks them (a match is logged
  ``Trusted``, not ``Verified``), ``encrypt`` gives up on authentication
  ("Verification not possible, MX RRset is insecure");
* the host's address records are not validated (an address literal, a
  ``[192.0.2.1]`` next hop): no TLSA lookup, "no TLSA records found"
  (dane: may; dane-only: defer). For a host name that is a CNAME, the
  TLSA records are looked up when the CNAME itself is validated;
* ``_25._tcp.mx.example`` TLSA (the port of the connection; the CNAME
  target first, then the name itself): a validated RRset → the usable
  records (:func:`hato.io.smtp_tls.select_tlsa`: DANE-TA and DANE-EE,
  ``tls_dane_digests``) or "TLSA records unusable" (dane: encrypt); an
  answer without the AD bit, NXDOMAIN or NODATA → "no TLSA records
  found"; SERVFAIL or a timeout → "TLSA lookup error for host:port"
  (4.7.5, with the warning ``DANE TLSA lookup problem: ...``).

A DANE-TA match requires the server's certificate to carry the TLSA base
domain or the MX lookup's domain (the next hop), as Postfix.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.errors import ConfigError
from ..policy.dnsquery import DnsTempFail
from ..policy.smtp_route import Candidate
from ..policy.smtp_tls_policy import (
    DANE_INSECURE,
    DANE_INSECURE_MX_ENCRYPT,
    DANE_LOOKUP_ERROR,
    DANE_MX_ERRORS_IGNORED,
    DANE_NO_SUPPORT,
    DANE_NOT_FOUND,
    DANE_UNAVAILABLE,
    DANE_UNIX_SOCKET,
    DANE_UNUSABLE,
    DANE_USABLE,
    DANE_USABLE_INSECURE_MX,
)
from .dns import Resolver
from .smtp_route import dns_support_level
from .smtp_tls import Tlsa, dane_digests, select_tlsa

__all__ = ["DaneLookup", "DaneResolver", "insecure_mx_policy", "parse_tlsa_text"]

INSECURE_MX_POLICIES = ("may", "encrypt", "dane")


@dataclass(frozen=True)
class DaneLookup:
    """What the DNS says about one server, for the TLS policy: the
    *outcome* (a ``DANE_*`` value), the usable *records*, the TLSA
    *base_domain*, the *names* a DANE-TA certificate may carry, and the
    *warnings* to log."""

    outcome: str
    records: tuple[Tlsa, ...] = ()
    base_domain: str = ""
    names: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def secured(self) -> bool:
        """A match authenticates the server fully (the MX RRset, if any,
        was validated too): Postfix logs ``Verified``, else ``Trusted``."""
        return self.outcome == DANE_USABLE


def parse_tlsa_text(text: str) -> Tlsa | None:
    """A TLSA record in presentation form (``3 1 1 ABCD...``; the data may
    be split by blanks), or None when it does not parse."""
    parts = text.split()
    if len(parts) < 4:
        return None
    try:
        return Tlsa(int(parts[0]), int(parts[1]), int(parts[2]),
                    bytes.fromhex("".join(parts[3:])))
    except ValueError:
        return None


def insecure_mx_policy(settings) -> str:
    """``smtp_tls_dane_insecure_mx_policy``: may, encrypt or dane.
    ConfigError for another value (Postfix's smtp(8) stops with it)."""
    value = settings.str("smtp_tls_dane_insecure_mx_policy").strip().lower()
    if value not in INSECURE_MX_POLICIES:
        raise ConfigError(f'invalid smtp_tls_dane_insecure_mx_policy: "{value}"')
    return value


class DaneResolver:
    """The DANE side of the TLS policy for an smtp (or lmtp) service: its
    parameters from a Settings snapshot, TLSA lookups through a
    DNSSEC-asking :class:`~hato.io.dns.Resolver` (made on first use unless
    *resolver* is given). ConfigError for an invalid parameter."""

    def __init__(self, settings, prefix: str = "smtp", *, resolver: Resolver | None = None):
        self.settings = settings
        self.prefix = prefix
        self.dnssec = dns_support_level(settings, prefix) == "dnssec"
        lookups = {w.lower() for w in settings.list(f"{prefix}_host_lookup")} or {"dns"}
        self.dns_hosts = "dns" in lookups
        self.ignore_mx_errors = prefix == "smtp" and settings.bool("ignore_mx_lookup_error")
        self.insecure_mx = insecure_mx_policy(settings) if prefix == "smtp" else "dane"
        self.mtypes, problems = dane_digests(settings.list("tls_dane_digests"))
        self.config_warnings: tuple[str, ...] = ()
        if problems:
            self.config_warnings = (*problems,
                                    "digest algorithm initializaton failed, no DANE support")
        self._resolver = resolver

    @property
    def resolver(self) -> Resolver:
        if self._resolver is None:
            self._resolver = Resolver.from_settings(self.settings, smtp_client=True,
                                                    dnssec=True)
        return self._resolver

    # -- dane_init() ----------------------------------------------------------------

    def lookup(self, cand: Candidate, level: str = "dane") -> DaneLookup:
        """The outcome for a connection to *cand* at *level* (dane or
        dane-only)."""
        if cand.path is not None or not cand.port:
            return DaneLookup(DANE_UNIX_SOCKET)
        if self.config_warnings:
            return DaneLookup(DANE_NO_SUPPORT)
        if not self.dnssec or not self.dns_hosts:
            return DaneLookup(DANE_UNAVAILABLE)
        if self.ignore_mx_errors:
            return DaneLookup(DANE_MX_ERRORS_IGNORED)
        insecure_mx = bool(cand.mx_domain) and not cand.mx_dnssec
        if insecure_mx and (level == "dane-only" or self.insecure_mx == "may"):
            return DaneLookup(DANE_INSECURE)
        found = self._resolve(cand)
        if found.outcome != DANE_USABLE:
            return found
        usable = tuple(select_tlsa(found.records, self.mtypes))
        if not usable:
            return DaneLookup(DANE_UNUSABLE, base_domain=found.base_domain)
        if insecure_mx and self.insecure_mx == "encrypt":
            return DaneLookup(DANE_INSECURE_MX_ENCRYPT, base_domain=found.base_domain)
        names = [found.base_domain]
        if cand.mx_domain and cand.mx_domain.lower() not in names:
            names.append(cand.mx_domain.lower())
        return DaneLookup(DANE_USABLE_INSECURE_MX if insecure_mx else DANE_USABLE, usable,
                          found.base_domain, tuple(names))

    # -- tls_dane_resolve() ---------------------------------------------------------

    def _resolve(self, cand: Candidate) -> DaneLookup:
        """The validated TLSA RRset of the host (outcome DANE_USABLE, its
        records not yet filtered), or not found, or a lookup error."""
        qname = cand.host.lower().rstrip(".")
        rname = (cand.canonical or qname).lower().rstrip(".")
        is_cname = rname != qname
        if not cand.dnssec:
            if not is_cname:
                return DaneLookup(DANE_NOT_FOUND)
            try:
                got = self.resolver.reply(qname, "CNAME")
            except DnsTempFail:
                return DaneLookup(DANE_LOOKUP_ERROR, warnings=(
                    f"DNSSEC status lookup error for {qname}: {_dns_text(qname, 'CNAME')}",))
            if not got.records:
                return DaneLookup(DANE_LOOKUP_ERROR, warnings=(
                    f"DNSSEC status lookup error for {qname}: no longer a CNAME",))
            if not got.secure:
                return DaneLookup(DANE_NOT_FOUND)
        # The CNAME target first when its address records are validated;
        # then (nothing there, or only the alias is validated) the name itself.
        if cand.dnssec:
            result = self._tlsa(rname, cand.port)
            if result.outcome != DANE_NOT_FOUND or not is_cname:
                return result
        return self._tlsa(qname, cand.port)

    def _tlsa(self, host: str, port: int) -> DaneLookup:
        """dane_lookup(): ``_port._tcp.host`` TLSA, validated or not."""
        name = f"_{port}._tcp.{host}"
        try:
            got = self.resolver.reply(name, "TLSA")
        except DnsTempFail:
            return DaneLookup(DANE_LOOKUP_ERROR, base_domain=host, warnings=(
                f"DANE TLSA lookup problem: {_dns_text(name, 'TLSA')}",))
        if not got.records or not got.secure:
            return DaneLookup(DANE_NOT_FOUND, base_domain=host)
        records = tuple(r for r in (parse_tlsa_text(t) for t in got.records) if r is not None)
        return DaneLookup(DANE_USABLE, records, host)


def _dns_text(name: str, rtype: str) -> str:
    """Postfix's dns_lookup() text for a temporary failure."""
    return (f"Host or domain name not found. Name service error for name={name} "
            f"type={rtype}: Host not found, try again")

"""The smtp/lmtp client's TLS policy, pure: the global level, the
``smtp_tls_policy_maps`` lookup and entry syntax, and the resolved policy
for one destination (Postfix's smtp_tls_policy.c).

Global level: ``smtp_tls_security_level`` when set, else the legacy
``smtp_enforce_tls`` (verify with ``smtp_tls_enforce_peername``, else
encrypt), else ``smtp_use_tls`` (may), else none.

Policy table lookup (only the next-hop destination, never the MX host
name): a destination that is not a valid host name — ``[mx.example]:587``,
``[mx.example]``, ``example.com:587`` — is looked up once, as written; a
domain is looked up as itself, then as each parent with a leading dot
(``a.example.com``, ``.example.com``, ``.com``), first match wins.
Entries: a level then attributes, separated by blanks or commas::

    example.com        verify match=hostname:nexthop ciphers=high protocols=>=TLSv1.2
    [mx.example]:587   encrypt
    .example.net       secure match=.example.net
    pinned.example     fingerprint match=AB:CD:...|12:34:...

Attributes: ``ciphers`` (grade), ``protocols`` (``:``-separated list),
``exclude`` — each at most once; ``match`` (may repeat: ``:``-separated
names at verify/secure, ``|``-separated digests at fingerprint, invalid at
other levels); ``tafile`` (verify/secure only); ``servername`` and
``connection_reuse``. With level none the attributes are ignored (with a
warning). Any other error makes the policy invalid: delivery defers with
``4.7.5 client TLS configuration problem`` (:class:`TlsPolicyError`).

Defaults when an entry does not say: protocols ``smtp_tls_protocols`` at
may, else ``smtp_tls_mandatory_protocols``; ciphers ``smtp_tls_ciphers`` at
may, else ``smtp_tls_mandatory_ciphers``; exclusions
``smtp_tls_exclude_ciphers`` (+ ``smtp_tls_mandatory_exclude_ciphers``
above may) unless ``exclude=`` is given, plus ``eNULL`` at encrypt and
``aNULL`` at dane/fingerprint/verify/secure; match names
``smtp_tls_verify_cert_match`` (verify) or ``smtp_tls_secure_cert_match``
(secure); fingerprints ``smtp_tls_fingerprint_cert_match`` with
``smtp_tls_fingerprint_digest``. A fingerprint policy with no digest at all
is invalid.

DANE (``dane``, ``dane-only``): TLSA records come from the caller's
DNSSEC-validating lookups (:mod:`hato.io.smtp_dane`); :func:`dane_level`
(or ``resolve_policy(..., dane_outcome=...)``) turns their outcome into the
effective level as Postfix's dane_init() does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

LEVELS = ("none", "may", "encrypt", "dane", "dane-only", "fingerprint", "verify", "secure")
_RANK = {name: i for i, name in enumerate(LEVELS)}

CONFIG_PROBLEM = "client TLS configuration problem"


class TlsPolicyError(Exception):
    """The policy for a destination is unusable: defer with *dsn* and
    *reason*. *warning* (when set) is for the mail log."""

    def __init__(self, reason: str = CONFIG_PROBLEM, *, dsn: str = "4.7.5",
                 warning: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.dsn = dsn
        self.warning = warning


def level_name(word: str) -> str | None:
    w = word.strip().lower()
    return w if w in _RANK else None


def global_level(security_level: str = "", *, enforce_tls: bool = False,
                 enforce_peername: bool = True, use_tls: bool = False) -> str:
    """The default level (Postfix's global_tls_level()); ValueError when
    *security_level* is not a level name."""
    if security_level.strip():
        level = level_name(security_level)
        if level is None:
            raise ValueError(f'invalid tls security level: "{security_level.strip()}"')
        return level
    if enforce_tls:
        return "verify" if enforce_peername else "encrypt"
    return "may" if use_tls else "none"


_LABEL = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


def valid_hostname(name: str) -> bool:
    """Postfix's valid_hostname() in short: dot-separated labels of letters,
    digits, ``-`` and ``_``, no leading/trailing hyphen, not all numeric."""
    if not name or len(name) > 255 or name.startswith(".") or name.endswith("."):
        return False
    labels = name.split(".")
    for label in labels:
        if not _LABEL.match(label) or label[0] == "-" or label[-1] == "-":
            return False
    return not all(label.isdigit() for label in labels)


def policy_lookup_keys(dest: str) -> list[str]:
    """smtp_tls_policy_maps keys for next-hop *dest*, in lookup order."""
    dest = dest.strip()
    if not valid_hostname(dest):
        return [dest]
    keys = [dest]
    rest = dest
    while True:
        dot = rest.find(".", 1)
        if dot < 0:
            return keys
        rest = rest[dot:]
        keys.append(rest)


def nexthop_domain(dest: str) -> str:
    """The domain of a next-hop destination: ``[mx.example]:587`` →
    ``mx.example``; ``example.com:25`` → ``example.com``."""
    d = dest.strip()
    if d.startswith("["):
        end = d.find("]")
        return d[1:end] if end > 0 else d[1:]
    host, sep, port = d.rpartition(":")
    if sep and host and ":" not in host:
        return host
    return d


@dataclass
class PolicyEntry:
    """One smtp_tls_policy_maps value, parsed."""

    level: str
    ciphers: str | None = None
    protocols: str | None = None
    exclude: str | None = None
    match: list[str] = field(default_factory=list)
    tafiles: list[str] = field(default_factory=list)
    servername: str | None = None
    connection_reuse: bool | None = None
    warnings: list[str] = field(default_factory=list)


def parse_policy_entry(value: str, where: str = "smtp_tls_policy_maps") -> PolicyEntry:
    """Parse a policy table value; TlsPolicyError (4.7.5, with the
    warning Postfix logs) when it is invalid. *where* names the table and
    key in warnings: ``hash:/etc/postfix/tls_policy, next-hop destination
    "example.com"``."""
    tokens = [t for t in re.split(r"[\s,]+", value.strip()) if t]
    if not tokens:
        raise TlsPolicyError(warning=f"{where}: invalid empty policy")
    level = level_name(tokens[0])
    if level is None:
        raise TlsPolicyError(warning=f'{where}: invalid security level "{tokens[0]}"')
    entry = PolicyEntry(level)
    if level == "none":
        for tok in tokens[1:]:
            entry.warnings.append(f'{where}: ignoring attribute "{tok}" with TLS disabled')
        return entry

    def bad(text: str) -> TlsPolicyError:
        return TlsPolicyError(warning=f"{where}: {text}")

    for tok in tokens[1:]:
        name, sep, val = tok.partition("=")
        if not sep or not name:
            raise bad(f'malformed attribute/value pair "{tok}": missing "="')
        key = name.lower()
        if key in ("ciphers", "protocols", "exclude", "servername", "connection_reuse"):
            if getattr(entry, key) is not None:
                raise bad(f'attribute "{name}" is specified multiple times')
            if key in ("ciphers", "servername") and not val:
                raise bad(f'attribute "{name}" has empty value')
            if key == "connection_reuse":
                if val.lower() not in ("yes", "no"):
                    raise bad(f'invalid "{name}" value: "{val}"')
                entry.connection_reuse = val.lower() == "yes"
            else:
                setattr(entry, key, val)
        elif key == "match":
            if not val:
                raise bad(f'attribute "{name}" has empty value')
            if level == "fingerprint":
                entry.match.extend(v for v in val.split("|") if v)
            elif level in ("verify", "secure"):
                entry.match.extend(v for v in val.split(":") if v)
            else:
                raise bad(f'attribute "{name}" invalid at security level "{level}"')
        elif key == "tafile":
            if level not in ("verify", "secure"):
                raise bad(f'attribute "{name}" invalid at security level "{level}"')
            if not val:
                raise bad(f'attribute "{name}" has empty value')
            entry.tafiles.append(val)
        else:
            raise bad(f'invalid attribute name: "{name}"')
    return entry


@dataclass(frozen=True)
class TlsDefaults:
    """The main.cf side of the policy (``smtp_`` or ``lmtp_`` parameters)."""

    level: str = "none"
    protocols: str = ">=TLSv1"
    mandatory_protocols: str = ">=TLSv1"
    ciphers: str = "medium"
    mandatory_ciphers: str = "medium"
    exclude_ciphers: str = ""
    mandatory_exclude_ciphers: str = ""
    verify_cert_match: str = "hostname"
    secure_cert_match: str = "nexthop, dot-nexthop"
    fingerprint_cert_match: str = ""
    fingerprint_digest: str = "sha256"
    servername: str = ""
    trust_anchor_file: str = ""
    connection_reuse: bool = False

    @classmethod
    def from_settings(cls, s, prefix: str = "smtp") -> TlsDefaults:
        """From a Settings snapshot (anything with ``str``/``bool``/``list``)."""
        p = prefix

        def text(name: str) -> str:
            return " ".join(s.list(f"{p}_{name}"))

        level = global_level(s.str(f"{p}_tls_security_level"),
                             enforce_tls=s.bool(f"{p}_enforce_tls"),
                             enforce_peername=s.bool(f"{p}_tls_enforce_peername"),
                             use_tls=s.bool(f"{p}_use_tls"))
        return cls(
            level=level,
            protocols=s.str(f"{p}_tls_protocols"),
            mandatory_protocols=s.str(f"{p}_tls_mandatory_protocols"),
            ciphers=s.str(f"{p}_tls_ciphers").strip() or "medium",
            mandatory_ciphers=s.str(f"{p}_tls_mandatory_ciphers").strip() or "medium",
            exclude_ciphers=text("tls_exclude_ciphers"),
            mandatory_exclude_ciphers=text("tls_mandatory_exclude_ciphers"),
            verify_cert_match=s.str(f"{p}_tls_verify_cert_match"),
            secure_cert_match=s.str(f"{p}_tls_secure_cert_match"),
            fingerprint_cert_match=s.str(f"{p}_tls_fingerprint_cert_match"),
            fingerprint_digest=s.str(f"{p}_tls_fingerprint_digest").strip().lower() or "sha256",
            servername=s.str(f"{p}_tls_servername").strip(),
            trust_anchor_file=s.str(f"{p}_tls_trust_anchor_file").strip(),
            connection_reuse=s.bool(f"{p}_tls_connection_reuse"),
        )


def normalize_fingerprint(text: str) -> str:
    """``ab:cd:...`` or ``abcd...`` → ``ABCD...`` (hex, no colons)."""
    return text.replace(":", "").strip().upper()


@dataclass(frozen=True)
class SmtpTlsPolicy:
    """The TLS policy for one connection to *hostname* for next hop *dest*."""

    level: str
    dest: str
    nexthop: str
    hostname: str
    protocols: str = ""
    ciphers: str = ""
    exclude: str = ""
    match: tuple[str, ...] = ()
    fingerprints: tuple[str, ...] = ()
    fingerprint_digest: str = "sha256"
    servername: str = ""
    tafiles: tuple[str, ...] = ()
    connection_reuse: bool = False
    source: str = ""  # the policy table key that matched, or "" for main.cf
    warnings: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        """STARTTLS is attempted (when the server offers it)."""
        return self.level != "none"

    @property
    def mandatory(self) -> bool:
        """TLS is required: no STARTTLS or a failed handshake defers."""
        return self.level not in ("none", "may")

    @property
    def plaintext_fallback(self) -> bool:
        """Plaintext is allowed when TLS is not offered or fails: may only."""
        return self.level == "may"

    @property
    def verify_chain(self) -> bool:
        """The server's chain must be trusted by the CA files (PKIX)."""
        return self.level in ("verify", "secure")

    def match_names(self) -> list[str]:
        """The match list with ``hostname``, ``nexthop`` and ``dot-nexthop``
        expanded: a name starting with ``.`` matches any subdomain."""
        out: list[str] = []
        for item in self.match:
            word = item.lower()
            if word == "hostname":
                name = self.hostname
            elif word == "nexthop":
                name = self.nexthop
            elif word == "dot-nexthop":
                name = "." + self.nexthop if self.nexthop else ""
            else:
                name = item
            name = name.lower().rstrip(".")
            if name and name != "." and name not in out:
                out.append(name)
        return out

    def sni_name(self) -> str | None:
        """The SNI name: always the host name at the dane levels, else by
        ``servername`` (smtp_tls_servername or the table's attribute):
        empty → none, ``hostname``, ``nexthop``, or a literal name."""
        if self.level in ("dane", "dane-only"):
            return self.hostname or None
        value = self.servername.strip()
        if not value:
            return None
        if value.lower() == "hostname":
            return self.hostname or None
        if value.lower() == "nexthop":
            return self.nexthop or None
        return value


def _split(text: str, seps: str) -> list[str]:
    return [w for w in re.split(f"[{re.escape(seps)}]+", text) if w]


def resolve_policy(dest: str, hostname: str, defaults: TlsDefaults, *,
                   lookup: Callable[[str], str | None] | None = None,
                   title: str = "smtp_tls_policy_maps",
                   dane_outcome: str | Callable[[str], str] | None = None,
                   port: int = 25) -> SmtpTlsPolicy:
    """The policy for a connection to *hostname* (the MX or relay host name)
    for next hop *dest* (as written: ``[host]:port``, ``example.com``).
    *lookup* queries smtp_tls_policy_maps (None: no table); an exception from
    it is a temporary failure and propagates. TlsPolicyError when the
    matching entry or the resulting policy is invalid.

    At the dane levels, *dane_outcome* (one of the ``DANE_*`` values, from
    the caller's DNSSEC lookups for *hostname*:*port*) settles the effective
    level first, as in Postfix, so a fallback to may or encrypt gets that
    level's protocols and ciphers; None leaves the level as configured. A
    callable is asked (with the level, dane or dane-only) only at the dane
    levels, so the TLSA lookups happen only where they matter; it may raise
    TlsPolicyError."""
    level = defaults.level
    entry: PolicyEntry | None = None
    source = ""
    if lookup is not None:
        for key in policy_lookup_keys(dest):
            value = lookup(key)
            if value is not None:
                entry = parse_policy_entry(value, f'{title}, next-hop destination "{key}"')
                source = key
                level = entry.level
                break
    warnings = tuple(entry.warnings) if entry else ()
    if dane_outcome is not None and level in ("dane", "dane-only"):
        outcome = dane_outcome(level) if callable(dane_outcome) else dane_outcome
        level, warning = dane_level(level, outcome, dest=dest, hostname=hostname,
                                    port=port)
        if warning:
            warnings += (warning,)
    nexthop = nexthop_domain(dest).lower()
    host = hostname.lower().rstrip(".")
    if level == "none":
        return SmtpTlsPolicy("none", dest, nexthop, host, source=source, warnings=warnings)
    e = entry or PolicyEntry(level)
    may = level == "may"
    protocols = e.protocols if e.protocols is not None else (
        defaults.protocols if may else defaults.mandatory_protocols)
    ciphers = e.ciphers or (defaults.ciphers if may else defaults.mandatory_ciphers)
    if e.exclude is not None:
        exclude = [e.exclude]
    else:
        exclude = [defaults.exclude_ciphers]
        if not may:
            exclude.append(defaults.mandatory_exclude_ciphers)
    if level == "encrypt":
        exclude.append("eNULL")
    elif level in ("dane", "dane-only", "fingerprint", "verify", "secure"):
        exclude.append("aNULL")
    match: list[str] = []
    fingerprints: list[str] = []
    if level in ("verify", "secure"):
        match = list(e.match) or _split(
            defaults.verify_cert_match if level == "verify" else defaults.secure_cert_match,
            "\t\n\r, :")
    elif level == "fingerprint":
        fingerprints = [normalize_fingerprint(f) for f in e.match]
        if not fingerprints:
            fingerprints = [normalize_fingerprint(f) for f in
                            _split(defaults.fingerprint_cert_match, "\t\n\r, ")]
        if not fingerprints:
            raise TlsPolicyError(warning=f"nexthop domain {dest}: configured at fingerprint "
                                         "security level, but with no fingerprints to match.")
    tafiles = list(e.tafiles)
    if not tafiles and level in ("verify", "secure") and defaults.trust_anchor_file:
        tafiles = _split(defaults.trust_anchor_file, "\t\n\r ,")
    return SmtpTlsPolicy(
        level=level, dest=dest, nexthop=nexthop, hostname=host,
        protocols=protocols.strip(), ciphers=ciphers.strip(),
        exclude=" ".join(x.strip() for x in exclude if x.strip()),
        match=tuple(match), fingerprints=tuple(fingerprints),
        fingerprint_digest=defaults.fingerprint_digest,
        servername=e.servername if e.servername is not None else defaults.servername,
        tafiles=tuple(tafiles),
        connection_reuse=(e.connection_reuse if e.connection_reuse is not None
                          else defaults.connection_reuse),
        source=source, warnings=warnings)


# DANE outcomes the caller reports after its DNSSEC lookups.
DANE_USABLE = "usable"            # validated TLSA records, at least one usable
DANE_INSECURE = "insecure"        # MX/host lookup not DNSSEC-validated
DANE_NOT_FOUND = "not-found"      # validated denial: no TLSA records
DANE_UNUSABLE = "unusable"        # TLSA records, none usable (usage 0/1, bad params)
DANE_LOOKUP_ERROR = "lookup-error"  # TLSA lookup failed (SERVFAIL, bogus)
DANE_UNAVAILABLE = "unavailable"  # configuration: smtp_dns_support_level != dnssec
# usable TLSA records of a host named by an insecure MX RRset, with
# smtp_tls_dane_insecure_mx_policy = dane: checked, but never "Verified"
DANE_USABLE_INSECURE_MX = "usable-insecure-mx"
# usable TLSA records behind an insecure MX RRset, with
# smtp_tls_dane_insecure_mx_policy = encrypt
DANE_INSECURE_MX_ENCRYPT = "insecure-mx-encrypt"
DANE_MX_ERRORS_IGNORED = "mx-errors-ignored"  # configuration: ignore_mx_lookup_error
DANE_UNIX_SOCKET = "unix-socket"  # configuration: LMTP over a unix-domain socket
DANE_NO_SUPPORT = "no-support"    # configuration: tls_dane_digests cannot be used

#: The outcomes that are the administrator's doing (Postfix's NONDANE_CONFIG):
#: dane falls back to may with a warning; dane-only is an invalid policy.
_CONFIG_OUTCOMES = (DANE_UNAVAILABLE, DANE_MX_ERRORS_IGNORED, DANE_NO_SUPPORT)
#: The outcomes where the server cannot be authenticated although it must
#: use TLS (DANE_CANTAUTH): dane becomes encrypt.
_ENCRYPT_OUTCOMES = (DANE_UNUSABLE, DANE_INSECURE_MX_ENCRYPT)


def dane_level(level: str, outcome: str, *, dest: str = "", hostname: str = "",
               port: int = 25) -> tuple[str, str]:
    """(effective level, warning) at level dane/dane-only given the TLSA
    outcome, as Postfix's dane_init()/dane_incompat():

    * usable → ``dane`` (the caller then checks the peer with match_tlsa),
      also with an insecure MX RRset when smtp_tls_dane_insecure_mx_policy
      is dane;
    * insecure or no TLSA → ``may`` for dane; defer (4.7.5) for dane-only;
    * unusable records, or usable ones behind an insecure MX RRset with
      smtp_tls_dane_insecure_mx_policy = encrypt → ``encrypt`` for dane;
      defer for dane-only;
    * a configuration problem (no dnssec lookups, MX lookup errors ignored,
      unusable tls_dane_digests) → ``may`` with a warning for dane; invalid
      policy for dane-only;
    * LMTP over a unix-domain socket: invalid policy, with a warning;
    * lookup error → defer (``TLSA lookup error for host:port``).

    Other levels are returned unchanged."""
    if level not in ("dane", "dane-only"):
        return level, ""
    if outcome in (DANE_USABLE, DANE_USABLE_INSECURE_MX):
        return "dane", ""
    if outcome == DANE_LOOKUP_ERROR:
        raise TlsPolicyError(f"TLSA lookup error for {hostname}:{port}")
    if outcome == DANE_UNIX_SOCKET:
        raise TlsPolicyError(warning=f'{dest}: the "dane" security level is invalid for '
                                     "delivery via unix-domain sockets")
    texts = {
        DANE_INSECURE: "non DNSSEC destination",
        DANE_NOT_FOUND: "no TLSA records found",
        DANE_UNUSABLE: "TLSA records unusable",
        DANE_INSECURE_MX_ENCRYPT: "Verification not possible, MX RRset is insecure",
        DANE_UNAVAILABLE: f"{dest}: {level} configured with dnssec lookups disabled",
        DANE_MX_ERRORS_IGNORED: f"{dest}: {level} configured with MX lookup errors ignored",
        DANE_NO_SUPPORT: f"{dest}: {level} configured, but no requisite library support",
    }
    if outcome not in texts:
        raise ValueError(f"unknown DANE outcome: {outcome}")
    text = texts[outcome]
    if level == "dane-only":
        if outcome in _CONFIG_OUTCOMES:
            raise TlsPolicyError(warning=text)
        raise TlsPolicyError(text)
    new_level = "encrypt" if outcome in _ENCRYPT_OUTCOMES else "may"
    return new_level, (text if outcome in _CONFIG_OUTCOMES else "")


__all__ = [
    "CONFIG_PROBLEM", "DANE_INSECURE", "DANE_INSECURE_MX_ENCRYPT", "DANE_LOOKUP_ERROR",
    "DANE_MX_ERRORS_IGNORED", "DANE_NOT_FOUND", "DANE_NO_SUPPORT", "DANE_UNAVAILABLE",
    "DANE_UNIX_SOCKET",
    "DANE_UNUSABLE", "DANE_USABLE", "DANE_USABLE_INSECURE_MX", "LEVELS", "PolicyEntry",
    "SmtpTlsPolicy", "TlsDefaults", "TlsPolicyError", "dane_level", "global_level",
    "level_name", "nexthop_domain", "normalize_fingerprint", "parse_policy_entry",
    "policy_lookup_keys", "resolve_policy", "valid_hostname",
]

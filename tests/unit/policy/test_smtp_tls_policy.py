"""The smtp client's TLS policy: levels, smtp_tls_policy_maps syntax and
lookup order, defaults, DANE fallbacks; plus the pure certificate checks of
hato.io.smtp_tls (name matching, TLSA matching) on generated certificates."""

from __future__ import annotations

import hashlib

import pytest

from hato.io.smtp_tls import Tlsa, match_tlsa, name_matches, tlsa_usable
from hato.policy.smtp_tls_policy import (
    DANE_INSECURE,
    DANE_LOOKUP_ERROR,
    DANE_NOT_FOUND,
    DANE_UNAVAILABLE,
    DANE_UNUSABLE,
    DANE_USABLE,
    TlsDefaults,
    TlsPolicyError,
    dane_level,
    global_level,
    nexthop_domain,
    parse_policy_entry,
    policy_lookup_keys,
    resolve_policy,
    valid_hostname,
)

from .conftest import make_settings


def test_global_level_and_legacy_switches():
    assert global_level("") == "none"
    assert global_level("Verify") == "verify"
    assert global_level("", use_tls=True) == "may"
    assert global_level("", enforce_tls=True) == "verify"
    assert global_level("", enforce_tls=True, enforce_peername=False) == "encrypt"
    assert global_level("dane-only", enforce_tls=True) == "dane-only"
    with pytest.raises(ValueError):
        global_level("must")


def test_lookup_keys_domain_then_dot_parents():
    assert policy_lookup_keys("mail.example.com") == [
        "mail.example.com", ".example.com", ".com"]
    assert policy_lookup_keys("example") == ["example"]
    # explicit next hops: one lookup, as written
    assert policy_lookup_keys("[mx.example]:587") == ["[mx.example]:587"]
    assert policy_lookup_keys("[mx.example]") == ["[mx.example]"]
    assert policy_lookup_keys("example.com:2525") == ["example.com:2525"]
    assert policy_lookup_keys("192.0.2.1") == ["192.0.2.1"]
    assert not valid_hostname("1.2.3.4") and valid_hostname("a-b_c.example")


def test_nexthop_domain():
    assert nexthop_domain("[mx.example]:587") == "mx.example"
    assert nexthop_domain("[mx.example]") == "mx.example"
    assert nexthop_domain("example.com:25") == "example.com"
    assert nexthop_domain("example.com") == "example.com"


def test_parse_entry_attributes():
    e = parse_policy_entry("verify match=hostname:nexthop ciphers=high protocols=>=TLSv1.2")
    assert (e.level, e.match, e.ciphers, e.protocols) == (
        "verify", ["hostname", "nexthop"], "high", ">=TLSv1.2")
    e = parse_policy_entry("secure, match=.example.com match=example.com")
    assert e.match == [".example.com", "example.com"]
    e = parse_policy_entry("fingerprint match=AB:CD|EF:01 match=23:45")
    assert e.match == ["AB:CD", "EF:01", "23:45"]
    e = parse_policy_entry("encrypt protocols=!SSLv2:!SSLv3 exclude=3DES servername=hostname "
                           "connection_reuse=yes")
    assert (e.protocols, e.exclude, e.servername, e.connection_reuse) == (
        "!SSLv2:!SSLv3", "3DES", "hostname", True)
    e = parse_policy_entry("none ciphers=high")
    assert e.level == "none" and "ignoring attribute" in e.warnings[0]


@pytest.mark.parametrize("value,text", [
    ("", "invalid empty policy"),
    ("must", 'invalid security level "must"'),
    ("encrypt match=foo", 'attribute "match" invalid at security level "encrypt"'),
    ("dane match=foo", "invalid at security level"),
    ("verify ciphers=high ciphers=low", "specified multiple times"),
    ("verify ciphers=", "has empty value"),
    ("verify match=", "has empty value"),
    ("verify bogus=1", 'invalid attribute name: "bogus"'),
    ("verify nonsense", "malformed attribute/value pair"),
    ("encrypt tafile=/x", "invalid at security level"),
])
def test_invalid_entries_defer(value, text):
    with pytest.raises(TlsPolicyError) as info:
        parse_policy_entry(value, 'hash:/etc/postfix/tls_policy, next-hop destination "x"')
    assert info.value.dsn == "4.7.5"
    assert info.value.reason == "client TLS configuration problem"
    assert text in info.value.warning
    assert info.value.warning.startswith("hash:/etc/postfix/tls_policy")


TABLE = {
    "example.com": "verify match=hostname:nexthop ciphers=high protocols=>=TLSv1.2",
    "[mx.example]:587": "encrypt",
    ".example.net": "secure match=.example.net",
    "pinned.example": "fingerprint match=AB:CD:EF|01:02",
    "plain.example": "none",
}


def lookup_log():
    asked: list[str] = []

    def lookup(key):
        asked.append(key)
        return TABLE.get(key)
    return asked, lookup


def test_resolve_with_table_and_order():
    asked, lookup = lookup_log()
    d = TlsDefaults(level="may")
    p = resolve_policy("example.com", "mx1.example.com", d, lookup=lookup)
    assert (p.level, p.ciphers, p.protocols, p.source) == (
        "verify", "high", ">=TLSv1.2", "example.com")
    assert p.match_names() == ["mx1.example.com", "example.com"]
    assert p.exclude == "aNULL"
    assert asked == ["example.com"]

    asked, lookup = lookup_log()
    p = resolve_policy("mail.sub.example.net", "mx.example.net", d, lookup=lookup)
    assert asked == ["mail.sub.example.net", ".sub.example.net", ".example.net"]
    assert p.level == "secure" and p.match_names() == [".example.net"]

    asked, lookup = lookup_log()
    p = resolve_policy("[mx.example]:587", "mx.example", d, lookup=lookup)
    assert asked == ["[mx.example]:587"]
    assert p.level == "encrypt" and p.mandatory and not p.plaintext_fallback
    assert p.exclude == "eNULL"

    # [mx.example] (no port) does not match the [mx.example]:587 entry
    asked, lookup = lookup_log()
    p = resolve_policy("[mx.example]", "mx.example", d, lookup=lookup)
    assert asked == ["[mx.example]"] and p.level == "may" and p.plaintext_fallback

    p = resolve_policy("plain.example", "mx.plain.example", TlsDefaults(level="verify"),
                       lookup=TABLE.get)
    assert p.level == "none" and not p.enabled


def test_no_table_entry_uses_main_cf():
    p = resolve_policy("other.org", "mx.other.org", TlsDefaults(level="may"), lookup=TABLE.get)
    assert p.level == "may" and p.source == ""
    assert p.protocols == ">=TLSv1" and p.ciphers == "medium"


def test_defaults_per_level():
    d = TlsDefaults(level="secure", protocols="!SSLv2", mandatory_protocols=">=TLSv1.2",
                    ciphers="medium", mandatory_ciphers="high",
                    exclude_ciphers="RC4", mandatory_exclude_ciphers="3DES")
    p = resolve_policy("example.org", "mx.example.org", d)
    assert (p.protocols, p.ciphers, p.exclude) == (">=TLSv1.2", "high", "RC4 3DES aNULL")
    assert p.match_names() == ["example.org", ".example.org"]  # nexthop, dot-nexthop
    p = resolve_policy("example.org", "mx.example.org", TlsDefaults(level="verify"))
    assert p.match_names() == ["mx.example.org"]  # smtp_tls_verify_cert_match = hostname
    p = resolve_policy("example.org", "mx.example.org",
                       TlsDefaults(level="may", protocols="!SSLv2", exclude_ciphers="RC4",
                                   mandatory_exclude_ciphers="3DES"))
    assert (p.protocols, p.exclude) == ("!SSLv2", "RC4")
    # exclude= replaces main.cf's exclusions
    p = resolve_policy("x.org", "mx.x.org", TlsDefaults(level="may", exclude_ciphers="RC4"),
                       lookup={"x.org": "verify exclude=MD5"}.get)
    assert p.exclude == "MD5 aNULL"


def test_fingerprint_level():
    p = resolve_policy("pinned.example", "mx.pinned.example", TlsDefaults(), lookup=TABLE.get)
    assert p.level == "fingerprint" and p.fingerprints == ("ABCDEF", "0102")
    d = TlsDefaults(level="fingerprint", fingerprint_cert_match="aa:bb, cc:dd")
    assert resolve_policy("a.b", "mx.a.b", d).fingerprints == ("AABB", "CCDD")
    with pytest.raises(TlsPolicyError) as info:
        resolve_policy("a.b", "mx.a.b", TlsDefaults(level="fingerprint"))
    assert "no fingerprints to match" in info.value.warning


def test_sni_name():
    d = TlsDefaults(level="may", servername="hostname")
    assert resolve_policy("ex.org", "MX.ex.org", d).sni_name() == "mx.ex.org"
    d = TlsDefaults(level="may", servername="nexthop")
    assert resolve_policy("[relay.ex.org]:587", "relay.ex.org", d).sni_name() == "relay.ex.org"
    assert resolve_policy("ex.org", "mx", TlsDefaults(level="may")).sni_name() is None
    d = TlsDefaults(level="may", servername="smtp.example")
    assert resolve_policy("ex.org", "mx", d).sni_name() == "smtp.example"
    p = resolve_policy("ex.org", "mx.ex.org", TlsDefaults(level="may"),
                       lookup={"ex.org": "encrypt servername=other.example"}.get)
    assert p.sni_name() == "other.example"
    # DANE always sends the host name
    assert resolve_policy("ex.org", "mx.ex.org", TlsDefaults(level="dane")).sni_name() == \
        "mx.ex.org"


def test_dane_fallbacks():
    assert dane_level("dane", DANE_USABLE) == ("dane", "")
    assert dane_level("dane-only", DANE_USABLE) == ("dane", "")
    assert dane_level("dane", DANE_NOT_FOUND) == ("may", "")
    assert dane_level("dane", DANE_INSECURE) == ("may", "")
    assert dane_level("dane", DANE_UNUSABLE) == ("encrypt", "")
    level, warning = dane_level("dane", DANE_UNAVAILABLE, dest="ex.org")
    assert level == "may" and "dnssec lookups disabled" in warning
    for outcome, text in ((DANE_NOT_FOUND, "no TLSA records found"),
                          (DANE_INSECURE, "non DNSSEC destination"),
                          (DANE_UNUSABLE, "TLSA records unusable")):
        with pytest.raises(TlsPolicyError) as info:
            dane_level("dane-only", outcome)
        assert info.value.reason == text and info.value.dsn == "4.7.5"
    with pytest.raises(TlsPolicyError) as info:
        dane_level("dane", DANE_LOOKUP_ERROR, hostname="mx.ex.org", port=25)
    assert info.value.reason == "TLSA lookup error for mx.ex.org:25"
    assert dane_level("verify", DANE_NOT_FOUND) == ("verify", "")


def test_dane_fallback_gets_the_new_levels_settings():
    d = TlsDefaults(level="dane", protocols="!SSLv2", mandatory_protocols=">=TLSv1.2")
    p = resolve_policy("ex.org", "mx.ex.org", d, dane_outcome=DANE_NOT_FOUND)
    assert p.level == "may" and p.protocols == "!SSLv2" and p.exclude == ""
    p = resolve_policy("ex.org", "mx.ex.org", d, dane_outcome=DANE_UNUSABLE)
    assert p.level == "encrypt" and p.exclude == "eNULL"
    p = resolve_policy("ex.org", "mx.ex.org", d, dane_outcome=DANE_USABLE)
    assert p.level == "dane" and p.exclude == "aNULL" and p.mandatory


def test_defaults_from_settings():
    s = make_settings("smtp_tls_security_level = encrypt\n"
                      "smtp_tls_mandatory_protocols = >=TLSv1.2\n"
                      "smtp_tls_fingerprint_cert_match = AA:BB\n")
    d = TlsDefaults.from_settings(s)
    assert d.level == "encrypt" and d.mandatory_protocols == ">=TLSv1.2"
    assert d.verify_cert_match == "hostname"
    assert d.secure_cert_match.replace(" ", "") == "nexthop,dot-nexthop"
    assert d.fingerprint_digest == "sha256"  # compatibility_level 3.6
    assert TlsDefaults.from_settings(make_settings("smtp_use_tls = yes\n")).level == "may"
    assert TlsDefaults.from_settings(make_settings("")).level == "none"
    lm = TlsDefaults.from_settings(make_settings("lmtp_tls_security_level = may\n"), "lmtp")
    assert lm.level == "may"


# --------------------------------------------------------------------------
# Certificate name matching (Postfix's match_servername)


@pytest.mark.parametrize("certid,pattern,ok", [
    ("mx.example.com", "mx.example.com", True),
    ("MX.Example.COM", "mx.example.com", True),
    ("mx.example.com", "example.com", False),
    ("mx.example.com", ".example.com", True),
    ("a.b.example.com", ".example.com", True),
    ("example.com", ".example.com", False),
    ("badexample.com", ".example.com", False),
    ("*.example.com", "mx.example.com", True),
    ("*.example.com", "a.b.example.com", True),   # tls_wildcard_matches_multiple_labels
    ("*.example.com", "example.com", False),
    ("*.example.com", ".example.com", True),      # a subdomain name of the pattern
])
def test_name_matches(certid, pattern, ok):
    assert name_matches(certid, pattern) is ok


# --------------------------------------------------------------------------
# TLSA


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from tests.certs import TestCA

    ca = TestCA(tmp_path_factory.mktemp("ca"))
    issued = ca.issue("mx.example.com")
    leaf = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    other = TestCA(tmp_path_factory.mktemp("ca2"), name="other CA")
    return {
        "leaf": leaf.public_bytes(serialization.Encoding.DER),
        "ca": ca.cert.public_bytes(serialization.Encoding.DER),
        "other_ca": other.cert.public_bytes(serialization.Encoding.DER),
        "leaf_spki": leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        "ca_spki": ca.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
    }


def test_tlsa_dane_ee(chain):
    peer = [chain["leaf"], chain["ca"]]
    spki_sha256 = hashlib.sha256(chain["leaf_spki"]).digest()
    assert match_tlsa([(3, 1, 1, spki_sha256)], peer)
    assert match_tlsa([(3, 1, 1, spki_sha256.hex())], peer)
    assert match_tlsa([(3, 0, 1, hashlib.sha256(chain["leaf"]).digest())], peer)
    assert match_tlsa([(3, 0, 2, hashlib.sha512(chain["leaf"]).digest())], peer)
    assert match_tlsa([(3, 1, 0, chain["leaf_spki"])], peer)
    assert match_tlsa([(3, 0, 0, chain["leaf"])], peer)
    assert not match_tlsa([(3, 1, 1, b"\0" * 32)], peer)
    # the CA's key does not match usage 3
    assert not match_tlsa([(3, 1, 1, hashlib.sha256(chain["ca_spki"]).digest())], peer)
    # one good record among bad ones is enough
    assert match_tlsa([(3, 1, 1, b"\1" * 32), Tlsa(3, 1, 1, spki_sha256)], peer)
    assert not match_tlsa([(3, 1, 1, spki_sha256)], [])


def test_tlsa_dane_ta(chain):
    peer = [chain["leaf"], chain["ca"]]
    ta = hashlib.sha256(chain["ca_spki"]).digest()
    assert match_tlsa([(2, 1, 1, ta)], peer, names=["mx.example.com"])
    assert match_tlsa([(2, 0, 1, hashlib.sha256(chain["ca"]).digest())], peer)
    # the leaf's name must be among the names
    assert not match_tlsa([(2, 1, 1, ta)], peer, names=["other.example"])
    # a TA that did not issue the leaf
    other = hashlib.sha256(chain["other_ca"]).digest()
    assert not match_tlsa([(2, 0, 1, other)], [chain["leaf"], chain["other_ca"]])
    # usage 2 never matches the leaf itself; the CA absent from the chain: no match
    assert not match_tlsa([(2, 1, 1, hashlib.sha256(chain["leaf_spki"]).digest())], peer)
    assert not match_tlsa([(2, 1, 1, ta)], [chain["leaf"]])


def test_tlsa_unusable_records(chain):
    peer = [chain["leaf"], chain["ca"]]
    pkix = [(1, 1, 1, hashlib.sha256(chain["leaf_spki"]).digest()),
            (0, 1, 1, hashlib.sha256(chain["ca_spki"]).digest()),
            (3, 2, 1, b"x"), (3, 1, 3, b"x")]
    assert not tlsa_usable(pkix)
    assert not match_tlsa(pkix, peer)
    assert tlsa_usable(pkix + [(3, 1, 1, b"\0" * 32)])

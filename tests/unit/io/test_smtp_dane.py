"""DANE for the smtp client: the resolver's AD bit (hato.io.dns with
dnssec), the route's DNSSEC flags on candidates (hato.policy.smtp_route),
TLSA lookups and outcomes (hato.io.smtp_dane) against the test DNS server,
TLSA selection and DANE verification errors (hato.io.smtp_tls) and the
effective levels (hato.policy.smtp_tls_policy)."""

from __future__ import annotations

import datetime
import hashlib
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hato.config.defaults import HostFacts
from hato.config.errors import ConfigError
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.io.dns import Resolver
from hato.io.smtp_dane import DaneResolver, parse_tlsa_text
from hato.io.smtp_route import ResolverRouteDns, dns_support_level
from hato.io.smtp_tls import (
    Tlsa,
    TlsVerifyError,
    dane_digests,
    dane_verify,
    select_tlsa,
)
from hato.policy.smtp_route import Candidate, Destination, DnsAnswer, DnsStatus, Router, \
    RoutePolicy, parse_nexthop
from hato.policy.smtp_tls_policy import (
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
    TlsDefaults,
    TlsPolicyError,
    dane_level,
    resolve_policy,
)
from tests.dnsserver import DnsServer

EE = "3 1 1 " + "ab" * 32


def settings(main: str = ""):
    text = ("myhostname = client.example.org\nmydomain = example.org\n"
            "compatibility_level = 3.6\n") + main
    config = Config("/etc/hato", MainCf.parse(text, "/etc/hato/main.cf"),
                    MasterCf.parse("", "/etc/hato/master.cf"), HostFacts("client"))
    return config.settings()


@pytest.fixture
def dns():
    zones = {
        "mx.signed.example": {"A": ["192.0.2.1"], "SECURE": True},
        "_25._tcp.mx.signed.example": {"TLSA": [EE], "SECURE": True},
        "_587._tcp.mx.signed.example": {"TLSA": ["3 0 1 " + "cd" * 32], "SECURE": True},
        "plain.example": {"A": ["192.0.2.2"]},
        "_25._tcp.plain.example": {"TLSA": [EE]},
        "unsigned-tlsa.example": {"A": ["192.0.2.3"], "SECURE": True},
        "_25._tcp.unsigned-tlsa.example": {"TLSA": [EE]},
        "notlsa.example": {"A": ["192.0.2.4"], "SECURE": True},
        "pkix.example": {"A": ["192.0.2.5"], "SECURE": True},
        "_25._tcp.pkix.example": {"TLSA": ["1 1 1 " + "ab" * 32, "3 2 1 " + "ab" * 32],
                                  "SECURE": True},
        "broken.example": {"A": ["192.0.2.6"], "SECURE": True},
        "_25._tcp.broken.example": "SERVFAIL",
        "alias.example": {"CNAME": ["target.example."], "SECURE": True},
        "target.example": {"A": ["192.0.2.7"], "SECURE": True},
        "_25._tcp.target.example": {"TLSA": ["3 1 2 " + "ef" * 64], "SECURE": True},
        "_25._tcp.alias.example": {"TLSA": [EE], "SECURE": True},
        "alias2.example": {"CNAME": ["target2.example."], "SECURE": True},
        "target2.example": {"A": ["192.0.2.8"]},
        "_25._tcp.alias2.example": {"TLSA": [EE], "SECURE": True},
    }
    with DnsServer(zones) as server:
        server.set_secure("*.nx.example")
        yield server


def resolver(server, dnssec=True):
    return Resolver([server.address], dnssec=dnssec, timeout=3)


# -- the resolver's AD bit -------------------------------------------------------------


def test_reply_reports_ad_only_when_asked_with_dnssec(dns):
    r = resolver(dns).reply("mx.signed.example", "A")
    assert r.records == ("192.0.2.1",) and r.secure and not r.nxdomain
    assert not resolver(dns).reply("plain.example", "A").secure
    # without dnssec the question has neither DO nor AD: the server sets no AD
    assert not resolver(dns, dnssec=False).reply("mx.signed.example", "A").secure
    # a cached answer keeps its AD bit
    res = resolver(dns)
    assert res.reply("mx.signed.example", "A").secure
    assert res.reply("mx.signed.example", "A").secure
    assert dns.count("mx.signed.example", "A") == 3  # the last one from the cache


def test_reply_cname_and_negative_answers(dns):
    res = resolver(dns)
    r = res.reply("alias.example", "A")
    assert r.secure and r.canonical == "target.example" and r.records == ("192.0.2.7",)
    r = res.reply("alias2.example", "A")
    assert not r.secure and r.canonical == "target2.example"  # an insecure target
    r = res.reply("gone.nx.example", "A")
    assert r.nxdomain and r.secure and not r.records
    r = res.reply("notlsa.example", "TLSA")
    assert not r.nxdomain and r.secure and not r.records  # NODATA


def test_test_server_ad_needs_do_or_ad():
    import dns.flags
    import dns.message
    import dns.query

    with DnsServer({"a.example": {"A": ["192.0.2.1"], "SECURE": True}}) as server:
        plain = dns.message.make_query("a.example", "A")
        plain.flags &= ~dns.flags.AD
        got = dns.query.udp(plain, server.host, port=server.port, timeout=3)
        assert not got.flags & dns.flags.AD
        with_do = dns.message.make_query("a.example", "A", want_dnssec=True)
        with_do.flags &= ~dns.flags.AD
        got = dns.query.udp(with_do, server.host, port=server.port, timeout=3)
        assert got.flags & dns.flags.AD
        server.set_secure("a.example", False)
        got = dns.query.udp(with_do, server.host, port=server.port, timeout=3)
        assert not got.flags & dns.flags.AD


def test_dns_support_level():
    assert dns_support_level(settings("")) == "enabled"
    assert dns_support_level(settings("disable_dns_lookups = yes\n")) == "disabled"
    assert dns_support_level(settings("smtp_dns_support_level = dnssec\n")) == "dnssec"
    assert dns_support_level(settings("lmtp_dns_support_level = DNSSEC\n"), "lmtp") == "dnssec"
    with pytest.raises(ConfigError, match='invalid smtp_dns_support_level: "maybe"'):
        dns_support_level(settings("smtp_dns_support_level = maybe\n"))


# -- the route's DNSSEC flags ----------------------------------------------------------


class FakeDns:
    def __init__(self, answers):
        self.answers = answers

    def lookup(self, name, rtype):
        return self.answers.get((name, rtype), DnsAnswer(DnsStatus.NOTFOUND))

    def native(self, host):
        raise AssertionError("no native lookups here")


def _route(answers, nexthop):
    router = Router(RoutePolicy(inet_protocols=frozenset({4}), own_addresses=frozenset()),
                    FakeDns(answers), rng=random.Random(1))
    return router.resolve(Destination(parse_nexthop(nexthop)))


def test_candidates_carry_dnssec_status():
    answers = {
        ("signed.example", "MX"): DnsAnswer(DnsStatus.OK, ("10 mx.signed.example",), True),
        ("mx.signed.example", "A"): DnsAnswer(DnsStatus.OK, ("192.0.2.1",), True,
                                              "real.signed.example"),
        ("unsigned.example", "MX"): DnsAnswer(DnsStatus.OK, ("10 mx.signed.example",)),
        ("implicit.example", "A"): DnsAnswer(DnsStatus.OK, ("192.0.2.9",), True),
    }
    (cand,) = _route(answers, "signed.example").candidates
    assert (cand.dnssec, cand.canonical, cand.mx_domain, cand.mx_dnssec) == \
        (True, "real.signed.example", "signed.example", True)
    (cand,) = _route(answers, "unsigned.example").candidates
    assert (cand.dnssec, cand.mx_domain, cand.mx_dnssec) == (True, "unsigned.example", False)
    (cand,) = _route(answers, "implicit.example").candidates  # no MX: implicit MX
    assert (cand.dnssec, cand.mx_domain) == (True, "")
    (cand,) = _route(answers, "[mx.signed.example]").candidates
    assert (cand.dnssec, cand.mx_domain) == (True, "")
    (cand,) = _route(answers, "[192.0.2.1]").candidates  # an address literal
    assert not cand.dnssec


def test_resolver_route_dns_passes_the_ad_bit(dns):
    rdns = ResolverRouteDns(resolver(dns))
    a = rdns.lookup("alias.example", "A")
    assert (a.status, a.secure, a.canonical) == (DnsStatus.OK, True, "target.example")
    assert not rdns.lookup("plain.example", "A").secure


# -- TLSA outcomes ---------------------------------------------------------------------


def cand(host, *, dnssec=True, port=25, mx_domain="", mx_dnssec=True, canonical=""):
    return Candidate(host, "192.0.2.1", port, dnssec=dnssec, canonical=canonical,
                     mx_domain=mx_domain, mx_dnssec=mx_dnssec)


def dane(server, main="smtp_dns_support_level = dnssec\n", prefix="smtp"):
    return DaneResolver(settings(main), prefix, resolver=resolver(server))


def test_usable_records(dns):
    got = dane(dns).lookup(cand("mx.signed.example", mx_domain="signed.example"))
    assert got.outcome == DANE_USABLE and got.secured
    assert got.records == (Tlsa(3, 1, 1, bytes.fromhex("ab" * 32)),)
    assert got.base_domain == "mx.signed.example"
    assert got.names == ("mx.signed.example", "signed.example")
    assert dns.count("_25._tcp.mx.signed.example", "TLSA") == 1
    # the port of the connection names the TLSA record
    got = dane(dns).lookup(cand("mx.signed.example", port=587))
    assert got.outcome == DANE_USABLE and got.records[0].selector == 0


def test_not_found_cases(dns):
    d = dane(dns)
    for c in (cand("notlsa.example"),              # NODATA
              cand("unsigned-tlsa.example"),       # TLSA without the AD bit
              cand("missing.nx.example")):         # NXDOMAIN
        assert d.lookup(c).outcome == DANE_NOT_FOUND, c
    # address records not validated: no TLSA lookup at all
    dns.reset_counts()
    assert d.lookup(cand("plain.example", dnssec=False)).outcome == DANE_NOT_FOUND
    assert dns.count(rtype="TLSA") == 0


def test_unusable_records(dns):
    got = dane(dns).lookup(cand("pkix.example"))
    assert got.outcome == DANE_UNUSABLE  # usage 1, and selector 2


def test_servfail_is_a_lookup_error(dns):
    got = dane(dns).lookup(cand("broken.example"))
    assert got.outcome == DANE_LOOKUP_ERROR
    assert got.warnings == ("DANE TLSA lookup problem: Host or domain name not found. Name "
                            "service error for name=_25._tcp.broken.example type=TLSA: Host "
                            "not found, try again",)
    with pytest.raises(TlsPolicyError) as info:
        dane_level("dane", got.outcome, hostname="broken.example", port=25)
    assert (info.value.reason, info.value.dsn) == ("TLSA lookup error for broken.example:25",
                                                   "4.7.5")


def test_cname_target_first_then_the_name(dns):
    d = dane(dns)
    got = d.lookup(cand("alias.example", canonical="target.example"))
    assert got.outcome == DANE_USABLE and got.base_domain == "target.example"
    assert got.records[0].mtype == 2
    # the target's addresses are not validated, the CNAME is: the name's own TLSA
    got = d.lookup(cand("alias2.example", dnssec=False, canonical="target2.example"))
    assert got.outcome == DANE_USABLE and got.base_domain == "alias2.example"
    # no TLSA at the target: the name's own
    dns.delete("_25._tcp.target.example")
    got = dane(dns).lookup(cand("alias.example", canonical="target.example"))
    assert got.outcome == DANE_USABLE and got.base_domain == "alias.example"


def test_insecure_mx_policies(dns):
    c = cand("mx.signed.example", mx_domain="unsigned.example", mx_dnssec=False)
    # smtp_tls_dane_insecure_mx_policy follows smtp_tls_security_level by default
    d = dane(dns, "smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n")
    got = d.lookup(c)
    assert got.outcome == DANE_USABLE_INSECURE_MX and not got.secured
    assert d.lookup(c, "dane-only").outcome == DANE_INSECURE
    d = dane(dns, "smtp_dns_support_level = dnssec\n")  # level may: policy may
    dns.reset_counts()
    assert d.lookup(c).outcome == DANE_INSECURE
    assert dns.count(rtype="TLSA") == 0
    d = dane(dns, "smtp_dns_support_level = dnssec\n"
                  "smtp_tls_dane_insecure_mx_policy = encrypt\n")
    assert d.lookup(c).outcome == DANE_INSECURE_MX_ENCRYPT
    assert dane_level("dane", DANE_INSECURE_MX_ENCRYPT) == ("encrypt", "")
    with pytest.raises(ConfigError, match="smtp_tls_dane_insecure_mx_policy"):
        dane(dns, "smtp_dns_support_level = dnssec\n"
                  "smtp_tls_dane_insecure_mx_policy = verify\n")


def test_configuration_outcomes(dns):
    c = cand("mx.signed.example")
    assert dane(dns, "").lookup(c).outcome == DANE_UNAVAILABLE
    assert dane(dns, "smtp_dns_support_level = enabled\n").lookup(c).outcome == \
        DANE_UNAVAILABLE
    assert dane(dns, "smtp_dns_support_level = dnssec\nsmtp_host_lookup = native\n") \
        .lookup(c).outcome == DANE_UNAVAILABLE
    assert dane(dns, "smtp_dns_support_level = dnssec\nignore_mx_lookup_error = yes\n") \
        .lookup(c).outcome == DANE_MX_ERRORS_IGNORED
    d = dane(dns, "smtp_dns_support_level = dnssec\ntls_dane_digests = sha256 md5\n")
    assert d.config_warnings[-1] == "digest algorithm initializaton failed, no DANE support"
    assert d.lookup(c).outcome == DANE_NO_SUPPORT
    lmtp = dane(dns, "lmtp_dns_support_level = dnssec\n", "lmtp")
    assert lmtp.lookup(Candidate("h", "/s", 0, path="/s")).outcome == DANE_UNIX_SOCKET
    assert lmtp.lookup(c).outcome == DANE_USABLE
    with pytest.raises(TlsPolicyError) as info:
        dane_level("dane", DANE_UNIX_SOCKET, dest="unix:/s")
    assert info.value.warning == 'unix:/s: the "dane" security level is invalid for ' \
                                 "delivery via unix-domain sockets"
    level, warning = dane_level("dane", DANE_MX_ERRORS_IGNORED, dest="ex.org")
    assert (level, warning) == ("may", "ex.org: dane configured with MX lookup errors ignored")
    with pytest.raises(TlsPolicyError) as info:
        dane_level("dane-only", DANE_NO_SUPPORT, dest="ex.org")
    assert info.value.warning == "ex.org: dane-only configured, but no requisite library support"


def test_resolve_policy_asks_for_dane_only_at_the_dane_levels():
    asked = []

    def outcome(level):
        asked.append(level)
        return DANE_NOT_FOUND

    p = resolve_policy("ex.org", "mx.ex.org", TlsDefaults(level="may"), dane_outcome=outcome)
    assert p.level == "may" and asked == []
    p = resolve_policy("ex.org", "mx.ex.org", TlsDefaults(level="may"), dane_outcome=outcome,
                       lookup={"ex.org": "dane"}.get)
    assert asked == ["dane"] and p.level == "may"
    with pytest.raises(TlsPolicyError):
        resolve_policy("ex.org", "mx.ex.org", TlsDefaults(level="dane-only"),
                       dane_outcome=lambda level: DANE_INSECURE)
    p = resolve_policy("ex.org", "mx.ex.org", TlsDefaults(level="dane"),
                       dane_outcome=lambda level: DANE_USABLE_INSECURE_MX)
    assert p.level == "dane"


# -- TLSA selection ----------------------------------------------------------------------


def test_parse_tlsa_text():
    assert parse_tlsa_text("3 1 1 ABCD EF01") == Tlsa(3, 1, 1, bytes.fromhex("abcdef01"))
    assert parse_tlsa_text("3 1 1") is None
    assert parse_tlsa_text("3 x 1 ab") is None


def test_dane_digests():
    assert dane_digests("sha512 sha256") == ([0, 2, 1], [])
    assert dane_digests("sha256") == ([0, 1], [])
    assert dane_digests("sha256=1, sha512=2") == ([0, 1, 2], [])
    order, warnings = dane_digests("sha256 sha256 sha512=7 md5")
    assert order == [0, 1]
    assert warnings == ["Duplicate element in tls_dane_digests: sha256",
                        "Non-standard value in tls_dane_digests: sha512=7",
                        "Unimplemented digest algorithm in tls_dane_digests: md5"]


def test_select_tlsa_filters_and_digest_agility():
    s256, s512 = b"\1" * 32, b"\2" * 64
    recs = [(3, 1, 1, s256), (3, 1, 2, s512), (2, 0, 1, s256), (1, 1, 1, s256),
            (3, 1, 1, b"\3" * 31), (3, 2, 1, s256), (3, 1, 3, s256), (3, 0, 0, b"junk")]
    got = select_tlsa(recs, [0, 2, 1])
    # sha512 is preferred for 3 1 *: the sha256 sibling goes; 2 0 1 stays alone
    assert got == [Tlsa(3, 1, 2, s512), Tlsa(2, 0, 1, s256)]
    assert select_tlsa(recs, [0, 1]) == [Tlsa(3, 1, 1, s256), Tlsa(2, 0, 1, s256)]
    assert select_tlsa([(0, 0, 1, s256), (1, 1, 1, s256)]) == []


# -- DANE verification errors --------------------------------------------------------------


def _self_signed(name: str) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from tests.certs import TestCA

    ca = TestCA(tmp_path_factory.mktemp("ca"))
    issued = ca.issue("mx.example.com")
    leaf = x509.load_pem_x509_certificate(issued.cert.read_bytes())
    return {"leaf": leaf.public_bytes(serialization.Encoding.DER),
            "ca": ca.cert.public_bytes(serialization.Encoding.DER),
            "ca_cert": ca.cert, "leaf_cert": leaf}


def test_dane_verify_errors(pki):
    own = _self_signed("mx.example.com")
    spki = x509.load_der_x509_certificate(own).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ok = dane_verify([(3, 1, 1, hashlib.sha256(spki).digest())], [own])
    assert ok.ok and ok.matched == "DANE-EE"
    bad = dane_verify([(3, 1, 1, b"\0" * 32)], [own])
    assert (bad.ok, bad.depth, bad.error, bad.text) == \
        (False, 0, 65, "No matching DANE TLSA records")
    chain = [pki["leaf"], pki["ca"]]
    bad = dane_verify([(3, 1, 1, b"\0" * 32)], chain)
    assert (bad.depth, bad.error) == (1, 65)  # at the top of the chain
    ta = [(2, 0, 1, hashlib.sha256(pki["ca"]).digest())]
    good = dane_verify(ta, chain, names=["mx.example.com"])
    assert good.ok and good.matched == "DANE-TA"
    bad = dane_verify(ta, chain, names=["other.example"])
    assert (bad.ok, bad.depth, bad.error, bad.text) == (False, 0, 62, "hostname mismatch")
    later = pki["leaf_cert"].not_valid_after_utc + datetime.timedelta(days=1)
    bad = dane_verify(ta, chain, names=["mx.example.com"], now=later)
    assert (bad.ok, bad.depth, bad.error) == (False, 0, 10)
    # DANE-EE ignores dates
    leaf_spki = pki["leaf_cert"].public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert dane_verify([(3, 1, 1, hashlib.sha256(leaf_spki).digest())], chain, now=later).ok


def test_verify_log_lines():
    err = TlsVerifyError("Server certificate not verified",
                         x509_error=(0, 65, "No matching DANE TLSA records"))
    assert err.verify_log("mx.example[192.0.2.1]:25") == (
        "server certificate verification failed for mx.example[192.0.2.1]:25: "
        "num=65:No matching DANE TLSA records")
    err = TlsVerifyError("x", x509_error=(1, 65, "No matching DANE TLSA records"))
    assert err.verify_log("h[a]:25").startswith("CA certificate verification failed for h[a]:25")
    err = TlsVerifyError("x", x509_error=(0, 10, "certificate has expired"))
    assert err.verify_log("h[a]:25") == \
        "server certificate verification failed for h[a]:25: certificate has expired"
    assert TlsVerifyError("x").verify_log("h[a]:25") == ""

"""smtpd restrictions (policy.smtpd_check): one test or more per restriction,
with Postfix's reply codes and texts, and the 4xx-on-temporary-failure rule."""

from __future__ import annotations

import pytest

from hato.config.errors import ConfigError
from hato.policy.dnsquery import StaticDns
from hato.policy.smtpd_access import (
    HostAddrList,
    dsn_split,
    ip_match,
    is_header,
    parse_ip_match,
    smtpd_dsn_fix,
)
from hato.policy.smtpd_check import ClientFacts, Decision, SmtpdChecks
from hato.policy.smtpd_dnsbl import TemplateError, expand_rbl_template, reverse_address
from hato.policy.smtpd_policy import PolicyAnswer
from hato.proto.smtpd import Reply

from .conftest import make_settings

RELAY_OK = "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"


def session(main: str = "", dns: dict | None = None, *, name: str = "client.example",
            addr: str = "198.51.100.1", policy=None, **facts):
    settings = make_settings(main if "smtpd_relay_restrictions" in main else RELAY_OK + main)
    checks = SmtpdChecks(settings, StaticDns(dns or {}), policy=policy)
    return checks.session(ClientFacts(name=name, addr=addr, **facts))


def rcpt(main: str, recipient: str = "joe@mx1.example.com", *, helo: str = "client.example",
         sender: str = "a@example.org", dns: dict | None = None, **facts) -> Decision:
    sess = session(main, dns, **facts)
    sess.helo(helo)
    sess.mail(sender)
    return sess.rcpt(recipient)


def text(decision: Decision) -> str:
    return str(decision)


# -- the generic restrictions ----------------------------------------------------------------


def test_permit_and_reject_words() -> None:
    assert rcpt("smtpd_client_restrictions = permit, reject").ok
    d = rcpt("smtpd_client_restrictions = reject")
    assert d.reply == Reply(554, "5.7.1",
                            "<client.example[198.51.100.1]>: Client host rejected: Access denied")
    assert d.stage == "RCPT"
    assert [e.action for e in d.logs] == ["reject"]


def test_defer_word_and_codes() -> None:
    d = rcpt("smtpd_sender_restrictions = defer\ndefer_code = 451")
    assert text(d) == "451 4.3.2 <a@example.org>: Sender address rejected: Try again later"
    d = rcpt("smtpd_sender_restrictions = reject\nreject_code = 550")
    assert text(d) == "550 5.7.1 <a@example.org>: Sender address rejected: Access denied"


def test_permit_ends_only_its_stage() -> None:
    d = rcpt("smtpd_client_restrictions = permit\n", "x@elsewhere.example")
    assert text(d) == "554 5.7.1 <x@elsewhere.example>: Relay access denied"


def test_bad_reply_code_becomes_generic() -> None:
    d = rcpt("smtpd_client_restrictions = reject\nreject_code = 250")
    assert text(d) == "450 4.7.1 Service unavailable"
    assert d.logs[0].action == "warning"


def test_soft_bounce() -> None:
    d = rcpt("smtpd_client_restrictions = reject\nsoft_bounce = yes")
    assert d.reply is not None and d.reply.code == 454 and d.reply.dsn == "4.7.1"


def test_unknown_restriction_is_a_server_error() -> None:
    d = rcpt("smtpd_client_restrictions = no_such_thing")
    assert text(d) == "451 4.3.5 Server configuration error"
    assert 'unknown smtpd restriction: "no_such_thing"' in d.logs[0].text


def test_bare_table_in_data_restrictions_is_an_error() -> None:
    sess = session("smtpd_data_restrictions = inline:{a=b}")
    sess.helo("x.example")
    sess.mail("a@example.org")
    sess.rcpt("joe@mx1.example.com")
    assert text(sess.data(1)) == "451 4.3.5 Server configuration error"


def test_missing_relay_protection_is_fatal() -> None:
    with pytest.raises(ConfigError, match="specify at least one working instance"):
        SmtpdChecks(make_settings("smtpd_relay_restrictions =\n"
                                  "smtpd_recipient_restrictions = permit_mynetworks\n"),
                    StaticDns({}))
    # warn_if_reject in front does not count; a class that rejects does.
    with pytest.raises(ConfigError):
        SmtpdChecks(make_settings("smtpd_relay_restrictions = warn_if_reject reject\n"),
                    StaticDns({}))
    SmtpdChecks(make_settings("smtpd_restriction_classes = strict\nstrict = reject\n"
                              "smtpd_relay_restrictions = permit_mynetworks strict\n"),
                StaticDns({}))


def test_class_needs_definition() -> None:
    with pytest.raises(ConfigError, match="needs a definition"):
        SmtpdChecks(make_settings(RELAY_OK + "smtpd_restriction_classes = nothing\n"),
                    StaticDns({}))


def test_tempfail_action_is_checked() -> None:
    with pytest.raises(ConfigError, match="unknown_address_tempfail_action"):
        SmtpdChecks(make_settings(RELAY_OK + "unknown_address_tempfail_action = maybe\n"),
                    StaticDns({}))


# -- relay control ---------------------------------------------------------------------------


@pytest.mark.parametrize("recipient, ok", [
    ("joe@mx1.example.com", True),
    ("joe@localhost", True),
    ("joe@relay.example", True),
    ("joe@a.relay.example", True),
    ("joe@elsewhere.example", False),
    ("joe%elsewhere.example@mx1.example.com", False),
])
def test_reject_unauth_destination(recipient: str, ok: bool) -> None:
    d = rcpt("relay_domains = relay.example\n", recipient)
    assert d.ok == ok
    if not ok:
        assert text(d) == f"554 5.7.1 <{recipient}>: Relay access denied"


def test_defer_unauth_destination_and_code() -> None:
    d = rcpt("smtpd_relay_restrictions = defer_unauth_destination\n"
             "relay_domains_reject_code = 550\n", "x@elsewhere.example")
    assert text(d) == "450 4.7.1 <x@elsewhere.example>: Relay access denied"


def test_allow_untrusted_routing() -> None:
    main = "relay_domains = relay.example\n"
    assert not rcpt(main, "joe%x.example@relay.example").ok
    assert rcpt(main + "allow_untrusted_routing = yes\n", "joe%x.example@relay.example").ok


def test_permit_mynetworks_and_sasl() -> None:
    main = ("mynetworks = 192.0.2.0/24, !198.51.100.1, 198.51.100.0/24\n"
            "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
            "reject_unauth_destination\n")
    assert rcpt(main, "x@elsewhere.example", addr="192.0.2.77").ok
    assert not rcpt(main, "x@elsewhere.example", addr="198.51.100.1").ok
    assert rcpt(main, "x@elsewhere.example", addr="198.51.100.2").ok
    assert rcpt(main, "x@elsewhere.example", addr="203.0.113.1", sasl_username="u").ok


def test_permit_auth_destination() -> None:
    main = ("smtpd_relay_restrictions = permit_auth_destination, reject\n")
    assert rcpt(main).ok
    assert text(rcpt(main, "x@elsewhere.example")) == \
        "554 5.7.1 <x@elsewhere.example>: Recipient address rejected: Access denied"


def test_tls_clientcerts() -> None:
    main = ("relay_clientcerts = inline:{ {AB:CD = ok} }\n"
            "smtpd_relay_restrictions = permit_tls_clientcerts, reject_unauth_destination\n")
    assert rcpt(main, "x@elsewhere.example", tls_active=True,
                tls_ccert_fingerprint="AB:CD").ok
    assert not rcpt(main, "x@elsewhere.example", tls_active=True,
                    tls_ccert_fingerprint="EE:FF").ok
    assert not rcpt(main, "x@elsewhere.example", tls_active=False,
                    tls_ccert_fingerprint="AB:CD").ok
    main = "smtpd_relay_restrictions = permit_tls_all_clientcerts, reject_unauth_destination\n"
    assert rcpt(main, "x@elsewhere.example", tls_active=True, tls_ccert_verified=True).ok
    assert not rcpt(main, "x@elsewhere.example", tls_active=True).ok


def test_relay_before_recipient_order() -> None:
    main = ("smtpd_relay_restrictions = reject_unauth_destination\n"
            "smtpd_recipient_restrictions = check_recipient_access "
            "inline:{ {x@elsewhere.example = REJECT from recipient list} }\n")
    assert "Relay access denied" in text(rcpt(main, "x@elsewhere.example"))
    assert "from recipient list" in text(
        rcpt(main + "smtpd_relay_before_recipient_restrictions = no\n", "x@elsewhere.example"))


# -- client ----------------------------------------------------------------------------------


def test_reject_unknown_client_hostname() -> None:
    main = "smtpd_client_restrictions = reject_unknown_client_hostname\n"
    assert rcpt(main).ok
    d = rcpt(main, name="unknown", name_status=4)
    assert text(d) == "450 4.7.25 Client host rejected: cannot find your hostname, [198.51.100.1]"
    d = rcpt(main + "unknown_client_reject_code = 550\n", name="unknown", name_status=5)
    assert d.reply is not None and d.reply.code == 550 and d.reply.dsn == "5.7.25"


def test_reject_unknown_reverse_client_hostname() -> None:
    main = "smtpd_client_restrictions = reject_unknown_reverse_client_hostname\n"
    assert rcpt(main, name="unknown", name_status=5, reverse_name="ptr.example",
                reverse_name_status=0).ok
    d = rcpt(main, name="unknown", reverse_name="unknown", reverse_name_status=5)
    assert text(d) == ("450 4.7.1 Client host rejected: cannot find your reverse hostname, "
                       "[198.51.100.1]")


@pytest.mark.parametrize("name, addr, expect", [
    ("host.spam.example", "192.0.2.1", ("554 5.7.1 <host.spam.example[192.0.2.1]>: "
     "Client host rejected: Access denied")),
    ("spam.example", "192.0.2.1", ("554 5.7.1 <spam.example[192.0.2.1]>: "
     "Client host rejected: Access denied")),
    ("ok.spam.example", "192.0.2.1", "OK"),
    ("other.example", "192.0.2.9", ("450 4.7.1 <other.example[192.0.2.9]>: "
     "Client host rejected: Access denied")),
    ("other.example", "192.0.3.9", "OK"),
    ("other.example", "2001:db8::1", ("550 5.7.2 <other.example[2001:db8::1]>: "
     "Client host rejected: v6")),
])
def test_check_client_access(name: str, addr: str, expect: str) -> None:
    main = ("smtpd_client_restrictions = check_client_access inline:{ {spam.example = reject},"
            " {ok.spam.example = OK}, {192.0.2 = DEFER}, {2001:db8 = 550 5.7.2 v6} }\n")
    assert text(rcpt(main, name=name, addr=addr)) == expect


def test_parent_domain_style() -> None:
    main = ("parent_domain_matches_subdomains =\n"
            "smtpd_client_restrictions = check_client_access inline:{ {spam.example = REJECT},"
            " {.bad.example = REJECT} }\n")
    assert rcpt(main, name="host.spam.example").ok
    assert not rcpt(main, name="spam.example").ok
    assert not rcpt(main, name="host.bad.example").ok


def test_check_reverse_client_hostname_access_forbids_ok() -> None:
    main = ("smtpd_client_restrictions = check_reverse_client_hostname_access "
            "inline:{ {ptr.example = OK}, {bad.example = REJECT} }\n")
    d = rcpt(main, name="unknown", reverse_name="x.bad.example")
    assert text(d) == ("554 5.7.1 <unknown[198.51.100.1]>: Unverified Client host rejected: "
                       "Access denied")
    d = rcpt(main, name="unknown", reverse_name="ptr.example")
    assert text(d) == "451 4.3.5 Server configuration error"


def test_check_ccert_and_sasl_access() -> None:
    main = "smtpd_client_restrictions = check_ccert_access inline:{ {AA:BB = REJECT} }\n"
    d = rcpt(main, tls_active=True, tls_ccert_fingerprint="AA:BB", tls_ccert_subject="cn")
    assert text(d) == "554 5.7.1 <cn>: Client certificate rejected: Access denied"
    main = ("smtpd_sasl_auth_enable = yes\n"
            "smtpd_client_restrictions = check_sasl_access inline:{ {bob = REJECT} }\n")
    assert text(rcpt(main, sasl_username="bob")) == \
        "554 5.7.1 <bob>: SASL login name rejected: Access denied"
    assert rcpt(main, sasl_username="alice").ok


def test_reject_plaintext_session() -> None:
    main = "smtpd_client_restrictions = reject_plaintext_session\n"
    assert text(rcpt(main)) == "450 4.7.1 Session encryption is required"
    assert rcpt(main, tls_active=True).ok


def test_permit_inet_interfaces() -> None:
    main = "smtpd_relay_restrictions = permit_inet_interfaces, reject_unauth_destination\n"
    assert rcpt(main, "x@elsewhere.example", addr="192.0.2.10").ok
    assert not rcpt(main, "x@elsewhere.example", addr="192.0.2.11").ok


# -- HELO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("helo, expect", [
    ("good.example", "OK"),
    ("good.example.", "OK"),
    ("bad_helo", "504 5.5.2 <bad_helo>: Helo command rejected: need fully-qualified hostname"),
    ("x y", "501 5.5.2 <x y>: Helo command rejected: Invalid name"),
    ("[192.0.2.1]", "OK"),
    ("[1.2.3]", "501 5.5.2 <[1.2.3]>: Helo command rejected: invalid ip address"),
    ("1.2.3.4", "504 5.5.2 <1.2.3.4>: Helo command rejected: need fully-qualified hostname"),
])
def test_helo_syntax(helo: str, expect: str) -> None:
    main = ("smtpd_helo_restrictions = reject_invalid_helo_hostname, "
            "reject_non_fqdn_helo_hostname\n")
    assert text(rcpt(main, helo=helo)) == expect


def test_reject_unknown_helo_hostname() -> None:
    main = "smtpd_helo_restrictions = reject_unknown_helo_hostname\n"
    dns = {("mx.good.example", "MX"): ["10 mail.good.example"],
           ("slow.example", "A"): "TEMP", ("slow.example", "AAAA"): "TEMP",
           ("slow.example", "MX"): "TEMP"}
    assert rcpt(main, helo="mx.good.example", dns=dns).ok
    assert text(rcpt(main, helo="none.example", dns=dns)) == \
        "450 4.7.1 <none.example>: Helo command rejected: Host not found"
    assert text(rcpt(main + "unknown_hostname_reject_code = 550\n", helo="none.example",
                     dns=dns)).startswith("550 5.7.1")
    # Temporary failure: defer_if_permit, so a later reject wins.
    d = rcpt(main, "x@elsewhere.example", helo="slow.example", dns=dns)
    assert text(d) == "554 5.7.1 <x@elsewhere.example>: Relay access denied"
    d = rcpt(main, helo="slow.example", dns=dns)
    assert text(d) == "450 4.7.1 <slow.example>: Helo command rejected: Host not found"
    d = rcpt(main + "unknown_helo_hostname_tempfail_action = defer\n", "x@elsewhere.example",
             helo="slow.example", dns=dns)
    assert text(d) == "450 4.7.1 <slow.example>: Helo command rejected: Host not found"


def test_check_helo_mx_access() -> None:
    main = "smtpd_helo_restrictions = check_helo_mx_access inline:{ {192.0.2.66 = REJECT} }\n"
    dns = {("bad.example", "MX"): ["10 mx.bad.example"],
           ("mx.bad.example", "A"): ["192.0.2.66"]}
    assert text(rcpt(main, helo="bad.example", dns=dns)) == \
        "554 5.7.1 <bad.example>: Helo command rejected: Access denied"
    assert rcpt(main, helo="other.example", dns=dns).ok


# -- sender ----------------------------------------------------------------------------------


def test_sender_access_key_order() -> None:
    main = ("recipient_delimiter = +\n"
            "smtpd_sender_restrictions = check_sender_access inline:{ "
            "{a+x@example.org = REJECT full}, {a@example.org = REJECT bare}, "
            "{example.org = REJECT domain}, {b@ = REJECT localpart}, {<> = REJECT null} }\n")
    assert text(rcpt(main, sender="a+x@example.org")).endswith("full")
    assert text(rcpt(main, sender="a+y@example.org")).endswith("bare")
    assert text(rcpt(main, sender="c@sub.example.org")).endswith("domain")
    assert text(rcpt(main, sender="b@other.example")).endswith("localpart")
    assert text(rcpt(main, sender="b+z@other.example")).endswith("localpart")
    assert text(rcpt(main, sender="")) == "554 5.7.1 <>: Sender address rejected: null"


def test_sender_access_enhanced_code_fix() -> None:
    main = ("smtpd_sender_restrictions = check_sender_access inline:{ "
            "{x@example.org = 550 5.1.1 Unknown}, {y@example.org = REJECT 5.1.2 Gone} }\n")
    assert text(rcpt(main, sender="x@example.org")) == \
        "550 5.1.0 <x@example.org>: Sender address rejected: Unknown"
    assert text(rcpt(main, sender="y@example.org")) == \
        "554 5.1.8 <y@example.org>: Sender address rejected: Gone"


def test_reject_unknown_sender_domain() -> None:
    main = "smtpd_sender_restrictions = reject_unknown_sender_domain\n"
    dns = {("good.example", "A"): ["192.0.2.1"], ("slow.example", "MX"): "TEMP"}
    assert rcpt(main, sender="a@good.example", dns=dns).ok
    assert rcpt(main, sender="a@mx1.example.com", dns=dns).ok  # local: not asked
    assert rcpt(main, sender="a@[192.0.2.1]", dns=dns).ok
    assert text(rcpt(main, sender="a@nosuch.example", dns=dns)) == \
        "450 4.1.8 <a@nosuch.example>: Sender address rejected: Domain not found"
    assert text(rcpt(main + "unknown_address_reject_code = 550\n", sender="a@nosuch.example",
                     dns=dns)).startswith("550 5.1.8 ")
    d = rcpt(main, sender="a@slow.example", dns=dns)
    assert text(d) == "450 4.1.8 <a@slow.example>: Sender address rejected: Domain not found"


def test_reject_non_fqdn_sender() -> None:
    main = "smtpd_sender_restrictions = reject_non_fqdn_sender\n"
    assert text(rcpt(main, sender="user")) == \
        "504 5.5.2 <user>: Sender address rejected: need fully-qualified address"
    assert text(rcpt(main, sender="user@host")) == \
        "504 5.5.2 <user@host>: Sender address rejected: need fully-qualified address"
    assert rcpt(main, sender="").ok
    assert rcpt(main, sender="user@[192.0.2.1]").ok


def test_reject_unlisted_sender() -> None:
    main = ("local_recipient_maps = inline:{ {joe = x} }\n"
            "smtpd_reject_unlisted_sender = yes\n")
    assert rcpt(main, sender="joe@mx1.example.com").ok
    assert text(rcpt(main, sender="nobody@mx1.example.com")) == \
        ("550 5.1.0 <nobody@mx1.example.com>: Sender address rejected: User unknown in "
         "local recipient table")


def test_sender_login_mismatch() -> None:
    main = ("smtpd_sasl_auth_enable = yes\n"
            "smtpd_sender_login_maps = inline:{ {joe@example.org = joe} }\n"
            "smtpd_sender_restrictions = reject_sender_login_mismatch\n")
    assert rcpt(main, sender="joe@example.org", sasl_username="joe").ok
    assert text(rcpt(main, sender="joe@example.org", sasl_username="ann")) == \
        "553 5.7.1 <joe@example.org>: Sender address rejected: not owned by user ann"
    assert text(rcpt(main, sender="joe@example.org")) == \
        "553 5.7.1 <joe@example.org>: Sender address rejected: not logged in"


# -- recipient -------------------------------------------------------------------------------


def test_reject_unlisted_recipient_implicit_and_explicit() -> None:
    main = "local_recipient_maps = inline:{ {joe = x} }\n"
    assert rcpt(main).ok
    assert text(rcpt(main, "nobody@mx1.example.com")) == \
        ("550 5.1.1 <nobody@mx1.example.com>: Recipient address rejected: User unknown in "
         "local recipient table")
    assert rcpt(main + "smtpd_reject_unlisted_recipient = no\n", "nobody@mx1.example.com").ok
    main2 = main + ("smtpd_reject_unlisted_recipient = no\n"
                    "smtpd_recipient_restrictions = reject_unlisted_recipient\n")
    assert not rcpt(main2, "nobody@mx1.example.com").ok
    assert text(rcpt(main + "unknown_local_recipient_reject_code = 450\n",
                     "nobody@mx1.example.com")).startswith("450 4.1.1 ")


def test_reject_unknown_recipient_domain_and_non_fqdn() -> None:
    main = ("smtpd_recipient_restrictions = reject_non_fqdn_recipient, "
            "reject_unknown_recipient_domain, reject_unauth_destination\n"
            "smtpd_relay_restrictions =\n")
    assert text(rcpt(main, "x@nosuch.example")) == \
        "450 4.1.2 <x@nosuch.example>: Recipient address rejected: Domain not found"
    assert text(rcpt(main, "x")) == \
        "504 5.5.2 <x>: Recipient address rejected: need fully-qualified address"


def test_postmaster_is_always_accepted() -> None:
    assert rcpt("smtpd_client_restrictions = reject\n", "postmaster").ok


def test_multi_recipient_bounce() -> None:
    sess = session("smtpd_recipient_restrictions = reject_multi_recipient_bounce\n")
    sess.helo("x.example")
    sess.mail("")
    assert sess.rcpt("joe@mx1.example.com").ok
    assert text(sess.rcpt("ann@mx1.example.com")) == \
        "550 5.5.3 <ann@mx1.example.com>: Recipient address rejected: Multi-recipient bounce"


def test_unauth_pipelining() -> None:
    sess = session("smtpd_data_restrictions = reject_unauth_pipelining\n")
    sess.helo("x.example")
    sess.mail("a@example.org")
    sess.rcpt("joe@mx1.example.com")
    assert sess.data(1).ok
    sess.facts.pipelining_violation = True
    assert text(sess.data(1)) == \
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"


def test_unverified_without_a_verify_client_is_a_problem() -> None:
    d = rcpt("smtpd_recipient_restrictions = reject_unverified_recipient\n")
    assert str(d) == "450 4.1.1 <joe@mx1.example.com>: Recipient address rejected: " \
                     "address verification problem"


# -- DNS lists -------------------------------------------------------------------------------


def test_reject_rbl_client_default_reply() -> None:
    main = "smtpd_client_restrictions = reject_rbl_client zen.example\n"
    dns = {("1.100.51.198.zen.example", "A"): ["127.0.0.2"],
           ("1.100.51.198.zen.example", "TXT"): ["listed"]}
    assert text(rcpt(main, dns=dns)) == ("554 5.7.1 Service unavailable; Client host "
                                         "[198.51.100.1] blocked using zen.example; listed")
    assert rcpt(main, dns=dns, addr="198.51.100.2").ok


def test_reject_rbl_client_filter_and_code() -> None:
    main = ("maps_rbl_reject_code = 550\n"
            "smtpd_client_restrictions = reject_rbl_client zen.example=127.0.0.[4;10..11]\n")
    dns = {("1.100.51.198.zen.example", "A"): ["127.0.0.2"],
           ("2.100.51.198.zen.example", "A"): ["127.0.0.10"]}
    assert rcpt(main, dns=dns).ok
    assert text(rcpt(main, dns=dns, addr="198.51.100.2")) == (
        "550 5.7.1 Service unavailable; Client host [198.51.100.2] blocked using zen.example")


def test_rbl_ipv6_query_name() -> None:
    assert reverse_address("2001:db8::1") == ".".join(reversed("20010db8" + "0" * 23 + "1"))
    assert reverse_address("192.0.2.1") == "1.2.0.192"


def test_rbl_temporary_failure_is_not_a_reject() -> None:
    main = "smtpd_client_restrictions = reject_rbl_client zen.example\n"
    d = rcpt(main, dns={("1.100.51.198.zen.example", "A"): "TEMP"})
    assert d.ok and d.logs[0].action == "warning"


def test_rhsbl() -> None:
    dns = {("spam.example.dbl.example", "A"): ["127.0.1.2"]}
    main = "smtpd_sender_restrictions = reject_rhsbl_sender dbl.example\n"
    assert text(rcpt(main, sender="a@spam.example", dns=dns)) == (
        "554 5.7.1 Service unavailable; Sender address [a@spam.example] blocked using "
        "dbl.example")
    main = "smtpd_helo_restrictions = reject_rhsbl_helo dbl.example\n"
    assert not rcpt(main, helo="spam.example", dns=dns).ok
    main = "smtpd_recipient_restrictions = reject_rhsbl_recipient dbl.example\n"
    assert rcpt(main, dns=dns).ok
    main = "smtpd_client_restrictions = reject_rhsbl_client dbl.example\n"
    assert not rcpt(main, name="spam.example", dns=dns).ok
    assert rcpt(main, name="unknown", dns=dns).ok


def test_dnswl() -> None:
    dns = {("1.100.51.198.wl.example", "A"): ["127.0.0.2"]}
    main = "smtpd_client_restrictions = permit_dnswl_client wl.example, reject\n"
    assert rcpt(main, dns=dns).ok
    assert not rcpt(main, dns=dns, addr="198.51.100.9").ok


def test_rbl_template_expansion() -> None:
    values = {"a": "x", "empty": "", "bad": "a\x01b"}
    assert expand_rbl_template("$a ${a} ${a?yes} ${empty?no}${empty:alt} $$",
                               values.get, "abcxyzltesno ") == "x x yes alt $"
    assert expand_rbl_template("$bad", values.get, "ab") == "a_b"
    with pytest.raises(TemplateError):
        expand_rbl_template("$nosuch", values.get, "ab")


def test_ip_match() -> None:
    pat = parse_ip_match("127.0.[0..1].[2;4..5]")
    assert ip_match(pat, "127.0.1.4") and ip_match(pat, "127.0.0.2")
    assert not ip_match(pat, "127.0.2.2") and not ip_match(pat, "127.0.0.3")
    for bad in ("127.0.0", "127.0.0.256", "127.0.0.[3", "127.0.0.[5..2]"):
        with pytest.raises(ConfigError):
            parse_ip_match(bad)


# -- access(5) actions -----------------------------------------------------------------------


def test_actions_accumulate_and_reset() -> None:
    main = ("smtpd_sender_restrictions = check_sender_access inline:{ "
            "{a@example.org = HOLD quarantine}, {b@example.org = DISCARD} }\n")
    sess = session(main)
    sess.helo("x.example")
    sess.mail("a@example.org")
    d = sess.rcpt("joe@mx1.example.com")
    assert d.ok and sess.actions.hold == "<a@example.org>: Sender address quarantine"
    assert [e.action for e in d.logs] == ["hold"]
    sess.reset()
    assert sess.actions.hold is None
    sess.mail("b@example.org")
    assert sess.rcpt("joe@mx1.example.com").ok
    assert sess.discard and sess.actions.discard
    # Once discarding, nothing else is checked, even relay control.
    assert sess.rcpt("x@elsewhere.example").ok


def test_actions_skipped_before_mail_with_delay_reject_no() -> None:
    sess = session("smtpd_delay_reject = no\n"
                   "smtpd_client_restrictions = check_client_access "
                   "inline:{ {198.51.100.1 = HOLD} }\n")
    d = sess.connect()
    assert d.ok and sess.actions.hold is None
    assert "always skipped" in d.logs[0].text


def test_access_value_with_table_is_an_error() -> None:
    main = ("smtpd_client_restrictions = check_client_access "
            "inline:{ {198.51.100.1 = check_client_access hash:/x} }\n")
    assert text(rcpt(main)) == "451 4.3.5 Server configuration error"


def test_access_recursion_limit() -> None:
    main = ("smtpd_restriction_classes = loop\n"
            "loop = check_client_access inline:{ {198.51.100.1 = loop} }\n"
            "smtpd_client_restrictions = loop\n")
    assert text(rcpt(main)) == "451 4.3.5 Server configuration error"


def test_numeric_value_means_ok() -> None:
    main = ("smtpd_relay_restrictions = check_client_access inline:{ {198.51.100.1 = 1234} },"
            " reject_unauth_destination\n")
    assert rcpt(main, "x@elsewhere.example").ok


def test_warn_if_reject_applies_to_one_restriction() -> None:
    main = ("smtpd_client_restrictions = warn_if_reject reject, reject\n")
    d = rcpt(main)
    assert not d.ok
    assert [e.action for e in d.logs] == ["reject_warning", "reject"]


def test_defer_if_permit_in_table_and_restriction() -> None:
    main = ("smtpd_client_restrictions = defer_if_permit\n")
    d = rcpt(main)
    assert text(d) == ("450 4.7.0 <client.example[198.51.100.1]>: Client host rejected: "
                       "defer_if_permit requested")
    assert "Relay access denied" in text(rcpt(main, "x@elsewhere.example"))


def test_defer_if_reject_same_stage() -> None:
    main = ("smtpd_relay_restrictions = defer_if_reject, reject_unauth_destination\n")
    assert text(rcpt(main, "x@elsewhere.example")) == \
        "450 4.7.0 <x@elsewhere.example>: Recipient address rejected: defer_if_reject requested"


# -- lookup failures -------------------------------------------------------------------------


def test_access_table_failure() -> None:
    d = rcpt("smtpd_sender_restrictions = check_sender_access fail:x\n")
    assert text(d) == ("451 4.3.5 <a@example.org>: Sender address rejected: Server "
                       "configuration error")
    assert d.logs[0].format("RCPT", "c[1]") == "warning: fail:x: table lookup problem"


def test_mynetworks_table_failure() -> None:
    d = rcpt("mynetworks = fail:nets\n", "x@elsewhere.example")
    assert text(d) == "451 4.3.0 <x@elsewhere.example>: Temporary lookup failure"


def test_recipient_table_failure() -> None:
    d = rcpt("local_recipient_maps = fail:users\n")
    assert text(d) == "451 4.3.0 <joe@mx1.example.com>: Temporary lookup failure"


# -- stages, ETRN, VRFY, policy --------------------------------------------------------------


def test_delay_reject_no_connect_and_access_denied() -> None:
    sess = session("smtpd_delay_reject = no\nsmtpd_client_restrictions = reject\n")
    d = sess.connect()
    assert d.stage == "CONNECT" and not d.ok and sess.access_denied == d.reply


def test_helo_sets_helo_name() -> None:
    sess = session("smtpd_delay_reject = no\n"
                   "smtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n")
    assert not sess.helo("bad").ok
    assert sess.facts.helo_name is None
    assert sess.helo("good.example").ok and sess.facts.helo_name == "good.example"


def test_etrn_and_vrfy() -> None:
    sess = session("smtpd_etrn_restrictions = check_etrn_access inline:{ {ok.example = OK} }, "
                   "reject\nlocal_recipient_maps = inline:{ {joe = x} }\n")
    assert sess.etrn("ok.example").ok
    assert text(sess.etrn("no.example")) == \
        "554 5.7.1 <no.example>: Etrn command rejected: Access denied"
    assert sess.vrfy("joe@mx1.example.com").ok
    d = sess.vrfy("nobody@mx1.example.com")
    assert d.stage == "VRFY" and not d.ok


def test_policy_service() -> None:
    seen: list[dict[str, str]] = []

    def policy(service, attrs) -> PolicyAnswer:
        seen.append(dict(attrs))
        return PolicyAnswer("REJECT go away")

    main = "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:9999\n"
    d = rcpt(main, policy=policy)
    assert text(d) == "554 5.7.1 <joe@mx1.example.com>: Recipient address rejected: go away"
    assert seen[0]["request"] == "smtpd_access_policy"
    assert seen[0]["protocol_state"] == "RCPT" and seen[0]["sender"] == "a@example.org"
    d = rcpt(main)
    assert text(d) == ("451 4.3.5 <joe@mx1.example.com>: Recipient address rejected: Server "
                       "configuration problem")


def test_may_block() -> None:
    assert not session().may_block
    assert session("smtpd_client_restrictions = reject_rbl_client zen.example\n").may_block


def test_sleep_is_a_delay() -> None:
    d = rcpt("smtpd_client_restrictions = sleep 3\n")
    assert d.ok and d.delay == 3


# -- helpers ---------------------------------------------------------------------------------


def test_dsn_helpers() -> None:
    assert dsn_split("5.7.1", "4.2.0 text") == ("4.2.0", "text")
    assert dsn_split("5.7.1", "text") == ("5.7.1", "text")
    assert smtpd_dsn_fix("5.1.1", "Sender address") == "4.1.0"
    assert smtpd_dsn_fix("5.1.8", "Recipient address") == "4.1.2"
    assert smtpd_dsn_fix("5.1.1", "Client host") == "4.0.0"
    assert smtpd_dsn_fix("5.7.1", "Client host") == "5.7.1"
    assert is_header("X-Foo: bar") and not is_header("no header")


def test_host_addr_list() -> None:
    lst = HostAddrList(["192.0.2.0/28", "[2001:db8::]/32", "!bad.example.com", "example.com",
                        "198.51.100.7"], parent=True)
    assert lst.match("unknown", "192.0.2.5")
    assert not lst.match("unknown", "192.0.2.16")
    assert lst.match("unknown", "2001:db8::9")
    assert lst.match("a.example.com", "203.0.113.1")
    assert not lst.match("bad.example.com", "203.0.113.1")
    assert lst.match("x", "198.51.100.7")
    with pytest.raises(ConfigError, match="non-null host address bits"):
        HostAddrList(["192.0.2.1/24"])


def test_network_helpers() -> None:
    sess = session("mynetworks = 198.51.100.0/24\n")
    assert sess.in_mynetworks() and not sess.in_inet_interfaces()
    assert session("mynetworks = fail:x\n").in_mynetworks() is False
    assert session(addr="192.0.2.10").in_inet_interfaces()

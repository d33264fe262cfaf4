"""check_policy_service as a pure decision (policy.smtpd_policy): the per-use
settings, the request attributes, default actions and their safety net."""

from __future__ import annotations

import os
import re

import pytest

from hato.config.errors import ConfigError
from hato.policy.dnsquery import StaticDns
from hato.policy.smtpd_check import ClientFacts, SmtpdChecks
from hato.policy.smtpd_policy import (
    BUILTIN_DEFAULT_ACTION,
    PolicyAnswer,
    PolicyService,
    parse_policy_service,
    policy_instance,
)

from .conftest import make_settings

RELAY_OK = "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n"

#: every attribute, in the order Postfix 3.7 sends them, then Postfix 3.8's two
ATTRIBUTES = [
    "request", "protocol_state", "protocol_name", "client_address", "client_name",
    "client_port", "reverse_client_name", "server_address", "server_port", "helo_name",
    "sender", "recipient", "recipient_count", "queue_id", "instance", "size", "etrn_domain",
    "stress", "sasl_method", "sasl_username", "sasl_sender", "ccert_subject", "ccert_issuer",
    "ccert_fingerprint", "ccert_pubkey_fingerprint", "encryption_protocol",
    "encryption_cipher", "encryption_keysize", "policy_context",
    "compatibility_level", "mail_version",
]


class Scripted:
    def __init__(self, *answers: PolicyAnswer):
        self.answers = list(answers)
        self.calls: list[tuple[PolicyService, dict[str, str], list[str]]] = []

    def __call__(self, service, attrs):
        self.calls.append((service, dict(attrs), [name for name, _ in attrs]))
        return self.answers.pop(0) if self.answers else PolicyAnswer("DUNNO")


def checks(main: str, policy=None) -> SmtpdChecks:
    return SmtpdChecks(make_settings(RELAY_OK + main), StaticDns({}), policy=policy)


def parse(arg: str, main: str = "") -> PolicyService:
    return parse_policy_service(arg, make_settings(main))


# -- the per-use form --------------------------------------------------------------------------


def test_plain_endpoint_takes_main_cf_settings() -> None:
    svc = parse("inet:127.0.0.1:10023", "smtpd_policy_service_timeout = 7s\n"
                "smtpd_policy_service_try_limit = 3\n"
                "smtpd_policy_service_policy_context = ctx\n")
    assert svc == PolicyService("inet:127.0.0.1:10023", "inet:127.0.0.1:10023", timeout=7,
                                try_limit=3, policy_context="ctx")
    assert (svc.transport, svc.server) == ("inet", "127.0.0.1:10023")
    assert parse("unix:private/policy").server == "private/policy"


def test_every_override() -> None:
    svc = parse("unix:/run/p, timeout=10s, max_idle=1m max_ttl=2h, retry_delay=3,"
                "request_limit=5, try_limit=1, default_action=DUNNO, policy_context=sub,"
                "{ default_action = 451 4.3.5 See http://www.example.com/support1 }")
    assert (svc.endpoint, svc.timeout, svc.max_idle, svc.max_ttl, svc.retry_delay) == \
        ("unix:/run/p", 10, 60, 7200, 3)
    assert (svc.request_limit, svc.try_limit, svc.policy_context) == (5, 1, "sub")
    assert svc.default_action == "451 4.3.5 See http://www.example.com/support1"


@pytest.mark.parametrize(("arg", "error"), [
    ("inet:h:1, time_limit=1s", 'unknown option: "time_limit = 1s"'),
    ("inet:h:1, timeout = 1s", "malformed option: missing '=' after attribute name"),
    ("inet:h:1, timeout=1y", "timeout: bad time value or unit: 1y"),
    ("inet:h:1, timeout=0", "invalid timeout: 0 (min 1)"),
    ("inet:h:1, try_limit=x", "bad numerical configuration: try_limit = x"),
    ("inet:h:1, try_limit=0", "invalid try_limit parameter value 0 < 1"),
    ("inet:h:1, default_action=", 'bad parameter value: default_action = ""'),
    ("tcp:h:1", "invalid transport name: tcp in service: tcp:h:1"),
    ("inet:", 'need service transport:endpoint instead of "inet:"'),
])
def test_bad_settings_stop_smtpd(arg: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(error)):
        parse(arg)
    with pytest.raises(ConfigError, match=re.escape(error)):
        checks(f"smtpd_recipient_restrictions = reject_unauth_destination, "
               f"check_policy_service {{ {arg} }}\n")


def test_services_are_registered_at_start() -> None:
    c = checks("smtpd_restriction_classes = pol\npol = check_policy_service unix:private/a\n"
               "smtpd_recipient_restrictions = reject_unauth_destination,"
               " check_policy_service { inet:127.0.0.1:9, policy_context=x }, pol\n")
    assert set(c.policy_services) == {"inet:127.0.0.1:9, policy_context=x", "unix:private/a"}
    assert c.may_block


# -- the request ------------------------------------------------------------------------------


def test_attributes_at_rcpt_in_postfix_order() -> None:
    policy = Scripted()
    c = checks("smtpd_recipient_restrictions = reject_unauth_destination,"
               " check_policy_service inet:127.0.0.1:9\n", policy)
    facts = ClientFacts(name="client.example", addr="198.51.100.1", port="4321",
                        reverse_name="rev.example", server_addr="192.0.2.10", server_port="25",
                        instance="1.2.3.0", queue_id="QID1", protocol="ESMTP")
    sess = c.session(facts)
    sess.helo("helo.example")
    assert sess.mail("a@example.org", size=1234).ok
    assert sess.rcpt("joe@mx1.example.com").ok
    _, got, order = policy.calls[0]
    assert order == ATTRIBUTES
    assert got == {
        "request": "smtpd_access_policy", "protocol_state": "RCPT", "protocol_name": "ESMTP",
        "client_address": "198.51.100.1", "client_name": "client.example",
        "client_port": "4321", "reverse_client_name": "rev.example",
        "server_address": "192.0.2.10", "server_port": "25", "helo_name": "helo.example",
        "sender": "a@example.org", "recipient": "joe@mx1.example.com",
        "recipient_count": "0", "queue_id": "QID1", "instance": "1.2.3.0", "size": "1234",
        "etrn_domain": "", "stress": "", "sasl_method": "", "sasl_username": "",
        "sasl_sender": "", "ccert_subject": "", "ccert_issuer": "", "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "", "encryption_protocol": "", "encryption_cipher": "",
        "encryption_keysize": "0", "policy_context": "", "compatibility_level": "3.6",
        "mail_version": make_settings("").str("mail_version"),
    }


def test_attributes_at_data_and_end_of_message() -> None:
    policy = Scripted()
    c = checks("smtpd_data_restrictions = check_policy_service inet:127.0.0.1:9\n"
               "smtpd_end_of_data_restrictions = check_policy_service inet:127.0.0.1:9\n",
               policy)
    sess = c.session(ClientFacts(name="c.example", addr="198.51.100.1"))
    sess.helo("h")
    sess.mail("a@example.org", size=10)
    sess.rcpt("joe@mx1.example.com")
    sess.data(rcpt_count=1)
    sess.end_of_data(size=999)
    data, eod = policy.calls[0][1], policy.calls[1][1]
    assert (data["protocol_state"], data["recipient"], data["recipient_count"],
            data["size"]) == ("DATA", "joe@mx1.example.com", "1", "10")
    assert (eod["protocol_state"], eod["recipient_count"], eod["size"]) == \
        ("END-OF-MESSAGE", "1", "999")
    # two recipients: none is named at DATA
    sess.reset()
    sess.mail("a@example.org")
    sess.rcpt("joe@mx1.example.com")
    sess.rcpt("ann@mx1.example.com")
    sess.data(rcpt_count=2)
    assert (policy.calls[2][1]["recipient"], policy.calls[2][1]["recipient_count"]) == ("", "2")


def test_tls_sasl_stress_and_context() -> None:
    policy = Scripted()
    c = checks("smtpd_recipient_restrictions = reject_unauth_destination,"
               " check_policy_service { inet:127.0.0.1:9, policy_context=submission }\n",
               policy)
    facts = ClientFacts(name="c.example", addr="198.51.100.1", stress=True, tls_active=True,
                        tls_protocol="TLSv1.3", tls_cipher="TLS_AES_256_GCM_SHA384",
                        tls_cipher_bits=256, tls_ccert_verified=True,
                        tls_ccert_subject="Jörg Client", tls_ccert_issuer="Test CA+1",
                        tls_ccert_fingerprint="AA:BB", tls_ccert_pkey_fingerprint="CC:DD",
                        sasl_method="PLAIN", sasl_username="joe", sasl_sender="joe@example.org")
    sess = c.session(facts)
    sess.mail("a@example.org")
    sess.rcpt("x@mx1.example.com")
    got = policy.calls[0][1]
    assert {k: got[k] for k in ("stress", "policy_context", "sasl_method", "sasl_username",
                                "sasl_sender", "ccert_subject", "ccert_issuer",
                                "ccert_fingerprint", "ccert_pubkey_fingerprint",
                                "encryption_protocol", "encryption_cipher",
                                "encryption_keysize")} == {
        "stress": "yes", "policy_context": "submission", "sasl_method": "PLAIN",
        "sasl_username": "joe", "sasl_sender": "joe@example.org",
        "ccert_subject": "J+C3+B6rg+20Client", "ccert_issuer": "Test+20CA+2B1",
        "ccert_fingerprint": "AA:BB", "ccert_pubkey_fingerprint": "CC:DD",
        "encryption_protocol": "TLSv1.3", "encryption_cipher": "TLS_AES_256_GCM_SHA384",
        "encryption_keysize": "256"}
    # an unverified certificate: no subject or issuer, the fingerprints still
    facts.tls_ccert_verified = False
    sess.rcpt("y@mx1.example.com")
    got = policy.calls[1][1]
    assert (got["ccert_subject"], got["ccert_issuer"], got["ccert_fingerprint"]) == \
        ("", "", "AA:BB")


def test_etrn_domain() -> None:
    policy = Scripted()
    c = checks("smtpd_etrn_restrictions = check_policy_service inet:127.0.0.1:9\n", policy)
    sess = c.session(ClientFacts(name="c.example", addr="198.51.100.1"))
    sess.helo("h")
    sess.etrn("example.net")
    assert (policy.calls[0][1]["protocol_state"], policy.calls[0][1]["etrn_domain"]) == \
        ("ETRN", "example.net")


def test_instance_format() -> None:
    assert policy_instance(10, 1700000000.5) == f"{os.getpid():x}.6553f100.7a120.a"


# -- answers ----------------------------------------------------------------------------------


def rcpt(main: str, policy) -> tuple[str, list[str]]:
    c = checks(main, policy)
    sess = c.session(ClientFacts(name="c.example", addr="198.51.100.1"))
    sess.helo("h")
    sess.mail("a@example.org")
    d = sess.rcpt("joe@mx1.example.com")
    return str(d), [e.format(d.stage, sess.namaddr) for e in d.logs]


def test_warnings_are_logged_and_the_default_action_applies() -> None:
    policy = Scripted(PolicyAnswer(None, [
        "connect to 127.0.0.1:9: Connection refused",
        "problem talking to server 127.0.0.1:9: Connection refused"]))
    reply, logs = rcpt("smtpd_recipient_restrictions = reject_unauth_destination,"
                       " check_policy_service inet:127.0.0.1:9\n", policy)
    assert reply == ("451 4.3.5 <joe@mx1.example.com>: Recipient address rejected: "
                     "Server configuration problem")
    assert logs[:2] == ["warning: connect to 127.0.0.1:9: Connection refused",
                        "warning: problem talking to server 127.0.0.1:9: Connection refused"]
    assert logs[2].startswith("NOQUEUE: reject: RCPT from c.example[198.51.100.1]: 451 4.3.5")


def test_per_use_default_action() -> None:
    reply, _ = rcpt("smtpd_recipient_restrictions = reject_unauth_destination,"
                    " check_policy_service { inet:127.0.0.1:9, default_action=DUNNO }\n",
                    Scripted(PolicyAnswer(None)))
    assert reply == "OK"


def test_a_client_exception_is_a_soft_failure() -> None:
    def broken(service, attrs):
        raise RuntimeError("boom")

    reply, logs = rcpt("smtpd_recipient_restrictions = reject_unauth_destination,"
                       " check_policy_service inet:127.0.0.1:9\n", broken)
    assert reply.startswith("451 4.3.5")
    assert logs[0] == "warning: problem talking to server 127.0.0.1:9: boom"


def test_malformed_utf8_with_smtputf8() -> None:
    bad = b"REJECT \xff".decode("utf-8", "surrogateescape")
    main = ("smtpd_recipient_restrictions = reject_unauth_destination,"
            " check_policy_service inet:127.0.0.1:9\n")
    reply, logs = rcpt(main + "smtputf8_enable = yes\n", Scripted(PolicyAnswer(bad)))
    assert reply.startswith("451 4.3.5")
    assert logs[0] == ('warning: malformed UTF-8 in policy server inet:127.0.0.1:9 '
                       'response: "REJECT \u00ff"')
    reply, _ = rcpt(main + "smtputf8_enable = no\n", Scripted(PolicyAnswer(bad)))
    assert reply == "554 5.7.1 <joe@mx1.example.com>: Recipient address rejected: \ufffd"


def test_a_default_action_that_fails_again_does_not_recurse() -> None:
    main = ("smtpd_restriction_classes = again\n"
            "again = check_policy_service unix:private/two\n"
            "smtpd_recipient_restrictions = reject_unauth_destination,"
            " check_policy_service { unix:private/one, default_action=again }\n"
            "smtpd_policy_service_default_action = again\n")
    policy = Scripted(PolicyAnswer(None), PolicyAnswer(None))
    reply, _ = rcpt(main, policy)
    assert [svc.endpoint for svc, _, _ in policy.calls] == ["unix:private/one",
                                                            "unix:private/two"]
    assert reply == ("451 4.3.5 <joe@mx1.example.com>: Recipient address rejected: "
                     "Server configuration problem") == \
        "451 4.3.5 <joe@mx1.example.com>: Recipient address rejected: " + \
        BUILTIN_DEFAULT_ACTION.split(" ", 2)[2]


def test_no_client() -> None:
    reply, logs = rcpt("smtpd_recipient_restrictions = reject_unauth_destination,"
                       " check_policy_service inet:127.0.0.1:9\n", None)
    assert reply.startswith("451 4.3.5")
    assert logs[0] == ("warning: check_policy_service inet:127.0.0.1:9: "
                       "no policy client is available")

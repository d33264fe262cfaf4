"""Address resolution: ADDRESS_CLASS_README's classes, transport_maps,
and the recipient validation smtpd uses."""

from __future__ import annotations

import textwrap

import pytest

from hato.policy.resolve import (
    RecipientValidator,
    Resolver,
    dsn_split,
    local_expand,
    parse_transport,
)
from hato.tables.base import TableRetry

from .conftest import make_settings

CLASSES = """
virtual_alias_domains = alias.example
virtual_alias_maps = inline:{ {info@alias.example = joe@mx1.example.com} }
virtual_mailbox_domains = mailbox.example
virtual_mailbox_maps = inline:{ {ann@mailbox.example = mailbox.example/ann/} }
relay_domains = relay.example
relay_recipient_maps = inline:{ {bob@relay.example = x} }
relayhost = [smarthost.example]:587
"""


@pytest.fixture(scope="module")
def resolver() -> Resolver:
    return Resolver(make_settings(CLASSES))


@pytest.mark.parametrize("address, transport, nexthop, recipient, klass", [
    # local: $mydestination, [our addresses]; local_transport = local:$myhostname
    ("joe", "local", "mx1.example.com", "joe@mx1.example.com", "local"),
    ("joe@mx1.example.com", "local", "mx1.example.com", "joe@mx1.example.com", "local"),
    ("joe@LOCALHOST", "local", "mx1.example.com", "joe@LOCALHOST", "local"),
    ("joe@localhost.example.com.", "local", "mx1.example.com", "joe@localhost.example.com",
     "local"),
    ("joe@[127.0.0.1]", "local", "mx1.example.com", "joe@[127.0.0.1]", "local"),
    ("joe@[192.0.2.10]", "local", "mx1.example.com", "joe@[192.0.2.10]", "local"),
    # virtual alias domain: error unless cleanup expanded it
    ("info@alias.example", "error", "5.1.1 User unknown in virtual alias table",
     "info@alias.example", "alias"),
    # virtual mailbox domain
    ("ann@mailbox.example", "virtual", "mailbox.example", "ann@mailbox.example", "virtual"),
    # relay domain (and, with parent style, its subdomains): relayhost applies
    ("bob@relay.example", "relay", "[smarthost.example]:587", "bob@relay.example", "relay"),
    ("bob@sub.relay.example", "relay", "[smarthost.example]:587", "bob@sub.relay.example",
     "relay"),
    # everything else: default_transport with relayhost
    ("sam@example.org", "smtp", "[smarthost.example]:587", "sam@example.org", "default"),
    ("sam@[198.51.100.1]", "smtp", "[smarthost.example]:587", "sam@[198.51.100.1]", "default"),
    # null recipient: $empty_address_recipient
    ("", "local", "mx1.example.com", "MAILER-DAEMON@mx1.example.com", "local"),
    ("@localhost", "local", "mx1.example.com", "MAILER-DAEMON@localhost", "local"),
])
def test_address_classes(resolver, address, transport, nexthop, recipient, klass):
    res = resolver.resolve(address)
    assert (res.transport, res.nexthop, res.recipient, res.address_class) == (
        transport, nexthop, recipient, klass)
    assert not res.error and not res.failed


@pytest.mark.parametrize("address, recipient, nexthop, routed", [
    # routing through a local domain: the local domain is stripped
    ("user%other.example@localhost", "user@other.example", "[smarthost.example]:587", False),
    ("other.example!user@localhost", "user@other.example", "[smarthost.example]:587", False),
    # a source route is not stripped here (cleanup's rewrite did that already)
    ("@localhost:user@other.example", "@localhost:user@other.example",
     "[smarthost.example]:587", True),
    ("user@other.example@localhost", "user@other.example", "[smarthost.example]:587", False),
    ("a%b.example%c.example@localhost", "a%b.example@c.example", "[smarthost.example]:587",
     True),
    ("user%mx1.example.com@localhost", "user@mx1.example.com", "mx1.example.com", False),
])
def test_routing(resolver, address, recipient, nexthop, routed):
    res = resolver.resolve(address)
    assert (res.recipient, res.nexthop, res.routed) == (recipient, nexthop, routed)


def test_routing_remote_percent_is_flagged(resolver):
    res = resolver.resolve("user%victim.example@example.org")
    assert res.routed and res.address_class == "default"
    assert res.recipient == "user%victim.example@example.org"


def test_dequoted_address():
    on = Resolver(make_settings(""))
    assert on.resolve("user@other.example@localhost").recipient == "user@other.example"
    off = Resolver(make_settings("resolve_dequoted_address = no\n"))
    res = off.resolve("user@other.example@localhost")
    assert res.address_class == "local" and res.recipient == "user@other.example@localhost"


@pytest.mark.parametrize("address", [
    "joe@", "joe@bad..example", "joe@127.0.0.1", "joe@[::1]", "joe@[300.1.1.1]",
    "joe@exa mple.com", "-joe@localhost",
])
def test_bad_addresses(resolver, address):
    res = resolver.resolve(address)
    assert res.error
    assert res.address_class == "default" or address.startswith("-")


def test_resolve_options():
    s = make_settings("resolve_null_domain = yes\nresolve_numeric_domain = yes\n"
                      "allow_min_user = yes\n")
    r = Resolver(s)
    assert r.resolve("joe@").recipient == "joe@mx1.example.com"
    res = r.resolve("joe@192.0.2.10")
    assert (res.recipient, res.address_class) == ("joe@[192.0.2.10]", "local")
    res = r.resolve("joe@198.51.100.1")
    assert (res.recipient, res.nexthop) == ("joe@[198.51.100.1]", "[198.51.100.1]")
    assert not r.resolve("-joe@localhost").error


def test_transports_with_nexthop():
    s = make_settings("local_transport = local\nvirtual_transport = lmtp:unix:private/dovecot\n"
                      "virtual_mailbox_domains = v.example\nrelay_domains = r.example\n"
                      "relay_transport = relay:[mx.r.example]\ndefault_transport = error:no way\n")
    r = Resolver(s)
    assert (r.resolve("a").transport, r.resolve("a").nexthop) == ("local", "mx1.example.com")
    res = r.resolve("a@v.example")
    assert (res.transport, res.nexthop) == ("lmtp", "unix:private/dovecot")
    res = r.resolve("a@r.example")
    assert (res.transport, res.nexthop) == ("relay", "[mx.r.example]")
    res = r.resolve("a@elsewhere.example")
    assert (res.transport, res.nexthop) == ("error", "no way")


TRANSPORT = """
recipient_delimiter = +
relayhost = [smarthost.example]
transport_maps = inline:{ \
    {joe@example.com = error:5.1.1 no such user}, \
    {ann@example.com = :[ann-host.example]:2525}, \
    {example.com = smtp:[mx.example.com]}, \
    {.sub.example.com = relay:}, \
    {discard.example = discard:}, \
    {retry.example = retry:4.3.0 try later}, \
    {bounce.example = error:}, \
    {keep.example = :}, \
    {lmtp.example = lmtp}, \
    {mx1.example.com = local:other-host} }
"""


@pytest.mark.parametrize("address, transport, nexthop", [
    ("joe@example.com", "error", "5.1.1 no such user"),  # full address
    ("joe+ext@example.com", "error", "5.1.1 no such user"),  # address without extension
    ("ann@example.com", "smtp", "[ann-host.example]:2525"),  # :nexthop keeps the transport
    ("bob@example.com", "smtp", "[mx.example.com]"),  # domain
    ("bob@a.sub.example.com", "relay", "a.sub.example.com"),  # .parent, nexthop reset
    ("bob@sub.example.com", "smtp", "[smarthost.example]"),  # example.com: itself only
    ("x@discard.example", "discard", "discard.example"),
    ("x@retry.example", "retry", "4.3.0 try later"),
    ("x@bounce.example", "error", "Address is undeliverable"),
    ("x@keep.example", "smtp", "[smarthost.example]"),  # ":" changes nothing
    ("x@lmtp.example", "lmtp", "lmtp.example"),
    ("x@other.example", "smtp", "[smarthost.example]"),  # no entry
    ("user", "local", "other-host"),
])
def test_transport_maps(address, transport, nexthop):
    res = Resolver(make_settings(TRANSPORT)).resolve(address)
    assert (res.transport, res.nexthop) == (transport, nexthop)


def test_transport_maps_parent_style_and_wildcard():
    s = make_settings("transport_maps = inline:{ {example.com = smtp:[a]}, {* = smtp:[any]} }\n"
                      "parent_domain_matches_subdomains = transport_maps\n")
    r = Resolver(s)
    assert r.resolve("x@deep.sub.example.com").nexthop == "[a]"
    assert r.resolve("x@example.org").nexthop == "[any]"
    assert r.resolve("x@localhost").nexthop == "[any]"  # overrides local too
    s = make_settings("transport_maps = inline:{ {* = error:} }\n")
    assert Resolver(s).resolve("x@example.org").nexthop == "Address is undeliverable"


def test_transport_maps_search_order():
    from hato.tables.search import TableList

    from .test_rewrite import Recording

    r = Resolver(make_settings("recipient_delimiter = +\n"))
    rec = Recording(set())
    r.transport_maps = TableList([rec], title="transport_maps")
    r.transport_lookup("u+e@a.b.example", "a.b.example")
    assert rec.asked == ["u+e@a.b.example", "u@a.b.example", "a.b.example", ".b.example",
                         ".example", "*"]
    pat = Recording(set(), pattern=True)
    r.transport_maps = TableList([pat], title="transport_maps")
    r.transport_lookup("u+e@a.b.example", "a.b.example")
    assert pat.asked == ["u+e@a.b.example", "*"]


def test_transport_maps_not_for_virtual_alias_class():
    s = make_settings("virtual_alias_domains = alias.example\n"
                      "transport_maps = inline:{ {alias.example = smtp:[x]} }\n")
    res = Resolver(s).resolve("a@alias.example")
    assert res.transport == "error"


def test_sender_dependent():
    s = make_settings("""
        sender_dependent_default_transport_maps = inline:{ {@vip.example = vip:}, \
            {<> = bounces:}, {dunno@vip.example = DUNNO} }
        sender_dependent_relayhost_maps = inline:{ {@vip.example = [vip-relay]}, \
            {dunno@vip.example = DUNNO} }
        relayhost = [default-relay]
    """)
    r = Resolver(s)
    res = r.resolve("x@example.org", sender="boss@vip.example")
    assert (res.transport, res.nexthop) == ("vip", "[vip-relay]")
    res = r.resolve("x@example.org", sender="")
    assert (res.transport, res.nexthop) == ("bounces", "[default-relay]")
    res = r.resolve("x@example.org", sender="dunno@vip.example")
    assert (res.transport, res.nexthop) == ("smtp", "example.org")
    res = r.resolve("x@example.org", sender="other@example.net")
    assert (res.transport, res.nexthop) == ("smtp", "[default-relay]")
    # local mail is not affected
    assert r.resolve("x", sender="boss@vip.example").transport == "local"


def test_relocated():
    s = make_settings("relocated_maps = inline:{ {joe@example.org = joe@new.example} }\n")
    res = Resolver(s).resolve("joe@example.org")
    assert (res.transport, res.nexthop) == ("error", "5.1.6 User has moved to joe@new.example")


def test_verify_resolver():
    s = make_settings("address_verify_default_transport = verify-smtp\n"
                      "address_verify_relayhost = [probe]\n")
    res = Resolver(s, verify=True).resolve("x@example.org")
    assert (res.transport, res.nexthop) == ("verify-smtp", "[probe]")


def test_null_transport_fails():
    res = Resolver(make_settings("default_transport = :[x]\n")).resolve("x@example.org")
    assert res.failed


def test_table_failures_propagate():
    with pytest.raises(TableRetry):
        Resolver(make_settings("transport_maps = fail:x\n")).resolve("x@example.org")
    with pytest.raises(TableRetry):
        Resolver(make_settings("mydestination = fail:x\n")).resolve("x@example.org")
    with pytest.raises(TableRetry):
        Resolver(make_settings("relay_domains = fail:x\n")).resolve("x@example.org")


def test_class_of(resolver):
    assert [resolver.class_of(d) for d in ("localhost", "alias.example", "mailbox.example",
                                           "relay.example", "example.org")] == [
        "local", "alias", "virtual", "relay", "default"]


def test_parse_transport():
    assert parse_transport("smtp:[mx]:25", "d") == ("smtp", "[mx]:25")
    assert parse_transport("error:", "d") == ("error", "Address is undeliverable")
    assert parse_transport(":[relay]", "d") == ("", "[relay]")
    assert parse_transport("discard:", "d") == ("discard", "d")


# -- recipient validation -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def validator() -> RecipientValidator:
    s = make_settings(CLASSES + textwrap.dedent("""
        local_recipient_maps = inline:{ {joe=x}, {ann@mx1.example.com=x} }
        canonical_maps = inline:{ {alias@mx1.example.com = joe} }
        recipient_delimiter = +
    """))
    return RecipientValidator(s)


@pytest.mark.parametrize("address, known, reply", [
    ("joe", True, None),
    ("joe@mx1.example.com", True, None),
    ("joe+ext@localhost", True, None),
    ("ann", True, None),
    ("postmaster", True, None),
    ("MAILER-DAEMON@localhost", True, None),
    ("double-bounce", True, None),
    ("alias", True, None),  # canonical_maps knows it
    ("nobody@localhost", False,
     ("550 5.1.1 <nobody@localhost>: Recipient address rejected: User unknown in local "
     "recipient table")),
    ("info@alias.example", True, None),  # virtual_alias_maps knows it
    ("nobody@alias.example", False,
     ("550 5.1.1 <nobody@alias.example>: Recipient address rejected: User unknown in virtual "
     "alias table")),
    ("ann@mailbox.example", True, None),
    ("bob@mailbox.example", False,
     ("550 5.1.1 <bob@mailbox.example>: Recipient address rejected: User unknown in virtual "
     "mailbox table")),
    ("bob@relay.example", True, None),
    ("eve@relay.example", False,
     ("550 5.1.1 <eve@relay.example>: Recipient address rejected: User unknown in relay "
     "recipient table")),
    ("anyone@example.org", True, None),
])
def test_recipient_validation(validator, address, known, reply):
    check = validator.check(address)
    assert check.known is known
    if reply:
        assert check.reply(address) == reply


def test_sender_validation(validator):
    check = validator.check("nobody@localhost", reply_class="Sender address")
    assert check.reply("nobody@localhost", "Sender address") == (
        "550 5.1.0 <nobody@localhost>: Sender address rejected: User unknown in local "
        "recipient table")


def test_validation_options():
    s = make_settings("show_user_unknown_table_name = no\n"
                      "local_recipient_maps = inline:{ {joe=x} }\n"
                      "unknown_local_recipient_reject_code = 450\n"
                      "transport_maps = inline:{ {retry.example = retry:4.4.1 later} }\n")
    v = RecipientValidator(s)
    check = v.check("x@localhost")
    assert (check.code, check.dsn, check.text) == (450, "5.1.1", "User unknown")
    check = v.check("x@retry.example")
    assert (check.known, check.code, check.dsn, check.text) == (False, 450, "4.4.1", "later")
    assert RecipientValidator(make_settings("")).is_known_local("anyone")


def test_luser_relay():
    s = make_settings("recipient_delimiter = +\nluser_relay = $user+${extension}@catch.example\n")
    v = RecipientValidator(s)
    assert v.luser_relay_for("joe+x@mx1.example.com") == "joe+x@catch.example"
    s = make_settings("luser_relay = admin${extension?+$extension}\n")
    assert RecipientValidator(s).luser_relay_for("joe@localhost") == "admin"
    assert RecipientValidator(make_settings("")).luser_relay_for("joe@x") is None


def test_helpers():
    assert dsn_split("5.1.1", "4.2.0 full") == ("4.2.0", "full")
    assert dsn_split("5.1.1", "no status") == ("5.1.1", "no status")
    assert local_expand("$$${user}${x:y}${user?z}", {"user": "u"}) == "$uyz"

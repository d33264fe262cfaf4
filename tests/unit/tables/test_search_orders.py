"""The key search orders of access(5), virtual(5)/canonical(5), aliases(5)
and the client checks, as Postfix's smtpd_check.c, mail_addr_find.c and
local(8) perform them; and table lists.

A recording table notes every key it is asked, so each test states the
exact series of lookups Postfix makes, and which of them a pattern table
(regexp, pcre, cidr) is allowed to see: only the full key.
"""

from __future__ import annotations

import pytest

from hato.tables.base import Table, TableRetry
from hato.tables.registry import open_table
from hato.tables.search import (
    AddressMatch,
    TableList,
    find_access_address,
    find_address_mapping,
    find_alias,
    find_client,
    find_client_address,
    find_domain,
    find_hostname,
    split_extension,
    strip_extension,
    valid_hostaddr,
)


class Recorder(Table):
    type_name = "recorder"

    def __init__(self, answers: dict[str, str] | None = None, pattern: bool = False):
        super().__init__("test")
        self.answers = answers or {}
        self.pattern_table = pattern
        self.asked: list[str] = []

    def get(self, key: str) -> str | None:
        self.asked.append(key)
        return self.answers.get(key)


class Broken(Table):
    type_name = "broken"

    def get(self, key: str) -> str | None:
        raise TableRetry(self.name, "down")


# -- access(5): email addresses ----------------------------------------------------------


def test_access_address_order_with_extension():
    fixed, pattern = Recorder(), Recorder(pattern=True)
    assert find_access_address([fixed, pattern], "User+Ext@Sub.Example.COM",
                               recipient_delimiter="+") is None
    assert fixed.asked == ["User+Ext@Sub.Example.COM", "User@Sub.Example.COM",
                           "Sub.Example.COM", "Example.COM", "COM",
                           "User+Ext@", "User@"]
    assert pattern.asked == ["User+Ext@Sub.Example.COM"]


def test_access_address_parent_style_dot():
    t = Recorder()
    find_access_address([t], "u@a.b.c", parent_domain_matches_subdomains=False)
    assert t.asked == ["u@a.b.c", "a.b.c", ".b.c", ".c", "u@"]


def test_access_address_first_found_wins_and_unqualified():
    t = Recorder({"example.com": "REJECT", "u@": "OK"})
    assert find_access_address([t], "u@mail.example.com") == "REJECT"
    assert find_access_address([t], "nobody") is None and t.asked[-1] == "example.com"


def test_access_address_numeric_domain_literal_is_not_split():
    t = Recorder()
    find_access_address([t], "u@1.2.3.4")
    assert t.asked == ["u@1.2.3.4", "1.2.3.4", "u@"]


def test_access_address_multiple_delimiters_and_reserved_names():
    t = Recorder()
    find_access_address([t], "a-b+c@d", recipient_delimiter="+-")
    assert t.asked == ["a-b+c@d", "a@d", "d", "a-b+c@", "a@"]
    t = Recorder()
    find_access_address([t], "owner-list@d", recipient_delimiter="-")
    assert t.asked == ["owner-list@d", "d", "owner-list@"]
    t = Recorder()
    find_access_address([t], "MAILER-DAEMON@d", recipient_delimiter="-")
    assert t.asked == ["MAILER-DAEMON@d", "d", "MAILER-DAEMON@"]
    t = Recorder()
    find_access_address([t], "postmaster+x@d", recipient_delimiter="+")
    assert t.asked == ["postmaster+x@d", "postmaster@d", "d", "postmaster+x@", "postmaster@"]


# -- hostnames and client addresses -------------------------------------------------------


def test_hostname_and_parents():
    fixed, pattern = Recorder(), Recorder(pattern=True)
    find_hostname([fixed, pattern], "mail.example.com")
    assert fixed.asked == ["mail.example.com", "example.com", "com"]
    assert pattern.asked == ["mail.example.com"]
    t = Recorder()
    find_domain([t], "mail.example.com", parent_domain_matches_subdomains=False)
    assert t.asked == ["mail.example.com", ".example.com", ".com"]
    t = Recorder()
    find_domain([t], "helo.", parent_domain_matches_subdomains=False)
    assert t.asked == ["helo.", "."]


def test_client_ipv4_octets():
    fixed, cidr = Recorder(), Recorder(pattern=True)
    find_client_address([fixed, cidr], "192.0.2.10")
    assert fixed.asked == ["192.0.2.10", "192.0.2", "192.0", "192"]
    assert cidr.asked == ["192.0.2.10"]


def test_client_ipv6_prefixes():
    t = Recorder()
    find_client_address([t], "2001:db8:1:2::10")
    assert t.asked == ["2001:db8:1:2::10", "2001:db8:1:2:", "2001:db8:1:2",
                       "2001:db8:1", "2001:db8", "2001"]


def test_client_name_then_address():
    t = Recorder({"192.0.2": "OK"})
    assert find_client([t], "host.example.net", "192.0.2.9") == "OK"
    assert t.asked == ["host.example.net", "example.net", "net", "192.0.2.9", "192.0.2"]


def test_with_real_tables(tmp_path):
    cidr = tmp_path / "clients.cidr"
    cidr.write_text("192.0.2.0/24 from-cidr\n")
    tables = TableList.from_value(f"inline:{{192.0.2=from-inline, 198.51=b}}, cidr:{cidr}")
    assert find_client_address(tables, "192.0.2.1") == "from-cidr"  # full key first
    assert find_client_address(tables, "198.51.100.1") == "b"


# -- virtual(5), canonical(5) ---------------------------------------------------------------


def test_address_mapping_order_local_domain():
    fixed, pattern = Recorder(), Recorder(pattern=True)
    assert find_address_mapping([fixed, pattern], "user+ext@example.com",
                                recipient_delimiter="+", local_domain=True) is None
    assert fixed.asked == ["user+ext@example.com", "user@example.com", "user+ext", "user",
                           "@example.com"]
    assert pattern.asked == ["user+ext@example.com"]


def test_address_mapping_remote_domain_skips_bare_user():
    t = Recorder()
    find_address_mapping([t], "user@example.org", recipient_delimiter="+")
    assert t.asked == ["user@example.org", "@example.org"]


def test_address_mapping_reports_the_stripped_extension():
    t = Recorder({"user@example.com": "other@example.net", "u": "local"})
    assert find_address_mapping([t], "user+tag@example.com", recipient_delimiter="+") == \
        AddressMatch("other@example.net", "+tag")
    assert find_address_mapping([t], "user@example.com") == AddressMatch("other@example.net")
    assert find_address_mapping([t], "u+x@here", recipient_delimiter="+",
                                local_domain=True) == AddressMatch("local", "+x")
    t2 = Recorder({"@example.com": "catchall"})
    assert find_address_mapping([t2], "a+b@example.com", recipient_delimiter="+") == \
        AddressMatch("catchall")


# -- aliases --------------------------------------------------------------------------------


def test_alias_full_localpart_then_user_both_to_every_table():
    fixed, pattern = Recorder(), Recorder(pattern=True)
    assert find_alias([fixed, pattern], "user+ext", recipient_delimiter="+") is None
    assert fixed.asked == ["user+ext", "user"]
    assert pattern.asked == ["user+ext", "user"]
    t = Recorder({"user": "someone"})
    assert find_alias([t], "user+ext", recipient_delimiter="+") == AddressMatch("someone", "+ext")


# -- failures, helpers, table lists ------------------------------------------------------------


@pytest.mark.parametrize("call", [
    lambda ts: find_access_address(ts, "a@b"),
    lambda ts: find_client(ts, "h.example", "192.0.2.1"),
    lambda ts: find_address_mapping(ts, "a@b"),
    lambda ts: find_alias(ts, "a"),
])
def test_retry_propagates(call):
    with pytest.raises(TableRetry):
        call([Recorder(), Broken("x")])


def test_split_and_strip():
    assert split_extension("user+foo-bar", "+-") == ("user", "+foo-bar")
    assert split_extension("+x", "+") is None
    assert split_extension("x+", "+") == ("x", "+")
    assert split_extension("list-request", "-") is None
    assert split_extension("list-request", "-", owner_request_special=False) == \
        ("list", "-request")
    assert split_extension("MAILER-DAEMON", "-") is None
    assert split_extension("double-bounce", "-") is None
    assert strip_extension("a+b@c+d", "+") == ("a@c+d", "+b")
    assert strip_extension("ab@c", "+") is None
    assert valid_hostaddr("1.2.3.4") and valid_hostaddr("::1")
    assert not valid_hostaddr("1.2.3") and not valid_hostaddr("example.com")


def test_table_list_semantics():
    tables = TableList.from_value("inline:{a=1}, inline:{a=2, b=}, static:s")
    assert len(tables) == 3 and tables[0].name == "inline:{a=1}"
    assert tables.get("a") == "1"
    assert tables.get("") is None  # an empty key is never looked up
    with pytest.raises(TableRetry, match="empty string result"):
        tables.get("b")
    assert tables.get("zzz") == "s"
    assert "inline:{a=1}" in repr(tables)
    assert not tables.refresh()
    tables.close()


def test_table_list_from_value_errors_close_opened_tables():
    from hato.tables.base import TableError
    with pytest.raises(TableError):
        TableList.from_value("inline:{a=1}, nosuchtype:/x")
    assert open_table("static:x").get("k") == "x"

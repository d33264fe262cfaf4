"""Address rewriting: the rewrite stage, canonical maps, masquerading,
virtual alias expansion, duplicate elimination, match lists."""

from __future__ import annotations

import pytest

from hato.config.errors import ConfigError
from hato.policy.rewrite import (
    DuplicateFilter,
    LocalDomains,
    LookupDefer,
    MatchList,
    RewriteContext,
    Rewriter,
    RewriteRules,
    rewrite_external,
    rewrite_internal,
)
from hato.policy import rewrite as rewrite_module
from hato.tables.base import Table, TableRetry

from .conftest import make_settings

# -- the rewrite stage: Postfix's rewrite_clnt.ref ------------------------------------------

LOCAL = RewriteContext("local", "MYDOMAIN", "MYDOMAIN")
INVALID = RewriteContext("remote", "domain.invalid", "domain.invalid")
RULES = RewriteRules(swap_bangpath=True, percent_hack=True, append_at_myorigin=True,
                     append_dot_mydomain=True)

REWRITE_CLNT_REF = [
    ("!", '""@', '""@'),
    ("a!", '""@a.MYDOMAIN', '""@a.domain.invalid'),
    ("!b", "b@", "b@"),
    ("a!b", "b@a.MYDOMAIN", "b@a.domain.invalid"),
    ("%", '""@', '""@'),
    ("a%", "a@", "a@"),
    ("%b", '""@b.MYDOMAIN', '""@b.domain.invalid'),
    ("a%b", "a@b.MYDOMAIN", "a@b.domain.invalid"),
    ("@", '""', '""'),
    ("a@", "a@", "a@"),
    ("a@.", "a@.", "a@."),
    ("a@b", "a@b.MYDOMAIN", "a@b.domain.invalid"),
    ("a@b.", "a@b", "a@b"),
]


@pytest.mark.parametrize("address, local, remote", REWRITE_CLNT_REF)
def test_rewrite_clnt_ref(address, local, remote):
    for _ in range(2):  # the second time from the store of answers
        assert rewrite_external(address, LOCAL, RULES) == local
        assert rewrite_external(address, INVALID, RULES) == remote


def test_kept_answers_depend_on_context_rules_and_form(monkeypatch):
    monkeypatch.setattr(rewrite_module, "_rewritten", {})
    other = RewriteRules(swap_bangpath=False, percent_hack=False, append_at_myorigin=False,
                         append_dot_mydomain=False)
    assert rewrite_external("a%b", LOCAL, RULES) == "a@b.MYDOMAIN"
    assert rewrite_external("a%b", LOCAL, other) == "a%b"
    assert rewrite_external("a%b", INVALID, RULES) == "a@b.domain.invalid"
    assert rewrite_external("a%b", RewriteContext("local", "x", "x"), RULES) == "a@b.x"
    # the internal form: the local part is quoted for the rewrite, unquoted after
    # (the same string in the two forms: two answers)
    assert rewrite_external("a b", LOCAL, RULES) == '"a b"@MYDOMAIN.MYDOMAIN'
    assert rewrite_internal("a b", LOCAL, RULES) == "a b@MYDOMAIN.MYDOMAIN"
    assert rewrite_external("a b", LOCAL, RULES) == '"a b"@MYDOMAIN.MYDOMAIN'


def test_kept_answers_are_bounded(monkeypatch):
    store: dict = {}
    monkeypatch.setattr(rewrite_module, "_rewritten", store)
    monkeypatch.setattr(rewrite_module, "REWRITE_CACHE_SIZE", 8)
    for i in range(50):
        assert rewrite_external(f"u{i}", LOCAL, RULES) == f"u{i}@MYDOMAIN.MYDOMAIN"
        assert len(store) <= 8


def test_rewrite_stage():
    s = make_settings("append_dot_mydomain = no\n")
    rw = Rewriter(s)
    assert rw.rewrite("joe") == "joe@mx1.example.com"  # append_at_myorigin
    assert rw.rewrite("joe@host") == "joe@host"  # append_dot_mydomain = no
    assert rw.rewrite("host!joe") == "joe@host"  # swap_bangpath
    assert rw.rewrite("joe%host.example") == "joe@host.example"  # allow_percent_hack
    assert rw.rewrite("@a,@b:joe@c.example") == "joe@c.example"  # source route
    assert rw.rewrite("joe@c.example.") == "joe@c.example"
    assert rw.rewrite("") == ""
    assert rw.rewrite("joe smith") == "joe smith@mx1.example.com"
    assert rw.rewrite("joe", "remote") == "joe"  # no remote_header_rewrite_domain
    s = make_settings("append_dot_mydomain = yes\nremote_header_rewrite_domain = domain.invalid\n"
                      "swap_bangpath = no\nallow_percent_hack = no\nappend_at_myorigin = no\n")
    rw = Rewriter(s)
    assert rw.rewrite("joe@host") == "joe@host.example.com"
    assert rw.rewrite("host!joe") == "host!joe"
    assert rw.rewrite("joe%host") == "joe%host"
    assert rw.rewrite("joe") == "joe"
    assert rw.rewrite("joe@host", "remote") == "joe@host.domain.invalid"


def test_myorigin_and_mailer_daemon():
    rw = Rewriter(make_settings("myorigin = example.com\n"))
    assert rw.rewrite("joe") == "joe@example.com"
    assert rw.sender("MAILER-DAEMON") == ""
    assert rw.sender("mailer-daemon@example.com") == ""
    assert rw.sender("MAILER-DAEMON@other.example") == "MAILER-DAEMON@other.example"
    assert rw.recipient("") == "MAILER-DAEMON@example.com"  # empty_address_recipient


# -- canonical maps ------------------------------------------------------------------------

def test_canonical_examples():
    """canonical(5) and ADDRESS_REWRITING_README examples."""
    s = make_settings("""
        recipient_delimiter = +
        canonical_maps = inline:{ {wietse@porcupine.org = Wietse.Venema@porcupine.org}, \
            {@old.example = @new.example}, {joe = joe.user@example.com} }
        sender_canonical_maps = inline:{ {bob@example.com = robert@example.com} }
        recipient_canonical_maps = inline:{ {postmaster@example.com = admin@example.com} }
    """)
    rw = Rewriter(s)
    assert rw.sender("wietse@porcupine.org") == "Wietse.Venema@porcupine.org"
    assert rw.recipient("wietse@porcupine.org") == "Wietse.Venema@porcupine.org"
    # @domain maps the user to another domain; an extension stays.
    assert rw.recipient("sam@old.example") == "sam@new.example"
    assert rw.recipient("sam+x@old.example") == "sam+x@new.example"
    # user@$myorigin matches a bare "user" key; the result is canonicalised.
    assert rw.sender("joe") == "joe.user@example.com"
    # sender_ and recipient_canonical_maps are for their class only.
    assert rw.sender("bob@example.com") == "robert@example.com"
    assert rw.recipient("bob@example.com") == "bob@example.com"
    assert rw.recipient("postmaster@example.com") == "admin@example.com"
    assert rw.sender("postmaster@example.com") == "postmaster@example.com"
    # propagate_unmatched_extensions = canonical, virtual
    assert rw.recipient("wietse+foo@porcupine.org") == "Wietse.Venema+foo@porcupine.org"
    # no mapping: unchanged
    assert rw.recipient("other@example.net") == "other@example.net"


def test_canonical_classes():
    s = make_settings("""
        canonical_maps = inline:{ {a@example.com = b@example.com} }
        canonical_classes = envelope_recipient
    """)
    rw = Rewriter(s)
    assert rw.sender("a@example.com") == "a@example.com"
    assert rw.recipient("a@example.com") == "b@example.com"
    assert not rw.map_address(rw.canonical_maps, "z@example.com", True)


def test_canonical_nesting_and_self_mapping(caplog):
    s = make_settings("canonical_maps = inline:{ {a@x.example=b@x.example}, "
                      "{b@x.example=c@x.example}, {c@x.example=C@x.example} }\n")
    rw = Rewriter(s)
    # Recursion ends when an address maps to itself (case-insensitively).
    assert rw.recipient("a@x.example") == "C@x.example"
    loop = make_settings("canonical_maps = inline:{ {a@x.example=b@x.example}, "
                         "{b@x.example=a@x.example} }\n")
    warnings: list[str] = []
    out = Rewriter(loop).recipient("a@x.example", warn=warnings.append)
    assert out in ("a@x.example", "b@x.example")
    assert warnings == ["unreasonable canonical_maps map nesting for " + out]


def test_canonical_multi_valued_and_quoted():
    s = make_settings('canonical_maps = inline:{ {a@x.example = b@x.example, c@x.example}, '
                      '{ "joe smith"@x.example = joe.smith@x.example } }\n')
    warnings: list[str] = []
    rw = Rewriter(s)
    assert rw.recipient("a@x.example", warn=warnings.append) == "b@x.example"
    assert warnings == ["multi-valued canonical_maps entry for a@x.example"]
    # The quoted (external) form is the lookup key.
    assert rw.recipient("joe smith@x.example") == "joe.smith@x.example"


def test_canonical_table_failure():
    rw = Rewriter(make_settings("canonical_maps = fail:down\n"))
    with pytest.raises(TableRetry):
        rw.recipient("a@x.example")
    with pytest.raises(LookupDefer) as err:
        rw.sender("a@x.example")
    assert err.value.text == "canonical_maps map lookup problem for a@x.example"


# -- masquerading --------------------------------------------------------------------------

def test_masquerade_examples():
    """ADDRESS_REWRITING_README: masquerade_domains = example.com, with
    exceptions; !domain keeps a subdomain."""
    s = make_settings("""
        masquerade_domains = !sub.example.com, example.com
        masquerade_exceptions = root, mailer-daemon
    """)
    rw = Rewriter(s)
    assert rw.masquerade("joe@host.example.com") == ("joe@example.com", True)
    assert rw.masquerade("joe@example.com") == ("joe@example.com", False)
    assert rw.masquerade("joe@a.sub.example.com") == ("joe@a.sub.example.com", False)
    assert rw.masquerade("joe@host.example.org") == ("joe@host.example.org", False)
    assert rw.masquerade("root@host.example.com") == ("root@host.example.com", False)
    assert rw.masquerade("Root@host.example.com") == ("Root@host.example.com", False)
    assert rw.masquerade("joe@hostexample.com") == ("joe@hostexample.com", False)
    # masquerade_classes: senders and headers, not envelope recipients.
    assert rw.sender("joe@host.example.com") == "joe@example.com"
    assert rw.recipient("joe@host.example.com") == "joe@host.example.com"


def test_masquerade_order_and_classes():
    rw = Rewriter(make_settings("masquerade_domains = example.com, !sub.example.com\n"
                                "masquerade_classes = envelope_recipient\n"))
    # The first matching entry decides: example.com strips sub.example.com too.
    assert rw.recipient("joe@a.sub.example.com") == "joe@example.com"
    assert rw.sender("joe@a.sub.example.com") == "joe@a.sub.example.com"


def test_masquerade_exceptions_table():
    rw = Rewriter(make_settings("masquerade_domains = example.com\n"
                                "masquerade_exceptions = inline:{ {admin=x} }\n"))
    assert rw.masquerade("admin@h.example.com")[1] is False
    assert rw.masquerade("other@h.example.com")[1] is True


# -- virtual alias expansion ----------------------------------------------------------------

VIRTUAL = """
recipient_delimiter = +
virtual_alias_maps = inline:{ \
    {postmaster@virtual.example = postmaster}, \
    {info@virtual.example = joe@example.net, jane@example.net}, \
    {list@virtual.example = info@virtual.example, boss@example.net}, \
    {self@virtual.example = self@virtual.example, copy@example.net}, \
    {@catchall.example = fallback@example.net}, \
    {user@catchall.example = user@example.net} }
"""


def test_virtual_examples():
    """virtual(5): one-to-many, recursion, @domain catch-all, local names."""
    rw = Rewriter(make_settings(VIRTUAL))
    assert rw.expand_virtual("info@virtual.example") == ["joe@example.net", "jane@example.net"]
    assert rw.expand_virtual("list@virtual.example") == [
        "joe@example.net", "boss@example.net", "jane@example.net"]
    assert rw.expand_virtual("postmaster@virtual.example") == ["postmaster@mx1.example.com"]
    assert rw.expand_virtual("nobody@example.org") == ["nobody@example.org"]
    # @domain catches all, a full address wins over it.
    assert rw.expand_virtual("x@catchall.example") == ["fallback@example.net"]
    assert rw.expand_virtual("user@catchall.example") == ["user@example.net"]
    # An unmatched extension is propagated.
    assert rw.expand_virtual("info+tag@virtual.example") == [
        "joe+tag@example.net", "jane+tag@example.net"]


def test_virtual_self_reference():
    """user@domain -> user@domain, other: the address is kept, not looped."""
    rw = Rewriter(make_settings(VIRTUAL))
    assert rw.expand_virtual("self@virtual.example") == [
        "self@virtual.example", "copy@example.net"]


def test_virtual_limits():
    chain = ", ".join(f"{{a{i}@v.example = a{i + 1}@v.example}}" for i in range(20))
    s = make_settings(f"virtual_alias_maps = inline:{{ {chain} }}\n"
                      "virtual_alias_recursion_limit = 5\n")
    with pytest.raises(LookupDefer) as err:
        Rewriter(s).expand_virtual("a0@v.example")
    assert err.value.text == ("unreasonable virtual_alias_maps map nesting for a0@v.example "
                              "-- message not accepted, try again later")
    assert err.value.dsn_reason == "4.6.0 Alias expansion error"
    s = make_settings(f"virtual_alias_maps = inline:{{ {chain} }}\n"
                      "virtual_alias_recursion_limit = 50\n")
    assert Rewriter(s).expand_virtual("a0@v.example") == ["a20@v.example"]

    many = ", ".join(f"m{i}@x.example" for i in range(12))
    s = make_settings(f"virtual_alias_maps = inline:{{ {{big@v.example = {many}}} }}\n"
                      "virtual_alias_expansion_limit = 10\n")
    with pytest.raises(LookupDefer) as err:
        Rewriter(s).expand_virtual("big@v.example")
    assert "unreasonable virtual_alias_maps map expansion size for big@v.example" \
        in err.value.text
    s = make_settings("virtual_alias_maps = inline:{ {long@v.example = "
                      + "x" * 40 + "@x.example} }\nvirtual_alias_address_length_limit = 20\n")
    with pytest.raises(LookupDefer) as err:
        Rewriter(s).expand_virtual("long@v.example")
    assert err.value.text.startswith("unreasonable virtual_alias_maps result xxxx")


def test_virtual_loop_between_two_addresses_hits_the_limit():
    s = make_settings("virtual_alias_maps = inline:{ {a@v.example = b@v.example}, "
                      "{b@v.example = a@v.example} }\n")
    with pytest.raises(LookupDefer):
        Rewriter(s).expand_virtual("a@v.example")


def test_virtual_table_failure_and_bad_result():
    with pytest.raises(LookupDefer) as err:
        Rewriter(make_settings("virtual_alias_maps = fail:x\n")).expand_virtual("a@b.example")
    assert err.value.retry
    assert err.value.text == ("virtual_alias_maps map lookup problem for a@b.example -- "
                              "message not accepted, try again later")
    rw = Rewriter(make_settings("virtual_alias_maps = inline:{ {a@b.example = (comment)} }\n"))
    with pytest.raises(TableRetry):
        rw.expand_virtual("a@b.example")


# -- duplicates, match lists, local domains ------------------------------------------------------

def test_duplicate_filter():
    dups = DuplicateFilter(2)
    assert not dups.seen("A@x")
    assert dups.seen("a@X")
    assert not dups.seen("b@x")
    assert not dups.seen("c@x")  # past the limit: not remembered
    assert not dups.seen("c@x")
    unlimited = DuplicateFilter(0)
    for i in range(5000):
        assert not unlimited.seen(f"{i}@x")
    assert unlimited.seen("1@x")


class Recording(Table):
    type_name = "rec"

    def __init__(self, keys: set[str], pattern: bool = False):
        super().__init__("t")
        self.keys = keys
        self.asked: list[str] = []
        self.pattern_table = pattern

    def get(self, key: str) -> str | None:
        self.asked.append(key)
        return "ok" if key in self.keys else None


def test_match_list_strings(tmp_path):
    lst = MatchList(["Example.COM", "!bad.example", "other.example"], title="t")
    assert lst.match("example.com") and lst.match("EXAMPLE.com")
    assert not lst.match("bad.example")
    assert not lst.match("sub.example.com")  # a string list: no parents
    f = tmp_path / "domains"
    f.write_text("# comment\none.example two.example\nthree.example, four.example\n")
    lst = MatchList([str(f)], title="t")
    assert all(lst.match(d) for d in ("one.example", "two.example", "four.example"))
    assert not lst.match("five.example")
    with pytest.raises(ConfigError):
        MatchList(["/nonexistent/file"], title="t")
    with pytest.raises(ConfigError):
        MatchList(["!"], title="t")


def test_match_list_file_is_read_as_postfix_reads_it(tmp_path, caplog):
    # Lines end at \n only (not at \r, \v, \x1c or \x85, where Python's
    # splitlines() ends them), words are split at commas and blanks, a line
    # that starts with "#" is a comment, and a word that starts with "#" ends
    # its line with a warning (match_list.c); a "#" inside a word is part of it.
    f = tmp_path / "domains"
    f.write_bytes(b"# comment\none.example\x1ctwo.example\r\nthree.example\x0bx\n"
                  b"hash#tag.example  # trailing words\nfour.example\n")
    with caplog.at_level("WARNING", logger="hato.rewrite"):
        lst = MatchList([str(f)], title="t")
    assert lst.match("one.example\x1ctwo.example")  # one word: \x1c is not a blank
    assert not lst.match("one.example") and not lst.match("two.example")
    assert lst.match("three.example\x0bx")  # \v is not a separator either
    assert lst.match("hash#tag.example") and lst.match("four.example")
    assert not lst.match("trailing") and not lst.match("words")
    assert "comment at end of line is not supported: # trailing words" in caplog.text


def test_match_list_hosts():
    parent = MatchList(["example.com"], hostname=True, parent=True)
    assert parent.match("example.com") and parent.match("a.b.example.com")
    assert not parent.match("badexample.com")
    dot = MatchList(["example.com", ".example.org"], hostname=True, parent=False)
    assert dot.match("example.com") and not dot.match("a.example.com")
    assert dot.match("a.example.org") and not dot.match("example.org")


def test_match_list_tables():
    lst = MatchList([], hostname=True, parent=True)
    rec = Recording({"example.com"})
    lst.items.append((True, rec))
    assert lst.match("a.b.Example.com")
    assert rec.asked == ["a.b.example.com", "b.example.com", "example.com"]
    pat = Recording({"example.com"}, pattern=True)
    lst = MatchList([], hostname=True, parent=True)
    lst.items.append((True, pat))
    assert not lst.match("a.example.com")
    assert pat.asked == ["a.example.com"]  # a pattern table sees the full name only
    lst = MatchList(["inline:{ {Example.com=x} }"])
    assert lst.match("EXAMPLE.COM")
    assert MatchList(["!inline:{ {a.example=x} }", "static:all"]).match("b.example")
    assert not MatchList(["!inline:{ {a.example=x} }", "static:all"]).match("a.example")
    with pytest.raises(TableRetry):
        MatchList(["fail:x"]).match("a.example")


def test_local_domains():
    s = make_settings("mydestination = $myhostname, localhost, inline:{ {virtual.example=1} }\n"
                      "proxy_interfaces = 198.51.100.7\n")
    ld = LocalDomains(s)
    assert ld.is_local("mx1.example.com") and ld.is_local("MX1.example.com.")
    assert ld.is_local("virtual.example")
    assert not ld.is_local("example.com")
    assert ld.is_local("[127.0.0.1]") and ld.is_local("[192.0.2.10]")
    assert ld.is_local("[198.51.100.7]")  # proxy_interfaces
    assert ld.is_local("[IPv6:::1]")
    assert not ld.is_local("[192.0.2.11]")
    assert not ld.is_local("[::1]")  # IPv6 literals need the IPv6: prefix
    assert not ld.is_local("") and not ld.is_local("a..")
    assert ld.is_local_or_origin("mx1.example.com")
    only = LocalDomains(make_settings("inet_interfaces = loopback-only\n"))
    assert only.is_local("[127.0.0.1]") and not only.is_local("[192.0.2.10]")


def test_unavailable_table_defers():
    rw = Rewriter(make_settings("canonical_maps = nosuchtype:/x\n"))
    with pytest.raises(TableRetry):
        rw.recipient("a@b.example")
    with pytest.raises(ConfigError):
        Rewriter(make_settings("canonical_maps = nosuchtype:/x\n"
                               "daemon_table_open_error_is_fatal = yes\n"))

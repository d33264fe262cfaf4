"""Configuration inputs the fuzzers (tests/fuzz) found crashing hato's
readers, kept as plain tests."""

from __future__ import annotations

import pytest

from hato.config.defaults import HostFacts
from hato.config.errors import ExpansionLoop
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config


def _settings(main_cf: str, hostname: str = "mail.example.com"):
    config = Config("/etc/hato", MainCf.parse(main_cf), MasterCf.parse(b""),
                    HostFacts(hostname), explicit_dir=False)
    return config.settings()


def test_mydomain_from_default_myhostname():
    """``mydomain = $myhostname`` with myhostname left to its default was a
    RecursionError: the computed myhostname looked mydomain up even for a
    qualified host name, and mydomain refers back to it. Postfix consults
    mydomain only for an unqualified host name."""
    s = _settings("mydomain = ${myhostname?{example.com}:{localdomain}}\n")
    assert s.expanded("myhostname") == "mail.example.com"
    assert s.expanded("mydomain") == "example.com"
    s = _settings("mydomain = $myhostname\n")
    assert s.expanded("mydomain") == "mail.example.com"


def test_computed_default_loop_is_an_expansion_loop():
    """A computed default that main.cf makes depend on itself is a clean
    configuration error naming the loop, never a RecursionError."""
    s = _settings("mydomain = $myhostname\n", hostname="mail")
    with pytest.raises(ExpansionLoop, match="myhostname"):
        s.expanded("mydomain")
    s = _settings("inet_protocols = $mynetworks\n")
    with pytest.raises(ExpansionLoop, match="mynetworks"):
        s.expanded("mynetworks")


def test_postconf_p_on_master_cf_ending_in_a_comment_without_newline():
    """Editing the last entry of a master.cf whose last line is a comment
    without a line end glued the rewritten entry onto that comment: the
    service vanished (commented out) from the file."""
    m = MasterCf.parse(b"smtp inet n - n - - smtpd\n# trailing comment")
    m.set_param("smtp", "inet", "smtpd_tls_security_level", "may")
    again = MasterCf.parse(m.render())
    assert [s.fields for s in again.services] == [
        ["smtp", "inet", "n", "-", "n", "-", "-", "smtpd", "-o", "smtpd_tls_security_level=may"]]
    assert m.render().startswith("# trailing comment\n")


def test_empty_argument_survives_a_rewrite():
    """``{ }`` passes an empty argument; rewriting the entry (postconf -P,
    -F, -M) wrote it as nothing, so the argument was lost."""
    m = MasterCf.parse(b"policy unix - n n - 0 spawn user=nobody argv=/usr/bin/p a { } b\n")
    assert m.services[0].args[-3:] == ["a", "", "b"]
    m.set_param("policy", "unix", "hato_x", "1")
    again = MasterCf.parse(m.render())
    assert again.services[0].args[-3:] == ["a", "", "b"]
    assert again.services[0].overrides() == {"hato_x": "1"}


def test_inet_service_port_with_a_superscript_digit():
    """A master.cf service name ``127.0.0.1:²`` raised ValueError from int()
    (str.isdigit() accepts it) instead of a ConfigError."""
    from hato.config.errors import ConfigError
    from hato.config.mastercf import inet_endpoint

    with pytest.raises(ConfigError):
        inet_endpoint("127.0.0.1:²", "/dev/null")
    assert inet_endpoint("127.0.0.1:2525", "/dev/null") == ("127.0.0.1", 2525)


def test_braced_argument_that_looks_like_an_option_keeps_its_braces():
    """``{- y 60 qmgr}`` is one argument; written back without its braces
    (the formatter only braced arguments after the options) it became four."""
    m = MasterCf.parse(b"10025 inet n - n - - smtpd {-x y} z\n")
    svc = m.services[0]
    assert svc.args == ["-x y", "z"]
    for fold in (False, True):
        again = MasterCf.parse(svc.format(fold=fold) + "\n")
        assert again.services[0].args == ["-x y", "z"]


def test_control_character_command_survives_a_postconf_p_edit():
    """A command field of \\x1f (not blank to Postfix, whitespace to
    Python's strip()) at the end of a line was trimmed away when the edited
    file was read again, and the edit was lost."""
    m = MasterCf.parse("10025 inet n - n - - \x1f smtpd\n")
    assert m.services[0].fields == ["10025", "inet", "n", "-", "n", "-", "-", "\x1f", "smtpd"]
    m.set_param("10025", "inet", "hato_fuzz", "1")
    again = MasterCf.parse(m.render())
    assert again.services[0].command == "\x1f"
    assert again.services[0].overrides().get("hato_fuzz") == "1"
    # a line that starts with it begins an entry, it does not continue one
    assert [s.name for s in MasterCf.parse("a unix - - n - - x\n\x1fb unix - - n - - y\n")
            .services] == ["a", "\x1fb"]

"""Settings: the layered, frozen view services read."""

from __future__ import annotations

import pytest

from hato.config.defaults import HostFacts
from hato.config.errors import ConfigError
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config

FACTS = HostFacts("mx1", (("127.0.0.1", 8), ("192.0.2.10", 24)), (("::1", 128),))


def cfg(main: str, master: str = "") -> Config:
    return Config("/etc/hato", MainCf.parse(main, "/etc/hato/main.cf"),
                  MasterCf.parse(master, "/etc/hato/master.cf"), FACTS)


def test_layers_and_stress():
    c = cfg("smtpd_timeout = ${stress?10}${stress:300}s\n",
            "submission inet n - n - - smtpd -o smtpd_timeout=60s -o syslog_name=postfix/sub\n")
    assert c.settings().time("smtpd_timeout") == 300
    assert c.settings(stress=True).time("smtpd_timeout") == 10
    svc = c.master.services[0]
    s = c.settings(svc)
    assert s.time("smtpd_timeout") == 60
    assert s.str("syslog_name") == "postfix/sub"
    assert c.settings().str("syslog_name") == "postfix"


def test_computed_defaults():
    s = cfg("").settings()
    assert s.str("myhostname") == "mx1.localdomain"
    assert s.str("mydomain") == "localdomain"
    assert s.str("mynetworks") == "127.0.0.0/8 192.0.2.0/24 [::1]/128"
    s = cfg("myhostname = mail.example.com\n").settings()
    assert s.str("mydomain") == "example.com"
    s = cfg("mydomain = example.org\n").settings()
    assert s.str("myhostname") == "mx1.example.org"
    s = cfg("mynetworks_style = host\n").settings()
    assert s.str("mynetworks") == "127.0.0.1/32 192.0.2.10/32 [::1]/128"


def test_typed_errors():
    s = cfg("smtpd_timeout = 3x\ndefault_process_limit = 0\n").settings()
    with pytest.raises(ConfigError):
        s.time("smtpd_timeout")
    with pytest.raises(ConfigError):
        s.int("default_process_limit")


def test_frozen():
    s = cfg("").settings()
    with pytest.raises(TypeError):
        s["x"] = "y"  # type: ignore[index]


def test_unused_and_user_defined():
    c = cfg("foo = bar\nmy_list = a\nsmtpd_client_event_limit_exceptions = $my_list\n")
    assert [u[0] for u in c.unused()] == ["foo"]
    assert "my_list" in c.known()

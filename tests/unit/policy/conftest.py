"""Helpers for the address rewriting, resolution and cleanup tests."""

from __future__ import annotations

import textwrap

from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config, Settings

FACTS = HostFacts("mx1", (("127.0.0.1", 8), ("192.0.2.10", 24)), (("::1", 128),))

#: A small, explicit main.cf: no system tables (aliases, passwd) unless a
#: test names them.
BASE = """
myhostname = mx1.example.com
mydomain = example.com
myorigin = $myhostname
mydestination = $myhostname, localhost.$mydomain, localhost
inet_interfaces = all
alias_maps =
local_recipient_maps =
compatibility_level = 3.6
"""


def make_settings(main: str = "", *, base: str = BASE) -> Settings:
    text = textwrap.dedent(base) + textwrap.dedent(main)
    config = Config("/etc/hato", MainCf.parse(text, "/etc/hato/main.cf"),
                    MasterCf.parse("", "/etc/hato/master.cf"), FACTS)
    return config.settings()

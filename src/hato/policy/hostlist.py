"""Host lists of main.cf parameters (``mynetworks``-style: names,
addresses, networks, tables, files, ``!negation``), as Postfix's
namadr_list. The matcher is :class:`hato.policy.smtpd_access.HostAddrList`;
:func:`host_list` opens the one a parameter names, with its
``parent_domain_matches_subdomains`` rule.
"""

from __future__ import annotations

from ..config.settings import Settings
from .smtpd_access import HostAddrList


def host_list(settings: Settings, param: str) -> HostAddrList:
    parent = param in settings.list("parent_domain_matches_subdomains")
    return HostAddrList(settings.list(param), title=param, parent=parent)


__all__ = ["HostAddrList", "host_list"]

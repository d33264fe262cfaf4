"""postscreen_access_list evaluation (hato.policy.postscreen_access)."""

from __future__ import annotations

import pytest

from hato.policy.postscreen_access import PostscreenAccess
from hato.tables.base import TableRetry


class Table:
    def __init__(self, data: dict[str, str] | None = None, fail: bool = False):
        self.data, self.fail = data or {}, fail

    def get(self, key: str) -> str | None:
        if self.fail:
            raise TableRetry("cidr:/x", "cidr:/x is unavailable")
        return self.data.get(key)


def access(items, tables=None, mynetworks=("127.0.0.1",)):
    warnings: list[str] = []
    tables = tables or {}
    acl = PostscreenAccess(items, in_mynetworks=lambda a: a in mynetworks,
                           open_table=lambda spec: tables[spec], warn=warnings.append)
    return acl, warnings


def test_reference_list():
    acl, _ = access(["permit_mynetworks", "cidr:/etc/postfix/postscreen_access"],
                    {"cidr:/etc/postfix/postscreen_access":
                     Table({"127.0.0.5": "permit", "192.168.1.7": "reject"})})
    assert acl.evaluate("127.0.0.1") == "permit"
    assert acl.evaluate("127.0.0.5") == "permit"
    assert acl.evaluate("192.168.1.7") == "reject"
    assert acl.evaluate("192.0.2.1") == "dunno"


def test_first_definite_answer_wins():
    acl, _ = access(["cidr:a", "cidr:b"], {"cidr:a": Table({"x": "DUNNO"}),
                                             "cidr:b": Table({"x": "reject"})})
    assert acl.evaluate("x") == "reject"
    acl, _ = access(["reject", "permit"])
    assert acl.evaluate("x") == "reject"
    acl, _ = access(["dunno", "permit"])
    assert acl.evaluate("x") == "permit"


def test_table_trouble_is_dunno_with_a_warning():
    acl, warnings = access(["cidr:a", "permit"], {"cidr:a": Table(fail=True)})
    assert acl.evaluate("x") == "permit"
    assert warnings and "unavailable" in warnings[0]


def test_unknown_table_value_is_ignored_with_a_warning():
    acl, warnings = access(["cidr:a"], {"cidr:a": Table({"x": "OK"})})
    assert acl.evaluate("x") == "dunno"
    assert 'unknown action "OK"' in warnings[0]


def test_unknown_item_is_an_error():
    with pytest.raises(ValueError, match="unknown item: permit_sasl_authenticated"):
        access(["permit_sasl_authenticated"])

"""postscreen_access_list: postscreen's permanent allow and deny list.

Items are evaluated left to right for the client's address; the first
definite answer wins, as Postfix's psc_acl_eval():

* ``permit_mynetworks`` — permit a client in $mynetworks;
* ``permit``, ``reject``, ``dunno`` — that answer (``dunno``: go on);
* ``type:table`` — the table is asked for the client address (a cidr:
  table matches networks; other types match the address as written) and
  its value is one of ``permit``, ``reject``, ``dunno``.

A table that fails temporarily is logged and counts as ``dunno``, so a
client is never turned away for the server's trouble.
"""

from __future__ import annotations

from collections.abc import Callable

from ..tables.base import TableRetry

PERMIT, REJECT, DUNNO = "permit", "reject", "dunno"
_ACTIONS = (PERMIT, REJECT, DUNNO)


class PostscreenAccess:
    def __init__(self, items: list[str], *, in_mynetworks: Callable[[str], bool],
                 open_table: Callable[[str], object], warn: Callable[[str], None]):
        self.warn = warn
        self.in_mynetworks = in_mynetworks
        self.steps: list[tuple[str, object]] = []
        for item in items:
            low = item.lower()
            if low == "permit_mynetworks" or low in _ACTIONS:
                self.steps.append((low, None))
            elif ":" in item:
                self.steps.append(("table", open_table(item)))
            else:
                raise ValueError(f"postscreen_access_list: unknown item: {item}")

    def evaluate(self, addr: str) -> str:
        for kind, table in self.steps:
            if kind == "permit_mynetworks":
                if self.in_mynetworks(addr):
                    return PERMIT
            elif kind in _ACTIONS:
                if kind != DUNNO:
                    return kind
            else:
                try:
                    value = table.get(addr)  # type: ignore[attr-defined]
                except TableRetry as err:
                    self.warn(f"postscreen_access_list: {err}; ignoring this table for "
                              f"[{addr}]")
                    continue
                if value is None:
                    continue
                action = value.strip().split()[0].lower() if value.strip() else ""
                if action in (PERMIT, REJECT):
                    return action
                if action != DUNNO:
                    self.warn(f"postscreen_access_list: {table}: unknown action "
                              f"\"{value}\" for [{addr}]; ignored")
        return DUNNO

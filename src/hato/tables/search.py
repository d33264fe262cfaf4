"""The key search orders Postfix's callers use, and table lists.

Postfix does not look up an address as one key: access(5), virtual(5),
canonical(5), aliases(5) and the client checks each try a documented series
of keys, and only *full* keys go to pattern tables (``regexp:``, ``pcre:``,
``cidr:``; :attr:`Table.pattern_table`), so that ``/^user@/`` never sees a
bare ``user@`` or a parent domain. The functions here reproduce those
series (``smtpd_check.c``, ``mail_addr_find.c``, ``local/recipient.c``).
They are pure: the caller passes the tables and the facts (delimiter,
whether the domain is local, the parent-domain style), and gets the first
value found, or None; :class:`TableRetry` from a table propagates.

:class:`TableList` is a Postfix table-list parameter value (``hash:/a,
cidr:/b``), searched in order as Postfix's maps_find() does.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from .base import OpenFlags, Table, TableRetry
from .patternfile import split_braced

#: Postfix's default owner_request_special and double_bounce_sender.
OWNER_REQUEST_SPECIAL = True
DOUBLE_BOUNCE = "double-bounce"


def _find(tables: Iterable[Table], key: str, partial: bool) -> str | None:
    """One key against the tables in order; a partial key (a derived form)
    skips pattern tables. An empty key is never looked up."""
    if not key:
        return None
    for table in tables:
        if partial and table.pattern_table:
            continue
        value = table.get(key)
        if value is not None:
            return value
    return None


class TableList(Sequence[Table]):
    """Tables searched in order, first found wins (Postfix's maps).

    Built from a parameter value with :meth:`from_value`; members are split
    on commas and whitespace, braces keep ``inline:{a=1, b=2}`` whole.
    """

    def __init__(self, tables: Iterable[Table], title: str = ""):
        self.tables = list(tables)
        self.title = title  # the parameter name, for messages

    @classmethod
    def from_value(cls, value: str, flags: OpenFlags = OpenFlags(),
                   title: str = "") -> TableList:
        from .registry import open_table

        tables: list[Table] = []
        try:
            for spec in split_braced(value):
                tables.append(open_table(spec, flags))
        except BaseException:
            for table in tables:
                table.close()
            raise
        return cls(tables, title)

    def __getitem__(self, index):  # type: ignore[no-untyped-def, override]
        return self.tables[index]

    def __len__(self) -> int:
        return len(self.tables)

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables)

    def get(self, key: str, partial: bool = False) -> str | None:
        """maps_find(): the first table that has *key* answers. An empty key
        is never looked up; an empty result is a configuration error, which
        (as in Postfix) makes the lookup fail temporarily."""
        if not key:
            return None
        for table in self.tables:
            if partial and table.pattern_table:
                continue
            value = table.get(key)
            if value is not None:
                if value == "":
                    title = self.title or "table list"
                    raise TableRetry(table.name, f"{title} lookup of {key} returns an empty "
                                                 f"string result")
                return value
        return None

    def refresh(self) -> bool:
        changed = False
        for table in self.tables:
            changed = table.refresh() or changed
        return changed

    def close(self) -> None:
        for table in self.tables:
            table.close()

    def __repr__(self) -> str:
        return f"<TableList {', '.join(t.name for t in self.tables)}>"


# -- address pieces ----------------------------------------------------------------------


def split_extension(localpart: str, delimiters: str, *,
                    owner_request_special: bool = OWNER_REQUEST_SPECIAL,
                    double_bounce_sender: str = DOUBLE_BOUNCE) -> tuple[str, str] | None:
    """Postfix's split_addr(): ``user+ext`` → (``user``, ``+ext``), or None
    when there is nothing to strip. The extension starts at the first of the
    *delimiters* (recipient_delimiter may list several). Never split:
    postmaster, mailer-daemon, the double-bounce sender; with
    owner_request_special and ``-`` a delimiter, also ``owner-*`` and
    ``*-request``; nor when the user part would be empty."""
    if not delimiters:
        return None
    low = localpart.lower()
    if low in ("postmaster", "mailer-daemon", double_bounce_sender.lower()):
        return None
    if "-" in delimiters and owner_request_special:
        if low.startswith("owner-"):
            return None
        if len(low) - 8 > 0 and low.endswith("-request"):
            return None
    for i, ch in enumerate(localpart):
        if ch in delimiters:
            if i == 0:
                return None
            return localpart[:i], localpart[i:]
    return None


def strip_extension(address: str, delimiters: str, **kw: object) -> tuple[str, str] | None:
    """Postfix's strip_addr(): ``user+ext@domain`` → (``user@domain``, ``+ext``),
    or None when the address has no extension."""
    at = address.rfind("@")
    local, domain = (address, "") if at < 0 else (address[:at], address[at:])
    split = split_extension(local, delimiters, **kw)  # type: ignore[arg-type]
    if split is None:
        return None
    return split[0] + domain, split[1]


def valid_hostaddr(text: str) -> bool:
    """An IPv4 dotted quad or an IPv6 address (no brackets)."""
    if ":" in text:
        try:
            socket.inet_pton(socket.AF_INET6, text)
        except (OSError, ValueError):
            return False
        return True
    parts = text.split(".")
    return (len(parts) == 4
            and all(p.isascii() and p.isdigit() and int(p) <= 255 for p in parts))


# -- domains and client addresses (smtpd_check.c) ---------------------------------------


def find_domain(tables: Iterable[Table], domain: str, *,
                parent_domain_matches_subdomains: bool = True,
                partial: bool = False) -> str | None:
    """check_domain_access(): the name, then each parent domain.

    With *parent_domain_matches_subdomains* (Postfix's default for
    ``smtpd_access_maps``), parents are looked up as ``example.com``;
    otherwise as ``.example.com``. Parents are partial keys. A numeric
    host address is looked up alone. *partial* makes even the first key
    partial (the domain of an email address in access(5)).
    """
    tables = list(tables)
    name = domain
    maybe_numerical = True
    while name:
        value = _find(tables, name, partial)
        if value is not None:
            return value
        if maybe_numerical:
            maybe_numerical = valid_hostaddr(domain)
            if maybe_numerical:
                break
        dot = name.find(".", 1)
        if dot < 0:
            break
        name = name[dot + 1:] if parent_domain_matches_subdomains else name[dot:]
        partial = True
    return None


def find_hostname(tables: Iterable[Table], hostname: str, *,
                  parent_domain_matches_subdomains: bool = True) -> str | None:
    """A host name in access(5) (client, HELO, MX/NS server names): the full
    name, then parent domains."""
    return find_domain(tables, hostname,
                       parent_domain_matches_subdomains=parent_domain_matches_subdomains)


def find_client_address(tables: Iterable[Table], address: str, *,
                        partial: bool = False) -> str | None:
    """check_addr_access(): ``1.2.3.4``, then ``1.2.3``, ``1.2``, ``1``; for
    IPv6, the address then shorter ``:``-separated prefixes (``2001:db8::1``,
    ``2001:db8:``, ``2001:db8``, ``2001``). Only the full address goes to
    pattern (``cidr:``) tables."""
    tables = list(tables)
    delim = ":" if ":" in address else "."
    addr = address
    while True:
        value = _find(tables, addr, partial)
        if value is not None:
            return value
        partial = True
        cut = addr.rfind(delim)
        if cut < 0:
            return None
        addr = addr[:cut]


def find_client(tables: Iterable[Table], name: str, address: str, *,
                parent_domain_matches_subdomains: bool = True) -> str | None:
    """check_client_access: the client host name (and parents), then its
    address (and parent networks)."""
    tables = list(tables)
    value = find_hostname(tables, name,
                          parent_domain_matches_subdomains=parent_domain_matches_subdomains)
    if value is not None:
        return value
    return find_client_address(tables, address)


def find_access_address(tables: Iterable[Table], address: str, *,
                        recipient_delimiter: str = "",
                        parent_domain_matches_subdomains: bool = True,
                        owner_request_special: bool = OWNER_REQUEST_SPECIAL,
                        double_bounce_sender: str = DOUBLE_BOUNCE) -> str | None:
    """check_mail_access(): an email address in access(5), in this order:

    ``user+ext@domain`` (the full address: the only key pattern tables
    see), ``user@domain``, ``domain`` and its parent domains, ``user+ext@``,
    ``user@``. The address must be fully qualified (Postfix resolves it
    first); without ``@`` nothing is looked up.
    """
    tables = list(tables)
    at = address.rfind("@")
    if at < 0:
        return None
    domain = address[at + 1:]
    kw = {"owner_request_special": owner_request_special,
          "double_bounce_sender": double_bounce_sender}
    bare = strip_extension(address, recipient_delimiter, **kw)
    value = _find(tables, address, False)
    if value is None and bare is not None:
        value = _find(tables, bare[0], True)
    if value is None:
        value = find_domain(tables, domain, partial=True,
                            parent_domain_matches_subdomains=parent_domain_matches_subdomains)
    if value is None:
        value = _find(tables, address[:at + 1], True)
    if value is None and bare is not None:
        bare_at = bare[0].rfind("@")
        value = _find(tables, bare[0][:bare_at + 1] if bare_at >= 0 else bare[0], True)
    return value


# -- address rewriting and aliases (mail_addr_find.c, local(8)) --------------------------


@dataclass(frozen=True)
class AddressMatch:
    """A value found for an address; *extension* is the address extension
    (with its delimiter) that was stripped to find it, else ""."""

    value: str
    extension: str = ""


def find_address_mapping(tables: Iterable[Table], address: str, *,
                         recipient_delimiter: str = "",
                         local_domain: bool = False,
                         owner_request_special: bool = OWNER_REQUEST_SPECIAL,
                         double_bounce_sender: str = DOUBLE_BOUNCE) -> AddressMatch | None:
    """mail_addr_find(): virtual(5), canonical(5), relocated(5) and friends.

    ``user+ext@domain`` (full key), ``user@domain``, then — only when
    *local_domain* (the domain is $myorigin, in $mydestination,
    $inet_interfaces or $proxy_interfaces) — ``user+ext`` and ``user``,
    then ``@domain``. All but the first are partial keys. When the match
    needed the extension stripped, it is returned in the result so that the
    caller can apply propagate_unmatched_extensions.
    """
    tables = list(tables)
    kw = {"owner_request_special": owner_request_special,
          "double_bounce_sender": double_bounce_sender}
    bare = strip_extension(address, recipient_delimiter, **kw)
    value = _find(tables, address, False)
    if value is not None:
        return AddressMatch(value)
    if bare is not None:
        value = _find(tables, bare[0], True)
        if value is not None:
            return AddressMatch(value, bare[1])
    at = address.rfind("@")
    if at < 0:
        return None
    if local_domain:
        value = _find(tables, address[:at], True)
        if value is not None:
            return AddressMatch(value)
        if bare is not None:
            bare_at = bare[0].rfind("@")
            value = _find(tables, bare[0][:bare_at], True)
            if value is not None:
                return AddressMatch(value, bare[1])
    value = _find(tables, address[at:], True)
    if value is not None:
        return AddressMatch(value)
    return None


def find_alias(tables: Iterable[Table], localpart: str, *,
               recipient_delimiter: str = "",
               owner_request_special: bool = OWNER_REQUEST_SPECIAL,
               double_bounce_sender: str = DOUBLE_BOUNCE) -> AddressMatch | None:
    """local(8) alias lookup: the full local part (``user+ext``), then the
    bare ``user`` when there is an extension. Both go to every table,
    pattern tables included, as in Postfix. local(8) folds the local part to
    lower case before the lookup; so should the caller."""
    tables = list(tables)
    value = _find(tables, localpart, False)
    if value is not None:
        return AddressMatch(value)
    split = split_extension(localpart, recipient_delimiter,
                            owner_request_special=owner_request_special,
                            double_bounce_sender=double_bounce_sender)
    if split is not None:
        value = _find(tables, split[0], False)
        if value is not None:
            return AddressMatch(value, split[1])
    return None


__all__ = ["AddressMatch", "TableList", "find_access_address", "find_address_mapping",
           "find_alias", "find_client", "find_client_address", "find_domain",
           "find_hostname", "split_extension", "strip_extension", "valid_hostaddr"]

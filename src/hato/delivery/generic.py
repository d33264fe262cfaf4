"""smtp_generic_maps and lmtp_generic_maps: the addresses of mail that
leaves by SMTP or LMTP, rewritten as it goes (Postfix's generic(5), in its
smtp client).

What is rewritten, as Postfix's smtp_proto.c does:

* the envelope: the sender of MAIL FROM (not the null sender) and each
  address of RCPT TO; ORCPT and the queue file keep the original;
* the message's primary header block (not the headers of attached
  messages or MIME parts): every address in a sender or recipient header
  (From, Sender, Reply-To, To, Cc, Bcc, Resent-*, Return-Path, Errors-To,
  ...). A header with an address that the tables know is written anew,
  addresses folded into lines of up to 70 columns; any other header goes
  out as it was.

The lookup is mail_addr_map()'s, as for canonical(5): ``user@domain``, then
``user`` when the domain is $myorigin, $mydestination, $inet_interfaces or
$proxy_interfaces, then ``@domain``; an address extension is stripped for
the later forms and put back only when propagate_unmatched_extensions says
``generic``. One lookup per address (no repetition on the result). A table
that cannot answer is a temporary failure: the delivery is deferred.
"""

from __future__ import annotations

from ..config.settings import Settings
from ..policy import address as A
from ..policy.rewrite import AddressMapper, open_maps
from ..queue.cleanup_defs import (
    OPT_RECIP,
    OPT_SENDER,
    find_header_opts,
    fold_address_header,
    header_table,
)
from ..tables.search import TableList


class GenericMaps:
    """The generic maps of one client (``smtp`` or ``lmtp``)."""

    def __init__(self, settings: Settings, tables: TableList, *, warn=None):
        self.tables = tables
        self.mapper = AddressMapper(settings)
        self.propagate = "generic" in self.mapper.propagate
        self.headers = header_table(())
        self.warn = warn or (lambda text: None)

    @classmethod
    def from_settings(cls, settings: Settings, prefix: str, *, warn=None) -> GenericMaps | None:
        """None when ``PREFIX_generic_maps`` is empty."""
        tables = open_maps(settings, f"{prefix}_generic_maps")
        return cls(settings, tables, warn=warn) if tables is not None else None

    # -- addresses --------------------------------------------------------------------------

    def _map(self, ext: str) -> str | None:
        """smtp_map11_external(): one lookup; the new external form, or None
        (Postfix's smtp client says "result" where cleanup says "entry")."""
        return self.mapper.map_one(self.tables, ext, self.propagate, self.warn, "result")

    def address(self, address: str) -> str:
        """An envelope address (internal form) as it goes out; the null
        sender stays null. Raises :class:`LookupDefer` when a table fails."""
        if not address:
            return address
        new = self._map(A.quote_822_local(address))
        return address if new is None else A.unquote_822_local(new)

    # -- headers ----------------------------------------------------------------------------

    def header(self, text: str) -> str | None:
        """One logical header of the primary block (continuation lines
        joined with ``\\n``, no final newline): the header written anew when
        an address in it was mapped, else None. The smtp client's content
        pass (hato.delivery.smtp_content) calls it for each primary header."""
        info = find_header_opts(self.headers, text)
        if info is None or not info.flags & (OPT_SENDER | OPT_RECIP):
            return None
        name_len = text.index(":")
        name = text[:name_len].rstrip(" \t")
        tree = A.parse(text[name_len + 1:])
        changed = False
        for node in A.grep(tree, A.ADDR):
            new = self._map(A.externalize(node.head))
            if new is None:
                continue
            changed = True
            node.head = A.scan(new)
            node.tail = A.last(node.head) if node.head is not None else None
        if not changed:
            return None
        lines = fold_address_header(name + ": " + A.externalize(tree, lines=True)).split("\n")
        out = [lines[0]] + [ln if ln[:1] in (" ", "\t") else "\t" + ln for ln in lines[1:]]
        return "\n".join(out)


__all__ = ["GenericMaps"]

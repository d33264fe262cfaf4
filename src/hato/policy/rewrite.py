"""Address rewriting: what Postfix's trivial-rewrite "rewrite" service and
cleanup(8)'s address mappings do.

Canonicalisation (:func:`rewrite_tree`, Postfix's ``rewrite.c``) completes an
address in a *rewrite context*. The ``local`` context completes with
``$myorigin`` and ``$mydomain``; the ``remote`` context (header addresses
from remote clients) with ``$remote_header_rewrite_domain`` for both, and
does nothing when that is empty. In order:

* a source route ``@a,@b:user@c`` is dropped;
* without ``@``: ``site!user`` becomes ``user@site`` (``swap_bangpath``),
  else ``user%domain`` becomes ``user@domain`` (``allow_percent_hack``),
  else ``@$myorigin`` is appended (``append_at_myorigin``);
* ``user@host`` without a dot gets ``.$mydomain`` (``append_dot_mydomain``);
* one trailing dot after the domain is removed.

:class:`Rewriter` holds the tables of one cleanup service, opened once from
the Settings, and applies, as ``cleanup_addr.c``, ``cleanup_map11.c``,
``cleanup_map1n.c`` and ``cleanup_masquerade.c`` do:

* envelope sender: rewrite (local context), ``MAILER-DAEMON@$myorigin`` →
  null sender, ``sender_canonical_maps``, ``canonical_maps``, masquerading —
  each only for the classes listed in ``*_canonical_classes`` and
  ``masquerade_classes``;
* envelope recipient: rewrite, ``recipient_canonical_maps``,
  ``canonical_maps``, masquerading; then ``virtual_alias_maps`` expansion
  (:meth:`Rewriter.expand_virtual`), recursive, bounded by
  ``virtual_alias_expansion_limit`` (addresses) and
  ``virtual_alias_recursion_limit`` (depth), an address that expands to
  itself ending the recursion for it (``user@domain → user@domain, other``);
* header addresses: the same per header class, in the header's context.

Lookups follow Postfix's mail_addr_find() order (see
:func:`hato.tables.search.find_address_mapping`), with the quoted form of
the address asked first and the unquoted form second.
:class:`~hato.tables.base.TableRetry` from a table propagates; alias
expansion limits raise :class:`LookupDefer`, a TableRetry, with Postfix's
warning text: the caller defers, the message stays queued or is refused
with 4xx.

:class:`MatchList` is Postfix's match_list for domain and string lists
(``mydestination``, ``relay_domains``, ``virtual_alias_domains``,
``masquerade_exceptions``): names, ``!name``, ``/file/name`` and
``type:table`` elements. :class:`LocalDomains` answers resolve_local(): is
this domain ``$mydestination``, ``[an address of ours]``?
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from ..config.errors import ConfigError
from ..config.settings import Settings
from ..config.values import split_list
from ..tables.base import OpenFlags, Table, TableError, TableRetry
from ..tables.search import AddressMatch, TableList, find_address_mapping
from . import address as A

log = logging.getLogger("hato.rewrite")

Warn = Callable[[str], None]

LOCAL = "local"
REMOTE = "remote"
MAILER_DAEMON = "MAILER-DAEMON"


# -- the rewrite stage (trivial-rewrite rewrite.c) ---------------------------------------


@dataclass(frozen=True)
class RewriteContext:
    """Where incomplete addresses are completed: ``origin`` is appended to a
    bare user name, ``domain`` to a host name without a dot."""

    name: str
    origin: str
    domain: str


@dataclass(frozen=True)
class RewriteRules:
    swap_bangpath: bool = True
    percent_hack: bool = True
    append_at_myorigin: bool = True
    append_dot_mydomain: bool = False

    @classmethod
    def from_settings(cls, settings: Settings) -> RewriteRules:
        return cls(settings.bool("swap_bangpath"), settings.bool("allow_percent_hack"),
                   settings.bool("append_at_myorigin"), settings.bool("append_dot_mydomain"))


def rewrite_tree(tree: A.Tok, context: RewriteContext, rules: RewriteRules) -> None:
    """Postfix's rewrite_tree(): rewrite an ADDR node's tokens in place."""
    head = tree.head
    if head is None:
        raise ValueError("rewrite_tree: empty tree")
    # The empty address is a special case; a lone @ is treated as one.
    if head is tree.tail and head.type == A.QSTRING and not head.value:
        return
    if head is tree.tail and head.type == ord("@"):
        A.tok_sub_keep_before(tree, head)
        A.tok_sub_append(tree, A.Tok(A.QSTRING, ""))
        return
    # Strip a source route.
    if head.type == ord("@"):
        colon = A.find_type(head, ord(":"))
        if colon is not None and colon is not tree.tail:
            A.tok_sub_keep_after(tree, colon)
    # Address forms without @.
    domain = A.rfind_type(tree.tail, ord("@"))
    if domain is None:
        bang = A.find_type(tree.head, ord("!")) if rules.swap_bangpath else None
        if bang is not None:
            A.tok_sub_keep_before(tree, bang)
            local = A.tok_cut_after(bang)
            A.tok_sub_prepend(tree, A.Tok(ord("@")))
            if local is not None:
                A.tok_sub_prepend(tree, local)
        elif rules.percent_hack and (pct := A.rfind_type(tree.tail, ord("%"))) is not None:
            pct.type = ord("@")
        elif rules.append_at_myorigin and context.origin:
            A.tok_sub_append(tree, A.Tok(ord("@")))
            origin = A.scan(context.origin)
            if origin is not None:
                A.tok_sub_append(tree, origin)
    # Append .$mydomain to user@host, leaving forms ending in @ alone.
    if rules.append_dot_mydomain and context.domain:
        domain = A.rfind_type(tree.tail, ord("@"))
        if (domain is not None and domain is not tree.tail
                and A.find_type(domain, A.DOMLIT) is None
                and A.find_type(domain, ord(".")) is None):
            A.tok_sub_append(tree, A.Tok(ord(".")))
            dom = A.scan(context.domain)
            if dom is not None:
                A.tok_sub_append(tree, dom)
    # Strip one trailing dot, but not dot-dot or @-dot.
    tail = tree.tail
    if (tail is not None and tail.type == ord(".") and tail.prev is not None
            and tail.prev.type not in (ord("."), ord("@"))):
        A.tok_sub_keep_before(tree, tail)


#: Rewriting is a pure function of the address, the context and the rules
#: (all immutable), and a process sees the same few addresses again and
#: again (every message's sender and recipients, in the envelope and in the
#: headers): the answers are kept, up to this many; then the store starts
#: afresh.
REWRITE_CACHE_SIZE = 4096
_rewritten: dict[tuple[str, RewriteContext, RewriteRules, bool], str] = {}


def _remember(key: tuple[str, RewriteContext, RewriteRules, bool], result: str) -> str:
    if len(_rewritten) >= REWRITE_CACHE_SIZE:
        _rewritten.clear()
    _rewritten[key] = result
    return result


def _rewrite_external(address: str, context: RewriteContext, rules: RewriteRules) -> str:
    if not address:
        return ""
    tree = A.scan_addr(address)
    if tree.head is None:
        return ""
    rewrite_tree(tree, context, rules)
    return A.externalize(tree)


def rewrite_external(address: str, context: RewriteContext, rules: RewriteRules) -> str:
    """Rewrite an external-form address (what rewrite_clnt() returns)."""
    key = (address, context, rules, False)
    found = _rewritten.get(key)
    if found is not None:
        return found
    return _remember(key, _rewrite_external(address, context, rules))


def rewrite_internal(address: str, context: RewriteContext, rules: RewriteRules) -> str:
    """Rewrite an internal-form address (cleanup_rewrite_internal())."""
    key = (address, context, rules, True)
    found = _rewritten.get(key)
    if found is not None:
        return found
    return _remember(key, A.unquote_822_local(
        _rewrite_external(A.quote_822_local(address), context, rules)))


# -- tables ---------------------------------------------------------------------------------


class UnavailableTable(Table):
    """Postfix's dict_surrogate: a table that failed to open answers every
    lookup with a temporary failure, so that mail is deferred, not lost."""

    type_name = "surrogate"

    def __init__(self, spec: str, reason: str):
        super().__init__(spec)
        self.reason = reason

    @property
    def name(self) -> str:
        return self.spec

    def get(self, key: str) -> str | None:
        raise TableRetry(self.spec, f"{self.spec} is unavailable. {self.reason}")


def open_maps(settings: Settings, name: str, *, fold_case: bool = True) -> TableList | None:
    """The table list parameter *name*, opened; None when it is empty. A
    table that cannot be opened is fatal with daemon_table_open_error_is_fatal,
    else it becomes a table whose lookups fail temporarily (as Postfix)."""
    value = settings.str(name)
    if not value.strip():
        return None
    flags = OpenFlags(fold_case=fold_case, utf8=_utf8(settings))
    try:
        return TableList.from_value(value, flags, title=name)
    except TableError as err:
        if settings.bool("daemon_table_open_error_is_fatal"):
            raise
        log.warning("%s: table is unavailable: %s", name, err.message)
        return TableList([UnavailableTable(value, err.message)], title=name)


def _utf8(settings: Settings) -> bool:
    try:
        return settings.bool("smtputf8_enable")
    except ConfigError:
        return False


def match_parent_style(settings: Settings, name: str) -> bool:
    """True when parent_domain_matches_subdomains names *name*: then
    ``example.com`` matches its subdomains; else ``.example.com`` does."""
    return name in settings.list("parent_domain_matches_subdomains")


def match_list_items(patterns: list[str], title: str,
                     match: bool = True) -> Iterator[tuple[bool, str]]:
    """The patterns of a Postfix match list as (positive, pattern): ``!``
    negations undone, ``/file/name`` entries replaced by the file's patterns
    in order. A file is read as match_list.c reads it: lines end at ``\n``;
    a line that starts with ``#`` is a comment; the rest are split like the
    list itself (commas and blanks, ``{ }`` groups), and a word that starts
    with ``#`` ends the line with a warning, as Postfix's "comment at end of
    line is not supported"."""
    for item in patterns:
        positive = match
        while item.startswith("!"):
            positive = not positive
            item = item[1:]
        if not item:
            raise ConfigError(f"{title}: no pattern after '!'")
        if item.startswith("/"):
            try:
                with open(item, encoding="utf-8", errors="surrogateescape") as fh:
                    lines = fh.read().split("\n")
            except OSError as err:
                raise ConfigError(f"{title}: open file {item}: {err.strerror}") from None
            for line in lines:
                if line.startswith("#"):
                    continue
                words = split_list(line)
                for n, word in enumerate(words):
                    if word.startswith("#"):
                        log.warning("%s: comment at end of line is not supported: %s",
                                    title, " ".join(words[n:]))
                        del words[n:]
                        break
                yield from match_list_items(words, title, positive)
            continue
        yield positive, item


class MatchList:
    """Postfix's match_list (string_list and domain_list).

    Elements: a name (compared case-insensitively), ``!element`` (the
    result is inverted when it matches), ``/file/name`` (its lines are more
    elements), ``type:table`` (a lookup; the value does not matter). The
    first element that matches decides. With *hostname*, a name also
    matches by its parent domains: ``example.com`` matches
    ``a.example.com`` with *parent*, else ``.example.com`` does.
    Table lookup failures raise TableRetry.
    """

    def __init__(self, patterns: Iterable[str], *, title: str = "", hostname: bool = False,
                 parent: bool = False, flags: OpenFlags | None = None):
        self.title = title
        self.hostname = hostname
        self.parent = parent
        self.items: list[tuple[bool, str | Table]] = []
        self._tables: list[Table] = []
        try:
            self._parse(list(patterns), flags or OpenFlags(), True)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(cls, settings: Settings, name: str, *, hostname: bool = False) -> MatchList:
        flags = OpenFlags(utf8=_utf8(settings))
        return cls(settings.list(name), title=name, hostname=hostname,
                   parent=match_parent_style(settings, name), flags=flags)

    def _parse(self, patterns: list[str], flags: OpenFlags, match: bool) -> None:
        for positive, item in match_list_items(patterns, self.title, match):
            if item[0] != "[" and ":" in item:
                from ..tables.registry import open_table
                try:
                    table = open_table(item, flags)
                except TableError as err:
                    table = UnavailableTable(item, err.message)
                self._tables.append(table)
                self.items.append((positive, table))
            else:
                self.items.append((positive, item.lower()))

    def __bool__(self) -> bool:
        return bool(self.items)

    def match(self, name: str) -> bool:
        name = name.lower()
        for positive, pattern in self.items:
            if isinstance(pattern, Table):
                found = self._match_table(pattern, name)
            elif self.hostname:
                found = self._match_host(pattern, name)
            else:
                found = name == pattern
            if found:
                return positive
        return False

    def _match_table(self, table: Table, name: str) -> bool:
        if table.get(name) is not None:
            return True
        if not self.hostname or table.pattern_table:
            return False
        entry = name
        while True:
            dot = entry.find(".", 1)
            if dot < 0:
                return False
            entry = entry[dot + 1:] if self.parent else entry[dot:]
            if table.get(entry) is not None:
                return True

    def _match_host(self, pattern: str, name: str) -> bool:
        if name == pattern:
            return True
        cut = len(name) - len(pattern)
        if cut <= 0 or not name.endswith(pattern):
            return False
        if self.parent:
            return name[cut - 1] == "."
        return pattern.startswith(".")

    def close(self) -> None:
        for table in self._tables:
            table.close()


def _addresses_of(values: Iterable[str]) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    out: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for value in values:
        value = value.strip("[]")
        try:
            out.add(ipaddress.ip_address(value.split("%")[0]))
        except ValueError:
            continue
    return out


class LocalDomains:
    """Postfix's resolve_local(): a domain is local when it matches
    ``$mydestination``, or when it is an address literal (``[192.0.2.1]``,
    ``[IPv6:2001:db8::1]``) of one of ``$inet_interfaces`` or
    ``$proxy_interfaces``.

    The interface addresses come from the settings: ``inet_interfaces = all``
    means the host's addresses (``Config.facts``), ``loopback-only`` and
    ``localhost`` the loopback addresses; other entries that are addresses
    count as they are. Pass *interface_addresses* to override."""

    def __init__(self, settings: Settings, *,
                 interface_addresses: Iterable[str] | None = None):
        self.myorigin: str = settings.str("myorigin").lower()
        self.mydestination = MatchList.from_settings(settings, "mydestination")
        if interface_addresses is None:
            interface_addresses = self._interfaces(settings, "inet_interfaces")
            interface_addresses = [*interface_addresses,
                                   *self._interfaces(settings, "proxy_interfaces")]
        self.addresses = _addresses_of(interface_addresses)

    @staticmethod
    def _interfaces(settings: Settings, name: str) -> list[str]:
        out: list[str] = []
        items: list[str] = settings.list(name)
        for item in items:
            low = item.lower()
            if low == "all":
                facts = settings.config.facts
                out.extend(addr for addr, _ in facts.ipv4)
                out.extend(addr for addr, _ in facts.ipv6)
                out.extend(["127.0.0.1", "::1"])
            elif low in ("loopback-only", "localhost"):
                out.extend(["127.0.0.1", "::1"])
            else:
                out.append(item)
        return out

    def is_local(self, domain: str) -> bool:
        """resolve_local(); TableRetry when a table in mydestination fails."""
        if not domain:
            return False
        domain = domain.removesuffix(".")
        if not domain or domain.endswith("."):
            return False
        if self.mydestination.match(domain):
            return True
        if domain.startswith("[") and domain.endswith("]"):
            addr = A.mailhost_addr(domain)
            if addr is not None:
                try:
                    ip = ipaddress.ip_address(addr)
                except ValueError:
                    return False
                return ip in self.addresses
        return False

    def is_local_or_origin(self, domain: str) -> bool:
        """What mail_addr_find() calls a local domain: ``$myorigin`` or
        resolve_local()."""
        return domain.lower() == self.myorigin or self.is_local(domain)

    def close(self) -> None:
        self.mydestination.close()


class AddressFinder:
    """mail_addr_find() with Postfix's legacy address forms: the quoted
    (external) form of the address is looked up first, the unquoted form
    second when it differs."""

    def __init__(self, settings: Settings, local_domains: LocalDomains):
        self.delimiter = settings.str("recipient_delimiter")
        self.owner_request_special = settings.bool("owner_request_special")
        self.double_bounce_sender = settings.str("double_bounce_sender")
        self.local_domains = local_domains

    def find(self, tables: Iterable[Table], address: str, *,
             external: bool = False) -> AddressMatch | None:
        """Look up *address* (internal form, or external with *external*)."""
        tables = list(tables)
        if external:
            ext, internal = address, A.unquote_822_local(address)
        else:
            ext, internal = A.quote_822_local(address), address
        at = internal.rfind("@")
        local_domain = at >= 0 and self.local_domains.is_local_or_origin(internal[at + 1:])
        kw = {"recipient_delimiter": self.delimiter, "local_domain": local_domain,
              "owner_request_special": self.owner_request_special,
              "double_bounce_sender": self.double_bounce_sender}
        found = find_address_mapping(tables, ext, **kw)  # type: ignore[arg-type]
        if found is None and internal != ext:
            found = find_address_mapping(tables, internal, **kw)  # type: ignore[arg-type]
        return found


# -- cleanup's address mappings -------------------------------------------------------------


class LookupDefer(TableRetry):
    """A mapping could not be completed: a table failed, or an alias
    expansion went past a limit. ``text`` is Postfix's warning (without the
    queue id), ``reason`` the DSN reason the message is deferred with."""

    def __init__(self, title: str, address: str, text: str,
                 reason: str = "4.6.0 Alias expansion error", retry: bool = False):
        super().__init__(title, text)
        self.title = title
        self.address = address
        self.text = text
        self.dsn_reason = reason
        self.retry = retry  # a table failure (Postfix: CLEANUP_STAT_WRITE)


class DuplicateFilter:
    """Postfix's been_here() with case folding: remembers at most *limit*
    keys (0: no limit); past the limit new keys are not remembered, so
    duplicates may get through, as in Postfix (duplicate_filter_limit)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.keys: set[str] = set()

    def seen(self, key: str) -> bool:
        key = key.lower()
        if key in self.keys:
            return True
        if self.limit <= 0 or len(self.keys) < self.limit:
            self.keys.add(key)
        return False


#: Address classes for canonical_classes / masquerade_classes.
ENVELOPE_SENDER = "envelope_sender"
ENVELOPE_RECIPIENT = "envelope_recipient"
HEADER_SENDER = "header_sender"
HEADER_RECIPIENT = "header_recipient"

_MAP_NESTING = 10  # cleanup_map11.c MAX_RECURSION


class AddressMapper:
    """mail_addr_map(): an address looked up in tables with Postfix's search
    order (user@domain, user when the domain is ours, @domain; extensions
    stripped), the result completed in the local context. Addresses in and
    out are internal (unquoted) unless a method says otherwise."""

    def __init__(self, settings: Settings, *, local_domains: LocalDomains | None = None):
        self.settings = settings
        self.rules = RewriteRules.from_settings(settings)
        self.local = RewriteContext(LOCAL, settings.str("myorigin"), settings.str("mydomain"))
        self.local_domains = local_domains or LocalDomains(settings)
        self.finder = AddressFinder(settings, self.local_domains)
        self.propagate = set(settings.list("propagate_unmatched_extensions"))

    # -- table mappings ------------------------------------------------------------------

    def map_address(self, tables: TableList, address: str, propagate: bool, *,
                    external: bool = False) -> list[str] | None:
        """mail_addr_map(): the addresses *address* maps to (same form as
        the input), canonicalised, with an unmatched extension propagated;
        None when the tables have no entry."""
        ext_addr = address if external else A.quote_822_local(address)
        found = self.finder.find(tables, ext_addr, external=True)
        if found is None:
            return None
        value = found.value
        extension = found.extension or None
        if value.startswith("@"):
            local = ext_addr[:ext_addr.rfind("@")] if "@" in ext_addr else ext_addr
            if extension and local.endswith(extension):
                local = local[:-len(extension)]
            value = local + value
        results: list[str] = []
        for tp in A.grep(A.parse(value), A.ADDR):
            canon = rewrite_external(A.externalize(tp.head), self.local, self.rules)
            if propagate and extension:
                at = canon.rfind("@")
                canon = canon + extension if at < 0 else canon[:at] + extension + canon[at:]
            results.append(canon)
        if not results:
            text = (f"{tables.title} lookup of {ext_addr} returns non-address result "
                    f'"{value}"')
            log.warning("%s", text)
            raise LookupDefer(tables.title, address, text, retry=True)
        if not external:
            results = [A.unquote_822_local(r) for r in results]
        return results

    def map_one(self, tables: TableList, ext: str, propagate: bool, warn: Warn,
                what: str = "entry") -> str | None:
        """One lookup of an external address: the first address it maps to,
        or None. A table that fails is a :class:`LookupDefer` (``TABLE map
        lookup problem for ADDR``); more than one result is warned about
        (``multi-valued TABLE entry for ADDR``, *what* naming the word)."""
        try:
            new = self.map_address(tables, ext, propagate, external=True)
        except LookupDefer:
            raise
        except TableRetry as err:
            text = f"{tables.title} map lookup problem for {ext}"
            raise LookupDefer(tables.title, ext, text, reason="", retry=True) from err
        if new is None:
            return None
        if len(new) > 1:
            warn(f"multi-valued {tables.title} {what} for {ext}")
        return new[0]

    def map11(self, address: str, tables: TableList, propagate: bool, *,
              external: bool = False, warn: Warn | None = None) -> tuple[str, bool]:
        """cleanup_map11: one-to-one mapping, repeated on the result until an
        address maps to itself (at most 10 times). Returns (address,
        changed)."""
        warn = warn or log.warning
        addr = address if external else A.quote_822_local(address)
        did_rewrite = False
        for _ in range(_MAP_NESTING):
            new = self.map_one(tables, addr, propagate, warn, "entry")
            if new is None:
                break
            saved = addr
            did_rewrite = did_rewrite or new != addr
            addr = new
            if saved.lower() == addr.lower():
                break
        else:
            warn(f"unreasonable {tables.title} map nesting for {addr}")
        return (addr if external else A.unquote_822_local(addr)), did_rewrite


class Rewriter(AddressMapper):
    """The address rewriting of one cleanup service: contexts, rules and
    tables from the Settings, tables opened once. Addresses in and out are
    internal (unquoted) unless a method says otherwise."""

    def __init__(self, settings: Settings, *, local_domains: LocalDomains | None = None):
        super().__init__(settings, local_domains=local_domains)
        remote = settings.str("remote_header_rewrite_domain")
        self.remote = RewriteContext(REMOTE, remote, remote)
        self.canonical_maps = open_maps(settings, "canonical_maps")
        self.sender_canonical_maps = open_maps(settings, "sender_canonical_maps")
        self.recipient_canonical_maps = open_maps(settings, "recipient_canonical_maps")
        self.virtual_alias_maps = open_maps(settings, "virtual_alias_maps")
        self.canonical_classes = set(settings.list("canonical_classes"))
        self.sender_canonical_classes = set(settings.list("sender_canonical_classes"))
        self.recipient_canonical_classes = set(settings.list("recipient_canonical_classes"))
        self.masquerade_domains: list[str] = settings.list("masquerade_domains")
        exceptions = settings.list("masquerade_exceptions")
        self.masquerade_exceptions = (MatchList.from_settings(settings, "masquerade_exceptions")
                                      if exceptions else None)
        self.masquerade_classes = set(settings.list("masquerade_classes"))
        self.expansion_limit = settings.int("virtual_alias_expansion_limit")
        self.recursion_limit = settings.int("virtual_alias_recursion_limit")
        self.address_length_limit = settings.int("virtual_alias_address_length_limit")
        self.empty_address_recipient = settings.str("empty_address_recipient")
        # canon_addr_internal("MAILER-DAEMON"): MAILER-DAEMON@$myorigin.
        self.mailer_daemon = self.rewrite(MAILER_DAEMON)

    # -- the rewrite stage ---------------------------------------------------------------

    def context(self, name: str | None) -> RewriteContext | None:
        """The named context; None for ``remote`` when
        remote_header_rewrite_domain is empty (headers stay as they are)."""
        if name == LOCAL:
            return self.local
        if name == REMOTE:
            return self.remote if self.remote.domain else None
        return None

    def rewrite(self, address: str, context: str = LOCAL) -> str:
        """Canonical form of an internal address in a context (``local`` or
        ``remote``; the remote context with an empty
        remote_header_rewrite_domain completes nothing)."""
        ctx = self.remote if context == REMOTE else self.local
        return rewrite_internal(address, ctx, self.rules)

    def rewrite_external(self, address: str, context: str = LOCAL) -> str:
        ctx = self.remote if context == REMOTE else self.local
        return rewrite_external(address, ctx, self.rules)

    def masquerade(self, address: str, *, external: bool = False) -> tuple[str, bool]:
        """cleanup_masquerade: strip subdomains below a masquerade_domains
        entry (``!entry`` keeps that domain as is), except for user names in
        masquerade_exceptions. Returns (address, changed)."""
        addr = address if external else A.quote_822_local(address)
        at = addr.rfind("@")
        if at < 0 or not self.masquerade_domains:
            return address, False
        domain = addr[at + 1:]
        if (self.masquerade_exceptions is not None
                and self.masquerade_exceptions.match(addr[:at].lower())):
            return address, False
        changed = False
        for masq in self.masquerade_domains:
            truncate = True
            while masq.startswith("!"):
                truncate = not truncate
                masq = masq[1:]
            if not masq:
                continue
            if len(masq) == len(domain):
                if masq.lower() == domain.lower():
                    break
            elif len(masq) < len(domain):
                parent = domain[len(domain) - len(masq):]
                if domain[len(domain) - len(masq) - 1] == "." and parent.lower() == masq.lower():
                    if truncate:
                        addr = addr[:at + 1] + masq
                        changed = True
                    break
        if not changed:
            return address, False
        return (addr if external else A.unquote_822_local(addr)), True

    def _canonical(self, address: str, which: str, klass: str, *, external: bool = False,
                   warn: Warn | None = None) -> tuple[str, bool]:
        """The class-specific canonical table (sender_/recipient_), then
        canonical_maps, then masquerading."""
        propagate = "canonical" in self.propagate
        changed = False
        specific, classes = ((self.sender_canonical_maps, self.sender_canonical_classes)
                             if which == "sender" else
                             (self.recipient_canonical_maps, self.recipient_canonical_classes))
        if specific is not None and klass in classes:
            address, did = self.map11(address, specific, propagate, external=external, warn=warn)
            changed |= did
        if self.canonical_maps is not None and klass in self.canonical_classes:
            address, did = self.map11(address, self.canonical_maps, propagate,
                                      external=external, warn=warn)
            changed |= did
        if self.masquerade_domains and klass in self.masquerade_classes:
            address, did = self.masquerade(address, external=external)
            changed |= did
        return address, changed

    # -- envelope ------------------------------------------------------------------------

    def sender(self, address: str, *, map_ok: bool = True, warn: Warn | None = None) -> str:
        """cleanup_addr_sender(): the envelope sender as cleanup stores it.
        ``MAILER-DAEMON`` (completed) becomes the null sender."""
        clean = self.rewrite(address, LOCAL)
        if (clean.lower().startswith(MAILER_DAEMON.lower() + "@")
                and clean.lower() == self.mailer_daemon.lower()):
            clean = ""
        if map_ok and clean:
            clean, _ = self._canonical(clean, "sender", ENVELOPE_SENDER, warn=warn)
        return clean

    def recipient(self, address: str, *, map_ok: bool = True, warn: Warn | None = None) -> str:
        """cleanup_addr_recipient() up to virtual alias expansion: the
        recipient completed in the local context (the null recipient becomes
        $empty_address_recipient), then canonical mapping and masquerading."""
        clean = self.rewrite(address or self.empty_address_recipient, LOCAL)
        if map_ok:
            clean, _ = self._canonical(clean, "recipient", ENVELOPE_RECIPIENT, warn=warn)
        return clean

    def expand_virtual(self, address: str) -> list[str]:
        """cleanup_map1n_internal(): virtual_alias_maps expansion of one
        recipient. Each result is expanded again; an address that appears in
        its own expansion is kept and not expanded further. Raises
        LookupDefer past virtual_alias_expansion_limit addresses,
        virtual_alias_recursion_limit levels, an over-long result, or when a
        table fails."""
        tables = self.virtual_alias_maps
        if tables is None:
            return [address]
        propagate = "virtual" in self.propagate
        title = tables.title
        addrs = [address]
        been_here: set[str] = set()
        arg = 0
        while arg < len(addrs):
            if len(addrs) > self.expansion_limit:
                raise LookupDefer(title, address,
                                  f"unreasonable {title} map expansion size for {address} -- "
                                  f"message not accepted, try again later")
            count = 0
            while True:
                if addrs[arg].lower() in been_here:
                    break
                if count >= self.recursion_limit:
                    raise LookupDefer(title, address,
                                      f"unreasonable {title} map nesting for {address} -- "
                                      f"message not accepted, try again later")
                try:
                    lookup = self.map_address(tables, addrs[arg], propagate)
                except LookupDefer:
                    raise
                except TableRetry as err:
                    raise LookupDefer(title, address,
                                      f"{title} map lookup problem for {address} -- "
                                      f"message not accepted, try again later",
                                      retry=True) from err
                if lookup is None:
                    break
                saved_lhs = addrs[arg]
                for i, result in enumerate(lookup):
                    if len(result) > self.address_length_limit:
                        raise LookupDefer(title, address,
                                          f"unreasonable {title} result {result[:300]}... -- "
                                          f"message not accepted, try again later")
                    if i == 0:
                        addrs[arg] = result
                    else:
                        addrs.append(result)
                    # An address may expand into itself once.
                    if saved_lhs.lower() == result.lower():
                        been_here.add(saved_lhs.lower())
                count += 1
            arg += 1
        return addrs

    # -- headers -------------------------------------------------------------------------

    def header_tables(self, sender: bool) -> bool:
        """Whether an address in a header of the sender (or recipient)
        class may go through a table or masquerading. When not, what
        :meth:`header_address` does depends on the address and the
        settings alone."""
        if sender:
            klass, specific, classes = (HEADER_SENDER, self.sender_canonical_maps,
                                        self.sender_canonical_classes)
        else:
            klass, specific, classes = (HEADER_RECIPIENT, self.recipient_canonical_maps,
                                        self.recipient_canonical_classes)
        return ((specific is not None and klass in classes)
                or (self.canonical_maps is not None and klass in self.canonical_classes)
                or bool(self.masquerade_domains and klass in self.masquerade_classes))

    def header_address(self, node: A.Tok, *, sender: bool, context: str,
                       map_ok: bool = True, warn: Warn | None = None) -> bool:
        """Rewrite one ADDR node of an address header in place, as
        cleanup_rewrite_sender()/cleanup_rewrite_recip() do: the rewrite
        stage in *context*, then canonical maps and masquerading for the
        header_sender or header_recipient class. True when it changed."""
        ctx = self.context(context)
        if ctx is None:
            return False
        src = A.externalize(node.head)
        dst = rewrite_external(src, ctx, self.rules)
        did_rewrite = dst != src
        klass = HEADER_SENDER if sender else HEADER_RECIPIENT
        if map_ok:
            dst, changed = self._canonical(dst, "sender" if sender else "recipient", klass,
                                           external=True, warn=warn)
            did_rewrite |= changed
        node.head = A.scan(dst)
        node.tail = A.last(node.head) if node.head is not None else None
        return did_rewrite

    def close(self) -> None:
        for maps in (self.canonical_maps, self.sender_canonical_maps,
                     self.recipient_canonical_maps, self.virtual_alias_maps):
            if maps is not None:
                maps.close()
        if self.masquerade_exceptions is not None:
            self.masquerade_exceptions.close()
        self.local_domains.close()


__all__ = [
    "LOCAL",
    "REMOTE",
    "AddressFinder",
    "AddressMapper",
    "DuplicateFilter",
    "LocalDomains",
    "LookupDefer",
    "MatchList",
    "RewriteContext",
    "RewriteRules",
    "Rewriter",
    "UnavailableTable",
    "match_parent_style",
    "open_maps",
    "rewrite_external",
    "rewrite_internal",
    "rewrite_tree",
]

"""Address, host name and relay checks of SmtpdSession (smtpd_check.c).

Resolution through trivial-rewrite's rules (:class:`~hato.policy.resolve.Resolver`)
for relay control (permit_auth_destination, reject_unauth_destination,
permit_mx_backup), the recipient tables (reject_unlisted_recipient/sender),
the syntax checks (reject_invalid/non_fqdn_*), the DNS existence checks
(reject_unknown_*), TLS client certificates and SASL sender ownership.
"""

from __future__ import annotations

import ipaddress

from ..config.values import split_list
from ..tables.base import TableRetry
from . import address as A
from .dnsquery import DnsTempFail
from .resolve import Resolution
from .rewrite import rewrite_internal
from .smtpd_access import (
    DUNNO,
    ERR_BOUNCE,
    ERR_POLICY,
    NAME_HELO,
    NAME_RECIPIENT,
    NAME_SENDER,
    OK,
    SEPARATORS,
    SessionState,
    smtpd_dsn_fix,
)


class AddressChecks(SessionState):
    """A mixin of SmtpdSession."""

    # -- address resolution and the recipient tables

    def _resolve(self, addr: str) -> Resolution:
        res = self._resolved.get(addr)
        if res is None:
            resolver = self.checks.resolver
            try:
                rewritten = self._rewrite(addr)
                res = resolver.resolve(rewritten, self.sender or "")
            except TableRetry:
                self._dict_retry(addr)
                raise AssertionError("unreachable") from None
            self._resolved[addr] = res
        if res.failed:
            self._dict_retry(addr)
        return res

    def resolve_address(self, addr: str) -> Resolution | None:
        """trivial-rewrite's answer for *addr* (milter macros such as
        ``{rcpt_mailer}``), without side effects; None when a table failed."""
        res = self._resolved.get(addr)
        if res is not None:
            return res
        resolver = self.checks.resolver
        try:
            rewritten = rewrite_internal(addr, resolver.local, resolver.rules) if addr else addr
            return resolver.resolve(rewritten, self.sender or "")
        except TableRetry:
            return None

    def _permit_auth_destination(self, recipient: str) -> int:
        res = self._resolve(recipient)
        if "@" not in res.recipient:
            return OK
        if not self.checks.allow_untrusted_routing and res.routed:
            return DUNNO
        if res.final or res.address_class == "relay":
            return OK
        return DUNNO

    def _sender_rcpt_maps(self, sender: str) -> int:
        if self.sender_rcptmap_checked:
            return DUNNO
        if self.warn_if_reject == 0:
            self.sender_rcptmap_checked = True
        return self._rcpt_maps(sender, NAME_SENDER)

    def _recipient_rcpt_maps(self, recipient: str) -> int:
        if self.recipient_rcptmap_checked:
            return DUNNO
        if self.warn_if_reject == 0:
            self.recipient_rcptmap_checked = True
        return self._rcpt_maps(recipient, NAME_RECIPIENT)

    def _rewrite(self, addr: str) -> str:
        """rewrite_internal() of *addr*, once per session."""
        rewritten = self._rewritten.get(addr)
        if rewritten is None:
            resolver = self.checks.resolver
            rewritten = rewrite_internal(addr, resolver.local, resolver.rules) if addr else addr
            self._rewritten[addr] = rewritten
        return rewritten

    def _rcpt_maps(self, address: str, reply_class: str) -> int:
        self._resolve(address)
        rewritten = self._rewrite(address)
        try:
            check = self.checks.validator.check(rewritten, self.sender or "",
                                                reply_class=reply_class)
        except TableRetry:
            self._dict_retry(address)
            raise AssertionError("unreachable") from None
        if check.known:
            return DUNNO
        return self._reject(ERR_BOUNCE, check.code, smtpd_dsn_fix(check.dsn, reply_class),
                            f"<{address}>: {reply_class} rejected: {check.text}")

    # -- host names and addresses

    def _invalid_hostaddr(self, addr: str) -> int:
        test = addr[1:-1] if addr.startswith("[") and addr.endswith("]") and len(addr) > 2 \
            else addr
        if A.mailhost_addr(f"[{test}]") is None:
            return self._reject(ERR_POLICY, self.checks.p["invalid_hostname_reject_code"],
                                "5.5.2", f"<{addr}>: {NAME_HELO} rejected: invalid ip address")
        return DUNNO

    @staticmethod
    def _truncate_dot(name: str) -> str:
        if len(name) > 1 and name.endswith(".") and name[-2] != ".":
            return name[:-1]
        return name

    def _invalid_hostname(self, name: str) -> int:
        test = self._truncate_dot(name)
        if not A.valid_hostname(test, utf8=self.checks.utf8) and not A.valid_hostaddr(test):
            return self._reject(ERR_POLICY, self.checks.p["invalid_hostname_reject_code"],
                                "5.5.2", f"<{name}>: {NAME_HELO} rejected: Invalid name")
        return DUNNO

    def _non_fqdn_hostname(self, name: str) -> int:
        test = self._truncate_dot(name)
        if not A.valid_hostname(test, utf8=self.checks.utf8) or "." not in test:
            return self._reject(ERR_POLICY, self.checks.p["non_fqdn_reject_code"], "5.5.2",
                                f"<{name}>: {NAME_HELO} rejected: need fully-qualified "
                                "hostname")
        return DUNNO

    def _dns_any(self, name: str, rtypes: tuple[str, ...]) -> bool | None:
        """True when any record type exists, False when none, None on a
        temporary failure with nothing found."""
        temp = False
        for rtype in rtypes:
            try:
                if rtype == "MX":
                    found = bool(self.checks.dns.mx(name))
                else:
                    found = bool(self.checks.dns.query(name, rtype))
            except DnsTempFail:
                temp = True
                continue
            if found:
                return True
        return None if temp else False

    def _unknown_hostname(self, name: str) -> int:
        found = self._dns_any(name, ("A", "AAAA", "MX"))
        if found:
            return DUNNO
        text = f"<{name}>: {NAME_HELO} rejected: Host not found"
        if found is False:
            return self._reject(ERR_POLICY, self.checks.p["unknown_hostname_reject_code"],
                                "4.7.1", text)
        return self._defer_if_permit_(
            self.checks.tempfail["unknown_helo_hostname_tempfail_action"], 450, "4.7.1", text)

    def _non_fqdn_address(self, addr: str, reply_name: str, reply_class: str) -> int:
        at = addr.rfind("@")
        domain = addr[at + 1:] if at >= 0 else ""
        if domain.startswith("[") and domain.endswith("]"):
            return DUNNO
        test = self._truncate_dot(domain)
        if not test or not A.valid_hostname(test, utf8=self.checks.utf8) or "." not in test:
            return self._reject(ERR_POLICY, self.checks.p["non_fqdn_reject_code"], "4.5.2",
                                f"<{reply_name}>: {reply_class} rejected: need "
                                "fully-qualified address")
        return DUNNO

    def _unknown_address(self, addr: str, reply_name: str, reply_class: str) -> int:
        res = self._resolve(addr)
        at = res.recipient.rfind("@")
        if at < 0:
            return DUNNO
        domain = res.recipient[at + 1:]
        if res.final or (domain.startswith("[") and domain.endswith("]")):
            return DUNNO
        found = self._dns_any(domain, ("MX", "A", "AAAA"))
        if found:
            return DUNNO
        dsn = "4.1.8" if reply_class == NAME_SENDER else "4.1.2"
        text = f"<{reply_name}>: {reply_class} rejected: Domain not found"
        if found is False:
            return self._reject(ERR_POLICY, self.checks.p["unknown_address_reject_code"], dsn,
                                text)
        return self._defer_if_permit_(self.checks.tempfail["unknown_address_tempfail_action"],
                                      450, dsn, text)

    def _tls_clientcerts(self, permit_all: bool, reply_name: str) -> int:
        f = self.facts
        if not f.tls_active:
            return DUNNO
        if permit_all and f.tls_ccert_verified:
            return OK
        if f.tls_ccert_fingerprint and self.checks.relay_ccerts is not None:
            for fprint in (f.tls_ccert_fingerprint, f.tls_ccert_pkey_fingerprint):
                if not fprint:
                    continue
                try:
                    found = self.checks.relay_ccerts.get(fprint)
                except TableRetry:
                    self._warn(f"relay_clientcerts: lookup error for fingerprint "
                               f"'{f.tls_ccert_fingerprint}', pkey fingerprint "
                               f"{f.tls_ccert_pkey_fingerprint}")
                    self._dict_retry(reply_name)
                if found is not None:
                    return OK
        return DUNNO

    def _login_owners(self, sender: str) -> str | None:
        maps = self.checks.sender_login_maps
        assert maps is not None
        res = self._resolve(sender)
        try:
            found = self.checks.resolver.finder.find(maps, res.recipient)
        except TableRetry:
            self._dict_retry(sender)
            raise AssertionError("unreachable") from None
        return found.value if found is not None else None

    def _auth_login_mismatch(self, sender: str, allow_unknown: bool) -> int:
        user = self.facts.sasl_username
        if self.checks.sender_login_maps is None or not user:
            return DUNNO
        owners = self._login_owners(sender)
        if owners is None and allow_unknown:
            return DUNNO
        if owners is not None and any(o.lower() == user.lower()
                                      for o in split_list(owners, SEPARATORS)):
            return DUNNO
        return self._reject(ERR_POLICY, 553, "5.7.1", f"<{sender}>: Sender address rejected: "
                            f"not owned by user {user}")

    def _unauth_login_mismatch(self, sender: str) -> int:
        if self.checks.sender_login_maps is None or self.facts.sasl_username:
            return DUNNO
        if self._login_owners(sender) is not None:
            return self._reject(ERR_POLICY, 553, "5.7.1",
                                f"<{sender}>: Sender address rejected: not logged in")
        return DUNNO

    def _permit_mx_backup(self, recipient: str, reply_name: str, reply_class: str) -> int:
        res = self._resolve(recipient)
        at = res.recipient.rfind("@")
        if at < 0:
            return OK
        domain = res.recipient[at + 1:]
        if not self.checks.allow_untrusted_routing and res.routed:
            return DUNNO
        if res.final or res.address_class == "relay":
            return OK
        if domain.startswith("[") and domain.endswith("]"):
            return DUNNO
        try:
            mx = self.checks.dns.mx(domain)
        except DnsTempFail:
            self._defer_if_reject_(450, "4.4.4", f"<{reply_name}>: {reply_class} rejected: "
                                   "Unable to look up mail exchanger information")
            return DUNNO
        if not mx:
            return DUNNO
        best = mx[0][0]
        primaries = [h for p, h in mx if p == best]
        backups = [h for p, h in mx if p != best]
        if self._i_am_mx(primaries, reply_name, reply_class):
            return DUNNO
        if not backups or not self._i_am_mx(backups, reply_name, reply_class):
            return DUNNO
        if self.checks.perm_mx_networks.items:
            for host in primaries:
                try:
                    addrs = self.checks.dns.query(host, "A") + \
                        self.checks.dns.query(host, "AAAA")
                except DnsTempFail:
                    addrs = []
                if not addrs:
                    self._defer_if_reject_(450, "4.4.4", f"<{reply_name}>: {reply_class} "
                                           f"rejected: Unable to look up host {host} as mail "
                                           "exchanger")
                    return DUNNO
                for addr in addrs:
                    try:
                        ok = self.checks.perm_mx_networks.match(host, addr)
                    except TableRetry:
                        ok = False
                    if not ok:
                        return DUNNO
        return OK

    def _i_am_mx(self, hosts: list[str], reply_name: str, reply_class: str) -> bool:
        for host in hosts:
            try:
                if self.checks.local_domains.is_local(host):
                    return True
            except TableRetry:
                pass
        own = self.checks.local_domains.addresses
        for host in hosts:
            try:
                addrs = self.checks.dns.query(host, "A") + self.checks.dns.query(host, "AAAA")
            except DnsTempFail:
                self._defer_if_reject_(450, "4.4.4", f"<{reply_name}>: {reply_class} "
                                       f"rejected: Unable to look up mail exchanger host "
                                       f"{host}: temporary failure")
                continue
            for addr in addrs:
                try:
                    if ipaddress.ip_address(addr) in own:
                        return True
                except ValueError:
                    continue
        return False


__all__ = ["AddressChecks"]

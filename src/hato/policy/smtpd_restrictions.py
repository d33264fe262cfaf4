"""One restriction of an smtpd restriction list, by name (Postfix's
smtpd_check.c, generic_checks()), as a part of
:class:`hato.policy.smtpd_check.SmtpdSession`; and the tables of restriction
names that the checks and ``hato check`` share."""

from __future__ import annotations

import ipaddress

from ..tables.base import TableRetry
from .smtpd_access import (DEFER_IF_PERMIT_ACT, DUNNO, ERR_POLICY, ERR_PROTOCOL, NAME_CLIENT,
                           NAME_HELO, NAME_RECIPIENT, NAME_SENDER, OK, STAGE_DATA, SessionState)
from .verify import BOUNCE, DEFER, OK as VRFY_OK, STAT_OK, TODO

#: The result of a verify query: (request status, recipient status, text).
VerifyAnswer = tuple[int, int, str]

#: Restrictions that ask the DNS (the service then runs checks in a thread).
DNS_RESTRICTIONS = frozenset({
    "reject_rbl_client", "reject_rbl", "reject_maps_rbl", "permit_dnswl_client",
    "reject_rhsbl_client", "permit_rhswl_client", "reject_rhsbl_reverse_client",
    "reject_rhsbl_helo", "reject_rhsbl_sender", "reject_rhsbl_recipient",
    "reject_unknown_helo_hostname", "reject_unknown_hostname",
    "reject_unknown_sender_domain", "reject_unknown_address",
    "reject_unknown_recipient_domain", "permit_mx_backup", "check_policy_service",
    "check_client_mx_access", "check_client_ns_access", "check_reverse_client_mx_access",
    "check_reverse_client_ns_access", "check_helo_mx_access", "check_helo_ns_access",
    "check_sender_mx_access", "check_sender_ns_access", "check_recipient_mx_access",
    "check_recipient_ns_access", "sleep",
})
NETWORK_TABLE_TYPES = frozenset({"mysql", "pgsql", "ldap", "socketmap", "tcp", "proxy",
                                 "memcache", "sqlite"})

#: Names smtpd knows but hato does not implement yet: a warning, then DUNNO.
NOT_SUPPORTED: frozenset[str] = frozenset()
#: Restrictions that wait for the verify service (run in a thread, as DNS ones).
VERIFY_RESTRICTIONS = frozenset({"reject_unverified_sender", "reject_unverified_recipient"})

#: Every restriction name smtpd_check.c knows (for `hato check`).
KNOWN_RESTRICTIONS = frozenset({
    "permit", "defer", "reject", "warn_if_reject", "defer_if_permit", "defer_if_reject",
    "reject_unauth_pipelining", "check_policy_service", "sleep", "reject_plaintext_session",
    "reject_unknown_client_hostname", "reject_unknown_client",
    "reject_unknown_reverse_client_hostname", "permit_inet_interfaces", "permit_mynetworks",
    "check_client_access", "check_reverse_client_hostname_access", "reject_maps_rbl",
    "reject_rbl_client", "reject_rbl", "permit_dnswl_client", "reject_rhsbl_client",
    "permit_rhswl_client", "reject_rhsbl_reverse_client", "check_ccert_access",
    "check_sasl_access", "check_client_ns_access", "check_client_mx_access",
    "check_reverse_client_ns_access", "check_reverse_client_mx_access", "check_helo_access",
    "reject_invalid_helo_hostname", "reject_invalid_hostname", "reject_unknown_helo_hostname",
    "reject_unknown_hostname", "permit_naked_ip_address", "check_helo_ns_access",
    "check_helo_mx_access", "reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname",
    "reject_rhsbl_helo", "check_sender_access", "reject_unknown_address",
    "reject_unknown_sender_domain", "reject_unverified_sender", "reject_non_fqdn_sender",
    "reject_authenticated_sender_login_mismatch", "reject_known_sender_login_mismatch",
    "reject_unauthenticated_sender_login_mismatch", "reject_sender_login_mismatch",
    "check_sender_ns_access", "check_sender_mx_access", "reject_rhsbl_sender",
    "reject_unlisted_sender", "check_recipient_access", "permit_mx_backup",
    "permit_auth_destination", "reject_unauth_destination", "defer_unauth_destination",
    "check_relay_domains", "permit_sasl_authenticated", "permit_tls_all_clientcerts",
    "permit_tls_clientcerts", "reject_unknown_recipient_domain", "reject_non_fqdn_recipient",
    "check_recipient_ns_access", "check_recipient_mx_access", "reject_rhsbl_recipient",
    "check_recipient_maps", "reject_unlisted_recipient", "reject_multi_recipient_bounce",
    "reject_unverified_recipient", "check_etrn_access",
})

#: check_xxx_access commands, whose argument is a table.
MAP_COMMANDS = frozenset(n for n in KNOWN_RESTRICTIONS
                          if n.startswith("check_") and n.endswith("_access"))
#: Restrictions followed by one argument that is not a table.
ARG_COMMANDS = frozenset({
    "check_policy_service", "sleep", "reject_rbl_client", "reject_rbl", "permit_dnswl_client",
    "reject_rhsbl_client", "permit_rhswl_client", "reject_rhsbl_reverse_client",
    "reject_rhsbl_helo", "reject_rhsbl_sender", "reject_rhsbl_recipient",
})


#: The HELO name restrictions (and their old names): the check of a name;
#: an address literal gets _invalid_hostaddr() for each of them.
_HELO_NAME_CHECKS = {
    "reject_invalid_helo_hostname": "_invalid_hostname",
    "reject_invalid_hostname": "_invalid_hostname",
    "reject_unknown_helo_hostname": "_unknown_hostname",
    "reject_unknown_hostname": "_unknown_hostname",
    "reject_non_fqdn_helo_hostname": "_non_fqdn_hostname",
    "reject_non_fqdn_hostname": "_non_fqdn_hostname",
}


class RestrictionChecks(SessionState):
    """A mixin of SmtpdSession: one restriction of a list, by name."""

    def _arg(self, items: list[str], i: int, name: str, *, table: bool) -> tuple[str | None, int]:
        """The argument after items[i]; for a map command it must be type:name."""
        if i + 1 >= len(items):
            if table:
                self._warn(f"restriction {name}: bad argument \"{name}\": "
                           "need maptype:mapname")
                self._server_error()
            return None, i
        arg = items[i + 1]
        if table and ":" not in arg:
            self._warn(f"restriction {name}: bad argument \"{arg}\": need maptype:mapname")
            self._server_error()
        return arg, i + 1

    def _one(self, name: str, items: list[str], i: int, reply_name: str, reply_class: str,
             def_acl: str | None) -> tuple[int, int]:
        """Evaluate the restriction *name* at items[i]; returns (status, last index used)."""
        low = name.lower()
        f = self.facts
        c = self.checks
        nxt = items[i + 1] if i + 1 < len(items) else None
        if low in MAP_COMMANDS:
            table_spec, i = self._arg(items, i, low, table=True)
            assert table_spec is not None
            return self._map_command(low, table_spec, reply_name, reply_class, def_acl), i
        if low in ARG_COMMANDS and low not in ("check_policy_service", "sleep"):
            if nxt is None:
                self._warn(f"restriction {low} requires domain name argument")
                return DUNNO, i
            return self._dnsxl(low, nxt, reply_name, reply_class), i + 1
        if low == "permit":
            status = self._permit(low, reply_class, reply_name)
            if nxt is not None:
                self._warn(f"restriction `{nxt}' after `permit' is ignored")
            return status, i
        if low == "defer":
            status = self._reject(ERR_POLICY, c.p["defer_code"], "4.3.2",
                                  f"<{reply_name}>: {reply_class} rejected: Try again later")
            if nxt is not None and not self.warn_if_reject:
                self._warn(f"restriction `{nxt}' after `defer' is ignored")
            return status, i
        if low == "reject":
            status = self._reject(ERR_POLICY, c.p["reject_code"], "5.7.1",
                                  f"<{reply_name}>: {reply_class} rejected: Access denied")
            if nxt is not None and not self.warn_if_reject:
                self._warn(f"restriction `{nxt}' after `reject' is ignored")
            return status, i
        if low == "reject_unauth_pipelining":
            if f.pipelining_violation:
                return self._reject(ERR_PROTOCOL, 503, "5.5.0",
                                    f"<{reply_name}>: {reply_class} rejected: Improper use "
                                    "of SMTP command pipelining"), i
            return DUNNO, i
        if low == "check_policy_service":
            if nxt is None or ":" not in nxt:
                self._warn("restriction check_policy_service must be followed by "
                           "transport:server")
                self._server_error()
            assert nxt is not None
            return self._policy(nxt, reply_name, reply_class, def_acl), i + 1
        if low == "defer_if_permit":
            return self._defer_if_permit_(DEFER_IF_PERMIT_ACT, 450, "4.7.0",
                                          f"<{reply_name}>: {reply_class} rejected: "
                                          "defer_if_permit requested"), i
        if low == "defer_if_reject":
            return self._defer_if_reject_(450, "4.7.0", f"<{reply_name}>: {reply_class} "
                                          "rejected: defer_if_reject requested"), i
        if low == "sleep":
            if nxt is None or not nxt.isdigit():
                self._warn("restriction sleep must be followed by number")
                self._server_error()
            assert nxt is not None
            self._delay += int(nxt)
            return DUNNO, i + 1
        if low == "reject_plaintext_session":
            if not f.tls_active:
                return self._reject(ERR_POLICY, c.p["plaintext_reject_code"], "4.7.1",
                                    "Session encryption is required"), i
            return DUNNO, i
        if low in NOT_SUPPORTED:
            self._warn(f"{low} is not supported yet")
            return DUNNO, i
        if low in ("reject_unknown_client_hostname", "reject_unknown_client"):
            if f.name_status != 0:
                code = c.p["unknown_client_reject_code"] if f.name_status >= 5 else 450
                # RFC 7372: Email Authentication Status Codes.
                return self._reject(ERR_POLICY, code, "4.7.25", "Client host rejected: cannot "
                                    f"find your hostname, [{f.addr}]"), i
            return DUNNO, i
        if low == "reject_unknown_reverse_client_hostname":
            if f.reverse_name_status != 0:
                code = c.p["unknown_client_reject_code"] if f.reverse_name_status == 5 else 450
                return self._reject(ERR_POLICY, code, "4.7.1", "Client host rejected: cannot "
                                    f"find your reverse hostname, [{f.addr}]"), i
            return DUNNO, i
        if low == "permit_inet_interfaces":
            try:
                own = ipaddress.ip_address(f.addr) in c.local_domains.addresses
            except ValueError:
                own = False
            return (self._permit(low, NAME_CLIENT, self.namaddr) if own else DUNNO), i
        if low == "permit_mynetworks":
            try:
                matched = c.mynetworks.match(f.name, f.addr)
            except TableRetry:
                self._dict_retry(reply_name)
            return (self._permit(low, NAME_CLIENT, self.namaddr) if matched else DUNNO), i
        if low == "reject_maps_rbl":
            self._warn("support for restriction \"reject_maps_rbl\" will be removed from "
                       "Postfix; use \"reject_rbl_client domain-name\" instead")
            for zone in c.maps_rbl_domains:
                status = self._reject_rbl_addr(zone, f.addr, NAME_CLIENT)
                if status != DUNNO:
                    return status, i
            return DUNNO, i
        # HELO
        helo_check = _HELO_NAME_CHECKS.get(low)
        if helo_check is not None:
            helo = self._helo_name()
            if helo is None:
                return DUNNO, i
            if not helo.startswith("["):
                return getattr(self, helo_check)(helo), i
            return self._invalid_hostaddr(helo), i  # an address literal
        if low == "permit_naked_ip_address":
            self._warn("restriction permit_naked_ip_address is deprecated. Use "
                       "permit_mynetworks or permit_sasl_authenticated instead")
            helo = self._helo_name()
            if helo is not None and helo and all(ch in "0123456789.:" for ch in helo):
                status = self._invalid_hostaddr(helo)
                if status == DUNNO:
                    return self._permit(low, NAME_HELO, helo), i
                return status, i
            return DUNNO, i
        # Sender
        sender = self.sender
        if low in ("reject_unknown_sender_domain", "reject_unknown_address"):
            if sender:
                return self._unknown_address(sender, sender, NAME_SENDER), i
            return DUNNO, i
        if low == "reject_non_fqdn_sender":
            if sender:
                return self._non_fqdn_address(sender, sender, NAME_SENDER), i
            return DUNNO, i
        if low in ("reject_authenticated_sender_login_mismatch",
                   "reject_known_sender_login_mismatch",
                   "reject_unauthenticated_sender_login_mismatch"):
            if not c.sasl_enable:
                self._warn(f"restriction `{low}' ignored: no SASL support")
                return DUNNO, i
            if not sender:
                return DUNNO, i
            if low == "reject_authenticated_sender_login_mismatch":
                return self._auth_login_mismatch(sender, allow_unknown=False), i
            if low == "reject_unauthenticated_sender_login_mismatch":
                return self._unauth_login_mismatch(sender), i
            if f.sasl_username:
                return self._auth_login_mismatch(sender, allow_unknown=True), i
            return self._unauth_login_mismatch(sender), i
        if low == "reject_unlisted_sender":
            if sender:
                return self._sender_rcpt_maps(sender), i
            return DUNNO, i
        if low == "reject_unverified_sender":
            if sender:
                return self._unverified_address(sender, NAME_SENDER), i
            return DUNNO, i
        # Recipient
        rcpt = self.recipient
        if low == "permit_mx_backup":
            if rcpt is not None:
                status = self._permit_mx_backup(rcpt, rcpt, NAME_RECIPIENT)
                if status == OK:
                    return self._permit(low, NAME_RECIPIENT, rcpt), i
            return DUNNO, i
        if low == "permit_auth_destination":
            if rcpt is not None and self._permit_auth_destination(rcpt) == OK:
                return self._permit(low, NAME_RECIPIENT, rcpt), i
            return DUNNO, i
        if low in ("reject_unauth_destination", "defer_unauth_destination"):
            if rcpt is None:
                return DUNNO, i
            if self._permit_auth_destination(rcpt) == OK:
                return DUNNO, i
            code, dsn = c.p["relay_domains_reject_code"], "5.7.1"
            if low == "defer_unauth_destination":
                code, dsn = code - 100, "4.7.1"
            return self._reject(ERR_POLICY, code, dsn, f"<{rcpt}>: Relay access denied"), i
        if low == "check_relay_domains":
            self._warn("support for restriction \"check_relay_domains\" will be removed "
                       "from Postfix; use \"reject_unauth_destination\" instead")
            status = DUNNO
            if rcpt is not None:
                relay = c.resolver.relay_domains
                try:
                    client_ok = relay is not None and relay.match(f.name)
                except TableRetry:
                    self._dict_retry(reply_name)
                if client_ok or self._permit_auth_destination(rcpt) == OK:
                    status = OK
                else:
                    status = self._reject(ERR_POLICY, c.p["relay_domains_reject_code"],
                                          "5.7.1", f"<{rcpt}>: {NAME_RECIPIENT} rejected: "
                                          "Relay access denied")
            if status == OK:
                status = self._permit(low, NAME_RECIPIENT, rcpt or "")
            return status, i
        if low == "permit_sasl_authenticated":
            if f.sasl_username:
                return self._permit(low, NAME_CLIENT, self.namaddr), i
            return DUNNO, i
        if low in ("permit_tls_all_clientcerts", "permit_tls_clientcerts"):
            status = self._tls_clientcerts(low == "permit_tls_all_clientcerts", reply_name)
            if status == OK:
                return self._permit(low, NAME_CLIENT, self.namaddr), i
            return status, i
        if low == "reject_unknown_recipient_domain":
            if rcpt is not None:
                return self._unknown_address(rcpt, rcpt, NAME_RECIPIENT), i
            return DUNNO, i
        if low == "reject_non_fqdn_recipient":
            if rcpt is not None:
                return self._non_fqdn_address(rcpt, rcpt, NAME_RECIPIENT), i
            return DUNNO, i
        if low in ("check_recipient_maps", "reject_unlisted_recipient"):
            if rcpt:
                return self._recipient_rcpt_maps(rcpt), i
            return DUNNO, i
        if low == "reject_unverified_recipient":
            if rcpt:
                return self._unverified_address(rcpt, NAME_RECIPIENT), i
            return DUNNO, i
        if low == "reject_multi_recipient_bounce":
            if sender == "" and self.rcpt_count > (1 if self.where == STAGE_DATA else 0):
                return self._reject(ERR_POLICY, c.p["multi_recipient_bounce_reject_code"],
                                    "5.5.3", f"<{reply_name}>: {reply_class} rejected: "
                                    "Multi-recipient bounce"), i
            return DUNNO, i
        # Restriction classes.
        if name in c.classes:
            return self._generic(c.classes[name], reply_name, reply_class, def_acl), i
        self._warn(f"unknown smtpd restriction: \"{name}\"")
        self._server_error()
        raise AssertionError("unreachable")

    # -- reject_unverified_sender, reject_unverified_recipient

    def _unverified_address(self, addr: str, reply_class: str) -> int:
        """reject_unverified_address(): what the verify service knows of
        *addr*. Deliverable: DUNNO. Undeliverable: the
        unverified_*_reject_code with ``undeliverable address`` (5xx) or
        ``unverified address`` (4xx); no result yet or a deferred probe:
        the unverified_*_defer_code; the service unreachable: 450
        ``address verification problem``. 4xx answers follow
        unverified_*_tempfail_action (defer_if_permit: only when nothing
        later rejects)."""
        c = self.checks
        which = "sender" if reply_class == NAME_SENDER else "recipient"
        dsn = "4.1.7" if reply_class == NAME_SENDER else "4.1.1"
        act = c.tempfail[f"unverified_{which}_tempfail_action"]
        answer: VerifyAnswer | None = None
        if c.verify is not None:
            try:
                answer = c.verify(addr)
            except Exception:  # noqa: BLE001 - any client failure is a service failure
                answer = None
        if answer is None or answer[0] != STAT_OK:
            self._warn(f"{c.verify_service} service failure")
            return self._defer_if_permit_(act, 450, dsn, f"<{addr}>: {reply_class} rejected: "
                                          "address verification problem")
        _, rcpt_status, why = answer
        code = 0
        if rcpt_status in (TODO, DEFER):
            code = c.p[f"unverified_{which}_defer_code"]
        elif rcpt_status == BOUNCE:
            code = c.p[f"unverified_{which}_reject_code"]
        elif rcpt_status != VRFY_OK:
            self._warn(f"unknown address verification status {rcpt_status}")
        if code >= 400 and c.unverified_reason[reply_class]:
            why = c.unverified_reason[reply_class]
        if code // 100 == 4:
            return self._defer_if_permit_(act, code, dsn, f"<{addr}>: {reply_class} rejected: "
                                          f"unverified address: {why[:250]}")
        if code // 100 not in (0, 2):
            return self._reject(ERR_POLICY, code, dsn, f"<{addr}>: {reply_class} rejected: "
                                f"undeliverable address: {why}")
        return DUNNO

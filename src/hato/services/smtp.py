"""smtp and lmtp: the delivery agents that hand mail to other servers, as
smtp(8) and lmtp(8).

master.cf ``smtp unix - - n - - smtp`` (also ``relay`` and any entry with
``-o`` overrides) and ``lmtp unix - - n - - lmtp`` run this module; the
command name decides the protocol and which parameters are read
(``smtp_*`` or ``lmtp_*``). qmgr sends delivery requests (transport, next
hop, recipients, :mod:`hato.delivery.request`); each is delivered by
:class:`hato.io.smtp_delivery.SmtpDelivery` in a worker thread: next hops
from :mod:`hato.policy.smtp_route` (relayhost, ``[host]:port``, MX lookup
with preference order and randomisation among equals, A/AAAA fallback,
null MX, fallback relays; ``lmtp:unix:/path``, ``lmtp:inet:host:port``),
the SMTP/LMTP conversation from :mod:`hato.proto.smtp_client` (EHLO/HELO,
PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN, CHUNKING, per-recipient
results), STARTTLS by the TLS policy (``smtp_tls_security_level``,
``smtp_tls_policy_maps``: may, encrypt, dane, dane-only, fingerprint, verify,
secure; DANE TLSA records with ``smtp_dns_support_level = dnssec``, from
:mod:`hato.io.smtp_dane`), AUTH with ``smtp_sasl_password_maps``, the
connection cache and TLS session resumption
(:mod:`hato.io.smtp_conncache`), and the 8-bit → quoted-printable
conversion for servers without 8BITMIME (:mod:`hato.proto.mime_downgrade`).
Address verification probes end after the RCPT replies.

Each recipient's result is logged as Postfix logs it:
``QID: to=<a@example.org>, relay=mx.example.org[192.0.2.25]:25, delay=1.2,
delays=0.1/0/0.5/0.6, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as X)``
and ``status=bounced (host mx.example.org[192.0.2.25] said: 550 5.1.1 …
(in reply to RCPT TO command))``.

Parameters: relayhost, smtp_fallback_relay, smtp_helo_name (lmtp_lhlo_name),
smtp_connect_timeout, smtp_helo_timeout, smtp_mail_timeout,
smtp_rcpt_timeout, smtp_data_init_timeout, smtp_data_xfer_timeout,
smtp_data_done_timeout, smtp_rset_timeout, smtp_quit_timeout,
smtp_skip_5xx_greeting, smtp_never_send_ehlo, smtp_bind_address(6),
smtp_mx_address_limit, smtp_mx_session_limit, smtp_address_preference,
smtp_host_lookup, smtp_line_length_limit, smtp_discard_ehlo_keywords,
smtp_tls_security_level, smtp_tls_policy_maps, smtp_dns_support_level,
smtp_tls_dane_insecure_mx_policy, tls_dane_digests, smtp_tls_wrappermode,
smtp_tls_session_cache_database, smtp_tls_session_cache_timeout,
smtp_tls_connection_reuse, smtp_connection_cache_on_demand,
smtp_connection_cache_destinations, smtp_connection_cache_time_limit,
smtp_connection_reuse_time_limit, smtp_connection_reuse_count_limit,
disable_mime_output_conversion, mime_nesting_limit, lmtp_assume_final,
smtp_sasl_* (see :func:`sasl_hook`), inet_protocols, hato_dns_servers — and
their ``lmtp_`` forms for lmtp.
"""

from __future__ import annotations

import ssl

from ..io.agent import serve_agent
from ..io.smtp_delivery import SmtpDelivery
from ..io.smtp_route import router_from_settings


def tls_hook(settings, prefix: str, log):
    """STARTTLS per connection: the policy of ``{prefix}_tls_security_level``
    and ``{prefix}_tls_policy_maps`` for the next hop (:mod:`hato.policy.smtp_tls_policy`),
    at the dane levels the server's TLSA records from DNSSEC-validated
    lookups (:mod:`hato.io.smtp_dane`, with ``{prefix}_dns_support_level =
    dnssec``), a client context per distinct policy, and the peer checks of
    :mod:`hato.io.smtp_tls` with Postfix's "... TLS connection established
    to ..." line. Returns (mode, context, check) or None (no TLS); a policy
    that cannot be built is ("error", None, reason): the delivery defers."""
    from ..io.smtp_dane import DaneResolver
    from ..io.smtp_tls import TlsVerifyError, check_peer, client_context, trust_locations
    from ..policy.rewrite import open_maps
    from ..policy.smtp_tls_policy import TlsDefaults, TlsPolicyError, resolve_policy

    defaults = TlsDefaults.from_settings(settings, prefix)
    maps = open_maps(settings, f"{prefix}_tls_policy_maps")
    loglevel = settings.int(f"{prefix}_tls_loglevel")
    cafile, capath = trust_locations(settings, prefix=prefix)
    dane = DaneResolver(settings, prefix)
    for warning in dane.config_warnings:
        log.warning(warning)
    contexts: dict[str, ssl.SSLContext] = {}

    def hook(cand, nexthop):
        found = []

        def dane_outcome(level: str) -> str:
            # Only at the dane levels: the TLSA records of this server
            # (Postfix's dane_init()), kept for the check after the handshake.
            got = dane.lookup(cand, level)
            found.append(got)
            for warning in got.warnings:
                log.warning(warning)
            return got.outcome

        try:
            policy = resolve_policy(nexthop, cand.host, defaults,
                                    lookup=maps.get if maps is not None else None,
                                    dane_outcome=dane_outcome, port=cand.port or 25)
        except TlsPolicyError as err:
            if err.warning:
                log.warning(err.warning)
            return ("error", None, str(err))
        except Exception as err:  # a table that fails: try later
            return ("error", None, f"TLS policy lookup for {nexthop}: {err}")
        for warning in policy.warnings:
            log.warning(warning)
        if not policy.enabled:
            return None
        key = repr((policy.level, policy.protocols, policy.ciphers, policy.exclude,
                    policy.tafiles))
        ctx = contexts.get(key)
        if ctx is None:
            ctx = contexts[key] = client_context(settings, policy, prefix=prefix)
        tlsa = found[-1] if found and policy.level in ("dane", "dane-only") else None

        def check(wrapped, cand, nexthop) -> str:
            namaddr = f"{cand.host}[{cand.addr}]:{cand.port}"
            try:
                result = check_peer(
                    wrapped, policy, tlsa=tlsa.records if tlsa else (),
                    dane_names=tlsa.names if tlsa else None,
                    dane_secured=tlsa.secured if tlsa else True,
                    cafile=cafile, capath=capath)
            except TlsVerifyError as err:
                # Postfix logs why the chain failed when the level needs
                # trust (with only DANE-EE records: from smtp_tls_loglevel 1),
                # then the session it got, then defers with the reason.
                line = err.verify_log(namaddr)
                if line and (loglevel >= 1 or (
                        tlsa is not None and any(r.usage == 2 for r in tlsa.records))):
                    log.info(line)
                if err.result is not None and loglevel >= 1:
                    log.info(err.result.log_line(cand.host, cand.addr, cand.port))
                return err.reason
            if loglevel >= 1:
                log.info(result.log_line(cand.host, cand.addr, cand.port))
            return ""
        return ("may" if policy.plaintext_fallback else "encrypt", ctx, check)
    return hook


def sasl_hook(settings, prefix: str):
    """AUTH when ``{prefix}_sasl_auth_enable``: the credentials of
    ``{prefix}_sasl_password_maps`` for the server (Postfix's key order),
    the strongest mechanism the server offers that the filter and the
    security options allow (:mod:`hato.policy.smtp_sasl`)."""
    if not settings.bool(f"{prefix}_sasl_auth_enable"):
        return None
    from ..policy.rewrite import open_maps
    from ..policy.smtp_sasl import choose_mechanism, find_credentials, password_keys, \
        pattern_filter, security_options_name
    from ..proto.sasl_client import make_client

    maps = open_maps(settings, f"{prefix}_sasl_password_maps")
    if maps is None:
        return None
    mech_filter = pattern_filter(settings.list(f"{prefix}_sasl_mechanism_filter"))
    sender_dependent = prefix == "smtp" and \
        settings.bool("smtp_sender_dependent_authentication")

    def hook(cand, nexthop, sender, mechanisms, tls_active):
        keys = password_keys(host=cand.host, dest=nexthop, sender=sender,
                             sender_dependent=sender_dependent, lmtp=prefix == "lmtp",
                             recipient_delimiter=settings.str("recipient_delimiter"))
        creds = find_credentials(maps.get, keys)
        if creds is None:
            return None
        options = settings.list(security_options_name(tls=tls_active, prefix=prefix))
        mech = choose_mechanism(mechanisms, mechanism_filter=mech_filter,
                                security_options=options)
        if mech is None:
            return None
        return make_client(mech, creds.username, creds.password)
    return hook


def pre_jail_init(ctx) -> None:
    """With root's privileges still: read the client's TLS certificate and
    key files, which may be root's alone (mode 0600), as Postfix's smtp."""
    from ..io.smtp_tls import hold_client_files

    hold_client_files(ctx.settings, "lmtp" if ctx.service.command == "lmtp" else "smtp")


async def serve(ctx) -> int:
    lmtp = ctx.service.command == "lmtp"
    s = ctx.settings
    prefix = "lmtp" if lmtp else "smtp"
    delivery = SmtpDelivery(s, ctx.log, lmtp=lmtp,
                            router=router_from_settings(s, lmtp=lmtp),
                            tls=tls_hook(s, prefix, ctx.log), sasl=sasl_hook(s, prefix))
    return await serve_agent(ctx, delivery.deliver)

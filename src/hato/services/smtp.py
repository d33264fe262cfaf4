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
results), STARTTLS per ``smtp_tls_security_level``.

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
smtp_tls_security_level, inet_protocols, hato_dns_servers — and their
``lmtp_`` forms for lmtp.
"""

from __future__ import annotations

import ssl

from ..io.agent import serve_agent
from ..io.smtp_delivery import SmtpDelivery
from ..io.smtp_route import router_from_settings


def simple_tls(settings, prefix: str):
    """STARTTLS by ``{smtp,lmtp}_tls_security_level``: none, or may and
    encrypt without certificate checks (opportunistic and mandatory
    encryption, as Postfix's levels of those names)."""
    level = settings.str(f"{prefix}_tls_security_level").strip().lower()
    if level not in ("may", "encrypt"):
        return None
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2

    def policy(cand, nexthop):
        return (level, ctx, None)
    return policy


async def serve(ctx) -> int:
    lmtp = ctx.service.command == "lmtp"
    s = ctx.settings
    prefix = "lmtp" if lmtp else "smtp"
    delivery = SmtpDelivery(s, ctx.log, lmtp=lmtp,
                            router=router_from_settings(s, lmtp=lmtp),
                            tls=simple_tls(s, prefix))
    return await serve_agent(ctx, delivery.deliver)

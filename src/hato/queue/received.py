"""The ``Received:`` header smtpd gives each message, in Postfix's words
(smtpd.c): ::

    Received: from HELO (NAME [ADDR])
            by MYHOSTNAME (MAIL_NAME) with PROTOCOL id QID
            for <RCPT>; DATE

``for <RCPT>`` appears only when the message has exactly one recipient;
otherwise the ``by`` line ends in ``;`` and the date gets a line of its own.
A client that sent no HELO is named by its host name. With
``smtpd_client_port_logging`` the port follows the address; a TLS session
adds Postfix's ``(using TLSv1.3 with cipher ...)`` lines (*tls*, without
the outer parentheses), ``smtpd_sasl_authenticated_header`` an
``(Authenticated sender: user)`` line.
"""

from __future__ import annotations

from datetime import tzinfo

from ..policy.address import quote_822_local
from .cleanup_defs import mail_date


def smtpd_received(*, helo: str | None, name: str, addr: str, port: str = "",
                   myhostname: str, mail_name: str, protocol: str, queue_id: str,
                   recipients: list[str], when: float, tls: str | None = None,
                   auth_sender: str | None = None, tz: tzinfo | None = None) -> str:
    """The header's lines joined by ``\\n`` (continuation lines begin with a tab)."""
    rfc_addr = f"IPv6:{addr}" if ":" in addr and not addr.startswith("IPv6:") else addr
    where = f"{rfc_addr}]:{port}" if port else f"{rfc_addr}]"
    lines = [f"Received: from {helo or name} ({name} [{where})"]
    if tls:
        lines.append(f"\t({tls})")
    if auth_sender:
        lines.append(f"\t(Authenticated sender: {auth_sender})")
    date = mail_date(when, tz)
    if len(recipients) == 1:
        lines.append(f"\tby {myhostname} ({mail_name}) with {protocol} id {queue_id}")
        lines.append(f"\tfor <{quote_822_local(recipients[0])}>; {date}")
    else:
        lines.append(f"\tby {myhostname} ({mail_name}) with {protocol} id {queue_id};")
        lines.append(f"\t{date}")
    return "\n".join(lines)

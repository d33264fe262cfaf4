"""smtpd: the SMTP server, as smtpd(8).

Each worker process serves many sessions on one asyncio loop; master starts
about one worker per core for an inet service and gives each its share of
the entry's ``maxproc`` (the number of concurrent sessions the service may
hold), in ``HATO_SESSION_LIMIT``. A worker that is full stops accepting
until a session ends; the others go on.

Stress mode: the worker reports its number of sessions in progress to
master, which switches every worker of the service to stress mode when
their sum reaches maxproc. Then the parameters written as
``${stress?{X}:{Y}}`` take their stress values — smtpd_timeout (10s),
smtpd_hard_error_limit (1), smtpd_junk_command_limit (1),
smtpd_per_request_deadline (yes), smtpd_starttls_timeout (10s) — for new
sessions and for those in progress: an idle client already waiting longer
than the stress smtpd_timeout gets ``421 4.4.2 HOST Error: timeout
exceeded`` at once. See docs/smtpd.md, "Stress mode".

A session is driven by the sans-IO core :mod:`hato.proto.smtpd`: this
module reads the socket, feeds the core, asks the restrictions
(:mod:`hato.policy.smtpd_check`) about each command the core parsed, and
streams the message content through cleanup into incoming/
(:class:`hato.queue.inject.Injection`). The reply ``250 2.0.0 Ok: queued
as QID`` is sent only after the queue file is committed (fsynced); then
qmgr is woken through ``public/qmgr``. The queue file is created at the
first accepted recipient, as Postfix does
(``smtpd_delay_open_until_valid_rcpt``).

Logging, as Postfix's: ``connect from host[addr]``, ``QID: client=host[addr]``,
``NOQUEUE: reject: RCPT from host[addr]: 554 5.7.1 ...; from=<s> to=<r>
proto=ESMTP helo=<h>``, ``lost connection after DATA from host[addr]``,
``timeout after RCPT from host[addr]``, ``too many errors after ...``,
``disconnect from host[addr] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5``.

Parameters: smtpd_banner, myhostname, mail_name, smtpd_timeout,
smtpd_per_record_deadline, smtpd_error_sleep_time, smtpd_soft_error_limit,
smtpd_hard_error_limit, smtpd_junk_command_limit, smtpd_recipient_limit,
smtpd_recipient_overshoot_limit, message_size_limit, line_length_limit,
smtpd_forbid_bare_newline (+ _exclusions, _reject_code),
smtpd_forbid_unauth_pipelining, disable_vrfy_command, smtpd_helo_required,
smtputf8_enable, strict_rfc821_envelopes, smtpd_discard_ehlo_keywords,
smtpd_discard_ehlo_keyword_address_maps, smtpd_peername_lookup,
smtpd_client_port_logging, smtpd_authorized_xclient_hosts,
smtpd_authorized_xforward_hosts, local_header_rewrite_clients,
fast_flush_domains, resolve_dequoted_address, every restriction parameter
(see hato.policy.smtpd_check), and everything cleanup reads.

Privileges: started by root, the worker loads its TLS keys and opens its
tables in ``pre_jail_init`` (still root), then runs as mail_owner.
"""

from __future__ import annotations

import asyncio
import os
import time

from ..config.errors import ConfigError
from ..io.dns import Resolver as DnsResolver
from ..io.ipc import notify
from ..io.smtpd_server import SessionServer
from ..proto.attr import Attrs


def pre_jail_init(ctx) -> None:
    """Before the worker drops root's privileges, as Postfix's smtpd does:
    load the TLS keys and certificates and open the lookup tables, so that
    a private key may stay readable by root alone (mode 0600). The
    server, or the ConfigError that stopped it, goes into ctx.prepared."""
    try:
        ctx.prepared = SessionServer(ctx.settings, ctx.log, service=ctx.service,
                                     dns=DnsResolver.from_settings(ctx.settings),
                                     wake_qmgr=_qmgr_waker(ctx.settings.str("queue_directory")))
    except ConfigError as err:
        ctx.prepared = err


async def serve(ctx) -> int:
    if getattr(ctx, "prepared", None) is None:
        pre_jail_init(ctx)
    server = ctx.prepared
    if isinstance(server, ConfigError):
        # As Postfix's smtpd: a fatal line, and master throttles the restarts.
        ctx.log.fatal(str(server))
        return 1
    limit = int(os.environ.get("HATO_SESSION_LIMIT", "0") or 0) or 100
    server.session_limit = limit
    # master counts busy sessions per service (stress mode at maxproc) ...
    server.sessions = _ReportingSet(ctx.status.report_busy)
    # ... and says when stress mode begins and ends.
    normal, stressed = ctx.settings, ctx.stress_settings or ctx.settings
    ctx.status.subscribe(lambda on: server.set_stress(stressed if on else normal))
    loop = asyncio.get_running_loop()
    passed = ctx.service.type == "pass"  # clients handed over by postscreen
    tasks = [loop.create_task(server.accept_loop(sock, ctx.stop, passed=passed))
             for sock in ctx.listeners]
    await ctx.stop.wait()
    for task in tasks:
        task.cancel()
    for sock in ctx.listeners:
        sock.close()
    # Sessions in progress finish (a reload or stop must not drop them),
    # up to smtpd_timeout.
    deadline = time.monotonic() + server.timeout
    while server.sessions and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return 0


class _ReportingSet(set):
    """The worker's sessions in progress (SessionServer.sessions): every
    change goes to ``ctx.status.report_busy``, which sends master one line
    per burst of changes, and only when the number changed."""

    def __init__(self, report):
        super().__init__()
        self._report = report

    def add(self, item) -> None:
        super().add(item)
        self._report(len(self))

    def discard(self, item) -> None:
        super().discard(item)
        self._report(len(self))


def _qmgr_waker(queue_directory: str):
    """A wake-up for qmgr after each queued message; a burst of messages
    within 20 ms shares one, sent at its end."""
    path = os.path.join(queue_directory, "public", "qmgr")
    pending = [False]

    def send() -> None:
        pending[0] = False
        notify(path, Attrs.of(request="wakeup"))

    def wake() -> None:
        if not pending[0]:
            pending[0] = True
            asyncio.get_running_loop().call_later(0.02, send)
    return wake

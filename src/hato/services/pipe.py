"""pipe: delivery to external commands, as pipe(8).

master.cf gives the command after the daemon options, in Postfix's form:

    maildrop unix - n n - - pipe
      flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}

``user=name[:group]`` (required; never root), ``flags=`` (B D F O R X h q
u . >), ``argv=`` (the command and its arguments with ``${sender}``,
``${recipient}``, ``${user}``, ``${extension}``, ``${nexthop}``,
``${size}``, ``${queue_id}``, ``${client_*}``, ``${sasl_*}`` macros),
``size=`` (a size limit), ``eol=`` (line end, default ``\\n``),
``null_sender=`` and ``directory=``. The message is streamed to the
command's standard input; its exit status maps to delivered, deferred or
bounced as Postfix's pipe(8) maps sysexits(3) codes (75 defers, 67 bounces
with 5.1.1, …). The time limit is ``<service>_time_limit`` (by default
``$command_time_limit``).

Requests: qmgr's delivery requests. Parameters: <service>_time_limit,
recipient_delimiter.
"""

from __future__ import annotations

import grp
import os
import pwd

from ..config.errors import ConfigError
from ..config.mastercf import daemon_options
from ..delivery.dsn import DeliveryError
from ..delivery.pipe import expand_pipe_argv, parse_pipe_flags, run_pipe
from ..delivery.request import BOUNCED, DEFERRED, SENT, DeliveryRequest, RcptStatus
from ..io.agent import serve_agent
from ..queue.store import QueueStore

_ATTRS = ("flags", "user", "size", "eol", "null_sender", "directory")


def parse_command(args: list[str]) -> dict[str, object]:
    """pipe(8)'s attributes from the master.cf arguments after the daemon
    options (``argv=`` takes the rest)."""
    attrs: dict[str, object] = {}
    for i, arg in enumerate(args):
        name, sep, value = arg.partition("=")
        if not sep:
            raise ConfigError(f'pipe: bad attribute "{arg}": expected name=value')
        if name == "argv":
            argv = [value, *args[i + 1:]] if value else list(args[i + 1:])
            if not argv:
                raise ConfigError("pipe: empty argv= attribute")
            attrs["argv"] = argv
            return attrs
        if name not in _ATTRS:
            raise ConfigError(f'pipe: unknown attribute "{name}"')
        attrs[name] = value
    raise ConfigError("pipe: missing argv= attribute")


def _eol(text: str) -> bytes:
    return text.encode().decode("unicode_escape").encode("latin-1") if text else b"\n"


class Pipe:
    def __init__(self, ctx):
        s = ctx.settings
        self.s = s
        svc = ctx.service
        _opts, start = daemon_options(svc.args)
        self.attrs = parse_command(svc.args[start:])
        self.flags = parse_pipe_flags(str(self.attrs.get("flags", "")))
        user = str(self.attrs.get("user", ""))
        if not user:
            raise ConfigError(f"service {svc.key}: pipe: missing user= attribute")
        name, _, group = user.partition(":")
        pw = pwd.getpwnam(name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        if group:
            self.gid = grp.getgrnam(group).gr_gid
        if self.uid == 0 or self.gid == 0:
            raise ConfigError(f"service {svc.key}: pipe: user= must not be root or group root")
        if os.geteuid() != 0:
            self.uid = self.gid = None  # type: ignore[assignment]
        try:
            self.timeout = float(s.time(f"{svc.name}_time_limit"))
        except ConfigError:
            self.timeout = float(s.time("command_time_limit"))
        self.size_limit = int(str(self.attrs.get("size", "0")) or 0)
        self.eol = _eol(str(self.attrs.get("eol", "")))
        self.null_sender = str(self.attrs.get("null_sender", "MAILER-DAEMON"))
        self.directory = str(self.attrs.get("directory", "")) or None
        self.delimiter = s.str("recipient_delimiter")
        self.service = svc.name
        self.store = QueueStore.from_settings(s)

    def deliver(self, req: DeliveryRequest, timing: dict) -> list[RcptStatus]:
        def all_(status: str, dsn: str, reason: str) -> list[RcptStatus]:
            return [RcptStatus(r.index, status, dsn, reason, relay=self.service)
                    for r in req.recipients]

        if self.size_limit and req.size > self.size_limit:
            return all_(BOUNCED, "5.2.3", "message too large")
        attrs = req.attributes
        try:
            argv = expand_pipe_argv(
                self.attrs["argv"], sender=req.sender,  # type: ignore[arg-type]
                recipient=[r.address for r in req.recipients],
                original_recipient=[r.orig_address or r.address for r in req.recipients],
                nexthop=req.nexthop, size=req.size, queue_id=req.queue_id,
                recipient_delimiter=self.delimiter, flags=self.flags,
                null_sender=self.null_sender,
                client_address=attrs.get("client_address", ""),
                client_helo=attrs.get("helo_name", ""),
                client_hostname=attrs.get("client_name", ""),
                client_port=attrs.get("client_port", ""),
                client_protocol=attrs.get("protocol_name", ""),
                sasl_method=attrs.get("sasl_method", ""),
                sasl_sender=attrs.get("sasl_sender", ""),
                sasl_username=attrs.get("sasl_username", ""), service=self.service)
            qf = self.store.open(req.queue_name, req.queue_id, writable=False)
            try:
                first = req.recipients[0]
                run_pipe(argv, qf.content(), uid=self.uid, gid=self.gid,
                         timeout=self.timeout, cwd=self.directory or "/", flags=self.flags,
                         sender=req.sender, original_recipient=first.orig_address,
                         delivered_to=first.address, null_sender=self.null_sender,
                         eol=self.eol)
            finally:
                qf.close()
        except DeliveryError as err:
            return all_(DEFERRED if err.temporary else BOUNCED, err.dsn, err.text)
        return all_(SENT, "2.0.0", f"delivered via {self.service} service")


async def serve(ctx) -> int:
    return await serve_agent(ctx, Pipe(ctx).deliver)

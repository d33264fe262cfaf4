"""The milter client: a chain of Sendmail 8 milters driven over asyncio, as
Postfix's milter(3)/milter8(3) drive them.

One :class:`MilterChain` per SMTP session (smtpd) or per message (pickup /
sendmail through cleanup), built from the parsed ``smtpd_milters`` /
``non_smtpd_milters`` value (:func:`hato.proto.milter.parse_milter_list`)
and :class:`MilterSettings`.  Every event method returns a
:class:`~hato.proto.milter.Verdict`.

Semantics (Postfix's, see PROTOCOLS.md §3.4):

* Milters are asked in order; the first one whose answer is not "continue"
  decides the event and the milters after it are not asked.  A milter's
  *accept* is "continue" for the chain: that milter is done for the
  connection (accept at connect/HELO: its socket is closed) or for the
  message (later: no RCPT/DATA/content for it until :meth:`abort`).
* :meth:`connect` opens the connections lazily, one milter at a time:
  connect (``connect_timeout``), SMFIC_OPTNEG (``command_timeout``, as
  Postfix), then the connect event.  A milter after one that rejected the
  connection is never contacted.
* A milter that is down, slow, closes, or talks garbage logs Postfix's
  warning and takes its default action for the rest of the session:
  ``accept`` → it is skipped; ``tempfail`` → ``451 4.7.1 Service
  unavailable - try again later``; ``reject`` → ``550 5.5.0 Service
  unavailable``; ``quarantine`` → the message goes to hold.  A
  configuration problem (bad ``protocol``, endpoint, malformed reply)
  gives ``451 4.3.5 Server configuration problem - try again later``
  unless the action is accept (or quarantine).
* Timeouts: each reply packet must arrive within ``command_timeout``
  (``content_timeout`` for header, body and end-of-message), so every
  ``p`` (progress) restarts the clock; every write is bounded the same way.

Macros: each event sends a ``D`` packet first (even an empty one), with the
names of the milter's own SETSYMLIST list for that stage if it sent one,
else the configured list, in list order, each name as written in the list
(``j``, ``{daemon_name}``) and only those that have a value.  The *macros*
argument of the event methods is a callable ``lookup(name) -> str | None``
(or a mapping), asked with the brace form (``{j}``, ``{_}``,
``{daemon_name}``); ``milter_macro_defaults`` fills in what it lacks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ..proto import milter as mp
from ..proto.milter import MilterConfigError, MilterProtocolError, MilterSpec, Verdict
from ..proto.milter_list import canonical_macro, macro_defaults, split_macro_names

_log = logging.getLogger("hato.milter")

# milter8 states
ERROR, CLOSED, READY, ENVELOPE, MESSAGE, ACCEPT_CON, ACCEPT_MSG, REJECT_CON = range(1, 9)

MacroLookup = Callable[[str], "str | None"] | Mapping[str, str] | None


@dataclass(frozen=True)
class MilterSettings:
    """The global ``milter_*`` parameters (times in seconds; macro lists as
    main.cf writes them)."""
    connect_timeout: float = 30
    command_timeout: float = 30
    content_timeout: float = 300
    default_action: str = "tempfail"
    protocol: str = "6"
    connect_macros: str = "j {daemon_name} {daemon_addr} v _"
    helo_macros: str = "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}"
    mail_macros: str = "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}"
    rcpt_macros: str = "i {rcpt_addr} {rcpt_host} {rcpt_mailer}"
    data_macros: str = "i"
    eoh_macros: str = "i"
    eod_macros: str = "i"
    unknown_macros: str = ""
    macro_defaults: str = ""
    soft_bounce: bool = False
    #: relative unix: paths are relative to this (Postfix: the queue directory)
    base_dir: str | None = None

    @classmethod
    def from_values(cls, *, milter_connect_timeout=30, milter_command_timeout=30,
                    milter_content_timeout=300, milter_default_action="tempfail",
                    milter_protocol="6", milter_connect_macros=None, milter_helo_macros=None,
                    milter_mail_macros=None, milter_rcpt_macros=None, milter_data_macros=None,
                    milter_end_of_header_macros=None, milter_end_of_data_macros=None,
                    milter_unknown_command_macros=None, milter_macro_defaults="",
                    soft_bounce=False, queue_directory=None) -> "MilterSettings":
        """From parameter values by their Postfix names (times in seconds)."""
        d = cls()
        pick = (lambda v, dflt: dflt if v is None else v)
        return cls(
            float(milter_connect_timeout), float(milter_command_timeout),
            float(milter_content_timeout), milter_default_action, milter_protocol,
            pick(milter_connect_macros, d.connect_macros), pick(milter_helo_macros, d.helo_macros),
            pick(milter_mail_macros, d.mail_macros), pick(milter_rcpt_macros, d.rcpt_macros),
            pick(milter_data_macros, d.data_macros), pick(milter_end_of_header_macros, d.eoh_macros),
            pick(milter_end_of_data_macros, d.eod_macros),
            pick(milter_unknown_command_macros, d.unknown_macros), milter_macro_defaults or "",
            bool(soft_bounce), queue_directory)

    @classmethod
    def from_settings(cls, settings) -> "MilterSettings":
        names = ("milter_connect_macros", "milter_helo_macros", "milter_mail_macros",
                 "milter_rcpt_macros", "milter_data_macros", "milter_end_of_header_macros",
                 "milter_end_of_data_macros", "milter_unknown_command_macros",
                 "milter_macro_defaults", "milter_default_action", "milter_protocol")
        return cls.from_values(
            milter_connect_timeout=settings.time("milter_connect_timeout"),
            milter_command_timeout=settings.time("milter_command_timeout"),
            milter_content_timeout=settings.time("milter_content_timeout"),
            soft_bounce=settings.bool("soft_bounce"),
            queue_directory=settings.str("queue_directory"),
            **{n: settings.str(n) for n in names})

    def stage_list(self, stage: str) -> str:
        return getattr(self, stage + "_macros")


class MessageSource:
    """What :meth:`MilterChain.message` reads (a protocol; implement it):

    * ``headers()`` → logical headers in order, each ``"Name: value"`` (str,
      continuation lines joined with ``"\\n"``, no final newline) or a tuple
      ``(text, added_by_mta)``: headers the MTA generated itself (its own
      Received: header, cleanup's Message-ID:/Date:/From: …) are not shown to
      milters, as Postfix's auto_hdrs.
    * ``body_lines()`` → the body lines after the empty line that ends the
      headers, bytes without line terminators.
    * ``apply(milter_name, edits)`` → apply one milter's modification
      requests before the next milter reads the message; raise to say they
      could not be applied (an exception's ``smtp_reply`` attribute, if any,
      is the reply; else ``451 4.3.0 Queue file write error``).
    """

    def headers(self) -> Iterable[str | tuple[str, bool]]:  # pragma: no cover
        raise NotImplementedError

    def body_lines(self) -> Iterable[bytes]:  # pragma: no cover
        raise NotImplementedError

    def apply(self, milter_name: str, edits: list[mp.Edit]) -> None:  # pragma: no cover
        raise NotImplementedError


def _strerror(exc: BaseException) -> str:
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "Connection timed out"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "Success"        # EOF: read() returned 0, errno unchanged
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc) or type(exc).__name__


_FAMILIES = {"4": "4", "6": "6", "L": "L", "U": "U", "inet": "4", "inet6": "6",
             "unix": "L", socket.AF_INET: "4", socket.AF_INET6: "6", socket.AF_UNIX: "L"}


@dataclass
class _Macros:
    settings: MilterSettings
    defaults: dict[str, str] = field(default_factory=dict)

    def pairs(self, names: str, lookup: MacroLookup) -> list[tuple[str, str]]:
        out = []
        for name in split_macro_names(names):
            cname = canonical_macro(name)
            if lookup is None:
                value = None
            elif callable(lookup):
                value = lookup(cname)
            else:
                value = lookup.get(cname)
            if value is None:
                value = self.defaults.get(cname)
            if value is not None:
                out.append((name, value))
        return out


class Milter:
    """One milter8 client (Postfix's MILTER8), its state and socket."""

    def __init__(self, spec: MilterSpec, settings: MilterSettings, log):
        self.spec = spec
        self.name = spec.name
        self.conn_timeout = spec.connect_timeout or settings.connect_timeout
        self.cmd_timeout = spec.command_timeout or settings.command_timeout
        self.msg_timeout = spec.content_timeout or settings.content_timeout
        self.protocol = spec.protocol or settings.protocol
        self.def_action = spec.default_action or settings.default_action
        self.settings = settings
        self.log = log
        self.state = CLOSED
        self.def_reply: str | None = None
        self.version = self.actions = self.events = self.np_mask = 0
        self.macros: dict[str, str] = {}
        self.skip_event_type: str | None = None
        self.timeout = self.cmd_timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    # --- errors -------------------------------------------------------------
    def warn(self, text: str) -> None:
        for line in text.split("\n"):
            self.log.warning(line.replace("{name}", self.name))

    def _drop(self) -> None:
        if self._writer is not None:
            # abort(): closed at once, whatever is unsent (any event loop;
            # uvloop's transport sockets cannot be shut down directly)
            self._writer.transport.abort()
        self._reader = self._writer = None

    def _set_error(self, reply: str | None) -> str | None:
        self._drop()
        self.def_reply = reply
        self.state = ERROR
        return reply

    def conf_error(self) -> str | None:
        action = self.def_action.lower()
        return self._set_error(None if action == "accept" else mp.REPLY_DEF_QUARANTINE
                               if action == "quarantine" else mp.REPLY_CONF_ERROR)

    def comm_error(self) -> str | None:
        action = self.def_action.lower()
        replies = {"accept": None, "reject": mp.REPLY_DEF_REJECT,
                   "tempfail": mp.REPLY_DEF_TEMPFAIL, "quarantine": mp.REPLY_DEF_QUARANTINE}
        if action not in replies:
            self.warn(f"milter {{name}}: unrecognized default action: {self.def_action}")
            return self._set_error(mp.REPLY_CONF_ERROR)
        return self._set_error(replies[action])

    def close_stream(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
        self.state = CLOSED

    @property
    def active(self) -> bool:
        return self._writer is not None and self.state in (ENVELOPE, READY)

    @property
    def leadspc(self) -> bool:
        return bool(self.events & mp.SMFIP_HDR_LEADSPC)

    @property
    def wants_rejected_rcpt(self) -> bool:
        return bool(self.events & mp.SMFIP_RCPT_REJ)

    # --- I/O --------------------------------------------------------------------
    async def _write(self, data: bytes) -> bool:
        try:
            assert self._writer is not None
            self._writer.write(data)
            await asyncio.wait_for(self._writer.drain(), self.timeout)
            return True
        except (OSError, asyncio.TimeoutError, AssertionError) as e:
            self.warn(f"milter {{name}}: error writing command: {_strerror(e)}")
            self.comm_error()
            return False

    async def _read(self, event: str) -> mp.Packet | None:
        reader = self._reader
        try:
            assert reader is not None
            head = await asyncio.wait_for(reader.readexactly(4), self.timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, AssertionError) as e:
            self.warn(f"milter {{name}}: can't read {mp.SMFIC_NAMES.get(event, '(unknown MTA event)')}"
                      f" reply packet header: {_strerror(e)}")
            self.comm_error()
            return None
        length = int.from_bytes(head, "big")
        try:
            mp.check_length(length)
        except MilterProtocolError as e:
            self.warn(str(e))
            self.comm_error()
            return None
        try:
            cmd = await asyncio.wait_for(reader.readexactly(1), self.timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self.warn(f"milter {{name}}: EOF while reading command code: {_strerror(e)}")
            self.comm_error()
            return None
        try:
            data = await asyncio.wait_for(reader.readexactly(length - 1), self.timeout)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
            self.warn(f"milter {{name}}: EOF while reading data: {_strerror(e)}")
            self.comm_error()
            return None
        return mp.Packet(chr(cmd[0]), data)

    # --- connect and negotiate (milter8_connect) ----------------------------------
    async def open(self) -> None:
        if self._writer is not None:
            return
        try:
            my_version, my_events = mp.parse_protocol(self.protocol)
            transport, where, port = self.spec.endpoint()
        except MilterConfigError as e:
            self.warn(str(e))
            self.conf_error()
            return
        self.np_mask = mp.SMFIP_NOSEND_MASK & ~my_events
        try:
            if transport == "unix":
                path = where
                if not os.path.isabs(path) and self.settings.base_dir:
                    path = os.path.join(self.settings.base_dir, path)
                conn = asyncio.open_unix_connection(path)
            else:
                conn = asyncio.open_connection(where.strip("[]"), port)
            self._reader, self._writer = await asyncio.wait_for(conn, self.conn_timeout)
        except (OSError, asyncio.TimeoutError) as e:
            self.warn(f"connect to Milter service {{name}}: {_strerror(e)}")
            self.comm_error()
            return
        self.timeout = self.cmd_timeout
        if not await self._write(mp.encode_optneg(my_version, mp.MTA_ACTIONS, my_events)):
            self.warn("milter {name}: write error in initial handshake")
            return
        packet = await self._read(mp.SMFIC_OPTNEG)
        if packet is None:
            self.warn("milter {name}: read error in initial handshake")
            return
        try:
            neg = mp.negotiate(my_version, my_events, packet.cmd, packet.data)
        except MilterProtocolError as e:
            self.warn(str(e))
            self.comm_error()
            return
        for text in neg.warnings:
            self.warn(text)
        self.version, self.actions, self.events = neg.version, neg.actions, neg.events
        self.np_mask |= neg.np_mask
        self.macros = neg.macros
        self.state = READY
        self.def_reply = None
        self.skip_event_type = None

    # --- one event (milter8_event) ---------------------------------------------
    async def event(self, event: str, macros: list[tuple[str, str]] | None, packet: bytes,
                    skip_reply: bool = False) -> tuple[str | None, list[mp.Edit]]:
        if self._writer is None or self.def_reply is not None:
            self.warn(f"milter8_event: attempt to send event {mp.SMFIC_NAMES.get(event)}"
                      f" to milter {{name}} after error")
            return self.def_reply, []
        no_flag, _ = mp.EVENT_FLAGS[event]
        if no_flag & self.np_mask:
            return self.def_reply, []
        if self.skip_event_type is not None:
            if event == self.skip_event_type:
                return self.def_reply, []
            self.skip_event_type = None
        if macros is not None and not await self._write(mp.encode_macros(event, macros)):
            return self.def_reply, []
        if no_flag & self.events:
            return self.def_reply, []
        if not await self._write(packet):
            return self.def_reply, []
        if skip_reply:
            return self.def_reply, []
        replies = mp.EventReplies(event, leadspc=self.leadspc, event_len=len(packet) - 5,
                                  soft_bounce=self.settings.soft_bounce)
        while True:
            pkt = await self._read(event)
            if pkt is None:
                return self.def_reply, replies.edits
            outcome = replies.receive(pkt.cmd, pkt.data)
            if outcome is not None:
                break
        return self._decide(event, outcome), outcome.edits

    def _decide(self, event: str, out: mp.Outcome) -> str | None:
        in_connect = event in (mp.SMFIC_CONNECT, mp.SMFIC_HELO)
        for text in out.warnings:
            self.warn(text)
        if out.quarantine is not None:
            self.def_reply = out.quarantine
        kind = out.kind
        if kind == "comm_error":
            return self.comm_error()
        if kind == "conf_error":
            return self.conf_error()
        if kind in ("continue", "discard_refused"):
            return self.def_reply
        if kind == "skip":
            self.skip_event_type = event
            return self.def_reply
        if kind == "accept":
            if in_connect:
                self.close_stream()
                self.state = ACCEPT_CON
            else:
                self.state = ACCEPT_MSG
            return self.def_reply
        if kind == "discard":
            self.state = ACCEPT_MSG
            return "D"
        if kind == "shutdown":
            self.close_stream()
            self.state = REJECT_CON
            self.def_reply = "S"
            return "S"
        text = {"reject": mp.REPLY_REJECT, "tempfail": mp.REPLY_TEMPFAIL}.get(kind, out.text)
        if in_connect:
            self.close_stream()
            self.state = REJECT_CON
            self.def_reply = text
        return text

    # --- the events -------------------------------------------------------------
    async def conn_event(self, hostname: str, addr: str, port, family,
                         macros: list[tuple[str, str]]) -> str | None:
        if self.state != READY:
            return self.def_reply
        if port is None:
            nport = 0
        elif str(port).isdigit() and int(port) <= 65535:
            nport = int(port)
        else:
            self.warn(f"milter {{name}}: bad client port number {port}")
            nport = 0
        self.state = ENVELOPE
        sm_name = hostname if hostname != "unknown" or addr == "unknown" else f"[{addr}]"
        fam = _FAMILIES.get(family, "U")
        if fam == "L":
            nport = 0
        packet = mp.encode_connect(sm_name, fam, nport, addr)
        resp, _ = await self.event(mp.SMFIC_CONNECT, macros, packet,
                                   bool(self.events & mp.SMFIP_NR_CONN))
        return resp

    def _simple_state(self, allow_accept_msg: bool) -> bool:
        return self.state == ENVELOPE or (allow_accept_msg and self.state == ACCEPT_MSG)

    async def simple_event(self, event: str, macros, packet: bytes, nr_flag: int,
                           allow_accept_msg: bool = False) -> str | None:
        if not self._simple_state(allow_accept_msg):
            return self.def_reply
        resp, _ = await self.event(event, macros, packet, bool(self.events & nr_flag))
        return resp

    async def abort(self) -> None:
        if self.state in (ENVELOPE, MESSAGE, ACCEPT_MSG):
            await self._write(mp.encode_abort())
            if self.state != ERROR:
                self.state = ENVELOPE

    async def disc_event(self) -> None:
        if self.state in (CLOSED, READY):
            return
        if self.state in (ENVELOPE, MESSAGE, ACCEPT_MSG) and self._writer is not None:
            try:
                self._writer.write(mp.encode_quit())
                await asyncio.wait_for(self._writer.drain(), self.timeout)
            except (OSError, asyncio.TimeoutError):
                pass
        self.close_stream()
        self.def_reply = None

    # --- message content (milter8_message) ------------------------------------------
    async def message(self, source, eoh: list[tuple[str, str]],
                      eod: list[tuple[str, str]]) -> tuple[str | None, list[mp.Edit]]:
        if self.state != ENVELOPE:
            return self.def_reply, []
        self.state = MESSAGE
        self.timeout = self.msg_timeout
        resp: str | None = None
        edits: list[mp.Edit] = []

        def done() -> bool:
            return self.state != MESSAGE or resp is not None

        try:
            if not self.events & mp.SMFIP_NOHDRS:
                nr_hdr = bool(self.events & mp.SMFIP_NOHREPL)
                for item in source.headers():
                    text, auto = item if isinstance(item, tuple) else (item, False)
                    if auto:
                        continue
                    name, value = mp.split_header(text, self.leadspc)
                    resp, _ = await self.event(mp.SMFIC_HEADER, eoh,
                                               mp.encode_header(name, value), nr_hdr)
                    if done():
                        break
            if not done() and not self.events & mp.SMFIP_NOEOH:
                resp, _ = await self.event(mp.SMFIC_EOH, eoh, mp.encode_eoh(),
                                           bool(self.events & mp.SMFIP_NR_EOH))
            if not done() and not self.events & mp.SMFIP_NOBODY:
                nr_body = bool(self.events & mp.SMFIP_NR_BODY)
                for chunk in mp.body_chunks(source.body_lines()):
                    resp, _ = await self.event(mp.SMFIC_BODY, eod, mp.encode_body(chunk), nr_body)
                    if done():
                        break
            if not done():
                resp, edits = await self.event(mp.SMFIC_BODYEOB, eod, mp.encode_eob())
        finally:
            self.timeout = self.cmd_timeout
            if self.state in (MESSAGE, ACCEPT_MSG):
                self.state = ENVELOPE
        return resp, edits


class MilterChain:
    """The milters of one SMTP session or one non-SMTP message."""

    def __init__(self, milters: str | Sequence[MilterSpec],
                 settings: MilterSettings | None = None, log=None):
        if isinstance(milters, str):
            milters = mp.parse_milter_list(milters)
        self.settings = settings or MilterSettings()
        self.log = log or _log
        self._macros = _Macros(self.settings, macro_defaults(self.settings.macro_defaults))
        self.milters = [Milter(spec, self.settings, self.log) for spec in milters]

    def __len__(self) -> int:
        return len(self.milters)

    def _pairs(self, m: Milter, stage: str, lookup: MacroLookup) -> list[tuple[str, str]]:
        names = m.macros.get(stage) or self.settings.stage_list(stage)
        return self._macros.pairs(names, lookup)

    async def connect(self, hostname: str, addr: str, port: str | int | None = None,
                      family: str | int = "4", macros: MacroLookup = None) -> Verdict:
        """The client connected: *hostname* (``unknown`` when not verified),
        *addr*, *port*, *family* (``4 6 L U`` or socket.AF_*)."""
        resp = None
        for m in self.milters:
            if resp is not None:
                break
            await m.open()
            resp = await m.conn_event(hostname, addr, port, family,
                                      self._pairs(m, "connect", macros))
        return Verdict.from_raw(resp)

    async def helo(self, name: str, macros: MacroLookup = None) -> Verdict:
        return await self._simple(mp.SMFIC_HELO, "helo", macros, mp.encode_helo(name),
                                  mp.SMFIP_NR_HELO, allow_accept_msg=True)

    async def mail(self, args: list[str], macros: MacroLookup = None) -> Verdict:
        """*args*: ``["<sender>", "SIZE=123", ...]`` as the client wrote them."""
        return await self._simple(mp.SMFIC_MAIL, "mail", macros, mp.encode_mail(args),
                                  mp.SMFIP_NR_MAIL)

    async def rcpt(self, args: list[str], macros: MacroLookup = None,
                   rejected: bool = False) -> Verdict:
        """*rejected*: the MTA already rejected this recipient; only milters
        that asked for rejected recipients (SMFIP_RCPT_REJ) see it."""
        return await self._simple(mp.SMFIC_RCPT, "rcpt", macros, mp.encode_rcpt(args),
                                  mp.SMFIP_NR_RCPT, rejected=rejected)

    async def data(self, macros: MacroLookup = None) -> Verdict:
        return await self._simple(mp.SMFIC_DATA, "data", macros, mp.encode_data(),
                                  mp.SMFIP_NR_DATA)

    async def unknown(self, command_line: str, macros: MacroLookup = None) -> Verdict:
        return await self._simple(mp.SMFIC_UNKNOWN, "unknown", macros,
                                  mp.encode_unknown(command_line), mp.SMFIP_NR_UNKN)

    async def _simple(self, event: str, stage: str, lookup: MacroLookup, packet: bytes,
                      nr_flag: int, allow_accept_msg: bool = False,
                      rejected: bool = False) -> Verdict:
        resp = None
        for m in self.milters:
            if resp is not None:
                break
            if rejected and not m.wants_rejected_rcpt:
                continue
            if m.state in (CLOSED, READY):
                continue
            pairs = self._pairs(m, stage, lookup) if m._simple_state(allow_accept_msg) else None
            resp = await m.simple_event(event, pairs, packet, nr_flag, allow_accept_msg)
        return Verdict.from_raw(resp)

    def other(self) -> Verdict:
        """The standing reply for commands without their own event (AUTH,
        STARTTLS, ...): Postfix's milter_other_event()."""
        for m in self.milters:
            if m.def_reply is not None:
                return Verdict.from_raw(m.def_reply)
        return Verdict("continue")

    async def message(self, source, eoh_macros: MacroLookup = None,
                      eod_macros: MacroLookup = None) -> Verdict:
        """Send the message to each milter in turn; after each one, its
        modification requests go to ``source.apply(name, edits)`` so that
        the next milter sees the changed message.  *eod_macros* defaults to
        *eoh_macros*."""
        if eod_macros is None:
            eod_macros = eoh_macros
        resp: str | None = None
        for m in self.milters:
            if resp is not None:
                break
            if not m.active:
                # smtpd hands only active milters to cleanup; one in error
                # (or that rejected the connection) answers its standing reply
                if m.state in (ERROR, REJECT_CON):
                    resp = m.def_reply
                continue
            saved, m.def_reply = m.def_reply, None
            resp, edits = await m.message(source, self._pairs(m, "eoh", eoh_macros),
                                          self._pairs(m, "eod", eod_macros))
            if edits:
                try:
                    source.apply(m.name, edits)
                except Exception as e:  # noqa: BLE001 - any failure is "could not apply"
                    edit_resp = getattr(e, "smtp_reply", None) or mp.REPLY_QUEUE_WRITE
                    if resp is None or resp[0] not in "DS4":
                        resp = edit_resp
            if m.state != ERROR:
                m.def_reply = saved
        return Verdict.from_raw(resp)

    async def abort(self) -> None:
        """End the mail transaction (RSET, HELO after MAIL, after the message)."""
        for m in self.milters:
            await m.abort()

    async def quit(self) -> None:
        """The client left: QUIT to every milter still talking, then close."""
        for m in self.milters:
            await m.disc_event()

    async def close(self) -> None:
        await self.quit()
        for m in self.milters:
            m._drop()

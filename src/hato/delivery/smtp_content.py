"""What the smtp and lmtp clients do to a message's content on its way out,
as Postfix's smtp client does (smtp_proto.c with header_body_checks.c):

* ``smtp_header_checks`` (primary headers; the primary block's MIME
  headers go to the next table, as in cleanup), ``smtp_mime_header_checks``
  (MIME part headers), ``smtp_nested_header_checks`` (headers of attached
  messages) and ``smtp_body_checks`` (body lines, up to
  body_checks_size_limit) — ``lmtp_*`` for lmtp. Only the actions that
  change neither the delivery time nor the destination exist here:
  ``WARN``, ``INFO``, ``REPLACE``, ``PREPEND``, ``STRIP`` (logged) and
  ``IGNORE`` (not logged) drop, ``DUNNO`` and ``OK`` do nothing; any other
  gets Postfix's ``unsupported command in smtp_header_checks map: ...``
  warning and the line goes out as it was. A logged action reads, as
  Postfix's::

      QID: warning: header Subject: hello (the first 60 bytes): the text

* then ``smtp_generic_maps`` in the primary header block
  (:mod:`hato.delivery.generic`).

A table that cannot answer stops the transaction: the recipients are
deferred (4.3.0) and the message is tried again later.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ..config.settings import Settings
from ..policy.headerchecks import BODY, HEADER, HeaderChecks, HeaderClass, parse_action
from ..queue import records as R
from ..queue.cleanup_defs import OPT_MIME, find_header_opts, header_table
from ..queue.mime import MimeState
from ..tables.base import TableRetry
from .generic import GenericMaps

#: what the clients accept (header_body_checks.c hbc_action())
_LOGGED = {"WARN": "warning", "INFO": "info", "REPLACE": "replace", "PREPEND": "prepend",
           "STRIP": "strip"}
_QUIET = ("IGNORE", "DUNNO", "OK")


class ContentCheckError(Exception):
    """A check table could not answer: the transaction is deferred."""

    def __init__(self, text: str):
        super().__init__(text)
        self.text = text


class OutboundContent:
    """The content pass of one client (``smtp`` or ``lmtp``)."""

    def __init__(self, settings: Settings, prefix: str, *, generic: GenericMaps | None,
                 log_info: Callable[[str], None], log_warning: Callable[[str], None]):
        self.prefix = prefix
        checks = HeaderChecks(settings, prefix=f"{prefix}_")
        self.checks = checks if (checks.any_header_checks
                                 or checks.body_checks is not None) else None
        self.generic = generic
        self.headers = header_table(())
        self.info = log_info
        self.warning = log_warning
        # disable_mime_input_processing: one header block, then body (as
        # Postfix's smtp client, which passes it to its MIME parser too)
        self.limits = dict(disable=settings.bool("disable_mime_input_processing"),
                           header_limit=settings.int("header_size_limit"),
                           max_depth=settings.int("mime_nesting_limit"),
                           bound_len=settings.int("mime_boundary_length_limit"))

    @property
    def needed(self) -> bool:
        """Whether any of this is configured (else the content goes out as
        it is, without this pass)."""
        return self.checks is not None or self.generic is not None

    def content(self, chunks: Iterable[bytes], queue_id: str) -> Iterator[bytes]:
        """The queue file's content (``\\n`` line ends) as it goes out.
        Raises :class:`ContentCheckError` or the generic maps' LookupDefer
        when a table fails."""
        run = _Run(self, queue_id)
        pending = b""
        for chunk in chunks:
            data = pending + chunk
            nl = data.rfind(b"\n")
            if nl < 0:
                pending = data
                continue
            pending = data[nl + 1:]
            for line in data[:nl].split(b"\n"):
                run.mime.update(R.NORM, line)
            if run.out:
                yield b"".join(run.out)
                run.out.clear()
        if pending:
            run.mime.update(R.CONT, pending)  # a last line without its newline
        run.mime.update(None, b"")
        if run.out:
            yield b"".join(run.out)

    # -- the actions -----------------------------------------------------------------------

    def act(self, queue_id: str, where: str, maps_title: str, value: str, line: str,
            out: list[bytes]) -> str | None:
        """hbc_action(): the line as it goes on (None: dropped)."""
        action = parse_action(value, where, maps_title)
        command = action.command
        if command in _LOGGED or command in _QUIET:
            if action.warning is not None:  # REPLACE/PREPEND without (header) text
                self.warning(action.warning)
                return line
            word = _LOGGED.get(command)
            if word is not None:
                shown = line.encode("utf-8", "surrogateescape")[:60].decode(
                    "utf-8", "surrogateescape")
                text = f": {action.text}" if action.text else ""
                self.info(f"{queue_id}: {word}: {where} {shown}{text}")
            if command == "REPLACE":
                return action.text
            if command == "PREPEND":
                out.append(action.text.encode("utf-8", "surrogateescape") + b"\n")
            if command in ("IGNORE", "STRIP"):
                return None
            return line
        self.warning(f"unsupported command in {maps_title} map: {value}")
        return line


class _Run:
    """One message's pass: the MIME state's owner, collecting output."""

    def __init__(self, owner: OutboundContent, queue_id: str):
        self.owner = owner
        self.queue_id = queue_id
        self.out: list[bytes] = []
        self.mime = MimeState(self, report=0, **owner.limits)

    # mime_state call-backs

    def find_opts(self, text: str):
        return find_header_opts(self.owner.headers, text)

    def mime_error(self, code: int, text: bytes) -> None:
        pass  # nothing is reported here (report=0)

    def header_end(self) -> None:
        pass

    def header(self, klass: HeaderClass, info, text: str) -> None:
        owner = self.owner
        checks = owner.checks
        if checks is not None:
            check_class = HeaderClass.MULTIPART if info is not None and info.flags & OPT_MIME \
                else klass
            maps = checks.tables_for(check_class)
            if maps is not None:
                try:
                    value = maps.get(text)
                except TableRetry as err:
                    owner.warning(f"{self.queue_id}: {owner.prefix} header checks lookup "
                                  f"error")
                    raise ContentCheckError(f"{maps.title} map lookup problem") from err
                if value is not None:
                    result = owner.act(self.queue_id, HEADER, maps.title, value, text, self.out)
                    if result is None:
                        return
                    text = result
        if owner.generic is not None and klass == HeaderClass.PRIMARY:
            text = owner.generic.header(text) or text
        self.out.append(text.encode("utf-8", "surrogateescape") + b"\n")

    def body(self, rec_type: str, data: bytes, offset: int) -> None:
        owner = self.owner
        checks = owner.checks
        if checks is not None and checks.body_checks is not None:
            limit = checks.body_checks_size_limit
            if limit == 0 or offset < limit:
                line = data.decode("utf-8", "surrogateescape")
                try:
                    value = checks.body_checks.get(line)
                except TableRetry as err:
                    owner.warning(f"{self.queue_id}: {owner.prefix} body checks lookup error")
                    raise ContentCheckError(
                        f"{checks.body_checks.title} map lookup problem") from err
                if value is not None:
                    result = owner.act(self.queue_id, BODY, checks.body_checks.title, value,
                                       line, self.out)
                    if result is None:
                        return
                    data = result.encode("utf-8", "surrogateescape")
        self.out.append(data + b"\n" if rec_type == R.NORM else data)


__all__ = ["ContentCheckError", "OutboundContent"]

"""Delivery status: the error every delivery building block raises, and the
RFC 3464 delivery status notifications bounce(8) sends.

:class:`DeliveryError` is how maildir, mbox, pipe and local say "this
recipient was not delivered": a human text (what the log's ``status=...
(text)`` and the DSN show), an RFC 3463 enhanced status code, and whether
the failure is temporary (defer, try again) or permanent (bounce). The
class of the status code and the ``temporary`` flag always agree.

:func:`status_for_errno` is the one place that turns a system error into a
status, after Postfix's ``mbox_dsn()``, with hato's deliberate
differences (see docs/delivery.md):

============================  =================  ======================
errno                         Postfix            hato
============================  =================  ======================
EAGAIN, ESTALE                4.2.0 (defer)      4.2.0 (defer)
ENOSPC                        4.3.0 (defer)      4.3.0 (defer)
EDQUOT, EFBIG                 5.2.2 (bounce)     4.2.2 (defer)
EIO, ENOMEM, ENFILE, EMFILE   the default        4.3.0 (defer)
anything else                 the default        the default
============================  =================  ======================

The default is the caller's: ``"5.2.0"`` for local(8) (the mailbox
location may be under the user's control), ``"4.2.0"`` for virtual(8)
(the administrator controls the location; a mistake is fixed and mail
retried).

:func:`build_dsn` writes the complete notification message (headers and
body, LF line ends) the way Postfix's bounce(8) does: the built-in
templates' wording (Postfix 3.7), ``multipart/report;
report-type=delivery-status`` with a ``text/plain`` notification, a
``message/delivery-status`` part (``Reporting-MTA``, ``X-<mail_name>-
Queue-ID``, ``X-<mail_name>-Sender``, ``Arrival-Date``; per recipient
``Final-Recipient``, ``Original-Recipient``, ``Action``, ``Status``,
``Remote-MTA``, ``Diagnostic-Code``, ``Will-Retry-Until`` for delays), and
the original as ``message/rfc822`` (RET=FULL) or ``text/rfc822-headers``
(RET=HDRS, delay warnings, success notices, postmaster copies, and any
message larger than ``bounce_size_limit``). The original is read from a
stream of byte chunks, and never more of it than the notice will hold.
"""

from __future__ import annotations

import errno as _errno
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

# -- the error -------------------------------------------------------------------------

_DSN_CODE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}\Z")


class DeliveryError(Exception):
    """A recipient was not delivered.

    *text* is the reason as Postfix words it (``maildir delivery failed:
    create maildir file ...: Permission denied``); *dsn* the enhanced
    status (``4.2.0``); *temporary* defaults to the class of *dsn* and must
    agree with it. *diagnostic_type*/*diagnostic_text* fill the DSN's
    ``Diagnostic-Code`` (``x-unix; ...`` for commands); when empty the
    notice uses ``X-<mail_name>; <text>``.
    """

    def __init__(self, text: str, *, dsn: str, temporary: bool | None = None,
                 diagnostic_type: str = "", diagnostic_text: str = ""):
        if not _DSN_CODE.match(dsn) or dsn[0] == "2":
            raise ValueError(f"not a failure status code: {dsn!r}")
        if temporary is None:
            temporary = dsn[0] == "4"
        elif temporary != (dsn[0] == "4"):
            raise ValueError(f"status {dsn} disagrees with temporary={temporary}")
        super().__init__(text)
        self.text = text
        self.dsn = dsn
        self.temporary = temporary
        self.diagnostic_type = diagnostic_type
        self.diagnostic_text = diagnostic_text

    @property
    def action(self) -> str:
        """What the queue does with the recipient: ``deferred`` or ``bounced``."""
        return "deferred" if self.temporary else "bounced"

    def __repr__(self) -> str:
        return f"DeliveryError({self.text!r}, dsn={self.dsn!r})"


#: errno values that always mean "try again later", with their status.
_ERRNO_STATUS: dict[int, str] = {
    _errno.EAGAIN: "4.2.0",
    _errno.ESTALE: "4.2.0",
    _errno.ENOSPC: "4.3.0",
    _errno.EDQUOT: "4.2.2",
    _errno.EFBIG: "4.2.2",
    _errno.EIO: "4.3.0",
    _errno.ENOMEM: "4.3.0",
    _errno.ENFILE: "4.3.0",
    _errno.EMFILE: "4.3.0",
}


def status_for_errno(err: int | None, default: str) -> str:
    """The enhanced status for a failed file operation (mbox_dsn())."""
    if err is None:
        return default
    return _ERRNO_STATUS.get(err, default)


def error_from_os(exc: OSError, text: str, default: str) -> DeliveryError:
    """A DeliveryError for *exc*: ``text: strerror``, status by errno."""
    reason = exc.strerror or str(exc)
    return DeliveryError(f"{text}: {reason}", dsn=status_for_errno(exc.errno, default))


# -- dates and text helpers ------------------------------------------------------------


def mail_date(when: float) -> str:
    """Postfix's mail_date(): ``Sun,  3 Nov 2024 10:30:41 -0500 (EST)`` in
    local time (the day of month space-padded, as Debian's Postfix 3.7)."""
    lt = time.localtime(when)
    offset = lt.tm_gmtoff // 60 if lt.tm_gmtoff is not None else 0
    sign = "-" if offset < 0 else "+"
    stamp = time.strftime("%a, %e %b %Y %H:%M:%S ", lt)
    return f"{stamp}{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d} ({time.strftime('%Z', lt)})"


def line_wrap(text: str, length: int = 79, indent: int = 4) -> list[str]:
    """Postfix's line_wrap(): break *text* at blanks into lines of at most
    *length* columns where possible; continuation lines are indented by
    *indent* (a negative indent indents the first line instead)."""
    if indent < 0:
        curr_indent, curr_len = -indent, length + indent
    else:
        curr_indent, curr_len = 0, length
    out: list[str] = []
    n = len(text)
    start_line = 0
    word: int | None = 0
    while word is not None:
        next_space = word
        while next_space < n and text[next_space] not in " \t":
            next_space += 1
        if word > start_line and next_space - start_line > curr_len:
            out.append(" " * curr_indent + text[start_line:word].rstrip())
            while word < n and text[word].isspace():
                word += 1
            if start_line == 0:
                curr_indent += indent
                curr_len -= indent
            start_line = word
        word = next_space + 1 if next_space < n else None
    out.append(" " * curr_indent + text[start_line:].rstrip())
    return out


def _printable(text: str) -> str:
    """Mask control characters, as bounce_log_read() does."""
    return "".join("_" if (ord(ch) < 32 or ord(ch) == 127) else ch for ch in text)


def _is_dot_string(local: str, eight_bit_clean: bool) -> bool:
    if not local or local[0] == "." or local[-1] == ".":
        return False
    prev = ""
    for ch in local:
        if ch == "." and prev == ".":
            return False
        if ord(ch) > 127 and not eight_bit_clean:
            return False
        if ch == " " or ord(ch) < 32 or ord(ch) == 127 or ch in '()<>@,;:\\"[]':
            return False
        prev = ch
    return True


def quote_822_local(address: str, *, eight_bit_clean: bool = True) -> str:
    """Postfix's quote_822_local(): the address with its local part made a
    quoted-string when it is not a dot-atom (``a b@x`` → ``"a b"@x``)."""
    start = 0
    if address.startswith("@") and ":" in address:
        start = address.index(":") + 1
    at = address.rfind("@", start)
    end = len(address) if at < 0 else at
    local = address[start:end]
    if _is_dot_string(local, eight_bit_clean):
        return address
    quoted = []
    for ch in local:
        if (ord(ch) > 127 and not eight_bit_clean) or ch in '"\\\r':
            quoted.append("\\")
        quoted.append(ch)
    return address[:start] + '"' + "".join(quoted) + '"' + address[end:]


# -- the notification ------------------------------------------------------------------

Kind = Literal["failure", "delay", "success", "verify"]

#: Postfix 3.7's built-in templates: (subject, postmaster subject, body).
_TEMPLATES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "failure": (
        "Undelivered Mail Returned to Sender",
        "Postmaster Copy: Undelivered Mail",
        (
            "This is the mail system at host $myhostname.",
            "",
            "I'm sorry to have to inform you that your message could not",
            "be delivered to one or more recipients. It's attached below.",
            "",
            "For further assistance, please send mail to postmaster.",
            "",
            "If you do so, please include this problem report. You can",
            "delete your own text from the attached returned message.",
            "",
            "                   The mail system",
        ),
    ),
    "delay": (
        "Delayed Mail (still being retried)",
        "Postmaster Warning: Delayed Mail",
        (
            "This is the mail system at host $myhostname.",
            "",
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            ("Your message could not be delivered for more than "
             "$delay_warning_time_hours hour(s)."),
            "It will be retried until it is $maximal_queue_lifetime_days day(s) old.",
            "",
            "For further assistance, please send mail to postmaster.",
            "",
            "If you do so, please include this problem report. You can",
            "delete your own text from the attached returned message.",
            "",
            "                   The mail system",
        ),
    ),
    "success": (
        "Successful Mail Delivery Report",
        None,
        (
            "This is the mail system at host $myhostname.",
            "",
            "Your message was successfully delivered to the destination(s)",
            "listed below. If the message was delivered to mailbox you will",
            "receive no further notifications. Otherwise you may still receive",
            "notifications of mail delivery errors from other systems.",
            "",
            "                   The mail system",
        ),
    ),
    "verify": (
        "Mail Delivery Status Report",
        None,
        (
            "This is the mail system at host $myhostname.",
            "",
            "Enclosed is the mail delivery report that you requested.",
            "",
            "                   The mail system",
        ),
    ),
}

_DEFAULT_ACTION = {"failure": "failed", "delay": "delayed", "success": "delivered",
                   "verify": "delivered"}
_TYPE_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9-]*)\s*;\s*(.*)\Z", re.DOTALL)


@dataclass(frozen=True)
class DsnRecipient:
    """One recipient of a notification.

    *reason* is the human text (the log's ``status=... (reason)``).
    *diagnostic_type*/*diagnostic_text* give ``Diagnostic-Code: type;
    text`` (``smtp; 550 5.1.1 ...``); without them Postfix writes
    ``X-<mail_name>; <reason>``. *orcpt* is the DSN ORCPT value verbatim
    (``rfc822;a@b``); else *original* becomes ``Original-Recipient:
    rfc822; original``. *remote_mta* is the host name (``Remote-MTA: dns;
    host``). *action* defaults by notice kind (failed, delayed,
    delivered).
    """

    address: str
    status: str
    reason: str
    original: str = ""
    orcpt: str = ""
    action: str = ""
    diagnostic_type: str = ""
    diagnostic_text: str = ""
    remote_mta: str = ""
    remote_mta_type: str = "dns"

    @classmethod
    def from_tuple(cls, item: Sequence[str]) -> DsnRecipient:
        """``(final_recipient, original_recipient, action, status,
        diagnostic_code[, remote_mta])``; a diagnostic code of the form
        ``type; text`` is split, anything else is the reason."""
        final, original, action, status, diagnostic = (list(item) + [""] * 5)[:5]
        remote = item[5] if len(item) > 5 else ""
        dtype = dtext = ""
        reason = diagnostic
        m = _TYPE_PREFIX.match(diagnostic)
        if m:
            dtype, dtext = m.group(1), m.group(2)
            reason = dtext
        rtype = "dns"
        if ";" in remote:
            rtype, _, remote = remote.partition(";")
            rtype, remote = rtype.strip(), remote.strip()
        return cls(address=final, status=status, reason=reason, original=original,
                   action=action, diagnostic_type=dtype, diagnostic_text=dtext,
                   remote_mta=remote, remote_mta_type=rtype)

    @classmethod
    def from_error(cls, address: str, error: DeliveryError, *,
                   original: str = "", orcpt: str = "") -> DsnRecipient:
        return cls(address=address, status=error.dsn, reason=error.text,
                   original=original, orcpt=orcpt,
                   diagnostic_type=error.diagnostic_type,
                   diagnostic_text=error.diagnostic_text)


_HEADER_NAME = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")


def _is_header(line: bytes) -> bool:
    return bool(_HEADER_NAME.match(line))


def _mail_name_atom(mail_name: str) -> str:
    """RFC 1894 diagnostic types are atoms: Postfix transliterates."""
    return "".join("-" if ch in " \t\r\n()<>@,;:\\\".[]" else ch for ch in mail_name)


@dataclass
class _Original:
    lines: list[bytes]
    headers_only: bool
    message_id: str
    eight_bit: bool
    available: bool


def _read_original(chunks: Iterable[bytes] | None, *, headers_only: bool, limit: int,
                   message_size: int | None) -> _Original:
    """Read as much of the original as the notice includes: all of it, or
    its header section. With a size limit and no known size, read up to the
    limit; a message larger than that is returned as headers only."""
    if chunks is None:
        return _Original([], headers_only, "", False, False)
    if limit > 0 and message_size is not None and message_size > limit:
        headers_only = True
    decided = headers_only or (limit <= 0) or (message_size is not None)
    buf = bytearray()
    scan = 0  # start of the first line not yet examined
    header_end: int | None = None  # offset where the header section ends
    saw_any = False
    for chunk in chunks:
        saw_any = True
        buf += chunk
        if header_end is None:
            while True:
                nl = buf.find(b"\n", scan)
                if nl < 0:
                    break
                line = bytes(buf[scan:nl]).rstrip(b"\r")
                if not (line[:1] in (b" ", b"\t") and scan > 0) and not _is_header(line):
                    header_end = scan
                    break
                scan = nl + 1
        if not decided and len(buf) > limit:
            headers_only = decided = True
        if headers_only and header_end is not None:
            break
    if not saw_any:
        return _Original([], headers_only, "", False, True)
    if headers_only:
        if header_end is None:
            # No end of headers seen: the last line may be a header too.
            tail = bytes(buf[scan:]).rstrip(b"\r\n")
            header_end = len(buf) if (tail == b"" or _is_header(tail)
                                      or tail[:1] in (b" ", b"\t")) else scan
        data = bytes(buf[:header_end])
    else:
        data = bytes(buf)
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [ln[:-1] if ln.endswith(b"\r") else ln for ln in lines]
    msgid = ""
    in_headers = True
    for ln in lines:
        if not in_headers:
            break
        if ln[:1] in (b" ", b"\t"):
            continue
        if not _is_header(ln):
            in_headers = False
            continue
        name, _, value = ln.partition(b":")
        if name.strip().lower() == b"message-id":
            v = value.strip().decode("utf-8", "replace")
            if v.startswith("<") and v.endswith(">"):
                msgid = v
    eight_bit = any(b > 0x7F for ln in lines for b in ln)
    return _Original(lines, headers_only, msgid, eight_bit, True)


def _as_epoch(value: float | datetime) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


def build_dsn(kind: Kind = "failure", *,
              queue_id: str,
              arrival_date: float | datetime,
              sender: str,
              recipients: Sequence[DsnRecipient | Sequence[str]],
              myhostname: str,
              reporting_mta: str | None = None,
              mail_name: str = "hato",
              ret: str | None = None,
              envid: str = "",
              original_message_chunks: Iterable[bytes] | None = None,
              message_size: int | None = None,
              postmaster_copy: bool = False,
              to: str | None = None,
              from_address: str | None = None,
              bounce_size_limit: int = 50000,
              smtputf8_enable: bool = True,
              smtputf8_requested: bool = False,
              encoding: str | None = None,
              threaded_bounce: bool = False,
              delay_warning_time: int = 0,
              maximal_queue_lifetime: int = 5 * 86400,
              now: float | None = None,
              date: bool = True,
              message_id: str | None = None) -> bytes:
    """The complete notification message (headers + body, LF line ends).

    *kind*: ``failure`` (a bounce), ``delay`` (a delay warning),
    ``success`` (NOTIFY=SUCCESS), ``verify`` (``sendmail -bv``).
    *sender* is the original envelope sender; the notice goes *to* it
    unless *to* is given (the postmaster for a *postmaster_copy*, which
    has the postmaster subject, ``Auto-Submitted: auto-generated``, no
    boilerplate and the original's headers only, as Postfix's).
    *ret* is the DSN RET (``FULL``/``HDRS``); failures default to FULL;
    delay warnings and postmaster copies always carry headers only,
    success notices unless RET=FULL. A message larger than
    *bounce_size_limit* (Postfix's default 50000; 0 = no limit) is
    returned as headers only; *message_size*, when known, decides that
    without reading. *smtputf8_enable* (Postfix 3.x's default yes) marks
    the notice 8bit and its text utf-8, as Postfix does; *smtputf8_requested*
    (the original asked for SMTPUTF8) selects message/global types.
    *threaded_bounce* adds References/In-Reply-To with the original's
    Message-ID (Postfix's enable_threaded_bounces, default no). *date*
    adds a ``Date:`` header and *message_id* a ``Message-Id:`` (Postfix
    leaves both to cleanup; a message built here may not pass it).
    """
    if kind not in _TEMPLATES:
        raise ValueError(f"unknown notification kind: {kind!r}")
    now = time.time() if now is None else now
    reporting_mta = reporting_mta or myhostname
    rcpts = [r if isinstance(r, DsnRecipient) else DsnRecipient.from_tuple(r)
             for r in recipients]
    subject, pm_subject, body = _TEMPLATES[kind]
    name_atom = _mail_name_atom(mail_name)

    # What of the original goes in: Postfix's bounce_original() choices.
    ret_u = (ret or "").upper()
    if postmaster_copy or kind == "delay":
        headers_only = True
    elif kind == "failure":
        headers_only = ret_u == "HDRS"
    else:
        headers_only = ret_u != "FULL"
    original = _read_original(original_message_chunks, headers_only=headers_only,
                              limit=bounce_size_limit, message_size=message_size)
    headers_only = original.headers_only

    text_8bit = any(ord(ch) > 127 for r in rcpts
                    for ch in r.address + r.original + r.reason) or any(
        ord(ch) > 127 for ch in sender)
    if smtputf8_enable or encoding == "8bit" or original.eight_bit or text_8bit:
        mime_encoding: str | None = "8bit"
    elif encoding in (None, "7bit"):
        mime_encoding = "7bit"
    else:
        mime_encoding = None
    not_7bit = mime_encoding is not None and mime_encoding != "7bit"

    boundary = f"{queue_id}.{int(now)}/{myhostname}"
    out: list[str] = []
    put = out.append

    def put_wrapped(text: str) -> None:
        out.extend(line_wrap(text, 79, 4))

    sender_q = quote_822_local(sender, eight_bit_clean=False) if sender else "MAILER-DAEMON"
    recipient = to if to is not None else sender
    frm = from_address or f"MAILER-DAEMON@{myhostname}"

    # Message header (bounce_header()).
    put(f"From: {frm} (Mail Delivery System)")
    put(f"Subject: {pm_subject if (postmaster_copy and pm_subject) else subject}")
    put(f"To: {quote_822_local(recipient)}")
    if date:
        put(f"Date: {mail_date(now)}")
    if message_id:
        put(f"Message-Id: {message_id}")
    if threaded_bounce and original.message_id:
        put(f"References: {original.message_id}")
        put(f"In-Reply-To: {original.message_id}")
    put(f"Auto-Submitted: {'auto-generated' if postmaster_copy else 'auto-replied'}")
    put("MIME-Version: 1.0")
    put("Content-Type: multipart/report; report-type=delivery-status;")
    put(f'\tboundary="{boundary}"')
    if mime_encoding is not None:
        put(f"Content-Transfer-Encoding: {mime_encoding}")
    put("")
    put("This is a MIME-encapsulated message.")
    put("")
    put(f"--{boundary}")
    put("Content-Description: Notification")
    put(f"Content-Type: text/plain; charset={'utf-8' if not_7bit else 'us-ascii'}")
    if not_7bit:
        put(f"Content-Transfer-Encoding: {mime_encoding}")
    put("")

    # Boilerplate (not in postmaster copies), then one line per recipient.
    if not postmaster_copy:
        values = {
            "myhostname": myhostname,
            "mail_name": mail_name,
            "delay_warning_time_hours": str(delay_warning_time // 3600),
            "maximal_queue_lifetime_days": str(maximal_queue_lifetime // 86400),
        }
        for line in body:
            put(re.sub(r"\$(\w+)", lambda m: values.get(m.group(1), m.group(0)), line))
    for r in rcpts:
        put("")
        reason = _printable(r.reason)
        if r.original and r.original != r.address:
            put_wrapped(f"<{r.address}> (expanded from <{r.original}>): {reason}")
        else:
            put_wrapped(f"<{r.address}>: {reason}")

    # The delivery-status part (bounce_header_dsn(), bounce_recipient_dsn()).
    put("")
    put(f"--{boundary}")
    put("Content-Description: Delivery report")
    put(f"Content-Type: message/{'global-' if smtputf8_requested else ''}delivery-status")
    if not_7bit and smtputf8_requested:
        put(f"Content-Transfer-Encoding: {mime_encoding}")
    put("")
    put(f"Reporting-MTA: dns; {reporting_mta}")
    if envid:
        put(f"Original-Envelope-Id: {envid}")
    put(f"X-{name_atom}-Queue-ID: {queue_id}")

    def addr_type(address: str) -> str:
        return "utf-8" if smtputf8_requested and not address.isascii() else "rfc822"

    put(f"X-{name_atom}-Sender: {addr_type(sender_q)}; {sender_q}")
    arrival = _as_epoch(arrival_date)
    if arrival > 0:
        put(f"Arrival-Date: {mail_date(arrival)}")
    for r in rcpts:
        put("")
        put(f"Final-Recipient: {addr_type(r.address)}; {r.address}")
        if r.orcpt:
            put(f"Original-Recipient: {r.orcpt}")
        elif r.original:
            put(f"Original-Recipient: {addr_type(r.original)}; {r.original}")
        action = "failed" if kind == "failure" else (r.action or _DEFAULT_ACTION[kind])
        put(f"Action: {action}")
        put(f"Status: {r.status}")
        if r.remote_mta and r.remote_mta_type:
            put_wrapped(f"Remote-MTA: {r.remote_mta_type}; {r.remote_mta}")
        if r.diagnostic_type and r.diagnostic_text:
            put_wrapped(f"Diagnostic-Code: {r.diagnostic_type}; "
                        f"{_printable(r.diagnostic_text)}")
        else:
            put_wrapped(f"Diagnostic-Code: X-{name_atom}; {_printable(r.reason)}")
        if kind == "delay":
            put(f"Will-Retry-Until: {mail_date(arrival + maximal_queue_lifetime)}")

    # The original (bounce_original()).
    put("")
    put(f"--{boundary}")
    undelivered = "Undelivered " if kind in ("failure", "delay") else ""
    put(f"Content-Description: {undelivered}"
        f"{'Message Headers' if headers_only else 'Message'}")
    if smtputf8_requested:
        put(f"Content-Type: message/{'global-headers' if headers_only else 'global'}")
    else:
        put(f"Content-Type: {'text/rfc822-headers' if headers_only else 'message/rfc822'}")
    if not_7bit:
        put(f"Content-Transfer-Encoding: {mime_encoding}")
    put("")
    head = ("\n".join(out) + "\n").encode("utf-8", "surrogateescape")
    parts = [head]
    if not original.available:
        parts.append(b"\t--- Undelivered message unavailable ---\n")
        parts.append(f"\n--{boundary}--\n".encode())
        return b"".join(parts)
    parts.append(b"Return-Path: <" + sender_q.encode("utf-8", "surrogateescape") + b">\n")
    for ln in original.lines:
        parts.append(ln)
        parts.append(b"\n")
    parts.append(f"\n--{boundary}--\n".encode())
    return b"".join(parts)


__all__ = ["DeliveryError", "DsnRecipient", "build_dsn", "error_from_os", "line_wrap",
           "mail_date", "quote_822_local", "status_for_errno"]

"""The text of ``postqueue -p`` (``mailq``) and ``postqueue -j``, as
Postfix's showq writes it: pure formatting of the messages
:mod:`hato.queue.listing` reads. Used by ``hato postqueue`` (run by root or
``mail_owner``, reading the queue itself) and by the showq service (for
everyone else).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from .listing import ListedMessage

# showq_compat.c's formats for short and long queue ids.
S_HEADINGS = ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
L_HEADINGS = ("----Queue ID-----", "--Size--", "---Arrival Time----",
              "--Sender/Recipient------")
REASON_WIDTH = 76


def printable(text: str, utf8: bool = True) -> str:
    """Postfix's printable(text, '?'): ASCII control characters, invalid
    bytes and (without *utf8*) every non-ASCII character become ``?``."""
    out = []
    for ch in text:
        o = ord(ch)
        if 0x20 <= o < 0x7F:
            out.append(ch)
        elif o > 0x7F and utf8 and not 0xD800 <= o <= 0xDFFF:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def _c_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def _pad(text: str, width: int, left: bool = True) -> str:
    """printf's %-Ns / %Ns: padding counts bytes, as C's does."""
    fill = " " * max(0, width - _c_len(text))
    return text + fill if left else fill + text


def display_address(address: str, empty: str = "MAILER-DAEMON", utf8: bool = True) -> str:
    """An address as showq shows it: the null address as *empty*, the
    local part quoted where RFC 5322 needs it, then printable()."""
    from ..delivery.dsn import quote_822_local

    return printable(quote_822_local(address or empty), utf8)


def queue_listing(messages: Iterable[ListedMessage], *, long_ids: bool = False,
                  empty: str = "MAILER-DAEMON", utf8: bool = True,
                  localtime: Callable[[float], time.struct_time] = time.localtime
                  ) -> Iterator[str]:
    """The ``postqueue -p`` output, one chunk per message then the summary,
    as Postfix's showq_compat() prints it."""
    if long_ids:
        id_w, size_w, time_w, headings = 17, 8, 19, L_HEADINGS
    else:
        id_w, size_w, time_w, headings = 11, 7, 20, S_HEADINGS
    blank = f"{'':<{id_w}} {'':>{size_w}} {'':<{time_w}} "
    count = 0
    total = 0
    for msg in messages:
        lines = []
        if count:
            lines.append("")
        else:
            lines.append(f"{headings[0]:<{id_w}} {headings[1]:>{size_w}} "
                         f"{headings[2]:<{time_w}} {headings[3]}")
        status = msg.queue_id
        if msg.queue_name == "active":
            status += "*"
        elif msg.queue_name == "hold":
            status += "!"
        if msg.forced_expire:
            status += "#"
        arrival = time.asctime(localtime(msg.arrival_time))[:time_w]
        lines.append(f"{_pad(status, id_w)} {msg.message_size:>{size_w}} "
                     f"{arrival:>{time_w}} {display_address(msg.sender, empty, utf8)}")
        saved = ""
        for rcpt in msg.recipients:
            why = printable(rcpt.reason, utf8)
            if why != saved:
                saved = why
                shown = why or "reason unavailable"
                lines.append(" " * max(0, REASON_WIDTH - _c_len(shown)) + f"({shown})")
            lines.append(blank + display_address(rcpt.address, empty, utf8))
        count += 1
        total += msg.message_size
        yield "".join(line + "\n" for line in lines)
    if count == 0:
        yield "Mail queue is empty\n"
    else:
        yield f"\n-- {total // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}.\n"


def json_quote(text: str, utf8: bool = True) -> str:
    """Postfix's json_quote() of a printable() string."""
    return printable(text, utf8).replace("\\", "\\\\").replace('"', '\\"')


def json_line(msg: ListedMessage, *, empty: str = "MAILER-DAEMON", utf8: bool = True) -> str:
    """One ``postqueue -j`` line, member for member as Postfix writes it."""
    rcpts = []
    for r in msg.recipients:
        item = f'{{"address": "{json_quote(display_address(r.address, empty, utf8), utf8)}"'
        if r.reason:
            item += f', "delay_reason": "{json_quote(r.reason, utf8)}"'
        rcpts.append(item + "}")
    return (f'{{"queue_name": "{json_quote(msg.queue_name, utf8)}", '
            f'"queue_id": "{json_quote(msg.queue_id, utf8)}", '
            f'"arrival_time": {msg.arrival_time}, '
            f'"message_size": {msg.message_size}, '
            f'"forced_expire": {"true" if msg.forced_expire else "false"}, '
            f'"sender": "{json_quote(display_address(msg.sender, empty, utf8), utf8)}", '
            f'"recipients": [{", ".join(rcpts)}]}}\n')

"""``postqueue``, ``mailq`` (and ``sendmail -bp``): list the mail queue and
ask for deliveries, as Postfix's postqueue(1).

    postqueue [-v] [-c config_dir] -p | -j | -f | -i queue_id | -s site
    mailq [sendmail options]

* ``-p`` (``mailq``, ``sendmail -bp``): the Sendmail-style listing, in
  Postfix's exact format: per message its queue id (followed by ``*`` when
  it is in the active queue, ``!`` in hold, ``#`` when forced to expire),
  size, arrival time and sender (``MAILER-DAEMON`` for the null sender),
  then each recipient still to deliver, under the reason its delivery was
  deferred, in parentheses; ``-- N Kbytes in M Requests.`` at the end, or
  ``Mail queue is empty``.
* ``-j``: one JSON object per message and line, with Postfix 3.5's members
  (queue_name, queue_id, arrival_time, message_size, forced_expire, sender,
  recipients: address and, when there is one, delay_reason).
* ``-f``: try every queued message now (``hato flush``; maildrop too).
* ``-i queue_id``: try that deferred message now (nothing happens for a
  message that is not deferred, as with Postfix).
* ``-s site``: try now the deferred mail with a recipient in domain *site*
  (a domain or an address literal ``[192.0.2.1]``), which must be eligible
  for Postfix's fast flush service (``fast_flush_domains``).

``-i`` and ``-s`` move the messages from deferred/ to incoming/ and wake
the queue manager, which is what Postfix's flush(8) server does; hato
finds them by their envelope, not from per-site logs.

The queue is read directly (:mod:`hato.queue.listing`). Run by a user other
than root and ``mail_owner``, ``authorized_mailq_users`` decides who may
list the queue and ``authorized_flush_users`` who may flush it, with
Postfix's texts. Every fatal error exits with status 69 (EX_UNAVAILABLE),
as Postfix's postqueue does.
"""

from __future__ import annotations

import errno
import getopt
import io
import os
import pwd
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from ..config.errors import ConfigError
from ..queue.directories import DEFERRED, INCOMING
from ..queue.errors import NoSuchMessage, QueueError
from ..queue.ids import is_queue_id
from ..queue.listing import ListedMessage, list_queue
from .common import Fatal, Messages, load_config, run

EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

USAGE = ("usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | "
         "postqueue -s site")

# showq_compat.c's formats for short and long queue ids.
S_HEADINGS = ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------")
L_HEADINGS = ("----Queue ID-----", "--Size--", "---Arrival Time----",
              "--Sender/Recipient------")
REASON_WIDTH = 76

MODE_LIST, MODE_JSON, MODE_FLUSH, MODE_FLUSH_FILE, MODE_FLUSH_SITE = "p", "j", "f", "i", "s"


# -- presentation (pure) ----------------------------------------------------------------

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


# -- the command --------------------------------------------------------------------------

def _fatal(text: str, status: int = EX_UNAVAILABLE):
    raise Fatal(text, status)


def _check_acl(settings, param: str, what: str) -> None:
    """Postfix's check_user_acl_byuid(): root and mail_owner may; others
    only when their login name matches the list *param*."""
    uid = os.getuid()
    if uid == 0:
        return
    try:
        if uid == pwd.getpwnam(settings.str("mail_owner")).pw_uid:
            return
    except KeyError:
        pass
    acl = settings.str(param)
    if acl.strip() == "static:anyone":
        return
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = "unknown"
    from ..policy.rewrite import MatchList
    from ..tables.base import TableError, TableRetry

    try:
        matcher = MatchList.from_settings(settings, param)
        try:
            allowed = matcher.match(name)
        finally:
            matcher.close()
    except TableRetry:
        _fatal(f"{param}: table lookup problem")
    except TableError as err:
        _fatal(f"{param}: {err}")
    if not allowed:
        _fatal(f"User {name}({uid}) is not allowed to {what}")


def _store(settings):
    from ..queue.store import QueueStore

    return QueueStore.from_settings(settings)


def show_queue(msgs: Messages, settings, mode: str) -> int:
    _check_acl(settings, "authorized_mailq_users", "view the mail queue")
    store = _store(settings)
    utf8 = settings.bool("smtputf8_enable")
    empty = settings.str("empty_address_recipient")
    messages = list_queue(store, warn=msgs.warn)
    try:
        if mode == MODE_JSON:
            chunks: Iterable[str] = (json_line(m, empty=empty, utf8=utf8) for m in messages)
        else:
            chunks = queue_listing(messages, long_ids=settings.bool("enable_long_queue_ids"),
                                   empty=empty, utf8=utf8)
        out = sys.stdout
        for chunk in chunks:
            out.write(chunk)
            out.flush()
    except QueueError as err:
        _fatal(f"Queue report unavailable - {err.strerror}")
    except BrokenPipeError:
        # the reader went away (mailq | head): as Postfix, not an error;
        # what is still buffered goes nowhere
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
            os.close(null)
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            pass
    return 0


def _wake(cfg, service: str, request: str) -> bool:
    from .control import wake_service

    return wake_service(cfg, service, request) is None


def _require_running(cfg) -> None:
    from ..master.pidfile import running_pid

    s = cfg.settings()
    if not running_pid(s.str("queue_directory"), s.str("data_directory")):
        _fatal("Cannot flush mail queue - mail system is down")


def flush_queue(cfg) -> int:
    _check_acl(cfg.settings(), "authorized_flush_users", "flush the mail queue")
    if not _wake(cfg, "qmgr", "flush"):
        _fatal("Cannot flush mail queue - mail system is down")
    _wake(cfg, "pickup", "wakeup")
    return 0


def flush_one(store, queue_id: str, now: float) -> bool:
    """Make deferred message *queue_id* due now and hand it back to the
    queue manager through incoming/ (Postfix's flush_one_file()). False
    when it is not in the deferred queue."""
    try:
        os.utime(store.path(DEFERRED, queue_id), (now, now), follow_symlinks=False)
    except FileNotFoundError:
        pass
    try:
        store.move(queue_id, DEFERRED, INCOMING)
    except NoSuchMessage:
        return False
    except QueueError as err:
        if err.errno == errno.ENOENT:  # gone between the look and the rename
            return False
        raise
    return True


def flush_file(cfg, queue_id: str) -> int:
    settings = cfg.settings()
    _check_acl(settings, "authorized_flush_users", "flush the mail queue")
    _require_running(cfg)
    try:
        moved = flush_one(_store(settings), queue_id, time.time())
    except OSError as err:
        _fatal(f"Cannot flush queue ID {queue_id}: {err.strerror or err}")
    if moved:
        _wake(cfg, "qmgr", "wakeup")
    return 0


def _domain(address: str) -> str:
    at = address.rfind("@")
    return address[at + 1:].lower() if at >= 0 else ""


def deferred_for_site(store, site: str) -> list[str]:
    """Queue ids of deferred messages with a recipient still to deliver in
    domain *site* (compared without case)."""
    from ..queue.listing import read_message

    site = site.lower()
    found = []
    for queue_id, path in store.scan(DEFERRED):
        msg = read_message(store, DEFERRED, queue_id, path)
        if msg is not None and any(_domain(r.address) == site for r in msg.recipients):
            found.append(queue_id)
    return found


def flush_site(cfg, site: str) -> int:
    settings = cfg.settings()
    _check_acl(settings, "authorized_flush_users", "flush the mail queue")
    _require_running(cfg)
    from ..policy.rewrite import MatchList
    from ..tables.base import TableRetry

    try:
        domains = MatchList.from_settings(settings, "fast_flush_domains", hostname=True)
        try:
            eligible = domains.match(site.lower())
        finally:
            domains.close()
    except TableRetry:
        eligible = False
    if not eligible:
        _fatal(f'Flush service is not configured for destination "{site}"')
    store = _store(settings)
    now = time.time()
    moved = 0
    try:
        for queue_id in deferred_for_site(store, site):
            moved += flush_one(store, queue_id, now)
    except OSError as err:
        _fatal(f"Cannot flush mail queue for {site}: {err.strerror or err}")
    if moved:
        _wake(cfg, "qmgr", "wakeup")
    return 0


def _truncated(text: str) -> str:
    return f"{text[:100]}{'...' if len(text) > 100 else ''}"


def valid_site(site: str) -> bool:
    if site.startswith("["):
        from ..policy.address import valid_mailhost_literal

        return valid_mailhost_literal(site)
    from ..proto.hostname import valid_hostname

    return valid_hostname(site)


def body(msgs: Messages, argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "c:fi:jps:v")
    except getopt.GetoptError as err:
        what = "option requires an argument" if "requires" in err.msg else "invalid option"
        print(f"postqueue: {what} -- '{err.opt}'", file=sys.stderr)
        _fatal(USAGE)
    mode = None
    site = queue_id = ""
    for opt, val in opts:
        if opt == "-c":
            os.environ["MAIL_CONFIG"] = val
        elif opt == "-v":
            continue
        else:
            if mode is not None:
                _fatal(USAGE)
            mode = opt[1]
            if mode == MODE_FLUSH_SITE:
                site = val
            elif mode == MODE_FLUSH_FILE:
                queue_id = val
    if args or mode is None:
        _fatal(USAGE)
    try:
        cfg = load_config(None, process_name="postqueue")
        settings = cfg.settings()
    except ConfigError as err:
        _fatal(str(err))
    if mode == MODE_FLUSH_SITE and not valid_site(site):
        _fatal(f'Cannot flush mail queue - invalid destination: "{_truncated(site)}"')
    if mode == MODE_FLUSH_FILE and not is_queue_id(queue_id):
        _fatal(f'Cannot flush queue ID - invalid name: "{_truncated(queue_id)}"')
    try:
        if mode in (MODE_LIST, MODE_JSON):
            return show_queue(msgs, settings, mode)
        if mode == MODE_FLUSH:
            return flush_queue(cfg)
        if mode == MODE_FLUSH_FILE:
            return flush_file(cfg, queue_id)
        return flush_site(cfg, site)
    except ConfigError as err:
        _fatal(str(err))
    return 0


def postqueue_main(argv: list[str]) -> int:
    return run("postqueue", body, argv)


def mailq_body(msgs: Messages, argv: list[str]) -> int:
    """``mailq`` is ``sendmail -bp``: Sendmail's options are accepted (and
    but for ``-C config_dir`` ignored); recipients are not."""
    from .sendmail import GETOPT

    try:
        opts, args = getopt.getopt(argv, GETOPT)
    except getopt.GetoptError as err:
        what = "option requires an argument" if "requires" in err.msg else "invalid option"
        print(f"{msgs.prog}: {what} -- '{err.opt}'", file=sys.stderr)
        raise Fatal(f"usage: {msgs.prog} [options]", EX_TEMPFAIL) from None
    for opt, val in opts:
        if opt == "-C":
            os.environ["MAIL_CONFIG"] = val
    if args:
        raise Fatal("display queue mode requires no recipient", EX_TEMPFAIL)
    return postqueue_main(["-p"])


def mailq_main(argv: list[str]) -> int:
    return run("mailq", mailq_body, argv)


__all__ = ["json_line", "mailq_main", "postqueue_main", "printable", "queue_listing"]

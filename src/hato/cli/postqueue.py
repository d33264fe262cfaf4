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

import getopt
import io
import os
import pwd
import sys
import time
from collections.abc import Iterable

from ..config.errors import ConfigError
from ..queue.errors import QueueError
from ..queue.ids import is_queue_id
from ..queue.flushing import deferred_for_site, eligible_site, flush_one, valid_site
from ..queue.listing import list_queue
from ..queue.showq import json_line, printable, queue_listing  # noqa: F401 (API)
from .common import Fatal, Messages, load_config, run

EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75

USAGE = ("usage: postqueue -f | postqueue -i queueid | postqueue -j | postqueue -p | "
         "postqueue -s site")

MODE_LIST, MODE_JSON, MODE_FLUSH, MODE_FLUSH_FILE, MODE_FLUSH_SITE = "p", "j", "f", "i", "s"


# -- the command --------------------------------------------------------------------------

def _fatal(text: str, status: int = EX_UNAVAILABLE):
    raise Fatal(text, status)


def _check_acl(settings, param: str, what: str) -> None:
    """Postfix's check_user_acl_byuid(): root and mail_owner may; others
    only when their login name matches the list *param*."""
    from ..io.useracl import AclProblem, user_allowed, user_name

    uid = os.getuid()
    try:
        allowed = user_allowed(settings, param, uid)
    except AclProblem as err:
        _fatal(str(err))
    if not allowed:
        _fatal(f"User {user_name(uid)}({uid}) is not allowed to {what}")


def _store(settings):
    from ..queue.store import QueueStore

    return QueueStore.from_settings(settings)


def _privileged(settings) -> bool:
    """root and mail_owner read and move queue files themselves; everyone
    else asks the showq and flush services (Postfix's set-gid postqueue)."""
    uid = os.getuid()
    if uid == 0:
        return True
    try:
        return uid == pwd.getpwnam(settings.str("mail_owner")).pw_uid
    except KeyError:
        return False


def _service(settings, name: str, req: dict[str, str]):
    """A connection to public/NAME that sent *req* and read the answer's
    status: (socket, rest of the data read); None when the service cannot
    be reached. A refusal is fatal with the service's reason."""
    import socket

    from ..proto.attr import AttrError, AttrReader, Attrs, encode

    path = os.path.join(settings.str("queue_directory"), "public", name)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(3600)
        sock.connect(path)
        sock.sendall(encode(Attrs.of(**req)))
        buf = b""
        while b"\n\n" not in buf:  # the status message ends with an empty line
            data = sock.recv(65536)
            if not data:
                raise ConnectionResetError("the service closed the connection")
            buf += data
        head, _, rest = buf.partition(b"\n\n")
        parser = AttrReader()
        parser.receive_data(head + b"\n\n")
        reply = parser.next_message()
    except (OSError, AttrError):
        sock.close()
        return None
    if reply is None or reply.get("status") != "0":
        sock.close()
        _fatal((reply.get("reason") if reply is not None else "") or "request refused")
    return sock, rest


def _show_from_service(settings, mode: str) -> bool:
    """The listing through public/showq; False when showq is not there."""
    got = _service(settings, "showq", {"request": "list", "format": mode})
    if got is None:
        return False
    sock, rest = got
    out = sys.stdout.buffer
    try:
        if rest:
            out.write(rest)
        while data := sock.recv(65536):
            out.write(data)
        out.flush()
    except BrokenPipeError:
        pass
    finally:
        sock.close()
    return True


def show_queue(msgs: Messages, settings, mode: str) -> int:
    _check_acl(settings, "authorized_mailq_users", "view the mail queue")
    if not _privileged(settings):
        if _show_from_service(settings, mode):
            return 0
        msgs.warn("Mail system is down -- accessing queue directly")
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
    settings = cfg.settings()
    _check_acl(settings, "authorized_flush_users", "flush the mail queue")
    if not _privileged(settings):
        # the master's lock is the mail owner's: only the queue manager's
        # public socket can tell whether the mail system runs
        from ..io.ipc import notify
        from ..proto.attr import Attrs

        public = os.path.join(settings.str("queue_directory"), "public")
        if not notify(os.path.join(public, "qmgr"), Attrs.of(request="flush")):
            _fatal("Cannot flush mail queue - mail system is down")
        notify(os.path.join(public, "pickup"), Attrs.of(request="wakeup"))
        return 0
    if not _wake(cfg, "qmgr", "flush"):
        _fatal("Cannot flush mail queue - mail system is down")
    _wake(cfg, "pickup", "wakeup")
    return 0


def flush_file(cfg, queue_id: str) -> int:
    settings = cfg.settings()
    _check_acl(settings, "authorized_flush_users", "flush the mail queue")
    if not _privileged(settings):
        return _flush_by_service(settings, {"request": "flush_file", "queue_id": queue_id})
    _require_running(cfg)
    try:
        moved = flush_one(_store(settings), queue_id, time.time())
    except OSError as err:
        _fatal(f"Cannot flush queue ID {queue_id}: {err.strerror or err}")
    if moved:
        _wake(cfg, "qmgr", "wakeup")
    return 0


def flush_site(cfg, site: str) -> int:
    settings = cfg.settings()
    _check_acl(settings, "authorized_flush_users", "flush the mail queue")
    if not _privileged(settings):
        # the service checks the site too, with the same words
        return _flush_by_service(settings, {"request": "flush_site", "site": site})
    _require_running(cfg)
    eligible = eligible_site(settings, site)
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


def _flush_by_service(settings, req: dict[str, str]) -> int:
    got = _service(settings, "flush", req)
    if got is None:
        _fatal("Cannot flush mail queue - mail system is down")
    got[0].close()
    return 0


def _truncated(text: str) -> str:
    return f"{text[:100]}{'...' if len(text) > 100 else ''}"


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

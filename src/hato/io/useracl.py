"""Who may use a queue tool: Postfix's check_user_acl_byuid() for
``authorized_mailq_users``, ``authorized_flush_users`` and
``authorized_submit_users``. root and ``mail_owner`` always may; anyone
else when the login name matches the list (``static:anyone`` lets
everyone)."""

from __future__ import annotations

import asyncio
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable

from ..proto.attr import Attrs, encode
from .ipc import read_request


class AclProblem(Exception):
    """The list cannot be read: a table that fails (the caller refuses)."""


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "unknown"


def user_allowed(settings, param: str, uid: int) -> bool:
    """May the user *uid* do what *param* guards? AclProblem when a table
    of the list fails."""
    if uid == 0:
        return True
    try:
        if uid == pwd.getpwnam(settings.str("mail_owner")).pw_uid:
            return True
    except KeyError:
        pass
    if settings.str(param).strip() == "static:anyone":
        return True
    from ..policy.rewrite import MatchList
    from ..tables.base import TableError, TableRetry

    try:
        matcher = MatchList.from_settings(settings, param)
        try:
            return bool(matcher.match(user_name(uid)))
        finally:
            matcher.close()
    except TableRetry:
        raise AclProblem(f"{param}: table lookup problem") from None
    except TableError as err:
        raise AclProblem(f"{param}: {err}") from None


def peer_uid(sock: socket.socket) -> int | None:
    """The user id of the process at the other end of a UNIX socket."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


def refusal(settings, param: str, uid: int | None, what: str) -> str:
    """Postfix's refusal text when the user at the other end may not do
    *what*; "" when it may."""
    if uid is None:
        return "cannot tell who is asking"
    try:
        if user_allowed(settings, param, uid):
            return ""
    except AclProblem as err:
        return str(err)
    return f"User {user_name(uid)}({uid}) is not allowed to {what}"


async def reply_status(writer: asyncio.StreamWriter, why: str = "") -> None:
    """``status=0``, or ``status=1`` with ``reason=why``."""
    writer.write(encode(Attrs.of(status="1", reason=why) if why else Attrs.of(status="0")))
    await writer.drain()


def guarded_session(settings, param: str, what: str,
                    handle: Callable[[Attrs, asyncio.StreamWriter], Awaitable[None]]):
    """A connection handler for a public service: one attribute request
    per connection, from a user the list *param* allows (the refusal is
    answered ``status=1`` with Postfix's words); *handle(request, writer)*
    answers the others."""
    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            req = await read_request(reader)
            if req is None:
                return
            why = refusal(settings, param, peer_uid(writer.get_extra_info("socket")), what)
            if why:
                await reply_status(writer, why)
                return
            await handle(req, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
    return session

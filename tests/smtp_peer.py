"""A small scripted SMTP server for tests: threads, loopback only.

Each reply can be scripted: a fixed reply text, or a callable
``(session, argument) -> reply`` (it may sleep, and may return None for the
default). A reply is one line (``"452 4.5.3 Too many recipients"``) or
several joined by newlines (``"250-a\\n250 b"``). Two special replies:
:data:`DROP` closes the connection without a word; a ``421`` reply is sent
and the connection closed, as smtpd(8) does::

    with SmtpPeer(rcpt={"b@x.test": "452 4.5.3 Try later"}) as peer:
        ... relay to 127.0.0.1:peer.port ...
        peer.messages        # what was delivered (sender, recipients, data)
        peer.sessions[0].commands, peer.sessions[0].pipelined

Hooks (attributes, changeable while the peer runs): ``greeting``, ``ehlo``
(the keywords offered, without the server name), ``helo``, ``mail``,
``rcpt`` (a reply, a callable, or a dict address → reply, others 250),
``data`` (the reply to DATA), ``dot`` (the reply to the end of data).

``tls`` (an ``ssl.SSLContext`` for the server side) makes the peer speak
TLS from the first byte, as a port-465 relay does.
:meth:`SmtpPeer.drop_connections` closes every open connection (a server
that drops idle clients).

Several peers may share a port on distinct loopback addresses
(``SmtpPeer(host="127.0.0.12", port=p)``) to stand for MX hosts.
"""

from __future__ import annotations

import itertools
import select
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

DROP = "<drop>"

DEFAULT_EHLO = ("PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN")

Reply = str | Callable[["Session", str], "str | None"] | None


@dataclass
class Received:
    """One message the peer accepted (at least one recipient, 250 to the dot)."""

    sender: str
    mail_args: str  # the MAIL FROM line after the address ("SIZE=123 BODY=8BITMIME")
    recipients: list[str]
    data: bytes  # the content, dot-unstuffed, CRLF line ends, without the final dot


@dataclass
class Session:
    peer: SmtpPeer
    number: int
    commands: list[str] = field(default_factory=list)
    #: every reply sent, in order (a multi-line reply as one string)
    replies: list[str] = field(default_factory=list)
    #: commands that arrived with more client data already behind them
    pipelined: list[str] = field(default_factory=list)
    rcpt_count: int = 0
    tls_resumed: bool = False  # the client resumed an earlier TLS session


_ids = itertools.count(1)


class SmtpPeer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, name: str = "peer.test",
                 greeting: Reply = None, ehlo: tuple[str, ...] = DEFAULT_EHLO,
                 helo: Reply = None, mail: Reply = None,
                 rcpt: Reply | dict[str, str] = None, data: Reply = None, dot: Reply = None,
                 tls: ssl.SSLContext | None = None):
        if not host.startswith("127."):
            raise ValueError("the test SMTP peer listens on loopback only")
        self.host = host
        self.name = name
        self.greeting = greeting
        self.ehlo = ehlo
        self.helo = helo
        self.mail = mail
        self.rcpt = rcpt
        self.data = data
        self.dot = dot
        self.tls = tls
        self.sessions: list[Session] = []
        self.messages: list[Received] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, port))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"smtp-peer-{host}:{self.port}")
        self._thread.start()

    # -- lifecycle ----------------------------------------------------------------

    def __enter__(self) -> SmtpPeer:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        try:
            self._listener.close()
        except OSError:
            pass
        self.drop_connections()
        self._thread.join(5)

    def drop_connections(self) -> None:
        """Close every open connection without a word."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}"

    @property
    def connections(self) -> int:
        return len(self.sessions)

    # -- serving ------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._listener], [], [], 0.2)
                if not r:
                    continue
                conn, _addr = self._listener.accept()
            except OSError:
                return
            with self._lock:
                session = Session(self, len(self.sessions) + 1)
                self.sessions.append(session)
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn, session), daemon=True).start()

    def _serve(self, conn: socket.socket, session: Session) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(30)
                raw, conn = conn, self.tls.wrap_socket(conn, server_side=True)
                session.tls_resumed = conn.session_reused
                with self._lock:
                    self._conns.discard(raw)
                    self._conns.add(conn)
            _Conversation(self, conn, session).run()
        except (OSError, _Closed):
            pass
        except BaseException as err:  # noqa: BLE001 - shown by the test
            self.errors.append(err)
        finally:
            with self._lock:
                self._conns.discard(conn)
            try:
                conn.close()
            except OSError:
                pass


class _Closed(Exception):
    pass


class _Conversation:
    def __init__(self, peer: SmtpPeer, conn: socket.socket, session: Session):
        self.peer = peer
        self.conn = conn
        self.session = session
        self.buf = b""
        conn.settimeout(60)

    # -- I/O ----------------------------------------------------------------------

    def readline(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.conn.recv(65536)
            if not chunk:
                raise _Closed
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def more_waiting(self) -> bool:
        if self.buf:
            return True
        r, _, _ = select.select([self.conn], [], [], 0)
        return bool(r)

    def send(self, reply: str) -> None:
        """Send *reply*; _Closed when the connection is to be closed."""
        if reply == DROP:
            raise _Closed
        lines = reply.split("\n")
        self.session.replies.append(reply)
        self.conn.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        if lines[-1].startswith("421"):
            raise _Closed

    def resolve(self, hook, arg: str, default: str) -> str:
        if isinstance(hook, dict):
            hook = hook.get(arg.lower())
        if callable(hook):
            hook = hook(self.session, arg)
        return default if hook is None else hook

    def reply(self, hook, arg: str, default: str) -> None:
        self.send(self.resolve(hook, arg, default))

    # -- the conversation ------------------------------------------------------------

    def run(self) -> None:
        p = self.peer
        self.reply(p.greeting, "", f"220 {p.name} ESMTP scripted")
        sender = None
        mail_args = ""
        rcpts: list[str] = []
        while True:
            raw = self.readline()
            line = raw.decode("utf-8", "surrogateescape")
            verb, _, arg = line.partition(" ")
            verb = verb.upper()
            s = self.session
            s.commands.append(line)
            if verb in ("MAIL", "RCPT", "RSET", "DATA") and self.more_waiting():
                s.pipelined.append(line)
            if verb == "EHLO":
                lines = [f"250-{p.name}"] + [f"250-{k}" for k in p.ehlo]
                lines[-1] = "250 " + lines[-1][4:]
                self.reply(p.helo, arg, "\n".join(lines))
            elif verb == "HELO":
                self.reply(p.helo, arg, f"250 {p.name}")
            elif verb == "MAIL":
                addr, args = _path(arg[5:] if arg.upper().startswith("FROM:") else arg)
                reply = self.resolve(p.mail, addr, "250 2.1.0 Ok")
                sender, mail_args, rcpts = None, "", []
                if reply.startswith("2"):
                    sender, mail_args = addr, args
                self.send(reply)
            elif verb == "RCPT":
                addr, _args = _path(arg[3:] if arg.upper().startswith("TO:") else arg)
                s.rcpt_count += 1
                if sender is None:
                    self.send("503 5.5.1 Error: need MAIL command")
                    continue
                reply = self.resolve(p.rcpt, addr, "250 2.1.5 Ok")
                if reply.startswith("2"):
                    rcpts.append(addr)
                self.send(reply)
            elif verb == "DATA":
                if sender is None or not rcpts:
                    self.send("554 5.5.1 Error: no valid recipients")
                    continue
                reply = self.resolve(p.data, "", "354 End data with <CR><LF>.<CR><LF>")
                self.send(reply)
                if not reply.startswith("354"):
                    continue
                body = bytearray()
                while True:
                    chunk = self.readline()
                    if chunk == b".":
                        break
                    if chunk.startswith(b"."):
                        chunk = chunk[1:]
                    body += chunk + b"\r\n"
                reply = self.resolve(p.dot, "", f"250 2.0.0 Ok: queued as PEER{next(_ids)}")
                if reply.startswith("2"):
                    with p._lock:
                        p.messages.append(Received(sender, mail_args, list(rcpts), bytes(body)))
                sender, mail_args, rcpts = None, "", []
                self.send(reply)
            elif verb == "RSET":
                sender, mail_args, rcpts = None, "", []
                self.send("250 2.0.0 Ok")
            elif verb == "NOOP":
                self.send("250 2.0.0 Ok")
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("502 5.5.2 Error: command not recognized")


def _path(text: str) -> tuple[str, str]:
    """``<a@b> SIZE=1`` → ("a@b", "SIZE=1")."""
    text = text.strip()
    if text.startswith("<"):
        addr, _, rest = text[1:].partition(">")
        return addr, rest.strip()
    addr, _, rest = text.partition(" ")
    return addr, rest.strip()

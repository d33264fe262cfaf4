"""A file descriptor held in reserve for when a process runs out of them.

When accept() fails with EMFILE or ENFILE, the client stays in the listen
queue, unanswered, until it gives up. With one descriptor kept spare, the
server gives it up for a moment, accepts the client, tells it
``421 4.3.2 No system resources`` (Postfix's words for this) and closes the
connection, then takes the spare back: clients learn at once to try later,
and the server recovers as soon as descriptors are free again.
"""

from __future__ import annotations

import errno
import os
import socket

NO_RESOURCES = b"421 4.3.2 No system resources\r\n"
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE)


class SpareDescriptor:
    def __init__(self) -> None:
        self.fd: int | None = None
        self.take()

    def take(self) -> None:
        """Hold the spare again (when there is one to take)."""
        if self.fd is None:
            try:
                self.fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self.fd = None

    def turn_away(self, listener: socket.socket, reply: bytes = NO_RESOURCES) -> bool:
        """Accept one waiting client on the spare descriptor, send *reply*
        and close; True when a client was turned away."""
        if self.fd is None:
            self.take()
            return False
        os.close(self.fd)
        self.fd = None
        try:
            conn, _ = listener.accept()
        except OSError:
            conn = None
        if conn is not None:
            try:
                conn.setblocking(False)
                conn.send(reply)
            except OSError:
                pass
            conn.close()
        self.take()
        return conn is not None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

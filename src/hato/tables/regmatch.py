"""Matching back-reference patterns of ``regexp:`` tables under a time limit.

Without back-references glibc's ``regexec()`` runs in time proportional to
the key. With them it backtracks, and the time can grow steeply with the
key's length: ``(a*)(a*)(a*)\\3\\2\\1x`` takes 8 seconds on 63 ``a``s,
``^(a|aa)*\\1*$`` 24 seconds on 14. The key often comes from a client (a
header line for header_checks), and a call into the C library cannot be
interrupted. So a table matches its back-reference patterns in a helper
process (:class:`MatchHelper`, a ``python -I -S`` child that only compiles
and matches), and gives up on a match on which the helper has spent more than
:data:`MATCH_SECONDS` of CPU time (so that a loaded machine alone never
fails a lookup), or that is not answered within :data:`WAIT_SECONDS`: the
helper is killed (a new one starts with the next match) and the lookup
fails temporarily (:class:`TableRetry`), so that the message waits instead
of the process hanging.

Patterns without back-references are matched in the process itself, as
before; real back-reference patterns (``^Subject: (.+) \\1$``) match in
microseconds, plus one round trip to the helper.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import time

from .base import TableRetry

#: the CPU time one match may take in the helper
MATCH_SECONDS = 0.25
#: how long the helper may take to answer at all (start-up included), however
#: loaded the machine
WAIT_SECONDS = 5.0
#: how often a waiting lookup looks at the helper's CPU time
_SLICE = 0.02
_TICK = os.sysconf("SC_CLK_TCK")

# The helper: requests on stdin, replies on stdout, all little-endian.
#   compile: "C" options:u32 length:u32 regex  -> "K" id:u32 | "E" length:u32 text
#   match:   "M" id:u32 nmatch:u32 length:u32 key -> result:i32 (start:i32 end:i32)*nmatch
_HELPER = r"""
import ctypes, struct, sys
libc = ctypes.CDLL(sys.argv[1])
libc.newlocale.restype = ctypes.c_void_p
libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
libc.uselocale.argtypes = [ctypes.c_void_p]
libc.uselocale(libc.newlocale(8127, b"C", None))
libc.regcomp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
libc.regexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                         ctypes.c_void_p, ctypes.c_int]
libc.regerror.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
inp, out = sys.stdin.buffer, sys.stdout.buffer
compiled = []
def read(n):
    data = inp.read(n)
    if len(data) != n:
        raise SystemExit(0)
    return data
while True:
    op = read(1)
    if op == b"C":
        options, length = struct.unpack("<II", read(8))
        buf = ctypes.create_string_buffer(256)
        err = libc.regcomp(ctypes.addressof(buf), read(length), options)
        if err:
            msg = ctypes.create_string_buffer(256)
            libc.regerror(err, ctypes.addressof(buf), msg, 256)
            out.write(b"E" + struct.pack("<I", len(msg.value)) + msg.value)
        else:
            compiled.append(buf)
            out.write(b"K" + struct.pack("<I", len(compiled) - 1))
    elif op == b"M":
        index, nmatch, length = struct.unpack("<III", read(12))
        key = read(length)
        pm = (ctypes.c_int * (2 * max(nmatch, 1)))()
        err = libc.regexec(ctypes.addressof(compiled[index]), key, nmatch,
                           pm if nmatch else None, 0)
        out.write(struct.pack("<i", err) + bytes(pm)[:8 * nmatch])
    else:
        raise SystemExit(1)
    out.flush()
"""


def _cpu_seconds(pid: int) -> float:
    """CPU time a process has used (0 when /proc cannot tell)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rpartition(b")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, ValueError, IndexError):
        return 0.0


class MatchHelper:
    """One helper process for one table (started at its first match)."""

    def __init__(self, libc: str, name: str):
        self.libc = libc
        self.name = name  # the table's name ("regexp:/etc/postfix/x"), for TableRetry
        self.proc: subprocess.Popen | None = None
        self.ids: dict[tuple[bytes, int], int] = {}
        self._buffer = b""

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable or "python3", "-I", "-S", "-c", _HELPER, self.libc],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            close_fds=True)
        self.proc, self.ids, self._buffer = proc, {}, b""
        return proc

    def _read(self, proc: subprocess.Popen, n: int, cpu_limit: float | None = None) -> bytes:
        """*n* bytes of the helper's reply; TableRetry when the helper has
        spent more than *cpu_limit* CPU seconds on it (load alone does not
        count), does not answer within :data:`WAIT_SECONDS`, or is gone."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        poller = select.poll()  # not select(): a busy daemon has descriptors past 1024
        poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + WAIT_SECONDS
        start = _cpu_seconds(proc.pid) if cpu_limit is not None else 0.0
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise TableRetry(self.name, f"the regular expression helper did not answer "
                                            f"within {WAIT_SECONDS:g} seconds")
            if not poller.poll(min(remaining, _SLICE) * 1000):
                if cpu_limit is not None and _cpu_seconds(proc.pid) - start > cpu_limit:
                    self.stop()
                    raise TableRetry(self.name, f"matching a pattern with back-references "
                                                f"took more than {cpu_limit:g} CPU seconds: "
                                                f"giving up")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                self.stop()
                raise TableRetry(self.name, "the regular expression helper exited")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data

    def _send(self, proc: subprocess.Popen, data: bytes) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except OSError as err:
            self.stop()
            raise TableRetry(self.name, f"the regular expression helper: {err}") from None

    def _id(self, proc: subprocess.Popen, regex: bytes, options: int) -> int:
        key = (regex, options)
        got = self.ids.get(key)
        if got is not None:
            return got
        self._send(proc, b"C" + struct.pack("<II", options, len(regex)) + regex)
        kind = self._read(proc, 1)
        if kind == b"K":
            got = struct.unpack("<I", self._read(proc, 4))[0]
            self.ids[key] = got
            return got
        (length,) = struct.unpack("<I", self._read(proc, 4))
        text = self._read(proc, length).decode("utf-8", "replace")
        raise TableRetry(self.name, f"the regular expression helper: {text}")

    def match(self, regex: bytes, options: int, key: bytes, nmatch: int) -> tuple[int, list[int]]:
        """regexec() of *regex* on *key* in the helper: (result, the
        2 × *nmatch* offsets). TableRetry when it takes too long."""
        if self.proc is not None and self.proc.poll() is not None:
            self.stop()  # died since the last match: close its pipes
        try:
            proc = self.proc if self.proc is not None else self._start()
        except OSError as err:
            raise TableRetry(self.name, f"cannot start the regular expression helper: "
                                        f"{err}") from None
        index = self._id(proc, regex, options)
        self._send(proc, b"M" + struct.pack("<III", index, nmatch, len(key)) + key)
        reply = self._read(proc, 4 + 8 * nmatch, MATCH_SECONDS)
        result = struct.unpack_from("<i", reply)[0]
        return result, list(struct.unpack_from(f"<{2 * nmatch}i", reply, 4))

    def stop(self) -> None:
        proc, self.proc, self.ids, self._buffer = self.proc, None, {}, b""
        if proc is None:
            return
        try:
            proc.kill()
        except OSError:
            pass
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        proc.wait()


__all__ = ["MATCH_SECONDS", "WAIT_SECONDS", "MatchHelper"]

"""What glibc's ``regcomp()`` needs to compile a pattern, and a limit on it.

glibc compiles a POSIX regular expression into an NFA by copying: ``X+``
becomes ``X X*`` and ``X{n,m}`` becomes *m* copies of ``X``, the last
``m - n`` nested optional; epsilon closures grow with the square of a chain
of optional pieces; and every anchor (``^``, ``$``, ``\\b``, ``\\<`` …)
copies the closure behind it once more. Small patterns can therefore cost
gigabytes: ``o++++…`` with twenty ``+`` takes 700 MB, ``a{0,32767}`` 8 GB
and 38 seconds, and ``(\\ba?)`` written fifty times, 300 bytes, 5 GB.
Postfix accepts such patterns and pays that price in every process that
opens the table.

hato compiles a pattern directly when its shape is plainly small (few
repetition operators and anchors, a small NFA after copying; nearly every
pattern in real tables). Any other pattern is first compiled by a separate
Python process under a memory and CPU limit (:data:`PROBE_LIMIT`,
:data:`PROBE_SECONDS`), which reports the memory and CPU time the
compilation took; a pattern over either limit is refused. The answers are
cached per process. A table adds up what its patterns cost
(:class:`hato.tables.regexp.RegexpTable`).
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from typing import NamedTuple

#: bytes per NFA node, for patterns too small to be worth a probe
NODE_BYTES = 300
#: a pattern is compiled without a probe when, after glibc's copying, its
#: NFA has at most this many nodes ...
SIMPLE_NODES = 2000
#: ... and it has at most this many repetition operators and anchors, and
#: no repetition of something that can be empty or holds an anchor
SIMPLE_TOKENS = 16
#: the most one pattern may take to compile
PROBE_LIMIT = 64 << 20
#: CPU seconds the probe may spend (real patterns take milliseconds), and
#: the wall-clock time after which it is given up as hung
PROBE_SECONDS = 1
PROBE_WALL_SECONDS = 30
#: glibc's RE_DUP_MAX: larger bounds are a syntax error regcomp reports itself
DUP_MAX = 0x7FFF
#: beyond this, node counts are only "too many"
_CAP = 1 << 40

REG_ESPACE = 12

log = logging.getLogger("hato.tables")

# The probe runs with -I -S: nothing of hato, nothing from site-packages.
# It writes "<regcomp result> <bytes allocated> <CPU seconds>".
_PROBE = r"""
import ctypes, os, resource, sys
limit, options, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
regex = sys.stdin.buffer.read()
libc = ctypes.CDLL(name)
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]
try:
    libc.mallinfo2.restype = Info
    def used():
        info = libc.mallinfo2()
        return info.uordblks + info.hblkhd
except AttributeError:  # glibc before 2.33
    def used():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
libc.newlocale.restype = ctypes.c_void_p
libc.newlocale.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p]
libc.uselocale.argtypes = [ctypes.c_void_p]
libc.uselocale(libc.newlocale(8127, b"C", None))
libc.regcomp.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
buf = ctypes.create_string_buffer(256)
with open("/proc/self/statm") as fh:
    mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
resource.setrlimit(resource.RLIMIT_AS, (mapped + limit, mapped + limit))
resource.setrlimit(resource.RLIMIT_CPU, (@SECONDS@, @SECONDS@))
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
before, start = used(), cpu()
err = libc.regcomp(ctypes.addressof(buf), regex, options)
sys.stdout.write("%d %d %.6f\n" % (err, used() - before, cpu() - start))
""".replace("@SECONDS@", str(PROBE_SECONDS))


def _bound(regex: bytes, i: int, close: bytes) -> tuple[int, int | None, int] | None:
    """Parse ``n}``, ``n,}``, ``,m}``, ``n,m}`` from *i*: (low, high, end) or
    None when this is no valid bound (regcomp reports or treats it itself)."""
    end = regex.find(close, i)
    if end < 0:
        return None
    low_text, comma, high_text = regex[i:end].partition(b",")
    if not (low_text.isdigit() or (comma and not low_text)) \
            or (high_text and not high_text.isdigit()):
        return None
    low = int(low_text) if low_text else 0
    high: int | None = int(high_text) if high_text else (None if comma else low)
    if low > DUP_MAX or (high is not None and (high > DUP_MAX or high < low)):
        return None
    return low, high, end + len(close)


def bracket_end(regex: bytes, i: int) -> int:
    """Index just past the bracket expression opening at *i*; -1 when it
    is not closed."""
    n = len(regex)
    j = i + 1
    if j < n and regex[j] == 0x5E:  # '^'
        j += 1
    if j < n and regex[j] == 0x5D:  # a leading ']' is literal
        j += 1
    while j < n and regex[j] != 0x5D:
        if regex[j] == 0x5B and j + 1 < n and regex[j + 1] in b":=.":
            end = regex.find(bytes([regex[j + 1], 0x5D]), j + 2)
            if end < 0:
                return -1
            j = end + 2
            continue
        j += 1
    return j + 1 if j < n else -1


#: GNU anchors after a backslash: \b \B \< \> \` \'
_ANCHORS = frozenset(b"bB<>`'")
#: ( ) | { + ?
_OPERATORS = frozenset(b"()|{+?")


class _Frame:
    """One open group (or the whole pattern) while :func:`shape` reads it."""

    __slots__ = ("branches", "branches_anchor", "branches_nullable", "last", "last_anchor",
                 "last_nullable", "prefix_nullable", "seq", "seq_anchor", "seq_nullable")

    def __init__(self) -> None:
        self.branches = 0  # nodes of the finished branches
        self.branches_nullable = self.branches_anchor = False
        self.new_branch()

    def new_branch(self) -> None:
        self.seq = 0  # nodes of the current branch
        self.seq_nullable, self.seq_anchor = True, False
        self.last = 0  # nodes of its last piece (what a repetition copies)
        self.last_nullable = self.last_anchor = False
        self.prefix_nullable = True  # the branch without its last piece

    def add(self, size: int, nullable: bool, anchor: bool) -> None:
        self.prefix_nullable = self.seq_nullable
        self.seq = min(self.seq + size, _CAP)
        self.seq_nullable = self.seq_nullable and nullable
        self.seq_anchor = self.seq_anchor or anchor
        self.last, self.last_nullable, self.last_anchor = size, nullable, anchor

    def end_branch(self) -> None:
        self.branches = min(self.branches + self.seq + 1, _CAP)
        self.branches_nullable = self.branches_nullable or self.seq_nullable
        self.branches_anchor = self.branches_anchor or self.seq_anchor
        self.new_branch()

    def close(self) -> tuple[int, bool, bool]:
        """(nodes, nullable, has an anchor) of the whole group."""
        return (min(self.seq + self.branches + 2, _CAP),
                self.seq_nullable or self.branches_nullable,
                self.seq_anchor or self.branches_anchor)


def shape(regex: bytes, extended: bool) -> tuple[int, int, bool]:
    """(NFA nodes after glibc's copying, repetition operators and anchors,
    whether a repetition applies to something that can match the empty
    string or holds an anchor) of *regex*, POSIX extended syntax when
    *extended*, basic otherwise. One pass, no recursion; a syntax error
    counts as whatever it looks like (regcomp reports it)."""
    stack: list[_Frame] = []
    top = _Frame()
    tokens = 0
    risky = False
    i, n = 0, len(regex)

    def repeat(low: int, high: int | None) -> None:
        nonlocal tokens, risky
        copies = high if high is not None else low + 1 if low else 1
        tokens += 1
        # glibc loops on empty matches and copies anchor closures: slow
        risky = risky or top.last_nullable or top.last_anchor
        size = min(top.last * copies + (high - low if high is not None else 1), _CAP)
        top.seq = min(top.seq - top.last + size, _CAP)
        top.last = size
        top.last_nullable = top.last_nullable or low == 0
        top.seq_nullable = top.prefix_nullable and top.last_nullable

    def atom(anchor: bool = False) -> None:
        nonlocal tokens
        if anchor:
            tokens += 1
        top.add(1, anchor, anchor)

    def open_group() -> None:
        nonlocal top
        stack.append(top)
        top = _Frame()

    def close_group() -> None:
        nonlocal top
        inner = top.close()
        top = stack.pop()
        top.add(*inner)

    def alternative() -> None:
        top.end_branch()

    while i < n:
        c = regex[i]
        if c == 0x5B:  # '['
            atom()
            end = bracket_end(regex, i)
            i = end if end >= 0 else n
            continue
        escaped = c == 0x5C and i + 1 < n
        if escaped:
            c = regex[i + 1]
            i += 2
        else:
            i += 1
        if (c in _ANCHORS) if escaped else c in (0x5E, 0x24):  # \b \< … or ^ $
            atom(anchor=True)
            continue
        # ( ) | { + ? are operators bare in extended syntax and after a
        # backslash in basic syntax (+ and ? are GNU's); * is bare in both
        if c == 0x2A:
            op = 0 if escaped else c
        else:
            op = c if escaped != extended and c in _OPERATORS else 0
        if op == 0x28:
            open_group()
        elif op == 0x29 and stack:
            close_group()
        elif op == 0x7C:
            alternative()
        elif op and not top.last:
            atom()  # nothing to repeat: a literal
        elif op == 0x2A:
            repeat(0, None)
        elif op == 0x2B:
            repeat(1, None)
        elif op == 0x3F:
            repeat(0, 1)
        elif op == 0x7B:
            got = _bound(regex, i, b"}" if extended else b"\\}")
            if got is None:
                atom()
            else:
                repeat(got[0], got[1])
                i = got[2]
        else:
            atom()
    while stack:  # unbalanced: regcomp reports it; count what is there
        close_group()
    nodes = top.close()[0] - 2
    return nodes, tokens, risky


class Cost(NamedTuple):
    """What compiling one pattern takes."""

    bytes: int
    seconds: float


class ProbeFailed(Exception):
    """The probe could not run (no process, no /proc): not a verdict on the
    pattern."""


def _probe(regex: bytes, options: int, libc: str) -> Cost | None:
    """Compile *regex* in a child process under the limits: what it took,
    or None when it needed more memory or CPU than allowed. ProbeFailed
    when the child could not do its work for another reason."""
    try:
        done = subprocess.run(
            [sys.executable or "python3", "-I", "-S", "-c", _PROBE,
             str(PROBE_LIMIT), str(options), libc],
            input=regex, capture_output=True, timeout=PROBE_WALL_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        return None
    except (OSError, subprocess.SubprocessError) as err:
        raise ProbeFailed(str(err)) from None
    if done.returncode < 0 or b"MemoryError" in done.stderr:
        # out of CPU time (SIGXCPU), killed, or crashed: never in this process
        return None
    try:
        err_text, used_text, seconds_text = done.stdout.split()
        err, used, seconds = int(err_text), int(used_text), float(seconds_text)
    except ValueError:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ProbeFailed(detail[-1] if detail else f"exit status {done.returncode}") \
            from None
    if err == REG_ESPACE:
        return None
    return Cost(max(used, 0), max(seconds, 0.0))


def simple(regex: bytes, extended: bool) -> bool:
    """Is *regex* plainly small enough to compile without a probe?"""
    nodes, tokens, risky = shape(regex, extended)
    return nodes <= SIMPLE_NODES and tokens <= SIMPLE_TOKENS and not risky


@functools.lru_cache(maxsize=4096)
def compile_cost(regex: bytes, options: int, extended: bool, libc: str) -> Cost | None:
    """What regcomp() takes for *regex* with *options*: estimated for a
    plainly small pattern, measured by a probe for any other; None when
    that is over :data:`PROBE_LIMIT` or :data:`PROBE_SECONDS`. *libc*: the C
    library's file name, for the probe."""
    if simple(regex, extended):
        return Cost(shape(regex, extended)[0] * NODE_BYTES, 0.0)
    return _probe(regex, options, libc)


def cost_of(regex: bytes, options: int, extended: bool, libc: str) -> Cost | None:
    """:func:`compile_cost`, except that when the probe cannot run the
    pattern is compiled as Postfix would, unmeasured (with a warning), and
    the next call probes again."""
    try:
        return compile_cost(regex, options, extended, libc)
    except ProbeFailed as err:
        log.warning("cannot measure a regular expression before compiling it (%s): "
                    "compiling it unmeasured", err)
        return Cost(shape(regex, extended)[0] * NODE_BYTES, 0.0)


TOO_BIG = (f"regular expression too big: compiling it would take more than "
           f"{PROBE_LIMIT >> 20} MB or {PROBE_SECONDS} CPU second")


__all__ = ["PROBE_LIMIT", "PROBE_SECONDS", "TOO_BIG", "Cost", "ProbeFailed", "bracket_end",
           "compile_cost", "cost_of", "shape", "simple"]

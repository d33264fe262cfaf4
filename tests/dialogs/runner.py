"""SMTP dialogues: the ``.dlg`` format, a player and transcripts.

A ``.dlg`` file is one *config group*: the main.cf settings at its top are
applied to one server instance (Postfix's and hato's alike), and every
dialogue in the file is played against it, one connection each::

    # comment (a line starting with #)
    smtpd_forbid_bare_newline = normalize      # main.cf lines before the first ===
    smtpd_forbid_bare_newline_exclusions =

    === helo-then-quit                          # a dialogue: a name, unique in the file
    <                                           # wait for 1 reply (here: the greeting)
    > HELO client.test                          # send the text + \\r\\n
    <
    >> MAIL FROM:<a@b.test>\\n                  # send exactly this, no \\r\\n added
    < 2                                         # wait for 2 replies
    > QUIT
    < close                                     # read replies until the server closes

Both ``>`` and ``>>`` take escapes: ``\\r \\n \\t \\0 \\\\ \\xHH \\{`` and the
macro ``{repeat 'TEXT' N}`` (TEXT with escapes, quoted with ' or ")
for N copies of TEXT. A ``>`` line's trailing spaces are kept; write
``\\x20`` to make them visible. ``@shutdown`` half-closes the client's
sending side. ``< N`` waits up to 5 s for N complete replies (a
multi-line reply is one); an early close or a timeout is recorded.
``< close`` records every reply until the server closes (up to 5 s).
After the last step, replies arriving within 0.1 s are recorded as
``trailing`` (none, for a server that answers only what it is asked).

Every ``250 ... queued as QID`` reply names a queued message; the
transcript holds its envelope as the server's mail log tells it (see
tests/postfix_instance.py).

What two transcripts must agree on (:meth:`Transcript.key`): per step the
reply codes, enhanced status codes and, for a multi-line 250 reply, the set
of EHLO keywords; whether the server closed and whether a wait timed out;
the trailing replies; the envelopes (sender, sorted recipients) of queued
messages in order. With ``texts=True`` the reply texts too (queue ids
masked).

Command line, to play a file against a running server and print the
transcripts::

    python3 -m tests.dialogs.runner HOST PORT FILE.dlg [NAME...]
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

DIALOG_DIR = Path(__file__).resolve().parent
EXPECTED_DIR = DIALOG_DIR / "expected"
REPLY_TIMEOUT = 5.0

#: main.cf settings of every group, before the group's own. The client
#: (127.0.0.1) is in mynetworks, which smtpd_forbid_bare_newline_exclusions
#: names by default: it is emptied so that bare LF handling is exercised.
#: Local recipients are alice, bob and postmaster; relay.test is a relay
#: domain.
GROUP_DEFAULTS = {
    "relay_domains": "relay.test",
    "smtpd_forbid_bare_newline": "normalize",
    "smtpd_forbid_bare_newline_exclusions": "",
    "local_recipient_maps": "inline:{alice=x, bob=x, postmaster=x}",
}
TRAILING_WAIT = 0.1

# -- the format ------------------------------------------------------------------------


class DialogError(Exception):
    pass


@dataclass
class Step:
    op: str                 # "send", "recv", "close", "shutdown"
    data: bytes = b""       # send
    count: int = 0          # recv
    line: int = 0


@dataclass
class Dialog:
    group: str
    name: str
    steps: list[Step] = field(default_factory=list)
    line: int = 0

    @property
    def id(self) -> str:
        return f"{self.group}/{self.name}"


@dataclass
class Group:
    name: str
    path: Path
    main_cf: dict[str, str]
    dialogs: list[Dialog]


_ESCAPES = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", "{": b"{",
            "}": b"}", "'": b"'", '"': b'"'}
_REPEAT = re.compile(r"""\{repeat\s+(['"])((?:\\.|(?!\1).)*)\1\s+(\d+)\}""")


def unescape(text: str, where: str = "") -> bytes:
    """``\\r``, ``\\xHH``, ``{repeat 'A' 10}`` … → bytes (UTF-8 for the rest)."""
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\":
            nxt = text[i + 1:i + 2]
            if nxt == "x":
                try:
                    out.append(int(text[i + 2:i + 4], 16))
                except ValueError:
                    raise DialogError(f"{where}: bad \\x escape") from None
                i += 4
                continue
            if nxt not in _ESCAPES:
                raise DialogError(f"{where}: unknown escape \\{nxt}")
            out += _ESCAPES[nxt]
            i += 2
            continue
        if c == "{":
            m = _REPEAT.match(text, i)
            if not m:
                raise DialogError(f"{where}: a literal {{ is written \\{{")
            out += unescape(m.group(2), where) * int(m.group(3))
            i = m.end()
            continue
        out += c.encode()
        i += 1
    return bytes(out)


def parse(path: Path) -> Group:
    group = Group(path.stem, path, {}, [])
    current: Dialog | None = None
    names: set[str] = set()
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        where = f"{path.name}:{n}"
        line = raw.rstrip("\n")
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.startswith("==="):
            name = line[3:].strip()
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name) or name in names:
                raise DialogError(f"{where}: bad or duplicate dialogue name {name!r}")
            names.add(name)
            current = Dialog(group.name, name, line=n)
            group.dialogs.append(current)
            continue
        if current is None:
            key, eq, value = line.partition("=")
            if not eq:
                raise DialogError(f"{where}: expected 'name = value' before the first ===")
            group.main_cf[key.strip()] = value.strip()
            continue
        if line.startswith(">>"):
            current.steps.append(Step("send", unescape(line[3:] if line[2:3] == " " else line[2:],
                                                       where), line=n))
        elif line.startswith(">"):
            text = line[2:] if line[1:2] == " " else line[1:]
            current.steps.append(Step("send", unescape(text, where) + b"\r\n", line=n))
        elif line.startswith("<"):
            arg = line[1:].strip()
            if arg == "close":
                current.steps.append(Step("close", line=n))
            elif arg == "" or arg.isdigit():
                current.steps.append(Step("recv", count=int(arg or 1), line=n))
            else:
                raise DialogError(f"{where}: '<' takes a count or 'close'")
        elif line.strip() == "@shutdown":
            current.steps.append(Step("shutdown", line=n))
        else:
            raise DialogError(f"{where}: a step starts with >, >>, < or @shutdown")
    return group


def load_groups(directory: Path = DIALOG_DIR) -> list[Group]:
    return [parse(p) for p in sorted(directory.glob("*.dlg"))]


# -- transcripts -----------------------------------------------------------------------

_ENH = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")


@dataclass
class Reply:
    lines: list[str]

    @property
    def code(self) -> str | None:
        first = self.lines[0]
        return first[:3] if re.match(r"\d{3}([ -]|$)", first) else None

    @property
    def enhanced(self) -> str | None:
        if self.code is None:
            return None
        word = self.lines[-1][4:].split(" ", 1)[0]
        return word if _ENH.match(word) else None

    @property
    def texts(self) -> list[str]:
        return [_QUEUED.sub("queued as QID", line) for line in self.lines]

    def key(self, texts: bool = False) -> list:
        k: list = [self.code, self.enhanced]
        if self.code is None:
            k.append(self.lines)            # not a reply at all: compare the bytes
        elif self.code == "250" and len(self.lines) > 1:
            k.append(sorted({line[4:].upper() for line in self.lines[1:]}))
        if texts:
            k.append(self.texts)
        return k

    def queued_id(self) -> str | None:
        if self.code == "250":
            m = _QUEUED.search(self.lines[-1])
            if m:
                return m.group(1)
        return None


def show_bytes(data: bytes, limit: int = 300) -> str:
    """Readable form of DATA for transcripts, long runs folded."""
    out = []
    for m in re.finditer(rb"(.)\1{15,}|.", data, re.DOTALL):
        chunk = m.group(0)
        one = chunk[:1]
        s = repr(one)[2:-1] if one not in (b"'",) else "'"
        out.append(f"{{repeat '{s}' {len(chunk)}}}" if len(chunk) > 1 else s)
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + f"...({len(data)} bytes)"


@dataclass
class Transcript:
    dialog: str
    steps: list[dict] = field(default_factory=list)
    trailing: list[Reply] = field(default_factory=list)
    queued: list[dict] = field(default_factory=list)

    def replies(self) -> list[Reply]:
        return [Reply(r) for s in self.steps for r in s.get("replies", [])] + self.trailing

    def key(self, texts: bool = False) -> dict:
        steps = []
        for s in self.steps:
            if "send" in s:
                continue
            k = {"replies": [Reply(r).key(texts) for r in s["replies"]]}
            for flag in ("closed", "timeout"):
                if s.get(flag):
                    k[flag] = True
            steps.append(k)
        return {"steps": steps, "trailing": [r.key(texts) for r in self.trailing],
                "queued": [{"sender": q["sender"], "rcpts": q["rcpts"]} for q in self.queued]}

    def to_json(self) -> dict:
        return {"dialog": self.dialog, "steps": self.steps,
                "trailing": [r.lines for r in self.trailing], "queued": self.queued}

    @classmethod
    def from_json(cls, d: dict) -> Transcript:
        return cls(d["dialog"], d["steps"], [Reply(r) for r in d["trailing"]], d["queued"])

    def render(self) -> str:
        """The transcript as text, for failure messages."""
        out = []
        for s in self.steps:
            if "send" in s:
                out.append(f"C: {s['send']}")
            else:
                for r in s["replies"]:
                    out.extend(f"S: {line}" for line in r)
                if s.get("timeout"):
                    out.append("S: (timeout)")
                if s.get("closed"):
                    out.append("S: (closed)")
        for r in self.trailing:
            out.extend(f"S(trailing): {line}" for line in r.lines)
        for q in self.queued:
            out.append(f"queued: from=<{q['sender']}> to={q['rcpts']}")
        return "\n".join(out)


# -- the player ------------------------------------------------------------------------

class _Conn:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self, deadline: float) -> bool:
        """Read more; False on timeout. Sets eof on close or reset."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionError:
            data = b""
        if not data:
            self.eof = True
        self.buf += data
        return True

    def reply(self, deadline: float) -> Reply | None:
        """One complete reply, or None (self.eof tells a close from a timeout)."""
        lines: list[str] = []
        while True:
            while b"\n" not in self.buf:
                if self.eof or not self._fill(deadline):
                    if lines or self.buf:   # a partial reply before the close
                        if self.eof:
                            tail = [self.buf.decode("latin-1")] if self.buf else []
                            self.buf = b""
                            return Reply(lines + tail)
                        self.buf = ("\r\n".join(lines) + ("\r\n" if lines else "")).encode(
                            "latin-1") + self.buf
                    return None
            raw, self.buf = self.buf.split(b"\n", 1)
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            lines.append(line)
            if not re.match(r"\d{3}-", line):
                return Reply(lines)

    def send(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            pass        # the server closed; the next wait records it


def play(dialog: Dialog, host: str, port: int, log_text=None,
         reply_timeout: float = REPLY_TIMEOUT) -> Transcript:
    """Play DIALOG against HOST:PORT. With LOG_TEXT (a callable returning
    the server's mail log), the envelopes of queued messages are added."""
    t = Transcript(dialog.id)
    sock = socket.create_connection((host, port), timeout=reply_timeout)
    conn = _Conn(sock)
    try:
        for step in dialog.steps:
            if step.op == "send":
                t.steps.append({"send": show_bytes(step.data)})
                conn.send(step.data)
            elif step.op == "shutdown":
                t.steps.append({"send": "(shutdown)"})
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
            elif step.op == "recv":
                deadline = time.monotonic() + reply_timeout
                rec: dict = {"line": step.line, "replies": []}
                for _ in range(step.count):
                    r = conn.reply(deadline)
                    if r is None:
                        rec["closed" if conn.eof else "timeout"] = True
                        break
                    rec["replies"].append(r.lines)
                t.steps.append(rec)
            elif step.op == "close":
                deadline = time.monotonic() + reply_timeout
                rec = {"line": step.line, "replies": []}
                while True:
                    r = conn.reply(deadline)
                    if r is None:
                        rec["closed" if conn.eof else "timeout"] = True
                        break
                    rec["replies"].append(r.lines)
                t.steps.append(rec)
        if not conn.eof:
            deadline = time.monotonic() + TRAILING_WAIT
            while (r := conn.reply(deadline)) is not None:
                t.trailing.append(r)
    finally:
        sock.close()
    if log_text is not None:
        from tests.postfix_instance import wait_envelope

        for r in t.replies():
            qid = r.queued_id()
            if qid:
                env = wait_envelope(log_text, qid)
                t.queued.append({"qid": qid, "sender": env.sender, "rcpts": env.rcpts})
    return t


# -- recorded transcripts ---------------------------------------------------------------

def expected_path(group: str) -> Path:
    return EXPECTED_DIR / f"{group}.json"


def load_expected(group: str) -> dict[str, Transcript]:
    try:
        data = json.loads(expected_path(group).read_text())
    except FileNotFoundError:
        return {}
    return {name: Transcript.from_json(d) for name, d in data.items()}


def save_expected(group: str, transcripts: dict[str, Transcript]) -> None:
    EXPECTED_DIR.mkdir(exist_ok=True)
    data = {name: t.to_json() for name, t in transcripts.items()}
    for d in data.values():     # queue ids change from run to run
        for q in d["queued"]:
            q["qid"] = "QID"
        for step in d["steps"]:
            for r in step.get("replies", []):
                r[:] = [_QUEUED.sub("queued as QID", line) for line in r]
    expected_path(group).write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.rsplit("\n\n", 1)[-1], file=sys.stderr)
        return 2
    host, port, path, *names = argv
    group = parse(Path(path))
    for d in group.dialogs:
        if names and d.name not in names:
            continue
        print(f"=== {d.name}")
        print(play(d, host, int(port)).render())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

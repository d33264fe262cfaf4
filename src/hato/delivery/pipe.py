"""Delivery to external commands: pipe(8)'s ``argv=`` and local(8)'s
``|command`` (Postfix's pipe/pipe.c and global/pipe_command.c).

* :func:`parse_pipe_flags` reads pipe(8)'s ``flags=`` (``B D F O R X h q u
  . >``; any other letter is an error, as in Postfix).
* :func:`expand_pipe_argv` expands ``$name``, ``${name}``, ``$(name)`` and
  the conditional ``${name?text}``/``${name:text}`` forms in each argument,
  once — values are never re-expanded, so a ``$`` in an address stays. An
  argument that uses a per-recipient macro (``recipient``,
  ``original_recipient``, ``user``, ``extension``, ``mailbox``,
  ``domain``) becomes one argument per recipient; one whose ``$user`` is
  empty is left out for that recipient (Cyrus bulletin boards). The
  ``q`` flag quotes the local part of ``$sender``, ``$recipient`` and
  ``$original_recipient`` as RFC 822 requires; ``u`` folds the local part
  of addresses (and ``$user``, ``$extension``, ``$mailbox``) to lower
  case; ``h`` folds the domain part (and ``$domain``, ``$nexthop``). An
  unknown macro name is a configuration error (4.3.5).
* :func:`command_argv` turns a local(8) command line into an argument
  vector: run directly when it holds no shell magic, else by ``/bin/sh
  -c``, or by ``local_command_shell``.
* :func:`run_pipe` runs the command as the given user in its own session
  with a clean environment (``export_environment`` plus ``PATH``), streams
  the message to its standard input with the flags' additions (From_ line,
  Return-Path:, X-Original-To:, Delivered-To:, ``>From`` and dot quoting,
  a blank line at the end, the ``eol=`` line end), captures the first 4096
  bytes of its output, enforces the time limit (killing the whole process
  group), and maps the outcome as Postfix does:

  - exit 0: delivered, even when the command did not read its input
    (a broken pipe is not an error);
  - non-zero exit whose output begins with an enhanced status ``4.X.Y``
    or ``5.X.Y``: that status and the rest of the output;
  - a <sysexits.h> exit code: its status and text (:data:`SYS_EXITS`),
    e.g. 75 EX_TEMPFAIL → 4.3.0 "temporary failure" (deferred), 67
    EX_NOUSER → 5.1.1 "user unknown", 69 EX_UNAVAILABLE → 5.3.0 "service
    unavailable" (bounced);
  - any other exit code: 5.3.0 "Command died with status N";
  - killed by a signal, or over the time limit: temporary 4.3.0 — Postfix
    reports 5.3.0 here and so bounces; hato defers, so that a crashed or
    hung filter loses no mail (docs/delivery.md).

Failures raise :class:`~hato.delivery.dsn.DeliveryError` whose
``diagnostic_type`` is ``x-unix`` and ``diagnostic_text`` the command
output (or the sysexits text), as Postfix's DSNs show.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..config.errors import ExpandError
from ..config.expand import Expander, referenced_names
from ..tables.search import split_extension
from .dsn import DeliveryError, quote_822_local
from .mbox import LineCopier, envelope_headers, from_line, privileged_for

# -- sysexits ------------------------------------------------------------------------------

#: <sysexits.h> codes: (name, status, text) as Postfix's sys_exits.c.
SYS_EXITS: dict[int, tuple[str, str, str]] = {
    64: ("EX_USAGE", "5.3.0", "command line usage error"),
    65: ("EX_DATAERR", "5.6.0", "data format error"),
    66: ("EX_NOINPUT", "5.3.0", "cannot open input"),
    67: ("EX_NOUSER", "5.1.1", "user unknown"),
    68: ("EX_NOHOST", "5.1.2", "host name unknown"),
    69: ("EX_UNAVAILABLE", "5.3.0", "service unavailable"),
    70: ("EX_SOFTWARE", "5.3.0", "internal software error"),
    71: ("EX_OSERR", "4.3.0", "system resource problem"),
    72: ("EX_OSFILE", "5.3.0", "critical OS file missing"),
    73: ("EX_CANTCREAT", "5.2.0", "can't create user output file"),
    74: ("EX_IOERR", "5.3.0", "input/output error"),
    75: ("EX_TEMPFAIL", "4.3.0", "temporary failure"),
    76: ("EX_PROTOCOL", "5.5.0", "remote error in protocol"),
    77: ("EX_NOPERM", "5.7.0", "permission denied"),
    78: ("EX_CONFIG", "5.3.5", "local configuration error"),
}

OUTPUT_LIMIT = 4096  # VSTREAM_BUFSIZE: how much command output is kept
DEFAULT_PATH = "/usr/bin:/bin"  # _PATH_DEFPATH
EXPORT_ENVIRONMENT = ("TZ", "MAIL_CONFIG", "LANG")


def sys_exits_detail(code: int) -> tuple[str, str]:
    """(status, text) for an exit code; unknown codes are 5.3.0 "unknown
    mail system error N"."""
    if code in SYS_EXITS:
        return SYS_EXITS[code][1], SYS_EXITS[code][2]
    return "5.3.0", f"unknown mail system error {code}"


# -- flags ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipeFlags:
    """pipe(8)'s ``flags=`` letters."""

    blank: bool = False          # B: append a blank line
    delivered_to: bool = False   # D: Delivered-To: (and loop check)
    from_line: bool = False      # F: From_ line
    original_to: bool = False    # O: X-Original-To:
    return_path: bool = False    # R: Return-Path:
    final_delivery: bool = False  # X: success DSN says "delivered", not "relayed"
    fold_host: bool = False      # h
    quote_local: bool = False    # q
    fold_user: bool = False      # u
    dot: bool = False            # .
    quote_from: bool = False     # >


_FLAG_FIELDS = {"B": "blank", "D": "delivered_to", "F": "from_line", "O": "original_to",
                "R": "return_path", "X": "final_delivery", "h": "fold_host",
                "q": "quote_local", "u": "fold_user", ".": "dot", ">": "quote_from"}

#: local(8) pipes to commands with From_, Return-Path:, X-Original-To: and
#: (prepend_delivered_header has "command") Delivered-To:.
LOCAL_COMMAND_FLAGS = PipeFlags(from_line=True, return_path=True, original_to=True,
                                delivered_to=True)


def parse_pipe_flags(text: str) -> PipeFlags:
    """``"DRhu"`` → PipeFlags; ValueError ``unknown flag: c`` otherwise."""
    fields: dict[str, bool] = {}
    for ch in text:
        name = _FLAG_FIELDS.get(ch)
        if name is None:
            raise ValueError(f"unknown flag: {ch}")
        fields[name] = True
    return PipeFlags(**fields)


def _as_flags(flags: PipeFlags | str) -> PipeFlags:
    return flags if isinstance(flags, PipeFlags) else parse_pipe_flags(flags)


# -- argv= expansion --------------------------------------------------------------------------

_PER_RECIPIENT = ("recipient", "original_recipient", "user", "extension", "mailbox", "domain")
_KNOWN = frozenset(_PER_RECIPIENT + (
    "nexthop", "sender", "size", "queue_id", "client_address", "client_helo",
    "client_hostname", "client_port", "client_protocol", "sasl_method", "sasl_sender",
    "sasl_username"))


def fold_address(address: str, *, user: bool, host: bool) -> str:
    """fold_addr(): lower-case the local part and/or the domain part (the
    text left/right of the right-most ``@``)."""
    at = address.rfind("@")
    local, domain = (address, None) if at < 0 else (address[:at], address[at + 1:])
    if user:
        local = local.lower()
    if host and domain is not None:
        domain = domain.lower()
    return local if domain is None else f"{local}@{domain}"


def _morph(address: str, flags: PipeFlags, *, quote: bool) -> str:
    if quote and flags.quote_local:
        address = quote_822_local(address)
    if flags.fold_user or flags.fold_host:
        address = fold_address(address, user=flags.fold_user, host=flags.fold_host)
    return address


def expand_pipe_argv(argv_template: Sequence[str], *,
                     sender: str,
                     recipient: str | Sequence[str],
                     original_recipient: str | Sequence[str] | None = None,
                     nexthop: str = "",
                     size: int | str = 0,
                     queue_id: str = "",
                     recipient_delimiter: str = "",
                     flags: PipeFlags | str = "",
                     null_sender: str = "MAILER-DAEMON",
                     client_address: str = "",
                     client_helo: str = "",
                     client_hostname: str = "",
                     client_port: str = "",
                     client_protocol: str = "",
                     sasl_method: str = "",
                     sasl_sender: str = "",
                     sasl_username: str = "",
                     service: str = "pipe") -> list[str]:
    """Expand a pipe(8) ``argv=`` template for one delivery request.

    *recipient* is one address or the request's list; *original_recipient*
    likewise (defaults to the recipients). ``$user``, ``$extension``,
    ``$mailbox`` and ``$domain`` are taken from each recipient with
    *recipient_delimiter*. Raises DeliveryError 4.3.5 "mail system
    configuration error" for an unknown macro or bad syntax (the cause
    names it)."""
    fl = _as_flags(flags)
    rcpts = [recipient] if isinstance(recipient, str) else list(recipient)
    if original_recipient is None:
        origs = list(rcpts)
    elif isinstance(original_recipient, str):
        origs = [original_recipient]
    else:
        origs = list(original_recipient)
    origs += [""] * (len(rcpts) - len(origs))

    snd = sender if sender else null_sender
    if snd and fl.quote_local:
        snd = quote_822_local(snd)
    common = {
        "sender": snd,
        "nexthop": nexthop.lower() if fl.fold_host else nexthop,
        "size": str(size),
        "queue_id": queue_id,
        "client_address": client_address,
        "client_helo": client_helo,
        "client_hostname": client_hostname,
        "client_port": client_port,
        "client_protocol": client_protocol,
        "sasl_method": sasl_method,
        "sasl_sender": sasl_sender,
        "sasl_username": sasl_username,
    }

    out: list[str] = []
    for arg in argv_template:
        try:
            names = set(referenced_names(arg, strict=True))
        except ExpandError as exc:
            raise _config_error(f"service {service}: {exc}") from exc
        unknown = names - _KNOWN
        if unknown:
            raise _config_error(f'service {service}: unknown macro name: '
                                f'"{min(unknown)}"')
        if not names & set(_PER_RECIPIENT):
            out.append(_expand(arg, common))
            continue
        for rcpt, orig in zip(rcpts, origs):
            values = dict(common)
            values["recipient"] = _morph(rcpt, fl, quote=True)
            values["original_recipient"] = _morph(orig, fl, quote=True)
            plain = _morph(rcpt, fl, quote=False)
            at = plain.rfind("@")
            mailbox, domain = (plain, "") if at < 0 else (plain[:at], plain[at + 1:])
            split = split_extension(mailbox, recipient_delimiter)
            user, ext = (mailbox, "") if split is None else (split[0], split[1][1:])
            if "user" in names and not user:
                continue
            values.update(user=user, extension=ext, mailbox=mailbox, domain=domain)
            out.append(_expand(arg, values))
    return out


def _expand(arg: str, values: Mapping[str, str]) -> str:
    try:
        return Expander(values.get, recurse=False).expand(arg)
    except ExpandError as exc:
        raise _config_error(str(exc)) from exc


def _config_error(detail: str) -> DeliveryError:
    err = DeliveryError("mail system configuration error", dsn="4.3.5")
    err.__cause__ = ValueError(detail)
    return err


# -- local(8) command lines -----------------------------------------------------------------

_SHELL_SAFE = frozenset("1234567890abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_/.,:+ \t")


def command_argv(command: str, *, shell: str = "") -> list[str]:
    """exec_command(): a command without shell magic characters runs
    directly; anything else through ``/bin/sh -c``; with
    ``local_command_shell`` set, always through that shell (its own words,
    then ``-c``-less command, as Postfix passes it)."""
    if shell.strip():
        return shell.split() + [command]
    if command and all(ch in _SHELL_SAFE for ch in command) and command.split():
        return command.split()
    return ["/bin/sh", "-c", command]


# -- running ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PipeResult:
    """A successful delivery: the command's exit status (0) and output."""

    status: int
    output: str


_DSN_AT_START = re.compile(r"\s*([45]\.\d{1,3}\.\d{1,3})(?:\s+|\Z)(.*)\Z", re.DOTALL)


def _clean_output(raw: bytes) -> str:
    """Tabs and newlines become blanks, other non-printables ``_``."""
    text = raw.decode("utf-8", "replace")
    text = text.replace("\t", " ").replace("\n", " ")
    return "".join(ch if (ch.isprintable() or ch == " ") else "_" for ch in text)


def clean_environment(env: Mapping[str, str] | None, *,
                      export_environment: Iterable[str] = EXPORT_ENVIRONMENT,
                      filter_chars: str | None = None) -> dict[str, str]:
    """The command's environment: the exported variables of this process,
    ``PATH``, then *env* (its values censored to *filter_chars* when given,
    like command_expansion_filter)."""
    result = {name: os.environ[name] for name in export_environment if name in os.environ}
    result["PATH"] = DEFAULT_PATH
    for name, value in (env or {}).items():
        if filter_chars is not None:
            allowed = set(filter_chars)
            value = "".join(ch if ch in allowed else "_" for ch in value)
        result[name] = value
    return result


def run_pipe(argv: Sequence[str], chunks: Iterable[bytes], *,
             uid: int | None = None,
             gid: int | None = None,
             env: Mapping[str, str] | None = None,
             timeout: float = 1000.0,
             cwd: str | None = None,
             flags: PipeFlags | str = "",
             sender: str = "",
             original_recipient: str = "",
             delivered_to: str = "",
             null_sender: str = "",
             eol: bytes = b"\n",
             command_text: str | None = None,
             export_environment: Iterable[str] = EXPORT_ENVIRONMENT,
             now: float | None = None) -> PipeResult:
    """Run *argv* and stream the message (*chunks*) to its standard input.

    *uid*/*gid*: the rights to run with; when this process is root they
    are required and must not be root's (Postfix never runs a delivery
    command as root). *env* is added to a clean environment. *flags* are
    pipe(8)'s; local(8) uses :data:`LOCAL_COMMAND_FLAGS`. *null_sender*
    replaces an empty *sender* in the From_ line and ``Return-Path:``:
    local(8) keeps it empty (``Return-Path: <>``, the From_ line says
    MAILER-DAEMON); pipe(8) passes its ``null_sender=`` attribute
    (default MAILER-DAEMON). *command_text*
    names the command in error texts (default ``argv[0]``). Returns a
    :class:`PipeResult`; raises :class:`DeliveryError` (see the module
    documentation for the mapping)."""
    fl = _as_flags(flags)
    if not argv:
        raise _config_error("empty command")
    name = command_text if command_text is not None else argv[0]
    if os.geteuid() == 0 and not privileged_for(uid):
        raise _config_error("refusing to run a delivery command with root privileges")
    if os.geteuid() == 0 and gid == 0:
        raise _config_error("refusing to run a delivery command with group id 0")

    # What goes before and after the content (mail_copy()).
    prefix = bytearray()
    snd = sender if sender else null_sender
    if fl.from_line:
        prefix += from_line(snd, now, eol)
    prefix += b"".join(envelope_headers(
        sender=snd if fl.return_path else None,
        original_recipient=original_recipient if fl.original_to else None,
        delivered_to=(delivered_to or None) if fl.delivered_to else None,
        eol=eol))
    copier = LineCopier(quote_from=fl.quote_from, dot=fl.dot, eol=eol, blank=fl.blank)

    popen_kw: dict = {}
    if privileged_for(uid):
        popen_kw.update(user=uid, group=gid if gid is not None else uid, extra_groups=[])
    environment = clean_environment(env, export_environment=export_environment)

    def start(args: Sequence[str]) -> subprocess.Popen:
        return subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, cwd=cwd, env=environment,
                                start_new_session=True, close_fds=True, **popen_kw)

    try:
        try:
            proc = start(argv)
        except FileNotFoundError:
            # A local(8) command may be a shell built-in (exec_command()
            # tries the shell next); pipe(8)'s argv= is executed directly.
            if command_text is None or "/" in argv[0]:
                raise
            proc = start(["/bin/sh", "-c", command_text])
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC, errno.ENOTDIR):
            # Postfix's child exits EX_TEMPFAIL after a failed exec.
            detail = f"execvp {argv[0]}: {exc.strerror}"
            raise DeliveryError(f"{SYS_EXITS[75][2]}. Command output: {detail}",
                                dsn="4.3.0", diagnostic_type="x-unix",
                                diagnostic_text=detail) from exc
        raise DeliveryError(f"Delivery failed: {exc.strerror}", dsn="4.3.0",
                            diagnostic_type="x-unix",
                            diagnostic_text="system resource problem") from exc

    deadline = time.monotonic() + timeout
    try:
        output, write_error, timed_out, read_error = _exchange(proc, bytes(prefix), chunks,
                                                               copier, deadline)
    except BaseException:
        # Never leave a command behind, whatever went wrong here.
        _kill(proc)
        proc.wait()
        raise
    status = _wait(proc, deadline, timed_out)
    timed_out = timed_out or status is None
    log = _clean_output(output)
    tail = f". Command output: {log}" if log else ""

    if read_error is not None:
        raise DeliveryError(f"error reading message: {read_error.strerror}",
                            dsn="4.3.0") from read_error
    if timed_out:
        raise DeliveryError(f"Command time limit exceeded: \"{name}\"{tail}", dsn="4.3.0",
                            diagnostic_type="x-unix",
                            diagnostic_text=log or SYS_EXITS[70][2])
    assert status is not None
    if status < 0:
        raise DeliveryError(f"Command died with signal {-status}: \"{name}\"{tail}",
                            dsn="4.3.0", diagnostic_type="x-unix",
                            diagnostic_text=log or SYS_EXITS[70][2])
    if status != 0:
        m = _DSN_AT_START.match(log)
        if m:
            text = m.group(2).strip()
            raise DeliveryError(text or log, dsn=m.group(1), diagnostic_type="x-unix",
                                diagnostic_text=text or log)
        dsn, text = sys_exits_detail(status)
        if status in SYS_EXITS:
            raise DeliveryError(f"{text}{tail}", dsn=dsn, diagnostic_type="x-unix",
                                diagnostic_text=log or text)
        raise DeliveryError(f"Command died with status {status}: \"{name}\"{tail}",
                            dsn=dsn, diagnostic_type="x-unix", diagnostic_text=log or text)
    if write_error is not None and write_error.errno != errno.EPIPE:
        raise DeliveryError(f"Command failed: error writing message: "
                            f"{write_error.strerror}: \"{name}\"", dsn="5.3.0",
                            diagnostic_type="x-unix",
                            diagnostic_text=SYS_EXITS[74][2])
    return PipeResult(0, log)


def _exchange(proc: subprocess.Popen, head: bytes, chunks: Iterable[bytes],
              copier: LineCopier, deadline: float
              ) -> tuple[bytes, OSError | None, bool, OSError | None]:
    """Write the message to the command while reading its output, until
    the input is written and the output closed (or the command exited), or
    the deadline passes. Returns (output, write error, timed out, read
    error of the message source)."""
    assert proc.stdin is not None and proc.stdout is not None
    win = proc.stdin.fileno()
    rout = proc.stdout.fileno()
    os.set_blocking(win, False)
    os.set_blocking(rout, False)
    output = bytearray()
    write_error: OSError | None = None
    read_error: OSError | None = None
    pending = memoryview(bytes(head))
    source = iter(chunks)
    source_done = False
    stdin_open = True
    out_open = True
    sel = selectors.DefaultSelector()
    sel.register(win, selectors.EVENT_WRITE)
    sel.register(rout, selectors.EVENT_READ)

    def close_stdin() -> None:
        nonlocal stdin_open
        if stdin_open:
            sel.unregister(win)
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass
            stdin_open = False

    try:
        while stdin_open or out_open:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(output), write_error, True, read_error
            if not stdin_open and proc.poll() is not None:
                # The command is gone; take what output is there and stop
                # (a background child may hold the pipe open forever).
                _drain(rout, output)
                break
            events = sel.select(min(remaining, 0.5 if not stdin_open else remaining))
            for key, _mask in events:
                if key.fd == rout:
                    try:
                        data = os.read(rout, 65536)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(rout)
                        out_open = False
                    elif len(output) < OUTPUT_LIMIT:
                        output += data[:OUTPUT_LIMIT - len(output)]
                elif key.fd == win and stdin_open:
                    while True:
                        if not pending:
                            if source_done:
                                close_stdin()
                                break
                            try:
                                chunk = next(source)
                            except StopIteration:
                                source_done = True
                                pending = memoryview(copier.finish())
                                continue
                            except OSError as exc:
                                read_error = exc
                                source_done = True
                                close_stdin()
                                break
                            pending = memoryview(copier.feed(chunk))
                            continue
                        try:
                            n = os.write(win, pending)
                        except BlockingIOError:
                            break
                        except OSError as exc:
                            write_error = exc
                            close_stdin()
                            break
                        pending = pending[n:]
        return bytes(output), write_error, False, read_error
    finally:
        sel.close()
        if stdin_open:
            try:
                proc.stdin.close()
            except OSError:
                pass
        try:
            proc.stdout.close()
        except OSError:
            pass


def _drain(fd: int, output: bytearray) -> None:
    while len(output) < OUTPUT_LIMIT:
        try:
            data = os.read(fd, 65536)
        except (BlockingIOError, OSError):
            return
        if not data:
            return
        output += data[:OUTPUT_LIMIT - len(output)]


def _kill(proc: subprocess.Popen) -> None:
    """Kill the command and its offspring (it leads its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        try:
            proc.kill()
        except OSError:
            pass


def _wait(proc: subprocess.Popen, deadline: float, timed_out: bool) -> int | None:
    """The exit status (negative: the signal), or None after a timeout."""
    if timed_out:
        _kill(proc)
        proc.wait()
        return None
    try:
        status = proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.wait()
        return None
    return status


__all__ = [
    "LOCAL_COMMAND_FLAGS",
    "SYS_EXITS",
    "PipeFlags",
    "PipeResult",
    "clean_environment",
    "command_argv",
    "expand_pipe_argv",
    "fold_address",
    "parse_pipe_flags",
    "run_pipe",
    "sys_exits_detail",
]

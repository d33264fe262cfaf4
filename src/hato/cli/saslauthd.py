"""``hato saslauthd`` (the daemon) and ``hato testsaslauthd`` (its test client).

    hato saslauthd -a MECH [-m RUNDIR] [-n N] [-c] [-t TTL] [-s KB] [-d]
                   [-O OPTION] [-r] [-l] [-T SECONDS] [-v] [-h]

Options as Cyrus saslauthd 2.1.28 reads them: ``-a`` mechanism (see ``-v``),
``-m`` run directory (socket ``RUNDIR/mux``, pid file
``RUNDIR/saslauthd.pid``; default /var/run/saslauthd), ``-n`` worker count
(default 5; 0: up to 64), ``-c`` credential cache, ``-t`` its time to live in
seconds (default 28800), ``-s`` its size in kilobytes (default 64), ``-d``
foreground with debug log on standard error (else the daemon detaches and
logs to syslog, facility auth), ``-O`` the mechanism's option (sasldb: the
database path; rimap: host[:port]; shadow: the shadow file), ``-r`` pass
``login@realm`` to the mechanism, ``-l`` (no accept lock: accepted, hato has
none), ``-v`` version and mechanisms. ``-T`` (hato's own) is how long a
client may take to send its request (default 30 s).

    hato testsaslauthd -u USER -p PASSWORD [-r REALM] [-s SERVICE] [-f SOCKET] [-R N]

prints ``0: OK "Success."`` or ``0: NO "authentication failed"`` per
attempt and exits 0 or 255, as Debian's testsaslauthd.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import os
import signal
import sys

from .. import __version__
from .common import Fatal, UsageError, parse_options

SASLAUTHD_USAGE = ("usage: hato saslauthd -a MECH [-m RUNDIR] [-n N] [-c] [-t TTL] [-s KB] "
                   "[-d] [-O OPTION] [-r] [-l] [-T SECONDS] [-v] [-h]")


def _number(opt: str, text: str, *, real: bool = False):
    try:
        value = float(text) if real else int(text, 10)
    except ValueError:
        raise UsageError(f"{opt}: not a number: {text}") from None
    if value < 0:
        raise UsageError(f"{opt}: negative: {text}")
    return value


def _setup_logging(debug: bool) -> None:
    logger = logging.getLogger("hato")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = False
    fmt = logging.Formatter(f"hato-saslauthd[{os.getpid()}]: %(message)s")
    if debug:
        handler: logging.Handler = logging.StreamHandler(sys.stderr)
        logger.setLevel(logging.DEBUG)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(
            "/dev/log", facility=logging.handlers.SysLogHandler.LOG_AUTH)
        logger.setLevel(logging.INFO)
    else:
        handler = logging.NullHandler()
    handler.setFormatter(fmt)
    logger.addHandler(handler)


def _detach() -> int:
    """Fork into the background (double fork, new session, stdio on
    /dev/null). Returns, in the daemon, the write end of a pipe on which it
    reports its start ("" for success, else the error); the first process
    waits for that report and exits with it."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        os.close(wfd)
        chunks = []
        while True:
            chunk = os.read(rfd, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(rfd)
        os.waitpid(pid, 0)
        report = b"".join(chunks).decode("utf-8", "replace")
        if report == "ok":
            os._exit(0)
        print(f"saslauthd: fatal: {report or 'daemon died while starting'}", file=sys.stderr)
        os._exit(1)
    os.close(rfd)
    os.setsid()
    if os.fork():
        os._exit(0)
    os.chdir("/")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if null > 2:
        os.close(null)
    return wfd


def saslauthd_main(argv: list[str]) -> int:
    from ..auth import pwcheck
    from ..auth import saslauthd_server as srv

    try:
        opts, args = parse_options(argv, "a:cdhlm:n:O:rs:t:T:vV")
        if args:
            raise UsageError(f"unexpected argument: {args[0]}")
        mech_name = None
        run_path = srv.DEFAULT_RUN_PATH
        workers = srv.DEFAULT_WORKERS
        cache = False
        ttl = float(srv.DEFAULT_CACHE_TTL)
        cache_kb = srv.DEFAULT_CACHE_KB
        debug = realm_join = False
        option = None
        read_timeout = srv.DEFAULT_READ_TIMEOUT
        for opt, val in opts:
            if opt == "-a":
                mech_name = val
            elif opt == "-c":
                cache = True
            elif opt == "-d":
                debug = True
            elif opt == "-h":
                print(SASLAUTHD_USAGE)
                return 0
            elif opt == "-l":
                pass
            elif opt == "-m":
                run_path = val
            elif opt == "-n":
                workers = _number(opt, val)
            elif opt == "-O":
                option = val
            elif opt == "-r":
                realm_join = True
            elif opt == "-s":
                cache_kb = _number(opt, val)
            elif opt == "-t":
                ttl = _number(opt, val, real=True)
            elif opt == "-T":
                read_timeout = _number(opt, val, real=True) or srv.DEFAULT_READ_TIMEOUT
            elif opt in ("-v", "-V"):
                print(f"hato-saslauthd {__version__} (saslauthd 2.1.28 compatible)")
                print("authentication mechanisms: " + " ".join(pwcheck.available_mechanisms()))
                return 0
        if not mech_name:
            raise UsageError("no authentication mechanism specified (-a)")
        if not os.path.isabs(run_path):
            raise Fatal(f"-m {run_path}: the run path must be absolute")
        try:
            mechanism = pwcheck.make_mechanism(mech_name, option)
        except pwcheck.MechanismError as err:
            raise Fatal(str(err)) from None
        srv.prepare_run_dir(run_path)
    except UsageError as err:
        print(f"saslauthd: fatal: {err}\n{SASLAUTHD_USAGE}", file=sys.stderr)
        return 1
    except (Fatal, srv.StartupError) as err:
        print(f"saslauthd: fatal: {err}", file=sys.stderr)
        return 1

    report_fd = -1 if debug else _detach()

    def report(text: str) -> None:
        nonlocal report_fd
        if report_fd >= 0:
            os.write(report_fd, text.encode("utf-8", "replace"))
            os.close(report_fd)
            report_fd = -1

    _setup_logging(debug)
    log = srv.log
    pidfile = srv.PidFile(run_path)
    sock_path = os.path.join(run_path, srv.SOCKET_NAME)
    try:
        pidfile.acquire()
    except srv.StartupError as err:
        if debug:
            print(f"saslauthd: fatal: {err}", file=sys.stderr)
        else:
            log.error("%s", err)
        report(str(err))
        return 1
    sock = None
    try:
        try:
            sock = srv.bind_socket(sock_path)
        except srv.StartupError as err:
            if debug:
                print(f"saslauthd: fatal: {err}", file=sys.stderr)
            else:
                log.error("%s", err)
            report(str(err))
            return 1
        log.debug("num_procs  : %d", workers)
        log.debug("mech_option: %s", option if option is not None else "NULL")
        log.debug("run_path   : %s", run_path)
        log.debug("auth_mech  : %s", mech_name)
        log.debug("listening on socket: %s", sock_path)
        cache_obj = (srv.CredentialCache(ttl, cache_kb * 1024 // srv.CACHE_ENTRY_BYTES)
                     if cache else None)
        server = srv.SaslauthdServer(mechanism, mech_name, workers=workers, cache=cache_obj,
                                     realm_join=realm_join, read_timeout=read_timeout)
        asyncio.run(_serve(server, sock, report, log))
        return 0
    finally:
        if sock is not None:
            sock.close()
            try:
                if os.path.exists(sock_path):
                    os.unlink(sock_path)
                    log.debug("socket removed: %s", sock_path)
            except OSError:
                pass
        pidfile.release()
        log.debug("master exited")


async def _serve(server, sock, report, log) -> None:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def on_signal(signame: str) -> None:
        log.debug("caught %s: stopping", signame)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig.name)
    await server.start(sock)
    report("ok")
    await stopping.wait()
    await server.stop()


# -- testsaslauthd -----------------------------------------------------------------------

TEST_USAGE = ("testsaslauthd: usage: testsaslauthd -u username -p password\n"
              "              [-r realm] [-s servicename]\n"
              "              [-f socket path] [-R repeatnum]")


def testsaslauthd_main(argv: list[str]) -> int:
    import socket as socketmod

    from ..proto.saslauthd import (SaslauthdProtocolError, encode_request, parse_reply,
                                   reply_length)

    try:
        opts, args = parse_options(argv, "u:p:r:s:f:R:")
    except UsageError:
        print(TEST_USAGE, file=sys.stderr)
        return 255
    values = dict(opts)
    if args or "-u" not in values or "-p" not in values:
        print(TEST_USAGE, file=sys.stderr)
        return 255
    path = values.get("-f", "/var/run/saslauthd/mux")
    try:
        repeat = max(1, int(values.get("-R", "1")))
    except ValueError:
        print(TEST_USAGE, file=sys.stderr)
        return 255
    try:
        request = encode_request(values["-u"], values["-p"], values.get("-s", "imap"),
                                 values.get("-r", ""))
    except SaslauthdProtocolError as err:
        print(f"testsaslauthd: {err}", file=sys.stderr)
        return 255
    status = 0
    for i in range(repeat):
        sock = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
        data = b""
        try:
            sock.settimeout(60)
            sock.connect(path)
            sock.sendall(request)
            while True:
                need = reply_length(data)
                if need is not None and len(data) >= need:
                    break
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            print(f"connect() : {err.strerror or err}", file=sys.stderr)
            return 255
        finally:
            sock.close()
        try:
            ok, _text = parse_reply(data)
        except SaslauthdProtocolError:
            ok = False
        if ok:
            print(f'{i}: OK "Success."')
        else:
            print(f'{i}: NO "authentication failed"')
            status = 255
    return status


__all__ = ["saslauthd_main", "testsaslauthd_main"]

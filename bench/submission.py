"""Submission sessions: STARTTLS + AUTH PLAIN + one message + QUIT per
session, hato's smtpd against Debian's Postfix (Cyrus SASL), both asking
the same Debian saslauthd.

Both instances get the same main.cf (hato init's, plus SETTINGS below) and
the same submission entry in master.cf on a 127.0.0.1 port:

    127.0.0.1:PORT inet n - n - - smtpd
      -o syslog_name=postfix/submission
      -o smtpd_tls_security_level=encrypt
      -o smtpd_sasl_auth_enable=yes
      -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject

and the same Cyrus application file ``$cyrus_sasl_config_path/smtpd.conf``
(``pwcheck_method: saslauthd``, ``mech_list: PLAIN LOGIN``,
``saslauthd_path``) pointing at one ``saslauthd -a shadow`` that the bench
starts on a socket in its temp directory, checking a system user the bench
creates with a password (``useradd`` + ``chpasswd -c SHA512``) and removes
afterwards. The certificate comes from tests/certs.py's TestCA.

A round runs --sessions-per-round sessions from C concurrent client threads
(smtplib: EHLO, STARTTLS, EHLO, AUTH PLAIN, MAIL, RCPT, DATA with 1 KiB,
QUIT; a full TLS handshake each time, no session resumption), for C in
--concurrency (default 10 and 50), --rounds times, alternating which engine
goes first; the message is discarded, and the queue drains before the next
round. Printed: sessions/second min/median/max per engine, the ratio of
medians (above 1: hato is faster), the instance's CPU per session (every
process under its master, with the children it reaped, before and after the
round, drain included), saslauthd's CPU per session, the client's; then a
Markdown section for bench/RESULTS.md. Runs as root; everything (instances,
saslauthd, user, temp directory) is removed at the end, also after an error
or Ctrl-C. Not a test: no timing is ever asserted.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import smtplib
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
from common import (
    CLK_TCK,
    ROOT,
    BenchError,
    Engine,
    Hato,
    Postfix,
    banner,
    client_cpu,
    cpu_ticks,
    create_mirror,
    descendants,
    drain,
    ensure_system_user,
    free_port,
    hato_command,
    ignore_signals,
    int_list,
    log_since,
    log_size,
    must,
    preflight,
    raise_on_signals,
    run,
    stop_all,
    tail,
    wait_until,
)

sys.path.insert(0, str(ROOT))
from tests.certs import TestCA

PROG = "submission.py"
SAUTHD = "/usr/sbin/saslauthd"
SENDER, RECIPIENT = "bench@client.test", "bench@discard.test"
USER = "hatobsub"

SUBMISSION_OPTS = [
    "syslog_name=postfix/submission",
    "smtpd_tls_security_level=encrypt",
    "smtpd_sasl_auth_enable=yes",
    "smtpd_recipient_restrictions=permit_sasl_authenticated,reject",
]


def settings(work: Path, root: Path) -> list[str]:
    """main.cf lines on top of hato init's (Postfix gets the same, with its paths)."""
    return [
        # not 127.0.0.0/8: only authentication lets the message through
        "mynetworks = 192.0.2.0/24",
        "default_transport = discard",
        "default_process_limit = 1000",
        "smtpd_peername_lookup = no",
        f"smtpd_tls_cert_file = {work}/tls/mx.bench.test-rsa.crt",
        f"smtpd_tls_key_file = {work}/tls/mx.bench.test-rsa.key",
        "smtpd_tls_loglevel = 0",
        "smtpd_sasl_type = cyrus",
        "smtpd_sasl_path = smtpd",
        f"cyrus_sasl_config_path = {root}/sasl",
    ]


def body(size: int) -> bytes:
    head = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench\r\n"
            "Message-ID: <bench@client.test>\r\n\r\n").encode()
    line = b"x" * 70 + b"\r\n"
    out = head
    while len(out) < size:
        out += line
    return out[:size - 2] + b"\r\n"


# -- saslauthd and the user ------------------------------------------------------------

class Saslauthd:
    """``saslauthd -a shadow`` on DIR/mux, in its own session (it signals its
    whole process group on exit)."""

    def __init__(self, directory: Path, workers: int):
        self.dir = directory
        self.mux = directory / "mux"
        self.workers = workers
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(mode=0o755)
        os.chmod(self.dir, 0o755)  # both smtpd's run as their mail owners
        log = self.dir / "saslauthd.out"
        with open(log, "ab") as out:
            self.proc = subprocess.Popen([SAUTHD, "-a", "shadow", "-m", str(self.dir),
                                          "-n", str(self.workers), "-d"], stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True,
                                         cwd="/")
        if not wait_until(lambda: self.mux.exists() or self.proc.poll() is not None, 15) \
                or not self.mux.exists():
            raise BenchError(f"saslauthd did not start:\n{tail(log)}")

    def cpu_seconds(self) -> float:
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        return sum(cpu_ticks(p) for p in descendants(self.proc.pid)) / CLK_TCK

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def add_user(password: str) -> None:
    if run(["getent", "passwd", USER]).returncode == 0:
        raise BenchError(f"user {USER} exists already (left by an earlier run?); "
                         f"remove it with `userdel {USER}` first")
    must(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], "useradd")
    # SHA-512 crypt (5000 rounds): a fixed, moderate cost per check for both
    must(["chpasswd", "-c", "SHA512"], "chpasswd", input=f"{USER}:{password}\n".encode())


def remove_user() -> None:
    run(["userdel", USER])


# -- setup -----------------------------------------------------------------------------

def add_submission_options(master_cf: Path, address: str) -> None:
    """The -o lines under the inet entry at *address*."""
    text = master_cf.read_text()
    opts = "".join(f"  -o {o}\n" for o in SUBMISSION_OPTS)
    text, n = re.subn(rf"(?m)^({re.escape(address)}\s+inet\s.*\n)", lambda m: m.group(1) + opts,
                      text)
    if n != 1:
        raise BenchError(f"{master_cf}: no single inet entry {address}")
    master_cf.write_text(text)


def smtpd_conf(root: Path, mux: Path) -> None:
    conf = root / "sasl"
    conf.mkdir(exist_ok=True)
    # sasldb_path: keeps libsasl's sasldb auxprop plugin away from
    # /etc/sasldb2 (root:sasl 0660 on Debian, which postfix cannot open).
    (conf / "smtpd.conf").write_text(f"pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN\n"
                                     f"saslauthd_path: {mux}\n"
                                     f"sasldb_path: {mux.parent}/no-sasldb2\n")
    os.chmod(conf, 0o755)
    os.chmod(conf / "smtpd.conf", 0o644)


def set_up(work: Path, hato: Hato, postfix: Postfix, mux: Path) -> None:
    hato.create(hato.port, settings(work, hato.root), only_inet=f"127.0.0.1:{hato.port}")
    add_submission_options(hato.root / "master.cf", f"127.0.0.1:{hato.port}")
    smtpd_conf(hato.root, mux)
    create_mirror(hato, postfix)
    add_submission_options(postfix.conf / "master.cf", f"127.0.0.1:{postfix.port}")
    smtpd_conf(postfix.root, mux)
    smtpd_conf(postfix.conf, mux)   # $config_directory/sasl, where Debian's Postfix looks


# -- the client ------------------------------------------------------------------------

def client_context() -> ssl.SSLContext:
    # no certificate check: the client should cost as little as it can
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def one_session(port: int, ctx: ssl.SSLContext, password: str, message: bytes,
                timeout: float) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=timeout) as c:
        c.ehlo()
        code, text = c.starttls(context=ctx)
        if code != 220:
            raise smtplib.SMTPResponseException(code, text)
        c.ehlo()
        c.user, c.password = USER, password
        c.auth("PLAIN", c.auth_plain)
        c.sendmail(SENDER, [RECIPIENT], message)


def run_sessions(port: int, n: int, concurrency: int, password: str, message: bytes,
                 timeout: float) -> tuple[float, list[str]]:
    """n sessions from *concurrency* threads; (seconds, errors)."""
    ctx = client_context()
    lock = threading.Lock()
    left = [n]
    errors: list[str] = []

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0 or len(errors) > 10:
                    return
                left[0] -= 1
            try:
                one_session(port, ctx, password, message, timeout)
            except (OSError, smtplib.SMTPException) as err:
                with lock:
                    errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, errors


@dataclass
class Round:
    seconds: float
    sessions: int
    cpu: float          # the instance's CPU seconds, drain included
    sasl_cpu: float     # saslauthd's
    client_cpu: float   # this process's (the client threads)


def one_round(e: Engine, sasl: Saslauthd, n: int, concurrency: int, password: str,
              message: bytes, timeout: float) -> Round:
    offset = log_size(e)
    cpu0, s0, c0 = e.cpu_seconds(), sasl.cpu_seconds(), client_cpu()
    seconds, errors = run_sessions(e.port, n, concurrency, password, message, timeout)
    c1 = client_cpu()
    if errors:
        raise BenchError(f"{e.name}: {len(errors)} of {n} sessions failed, e.g. {errors[0]}\n"
                         f"--- last lines of {e.maillog}:\n{tail(e.maillog, 20)}")
    sent = drain(e, offset, n, timeout)
    cpu, s1 = e.cpu_seconds() - cpu0, sasl.cpu_seconds()
    if sent != n:
        print(f"warning: {e.name} logged {sent} deliveries for {n} sessions", file=sys.stderr)
    logins = len(re.findall(r"sasl_method=PLAIN, sasl_username=" + USER, log_since(e, offset)))
    if logins != n:
        raise BenchError(f"{e.name}: {logins} logged SASL logins for {n} sessions")
    return Round(seconds, n, cpu, s1 - s0, c1 - c0)


def warm_up(e: Engine, sasl: Saslauthd, password: str, message: bytes, timeout: float) -> None:
    first = banner(e.port)
    if not first.startswith("220"):
        raise BenchError(f"{e.name} greeted with {first!r}\n{tail(e.maillog)}")
    # a wrong password must fail, the right one pass
    try:
        one_session(e.port, client_context(), password + "x", message, timeout)
    except smtplib.SMTPAuthenticationError as err:
        if err.smtp_code != 535:
            raise BenchError(f"{e.name}: a wrong password got {err.smtp_code}") from None
        print(f"{e.name}: a wrong password: {err.smtp_code} {err.smtp_error.decode()}",
              flush=True)
    else:
        raise BenchError(f"{e.name} accepted a wrong password")
    one_round(e, sasl, 5, 2, password, message, timeout)


# -- report ----------------------------------------------------------------------------

HEAD = ["concurrency", "hato sessions/s min / med / max", "Postfix sessions/s min / med / max",
        "ratio hato/Postfix", "hato CPU ms/session", "Postfix CPU ms/session",
        "CPU hato/Postfix", "saslauthd CPU ms/session (hato / Postfix)",
        "client CPU ms/session (hato / Postfix)"]


def med_ms(rs: list[Round], attr: str) -> float:
    return statistics.median(getattr(r, attr) / r.sessions for r in rs) * 1000


def rows(res: dict[tuple[str, int], list[Round]], concurrency: list[int]) -> list[list[str]]:
    out = []
    for c in concurrency:
        h, p = res[("hato", c)], res[("postfix", c)]
        hr = [r.sessions / r.seconds for r in h]
        pr = [r.sessions / r.seconds for r in p]
        hc, pc = med_ms(h, "cpu"), med_ms(p, "cpu")
        out.append([
            str(c),
            f"{min(hr):.1f} / {statistics.median(hr):.1f} / {max(hr):.1f}",
            f"{min(pr):.1f} / {statistics.median(pr):.1f} / {max(pr):.1f}",
            f"{statistics.median(hr) / statistics.median(pr):.2f}",
            f"{hc:.1f}", f"{pc:.1f}", f"{hc / pc:.1f}" if pc > 0 else "-",
            f"{med_ms(h, 'sasl_cpu'):.1f} / {med_ms(p, 'sasl_cpu'):.1f}",
            f"{med_ms(h, 'client_cpu'):.1f} / {med_ms(p, 'client_cpu'):.1f}"])
    return out


def report(res, args, facts, command, load, trouble) -> None:
    table = rows(res, args.concurrency)
    print(f"\n{args.sessions} sessions per round, {args.rounds} rounds; ratio above 1: "
          f"hato is faster; load average {' -> '.join(load)}")
    print(common.text_table(HEAD, table))
    print(f"""
--- Markdown for bench/RESULTS.md ---
## submission — `{command}`

* date: {datetime.date.today().isoformat()}
* machine: {facts['nproc']} CPUs ({facts['cpu']}), {facts['memory']} RAM, Linux {facts['kernel']}
* software: Postfix {facts['postfix']} with Debian's Cyrus SASL; {facts['hato']};
  saslauthd -a shadow -n {args.saslauthd_workers} (sasl2-bin), a SHA-512-crypt password;
  client: Python smtplib threads in the bench process ({sys.version.split()[0]})
* load: {args.sessions} sessions per round, {args.rounds} rounds per concurrency; each session
  is EHLO, STARTTLS (a full handshake, RSA 2048 certificate), EHLO, AUTH PLAIN, one
  {args.size}-byte message, QUIT
* /proc/loadavg at the start and the end: {" and ".join(load)}

sessions/s is from the first connection to the last QUIT; the ratio is of the
medians (above 1: hato is faster); CPU per session is the whole instance's (every
process under its master, with the children it reaped, the discard of the
message included), saslauthd's is the shared daemon's during that engine's rounds.

{common.md_table(HEAD, table)}
""" + (("\nLog lines that need a look:\n\n" + "\n".join(f"    {t}" for t in trouble) + "\n")
       if trouble else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=300, help="sessions per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int_list, default=[10, 50],
                    help="concurrent client sessions, comma-separated")
    ap.add_argument("--size", type=int, default=1024, help="message bytes")
    ap.add_argument("--saslauthd-workers", type=int, default=10, help="saslauthd -n")
    ap.add_argument("--hato", help="the hato command (default: $HATO_VENV/bin/hato, "
                    "HATO_VENV=/opt/hato/venv by default)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds allowed per round")
    args = ap.parse_args()
    if args.sessions < 1 or args.rounds < 1 or args.size < 200:
        ap.error("--sessions and --rounds must be at least 1, --size at least 200")
    command = preflight(PROG, "bench/submission.py",
                        "it starts private hato and Postfix instances, saslauthd -a "
                        "shadow, and adds a system user",
                        {SAUTHD: "sasl2-bin"})
    if command is None:
        return 2

    raise_on_signals()
    work = Path(tempfile.mkdtemp(prefix="hato-bench-sub-", dir="/tmp"))
    os.chmod(work, 0o755)
    engines: list[Engine] = []
    sasl = Saslauthd(work / "saslauthd", args.saslauthd_workers)
    user_added = False
    password = "bench " + os.urandom(6).hex()
    message = body(args.size)
    try:
        ensure_system_user()
        ca = TestCA(work / "tls")
        issued = ca.issue("mx.bench.test")
        for p in (issued.cert, issued.key):
            os.chmod(p, 0o644)  # hato's smtpd reads it as the mail owner
        add_user(password)
        user_added = True
        sasl.start()
        venv = os.environ.get("HATO_VENV", "/opt/hato/venv")
        hato = Hato(work / "hato", hato_command(args.hato, venv))
        hato.port = free_port()
        postfix = Postfix(work / "postfix")
        postfix.port = free_port()
        engines = [hato, postfix]
        print(f"setting up hato in {hato.root} and Postfix in {postfix.root}", flush=True)
        set_up(work, hato, postfix, sasl.mux)
        for e in engines:
            print(f"starting {e.name}, submission on 127.0.0.1:{e.port}", flush=True)
            e.start()
            warm_up(e, sasl, password, message, args.timeout)
        facts = common.machine_facts(hato)
        load = [common.loadavg()]
        res: dict[tuple[str, int], list[Round]] = {}
        for c in args.concurrency:
            for r in range(args.rounds):
                for e in (engines if r % 2 == 0 else engines[::-1]):
                    rd = one_round(e, sasl, args.sessions, c, password, message, args.timeout)
                    res.setdefault((e.name, c), []).append(rd)
                    print(f"{c:>3} concurrent, round {r + 1}: {e.name:<8} {rd.seconds:7.2f} s "
                          f"{rd.sessions / rd.seconds:7.1f} sessions/s "
                          f"{rd.cpu / rd.sessions * 1000:6.1f} ms CPU/session "
                          f"(saslauthd {rd.sasl_cpu / rd.sessions * 1000:.1f}, client "
                          f"{rd.client_cpu / rd.sessions * 1000:.1f})", flush=True)
        load.append(common.loadavg())
        report(res, args, facts, command, load, common.troubles(engines))
        return 0
    except (BenchError, OSError, subprocess.SubprocessError) as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        for line in common.troubles(engines):
            print(f"{PROG}: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        print(f"{PROG}: interrupted, cleaning up", file=sys.stderr)
        return 128 + (stop.args[0] if stop.args else 2)
    finally:
        ignore_signals()
        stop_all(engines, PROG)
        sasl.stop()
        if user_added:
            remove_user()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

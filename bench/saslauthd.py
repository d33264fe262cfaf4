"""Authentications per second: hato's saslauthd against Debian's saslauthd
(Cyrus 2.1.28), the same worker count, good passwords.

    python3 bench/saslauthd.py [--workers N] [--clients N] [--seconds S] [--cache]

Run as root. For ``-a shadow`` both daemons check one system user the
benchmark creates (and removes) with the system's default hash (yescrypt
on Debian 12). For ``-a sasldb`` Cyrus reads a sasldb2 made with
saslpasswd2, bind-mounted over /etc/sasldb2 in a mount namespace of its own
(the machine's /etc/sasldb2 is never touched); hato reads its own sasldb
(argon2id). A small client here speaks the socket protocol: *clients*
threads, each one request per connection, for *seconds*. With ``--cache``
both daemons also run with ``-c`` (the credential cache), an extra row.
Printed: authentications/second per daemon and the ratio hato/Cyrus. Not
a test: no timing is asserted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from hato.proto.saslauthd import encode_request, parse_reply, reply_length  # noqa: E402

USER, PASSWORD = f"hbench{os.getpid() % 100000}", "bench pass"
REALM = "bench.test"


def hato_cmd() -> list[str]:
    venv = os.environ.get("HATO_VENV", "/opt/hato/venv")
    exe = os.path.join(venv, "bin", "hato")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "hato"]


def ask(path: str, request: bytes) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(request)
        data = b""
        while True:
            need = reply_length(data)
            if need is not None and len(data) >= need:
                break
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return parse_reply(data)[0]


def measure(path: str, request: bytes, clients: int, seconds: float) -> float:
    if not ask(path, request):
        raise SystemExit(f"{path}: the good password is refused")
    counts = [0] * clients
    failures = [0]
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            if ask(path, request):
                counts[i] += 1
            else:
                failures[0] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if failures[0]:
        raise SystemExit(f"{path}: {failures[0]} good passwords refused")
    return sum(counts) / elapsed


def wait_socket(path: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daemon for {path} did not start")
        time.sleep(0.05)
    time.sleep(0.3)


def start(argv: list[str], rundir: str) -> subprocess.Popen:
    out = open(os.path.join(rundir, "out"), "ab")
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    wait_socket(os.path.join(rundir, "mux"), proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--cache", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (shadow, a system user, a mount namespace)")
    work = tempfile.mkdtemp(prefix="hbsa")
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", USER], check=True)
    made_target = False
    try:
        subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}\n", text=True, check=True)
        cyrus_db = os.path.join(work, "sasldb2")
        subprocess.run(["saslpasswd2", "-f", cyrus_db, "-c", "-p", "-u", REALM, USER],
                       input=PASSWORD + "\n", text=True, check=True)
        from hato.auth.sasldb import Sasldb

        hato_db = os.path.join(work, "sasldb.lmdb")
        Sasldb(hato_db, writable=True).set_password(USER, REALM, PASSWORD, ["PLAIN"])
        if not os.path.lexists("/etc/sasldb2"):
            open("/etc/sasldb2", "x").close()
            made_target = True
        rows = []
        variants = [("shadow", []), ("sasldb", [])]
        if args.cache:
            variants += [("shadow", ["-c"]), ("sasldb", ["-c"])]
        for mech, extra in variants:
            request = encode_request(USER, PASSWORD, "smtp", REALM if mech == "sasldb" else "")
            rates = {}
            for who in ("hato", "cyrus"):
                rundir = os.path.join(work, f"{who}-{mech}{''.join(extra)}")
                os.mkdir(rundir)
                if who == "hato":
                    argv = [*hato_cmd(), "saslauthd", "-a", mech, "-m", rundir,
                            "-n", str(args.workers), "-d", *extra]
                    if mech == "sasldb":
                        argv += ["-O", hato_db]
                else:
                    argv = ["saslauthd", "-a", mech, "-m", rundir, "-n", str(args.workers),
                            "-d", *extra]
                    if mech == "sasldb":
                        argv = ["unshare", "--mount", "--propagation", "private", "--", "sh",
                                "-c", 'mount --bind "$0" /etc/sasldb2 && exec "$@"',
                                cyrus_db, *argv]
                proc = start(argv, rundir)
                try:
                    rates[who] = measure(os.path.join(rundir, "mux"), request, args.clients,
                                         args.seconds)
                finally:
                    stop(proc)
            label = f"-a {mech}" + (" -c" if extra else "")
            rows.append((label, rates["hato"], rates["cyrus"]))
        print(f"workers {args.workers}, clients {args.clients}, {args.seconds:g} s each")
        print("| daemon options | hato auth/s | Cyrus auth/s | ratio |")
        print("|---|---|---|---|")
        for label, h, c in rows:
            print(f"| `{label}` | {h:.0f} | {c:.0f} | {h / c:.2f} |")
    finally:
        subprocess.run(["userdel", USER], check=False)
        if made_target and os.path.exists("/etc/sasldb2") and os.path.getsize("/etc/sasldb2") == 0:
            os.unlink("/etc/sasldb2")
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load and kills against a live hato: what the crash test and the soak
command share.

SMTP client threads (several messages per session, bodies of 1 to 64 KiB)
and a sendmail loop submit messages to demo@hato.test and remember the
SHA-256 of each body that got its 250 (or whose sendmail exited 0);
smtp-source adds a background load to a discard destination. The SMTP port
is postscreen's, which hands the clients (allowlisted by mynetworks) to
smtpd, as on a site that runs it. A killer sends SIGKILL to hato's
processes at random moments (smtpd, postscreen, qmgr, virtual, pickup,
anvil and the master first, then any); a keeper restarts the master
whenever it died. Afterwards :meth:`CrashLoad.drain` waits until every acknowledged
message is in the Maildir and :meth:`CrashLoad.report` says what was lost,
damaged or duplicated.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import smtplib
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import require_tool
from tests.integration.instance import Instance, smtp_ready

RCPT = "demo@hato.test"


def make_message(tag: str, rng: random.Random) -> tuple[bytes, str]:
    """A message with an id header and a body of 1 to 64 KiB (LF line ends);
    the body's digest, as it lands in the Maildir."""
    lines = []
    size = rng.choice([1024, 4096, 20000, 65536])
    n = 0
    while n < size:
        line = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789 ") for _ in range(70))
        lines.append(line)
        n += len(line) + 1
    body = "\n".join(lines) + f"\nEND {tag}\n"
    head = f"From: <{RCPT}>\nTo: <{RCPT}>\nSubject: load {tag}\nX-Hato-Test: {tag}\n"
    return (head + "\n" + body).encode(), hashlib.sha256(body.encode()).hexdigest()


def delivered(box: Path) -> dict[str, list[str]]:
    """test id -> digests of the delivered copies (new/ and cur/)."""
    out: dict[str, list[str]] = {}
    for sub in ("new", "cur"):
        d = box / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            try:
                data = f.read_bytes()
            except FileNotFoundError:
                continue
            head, sep, body = data.partition(b"\n\n")
            tag = None
            for line in head.split(b"\n"):
                if line.startswith(b"X-Hato-Test: "):
                    tag = line[13:].decode()
            if tag is None:
                continue  # smtp-source's background load goes to discard
            out.setdefault(tag, []).append(hashlib.sha256(body).hexdigest() if sep else "")
    return out


def queue_state(inst: Instance) -> str:
    """What is left in the queue and what went wrong, for a failure message."""
    counts = {}
    for name in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
        counts[name] = sum(len(files) for _d, _s, files in os.walk(inst.root / "queue" / name))
    mailq = inst.cmd("postqueue", "-p").stdout.decode(errors="replace")
    troubles = [line for line in inst.log_text().splitlines()
                if any(w in line for w in ("warning:", "error:", "fatal:", "panic:", "status=def"))]
    return (f"queue files: {counts}\n--- mailq (start):\n{mailq[:2000]}\n"
            f"--- log troubles (last 60 of {len(troubles)}):\n" + "\n".join(troubles[-60:]))


def rss_kb(pids) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


@dataclass
class Report:
    accepted: int
    delivered: int
    lost: list[str]
    damaged: list[str]
    duplicates: dict[str, int]
    extra: int  # delivered without a 250 the client saw
    kills: list[str]
    restarts: int
    client_failures: list[str] = field(default_factory=list)
    peak_rss_kb: int = 0

    def summary(self) -> str:
        roles = sorted(set(self.kills))
        return (f"accepted {self.accepted}, delivered {self.delivered} distinct, "
                f"lost {len(self.lost)}, damaged {len(self.damaged)}, "
                f"duplicated {len(self.duplicates)} "
                f"({sum(self.duplicates.values()) - len(self.duplicates)} extra copies), "
                f"delivered without a 250 the client saw {self.extra}; "
                f"killed {len(self.kills)} times ({', '.join(roles)}), master restarted "
                f"{self.restarts} times; peak RSS of the instance {self.peak_rss_kb // 1024} MB; "
                f"SMTP client failures {len(self.client_failures)}, e.g. "
                f"{sorted(set(self.client_failures))[:3]}")


class CrashLoad:
    def __init__(self, inst: Instance, *, clients: int = 5, kill_every=(0.8, 2.0),
                 seed: int = 4):
        self.inst = inst
        self.clients = clients
        self.kill_every = kill_every
        self.seed = seed
        self.box = inst.root / "mail" / "hato.test" / "demo"
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, str] = {}  # tag -> body digest
        self.kills: list[str] = []
        self.restarts = 0
        self.errors: list[str] = []
        self.failures: list[str] = []  # what the SMTP clients met
        self.peak_rss_kb = 0

    def start_instance(self) -> None:
        inst = self.inst
        inst.postconf("minimal_backoff_time = 1s", "maximal_backoff_time = 2s",
                      "queue_run_delay = 1s", "mynetworks = 127.0.0.0/8",
                      "default_transport = discard", "smtpd_timeout = 30s",
                      # a worker killed while it starts counts as a bad start:
                      # master pauses its service this long, as Postfix's does
                      "service_throttle_time = 1s",
                      "postscreen_access_list = permit_mynetworks")
        # postscreen on the SMTP port, smtpd behind it
        master = inst.root / "master.cf"
        lines = master.read_text().splitlines(keepends=True)
        port_line = f"127.0.0.1:{inst.port} "
        at = next(i for i, x in enumerate(lines) if x.startswith(port_line))
        lines[at:at + 1] = [f"127.0.0.1:{inst.port} inet n - n - 1 postscreen\n",
                            "smtpd     pass  -       -       n       -       -       smtpd\n"]
        master.write_text("".join(lines))
        inst.start()
        inst.wait_for(lambda: smtp_ready(inst.port), 60, "smtpd's greeting")

    # -- the threads ------------------------------------------------------------

    def _client(self, k: int) -> None:
        rng = random.Random(100 + k)
        i = 0
        while not self.stop.is_set():
            try:
                with smtplib.SMTP("127.0.0.1", self.inst.port, timeout=5) as s:
                    for _ in range(rng.randint(1, 3)):
                        tag = f"c{k}-{i}"
                        i += 1
                        msg, digest = make_message(tag, rng)
                        s.sendmail(RCPT, [RCPT], msg.replace(b"\n", b"\r\n"))
                        with self.lock:
                            self.acked[tag] = digest
            except (smtplib.SMTPException, OSError) as err:
                if len(self.failures) < 10000:
                    self.failures.append(f"{type(err).__name__}: {err}")
                time.sleep(0.05)  # refused, reset, 4xx: not acknowledged

    def _submitter(self) -> None:
        rng = random.Random(7)
        i = 0
        while not self.stop.is_set():
            tag = f"s-{i}"
            i += 1
            msg, digest = make_message(tag, rng)
            r = self.inst.sendmail("-f", RCPT, RCPT, message=msg)
            if r.returncode == 0:
                with self.lock:
                    self.acked[tag] = digest

    def _background(self) -> None:
        source = require_tool("smtp-source", "postfix")
        while not self.stop.is_set():
            subprocess.run([source, "-4", "-s", "5", "-m", "50", "-l", "2048",
                            "-f", "load@client.test", "-t", "load@discard.test",
                            f"127.0.0.1:{self.inst.port}"], capture_output=True, timeout=60)

    def _killer(self) -> None:
        rng = random.Random(self.seed)
        # the processes that matter most each die at least once, in a
        # random order; then any process at random
        first = ["smtpd", "qmgr", "virtual", "pickup", "master", "smtpd", "qmgr",
                 "postscreen", "anvil"]
        rng.shuffle(first)
        while not self.stop.wait(rng.uniform(*self.kill_every)):
            pids = self.inst.pids()
            if not pids:
                continue
            pid = rng.choice(sorted(pids))
            if first:
                role = first.pop()
                chosen = [p for p, r in pids.items() if self._role(r) == role]
                if chosen:
                    pid = rng.choice(chosen)
            try:
                os.kill(pid, signal.SIGKILL)
                self.kills.append(self._role(pids[pid]))
            except ProcessLookupError:
                pass

    def _role(self, name: str) -> str:
        """A process's service: inet services are named by their address;
        the SMTP port's is postscreen."""
        if name == f"127.0.0.1:{self.inst.port}":
            return "postscreen"
        return "submission" if ":" in name else name

    def _keeper(self) -> None:
        while not self.stop.wait(0.3):
            self.ensure_running()
            self.peak_rss_kb = max(self.peak_rss_kb, rss_kb(self.inst.pids()))

    def ensure_running(self, tries: int = 10) -> None:
        inst = self.inst
        for _ in range(tries):
            if inst.cmd("status").returncode == 0:
                return
            r = inst.cmd("start")
            if r.returncode == 0:
                self.restarts += 1
                return
            if b"already running" in r.stderr:
                return
            time.sleep(0.2)
        self.errors.append(f"hato does not start again:\n{inst.log_text()[-3000:]}")

    # -- a run ------------------------------------------------------------------

    def run(self, seconds: float, progress=None) -> None:
        """Load and kills for *seconds*; *progress(elapsed)* every minute."""
        threads = [threading.Thread(target=self._client, args=(k,), daemon=True)
                   for k in range(self.clients)]
        threads += [threading.Thread(target=f, daemon=True)
                    for f in (self._submitter, self._background, self._killer, self._keeper)]
        for t in threads:
            t.start()
        began = time.monotonic()
        while True:
            left = seconds - (time.monotonic() - began)
            if left <= 0:
                break
            time.sleep(min(left, 60))
            if progress is not None and time.monotonic() - began < seconds:
                progress(time.monotonic() - began)
        self.stop.set()
        for t in threads:
            t.join(90)

    def drain(self, timeout: float = 180) -> dict[str, list[str]]:
        """Wait until every acknowledged message is delivered (or time is
        up); what was delivered."""
        deadline = time.monotonic() + timeout
        seen: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            self.ensure_running()
            seen = delivered(self.box)
            if set(self.acked) <= set(seen):
                break
            self.inst.cmd("flush")
            time.sleep(1)
        return seen

    def report(self, seen: dict[str, list[str]]) -> Report:
        acked = self.acked
        return Report(
            accepted=len(acked), delivered=len(seen),
            lost=sorted(set(acked) - set(seen)),
            damaged=[tag for tag, digests in seen.items()
                     if tag in acked and any(d != acked[tag] for d in digests)],
            duplicates={tag: len(d) for tag, d in seen.items() if len(d) > 1},
            extra=len(set(seen) - set(acked)), kills=list(self.kills),
            restarts=self.restarts, client_failures=list(self.failures),
            peak_rss_kb=self.peak_rss_kb)

"""A private OpenDKIM (Debian's opendkim) for tests: keys made by
opendkim-genkey, a loopback inet socket of its own, signing for one domain
when the MTA's ``{daemon_name}`` is in its ``MTA`` list (the reference
setup's ``milter_macro_daemon_name=ORIGINATING``), verifying otherwise. Its
public key comes from a test data set (``TestDNSData``), so no DNS is
needed; :meth:`OpenDkim.dns_txt` gives the same record to dkimpy.

OpenDKIM refuses configuration files in directories that others may write
(such as /tmp), so its directory is made under /run, mode 0700.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from tests.ports import free_port

OPENDKIM = "/usr/sbin/opendkim"
GENKEY = "/usr/sbin/opendkim-genkey"


def _free_port() -> int:
    return free_port()


class OpenDkim:
    def __init__(self, domain: str = "example.test", selector: str = "sel",
                 mta_names: str = "ORIGINATING", authserv_id: str = "mx.hato.test"):
        for tool in (OPENDKIM, GENKEY):
            if not os.path.exists(tool):
                raise RuntimeError(f"{tool} is missing: install the Debian packages opendkim "
                                   f"and opendkim-tools")
        self.domain, self.selector = domain, selector
        self.dir = Path("/run") / f"hato-test-opendkim-{uuid.uuid4().hex[:8]}"
        self.dir.mkdir(mode=0o700, parents=True)
        self.port = _free_port()
        self.endpoint = f"inet:127.0.0.1:{self.port}"
        subprocess.run([GENKEY, "-D", str(self.dir), "-d", domain, "-s", selector],
                       check=True, capture_output=True, timeout=60)
        txt = (self.dir / f"{selector}.txt").read_text()
        self.record = "".join(re.findall(r'"([^"]*)"', txt))
        (self.dir / "dns").write_text(f"{selector}._domainkey.{domain} {self.record}\n")
        (self.dir / "internal").write_text("192.0.2.99\n")  # nobody we test from
        (self.dir / "opendkim.conf").write_text(
            "Syslog no\nLogWhy yes\n"
            f"Socket inet:{self.port}@127.0.0.1\n"
            "Mode sv\n"
            f"Domain {domain}\nSelector {selector}\n"
            f"KeyFile {self.dir}/{selector}.private\n"
            f"MTA {mta_names}\n"
            f"InternalHosts {self.dir}/internal\n"
            f"TestDNSData {self.dir}/dns\n"
            f"PidFile {self.dir}/pid\n"
            f"AuthservID {authserv_id}\n"
            "Canonicalization relaxed/simple\n"
            "AlwaysAddARHeader yes\n")
        self.proc: subprocess.Popen | None = None

    def dns_txt(self, name: bytes, timeout: int = 5) -> bytes | None:
        """A dnsfunc for dkimpy: the key record, for our selector only."""
        want = f"{self.selector}._domainkey.{self.domain}.".encode()
        return self.record.encode() if name.rstrip(b".") + b"." == want else None

    def start(self) -> OpenDkim:
        self.proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(self.dir / "opendkim.conf")],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout \
                    else ""
                raise RuntimeError(f"opendkim exited {self.proc.returncode}: {out}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("opendkim does not listen")

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def kill(self) -> None:
        """End the daemon only: ``start()`` brings it back as it was."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def __enter__(self) -> OpenDkim:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

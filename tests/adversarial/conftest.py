"""One live hato for the whole adversarial suite: the reference setup's
services on ports of its own, all on 127.0.0.1.

* ``smtpd``: the plain smtpd on the instance's port (the site's port 25);
* ``sub``: submission, STARTTLS required, SASL AUTH, only authenticated
  clients relay (t10's master.cf lines);
* ``smtps``: the same over TLS from the first byte (wrapper mode);
* ``ps``: postscreen in front of the ``smtpd pass`` service, with the
  non-SMTP-command test and STARTTLS in its own engine;
* ``mime``: one more smtpd whose mail passes a milter (tests/milter_peer.py).

``mynetworks`` is 192.0.2.0/24, so the loopback client is a stranger that
may deliver to hato.test and relay nowhere unless authenticated. Timeouts
are short (3 s, as a deadline per request) so that slow clients are cut
off quickly; the AUTH rate limit is 10 a minute per client address.
Tests on the shared instance look only at their own messages and log lines
(log offsets, markers in subjects, client addresses of their own).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.certs import TestCA
from tests.dnsserver import DnsServer
from tests.integration.instance import Instance, free_port, smtp_ready
from tests.integration.test_t07_smtpd_adversarial import Wire, maildir_names, new_messages
from tests.integration.test_t10_submission import PASSWORD, USER, Site
from tests.milter_peer import MilterPeer

TIMEOUT = 3          # smtpd_timeout, smtpd_starttls_timeout, postscreen_command_time_limit
AUTH_RATE = 10       # smtpd_client_auth_rate_limit
HOSTNAME = "localhost.localdomain"

POSTSCREEN = """\
127.0.0.1:{ps} inet  n       -       n       -     1     postscreen
smtpd     pass  -       -       n       -     -     smtpd
dnsblog   unix  -       -       n       -     0     dnsblog
127.0.0.1:{mime} inet n      -       n       -       -       smtpd
  -o syslog_name=postfix/mime
  -o smtpd_milters={milter}
"""

HEADER_CHECKS = """\
/^Subject: adv-hold-me/ HOLD held for the queue-id tests
/^Subject: adv-header-reject/ REJECT header marker seen
/^Content-Description: adv-reject-me/ REJECT part header marker seen
"""
BODY_CHECKS = """\
/adv-body-reject-marker/ REJECT body marker seen
"""


@dataclass
class Live:
    inst: Instance
    site: Site
    milter: MilterPeer
    smtpd: int
    sub: int
    smtps: int
    ps: int
    mime: int

    @property
    def root(self) -> Path:
        return self.inst.root

    def log(self, mark: int = 0) -> str:
        return self.inst.log_text()[mark:]

    def mark(self) -> int:
        return len(self.inst.log_text())

    def context(self):
        return self.site.context()

    def tls(self, w: Wire) -> Wire:
        """Turn the raw client *w* to TLS (after STARTTLS, or at once on smtps)."""
        w.sock = self.context().wrap_socket(w.sock)
        w.file = w.sock.makefile("rb")
        return w

    def mailbox(self) -> set[Path]:
        return maildir_names(self.inst)

    def delivered_since(self, before: set[Path]) -> list[bytes]:
        return new_messages(self.inst, before)

    def queued_files(self) -> list[Path]:
        """Every file in the queue directories that hold messages."""
        out = []
        for name in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
            for dirpath, _dirs, files in os.walk(self.root / "queue" / name):
                out += [Path(dirpath) / f for f in files]
        return out


def wire(port: int, src: str = "127.0.0.1", timeout: float = 30) -> Wire:
    """t07's raw client, from source address *src* (a 127.0.0.0/8 address)."""
    w = Wire.__new__(Wire)
    w.sock = socket.socket()
    w.sock.settimeout(timeout)
    w.sock.bind((src, 0))
    w.sock.connect(("127.0.0.1", port))
    w.file = w.sock.makefile("rb")
    return w


def greets(port: int) -> bool:
    """Does the server on *port* begin a greeting (220- or 220 )?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            return s.recv(4).startswith(b"220")
    except OSError:
        return False


@pytest.fixture(scope="package")
def live(tmp_path_factory) -> Iterator[Live]:
    ca = TestCA(tmp_path_factory.mktemp("adv-ca"))
    with DnsServer() as dns, MilterPeer() as milter:
        inst = Instance("adv")
        try:
            site = Site(inst, ca, "sasldb")
            ps, mime = free_port(), free_port()
            (inst.root / "header_checks").write_text(HEADER_CHECKS)
            (inst.root / "body_checks").write_text(BODY_CHECKS)
            inst.postconf(
                f"hato_dns_servers = {dns.spec}",
                f"smtpd_timeout = {TIMEOUT}s", f"smtpd_starttls_timeout = {TIMEOUT}s",
                "smtpd_per_request_deadline = yes",
                f"smtpd_client_auth_rate_limit = {AUTH_RATE}",
                "smtpd_error_sleep_time = 0s",
                # Postfix's recommended form: refuse relaying with a 5xx
                "smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
                "reject_unauth_destination",
                "default_process_limit = 200",
                f"header_checks = regexp:{inst.root / 'header_checks'}",
                f"body_checks = regexp:{inst.root / 'body_checks'}",
                # postscreen: nobody is allowlisted, the greet wait is short,
                # the non-SMTP-command test runs, STARTTLS in its engine
                "postscreen_access_list = permit_mynetworks",
                "postscreen_greet_wait = 1s",
                f"postscreen_command_time_limit = {TIMEOUT}s",
                "postscreen_non_smtp_command_enable = yes",
                "postscreen_tls_security_level = may",
                "postscreen_cache_map = btree:$data_directory/postscreen_cache",
            )
            master = inst.root / "master.cf"
            master.write_text(master.read_text()
                              + POSTSCREEN.format(ps=ps, mime=mime, milter=milter.endpoint))
            site.start()
            for port in (inst.port, mime):
                inst.wait_for(lambda p=port: smtp_ready(p), what=f"port {port} listening")
            inst.wait_for(lambda: greets(ps), what="postscreen listening")
            yield Live(inst, site, milter, inst.port, site.sub, site.smtps, ps, mime)
        finally:
            inst.cleanup()


__all__ = ["AUTH_RATE", "HOSTNAME", "PASSWORD", "TIMEOUT", "USER", "Live", "wire"]

"""t-35: the spawn service (spawn(8)) — how Postfix sites run policy
servers. Debian's postfix-policyd-spf-python runs from master.cf exactly as
its README says for Postfix:

    policyd-spf unix - n n - 0 spawn user=policyd-spf argv=/usr/bin/policyd-spf CONF

and smtpd asks it with ``check_policy_service unix:private/policyd-spf``: an
SPF fail is refused, a pass accepted. The instance runs in a mount
namespace of its own whose /etc/resolv.conf names the test DNS server, so
policyd-spf (and only this instance) sees the test's SPF records.

Also: a command runs as its ``user=`` with the connection as stdin and
stdout; one over ``<service>_time_limit`` is killed and logged; an exit
status other than 0 is logged as Postfix logs it; ``hato check`` refuses
root and the mail owner as ``user=``."""

from __future__ import annotations

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.differential.test_postscreen_verdicts import Port53DnsServer

from .instance import Instance, hato_command, hato_env, smtp_ready
from .test_t30_policy import POLICYD_SPF, SPF_CONF

pytestmark = pytest.mark.integration

ZONES = {"fail.t35.test": {"TXT": ["v=spf1 ip4:192.0.2.1 -all"]},
         "pass.t35.test": {"TXT": ["v=spf1 ip4:127.0.0.1 -all"]}}


@pytest.fixture(scope="module")
def site():
    require_tool(POLICYD_SPF, "postfix-policyd-spf-python")
    require_tool("unshare", "util-linux")
    if os.geteuid() != 0:
        pytest.fail("t35 runs the instance in a mount namespace: run as root (as CI does)")
    tmp = Path(tempfile.mkdtemp(prefix="hato-t35-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    dns = Port53DnsServer(ZONES).start()
    inst = Instance("t35")
    try:
        resolv = tmp / "resolv.conf"
        resolv.write_text(f"nameserver {dns.host}\noptions timeout:2 attempts:2\n")
        conf = tmp / "policyd-spf.conf"
        conf.write_text(SPF_CONF)
        for name, body in (("echo.sh", "id -un\ncat\n"), ("fail.sh", "exit 3\n")):
            (tmp / name).write_text("#!/bin/sh\n" + body)
            (tmp / name).chmod(0o755)
        for p in (resolv, conf):
            p.chmod(0o644)
        with open(inst.root / "master.cf", "a") as f:
            f.write(f"policyd-spf unix - n n - 0 spawn\n"
                    f"  user=policyd-spf argv={POLICYD_SPF} {conf}\n"
                    f"echo unix - n n - 2 spawn user=nobody argv={tmp}/echo.sh\n"
                    f"sleeper unix - n n - 0 spawn user=nobody argv=/bin/sleep 60\n"
                    f"failer unix - n n - 0 spawn user=nobody argv={tmp}/fail.sh\n")
        inst.postconf("smtpd_recipient_restrictions = permit_mynetworks, "
                      "check_policy_service unix:private/policyd-spf, permit",
                      "mynetworks = 192.0.2.0/24", "sleeper_time_limit = 2s")
        # hato start in a new mount namespace with the test resolv.conf
        os.chown(inst.root / "mail", *_owner())
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv),
                            *hato_command(), "-c", str(inst.root), "start"],
                           capture_output=True, env=hato_env(), timeout=120)
        assert r.returncode == 0, (r.stdout, r.stderr, inst.log_text())
        inst.running = True
        inst.wait_for(lambda: smtp_ready(inst.port), 60, "smtpd")
        inst.tmp = tmp
        yield inst
    finally:
        inst.cleanup()
        dns.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _owner() -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam("hato")
    return pw.pw_uid, pw.pw_gid


def _talk(inst: Instance, service: str, data: bytes = b"") -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(inst.root / "queue" / "private" / service))
        if data:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(4096):
            out += chunk
        return out


def _rcpt(inst: Instance, sender: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", inst.port, timeout=60) as c:
        c.ehlo("client.t35.test")
        c.mail(sender)
        code, text = c.rcpt("postmaster@localhost")
        return code, text.decode()


def test_policyd_spf_through_spawn(site):
    code, text = _rcpt(site, "someone@fail.t35.test")
    assert code == 550 and "SPF" in text, text
    code, text = _rcpt(site, "someone@pass.t35.test")
    assert code == 250, text


def test_command_runs_as_its_user_on_the_connection(site):
    assert _talk(site, "echo", b"hello spawn\n") == b"nobody\nhello spawn\n"


def test_time_limit_and_exit_status_are_logged(site):
    assert _talk(site, "failer") == b""
    site.wait_log(f"warning: command {site.tmp}/fail.sh exit status 3")
    _talk(site, "sleeper")
    site.wait_log("warning: /bin/sleep: process id ", timeout=30)
    site.wait_log(": command time limit exceeded")


def test_check_refuses_root_and_the_mail_owner(tmp_path):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "main.cf").write_text("myhostname = a.example\nalias_maps =\nmail_owner = hato\n")
    (d / "master.cf").write_text("a unix - n n - 0 spawn user=root argv=/bin/true\n"
                                 "b unix - n n - 0 spawn user=hato argv=/bin/true\n"
                                 "c unix - n n - 0 spawn argv=/bin/true\n")
    r = subprocess.run([*hato_command(), "-c", str(d), "check"], capture_output=True,
                       env=hato_env(), timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 1
    assert "line 1: service a/unix: spawn: request to deliver as root" in err, err
    assert "line 2: service b/unix: spawn: request to deliver as mail system owner" in err
    assert "line 3: service c/unix: spawn: missing user= attribute" in err

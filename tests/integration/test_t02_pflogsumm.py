"""t-02: pflogsumm reads hato's mail log and counts exactly what happened:
messages received, delivered, deferred and bounced."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import require_tool

from .test_t01_local_flow import USER, fresh_maildir, local_user  # noqa: F401

pytestmark = pytest.mark.integration


def grand_totals(report: str) -> dict[str, int]:
    totals: dict[str, int] = {}
    section = report.split("Grand Totals", 1)[1].split("Per-Hour", 1)[0]
    for m in re.finditer(r"^\s*(\d+)\s+(received|delivered|forwarded|deferred|bounced|held|"
                         r"discarded)\b", section, re.M):
        totals[m.group(2)] = int(m.group(1))
    return totals


def test_pflogsumm_counts(instance, local_user):  # noqa: F811
    pflogsumm = require_tool("pflogsumm", "pflogsumm")
    inst = instance
    script = inst.root / "tempfail.sh"
    script.write_text("#!/bin/sh\ncat >/dev/null\nexit 75\n")
    os.chmod(script, 0o755)
    (inst.root / "aliases").write_text(f"postmaster: root\nlater: \"|{script}\"\n")
    inst.postconf("home_mailbox = Maildir/", "mydestination = $myhostname, localhost",
                  f"alias_maps = hash:{inst.root}/aliases")
    assert inst.cmd("newaliases").returncode == 0
    fresh_maildir(local_user)
    inst.start()
    for i in range(3):
        assert inst.sendmail("-f", USER, USER, message=f"Subject: m{i}\n\nx\n".encode()
                             ).returncode == 0
    assert inst.sendmail("-f", USER, "nosuchuser", message=b"Subject: b\n\nx\n").returncode == 0
    assert inst.sendmail("-f", USER, "later", message=b"Subject: d\n\nx\n").returncode == 0
    inst.wait_log("status=deferred")
    inst.wait_log("sender non-delivery notification")
    inst.wait_log("status=sent (delivered to maildir)", count=4)
    inst.stop()
    out = subprocess.run([pflogsumm, str(inst.maillog)], capture_output=True, text=True,
                         check=True).stdout
    totals = grand_totals(out)
    assert totals["received"] == 5, out
    assert totals["delivered"] == 4, out  # three messages and the bounce notice
    assert totals["bounced"] == 1, out
    assert totals["deferred"] == 1, out

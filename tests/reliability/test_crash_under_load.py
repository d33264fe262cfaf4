"""Crash safety under load: SMTP clients (several sessions at once, messages
of 1 to 64 KiB) and sendmail submit without pause while every kind of hato
process — the master, smtpd workers, qmgr, the delivery agents, anvil,
pickup — is killed with SIGKILL at random moments, the master restarted
whenever it died, and smtp-source adds a background load
(tests/reliability/crashload.py; the soak command runs the same for an
hour).

Afterwards every message that got its 250 (or whose sendmail exited 0) must
be delivered at least once, and no delivered copy may differ from what was
sent (SHA-256 of the body). Duplicates are allowed (a delivery that was
under way when its agent or qmgr died is repeated) and reported."""

from __future__ import annotations

import pytest

from tests.conftest import require_tool
from tests.integration.instance import Instance

from .crashload import CrashLoad, queue_state

pytestmark = pytest.mark.integration

DURATION = 30.0  # seconds of load and kills


@pytest.fixture
def instance():
    inst = Instance("rel-crash")
    yield inst
    inst.cleanup()


def test_sigkill_under_load_loses_and_corrupts_nothing(instance):
    require_tool("smtp-source", "postfix")
    load = CrashLoad(instance)
    load.start_instance()
    load.run(DURATION)
    assert not load.errors, load.errors[0]
    roles = set(load.kills)
    by_smtp = sum(1 for tag in load.acked if tag.startswith("c"))
    print(f"\nkilled {len(load.kills)} times: {sorted(roles)}; master restarted "
          f"{load.restarts} times; acknowledged {len(load.acked)} messages ({by_smtp} by SMTP)")
    assert by_smtp >= 20 and len(load.acked) - by_smtp >= 5, \
        f"the load did not get through ({by_smtp} by SMTP): {instance.log_text()[-3000:]}"
    assert {"master", "smtpd", "postscreen", "qmgr", "virtual", "anvil"} <= roles, roles

    seen = load.drain(180)
    report = load.report(seen)
    print(report.summary())
    assert not report.lost, (f"{len(report.lost)} acknowledged but never delivered: "
                             f"{report.lost[:20]}\n{queue_state(instance)}")
    assert not report.damaged, \
        f"delivered copies that differ from what was sent: {report.damaged[:20]}"

"""A worker that gives up root still dies with its master: the kernel forgets
a parent-death signal when the credentials change, so the worker asks for it
again after dropping its privileges."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap

import pytest

PR_GET_PDEATHSIG = 2


def test_parent_death_signal_survives_the_privilege_drop(tmp_path):
    if os.geteuid() != 0:
        pytest.fail("this test changes credentials and must run as root")
    owner = "nobody"
    pwd.getpwnam(owner)
    # A child process plays the worker: main()'s order of calls, then it
    # reports the parent-death signal it has.
    script = textwrap.dedent(f"""
        import ctypes, os, signal, sys
        from hato.master import worker
        class S:
            def str(self, name):
                return {owner!r}
        os.environ["HATO_MASTER_PID"] = str(os.getppid())
        worker.die_with_master()
        worker.drop_privileges(S())
        libc = ctypes.CDLL(None, use_errno=True)
        sig = ctypes.c_int(0)
        libc.prctl({PR_GET_PDEATHSIG}, ctypes.byref(sig))
        print("after-drop", sig.value)
    """)
    src = os.path.join(os.path.dirname(__file__), "..", "..", "..", "src")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(src))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    # What the kernel does without the second request: the signal is gone.
    assert out.stdout.split() == ["after-drop", "0"], out.stdout

    fixed = script.replace("worker.drop_privileges(S())", "worker.give_up_root(S())")
    out = subprocess.run([sys.executable, "-c", fixed], capture_output=True, text=True,
                         env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["after-drop", str(int(signal.SIGKILL))], out.stdout

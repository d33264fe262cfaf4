"""hato init, the command dispatch, and the MTA entry points."""

from __future__ import annotations

import os
import subprocess
import sys

from hato.config.maincf import MainCf
from tests.conftest import hato_env, run_hato
from tests.hatorun import hato_inprocess


def test_init_writes_a_checked_instance(tmp_path):
    d = tmp_path / "inst"
    r = hato_inprocess("init", str(d))
    assert r.returncode == 0, r.stderr
    values = MainCf.read(str(d / "main.cf")).values()
    assert values["queue_directory"] == f"{d}/queue"
    assert values["inet_interfaces"] == "loopback-only"
    assert (d / "queue").is_dir() and (d / "mail").is_dir()
    master = (d / "master.cf").read_text()
    assert "127.0.0.1:2525 inet" in master
    # Running init again leaves the files alone.
    (d / "main.cf").write_text((d / "main.cf").read_text() + "# mine\n")
    r = hato_inprocess("init", str(d))
    assert r.returncode == 0 and "left unchanged" in r.stderr
    assert (d / "main.cf").read_text().endswith("# mine\n")
    r = hato_inprocess("-c", str(d), "postconf", "-h", "queue_directory")
    assert r.stdout == f"{d}/queue\n"


def test_mail_config_environment(tmp_path):
    d = tmp_path / "inst"
    hato_inprocess("init", str(d))
    r = run_hato("postconf", "-h", "data_directory", env={"MAIL_CONFIG": str(d)})
    assert r.returncode == 0 and r.stdout == f"{d}/data\n"


def test_argv0_dispatch(tmp_path):
    """`sendmail`, `mailq`, `newaliases` and Postfix tool names dispatch on argv[0]."""
    link = tmp_path / "postconf"
    script = tmp_path / "hato-entry.py"
    script.write_text("import sys\nfrom hato.cli.main import main\nsys.exit(main())\n")
    os.symlink(script, link)
    d = tmp_path / "inst"
    hato_inprocess("init", str(d))
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from hato.cli.main import main; "
                        "sys.exit(main(['/usr/sbin/postconf', '-c', sys.argv[1], '-h', "
                        "'mail_owner']))", str(d)],
                       capture_output=True, text=True, env=hato_env())
    assert r.returncode == 0 and r.stdout.strip()
    # maildirmake, called by that name, is hato's Courier-compatible command.
    box = tmp_path / "Maildir"
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from hato.cli.main import main; "
                        "sys.exit(main(['/usr/bin/maildirmake', '-q', '5000S', sys.argv[1]]))",
                        str(box)],
                       capture_output=True, text=True, env=hato_env())
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(box)) == ["cur", "maildirsize", "new", "tmp"]
    assert (box / "maildirsize").read_bytes() == b"5000S\n" + b"%12d %12d\n" % (0, 0)
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from hato.cli.main import main; "
                        "sys.exit(main(['/usr/bin/maildirmake']))"],
                       capture_output=True, text=True, env=hato_env())
    assert r.returncode == 1 and "Usage: maildirmake" in r.stderr


def test_version():
    r = hato_inprocess("-V")
    assert r.returncode == 0 and r.stdout.startswith("hato ")

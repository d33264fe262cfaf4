"""hato postmulti against Debian's Postfix 3.7 postmulti: the same command
sequence (the reference setup's), the same main.cf edits, the same errors.

Debian's postmulti only manages the primary in /etc/postfix (it refuses
another MAIL_CONFIG), so its side runs in a private mount namespace
(``unshare --mount``) with an overlay over /etc: whatever it writes under
/etc (/etc/postfix/main.cf, the new /etc/postfix-deux) lands in a temporary
directory and the host's /etc is never touched. Its queue and data
directories are under the same temporary directory. hato's primary lives in
TMP/hato/etc/hato. Both primaries name /etc/postfix as meta_directory, so
both create the instance from Debian's main.cf.proto and master.cf.proto.
``postconf -n`` of primary and instance are compared with the directories
replaced by placeholders. postmulti prints its errors only on a terminal
(else to syslog): ``script`` gives it one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require_tool, run_hato

pytestmark = pytest.mark.differential

PRIMARY_MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/spool/postfix
data_directory = {root}/lib/postfix
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
"""

#: The reference setup's steps, then the life-cycle edits and their errors.
STEPS = [
    ["-e", "init"],
    ["-I", "postfix-deux", "-G", "mta", "-e", "create"],
    ["-i", "postfix-deux", "-e", "enable"],
    "SNAPSHOT enabled",
    ["-i", "postfix-deux", "-e", "destroy"],
    ["-i", "postfix-deux", "-e", "deport"],
    ["-i", "-", "-e", "destroy"],
    ["-i", "nope", "-e", "destroy"],
    ["-e", "destroy"],
    ["-I", "postfix-deux", "-e", "create"],
    ["-I", "postfix-trois", "-e", "create", "queue_directory=/"],
    ["-I", "postfix-trois", "-e", "create", "queue_directory=relative"],
    ["-I", "postfix-trois", "-e", "create", "foo=/bar"],
    ["-I", "postfix-tr/ois", "-e", "create"],
    ["-I", "postfix-tr ois", "-e", "create"],
    ["-e", "create"],
    ["-G", "a b", "-I", "postfix-q", "-e", "create"],
    ["-e", "frob"],
    ["-l", "-p"],
    ["-l", "extra"],
    ["-p"],
    ["-i", "x", "-g", "y", "-l"],
    ["-p", "-R", "status"],
    ["-l", "-I", "postfix-a"],
    ["-e", "enable", "-i", "deux", "foo=bar"],
    ["-e", "assign", "-i", "deux"],
    ["-g", "nogroup", "-x", "true"],
    ["-i", "deux", "-e", "assign", "-I", "postfix-quatre", "-G", "other"],
    ["-l"],
    ["-i", "quatre", "-e", "assign", "-G", "-"],
    ["-i", "postfix-quatre", "-e", "disable"],
    ["-l"],
    "SNAPSHOT disabled",
    ["-i", "postfix-quatre", "-e", "destroy"],
    ["-l"],
    "SNAPSHOT destroyed",
]


def _postfix_side(root: Path) -> str:
    """Run STEPS with Debian's postmulti; the transcript as text."""
    require_tool("postmulti", "postfix")
    require_tool("unshare", "util-linux")
    require_tool("script", "bsdutils")
    for d in ("up", "work", "spool/postfix", "lib/postfix", "out"):
        (root / d).mkdir(parents=True)
    lines = [
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={u},workdir={w} /etc || exit 97"
        .format(u=root / "up", w=root / "work"),
        f"cat > /etc/postfix/main.cf <<'EOF'\n{PRIMARY_MAIN_CF.format(root=root)}EOF",
        # postconf and postmulti pause when main.cf is younger than a second
        "touch -d '-1 minute' /etc/postfix/main.cf",
    ]
    for step in STEPS:
        if isinstance(step, str):
            label = step.split()[1]
            lines.append(f"echo '=== {step}'; postconf -c /etc/postfix -n; echo '---'; "
                         f"test -f /etc/postfix-deux/main.cf && "
                         f"postconf -c /etc/postfix-deux -n; echo '=== end {label}'")
            continue
        cmd = shlex.join(["postmulti", *step])
        lines.append(f"printf '%s\\n' {shlex.quote('$ ' + cmd)}; "
                     f"script -qec {shlex.quote(cmd)} /dev/null; "
                     f"echo \"rc=$?\"")
    script = root / "steps.sh"
    script.write_text("\n".join(lines) + "\n")
    env = dict(os.environ)
    env.pop("MAIL_CONFIG", None)
    env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", str(script)],
                       capture_output=True, text=True, env=env, timeout=300)
    if r.returncode == 97:
        pytest.fail(f"cannot mount an overlay over /etc in a private namespace: {r.stderr}")
    assert r.returncode == 0, r.stderr
    return r.stdout.replace("\r\n", "\n")


def _hato_side(root: Path) -> str:
    primary = root / "etc" / "hato"
    primary.mkdir(parents=True)
    for d in ("spool/postfix", "lib/postfix"):
        (root / d).mkdir(parents=True)
    (primary / "main.cf").write_text(PRIMARY_MAIN_CF.format(root=root))
    (primary / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    out: list[str] = []
    for step in STEPS:
        if isinstance(step, str):
            label = step.split()[1]
            out.append(f"=== {step}")
            out.append(run_hato("-c", str(primary), "postconf", "-n").stdout.rstrip("\n"))
            out.append("---")
            deux = root / "etc" / "postfix-deux"
            if (deux / "main.cf").exists():
                out.append(run_hato("-c", str(deux), "postconf", "-n").stdout.rstrip("\n"))
            out.append(f"=== end {label}")
            continue
        r = run_hato("-c", str(primary), "postmulti", *step)
        out.append(f"$ {shlex.join(['postmulti', *step])}")
        text = r.stdout + r.stderr
        if text:
            out.append(text.rstrip("\n"))
        out.append(f"rc={r.returncode}")
    return "\n".join(out) + "\n"


def _normalise(text: str, conf: str, root: Path) -> str:
    """Directories to placeholders; the wrapper command to <postmulti>;
    Postfix's helper-script tag to hato's program name."""
    text = text.replace(f"{root}/spool", "<spool>").replace(f"{root}/lib", "<lib>")
    text = re.sub(rf"{re.escape(conf)}/(postfix-[a-z]+)\b", r"<conf>/\1", text)
    # the primary's directory, in postconf -n and in the -l listing
    text = re.sub(rf"^(config_directory = |\S+ +\S+ +[yn] +){re.escape(conf)}/(postfix|hato)$",
                  r"\1<conf>/<primary>", text, flags=re.MULTILINE)
    text = re.sub(r"^(multi_instance_wrapper = ).*( -p --)$", r"\1<postmulti>\2", text,
                  flags=re.MULTILINE)
    text = text.replace("postfix/postmulti-script: ", "postmulti: ")
    return text


@pytest.fixture
def tmp_root():
    d = Path(tempfile.mkdtemp(prefix="hato-pmdiff-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_postmulti_sequence_against_postfix(tmp_root):
    if os.geteuid() != 0:
        pytest.fail("Debian's postmulti -e create needs root (postfix set-permissions)")
    pf_root, hato_root = tmp_root / "pf", tmp_root / "hato"
    postfix = _normalise(_postfix_side(pf_root), "/etc", pf_root)
    hato = _normalise(_hato_side(hato_root), f"{hato_root}/etc", hato_root)
    # the one rule hato widens on purpose: hato- names are allowed too
    hato = hato.replace("must start with 'postfix-' or 'hato-'", "must start with 'postfix-'")
    assert hato == postfix
    # and the instance got what the reference shows
    enabled = postfix.split("=== SNAPSHOT enabled\n")[1].split("=== end enabled")[0]
    instance = enabled.split("---\n")[1]
    for line in ("master_service_disable = inet", "authorized_submit_users =",
                 "multi_instance_group = mta", "multi_instance_name = postfix-deux",
                 "multi_instance_enable = yes", "queue_directory = <spool>/postfix-deux",
                 "data_directory = <lib>/postfix-deux"):
        assert line in instance.splitlines(), instance

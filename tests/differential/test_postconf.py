"""hato postconf against Debian's Postfix 3.7 postconf: the same
configuration directory, the same question, the same answer."""

from __future__ import annotations

import random
import shutil

import pytest

from hato.config.params import DELIBERATE_DIFFERENCES, PARAMS
from hato.config.maincf import MainCf
from tests.conftest import run_postfix
from tests.hatorun import hato_inprocess

from .postconf_cases import (DEBIAN_MASTER, assert_same, both, random_value,
                             reference_config, write_config)

pytestmark = pytest.mark.differential


@pytest.fixture
def ref(tmp_path, postfix_postconf):
    return reference_config(tmp_path / "ref")


@pytest.mark.parametrize("args", [["-n"], ["-M"], ["-Mf"], ["-F"], ["-P"], ["-Pf"],
                                  ["-M", "smtp/inet", "submission"], ["-F", "smtps/inet/command"],
                                  ["-P", "submission/inet/syslog_name"], ["-nh"], ["-nH"]])
def test_reference_setup(ref, args):
    assert_same(ref, *args)


def test_reference_second_instance(tmp_path, postfix_postconf):
    d = reference_config(tmp_path / "deux", "deux")
    for args in (["-n"], ["-M"], ["-F"], ["-P"]):
        assert_same(d, *args)


def test_reference_expansions(ref):
    names = list(MainCf.read(str(ref / "main.cf")).values())
    names = [n for n in names if n not in DELIBERATE_DIFFERENCES]
    assert_same(ref, "-x", *names)
    assert_same(ref, "-o", "stress=yes", "-x", *names)
    assert_same(ref, "-x", "-M")
    assert_same(ref, "-x", "-P")


def test_debian_stock_master_cf(tmp_path, postfix_postconf):
    if not DEBIAN_MASTER.exists():
        pytest.fail(f"{DEBIAN_MASTER} is missing: install the Debian package postfix")
    d = write_config(tmp_path / "deb", "", DEBIAN_MASTER.read_text())
    for args in (["-M"], ["-Mf"], ["-F"], ["-P"], ["-n"]):
        assert_same(d, *args)


def _closed_names() -> list[str]:
    """Parameters whose default mentions only parameters hato implements,
    and whose defaults hato shares with Postfix."""
    from hato.config.expand import referenced_names

    ok: dict[str, bool] = {}

    def closed(name: str, seen: frozenset = frozenset()) -> bool:
        if name in ok:
            return ok[name]
        p = PARAMS.get(name)
        if p is None or name in DELIBERATE_DIFFERENCES or name in seen \
                or name.startswith("hato_"):  # hato's own: Postfix does not know them
            return False
        result = all(closed(n, seen | {name}) for n in referenced_names(p.default)
                     if n != "stress")
        ok[name] = result
        return result

    return sorted(n for n in PARAMS if closed(n))


def test_default_expansions(tmp_path, postfix_postconf):
    d = write_config(tmp_path / "empty", "", "")
    names = _closed_names()
    pf = run_postfix("postconf", "-c", str(d), "-dx", *names)
    ht = hato_inprocess("postconf", "-c", str(d), "-dx", *names)
    assert ht.stdout == pf.stdout


@pytest.mark.parametrize("seed", range(40))
def test_generated_main_cf(tmp_path, postfix_postconf, seed):
    rng = random.Random(seed)
    names = _closed_names()
    # Parameters postconf itself interprets (and refuses junk in) stay out.
    interpreted = {"inet_protocols", "inet_interfaces", "mynetworks_style", "mynetworks",
                   "compatibility_level", "myhostname", "mydomain", "config_directory",
                   "process_name", "process_id", "service_name"}
    chosen = rng.sample([n for n in names if n not in interpreted], 12)
    lines = ["# generated"]
    for name in chosen:
        value = random_value(rng, names)
        if rng.random() < 0.3:
            # split over continuation lines
            parts = value.split(" ")
            value = ("\n" + rng.choice(["  ", "\t", "    "])).join(parts)
        lines.append(f"{name} = {value}")
        if rng.random() < 0.2:
            lines.append("# a comment between definitions")
    d = write_config(tmp_path / f"gen{seed}", "\n".join(lines) + "\n", "")
    assert_same(d, "-n")
    pf, ht = both(d, "-x", *chosen)
    if pf.returncode == 0:
        assert ht.stdout == pf.stdout, ht.stderr
    else:
        # Postfix refused an expansion (e.g. a nesting loop): so must hato.
        assert ht.returncode != 0


MASTER_PIECES = [
    "{name} inet n - n - - smtpd",
    "{name} unix - - y - - smtp\n  -o syslog_name=postfix/$service_name",
    "{name} inet n - n - 1 postscreen",
    "{name} unix - n n - - pipe\n  flags=Rq user=nobody argv=/bin/cat ${{recipient}}",
    "{name} inet n - n - - smtpd -o {{ smtpd_client_restrictions = permit_mynetworks, reject }}"
    " -o smtpd_sasl_auth_enable=yes",
    "{name} unix n - y 1000? 0 flush",
    "{name} unix - - y - 4 smtp -v -o smtp_bind_address=127.0.0.1",
    "{name} inet n - n - - smtpd\n\t-o smtpd_tls_wrappermode=yes\n\t-o milter_macro_daemon_name=ORIGINATING",
    "{name} unix-dgram n - n - 1 postlogd",
    "{name} fifo n - n 60 1 pickup",
]


@pytest.mark.parametrize("seed", range(25))
def test_generated_master_cf(tmp_path, postfix_postconf, seed):
    rng = random.Random(1000 + seed)
    entries = []
    keys = set()
    for i in range(rng.randint(1, 8)):
        name = rng.choice(["smtp", "submission", "smtps", "127.0.0.1:10025", "relay",
                           f"svc{i}", "2525", "[::1]:25"])
        entry = rng.choice(MASTER_PIECES).format(name=name)
        key = tuple(entry.split()[:2])
        if key in keys:  # a duplicate service is an error; hato check names it
            continue
        keys.add(key)
        entries.append(entry)
        if rng.random() < 0.3:
            entries.append("# comment")
    d = write_config(tmp_path / f"m{seed}", "", "\n".join(entries) + "\n")
    for args in (["-M"], ["-Mf"], ["-F"], ["-P"]):
        assert_same(d, *args)


# -- editing --------------------------------------------------------------------

EDIT_MAIN = """\
# A commented main.cf
myhostname = mail.example.com
mydomain = example.com   
mydestination = $myhostname,
    localhost.$mydomain,
\tlocalhost
# trailing comment

smtpd_banner = $myhostname ESMTP
"""


@pytest.mark.parametrize("args", [
    ["-e", "myhostname=new.example.com"],
    ["-e", "mydestination = a, b"],
    ["-e", "smtpd_timeout=60s", "smtpd_recipient_limit = 10"],
    ["-X", "mydestination"],
    ["-X", "mydestination", "nonexistent"],
    ["-#", "mydestination"],
    ["-#", "smtpd_banner", "mydomain"],
    ["-e", "mydomain="],
])
def test_edit_main_cf(tmp_path, postfix_postconf, args):
    a = write_config(tmp_path / "pf", EDIT_MAIN, "")
    b = write_config(tmp_path / "ht", EDIT_MAIN, "")
    pf = run_postfix("postconf", "-c", str(a), *args)
    ht = hato_inprocess("postconf", "-c", str(b), *args)
    assert (pf.returncode == 0) == (ht.returncode == 0), (pf.stderr, ht.stderr)
    ours, theirs = (b / "main.cf").read_text(), (a / "main.cf").read_text()
    if len(args) > 2:
        # Postfix appends several new names in its (randomly seeded) hash
        # order; the lines must be the same, their order may differ.
        ours, theirs = sorted(ours.splitlines()), sorted(theirs.splitlines())
    assert ours == theirs


@pytest.mark.parametrize("args", [
    ["-Me", "submission/inet=submission inet n - n - - smtpd -o smtpd_sasl_auth_enable=yes"],
    ["-Me", "new/unix=new unix - - n - - smtp -o syslog_name=postfix/new"],
    ["-MX", "smtps/inet"],
    ["-M#", "smtps/inet"],
    ["-Fe", "submission/inet/process_limit=20"],
    ["-Fe", "smtps/inet/command=smtpd -o smtpd_tls_wrappermode=yes"],
    ["-Pe", "submission/inet/smtpd_tls_security_level=may"],
    ["-Pe", "smtps/inet/smtpd_recipient_limit=5"],
    ["-PX", "submission/inet/syslog_name"],
])
def test_edit_master_cf(tmp_path, postfix_postconf, args):
    from tests.differential.postconf_cases import REFERENCE

    master = (REFERENCE / "master.cf").read_text()
    a = write_config(tmp_path / "pf", "", master)
    b = write_config(tmp_path / "ht", "", master)
    pf = run_postfix("postconf", "-c", str(a), *args)
    ht = hato_inprocess("postconf", "-c", str(b), *args)
    assert (pf.returncode == 0) == (ht.returncode == 0), (pf.stderr, ht.stderr)
    assert (b / "master.cf").read_text() == (a / "master.cf").read_text()


def test_unknown_parameter_warning(tmp_path, postfix_postconf):
    d = write_config(tmp_path / "u", "foo = bar\nmyhostname = a.example\n", "")
    pf, ht = both(d, "-n")
    assert ht.stdout == pf.stdout
    line = f"postconf: warning: {d}/main.cf: unused parameter: foo=bar"
    assert line in pf.stderr
    assert line in ht.stderr
    pf, ht = both(d, "nonexistent_parameter_x")
    assert "postconf: warning: nonexistent_parameter_x: unknown parameter" in ht.stderr
    assert pf.returncode == ht.returncode


def test_exit_codes(tmp_path, postfix_postconf):
    d = write_config(tmp_path / "bad", "smtpd_banner\n", "")
    pf, ht = both(d, "-n")
    assert pf.returncode != 0 and ht.returncode != 0
    assert f"{d}/main.cf, line 1: missing '=' after attribute name" in ht.stderr
    shutil.rmtree(d)
    d.mkdir()
    (d / "master.cf").write_text("")
    pf, ht = both(d, "-n")
    assert pf.returncode != 0 and ht.returncode != 0

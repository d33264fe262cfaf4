"""Bad configuration gives one clear line with file and line, a non-zero
exit status, and nothing written."""

from __future__ import annotations

import pytest

from hato.cli.main import COMMANDS
from tests.hatorun import hato_inprocess
from tests.conftest import run_hato

GOOD_MASTER = "smtp inet n - n - - smtpd\n"


def make(tmp_path, main: bytes | str, master: bytes | str = GOOD_MASTER):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "main.cf").write_bytes(main if isinstance(main, bytes) else main.encode())
    (d / "master.cf").write_bytes(master if isinstance(master, bytes) else master.encode())
    return d


def fatal_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "fatal" in line or "error:" in line]


@pytest.mark.parametrize("main, line, words", [
    ("myhostname = a.example\nsmtpd_banner\n", 2, "missing '=' after attribute name"),
    (b"myhostname = a.example\nsmtpd_banner = \xff\n", 2, "invalid UTF-8"),
    (b"smtpd_banner = " + b"x" * (1024 * 1024) + b"\n", 1, "logical line longer than"),
], ids=["no-equals", "non-utf8", "1mb-line"])
@pytest.mark.parametrize("command", [["postconf", "-n"], ["check"],
                                     ["postconf", "-e", "myhostname=b.example"]])
def test_main_cf_syntax(tmp_path, main, line, words, command):
    d = make(tmp_path, main)
    before = (d / "main.cf").read_bytes()
    r = hato_inprocess("-c", str(d), *command)
    assert r.returncode != 0
    lines = fatal_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert f"{d}/main.cf, line {line}: {words}" in lines[0]
    assert (d / "main.cf").read_bytes() == before


@pytest.mark.parametrize("master, words", [
    ("smtp inet n - n -\n", "bad field count"),
    ("smtp inet n - n - - smtpd\nrelay unix - - n - smtp\n", "bad field count"),
    ("smtp tcp n - n - - smtpd\n", 'invalid type field "tcp"'),
])
def test_master_cf_columns(tmp_path, master, words):
    d = make(tmp_path, "myhostname = a.example\n", master)
    before = (d / "master.cf").read_bytes()
    for command in (["postconf", "-M"], ["check"], ["postconf", "-Pe", "smtp/inet/a=b"]):
        r = hato_inprocess("-c", str(d), *command)
        assert r.returncode != 0
        lines = fatal_lines(r.stderr)
        assert len(lines) == 1 and f"{d}/master.cf, line" in lines[0] and words in lines[0]
    assert (d / "master.cf").read_bytes() == before


def test_unbalanced_expansion(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nsmtpd_banner = ${myhostname\n")
    r = hato_inprocess("-c", str(d), "postconf", "-x", "smtpd_banner")
    assert r.returncode != 0 and "truncated macro reference" in r.stderr
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode != 0
    assert f"{d}/main.cf, line 2: smtpd_banner: truncated macro reference" in r.stderr


def test_expansion_loop_is_named(tmp_path):
    d = make(tmp_path, "myhostname = $mydomain\nmydomain = $myorigin\nmyorigin = $myhostname\n")
    r = hato_inprocess("-c", str(d), "postconf", "-x", "myhostname")
    assert r.returncode != 0
    assert "myhostname -> mydomain -> myorigin -> myhostname" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("setting, words", [
    ("smtpd_timeout = 3x", "invalid time value: smtpd_timeout = 3x"),
    ("default_process_limit = 0", "invalid default_process_limit parameter value 0 < 1"),
    ("smtpd_recipient_limit = many", "bad numerical configuration"),
])
def test_check_types_and_bounds(tmp_path, setting, words):
    d = make(tmp_path, f"myhostname = a.example\n{setting}\n")
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    assert f"{d}/main.cf, line 2: {words}" in r.stderr


def test_check_bad_override_in_master(tmp_path):
    d = make(tmp_path, "myhostname = a.example\n",
             "submission inet n - n - - smtpd\n  -o smtpd_timeout=forever\n")
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    assert f"{d}/master.cf, line 1: service submission/inet: invalid time value" in r.stderr


def test_check_names_unimplemented_and_unused(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nsmtp_sasl_mechanism_filter = plain\n"
                       "myhostnmae = typo\ncompatibility_level = 3.6\n")
    r = hato_inprocess("-c", str(d), "check")
    assert f"{d}/main.cf, line 3: unused parameter: myhostnmae=typo" in r.stderr
    assert (f"{d}/main.cf, line 2: Postfix parameter smtp_sasl_mechanism_filter is not "
            "implemented by hato") in r.stderr or r.returncode == 0


def test_missing_config_directory(tmp_path):
    r = run_hato("-c", str(tmp_path / "nope"), "postconf", "-n")
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == (
        f"postconf: fatal: open {tmp_path}/nope/main.cf: No such file or directory")


def test_unknown_command_and_options():
    r = hato_inprocess("frobnicate")
    assert r.returncode == 1 and "unknown command: frobnicate" in r.stderr
    r = hato_inprocess("postconf", "-Z")
    assert r.returncode == 1 and "usage" in r.stderr


NOT_PROVIDED = sorted(name for name, func in COMMANDS.items()
                      if func.__qualname__.startswith("_not_provided."))


def test_postdrop_is_not_provided():
    assert NOT_PROVIDED == ["postdrop"]


@pytest.mark.parametrize("name", NOT_PROVIDED)
def test_commands_hato_does_not_provide_say_so(name):
    r = hato_inprocess(name)
    assert r.returncode == 1 and f"hato: {name}: not provided: " in r.stderr


def test_check_tables(tmp_path):
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "clients.cidr").write_text("10.0.0.0/33 REJECT\n192.168.0.0/16 OK\n")
    (d / "access").write_text("example.com OK\n")
    (d / "main.cf").write_text(
        "myhostname = a.example\n"
        f"smtpd_client_restrictions = check_client_access cidr:{d}/clients.cidr,\n"
        f"    check_client_access hash:{d}/access, check_policy_service inet:127.0.0.1:9\n"
        f"virtual_alias_maps = memcache:{d}/mc.cf\n"
        f"alias_maps = proxy:lmdb:{d}/nothere\n")
    (d / "master.cf").write_text("smtp inet n - n - - smtpd\n")
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    err = r.stderr
    assert f'cidr map {d}/clients.cidr, line 1: bad mask length in "10.0.0.0/33"' in err
    assert (f"{d}/main.cf, line 2: smtpd_client_restrictions: table hash:{d}/access: "
            f"open database {d}/access.hato.db") in err
    assert f"hato postmap hash:{d}/access" in err
    assert "dictionary type memcache is not supported by hato" in err
    assert f"{d}/main.cf, line 5: alias_maps: table proxy:lmdb:{d}/nothere" in err
    assert "inet:127.0.0.1:9" not in err  # a policy server, not a table
    # Once the index is built, that error is gone.
    r = hato_inprocess("postmap", f"hash:{d}/access")
    assert r.returncode == 0, r.stderr
    r = hato_inprocess("-c", str(d), "check")
    assert "access.hato.db" not in r.stderr


def test_check_inet_service_names(tmp_path):
    d = make(tmp_path, "myhostname = a.example\n",
             "smtps inet n - n - - smtpd\nnosuchsvc inet n - n - - smtpd\n")
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    assert f"{d}/master.cf, line 2: service nosuchsvc/inet: unknown service: nosuchsvc/tcp" in r.stderr
    assert "smtps/inet: unknown" not in r.stderr


def test_check_names_bad_and_unsupported_restrictions(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\n"
                       "smtpd_relay_restrictions = permit_mynetworks\n"
                       "smtpd_recipient_restrictions = permit_mynetworks, bogus_one,\n"
                       " reject_unverified_recipient\n",
             GOOD_MASTER + "submission inet n - n - - smtpd -o smtpd_relay_restrictions="
                           "permit_mynetworks,reject_unauth_destination\n")
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    err = r.stderr
    assert f'{d}/main.cf, line 4: smtpd_recipient_restrictions: unknown smtpd restriction ' \
           f'"bogus_one"' in err
    assert "reject_unverified_recipient needs the verify service" in err
    # main.cf has no relay protection: smtpd would refuse to run, as Postfix's.
    assert f"{d}/main.cf: in parameter smtpd_relay_restrictions or " \
           f"smtpd_recipient_restrictions, specify at least one working instance" in err
    # The submission service's own -o list protects it: no error for it.
    assert "service submission/inet: in parameter" not in err


def test_check_names_tls_without_certificate(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n",
             GOOD_MASTER + "smtps inet n - n - - smtpd -o smtpd_tls_wrappermode=yes\n"
                           "submission inet n - n - - smtpd\n"
                           " -o smtpd_tls_security_level=encrypt\n"
                           " -o smtpd_tls_cert_file=/nonexistent/cert.pem\n")
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    assert f"{d}/master.cf, line 2: service smtps/inet: TLS is enabled" in r.stderr
    assert "but no certificate is configured" in r.stderr
    assert f"{d}/master.cf, line 3: service submission/inet: smtpd_tls_cert_file: cannot " \
           f"load certificate /nonexistent/cert.pem" in r.stderr


def test_check_names_parameters_without_effect(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       "smtpd_tls_session_cache_database = btree:/var/lib/x\n",
             GOOD_MASTER + "submission inet n - n - - smtpd\n"
                           " -o smtpd_tls_ccert_verifydepth=5\n")
    r = hato_inprocess("-c", str(d), "check")
    assert f"{d}/main.cf, line 4: smtpd_tls_session_cache_database is accepted but has no " \
           f"effect in hato" in r.stderr
    assert f"{d}/master.cf, line 2: service submission/inet: smtpd_tls_ccert_verifydepth " \
           f"is accepted but has no effect in hato" in r.stderr


@pytest.mark.parametrize("value, message", [
    ("memcached://127.0.0.1:11211", "hato_anvil_backend: expected local or redis:URL"),
    ("redis:redis://127.0.0.1:6379/0?no_such_option=1", "anvil redis backend"),
])
def test_check_names_a_bad_anvil_backend(tmp_path, value, message):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       f"hato_anvil_backend = {value}\n", GOOD_MASTER)
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    assert f"{d}/main.cf, line 4: " in r.stderr and message in r.stderr, r.stderr


def test_check_accepts_a_redis_anvil_backend(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       "hato_anvil_backend = redis:redis://127.0.0.1:6379/0\n", GOOD_MASTER)
    r = hato_inprocess("-c", str(d), "check")
    assert "anvil" not in r.stderr, r.stderr


@pytest.mark.parametrize("line, message", [
    ("postscreen_dnsbl_sites = zen.spamhaus.org*x", "bad DNSBL weight factor"),
    ("postscreen_dnsbl_sites = zen.spamhaus.org=127.0.0.[2..x]", "bad DNSBL filter syntax"),
    ("postscreen_access_list = permit_mynetworks, permit_sasl_authenticated",
     "postscreen_access_list: unknown item: permit_sasl_authenticated"),
    ("postscreen_greet_action = reject", "postscreen_greet_action: expected ignore, enforce"),
    ("postscreen_upstream_proxy_protocol = proxy", "unsupported protocol 'proxy'"),
])
def test_check_names_bad_postscreen_settings(tmp_path, line, message):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       f"{line}\n", GOOD_MASTER)
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1
    assert f"{d}/main.cf, line 4: " in r.stderr and message in r.stderr, r.stderr


def test_check_accepts_the_reference_postscreen_settings(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       "postscreen_access_list = permit_mynetworks, cidr:/dev/null\n"
                       "postscreen_blacklist_action = drop\n"
                       "postscreen_greet_action = enforce\n"
                       "postscreen_dnsbl_sites = all.rbl.jp=127.0.0.[2;4],\n"
                       "  zen.spamhaus.org=127.0.0.[2..7;10;11]\n", GOOD_MASTER)
    r = hato_inprocess("-c", str(d), "check")
    assert "postscreen" not in r.stderr, r.stderr


def test_check_does_not_ask_for_postscreen_cache_to_exist(tmp_path):
    """postscreen creates its cache on first use, as Postfix's does."""
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       f"postscreen_cache_map = btree:{tmp_path}/not-yet/postscreen_cache\n",
             GOOD_MASTER)
    r = hato_inprocess("-c", str(d), "check")
    assert "postscreen_cache" not in r.stderr, r.stderr


@pytest.mark.parametrize("line, message", [
    ("smtpd_milters = { inet:127.0.0.1:8891, color=red }",
     'smtpd_milters: unknown option: "color = red"'),
    ("non_smtpd_milters = { inet:127.0.0.1:8891, default_action=bounce }",
     "unknown milter default action 'bounce'"),
    ("smtpd_milters = foo:bar", "invalid transport name: foo in Milter service: foo:bar"),
    ("milter_protocol = 7", "milter_protocol: bad protocol information: 7"),
    ("milter_default_action = maybe", "unknown milter default action 'maybe'"),
    ("smtpd_milters = { inet:127.0.0.1:8891", "smtpd_milters:"),
])
def test_check_names_bad_milter_settings(tmp_path, line, message):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       f"{line}\n", GOOD_MASTER)
    r = hato_inprocess("-c", str(d), "check")
    assert r.returncode == 1, r.stderr
    assert f"{d}/main.cf, line 4: " in r.stderr and message in r.stderr, r.stderr


def test_check_accepts_the_reference_milter_settings(tmp_path):
    d = make(tmp_path, "myhostname = a.example\nalias_maps =\ncompatibility_level = 3.6\n"
                       "smtpd_milters = inet:127.0.0.1:8891, { unix:/run/x.sock, "
                       "default_action=accept, connect_timeout=10s }\n"
                       "non_smtpd_milters = $smtpd_milters\nmilter_protocol = 6\n",
             GOOD_MASTER + "submission inet n - n - - smtpd\n"
                           "  -o milter_macro_daemon_name=ORIGINATING\n")
    r = hato_inprocess("-c", str(d), "check")
    assert "milter" not in r.stderr, r.stderr

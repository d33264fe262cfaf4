"""Cyrus SASL's smtpd.conf (hato.auth.cyrusconf)."""

from __future__ import annotations

import pytest

from hato.auth.cyrusconf import (DEFAULT_SASLAUTHD_PATH, load_cyrus_conf, parse_cyrus_conf,
                                 read_cyrus_conf, search_path)
from hato.config.errors import ConfigError

REFERENCE = """\
# The reference setup: saslauthd with PAM behind it.
pwcheck_method: saslauthd
mech_list: PLAIN LOGIN
"""


def test_reference_setup():
    conf = parse_cyrus_conf(REFERENCE, "/etc/postfix/sasl/smtpd.conf")
    assert conf.errors == [] and conf.warnings == []
    assert conf.pwcheck_methods == ["saslauthd"]
    assert conf.mech_list == ["PLAIN", "LOGIN"]
    assert conf.saslauthd_path == DEFAULT_SASLAUTHD_PATH == "/var/run/saslauthd/mux"
    assert conf.line("mech_list") == 3


def test_all_the_options_hato_uses():
    conf = parse_cyrus_conf(
        "  pwcheck_method:   saslauthd auxprop  \n"
        "MECH_LIST: plain, cram-md5\n"
        "saslauthd_path: /var/spool/postfix/var/run/saslauthd/mux\n"
        "auxprop_plugin: sasldb\n"
        "sasldb_path: /etc/hato/sasldb.lmdb\n"
        "log_level: 3\n", "smtpd.conf")
    assert conf.errors == []
    assert conf.pwcheck_methods == ["saslauthd", "auxprop"]
    assert conf.mech_list == ["PLAIN", "CRAM-MD5"]
    assert conf.saslauthd_path == "/var/spool/postfix/var/run/saslauthd/mux"
    assert conf.auxprop_plugins == ["sasldb"]
    assert conf.sasldb_path == "/etc/hato/sasldb.lmdb"
    assert conf.log_level == 3


def test_defaults_are_libsasls():
    conf = parse_cyrus_conf("", "smtpd.conf")
    assert conf.pwcheck_methods == ["auxprop"]
    assert conf.auxprop_plugins == ["sasldb"]
    assert conf.mech_list is None
    assert conf.sasldb_path is None  # hato's own database, not Cyrus' /etc/sasldb2


def test_lines_end_at_newline_only_like_libsasl():
    # libsasl reads with fgets(): only \n ends a line (Python's splitlines()
    # also ends one at \r, \v, \x1c-\x1e and \x85), and it trims with C's
    # isspace(), which \x1c is not.
    conf = parse_cyrus_conf("log_level: 3\x1c\nmech_list: PLAIN\rpwcheck_method: auxprop\r\n"
                            "saslauthd_path: /run/mux\x85\n", "smtpd.conf")
    assert conf.options["log_level"] == "3\x1c"
    assert conf.options["mech_list"] == "PLAIN\rpwcheck_method: auxprop"
    assert "pwcheck_method" not in conf.options
    assert conf.line("saslauthd_path") == 3
    assert conf.options["saslauthd_path"] == "/run/mux\x85"


def test_first_setting_counts_like_libsasl():
    conf = parse_cyrus_conf("mech_list: PLAIN\nmech_list: LOGIN\n", "f.conf")
    assert conf.mech_list == ["PLAIN"]
    assert conf.warnings == ["f.conf, line 2: mech_list is already set at line 1; "
                             "the first setting counts"]


@pytest.mark.parametrize("line", ["pwcheck_method saslauthd", "pwcheck_method : saslauthd",
                                  "mech list: PLAIN", ": PLAIN", "mech_list:", "mech_list:   "])
def test_syntax_errors_name_file_and_line(line):
    conf = parse_cyrus_conf(f"# comment\n\n{line}\n", "/x/smtpd.conf")
    assert len(conf.errors) == 1
    assert conf.errors[0].path == "/x/smtpd.conf" and conf.errors[0].line == 3
    with pytest.raises(ConfigError):
        conf.check()


@pytest.mark.parametrize("text,needle", [
    ("pwcheck_method: authdaemond\n", "pwcheck_method authdaemond is not supported"),
    ("pwcheck_method: saslauthd bogus\n", "unknown pwcheck_method \"bogus\""),
    ("pwcheck_method: auxprop\nauxprop_plugin: sql\n", "auxprop_plugin sql is not supported"),
    ("auxprop_plugin: ldapdb\n", "auxprop_plugin ldapdb is not supported"),
    ("log_level: loud\n", "log_level: not a number"),
    ("pwcheck_method: saslauthd\nsaslauthd_path: run/mux\n", "must be an absolute path"),
])
def test_unsupported_values_are_errors_with_line(text, needle):
    conf = parse_cyrus_conf(text, "smtpd.conf")
    assert len(conf.errors) == 1, conf.errors
    assert needle in conf.errors[0].message
    assert conf.errors[0].line is not None


def test_auxprop_plugin_does_not_matter_without_auxprop():
    conf = parse_cyrus_conf("pwcheck_method: saslauthd\nauxprop_plugin: sql\n", "smtpd.conf")
    assert conf.errors == []


def test_unknown_keys_are_kept_and_reported():
    conf = parse_cyrus_conf("mech_list: PLAIN\nsql_user: postfix\nautotransition: yes\n",
                            "smtpd.conf")
    assert conf.get("sql_user") == "postfix"
    assert conf.unknown_keys() == [("sql_user", 2), ("autotransition", 3)]
    assert conf.warnings == [
        "smtpd.conf, line 2: Cyrus SASL option sql_user is not used by hato",
        "smtpd.conf, line 3: Cyrus SASL option autotransition is not used by hato"]


def test_search_path():
    assert search_path("/a:/b::/a") == ["/a", "/b"]
    dirs = search_path("", "/etc/hato")
    assert dirs[:3] == ["/etc/hato/sasl", "/etc/postfix/sasl", "/usr/lib/sasl"]
    assert "/etc/sasl2" in dirs and "/usr/lib/x86_64-linux-gnu/sasl2" in dirs
    assert dirs[-1] == "/usr/local/lib/sasl2"
    assert search_path("", "/etc/postfix").count("/etc/postfix/sasl") == 1


def test_load_finds_the_first_directory_with_the_file(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "smtpd.conf").write_text("mech_list: LOGIN\n")
    (tmp_path / "two" / "other.conf").write_text("mech_list: PLAIN\n")
    path = f"{tmp_path}/one:{tmp_path}/two"
    conf = load_cyrus_conf("smtpd", cyrus_sasl_config_path=path)
    assert conf.path == str(tmp_path / "two" / "smtpd.conf")
    assert conf.mech_list == ["LOGIN"]
    assert load_cyrus_conf("other", cyrus_sasl_config_path=path).mech_list == ["PLAIN"]


def test_load_without_a_file_uses_defaults_and_says_where_it_looked(tmp_path):
    conf = load_cyrus_conf("smtpd", cyrus_sasl_config_path=str(tmp_path))
    assert conf.path is None and conf.errors == []
    assert conf.pwcheck_methods == ["auxprop"]
    assert conf.warnings and f"no smtpd.conf in {tmp_path}" in conf.warnings[0]


def test_load_refuses_a_path_as_application_name():
    with pytest.raises(ConfigError):
        load_cyrus_conf("../smtpd", cyrus_sasl_config_path="/nonexistent")


def test_unreadable_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        read_cyrus_conf(str(tmp_path / "nope.conf"))
    assert info.value.path == str(tmp_path / "nope.conf")

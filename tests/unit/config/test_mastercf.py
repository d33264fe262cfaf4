"""master.cf parsing, formatting and editing."""

from __future__ import annotations

import pytest

from hato.config.errors import ConfigError
from hato.config.mastercf import MasterCf, format_entry, split_args

REF = """\
# comment
smtp      inet  n       -       n       -       -       smtpd
submission inet n       -       n       -       -       smtpd
  -o syslog_name=postfix/submission
#  -o commented=out
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
tlsmgr    unix  -       -       y       1000?   1       tlsmgr
127.0.0.1:10025 inet n  -       n       -       -       smtpd -v -o a=b extra {x y}
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def test_columns_and_overrides():
    m = MasterCf.parse(REF)
    keys = [s.key for s in m.services]
    assert keys == ["smtp/inet", "submission/inet", "tlsmgr/unix", "127.0.0.1:10025/inet",
                    "postlog/unix-dgram"]
    sub = m.services[1]
    assert sub.overrides() == {"syslog_name": "postfix/submission",
                               "smtpd_client_restrictions": "permit_sasl_authenticated, reject"}
    assert sub.lineno == 3
    tls = m.services[2]
    assert tls.wakeup() == (1000, True)
    assert tls.maxproc(100) == 1
    assert m.services[0].maxproc(300) == 300
    assert m.services[0].private() is False
    assert m.services[3].overrides() == {"a": "b"}
    assert m.services[3].args[-1] == "x y"


def test_format_like_postconf_M():
    m = MasterCf.parse(REF)
    assert m.services[0].format() == (
        "smtp       inet  n       -       n       -       -       smtpd")
    assert m.services[4].format() == (
        "postlog    unix-dgram n  -       n       -       1       postlogd")
    assert m.services[1].format() == (
        "submission inet  n       -       n       -       -       smtpd -o "
        "syslog_name=postfix/submission -o {smtpd_client_restrictions=permit_sasl_authenticated,"
        " reject}")
    folded = format_entry(m.services[1].fields, fold=True).splitlines()
    assert folded[1] == "    -o syslog_name=postfix/submission"


@pytest.mark.parametrize("line, words", [
    ("smtp inet n - y -\n", "bad field count"),
    ("smtp bogus n - y - - smtpd\n", 'invalid type field "bogus"'),
    ("smtp inet x - y - - smtpd\n", 'invalid private field "x"'),
    ("smtp inet n - y 10x - smtpd\n", 'invalid wakeup field "10x"'),
    ("smtp inet n - y - abc smtpd\n", 'invalid process_limit field "abc"'),
])
def test_errors(line, words):
    with pytest.raises(ConfigError) as err:
        MasterCf.parse("# x\n" + line, "/etc/hato/master.cf")
    assert err.value.line == 2
    assert words in str(err.value)
    assert str(err.value).startswith("/etc/hato/master.cf, line 2:")


def test_missing_brace_warns():
    w: list[str] = []
    assert split_args("a {b c", w) == ["a", "{b c}"]
    assert "missing '}'" in w[0]


def test_edits_keep_comments():
    m = MasterCf.parse(REF)
    m.set_param("submission", "inet", "smtpd_tls_security_level", "encrypt")
    text = m.render()
    assert "#  -o commented=out\nsubmission inet" in text
    assert "    -o smtpd_tls_security_level=encrypt\n" in text
    m.set_param("submission", "inet", "syslog_name", None)
    assert "syslog_name" not in m.render()
    m.comment_out("smtp", "inet")
    assert "#smtp      inet" in m.render()
    m.remove("tlsmgr", "unix")
    assert "tlsmgr" not in m.render()


SERVICES = """\
smtp\t\t25/tcp\t\tmail
submissions\t465/tcp\t\tssmtp smtps urd # Submission over TLS
submission\t587/tcp
domain\t\t53/udp
"""


@pytest.mark.parametrize("name, want", [
    ("smtp", (None, 25)),
    ("submission", (None, 587)),
    ("smtps", (None, 465)),  # an alias of submissions
    ("2525", (None, 2525)),
    ("127.0.0.1:smtp", ("127.0.0.1", 25)),
    ("127.0.0.1:10025", ("127.0.0.1", 10025)),
    ("[::1]:25", ("::1", 25)),
    ("localhost:submission", ("localhost", 587)),
    (":2525", (None, 2525)),
])
def test_inet_endpoints(tmp_path, name, want):
    from hato.config.mastercf import inet_endpoint

    services = tmp_path / "services"
    services.write_text(SERVICES)
    assert inet_endpoint(name, str(services)) == want


def test_inet_endpoint_falls_back_to_standard_ports(tmp_path):
    """The reference site had to add smtps to /etc/services by hand; hato
    knows the standard ports without it."""
    from hato.config.mastercf import inet_endpoint

    empty = tmp_path / "services"
    empty.write_text("")
    assert inet_endpoint("smtps", str(empty)) == (None, 465)
    assert inet_endpoint("submission", str(tmp_path / "missing")) == (None, 587)
    with pytest.raises(ConfigError):
        inet_endpoint("nosuchservice", str(empty))
    with pytest.raises(ConfigError):
        inet_endpoint("127.0.0.1:70000", str(empty))
    with pytest.raises(ConfigError):
        inet_endpoint("[::1]25", str(empty))


def test_service_endpoint_of_reference_entries():
    m = MasterCf.parse("smtps inet n - n - - smtpd\n  -o smtpd_tls_wrappermode=yes\n"
                       "10025 inet n - n - - smtpd\n")
    assert m.services[0].endpoint()[1] == 465
    assert m.services[1].endpoint() == (None, 10025)

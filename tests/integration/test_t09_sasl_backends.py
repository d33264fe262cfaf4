"""t09: hato's SASL backends against the real peers Debian ships.

* Cyrus' saslauthd (sasl2-bin) with ``-a shadow`` on a socket in a temp
  directory, checking a system user the test creates (``useradd`` +
  ``chpasswd``) and removes. saslauthd's own ``sasldb`` mechanism cannot be
  used here: it always reads libsasl's default ``/etc/sasldb2`` (its
  getopt callback offers no ``sasldb_path``).
* Dovecot's auth service (dovecot-core) with a minimal auth-only
  configuration (``protocols =``, a passwd-file passdb) whose auth-client
  socket lives in a temp directory; nothing listens on the network.

Both are started and stopped by the tests; hato's clients run in-process,
the way smtpd's workers use them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import textwrap
import threading

import pytest

from hato.auth import Challenge, Failure, Success
from hato.auth.backend import AuthTempFail
from hato.auth.dovecot import DovecotAuthClient
from hato.auth.saslauthd import SaslauthdClient
from hato.auth.server import sasl_server_from_settings
from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from tests.conftest import require_tool

from .sasl_daemons import PASSWORD, Dovecot, Saslauthd

pytestmark = pytest.mark.integration


def settings(tmp: str, main: str):
    text = textwrap.dedent(f"""\
        myhostname = mx1.example.com
        queue_directory = {tmp}/queue
        config_directory = {tmp}
        cyrus_sasl_config_path = {tmp}/sasl
        """) + textwrap.dedent(main)
    cfg = Config(tmp, MainCf.parse(text, f"{tmp}/main.cf"), MasterCf.parse("", f"{tmp}/master.cf"),
                 HostFacts("mx1"))
    return cfg.settings()


# -- saslauthd ---------------------------------------------------------------------

@pytest.fixture
def saslauthd():
    daemon = Saslauthd()
    try:
        daemon.setup()
        yield daemon
    finally:
        daemon.cleanup()


def test_saslauthd_client_against_debians_saslauthd(saslauthd):
    client = SaslauthdClient(saslauthd.mux, 10)
    assert client.check_password(saslauthd.user, PASSWORD) is True
    assert client.check_password(saslauthd.user, "wrong") is False
    assert client.check_password("hato-no-such-user", PASSWORD) is False
    # libsasl splits user@realm before asking: shadow sees the bare name.
    assert client.check_password(f"{saslauthd.user}@example.org", PASSWORD) is True
    # saslauthd would check "s3cret pw..." and ignore the rest: hato never sends NUL.
    assert client.check_password(saslauthd.user, PASSWORD + "\0junk") is False
    # testsaslauthd, Cyrus' own client, agrees.
    test = require_tool("testsaslauthd", "sasl2-bin")
    out = subprocess.run([test, "-u", saslauthd.user, "-p", PASSWORD, "-f", saslauthd.mux,
                          "-s", "smtp"], capture_output=True, text=True, timeout=30)
    assert 'OK "Success."' in out.stdout


def test_cyrus_smtpd_conf_with_saslauthd(saslauthd):
    tmp = saslauthd.dir
    os.mkdir(os.path.join(tmp, "sasl"))
    with open(os.path.join(tmp, "sasl", "smtpd.conf"), "w") as f:
        f.write(f"pwcheck_method: saslauthd\nmech_list: PLAIN LOGIN CRAM-MD5\n"
                f"saslauthd_path: {saslauthd.mux}\n")
    sasl = sasl_server_from_settings(settings(tmp, "smtpd_sasl_auth_enable = yes\n"))
    try:
        assert sasl.mechanisms(tls_active=False) == ["PLAIN", "LOGIN"]
        assert any("CRAM-MD5 cannot work through saslauthd" in w for w in sasl.warnings)
        user = saslauthd.user.encode()
        assert sasl.start("PLAIN", tls_active=False).step(
            b"\0" + user + b"\0" + PASSWORD.encode()) == Success(saslauthd.user)
        ex = sasl.start("LOGIN", tls_active=False)
        assert isinstance(ex.step(None), Challenge)
        assert isinstance(ex.step(user), Challenge)
        result = ex.step(b"wrong")
        assert isinstance(result, Failure) and not result.temporary
        # saslauthd gone: a temporary failure, never a "wrong password".
        saslauthd.stop()
        result = sasl.start("PLAIN", tls_active=False).step(b"\0" + user + b"\0x")
        assert isinstance(result, Failure) and result.temporary
        with pytest.raises(AuthTempFail):
            SaslauthdClient(saslauthd.mux, 5).check_password(saslauthd.user, PASSWORD)
    finally:
        sasl.close()


# -- Dovecot ---------------------------------------------------------------------

@pytest.fixture
def dovecot():
    daemon = Dovecot()
    try:
        daemon.start()
        yield daemon
    finally:
        daemon.cleanup()


@pytest.fixture
def dovecot_sasl(dovecot):
    sasl = sasl_server_from_settings(settings(dovecot.dir, f"""\
        smtpd_sasl_auth_enable = yes
        smtpd_sasl_type = dovecot
        smtpd_sasl_path = {dovecot.socket}
        smtpd_sasl_security_options = noanonymous, noplaintext
        smtpd_sasl_tls_security_options = noanonymous
        """))
    try:
        yield sasl
    finally:
        sasl.close()


def test_dovecot_mechanisms_as_announced(dovecot, dovecot_sasl):
    assert dovecot_sasl.mechanisms(tls_active=True) == ["PLAIN", "LOGIN", "CRAM-MD5"]
    assert dovecot_sasl.mechanisms(tls_active=False) == ["CRAM-MD5"]  # noplaintext
    assert dovecot_sasl.start("PLAIN", tls_active=False) is None
    mechs = DovecotAuthClient(dovecot.socket).mechanisms()
    assert [(m.name, sorted(m.props)) for m in mechs] == [
        ("PLAIN", ["plaintext"]), ("LOGIN", ["plaintext"]),
        ("CRAM-MD5", ["active", "dictionary"])]


def test_dovecot_plain(dovecot_sasl):
    ex = dovecot_sasl.start("PLAIN", tls_active=True, client_addr="127.0.0.1",
                            local_addr="127.0.0.1")
    assert ex.step(b"\0alice\0wonderland") == Success("alice")
    ex = dovecot_sasl.start("PLAIN", tls_active=True)
    assert ex.step(None) == Challenge(b"")
    assert ex.step(b"\0alice\0wonderland") == Success("alice")
    result = dovecot_sasl.start("PLAIN", tls_active=True).step(b"\0alice\0wrong")
    assert isinstance(result, Failure) and not result.temporary


def test_dovecot_login(dovecot_sasl):
    ex = dovecot_sasl.start("LOGIN", tls_active=True)
    assert ex.step(None) == Challenge(b"Username:")
    assert ex.step(b"alice") == Challenge(b"Password:")
    assert ex.step(b"wonderland") == Success("alice")


def test_dovecot_cram_md5(dovecot_sasl):
    ex = dovecot_sasl.start("CRAM-MD5", tls_active=False)
    challenge = ex.step(None)
    assert isinstance(challenge, Challenge) and challenge.data.startswith(b"<")
    digest = hmac.new(b"builder", challenge.data, hashlib.md5).hexdigest()
    assert ex.step(b"bob " + digest.encode()) == Success("bob")
    ex = dovecot_sasl.start("CRAM-MD5", tls_active=False)
    challenge = ex.step(None)
    digest = hmac.new(b"wrong", challenge.data, hashlib.md5).hexdigest()
    assert isinstance(ex.step(b"bob " + digest.encode()), Failure)


def test_dovecot_shared_connection_many_threads(dovecot_sasl):
    """smtpd's worker threads share one connection: every exchange gets its
    own answer, whatever order Dovecot (which delays failures by
    auth_failure_delay) sends them in."""
    dovecot_sasl.mechanisms(tls_active=True)
    results: dict[int, object] = {}

    def run(i):
        password = b"wonderland" if i % 2 else b"bad%d" % i
        ex = dovecot_sasl.start("LOGIN", tls_active=True, client_addr="127.0.0.1",
                                local_addr="127.0.0.1")
        ex.step(None)
        ex.step(b"alice")
        results[i] = ex.step(password)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, result in results.items():
        if i % 2:
            assert result == Success("alice")
        else:
            assert isinstance(result, Failure) and not result.temporary
    assert len(results) == 8
    assert dovecot_sasl.client._conn is not None and dovecot_sasl.client._next_id == 8


def test_dovecot_restart(dovecot, dovecot_sasl):
    ex = dovecot_sasl.start("LOGIN", tls_active=True)
    assert ex.step(None) == Challenge(b"Username:")
    dovecot.stop()
    result = ex.step(b"alice")
    assert isinstance(result, Failure) and result.temporary
    # still offered (smtpd keeps AUTH), and an attempt fails temporarily (454)
    assert dovecot_sasl.mechanisms(tls_active=True) == ["PLAIN", "LOGIN", "CRAM-MD5"]
    result = dovecot_sasl.start("PLAIN", tls_active=True).step(b"\0alice\0wonderland")
    assert isinstance(result, Failure) and result.temporary
    dovecot.start()
    ex = dovecot_sasl.start("PLAIN", tls_active=True)
    assert ex is not None
    assert ex.step(b"\0alice\0wonderland") == Success("alice")


def test_dovecot_base64_of_binary_passwords(dovecot_sasl):
    # Bytes that are not UTF-8 travel base64-encoded and simply fail.
    result = dovecot_sasl.start("PLAIN", tls_active=True).step(b"\0alice\0\xff\xfe")
    assert isinstance(result, Failure)

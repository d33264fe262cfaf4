"""smtp_sasl_password_maps keys and mechanism choice for the smtp client."""

from __future__ import annotations

import pytest

from hato.policy.rewrite import MatchList
from hato.policy.smtp_sasl import (
    choose_mechanism,
    filter_mechanisms,
    find_credentials,
    parse_auth_list,
    password_keys,
    pattern_filter,
    security_options_name,
    sender_keys,
    split_password,
)

from .conftest import make_settings


def test_keys_host_then_destination_as_written():
    # Postfix: maps_find(session->host) then maps_find(session->dest).
    assert password_keys(host="mail.isp.example", dest="[mail.isp.example]:587") == [
        "mail.isp.example", "[mail.isp.example]:587"]
    assert password_keys(host="mx1.example.com", dest="example.com") == [
        "mx1.example.com", "example.com"]
    # same name: asked once
    assert password_keys(host="relay.example", dest="relay.example") == ["relay.example"]


def test_sender_dependent_keys_first():
    keys = password_keys(host="relay.example", dest="[relay.example]:submission",
                         sender="joe+list@example.org", sender_dependent=True,
                         recipient_delimiter="+")
    assert keys == ["joe+list@example.org", "joe@example.org", "@example.org",
                    "relay.example", "[relay.example]:submission"]
    # not without the switch, not for lmtp, not for the null sender
    assert password_keys(host="h", dest="d", sender="a@b") == ["h", "d"]
    assert password_keys(host="h", dest="d", sender="a@b", sender_dependent=True,
                         lmtp=True) == ["h", "d"]
    assert password_keys(host="h", dest="d", sender="", sender_dependent=True) == ["h", "d"]


def test_sender_keys_local_domain():
    assert sender_keys("joe-x@local.example", recipient_delimiter="+-",
                       local_domain=True) == [
        "joe-x@local.example", "joe@local.example", "joe-x", "joe", "@local.example"]
    assert sender_keys("joe@example.org") == ["joe@example.org", "@example.org"]


def test_find_credentials_first_hit_and_value_split():
    table = {"@example.org": "shared:pw", "relay.example": "user@isp:pa:ss"}
    keys = password_keys(host="relay.example", dest="[relay.example]:587",
                         sender="joe@example.org", sender_dependent=True)
    creds = find_credentials(table.get, keys)
    assert (creds.username, creds.password, creds.key) == ("shared", "pw", "@example.org")
    assert "pw" not in repr(creds)
    creds = find_credentials(table.get, password_keys(host="relay.example", dest="x"))
    assert (creds.username, creds.password) == ("user@isp", "pa:ss")
    assert find_credentials(table.get, ["nothing"]) is None
    assert split_password("nopassword") == ("nopassword", "")


def test_lookup_error_stops_search():
    def broken(key):
        raise RuntimeError("table down")
    with pytest.raises(RuntimeError):
        find_credentials(broken, ["a", "b"])


def test_security_options_parameter():
    assert security_options_name(tls=False) == "smtp_sasl_security_options"
    assert security_options_name(tls=True) == "smtp_sasl_tls_security_options"
    assert security_options_name(tls=True, verified=True) == \
        "smtp_sasl_tls_verified_security_options"
    assert security_options_name(tls=True, prefix="lmtp") == "lmtp_sasl_tls_security_options"


def test_default_security_options_refuse_plaintext():
    offered = "PLAIN LOGIN CRAM-MD5"
    # smtp_sasl_security_options default: noplaintext, noanonymous
    assert choose_mechanism(offered, security_options=["noplaintext", "noanonymous"]) == \
        "CRAM-MD5"
    assert choose_mechanism("PLAIN LOGIN", security_options=["noplaintext"]) is None
    # the usual TLS setting lets PLAIN through
    assert choose_mechanism("LOGIN PLAIN", security_options=["noanonymous"]) == "PLAIN"
    assert filter_mechanisms("ANONYMOUS PLAIN", security_options=["noanonymous"]) == ["PLAIN"]
    with pytest.raises(ValueError):
        choose_mechanism("PLAIN", security_options=["nosuchoption"])


def test_strongest_wins():
    offered = "LOGIN PLAIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 GSSAPI"
    assert choose_mechanism(offered) == "SCRAM-SHA-256"
    assert choose_mechanism("PLAIN login cram-md5") == "CRAM-MD5"
    assert choose_mechanism("GSSAPI NTLM") is None
    assert parse_auth_list("plain, LOGIN plain") == ["PLAIN", "LOGIN"]


def test_mechanism_filter_patterns():
    f = pattern_filter(["plain", "login"])
    assert choose_mechanism("SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN", mechanism_filter=f) == "PLAIN"
    f = pattern_filter(["!cram-md5", "cram-md5", "plain"])
    assert filter_mechanisms("CRAM-MD5 PLAIN", mechanism_filter=f) == ["PLAIN"]
    assert pattern_filter([]) is None


def test_mechanism_filter_with_matchlist(tmp_path):
    table = tmp_path / "mechs"
    table.write_text("login x\n")
    s = make_settings(f"smtp_sasl_mechanism_filter = plain, texthash:{table}\n")
    ml = MatchList.from_settings(s, "smtp_sasl_mechanism_filter")
    try:
        assert filter_mechanisms("CRAM-MD5 PLAIN LOGIN", mechanism_filter=ml.match) == [
            "PLAIN", "LOGIN"]
    finally:
        ml.close()

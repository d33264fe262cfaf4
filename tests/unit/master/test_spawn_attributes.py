"""spawn(8)'s master.cf attributes (hato.services.spawn): user= and argv=,
Postfix's refusals, and the per-service time limit parameter."""

from __future__ import annotations

import pytest

from hato.config.errors import ConfigError
from hato.config.settings import Config, HostFacts
from hato.services.spawn import parse_command, resolve_user


def test_user_and_argv():
    assert parse_command(["user=nobody", "argv=/usr/bin/policyd-spf", "/etc/x.conf"]) == (
        "nobody", ["/usr/bin/policyd-spf", "/etc/x.conf"])
    assert parse_command(["user=nobody:nogroup", "argv=", "/bin/cat"]) == (
        "nobody:nogroup", ["/bin/cat"])


@pytest.mark.parametrize("args,message", [
    (["argv=/bin/true"], "missing user= attribute"),
    (["user=nobody"], "missing argv= attribute"),
    (["user=nobody", "flags=R", "argv=/bin/true"], "unknown attribute name: flags=R"),
])
def test_bad_attributes(args, message):
    with pytest.raises(ConfigError, match=message):
        parse_command(args)


@pytest.mark.parametrize("user,message", [
    ("root", "request to deliver as root"),
    ("nobody:root", "request to use privileged group id 0"),
    ("no-such-user-here", "unknown user name: no-such-user-here"),
    ("nobody:no-such-group", "unknown group name: no-such-group"),
])
def test_refused_users(user, message):
    with pytest.raises(ConfigError, match=message):
        resolve_user(user, "postfix-owner-that-does-not-exist")


def test_mail_owner_is_refused():
    with pytest.raises(ConfigError, match="request to deliver as mail system owner"):
        resolve_user("nobody", "nobody")
    uid, gid = resolve_user("nobody", "root-is-not-it")
    assert uid == 65534


def test_time_limit_parameter_follows_command_time_limit(tmp_path):
    (tmp_path / "main.cf").write_text("command_time_limit = 77s\npolicy_time_limit = 5s\n")
    (tmp_path / "master.cf").write_text(
        "policy unix - n n - 0 spawn user=nobody argv=/bin/true\n"
        "other unix - n n - 0 spawn user=nobody argv=/bin/true\n")
    cfg = Config.load(str(tmp_path), HostFacts("mx1", (("127.0.0.1", 8),), ()))
    s = cfg.settings()
    assert s.time("policy_time_limit") == 5
    assert s.time("other_time_limit") == 77

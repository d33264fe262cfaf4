"""pipe(8) argv= expansion, flags, and real commands run by /bin/sh."""

from __future__ import annotations

import os
import pwd
import time

import pytest

from hato.delivery.dsn import DeliveryError
from hato.delivery.pipe import (
    LOCAL_COMMAND_FLAGS,
    PipeFlags,
    command_argv,
    expand_pipe_argv,
    parse_pipe_flags,
    run_pipe,
    sys_exits_detail,
)

from .conftest import AS_ROOT

MESSAGE = b"Subject: test\n\nFrom the body\n.dot line\nlast"


def ids():
    """Delivery commands never run as root: use nobody when we are root."""
    if AS_ROOT:
        pw = pwd.getpwnam("nobody")
        return {"uid": pw.pw_uid, "gid": pw.pw_gid}
    return {}


def sh(script: str, chunks=(MESSAGE,), **kw):
    return run_pipe(["/bin/sh", "-c", script], chunks, **{**ids(), **kw})


# -- flags and expansion ----------------------------------------------------------------


def test_parse_flags():
    assert parse_pipe_flags("DRFOBXhqu.>") == PipeFlags(
        blank=True, delivered_to=True, from_line=True, original_to=True, return_path=True,
        final_delivery=True, fold_host=True, quote_local=True, fold_user=True, dot=True,
        quote_from=True)
    assert parse_pipe_flags("") == PipeFlags()
    with pytest.raises(ValueError, match="unknown flag: Z"):
        parse_pipe_flags("DZ")


def test_expand_simple_macros():
    argv = expand_pipe_argv(
        ["/usr/bin/deliver", "-f", "${sender}", "-n", "$nexthop", "--size=$(size)",
         "--", "${recipient}"],
        sender="", recipient="User+Tag@Example.COM", nexthop="Example.COM", size=1234)
    assert argv == ["/usr/bin/deliver", "-f", "MAILER-DAEMON", "-n", "Example.COM",
                    "--size=1234", "--", "User+Tag@Example.COM"]


def test_per_recipient_arguments():
    argv = expand_pipe_argv(["cmd", "-a", "$user", "-e", "${extension}", "-m", "$mailbox",
                             "-d", "$domain", "-o", "${original_recipient}"],
                            sender="s@x", recipient=["a+one@x.org", "b@y.org"],
                            original_recipient=["A+one@X.org", "orig-b@y.org"],
                            recipient_delimiter="+")
    assert argv == ["cmd", "-a", "a", "b", "-e", "one", "", "-m", "a+one", "b",
                    "-d", "x.org", "y.org", "-o", "A+one@X.org", "orig-b@y.org"]


def test_empty_user_drops_the_argument():
    # split_addr() never leaves an empty user name: "+bboard" stays whole...
    argv = expand_pipe_argv(["deliver", "${user}", "x${extension}"], sender="s",
                            recipient="+bboard@x", recipient_delimiter="+")
    assert argv == ["deliver", "+bboard", "x"]
    # ...so only an empty local part drops the $user argument.
    argv = expand_pipe_argv(["deliver", "${user}", "${domain}"], sender="s",
                            recipient="@x", recipient_delimiter="+")
    assert argv == ["deliver", "x"]


def test_fold_and_quote_flags():
    argv = expand_pipe_argv(["$sender", "$recipient", "$nexthop", "$user", "$domain"],
                            sender="a b@Host", recipient="John Doe+X@Example.COM",
                            nexthop="Relay.Example", recipient_delimiter="+",
                            flags="hqu")
    assert argv == ['"a b"@Host', '"john doe+x"@example.com', "relay.example",
                    "john doe", "example.com"]
    argv = expand_pipe_argv(["$recipient"], sender="s", recipient="Mixed@Case.Example",
                            flags="u")
    assert argv == ["mixed@Case.Example"]


def test_conditional_and_literal_dollar():
    argv = expand_pipe_argv(["${extension?--ext=$extension}", "$$HOME", "${sender:none}"],
                            sender="", null_sender="", recipient="u+x@h",
                            recipient_delimiter="+")
    assert argv == ["--ext=x", "$HOME", "none"]
    # Values are never expanded again: a $ in an address stays.
    assert expand_pipe_argv(["$recipient"], sender="s", recipient="$weird@x") == ["$weird@x"]


def test_unknown_macro_is_a_configuration_error():
    with pytest.raises(DeliveryError) as info:
        expand_pipe_argv(["cmd", "${bogus}"], sender="s", recipient="r@x")
    assert info.value.dsn == "4.3.5"
    assert info.value.text == "mail system configuration error"
    assert "bogus" in str(info.value.__cause__)


def test_command_argv():
    assert command_argv("/usr/bin/procmail -a x") == ["/usr/bin/procmail", "-a", "x"]
    assert command_argv("cat > /tmp/x") == ["/bin/sh", "-c", "cat > /tmp/x"]
    assert command_argv("exec $HOME/bin/x") == ["/bin/sh", "-c", "exec $HOME/bin/x"]
    assert command_argv("/bin/x y", shell="/bin/bash -c") == ["/bin/bash", "-c", "/bin/x y"]


def test_sys_exits_table():
    assert sys_exits_detail(75) == ("4.3.0", "temporary failure")
    assert sys_exits_detail(67) == ("5.1.1", "user unknown")
    assert sys_exits_detail(69) == ("5.3.0", "service unavailable")
    assert sys_exits_detail(78) == ("5.3.5", "local configuration error")
    assert sys_exits_detail(3) == ("5.3.0", "unknown mail system error 3")


# -- running ------------------------------------------------------------------------------


def test_message_reaches_the_command():
    result = sh("cat")
    assert result.status == 0
    # Output is captured with newlines turned into blanks.
    assert result.output == "Subject: test  From the body .dot line last "


def test_flags_shape_the_message():
    result = sh("cat", flags="FRDO.>B", sender="s@example.com",
                original_recipient="Orig@example.com", delivered_to="rcpt@example.com",
                eol=b"\r\n", now=0)
    # Captured output: CR is not printable (shown as _), LF became a blank.
    lines = result.output.split("_ ")
    assert lines[0] == "From s@example.com  " + time.asctime(time.localtime(0))
    assert lines[1:] == ["Return-Path: <s@example.com>", "X-Original-To: Orig@example.com",
                         "Delivered-To: rcpt@example.com", "Subject: test", "",
                         ">From the body", "..dot line", "last", "", ""]


def test_crlf_line_ends_reach_the_command(tmp_path):
    result = sh("od -An -c | tr -s ' '", flags="", eol=b"\r\n", chunks=[b"a\nb"])
    assert "a \\r \\n b \\r \\n" in result.output


def test_local_command_flags():
    result = sh("cat", flags=LOCAL_COMMAND_FLAGS, sender="", original_recipient="o@x",
                delivered_to="d@x", now=0)
    assert result.output.startswith("From MAILER-DAEMON  ")
    assert "Return-Path: <> " in result.output
    assert "Delivered-To: d@x" in result.output
    # pipe(8) writes its null_sender= replacement.
    result = sh("cat", flags="FR", sender="", null_sender="MAILER-DAEMON", now=0)
    assert "Return-Path: <MAILER-DAEMON> " in result.output


@pytest.mark.parametrize("code, dsn, temporary, text", [
    (75, "4.3.0", True, "temporary failure"),
    (67, "5.1.1", False, "user unknown"),
    (69, "5.3.0", False, "service unavailable"),
    (77, "5.7.0", False, "permission denied"),
])
def test_sysexits_mapping(code, dsn, temporary, text):
    with pytest.raises(DeliveryError) as info:
        sh(f"cat >/dev/null; exit {code}")
    err = info.value
    assert (err.dsn, err.temporary, err.text) == (dsn, temporary, text)
    assert (err.diagnostic_type, err.diagnostic_text) == ("x-unix", text)


def test_sysexits_with_output():
    with pytest.raises(DeliveryError) as info:
        sh("cat >/dev/null; echo 'no such mailbox'; exit 67")
    assert info.value.text == "user unknown. Command output: no such mailbox "
    assert info.value.diagnostic_text == "no such mailbox "


def test_other_exit_status():
    with pytest.raises(DeliveryError) as info:
        run_pipe(["/bin/sh", "-c", "exit 3"], [MESSAGE], command_text="mycmd", **ids())
    assert info.value.dsn == "5.3.0" and not info.value.temporary
    assert info.value.text == 'Command died with status 3: "mycmd"'


def test_enhanced_status_in_output_wins():
    with pytest.raises(DeliveryError) as info:
        sh("echo '4.2.2 mailbox is full'; exit 1")
    assert (info.value.dsn, info.value.text) == ("4.2.2", "mailbox is full")
    assert info.value.temporary
    with pytest.raises(DeliveryError) as info:
        sh("echo '5.7.1 go away'; exit 75")
    assert (info.value.dsn, info.value.temporary) == ("5.7.1", False)


def test_command_that_never_reads_stdin():
    big = [b"x" * 65536 + b"\n"] * 64  # 4 MiB: more than any pipe buffer
    assert sh("exit 0", chunks=big).status == 0
    with pytest.raises(DeliveryError) as info:
        sh("exit 75", chunks=big)
    assert info.value.dsn == "4.3.0"


def test_big_message_streams_through():
    big = [b"y" * 65536 + b"\n"] * 64
    result = sh("wc -c", chunks=big)
    assert result.output.strip() == str(65537 * 64)


def test_timeout_kills_and_defers():
    with pytest.raises(DeliveryError) as info:
        sh("sleep 30 & sleep 30; exit 0", timeout=1, command_text="sleeper")
    assert info.value.temporary and info.value.dsn == "4.3.0"
    assert info.value.text.startswith('Command time limit exceeded: "sleeper"')


def test_signal_defers():
    with pytest.raises(DeliveryError) as info:
        sh("kill -9 $$")
    assert info.value.temporary and info.value.dsn == "4.3.0"
    assert info.value.text.startswith("Command died with signal 9: ")


def test_environment_is_clean(monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "leak")
    monkeypatch.setenv("TZ", "UTC")
    result = sh('cat >/dev/null; echo "$PATH|$SECRET_TOKEN|$TZ|$RECIPIENT"',
                env={"RECIPIENT": "u@x"})
    assert result.output == "/usr/bin:/bin||UTC|u@x "


def test_missing_program_defers():
    with pytest.raises(DeliveryError) as info:
        run_pipe(["/nonexistent/program"], [MESSAGE], **ids())
    assert info.value.dsn == "4.3.0"
    assert "execvp /nonexistent/program" in info.value.text


def test_shell_builtin_fallback_for_local_commands():
    # No shell magic, so executed directly; "exit" is a shell built-in.
    argv = command_argv("exit 0")
    assert argv == ["exit", "0"]
    assert run_pipe(argv, [MESSAGE], command_text="exit 0", **ids()).status == 0


def test_runs_as_the_given_user():
    result = sh("cat >/dev/null; id -u")
    expected = ids().get("uid", os.geteuid())
    assert result.output.strip() == str(expected)


def test_root_is_refused():
    if AS_ROOT:
        with pytest.raises(DeliveryError) as info:
            run_pipe(["/bin/true"], [MESSAGE])
        assert info.value.dsn == "4.3.5"
        with pytest.raises(DeliveryError):
            run_pipe(["/bin/true"], [MESSAGE], uid=0, gid=0)
    else:
        # Not root: the command simply runs as this user.
        assert run_pipe(["/bin/true"], [MESSAGE]).status == 0


def test_message_source_failing_defers_and_kills():
    def broken():
        yield b"Subject: x\n\n"
        raise OSError(5, "Input/output error")

    with pytest.raises(DeliveryError) as info:
        sh("cat >/dev/null; exit 0", chunks=broken())
    assert info.value.dsn == "4.3.0"
    assert info.value.text == "error reading message: Input/output error"

    def bug():
        yield b"Subject: x\n\n"
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        sh("sleep 30", chunks=bug())

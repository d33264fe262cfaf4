"""Golden transcripts for smtpd's restrictions, in the spirit of Postfix's
smtpd_check test files.

``tests/golden/restrictions/NAME.in``: a main.cf fragment, a line ``---``,
then commands, one per line (``#`` starts a comment):

    dns NAME TYPE VALUE...   DNS records (TYPE A, AAAA, MX "10 host", TXT, NS, PTR);
                             the value TEMP makes the lookup fail temporarily
    file NAME ... end        a file written to a temporary directory; @TMP@ in
                             the main.cf fragment names that directory
    policy ACTION            what the policy service answers next (NONE: no answer)
    client NAME ADDR [STATUS]   a new session (connect() is run)
    helo NAME | ehlo NAME | mail ADDR | rcpt ADDR | vrfy ADDR | etrn DOMAIN
    data | eod | rset
    sasl USER | tls [verified] [fingerprint=FP] | pipelining | quiet

``NAME.ref`` holds each command, then OK or the reply, then the log lines.
``HATO_REGEN_GOLDEN=1`` rewrites the .ref files.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import pytest

from hato.config.errors import ConfigError
from hato.policy.dnsquery import StaticDns
from hato.policy.smtpd_check import ClientFacts, SmtpdChecks
from hato.policy.smtpd_policy import PolicyAnswer, PolicyService

from .conftest import make_settings

GOLDEN = pathlib.Path(__file__).resolve().parents[2] / "golden" / "restrictions"
CASES = sorted(GOLDEN.glob("*.in"))


class _Policy:
    """A policy client that answers from a script (NONE: the server is down)."""

    def __init__(self) -> None:
        self.answers: list[str | None] = []
        self.requests: list[list[tuple[str, str]]] = []

    def __call__(self, service: PolicyService, attrs: list[tuple[str, str]]) -> PolicyAnswer:
        self.requests.append(attrs)
        answer = self.answers.pop(0) if self.answers else "DUNNO"
        if answer is None:
            why = f"problem talking to server {service.server}: Connection refused"
            return PolicyAnswer(None, [f"connect to {service.server}: Connection refused",
                                       why, why])
        return PolicyAnswer(answer)


def run_script(text: str, tmp: str) -> str:
    maincf, _, script = text.partition("\n---\n")
    lines = script.splitlines()
    records: dict[tuple[str, str], list[str] | str] = {}
    commands: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "dns":
            name, rtype, values = words[1], words[2].upper(), " ".join(words[3:])
            if values == "TEMP":
                records[(name, rtype)] = "TEMP"
            else:
                existing = records.setdefault((name, rtype), [])
                assert isinstance(existing, list)
                existing.append(values)
            continue
        if words[0] == "file":
            body = []
            while lines[i].strip() != "end":
                body.append(lines[i])
                i += 1
            i += 1
            pathlib.Path(tmp, words[1]).write_text("\n".join(body) + "\n")
            continue
        commands.append(line)
    out: list[str] = []
    try:
        settings = make_settings(maincf.replace("@TMP@", tmp))
        policy = _Policy()
        checks = SmtpdChecks(settings, StaticDns(records), policy=policy)
    except ConfigError as err:
        return f"fatal: {err}\n".replace(tmp, "@TMP@")
    sess = None
    for line in commands:
        out.append(f">>> {line}")
        words = line.split()
        cmd, args = words[0].lower(), words[1:]
        decision = None
        if cmd == "client":
            status = int(args[2]) if len(args) > 2 else 0
            sess = checks.session(ClientFacts(name=args[0], addr=args[1], name_status=status))
            decision = sess.connect()
        elif cmd == "policy":
            policy.answers.append(None if args[0] == "NONE" else " ".join(args))
            continue
        else:
            assert sess is not None, "client first"
            if cmd in ("helo", "ehlo"):
                sess.facts.protocol = "ESMTP" if cmd == "ehlo" else "SMTP"
                decision = sess.helo(args[0], ehlo=cmd == "ehlo")
            elif cmd == "mail":
                decision = sess.mail(_addr(args[0]))
            elif cmd == "rcpt":
                decision = sess.rcpt(_addr(args[0]))
            elif cmd == "vrfy":
                decision = sess.vrfy(_addr(args[0]))
            elif cmd == "etrn":
                decision = sess.etrn(args[0])
            elif cmd == "data":
                decision = sess.data()
            elif cmd == "eod":
                decision = sess.end_of_data(0)
            elif cmd == "rset":
                sess.reset()
                continue
            elif cmd == "sasl":
                sess.facts.sasl_username = args[0]
                sess.facts.sasl_method = "PLAIN"
                continue
            elif cmd == "tls":
                sess.facts.tls_active = True
                sess.facts.tls_ccert_verified = "verified" in args
                for arg in args:
                    if arg.startswith("fingerprint="):
                        sess.facts.tls_ccert_fingerprint = arg.split("=", 1)[1]
                continue
            elif cmd == "pipelining":
                sess.facts.pipelining_violation = True
                continue
            else:
                raise AssertionError(f"unknown command {cmd}")
        assert decision is not None
        out.append(str(decision))
        for entry in decision.logs:
            out.append("  " + entry.format(decision.stage, sess.namaddr,
                                           protocol=sess.facts.protocol))
        acts = sess.actions
        summary = [f"{k}={v}" for k, v in (("hold", acts.hold), ("discard", acts.discard),
                                           ("filter", acts.filter),
                                           ("redirect", acts.redirect)) if v]
        summary += [f"bcc={b}" for b in acts.bcc] + [f"prepend={p}" for p in acts.prepend]
        if summary and cmd in ("rcpt", "data", "eod"):
            out.append("  actions: " + "; ".join(summary))
    return ("\n".join(out) + "\n").replace(tmp, "@TMP@")


def _addr(arg: str) -> str:
    if arg.startswith("<") and arg.endswith(">"):
        return arg[1:-1]
    return arg


def test_enough_cases() -> None:
    assert len(CASES) >= 15


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_golden(case: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        got = run_script(case.read_text(), tmp)
    ref = case.with_suffix(".ref")
    if os.environ.get("HATO_REGEN_GOLDEN") == "1":
        ref.write_text(got)
    assert ref.exists(), f"{ref} is missing (run with HATO_REGEN_GOLDEN=1)"
    assert got == ref.read_text()

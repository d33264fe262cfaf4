"""Address rewriting and resolution against Debian's Postfix trivial-rewrite.

Postfix's trivial-rewrite daemon runs stand-alone (``-S``: one request on
stdin, the reply on stdout, in Postfix's internal attribute protocol) with a
private configuration directory and queue directory — no master, no mail
system. Each address is asked of it and of hato (:func:`rewrite_external`,
:class:`Resolver`) under the same main.cf, and the answers must be equal:
the rewritten address for ``rewrite`` requests in the local and remote
contexts; transport, next hop, final recipient and flags for ``resolve``.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from hato.config.defaults import HostFacts
from hato.config.maincf import MainCf
from hato.config.mastercf import MasterCf
from hato.config.settings import Config
from hato.policy.resolve import ResolveFlag, Resolver
from hato.policy.rewrite import Rewriter

pytestmark = pytest.mark.differential

TRIVIAL_REWRITE = "/usr/lib/postfix/sbin/trivial-rewrite"

COMMON = """
compatibility_level = 3.6
myhostname = mx1.example.com
mydomain = example.com
myorigin = $myhostname
mydestination = $myhostname, localhost.$mydomain, localhost
inet_interfaces = loopback-only
alias_maps =
local_recipient_maps =
"""

CONFIGS = {
    "defaults": "",
    "classes": """
        virtual_alias_domains = alias.example, inline:{ {alias2.example=x} }
        virtual_mailbox_domains = mailbox.example
        relay_domains = relay.example
        relayhost = [smarthost.example]:587
        recipient_delimiter = +
        transport_maps = inline:{ {joe@example.com = error:5.1.1 no such user}, \
            {ann@example.com = :[ann-host.example]:2525}, {example.com = smtp:[mx.example.com]}, \
            {.sub.example.com = relay:}, {discard.example = discard:}, \
            {retry.example = retry:4.3.0 try later}, {bounce.example = error:}, \
            {keep.example = :}, {lmtp.example = lmtp} }
        relocated_maps = inline:{ {moved@example.org = new@example.net} }
        sender_dependent_default_transport_maps = inline:{ {@vip.example = vip:} }
        sender_dependent_relayhost_maps = inline:{ {@vip.example = [vip-relay]} }
    """,
    "options": """
        append_dot_mydomain = yes
        swap_bangpath = no
        allow_percent_hack = no
        resolve_dequoted_address = no
        resolve_null_domain = yes
        resolve_numeric_domain = yes
        allow_min_user = yes
        local_transport = local
        default_transport = smtp:[fallback.example]
        remote_header_rewrite_domain = domain.invalid
        transport_maps = inline:{ {* = smtp:[wild.example]}, {localhost = local:} }
        parent_domain_matches_subdomains = transport_maps
    """,
}

ADDRESSES = [
    "joe", "joe@mx1.example.com", "joe@MX1.Example.COM", "joe@localhost.",
    "joe@localhost.example.com", "joe@[127.0.0.1]", "joe@[IPv6:::1]", "joe@[192.0.2.99]",
    "joe@example.com", "joe+ext@example.com", "ann@example.com", "bob@example.com",
    "bob@a.sub.example.com", "bob@sub.example.com", "x@discard.example", "x@retry.example",
    "x@bounce.example", "x@keep.example", "x@lmtp.example", "x@other.example",
    "info@alias.example", "a@alias2.example", "ann@mailbox.example", "bob@relay.example",
    "bob@sub.relay.example", "moved@example.org",
    "", "@localhost", "joe@", "joe@.", "joe@a..b", "joe@127.0.0.1", "joe@[::1]",
    "joe@exa_mple.com", "-joe@localhost", "-joe@example.org",
    "user%other.example@localhost", "other.example!user@localhost", "user@other.example@localhost",
    "@localhost:user@other.example", "a%b.example%c.example@localhost",
    "user%victim.example@example.org", "victim.example!user@example.org",
    "user%mx1.example.com@localhost", "joe smith@localhost", '"joe"@localhost',
    "joe@nodot", "joe@nodot.", "host!joe", "joe%host", "joe@host!x",
    "jöe@example.org", "joe@exämple.org", "postmaster", "MAILER-DAEMON",
]

SENDERS = ["", "boss@vip.example"]


def _require_postfix() -> None:
    if not os.path.exists(TRIVIAL_REWRITE):
        pytest.fail(f"{TRIVIAL_REWRITE} is missing: install the Debian package postfix "
                    f"(tools/run-tests installs every tool the tests use)")


def _attr0(**attrs: str) -> bytes:
    return b"".join(k.encode() + b"\0" + v.encode("utf-8", "surrogateescape") + b"\0"
                    for k, v in attrs.items()) + b"\0"


def _parse0(data: bytes) -> dict[str, str]:
    parts = data.rstrip(b"\0").split(b"\0")
    out: dict[str, str] = {}
    for name, value in zip(parts[0::2], parts[1::2]):
        out[name.decode()] = value.decode("utf-8", "surrogateescape")
    return out


class Instance:
    """A private Postfix configuration, and hato's Settings for the same
    main.cf."""

    def __init__(self, root: Path, extra: str):
        self.conf = root / "conf"
        queue = root / "queue"
        self.conf.mkdir(parents=True)
        queue.mkdir()
        text = textwrap.dedent(COMMON) + textwrap.dedent(extra)
        (self.conf / "main.cf").write_text(text + f"queue_directory = {queue}\n")
        config = Config(str(self.conf), MainCf.parse(text, str(self.conf / "main.cf")),
                        MasterCf.parse("", str(self.conf / "master.cf")),
                        HostFacts("mx1", (("127.0.0.1", 8),), (("::1", 128),)))
        self.settings = config.settings()
        self.rewriter = Rewriter(self.settings)
        self.resolver = Resolver(self.settings)

    def ask(self, **attrs: str) -> dict[str, str]:
        env = dict(os.environ, MAIL_CONFIG=str(self.conf))
        proc = subprocess.run([TRIVIAL_REWRITE, "-S"], input=_attr0(**attrs),
                              capture_output=True, env=env, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        return _parse0(proc.stdout)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def instance(request, tmp_path_factory) -> Instance:
    _require_postfix()
    return Instance(tmp_path_factory.mktemp(request.param), CONFIGS[request.param])


REWRITE_ADDRESSES = [
    "joe", "joe@host", "joe@host.", "host!joe", "a!b!c", "joe%host", "a%b%c", "@a,@b:joe@c",
    "@a:joe", '"joe smith"@host', '"a@b"', "", "@", "a@", "a@.", "!", "%", "joe@[1.2.3.4]",
    "joe@host.example.com", "Joe.User@Example.COM",
]


def test_rewrite(instance):
    mismatches = []
    for context in ("local", "remote"):
        for address in REWRITE_ADDRESSES:
            if not address:
                continue  # Postfix answers the empty address with a warning only
            theirs = instance.ask(request="rewrite", rule=context, address=address)
            ours = instance.rewriter.rewrite_external(address, context)
            if theirs.get("address") != ours:
                mismatches.append((context, address, theirs.get("address"), ours))
    assert not mismatches


def test_resolve(instance):
    mismatches = []
    for sender in SENDERS:
        for address in ADDRESSES:
            theirs = instance.ask(request="resolve", sender=sender, address=address)
            ours = instance.resolver.resolve(address, sender)
            flags = int(theirs["flags"])
            got = (ours.recipient, int(ours.flags))
            want = (theirs["recipient"], flags)
            if not flags & (ResolveFlag.ERROR | ResolveFlag.FAIL):
                got += (ours.transport, ours.nexthop)
                want += (theirs["transport"], theirs["nexthop"])
            if got != want:
                mismatches.append((sender, address, want, got))
    assert not mismatches

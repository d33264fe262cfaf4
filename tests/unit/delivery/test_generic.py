"""smtp_generic_maps (hato.delivery.generic): envelope addresses and the
primary header block rewritten as mail leaves, with generic(5)'s lookup
order. The differential test against Debian's Postfix is t-38."""

from __future__ import annotations

import pytest

from hato.delivery.generic import GenericMaps
from hato.delivery.smtp_content import OutboundContent
from hato.policy.rewrite import LookupDefer
from hato.tables import registry
from hato.tables.base import Table, TableRetry

from ..policy.conftest import make_settings

MAP = """\
joe@mx1.example.com      joe.public@isp.example
bob                      bob.smith@isp.example
@localhost.example.com   @isp.example
"quoted user"@mx1.example.com   quoted@isp.example
"""


def generic(tmp_path, main: str = "", text: str = MAP) -> GenericMaps:
    path = tmp_path / "generic"
    path.write_text(text)
    g = GenericMaps.from_settings(make_settings(f"smtp_generic_maps = texthash:{path}\n" + main),
                                  "smtp")
    assert g is not None
    return g


def test_nothing_configured_is_none():
    assert GenericMaps.from_settings(make_settings(), "smtp") is None
    assert GenericMaps.from_settings(make_settings(), "lmtp") is None


def test_envelope_addresses_in_generic_5_order(tmp_path):
    g = generic(tmp_path)
    assert g.address("joe@mx1.example.com") == "joe.public@isp.example"
    # "user" only for a domain of ours ($myorigin, $mydestination, ...)
    assert g.address("bob@mx1.example.com") == "bob.smith@isp.example"
    assert g.address("bob@localhost") == "bob.smith@isp.example"
    assert g.address("bob@elsewhere.example") == "bob@elsewhere.example"
    # @domain: the same user in the other domain
    assert g.address("ann@localhost.example.com") == "ann@isp.example"
    assert g.address("quoted user@mx1.example.com") == "quoted@isp.example"
    assert g.address("") == ""  # the null sender stays null
    assert g.address("nobody@nowhere.example") == "nobody@nowhere.example"


def test_extensions_follow_propagate_unmatched_extensions(tmp_path):
    g = generic(tmp_path, "recipient_delimiter = +\n")
    assert g.address("joe+list@mx1.example.com") == "joe.public@isp.example"
    g = generic(tmp_path, "recipient_delimiter = +\n"
                          "propagate_unmatched_extensions = canonical, virtual, generic\n")
    assert g.address("joe+list@mx1.example.com") == "joe.public+list@isp.example"


def content(g: GenericMaps, data: bytes, cut: int = 7) -> bytes:
    """The smtp client's content pass with these generic maps, fed in small
    pieces (headers and lines cross chunk boundaries)."""
    run = OutboundContent(make_settings(), "smtp", generic=g, log_info=print, log_warning=print)
    assert run.needed
    return b"".join(run.content((data[i:i + cut] for i in range(0, len(data), cut)), "QID"))


def test_primary_address_headers_are_rewritten_and_folded(tmp_path):
    g = generic(tmp_path)
    msg = (b"Received: from joe@mx1.example.com by x\n"
           b"From: Joe <joe@mx1.example.com>\n"
           b"To: bob@mx1.example.com,\n"
           b"  other@elsewhere.example, ann@localhost.example.com\n"
           b"Cc: other@elsewhere.example\n"
           b"Subject: joe@mx1.example.com\n"
           b"\n"
           b"From: joe@mx1.example.com in the body stays\n"
           b"To: bob@mx1.example.com\n")
    out = content(g, msg)
    assert out == (b"Received: from joe@mx1.example.com by x\n"
                   b"From: Joe <joe.public@isp.example>\n"
                   b"To: bob.smith@isp.example, other@elsewhere.example, ann@isp.example\n"
                   b"Cc: other@elsewhere.example\n"
                   b"Subject: joe@mx1.example.com\n"
                   b"\n"
                   b"From: joe@mx1.example.com in the body stays\n"
                   b"To: bob@mx1.example.com\n")
    for cut in (1, 3, 64, 100000):
        assert content(g, msg, cut) == out


def test_a_header_with_no_mapped_address_goes_out_as_it_was(tmp_path):
    g = generic(tmp_path)
    msg = b"To:   other@elsewhere.example   (a comment)\n\tx@y.example\nSubject: s\n\nbody\n"
    assert content(g, msg) == msg


def test_long_address_lists_fold_at_70_columns(tmp_path):
    g = generic(tmp_path)
    rcpts = ", ".join(f"user{i}@localhost.example.com" for i in range(6))
    out = content(g, f"To: {rcpts}\n\nb\n".encode())
    head = out.split(b"\n\n")[0].decode()
    lines = head.split("\n")
    assert lines[0].startswith("To: user0@isp.example, ")
    assert all(ln.startswith("\t") for ln in lines[1:]) and len(lines) > 1
    assert all(len(ln) < 80 for ln in lines)
    assert head.replace("\n\t", " ").count("@isp.example") == 6


def test_headers_only_and_a_header_block_ended_by_a_non_header(tmp_path):
    g = generic(tmp_path)
    assert content(g, b"From: joe@mx1.example.com\n") == b"From: joe.public@isp.example\n"
    # a line that is no header ends the primary block (mime_state, which
    # puts the missing empty line before it, as Postfix's does): what follows
    # is body, whatever it looks like
    msg = b"From: joe@mx1.example.com\nnot a header\nTo: joe@mx1.example.com\n"
    assert content(g, msg) == (b"From: joe.public@isp.example\n\nnot a header\n"
                               b"To: joe@mx1.example.com\n")


class _Down(Table):
    def get(self, key: str):
        raise TableRetry(self.name, "the server is down")


def test_a_table_that_cannot_answer_is_a_lookup_defer(tmp_path):
    registry.register("genericdown", _Down)
    g = GenericMaps.from_settings(make_settings("smtp_generic_maps = genericdown:x\n"), "smtp")
    assert g is not None
    with pytest.raises(LookupDefer) as err:
        g.address("joe@mx1.example.com")
    assert "smtp_generic_maps map lookup problem for joe@mx1.example.com" in err.value.text
    with pytest.raises(LookupDefer):
        content(g, b"From: joe@mx1.example.com\n\nbody\n")
    assert g.address("") == ""  # nothing is looked up for the null sender

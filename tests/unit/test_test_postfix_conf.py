"""The private Postfix instances' main.cf (tests/postfix_instance.py): a
test's settings replace the base's entries of the same names rather than
repeat them (repeated names make every Postfix process warn at start, which
can block postlogd on its own socket)."""

from __future__ import annotations

from tests.postfix_instance import BASE_MAIN_CF, merged_main_cf


def entries(text: str) -> list[tuple[str, str]]:
    out = []
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            out.append((name.strip(), value.strip()))
    return out


def test_a_setting_given_again_replaces_the_base_entry():
    text = merged_main_cf("a = 1\nmynetworks = 127.0.0.0/8\nb = 2\n",
                          "mynetworks = 192.0.2.1/32\nc = 3\n")
    assert entries(text) == [("a", "1"), ("b", "2"), ("mynetworks", "192.0.2.1/32"),
                             ("c", "3")]


def test_names_are_matched_whole():
    text = merged_main_cf("relay_domains =\nrelay_domains_reply_code = 554\n",
                          "relay_domains = example.org\n")
    assert entries(text) == [("relay_domains_reply_code", "554"),
                             ("relay_domains", "example.org")]


def test_the_real_base_has_each_name_once_after_overrides():
    base = BASE_MAIN_CF.format(root="/tmp/x")
    extra = "".join(f"{name} = override\n" for name, _ in entries(base)[:5])
    names = [name for name, _ in entries(merged_main_cf(base, extra))]
    assert len(names) == len(set(names))
    assert set(names) == {name for name, _ in entries(base)}

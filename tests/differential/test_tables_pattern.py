"""cidr:, regexp:, pcre:, inline:, static:, unix:, unionmap:, pipemap:
against Debian's Postfix 3.7 ``postmap -q -``.

For each type, random tables are generated (with bad rules, if/endif
blocks, negations, continuation lines and comments among them), and at
least 2,000 keys in all are asked of Postfix (one ``postmap -q -`` batch per
table) and of hato's table opened through the registry. The answers (every
``key<TAB>value`` line, so found/not-found too) must be identical, and so
must the warnings about skipped rules, file and line included.
"""

from __future__ import annotations

import logging
import os
import random
import socket
from dataclasses import dataclass
from pathlib import Path

import pytest

from hato.tables.base import OpenFlags
from hato.tables.registry import open_table
from tests.conftest import require_tool

pytestmark = pytest.mark.differential

SEEDS = range(4)  # four tables per type ...
KEYS = 600  # ... of 600 keys each: 2,400 queries per type


@dataclass(frozen=True)
class Utf8Flags(OpenFlags):
    """What hato's postmap passes when smtputf8_enable = yes."""

    utf8: bool = True


def conf_dir(tmp_path: Path, utf8: bool = True) -> Path:
    conf = tmp_path / ("conf-utf8" if utf8 else "conf-ascii")
    conf.mkdir(exist_ok=True)
    # compatibility_level 3.6 turns smtputf8_enable on, as on current systems
    main_cf = conf / "main.cf"
    main_cf.write_text("compatibility_level = 3.6\n" if utf8 else "compatibility_level = 0\n")
    # Postfix re-reads a main.cf changed in the last second until it settles
    # (~2 s); an old time stamp spares every postmap run that wait.
    os.utime(main_cf, (1_000_000_000, 1_000_000_000))
    return conf


def postfix_answers(conf: Path, spec: str, keys: list[str]) -> tuple[list[str], list[str]]:
    """Postfix's ``postmap -q - SPEC``: (output lines, table warnings)."""
    import subprocess

    postmap = require_tool("postmap", "postfix")
    proc = subprocess.run([postmap, "-c", str(conf), "-q", "-", spec],
                          input="".join(k + "\n" for k in keys).encode(),
                          capture_output=True, timeout=300, check=False)
    err = proc.stderr.decode("utf-8", "replace")
    if "unsupported dictionary type" in err:
        kind = spec.split(":", 1)[0]
        pytest.fail(f"Postfix cannot open {kind}: tables: install the Debian package "
                    f"postfix-{kind} (tools/run-tests installs every tool the tests use)")
    assert "fatal" not in err, f"Postfix's postmap failed on {spec}:\n{err[-2000:]}"
    assert proc.returncode in (0, 1), err
    warnings = []
    for line in err.splitlines():
        assert line.startswith("postmap: warning: "), line
        text = line[len("postmap: warning: "):]
        if ("empty string result is not allowed" in text
                or "should return NO RESULT in case of NOT FOUND" in text):
            continue  # postmap's own remark about an empty result
        warnings.append(text)
    out = proc.stdout.decode("utf-8", "surrogateescape").split("\n")
    assert out[-1] == ""
    return out[:-1], warnings


def hato_answers(spec: str, keys: list[str], utf8: bool,
                 caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    caplog.clear()
    with caplog.at_level(logging.WARNING, "hato.tables"):
        table = open_table(spec, Utf8Flags() if utf8 else OpenFlags())
        lines = []
        for key in keys:
            value = table.get(key)
            if value is not None:
                lines.append(f"{key}\t{value}")
    warnings = [r.getMessage() for r in caplog.records if r.name == "hato.tables"]
    return lines, warnings


def compare(tmp_path: Path, spec: str, keys: list[str], caplog, utf8: bool = True,
            check_warnings: bool = True, combined: bool = True) -> None:
    conf = conf_dir(tmp_path, utf8)
    want, want_warn = postfix_answers(conf, spec, keys)
    got, got_warn = hato_answers(spec, keys, utf8, caplog)
    if spec.startswith(("regexp:/", "pcre:/")):
        # the rule-by-rule walk, without combined patterns, must agree too
        walk = open_table(spec, Utf8Flags() if utf8 else OpenFlags())
        assert walk.runs or not combined, "no run of combined patterns was exercised"
        walk.runs = {}
        assert [f"{k}\t{v}" for k in keys if (v := walk.get(k)) is not None] == got
    if got != want:
        diff = [(k, w, g) for k, w, g in _by_key(keys, want, got) if w != g]
        pytest.fail(f"{spec}: {len(diff)} of {len(keys)} answers differ, e.g. "
                    f"(key, postfix, hato) = {diff[:5]}")
    if check_warnings:
        assert got_warn == want_warn
    assert want, f"{spec}: no key was found at all; the generator is too weak"


def _by_key(keys, want, got):
    """Pair up answers per key (both outputs list found keys in query order)."""
    w = dict(line.split("\t", 1) for line in want)
    g = dict(line.split("\t", 1) for line in got)
    for key in keys:
        yield key, w.get(key), g.get(key)


WORDS = ["ok", "reject", "REJECT spam", "DUNNO", "550 5.7.1 go away", "relay:[mx.example]",
         "smtp:[192.0.2.1]:25", "välue", "x", "OK # not a comment", "a  b   c"]


def value(rng: random.Random) -> str:
    return rng.choice(WORDS) + ("" if rng.random() < 0.7 else f" {rng.randrange(1000)}")


# -- cidr ------------------------------------------------------------------------------------

V4_POOL = [0x0A000000, 0xC0A80000, 0xAC100000, 0xC6336400, 0x7F000000, 0xCB007100]
V6_POOL = ["2001:db8::", "fe80::", "::ffff:0:0", "2001:db8:8000::", "::"]


def _v4(rng: random.Random) -> int:
    return rng.choice(V4_POOL) | rng.getrandbits(20)


def _v6(rng: random.Random) -> int:
    base = int.from_bytes(socket.inet_pton(socket.AF_INET6, rng.choice(V6_POOL)), "big")
    return base | rng.getrandbits(rng.choice([8, 16, 40, 64]))


def format_delay(family: int, addr: int) -> str:
    return socket.inet_ntop(family, addr.to_bytes(16 if family == socket.AF_INET6 else 4, "big"))


def _mask(bits: int, length: int) -> int:
    return ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)


def cidr_table(rng: random.Random) -> tuple[str, list[tuple[int, int, int]]]:
    lines: list[str] = []
    nets: list[tuple[int, int, int]] = []
    depth = 0
    for _ in range(rng.randrange(40, 120)):
        r = rng.random()
        six = rng.random() < 0.35
        family, bits = (socket.AF_INET6, 128) if six else (socket.AF_INET, 32)
        addr = _v6(rng) if six else _v4(rng)
        length = rng.choice([0, 8, 10, 16, 20, 24, 28, 31, bits] if not six else
                            [0, 10, 16, 32, 33, 48, 64, 96, 112, 127, bits])
        net = addr & _mask(bits, length)
        nets.append((family, net, length))
        text = f"{format_delay(family, net)}/{length}"
        if length == bits and rng.random() < 0.5:
            text = format_delay(family, net)  # a bare address
        if rng.random() < 0.1:
            text = f"[{text}]" if rng.random() < 0.5 else f"[{format_delay(family, net)}]/{length}"
        if six and rng.random() < 0.1:
            text = text.upper()
        neg = "!" * rng.choice([0, 0, 0, 0, 1, 2]) + ("" if rng.random() < 0.8 else " ")
        if r < 0.06:
            text = f"{format_delay(family, addr | 1)}/{max(length, 1) - 1}"  # host bits set
        elif r < 0.09:
            text = f"{format_delay(family, net)}/{bits + rng.randrange(1, 3)}"
        elif r < 0.11:
            text = rng.choice(["1.2.3", "foo", "1.2.3.0/x", "[1.2.3.4", "[1.2.3.4]x", "!",
                               "1.2.3.0/24/8", "::/-1"])
        if r < 0.16 and depth < 3:
            lines.append(f"{rng.choice(['if', 'IF', 'If'])} {neg.strip()}{text}")
            depth += 1
            continue
        if 0.16 <= r < 0.22 and depth > 0:
            lines.append(rng.choice(["endif", "ENDIF", "endif  "]))
            depth -= 1
            continue
        if r < 0.235:
            lines.append(rng.choice(["endif", "endif garbage", "if", "1.2.3.4"]))
            continue
        if r < 0.26:
            lines.append(rng.choice(["# a comment", "", "   ", "\t# indented comment"]))
            continue
        sep = rng.choice([" ", "\t", "   "])
        line = f"{neg}{text}{sep}{value(rng)}"
        if rng.random() < 0.05:
            line += "\n   continued"
        lines.append(line)
    while depth > 0 and rng.random() < 0.7:
        lines.append("endif")
        depth -= 1
    return "\n".join(lines) + ("\n" if rng.random() < 0.9 else ""), nets


def cidr_keys(rng: random.Random, nets: list[tuple[int, int, int]], n: int) -> list[str]:
    keys = []
    odd = ["1.2.3", "[10.1.2.3]", "010.1.2.3", "::ffff:10.1.2.3", "", "foo", "10.1.2.3 ",
           " 10.1.2.3", "FE80::1", "2001:DB8::1", "10.1.2.3.4", "1:2:3:4:5:6:7:8", "::",
           "0.0.0.0", "255.255.255.255", "::ffff:192.168.0.1", "2001:0db8:0000::0001"]
    for _ in range(n):
        r = rng.random()
        if r < 0.6 and nets:
            family, net, length = rng.choice(nets)
            bits = 128 if family == socket.AF_INET6 else 32
            keys.append(format_delay(family, net | (rng.getrandbits(bits) & ~_mask(bits, length))))
        elif r < 0.8:
            keys.append(format_delay(socket.AF_INET, _v4(rng)))
        elif r < 0.92:
            keys.append(format_delay(socket.AF_INET6, _v6(rng)))
        else:
            keys.append(rng.choice(odd))
    return keys


UTF8 = pytest.mark.parametrize("utf8", [True, False], ids=["smtputf8", "ascii"])


@UTF8
@pytest.mark.parametrize("seed", SEEDS)
def test_cidr(tmp_path, caplog, seed, utf8):
    rng = random.Random(f"cidr{seed}")
    text, nets = cidr_table(rng)
    path = tmp_path / f"t{seed}.cidr"
    path.write_text(text)
    compare(tmp_path, f"cidr:{path}", cidr_keys(rng, nets, KEYS), caplog, utf8=utf8)


# -- regular expressions ------------------------------------------------------------------------

POSIX_ATOMS = ["a", "b", "c", "x", "y", "ab", "abc", "[a-c]", "[^a]", "[[:alpha:]]",
               "[[:digit:]]", "[[:upper:]]", "[xyz]", ".", "\\.", "[.]", "@", "-", "1",
               "[[:alnum:]_]", "[[:space:]]", "\\/"]
PCRE_ATOMS = POSIX_ATOMS + ["\\d", "\\w", "\\s", "\\Qa.b\\E", "\\Q(x\\E", "(?i:x)", "(?-i:A)",
                            "(?:ab|c)", "(?=a)", "(?!b)", "\\b", "a*?", "b+?", "[[:^alpha:]]",
                            "\\x41"]
QUANT = ["", "", "", "*", "+", "?", "{1,2}", "{2}"]


class ReGen:
    def __init__(self, rng: random.Random, pcre: bool):
        self.rng = rng
        self.pcre = pcre
        self.groups = 0

    def seq(self, depth: int) -> str:
        rng = self.rng
        out = []
        for _ in range(rng.randrange(1, 4)):
            if depth < 2 and rng.random() < 0.3:
                self.groups += 1
                index = self.groups
                alts = "|".join(self.seq(depth + 1) for _ in range(rng.randrange(1, 4)))
                if self.pcre and rng.random() < 0.1:
                    item = f"(?<g{index}>{alts})"
                else:
                    item = f"({alts})"
                if self.pcre and index > 1 and rng.random() < 0.05:
                    item += f"\\{rng.randrange(1, index)}"
            else:
                item = rng.choice(PCRE_ATOMS if self.pcre else POSIX_ATOMS)
            out.append(item + rng.choice(QUANT))
        return "".join(out)

    def pattern(self) -> tuple[str, int]:
        rng = self.rng
        self.groups = 0
        text = self.seq(0)
        if rng.random() < 0.4:
            text = "^" + text
        if rng.random() < 0.3:
            text += "$"
        if rng.random() < 0.04:
            text = rng.choice(["(", "[a", "a{2,1}", "a)", "\\", "(?<", "*a", "a**"])
        return text, self.groups

    def flags(self) -> str:
        rng = self.rng
        if rng.random() < 0.6:
            return ""
        letters = "imsxAEUX" if self.pcre else "imx"
        if rng.random() < 0.03:
            letters += "q"
        return "".join(rng.sample(letters, rng.randrange(1, 3)))

    def replacement(self, groups: int) -> str:
        rng = self.rng
        parts = []
        for _ in range(rng.randrange(0, 4)):
            r = rng.random()
            if r < 0.45 and groups:
                n = rng.randrange(1, groups + 1 + (rng.random() < 0.1))
                parts.append(rng.choice([f"${n}", f"${{{n}}}", f"$({n})"]))
            elif r < 0.5:
                parts.append("$$")
            elif r < 0.52:
                parts.append(rng.choice(["$x", "${1", "$", "${0}"]))
            else:
                parts.append(rng.choice(["[", "]", "-", "ok", " ", "REJECT ", "é", "x.y"]))
        text = "".join(parts).strip()
        return text if text or rng.random() < 0.1 else "found"

    def table(self) -> str:
        rng = self.rng
        lines = ["/^(a|ab)(c|bcd)?/ [$1][$2]"]
        depth = 0
        for _ in range(rng.randrange(30, 80)):
            r = rng.random()
            pattern, groups = self.pattern()
            delim = "/" if "#" in pattern or rng.random() < 0.9 else "#"
            neg = "!" * rng.choice([0, 0, 0, 0, 1]) + ("" if rng.random() < 0.9 else " ")
            body = pattern if delim == "/" else pattern.replace("\\/", "/")
            quoted = f"{delim}{body}{delim}{self.flags()}"
            if r < 0.1 and depth < 3:
                lines.append(f"{rng.choice(['if', 'IF'])} {neg}{quoted}")
                depth += 1
            elif r < 0.17 and depth > 0:
                lines.append("endif")
                depth -= 1
            elif r < 0.19:
                lines.append(rng.choice(["endif", "foo bar", "# comment", "", "if"]))
            elif not self.pcre and r < 0.24:
                second, _ = self.pattern()
                lines.append(f"{quoted}!/{second}/ second {self.replacement(0)}")
            else:
                line = f"{neg}{quoted} {self.replacement(groups)}"
                if rng.random() < 0.04:
                    line += "\n  continued"
                lines.append(line)
        return "\n".join(lines) + "\n"


def plain_rules(gen: ReGen, n: int) -> str:
    """A run of positive one-pattern rules with the same flags: the shape
    hato matches through combined patterns."""
    lines = []
    for i in range(n):
        pattern, groups = gen.pattern()
        lines.append(f"/{pattern}/ plain{i} {gen.replacement(groups)}")
    return "\n".join(lines) + "\n"


def regex_keys(rng: random.Random, n: int) -> list[str]:
    fixed = ["abc", "abcd", "ab", "a", "a.b", "A.B", "aXb", "", "xyz", "XYZ", "a@b", "é",
             "über@x", "(x", "AB", "1", "a/b", "a b"]
    keys = []
    for _ in range(n):
        if rng.random() < 0.1:
            keys.append(rng.choice(fixed))
        else:
            alphabet = rng.choice(["abcxy", "abcxyzABC019.@-_ /", "ab", "abcd.@"])
            keys.append("".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 9))))
    return keys


@UTF8
@pytest.mark.parametrize("seed", SEEDS)
def test_regexp(tmp_path, caplog, seed, utf8):
    rng = random.Random(f"regexp{seed}")
    path = tmp_path / f"t{seed}.regexp"
    gen = ReGen(rng, pcre=False)
    path.write_text(gen.table() + plain_rules(gen, 50))
    compare(tmp_path, f"regexp:{path}", regex_keys(rng, KEYS), caplog, utf8=utf8)


@UTF8
@pytest.mark.parametrize("seed", SEEDS)
def test_pcre(tmp_path, caplog, seed, utf8):
    rng = random.Random(f"pcre{seed}")
    path = tmp_path / f"t{seed}.pcre"
    gen = ReGen(rng, pcre=True)
    table = gen.table() + plain_rules(gen, 50)
    table += "/^\\Qa.b\\E$/ quoted\n/^[[:alpha:]]+$/ alpha\n/^(?i)xyz$/ ci\n"
    path.write_text(table)
    compare(tmp_path, f"pcre:{path}", regex_keys(rng, KEYS), caplog, utf8=utf8)


def test_protocols_corner_cases(tmp_path, caplog):
    """../shared/PROTOCOLS.md §3.8: POSIX leftmost-longest for regexp; PCRE
    syntax Python's re lacks for pcre."""
    regexp = tmp_path / "c.regexp"
    regexp.write_text("/^(a|ab)(c|bcd)?/ [$1][$2]\n/^[[:alpha:]]+$/ alpha\n")
    pcre = tmp_path / "c.pcre"
    pcre.write_text("/^(a|ab)(c|bcd)?/ [$1][$2]\n/^\\Qa.b\\E$/ quoted\n"
                    "/^(?-i)XyZ$/ cs\n/^[[:alpha:]]+$/ alpha\n")
    keys = ["abc", "abcd", "a.b", "axb", "XyZ", "xyz", "Hello", "ab"]
    compare(tmp_path, f"regexp:{regexp}", keys, caplog, combined=False)
    compare(tmp_path, f"pcre:{pcre}", keys, caplog, combined=False)
    assert hato_answers(f"regexp:{regexp}", ["abc"], True, caplog)[0] == ["abc\t[ab][c]"]


# -- inline, static, unix, composites ---------------------------------------------------------

KEY_WORDS = ["alpha", "Beta", "GAMMA", "user@example.com", "User+Ext@Example.COM", "192.0.2.1",
             "2001:db8::1", "straße", "Ärger", "ÉCOLE", "σίσυφος", "x", "mx.example", "a.b.c"]


def inline_spec(rng: random.Random) -> tuple[str, list[str]]:
    items, keys = [], []
    for _ in range(rng.randrange(3, 25)):
        key = rng.choice(KEY_WORDS) + ("" if rng.random() < 0.5 else str(rng.randrange(50)))
        keys.append(key)
        val = value(rng)
        if " " in val or rng.random() < 0.2:
            items.append(f"{{ {key} = {val} }}")
        else:
            items.append(f"{key}={val}")
    return "inline:{" + rng.choice([", ", ",", " ", " , "]).join(items) + "}", keys


def _recase(rng: random.Random, key: str) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in key)


@pytest.mark.parametrize("utf8", [True, False], ids=["smtputf8", "ascii"])
@pytest.mark.parametrize("seed", SEEDS)
def test_inline(tmp_path, caplog, seed, utf8):
    rng = random.Random(f"inline{seed}")
    spec, keys = inline_spec(rng)
    queries = []
    for _ in range(KEYS // 2):
        r = rng.random()
        if r < 0.5:
            queries.append(rng.choice(keys))
        elif r < 0.8:
            queries.append(_recase(rng, rng.choice(keys)))
        else:
            queries.append(rng.choice(KEY_WORDS) + rng.choice(["", "9", "x"]))
    compare(tmp_path, spec, queries, caplog, utf8=utf8)


@pytest.mark.parametrize("spec", ["static:hello", "static:{ hello world }", "static:{{a b}}",
                                  "static:{}", "static:REJECT go away", "static:välue"])
def test_static(tmp_path, caplog, spec):
    rng = random.Random(spec)
    queries = [rng.choice(KEY_WORDS) + str(i) for i in range(400)]
    compare(tmp_path, spec, queries, caplog)


def test_unix(tmp_path, caplog):
    import grp
    import pwd
    users = [p.pw_name for p in pwd.getpwall()]
    groups = [g.gr_name for g in grp.getgrall()]
    keys = users + [u.upper() for u in users] + ["hato-no-such-user", ""]
    compare(tmp_path, "unix:passwd.byname", keys, caplog)
    compare(tmp_path, "unix:group.byname", groups + [g.upper() for g in groups] + ["nosuch"],
            caplog)


def test_composites(tmp_path, caplog):
    pcre = tmp_path / "p.pcre"
    pcre.write_text("/^(.*)@example\\.com$/ $1\n/^x/ ex\n")
    cidr = tmp_path / "c.cidr"
    cidr.write_text("192.0.2.0/24 net\n")
    keys = ["a@example.com", "alpha", "x", "192.0.2.9", "Beta", "xa@example.com", "none"]
    for spec in [f"unionmap:{{inline:{{alpha=1, x=2}}, pcre:{pcre}, cidr:{cidr}, static:s}}",
                 f"unionmap:{{pcre:{pcre} inline:{{a=alpha}}}}",
                 f"pipemap:{{pcre:{pcre}, inline:{{a=A, xa=XA}}}}",
                 (f"pipemap:{{inline:{{alpha=x, beta=192.0.2.1}}, unionmap:{{pcre:{pcre}, "
                  f"cidr:{cidr}}}}}")]:
        compare(tmp_path, spec, keys, caplog)


@pytest.mark.parametrize("kind", ["regexp", "pcre", "cidr"])
def test_inline_rule_form(tmp_path, caplog, kind):
    """Postfix 3.7's ``type:{ {rule}, {rule} }``, warnings included."""
    rng = random.Random(f"inline-{kind}")
    if kind == "cidr":
        text, nets = cidr_table(rng)
        keys = cidr_keys(rng, nets, 300)
    else:
        text = ReGen(rng, pcre=kind == "pcre").table()
        keys = regex_keys(rng, 300)
    rules = [line for line in text.splitlines()
             if line.strip() and not line.startswith((" ", "\t", "#"))
             and "{" not in line and "}" not in line]
    spec = kind + ":{ " + ", ".join("{" + r + "}" for r in rules) + " }"
    compare(tmp_path, spec, keys, caplog)

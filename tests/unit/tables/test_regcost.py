"""regexp: tables refuse patterns glibc's regcomp() would need gigabytes for.

Each refused pattern here takes glibc hundreds of megabytes to many
gigabytes (measured: ``o`` with twenty ``+`` 700 MB, ``(\\ba?)`` fifty times
5 GB); hato's probe stops it at 64 MB in a child process, so the test
process never allocates it.
"""

from __future__ import annotations

import resource

import pytest

from hato.tables import regcost, regexp
from hato.tables.regcost import compile_cost, shape, simple
from hato.tables.regexp import REG_EXTENDED, REG_ICASE, RegexpTable, _libc


def write(tmp_path, text: str) -> str:
    path = tmp_path / "rules"
    path.write_bytes(text.encode())
    return str(path)


def where(table):
    return [(w.line, w.message) for w in table.warnings]


TOO_BIG = ("regular expression too big: compiling it would take more than 64 MB "
           "or 1 CPU second")


def table_too_big(megabytes: int) -> str:
    return (f"table too big: its patterns would take more than {megabytes} MB "
            f"or 2 CPU seconds to compile")


def test_shape_counts_glibc_copies():
    # X+ is X X*: every stacked '+' doubles the NFA
    nodes10 = shape(b"o" + b"+" * 10, True)[0]
    nodes20 = shape(b"o" + b"+" * 20, True)[0]
    assert nodes20 > 1000 * nodes10 > 1000
    # X{n,m} is m copies; nested bounds multiply
    assert shape(b"a{1000}{1000}", True)[0] >= 10 ** 6
    assert shape(b"(ab){3}", True)[0] >= 12
    # real patterns are small
    assert shape(rb"^([0-9]{1,3}\.){3}[0-9]{1,3}$", True) == (31, 5, False)
    # a host name of up to 63-letter labels is small enough; 127 of them is not
    assert simple(rb"^([a-z0-9-]{1,63}\.)+[a-z]{2,63}$", True)
    assert not simple(rb"^([a-z0-9-]{1,63}\.){1,127}[a-z]{2,63}$", True)
    assert shape(rb"^Subject:.*\b(viagra|cialis)\b", True)[1:] == (4, False)
    assert simple(rb"([a-z0-9-]+\.)+[a-z]+", True)


def test_shape_flags_repeated_empty_matches_and_anchors():
    # glibc spends seconds on these short patterns (measured: 8.6 s for the first)
    for text in (rb"(\b)+*x(\b|$|[a-z])+*??", rb"(a?)*", rb"(x|)+", rb"((^|,)foo)+",
                 rb"(a*b?){2,5}"):
        assert shape(text, True)[2], text
        assert not simple(text, True)
    for text in (rb"(^|,)foo", rb"([a-z]+\.)+", rb"(ab?)*", rb"^(.*)@example\.com$"):
        assert not shape(text, True)[2], text


def test_shape_basic_syntax():
    # in a basic RE, \{ \} bound, \( \) group, and '+' is a literal
    assert shape(rb"\(ab\)\{100\}", False)[0] >= 200
    assert shape(rb"(ab){100}", False)[0] < 20
    assert shape(b"a" + b"+" * 30, False)[0] == 31
    # '*' at the start of a basic RE is a literal, not a repetition
    assert shape(b"*a", False) == (2, 0, False)
    assert shape(rb"\(a*\)*", False)[2]


def test_shape_of_broken_syntax_does_not_raise():
    for text in (b"((((", b"))))", b"a{", b"a{2,1}", b"a{99999}", b"[[:alpha:", b"\\",
                 b"\\(\\(", b"|||", b"(*+?)"):
        shape(text, True)
        shape(text, False)


def test_plain_patterns_are_not_probed(monkeypatch):
    def no_probe(*_args):
        raise AssertionError("probed")

    monkeypatch.setattr(regcost, "_probe", no_probe)
    compile_cost.cache_clear()
    try:
        cost = compile_cost(rb"^([0-9]{1,3}\.){3}[0-9]{1,3}$", REG_EXTENDED | REG_ICASE, True,
                            _libc._name)
        assert cost is not None and cost.bytes < 1 << 20 and cost.seconds == 0
    finally:
        compile_cost.cache_clear()


def test_fuzzer_find_stacked_plus_is_refused(tmp_path):
    """The fuzzer's input: glibc took over 2 GB for this line."""
    path = write(tmp_path, "/^(.*)@example\\.co" + "+" * 43 + "m$/ a\n/^x$/ y\n")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = RegexpTable(path)
    assert where(t) == [(1, TOO_BIG)]
    assert t.get("x") == "y"
    assert t.get("user@example.com") is None
    # nothing near the cost was allocated here (ru_maxrss is in KiB)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024


@pytest.mark.parametrize("pattern", [
    "a{0,32767}",                       # 8 GB, 38 s in glibc
    "(\\ba?)" * 50,                     # 300 bytes, 5 GB
    "^(((a?){0,10}){0,10}){0,10}",      # 12 GB
])
def test_pathological_patterns_are_refused(tmp_path, pattern):
    t = RegexpTable(write(tmp_path, f"/{pattern}/ big\n/^z/ z\n"))
    assert where(t) == [(1, TOO_BIG)]
    assert t.get("zz") == "z"


def test_costly_but_bounded_pattern_is_measured_and_kept(tmp_path):
    # about 23 MB in glibc: probed, under the limit, compiled and used
    t = RegexpTable(write(tmp_path, "/^x(\\ba?){0,25}y$/ found\n"))
    assert t.warnings == []
    assert t.get("xaaay") == "found"
    assert t.get("xaaa") is None


def test_syntax_error_after_probe_is_glibcs_own(tmp_path):
    t = RegexpTable(write(tmp_path, "/(\\ba?){0,25}(/ x\n"))
    assert where(t) == [(1, "Unmatched ( or \\(")]


def test_table_budget_counts_every_pattern(tmp_path, monkeypatch):
    compile_cost.cache_clear()
    first = compile_cost(b"^o(\\ba?){0,20}$", REG_EXTENDED | REG_ICASE, True, _libc._name)
    assert first is not None and first.bytes > 1 << 20
    limit = first.bytes + first.bytes // 2
    monkeypatch.setattr(regexp, "TABLE_LIMIT", limit)
    t = RegexpTable(write(tmp_path, "/^o(\\ba?){0,20}$/ one\n/^t(\\ba?){0,20}$/ two\n"
                                    "/^b$/ b\n"))
    assert where(t) == [(2, table_too_big(limit >> 20))]
    assert t.get("b") == "b"
    assert t.get("oa") == "one"
    assert t.get("ta") is None


def test_combined_patterns_stay_within_the_budget(tmp_path, monkeypatch):
    # four plain rules would get combined patterns; with no room left in the
    # budget the table still answers, rule by rule
    rules = "".join(f"/^w{i}(\\ba?){{0,12}}$/ r{i}\n" for i in range(4))
    t = RegexpTable(write(tmp_path, rules))
    assert t.warnings == [] and t._combined
    alone = sum(compile_cost(f"^w{i}(\\ba?){{0,12}}$".encode(), REG_EXTENDED | REG_ICASE, True,
                             _libc._name).bytes for i in range(4))
    assert t._spent > alone
    monkeypatch.setattr(regexp, "TABLE_LIMIT", alone)
    # the rules alone fit; the combined patterns do not
    single = RegexpTable(write(tmp_path, rules))
    assert single.warnings == [] and single._combined == []
    for i in range(4):
        assert single.get(f"w{i}aa") == f"r{i}"
    assert single.get("w9") is None


def test_table_time_budget_stops_probing(tmp_path):
    # each of these takes glibc seconds of CPU with little memory; two
    # refused probes use the table's two seconds, the third is not probed
    t = RegexpTable(write(tmp_path, "/(\\b){72,}/ a\n/(\\b){73,}/ b\n/(\\b){74,}/ c\n"
                                    "/^[0-9]{1,3}$/ number\n"))
    assert where(t) == [(1, TOO_BIG), (2, TOO_BIG), (3, table_too_big(256))]
    assert t.get("123") == "number"


@pytest.mark.parametrize("probe, verdict", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "refused"),
    ("raise MemoryError", "refused"),
    ("raise SystemExit('no /proc here')", "unmeasured"),
])
def test_probe_outcomes(tmp_path, monkeypatch, caplog, probe, verdict):
    """A probe killed by a signal or out of memory refuses the pattern; one
    that could not do its work leaves the pattern to be compiled as Postfix
    would, with a warning."""
    monkeypatch.setattr(regcost, "_PROBE", probe)
    compile_cost.cache_clear()
    try:
        t = RegexpTable(write(tmp_path, "/^q(\\ba?){0,3}$/ hit\n"))
    finally:
        compile_cost.cache_clear()
    if verdict == "refused":
        assert where(t) == [(1, TOO_BIG)]
        assert t.get("qa") is None
    else:
        assert t.warnings == []
        assert t.get("qa") == "hit"
        assert "cannot measure a regular expression before compiling it (no /proc here)" \
            in caplog.text


def test_probe_that_cannot_start_compiles_unmeasured(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(regcost.sys, "executable", str(tmp_path / "no-python"))
    compile_cost.cache_clear()
    try:
        t = RegexpTable(write(tmp_path, "/^q(\\ba?){0,3}$/ hit\n"))
    finally:
        compile_cost.cache_clear()
    assert t.get("qaa") == "hit"
    assert "cannot measure a regular expression" in caplog.text

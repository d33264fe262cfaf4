"""The $name expansion language, form by form."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hato.config.errors import ExpandError, ExpansionLoop
from hato.config.expand import Expander, expand, referenced_names

VALUES = {
    "a": "alpha", "b": "$a-beta", "empty": "", "yes": "yes", "n3": "3", "n10": "10",
    "stress": "", "level": "3.6", "loop1": "$loop2", "loop2": "x${loop3}", "loop3": "$loop1",
    "self": "$self",
}


def lk(name):
    return VALUES.get(name)


@pytest.mark.parametrize("text, want", [
    ("plain", "plain"),
    ("$a", "alpha"),
    ("${a}", "alpha"),
    ("$(a)", "alpha"),
    ("$b", "alpha-beta"),
    ("x$a.y", "xalpha.y"),
    ("$$", "$"),
    ("$$a", "$a"),
    ("${a?set}", "set"),
    ("${empty?set}", ""),
    ("${undefined?set}", ""),
    ("${a:unset}", ""),
    ("${empty:unset}", "unset"),
    ("${undefined:unset}", "unset"),
    ("${a?{ set }}", " set "),
    ("${a?  {set}  }", "set"),
    ("${empty:{ unset }}", " unset "),
    ("${a?{one}:{two}}", "one"),
    ("${empty?{one}:{two}}", "two"),
    ("${empty?{one}:two}", "two"),
    ("${a?yes:no}", "yes:no"),
    ("${stress?10}${stress:300}s", "300s"),
    ("${stress?{10}:{300}}s", "300s"),
    ("${{$a} == {alpha}?{eq}:{ne}}", "eq"),
    ("${{$a} != {alpha}?{ne}:{eq}}", "eq"),
    ("${{$n3} < {$n10}?{num}:{str}}", "num"),
    ("${{abc} < {abd}?{lt}:{ge}}", "lt"),
    ("${{10} <= {10}?{le}:{gt}}", "le"),
    ("${{10} > {9}?{gt}:{le}}", "gt"),
    ("${{9} >= {10}?{ge}:{lt}}", "lt"),
    ("${{$level} <level {3.10}?{older}:{newer}}", "older"),
    ("${{1} <=level {1}?{a}:{b}}", "a"),
    ("${{3.6} >level {2}?{a}:{b}}", "a"),
    ("${{2} >=level {3.6}?{a}:{b}}", "b"),
    ("${{x}=={x}}", "true"),
    ("${{x}=={y}}", ""),
    ("${ {x} == {x} ? {t} : {f} }", "t"),
    ("${a?${b}}", "alpha-beta"),
    ("${empty:${a?{${b}}}}", "alpha-beta"),
    ("[$undefined]", "[]"),
])
def test_forms(text, want):
    assert expand(text, lk) == want


@pytest.mark.parametrize("text", ["${a", "$(a", "x$(a}", "q$", "a $ b", "$}", "${a b}",
                                  "${{a} ~ {b}?x}", "${{a} == b?x}", "${{a}=={b}x}"])
def test_syntax_errors(text):
    with pytest.raises(ExpandError):
        expand(text, lk)


def test_loop_is_named():
    with pytest.raises(ExpansionLoop) as err:
        expand("$loop1", lk)
    assert "loop1 -> loop2 -> loop3 -> loop1" in str(err.value)
    with pytest.raises(ExpansionLoop):
        expand("$self", lk)


def test_deep_chain_is_not_a_recursion_error():
    chain = {f"p{i}": f"$p{i + 1}" for i in range(5000)}
    with pytest.raises(ExpandError):
        expand("$p0", chain.get)


def test_undefined_names_are_collected():
    e = Expander(lk)
    assert e.expand("$nope ${also_nope}") == " "
    assert e.undefined == ["nope", "also_nope"]


def test_no_recursion_mode():
    assert expand("$b", lk, recurse=False) == "$a-beta"


def test_referenced_names_sees_every_branch():
    names = referenced_names("${x?{$y}:{$z}} $(w) ${{$p} == {q}?{$r}:{s}}")
    assert {"x", "y", "z", "w", "p", "r"} <= set(names)


@given(st.text(alphabet="ab{}$?:() =<>!", max_size=30))
def test_never_crashes(text):
    try:
        expand(text, lk)
    except ExpandError:
        pass

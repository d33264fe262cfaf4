"""The parameter table against Debian's Postfix 3.7: names and defaults.

Every parameter in hato's table (except ``hato_*`` ones) must be one that
``postconf -d`` prints, and every default that is neither computed from the
host nor listed in DELIBERATE_DIFFERENCES must be exactly the text Postfix
prints after ``NAME = ``.

``postconf -d`` runs once, against an empty configuration directory (empty
main.cf and master.cf), so the answer depends on Postfix alone: no local
main.cf, and no per-transport parameters that only exist because a local
master.cf lists a delivery service.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hato.config.params import (
    DELIBERATE_DIFFERENCES,
    LEGACY_PARAMS,
    PARAMS,
    RAW_PARAMS,
    Kind,
)

pytestmark = pytest.mark.differential


def _postconf() -> str:
    path = shutil.which("postconf") or shutil.which("postconf", path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail("postconf is missing: install Debian's postfix package "
                    "(apt-get install postfix; tools/run-tests installs it). "
                    "These differential tests compare hato's defaults with it.")
    return path


@pytest.fixture(scope="module")
def empty_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    conf: Path = tmp_path_factory.mktemp("postfix-empty")
    (conf / "main.cf").write_text("")
    (conf / "master.cf").write_text("")
    return conf


def _postconf_d(conf: Path, *args: str) -> dict[str, str]:
    """``postconf -c CONF ARGS...`` parsed into {name: value}."""
    proc = subprocess.run([_postconf(), "-c", str(conf), *args], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 0, f"postconf {' '.join(args[:3])} ... failed: {proc.stderr}"
    out: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if not sep:  # an empty default prints as "name ="
            assert line.endswith(" ="), f"unexpected postconf -d line: {line!r}"
            name, value = line[:-2], ""
        out[name] = value
    return out


@pytest.fixture(scope="module")
def postfix_defaults(empty_config: Path) -> dict[str, str]:
    """``postconf -d`` parsed into {name: default}."""
    out = _postconf_d(empty_config, "-d")
    assert len(out) > 500, "postconf -d printed too few parameters"
    return out


def _postfix_names() -> list[str]:
    return sorted(n for n in PARAMS if not n.startswith("hato_"))


def test_every_parameter_exists_in_postfix(postfix_defaults: dict[str, str]) -> None:
    unknown = [n for n in _postfix_names() if n not in postfix_defaults]
    assert not unknown, ("parameters in hato's table that Postfix 3.7 does not have "
                         f"(prefix hato-only ones with hato_): {unknown}")


def test_defaults_equal_postfix(postfix_defaults: dict[str, str]) -> None:
    wrong = []
    for name in _postfix_names():
        param = PARAMS[name]
        if param.computed or name in DELIBERATE_DIFFERENCES or name not in postfix_defaults:
            continue
        if param.default != postfix_defaults[name]:
            wrong.append(f"{name}: hato {param.default!r} != "
                         f"postconf -d {postfix_defaults[name]!r}")
    assert not wrong, "defaults that differ from postconf -d:\n" + "\n".join(wrong)


def test_deliberate_differences_really_differ(postfix_defaults: dict[str, str]) -> None:
    """An exception that no longer differs must leave the exception list."""
    missing = [n for n in DELIBERATE_DIFFERENCES if n not in PARAMS]
    assert not missing, f"DELIBERATE_DIFFERENCES names unknown parameters: {missing}"
    stale = [n for n in DELIBERATE_DIFFERENCES
             if not PARAMS[n].computed and PARAMS[n].default == postfix_defaults.get(n)]
    assert not stale, f"listed as deliberate differences but equal to Postfix: {stale}"


def test_legacy_names_are_not_printed_by_postfix(postfix_defaults: dict[str, str]) -> None:
    """Legacy names stay out of PARAMS and out of postconf -d; their successor
    is a parameter hato has (or one Postfix has that hato left out)."""
    for old, new in LEGACY_PARAMS.items():
        assert old not in PARAMS and old not in postfix_defaults, old
        assert new in postfix_defaults, new


def test_time_units_match_defaults() -> None:
    """A TIME parameter's unit is the unit letter its default ends with."""
    bad = [n for n, p in PARAMS.items()
           if p.kind is Kind.TIME and p.default and p.default[-1].isalpha()
           and p.default[-1] != p.unit]
    assert not bad, f"TIME parameters whose unit differs from their default's: {bad}"


def test_raw_parameters_are_those_postfix_does_not_expand(
        empty_config: Path, postfix_defaults: dict[str, str]) -> None:
    """RAW_PARAMS are exactly the table's parameters whose ``$`` Postfix leaves
    alone: ``postconf -dx`` prints them as ``postconf -d`` does."""
    assert RAW_PARAMS <= set(PARAMS), sorted(RAW_PARAMS - set(PARAMS))
    names = sorted(n for n, p in PARAMS.items()
                   if "$" in p.default and not p.computed and n in postfix_defaults)
    expanded = _postconf_d(empty_config, "-dx", *names)
    unexpanded = {n for n in names if expanded[n] == postfix_defaults[n]}
    assert unexpanded == {n for n in names if n in RAW_PARAMS}, (
        "RAW_PARAMS disagrees with postconf -dx: "
        f"not expanded by Postfix {sorted(unexpanded)}")


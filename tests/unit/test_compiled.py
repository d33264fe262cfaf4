"""The compiled build (docs/compiled.md): which modules mypyc compiles is
pyproject.toml's list; an installed hato has either all of them compiled or
none. ``HATO_EXPECT_COMPILED`` (set by tools/run-tests) says which the run
must see: ``1`` the compiled build, ``0`` the pure-Python source; unset,
either is fine but never a mix."""

from __future__ import annotations

import importlib
import os
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compiled_modules() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        hook = tomllib.load(f)["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["mypyc"]
    names = []
    for path in hook["include"]:
        assert path.startswith("src/") and path.endswith(".py"), path
        names.append(path[len("src/"):-len(".py")].replace("/", "."))
    return names


def test_the_list_names_modules_of_hato():
    names = compiled_modules()
    assert names and all(n.startswith("hato.") for n in names)
    for name in names:
        assert (ROOT / "src" / (name.replace(".", "/") + ".py")).is_file(), name


def test_all_or_none_compiled():
    kinds = {}
    for name in compiled_modules():
        module = importlib.import_module(name)
        kinds[name] = "compiled" if module.__file__.endswith(".so") else "python"
    assert len(set(kinds.values())) == 1, kinds
    expected = os.environ.get("HATO_EXPECT_COMPILED")
    if expected is None:
        pytest.skip(f"HATO_EXPECT_COMPILED unset; the modules are {set(kinds.values())}")
    want = "compiled" if expected == "1" else "python"
    assert set(kinds.values()) == {want}, kinds

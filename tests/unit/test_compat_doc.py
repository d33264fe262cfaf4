"""docs/compat.md's parameter section is what tools/gen-compat-params makes
from the parameter table: change the table, then run the tool."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "gen-compat-params"
COMPAT = ROOT / "docs" / "compat.md"


def _tool() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gen_compat_params", str(TOOL))
    spec = importlib.util.spec_from_loader("gen_compat_params", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_compat_md_parameter_section_is_up_to_date() -> None:
    tool = _tool()
    assert COMPAT.exists(), "docs/compat.md is missing: run tools/gen-compat-params"
    page = COMPAT.read_text(encoding="utf-8")
    start, end = page.find(tool.BEGIN), page.find(tool.END)
    assert 0 <= start < end, "docs/compat.md lacks the params:begin/params:end markers"
    current = page[start:end + len(tool.END)] + "\n"
    assert current == tool.render_section(), (
        "docs/compat.md's parameter table is out of date: run tools/gen-compat-params")


def test_every_parameter_has_a_row() -> None:
    tool = _tool()
    section = tool.render_section()
    from hato.config.params import DELIBERATE_DIFFERENCES, PARAMS
    for name in PARAMS:
        assert f"| `{name}` |" in section, name
    for name, reason in DELIBERATE_DIFFERENCES.items():
        assert f"hato default differs: {reason}" in section, name


def test_regeneration_keeps_the_rest_of_the_page() -> None:
    tool = _tool()
    page = f"# Title\n\nbefore\n\n{tool.BEGIN}\nold table\n{tool.END}\n\nafter\n"
    new = tool.updated_page(page)
    assert new.startswith("# Title\n\nbefore\n\n" + tool.BEGIN)
    assert new.endswith(tool.END + "\n\nafter\n")
    assert "old table" not in new
    assert tool.updated_page(new) == new
    fresh = tool.updated_page(None)
    assert fresh.startswith("# Compatibility with Postfix\n\n" + tool.BEGIN)

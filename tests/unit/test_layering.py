"""The layering rule of HACKING.md, checked by walking every import."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "hato"

# Each package may import from packages of the same or a lower rank.
RANK = {
    "proto": 0, "config": 0,
    "tables": 1, "policy": 1, "queue": 1, "delivery": 1,
    "io": 2, "auth": 2,
    "services": 3,
    "master": 4,
    "cli": 5,
}
PURE = {"proto", "config"}
FORBIDDEN_IN_PURE = {"asyncio", "socket", "ssl", "threading", "subprocess", "selectors"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(SRC).parts[:-1]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                mod = ".".join(["hato", *base] + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.append(mod)
    return names


def test_layers_only_import_downwards():
    problems = []
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).parts
        if len(parts) < 2 or parts[0] not in RANK:
            continue
        layer = parts[0]
        for name in _imports(path):
            pieces = name.split(".")
            if pieces[0] == "hato" and len(pieces) > 1 and pieces[1] in RANK:
                if RANK[pieces[1]] > RANK[layer]:
                    problems.append(f"{path.relative_to(SRC)} imports {name}")
                if layer == "services" and pieces[1] == "services" and len(pieces) > 2:
                    if len(parts) > 1 and pieces[2] != Path(parts[1]).stem:
                        problems.append(f"{path.relative_to(SRC)}: services never import "
                                        f"each other ({name})")
            if layer in PURE and pieces[0] in FORBIDDEN_IN_PURE:
                problems.append(f"{path.relative_to(SRC)} is pure but imports {name}")
    assert not problems, "\n".join(problems)

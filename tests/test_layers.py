"""The package stacks as floors: every import, lazy ones included, points to the same subpackage or down.

Each subpackage of ``bpcr`` has a floor; a module may import its own subpackage and any subpackage on a
lower floor, never one on its own floor or above. The root modules (errors, ranges, progress, memory,
device) are the ground; ``bpcr/__init__.py`` (the notebook front door) and ``__main__`` stand outside.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bpcr"
FLOORS = {
    "root": 0,
    "io": 1,
    "dataset": 2,
    "features": 3, "text": 3, "retrieval": 3, "demo": 3,
    "postretrieval": 4, "reranking": 4,
    "evaluation": 5,
    "training": 6,
    "serve": 6,
    "pipeline": 7,
    "cli": 8,
}
OUTSIDE = {"bpcr", "bpcr.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every ``bpcr`` module or package that ``module``'s source imports, at the top or inside a function."""
    package = module if is_package else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            # ``from bpcr.x import y`` names module bpcr.x.y when y is one
            found.update([base, *(f"{base}.{a.name}" for a in node.names)])
    return {m for m in found if m == "bpcr" or m.startswith("bpcr.")}


def subpackage(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and (PACKAGE / parts[1]).is_dir():
        return parts[1]
    return "root"


def arrows() -> dict[tuple[str, str], list[str]]:
    """(from subpackage, to subpackage) -> the module imports behind it, between different subpackages."""
    found: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = module_name(path)
        if source in OUTSIDE:
            continue
        for target in imported_modules(path.read_text(), source, path.name == "__init__.py"):
            if target in OUTSIDE:
                continue
            pair = (subpackage(source), subpackage(target))
            if pair[0] != pair[1]:
                found.setdefault(pair, []).append(f"{source} -> {target}")
    return found


def test_every_subpackage_has_a_floor():
    subpackages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert subpackages == set(FLOORS) - {"root"}


def test_imports_point_down_only():
    wrong = [f"{via} ({a}, floor {FLOORS[a]}, imports {b}, floor {FLOORS[b]})"
             for (a, b), vias in arrows().items() if FLOORS[b] >= FLOORS[a] for via in vias]
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_the_check_sees_lazy_and_relative_imports():
    """A lazy import inside a function counts, and so does a relative one, so the check above can fail."""
    source = "import os\n\ndef f():\n    from bpcr.cli import options\n    from ..pipeline import config\n"
    found = imported_modules(source, "bpcr.io.ids")
    assert {"bpcr.cli", "bpcr.pipeline"} <= found
    assert {subpackage(m) for m in found} == {"cli", "pipeline"}


@pytest.mark.parametrize("name", sorted(p for p in FLOORS if p != "root"))
def test_subpackage_init_imports_nothing(name):
    tree = ast.parse((PACKAGE / name / "__init__.py").read_text())
    if name in ("cli", "demo"):
        pytest.skip(f"bpcr.{name} is a front door of its own (the Typer app; the demo's entry point)")
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]

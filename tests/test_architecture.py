"""The tree is the architecture: pushd -> actors -> storage, never back (DESIGN.md §3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package -> top-level modules it must never import
FORBIDDEN = {
    "storage": {"pushd", "actors", "aiohttp", "aiormq"},
    "actors": {"pushd", "aiohttp", "aiormq", "asyncpg", "redis"},
}


def imported_top_levels(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[tuple[str, int]] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_inward(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for module, line in sorted(imported_top_levels(path))
        if module in FORBIDDEN[package]
    ]
    assert not wrong, "imports against the architecture:\n" + "\n".join(wrong)


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import aiohttp.web\nfrom pushd.config import Config\nfrom . import x\n")
    assert {module for module, _ in imported_top_levels(sample)} == {"aiohttp", "pushd"}

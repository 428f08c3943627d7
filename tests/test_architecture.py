"""The tree is the architecture (DESIGN.md §3): `pushd -> actors -> storage`, never back;
no import cycle among the project's modules; and an allowlist of what `actors/` and
`storage/` may import, so that a driver or provider library (aiosmtplib, httpx, ...)
cannot slip into them unnoticed, as it could past a denylist."""

from __future__ import annotations

import ast
import itertools
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Outermost first: a package may import itself and the packages after it, never one
# before it.
PACKAGES = ("pushd", "actors", "storage")

# Besides the standard library and the inner packages: the libraries each inner package
# needs today. Adding one is a design decision, made here on purpose. `pushd` is the
# I/O edge and has no list: the drivers and provider clients belong there.
LIBRARIES_ALLOWED = {
    "actors": {"msgspec"},
    "storage": {"msgspec", "asyncpg", "cryptography"},
}


@dataclass(frozen=True)
class Import:
    """One name an `import` statement brings in, with absolute dotted names."""

    # What follows `import` or `from`, as the message shows it.
    written: str
    # `from a import b` gives `a.b`, because `b` may be a submodule: the graph keeps
    # `a.b` if it is a project module, or else `a`.
    name: str
    line: int
    # False inside a function (runs when called) or under `if TYPE_CHECKING:` (never
    # runs): such an import takes no part in an import cycle, but is a dependency all
    # the same for the arrows and the allowlist.
    at_import_time: bool

    @property
    def top_level(self) -> str:
        return self.name.split(".")[0]


def project_modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the given packages."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(path: Path, module: str) -> list[Import]:
    """Every import in the file, each marked with whether it runs when the module loads."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []

    def visit(node: ast.AST, at_import_time: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(
                Import(alias.name, alias.name, node.lineno, at_import_time) for alias in node.names
            )
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            found.extend(
                Import(base, f"{base}.{alias.name}", node.lineno, at_import_time)
                for alias in node.names
            )
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                visit(statement, at_import_time=False)
            for statement in node.orelse:
                visit(statement, at_import_time)
            return
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            at_import_time = False
        for child in ast.iter_child_nodes(node):
            visit(child, at_import_time)

    visit(tree, at_import_time=True)
    return found


def _project_target(imported: Import, modules: Mapping[str, Path]) -> str | None:
    for candidate in (imported.name, imported.written):
        if candidate in modules:
            return candidate
    return None


def import_graph(modules: Mapping[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {project module it imports when it loads: line of the import}.

    Only the module an import names is an edge, not the parent packages that Python
    initialises on the way: those are already in `sys.modules` by the time one of
    their submodules runs, so `storage/crypto.py` importing `storage.errors` is no
    cycle through `storage/__init__.py`. An import of a name that `__init__.py`
    defines (`from storage import Storage`) is an edge to the package itself.
    """
    graph: dict[str, dict[str, int]] = {module: {} for module in modules}
    for module, path in modules.items():
        for imported in imports_of(path, module):
            target = _project_target(imported, modules)
            if imported.at_import_time and target is not None and target != module:
                graph[module].setdefault(target, imported.line)
    return graph


def _strongly_connected(graph: Mapping[str, Mapping[str, int]]) -> Iterator[list[str]]:
    """Tarjan's algorithm, iterative; yields each component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while (member := stack.pop()) != node:
                        on_stack.discard(member)
                        component.append(member)
                    on_stack.discard(node)
                    if component:
                        yield sorted([node, *component])


def _shortest_cycle(graph: Mapping[str, Mapping[str, int]], members: list[str]) -> list[str]:
    start, inside = members[0], set(members)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for successor in sorted(graph[node]):
                if successor == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if successor in inside and successor not in came_from:
                    came_from[successor] = node
                    following.append(successor)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def import_cycles(root: Path, modules: Mapping[str, Path]) -> list[str]:
    """One line per group of modules that import each other when they load, naming
    one cycle of the group and where each of its imports is."""
    graph = import_graph(modules)
    described = []
    for members in _strongly_connected(graph):
        cycle = _shortest_cycle(graph, members)
        steps = [
            f"{target} ({modules[source].relative_to(root)}:{graph[source][target]})"
            for source, target in itertools.pairwise(cycle)
        ]
        described.append(" -> ".join([cycle[0], *steps]))
    return described


def wrong_imports(
    root: Path,
    packages: tuple[str, ...],
    package: str,
    allowlists: Mapping[str, set[str]] = LIBRARIES_ALLOWED,
) -> list[str]:
    """Imports in `package` of an outer project package, or of a library outside its
    allowlist if it has one (any import: inside functions and under TYPE_CHECKING too)."""
    outer = set(packages[: packages.index(package)])
    libraries = allowlists.get(package)
    wrong = []
    for module, path in project_modules(root, (package,)).items():
        for imported in imports_of(path, module):
            where = f"{path.relative_to(root)}:{imported.line} imports {imported.written}"
            if imported.top_level in outer:
                wrong.append(f"{where} (an outer package)")
            elif not (
                libraries is None
                or imported.top_level in packages
                or imported.top_level in sys.stdlib_module_names
                or imported.top_level in libraries
            ):
                wrong.append(f"{where} (not in the allowlist)")
    return wrong


def test_no_import_cycle() -> None:
    cycles = import_cycles(ROOT, project_modules(ROOT, PACKAGES))
    assert not cycles, "modules that import each other when they load:\n" + "\n".join(cycles)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_point_inward_and_stay_on_the_allowlist(package: str) -> None:
    wrong = wrong_imports(ROOT, PACKAGES, package)
    assert not wrong, "imports against the architecture:\n" + "\n".join(wrong)


CLIENT_ALLOWED = {"aiohttp", "msgspec", "pushd.client", "actors.retry", "actors.transport"}
"""What `pushd.client` (the Python client, shipped in the package) may import besides the
standard library: it runs in applications that are not pushd, so it must not pull in the
server (its config, storage, routes); the backoff and the close-code table are the
server's own, shared on purpose so that the two cannot disagree."""


def test_the_python_client_stands_alone() -> None:
    wrong = []
    for module, path in project_modules(ROOT, ("pushd",)).items():
        if module != "pushd.client" and not module.startswith("pushd.client."):
            continue
        for imported in imports_of(path, module):
            allowed = imported.top_level in sys.stdlib_module_names or any(
                imported.written == name or imported.written.startswith(f"{name}.")
                for name in CLIENT_ALLOWED
            )
            if not allowed:
                wrong.append(f"{path.relative_to(ROOT)}:{imported.line} imports {imported.written}")
    assert not wrong, "the Python client imports beyond its allowlist:\n" + "\n".join(wrong)
    assert "pushd.client.client" in project_modules(ROOT, ("pushd",))  # the walker sees it


def test_the_checker_sees_the_tree() -> None:
    """Guards a walker that finds nothing (a wrong ROOT, a moved folder): every
    package has modules, and their imports of one another are seen."""
    modules = project_modules(ROOT, PACKAGES)
    graph = import_graph(modules)
    for package in PACKAGES:
        assert any(module.split(".")[0] == package for module in modules), package
    imported_packages = {target.split(".")[0] for edges in graph.values() for target in edges}
    assert imported_packages == set(PACKAGES)


SAMPLE = {
    "app/__init__.py": "",
    # `from pkg import module` names a module, not a package attribute.
    "app/a.py": "from app import b\n",
    "app/b.py": (
        "from typing import TYPE_CHECKING\n"
        "import app.c\n"
        "if TYPE_CHECKING:\n"
        "    from app.a import Thing  # never runs: no cycle a <-> b\n"
    ),
    "app/c.py": (
        "from .a import Thing\n"
        "def send():\n"
        "    import aiosmtplib  # runs late: no cycle, but still a dependency\n"
    ),
    "app/d.py": "from httpx import AsyncClient\nfrom app.a import Thing\n",
    "inner/__init__.py": "import msgspec\nimport app.d\n",
}


def test_the_checker_sees_cycles_arrows_and_libraries(tmp_path: Path) -> None:
    for name, text in SAMPLE.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = project_modules(tmp_path, ("app", "inner"))

    assert import_cycles(tmp_path, modules) == [
        "app.a -> app.b (app/a.py:1) -> app.c (app/b.py:2) -> app.a (app/c.py:1)"
    ]
    allowlists: dict[str, set[str]] = {"app": set(), "inner": set()}
    assert wrong_imports(tmp_path, ("app", "inner"), "inner", allowlists) == [
        "inner/__init__.py:1 imports msgspec (not in the allowlist)",
        "inner/__init__.py:2 imports app.d (an outer package)",
    ]
    assert wrong_imports(tmp_path, ("inner", "app"), "app", allowlists) == [
        "app/c.py:3 imports aiosmtplib (not in the allowlist)",
        "app/d.py:1 imports httpx (not in the allowlist)",
    ]

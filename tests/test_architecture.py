"""The layout rules of docs/architecture.md, checked on the source rather than by eye.

Every import counts, also one inside a function: a cycle hidden that way is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "trainer", "profiles")
MAX_MODULE_LINES = 350
MAX_MODULES_PER_FOLDER = 12


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Project modules that ``path`` imports (``from a.b import c`` counts ``a.b.c`` when it is a module)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name in MODULES}


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), ignoring package ``__init__`` edges."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_trainer_imports_nothing_of_the_service_but_its_base():
    offending = {
        name: sorted(t for t in targets if t.startswith("core") and not t.startswith("core.base"))
        for name, targets in GRAPH.items()
        if name.startswith(("trainer", "profiles"))
    }
    assert {name: targets for name, targets in offending.items() if targets} == {}


def test_the_shared_base_imports_nothing_else_of_the_project():
    offending = {
        name: sorted(t for t in targets if not t.startswith("core.base"))
        for name, targets in GRAPH.items()
        if name.startswith("core.base")
    }
    assert {name: targets for name, targets in offending.items() if targets} == {}


def test_the_training_child_never_imports_the_daemon():
    offending = {name: sorted(t for t in GRAPH[name] if t.startswith("core.daemon")) for name in GRAPH
                 if name.startswith("core.child")}
    assert {name: targets for name, targets in offending.items() if targets} == {}


def test_no_import_cycles_between_modules():
    modules_only = {
        name: {t for t in targets if MODULES[t].name != "__init__.py"}
        for name, targets in GRAPH.items() if MODULES[name].name != "__init__.py"
    }
    assert _cycles(modules_only) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_stay_readable_in_one_sitting(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{MODULES[name]} has {lines} lines; split it by step"


def test_no_folder_holds_more_than_a_dozen_modules():
    folders: dict[Path, int] = {}
    for path in MODULES.values():
        if path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    assert {str(f.relative_to(REPO)): n for f, n in folders.items() if n > MAX_MODULES_PER_FOLDER} == {}


def test_every_package_says_what_it_holds():
    missing = [name for name, path in MODULES.items() if path.name == "__init__.py"
               and not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert missing == []

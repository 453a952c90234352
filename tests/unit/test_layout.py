"""The layout docs/architecture.md promises, checked on the source: imports point
streams → inference → features and never back, no import circle, typer only in
streams/cli/, no module over 600 lines, and streams/ holding only its sub-packages."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("streams", "features", "inference")
# Which top-level packages each may import.
ALLOWED = {
    "features": {"features"},
    "inference": {"inference", "features"},
    "streams": {"streams", "inference", "features"},
}
MAX_LINES = 600


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports(path: Path, *, module_level_only: bool) -> Iterator[str]:
    """The project modules `path` imports; module level only skips imports inside
    functions and `if TYPE_CHECKING:` blocks (they run later, or never)."""
    tree = ast.parse(path.read_text(), filename=str(path))

    def walk(nodes: list[ast.stmt]) -> Iterator[ast.stmt]:
        for node in nodes:
            yield node
            if module_level_only:
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    continue
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    yield from walk([child])

    for node in walk(tree.body):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def resolve(name: str, known: dict[str, Path]) -> str | None:
    """The project module an imported name lives in (`a.b.C` → `a.b`), if any."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def test_imports_point_one_way() -> None:
    known = modules()
    wrong = []
    for name, path in known.items():
        package = name.split(".")[0]
        for imported in imports(path, module_level_only=False):
            target = imported.split(".")[0]
            if target in PACKAGES and target not in ALLOWED[package]:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "imports against streams → inference → features:\n" + "\n".join(wrong)


def test_no_import_circle() -> None:
    known = modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {resolve(i, known) for i in imports(path, module_level_only=True)}
        # A package's own __init__ is imported before its modules: not an edge of a circle.
        graph[name] = {t for t in targets if t and t != name and not name.startswith(t + ".")}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (circle := visit(node)):
            pytest.fail("import circle: " + " → ".join(circle))


def test_only_the_cli_imports_typer() -> None:
    users = [
        name
        for name, path in modules().items()
        if not name.startswith("streams.cli")
        and any(i.split(".")[0] == "typer" for i in imports(path, module_level_only=False))
    ]
    assert users == [], f"typer is for streams/cli/ only: {users}"


def test_no_module_is_over_600_lines() -> None:
    long = {
        name: n
        for name, path in modules().items()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules by idea: {long}"


def test_streams_holds_only_its_sub_packages_the_spec_and_the_entry_point() -> None:
    top = {p.name for p in (ROOT / "streams").iterdir() if p.name != "__pycache__"}
    modules_at_top = {n for n in top if n.endswith(".py")}
    assert modules_at_top == {"__init__.py", "__main__.py", "spec.py"}
    for sub in top - modules_at_top:
        assert (ROOT / "streams" / sub / "__init__.py").is_file(), f"streams/{sub} is no package"

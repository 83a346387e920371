"""The package's import graph: no cycle, and nothing reaching up a layer (docs/architecture.md, "Modules").

Every import counts: module-level, inside functions, and those under `if TYPE_CHECKING:` (a type-level
cycle is still two modules that cannot be understood one without the other)."""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "edgecli"
SKIPPED = ("templates",)  # user code scaffolded by `edgecli new`, not part of the package's graph
# A module of the first layer imports nothing of the second.
ABOVE = ("edgecli.host", "edgecli.inspect", "edgecli.cli", "edgecli.console", "edgecli.printer")
FORBIDDEN = {
    layer: ABOVE for layer in ("edgecli.runtime", "edgecli.store", "edgecli.config", "edgecli.events")
}

pytestmark = pytest.mark.timeout(30)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if not any(part in SKIPPED for part in path.relative_to(PACKAGE).parts)
    }


def imported_names(path: Path, name: str) -> Iterator[str]:
    """Every module name `path` imports, as written (a `from X import y` yields X.y and X)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                yield f"{base}.{alias.name}"
            yield base


def graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (a name that is a module's attribute counts as that
    module; a package's own parents, which Python imports implicitly, do not count)."""
    modules = package_modules()
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for imported in imported_names(path, name):
            if not imported.startswith("edgecli"):
                continue
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name and not name.startswith(imported + "."):
                targets.add(imported)
        edges[name] = targets
    return edges


def cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_package_has_no_import_cycle() -> None:
    found = cycles(graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{name} imports {target}"
        for name, targets in graph().items()
        for layer, above in FORBIDDEN.items()
        if within(name, layer)
        for target in sorted(targets)
        if any(within(target, a) for a in above)
    ]
    assert not upward, "\n".join(upward)


def test_the_walker_sees_a_cycle_and_type_checking_imports(tmp_path: Path) -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edgecli.host import pool\n"
        "def f():\n    import edgecli.cli\n"
    )
    assert {"edgecli.host.pool", "edgecli.cli"} <= set(imported_names(source, "edgecli.m"))

"""The package's shape: every module imports, module-level imports form no cycle, and no module
reaches into another package's private (underscore) names.

The import graph is read from the source with ``ast``. Its edges are the imports executed when a
module is imported: statements at module level, also inside module-level ``if`` / ``try`` /
``with`` blocks and class bodies, but not inside functions (those run later, and are how an
optional engine or a heavy dependency is kept off the import path) nor under
``if TYPE_CHECKING:``. ``from P import name`` is an edge to ``P.name`` when that is a module,
else to ``P``; a package's implicit import of its parent ``__init__`` is not an edge.

Private access counts everywhere, in functions too: ``from tlgan.X import _name`` and
``X._name`` (``X`` a module bound by an import) are allowed only inside the package that owns
``_name`` (the module's own package and its sub-packages).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import tlgan

SRC = Path(tlgan.__file__).parent
ROOT = SRC.parent

# Private names used across packages in files other packages are reshaping: (importer, name).
KNOWN_PRIVATE_ACCESS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _package_of(name: str) -> str:
    return name if _is_package(name) else name.rpartition(".")[0]


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = _package_of(importer).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _module_level_imports(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node):
                yield from _module_level_imports(node.body)
            yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _module_level_imports(block)
        elif isinstance(node, (ast.With, ast.ClassDef)):
            yield from _module_level_imports(node.body)


def _targets(importer: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The tlgan modules an import statement loads."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name in MODULES]
    base = _absolute(importer, node)
    out = []
    for alias in node.names:
        full = f"{base}.{alias.name}"
        out.append(full if full in MODULES else base)
    return [t for t in out if t in MODULES]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {t for node in _module_level_imports(tree.body) for t in _targets(name, node)} - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_access(importer: str, tree: ast.AST) -> set[tuple[str, str]]:
    """(importer, "module._name") for each private name of another package it uses."""
    found = set()

    def outside(module: str) -> bool:
        owner = _package_of(module)
        return not (importer == owner or importer.startswith(owner + "."))

    aliases: dict[str, str] = {}  # local name -> tlgan module it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("tlgan"):
                    aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(importer, node)
            if base not in MODULES:
                continue
            for a in node.names:
                full = f"{base}.{a.name}"
                if full in MODULES:
                    aliases[a.asname or a.name] = full
                if _private(a.name) and outside(full if full in MODULES else base):
                    found.add((importer, full))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if not (isinstance(base, ast.Name) and base.id in aliases):
            continue
        module = aliases[base.id]
        for attr in reversed(chain):
            if f"{module}.{attr}" in MODULES:
                module = f"{module}.{attr}"
                continue
            if _private(attr) and outside(module):
                found.add((importer, f"{module}.{attr}"))
            break
    return found


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_imports(name):
    importlib.import_module(name)


def test_module_level_imports_form_no_cycle():
    graph = import_graph()
    assert graph["tlgan.sampling.sample"] >= {"tlgan.sampling.shard", "tlgan.sampling.local_engine"}
    assert find_cycles(graph) == []
    # the two engines sit side by side above the shard module
    for a, b in [
        ("tlgan.sampling.sample", "tlgan.sampling.ray_engine"),
        ("tlgan.sampling.ray_engine", "tlgan.sampling.sample"),
    ]:
        assert b not in graph[a]


def test_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_names_used_across_packages():
    found = set()
    for name, path in MODULES.items():
        found |= private_access(name, ast.parse(path.read_text(), str(path)))
    assert sorted(found - KNOWN_PRIVATE_ACCESS) == []


def test_private_access_check_sees_both_forms():
    code = "from tlgan.models import _ensure_registered\nimport tlgan.models.zoo as zoo\nzoo._x\nimport tlgan\ntlgan.models._y\n"
    found = private_access("tlgan.cli.pipeline", ast.parse(code))
    assert found == {
        ("tlgan.cli.pipeline", "tlgan.models._ensure_registered"),
        ("tlgan.cli.pipeline", "tlgan.models.zoo._x"),
        ("tlgan.cli.pipeline", "tlgan.models._y"),
    }
    assert private_access("tlgan.models.formats.rosinality", ast.parse(code)) == set()  # inside the package

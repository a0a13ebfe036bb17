"""No import cycle among the project's packages (service, trainer, export).

A cycle means two modules cannot be understood, tested or changed apart, and the order in which they
happen to be imported decides whether a name exists yet. The graph is read from the source with
`ast` (nothing is imported): an edge for every import of a project module that runs when a module
is imported, i.e. at module level or in a class body. Imports inside functions are deferred on
purpose (a CLI's lazy `import uvicorn`, `service.protocol.__getattr__`) and do not count.

Two graphs are checked: the imports that run (no cycle at all), and those plus the `if
TYPE_CHECKING:` imports (a cycle hidden from the interpreter is still one for the reader and the
type checker; service had one: admission <-> app <-> dispatch <-> routes_media). Neither may hold a
cycle. (A model module names its training recipe as "module:function" for that reason; see
`trainer.architecture.Architecture.algorithm`.)
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("service", "trainer", "export")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _is_type_checking(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` or `if typing.TYPE_CHECKING:`."""
    if not isinstance(node, ast.If):
        return False
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time_nodes(tree: ast.Module, type_checking: bool) -> Iterator[ast.AST]:
    """Every node that runs when the module is imported: all but function bodies (and, unless
    `type_checking`, `if TYPE_CHECKING:` blocks)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        yield node
        if _is_type_checking(node) and not type_checking:
            assert isinstance(node, ast.If)
            stack.extend(node.orelse)
            continue
        for child in ast.iter_child_nodes(node):
            if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                stack.append(child)


def imported_modules(name: str, path: Path, modules: dict[str, Path], type_checking: bool = True) -> set[str]:
    """The project modules `name` imports at import time (`from pkg import mod` counts as `pkg.mod`)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_time_nodes(ast.parse(path.read_text(), str(path)), type_checking):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a package: the deepest module known
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
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
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
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
    return found


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}, "g": set()}
    assert sorted(cycles(graph)) == [["a", "b", "c"], ["e", "f"]]


def test_the_graph_sees_module_level_imports_only() -> None:
    modules = project_modules()
    edges = imported_modules("service.admission", modules["service.admission"], modules)
    assert "service.middleware" in edges  # module level
    assert "service.settings" not in imported_modules("service.protocol", modules["service.protocol"], modules)
    recipe = "trainer.training.unconditional"  # imports Architecture under `if TYPE_CHECKING:` only
    assert "trainer.architecture" in imported_modules(recipe, modules[recipe], modules)
    assert "trainer.architecture" not in imported_modules(recipe, modules[recipe], modules, type_checking=False)


def _cycles(type_checking: bool) -> list[list[str]]:
    modules = project_modules()
    graph = {name: imported_modules(name, path, modules, type_checking) for name, path in modules.items()}
    return cycles(graph)


def _listed(found: list[list[str]]) -> str:
    return "\n".join(" <-> ".join(component) for component in found)


def test_no_import_cycle_in_service_trainer_or_export() -> None:
    found = _cycles(type_checking=False)
    assert not found, "import cycles among the imports that run:\n" + _listed(found)


def test_no_import_cycle_through_type_checking_imports() -> None:
    found = sorted(_cycles(type_checking=True))
    assert not found, "import cycles through `if TYPE_CHECKING:` imports:\n" + _listed(found)

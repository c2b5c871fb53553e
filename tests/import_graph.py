"""The project's module import graph, read with `ast` (nothing is imported): used by tests/test_import_graph.py.

A module is a .py file of the product packages; `import a.b` and `from a import b` point at the deepest project
module they name (`from pkg import name` points at `pkg.name` when that is a module, at `pkg` otherwise). Imports
inside a function are edges too (they still make one module depend on another)."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("rayder_core", "fitting", "reports", "sweeps")


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)           # project modules it imports (anywhere in the file)
    inner: list[tuple[int, str]] = field(default_factory=list)  # (line, source) of every import inside a function


def _module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    names = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names[".".join(parts)] = path
    return names


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _function_imports(tree: ast.AST) -> set[int]:
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inner |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return inner


def build_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Module]:
    """Every project module with the project modules it imports and its in-function imports."""
    paths = _module_names(root, packages)
    graph = {name: Module(name, path) for name, path in paths.items()}
    for name, mod in graph.items():
        tree = ast.parse(mod.path.read_text(), filename=str(mod.path))
        inner = _function_imports(tree)
        package = name if mod.path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if id(node) in inner:
                mod.inner.append((node.lineno, ast.unparse(node)))
            if isinstance(node, ast.Import):
                targets = [_resolve(a.name, paths) for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else _resolve(base, paths)
                           for a in node.names]
            mod.imports |= {t for t in targets if t is not None and t != name}
    return graph


def cycles(graph: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (each an import circle), Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v].imports):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":  # python tests/import_graph.py [ROOT]: in-function imports and circles
    import sys

    g = build_graph(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
    print("in-function imports:", sum(len(m.inner) for m in g.values()))
    for m in sorted(g):
        for line, src in g[m].inner:
            print(f"  {m}:{line}: {src}")
    print("cycles:", cycles(g))

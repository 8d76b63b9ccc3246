"""Import graph of the pytest_parity package: modules per folder, largest module, and every import cycle.

Every import counts, module-level or inside a function (a function-level import that exists only to break a cycle is
still a cycle). `from pytest_parity.x import name` is an edge to module x; `from pytest_parity.x import y` is an edge
to x.y when y is a module. Importing a submodule also runs its package's __init__, so an edge to a.b implies one to a.

    python benchmarks/import_cycles.py          # prints the figures; exit status 1 when a cycle exists
"""

from __future__ import annotations

import ast
import sys
from collections import Counter
from pathlib import Path

PACKAGE = "pytest_parity"


def module_files(root: Path) -> dict[str, Path]:
    files = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def _resolve(name: str, current: str, is_package: bool, level: int) -> str:
    if level == 0:
        return name
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def import_edges(root: Path) -> dict[str, set[str]]:
    files = module_files(root)
    edges: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", name, is_package, node.level)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for target in targets:
                while target and target not in files:  # `import pytest_parity.a.b` names a.b; keep what exists
                    target = target.rpartition(".")[0]
                if target.startswith(PACKAGE) and target != name:
                    edges[name].add(target)
    # A submodule import first runs the packages above it.
    for name in files:
        for target in list(edges[name]):
            parent = target.rpartition(".")[0]
            while parent.startswith(PACKAGE) and parent != name and not name.startswith(parent + "."):
                edges[name].add(parent)
                parent = parent.rpartition(".")[0]
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main(root: Path) -> int:
    files = module_files(root)
    edges = import_edges(root)
    folders = Counter(str(path.parent.relative_to(root)) for path in files.values())
    sizes = sorted(((len(path.read_text().splitlines()), name) for name, path in files.items()), reverse=True)
    print(f"{len(files)} modules, {sum(s for s, _ in sizes)} lines")
    for folder, count in sorted(folders.items()):
        print(f"  {folder}/: {count} modules")
    print(f"largest module: {sizes[0][1]} ({sizes[0][0]} lines)")
    found = cycles(edges)
    print(f"import cycles: {len(found)}")
    for component in found:
        print("  " + " <-> ".join(component))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(Path(__file__).resolve().parents[1]))

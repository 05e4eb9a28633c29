"""Fail when modules of a package import each other in a circle (any length).

Usage: python scripts/import_cycles.py [PACKAGE]   (default: sidecar)

Reads the import graph with grimp (import-linter's library), imports under
`TYPE_CHECKING` included: a circle there still means two modules that cannot be read,
tested or compiled apart. Prints each circle's modules, exit 1; silent exit 0 when none.
"""

from __future__ import annotations

import sys

import grimp


def circles(graph: grimp.ImportGraph, package: str) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules)
             for m in modules}  # fmt: skip
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
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
    for module in modules:
        if module not in index:
            visit(module)
    return sorted(found)


def main(argv: list[str]) -> int:
    package = argv[0] if argv else "sidecar"
    found = circles(grimp.build_graph(package), package)
    for component in found:
        print(f"import circle: {' <-> '.join(component)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

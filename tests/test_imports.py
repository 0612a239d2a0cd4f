"""The import structure of src/kdforge: no function-local imports of kdforge modules
(they hid an import cycle), and the graph of module-level kdforge imports is acyclic.

Only the command line loads its commands lazily (cli.py, commands/). A lazy import of
an optional third-party package is allowed anywhere; it is not a kdforge module.
Imports under `if TYPE_CHECKING:` never run and are left out of the graph.
Both tests fail on the tree before issue 10's workflow layer (78 local imports; one cycle).
A package's own `__init__` is not counted as imported by its submodules' imports
(Python runs it, but it only gathers names; its own imports are edges like any other).
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "kdforge"
LAZY_OK = ("kdforge.cli", "kdforge.commands")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def resolve(node: ast.Import | ast.ImportFrom, here: str) -> list[str]:
    """The kdforge modules an import statement in module `here` names (empty for third-party imports)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the containing package, `level - 1` packages up
            pkg = here if is_package(here) else here.rpartition(".")[0]
            for _ in range(node.level - 1):
                pkg = pkg.rpartition(".")[0]
            base = f"{pkg}.{base}".rstrip(".")
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    out: list[str] = []
    for n in names:
        while n and n not in MODULES:  # `import kdforge.a.b.attr` style: the longest module prefix
            n = n.rpartition(".")[0]
        if n.startswith("kdforge") and n not in out:
            out.append(n)
    return out


def _type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def scan(name: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(kdforge modules imported at module level, [(line, module)] of imports inside functions or classes)."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    top: set[str] = set()
    local: list[tuple[int, str]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                targets = resolve(child, name)
                if nested:
                    local.extend((child.lineno, t) for t in targets)
                else:
                    top.update(targets)
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda))
            visit(child, inner)

    visit(tree, False)
    top.discard(name)
    return top, local


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as [a, b, ..., a], or None (iterative DFS, white/grey/black)."""
    colour = {n: 0 for n in graph}
    for root in sorted(graph):
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour.get(nxt, 2) == 1:
                return path[path.index(nxt):] + [nxt]
            elif colour.get(nxt) == 0:
                colour[nxt] = 1
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
    return None


def test_no_function_local_kdforge_imports():
    bad = []
    for name in MODULES:
        if name == LAZY_OK[0] or name.startswith(LAZY_OK[1]):
            continue
        bad += [f"{MODULES[name].relative_to(SRC)}:{line} imports {target}" for line, target in scan(name)[1]]
    assert not bad, f"{len(bad)} function-local imports of kdforge modules:\n" + "\n".join(bad)


def test_module_graph_is_acyclic():
    """Function-local imports count too (outside the CLI), so a cycle cannot hide inside a function:
    on the tree before the workflow layer this reports config -> methods -> methods.born_again ->
    methods._driver -> pipeline -> compress_stages -> config."""
    graph = {}
    for name in MODULES:
        top, local = scan(name)
        graph[name] = top if name == LAZY_OK[0] or name.startswith(LAZY_OK[1]) else top | {t for _, t in local} - {name}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("graph, cyclic", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"a2"}, "a2": set(), "b": {"c"}, "c": {"b"}}, True),
])
def test_find_cycle_finds_cycles(graph, cyclic):
    cycle = find_cycle(graph)
    assert (cycle is not None) == cyclic
    if cycle:
        assert cycle[0] == cycle[-1] and all(b in graph[a] for a, b in zip(cycle, cycle[1:]))


def test_scan_sees_local_and_relative_imports(tmp_path, monkeypatch):
    """The scanner itself: a function-local absolute import and a relative one are both reported."""
    pkg = tmp_path / "kdforge"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import os\nfrom kdforge import b\n\ndef f():\n    from . import b\n    import kdforge.b\n")
    (pkg / "b.py").write_text("class C:\n    def g(self):\n        from kdforge.a import f\n")
    here = sys.modules[__name__]
    monkeypatch.setattr(here, "SRC", tmp_path)
    mods = {module_name(p): p for p in sorted(pkg.rglob("*.py"))}
    monkeypatch.setattr(here, "MODULES", mods)
    top, local = scan("kdforge.a")
    assert top == {"kdforge.b"} and local == [(5, "kdforge.b"), (6, "kdforge.b")]
    assert scan("kdforge.b") == (set(), [(3, "kdforge.a")])

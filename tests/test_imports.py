"""The library's import structure: no cycles, no streamlit, every module importable on its own.

The import graph is read from the source with ``ast`` (every ``import`` / ``from ... import``
of a swclip module, at any depth, so an import hidden inside a function still counts as an edge),
and searched for cycles with Tarjan's strongly-connected components (networkx is not a dependency;
the graph has about 50 nodes).
"""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "swclip"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imported_modules(path: Path):
    """(swclip module imported, line, inside a function?) for every import in the file."""
    tree = ast.parse(path.read_text())
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    out = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else []))
                # `from swclip.x import y` may import the submodule swclip.x.y
                out.extend([(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, child.lineno, in_function)
                            for a in child.names])
            visit(child, nested)

    visit(tree, False)
    return [(m, line, f) for m, line, f in out if m.split(".")[0] in ("swclip", "streamlit")]


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        deps = set()
        for mod, _, _ in imported_modules(path):
            # importing swclip.a.b runs swclip/__init__ and swclip/a/__init__ first: edges to the packages too
            parts = mod.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in MODULES}
        deps.discard(name)
        # a package's parents are imported before it; a module never imports its own parents "back"
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly-connected components with more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_swclip_has_no_import_cycles():
    found = cycles(import_graph())
    assert not found, f"import cycles in swclip/: {found}"


def test_swclip_never_imports_streamlit_and_imports_swclip_at_the_top():
    problems = []
    for name, path in MODULES.items():
        for mod, line, in_function in imported_modules(path):
            if mod.split(".")[0] == "streamlit":
                problems.append(f"{name}:{line} imports streamlit")
            elif in_function and name != "swclip.cli":  # the CLI loads its subcommands lazily, by design
                problems.append(f"{name}:{line} imports {mod} inside a function")
    assert not problems, "\n".join(problems)


def test_every_module_imports_in_a_fresh_interpreter():
    """One fresh interpreter imports every module (leaves first, so a module that only works after another was
    imported fails here); the static graph above already rules out cycles."""
    names = sorted(MODULES, key=lambda n: (-n.count("."), n))
    code = "import importlib\nfor n in %r:\n    importlib.import_module(n)\n" % (names,)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]

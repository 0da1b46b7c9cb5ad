"""The library's import structure: layers, no cycles, no streamlit, every module importable on its own.

The import graph is read from the source with ``ast`` (every ``import`` / ``from ... import``
of a swclip module, at any depth, so an import hidden inside a function still counts as an edge).
LAYERS writes the package order down once: a module may import from lower layers and from its
own package, never from a higher layer or from another package of its own layer. Cycles are
searched with Tarjan's strongly-connected components (networkx is not a dependency; the graph has
about 70 nodes).
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
APP_MODULES = {module_name(p): p for p in sorted((ROOT / "appkit").rglob("*.py"))}
PAGE_MODULES = {module_name(p): p for p in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]}

# The package order, lowest first. A unit is a package or a top-level module; the longest unit that
# prefixes a module's name is its unit. Peers in one layer never import each other.
LAYERS = [
    ("swclip", "swclip.geo", "swclip.io", "swclip.kernels", "swclip.threads", "swclip.loss_names"),
    ("swclip.data", "swclip.synth", "swclip.analysis"),
    ("swclip.method",),
    ("swclip.retrieval", "swclip.viz"),
    ("swclip.runs",),
    ("swclip.catalog", "swclip.training"),
    ("swclip.workflows",),
    ("swclip.cli",),
    ("appkit",),
    ("app", "pages"),
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """The longest unit of LAYERS that is ``module`` or a package above it (KeyError for none)."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in LAYER_OF:
            return ".".join(parts[:n])
    raise KeyError(f"{module} belongs to no unit of LAYERS: add it where it belongs")


def layer_violations(edges) -> list[str]:
    """Edges (importer, imported, line) that run against LAYERS: up a layer, or across to a peer unit."""
    out = []
    for importer, imported, line in edges:
        a, b = unit_of(importer), unit_of(imported)
        if a == b or LAYER_OF[b] < LAYER_OF[a]:
            continue
        kind = "up" if LAYER_OF[b] > LAYER_OF[a] else "across"
        out.append(f"{importer}:{line} imports {imported} ({kind}: layer {LAYER_OF[a]} {a} -> layer {LAYER_OF[b]} {b})")
    return out


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
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - child.level + 1] + ([base] if base else [])
                    )
                # `from swclip.x import y` may import the submodule swclip.x.y
                out.extend(
                    [
                        (f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base, child.lineno, in_function)
                        for a in child.names
                    ]
                )
            visit(child, nested)

    visit(tree, False)
    return [(m, line, f) for m, line, f in out if m.split(".")[0] in ("swclip", "streamlit", "appkit", "pages", "app")]


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


def project_edges() -> list[tuple[str, str, int]]:
    """(importer, imported, line) for every import of a project module in swclip/, appkit/, app.py and pages/."""
    edges = []
    for name, path in {**MODULES, **APP_MODULES, **PAGE_MODULES}.items():
        edges += [(name, mod, line) for mod, line, _ in imported_modules(path) if mod.split(".")[0] != "streamlit"]
    return edges


def test_layer_check_catches_upward_and_sideways_imports():
    planted = [
        ("swclip.analysis.variogram", "swclip.method.soft_labels", 3),  # up
        ("swclip.retrieval.predictor", "swclip.runs", 5),  # up
        ("swclip.data.table", "swclip.synth.world", 7),  # across: peers
        ("swclip", "swclip.cli", 1),  # the package root is the lowest layer
        ("swclip.viz.maps", "appkit.frame", 9),  # the library never reaches the app
        ("swclip.runs", "swclip.method.model", 11),  # down: fine
        ("swclip.training.loop", "swclip.training.config", 13),
    ]  # own package: fine
    found = layer_violations(planted)
    assert [f.split(":")[0] for f in found] == [
        "swclip.analysis.variogram",
        "swclip.retrieval.predictor",
        "swclip.data.table",
        "swclip",
        "swclip.viz.maps",
    ]
    assert "(up:" in found[0] and "(across:" in found[2]


def test_every_module_belongs_to_a_layer():
    for name in [*MODULES, *APP_MODULES, *PAGE_MODULES]:
        unit_of(name)


def test_no_import_runs_against_the_layers():
    edges = project_edges()
    assert len(edges) > 300  # the walk found the project's imports (about 430)
    found = layer_violations(edges)
    assert not found, f"{len(found)} imports against LAYERS:\n" + "\n".join(found)


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
    code = f"import importlib\nfor n in {names!r}:\n    importlib.import_module(n)\n"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]

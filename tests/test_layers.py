"""The package's layers import downward only (core <- data <- run <- eval <- report <- cli), and no module imports
itself through others -- inside a layer too, in the package and among the scripts -- checked on the source of every
module (function-level imports included); `import ropebench` stays cheap."""

import ast
import subprocess
import sys
from pathlib import Path

import ropebench

PACKAGE = Path(ropebench.__file__).parent
SCRIPTS = PACKAGE.parent / "scripts"
# Lowest first. `errors` and `progress` are utilities every layer may use; `bench` measures the layers below cli.
LAYERS = ["core", "data", "run", "eval", "report", "bench", "cli"]
UTILITIES = {"errors", "progress", "__init__", "__main__"}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "ropebench" or len(parts) < 2 or parts[1] in UTILITIES:
        return None
    return parts[1]


def imports_of(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_every_module_belongs_to_a_layer():
    strays = [p.name for p in PACKAGE.glob("*.py") if p.stem not in UTILITIES]
    assert not strays, f"modules outside the layers: {strays}"
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()} == set(LAYERS)


def test_layers_import_downward_only():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        own = layer_of("ropebench." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        if own is None:
            continue
        for module in imports_of(path):
            other = layer_of(module)
            if other in LAYERS and LAYERS.index(other) > LAYERS.index(own):
                upward.append(f"{path.relative_to(PACKAGE)} imports {module}")
    assert not upward, "\n".join(sorted(upward))


def module_graph(root: Path, prefix: str) -> dict[str, set[str]]:
    """Module -> the modules of the same tree it imports (``from pkg import mod`` names the module ``pkg.mod``;
    ``from pkg import name`` names ``pkg``, whose ``__init__`` defines the name)."""
    def name(path: Path) -> str:
        parts = path.relative_to(root).with_suffix("").parts
        return ".".join([*([prefix] if prefix else []), *(parts[:-1] if parts[-1] == "__init__" else parts)])

    modules = {name(p): p for p in root.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                             for a in node.names)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
        graph[module] = {m for m in found if m in modules} - {module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: every strongly connected set of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_the_package_or_the_scripts():
    assert cycles(module_graph(PACKAGE, "ropebench")) == []
    assert cycles(module_graph(SCRIPTS, "")) == []


def test_the_cycle_check_finds_a_cycle_inside_a_layer(tmp_path):
    """A cycle between two modules of one layer (what the downward rule cannot see) is found."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "__init__.py").write_text("")
    (tmp_path / "run" / "a.py").write_text("def f():\n    from pkg.run.b import g\n")
    (tmp_path / "run" / "b.py").write_text("from pkg.run import a\n")
    (tmp_path / "run" / "c.py").write_text("from pkg.run.a import f\n")
    assert cycles(module_graph(tmp_path, "pkg")) == [["pkg.run.a", "pkg.run.b"]]


def test_utilities_import_no_layer():
    for name in ("errors.py", "progress.py"):
        assert not [m for m in imports_of(PACKAGE / name) if layer_of(m)], name


def test_import_ropebench_does_not_import_torch():
    code = "import sys, ropebench, ropebench.run.rundir, ropebench.eval.lengths; assert 'torch' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_modules_and_functions_stay_small():
    """Small files and functions: no module over 400 lines, no function over 60 (signature included)."""
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if source.count("\n") > 400:
            too_long.append(f"{path.relative_to(PACKAGE)}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > 60:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(sorted(too_long))

"""The library's import graph: no cycles (counting imports inside functions too), and the data package never
reaches the inference code."""

import ast
from pathlib import Path

import genpercept_lib

ROOT = Path(genpercept_lib.__file__).parent
INFERENCE = {"genpercept_lib.pipeline", "genpercept_lib.apps.predict", "genpercept_lib.finetune",
             "genpercept_lib.evaluate", "genpercept_lib.experiment"}


def _module_name(path: Path) -> str:
    parts = ["genpercept_lib", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the genpercept_lib modules it imports anywhere in its file (module level or in functions)."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: set().union(*(t for _, t in import_graph_of(name, path, files, ast.parse(path.read_text()))))
            for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return stack[stack.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle():
    graph = import_graph()
    assert "genpercept_lib.tasks.depth" in graph and graph["genpercept_lib.pipeline"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_data_never_reaches_inference():
    graph = import_graph()
    for start in [m for m in graph if m.startswith("genpercept_lib.data")]:
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        assert not seen & INFERENCE, f"{start} reaches {sorted(seen & INFERENCE)}"


# -- the dense-task contract ------------------------------------------------------------------------------------
DENSE_PATH = ("finetune", "evaluate", "experiment")  # call only the Task protocol (tasks/base.py); never probe
PROBES = {"hasattr", "getattr", "isinstance"}


def _mentions_a_task(node: ast.AST) -> bool:
    """An expression that is (or reaches into) a task: a name or attribute called ``*task*``, or ``tasks.get(...)``."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name) and "task" in sub.id.lower():
            return True
        if isinstance(sub, ast.Attribute) and "task" in sub.attr.lower():
            return True
    return False


def task_probes(source: str, strict: bool = False) -> list[str]:
    """``hasattr`` / ``getattr`` / ``isinstance`` calls on a task in ``source`` (``strict``: every ``hasattr``)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES and node.args:
            if _mentions_a_task(node.args[0]) or (strict and node.func.id == "hasattr"):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_dense_path_never_probes_a_task():
    """finetune, evaluate and experiment call only the methods of the dense-task protocol, and no module outside
    tasks/ asks a task what it has (pose is its own package, found by name, not by probing)."""
    for path in ROOT.rglob("*.py"):
        if "tasks" in path.relative_to(ROOT).parts:
            continue
        strict = path.stem in DENSE_PATH and path.parent == ROOT
        probes = task_probes(path.read_text(), strict)
        assert not probes, f"{path.relative_to(ROOT)} probes a task: {'; '.join(probes)}"
    graph = import_graph()
    for name in DENSE_PATH:
        pose = {m for m in graph[f"genpercept_lib.{name}"] if m.startswith("genpercept_lib.pose")}
        assert not pose, f"{name}.py imports {sorted(pose)}: the dense path knows nothing of pose"


def test_the_probe_finder_finds_probes():
    assert task_probes("if hasattr(task, 'loss'): pass") and task_probes("getattr(tasks.get(n), 'x', None)")
    assert task_probes("isinstance(spec.task, str)") and task_probes("hasattr(model, 'unet')", strict=True)
    assert not task_probes("hasattr(model, 'unet')") and not task_probes("isinstance(res, int)", strict=True)


# -- floors ---------------------------------------------------------------------------------------------------
# Each module sits on a floor and imports only from its own floor or below (docs/library.md draws them). A module's
# floor is that of the longest prefix listed.
FLOORS = {
    "core": ("cache", "runs", "progress", "domains", "schedule", "formulations", "losses", "ensemble", "images",
             "metrics"),
    "models and tasks": ("models", "heads", "profiles", "tasks", "spec"),
    "data": ("data",),
    "training and evaluation": ("train", "stream", "sources", "finetune", "prior", "pipeline", "evaluate",
                                "experiment", "probe", "userdata", "pose"),
    "reporting": ("results", "claims", "viz"),
    "apps": ("apps",),
}
LEVEL = {f"genpercept_lib.{prefix}": i for i, (_, prefixes) in enumerate(FLOORS.items()) for prefix in prefixes}


def floor_of(module: str) -> int:
    """The floor (0 = core) of a library module, by its longest listed prefix; the package itself: 0."""
    hits = [p for p in LEVEL if module == p or module.startswith(p + ".")]
    if not hits:
        assert module == "genpercept_lib", f"{module} is on no floor: add it to FLOORS"
        return 0
    return LEVEL[max(hits, key=len)]


def imports_by_place() -> dict[str, dict[str, set[str]]]:
    """module -> {"top": library modules imported at module level, "local": those imported inside functions}."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    out = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        places = {"top": set(), "local": set()}
        single = import_graph_of(name, path, files, tree)
        for node, targets in single:
            places["local" if id(node) in inner else "top"] |= targets
        out[name] = places
    return out


def import_graph_of(name: str, path: Path, files: dict, tree: ast.AST) -> list:
    """(import node, the library modules it names) for every import in one module's ``tree``."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
        else:
            continue
        found.append((node, {t for t in targets if t in files and t != name}))
    return found


def test_every_import_stays_on_its_floor_or_goes_down():
    names = list(FLOORS)
    for module, places in imports_by_place().items():
        for dep in places["top"] | places["local"]:
            if dep == "genpercept_lib" or module.startswith(dep + "."):  # a package's own __init__
                continue
            assert floor_of(dep) <= floor_of(module), \
                f"{module} ({names[floor_of(module)]}) imports {dep} ({names[floor_of(dep)]}), a floor above it"


def test_data_never_imports_tasks():
    for module, places in imports_by_place().items():
        if module.startswith("genpercept_lib.data"):
            tasks = {d for d in places["top"] | places["local"] if d.startswith(("genpercept_lib.tasks",
                                                                               "genpercept_lib.pose"))}
            assert not tasks, f"{module} imports {sorted(tasks)}"


def test_function_local_library_imports_only_in_the_apps():
    """Inside functions, library modules are imported only by the apps (``genpercept --help`` and a command's bad
    input answer without loading torch); everywhere else the imports are at the top, where the floors show."""
    for module, places in imports_by_place().items():
        if not module.startswith("genpercept_lib.apps"):
            assert not places["local"], f"{module} imports {sorted(places['local'])} inside a function"


def test_the_floor_check_catches_an_upward_import():
    assert floor_of("genpercept_lib.results") > floor_of("genpercept_lib.tasks.depth")
    assert floor_of("genpercept_lib.data.toyworld.render") == floor_of("genpercept_lib.data.pool")
    assert floor_of("genpercept_lib.apps.cli") == len(FLOORS) - 1


def test_at_most_fifteen_function_local_library_imports():
    """The apps' lazy loads (a command imports what it runs) stay few: at most 15 import statements in all."""
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    count = 0
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        count += sum(1 for node, targets in import_graph_of(name, path, files, tree) if targets and id(node) in inner)
    assert count <= 15, f"{count} function-local imports of library modules"

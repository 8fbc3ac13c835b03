"""The core's import graph, read from the source (every import statement, those inside functions
included): no module imports itself back through others, and every room (a top-level module or
package of rl_system/) imports only rooms on floors below its own. A new room gets a floor here."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "rl_system"

# Bottom to top. A room may import any room on a lower floor, none on its own or above.
FLOORS = [
    ["config", "buffer", "checkpoints", "metrics", "plot", "rundir", "shutdown"],
    ["data", "elastic", "imports", "models", "resources", "trackers"],
    ["envs", "types", "weights"],
    ["rewards", "weight_broadcast"],
    ["algorithms"],
    ["training"],
    ["learner", "rollout", "search"],
    ["local", "pipeline"],
    ["cli"],
    ["__main__"],
]
FLOOR = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}


def core_modules() -> dict[str, Path]:
    """Dotted name -> file of every module in rl_system/ (a package by its __init__.py)."""
    modules = {}
    for path in CORE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The core modules a file imports; `from pkg import name` counts the submodule `name` where it is one."""
    def known(name: str) -> str:
        while name not in modules:
            name = name.rpartition(".")[0]
        return name

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {known(a.name) for a in node.names if a.name.startswith("rl_system.")}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import; the core imports by absolute name"
            if node.module and node.module.startswith("rl_system"):
                found |= {known(f"{node.module}.{a.name}") for a in node.names}
    return found - {"rl_system"}


def graph() -> dict[str, set[str]]:
    modules = core_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def room(module: str) -> str:
    return module.split(".")[1] if "." in module else module


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_back_through_others():
    assert cycles(graph()) == []


def test_every_import_points_down_a_floor():
    edges = graph()
    rooms = {room(m) for m in edges if m != "rl_system"}
    assert rooms <= set(FLOOR), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOOR))}"
    upward = sorted(f"{m} -> {target}" for m, targets in edges.items() if m != "rl_system" for target in targets
                    if room(target) != room(m) and FLOOR[room(target)] >= FLOOR[room(m)])
    assert upward == []


def ray_imports(path: Path) -> list[str]:
    """The import statements of a file, at any depth, that name ray or a ray module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        found += [f"{path.relative_to(ROOT)}:{node.lineno}" for name in names if name.split(".")[0] == "ray"]
    return found


def test_no_core_module_imports_ray_even_inside_a_function():
    """The core drives Ray only through actors/ (imported where a command runs on Ray), never itself."""
    assert [hit for path in sorted(CORE.rglob("*.py")) for hit in ray_imports(path)] == []
    assert ray_imports(ROOT / "actors" / "scheduling.py")  # the check sees ray where it is imported


def test_the_checks_see_a_circle_and_an_upward_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert imports_of(CORE / "local.py", core_modules()) >= {"rl_system.learner", "rl_system.rollout"}
    assert FLOOR["config"] == 0 and FLOOR["local"] > FLOOR["learner"]
